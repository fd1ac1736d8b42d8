-- core.ctx: the `ctx.var` table APISIX plugins read variables from. A read looks, in order, at:
-- the per-request cache; `method`; `cookie` (a resty.cookie object); `cookie_NAME`; `arg_NAME`
-- (first value of the decoded query argument); `post_arg_NAME` (form bodies only);
-- `uri_param_NAME` (router captures in `ctx.curr_req_matched`); `http_NAME` (request header);
-- `graphql_*`; `post_arg.PATH` (a field of the parsed JSON or form body); the APISIX variables
-- kept on `ctx` (route_id, consumer_name, …) and those added with `register_var`; and last
-- `ngx.var`. Values found are cached for the request (except `args`/`is_args` and
-- `no_cacheable` registered ones). Writes go to the cache; for the names below that tell the
-- proxy what to do (`upstream_uri`, `upstream_host`, …) they also set `ngx.var`.

local request = require("apisix.core.request")
local log = require("apisix.core.log")
local tablepool = require("tablepool")
local ngx = ngx
local ngx_var = ngx.var
local get_method = ngx.req.get_method
local type, error, setmetatable, rawget, require = type, error, setmetatable, rawget, require
local sub, lower, gsub, find = string.sub, string.lower, string.gsub, string.find

local _M = {}

-- Cookie parsing for the `cookie` variable comes from resty.cookie, loaded on first use.
local function cookie_object()
    if not ngx_var.http_cookie then
        return nil
    end
    local ok, ck = pcall(require, "resty.cookie")
    if not ok then
        error("ctx.var.cookie needs resty.cookie, which failed to load: " .. tostring(ck), 3)
    end
    return ck:new()
end

local computed = {
    method = get_method,
    cookie = cookie_object,
}

-- Reads that must see later changes (set_uri_args changes `args`).
local not_cached = {
    args = true,
    is_args = true,
}

-- Writes that also change the nginx variable: the plugin-to-proxy channel.
local proxy_vars = {
    upstream_scheme = true,
    upstream_host = true,
    upstream_unresolved_host = true,
    upstream_upgrade = true,
    upstream_connection = true,
    upstream_uri = true,
    request_line = true,
    apisix_request_id = true,
    request_type = true,
    apisix_upstream_response_time = true,
    llm_content_risk_level = true,
    llm_time_to_first_token = true,
    request_llm_model = true,
    llm_model = true,
    llm_prompt_tokens = true,
    llm_completion_tokens = true,
    llm_total_tokens = true,
    llm_stream = true,
    llm_has_tool_calls = true,
    llm_tool_count = true,
    llm_end_user_id = true,
    llm_cache_read_input_tokens = true,
    llm_cache_creation_input_tokens = true,
    llm_reasoning_tokens = true,
    upstream_mirror_host = true,
    upstream_mirror_uri = true,
    upstream_mirror_grpc_path = true,
    upstream_cache_zone = true,
    upstream_cache_zone_info = true,
    upstream_no_cache = true,
    upstream_cache_key = true,
    upstream_cache_bypass = true,
    rate_limiting_info = true,
    original_x_forwarded_for = true,
}

-- APISIX variables held on `ctx` (true: `ctx[name]`) or computed by a getter.
local ctx_vars = {
    balancer_ip = true,
    balancer_port = true,
    consumer_group_id = true,
    consumer_name = true,
    resp_body = function(ctx)
        return ctx.resp_body or ""
    end,
    route_id = true,
    route_name = true,
    service_id = true,
    service_name = true,
    upstream_unresolved_host = true,
}

local function first(v)
    if type(v) == "table" then
        return v[1]
    end
    return v
end

local function has_prefix(s, p)
    return sub(s, 1, #p) == p
end

-- `post_arg.a.b`: a field of the parsed body; JSONPath forms are not supported.
local function body_field(ctx, path)
    if find(path, "[%[%*]") or find(path, "..", 1, true) then
        error("ctx.var.post_arg." .. path .. ": JSONPath expressions are not supported by moongate yet", 3)
    end
    local body, err = request.get_request_body_table(ctx, nil, nil)
    if not body then
        log.warn("failed to fetch post args value by key: ", path, " error: ", err)
        return nil
    end
    local cur = body
    for part in (path .. "."):gmatch("(.-)%.") do
        if type(cur) ~= "table" then
            return nil
        end
        cur = cur[part]
    end
    return cur
end

local function lookup(t, key)
    local ctx = rawget(t, "_ctx")
    local method = computed[key]
    if method then
        return method()
    end
    if has_prefix(key, "cookie_") then
        return ngx_var[key]
    end
    if has_prefix(key, "arg_") then
        return first(request.get_uri_args(ctx)[sub(key, 5)])
    end
    if has_prefix(key, "post_arg_") then
        local ct = request.header(ctx, "Content-Type")
        if ct and has_prefix(ct, "application/x-www-form-urlencoded") then
            return first(request.get_post_args(ctx)[sub(key, 10)])
        end
        return nil
    end
    if has_prefix(key, "uri_param_") then
        local m = ctx and ctx.curr_req_matched
        return m and m[sub(key, 11)]
    end
    if has_prefix(key, "http_") then
        return ngx_var[gsub(lower(key), "-", "_")]
    end
    if has_prefix(key, "graphql_") then
        error("ctx.var." .. key .. ": GraphQL request parsing is not supported by moongate yet", 3)
    end
    if has_prefix(key, "post_arg.") then
        return body_field(ctx, sub(key, 10))
    end
    local getter = ctx_vars[key]
    if getter == true then
        return ctx and ctx[key]
    elseif getter then
        return getter(ctx)
    end
    return ngx_var[key]
end

local var_mt = {
    __index = function(t, key)
        local cache = rawget(t, "_cache")
        local v = cache[key]
        if v ~= nil then
            return v
        end
        if type(key) ~= "string" then
            error("invalid argument, expect string value", 2)
        end
        v = lookup(t, key)
        if v ~= nil and not not_cached[key] then
            cache[key] = v
        end
        return v
    end,
    __newindex = function(t, key, val)
        if proxy_vars[key] then
            ngx_var[key] = val
        end
        rawget(t, "_cache")[key] = val
    end,
}

-- `register_var(name, getter(ctx), {no_cacheable = true})`: a variable computed by a plugin.
function _M.register_var(name, getter, opts)
    if type(getter) ~= "function" then
        error("the getter of registered var should be a function")
    end
    ctx_vars[name] = getter
    if opts and opts.no_cacheable then
        not_cached[name] = true
    end
end

-- Gives `ctx` its `var` table.
function _M.set_vars_meta(ctx)
    local var = tablepool.fetch("ctx_var", 0, 32)
    if not rawget(var, "_cache") then
        var._cache = {}
    end
    var._ctx = ctx
    setmetatable(var, var_mt)
    ctx.var = var
end

-- Returns `ctx.var` to the pool once the request is done with it.
function _M.release_vars(ctx)
    local var = ctx.var
    if var == nil then
        return
    end
    require("table.clear")(rawget(var, "_cache"))
    var._ctx = nil
    setmetatable(var, nil)
    tablepool.release("ctx_var", var, true)
    ctx.var = nil
end

return _M
