-- apisix.utils.batch-processor-manager: one batch processor per logger conf, per worker.
--
-- A logger plugin makes one manager at load (`new(name, plugin_name)`), lets it add the
-- batch fields to its schema (`wrap_schema`) and `max_pending_entries` to its metadata
-- schema (`wrap_metadata_schema`), and in its log phase calls
--
--     if not manager:add_entry(conf, entry) then
--         manager:add_entry_to_new_processor(conf, entry, ctx, send)
--     end
--
-- so that the sender closure is built only for the first entry of a conf. Processors are
-- keyed by `apisix.plugin.conf_version(conf)` (a digest of the conf's content), as APISIX keys
-- them: routes with equal logger confs share one processor. A processor with nothing left to
-- send is forgotten by a timer (every 1800 s; `set_check_stale_interval` changes it).
--
-- Entries waiting in this worker are capped at the plugin metadata's `max_pending_entries`
-- (default 8192): past it, entries are discarded and counted, and one `[error]` line a second
-- at most says how many.

local core = require("apisix.core")
local log = core.log
local plugin = require("apisix.plugin")
local processor_class = require("apisix.utils.batch-processor")
local ngx = ngx
local pairs, setmetatable = pairs, setmetatable

local DEFAULT_MAX_PENDING = 8192
-- A discard report at most this often (seconds): a log server outage must not turn into an
-- error-log flood.
local DISCARD_REPORT_EVERY = 1
local stale_check_every = 1800

-- Managers find their methods in the module table itself, so code that wraps
-- `require("apisix.utils.batch-processor-manager").add_entry` (APISIX's tests do) wraps them
-- for every manager.
local _M = {}
local Manager_mt = { __index = _M }

-- `name` labels the processors (log lines, metrics: the conf's `name` default); the plugin
-- metadata holding `max_pending_entries` is `plugin_name`'s, `name`'s when not given.
function _M.new(name, plugin_name)
    local m = {
        name = name,
        plugin_name = plugin_name or name, -- read by APISIX's tests under this name
        processors = {},         -- conf_version -> processor
        total_pushed_entries = 0, -- read by APISIX's tests under this name
        forgotten_settled = 0,   -- entries settled by processors the stale check dropped
        settled_seen = 0,        -- the settled total as last summed
        discards = { count = 0, reported_at = 0 },
        sweeper_armed = false,
    }
    return setmetatable(m, Manager_mt)
end

function _M.set_check_stale_interval(seconds)
    stale_check_every = seconds
end

-- Adds the batch fields the plugin's schema does not define itself (its own win), with
-- `name` defaulting to the manager's name.
function _M:wrap_schema(schema)
    local own = schema.properties
    for field, def in pairs(processor_class.schema.properties) do
        if own[field] == nil then
            own[field] = core.table.deepcopy(def)
        end
    end
    own.name.default = self.name
    return schema
end

-- Every batch-processor logger shares the backlog limit in its plugin metadata.
function _M:wrap_metadata_schema(schema)
    local own = schema.properties
    own.max_pending_entries = {
        type = "integer",
        minimum = 1,
        default = DEFAULT_MAX_PENDING,
        description = "the most entries that may wait to be sent; newer ones are discarded "
            .. "while that many wait",
    }
    return schema
end

---------------------------------------------------------------------------------------------
-- Forgetting idle processors, so confs of deleted routes do not stay in memory.

local function sweep(premature, m)
    m.sweeper_armed = false
    if premature then
        return
    end
    for version, p in pairs(m.processors) do
        if p:idle() then
            log.info("removing batch processor stale object, conf: ",
                core.json.delay_encode(version))
            m.forgotten_settled = m.forgotten_settled + p.settled
            m.processors[version] = nil
        end
    end
end

local function arm_sweeper(m)
    if not m.sweeper_armed and ngx.timer.at(stale_check_every, sweep, m) then
        m.sweeper_armed = true
    end
end

---------------------------------------------------------------------------------------------
-- The backlog limit.

local function pending_limit(m)
    local item = plugin.plugin_metadata(m.plugin_name)
    local conf = item and item.value
    return conf and conf.max_pending_entries or DEFAULT_MAX_PENDING
end

-- Whether `limit` entries already wait. Settled counts only grow, so pushed minus the
-- settled total last summed bounds the backlog from above: the processors are summed again
-- only when that bound reaches the limit.
local function over_limit(m, limit)
    if m.total_pushed_entries - m.settled_seen < limit then
        return false
    end
    local settled = m.forgotten_settled
    for _, p in pairs(m.processors) do
        settled = settled + p.settled
    end
    m.settled_seen = settled
    return m.total_pushed_entries - settled >= limit
end

local function discard(m, limit)
    local d = m.discards
    d.count = d.count + 1
    local t = ngx.now()
    if t - d.reported_at < DISCARD_REPORT_EVERY then
        return
    end
    log.error("max pending entries limit exceeded. discarding entry. total_pushed_entries: ",
        m.total_pushed_entries, " total_processed_entries: ", m.settled_seen,
        " max_pending_entries: ", limit, " discarded_entries: ", d.count)
    d.reported_at = t
    d.count = 0
end

---------------------------------------------------------------------------------------------
-- The log phase.

local function accept(m, p, entry)
    p:push(entry)
    m.total_pushed_entries = m.total_pushed_entries + 1
    return true
end

-- Pushes `entry` to the processor of `conf`: true when done with it (pushed, or discarded
-- over the backlog limit), false when `conf` has no processor yet.
function _M:add_entry(conf, entry)
    local limit = pending_limit(self)
    if over_limit(self, limit) then
        discard(self, limit)
        return true
    end
    arm_sweeper(self)

    local p = self.processors[plugin.conf_version(conf)]
    return p ~= nil and accept(self, p, entry)
end

-- Makes the processor of `conf` with `func` as its sender and pushes `entry` to it. Over the
-- backlog limit it does nothing (add_entry counted the discard already).
function _M:add_entry_to_new_processor(conf, entry, ctx, func)
    if over_limit(self, pending_limit(self)) then
        return
    end
    arm_sweeper(self)

    local config = { route_id = ctx.var.route_id, server_addr = ctx.var.server_addr }
    for field in pairs(processor_class.schema.properties) do
        config[field] = conf[field]
    end
    local p, err = processor_class:new(func, config)
    if not p then
        log.error("error when creating the batch processor: ", err)
        return false
    end
    self.processors[plugin.conf_version(conf)] = p
    return accept(self, p, entry)
end

return _M
