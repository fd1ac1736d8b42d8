-- apisix.plugin, the read side plugins use: `get(name)` (a loaded plugin module),
-- `plugin_attr(name)` (config.yaml `plugin_attr.NAME`), `conf_version(conf)` (a version string
-- for a conf table's content, cached on it). What needs the runner's own state (plugin
-- metadata, skipping, response filters) raises an error naming it until the host provides it.

local core = require("apisix.core")
local ngx = ngx
local pcall, require, tostring, error = pcall, require, tostring, error

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

local function not_yet(what)
    return function()
        error("apisix.plugin." .. what .. " is not supported by moongate yet", 2)
    end
end

_M.plugin_metadata = not_yet("plugin_metadata")
_M.lua_response_filter = not_yet("lua_response_filter")
_M.skip_plugin = not_yet("skip_plugin")

return _M
