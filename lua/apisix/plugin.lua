-- apisix.plugin, the read side plugins use: `get(name)` (a loaded plugin module),
-- `plugin_attr(name)` (config.yaml `plugin_attr.NAME`), `conf_version(conf)` (a version string
-- for a conf table's content, cached on it), `plugin_metadata(name)` (the running config's
-- `plugin_metadata/NAME`, checked and defaulted with the plugin's metadata schema) and
-- `skip_plugin(ctx, name)` (the runner leaves that plugin out for the rest of the request).
-- Loading, filtering and merging plugins is the Rust host's work and is not here.

local core = require("apisix.core")
local docs = require("moongate.config_doc")
local ngx = ngx
local pcall, require, tostring, error, type = pcall, require, tostring, error, type

local _M = { version = 0.3 }

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

-- Metadata items already checked, per config version: item -> true, or false when refused.
local checked = { version = false, items = {} }

-- `{key, value, modifiedIndex, createdIndex}` of `plugin_metadata/NAME`, or nil. As APISIX's
-- data plane does, the value is checked with the plugin's `check_schema(value, TYPE_METADATA)`
-- (filling its defaults) before anyone sees it; an item that fails is logged and left out.
function _M.plugin_metadata(name)
    local item = docs.get("plugin_metadata", name)
    if not item then
        return nil
    end
    local _, version = docs.current()
    if checked.version ~= version then
        checked = { version = version, items = {} }
    end
    local state = checked.items[item]
    if state == nil then
        state = true
        local mod = _M.get(name)
        if type(mod) == "table" and mod.check_schema then
            local ok, err = mod.check_schema(item.value, core.schema.TYPE_METADATA)
            if not ok then
                core.log.error("failed to check the metadata of plugin ", name, ": ", err)
                state = false
            end
        end
        checked.items[item] = state
    end
    return state and item or nil
end

-- Leaves `name` out of the rest of this request's phases (workflow runs a plugin as its
-- action and then skips it in the normal chain).
function _M.skip_plugin(ctx, name)
    local skip = ctx._skip_plugins
    if not skip then
        skip = {}
        ctx._skip_plugins = skip
    end
    skip[name] = true
end

function _M.lua_response_filter()
    error("apisix.plugin.lua_response_filter is not supported by moongate yet "
          .. "(plugins that proxy the upstream themselves)", 2)
end

return _M
