-- core.ip: IP/CIDR lists, over resty.ipmatcher (loaded on first use).

local log = require("apisix.core.log")
local json = require("apisix.core.json")
local type, ipairs, tonumber, require = type, ipairs, tonumber, require
local find, sub = string.find, string.sub

local _M = {}

-- A matcher (`:match(ip)`) for a list of IPs and CIDRs, or nil (logged) when one is invalid.
function _M.create_ip_matcher(ip_list)
    local matcher, err = require("resty.ipmatcher").new(ip_list)
    if not matcher then
        log.error("failed to create ip matcher: ", err, " ip list: ", json.delay_encode(ip_list))
        return nil
    end
    return matcher
end

-- An IPv4/IPv6 address, or a CIDR with a prefix length valid for its family.
function _M.validate_cidr_or_ip(ip)
    local ipmatcher = require("resty.ipmatcher")
    local mask = 0
    local slash = find(ip, "/", 1, true)
    if slash then
        mask = tonumber(sub(ip, slash + 1))
        ip = sub(ip, 1, slash - 1)
        if not mask then
            return false
        end
    end
    if ipmatcher.parse_ipv4(ip) then
        return mask >= 0 and mask <= 32
    end
    if ipmatcher.parse_ipv6(ip) then
        return mask >= 0 and mask <= 128
    end
    return false
end

return _M
