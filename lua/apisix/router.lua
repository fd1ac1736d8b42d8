-- apisix.router, the read side plugins use: `http_routes()` and `ssls()` give the running
-- config's items (`{key, value, modifiedIndex}`) and its version; `api` is apisix.api_router
-- (public-api dispatches plugin `api()` endpoints through it). Routing itself is the Rust
-- router's: `router_http` (ai rewrites its matching) raises an error naming it. There is no
-- stream proxy: `stream_routes()` is nil.

local docs = require("moongate.config_doc")
local error, setmetatable, rawset, require = error, setmetatable, rawset, require

local _M = {}

function _M.http_routes()
    return docs.items("routes")
end

function _M.ssls()
    return docs.items("ssls")
end

function _M.stream_routes()
    return nil, nil
end

function _M.http_init_worker() end
function _M.stream_init_worker() end

local function refused(name)
    return setmetatable({}, {
        __index = function(_, k)
            error("apisix.router." .. name .. " is not supported by moongate: the Rust router "
                  .. "matches routes (apisix.router." .. name .. "." .. tostring(k) .. ")", 2)
        end,
    })
end

_M.router_http = refused("router_http")

-- Loaded on first use, as APISIX loads it when the HTTP router starts.
setmetatable(_M, {
    __index = function(t, k)
        if k == "api" then
            local api = require("apisix.api_router")
            rawset(t, "api", api)
            return api
        end
    end,
})

return _M
