-- moongate.agent: the duties APISIX gives its privileged agent process, for the plugins that
-- need one. moongate has no such process (its workers are threads of one process, and
-- `ngx.process.enable_privileged_agent()` is refused), so worker 0 takes them on once its VM
-- has loaded the plugins.
--
-- Today there is one duty: the prometheus exporter's refresh timer, which renders the
-- metrics every `plugin_attr.prometheus.refresh_interval` seconds into the `prometheus-cache`
-- dictionary that every worker's export endpoint serves. The exporter starts that timer only
-- when `ngx.process.type()` says "privileged agent", so the call is made with `type()` saying
-- so; the timer it starts runs on worker 0 like any other timer.

local ngx = ngx
local pcall, type = pcall, type
local package = package

local _M = {}

-- Calls `fn` while this VM's `ngx.process.type()` answers "privileged agent".
local function as_agent(fn)
    local process = require("ngx.process")
    local worker_type = process.type
    process.type = function()
        return "privileged agent"
    end
    local ok, err = pcall(fn)
    process.type = worker_type
    return ok, err
end

-- Runs the agent duties of the plugins this VM loaded, on worker 0 only.
function _M.start()
    if ngx.worker.id() ~= 0 then
        return
    end
    if type(package.loaded["apisix.plugins.prometheus"]) == "table" then
        local exporter = require("apisix.plugins.prometheus.exporter")
        local ok, err = as_agent(exporter.init_exporter_timer)
        if not ok then
            ngx.log(ngx.ERR, "failed to start the prometheus exporter's refresh timer: ", err)
        end
    end
end

return _M
