-- core.config: APISIX's config-provider module as plugins use it: `local_conf()` (the node's
-- config.yaml), `type` (the provider), and `new()`, which in APISIX watches an etcd prefix
-- from Lua. moongate's config plane is Rust; a Lua watcher does not exist here, so `new`
-- raises an error naming itself.

local config_local = require("apisix.core.config_local")
local error, type, tostring = error, type, tostring

local _M = {
    version = 0.3,
    local_conf = config_local.local_conf,
    clear_local_cache = config_local.clear_cache,
}

-- The provider of the deployment's role (`deployment.role_<role>.config_provider`).
local conf = config_local.local_conf()
local deployment = conf and conf.deployment or {}
local role_conf = deployment["role_" .. tostring(deployment.role)]
_M.type = type(role_conf) == "table" and role_conf.config_provider or "yaml"

function _M.new(key)
    error("core.config.new(" .. tostring(key) .. ") is not supported by moongate: "
        .. "config is watched by the Rust config plane, not from Lua", 2)
end

function _M.fetch_created_obj(key)
    error("core.config.fetch_created_obj(" .. tostring(key) .. ") is not supported by moongate", 2)
end

return _M
