-- resty.ipmatcher: match an address against a set of IPv4/IPv6 addresses and CIDR blocks, with
-- lua-resty-ipmatcher's API (moongate's own implementation, plain Lua so LuaJIT traces it).
--
-- A set keeps, per address family, one hash per prefix length that occurs in it, keyed by the
-- masked network address. A lookup masks the address with each of those lengths, longest
-- first, so the most specific block answers (that decides which value `new_with_value` returns
-- when blocks nest). IPv4 keys are numbers; IPv6 keys are the four masked 32-bit words joined.

local bit = require("bit")
local band, lshift, tobit = bit.band, bit.lshift, bit.tobit
local byte, sub, find, fmt = string.byte, string.sub, string.find, string.format
local tonumber, tostring, type, pairs, ipairs, setmetatable =
    tonumber, tostring, type, pairs, ipairs, setmetatable
local tbl_sort = table.sort

local _M = { _VERSION = 0.6 }
local mt = { __index = _M }

local DOT, COLON, LBRACKET, RBRACKET = 46, 58, 91, 93

-- One decimal octet of a dotted quad, `s[from..to]`: 0–255, no sign, no leading zero.
local function octet(s, from, to)
    local len = to - from + 1
    if len < 1 or len > 3 then
        return nil
    end
    local n = 0
    for i = from, to do
        local c = byte(s, i)
        if c < 48 or c > 57 then
            return nil
        end
        n = n * 10 + (c - 48)
    end
    if len > 1 and byte(s, from) == 48 then
        return nil
    end
    if n > 255 then
        return nil
    end
    return n
end

-- `s[from..to]` as a dotted quad → its value as a non-negative number, or nil.
local function dotted_quad(s, from, to)
    local value, start, parts = 0, from, 0
    for i = from, to + 1 do
        if i > to or byte(s, i) == DOT then
            local o = octet(s, start, i - 1)
            if not o then
                return nil
            end
            parts = parts + 1
            if parts > 4 then
                return nil
            end
            value = value * 256 + o
            start = i + 1
        end
    end
    if parts ~= 4 then
        return nil
    end
    return value
end

