-- apisix.upstream, the part plugins use: choose where a request goes (`set`, as traffic-split
-- and example-plugin do), check an upstream conf (`check_schema`), read configured upstreams
-- (`get_by_id`, `upstreams`), and `set_scheme`.
--
-- `set(ctx, key, version, conf)` records the conf on ctx as APISIX does (`ctx.upstream_conf`,
-- `ctx.upstream_key`, `ctx.upstream_version`) and hands it to the proxy: the request goes to
-- that upstream instead of the route's. The conf is compiled once per key and version on each
-- worker; later requests with the same key and version reuse it (so the balancer keeps its
-- state across them). A plugin may instead set `ctx.upstream_id` to the id of a configured
-- upstream: the proxy reads it when the upstream is picked.

local core = require "apisix.core"
local docs = require "moongate.config_doc"
local native = require "moongate.upstream"

local type, pairs, ipairs, error, tostring, tonumber = type, pairs, ipairs, error, tostring, tonumber
local byte, find = string.byte, string.find

local upstream = {}

-- The fields of an upstream conf the proxy reads; anything else a plugin hangs on the conf
-- (traffic-split's `parent`, `vid`) stays on the Lua side.
local FIELDS = {
    "type", "hash_on", "key", "retries", "retry_timeout", "timeout", "scheme", "pass_host",
    "upstream_host", "keepalive_pool", "name", "desc", "checks", "discovery_type",
    "service_name", "tls",
}

-- A node as the proxy takes it. A name stays a name: the proxy resolves it, without blocking
-- the worker, when a request picks the node (and sends it as the Host of `pass_host: node`).
local function plain_node(host, port, weight, priority)
    if type(host) ~= "string" or host == "" then
        return nil, "a node needs a host"
    end
    return { host = host, port = tonumber(port), weight = tonumber(weight) or 1,
             priority = tonumber(priority) or 0 }
end

local function proxy_conf(conf)
    local out = {}
    for _, k in ipairs(FIELDS) do
        if conf[k] ~= nil then
            out[k] = conf[k]
        end
    end
    local nodes = setmetatable({}, core.json.array_mt)
    local list = conf.nodes
    if type(list) ~= "table" then
        return nil, "the upstream has no nodes"
    end
    if core.table.isarray(list) then
        for _, n in ipairs(list) do
            local node, err = plain_node(n.host, n.port, n.weight, n.priority)
            if not node then
                return nil, err
            end
            nodes[#nodes + 1] = node
        end
    else
        for hostport, weight in pairs(list) do
            local h, p = core.utils.parse_addr(hostport)
            local node, err = plain_node(h, p, weight)
            if not node then
                return nil, err
            end
            nodes[#nodes + 1] = node
        end
    end
    out.nodes = nodes
    return out
end

local function required(args)
    for i = 1, 4 do
        if args[i] == nil then
            error("missing argument " .. ({ "ctx", "key", "ver", "conf" })[i], 3)
        end
    end
end

upstream.set = function(ctx, key, ver, conf)
    required({ ctx, key, ver, conf })
    ctx.upstream_key, ctx.upstream_version, ctx.upstream_conf = key, ver, conf
    key, ver = tostring(key), tostring(ver)
    if native.use(key, ver) then
        return
    end
    local plain, err = proxy_conf(conf)
    local ok
    if plain then
        local text
        text, err = core.json.encode(plain)
        if text then
            ok, err = native.compile(key, ver, text)
        end
    end
    if not ok then
        -- Never fall back to the route's upstream: the plugin asked for this one.
        error("apisix.upstream.set: cannot send the request to upstream " .. key .. ": "
              .. tostring(err), 2)
    end
end

-- `ctx.upstream_scheme` (unless a plugin set it already) and `$upstream_scheme`.
upstream.set_scheme = function(ctx, conf)
    local scheme = ctx.upstream_scheme or conf.scheme or "http"
    ctx.upstream_scheme = scheme
    ctx.var.upstream_scheme = scheme
end

upstream.scheme_to_port = { http = 80, https = 443, grpc = 80, grpcs = 443 }

-- Bare IPv6 node hosts are refused (they read as `host:port`), then the upstream schema.
upstream.check_schema = function(conf)
    local nodes = type(conf.nodes) == "table" and conf.nodes or {}
    for i = 1, #nodes do
        local host = nodes[i].host
        if type(host) == "string" and find(host, ":", 1, true) and byte(host, 1) ~= 91 then
            return false, "IPv6 address must be enclosed with '[' and ']'"
        end
    end
    return core.schema.check(core.schema["upstream"], conf)
end

-- The value of the configured upstream `id`, or nil (logged).
upstream.get_by_id = function(id)
    local item = docs.get("upstreams", id)
    if item then
        return item.value
    end
    core.log.error("failed to find upstream by id: ", id)
    return nil
end

-- Every configured upstream item, and the config version.
upstream.upstreams = function()
    return docs.items("upstreams")
end

return upstream
