-- moongate.admin_checks: what the Admin API asks of a resource body besides its references and
-- its plugins, in the words APISIX's Admin API answers with. The Rust side (src/admin) calls
-- `check(kind, stage, conf)` on the plugin checker's VM with a decoded copy of the body:
--
--   stage "shape"  before references and plugins: mutually exclusive fields, the resource's
--                  JSON schema (apisix.schema_def through core.schema), the upstream rules;
--   stage "code"   after them: the Lua source a route or service carries (`filter_func`,
--                  `script`) must load.
--
-- It answers nil when the body passes, else the error message. Nothing here reads the store:
-- ids a body names are checked by the caller, which owns the store.

local core_schema = require("apisix.core.schema")
local json = require("apisix.core.json")
local defs = require("apisix.schema_def")
local type, pairs, ipairs, tostring, tonumber = type, pairs, ipairs, tostring, tonumber
local pcall, require = pcall, require
local loadstring = loadstring
local find, byte = string.find, string.byte

local _M = {}

-- Which schema_def entry each Admin API directory is judged by.
local schema_of = {
    routes = "route",
    services = "service",
    upstreams = "upstream",
    consumers = "consumer",
    credentials = "credential",
    consumer_groups = "consumer_group",
    ssls = "ssl",
    global_rules = "global_rule",
    plugin_configs = "plugin_config",
    protos = "proto",
    stream_routes = "stream_route",
}

local function schema_failure(schema, conf)
    local ok, err = core_schema.check(schema, conf)
    if ok then
        return nil
    end
    return "invalid configuration: " .. tostring(err)
end

local function is_array(t)
    if type(t) ~= "table" then
        return false
    end
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n == #t
end

-- The port after the last colon of "host:port" ("[v6]:port" included), nil when none.
local function port_of(addr)
    local last
    local from = 1
    while true do
        local at = find(addr, ":", from, true)
        if not at then
            break
        end
        last, from = at, at + 1
    end
    if not last then
        return nil
    end
    local host = addr:sub(1, last - 1)
    -- a bare IPv6 address has colons but no port
    if byte(addr, 1) ~= 91 and find(host, ":", 1, true) then
        return nil
    end
    return tonumber(addr:sub(last + 1))
end

-- The chash `key` must read as what `hash_on` takes it for.
local key_schema_by_source = {
    vars = "upstream_hash_vars_schema",
    header = "upstream_hash_header_schema",
    cookie = "upstream_hash_header_schema",
    vars_combinations = "upstream_hash_vars_combinations_schema",
}

-- A bare IPv6 address: hex digits, dots (an embedded IPv4) and at least two colons.
local function bare_ipv6(host)
    if byte(host, 1) == 91 or not host:find("^[%x:%.]+$") then
        return false
    end
    local _, colons = host:gsub(":", "")
    return colons >= 2
end

local function upstream_failure(up)
    for _, node in ipairs(type(up.nodes) == "table" and up.nodes or {}) do
        local host = type(node) == "table" and node.host
        if type(host) == "string" and bare_ipv6(host) then
            return "invalid configuration: IPv6 address must be enclosed with '[' and ']'"
        end
    end
    local err = schema_failure(defs.upstream, up)
    if err then
        return err
    end
    if type(up.nodes) == "table" and not is_array(up.nodes) then
        for addr in pairs(up.nodes) do
            local port = port_of(addr)
            if port and (port < 1 or port > 65535) then
                return "invalid port " .. tostring(port)
            end
        end
    end
    if up.pass_host == "rewrite" and (up.upstream_host == nil or up.upstream_host == "") then
        return "`upstream_host` can't be empty when `pass_host` is `rewrite`"
    end
    if up.type ~= "chash" then
        return nil
    end
    local source = up.hash_on or "vars"
    if source ~= "consumer" and up.key == nil then
        return "missing key"
    end
    if source == "consumer" then
        return nil
    end
    local which = key_schema_by_source[source]
    if not which then
        return "type is chash, err: invalid hash_on type " .. tostring(source)
    end
    return schema_failure(defs[which], up.key)
end

local function route_pairs_failure(conf)
    if conf.host and conf.hosts then
        return "only one of host or hosts is allowed"
    end
    if conf.remote_addr and conf.remote_addrs then
        return "only one of remote_addr or remote_addrs is allowed"
    end
end

