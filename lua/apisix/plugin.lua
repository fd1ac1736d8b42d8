-- apisix.plugin, the read side plugins use: `get(name)` (a loaded plugin module),
-- `plugin_attr(name)` (config.yaml `plugin_attr.NAME`), `conf_version(conf)` (a version string
-- for a conf table's content, cached on it), `plugins`/`plugins_hash`/`load_times` (what this
-- worker loaded), `get_all(attrs)`, `plugin_metadata(name)` and `skip_plugin(ctx, name)`. What
-- needs the runner's own state (response filters) raises an error naming it.

local core = require("apisix.core")
local ngx = ngx
local config_doc = require("moongate.config")
local pcall, require, tostring, error = pcall, require, tostring, error
local pairs, ipairs = pairs, ipairs

local _M = {
    version = 0.3,
    -- The plugins this worker's VM loaded, by descending priority, and by name; filled in
    -- place by the host once they loaded (moongate.plugin_set). There is no stream subsystem,
    -- so the stream lists stay empty.
    plugins = {},
    plugins_hash = {},
    load_times = 0,
    stream_plugins = {},
    stream_plugins_hash = {},
    stream_load_times = 0,
}

-- The plugin module `name`, if it loads.
function _M.get(name)
    local ok, mod = pcall(require, "apisix.plugins." .. name)
    if ok then
        return mod
    end
    return nil
end

function _M.plugin_attr(name)
    return core.table.try_read_attr(core.config.local_conf(), "plugin_attr", name)
end

-- crc32 of the conf's sorted-key JSON, kept in `conf._version` (computed once per conf table).
function _M.conf_version(conf)
    local ver = conf._version
    if ver == nil then
        ver = tostring(ngx.crc32_long(core.json.stably_encode(conf)))
        conf._version = ver
    end
    return ver
end

local function not_yet(what)
    return function()
        error("apisix.plugin." .. what .. " is not supported by moongate yet", 2)
    end
end

-- `attrs` of every loaded plugin (`{version = true, schema = true, ...}`), by name: the HTTP
-- plugins, then the stream plugins (none).
function _M.get_all(wanted)
    local http = {}
    for name, mod in pairs(_M.plugins_hash) do
        http[name] = core.table.pick(mod, wanted)
    end
    return http, {}
end

-- Plugin metadata items of the running config, checked with their plugin's metadata schema
-- (which fills its defaults) once per config version; only enabled plugins have metadata.
local metadata = { version = nil, items = {} }

local function load_metadata(version)
    local _, text = config_doc.document()
    local doc, err = core.json.decode(text)
    local items = {}
    if not doc then
        core.log.error("failed to decode the config document: ", err)
    else
        for _, item in ipairs(doc.plugin_metadata or {}) do
            local name = item.value and item.value.id
            local mod = name and _M.plugins_hash[name]
            if not mod then
                core.log.error("failed to check item data of [/plugin_metadata] err:unknown plugin [",
                               tostring(name), "]")
            else
                local ok, check_err = true, nil
                if mod.check_schema then
                    ok, check_err = mod.check_schema(item.value, core.schema.TYPE_METADATA)
                end
                if ok then
                    items[name] = item
                else
                    core.log.error("failed to check item data of [/plugin_metadata] err:",
                                   "failed to check the configuration of plugin ", name,
                                   " err: ", check_err)
                end
            end
        end
    end
    metadata = { version = version, items = items }
end

-- `plugin_metadatas:get(NAME)`: the `plugin_metadata/NAME` config item (`{key, value = {id =
-- NAME, ...}, ...}`), or nil. A field of the module, as APISIX has it, so code (and APISIX's
-- tests) that put another source in its place are asked by `plugin_metadata`.
_M.plugin_metadatas = {
    get = function(_, plugin_name)
        local version = config_doc.version()
        if version == nil then
            return nil
        end
        if metadata.version ~= version then
            load_metadata(version)
        end
        return metadata.items[plugin_name]
    end,
}

function _M.plugin_metadata(plugin_name)
    return _M.plugin_metadatas:get(plugin_name)
end
_M.lua_response_filter = not_yet("lua_response_filter")

-- Leaves `name` out of the rest of this request's phases (workflow runs a plugin as its
-- action and then skips it in the normal chain); the phase runner honours it.
function _M.skip_plugin(ctx, name)
    local skip = ctx._skip_plugins
    if not skip then
        skip = {}
        ctx._skip_plugins = skip
    end
    skip[name] = true
end

-- the plugins the host loaded, when it loaded them before this module was first required
require("moongate.plugin_set").fill(_M)

return _M
