-- apisix.control.router: the control API's dispatcher. Its routes are the `control_api()`
-- routes of the plugins this worker loaded (`{ {methods, uris = {"/v1/..."}, handler}, ... }`)
-- and the built-in ones of apisix.control.v1; a plugin's exact URI wins over a built-in prefix.
-- Plugin URIs match exactly or as `/prefix/*`; with `apisix.control.router:
-- radixtree_uri_with_parameter` in config.yaml, `:name` segments match one path segment too.
-- Handlers answer as a phase does: `code, body` (a table body as JSON). The router is made once
-- per loaded plugin set.

local core = require("apisix.core")
local loaded = require("apisix.plugin")
local builtin = require("apisix.control.v1")
local uri_router = require("moongate.uri_router")

local ipairs, type, pcall = ipairs, type, pcall
local ngx = ngx

local _M = {}

local built = { times = nil, router = nil }

local function add(routes, list, owner)
    for _, route in ipairs(list) do
        if type(route.handler) ~= "function" then
            core.log.error("control API route of ", owner, " has no handler")
        else
            routes[#routes + 1] = { paths = route.uris, methods = route.methods,
                                    handler = uri_router.answering(route.handler) }
        end
    end
end

local function with_parameters()
    local control = core.table.try_read_attr(core.config.local_conf(), "apisix", "control")
    return type(control) == "table" and control.router == "radixtree_uri_with_parameter"
end

local function build()
    local routes = {}
    for _, mod in ipairs(loaded.plugins) do
        if type(mod.control_api) == "function" then
            local ok, list = pcall(mod.control_api)
            if not ok then
                core.log.error("failed to get the control API of plugin ", mod.name, ": ", list)
            elseif type(list) == "table" then
                add(routes, list, "plugin " .. mod.name)
            end
        end
    end
    add(routes, builtin, "apisix.control.v1")
    built = {
        times = loaded.load_times,
        router = uri_router.new(routes, { params = with_parameters() }),
    }
end

--- Runs the control API route for `uri` and the request's method, with `api_ctx`: true when
--- one matched.
function _M.match(uri, api_ctx)
    if built.times ~= loaded.load_times then
        build()
    end
    return built.router:dispatch(uri, ngx.req.get_method(), api_ctx)
end

return _M
