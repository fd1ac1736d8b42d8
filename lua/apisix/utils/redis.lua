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

local core = require("apisix.core")
local redis = require("resty.redis")

local ngx = ngx
local crc32 = ngx.crc32_long
local tostring = tostring

local _M = { version = 0.1 }

local function pool_name(conf)
    local scheme = "redis"
    if conf.redis_ssl then
        scheme = conf.redis_ssl_verify and "rediss-verify" or "rediss"
    end
    local name = scheme .. "#" .. conf.redis_host .. "#" .. tostring(conf.redis_port or 6379)
        .. "#" .. tostring(conf.redis_database or 0)
    local password = conf.redis_password
    if password and password ~= "" then
        name = name .. "#" .. crc32((conf.redis_username or "") .. ":" .. password)
    end
    return name
end

-- The first use of a connection: log in, then pick the database.
local function prepare(red, conf)
    local password = conf.redis_password
    if password and password ~= "" then
        local ok, err
        if conf.redis_username then
            ok, err = red:auth(conf.redis_username, password)
        else
            ok, err = red:auth(password)
        end
        if not ok then
            return nil, err
        end
    end

    local db = conf.redis_database or 0
    if db ~= 0 then
        local ok, err = red:select(db)
        if not ok then
            return false, "failed to change redis db, err: " .. tostring(err)
        end
    end
    return true
end

function _M.new(conf)
    local red = redis.new()
    local timeout = conf.redis_timeout or 1000
    red:set_timeouts(timeout, timeout, timeout)

    local ok, err = red:connect(conf.redis_host, conf.redis_port or 6379, {
        ssl = conf.redis_ssl,
        ssl_verify = conf.redis_ssl_verify,
        pool = pool_name(conf),
    })
    if not ok then
        core.log.error(" redis connect error, error: ", err)
        return false, err
    end

    local reused
    reused, err = red:get_reused_times()
    core.log.debug("redis connection reused times: ", reused)
    if err then
        return nil, err
    end
    if reused == 0 then
        local ready, perr = prepare(red, conf)
        if not ready then
            return ready, perr
        end
    end
    return red
end

return _M
