-- apisix.core.etcd: APISIX's Lua etcd client. moongate's config plane is Rust and talks to the
-- store itself, so there is no Lua client: the module loads (code that only requires it, as
-- APISIX's test prologues do, works) and every member it is asked for raises an error naming
-- it, the same refusal `core.etcd` gives.

local error, tostring, setmetatable = error, tostring, setmetatable

local REASON = "core.etcd (the Lua etcd client) is not supported by moongate: "
    .. "the gateway's Rust config plane talks to etcd"

return setmetatable({}, {
    __index = function(_, member)
        error(REASON .. " (core.etcd." .. tostring(member) .. ")", 2)
    end,
    __newindex = function(_, member)
        error(REASON .. " (core.etcd." .. tostring(member) .. ")", 2)
    end,
})
