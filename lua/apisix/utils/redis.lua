-- apisix.utils.redis: the connected `resty.redis` client the limit-* plugins (and ai-cache) get
-- for a `policy: redis` conf. `new(conf)` reads the conf fields of apisix.utils.redis-schema
-- (`redis_host`, `redis_port`, `redis_timeout`, `redis_username`, `redis_password`,
-- `redis_database`, `redis_ssl`, `redis_ssl_verify`) and returns a client ready for commands,
-- or `false`/`nil` and the error.
--
-- AUTH and SELECT run only when the connection is new: a pooled connection already did them.
-- That is only safe when a pool never mixes connections made with different settings, so the
-- pool name carries the scheme, address, database and a digest of the credentials (never the
-- credentials themselves).

local log = require("apisix.core").log
local resty_redis = require("resty.redis")

local checksum = ngx.crc32_long
local concat = table.concat

-- TLS connections with and without certificate checks must not share a pool either.
local TLS_SCHEMES = { [true] = "rediss-verify", [false] = "rediss" }

local function pool_name(conf)
    local scheme = conf.redis_ssl and TLS_SCHEMES[conf.redis_ssl_verify == true] or "redis"
    local parts = {
        scheme, conf.redis_host, conf.redis_port or 6379, conf.redis_database or 0,
    }
    local secret = conf.redis_password
    if secret and secret ~= "" then
        parts[#parts + 1] = checksum((conf.redis_username or "") .. ":" .. secret)
    end
    return concat(parts, "#")
end

-- AUTH as the user when one is named, else with the password alone.
local function login(red, user, secret)
    if user then
        return red:auth(user, secret)
    end
    return red:auth(secret)
end

-- The first use of a connection: log in, then pick the database.
local function prepare(red, conf)
    local secret = conf.redis_password
    if secret and secret ~= "" then
        local done, why = login(red, conf.redis_username, secret)
        if not done then
            return nil, why
        end
    end

    local db = conf.redis_database or 0
    if db == 0 then
        return true
    end
    local selected, why = red:select(db)
    if selected then
        return true
    end
    return false, "failed to change redis db, err: " .. tostring(why)
end

local function new(conf)
    local red = resty_redis.new()
    local ms = conf.redis_timeout or 1000
    red:set_timeouts(ms, ms, ms)

    local opts = { pool = pool_name(conf) }
    opts.ssl = conf.redis_ssl
    opts.ssl_verify = conf.redis_ssl_verify
    local connected, why = red:connect(conf.redis_host, conf.redis_port or 6379, opts)
    if not connected then
        log.error(" redis connect error, error: ", why)
        return false, why
    end

    local reused, rerr = red:get_reused_times()
    log.debug("redis connection reused times: ", reused)
    if rerr then
        return nil, rerr
    end
    if reused > 0 then
        return red
    end
    local ready, perr = prepare(red, conf)
    if not ready then
        return ready, perr
    end
    return red
end

return { version = 0.1, new = new }
