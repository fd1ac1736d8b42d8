-- apisix.control.v1: the control API's own endpoints, the ones APISIX documents whatever the
-- plugins: schemas, health checks, the running routes/services/upstreams and plugin metadata,
-- a garbage collection and the plugin reload. The module is a list of
-- `{methods, uris, handler}` routes (full `/v1/...` paths) for apisix.control.router, plus
-- `get_health_checkers()` (prometheus reads it) and `reload_event`.
--
-- The resources are the running snapshot's, each shown as the data plane holds it: the
-- resource schema's defaults filled in, upstream `nodes` as a list of `{host, port, weight}`.
-- Health checks do not exist in moongate yet (upstream `checks` are refused when the config
-- loads), so no resource ever has a checker.

local core = require("apisix.core")
local loaded = require("apisix.plugin")
local config = require("moongate.config")
local plugin_set = require("moongate.plugin_set")
local cjson_safe = require("cjson.safe")

local ipairs, pairs, type, next, pcall, setmetatable = ipairs, pairs, type, next, pcall, setmetatable
local str_format, find = string.format, string.find
local sort = table.sort
local ngx = ngx

local decoder = cjson_safe.new()
-- config arrays stay arrays when shown again, as APISIX decodes config
decoder.decode_array_with_array_mt(true)

local _M = {}

local RELOAD_EVENT = "control-api-plugin-reload"

local SCHEMA_KINDS = {
    "consumer", "consumer_group", "global_rule", "plugin_config", "plugins", "proto", "route",
    "service", "ssl", "stream_route", "upstream", "upstream_hash_header_schema",
    "upstream_hash_vars_schema",
}

local PLUGIN_ATTRS = {
    version = true, priority = true, schema = true, metadata_schema = true,
    consumer_schema = true, type = true, scope = true,
}

local function schema()
    local main = {}
    for _, kind in ipairs(SCHEMA_KINDS) do
        main[kind] = core.schema[kind]
    end
    local http_plugins = loaded.get_all(PLUGIN_ATTRS)
    for _, native in ipairs(plugin_set.natives) do
        -- a native plugin's schema is not served yet: what it has is its priority
        http_plugins[native.name] = { priority = native.priority }
    end
    return 200, { main = main, plugins = http_plugins, stream_plugins = {} }
end

-- ---------------------------------------------------------------------------------------
-- The running resources, decoded and completed once per config version.

local SCHEMA_OF = { routes = "route", services = "service", upstreams = "upstream" }

-- An IP literal, not a host name to resolve (IPv6 literals are the only hosts with a colon).
local function is_ip(host)
    if type(host) ~= "string" then
        return false
    end
    return find(host, "^%d+%.%d+%.%d+%.%d+$") ~= nil or find(host, ":", 1, true) ~= nil
end

