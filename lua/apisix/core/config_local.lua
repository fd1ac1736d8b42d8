-- core.config_local: the node's config.yaml as a Lua table (`local_conf()`), merged over the
-- defaults APISIX's plugins read without checking. The Rust config loader parsed the file at
-- start; the table is built once per worker and shared, as APISIX caches it.

local json = require("apisix.core.json")
local type, pairs, getmetatable, tostring, require = type, pairs, getmetatable, tostring, require

local _M = {}

-- Defaults of keys plugins read as if always present (APISIX's cli/config.lua has them).
local function defaults()
    return {
        apisix = {
            node_listen = { 9080 },
            enable_admin = true,
            enable_ipv6 = true,
            enable_resolv_search_opt = true,
            dns_resolver_valid = 30,
            resolver_timeout = 5,
            router = { http = "radixtree_host_uri", ssl = "radixtree_sni" },
            proxy_mode = "http",
            ssl = { enable = false },
            data_encryption = { enable_encrypt_fields = true, keyring = { "qeddd145sfvddff3", "edd1c9f0985e76a2" } },
        },
        nginx_config = {
            error_log_level = "warn",
            worker_processes = "auto",
            http = { client_max_body_size = 0 },
        },
        -- moongate's own default deployment (APISIX's is traditional + etcd).
        deployment = {
            role = "data_plane",
            role_data_plane = { config_provider = "yaml" },
        },
        plugin_attr = {},
    }
end

local function is_list(t)
    return getmetatable(t) == json.array_mt or t[1] ~= nil
end

-- `over` wins; tables merge key by key, lists replace.
local function overlay(base, over)
    for k, v in pairs(over) do
        local b = base[k]
        if type(v) == "table" and type(b) == "table" and not is_list(v) and not is_list(b) then
            overlay(b, v)
        else
            base[k] = v
        end
    end
    return base
end

local cached

function _M.local_conf(force)
    if cached and not force then
        return cached
    end
    local text = require("moongate.node").config_json()
    local file, err = json.decode(text)
    if type(file) ~= "table" then
        return nil, "failed to read config.yaml: " .. tostring(err or "not a mapping")
    end
    cached = overlay(defaults(), file)
    return cached
end

function _M.clear_cache()
    cached = nil
end

return _M
