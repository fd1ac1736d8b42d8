-- ngx.location.capture / capture_multi: subrequests.
--
-- nginx runs a subrequest inside the server, through its location matching, with the parent's
-- request headers. moongate sends it as a new HTTP/1.1 request over loopback to the listener
-- the parent came in on, so it goes through the same routes and plugins. What differs from
-- nginx follows from that: the subrequest is a request of its own (its own `ngx.ctx` and
-- `ngx.var`, its own access-log line, `remote_addr` the loopback address), and nginx-only
-- options (`ctx`, `vars`, `copy_all_vars`, `share_all_vars`) are refused with an error.
--
-- capture(uri, opts?) -> {status, header, body, truncated}
--   opts: method (ngx.HTTP_*), body, args (string or table), always_forward_body.
-- capture_multi({{uri, opts?}, …}) -> one result per subrequest, in order; they run at once.

local http = require("resty.http")

local ngx = ngx
local type, pairs, ipairs, tostring, tonumber, error, unpack = type, pairs, ipairs, tostring,
    tonumber, error, unpack
local str_find, str_sub, str_lower = string.find, string.sub, string.lower

local _M = {}

local METHODS = {
    [ngx.HTTP_GET] = "GET", [ngx.HTTP_HEAD] = "HEAD", [ngx.HTTP_POST] = "POST",
    [ngx.HTTP_PUT] = "PUT", [ngx.HTTP_DELETE] = "DELETE", [ngx.HTTP_OPTIONS] = "OPTIONS",
    [ngx.HTTP_PATCH] = "PATCH", [ngx.HTTP_MKCOL] = "MKCOL", [ngx.HTTP_COPY] = "COPY",
    [ngx.HTTP_MOVE] = "MOVE", [ngx.HTTP_PROPFIND] = "PROPFIND",
    [ngx.HTTP_PROPPATCH] = "PROPPATCH", [ngx.HTTP_LOCK] = "LOCK", [ngx.HTTP_UNLOCK] = "UNLOCK",
    [ngx.HTTP_TRACE] = "TRACE",
}

local REFUSED = { "ctx", "vars", "copy_all_vars", "share_all_vars" }

-- Headers of the parent that describe its own body or connection, not the subrequest's.
local NOT_INHERITED = {
    ["content-length"] = true, ["transfer-encoding"] = true, ["connection"] = true,
    ["expect"] = true, ["keep-alive"] = true, ["upgrade"] = true, ["te"] = true,
}

-- One subrequest's parameters, checked before any is sent.
local function prepare(fname, uri, opts)
    if type(uri) ~= "string" or uri == "" then
        error("ngx.location." .. fname .. ": the uri must be a non-empty string", 3)
    end
    opts = opts or {}
    if type(opts) ~= "table" then
        error("ngx.location." .. fname .. ": the options must be a table", 3)
    end
    for _, name in ipairs(REFUSED) do
        if opts[name] ~= nil then
            error("ngx.location." .. fname .. ": option '" .. name .. "' is not supported by "
                .. "moongate (subrequests run as separate requests over loopback)", 3)
        end
    end

    local method = "GET"
    if opts.method ~= nil then
        method = METHODS[opts.method]
        if not method then
            error("ngx.location." .. fname .. ": unsupported HTTP method: "
                .. tostring(opts.method), 3)
        end
    end

    local path, query = uri, nil
    local q = str_find(uri, "?", 1, true)
    if q then
        path, query = str_sub(uri, 1, q - 1), str_sub(uri, q + 1)
    end
    local args = opts.args
    if type(args) == "table" then
        args = ngx.encode_args(args)
    end
    if args ~= nil and args ~= "" then
        query = (query and query ~= "") and (query .. "&" .. tostring(args)) or tostring(args)
    end

    local body = opts.body
    if body == nil and (opts.always_forward_body or method == "POST" or method == "PUT") then
        ngx.req.read_body()
        body = ngx.req.get_body_data()
    end

    local headers = {}
    for name, value in pairs(ngx.req.get_headers(0, true)) do
        if not NOT_INHERITED[str_lower(name)] then
            headers[name] = value
        end
    end

    return {
        method = method,
        path = path,
        query = query,
        body = body,
        headers = headers,
    }
end

local function run(params)
    local client = http.new()
    local ok, err = client:connect(ngx.var.server_addr, tonumber(ngx.var.server_port))
    if not ok then
        return nil, "failed to connect to this server: " .. tostring(err)
    end
    local res
    res, err = client:request(params)
    if not res then
        client:close()
        return nil, err
    end
    local body, berr = res:read_body()
    local truncated = body == nil
    client:set_keepalive()

    local header = {}
    for name, value in pairs(res.headers) do
        header[name] = value
    end
    if berr then
        ngx.log(ngx.WARN, "subrequest ", params.path, ": body truncated: ", berr)
    end
    return { status = res.status, header = header, body = body or "", truncated = truncated }
end

-- A failed subrequest still yields a result, as nginx gives a 500 one.
local function result_of(params)
    local res, err = run(params)
    if res then
        return res
    end
    ngx.log(ngx.ERR, "subrequest ", params.path, " failed: ", err)
    return { status = 500, header = {}, body = "", truncated = false }
end

function _M.capture(uri, opts)
    return result_of(prepare("capture", uri, opts))
end

function _M.capture_multi(list)
    if type(list) ~= "table" or #list == 0 then
        error("ngx.location.capture_multi: expects a non-empty list of {uri, options?}", 2)
    end
    local all = {}
    for i, item in ipairs(list) do
        if type(item) ~= "table" then
            error("ngx.location.capture_multi: item " .. i .. " is not a table", 2)
        end
        all[i] = prepare("capture_multi", item[1], item[2])
    end
    local threads = {}
    for i, params in ipairs(all) do
        threads[i] = ngx.thread.spawn(result_of, params)
    end
    local results = {}
    for i, th in ipairs(threads) do
        local ok, res = ngx.thread.wait(th)
        if not ok then
            ngx.log(ngx.ERR, "subrequest ", all[i].path, " failed: ", res)
            res = { status = 500, header = {}, body = "", truncated = false }
        end
        results[i] = res
    end
    return unpack(results, 1, #results)
end

return _M
