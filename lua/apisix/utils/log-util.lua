-- apisix.utils.log-util: the log entry APISIX's logger plugins send, and the body capture they
-- need for it.
--
-- Entry shapes (what the receiving side of a logger sees, so they follow APISIX):
--   * default (`get_full_log`): request {url, uri, method, headers, querystring, size, body?},
--     response {status, headers, size, body?}, server {hostname, version}, upstream,
--     service_id, route_id, consumer {username}?, client_ip, start_time (ms), latency,
--     upstream_latency, apisix_latency (ms);
--   * custom (`log_format` in the conf, else in the plugin's metadata): each value that starts
--     with `$` is the request variable of that name (`$request_body`: the body read so far),
--     nested tables are formats of their own (down to 5 levels), anything else is copied; then
--     route_id and service_id of the matched route.
-- Loggers call `check_and_read_req_body` in access (so the body is there at log time),
-- `collect_body` in body_filter (keeps the response body in `ctx.resp_body` when asked), and
-- `get_log_entry` in log.

local core = require "apisix.core"
local plugins = require "apisix.plugin"
local decoders = require "apisix.utils.content-decode"

local ngx = ngx
local type, pairs, require, pcall = type, pairs, require, pcall
local sub, byte = string.sub, string.byte
local math_floor = math.floor

local MAX_BODY = 512 * 1024 -- request and response bodies kept for a log, by default
local MAX_FORMAT_DEPTH = 5
local DOLLAR = 36

local logutil = {}

-- lua-resty-expr, loaded when a conf uses an expression (`match`, `include_*_body_expr`).
local function new_expr(rule)
    local ok, expr = pcall(require, "resty.expr.v1")
    if not ok then
        return nil, "resty.expr.v1 is needed for log expressions: " .. tostring(expr)
    end
    return expr.new(rule)
end

-- The request body read so far (moongate keeps bodies in memory), cut at `max` bytes.
local function request_body(max)
    local data = ngx.req.get_body_data()
    if data and max and #data > max then
        return sub(data, 1, max)
    end
    return data
end

-- A log_format table compiled to `{is_var, name_or_value}` leaves.
local function compile_format(format, depth)
    local out = {}
    for k, v in pairs(format) do
        local kind = type(v)
        if kind == "table" then
            if depth >= MAX_FORMAT_DEPTH then
                core.log.warn("log_format nesting exceeds max depth ", MAX_FORMAT_DEPTH,
                              ", truncating")
                out[k] = { false, {} }
            else
                out[k] = { false, compile_format(v, depth + 1) }
            end
        elseif kind == "string" and byte(v, 1) == DOLLAR then
            out[k] = { true, sub(v, 2) }
        else
            out[k] = { false, v }
        end
    end
    return out
end

local formats = core.lrucache.new({ ttl = 300, count = 512 })

local function fill(ctx, compiled, max_body)
    local entry = core.table.new(0, core.table.nkeys(compiled))
    for k, leaf in pairs(compiled) do
        local is_var, what = leaf[1], leaf[2]
        if is_var then
            if what == "request_body" then
                entry[k] = request_body(max_body or MAX_BODY)
            else
                entry[k] = ctx.var[what]
            end
        elseif type(what) == "table" then
            entry[k] = fill(ctx, what, max_body)
        else
            entry[k] = what
        end
    end
    return entry
end

local function custom_format_log(ctx, format, max_body)
    local compiled = formats(format or "", nil, compile_format, format, 1)
    local entry = fill(ctx, compiled, max_body)
    local matched = ctx.matched_route
    if matched and matched.value then
        entry.route_id, entry.service_id = matched.value.id, matched.value.service_id
    end
    return entry
end
logutil.get_custom_format_log = custom_format_log

logutil.inject_get_custom_format_log = function(f)
    custom_format_log = f
    logutil.get_custom_format_log = f
end

-- Total, upstream and gateway time of the request so far, in milliseconds.
logutil.latency_details_in_ms = function(ctx)
    local total = (ngx.now() - ngx.req.start_time()) * 1000
    local up = ctx.var.upstream_response_time
    if not up then
        return total, nil, total
    end
    local upstream_ms = up * 1000
    local gateway_ms = total - upstream_ms
    if gateway_ms < 0 then
        gateway_ms = 0
    end
    return total, upstream_ms, gateway_ms
end

-- Whether the conf's `include_req_body_expr` (compiled once onto the conf) holds.
local function request_body_wanted(conf, ctx)
    if not conf.include_req_body_expr then
        return true
    end
    if conf.request_expr == nil then
        local e, err = new_expr(conf.include_req_body_expr)
        if not e then
            core.log.error("generate request expr err ", err)
            return nil
        end
        conf.request_expr = e
    end
    return conf.request_expr:eval(ctx.var) and true or false
end

local function full_log(ngx_, conf)
    local ctx = ngx_.ctx.api_ctx
    local var = ctx.var
    local route = (ctx.matched_route or {}).value
    local total, upstream_ms, gateway_ms = logutil.latency_details_in_ms(ctx)
    local entry = {
        request = {
            url = var.scheme .. "://" .. var.host .. ":" .. var.server_port .. var.request_uri,
            uri = var.request_uri,
            method = ngx_.req.get_method(),
            headers = ngx_.req.get_headers(),
            querystring = ngx_.req.get_uri_args(),
            size = var.request_length,
        },
        response = {
            status = ngx_.status,
            headers = ngx_.resp.get_headers(),
            size = var.bytes_sent,
        },
        server = { hostname = core.utils.gethostname(), version = core.version.VERSION },
        upstream = var["upstream_addr"],
        service_id = route and (route.service_id or "") or var.host,
        route_id = route and route.id or nil,
        consumer = ctx.consumer and { username = ctx.consumer.username } or nil,
        client_ip = core.request.get_remote_client_ip(ctx),
        start_time = ngx_.req.start_time() * 1000,
        latency = total,
        upstream_latency = upstream_ms,
        apisix_latency = gateway_ms,
    }
    entry.response.body = conf.include_resp_body and ctx.resp_body or nil
    if conf.include_req_body == true then
        local wanted = request_body_wanted(conf, ctx)
        if wanted == nil then
            return entry
        end
        if wanted then
            entry.request.body = request_body(conf.max_req_body_bytes or MAX_BODY)
        end
    end
    return entry
end
logutil.get_full_log = full_log

logutil.inject_get_full_log = function(f)
    full_log = f
    logutil.get_full_log = f
end

-- What AI plugins leave on ctx for the log.
local LLM_FIELDS = { "llm_summary", "llm_request", "llm_response_text" }
local add_extra

local function any_match(rules, ctx)
    for _, rule in pairs(rules) do
        local e, err = new_expr(rule)
        if not e then
            core.log.error("failed to compile the match expression: ", err)
        elseif e:eval(ctx.var) then
            return true
        end
    end
    return false
end

-- The entry for `plugin_name`'s conf on this request, whether it was customized, and the
-- `log_format_extra` fields added to a default entry (nil when none). Nothing when the conf's
-- `match` rules do not hold.
logutil.get_log_entry = function(plugin_name, conf, ctx)
    if conf.match and not any_match(conf.match, ctx) then
        return
    end
    local item = plugins.plugin_metadata(plugin_name)
    local meta = item and item.value
    local meta_format = meta and meta.log_format
    if meta_format and core.table.nkeys(meta_format) == 0 then
        meta_format = nil
    end
    local entry, customized, extra_entry
    if conf.log_format or meta_format then
        entry = custom_format_log(ctx, conf.log_format or meta_format, conf.max_req_body_bytes)
        customized = true
    else
        entry, customized = full_log(ngx, conf), false
        extra_entry = add_extra(entry, conf, meta, ctx)
    end
    for _, k in pairs(LLM_FIELDS) do
        if ctx[k] then
            entry[k] = ctx[k]
        end
    end
    return entry, customized, extra_entry -- (the extra fields: nil for a custom entry)
end

-- `log_format_extra` (the conf's, else the metadata's) added to a default entry without
-- replacing its fields; returns the extra fields alone.
add_extra = function(entry, conf, meta, ctx)
    local extra = conf.log_format_extra
    if extra == nil and meta then
        extra = meta.log_format_extra
    end
    local extra_entry
    if extra and core.table.nkeys(extra) > 0 then
        local filled = custom_format_log(ctx, extra, conf.max_req_body_bytes)
        extra_entry = {}
        for k in pairs(extra) do
            extra_entry[k] = filled[k]
            if entry[k] == nil then
                entry[k] = filled[k]
            end
        end
    end
    return extra_entry
end

-- The request as it came (request line, headers, blank line, and the body when the conf asks
-- for it), for loggers that ship raw requests.
logutil.get_req_original = function(ctx, conf)
    local parts = { ctx.var.request, "\r\n" }
    for name, value in pairs(ngx.req.get_headers()) do
        core.table.insert_tail(parts, name, ": ", value, "\r\n")
    end
    parts[#parts + 1] = "\r\n"
    if conf.include_req_body == true then
        parts[#parts + 1] = request_body(conf.max_req_body_bytes or MAX_BODY)
    end
    return core.table.concat(parts, "")
end

logutil.check_log_schema = function(conf)
    for _, field in pairs({ "include_req_body_expr", "include_resp_body_expr" }) do
        if conf[field] then
            local ok, err = new_expr(conf[field])
            if not ok then
                return nil, "failed to validate the '" .. field .. "' expression: " .. err
            end
        end
    end
    return true, nil
end

-- body_filter: keeps the response body (decoded when compressed) in `ctx.resp_body` when the
-- conf asks for it and its `include_resp_body_expr` holds.
logutil.collect_body = function(conf, ctx)
    if not conf.include_resp_body then
        return
    end
    local rule = conf.include_resp_body_expr
    if rule then
        if conf.response_expr == nil then
            local e, err = new_expr(rule)
            if not e then
                core.log.error("generate response expr err ", err)
                return
            end
            conf.response_expr = e
        end
        -- evaluated once per request, on the first chunk
        local wanted = ctx.res_expr_eval_result
        if wanted == nil then
            wanted = conf.response_expr:eval(ctx.var) and true or false
            ctx.res_expr_eval_result = wanted
        end
        if not wanted then
            return
        end
    end
    local body = core.response.hold_body_chunk(ctx, true, conf.max_resp_body_bytes or MAX_BODY,
                                               conf)
    if not body then
        return
    end
    local encoding = ngx.header["Content-Encoding"]
    if not encoding or ctx.gzip_matched then
        ctx.resp_body = body
        return
    end
    local decode = decoders.dispatch_decoder(encoding)
    if not decode then
        core.log.warn("unsupported compression encoding type: ", encoding)
        ctx.resp_body = body
        return
    end
    local text, err = decode(body)
    if err ~= nil then
        core.log.warn("try decode compressed data err: ", tostring(err))
        ctx.resp_body = body
        return
    end
    ctx.resp_body = text
end

-- `2024-01-02T03:04:05.678Z` for `timestamp` (seconds, default now).
logutil.get_rfc3339_zulu_timestamp = function(timestamp)
    local now = timestamp or ngx.now()
    local secs = math_floor(now)
    local ms = math_floor((now - secs) * 1000)
    return os.date("!%Y-%m-%dT%H:%M:%S.", secs) .. core.string.format("%03dZ", ms)
end

-- access: reads the request body now when the conf will log it.
logutil.check_and_read_req_body = function(conf, ctx)
    if not conf.include_req_body then
        return
    end
    local wanted = request_body_wanted(conf, ctx)
    if wanted then
        ngx.req.read_body()
    end
end

return logutil
