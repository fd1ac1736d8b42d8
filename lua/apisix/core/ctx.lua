-- core.ctx: the `ctx.var` table APISIX plugins read request variables from.
--
-- A read of `ctx.var.NAME` tries, in this order: the request's cache; `method`; `cookie` (a
-- resty.cookie object); `cookie_NAME`; `arg_NAME` (first value of the decoded query argument);
-- `post_arg_NAME` (form bodies only); `uri_param_NAME` (router captures in
-- `ctx.curr_req_matched`); `http_NAME` (request header); `graphql_*`; `post_arg.PATH` (a field
-- of the parsed JSON or form body); the APISIX variables kept on `ctx` (route_id,
-- consumer_name, …) and the ones plugins add with `register_var`; last `ngx.var`. What is found
-- is cached for the request, except `args`, `is_args` and variables registered `no_cacheable`.
-- A write lands in the cache; for the variables through which plugins steer the proxy
-- (`upstream_uri`, `upstream_host`, …) it also sets `ngx.var`.

local ngx = ngx
local type, error, setmetatable, rawget, require, pcall, tostring =
    type, error, setmetatable, rawget, require, pcall, tostring
local ssub, slower, sgsub, sfind = string.sub, string.lower, string.gsub, string.find

local creq = require("apisix.core.request")
local clog = require("apisix.core.log")
local pool = require("tablepool")
local clear_tab = require("table.clear")

local POOL_NAME = "ctx_var"

local ctxmod = {}

local function name_set(words)
    local set = {}
    for w in words:gmatch("%S+") do
        set[w] = true
    end
    return set
end

-- Variables that must be read afresh each time (set_uri_args changes `args`).
local uncached = name_set("args is_args")

-- Writing one of these also writes the nginx variable: how plugins tell the proxy what to do.
local steering = name_set([[
    upstream_scheme upstream_host upstream_unresolved_host upstream_upgrade upstream_connection
    upstream_uri request_line apisix_request_id request_type apisix_upstream_response_time
    upstream_mirror_host upstream_mirror_uri upstream_mirror_grpc_path
    upstream_cache_zone upstream_cache_zone_info upstream_no_cache upstream_cache_key
    upstream_cache_bypass rate_limiting_info original_x_forwarded_for
    request_llm_model llm_model llm_content_risk_level llm_time_to_first_token
    llm_prompt_tokens llm_completion_tokens llm_total_tokens llm_stream llm_has_tool_calls
    llm_tool_count llm_end_user_id llm_cache_read_input_tokens
    llm_cache_creation_input_tokens llm_reasoning_tokens
]])

-- APISIX variables answered from `ctx`: `true` reads `ctx[name]`, a function computes the
-- value from ctx. register_var adds to this table.
local from_ctx = name_set([[
    balancer_ip balancer_port consumer_group_id consumer_name route_id route_name
    service_id service_name upstream_unresolved_host
]])
from_ctx.resp_body = function(c)
    return c.resp_body or ""
end

local function first_value(v)
    if type(v) == "table" then
        return v[1]
    end
    return v
end

-- The `cookie` variable: a resty.cookie reader (loaded on first use), nil without a Cookie.
local function cookie_reader()
    if ngx.var.http_cookie == nil then
        return nil
    end
    local loaded, lib = pcall(require, "resty.cookie")
    if not loaded then
        error("ctx.var.cookie needs resty.cookie, which failed to load: " .. tostring(lib), 4)
    end
    return lib:new()
end

-- `post_arg.a.b`: walks the parsed body. JSONPath syntax is refused rather than misread.
local function body_path(c, path)
    if sfind(path, "[%[%*]") or sfind(path, "..", 1, true) then
        error("ctx.var.post_arg." .. path .. ": JSONPath expressions are not supported by moongate yet", 5)
    end
    local doc, why = creq.get_request_body_table(c, nil, nil)
    if not doc then
        clog.warn("failed to fetch post args value by key: ", path, " error: ", why)
        return nil
    end
    local node = doc
    for step in (path .. "."):gmatch("(.-)%.") do
        if type(node) ~= "table" then
            return nil
        end
        node = node[step]
    end
    return node
end

