-- prometheus: the metric library nginx-lua-prometheus documents (APISIX's prometheus exporter
-- requires it), over moongate's native metric registry.
--
--   local prometheus = require("prometheus").init("prometheus-metrics", {prefix = "apisix_"})
--   local requests = prometheus:counter("requests_total", "Requests", {"route", "code"})
--   requests:inc(1, {"1", "200"})          -- in any phase, on any worker
--   ngx.print(prometheus:metric_data())    -- or prometheus:collect()
--
-- What differs from the nginx library, by design:
--   * Values live in Rust atomics shared by every worker, not in the shared dictionary: every
--     write is visible to the next scrape at once (no per-worker sync interval), and the
--     dictionary named in `init` only has to exist; its size bounds the metrics' memory (a new
--     series past it is refused and counted as an error, never an old one evicted).
--   * A worker finds a series through a per-metric lookup table keyed by the label values
--     (cleared when it grows past `lookup_max_size` entries); a hit costs one FFI call doing an
--     atomic add.
--
-- Errors (bad names, wrong label counts, a negative counter increment, full storage) are logged
-- at `error` level and counted in the error metric (`nginx_metric_errors_total`, prefixed),
-- and the call returns without recording, as the nginx library does.

local ffi = require("ffi")
local native = require("moongate.metrics")

local ngx = ngx
local type, tostring, tonumber, setmetatable, error = type, tostring, tonumber, setmetatable, error
local ipairs = ipairs

local WRITE = "int (*)(const void *, double)"
local add_fn = ffi.cast(WRITE, native.fn_add)
local set_fn = ffi.cast(WRITE, native.fn_set)
local observe_fn = ffi.cast(WRITE, native.fn_observe)

local DEFAULT_ERROR_METRIC = "nginx_metric_errors_total"
local DEFAULT_LOOKUP_MAX = 1000
-- Twenty latency buckets from 5 ms to 10 s, in seconds.
local DEFAULT_BUCKETS = {
    0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
    0.4, 0.5, 0.75, 1, 1.5, 2, 3, 4, 5, 10,
}

local _M = { _VERSION = "moongate" }

local Registry = {}
Registry.__index = Registry

local Metric = {}
Metric.__index = Metric

-- Logs `...` and counts it in the registry's error metric.
local function report(registry, ...)
    ngx.log(ngx.ERR, ...)
    local em = registry.error_metric
    if em then
        local cell = em.single
        if cell == nil or add_fn(cell[1], 1) == 0 then
            local ref, ptr = em.family:series(nil)
            if ref then
                em.single = { ffi.cast("const void *", ptr), ref }
                add_fn(em.single[1], 1)
            end
        end
    end
end

-- The label values as strings, after checking there is one per label name.
local function label_strings(metric, values)
    local n = metric.label_count
    if n == 0 then
        if values ~= nil and values[1] ~= nil then
            return nil, "Wrong number of labels for " .. metric.name .. ". Expected 0, got "
                .. #values
        end
        return {}
    end
    if type(values) ~= "table" then
        return nil, "Wrong number of labels for " .. metric.name .. ". Expected " .. n
            .. ", got 0"
    end
    local out = {}
    for i = 1, n do
        local v = values[i]
        local t = type(v)
        if t == "string" then
            out[i] = v
        elseif t == "number" or t == "boolean" then
            out[i] = tostring(v)
        else
            return nil, "Wrong number of labels for " .. metric.name .. ". Expected " .. n
                .. ", got " .. (i - 1) .. " before a " .. t .. " value"
        end
    end
    if values[n + 1] ~= nil then
        return nil, "Wrong number of labels for " .. metric.name .. ". Expected " .. n
            .. ", got " .. #values
    end
    return out
end

