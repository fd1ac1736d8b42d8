-- core.dns_client (apisix.core.dns.client): `new(opts)` → a client whose `resolve(domain,
-- selector)` gives `{address = ip}` (RETURN_RANDOM: one, RETURN_ALL: every record), through the
-- host's system resolver. Custom nameservers are refused: moongate has no DNS client of its own.

local dns = require("moongate.dns")
local random, setmetatable, error = math.random, setmetatable, error

local client = {
    RETURN_RANDOM = 1,
    RETURN_ALL = 2,
}
local Client = { __index = client }

function client.new(opts)
    if opts and opts.nameservers and #opts.nameservers > 0 then
        error("core.dns_client.new: custom nameservers are not supported by moongate; "
            .. "names resolve through the system resolver", 2)
    end
    return setmetatable({ opts = opts or {} }, Client)
end

function client:resolve(name, selector)
    local found, why = dns.resolve(name)
    if not (found and found[1]) then
        return nil, "failed to query the DNS server: " .. (why or "no address")
    end
    if selector ~= client.RETURN_ALL then
        return { address = found[random(#found)] }
    end
    local records = {}
    for i = 1, #found do
        records[i] = { address = found[i] }
    end
    return records
end

return client
