-- resty.limit.req: request-rate limiting by the "leaky bucket" method (the API of
-- lua-resty-limit-traffic's resty.limit.req, moongate's own implementation).
--
-- Per key the shared dict keeps how far the key is over its rate (`excess`, in thousandths of
-- a request) and when it last counted. Each request adds one request's worth; elapsed time
-- drains `rate` requests per second. Over `burst` the request is rejected; otherwise it should
-- wait `excess / rate` seconds so the key conforms to its rate.
--
-- Like the original, the read-modify-write of one key is not atomic across workers: two
-- workers counting the same key at the same instant may both pass.

local ffi = require("ffi")

local ngx = ngx
local ngx_now = ngx.now
local shared = ngx.shared
local math_abs, math_max = math.abs, math.max
local assert, setmetatable = assert, setmetatable
local ffi_string, ffi_copy = ffi.string, ffi.copy

local _M = { _VERSION = "1.2.0" }
local mt = { __index = _M }

-- A key's record is two doubles, {excess, last_ms}, stored as 16 bytes.
local RECORD_SIZE = 16
local record = ffi.new("double[2]")

local function load(dict, key)
    local raw = dict:get(key)
    if raw == nil or #raw ~= RECORD_SIZE then
        return nil
    end
    ffi_copy(record, raw, RECORD_SIZE)
    return record[0], record[1]
end

local function store(dict, key, excess, last)
    record[0] = excess
    record[1] = last
    return dict:set(key, ffi_string(record, RECORD_SIZE))
end

-- new(dict_name, rate, burst): `rate` requests per second are let through without delay,
-- up to `burst` more per second are delayed, beyond that they are rejected.
function _M.new(dict_name, rate, burst)
    local dict = shared[dict_name]
    if not dict then
        return nil, "shared dict not found"
    end
    assert(rate > 0 and burst >= 0)
    return setmetatable({ dict = dict, rate = rate * 1000, burst = burst * 1000 }, mt)
end

-- incoming(key, commit) -> delay (seconds), excess (requests per second over the rate),
-- or nil, "rejected" (or nil, err from the dict). Only `commit` records the request.
function _M.incoming(self, key, commit)
    local dict = self.dict
    local rate = self.rate
    local now = ngx_now() * 1000

    local excess = 0
    local prev_excess, last = load(dict, key)
    if prev_excess then
        -- drain by the time passed (either direction: a clock step back still drains)
        excess = math_max(prev_excess - rate * math_abs(now - last) / 1000 + 1000, 0)
        if excess > self.burst then
            return nil, "rejected"
        end
    end

    if commit then
        local ok, err = store(dict, key, excess, now)
        if not ok then
            return nil, err
        end
    end
    return excess / rate, excess / 1000
end

-- Takes back one committed request (an approximation: the time it was counted at stays).
function _M.uncommit(self, key)
    assert(key)
    local dict = self.dict
    local excess, last = load(dict, key)
    if not excess then
        return nil, "not found"
    end
    local ok, err = store(dict, key, math_max(excess - 1000, 0), last)
    if not ok then
        return nil, err
    end
    return true
end

function _M.set_rate(self, rate)
    self.rate = rate * 1000
end

function _M.set_burst(self, burst)
    self.burst = burst * 1000
end

return _M
