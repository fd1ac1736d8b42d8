-- core.timer: a background job repeated until the worker exits. `new(name, fn, opts)` schedules
-- `fn(premature)` at once, then again `opts.check_interval` seconds (default 1) after each run
-- ends, so two runs of one job never overlap. A run that raises is logged with the job's name
-- and the job goes on.

local ngx = ngx
local xpcall, setmetatable = xpcall, setmetatable
local clog = require("apisix.core.log")

local timer = { version = 0.1 }
local Job = { __index = timer }

local tick

-- Arms the next run of `job` after `delay` seconds; returns the error text on failure.
local function arm(job, delay)
    local handle, why = ngx.timer.at(delay, tick, job)
    if handle then
        return nil
    end
    return why
end

tick = function(premature, job)
    if premature or job.stopped then
        return
    end
    local ok, trace = xpcall(job.callback_fun, debug.traceback, premature)
    if not ok then
        clog.error("failed to run the timer: ", job.name, " err: ", trace)
    end
    if job.stopped or ngx.worker.exiting() then
        return
    end
    local why = arm(job, job.check_interval)
    if why then
        clog.error("failed to create the timer: ", job.name, " err: ", why)
    end
end

local function missing(arg_name)
    return nil, "missing argument: " .. arg_name
end

function timer.new(name, fn, opts)
    if not name then
        return missing("name")
    end
    if not fn then
        return missing("callback_fun")
    end
    local o = opts or {}
    local job = setmetatable({
        name = name,
        -- The field name is APISIX's: code that inspects a job may read it.
        callback_fun = fn,
        check_interval = o.check_interval or 1,
        -- Accepted for APISIX's signature; runs are spaced by check_interval only.
        sleep_succ = o.sleep_succ,
        sleep_fail = o.sleep_fail,
    }, Job)
    local why = arm(job, 0)
    if why then
        return nil, "failed to create the timer: " .. why
    end
    return job
end

-- No further run starts once the current one (if any) has ended.
function timer.stop(job)
    job.stopped = true
end

return timer