-- The cached entry ({pointer, ref}) for `values`, or nil: one table lookup per label.
local function cached(metric, values)
    if metric.label_count == 0 then
        if values ~= nil and values[1] ~= nil then
            return nil
        end
        return metric.single
    end
    if values == nil then
        return nil
    end
    local node = metric.lookup
    for i = 1, metric.label_count do
        local v = values[i]
        if v == nil then
            return nil
        end
        node = node[v]
        if node == nil then
            return nil
        end
    end
    if values[metric.label_count + 1] ~= nil then
        return nil
    end
    return node
end

-- Finds or makes the series for `values` in the registry and caches it; nil when refused
-- (already reported).
local function resolve(metric, values)
    local labels, err = label_strings(metric, values)
    if not labels then
        report(metric.registry, err)
        return nil
    end
    local ref, ptr = metric.family:series(labels)
    if not ref then
        report(metric.registry, ptr)
        return nil
    end
    local entry = { ffi.cast("const void *", ptr), ref }
    local n = metric.label_count
    if n == 0 then
        metric.single = entry
        return entry
    end
    if metric.lookup_size >= metric.registry.lookup_max_size then
        metric.lookup = {}
        metric.lookup_size = 0
    end
    local node = metric.lookup
    for i = 1, n - 1 do
        local v = values[i]
        local nxt = node[v]
        if nxt == nil then
            nxt = {}
            node[v] = nxt
        end
        node = nxt
    end
    if node[values[n]] == nil then
        metric.lookup_size = metric.lookup_size + 1
    end
    node[values[n]] = entry
    return entry
end

local function write(metric, fn, value, values)
    local entry = cached(metric, values)
    -- 0: deleted by `del`/`reset` (here or on another worker) or expired; look it up again.
    if entry == nil or fn(entry[1], value) == 0 then
        entry = resolve(metric, values)
        if entry then
            fn(entry[1], value)
        end
    end
end

-- The value as a number: numeric strings are taken (callers pass `ngx.var.bytes_sent` and
-- the like, which nginx gives as strings); anything else is reported and gives nil.
local function number_or_report(metric, value, what)
    local n = tonumber(value)
    if n == nil then
        report(metric.registry, what, " of ", metric.name, " must be a number, got ",
               type(value) == "string" and ("\"" .. value .. "\"") or type(value))
    end
    return n
end

-- counter:inc(value = 1, label_values); gauge:inc(value = 1, label_values)
function Metric:inc(value, label_values)
    if value == nil then
        value = 1
    else
        value = number_or_report(self, value, "The increment")
        if value == nil then
            return
        end
    end
    if self.kind == "counter" and value < 0 then
        report(self.registry, "Counter increment should not be negative")
        return
    end
    if self.kind == "histogram" then
        report(self.registry, "inc() is not a histogram method (", self.name, ")")
        return
    end
    write(self, add_fn, value, label_values)
end

-- The value of a `set`/`observe` call on a metric of `kind`, or nil once the problem (wrong
-- kind, no value, not a number) is reported.
local function value_for(self, kind, method, value)
    if self.kind ~= kind then
        report(self.registry, method, "() is only for ", kind, "s (", self.name, ")")
        return nil
    end
    if value == nil then
        report(self.registry, "No value passed for ", self.name)
        return nil
    end
    return number_or_report(self, value, "The value")
end

-- gauge:set(value, label_values)
function Metric:set(value, label_values)
    value = value_for(self, "gauge", "set", value)
    if value ~= nil then
        write(self, set_fn, value, label_values)
    end
end

-- histogram:observe(value, label_values)
function Metric:observe(value, label_values)
    value = value_for(self, "histogram", "observe", value)
    if value ~= nil then
        write(self, observe_fn, value, label_values)
    end
end

-- Deletes the series of `label_values` (every worker stops seeing it at once).
function Metric:del(label_values)
    local labels, err = label_strings(self, label_values)
    if not labels then
        report(self.registry, err)
        return
    end
    local ok, del_err = self.family:del(labels)
    if ok == nil then
        report(self.registry, del_err)
    end
end

