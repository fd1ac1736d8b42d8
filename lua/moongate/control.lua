-- moongate.control: the content handler of every control API request (src/proxy/control.rs),
-- what APISIX's `apisix.http_control()` is to its control server. The request gets the `ctx`
-- plugins know (`ngx.ctx.api_ctx`, `ctx.var`), so control handlers may use core.request and
-- core.response as in any phase; a path no route takes answers 404.

local core = require("apisix.core")
local router = require("apisix.control.router")
local ngx = ngx

local _M = {}

function _M.serve()
    local api_ctx = {}
    core.ctx.set_vars_meta(api_ctx)
    ngx.ctx.api_ctx = api_ctx
    api_ctx.ngx_ctx = ngx.ctx
    if not router.match(ngx.var.uri, api_ctx) then
        ngx.exit(404)
    end
end

return _M
