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

local core = require("apisix.core")
local docs = require("moongate.config_doc")
local native = require("moongate.upstream")

local type, pairs, ipairs, error, tostring, tonumber = type, pairs, ipairs, error, tostring, tonumber
local byte, find = string.byte, string.find

local _M = {}

-- The fields of an upstream conf the proxy reads; anything else a plugin hangs on the conf
-- (traffic-split's `parent`, `vid`) stays on the Lua side.
local FIELDS = {
    "type", "hash_on", "key", "retries", "retry_timeout", "timeout", "scheme", "pass_host",
    "upstream_host", "keepalive_pool", "name", "desc", "checks", "discovery_type",
    "service_name", "tls",
}

-- An IPv4 or IPv6 literal (bracketed or not): nothing to resolve.
local function is_ip(host)
    return find(host, "^%d+%.%d+%.%d+%.%d+$") ~= nil or find(host, ":", 1, true) ~= nil
end

-- A node as the proxy takes it, its name resolved (without blocking the worker).
local function plain_node(host, port, weight, priority)
    if type(host) ~= "string" or host == "" then
        return nil, "a node needs a host"
    end
    if not is_ip(host) then
        local ip, err = core.resolver.parse_domain(host)
        if not ip then
            return nil, "failed to resolve " .. host .. ": " .. tostring(err)
        end
        host = ip
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
        for addr, weight in pairs(list) do
            local host, port = core.utils.parse_addr(addr)
            local node, err = plain_node(host, port, weight)
            if not node then
                return nil, err
            end
            nodes[#nodes + 1] = node
        end
    end
    out.nodes = nodes
    return out
end

function _M.set(ctx, key, ver, conf)
    if not ctx then
        error("missing argument ctx", 2)
    end
    if not key then
        error("missing argument key", 2)
    end
    if not ver then
        error("missing argument ver", 2)
    end
    if not conf then
        error("missing argument conf", 2)
    end
    ctx.upstream_conf = conf
    ctx.upstream_version = ver
    ctx.upstream_key = key
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
function _M.set_scheme(ctx, conf)
    if not ctx.upstream_scheme then
        ctx.upstream_scheme = conf.scheme or "http"
    end
    ctx.var.upstream_scheme = ctx.upstream_scheme
end

_M.scheme_to_port = { http = 80, https = 443, grpc = 80, grpcs = 443 }

function _M.check_schema(conf)
    for _, node in ipairs(type(conf.nodes) == "table" and conf.nodes or {}) do
        if type(node.host) == "string" and find(node.host, ":", 1, true)
           and byte(node.host, 1) ~= 91 then
            return false, "IPv6 address must be enclosed with '[' and ']'"
        end
    end
    return core.schema.check(core.schema.upstream, conf)
end

-- The value of the configured upstream `id`, or nil (logged).
function _M.get_by_id(id)
    local item = docs.get("upstreams", id)
    if not item then
        core.log.error("failed to find upstream by id: ", id)
        return nil
    end
    return item.value
end

-- Every configured upstream item, and the config version.
function _M.upstreams()
    return docs.items("upstreams")
end

return _M
