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

local ffi_new, ffi_string, ffi_copy = require("ffi").new, require("ffi").string,
    require("ffi").copy

local now = ngx.now
local shared = ngx.shared
local abs, max = math.abs, math.max
local assert, setmetatable = assert, setmetatable

local Bucket = { _VERSION = "1.2.0" }
Bucket.__index = Bucket

-- A key's record is two doubles, {excess, last_ms}, stored as 16 bytes.
local RECORD_SIZE = 16
local record = ffi_new("double[2]")

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
function Bucket.new(dict_name, rate, burst)
    local dict = shared[dict_name]
    if not dict then
        return nil, "shared dict not found"
    end
    assert(rate > 0, "rate must be positive")
    assert(burst >= 0, "burst must not be negative")
    -- both kept in thousandths of a request, as the excess is
    return setmetatable({ dict = dict, rate = rate * 1000, burst = burst * 1000 }, Bucket)
end

-- incoming(key, commit) -> delay (seconds), excess (requests per second over the rate),
-- or nil, "rejected" (or nil, err from the dict). Only `commit` records the request.
function Bucket:incoming(key, commit)
    local dict, rate = self.dict, self.rate
    local stamp = now() * 1000

    local excess = 0
    local prev, last = load(dict, key)
    if prev then
        -- drain by the time passed (either direction: a clock step back still drains), then
        -- add this request
        local drained = rate * abs(stamp - last) / 1000
        excess = max(prev - drained + 1000, 0)
        if excess > self.burst then
            return nil, "rejected"
        end
    end

    if commit then
        local stored, err = store(dict, key, excess, stamp)
        if not stored then
            return nil, err
        end
    end
    local delay = excess / rate
    return delay, excess / 1000
end

-- Takes back one committed request (an approximation: the time it was counted at stays).
function Bucket:uncommit(key)
    assert(key)
    local dict = self.dict
    local excess, last = load(dict, key)
    if not excess then
        return nil, "not found"
    end
    local stored, err = store(dict, key, max(excess - 1000, 0), last)
    if not stored then
        return nil, err
    end
    return true
end

function Bucket:set_rate(rate)
    self.rate = rate * 1000
end

function Bucket:set_burst(burst)
    self.burst = burst * 1000
end

return Bucket
