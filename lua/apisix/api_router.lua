-- apisix.api_router: the HTTP APIs plugins declare with `api()` ("plugin interceptors"), reached
-- through a route that carries the `public-api` plugin, which calls `match(ctx)` after setting
-- `ctx.var.uri` (`require("apisix.router").api` is this module in APISIX).
--
-- `api()` returns `{ {methods = {"GET", ...}, uri = "/apisix/..." or {...}, handler = fn}, ... }`.
-- `match(ctx)` finds the route of an enabled plugin this worker loaded for `ctx.var.uri` (the
-- exact path, or a prefix written `/path/*`) and `ctx.var.request_method`, runs its handler with
-- `ctx` in the current request, and answers what the handler returns as a phase return is
-- answered: `code, body` ends the request (a table body as JSON, labelled
-- `application/json` unless the handler set a Content-Type). It returns true when a route
-- matched, false otherwise. The table of routes is made once per loaded plugin set.

local core = require("apisix.core")
local loaded = require("apisix.plugin")
local uri_router = require("moongate.uri_router")

local type, ipairs, pcall = type, ipairs, pcall

local _M = {}

-- (apisix.plugin's load_times when built, the router, whether a uri is outside /apisix/)
local built = { times = nil, router = nil, outside = nil }

local function outside_apisix(uri)
    return type(uri) == "string" and not core.string.has_prefix(uri, "/apisix/")
end

local function build()
    local routes = {}
    local outside = false
    for _, mod in ipairs(loaded.plugins) do
        if type(mod.api) == "function" then
            local ok, list = pcall(mod.api)
            if not ok then
                core.log.error("failed to get the api routes of plugin ", mod.name, ": ", list)
            elseif type(list) == "table" then
                for _, route in ipairs(list) do
                    local given = route.uri
                    if not given then
                        -- as APISIX: the rest of that plugin's list is dropped
                        core.log.error("got nil uri in api route of plugin ", mod.name)
                        break
                    end
                    local paths = type(given) == "table" and given or { given }
                    for i = 1, #paths do
                        outside = outside or outside_apisix(paths[i])
                    end
                    routes[#routes + 1] = { paths = paths, methods = route.methods,
                                            handler = uri_router.answering(route.handler) }
                end
            end
        end
    end
    built = { times = loaded.load_times, router = uri_router.new(routes), outside = outside }
end

local function current()
    if built.times ~= loaded.load_times then
        build()
    end
    return built
end

--- Runs the plugin API for `ctx.var.uri` and its method: true when one matched.
function _M.match(ctx)
    local var = ctx.var
    return current().router:dispatch(var.uri, var.request_method, ctx)
end

--- True when a plugin declares an API outside `/apisix/`.
function _M.has_route_not_under_apisix()
    return current().outside
end

return _M
