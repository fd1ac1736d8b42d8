-- core.request: what a plugin reads from, and changes in, the client's request.
--
-- Parsed views of the request are kept on the request's `ctx` so each is built once:
-- `ctx.headers` (all headers), `ctx.req_uri_args` (query), `ctx.req_post_args` (form body) and
-- `ctx._request_body_table`/`_request_body_type` (parsed body). Setters drop the views they make
-- stale, including the `ctx.var.http_*` entry the variable cache holds. A nil `ctx` means the
-- current request's (`ngx.ctx.api_ctx`).

local ngx = ngx
local req = ngx.req
local type, tonumber, error, ipairs = type, tonumber, error, ipairs
local str_lower, str_format, str_gsub = string.lower, string.format, string.gsub

local clog = require("apisix.core.log")
local cjson_shim = require("apisix.core.json")
local cstr = require("apisix.core.string")

local MIME_JSON = "application/json"
local MIME_FORM = "application/x-www-form-urlencoded"
local MIME_MULTIPART = "multipart/form-data"

local request = {}

local function current(ctx)
    if ctx == nil then
        return ngx.ctx.api_ctx
    end
    return ctx
end

-- Memoises `build()` in `ctx[field]`; without a ctx nothing is kept.
local function memo(ctx, field, build)
    if not ctx then
        return build()
    end
    local held = ctx[field]
    if held == nil then
        held = build()
        ctx[field] = held
    end
    return held
end

local function fresh_headers()
    return req.get_headers(0)
end

------------------------------------------------------------------------------------------------
-- Headers

function request.headers(ctx)
    return memo(current(ctx), "headers", fresh_headers)
end

local first_header = require("moongate.headers").first

function request.header(ctx, name)
    ctx = current(ctx)
    local all = ctx and ctx.headers
    if all == nil and type(name) == "string" then
        -- One header asked for and no table of them made yet: ask for that one alone (the
        -- table would be made of every header only for this lookup).
        return first_header(name)
    end
    local found = (all or request.headers(ctx))[name]
    if type(found) ~= "table" then
        return found
    end
    return found[1]
end

-- `http_NAME` for a lower-case header name, made once per name: plugins set the same few
-- headers on every request, and a gsub per call costs more than the rest of the setter.
local var_of_header = {}
local var_names = 0

local function header_var(lname)
    local v = var_of_header[lname]
    if v == nil then
        v = "http_" .. str_gsub(lname, "-", "_")
        if var_names >= 1024 then
            var_of_header, var_names = {}, 0
        end
        var_of_header[lname] = v
        var_names = var_names + 1
    end
    return v
end

-- The lower-case form of a header name, made once per name: `string.lower` makes and interns
-- a new string on every call, and auth plugins set the same few headers on every request.
local lower_of = {}
local lowers = 0

local function lower_name(name)
    local l = lower_of[name]
    if l == nil then
        l = str_lower(name)
        if lowers >= 1024 then
            lower_of, lowers = {}, 0
        end
        lower_of[name] = l
        lowers = lowers + 1
    end
    return l
end

-- Forgets every cached view of header `lname` (lower-case).
local function forget_header(ctx, lname)
    if not ctx then
        return
    end
    -- Only when set: assigning nil to an absent key inserts it, and the request's ctx would
    -- grow (and be rehashed) on every request that sets a header.
    if ctx.headers ~= nil then
        ctx.headers = nil
    end
    local vars = ctx.var
    if vars then
        vars[header_var(lname)] = nil
    end
end

