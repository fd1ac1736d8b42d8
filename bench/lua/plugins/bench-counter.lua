-- Benchmark fixture: a shared-dict counter in access. Counts requests in the `bench-hits` shared
-- dict and returns the count to the client in an X-Hits response header.
local _M = {
    version = 0.1,
    priority = 1000,
    name = "bench-counter",
    schema = { type = "object" },
}

function _M.access(conf, ctx)
    local n, err = ngx.shared["bench-hits"]:incr("hits", 1, 0)
    if not n then
        return 500, { message = "incr failed: " .. tostring(err) }
    end
    ngx.header["X-Hits"] = n
end

return _M
