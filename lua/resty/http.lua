-- resty.http: an HTTP/1.x client over cosockets with lua-resty-http's API (moongate's own
-- implementation). One object wraps one `ngx.socket.tcp()`; `request` writes a request and
-- returns the response head with a streaming `body_reader`, `request_uri` does the whole
-- exchange and keeps the connection in the worker's pool. Plugins (and APISIX's test helpers)
-- use both forms, so the return values and error strings follow lua-resty-http's.

local http_headers = require("resty.http_headers")

local ngx = ngx
local ngx_socket_tcp = ngx.socket.tcp
local ngx_encode_args = ngx.encode_args
local str_find, str_sub, str_lower, str_upper = string.find, string.sub, string.lower, string.upper
local str_format, str_match, str_gsub = string.format, string.match, string.gsub
local tbl_concat = table.concat
local tonumber, tostring, type, pairs, ipairs = tonumber, tostring, type, pairs, ipairs
local setmetatable, pcall = setmetatable, pcall
local co_wrap, co_yield = coroutine.wrap, coroutine.yield

local _M = { _VERSION = "0.17.2" }
-- The library's own form, with the lua-nginx-module API level moongate emulates: upstreams
-- (APISIX's tests among them) look for "ngx_lua/" in it.
_M._USER_AGENT = "lua-resty-http/" .. _M._VERSION .. " (Lua) ngx_lua/"
    .. tostring(ngx.config and ngx.config.ngx_lua_version or 10026)

local mt = { __index = _M }

-- Headers that belong to one hop and are never forwarded by proxy_request/proxy_response.
local HOP_BY_HOP = {
    ["connection"] = true,
    ["keep-alive"] = true,
    ["proxy-authenticate"] = true,
    ["proxy-authorization"] = true,
    ["te"] = true,
    ["trailers"] = true,
    ["transfer-encoding"] = true,
    ["upgrade"] = true,
    ["content-length"] = true, -- recomputed by the side that writes the body
}

local DEFAULT_CHUNK = 65536

function _M.new(_)
    local sock, err = ngx_socket_tcp()
    if not sock then
        return nil, err
    end
    return setmetatable({ sock = sock, keepalive = true }, mt)
end

function _M.set_timeout(self, timeout)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    return sock:settimeout(timeout)
end

function _M.set_timeouts(self, connect_timeout, send_timeout, read_timeout)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    return sock:settimeouts(connect_timeout, send_timeout, read_timeout)
end

function _M.set_proxy_options(self, opts)
    self.proxy_opts = opts
end

function _M.ssl_handshake(self, ...)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    self.ssl = true
    return sock:sslhandshake(...)
end

-- Does `host` (a request's target host) match one entry of a `no_proxy` list?
local function no_proxy_matches(no_proxy, host)
    if not no_proxy then
        return false
    end
    if no_proxy == "*" then
        return true
    end
    host = str_lower(host)
    for entry in string.gmatch(no_proxy, "[^,%s]+") do
        entry = str_lower(entry)
        if str_sub(entry, 1, 1) == "." then
            entry = str_sub(entry, 2)
        end
        if host == entry or (#host > #entry and str_sub(host, -#entry - 1) == "." .. entry) then
            return true
        end
    end
    return false
end

-- The table form of connect: TCP, an optional CONNECT tunnel or plain HTTP proxy, and TLS.
local function connect_with_options(self, opts)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    local scheme = str_lower(opts.scheme or "http")
    if scheme ~= "http" and scheme ~= "https" then
        return nil, "unsupported scheme: " .. scheme
    end
    local host = opts.host
    if type(host) ~= "string" or host == "" then
        return nil, "no host specified"
    end
    local is_unix = str_sub(host, 1, 5) == "unix:"
    local port = opts.port
    if not port and not is_unix then
        port = scheme == "https" and 443 or 80
    end
    local ssl = scheme == "https"
    local ssl_verify = opts.ssl_verify
    if ssl_verify == nil then
        ssl_verify = true
    end
    local server_name = opts.ssl_server_name or host

    local proxy_uri, proxy_auth
    local proxy_opts = opts.proxy_opts or self.proxy_opts
    if proxy_opts and not is_unix and not no_proxy_matches(proxy_opts.no_proxy, host) then
        if ssl then
            proxy_uri = proxy_opts.https_proxy
            proxy_auth = proxy_opts.https_proxy_authorization
        else
            proxy_uri = proxy_opts.http_proxy
            proxy_auth = proxy_opts.http_proxy_authorization
        end
    end

    local pool = opts.pool
    if not pool then
        pool = (is_unix and host) or (host .. ":" .. port)
        if ssl then
            pool = pool .. ":" .. server_name .. ":" .. tostring(ssl_verify)
        end
        if proxy_uri then
            pool = pool .. ":" .. proxy_uri .. ":" .. tostring(proxy_auth)
        end
    end
    local sock_opts = { pool = pool, pool_size = opts.pool_size, backlog = opts.backlog }

    local ok, err
    if proxy_uri then
        local p, perr = _M.parse_uri(nil, proxy_uri)
        if not p then
            return nil, "failed to parse proxy uri: " .. tostring(perr)
        end
        if p[1] ~= "http" then
            return nil, "protocol " .. tostring(p[1]) .. " not supported for proxy connections"
        end
        ok, err = sock:connect(p[2], p[3], sock_opts)
        if not ok then
            return nil, "failed to connect to proxy: " .. tostring(err)
        end
        if ssl then
            if sock:getreusedtimes() == 0 then
                -- A tunnel through the proxy, then TLS inside it.
                local target = host .. ":" .. port
                local req = "CONNECT " .. target .. " HTTP/1.1\r\nHost: " .. target .. "\r\n"
                if proxy_auth then
                    req = req .. "Proxy-Authorization: " .. proxy_auth .. "\r\n"
                end
                ok, err = sock:send(req .. "\r\n")
                if not ok then
                    return nil, "failed to send CONNECT to proxy: " .. tostring(err)
                end
                local line, rerr = sock:receive("*l")
                if not line then
                    return nil, "failed to read CONNECT response: " .. tostring(rerr)
                end
                local status = tonumber(str_match(line, "^HTTP/%d%.%d (%d%d%d)"))
                repeat
                    local l = sock:receive("*l")
                until not l or l == ""
                if status ~= 200 then
                    sock:close()
                    return nil, "failed to establish a tunnel through a proxy: " .. tostring(status)
                end
            end
        else
            -- Plain HTTP through a proxy: the request line carries the absolute URI.
            self.http_proxy_target = "http://" .. host .. (port ~= 80 and (":" .. port) or "")
            self.http_proxy_auth = proxy_auth
        end
    elseif is_unix then
        ok, err = sock:connect(host, sock_opts)
    else
        ok, err = sock:connect(host, port, sock_opts)
    end
    if not ok then
        return nil, err
    end

    self.host = host
    self.port = port
    self.keepalive = true
    self.ssl = ssl
    local session
    if ssl and sock:getreusedtimes() == 0 then
        session, err = sock:sslhandshake(opts.ssl_reused_session, server_name, ssl_verify,
            opts.ssl_send_status_req)
        if not session then
            self:close()
            return nil, err
        end
    end
    return true, nil, session
end

-- connect(options) or the older connect(host, port?, sock_opts?).
function _M.connect(self, host_or_opts, port, sock_opts)
    if type(host_or_opts) == "table" then
        return connect_with_options(self, host_or_opts)
    end
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    self.host = host_or_opts
    self.keepalive = true
    self.ssl = false
    if type(port) == "table" or port == nil then
        -- connect("unix:/path", opts)
        self.port = nil
        if type(port) == "table" then
            return sock:connect(host_or_opts, port)
        end
        return sock:connect(host_or_opts)
    end
    self.port = port
    if sock_opts then
        return sock:connect(host_or_opts, port, sock_opts)
    end
    return sock:connect(host_or_opts, port)
end

function _M.set_keepalive(self, ...)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    if self.keepalive == true then
        return sock:setkeepalive(...)
    end
    -- The response said the connection cannot be reused: close it, and say so with `2`.
    local ok, err = sock:close()
    if ok then
        return 2, "connection must be closed"
    end
    return ok, err
end

function _M.get_reused_times(self)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    return sock:getreusedtimes()
end

function _M.close(self)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    return sock:close()
end

-- parse_uri(uri, query_in_path?): { scheme, host, port, path, query }. With query_in_path
-- (the default) the query stays on the path and the fifth entry is "".
function _M.parse_uri(_, uri, query_in_path)
    if query_in_path == nil then
        query_in_path = true
    end
    if type(uri) ~= "string" then
        return nil, "bad uri: " .. tostring(uri)
    end
    local scheme, rest = str_match(uri, "^(%a[%w+.-]*)://(.*)$")
    if not scheme then
        rest = str_match(uri, "^//(.*)$")
        if not rest then
            return nil, "bad uri: " .. uri
        end
        local ok, var_scheme = pcall(function() return ngx.var.scheme end)
        scheme = ok and var_scheme or "http"
    end
    scheme = str_lower(scheme)
    if scheme ~= "http" and scheme ~= "https" then
        return nil, "bad uri: " .. uri
    end
    -- Drop any fragment; it is never sent.
    rest = str_gsub(rest, "#.*$", "")
    local authority, path = str_match(rest, "^([^/?]*)(.*)$")
    -- Userinfo (user:pass@) is not part of the host.
    authority = str_gsub(authority, "^.*@", "")
    local host, port
    if str_sub(authority, 1, 1) == "[" then
        host, port = str_match(authority, "^(%[[^%]]+%])(.*)$")
        if not host then
            return nil, "bad uri: " .. uri
        end
    else
        host, port = str_match(authority, "^([^:]*)(.*)$")
    end
    if host == "" then
        return nil, "bad uri: " .. uri
    end
    if port ~= "" then
        port = tonumber(str_match(port, "^:(%d+)$"))
        if not port then
            return nil, "bad uri: " .. uri
        end
    else
        port = scheme == "https" and 443 or 80
    end
    local query = ""
    local qpos = str_find(path, "?", 1, true)
    if qpos then
        query = str_sub(path, qpos + 1)
        path = str_sub(path, 1, qpos - 1)
    end
    if path == "" then
        path = "/"
    end
    if query_in_path and query ~= "" then
        path = path .. "?" .. query
        query = ""
    end
    return { scheme, host, port, path, query }
end

local function header_lines(headers, out)
    for name, value in pairs(headers) do
        if type(value) == "table" then
            for _, v in ipairs(value) do
                out[#out + 1] = name .. ": " .. tostring(v) .. "\r\n"
            end
        else
            out[#out + 1] = name .. ": " .. tostring(value) .. "\r\n"
        end
    end
end

-- Writes a request body: a string, a list of strings, or an iterator (chunked unless a
-- Content-Length was given).
local function send_body(sock, body, chunked)
    if type(body) == "function" then
        while true do
            local chunk, err = body()
            if err then
                return nil, err
            end
            if chunk == nil then
                break
            end
            if chunk ~= "" then
                local ok, serr
                if chunked then
                    ok, serr = sock:send({ str_format("%x", #chunk), "\r\n", chunk, "\r\n" })
                else
                    ok, serr = sock:send(chunk)
                end
                if not ok then
                    return nil, serr
                end
            end
        end
        if chunked then
            local ok, err = sock:send("0\r\n\r\n")
            if not ok then
                return nil, err
            end
        end
        return true
    end
    if body ~= nil and body ~= "" then
        return sock:send(body)
    end
    return true
end

local function body_length(body)
    if type(body) == "string" then
        return #body
    end
    if type(body) == "table" then
        local n = 0
        for _, part in ipairs(body) do
            n = n + #tostring(part)
        end
        return n
    end
    return nil
end

function _M.send_request(self, params)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    params = params or {}
    local method = str_upper(params.method or "GET")
    local path = params.path or "/"
    if type(path) ~= "string" or path == "" then
        path = "/"
    end
    local query = params.query
    if type(query) == "table" then
        query = ngx_encode_args(query)
    end
    if query and query ~= "" then
        if str_sub(query, 1, 1) == "?" then
            query = str_sub(query, 2)
        end
        path = path .. (str_find(path, "?", 1, true) and "&" or "?") .. query
    end
    if self.http_proxy_target and str_sub(path, 1, 1) == "/" then
        path = self.http_proxy_target .. path
    end
    local version = tonumber(params.version) or 1.1
    local body = params.body

    local headers = http_headers.new()
    for name, value in pairs(params.headers or {}) do
        headers[name] = value
    end
    if headers["Host"] == nil and self.host then
        local host = self.host
        if str_sub(host, 1, 5) == "unix:" then
            host = "localhost"
        elseif self.port then
            local default = self.ssl and 443 or 80
            if tonumber(self.port) ~= default then
                host = host .. ":" .. self.port
            end
        end
        headers["Host"] = host
    end
    if headers["User-Agent"] == nil then
        headers["User-Agent"] = _M._USER_AGENT
    end
    if self.http_proxy_auth and headers["Proxy-Authorization"] == nil then
        headers["Proxy-Authorization"] = self.http_proxy_auth
    end
    local chunked = false
    if body ~= nil then
        local len = body_length(body)
        if len then
            if headers["Content-Length"] == nil then
                headers["Content-Length"] = len
            end
        elseif headers["Content-Length"] == nil then
            if version < 1.1 then
                return nil, "chunked request bodies are not supported with HTTP/1.0"
            end
            if headers["Transfer-Encoding"] == nil then
                headers["Transfer-Encoding"] = "chunked"
            end
            chunked = str_find(str_lower(tostring(headers["Transfer-Encoding"])), "chunked", 1,
                true) ~= nil
        end
    elseif method == "POST" or method == "PUT" or method == "PATCH" then
        if headers["Content-Length"] == nil and headers["Transfer-Encoding"] == nil then
            headers["Content-Length"] = 0
        end
    end
    if version == 1.0 and headers["Connection"] == nil then
        headers["Connection"] = "keep-alive"
    end

    local out = { method, " ", path, " HTTP/", str_format("%.1f", version), "\r\n" }
    header_lines(headers, out)
    out[#out + 1] = "\r\n"
    local ok, err = sock:send(tbl_concat(out))
    if not ok then
        return nil, err
    end
    ok, err = send_body(sock, body, chunked)
    if not ok then
        return nil, err
    end
    self.last_method = method
    return true
end

local function read_status(sock)
    local line, err = sock:receive("*l")
    if not line then
        return nil, nil, nil, err
    end
    local version, status, reason = str_match(line, "^HTTP/(%d%.%d) (%d%d%d) ?(.*)$")
    if not version then
        return nil, nil, nil, "invalid status line: " .. line
    end
    return tonumber(status), tonumber(version), reason
end

local function read_headers(sock)
    local headers = http_headers.new()
    while true do
        local line, err = sock:receive("*l")
        if not line then
            return nil, err
        end
        if line == "" then
            break
        end
        local name, value = str_match(line, "^([^:%s]+)%s*:%s*(.-)%s*$")
        if name then
            local prev = headers[name]
            if prev == nil then
                headers[name] = value
            elseif type(prev) == "table" then
                prev[#prev + 1] = value
            else
                headers[name] = { prev, value }
            end
        end
    end
    return headers
end

local function header_has_token(value, token)
    if value == nil then
        return false
    end
    if type(value) == "table" then
        value = tbl_concat(value, ",")
    end
    value = str_lower(value)
    for t in string.gmatch(value, "[^,%s]+") do
        if t == token then
            return true
        end
    end
    return false
end

local function chunked_reader(sock, max_chunk, res)
    return co_wrap(function()
        while true do
            local line, err = sock:receive("*l")
            if not line then
                co_yield(nil, err)
                return
            end
            local size = tonumber(str_match(line, "^%s*(%x+)"), 16)
            if not size then
                co_yield(nil, "bad chunk size: " .. line)
                return
            end
            if size == 0 then
                -- Trailers end the body; read them now so the connection is clean for reuse.
                local trailers, terr = read_headers(sock)
                if not trailers then
                    co_yield(nil, terr)
                    return
                end
                res._trailers = trailers
                return
            end
            local left = size
            while left > 0 do
                local n = left
                if max_chunk and max_chunk > 0 and n > max_chunk then
                    n = max_chunk
                end
                local data, rerr = sock:receive(n)
                if not data then
                    co_yield(nil, rerr)
                    return
                end
                left = left - n
                co_yield(data)
            end
            local crlf, cerr = sock:receive(2)
            if crlf ~= "\r\n" then
                co_yield(nil, cerr or "bad chunk terminator")
                return
            end
        end
    end)
end

local function length_reader(sock, length, max_chunk)
    return co_wrap(function()
        local left = length
        while left > 0 do
            local n = left
            if max_chunk and max_chunk > 0 and n > max_chunk then
                n = max_chunk
            end
            local data, err = sock:receive(n)
            if not data then
                co_yield(nil, err)
                return
            end
            left = left - n
            co_yield(data)
        end
    end)
end

local function until_close_reader(sock, max_chunk)
    return co_wrap(function()
        if not max_chunk or max_chunk <= 0 then
            local data, err = sock:receive("*a")
            if not data then
                co_yield(nil, err)
                return
            end
            if data ~= "" then
                co_yield(data)
            end
            return
        end
        while true do
            local data, err, partial = sock:receive(max_chunk)
            if data then
                co_yield(data)
            elseif err == "closed" then
                if partial and partial ~= "" then
                    co_yield(partial)
                end
                return
            else
                co_yield(nil, err)
                return
            end
        end
    end)
end

-- The function a response exposes as `body_reader`: `reader(max_chunk_size?)` returns the next
-- piece, `nil` at the end, or `nil, err`. It reads from the socket on demand.
local function make_body_reader(sock, headers, res, keepalive_cb)
    local te = headers["Transfer-Encoding"]
    local length = tonumber(headers["Content-Length"])
    local kind
    if header_has_token(te, "chunked") then
        kind = "chunked"
    elseif length then
        kind = "length"
    else
        kind = "close"
        keepalive_cb(false)
    end
    local inner
    local done = false
    return function(max_chunk)
        if done then
            return nil
        end
        if not inner then
            if kind == "chunked" then
                inner = chunked_reader(sock, max_chunk, res)
            elseif kind == "length" then
                inner = length_reader(sock, length, max_chunk)
            else
                inner = until_close_reader(sock, max_chunk)
            end
        end
        local chunk, err = inner(max_chunk)
        if chunk == nil then
            done = true
            if err then
                keepalive_cb(false)
            end
        end
        return chunk, err
    end
end

local function no_body_reader()
    return nil
end

local function res_read_body(res)
    local reader = res.body_reader
    if not reader then
        return nil, "no body to be read"
    end
    local parts = {}
    while true do
        local chunk, err = reader()
        if err then
            return nil, err, tbl_concat(parts)
        end
        if not chunk then
            break
        end
        parts[#parts + 1] = chunk
    end
    return tbl_concat(parts)
end

-- Trailers arrive after the last chunk: the body reader keeps them, this merges them into
-- `res.headers` (call it once the body has been read).
local function res_read_trailers(res)
    local trailers = res._trailers
    if not trailers then
        return
    end
    res._trailers = nil
    for name, value in pairs(trailers) do
        res.headers[name] = value
    end
end

function _M.read_response(self, params)
    local sock = self.sock
    if not sock then
        return nil, "not initialized"
    end
    params = params or {}
    local status, version, reason, err
    local headers
    -- Skip interim 1xx answers (100 Continue, 103 Early Hints); 101 is final.
    repeat
        status, version, reason, err = read_status(sock)
        if not status then
            return nil, err
        end
        headers, err = read_headers(sock)
        if not headers then
            return nil, err
        end
    until status >= 200 or status == 101

    local conn = headers["Connection"]
    if version == 1.1 then
        self.keepalive = not header_has_token(conn, "close")
    else
        self.keepalive = header_has_token(conn, "keep-alive")
    end

    local method = str_upper(params.method or self.last_method or "GET")
    local has_body = not (method == "HEAD" or status == 204 or status == 304
        or (status >= 100 and status < 200))
    local res = {
        status = status,
        reason = reason,
        headers = headers,
        has_body = has_body,
        read_body = res_read_body,
        read_trailers = res_read_trailers,
    }
    if has_body then
        local client = self
        local reader = make_body_reader(sock, headers, res, function(ok)
            if not ok then
                client.keepalive = false
            end
        end)
        res.body_reader = reader
    else
        res.body_reader = no_body_reader
    end
    return res
end

function _M.request(self, params)
    params = params or {}
    local ok, err = self:send_request(params)
    if not ok then
        return nil, err
    end
    return self:read_response(params)
end

-- Responses of a pipeline are read lazily, as lua-resty-http documents: the first access to a
-- field of response i reads the heads (and bodies) of the responses before it, then its own
-- head. A read that fails (a timeout, a closed connection) is logged at error level and leaves
-- that response and every later one without `status`, so callers can tell which requests got
-- no answer.
function _M.request_pipeline(self, requests)
    for _, params in ipairs(requests) do
        local ok, err = self:send_request(params)
        if not ok then
            return nil, err
        end
    end
    local responses = {}
    local next_to_read, failed = 1, nil
    local function read_upto(last)
        while next_to_read <= last do
            local i = next_to_read
            next_to_read = i + 1
            local target = responses[i]
            setmetatable(target, nil)
            if not failed then
                local res, err = self:read_response(requests[i])
                if not res then
                    failed = err
                    ngx.log(ngx.ERR, err)
                else
                    for k, v in pairs(res) do
                        rawset(target, k, v)
                    end
                    -- Later responses follow on the wire; each body must be read before the
                    -- next head.
                    if i < #requests then
                        local body, berr = res:read_body()
                        if not body then
                            failed = berr
                        else
                            target.body = body
                            local drained = true
                            target.body_reader = function()
                                if drained then
                                    drained = false
                                    return body ~= "" and body or nil
                                end
                                return nil
                            end
                            target.read_body = function()
                                return body
                            end
                        end
                    end
                end
            end
        end
    end
    for i = 1, #requests do
        responses[i] = setmetatable({}, {
            __index = function(t, k)
                read_upto(i)
                return rawget(t, k)
            end,
        })
    end
    return responses
end

function _M.request_uri(self, uri, params)
    params = params or {}
    local parsed, err = self:parse_uri(uri, false)
    if not parsed then
        return nil, err
    end
    local scheme, host, port, path, query = parsed[1], parsed[2], parsed[3], parsed[4], parsed[5]
    if str_sub(host, 1, 1) == "[" then
        -- IPv6 literals connect without their brackets.
        host = str_sub(host, 2, -2)
    end
    if params.path == nil then
        params.path = path
    end
    if params.query == nil then
        params.query = query
    end

    local ok
    ok, err = self:connect({
        scheme = scheme,
        host = host,
        port = port,
        ssl_verify = params.ssl_verify,
        ssl_server_name = params.ssl_server_name,
        pool = params.pool,
        pool_size = params.pool_size,
        backlog = params.backlog,
        proxy_opts = params.proxy_opts,
    })
    if not ok then
        return nil, err
    end
    if not (params.headers and (params.headers["Host"] or params.headers["host"])) then
        local h = parsed[2]
        if port ~= (scheme == "https" and 443 or 80) then
            h = h .. ":" .. port
        end
        local headers = {}
        for k, v in pairs(params.headers or {}) do
            headers[k] = v
        end
        headers["Host"] = h
        params.headers = headers
    end

    local res
    res, err = self:request(params)
    if not res then
        self:close()
        return nil, err
    end
    local body
    body, err = res:read_body()
    if not body then
        self:close()
        return nil, err
    end
    res.body = body
    res:read_trailers()
    if params.keepalive == false then
        self:close()
    else
        local kok, kerr = self:set_keepalive(params.keepalive_timeout, params.keepalive_pool)
        if not kok then
            ngx.log(ngx.ERR, "failed to keepalive the connection: ", kerr)
        end
    end
    return res, nil
end

-- An iterator over the client's request body, for proxy_request. moongate has no raw request
-- socket (ngx.req.socket), so the body is read into memory first and handed out in pieces.
function _M.get_client_body_reader(_, chunksize)
    chunksize = chunksize or DEFAULT_CHUNK
    ngx.req.read_body()
    local body = ngx.req.get_body_data()
    if body == nil then
        local file = ngx.req.get_body_file()
        if file then
            local fh = io.open(file, "rb")
            if fh then
                body = fh:read("*a")
                fh:close()
            end
        end
    end
    if body == nil or body == "" then
        return nil
    end
    local pos = 1
    return function()
        if pos > #body then
            return nil
        end
        local piece = str_sub(body, pos, pos + chunksize - 1)
        pos = pos + chunksize
        return piece
    end
end

function _M.proxy_request(self, chunksize)
    local headers = ngx.req.get_headers()
    local forward = {}
    for name, value in pairs(headers) do
        if not HOP_BY_HOP[str_lower(name)] then
            forward[name] = value
        end
    end
    local body = self:get_client_body_reader(chunksize)
    if body then
        local len = tonumber(headers["content-length"])
        if len then
            forward["Content-Length"] = len
        end
    end
    return self:request({
        method = ngx.req.get_method(),
        path = ngx.var.uri,
        query = ngx.var.args,
        headers = forward,
        body = body,
    })
end

function _M.proxy_response(_, response, chunksize)
    if not response then
        ngx.log(ngx.ERR, "no response provided")
        return
    end
    ngx.status = response.status
    for name, value in pairs(response.headers) do
        if not HOP_BY_HOP[str_lower(name)] then
            ngx.header[name] = value
        end
    end
    local reader = response.body_reader
    repeat
        local chunk, err = reader(chunksize or DEFAULT_CHUNK)
        if err then
            ngx.log(ngx.ERR, err)
            break
        end
        if chunk then
            local ok, perr = ngx.print(chunk)
            if not ok then
                ngx.log(ngx.ERR, perr)
                break
            end
            ngx.flush(true)
        end
    until not chunk
end

return _M
