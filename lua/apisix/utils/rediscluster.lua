-- apisix.utils.rediscluster: the `resty.rediscluster` client the limit-* plugins get for a
-- `policy: redis-cluster` conf. `new(conf, dict_name)` reads the conf fields of
-- apisix.utils.redis-schema (`redis_cluster_nodes` as "host:port" strings,
-- `redis_cluster_name`, `redis_password`, `redis_timeout`, `redis_keepalive_timeout`,
-- `redis_keepalive_pool`, `redis_cluster_ssl`, `redis_cluster_ssl_verify`) and returns the
-- client, or nil and the error.

local core = require("apisix.core")
local rediscluster = require("resty.rediscluster")

local ipairs = ipairs

local _M = { version = 0.1 }

function _M.new(conf, dict_name)
    local nodes = {}
    for i, addr in ipairs(conf.redis_cluster_nodes) do
        local host, port, err = core.utils.parse_addr(addr)
        if err then
            return nil, "failed to parse address: " .. addr .. " err: " .. err
        end
        nodes[i] = { ip = host, port = port }
    end

    local timeout = conf.redis_timeout
    local red, err = rediscluster:new({
        name = conf.redis_cluster_name,
        serv_list = nodes,
        auth = conf.redis_password,
        connect_timeout = timeout,
        send_timeout = timeout,
        read_timeout = timeout,
        keepalive_timeout = conf.redis_keepalive_timeout,
        keepalive_cons = conf.redis_keepalive_pool,
        dict_name = dict_name,
        connect_opts = {
            ssl = conf.redis_cluster_ssl,
            ssl_verify = conf.redis_cluster_ssl_verify,
        },
    })
    if not red then
        return nil, "failed to new redis cluster: " .. err
    end
    return red
end

return _M
