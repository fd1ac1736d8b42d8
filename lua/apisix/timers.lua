-- apisix.timers: named jobs that run together every second, in light threads of one
-- background timer per worker (as APISIX runs its plugins' periodic work: log-rotate,
-- server-info, error-log-logger …).
--
-- `register_timer(name, fn, privileged)` adds `fn` (a second registration under one name
-- replaces the first); `unregister_timer(name, privileged)` removes it. Each second every job
-- runs in its own light thread (`run timer[NAME]` at info), and the next round starts only
-- when all of them ended, so one job never runs twice at once.
--
-- APISIX runs `privileged` jobs in its privileged agent, one process beside the workers.
-- moongate has no such process: privileged jobs run in worker 0 only, so they still run
-- once per gateway; elsewhere registering them does nothing, as in APISIX's workers.
--
-- The background timer starts with the first registration (APISIX starts it at worker start;
-- with no job it has nothing to do).

local core = require("apisix.core")
local log = core.log
local ngx = ngx
local pairs, next, unpack = pairs, next, unpack

local CHECK_INTERVAL = 1

local jobs = {}
local background

local _M = {}

local function run_round()
    if next(jobs) == nil then
        return
    end
    local running = {}
    for name, fn in pairs(jobs) do
        log.info("run timer[", name, "]")
        local th, err = ngx.thread.spawn(fn)
        if th then
            running[#running + 1] = th
        else
            log.error("failed to spawn thread for timer [", name, "]: ", err)
        end
    end
    if #running > 0 and not ngx.thread.wait(unpack(running)) then
        log.error("failed to wait threads")
    end
end

-- Starts the background timer once per worker.
function _M.init_worker()
    if background then
        return
    end
    local job, err = core.timer.new("background", run_round,
        { check_interval = CHECK_INTERVAL, each_ttl = 0, sleep_succ = 0 })
    if not job then
        log.error("failed to create background timer: ", err)
        return
    end
    background = job
    log.notice("succeed to create background timer")
end

-- Whether this worker stands in for APISIX's privileged agent.
local function privileged_here()
    return ngx.worker.id() == 0
end

function _M.register_timer(name, fn, privileged)
    if privileged and not privileged_here() then
        return
    end
    jobs[name] = fn
    _M.init_worker()
end

function _M.unregister_timer(name, privileged)
    if privileged and not privileged_here() then
        return
    end
    jobs[name] = nil
end

function _M.check_interval()
    return CHECK_INTERVAL
end

return _M
