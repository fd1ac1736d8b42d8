-- The test upstream moongate's own `.t` suites proxy to (ports 1980-1982 under the test runner,
-- served by a `content_by_lua` handler that calls `require("lib.server").go()`).
--
-- It answers the paths APISIX's test suites expect of their upstream, with the same bytes:
-- `go()` turns the request path into a function name (leading `/` dropped, then `/`, `.` and
-- `-` become `_`), copies every `resp-NAME: v` request header onto the response as `NAME: v`,
-- and calls the function; an unknown path is a 404 with a warning in the error log.
-- Written for moongate; APISIX's own file is used instead when the runner gets --apisix-root.

local json = require("cjson.safe")

local ngx = ngx
local pairs, ipairs, type, tonumber, tostring = pairs, ipairs, type, tonumber, tostring
local sort, concat = table.sort, table.concat

local _M = {}

-- Headers the gateway adds on the way up; `/uri` leaves them out so expectations do not depend
-- on the client's address.
local FORWARDING_HEADERS = {
    ["x-forwarded-for"] = true,
    ["x-forwarded-proto"] = true,
    ["x-forwarded-host"] = true,
    ["x-forwarded-port"] = true,
}

local function sorted_keys(t, skip)
    local keys = {}
    for k in pairs(t) do
        if not (skip and skip[k]) then
            keys[#keys + 1] = k
        end
    end
    sort(keys)
    return keys
end

-- One `name: value` line per request header, names sorted. A repeated header prints its
-- values run together, as `ngx.say` prints a list.
local function say_headers(skip)
    local headers = ngx.req.get_headers()
    for _, name in ipairs(sorted_keys(headers, skip)) do
        ngx.say(name, ": ", headers[name])
    end
end

local function read_body()
    ngx.req.read_body()
    return ngx.req.get_body_data()
end

-- Bodies with a fixed Content-Length, as nginx sends a short `ngx.say` without chunking.
local function say_with_length(text)
    ngx.header["Content-Length"] = #text + 1
    ngx.say(text)
end

function _M.hello()
    read_body()
    say_with_length("hello world")
end

function _M.hello1()
    ngx.say("hello1 world")
end

function _M.hello_chunked()
    for _, piece in ipairs({ "hell", "o w" }) do
        ngx.print(piece)
        ngx.flush(true)
    end
    ngx.say("orld")
end

function _M.opentracing()
    ngx.say("opentracing")
end

function _M.course_foo()
    ngx.say("course foo")
end

function _M.with_header()
    ngx.say("hello")
    ngx.say("world")
    ngx.say("!")
end

-- The port that answered, without a newline: balancing tests count these.
function _M.server_port()
    ngx.print(ngx.var.server_port)
end
_M.server_port_route2 = _M.server_port
_M.server_port_hello = _M.server_port
_M.server_port_aa = _M.server_port

function _M.ewma()
    local port = ngx.var.server_port
    ngx.sleep((port == "1981" or port == "1982") and 0.2 or 0.1)
    ngx.print(port)
end

function _M.limit_conn()
    ngx.sleep(0.3)
    ngx.say("hello world")
end

function _M.uri()
    ngx.say("uri: ", ngx.var.uri)
    say_headers(FORWARDING_HEADERS)
end
_M.uri_plugin_proxy_rewrite = _M.uri
_M.uri_plugin_proxy_rewrite_args = _M.uri

function _M.old_uri()
    ngx.say("uri: ", ngx.var.uri)
    say_headers(nil)
end

function _M.plugin_proxy_rewrite()
    ngx.say("uri: ", ngx.var.uri)
    ngx.say("host: ", ngx.var.host)
    ngx.say("scheme: ", ngx.var.scheme)
    ngx.log(ngx.WARN, "plugin_proxy_rewrite get method: ", ngx.req.get_method())
end

function _M.plugin_proxy_rewrite_args()
    ngx.say("uri: ", ngx.var.uri)
    local args = ngx.req.get_uri_args()
    for _, name in ipairs(sorted_keys(args)) do
        local v = args[name]
        ngx.say(name, ": ", type(v) == "table" and concat(v, ",") or v)
    end
end

-- Each value of a repeated header on its own line.
function _M.plugin_proxy_rewrite_multi_header()
    local headers = ngx.req.get_headers()
    for _, name in ipairs(sorted_keys(headers, FORWARDING_HEADERS)) do
        local v = headers[name]
        if type(v) ~= "table" then
            v = { v }
        end
        for _, item in ipairs(v) do
            ngx.say(name, ": ", item)
        end
    end
end

function _M.plugin_proxy_rewrite_resp_header()
    read_body()
    say_with_length("plugin_proxy_rewrite_resp_header")
end

function _M.status()
    ngx.log(ngx.WARN, "client request host: ", ngx.var.http_host)
    ngx.say("ok")
end

function _M.specific_status()
    local status = ngx.var.http_x_test_upstream_status
    if status then
        ngx.status = tonumber(status) or 500
        ngx.say("upstream status: ", status)
    end
end

-- `/headers?k=v`: one response header per query argument.
function _M.headers()
    for name, value in pairs(ngx.req.get_uri_args()) do
        ngx.header[name] = nil
        ngx.header[name] = value
    end
    ngx.say("/headers")
end

-- The request body back, with every request header set on the response.
function _M.echo()
    local body = read_body()
    for name, value in pairs(ngx.req.get_headers()) do
        ngx.header[name] = value
    end
    ngx.print(body or "")
end
_M.v1_responses = _M.echo

function _M.api_breaker()
    ngx.exit(tonumber(ngx.var.arg_code) or 500)
end

function _M.mysleep()
    local seconds = tonumber(ngx.var.arg_seconds) or 0
    ngx.sleep(seconds)
    if ngx.var.arg_abort then
        return ngx.exit(ngx.ERROR)
    end
    ngx.say(ngx.var.arg_seconds)
end

local function print_uri()
    ngx.say(ngx.var.uri)
end
for i = 1, 100 do
    _M["print_uri_" .. i] = print_uri
end

function _M.print_uri_detailed()
    ngx.say("ngx.var.uri: ", ngx.var.uri)
    ngx.say("ngx.var.request_uri: ", ngx.var.request_uri)
end

function _M.print_request_received()
    ngx.say("request_uri: ", ngx.var.request_uri)
    say_headers(nil)
end

function _M.server_error()
    error("500 Internal Server Error")
end

function _M.bad_request()
    ngx.status = 400
    ngx.say("Bad Request")
end

function _M.internalservererror()
    ngx.status = 500
    ngx.say("Internal Server Error")
end

-- Logger sinks: what they received goes to the error log, where tests grep for it.
function _M.log()
    local body = read_body()
    if body and ngx.var.content_type ~= "text/plain" then
        -- Re-encoded so the logged line does not depend on the sender's spacing.
        local doc = json.decode(body)
        if doc ~= nil then
            body = json.encode(doc)
        end
    end
    ngx.log(ngx.WARN, "request log: ", body or "nil")
end

function _M.log_request()
    ngx.log(ngx.WARN, "uri: ", ngx.var.uri)
    local headers = ngx.req.get_headers()
    for _, name in ipairs(sorted_keys(headers)) do
        ngx.log(ngx.WARN, name, ": ", headers[name])
    end
end

function _M.clickhouse_logger_server()
    local body = read_body()
    ngx.log(ngx.WARN, "clickhouse body: ", body)
    for name, value in pairs(ngx.req.get_headers()) do
        if type(value) == "table" then
            value = concat(value, ", ")
        end
        ngx.log(ngx.WARN, "clickhouse headers: " .. name .. ":" .. value)
    end
    ngx.say("ok")
end

function _M.v3_auth_authenticate()
    ngx.log(ngx.WARN, "etcd auth failed!")
end

function _M.mock_compressed_upstream_response()
    ngx.header["Content-Encoding"] = "gzip"
    ngx.say("compressed_response")
end

-- A zipkin collector that checks the spans the zipkin plugin reports: 3 (request, proxy,
-- response) or 5 with `?span_version=1`, each named `apisix…`, with a trace id and a local
-- endpoint for service `APISIX` on port 1984 (and `?server_addr=` as its ipv4 when given).
function _M.mock_zipkin()
    local body = read_body()
    ngx.log(ngx.NOTICE, body)
    local spans = json.decode(body or "")
    local function reject(...)
        ngx.log(ngx.ERR, ...)
        return ngx.exit(400)
    end
    if type(spans) ~= "table" then
        return reject("spans are not a JSON array")
    end
    local args = ngx.req.get_uri_args()
    local want = args.span_version == "1" and 5 or 3
    if #spans ~= want then
        return reject("wrong number of spans: ", #spans)
    end
    for _, span in ipairs(spans) do
        local name = tostring(span.name)
        if name:sub(1, 6) ~= "apisix" then
            return reject("wrong prefix of name", name:sub(1, 6))
        end
        if not span.traceId then
            return reject("missing trace id")
        end
        local ep = span.localEndpoint
        if type(ep) ~= "table" then
            return reject("missing local endpoint")
        end
        if ep.serviceName ~= "APISIX" and ep.serviceName ~= "apisix" then
            return reject("wrong serviceName: ", ep.serviceName)
        end
        if ep.port ~= 1984 then
            return reject("wrong port: ", ep.port)
        end
        if args.server_addr and ep.ipv4 ~= args.server_addr then
            return reject("server_addr mismatched")
        end
    end
end

-- Response headers named by `resp-NAME` request headers.
local function copy_resp_headers()
    for name, value in pairs(ngx.req.get_headers()) do
        if name:sub(1, 5) == "resp-" then
            ngx.header[name:sub(6)] = value
        end
    end
end

function _M.go()
    local name = ngx.var.uri:sub(2):gsub("[/%.%-]", "_")
    local handler = _M[name]
    if name == "go" or type(handler) ~= "function" then
        ngx.log(ngx.WARN, "undefined path in test server, uri: ", ngx.var.request_uri)
        return ngx.exit(404)
    end
    copy_resp_headers()
    return handler()
end

return _M
