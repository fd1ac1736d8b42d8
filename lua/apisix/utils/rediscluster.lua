-- apisix.utils.rediscluster: the `resty.rediscluster` client the limit-* plugins get for a
-- `policy: redis-cluster` conf. `new(conf, dict_name)` reads the conf fields of
-- apisix.utils.redis-schema (`redis_cluster_nodes` as "host:port" strings,
-- `redis_cluster_name`, `redis_password`, `redis_timeout`, `redis_keepalive_timeout`,
-- `redis_keepalive_pool`, `redis_cluster_ssl`, `redis_cluster_ssl_verify`) and returns the
-- client, or nil and the error.

local parse_addr = require("apisix.core").utils.parse_addr
local cluster = require("resty.rediscluster")

local ipairs = ipairs

-- "host:port" strings as the {ip, port} list the client takes.
local function servers(addrs)
    local list = {}
    for _, addr in ipairs(addrs) do
        local ip, port = parse_addr(addr)
        if not port then
            return nil, "failed to parse address: " .. addr .. " err: no port"
        end
        list[#list + 1] = { ip = ip, port = port }
    end
    return list
end

local function new(conf, dict_name)
    local list, perr = servers(conf.redis_cluster_nodes)
    if not list then
        return nil, perr
    end

    local ms = conf.redis_timeout
    local cfg = { serv_list = list, dict_name = dict_name }
    cfg.name = conf.redis_cluster_name
    cfg.auth = conf.redis_password
    cfg.connect_timeout, cfg.send_timeout, cfg.read_timeout = ms, ms, ms
    cfg.keepalive_timeout = conf.redis_keepalive_timeout
    cfg.keepalive_cons = conf.redis_keepalive_pool
    cfg.connect_opts = { ssl = conf.redis_cluster_ssl, ssl_verify = conf.redis_cluster_ssl_verify }

    local client, err = cluster:new(cfg)
    if client then
        return client
    end
    return nil, "failed to new redis cluster: " .. tostring(err)
end

return { version = 0.1, new = new }
