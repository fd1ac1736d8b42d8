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

-- What APISIX's init sets up once per request and chain: `ngx.ctx.api_ctx` (core.* functions
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
            flat[#flat + 1] = e.conf
            confs[e.name] = e.conf
        end
    end
    actx.plugins = flat
    if actx.matched_route then
        actx.matched_route.value.plugins = confs
    end
end

return function(phase, chain, actx, ...)
    local may_answer = answers[phase]
    attach(chain, actx)
    for k = 1, select("#", ...) do
        local i = select(k, ...)
        local e = chain[i]
        actx._plugin_name = e.name
        mark(i)
        local ok, code, body = xpcall(e.mod[phase], traceback, e.conf, actx)
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
    end
    mark(0)
    return nil
end