local function shape(kind, conf)
    if kind == "upstreams" then
        return upstream_failure(conf)
    end
    if kind == "routes" then
        local err = route_pairs_failure(conf)
        if err then
            return err
        end
        -- moongate's one route extension is not APISIX's to judge; it counts as something
        -- for the route to run, as plugins would.
        if conf.lua_handlers ~= nil then
            conf.lua_handlers = nil
            if conf.plugins == nil and conf.upstream == nil and conf.upstream_id == nil
                and conf.service_id == nil and conf.script == nil then
                conf.plugins = {}
            end
        end
    end
    local name = schema_of[kind]
    if name then
        local err = schema_failure(defs[name], conf)
        if err then
            return err
        end
    end
    if (kind == "routes" or kind == "services" or kind == "stream_routes")
        and type(conf.upstream) == "table" then
        return upstream_failure(conf.upstream)
    end
    return nil
end

-- Loads `source` as Lua text; the chunk must yield a value of type `want`.
local function loads(field, source, prefix, want, want_words)
    local chunk, err = loadstring(prefix .. source)
    if not chunk then
        return "failed to load '" .. field .. "' string: " .. err
    end
    local ok, made = pcall(chunk)
    if not ok or type(made) ~= want then
        return want_words
    end
    return nil
end

local function code(kind, conf)
    if kind ~= "routes" and kind ~= "services" then
        return nil
    end
    if kind == "routes" and type(conf.filter_func) == "string" then
        local err = loads("filter_func", conf.filter_func, "return ", "function",
                          "'filter_func' should be a function")
        if err then
            return err
        end
    end
    if type(conf.script) == "string" then
        return loads("script", conf.script, "", "table", "'script' should be a Lua object")
    end
    return nil
end

-- A plugin's metadata, by its `metadata_schema` (any object when it declares none); the
-- plugin's module must exist, enabled or not.
local function metadata(name, conf)
    local ok, plugin = pcall(require, "apisix.plugins." .. name)
    if not ok or type(plugin) ~= "table" then
        return "invalid plugin name"
    end
    local schema = plugin.metadata_schema
    if schema == nil then
        return nil
    end
    local passed, err
    if plugin.check_schema then
        passed, err = plugin.check_schema(conf, core_schema.TYPE_METADATA)
    else
        passed, err = core_schema.check(schema, conf)
    end
    if passed then
        return nil
    end
    return "invalid configuration: " .. tostring(err)
end

-- A secret manager's settings, by the schema of its module `apisix.secret.<manager>`.
local function secret(full_id, conf)
    local manager = full_id:match("^([^/]+)/") or full_id
    local ok, module = pcall(require, "apisix.secret." .. manager)
    if not ok or type(module) ~= "table" or type(module.schema) ~= "table" then
        return "invalid secret manager: " .. manager
    end
    return schema_failure(module.schema, conf)
end

--- Checks `conf` (a decoded copy: defaults filled here are thrown away) as a `kind` resource
--- whose id is `id` at `stage`; nil when it passes, else APISIX's error message.
function _M.check(kind, stage, conf, id)
    if type(conf) ~= "table" then
        return "invalid configuration: wrong type: expected object, got " .. type(conf)
    end
    if kind == "plugin_metadata" then
        return stage == "shape" and metadata(id, conf) or nil
    end
    if kind == "secrets" then
        return stage == "shape" and secret(id or "", conf) or nil
    end
    if stage == "shape" then
        return shape(kind, conf)
    end
    if stage == "code" then
        return code(kind, conf)
    end
    return "unknown check stage " .. tostring(stage)
end

--- `GET /apisix/admin/schema/{name}`: the JSON text of `core.schema[name]`.
function _M.resource_schema(name)
    local s = core_schema[name]
    if type(s) ~= "table" then
        return nil, "not found schema: " .. tostring(name)
    end
    return json.encode(s)
end

--- `POST /apisix/admin/schema/validate/{kind}`: "" when `conf` fits the kind's schema, else
--- the validator's message as it is.
function _M.validate(kind, conf)
    local name = schema_of[kind]
    if not name then
        return nil, "no schema to validate a " .. tostring(kind) .. " with"
    end
    local ok, err = core_schema.check(defs[name], conf)
    if ok then
        return ""
    end
    return nil, tostring(err)
end

local PLUGIN_FIELDS = { "version", "priority", "schema", "metadata_schema", "consumer_schema",
                        "type", "scope" }

--- `GET /apisix/admin/plugins?all=true`: name → what the plugin module declares, for the
--- plugins named in `names` (one per line).
function _M.plugins_info(names)
    local out = {}
    for name in tostring(names):gmatch("[^\n]+") do
        local ok, plugin = pcall(require, "apisix.plugins." .. name)
        local info = {}
        if ok and type(plugin) == "table" then
            for _, field in ipairs(PLUGIN_FIELDS) do
                info[field] = plugin[field]
            end
        end
        out[name] = info
    end
    return json.encode(out)
end

return _M
