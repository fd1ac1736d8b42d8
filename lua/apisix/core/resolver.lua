-- core.resolver: names to addresses through the host's resolver (`moongate.dns`: the system
-- resolver, which cosockets and upstream nodes use too), suspending only the calling request.
-- Address literals are returned as given. `parse_domain` gives one address (IPv4 first),
-- `parse_domain_all` every address, sorted.

local clog = require("apisix.core.log")
local cjson_shim = require("apisix.core.json")
local host_dns = require("moongate.dns")
local error = error

local resolver = {}

local function is_literal(name)
    return name:find("^%d+%.%d+%.%d+%.%d+$") ~= nil or name:find(":", 1, true) ~= nil
end

-- Every address of `name`, or nil and why.
local function addresses(name)
    if is_literal(name) then
        return { name }
    end
    local found, why = host_dns.resolve(name)
    if found and found[1] then
        return found
    end
    return nil, why or ("failed to resolve " .. name .. ": no address")
end

-- Resolves `name` and logs a failure the way APISIX does.
local function resolve_logged(name)
    local found, why = addresses(name)
    if not found then
        clog.error("failed to parse domain: ", name, ", error: ", why)
    end
    return found, why
end

-- `{address = ip}`, the record core.utils.dns_parse returns.
function resolver.parse_domain_record(name)
    local found, why = addresses(name)
    if found then
        return { address = found[1] }
    end
    return nil, why
end

function resolver.parse_domain(name)
    local found, why = resolve_logged(name)
    if not found then
        return nil, why
    end
    clog.info("dns resolver domain: ", name, " to ", found[1])
    return found[1]
end

function resolver.parse_domain_all(name)
    local found, why = resolve_logged(name)
    if not found then
        return nil, why
    end
    table.sort(found)
    clog.info("dns resolve ", name, ", result: ", cjson_shim.delay_encode(found))
    return found
end

-- Without servers of its own there is nothing to set up; custom servers are refused.
function resolver.init_resolver(opts)
    if opts and opts.dns_resolver then
        error(
            "core.resolver.init_resolver: custom dns_resolver servers are not supported by moongate; "
                .. "names resolve through the system resolver",
            2
        )
    end
end

return resolver
