-- resty.ksuid: K-Sortable Unique IDs with lua-resty-ksuid's API (moongate's own
-- implementation). A KSUID is 20 bytes — a 32-bit big-endian count of seconds since
-- 2014-05-13T16:53:20Z (1400000000) followed by 16 random bytes — written as 27 base62 digits
-- (`0-9A-Za-z`), zero-padded, so ids sort by creation second as plain strings.

local ngx = ngx
local random_bytes = require("resty.random").bytes
local byte, sub = string.byte, string.sub
local floor, concat = math.floor, table.concat

local _M = { _VERSION = "1.0.1" }

local EPOCH = 1400000000
local ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
local LENGTH = 27

-- Base62 of the big-endian number in `digits` (base-256 values), by repeated division.
local function base62(digits)
    local out = {}
    local n = #digits
    local start = 1
    while start <= n do
        local rem = 0
        for i = start, n do
            local acc = rem * 256 + digits[i]
            digits[i] = floor(acc / 62)
            rem = acc % 62
        end
        out[#out + 1] = sub(ALPHABET, rem + 1, rem + 1)
        while start <= n and digits[start] == 0 do
            start = start + 1
        end
    end
    for _ = #out + 1, LENGTH do
        out[#out + 1] = "0"
    end
    -- Digits came out least significant first.
    local s = {}
    for i = #out, 1, -1 do
        s[#s + 1] = out[i]
    end
    return concat(s)
end

-- A new KSUID string for the current second.
function _M.generate()
    local ts = floor(ngx.time()) - EPOCH
    local digits = {
        floor(ts / 16777216) % 256, floor(ts / 65536) % 256, floor(ts / 256) % 256, ts % 256,
    }
    local payload = random_bytes(16)
    for i = 1, 16 do
        digits[4 + i] = byte(payload, i)
    end
    return base62(digits)
end

return _M
