-- core.lrucache: per-worker caches of objects derived from config (compiled matchers, clients,
-- parsed keys). `new(opts)` returns a function `cache(key, version, create, ...)`: the object
-- stored under `key` when it was made for `version`, otherwise `create(...)`, stored unless
-- nil. Plugins key on their conf table (identity) with the conf's version, or go through
-- `plugin_ctx`, which keys on `ctx.conf_type#ctx.conf_id[#extra]` at `ctx.conf_version`.

local ngx = ngx
local error, tostring, setmetatable = error, tostring, setmetatable
local resty_lru = require("resty.lrucache")
local lock_lib = require("resty.lock")
local clog = require("apisix.core.log")

-- Sizes and lifetimes by cache type: plugin caches are small and short-lived.
local SIZING = {
    plugin = { count = 8, ttl = 300 },
    default = { count = 1024, ttl = 3600 },
}
local LOCK_ZONE = "lrucache-lock"

-- serial_creating waits on a lock, which only yielding phases can do.
local can_block = { rewrite = true, access = true, content = true, timer = true }

local Cache = {}
Cache.__index = Cache

-- The entry for `key` made for `version`. An expired one is revived (and its TTL renewed)
-- unless the cache was made with `invalid_stale`.
function Cache:lookup(key, version)
    local live, expired = self.lru:get(key)
    if live and live.ver == version then
        return live
    end
    if expired and expired.ver == version and not self.drop_stale then
        self.lru:set(key, expired, self.ttl)
        return expired
    end
    return nil
end

-- A failure remembered by the negative cache (neg_ttl/neg_count), for this version.
function Cache:remembered_failure(key, version)
    local failures = self.failures
    if not failures then
        return nil
    end
    local entry = failures:get(key)
    if entry and entry.ver == version then
        return entry
    end
    return nil
end

function Cache:build(key, version, create, ...)
    local made, why = create(...)
    if made ~= nil then
        self.lru:set(key, { val = made, ver = version }, self.ttl)
    elseif self.failures then
        self.failures:set(key, { err = why, ver = version }, self.neg_ttl)
    end
    return made, why
end

-- Builds under a per-key lock so concurrent requests of this worker create the object once;
-- the waiters find it made when they get the lock.
function Cache:build_serially(key, version, create, ...)
    local mutex, lock_err = lock_lib:new(LOCK_ZONE)
    if not mutex then
        return nil, "failed to create lock: " .. lock_err
    end
    local name = tostring(key)
    clog.info("try to lock with key ", name)
    local waited, wait_err = mutex:lock(name)
    if not waited then
        return nil, "failed to acquire the lock: " .. wait_err
    end

    local made, why
    local entry = self:lookup(key, version)
    if entry then
        made = entry.val
    else
        made, why = self:build(key, version, create, ...)
    end
    mutex:unlock()
    clog.info("unlock with key ", name)
    return made, why
end

function Cache:fetch(key, version, create, ...)
    local failure = self:remembered_failure(key, version)
    if failure then
        return nil, failure.err
    end
    local entry = self:lookup(key, version)
    if entry then
        return entry.val
    end
    if self.serial and can_block[ngx.get_phase()] then
        return self:build_serially(key, version, create, ...)
    end
    return self:build(key, version, create, ...)
end

local function new(opts)
    local o = opts or {}
    if o.refresh_stale then
        error("core.lrucache.new: refresh_stale is not supported by moongate yet", 2)
    end
    local sizing = SIZING[o.type == "plugin" and "plugin" or "default"]
    local self = setmetatable({
        ttl = o.ttl or sizing.ttl,
        drop_stale = o.invalid_stale,
        serial = o.serial_creating,
        neg_ttl = o.neg_ttl,
    }, Cache)
    self.lru = resty_lru.new(o.count or sizing.count)
    if o.neg_ttl and o.neg_count then
        self.failures = resty_lru.new(o.neg_count)
    end
    return function(key, version, create, ...)
        return self:fetch(key, version, create, ...)
    end
end

-- `type#id[#extra]` of the conf owner running now, and its version.
local function owner_key(ctx, extra)
    local parts = { ctx.conf_type, ctx.conf_id }
    if extra then
        parts[3] = extra
    end
    return table.concat(parts, "#"), ctx.conf_version
end

return {
    version = 0.1,
    new = new,
    global = new(),
    -- The object of the conf owner running now (its version included).
    plugin_ctx = function(cache, ctx, extra, create, ...)
        local key, ver = owner_key(ctx, extra)
        return cache(key, ver, create, ...)
    end,
    -- The key plugin_ctx uses, with the version appended: `type#id[#extra]#version`.
    plugin_ctx_id = function(ctx, extra)
        local key, ver = owner_key(ctx, extra)
        return key .. "#" .. ver
    end,
}
