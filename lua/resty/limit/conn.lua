-- resty.limit.conn: limits how many requests of one key are in flight at once (the API of
-- lua-resty-limit-traffic's resty.limit.conn, moongate's own implementation).
--
-- The shared dict counts the requests of each key that entered (`incoming` with commit) and
-- have not left yet (`leaving`). Up to `max` pass at once; the next `burst` pass with a delay
-- (one `unit_delay` per `max` requests ahead of them); beyond `max + burst` they are rejected.
-- `leaving(key, latency)` lets the observed latency tune `unit_delay`.

local shared = ngx.shared
local floor = math.floor
local assert, setmetatable = assert, setmetatable

local Limiter = { _VERSION = "1.2.0" }
Limiter.__index = Limiter

-- new(dict_name, max, burst, default_conn_delay)
function Limiter.new(dict_name, max, burst, default_conn_delay)
    local dict = shared[dict_name]
    if not dict then
        return nil, "shared dict not found"
    end
    assert(max > 0, "max must be positive")
    assert(burst >= 0, "burst must not be negative")
    assert(default_conn_delay > 0, "default_conn_delay must be positive")
    local lim = setmetatable({ dict = dict, max = max, burst = burst }, Limiter)
    lim.unit_delay = default_conn_delay
    lim.committed = false
    return lim
end

-- incoming(key, commit) -> delay (seconds), in_flight (this request included),
-- or nil, "rejected" (or nil, err from the dict).
function Limiter:incoming(key, commit)
    local dict = self.dict
    local max = self.max
    local ceiling = max + self.burst
    self.committed = false

    local conn, err
    if commit then
        conn, err = dict:incr(key, 1, 0)
        if not conn then
            return nil, err
        end
        if conn > ceiling then
            -- not admitted: it does not count as in flight
            local _, derr = dict:incr(key, -1)
            if derr then
                return nil, derr
            end
            return nil, "rejected"
        end
        self.committed = true
    else
        conn = (dict:get(key) or 0) + 1
        if conn > ceiling then
            return nil, "rejected"
        end
    end

    if conn > max then
        local waits = floor((conn - 1) / max)
        return waits * self.unit_delay, conn
    end
    return 0, conn
end

-- Whether the last `incoming` recorded the request (so `leaving` must be called for it).
function Limiter:is_committed()
    return self.committed
end

-- leaving(key, req_latency?) -> requests of `key` still in flight.
function Limiter:leaving(key, latency)
    assert(key)
    local conn, err = self.dict:incr(key, -1)
    if not conn then
        return nil, err
    end
    if latency then
        -- move the unit delay halfway towards what requests really take
        self.unit_delay = (self.unit_delay + latency) / 2
    end
    return conn
end

-- Takes back a committed request that will not reach `leaving`.
function Limiter:uncommit(key)
    assert(key)
    return self.dict:incr(key, -1)
end

function Limiter:set_conn(conn)
    self.max = conn
end

function Limiter:set_burst(burst)
    self.burst = burst
end

return Limiter
