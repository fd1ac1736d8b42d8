-- Benchmark contender for the key-auth scenario: the check APISIX's key-auth plugin makes,
-- written directly for nginx + lua-nginx-module (access_by_lua_block). The `apikey` request
-- header (or `apikey` query argument) is looked up among the consumers' keys; a request without
-- a known key gets 401 with a WWW-Authenticate challenge and a JSON message; a known one goes
-- upstream with the consumer's name in X-Consumer-Username.
local ngx = ngx
local get_headers, get_uri_args, set_header = ngx.req.get_headers, ngx.req.get_uri_args, ngx.req.set_header

local _M = {}
local mt = { __index = _M }

-- consumers: a list of { username = ..., key = ... }.
function _M.new(consumers)
    local by_key = {}
    for _, c in ipairs(consumers) do
        by_key[c.key] = c
    end
    return setmetatable({ by_key = by_key }, mt)
end

local function refuse(message)
    ngx.header["WWW-Authenticate"] = 'apikey realm="key"'
    ngx.status = 401
    ngx.say('{"message":"' .. message .. '"}')
    return ngx.exit(401)
end

function _M.access(self)
    local key = get_headers()["apikey"]
    if not key then
        key = get_uri_args()["apikey"]
    end
    if not key then
        return refuse("Missing API key in request")
    end
    local consumer = self.by_key[key]
    if not consumer then
        return refuse("Invalid API key in request")
    end
    ngx.ctx.consumer = consumer
    set_header("X-Consumer-Username", consumer.username)
end

return _M
