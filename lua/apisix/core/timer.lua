-- core.timer: a repeating background job (`new(name, callback, opts)`): `callback(premature)`
-- runs every `check_interval` seconds (default 1) in its own timer context, one run at a time,
-- until the worker exits; errors are logged with the timer's name.

local log = require("apisix.core.log")
local ngx = ngx
local timer_at = ngx.timer.at
local xpcall, traceback, setmetatable = xpcall, debug.traceback, setmetatable

local _M = { version = 0.1 }
local mt = { __index = _M }

local function run(premature, self)
    if premature or self.stopped then
        return
    end
    local ok, err = xpcall(self.callback_fun, traceback, premature)
    if not ok then
        log.error("failed to run the timer: ", self.name, " err: ", err)
    end
    if ngx.worker.exiting() or self.stopped then
        return
    end
    local hdl, terr = timer_at(self.check_interval, run, self)
    if not hdl then
        log.error("failed to create the timer: ", self.name, " err: ", terr)
    end
end

function _M.new(name, callback_fun, opts)
    if not name then
        return nil, "missing argument: name"
    end
    if not callback_fun then
        return nil, "missing argument: callback_fun"
    end
    opts = opts or {}
    local self = setmetatable({
        name = name,
        callback_fun = callback_fun,
        check_interval = opts.check_interval or 1,
        sleep_succ = opts.sleep_succ,
        sleep_fail = opts.sleep_fail,
    }, mt)
    local hdl, err = timer_at(0, run, self)
    if not hdl then
        return nil, "failed to create the timer: " .. err
    end
    return self
end

-- Stops the job after its current run.
function _M.stop(self)
    self.stopped = true
end

return _M