-- What APISIX's upstream filter does to an upstream it holds: `nodes` as a list, the owner's
-- identity on it, and `has_domain` on the owning item when a node is a host name.
local function complete_upstream(up, item)
    up.resource_key = item.key
    up.resource_version = item.modifiedIndex
    up.resource_id = item.value.id
    local nodes = up.nodes
    if type(nodes) ~= "table" then
        return
    end
    local first = next(nodes)
    if first == nil or type(first) == "number" then
        for i = 1, #nodes do
            if not is_ip(nodes[i].host) then
                item.has_domain = true
            end
        end
        return
    end
    local list = setmetatable({}, cjson_safe.array_mt)
    for address, weight in pairs(nodes) do
        local node_host, node_port = core.utils.parse_addr(address)
        if not is_ip(node_host) then
            item.has_domain = true
        end
        list[#list + 1] = { host = node_host, port = node_port, weight = weight }
    end
    -- the map had no order: show the nodes in a stable one, by host, then port
    sort(list, function(x, y)
        if x.host == y.host then
            return (x.port or -1) < (y.port or -1)
        end
        return x.host < y.host
    end)
    up.nodes = list
end

-- Each plugin conf through its plugin's check, which fills the conf's defaults, as the data
-- plane's check of a synced item does in APISIX.
local function fill_plugin_defaults(plugins)
    if type(plugins) ~= "table" then
        return
    end
    for plugin_name, conf in pairs(plugins) do
        local mod = loaded.plugins_hash[plugin_name]
        if mod and type(mod.check_schema) == "function" and type(conf) == "table" then
            pcall(mod.check_schema, conf)
        end
    end
end

local cache = {}

local function configured(kind)
    local version = config.snapshot_version()
    if version == nil then
        return {}
    end
    local hit = cache[kind]
    if hit and hit.version == version then
        return hit.items
    end
    local _, text = config.configured(kind)
    local items, err = decoder.decode(text)
    if not items then
        core.log.error("failed to decode the ", kind, " of the running config: ", err)
        items = {}
    end
    local resource_schema = core.schema[SCHEMA_OF[kind]]
    for i = 1, #items do
        local item = items[i]
        local ok, check_err = core.schema.check(resource_schema, item.value)
        if not ok then
            -- the config loaded: what differs is moongate's own reading of it
            core.log.info("control API: ", item.key, " as shown may lack defaults: ", check_err)
        end
        fill_plugin_defaults(item.value.plugins)
        item.has_domain = false
        if kind == "upstreams" then
            complete_upstream(item.value, item)
        elseif type(item.value.upstream) == "table" then
            complete_upstream(item.value.upstream, item)
        end
    end
    cache[kind] = { version = version, items = items }
    return items
end

local function find(kind, id)
    for _, item in ipairs(configured(kind)) do
        if item.value.id == id then
            return item
        end
    end
    return nil
end

-- The i-th segment of the request path (`/v1/route/1`: 4 is "1").
local function segment(i)
    return core.utils.split_uri(ngx.var.uri)[i]
end

local function all(kind)
    return function()
        local list = configured(kind)
        -- as APISIX: no resources at all is an empty JSON object
        return 200, #list > 0 and list or {}
    end
end

local function one(kind, label)
    return function()
        local id = segment(4)
        local item = id and find(kind, id)
        if not item then
            return 404, { error_msg = str_format("%s[%s] not found", label, id) }
        end
        return 200, item
    end
end

-- ---------------------------------------------------------------------------------------
-- Health checks: none exist yet.

function _M.get_health_checkers()
    return {}
end

local HTML_PAGE = [[
<!DOCTYPE html>
<html>
<head><title>moongate health checks</title></head>
<body>
<h1>Upstream health checks</h1>
<p>No upstream has a health checker.</p>
</body>
</html>
]]

local function wants_html()
    local accept = ngx.var.http_accept
    return accept ~= nil and accept:find("text/html", 1, true) ~= nil
end

local function health_checkers()
    local infos = _M.get_health_checkers()
    if wants_html() and #infos == 0 then
        ngx.header["Content-Type"] = "text/html"
        return 200, HTML_PAGE
    end
    return 200, infos
end

local SRC_TYPES = { routes = "routes", services = "services", upstreams = "upstreams",
                    stream_routes = false }

local function health_checker()
    local src_type, src_id = segment(4), segment(5)
    if not src_id then
        return 404, { error_msg = str_format("missing src id for src type %s", src_type) }
    end
    local kind = SRC_TYPES[src_type]
    if kind == nil then
        return 400, { error_msg = str_format("invalid src type %s", src_type) }
    end
    if not kind or not find(kind, src_id) then
        return 404, { error_msg = str_format("%s[%s] not found", src_type, src_id) }
    end
    return 404, { error_msg = str_format("no checker for %s[%s]", src_type, src_id) }
end

-- ---------------------------------------------------------------------------------------
-- Plugin metadata.

local function loaded_names()
    local names = {}
    for _, mod in ipairs(loaded.plugins) do
        names[#names + 1] = mod.name
    end
    sort(names)
    return names
end

local function all_metadata()
    local list = {}
    for _, name in ipairs(loaded_names()) do
        local item = loaded.plugin_metadata(name)
        if item then
            list[#list + 1] = item.value
        end
    end
    return 200, list
end

local function one_metadata()
    local name = segment(4)
    local item = name and loaded.plugin_metadata(name)
    if not item then
        return 404, { error_msg = str_format("plugin metadata[%s] not found", name) }
    end
    return 200, item.value
end

-- ---------------------------------------------------------------------------------------

local function gc()
    collectgarbage()
    return 200
end

local function reload()
    local ok, err = plugin_set.reload()
    if not ok then
        return 503, { error_msg = err }
    end
    return 200, "done"
end

local routes = {
    { methods = { "GET" }, uris = { "/v1/schema" }, handler = schema },
    { methods = { "GET" }, uris = { "/v1/healthcheck" }, handler = health_checkers },
    { methods = { "GET" }, uris = { "/v1/healthcheck/*" }, handler = health_checker },
    { methods = { "POST" }, uris = { "/v1/gc" }, handler = gc },
    { methods = { "GET" }, uris = { "/v1/routes" }, handler = all("routes") },
    { methods = { "GET" }, uris = { "/v1/route/*" }, handler = one("routes", "route") },
    { methods = { "GET" }, uris = { "/v1/services" }, handler = all("services") },
    { methods = { "GET" }, uris = { "/v1/service/*" }, handler = one("services", "service") },
    { methods = { "GET" }, uris = { "/v1/upstreams" }, handler = all("upstreams") },
    { methods = { "GET" }, uris = { "/v1/upstream/*" }, handler = one("upstreams", "upstream") },
    { methods = { "GET" }, uris = { "/v1/plugin_metadatas" }, handler = all_metadata },
    { methods = { "GET" }, uris = { "/v1/plugin_metadata/*" }, handler = one_metadata },
    { methods = { "PUT" }, uris = { "/v1/plugins/reload" }, handler = reload },
}

for _, r in ipairs(routes) do
    _M[#_M + 1] = r
end
_M.reload_event = RELOAD_EVENT

return _M
