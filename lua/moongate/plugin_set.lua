-- moongate.plugin_set: the plugins of this worker's VM, handed over by the host once they
-- loaded (src/lua/plugin_set.rs).
--
--   publish(names, load_times)
--                   records the plugins the VM loaded and fills apisix.plugin's `plugins`
--                   (the loaded Lua plugin modules by descending priority, as APISIX's
--                   plugin.load() leaves them) and `plugins_hash` in place, so tables other
--                   modules already hold see them, and sets `load_times` (1 at start, one more
--                   per reload); apisix.plugin loaded later fills itself with `fill(_M)`;
--   natives         the enabled native (Rust) plugins, `{name = ..., priority = ...}` each;
--   reload()        loads every plugin file again, as the Admin API's plugins/reload does, and
--                   returns when it is done: `true`, or `nil, err`. Each worker switches to a
--                   fresh VM on its next request.

local ipairs, type, pairs = ipairs, type, pairs
local ngx = ngx
local sort = table.sort

local _M = {
    natives = {},
}

function _M.reload()
    return nil, "the plugin reload is only available on the gateway's workers"
end

-- Fills apisix.plugin's lists from what was published; nothing before that.
function _M.fill(registry)
    local names = _M.names
    if not names then
        return
    end
    local list, hash = registry.plugins, registry.plugins_hash
    for i = #list, 1, -1 do
        list[i] = nil
    end
    for k in pairs(hash) do
        hash[k] = nil
    end
    local position = {}
    for i, name in ipairs(names) do
        local mod = package.loaded["apisix.plugins." .. name]
        -- a plugin that failed to load on this worker was reported and left out
        if type(mod) == "table" then
            list[#list + 1] = mod
            hash[name] = mod
            position[mod] = i
        end
    end
    -- ties keep the enabled list's order, so every worker sorts them the same way
    sort(list, function(a, b)
        if a.priority ~= b.priority then
            return a.priority > b.priority
        end
        return position[a] < position[b]
    end)
    registry.load_times = _M.load_times
end

function _M.publish(names, load_times)
    _M.names, _M.load_times = names, load_times
    ngx.log(ngx.INFO, "load plugin times: ", load_times)
    -- apisix.plugin (and with it apisix.core, which sets cjson up APISIX's way) is not loaded
    -- here: a VM whose plugins never required it keeps plain cjson. It fills itself when
    -- first required.
    local registry = package.loaded["apisix.plugin"]
    if type(registry) == "table" then
        _M.fill(registry)
    end
    -- what APISIX's privileged agent would run for these plugins (worker 0 does)
    require("moongate.agent").start()
end

return _M
