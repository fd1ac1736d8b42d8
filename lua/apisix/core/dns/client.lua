-- core.dns_client (apisix.core.dns.client): `new(opts)` → a client whose `resolve(domain,
-- selector)` gives `{address = ip}` (RETURN_RANDOM: one, RETURN_ALL: every record), through the
-- host's system resolver. Custom nameservers are refused: moongate has no DNS client of its own.

local dns = require("moongate.dns")
local random, setmetatable, error = math.random, setmetatable, error

local _M = {
    RETURN_RANDOM = 1,
    RETURN_ALL = 2,
}
local mt = { __index = _M }

function _M.new(opts)
    if opts and opts.nameservers and #opts.nameservers > 0 then
        error("core.dns_client.new: custom nameservers are not supported by moongate; "
            .. "names resolve through the system resolver", 2)
    end
    return setmetatable({ opts = opts or {} }, mt)
end

function _M.resolve(self, domain, selector)
    local addrs, err = dns.resolve(domain)
    if not addrs or #addrs == 0 then
        return nil, "failed to query the DNS server: " .. (err or "no address")
    end
    if selector == _M.RETURN_ALL then
        local out = {}
        for i, a in ipairs(addrs) do
            out[i] = { address = a }
        end
        return out
    end
    return { address = addrs[random(#addrs)] }
end

return _M
