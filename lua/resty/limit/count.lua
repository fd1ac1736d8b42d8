-- resty.limit.count: a fixed-window request counter (the API of lua-resty-limit-traffic's
-- resty.limit.count in the 1.2.0 release APISIX 3.18 is built with, moongate's own
-- implementation).
--
-- Per key the shared dict counts what was consumed in the current window; the counter is
-- created with the window as its time to live, so it starts over when the window ends.
-- `incoming` returns the amount consumed so far (this request included), not what remains:
-- that is the 1.2.0 contract (earlier releases returned the remainder) and what APISIX's
-- limit-count converts with `limit - consumed`.

local shared = ngx.shared
local assert, setmetatable = assert, setmetatable

local Counter = { _VERSION = "1.2.0" }
Counter.__index = Counter

-- new(dict_name, limit, window): at most `limit` per `window` seconds.
function Counter.new(dict_name, limit, window)
    local dict = shared[dict_name]
    if not dict then
        return nil, "shared dict not found"
    end
    assert(limit > 0, "limit must be positive")
    assert(window > 0, "window must be positive")
    return setmetatable({ dict = dict, limit = limit, window = window }, Counter)
end

-- incoming(key, commit, cost?) -> 0, consumed; or nil, "rejected" when `consumed` would pass
-- the limit (or nil, err from the dict). Without `commit` nothing is recorded. A rejected
-- committed request stays counted, as in the original.
function Counter:incoming(key, commit, cost)
    cost = cost or 1
    local dict = self.dict
    local consumed, err
    if commit then
        consumed, err = dict:incr(key, cost, 0, self.window)
        if not consumed then
            return nil, err
        end
    else
        consumed = (dict:get(key) or 0) + cost
    end
    if consumed > self.limit then
        return nil, "rejected"
    end
    return 0, consumed
end

-- Gives back `cost` (default 1) of a committed request; returns the amount consumed after.
function Counter:uncommit(key, cost)
    assert(key)
    local consumed, err = self.dict:incr(key, -(cost or 1))
    if not consumed then
        if err == "not found" then
            return 0
        end
        return nil, err
    end
    return consumed
end

function Counter:set_limit(limit)
    self.limit = limit
end

function Counter:set_window(window)
    self.window = window
end

return Counter
