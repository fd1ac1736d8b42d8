-- moongate's phase runner: calls one phase of a run of Lua plugins of a chain, in the order the
-- Rust side computed (priority, `_meta.disable`, `_meta.filter` already applied), the way
-- APISIX's plugin runner calls them: `phase(conf, ctx)`, with `ctx._plugin_name` set.
-- A Lua error stops the run and is reported with its traceback; in the phases that may answer,
-- a `return code, body` stops it and becomes the answer (a table body as JSON plus a newline).
local mark = ...

local xpcall, traceback, select, type = xpcall, debug.traceback, select, type
local json = require("cjson.safe").new()
-- APISIX's core.json settings: "/" is not escaped, arrays stay arrays.
json.encode_escape_forward_slash(false)

local answers = { rewrite = true, access = true, before_proxy = true }

-- `$env://` / `$secret://` references in a conf: phase functions get a copy with the values
-- in place (as APISIX's plugin filter gives them), made again only when a value changed. A
-- conf with no string starting with `$` is used as it is, without loading apisix.secret.
local pairs, setmetatable, require, byte = pairs, setmetatable, require, string.byte
local plain = setmetatable({}, { __mode = "k" })
local resolved = setmetatable({}, { __mode = "k" })
local secret

local function may_hold_ref(t, seen)
    seen[t] = true
    for _, v in pairs(t) do
        local tv = type(v)
        if tv == "string" then
            if byte(v, 1) == 36 then
                return true
            end
        elseif tv == "table" and not seen[v] and may_hold_ref(v, seen) then
            return true
        end
    end
    return false
end

local function same_values(a, b)
    for k, v in pairs(a) do
        if b[k] ~= v then
            return false
        end
    end
    for k in pairs(b) do
        if a[k] == nil then
            return false
        end
    end
    return true
end

local function conf_of(conf)
    if plain[conf] or type(conf) ~= "table" then
        return conf
    end
    if not may_hold_ref(conf, {}) then
        plain[conf] = true
        return conf
    end
    secret = secret or require("apisix.secret")
    if secret.has_secret_ref(conf) == false then
        plain[conf] = true
        return conf
    end
    local vals = secret.collect_secret_values(conf, true)
    local hit = resolved[conf]
    if hit and same_values(hit.vals, vals) then
        return hit.conf
    end
    local copy = secret.fetch_secrets(conf, true)
    resolved[conf] = { vals = vals, conf = copy }
    return copy
end

-- What APISIX's init sets up once per request and chain: `ngx.ctx.actx` (core.* functions
-- called without ctx find it there) and, for the route's chain, `ctx.plugins` (the flat
-- `{module, conf, ...}` list) and the confs under `ctx.matched_route.value.plugins`.
local function attach(chain, actx)
    local req_ctx = ngx.ctx
    if req_ctx.api_ctx ~= actx then
        req_ctx.api_ctx = actx
        actx.ngx_ctx = req_ctx
    end
    if actx._moongate_chain == chain or actx.conf_type == "global_rule" then
        return
    end
    actx._moongate_chain = chain
    local flat, confs = {}, {}
    for i = 1, #chain do
        local e = chain[i]
        if e then
            flat[#flat + 1] = e.mod
            flat[#flat + 1] = conf_of(e.conf)
            confs[e.name] = e.conf
        end
    end
    actx.plugins = flat
    if actx.matched_route then
        actx.matched_route.value.plugins = confs
    end
end

-- Calls `phase` of entry `i`: nil to go on, or what the run ends with.
local function call(phase, may_answer, chain, i, actx)
    local e = chain[i]
    -- apisix.plugin.skip_plugin(ctx, name) leaves a plugin out for the rest of the request.
    local skip = actx._skip_plugins
    if skip and skip[e.name] then
        return nil
    end
    actx._plugin_name = e.name
    mark(i)
    local ok, code, body = xpcall(e.mod[phase], traceback, conf_of(e.conf), actx)
    if not ok then
        return "error", i, code
    end
    if may_answer and (code or body) then
        local body_type = type(body)
        if body_type == "table" then
            local encoded, err = json.encode(body)
            if not encoded then
                return "error", i, "failed to encode the body of the answer: " .. tostring(err)
            end
            body = encoded .. "\n"
        elseif body ~= nil and body_type ~= "string" then
            body = tostring(body)
        end
        return "answer", i, code, body
    end
    return nil
end

return function(phase, chain, actx, ...)
    local may_answer = answers[phase]
    attach(chain, actx)
    for k = 1, select("#", ...) do
        local kind, i, code, body = call(phase, may_answer, chain, (select(k, ...)), actx)
        if kind then
            return kind, i, code, body
        end
    end
    mark(0)
    return nil
end
