-- core.ip: lists of addresses and CIDR ranges, over resty.ipmatcher (required on first use so
-- that loading apisix.core does not need it).

local ipairs, tonumber, require = ipairs, tonumber, require
local sfind, ssub = string.find, string.sub
local clog = require("apisix.core.log")
local cjson_shim = require("apisix.core.json")

local ip = {}

local function matcher_lib()
    return require("resty.ipmatcher")
end

-- A matcher (`m:match(addr)`) for `list`; nil, with an [error] line, when an entry is invalid.
function ip.create_ip_matcher(list)
    local m, why = matcher_lib().new(list)
    if m then
        return m
    end
    clog.error("failed to create ip matcher: ", why, " ip list: ", cjson_shim.delay_encode(list))
    return nil
end

-- Widest prefix length per address family, keyed by the parser that recognises it.
local families = {
    { parse = "parse_ipv4", widest = 32 },
    { parse = "parse_ipv6", widest = 128 },
}

-- True for an IPv4/IPv6 address, or for one with "/bits" within its family's width.
function ip.validate_cidr_or_ip(text)
    local addr, bits = text, 0
    local slash = sfind(text, "/", 1, true)
    if slash then
        addr = ssub(text, 1, slash - 1)
        bits = tonumber(ssub(text, slash + 1))
        if bits == nil then
            return false
        end
    end
    local lib = matcher_lib()
    for _, fam in ipairs(families) do
        if lib[fam.parse](addr) then
            return bits >= 0 and bits <= fam.widest
        end
    end
    return false
end

return ip
