-- moongate's test upstream for its own `.t` suites: the runner serves it on ports 1980-1982
-- through a `content_by_lua` handler that calls `require("lib.server").go()`. (With
-- --apisix-root the runner uses APISIX's own t/lib/server.lua instead.)
--
-- It answers the paths APISIX-style test files expect of their upstream. The request path
-- selects the handler: drop the leading `/`, turn every `/`, `.` and `-` into `_`; `/hello` is
-- handler `hello`, `/print-uri-3` is `print_uri_3`. Before the handler runs, each request header
-- `resp-NAME: v` becomes the response header `NAME: v`. An unknown path is a 404 and a [warn]
-- line naming it.

local cjson = require("cjson.safe")

local ngx = ngx
local pairs, ipairs, type, tonumber, tostring = pairs, ipairs, type, tonumber, tostring

local handlers = {}

------------------------------------------------------------------------------------------------
-- Helpers

local function warn(...)
    ngx.log(ngx.WARN, ...)
end

local function body_text()
    ngx.req.read_body()
    return ngx.req.get_body_data()
end

local function req_headers()
    return ngx.req.get_headers()
end

local function query()
    return ngx.req.get_uri_args()
end

-- Keys of `t` in byte order, leaving out the ones `omit` marks.
local function ordered_names(t, omit)
    local names = {}
    for name in pairs(t) do
        if omit == nil or not omit[name] then
            names[#names + 1] = name
        end
    end
    table.sort(names)
    return names
end

-- Headers the gateway adds when proxying; some endpoints leave them out so that the
-- expected output does not depend on the client's address.
local added_by_proxy = {}
for _, suffix in ipairs({ "for", "proto", "host", "port" }) do
    added_by_proxy["x-forwarded-" .. suffix] = true
end

-- `name: value` for every request header, sorted by name. A repeated header prints its values
-- run together (how ngx.say prints a list).
local function print_headers(omit)
    local h = req_headers()
    for _, name in ipairs(ordered_names(h, omit)) do
        ngx.say(name, ": ", h[name])
    end
end

local function print_uri_line()
    ngx.say("uri: ", ngx.var.uri)
end

-- A short body with an explicit Content-Length (what nginx does for a small ngx.say).
local function say_sized(line)
    ngx.header["Content-Length"] = #line + 1
    ngx.say(line)
end

local function alias(names, fn)
    for _, n in ipairs(names) do
        handlers[n] = fn
    end
end

------------------------------------------------------------------------------------------------
-- Fixed answers

local fixed_lines = {
    hello1 = "hello1 world",
    opentracing = "opentracing",
    course_foo = "course foo",
}
for name, line in pairs(fixed_lines) do
    handlers[name] = function()
        ngx.say(line)
    end
end

handlers.hello = function()
    body_text()
    say_sized("hello world")
end

handlers.plugin_proxy_rewrite_resp_header = function()
    body_text()
    say_sized("plugin_proxy_rewrite_resp_header")
end

-- Sent in separate flushed pieces, so the gateway sees a chunked body.
handlers.hello_chunked = function()
    ngx.print("hell")
    ngx.flush(true)
    ngx.print("o w")
    ngx.flush(true)
    ngx.say("orld")
end

handlers.with_header = function()
    for _, word in ipairs({ "hello", "world", "!" }) do
        ngx.say(word)
    end
end

handlers.status = function()
    warn("client request host: ", ngx.var.http_host)
    ngx.say("ok")
end

handlers.bad_request = function()
    ngx.status = 400
    ngx.say("Bad Request")
end

handlers.internalservererror = function()
    ngx.status = 500
    ngx.say("Internal Server Error")
end

handlers.server_error = function()
    error("500 Internal Server Error")
end

handlers.mock_compressed_upstream_response = function()
    ngx.header["Content-Encoding"] = "gzip"
    ngx.say("compressed_response")
end

------------------------------------------------------------------------------------------------
-- Which server answered (load-balancing tests count ports)

local function answer_port()
    ngx.print(ngx.var.server_port)
end
alias({ "server_port", "server_port_route2", "server_port_hello", "server_port_aa" }, answer_port)

-- 1981 and 1982 are slower than 1980, for latency-aware balancers.
handlers.ewma = function()
    local p = ngx.var.server_port
    local slow = p == "1981" or p == "1982"
    ngx.sleep(slow and 0.2 or 0.1)
    ngx.print(p)
end

handlers.limit_conn = function()
    ngx.sleep(0.3)
    ngx.say("hello world")
end

handlers.mysleep = function()
    ngx.sleep(tonumber(ngx.var.arg_seconds) or 0)
    if ngx.var.arg_abort then
        return ngx.exit(ngx.ERROR)
    end
    ngx.say(ngx.var.arg_seconds)
end

------------------------------------------------------------------------------------------------
-- Echoing the request

alias({ "uri", "uri_plugin_proxy_rewrite", "uri_plugin_proxy_rewrite_args" }, function()
    print_uri_line()
    print_headers(added_by_proxy)
end)

handlers.old_uri = function()
    print_uri_line()
    print_headers(nil)
end

handlers.plugin_proxy_rewrite = function()
    local v = ngx.var
    print_uri_line()
    ngx.say("host: ", v.host)
    ngx.say("scheme: ", v.scheme)
    warn("plugin_proxy_rewrite get method: ", ngx.req.get_method())
end

handlers.plugin_proxy_rewrite_args = function()
    print_uri_line()
    local args = query()
    for _, name in ipairs(ordered_names(args)) do
        local val = args[name]
        if type(val) == "table" then
            val = table.concat(val, ",")
        end
        ngx.say(name, ": ", val)
    end
end

-- One line per value, so repeated headers are visible.
handlers.plugin_proxy_rewrite_multi_header = function()
    local h = req_headers()
    for _, name in ipairs(ordered_names(h, added_by_proxy)) do
        local vals = h[name]
        for _, one in ipairs(type(vals) == "table" and vals or { vals }) do
            ngx.say(name, ": ", one)
        end
    end
end

handlers.print_uri_detailed = function()
    local v = ngx.var
    ngx.say("ngx.var.uri: ", v.uri)
    ngx.say("ngx.var.request_uri: ", v.request_uri)
end

handlers.print_request_received = function()
    ngx.say("request_uri: ", ngx.var.request_uri)
    print_headers(nil)
end

local function say_path()
    ngx.say(ngx.var.uri)
end
for i = 1, 100 do
    handlers["print_uri_" .. i] = say_path
end

-- The body back, with every request header copied onto the response.
alias({ "echo", "v1_responses" }, function()
    local body = body_text()
    for name, val in pairs(req_headers()) do
        ngx.header[name] = val
    end
    ngx.print(body or "")
end)

-- `/headers?k=v`: each query argument becomes a response header.
handlers.headers = function()
    for name, val in pairs(query()) do
        ngx.header[name] = nil
        ngx.header[name] = val
    end
    ngx.say("/headers")
end

-- `X-Test-Upstream-Status: N` answers with status N.
handlers.specific_status = function()
    local wanted = ngx.var.http_x_test_upstream_status
    if wanted == nil then
        return
    end
    ngx.status = tonumber(wanted) or 500
    ngx.say("upstream status: ", wanted)
end

handlers.api_breaker = function()
    ngx.exit(tonumber(ngx.var.arg_code) or 500)
end

------------------------------------------------------------------------------------------------
-- Sinks of logger plugins: what arrives is written to the error log for tests to grep.

handlers.log = function()
    local body = body_text()
    -- JSON is re-encoded so the line does not depend on the sender's spacing.
    if body and ngx.var.content_type ~= "text/plain" then
        local doc = cjson.decode(body)
        if doc ~= nil then
            body = cjson.encode(doc)
        end
    end
    warn("request log: ", body or "nil")
end

handlers.log_request = function()
    warn("uri: ", ngx.var.uri)
    local h = req_headers()
    for _, name in ipairs(ordered_names(h)) do
        warn(name, ": ", h[name])
    end
end

handlers.clickhouse_logger_server = function()
    warn("clickhouse body: ", body_text())
    for name, val in pairs(req_headers()) do
        local joined = type(val) == "table" and table.concat(val, ", ") or val
        warn("clickhouse headers: " .. name .. ":" .. joined)
    end
    ngx.say("ok")
end

handlers.v3_auth_authenticate = function()
    warn("etcd auth failed!")
end

-- A zipkin collector checking the spans it receives: 3 (request, proxy, response), or 5 with
-- `?span_version=1`; each named `apisix…`, with a trace id, and a local endpoint of service
-- APISIX on port 1984 (with `?server_addr=` as its ipv4 when given). Anything else is a 400
-- and an [error] line saying what was wrong.
local function span_problem(span, args)
    local name = tostring(span.name)
    if name:sub(1, 6) ~= "apisix" then
        return "wrong prefix of name" .. name:sub(1, 6)
    end
    if span.traceId == nil then
        return "missing trace id"
    end
    local ep = span.localEndpoint
    if type(ep) ~= "table" then
        return "missing local endpoint"
    end
    if ep.serviceName ~= "APISIX" and ep.serviceName ~= "apisix" then
        return "wrong serviceName: " .. tostring(ep.serviceName)
    end
    if ep.port ~= 1984 then
        return "wrong port: " .. tostring(ep.port)
    end
    if args.server_addr and ep.ipv4 ~= args.server_addr then
        return "server_addr mismatched"
    end
    return nil
end

handlers.mock_zipkin = function()
    local body = body_text()
    ngx.log(ngx.NOTICE, body)
    local spans = cjson.decode(body or "")
    local args = query()
    local problem
    if type(spans) ~= "table" then
        problem = "spans are not a JSON array"
    else
        local expected = (args.span_version == "1") and 5 or 3
        if #spans ~= expected then
            problem = "wrong number of spans: " .. #spans
        end
        for _, span in ipairs(spans) do
            problem = problem or span_problem(span, args)
        end
    end
    if problem then
        ngx.log(ngx.ERR, problem)
        return ngx.exit(400)
    end
end

------------------------------------------------------------------------------------------------
-- Dispatch

local function handler_name(path)
    return (path:sub(2):gsub("[/%.%-]", "_"))
end

local function mirror_resp_headers()
    for name, val in pairs(req_headers()) do
        if name:sub(1, 5) == "resp-" then
            ngx.header[name:sub(6)] = val
        end
    end
end

local server = {}

function server.go()
    local fn = handlers[handler_name(ngx.var.uri)]
    if fn == nil then
        warn("undefined path in test server, uri: ", ngx.var.request_uri)
        return ngx.exit(404)
    end
    mirror_resp_headers()
    return fn()
end

-- Handlers stay reachable by name, as in APISIX's module (`require("lib.server").hello()`).
return setmetatable(server, { __index = handlers })
