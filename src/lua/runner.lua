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

return function(phase, chain, api_ctx, ...)
    local may_answer = answers[phase]
    for k = 1, select("#", ...) do
        local i = select(k, ...)
        local e = chain[i]
        api_ctx._plugin_name = e.name
        mark(i)
        local ok, code, body = xpcall(e.mod[phase], traceback, e.conf, api_ctx)
        if not ok then
            return "error", i, code
        end
        if may_answer and (code or body) then
            if type(body) == "table" then
                local encoded, err = json.encode(body)
                if not encoded then
                    return "error", i, "failed to encode the body of the answer: " .. tostring(err)
                end
                body = encoded .. "\n"
            elseif body ~= nil and type(body) ~= "string" then
                body = tostring(body)
            end
            return "answer", i, code, body
        end
    end
    mark(0)
    return nil
end