-- The value list header `name` has once `extra` is appended to what the request carries now.
local function appended(lname, extra)
    local now = req.get_headers(0)[lname]
    if now == nil then
        return extra
    end
    if type(now) ~= "table" then
        now = { now }
    end
    now[#now + 1] = extra
    return now
end

local deprecation = {
    set = "DEPRECATED: use set_header(ctx, header_name, header_value) instead",
    add = "DEPRECATED: use add_header(ctx, header_name, header_value) instead",
}

local function change_header(mode, ctx, name, value)
    -- APISIX once took (name, value) without ctx; it still works, with a warning.
    if type(ctx) == "string" then
        clog.warn(deprecation[mode])
        ctx, name, value = nil, ctx, name
    end
    if type(name) ~= "string" then
        error(str_format("invalid header name %q: got %s, expected string", name, type(name)))
    end

    local lname = lower_name(name)
    if mode == "add" and value ~= nil then
        req.set_header(name, appended(lname, value))
    else
        req.set_header(name, value)
    end
    forget_header(current(ctx), lname)
end

function request.set_header(ctx, name, value)
    change_header("set", ctx, name, value)
end

function request.add_header(ctx, name, value)
    change_header("add", ctx, name, value)
end

------------------------------------------------------------------------------------------------
-- Connection facts, all from ctx.var

local function var_of(ctx)
    return current(ctx).var
end

function request.get_ip(ctx)
    local v = var_of(ctx)
    return v.realip_remote_addr or v.remote_addr or ""
end

function request.get_remote_client_ip(ctx)
    return var_of(ctx).remote_addr or ""
end

function request.get_remote_client_port(ctx)
    return tonumber(var_of(ctx).remote_port)
end

function request.get_scheme(ctx)
    return var_of(ctx).scheme or ""
end

function request.get_host(ctx)
    return var_of(ctx).host or ""
end

function request.get_port(ctx)
    return tonumber(var_of(ctx).server_port)
end

request.get_method = req.get_method
request.get_http_version = req.http_version

------------------------------------------------------------------------------------------------
-- Query and form arguments

local function read_query()
    return req.get_uri_args(0)
end

function request.get_uri_args(ctx)
    return memo(current(ctx), "req_uri_args", read_query)
end

function request.set_uri_args(ctx, args)
    local c = current(ctx)
    if c and c.req_uri_args ~= nil then
        c.req_uri_args = nil
    end
    return req.set_uri_args(args)
end

local function read_form()
    req.read_body()
    local form, why = req.get_post_args(0)
    if form then
        return form
    end
    clog.error("the post form is too large: ", why)
    return {}
end

function request.get_post_args(ctx)
    return memo(current(ctx), "req_post_args", read_form)
end

------------------------------------------------------------------------------------------------
-- The body

-- nil when `n` bytes are within `limit`, else APISIX's refusal text.
local function too_big(n, limit)
    if limit == nil or n <= limit then
        return nil
    end
    return "request size " .. n .. " is greater than the maximum size " .. limit .. " allowed"
end

local function slurp(path)
    local fh, open_err = io.open(path, "rb")
    if not fh then
        return nil, open_err
    end
    local data = fh:read("*a")
    fh:close()
    return data
end

-- The request body, or nil when there is none. With `max_size`, a body announced (by
-- Content-Length) or found to be larger is refused before or after reading it.
function request.get_body(max_size, ctx)
    if max_size then
        local vars = (ctx and ctx.var) or ngx.var
        local refusal = too_big(tonumber(vars.http_content_length) or 0, max_size)
        if refusal then
            -- Do not invite a client that waits for "100 Continue" to send the body.
            local expect = vars.http_expect
            if expect and str_lower(expect) == "100-continue" then
                req.clear_header("expect")
            end
            return nil, refusal
        end
    end

    req.read_body()
    local data = req.get_body_data()
    if data == nil then
        -- moongate keeps bodies in memory; a file exists only when a plugin installed one.
        local path = req.get_body_file()
        if path == nil then
            return nil
        end
        local read_err
        data, read_err = slurp(path)
        if data == nil then
            return nil, read_err
        end
    end

    local refusal = too_big(#data, max_size)
    if refusal then
        return nil, refusal
    end
    return data
end

-- Always nil in moongate (bodies are never spilled to disk), unless a plugin set a file.
function request.get_request_body_file()
    return req.get_body_file()
end

-- Parsers of the body by media type: each returns the table or nil and the reason.
local body_parsers = {
    {
        mime = MIME_JSON,
        parse = function(ctx, limit)
            local text, why = request.get_body(limit, ctx)
            if not text then
                return nil, "could not get body: " .. (why or "request body is empty")
            end
            local doc, bad = cjson_shim.decode(text)
            if not doc then
                return nil, "could not parse JSON request body: " .. (bad or "invalid JSON")
            end
            return doc
        end,
    },
    {
        mime = MIME_FORM,
        parse = function(ctx)
            return request.get_post_args(ctx)
        end,
    },
    {
        mime = MIME_MULTIPART,
        parse = function()
            error(
                "core.request.get_request_body_table: multipart/form-data bodies are not supported by moongate yet"
            )
        end,
    },
}

function request.get_request_body_table(ctx, content_type, max_size)
    ctx = current(ctx)
    local held = ctx._request_body_table
    if held ~= nil then
        local held_type = ctx._request_body_type
        if content_type and held_type ~= content_type then
            return nil,
                "request body type mismatch: cached type is "
                    .. (held_type or "unknown")
                    .. ", expected "
                    .. content_type
        end
        return held
    end

    local declared = content_type or request.header(ctx, "Content-Type") or ""
    for _, p in ipairs(body_parsers) do
        if cstr.find(declared, p.mime) then
            local parsed, why = p.parse(ctx, max_size)
            if parsed == nil then
                return nil, why
            end
            ctx._request_body_table = parsed
            ctx._request_body_type = p.mime
            return parsed
        end
    end
    return nil,
        str_format(
            "unsupported content-type: %s, supported types are: %s, %s, %s",
            declared,
            MIME_JSON,
            MIME_FORM,
            MIME_MULTIPART
        )
end

-- The JSON body as a table, or nil and `{message = reason}`.
function request.get_json_request_body_table(max_size)
    local doc, why = request.get_request_body_table(ngx.ctx.api_ctx, MIME_JSON, max_size)
    if doc == nil then
        return nil, { message = why }
    end
    return doc
end

return request
