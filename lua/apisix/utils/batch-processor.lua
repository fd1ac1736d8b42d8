-- apisix.utils.batch-processor: the queue APISIX's logger plugins put their log entries in.
--
-- The log phase must never wait for a log server, so a plugin `push`es each entry into a
-- processor and a timer hands the entries, a batch at a time, to the plugin's sender
-- `func(entries, batch_max_size)`. A batch is sent
--   * at once when it reaches `batch_max_size` entries (a size of 1 sends every entry alone);
--   * when no entry arrived for `inactive_timeout` seconds;
--   * when its first entry has waited `buffer_duration` seconds;
--   * when the worker exits (the pending timer fires early).
-- The sender answers `true`, or `false, err` (the whole batch failed) or `false, err, n`
-- (entries before the n-th went through). What failed is sent again `retry_delay` seconds
-- later, up to `max_retry_count` more times, then dropped with an `[error]` line.
--
-- Log lines and error strings are APISIX's: its tests and users' alerts grep for them.

local core = require("apisix.core")
local log = core.log
local ngx = ngx
local setmetatable, type, ipairs, pairs = setmetatable, type, ipairs, pairs

-- Every line about a processor starts with `Batch Processor[NAME] `.
local function note(level, p, ...)
    log[level]("Batch Processor[", p.name, "] ", ...)
end

-- The batch fields, with APISIX's names, bounds and defaults (the manager copies them into
-- each logger plugin's schema).
local function int_field(min, default)
    return { type = "integer", minimum = min, default = default }
end

local schema = {
    type = "object",
    properties = {
        name = { type = "string", default = "log buffer" },
        batch_max_size = int_field(1, 1000),
        inactive_timeout = int_field(1, 5),
        buffer_duration = int_field(1, 60),
        max_retry_count = int_field(0, 0),
        retry_delay = int_field(0, 1),
    },
}

-- A batch on its way: the entries still to deliver and how many attempts failed so far.
local function batch_of(list)
    return { items = list, failures = 0 }
end

---------------------------------------------------------------------------------------------
-- The `batch_process_entries` gauge (label set: name, route_id, server_addr).
--
-- Made on first use, and only once the prometheus plugin's exporter has been loaded by
-- someone else: this module never loads it, so a gateway without prometheus neither pays
-- for it nor fails on its libraries.
local gauge

local function report_waiting(p, count)
    if not (p.route_id and p.server_addr) then
        return
    end
    if not gauge then
        local exporter = package.loaded["apisix.plugins.prometheus.exporter"]
        local registry = type(exporter) == "table" and exporter.get_prometheus
            and exporter.get_prometheus()
        if not registry then
            return
        end
        gauge = registry:gauge("batch_process_entries", "batch process remaining entries",
            { "name", "route_id", "server_addr" })
    end
    gauge:set(count, { p.name, p.route_id, p.server_addr })
end

---------------------------------------------------------------------------------------------
-- Delivery: one attempt per timer.

local deliver

-- Runs `deliver` for `batch` in `delay` seconds. While the worker exits, timers with a delay
-- are refused, so the batch goes out at once instead.
local function schedule(p, batch, delay)
    local ok, err = ngx.timer.at(delay, deliver, p, batch)
    if ok then
        return
    end
    if err ~= "process exiting" then
        log.error("failed to create process timer: ", err)
        return
    end
    ok, err = ngx.timer.at(0, deliver, p, batch)
    if not ok then
        log.error("failed to create fallback process timer while exiting: ", err)
    end
end

-- The items of `list` from index `from` on.
local function tail(list, from)
    local rest = {}
    for i = from, #list do
        rest[i - from + 1] = list[i]
    end
    return rest
end

