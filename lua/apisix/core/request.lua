-- core.request: the client's request as plugins read and change it. Reads of headers and query
-- arguments are cached on the request's `ctx` (`ctx.headers`, `ctx.req_uri_args`,
-- `ctx.req_post_args`) and the setters keep those caches and `ctx.var.http_*` coherent.
-- Every function that takes `ctx` falls back to `ngx.ctx.api_ctx`.

local log = require("apisix.core.log")
local json = require("apisix.core.json")
local core_str = require("apisix.core.string")
local ngx = ngx
local type, tonumber, error, format, lower = type, tonumber, error, string.format, string.lower
local get_headers = ngx.req.get_headers
local set_req_header = ngx.req.set_header
local clear_header = ngx.req.clear_header
local read_body = ngx.req.read_body
local get_body_data = ngx.req.get_body_data
local get_body_file = ngx.req.get_body_file
local get_post_args = ngx.req.get_post_args
local get_uri_args = ngx.req.get_uri_args
local set_uri_args = ngx.req.set_uri_args

local JSON_TYPE = "application/json"
local FORM_TYPE = "application/x-www-form-urlencoded"
local MULTIPART_TYPE = "multipart/form-data"

local _M = {}

local function api_ctx(ctx)
    return ctx or ngx.ctx.api_ctx
end

-- All request headers (lower-case names, repeated ones as lists), read once per request.
local function headers(ctx)
    ctx = api_ctx(ctx)
    if not ctx then
        return get_headers(0)
    end
    local h = ctx.headers
    if not h then
        h = get_headers(0)
        ctx.headers = h
    end
    return h
end
_M.headers = headers

-- The first value of header `name` (any case).
function _M.header(ctx, name)
    local v = headers(ctx)[name]
    if type(v) == "table" then
        return v[1]
    end
    return v
end

