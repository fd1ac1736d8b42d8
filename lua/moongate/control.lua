-- moongate.control: the content handler of every control API request (src/proxy/control.rs),
-- what APISIX's `apisix.http_control()` is to its control server. The request gets the `ctx`
-- plugins know (`ngx.ctx.api_ctx`, `ctx.var`), so control handlers may use core.request and
-- core.response as in any phase; a path no route takes answers 404.

local vars = require("apisix.core.ctx")
local router = require("apisix.control.router")
local ngx = ngx

local _M = {}

function _M.serve()
    local ctx = {}
    vars.set_vars_meta(ctx)
    local per_request = ngx.ctx
    per_request.api_ctx, ctx.ngx_ctx = ctx, per_request
    if not router.match(ngx.var.uri, ctx) then
        ngx.exit(404)
    end
end

return _M
