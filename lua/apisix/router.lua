-- apisix.router, the read side plugins use: `http_routes()` and `ssls()` give the running
-- config's items (`{key, value, modifiedIndex}`) and its version. Routing itself is the Rust
-- router's: `router_http` (ai rewrites its matching) and `api` (public-api dispatching plugin
-- `api()` endpoints) raise an error naming them. There is no stream proxy:
-- `stream_routes()` is nil.

local docs = require("moongate.config_doc")
local error, setmetatable = error, setmetatable

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
_M.api = refused("api")

return _M
