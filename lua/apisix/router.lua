-- apisix.router, the read side plugins use: `http_routes()` and `ssls()` give the running
-- config's items (`{key, value, modifiedIndex}`) and its version; `api` is apisix.api_router
-- (public-api dispatches plugin `api()` endpoints through it). Routing itself is the Rust
-- router's: `router_http` (ai rewrites its matching) raises an error naming it. There is no
-- stream proxy: `stream_routes()` is nil.

local docs = require "moongate.config_doc"
local error, setmetatable, rawset, require = error, setmetatable, rawset, require

local router = {}

router.http_routes = function()
    return docs.items("routes")
end

router.ssls = function()
    return docs.items("ssls")
end

router.stream_routes = function()
    return nil, nil
end

router.http_init_worker = function() end
router.stream_init_worker = function() end

local function refused(name)
    return setmetatable({}, {
        __index = function(_, member)
            error("apisix.router." .. name .. " is not supported by moongate: the Rust router "
                  .. "matches routes (apisix.router." .. name .. "." .. tostring(member) .. ")", 2)
        end,
    })
end

router.router_http = refused("router_http")

-- Loaded on first use, as APISIX loads it when the HTTP router starts.
setmetatable(router, {
    __index = function(self, key)
        if key == "api" then
            local api = require("apisix.api_router")
            rawset(self, key, api)
            return api
        end
    end,
})

return router
