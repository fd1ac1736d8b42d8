-- apisix.utils.redis-schema: the conf fields the limit-* plugins (and ai-cache) accept for
-- their Redis backends, by policy name (`schema.redis`, `schema["redis-cluster"]`), and the
-- limit-conn variants that add `key_ttl`. The field names, bounds and defaults are APISIX's,
-- since confs written for APISIX must check (and default) the same way here.

local core = require("apisix.core")

local function int(min, default)
    return { type = "integer", minimum = min, default = default }
end

local function bool_false()
    return { type = "boolean", default = false }
end

-- Connection-pool and timeout fields both policies share.
local function shared_fields(p)
    p.redis_password = { type = "string", minLength = 0 }
    p.redis_timeout = int(1, 1000)
    p.redis_keepalive_timeout = int(1000, 10000)
    p.redis_keepalive_pool = int(1, 100)
    return p
end

local single = {
    properties = shared_fields({
        redis_host = { type = "string", minLength = 2 },
        redis_port = int(1, 6379),
        redis_username = { type = "string", minLength = 1 },
        redis_database = int(0, 0),
        redis_ssl = bool_false(),
        redis_ssl_verify = bool_false(),
    }),
    required = { "redis_host" },
}

local cluster = {
    properties = shared_fields({
        redis_cluster_nodes = {
            type = "array",
            minItems = 1,
            items = { type = "string", minLength = 2, maxLength = 100 },
        },
        redis_cluster_name = { type = "string" },
        redis_cluster_ssl = bool_false(),
        redis_cluster_ssl_verify = bool_false(),
    }),
    required = { "redis_cluster_nodes", "redis_cluster_name" },
}

-- limit-conn keeps its counters for `key_ttl` seconds.
local function with_key_ttl(s)
    local copy = core.table.deepcopy(s)
    copy.properties.key_ttl = { type = "integer", default = 3600 }
    return copy
end

return {
    schema = { redis = single, ["redis-cluster"] = cluster },
    limit_conn_redis_schema = with_key_ttl(single),
    limit_conn_redis_cluster_schema = with_key_ttl(cluster),
}