-- Deletes every series of the metric.
function Metric:reset()
    self.family:reset()
    self.lookup = {}
    self.lookup_size = 0
    self.single = nil
end

local function register(self, kind, name, help, label_names, buckets, exptime)
    local full = self.prefix .. tostring(name)
    if self.registered[full] then
        report(self, "Duplicate metric ", full)
        return nil
    end
    if label_names ~= nil and type(label_names) ~= "table" then
        report(self, "Label names of ", full, " must be a table")
        return nil
    end
    if kind == "histogram" then
        buckets = buckets or DEFAULT_BUCKETS
        for i, b in ipairs(buckets) do
            if type(b) ~= "number" then
                report(self, "Histogram ", full, " bucket ", i, " is not a number")
                return nil
            end
        end
    end
    local family, err = self.namespace:register(kind, full, help, label_names, buckets,
                                                exptime)
    if not family then
        report(self, err)
        return nil
    end
    local metric = setmetatable({
        registry = self,
        kind = kind,
        name = full,
        help = help,
        label_names = label_names or {},
        label_count = family:label_count(),
        family = family,
        lookup = {},
        lookup_size = 0,
        single = nil,
    }, Metric)
    self.registered[full] = metric
    return metric
end

-- prometheus:counter(name, help, label_names, exptime)
function Registry:counter(name, help, label_names, exptime)
    return register(self, "counter", name, help, label_names, nil, exptime)
end

-- prometheus:gauge(name, help, label_names, exptime)
function Registry:gauge(name, help, label_names, exptime)
    return register(self, "gauge", name, help, label_names, nil, exptime)
end

-- prometheus:histogram(name, help, label_names, buckets, exptime)
function Registry:histogram(name, help, label_names, buckets, exptime)
    return register(self, "histogram", name, help, label_names, buckets, exptime)
end

-- The exposition of every metric of the dictionary, as an array of strings to concatenate.
function Registry:metric_data()
    return { self.namespace:render() }
end

-- Writes the exposition as the response (in a content handler).
function Registry:collect()
    ngx.header["Content-Type"] = "text/plain"
    ngx.print(self:metric_data())
end

-- nginx-lua-prometheus starts its per-worker counter sync here; writes are shared at once in
-- moongate, so there is nothing to start. Kept so code calling it runs unchanged.
function Registry:init_worker(sync_interval)
    if sync_interval ~= nil and type(sync_interval) ~= "number" then
        error("sync_interval must be a number", 2)
    end
end

-- init(dict_name = "prometheus_metrics", options | prefix)
-- options: prefix, error_metric_name, sync_interval (accepted, see init_worker),
-- lookup_max_size.
function _M.init(dict_name, options)
    dict_name = dict_name or "prometheus_metrics"
    local dict = ngx.shared[dict_name]
    if dict == nil then
        error("Dictionary '" .. tostring(dict_name) .. "' does not seem to exist. "
              .. "Please define the dictionary using `lua_shared_dict`.", 2)
    end
    local prefix, error_metric_name, lookup_max_size = "", DEFAULT_ERROR_METRIC,
                                                        DEFAULT_LOOKUP_MAX
    if type(options) == "string" then
        prefix = options
    elseif type(options) == "table" then
        prefix = options.prefix or prefix
        error_metric_name = options.error_metric_name or error_metric_name
        lookup_max_size = options.lookup_max_size or lookup_max_size
    elseif options ~= nil then
        error("options must be a table or a prefix string", 2)
    end
    local self = setmetatable({
        dict = dict,
        dict_name = dict_name,
        prefix = prefix,
        registered = {},
        lookup_max_size = lookup_max_size,
        namespace = native.namespace(dict_name, dict:capacity()),
    }, Registry)
    local em = register(self, "counter", error_metric_name,
                        "Number of errors of the Lua prometheus library")
    if em then
        self.error_metric = em
        -- shown as 0 from the start, so an alert on it has a series to watch
        write(em, add_fn, 0, nil)
    end
    return self
end

return _M
