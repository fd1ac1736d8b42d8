-- core.log: `core.log.LEVEL(...)` writes one error-log line through `ngx.log`, so the line has
-- nginx's shape and the `[lua] file.lua:LINE: func(): ` prefix of the plugin that logged (the
-- level functions tail-call `ngx.log`, leaving the caller's frame as the one it reports).
-- Levels below the error log's configured level cost nothing: the function is a no-op.

local ngx = ngx
local ngx_log = ngx.log
local select, setmetatable, tostring, unpack = select, setmetatable, tostring, unpack
local wipe = require("table.clear")
local sys_filter_level = require("ngx.errlog").get_sys_filter_level

local levels = {
    stderr = ngx.STDERR,
    emerg = ngx.EMERG,
    alert = ngx.ALERT,
    crit = ngx.CRIT,
    error = ngx.ERR,
    warn = ngx.WARN,
    notice = ngx.NOTICE,
    info = ngx.INFO,
    debug = ngx.DEBUG,
}

local function skip() end

-- The function for level `name`, with `prefix` (from `new`) before the arguments.
local function level_fn(name, prefix)
    local lvl = levels[name]
    if not lvl then
        return nil
    end
    if lvl > sys_filter_level() then
        return skip
    end
    if prefix then
        return function(...)
            return ngx_log(lvl, prefix, ...)
        end
    end
    return function(...)
        return ngx_log(lvl, ...)
    end
end

local logger = { version = 0.4 }

-- The level functions are made on first use and kept, as the error-log level is fixed for the
-- life of a worker.
local function lazy_levels(self, prefix)
    return setmetatable(self, {
        __index = function(t, name)
            local f = level_fn(name, prefix)
            if f then
                t[name] = f
            end
            return f
        end,
    })
end

-- A logger whose lines all start with `prefix`.
function logger.new(prefix)
    return lazy_levels({ version = logger.version }, prefix)
end

-- `delay_exec(func, ...)`: a value that runs `func(...)` only if the line is written (its
-- `__tostring` runs it), for costly debug output. One object is reused, as in APISIX: use it
-- as an argument of one log call at a time.
local delayed = { args = {}, n = 0 }

local function run_delayed(d)
    -- A line may be formatted twice (length, then content): the function runs once and the
    -- second formatting gets the text kept from the first.
    local kept = d.res
    if kept ~= nil then
        d.res = nil
        return kept
    end
    local out, why = d.func(unpack(d.args, 1, d.n))
    if why then
        ngx_log(ngx.WARN, "failed to exec: ", why)
    end
    wipe(d.args)
    local text = tostring(out)
    d.res = text
    return text
end
setmetatable(delayed, { __tostring = run_delayed })

function logger.delay_exec(fn, ...)
    local argc = select("#", ...)
    wipe(delayed.args)
    for i = 1, argc do
        delayed.args[i] = (select(i, ...))
    end
    delayed.func, delayed.n, delayed.res = fn, argc, nil
    return delayed
end

return lazy_levels(logger, nil)
