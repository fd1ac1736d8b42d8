-- core.resolver: host names to addresses, through the host's resolver (`moongate.dns`, the
-- system resolver, as cosockets and upstream nodes resolve). IP literals come back as they
-- are. `parse_domain` returns one address (IPv4 preferred), `parse_domain_all` all of them,
-- sorted.

local log = require("apisix.core.log")
local json = require("apisix.core.json")
local dns = require("moongate.dns")
local sort, find = table.sort, string.find

local _M = {}

local function is_ip(host)
    return host:match("^%d+%.%d+%.%d+%.%d+$") ~= nil or find(host, ":", 1, true) ~= nil
end

local function lookup(host)
    if is_ip(host) then
        return { host }
    end
    local addrs, err = dns.resolve(host)
    if not addrs or #addrs == 0 then
        return nil, err or ("failed to resolve " .. host .. ": no address")
    end
    return addrs
end

-- The record APISIX's utils.dns_parse returns: `{address = ip}`.
function _M.parse_domain_record(host)
    local addrs, err = lookup(host)
    if not addrs then
        return nil, err
    end
    return { address = addrs[1] }
end

function _M.parse_domain(host)
    local addrs, err = lookup(host)
    if not addrs then
        log.error("failed to parse domain: ", host, ", error: ", err)
        return nil, err
    end
    log.info("dns resolver domain: ", host, " to ", addrs[1])
    return addrs[1]
end

function _M.parse_domain_all(host)
    local addrs, err = lookup(host)
    if not addrs then
        log.error("failed to parse domain: ", host, ", error: ", err)
        return nil, err
    end
    sort(addrs)
    log.info("dns resolve ", host, ", result: ", json.delay_encode(addrs))
    return addrs
end

function _M.init_resolver(args)
    if args and args.dns_resolver then
        error("core.resolver.init_resolver: custom dns_resolver servers are not supported by moongate; "
            .. "names resolve through the system resolver", 2)
    end
end

return _M
