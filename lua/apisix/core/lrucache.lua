-- core.lrucache: per-worker caches of objects built from config (compiled matchers, clients,
-- parsed keys). `new(opts)` returns `cache(key, version, create, ...)`: the object stored
-- under `key` if it was made for `version`, else `create(...)` (stored when not nil). Plugins
-- key on their conf table (identity) with the conf's version, or use `plugin_ctx`, which keys
-- on `ctx.conf_type#ctx.conf_id[#extra]` at `ctx.conf_version`.

local lrucache = require("resty.lrucache")
local resty_lock = require("resty.lock")
local log = require("apisix.core.log")
local ngx = ngx
local get_phase = ngx.get_phase
local tostring = tostring

local GLOBAL_ITEMS, GLOBAL_TTL = 1024, 60 * 60
local PLUGIN_ITEMS, PLUGIN_TTL = 8, 5 * 60
local LOCK_DICT = "lrucache-lock"

-- Only these phases may wait on a lock (serial_creating).
local may_wait = { rewrite = true, access = true, content = true, timer = true }

-- Stale values kept past their TTL when `invalid_stale` is not set are returned (and their TTL
-- renewed) as long as their version still matches.
local function cached(lru, invalid_stale, ttl, key, version)
    local obj, stale = lru:get(key)
    if obj and obj.ver == version then
        return obj
    end
    if stale and stale.ver == version and not invalid_stale then
        lru:set(key, stale, ttl)
        return stale
    end
    return nil
end

local function new_lru(opts)
    local count, ttl
    if opts and opts.type == "plugin" then
        count, ttl = opts.count or PLUGIN_ITEMS, opts.ttl or PLUGIN_TTL
    else
        count, ttl = opts and opts.count or GLOBAL_ITEMS, opts and opts.ttl or GLOBAL_TTL
    end
    local invalid_stale = opts and opts.invalid_stale
    local serial = opts and opts.serial_creating
    if opts and opts.refresh_stale then
        error("core.lrucache.new: refresh_stale is not supported by moongate yet", 2)
    end
    local lru = lrucache.new(count)
    local neg_lru = opts and opts.neg_ttl and opts.neg_count and lrucache.new(opts.neg_count)

    local function create(key, version, fn, ...)
        local obj, err = fn(...)
        if obj ~= nil then
            lru:set(key, { val = obj, ver = version }, ttl)
        elseif neg_lru then
            neg_lru:set(key, { err = err, ver = version }, opts.neg_ttl)
        end
        return obj, err
    end

    return function(key, version, fn, ...)
        if neg_lru then
            local neg = neg_lru:get(key)
            if neg and neg.ver == version then
                return nil, neg.err
            end
        end
        local hit = cached(lru, invalid_stale, ttl, key, version)
        if hit then
            return hit.val
        end
        if not serial or not may_wait[get_phase()] then
            return create(key, version, fn, ...)
        end
        -- One creator per key across the worker's requests: the others wait and reuse it.
        local lock, err = resty_lock:new(LOCK_DICT)
        if not lock then
            return nil, "failed to create lock: " .. err
        end
        local key_s = tostring(key)
        log.info("try to lock with key ", key_s)
        local elapsed, lerr = lock:lock(key_s)
        if not elapsed then
            return nil, "failed to acquire the lock: " .. lerr
        end
        hit = cached(lru, invalid_stale, ttl, key, version)
        if hit then
            lock:unlock()
            log.info("unlock with key ", key_s)
            return hit.val
        end
        local obj, cerr = create(key, version, fn, ...)
        lock:unlock()
        log.info("unlock with key ", key_s)
        return obj, cerr
    end
end

local function ctx_key(ctx, extra)
    local key = ctx.conf_type .. "#" .. ctx.conf_id
    if extra then
        key = key .. "#" .. extra
    end
    return key, ctx.conf_version
end

-- `plugin_ctx(cache, ctx, extra, create, ...)`: the object of this conf owner (and version).
local function plugin_ctx(cache, ctx, extra, fn, ...)
    local key, ver = ctx_key(ctx, extra)
    return cache(key, ver, fn, ...)
end

-- The key `plugin_ctx` uses, with its version: `type#id[#extra]#version`.
local function plugin_ctx_id(ctx, extra)
    local key, ver = ctx_key(ctx, extra)
    return key .. "#" .. ver
end

return {
    version = 0.1,
    new = new_lru,
    global = new_lru(),
    plugin_ctx = plugin_ctx,
    plugin_ctx_id = plugin_ctx_id,
}