deliver = function(_, p, batch)
    local items = batch.items
    local sent, err, first_failed = p.func(items, p.batch_max_size)
    if sent then
        p.settled = p.settled + #items
        note("debug", p, "successfully processed the entries")
        return
    end

    if first_failed then
        -- The sender got the entries before `first_failed` through: only the rest is retried.
        note("error", p, "failed to process entries [", #items - first_failed + 1, "/",
            #items, "]: ", err)
        p.settled = p.settled + first_failed - 1
        batch.items = tail(items, first_failed)
    else
        note("error", p, "failed to process entries: ", err)
    end

    batch.failures = batch.failures + 1
    if batch.failures > p.max_retry_count or #batch.items == 0 then
        -- Dropped entries are settled too: they no longer wait in this worker's memory.
        p.settled = p.settled + #batch.items
        note("error", p, "exceeded the max_retry_count[", batch.failures,
            "] dropping the entries")
        return
    end
    schedule(p, batch, p.retry_delay)
end

---------------------------------------------------------------------------------------------
-- The open batch and its flush timer.

local Processor = {}
local Processor_mt = { __index = Processor }

local watch

-- The flush timer: sends the open batch once it went quiet or grew old (or at exit), else
-- looks again `inactive_timeout` seconds later.
local function on_watch(premature, p)
    local t = ngx.now()
    local quiet = t - p.newest_at >= p.inactive_timeout
    local old = t - p.oldest_at >= p.buffer_duration
    if not (premature or quiet or old or ngx.worker.exiting()) then
        note("debug", p, "extending buffer timer")
        watch(p)
        return
    end
    note("debug", p, "buffer duration exceeded, activating buffer flush")
    p:process_buffer()
    p.watching = false
end

watch = function(p)
    local ok, err = ngx.timer.at(p.inactive_timeout, on_watch, p)
    if not ok and err == "process exiting" then
        ok = ngx.timer.at(0, on_watch, p)
    elseif not ok then
        log.error("failed to create buffer timer: ", err)
        return
    end
    p.watching = ok and true or false
end

---------------------------------------------------------------------------------------------
-- The module: `require(...)` returns the class; `:new(func, config)` makes a processor.

local _M = { schema = schema }

-- `config` is checked (and completed with the defaults) against `schema`; `route_id` and
-- `server_addr` in it label the prometheus gauge.
function _M.new(_, func, config)
    local valid, err = core.schema.check(schema, config)
    if not valid then
        return nil, err
    end
    if type(func) ~= "function" then
        return nil, "Invalid argument, arg #1 must be a function"
    end
    log.debug("creating new batch processor with config: ",
        core.json.delay_encode(config, true))

    local p = {
        func = func,
        route_id = config.route_id,
        server_addr = config.server_addr,
        open = {},       -- entries pushed since the last batch closed
        closed = {},     -- batches closed but not yet handed to a timer
        oldest_at = 0,   -- when the open batch got its first entry
        newest_at = 0,   -- when it got its last one
        watching = false,
        settled = 0,     -- entries sent or dropped (the manager's backlog limit reads it)
    }
    for field in pairs(schema.properties) do
        p[field] = config[field]
    end
    return setmetatable(p, Processor_mt)
end

function Processor:push(entry)
    if self.batch_max_size == 1 then
        schedule(self, batch_of({ entry }), 0)
        return
    end

    local open = self.open
    open[#open + 1] = entry
    local count = #open
    report_waiting(self, count)

    local t = ngx.now()
    self.newest_at = t
    if count == 1 then
        self.oldest_at = t
    end

    if count >= self.batch_max_size then
        note("debug", self, "batch max size has exceeded")
        self:process_buffer()
    end
    if not self.watching then
        watch(self)
    end
end

-- Closes the open batch (if it holds anything) and hands every closed batch to a timer.
function Processor:process_buffer()
    local count = #self.open
    if count > 0 then
        log.debug("transferring buffer entries to processing pipe line, buffercount[",
            count, "]")
        self.closed[#self.closed + 1] = batch_of(self.open)
        self.open = {}
        report_waiting(self, 0)
    end

    local ready = self.closed
    self.closed = {}
    for _, batch in ipairs(ready) do
        schedule(self, batch, 0)
    end
end

-- Whether no entry waits in the open or closed batches (the manager's stale check forgets
-- only such processors).
function Processor:idle()
    return #self.open == 0 and #self.closed == 0
end

return _M
