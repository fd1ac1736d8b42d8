-- Benchmark fixture: a key check in rewrite. Answers 401 unless the request's `apikey` header
-- equals conf.key. Plain APISIX plugin contract; bench/bench.py loads it unchanged into moongate
-- (as a route plugin) and into nginx + lua-nginx-module (called from access_by_lua_block).
local _M = {
    version = 0.1,
    priority = 2500,
    name = "bench-key-check",
    schema = {
        type = "object",
        properties = { key = { type = "string" } },
        required = { "key" },
    },
}

function _M.check_schema(conf)
    if type(conf.key) ~= "string" then
        return false, "key must be a string"
    end
    return true
end

function _M.rewrite(conf, ctx)
    local key = ngx.req.get_headers()["apikey"]
    if key ~= conf.key then
        return 401, { message = "missing or bad key" }
    end
end

return _M