-- Whole names answered by a function of ctx.
local exact = {
    method = function()
        return ngx.req.get_method()
    end,
    cookie = cookie_reader,
    -- As APISIX's access phase sets them: `request_uri` is rebuilt from the normalised path
    -- (so `/./a` cannot slip past a check on `/a`), `real_request_uri` is the client's text.
    -- Computed on first read rather than per request; a plugin that rewrites the uri before
    -- reading `request_uri` sees the rewritten path.
    request_uri = function()
        local var = ngx.var
        local args = var.args
        if args == nil or args == "" then
            return var.uri
        end
        return var.uri .. "?" .. args
    end,
    real_request_uri = function()
        return ngx.var.request_uri
    end,
}

-- Prefix families, tried in order; each gets ctx, the full name and the part after the prefix.
-- (Calls below are not tail calls, so the error levels above point at the plugin's line.)
local families = {
    { "cookie_", function(_, name)
        return ngx.var[name]
    end },
    { "arg_", function(c, _, rest)
        return first_value(creq.get_uri_args(c)[rest])
    end },
    { "post_arg_", function(c, _, rest)
        local ctype = creq.header(c, "Content-Type")
        if ctype and ssub(ctype, 1, 33) == "application/x-www-form-urlencoded" then
            return first_value(creq.get_post_args(c)[rest])
        end
        return nil
    end },
    { "uri_param_", function(c, _, rest)
        local captures = c and c.curr_req_matched
        return captures and captures[rest]
    end },
    { "http_", function(_, name)
        return ngx.var[sgsub(slower(name), "-", "_")]
    end },
    { "graphql_", function(_, name)
        error("ctx.var." .. name .. ": GraphQL request parsing is not supported by moongate yet", 4)
    end },
    { "post_arg.", function(c, _, rest)
        local field = body_path(c, rest)
        return field
    end },
}

local function resolve(c, name)
    local direct = exact[name]
    if direct then
        local v = direct()
        return v
    end
    for i = 1, #families do
        local prefix = families[i][1]
        if ssub(name, 1, #prefix) == prefix then
            local v = families[i][2](c, name, ssub(name, #prefix + 1))
            return v
        end
    end
    local held = from_ctx[name]
    if held == true then
        return c and c[name]
    end
    if held then
        return held(c)
    end
    return ngx.var[name]
end

local var_meta = {}

function var_meta.__index(vars, name)
    local cache = rawget(vars, "_cache")
    local hit = cache[name]
    if hit ~= nil then
        return hit
    end
    if type(name) ~= "string" then
        error("invalid argument, expect string value", 2)
    end
    local found = resolve(rawget(vars, "_ctx"), name)
    if found ~= nil and not uncached[name] then
        cache[name] = found
    end
    return found
end

function var_meta.__newindex(vars, name, value)
    if steering[name] then
        ngx.var[name] = value
    end
    local cache = rawget(vars, "_cache")
    -- Lua inserts a key even when nil is assigned to it: forgetting a variable that was never
    -- cached (what core.request.set_header does) would grow the cache on every request.
    if value ~= nil or cache[name] ~= nil then
        cache[name] = value
    end
end

-- `register_var(name, getter(ctx), {no_cacheable = true})`: a variable a plugin computes.
function ctxmod.register_var(name, getter, opts)
    if type(getter) ~= "function" then
        error("the getter of registered var should be a function")
    end
    from_ctx[name] = getter
    if opts and opts.no_cacheable then
        uncached[name] = true
    end
end

-- Gives `ctx` its `var` table (taken from a pool; release_vars gives it back).
function ctxmod.set_vars_meta(ctx)
    local vars = pool.fetch(POOL_NAME, 0, 32)
    if rawget(vars, "_cache") == nil then
        vars._cache = {}
    end
    vars._ctx = ctx
    ctx.var = setmetatable(vars, var_meta)
end

function ctxmod.release_vars(ctx)
    local vars = ctx.var
    if vars == nil then
        return
    end
    clear_tab(rawget(vars, "_cache"))
    vars._ctx = nil
    setmetatable(vars, nil)
    pool.release(POOL_NAME, vars, true)
    ctx.var = nil
end

return ctxmod
