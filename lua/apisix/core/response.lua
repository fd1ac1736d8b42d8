-- core.response: answering from a plugin and changing the response on its way out.
-- `exit(code, body...)` prints table bodies as JSON plus a newline and strings as they are,
-- then ends the request with `ngx.exit(code)`; `hold_body_chunk` collects a body_filter's
-- chunks per plugin and hands the whole body over at its end.

local ngx = ngx
local arg = ngx.arg
local ngx_print, ngx_exit, ngx_header = ngx.print, ngx.exit, ngx.header
local add_resp_header = ngx.resp.add_header
local encode_json = require("cjson.safe").encode
local clear_tab = require("table.clear")
local core_table = require("apisix.core.table")
local type, select, pairs, error, tonumber = type, select, pairs, error, tonumber
local concat, sub = table.concat, string.sub

local _M = { version = 0.1 }

-- `exit_insert_callback(func, conf)`: `func(code, body, headers, conf)` may rewrite every
-- `exit` of this request (exit-transformer), returning `code, body, headers`.
function _M.exit_insert_callback(func, conf)
    local ngx_ctx = ngx.ctx
    local list = ngx_ctx.apisix_exit_callback_funcs or {}
    core_table.insert_tail(list, func, conf)
    ngx_ctx.apisix_exit_callback_funcs = list
end

local function mark_source()
    local ctx = ngx.ctx.api_ctx
    if ctx and not ctx._resp_source then
        ctx._resp_source = "apisix"
    end
end

local function print_body(body)
    if type(body) == "table" then
        local encoded, err = encode_json(body)
        if not encoded then
            error("failed to encode data: " .. err, -2)
        end
        ngx_print(encoded, "\n")
    else
        ngx_print(body)
    end
end

local parts = {}

local function resp_exit(code, ...)
    clear_tab(parts)
    local n = 0
    -- A first argument that is not a status is the start of the body.
    if code ~= nil and type(code) ~= "number" then
        n = 1
        parts[1] = code
        code = nil
    end

    local callbacks = ngx.ctx.apisix_exit_callback_funcs
    if callbacks then
        -- Callbacks see the body as given (the first non-nil one).
        local body
        for i = 1, select("#", ...) do
            local v = select(i, ...)
            if v ~= nil then
                body = v
                break
            end
        end
        if body == nil and n > 0 then
            body = parts[1]
        end
        local headers = {}
        for i = 1, #callbacks, 2 do
            code, body, headers = callbacks[i](code, body, headers, callbacks[i + 1])
        end
        if code then
            ngx.status = code
        end
        if headers then
            for k, v in pairs(headers) do
                ngx_header[k] = v
            end
        end
        if body ~= nil then
            print_body(body)
        end
        if code then
            mark_source()
            return ngx_exit(code)
        end
        return
    end

    if code then
        ngx.status = code
    end
    for i = 1, select("#", ...) do
        local v = select(i, ...)
        if type(v) == "table" then
            local encoded, err = encode_json(v)
            if not encoded then
                error("failed to encode data: " .. err, -2)
            end
            parts[n + 1] = encoded
            parts[n + 2] = "\n"
            n = n + 2
        elseif v ~= nil then
            n = n + 1
            parts[n] = v
        end
    end
    if n > 0 then
        ngx_print(parts)
    end
    if code then
        mark_source()
        return ngx_exit(code)
    end
end
_M.exit = resp_exit

-- Prints a body without ending the request.
function _M.say(...)
    resp_exit(nil, ...)
end

local function set_headers(append, ...)
    if ngx.headers_sent then
        error("headers have already been sent", 3)
    end
    local count = select("#", ...)
    if count == 1 then
        local h = ...
        if type(h) ~= "table" then
            ngx_header[h] = nil
            return
        end
        for k, v in pairs(h) do
            if append then
                add_resp_header(k, v)
            else
                ngx_header[k] = v
            end
        end
        return
    end
    for i = 1, count, 2 do
        local k, v = select(i, ...)
        if append then
            add_resp_header(k, v)
        else
            ngx_header[k] = v
        end
    end
end

-- `set_header(name, value, name2, value2, …)` or `set_header({name = value})`.
function _M.set_header(...)
    set_headers(false, ...)
end

function _M.add_header(...)
    set_headers(true, ...)
end

-- The last upstream status as a number ($upstream_status may list several attempts).
function _M.get_upstream_status(ctx)
    return tonumber(sub(ctx.var.upstream_status or "", -3))
end

function _M.set_response_source(ctx, source)
    if ctx then
        ctx._resp_source = source
    end
end

function _M.get_last_upstream_token(s)
    if not s then
        return nil
    end
    local last
    for token in s:gmatch("[^%s,]+") do
        last = token
    end
    return last
end

-- Who produced the response: "apisix" (a plugin answered), "upstream", or "nginx" (the proxy
-- failed before the upstream answered).
function _M.get_response_source(ctx)
    if not ctx then
        return "apisix"
    end
    if ctx._resp_source then
        return ctx._resp_source
    end
    if ngx.var.upstream_status then
        local t = _M.get_last_upstream_token(ngx.var.upstream_header_time)
        if t and t ~= "-" then
            ctx._resp_source = "upstream"
            return "upstream"
        end
        ctx._resp_source = "nginx"
        return "nginx"
    end
    return "apisix"
end

-- A plugin that rewrites the body drops the headers that described the old one.
function _M.clear_header_as_body_modified()
    ngx_header.content_length = nil
    ngx_header.content_encoding = nil
    ngx_header.last_modified = nil
    ngx_header.etag = nil
end

-- In body_filter: collects the chunks under `ctx._plugin_name` (or `buffer_key`) and returns
-- the whole body at the end of the body (nil before). Unless `hold_the_copy`, the chunks are
-- held back from the client meanwhile (`ngx.arg[1] = nil`). With `max_bytes`, the body is
-- returned, cut to that size, as soon as that many bytes arrived, and nothing more after it.
function _M.hold_body_chunk(ctx, hold_the_copy, max_bytes, buffer_key)
    local chunk, eof = arg[1], arg[2]
    local key = buffer_key or ctx._plugin_name
    local buffers = ctx._body_buffer
    if not buffers then
        buffers = {}
        ctx._body_buffer = buffers
    end
    local buf
    if type(chunk) == "string" and chunk ~= "" then
        buf = buffers[key]
        if buf and buf.done then
            return nil
        end
        if not buf then
            buf = { chunk, n = 1, bytes = #chunk }
            buffers[key] = buf
        else
            buf.n = buf.n + 1
            buf[buf.n] = chunk
            buf.bytes = buf.bytes + #chunk
        end
        if max_bytes and buf.bytes >= max_bytes then
            buf.done = true
            return sub(concat(buf, "", 1, buf.n), 1, max_bytes)
        end
    end
    if eof then
        buf = buffers[key]
        if not buf then
            if max_bytes and type(chunk) == "string" and #chunk >= max_bytes then
                chunk = sub(chunk, 1, max_bytes)
            end
            return chunk
        end
        if buf.done then
            return nil
        end
        buffers[key] = nil
        return concat(buf, "", 1, buf.n)
    end
    if not hold_the_copy then
        arg[1] = nil
    end
    return nil
end

return _M
