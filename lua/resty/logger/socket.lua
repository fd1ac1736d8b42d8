-- resty.logger.socket: buffered, non-blocking log shipping over a TCP, TLS, UDP or unix socket
-- (lua-resty-logger-socket's API, written for moongate from its documentation; APISIX's syslog
-- plugin uses it).
--
-- Two ways to use it:
--   * one logger per module, as the original library: `init(opts)`, `initted()`, `log(msg)`,
--     `flush()`;
--   * logger objects (APISIX's fork): `local l = logger:new(opts)`, `l:log(msg)`, `l:flush()`.
--
-- `log(msg)` appends to a buffer and returns the bytes taken (`#msg`). When the buffer holds
-- `flush_limit` bytes (default 4096) it is sent; a message that would take the buffer past
-- `drop_limit` bytes (default 1 MiB) is refused (`nil, "logger buffer is full, this log
-- message will be dropped"`). A send that fails is tried `max_retry_times` more times (default
-- 3), `retry_interval` ms apart (default 100); then the buffered data is dropped and the error
-- returned. OpenResty cannot open sockets in the log and filter phases, so a send that falls in
-- one of them happens in a zero-delay timer, as the original library does; in other phases it
-- happens before `log`/`flush` return. `periodic_flush = N` also sends every N seconds.
--
-- Options: `host` + `port`, or `path` (unix socket); `sock_type` `"tcp"` (default) or
-- `"udp"`; `timeout` (ms, default 1000); `pool_size` (keepalive pool, default 10);
-- `ssl`/`tls` (TLS over TCP), `ssl_verify` (default true), `sni_host`; `flush_limit`,
-- `drop_limit`, `max_retry_times`, `retry_interval`, `periodic_flush`.

local ngx = ngx
local type, tostring, setmetatable, pairs, pcall = type, tostring, setmetatable, pairs, pcall
local concat = table.concat
local math_type_ok = function(v) return type(v) == "number" and v >= 0 end

local DEFAULTS = {
    flush_limit = 4096,
    drop_limit = 1048576,
    timeout = 1000,
    max_retry_times = 3,
    retry_interval = 100,
    pool_size = 10,
}

-- Phases where OpenResty has no cosockets: a send there waits for a timer.
local NO_SOCKET_PHASES = {
    log = true, header_filter = true, body_filter = true, init_worker = true, set = true,
    init = true, balancer = true,
}

local Logger = {}
local Logger_mt = { __index = Logger }

local function check_opts(opts)
    if type(opts) ~= "table" then
        return nil, "opts must be a table"
    end
    if not opts.path and not (opts.host and opts.port) then
        return nil, "no logging server configured. \"host\"/\"port\" or \"path\" is required."
    end
    if opts.sock_type and opts.sock_type ~= "tcp" and opts.sock_type ~= "udp" then
        return nil, "sock_type must be \"tcp\" or \"udp\""
    end
    if (opts.ssl or opts.tls) and opts.sock_type == "udp" then
        return nil, "ssl is only supported over tcp"
    end
    for name in pairs(DEFAULTS) do
        local v = opts[name]
        if v ~= nil and not math_type_ok(v) then
            return nil, "\"" .. name .. "\" must be a non-negative number"
        end
    end
    if opts.periodic_flush ~= nil and not (math_type_ok(opts.periodic_flush)
        and opts.periodic_flush > 0) then
        return nil, "\"periodic_flush\" must be a positive number"
    end
    return true
end

local function new_logger(opts)
    local ok, err = check_opts(opts)
    if not ok then
        return nil, err
    end
    local self = {
        host = opts.host,
        port = opts.port,
        path = opts.path,
        udp = opts.sock_type == "udp",
        tls = (opts.ssl or opts.tls) and true or false,
        ssl_verify = opts.ssl_verify ~= false,
        sni_host = opts.sni_host,
        pool_size = opts.pool_size or DEFAULTS.pool_size,
        pool = opts.pool_name,
        parts = {},
        buffered = 0,
        sending = false,
    }
    for name, default in pairs(DEFAULTS) do
        if self[name] == nil then
            self[name] = opts[name] or default
        end
    end
    self = setmetatable(self, Logger_mt)
    if opts.periodic_flush then
        local every_ok, every_err = ngx.timer.every(opts.periodic_flush, function()
            self:flush()
        end)
        if not every_ok then
            return nil, "failed to start the periodic flush: " .. tostring(every_err)
        end
    end
    return self
end

-- One attempt at writing `data` to the server.
local function send_once(self, data)
    if self.udp then
        local sock = ngx.socket.udp()
        sock:settimeout(self.timeout)
        local ok, err
        if self.path then
            ok, err = sock:setpeername("unix:" .. self.path)
        else
            ok, err = sock:setpeername(self.host, self.port)
        end
        if not ok then
            return nil, "failed to connect the log server: " .. tostring(err)
        end
        ok, err = sock:send(data)
        sock:close()
        if not ok then
            return nil, "failed to send the logs: " .. tostring(err)
        end
        return true
    end

    local sock = ngx.socket.tcp()
    sock:settimeout(self.timeout)
    local ok, err
    local pool = self.pool
    if self.path then
        ok, err = sock:connect("unix:" .. self.path, pool and { pool = pool } or nil)
    else
        ok, err = sock:connect(self.host, self.port, pool and { pool = pool } or nil)
    end
    if not ok then
        return nil, "failed to connect the log server: " .. tostring(err)
    end
    if self.tls and sock:getreusedtimes() == 0 then
        ok, err = sock:sslhandshake(nil, self.sni_host or self.host, self.ssl_verify)
        if not ok then
            sock:close()
            return nil, "failed to do the TLS handshake with the log server: " .. tostring(err)
        end
    end
    ok, err = sock:send(data)
    if not ok then
        sock:close()
        return nil, "failed to send the logs: " .. tostring(err)
    end
    sock:setkeepalive(0, self.pool_size)
    return true
end

-- Sends everything buffered now; returns the bytes sent, or nil and the last error once the
-- retries are spent (the data is dropped then).
local function send_buffer(self)
    if self.buffered == 0 then
        return 0
    end
    local data = concat(self.parts)
    self.parts = {}
    self.buffered = 0

    local err
    for attempt = 0, self.max_retry_times do
        if attempt > 0 then
            ngx.sleep(self.retry_interval / 1000)
        end
        local ok
        ok, err = send_once(self, data)
        if ok then
            return #data
        end
        ngx.log(ngx.ERR, "resty.logger.socket: ", err)
    end
    return nil, "try to send log messages to the log server failed after "
        .. self.max_retry_times .. " retries: " .. tostring(err)
end

local function flush_in_timer(premature, self)
    if premature and self.buffered == 0 then
        return
    end
    self:flush()
end

function Logger:flush()
    if NO_SOCKET_PHASES[ngx.get_phase()] then
        local ok, err = ngx.timer.at(0, flush_in_timer, self)
        if not ok then
            return nil, "failed to create the flush timer: " .. tostring(err)
        end
        return self.buffered
    end
    -- One send at a time per logger: entries logged meanwhile go out with the next flush.
    if self.sending then
        return 0
    end
    self.sending = true
    local ok, bytes, err = pcall(send_buffer, self)
    self.sending = false
    if not ok then
        return nil, tostring(bytes)
    end
    return bytes, err
end

function Logger:log(msg)
    if type(msg) ~= "string" then
        msg = tostring(msg)
    end
    local size = #msg
    if self.buffered + size > self.drop_limit then
        return nil, "logger buffer is full, this log message will be dropped"
    end
    self.parts[#self.parts + 1] = msg
    self.buffered = self.buffered + size
    if self.buffered >= self.flush_limit then
        local _, err = self:flush()
        if err then
            return nil, err
        end
    end
    return size
end

function Logger.initted()
    return true
end

-- The module: `:new(opts)` for objects, and the module-wide logger of the original library.
local _M = { _VERSION = "0.1.0-moongate" }
local default_logger

function _M.new(_, opts)
    return new_logger(opts)
end

function _M.init(opts)
    local l, err = new_logger(opts)
    if not l then
        return nil, err
    end
    default_logger = l
    return true
end

function _M.initted()
    return default_logger ~= nil
end

function _M.log(msg)
    if not default_logger then
        return nil, "not initialized"
    end
    return default_logger:log(msg)
end

function _M.flush()
    if not default_logger then
        return nil, "not initialized"
    end
    return default_logger:flush()
end

return _M
