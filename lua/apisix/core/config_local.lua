-- core.config_local: the node's config.yaml as a Lua table (`local_conf()`), merged over the
-- defaults APISIX's plugins read without checking. The Rust config loader parsed the file at
-- start; the table is built once per worker and shared, as APISIX caches it.

local cjson_shim = require("apisix.core.json")
local type, pairs, ipairs, getmetatable, setmetatable, tostring, require =
    type, pairs, ipairs, getmetatable, setmetatable, tostring, require

local config_local = {}

-- Keys plugins read as if always present, as dotted paths. APISIX's own default file has many
-- more; these are the ones moongate's plugins and the shim need.
local DEFAULTS = {
    { "apisix.node_listen", { 9080 } },
    { "apisix.enable_admin", true },
    { "apisix.enable_ipv6", true },
    { "apisix.enable_resolv_search_opt", true },
    { "apisix.dns_resolver_valid", 30 },
    { "apisix.resolver_timeout", 5 },
    { "apisix.router", { http = "radixtree_host_uri", ssl = "radixtree_sni" } },
    { "apisix.proxy_mode", "http" },
    -- TLS listeners (docs/tls.md); the redirect plugin reads the ports of `listen`.
    { "apisix.ssl", {
        enable = true,
        listen = { { port = 9443 } },
        ssl_protocols = "TLSv1.2 TLSv1.3",
        ssl_session_tickets = false,
    } },
    { "apisix.enable_http2", true },
    { "apisix.data_encryption.enable_encrypt_fields", true },
    { "apisix.data_encryption.keyring", { "qeddd145sfvddff3", "edd1c9f0985e76a2" } },
    { "nginx_config.error_log_level", "warn" },
    { "nginx_config.worker_processes", "auto" },
    { "nginx_config.http", { client_max_body_size = 0, real_ip_header = "X-Real-IP",
                             real_ip_recursive = "off", real_ip_from = { "127.0.0.1", "unix:" } } },
    -- moongate's own default deployment (APISIX's is traditional with etcd).
    { "deployment.role", "data_plane" },
    { "deployment.role_data_plane", { config_provider = "yaml" } },
    { "deployment.etcd", {
        host = { "http://127.0.0.1:2379" }, prefix = "/apisix", timeout = 30,
        watch_timeout = 50, startup_retry = 2, tls = { verify = true },
    } },
    { "plugin_attr", {} },
    -- The prometheus plugin's attributes (its exporter indexes them unchecked); the Rust side
    -- reads the same keys with the same defaults for the export listener (config/node.rs).
    { "plugin_attr.prometheus.export_uri", "/apisix/prometheus/metrics" },
    { "plugin_attr.prometheus.metric_prefix", "apisix_" },
    { "plugin_attr.prometheus.enable_export_server", true },
    { "plugin_attr.prometheus.export_addr", { ip = "127.0.0.1", port = 9091 } },
    { "plugin_attr.prometheus.refresh_interval", 15 },
}

-- What APISIX's loader derives after reading the file: `etcd` (the deployment's etcd section,
-- read by plugins and tests as `local_conf().etcd`) and `deployment.config_provider`.
local function derive(conf)
    local deployment = conf.deployment
    if type(deployment) ~= "table" then
        return
    end
    conf.etcd = deployment.etcd
    local role = deployment.role
    local role_conf = type(role) == "string" and deployment["role_" .. role]
    local provider = type(role_conf) == "table" and role_conf.config_provider
    deployment.config_provider = provider or "etcd"
    if role == "control_plane" and type(conf.apisix) == "table" then
        conf.apisix.enable_admin = true
    elseif role == "data_plane" and type(conf.apisix) == "table" then
        conf.apisix.enable_admin = false
    end
end

local function copy(v)
    if type(v) ~= "table" then
        return v
    end
    local out = {}
    for k, item in pairs(v) do
        out[k] = copy(item)
    end
    return out
end

-- A fresh table of the defaults (callers may change the result).
local function defaults()
    local root = {}
    for _, entry in ipairs(DEFAULTS) do
        local node = root
        local path = entry[1]
        local steps = {}
        for step in path:gmatch("[^.]+") do
            steps[#steps + 1] = step
        end
        for i = 1, #steps - 1 do
            node[steps[i]] = node[steps[i]] or {}
            node = node[steps[i]]
        end
        node[steps[#steps]] = copy(entry[2])
    end
    return root
end

local function is_list(t)
    return getmetatable(t) == cjson_shim.array_mt or t[1] ~= nil
end

-- `over` wins; tables merge key by key, lists replace. A key set to null in the YAML removes
-- the default too (`ssl: {enable: null}` leaves no `enable`), as APISIX's merge does.
local function overlay(base, over)
    for k, v in pairs(over) do
        local b = base[k]
        if v == cjson_shim.null then
            base[k] = nil
        elseif type(v) == "table" and type(b) == "table" and not is_list(v) and not is_list(b) then
            overlay(b, v)
        else
            base[k] = type(v) == "table" and cjson_shim.strip_nulls(v) or v
        end
    end
    return base
end

local function enabled_plugin_names()
    local names = setmetatable({}, cjson_shim.array_mt)
    for i, mod in ipairs(require("apisix.plugin").plugins) do
        names[i] = mod.name
    end
    return names
end

-- Built once per worker from the text the gateway parsed at start.
local built

function config_local.local_conf(force)
    if built == nil or force then
        -- A key written as `null` in the YAML is as good as absent (APISIX's YAML reader gives
        -- plugins nothing to index there either): `overlay` drops it.
        local doc, why = cjson_shim.decode(require("moongate.node").config_json())
        if type(doc) ~= "table" then
            return nil, "failed to read config.yaml: " .. tostring(why or "not a mapping")
        end
        built = overlay(defaults(), doc)
        derive(built)
        if built.plugins == nil then
            -- No `plugins:` in the file: every plugin is enabled, and the list reads as
            -- APISIX's default one does, by descending priority. Asked of apisix.plugin on each
            -- read, since local_conf() may be first called before the plugins have loaded.
            setmetatable(built, { __index = function(_, key)
                if key == "plugins" then
                    return enabled_plugin_names()
                end
            end })
        end
    end
    return built
end

function config_local.clear_cache()
    built = nil
end

return config_local