local function modify_header(ctx, name, value, override)
    if type(ctx) == "string" then
        -- The old (name, value) form.
        name, value, ctx = ctx, name, nil
        if override then
            log.warn("DEPRECATED: use set_header(ctx, header_name, header_value) instead")
        else
            log.warn("DEPRECATED: use add_header(ctx, header_name, header_value) instead")
        end
    end
    if type(name) ~= "string" then
        error(format("invalid header name %q: got %s, expected string", name, type(name)))
    end
    ctx = api_ctx(ctx)
    local key = lower(name)
    if override or value == nil then
        set_req_header(name, value)
    else
        -- Append to the values the request has now.
        local cur = get_headers(0)[key]
        local list
        if cur == nil then
            list = value
        elseif type(cur) == "table" then
            list = cur
            list[#list + 1] = value
        else
            list = { cur, value }
        end
        set_req_header(name, list)
    end
    if ctx then
        if ctx.var then
            ctx.var["http_" .. key:gsub("-", "_")] = nil
        end
        ctx.headers = nil
    end
end

-- Replaces header `name` (nil removes it) for the upstream and later reads.
function _M.set_header(ctx, name, value)
    modify_header(ctx, name, value, true)
end

-- Adds a value to header `name`, keeping the ones it has.
function _M.add_header(ctx, name, value)
    modify_header(ctx, name, value, false)
end

function _M.get_ip(ctx)
    local var = api_ctx(ctx).var
    return var.realip_remote_addr or var.remote_addr or ""
end

function _M.get_remote_client_ip(ctx)
    return api_ctx(ctx).var.remote_addr or ""
end

function _M.get_remote_client_port(ctx)
    return tonumber(api_ctx(ctx).var.remote_port)
end

-- Query arguments, decoded, with no limit on their number; cached per request.
function _M.get_uri_args(ctx)
    ctx = api_ctx(ctx)
    if not ctx then
        return get_uri_args(0)
    end
    if not ctx.req_uri_args then
        ctx.req_uri_args = get_uri_args(0)
    end
    return ctx.req_uri_args
end

function _M.set_uri_args(ctx, args)
    ctx = api_ctx(ctx)
    if ctx then
        ctx.req_uri_args = nil
    end
    return set_uri_args(args)
end

-- Form arguments of the body (read here), cached per request.
function _M.get_post_args(ctx)
    ctx = api_ctx(ctx)
    if ctx and ctx.req_post_args then
        return ctx.req_post_args
    end
    read_body()
    local args, err = get_post_args(0)
    if not args then
        log.error("the post form is too large: ", err)
        args = {}
    end
    if ctx then
        ctx.req_post_args = args
    end
    return args
end

local function check_size(size, max_size)
    if max_size and size > max_size then
        return nil,
            "request size " .. size .. " is greater than the maximum size " .. max_size .. " allowed"
    end
    return true
end

-- The request body (nil when empty), refused with APISIX's message when its Content-Length or
-- its length is over `max_size`.
function _M.get_body(max_size, ctx)
    if max_size then
        local var = ctx and ctx.var or ngx.var
        local declared = tonumber(var.http_content_length)
        if declared then
            local ok, err = check_size(declared, max_size)
            if not ok then
                local expect = var.http_expect
                if expect and lower(expect) == "100-continue" then
                    clear_header("expect")
                end
                return nil, err
            end
        end
    end
    read_body()
    local body = get_body_data()
    if body then
        local ok, err = check_size(#body, max_size)
        if not ok then
            return nil, err
        end
        return body
    end
    -- moongate keeps bodies in memory; a body file exists only if a plugin set one.
    local file = get_body_file()
    if not file then
        return nil
    end
    local f, err = io.open(file, "rb")
    if not f then
        return nil, err
    end
    local data = f:read("*a")
    f:close()
    local ok, size_err = check_size(#data, max_size)
    if not ok then
        return nil, size_err
    end
    return data
end

-- The path of the body's temporary file: always nil, moongate never spills bodies to disk.
function _M.get_request_body_file()
    return get_body_file()
end

-- The body parsed by content type (JSON, form), cached per request.
local function get_request_body_table(ctx, content_type, max_size)
    ctx = api_ctx(ctx)
    if ctx._request_body_table ~= nil then
        if content_type and ctx._request_body_type ~= content_type then
            return nil,
                "request body type mismatch: cached type is "
                    .. (ctx._request_body_type or "unknown")
                    .. ", expected "
                    .. content_type
        end
        return ctx._request_body_table
    end
    local ct = content_type or _M.header(ctx, "Content-Type") or ""
    local result, err, kind
    if core_str.find(ct, JSON_TYPE) then
        local body, body_err = _M.get_body(max_size, ctx)
        if not body then
            return nil, "could not get body: " .. (body_err or "request body is empty")
        end
        result, err = json.decode(body)
        if not result then
            return nil, "could not parse JSON request body: " .. (err or "invalid JSON")
        end
        kind = JSON_TYPE
    elseif core_str.find(ct, FORM_TYPE) then
        result = _M.get_post_args(ctx)
        kind = FORM_TYPE
    elseif core_str.find(ct, MULTIPART_TYPE) then
        error("core.request.get_request_body_table: multipart/form-data bodies are not supported by moongate yet")
    else
        return nil,
            "unsupported content-type: "
                .. ct
                .. ", supported types are: "
                .. JSON_TYPE
                .. ", "
                .. FORM_TYPE
                .. ", "
                .. MULTIPART_TYPE
    end
    ctx._request_body_table = result
    ctx._request_body_type = kind
    return result
end
_M.get_request_body_table = get_request_body_table

-- The JSON body as a table, or `nil, {message = err}`.
function _M.get_json_request_body_table(max_size)
    local body, err = get_request_body_table(ngx.ctx.api_ctx, JSON_TYPE, max_size)
    if not body then
        return nil, { message = err }
    end
    return body
end

function _M.get_scheme(ctx)
    return api_ctx(ctx).var.scheme or ""
end

function _M.get_host(ctx)
    return api_ctx(ctx).var.host or ""
end

function _M.get_port(ctx)
    return tonumber(api_ctx(ctx).var.server_port)
end

_M.get_http_version = ngx.req.http_version
_M.get_method = ngx.req.get_method

return _M