-- An IPv4 address in host byte order (a number), or false.
function _M.parse_ipv4(ip)
    if type(ip) ~= "string" then
        return false
    end
    return dotted_quad(ip, 1, #ip) or false
end

local function hex_group(s, from, to)
    local len = to - from + 1
    if len < 1 or len > 4 then
        return nil
    end
    local n = 0
    for i = from, to do
        local c = byte(s, i)
        local d
        if c >= 48 and c <= 57 then
            d = c - 48
        elseif c >= 97 and c <= 102 then
            d = c - 87
        elseif c >= 65 and c <= 70 then
            d = c - 55
        else
            return nil
        end
        n = n * 16 + d
    end
    return n
end

-- `s[from..to]` as an IPv6 address → eight 16-bit groups, or nil. One `::` may stand for a run
-- of zero groups; the last 32 bits may be written as a dotted quad.
local function ipv6_groups(s, from, to)
    if to < from then
        return nil
    end
    local head, tail = {}, {}
    local cur = head
    local i = from
    local gap = false
    if byte(s, i) == COLON then
        if byte(s, i + 1) ~= COLON then
            return nil
        end
        gap = true
        cur = tail
        i = i + 2
        if i > to then
            return { 0, 0, 0, 0, 0, 0, 0, 0 }
        end
    end
    while i <= to do
        local stop = find(s, ":", i, true)
        if not stop or stop > to then
            stop = to + 1
        end
        local piece_end = stop - 1
        if find(s, ".", i, true) and stop > to then
            -- The embedded IPv4 form: the last piece holds 32 bits.
            local v4 = dotted_quad(s, i, piece_end)
            if not v4 then
                return nil
            end
            cur[#cur + 1] = (v4 - v4 % 65536) / 65536
            cur[#cur + 1] = v4 % 65536
            i = to + 1
            break
        end
        local g = hex_group(s, i, piece_end)
        if not g then
            return nil
        end
        cur[#cur + 1] = g
        if stop > to then
            i = to + 1
            break
        end
        -- `stop` is a colon: a second one right after it is the gap.
        if byte(s, stop + 1) == COLON then
            if gap then
                return nil
            end
            gap = true
            cur = tail
            i = stop + 2
            if i > to then
                break
            end
        else
            i = stop + 1
            if i > to then
                return nil -- a trailing single colon
            end
        end
    end
    local n = #head + #tail
    if gap then
        if n > 7 then
            return nil
        end
    elseif n ~= 8 then
        return nil
    end
    local groups = {}
    for k = 1, #head do
        groups[k] = head[k]
    end
    for k = #head + 1, 8 - #tail do
        groups[k] = 0
    end
    for k = 1, #tail do
        groups[8 - #tail + k] = tail[k]
    end
    return groups
end

-- Eight 16-bit groups → four 32-bit words (non-negative numbers).
local function words_of(groups)
    return {
        groups[1] * 65536 + groups[2],
        groups[3] * 65536 + groups[4],
        groups[5] * 65536 + groups[6],
        groups[7] * 65536 + groups[8],
    }
end

-- An IPv6 address (optionally in brackets) as four 32-bit words in host byte order, or false.
function _M.parse_ipv6(ip)
    if type(ip) ~= "string" then
        return false
    end
    local from, to = 1, #ip
    if byte(ip, 1) == LBRACKET then
        if byte(ip, to) ~= RBRACKET then
            return false
        end
        from, to = 2, to - 1
    end
    local groups = ipv6_groups(ip, from, to)
    if not groups then
        return false
    end
    return words_of(groups)
end

-- The network mask of a prefix of `len` bits (0–32) as a signed 32-bit number.
local function mask32(len)
    if len <= 0 then
        return 0
    end
    if len >= 32 then
        return -1
    end
    return lshift(-1, 32 - len)
end

local function v4_key(value, len)
    return band(tobit(value), mask32(len))
end

local function v6_key(words, len)
    local k1, k2, k3, k4
    k1 = band(tobit(words[1]), mask32(len))
    k2 = band(tobit(words[2]), mask32(len - 32))
    k3 = band(tobit(words[3]), mask32(len - 64))
    k4 = band(tobit(words[4]), mask32(len - 96))
    return fmt("%d:%d:%d:%d", k1, k2, k3, k4)
end

-- Splits `"addr/len"`; `len` defaults to the family's full width.
local function parse_entry(entry)
    if type(entry) ~= "string" then
        return nil
    end
    local slash = find(entry, "/", 1, true)
    local addr, len = entry, nil
    if slash then
        addr = sub(entry, 1, slash - 1)
        local digits = sub(entry, slash + 1)
        if not find(digits, "^%d+$") then
            return nil
        end
        len = tonumber(digits)
    end
    local v4 = _M.parse_ipv4(addr)
    if v4 then
        len = len or 32
        if len > 32 then
            return nil
        end
        return 4, v4_key(v4, len), len
    end
    local v6 = _M.parse_ipv6(addr)
    if v6 then
        len = len or 128
        if len > 128 then
            return nil
        end
        return 6, v6_key(v6, len), len
    end
    return nil
end

local function add(family, key, len, value)
    local by_len = family.by_len[len]
    if not by_len then
        by_len = {}
        family.by_len[len] = by_len
        family.lens[#family.lens + 1] = len
    end
    by_len[key] = value
end

local function build(pairs_of, with_value)
    local set = {
        v4 = { by_len = {}, lens = {} },
        v6 = { by_len = {}, lens = {} },
        with_value = with_value,
    }
    for entry, value in pairs_of do
        local family, key, len = parse_entry(entry)
        if not family then
            return nil, "invalid ip address: " .. tostring(entry)
        end
        add(family == 4 and set.v4 or set.v6, key, len, value)
    end
    local desc = function(a, b) return a > b end
    tbl_sort(set.v4.lens, desc)
    tbl_sort(set.v6.lens, desc)
    return setmetatable(set, mt)
end

-- A matcher for a list of addresses and CIDRs (`{"127.0.0.1", "10.0.0.0/8", "::1"}`).
function _M.new(ips)
    if type(ips) ~= "table" then
        return nil, "ips should be a table"
    end
    local list = {}
    for i, ip in ipairs(ips) do
        list[i] = ip
    end
    local i = 0
    return build(function()
        i = i + 1
        if list[i] ~= nil then
            return list[i], true
        end
    end, false)
end

-- A matcher whose `match` returns the value given for the (most specific) matching block.
function _M.new_with_value(ips)
    if type(ips) ~= "table" then
        return nil, "ips should be a table"
    end
    local keys, values = {}, {}
    for k, v in pairs(ips) do
        keys[#keys + 1] = k
        values[#values + 1] = v
    end
    local i = 0
    return build(function()
        i = i + 1
        if keys[i] ~= nil then
            return keys[i], values[i]
        end
    end, true)
end

local function lookup_v4(set, value)
    local fam = set.v4
    local lens = fam.lens
    for i = 1, #lens do
        local len = lens[i]
        local hit = fam.by_len[len][v4_key(value, len)]
        if hit ~= nil then
            return hit
        end
    end
    return false
end

local function lookup_v6(set, words)
    local fam = set.v6
    local lens = fam.lens
    for i = 1, #lens do
        local len = lens[i]
        local hit = fam.by_len[len][v6_key(words, len)]
        if hit ~= nil then
            return hit
        end
    end
    return false
end

-- `true` (or the value of `new_with_value`) when `ip` is in the set, else `false`;
-- `nil, err` when `ip` is not an address.
function _M.match(self, ip)
    local v4 = _M.parse_ipv4(ip)
    if v4 then
        return lookup_v4(self, v4)
    end
    local v6 = _M.parse_ipv6(ip)
    if v6 then
        return lookup_v6(self, v6)
    end
    return nil, "invalid ip address: " .. tostring(ip)
end

-- As `match`, for an address in network byte order (4 or 16 bytes, like
-- `$binary_remote_addr`).
function _M.match_bin(self, bin)
    if type(bin) ~= "string" then
        return nil, "invalid binary ip address"
    end
    local n = #bin
    if n == 4 then
        local a, b, c, d = byte(bin, 1, 4)
        return lookup_v4(self, ((a * 256 + b) * 256 + c) * 256 + d)
    end
    if n == 16 then
        local words = {}
        for w = 0, 3 do
            local a, b, c, d = byte(bin, w * 4 + 1, w * 4 + 4)
            words[w + 1] = ((a * 256 + b) * 256 + c) * 256 + d
        end
        return lookup_v6(self, words)
    end
    return nil, "invalid binary ip address"
end

return _M
