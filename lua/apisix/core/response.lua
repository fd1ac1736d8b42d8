-- core.response: a plugin answering the client itself, and changing the response on its way out.
--
-- `exit(code, body...)`: table bodies go out as JSON followed by a newline, strings as they are;
-- the request then ends with `ngx.exit(code)`. Callbacks registered for the request
-- (`exit_insert_callback`, used by exit-transformer) may rewrite code, body and headers first.
-- `hold_body_chunk` gathers the chunks a body_filter sees, one buffer per plugin.

local ngx = ngx
local type, select, pairs, error, tonumber = type, select, pairs, error, tonumber
local tconcat, ssub = table.concat, string.sub

local safe_json = require("cjson.safe")
local wipe = require("table.clear")
local ctab = require("apisix.core.table")

local response = { version = 0.1 }

------------------------------------------------------------------------------------------------
-- Answering

-- Adds `fn(code, body, headers, conf)` to the callbacks every later `exit` of this request runs.
function response.exit_insert_callback(fn, conf)
    local rctx = ngx.ctx
    local chain = rctx.apisix_exit_callback_funcs
    if chain == nil then
        chain = {}
        rctx.apisix_exit_callback_funcs = chain
    end
    ctab.insert_tail(chain, fn, conf)
end

local function json_text(value)
    local text, why = safe_json.encode(value)
    if text == nil then
        error("failed to encode data: " .. why, 0)
    end
    return text
end

-- A plugin answered: the response source is "apisix" unless something set it already.
local function answered_by_gateway()
    local actx = ngx.ctx.api_ctx
    if actx and actx._resp_source == nil then
        actx._resp_source = "apisix"
    end
end

local function finish(code)
    if code then
        answered_by_gateway()
        return ngx.exit(code)
    end
end

-- Reused between calls: exit is on the hot path of every plugin that refuses a request.
local out = {}

-- Appends one body argument to `out` (whose fill is `n`), returning the new fill.
local function push_piece(n, piece)
    if type(piece) == "table" then
        out[n + 1] = json_text(piece)
        out[n + 2] = "\n"
        return n + 2
    end
    if piece ~= nil then
        out[n + 1] = piece
        return n + 1
    end
    return n
end

-- The exit path when callbacks are registered: they see one body (the first non-nil argument,
-- else a body given in the status position) and may replace code, body and headers.
local function exit_through_callbacks(chain, code, lead, ...)
    local body
    for i = 1, select("#", ...) do
        local candidate = select(i, ...)
        if candidate ~= nil then
            body = candidate
            break
        end
    end
    if body == nil then
        body = lead
    end

    local headers = {}
    for i = 1, #chain, 2 do
        code, body, headers = chain[i](code, body, headers, chain[i + 1])
    end

    if code then
        ngx.status = code
    end
    for name, value in pairs(headers or {}) do
        ngx.header[name] = value
    end
    if type(body) == "table" then
        ngx.print(json_text(body), "\n")
    elseif body ~= nil then
        ngx.print(body)
    end
    return finish(code)
end

function response.exit(code, ...)
    -- Anything but a number in the first place is already body.
    local lead
    if code ~= nil and type(code) ~= "number" then
        lead, code = code, nil
    end

    local chain = ngx.ctx.apisix_exit_callback_funcs
    if chain then
        return exit_through_callbacks(chain, code, lead, ...)
    end

    if code then
        ngx.status = code
    end
    wipe(out)
    local n = push_piece(0, lead)
    for i = 1, select("#", ...) do
        n = push_piece(n, (select(i, ...)))
    end
    if n > 0 then
        ngx.print(out)
    end
    return finish(code)
end

-- Prints body pieces as `exit` does, without a status and without ending the request.
function response.say(...)
    return response.exit(nil, ...)
end

------------------------------------------------------------------------------------------------
-- Response headers

local function put_header(name, value)
    ngx.header[name] = value
end

local function append_header(name, value)
    ngx.resp.add_header(name, value)
end

-- Accepts `(name, value, name2, value2, …)`, `({name = value, …})`, or `(name)` to remove one.
local function write_headers(writer, ...)
    if ngx.headers_sent then
        error("headers have already been sent", 3)
    end
    local argc = select("#", ...)
    if argc == 1 then
        local only = ...
        if type(only) == "table" then
            for name, value in pairs(only) do
                writer(name, value)
            end
        else
            ngx.header[only] = nil
        end
        return
    end
    for i = 1, argc, 2 do
        writer(select(i, ...))
    end
end

function response.set_header(...)
    write_headers(put_header, ...)
end

function response.add_header(...)
    write_headers(append_header, ...)
end

-- A plugin that rewrites the body drops the headers that described the old one.
function response.clear_header_as_body_modified()
    local h = ngx.header
    h.content_length = nil
    h.content_encoding = nil
    h.last_modified = nil
    h.etag = nil
end

------------------------------------------------------------------------------------------------
-- Where the response came from

-- `$upstream_status` lists one status per attempt ("502, 200"); the last one is the answer.
function response.get_upstream_status(ctx)
    local statuses = ctx.var.upstream_status or ""
    return tonumber(ssub(statuses, -3))
end

function response.get_last_upstream_token(list)
    if list == nil then
        return nil
    end
    local last
    for token in list:gmatch("[^%s,]+") do
        last = token
    end
    return last
end

function response.set_response_source(ctx, source)
    if ctx then
        ctx._resp_source = source
    end
end

-- "apisix" (a plugin answered), "upstream" (a response head came back) or "nginx" (proxying
-- failed before one did). Decided once per request.
function response.get_response_source(ctx)
    if ctx == nil then
        return "apisix"
    end
    local known = ctx._resp_source
    if known then
        return known
    end
    if ngx.var.upstream_status == nil then
        return "apisix"
    end
    local head_time = response.get_last_upstream_token(ngx.var.upstream_header_time)
    local source = (head_time and head_time ~= "-") and "upstream" or "nginx"
    ctx._resp_source = source
    return source
end

------------------------------------------------------------------------------------------------
-- Buffering the body in body_filter

-- Collects the body for one plugin (`ctx._plugin_name`, or `buffer_key`). Returns nil until the
-- last chunk, then the whole body. Unless `hold_the_copy`, each chunk is withheld from the client
-- (`ngx.arg[1] = nil`) while buffering. With `max_bytes`, the first `max_bytes` bytes are
-- returned as soon as they arrived, and nil for every chunk after that.
function response.hold_body_chunk(ctx, hold_the_copy, max_bytes, buffer_key)
    local piece, last = ngx.arg[1], ngx.arg[2]
    local slot = buffer_key or ctx._plugin_name

    local piles = ctx._body_buffer
    if piles == nil then
        piles = {}
        ctx._body_buffer = piles
    end

    if type(piece) == "string" and #piece > 0 then
        local pile = piles[slot]
        if pile == nil then
            pile = { n = 0, bytes = 0 }
            piles[slot] = pile
        elseif pile.done then
            return nil
        end
        pile.n = pile.n + 1
        pile[pile.n] = piece
        pile.bytes = pile.bytes + #piece
        if max_bytes and pile.bytes >= max_bytes then
            pile.done = true
            return ssub(tconcat(pile, "", 1, pile.n), 1, max_bytes)
        end
    end

    if last then
        local pile = piles[slot]
        if pile == nil then
            -- Nothing was buffered: the (empty) last chunk is the body.
            return piece
        end
        if pile.done then
            return nil
        end
        piles[slot] = nil
        return tconcat(pile, "", 1, pile.n)
    end

    if not hold_the_copy then
        ngx.arg[1] = nil
    end
    return nil
end

return response
