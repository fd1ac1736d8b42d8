-- resty.redis.connector: connects `resty.redis` clients to a Redis server named directly or
-- found through Redis Sentinel, with the API of (api7-)lua-resty-redis-connector (moongate's
-- own implementation, written from that library's README).
--
--   local rc = require("resty.redis.connector").new({ ... defaults ... })
--   local red, err, previous_errors = rc:connect({ ... overrides ... })
--   rc:set_keepalive(red)
--
-- Parameters: `host`, `port`, `path` (unix socket), `db`, `username`, `password`, `url`
-- (`redis://[USER:]PASSWORD@HOST:PORT/DB`, `sentinel://[USER:]PASSWORD@MASTER:ROLE/DB`),
-- `sentinels` (list of `{host, port}`), `master_name`, `role` (`master`, `slave`, `any`),
-- `sentinel_username`, `sentinel_password`, `connect_timeout`, `send_timeout`,
-- `read_timeout`, `keepalive_timeout`, `keepalive_poolsize`, `connection_options` (passed to
-- `connect`: `ssl`, `pool` …), `connection_is_proxied`, `disabled_commands`.

local redis = require("resty.redis")

local ngx = ngx
local null = ngx.null
local tonumber, tostring, type, pairs, ipairs = tonumber, tostring, type, pairs, ipairs
local setmetatable = setmetatable
local str_match, str_find = string.match, string.find
local tbl_insert = table.insert
local math_random = math.random

local _M = { _VERSION = "0.11.0" }
local mt = { __index = _M }

local DEFAULTS = {
    connect_timeout = 100,
    send_timeout = 1000,
    read_timeout = 1000,
    keepalive_timeout = 60000,
    keepalive_poolsize = 30,
    host = "127.0.0.1",
    port = 6379,
    path = "",
    db = 0,
    master_name = "mymaster",
    role = "master",
    sentinels = {},
    connection_is_proxied = false,
    disabled_commands = {},
}

-- `overrides` over `base` over DEFAULTS, without touching any of them.
local function merged(base, overrides)
    local out = {}
    for k, v in pairs(DEFAULTS) do
        out[k] = v
    end
    for _, t in ipairs({ base or {}, overrides or {} }) do
        for k, v in pairs(t) do
            out[k] = v
        end
    end
    return out
end

-- Fills params from a `redis://` or `sentinel://` URL.
local function apply_url(params)
    local url = params.url
    if not url or url == "" then
        return true
    end
    local scheme, rest = str_match(url, "^(%a+)://(.*)$")
    if not scheme then
        return nil, "could not parse the connection URL: " .. url
    end
    local creds, hostpart = str_match(rest, "^(.*)@([^@]*)$")
    if not creds then
        hostpart = rest
    end
    if creds and creds ~= "" then
        local user, pass = str_match(creds, "^([^:]*):(.*)$")
        if user then
            if user ~= "" then
                params.username = user
            end
            params.password = pass
        else
            params.password = creds
        end
    end
    local target, db = str_match(hostpart, "^([^/]*)/?(%d*)$")
    if not target then
        return nil, "could not parse the connection URL: " .. url
    end
    if db ~= "" then
        params.db = tonumber(db)
    end
    if scheme == "sentinel" then
        local name, role = str_match(target, "^([^:]+):?(%a*)$")
        params.master_name = name
        if role and role ~= "" then
            params.role = (role == "m" and "master") or (role == "s" and "slave")
                or (role == "a" and "any") or role
        end
        params.scheme = "sentinel"
    elseif scheme == "redis" or scheme == "rediss" then
        local host, port = str_match(target, "^%[?([^%]]+)%]?:(%d+)$")
        if host then
            params.host, params.port = host, tonumber(port)
        elseif target ~= "" then
            params.host = target
        end
        if scheme == "rediss" then
            params.connection_options = params.connection_options or {}
            params.connection_options.ssl = true
        end
    else
        return nil, "unknown scheme in the connection URL: " .. scheme
    end
    return true
end

function _M.new(config)
    if config ~= nil and type(config) ~= "table" then
        return nil, "config must be a table"
    end
    local defaults = merged(config)
    local ok, err = apply_url(defaults)
    if not ok then
        return nil, err
    end
    return setmetatable({ config = defaults }, mt)
end

-- AUTH then SELECT on a new connection.
local function log_in(red, username, password, db)
    if password and password ~= "" then
        local ok, err
        if username and username ~= "" then
            ok, err = red:auth(username, password)
        else
            ok, err = red:auth(password)
        end
        if not ok then
            return nil, err
        end
    end
    if db and db ~= 0 then
        local ok, err = red:select(db)
        if not ok then
            return nil, err
        end
    end
    return true
end

-- A client connected to `host` ({host, port} or {path}), logged in with `params`.
function _M.connect_to_host(self, host, params)
    params = params or self.config
    local red = redis.new()
    red:set_timeouts(params.connect_timeout, params.send_timeout, params.read_timeout)

    local username = host.username or params.username
    local password = host.password or params.password
    local db = params.connection_is_proxied and 0 or (host.db or params.db)
    local path = host.path
    local address = (path and path ~= "") and path or (host.host .. ":" .. (host.port or 6379))

    -- AUTH and SELECT run on new connections only, so a pool must never mix connections
    -- logged in differently: unless the caller names the pool, its name carries the database
    -- and a digest of the credentials.
    local opts = {}
    for k, v in pairs(params.connection_options or {}) do
        opts[k] = v
    end
    if not opts.pool then
        local pool = address .. "#" .. tostring(db or 0)
        if password and password ~= "" then
            pool = pool .. "#" .. ngx.crc32_long((username or "") .. ":" .. password)
        end
        opts.pool = pool
    end

    local ok, err
    if path and path ~= "" then
        ok, err = red:connect(path, opts)
    else
        ok, err = red:connect(host.host, host.port or 6379, opts)
    end
    if not ok then
        return nil, err
    end

    if red:get_reused_times() == 0 then
        ok, err = log_in(red, username, password, db)
        if not ok then
            red:close()
            return nil, err
        end
    end

    for _, name in ipairs(params.disabled_commands or {}) do
        red[name] = function()
            return nil, "command " .. name .. " is disabled"
        end
    end
    return red
end

-- The first of `hosts` that accepts a connection; the errors of the others come third.
function _M.try_hosts(self, hosts, params)
    local errors = {}
    for _, host in ipairs(hosts) do
        local red, err = self:connect_to_host(host, params)
        if red then
            return red, nil, errors
        end
        tbl_insert(errors, tostring(err))
    end
    return nil, "no hosts available", errors
end

-- Sentinel queries ----------------------------------------------------------------------

local function sentinel_params(params)
    return {
        connect_timeout = params.connect_timeout,
        send_timeout = params.send_timeout,
        read_timeout = params.read_timeout,
        username = params.sentinel_username,
        password = params.sentinel_password,
        db = 0,
        connection_options = params.connection_options,
    }
end

local function master_of(sentinel, name)
    local res, err = sentinel:sentinel("get-master-addr-by-name", name)
    if not res then
        return nil, err
    end
    if res == null or type(res) ~= "table" or not res[1] then
        return nil, "invalid master name " .. tostring(name)
    end
    return { host = res[1], port = tonumber(res[2]) }
end

local function has_flag(flags, flag)
    return flags and str_find(flags, flag, 1, true) ~= nil
end

-- The replicas Sentinel thinks are up, in random order (so load spreads over them).
local function replicas_of(sentinel, name)
    local res, err = sentinel:sentinel("replicas", name)
    if not res then
        return nil, err
    end
    local out = {}
    for _, entry in ipairs(type(res) == "table" and res or {}) do
        local h = redis:array_to_hash(entry)
        if not has_flag(h.flags, "s_down") and not has_flag(h.flags, "o_down")
            and not has_flag(h.flags, "disconnected")
            and (h["master-link-status"] == nil or h["master-link-status"] == "ok")
        then
            tbl_insert(out, math_random(#out + 1), { host = h.ip, port = tonumber(h.port) })
        end
    end
    return out
end

-- Asks the sentinels in turn for the servers that play `params.role`, then connects to one.
function _M.connect_via_sentinel(self, params)
    params = params or self.config
    local errors = {}
    local sparams = sentinel_params(params)
    for _, s in ipairs(params.sentinels or {}) do
        local sentinel, err = self:connect_to_host(s, sparams)
        if not sentinel then
            -- unreachable: the next sentinel may answer
            tbl_insert(errors, tostring(err))
        else
            local candidates, qerr = {}, nil
            local role = params.role
            if role == "master" or role == "any" then
                local master, merr = master_of(sentinel, params.master_name)
                if master then
                    tbl_insert(candidates, master)
                else
                    qerr = merr
                end
            end
            if not qerr and (role == "slave" or role == "any") then
                local replicas, rerr = replicas_of(sentinel, params.master_name)
                if replicas then
                    for _, r in ipairs(replicas) do
                        tbl_insert(candidates, r)
                    end
                else
                    qerr = rerr
                end
            end
            if qerr then
                -- a sentinel that answers with an error (NOAUTH, an unknown master …) is not
                -- a connection problem another sentinel would solve: say it
                sentinel:close()
                return nil, tostring(qerr), errors
            end
            sentinel:set_keepalive(params.keepalive_timeout, params.keepalive_poolsize)
            if #candidates > 0 then
                local red, cerr, tried = self:try_hosts(candidates, params)
                if red then
                    return red, nil, errors
                end
                for _, e in ipairs(tried or {}) do
                    tbl_insert(errors, e)
                end
                return nil, cerr, errors
            end
        end
    end
    return nil, "no hosts available", errors
end

-- connect(params?): through Sentinel when sentinels are configured (or the URL is a
-- `sentinel://` one), else straight to `host:port` / `path`.
function _M.connect(self, params)
    local p = self.config
    if params then
        p = merged(self.config, params)
        local ok, err = apply_url(p)
        if not ok then
            return nil, err
        end
    end
    if p.scheme == "sentinel" or (p.sentinels and #p.sentinels > 0) then
        return self:connect_via_sentinel(p)
    end
    local red, err = self:connect_to_host(p, p)
    if not red then
        return nil, err, {}
    end
    return red, nil, {}
end

function _M.set_keepalive(self, red)
    local c = self.config
    return red:set_keepalive(c.keepalive_timeout, c.keepalive_poolsize)
end

return _M
