-- core.config: APISIX's config-provider module as plugins use it: `local_conf()` (the node's
-- config.yaml), `type` (the provider), and `new()`, which in APISIX watches an etcd prefix
-- from Lua. moongate's config plane is Rust; a Lua watcher does not exist here, so `new`
-- raises an error naming itself.

local config_local = require("apisix.core.config_local")
local error, type, tostring, tonumber, setmetatable = error, type, tostring, tonumber, setmetatable
local ngx = ngx

local _M = {
    version = 0.3,
    local_conf = config_local.local_conf,
    clear_local_cache = config_local.clear_cache,
}

-- The provider of the deployment's role (`deployment.role_<role>.config_provider`).
local conf = config_local.local_conf()
local deployment = conf and conf.deployment or {}
local role_conf = deployment["role_" .. tostring(deployment.role)]
_M.type = type(role_conf) == "table" and role_conf.config_provider or "yaml"

-- `new()` without a key is a handle on the config server itself, as APISIX's exporter uses it
-- (`type`, and with etcd `server_version()`, `getkey(key)`); see `etcd_probe` below.
local etcd_probe = {}
etcd_probe.__index = etcd_probe

-- The first etcd endpoint of `deployment.etcd`, its prefix and timeout (seconds).
local function etcd_conf()
    local etcd = (conf and conf.deployment or {}).etcd or (conf and conf.etcd) or {}
    local hosts = etcd.host
    local host = type(hosts) == "table" and hosts[1] or hosts
    if type(host) ~= "string" then
        return nil, "deployment.etcd.host is not set"
    end
    if etcd.user then
        return nil, "core.config: etcd authentication (deployment.etcd.user) is not supported "
            .. "by moongate's Lua etcd probe"
    end
    return { host = host:gsub("/+$", ""), prefix = etcd.prefix or "/apisix",
             timeout = tonumber(etcd.timeout) or 30, tls = etcd.tls or {} }
end

-- One JSON request to etcd's HTTP gateway: the decoded body, or nil and an error.
local function etcd_call(method, path, body)
    local ec, err = etcd_conf()
    if not ec then
        return nil, err
    end
    local json = require("apisix.core.json")
    local httpc = require("resty.http").new()
    httpc:set_timeout(ec.timeout * 1000)
    local res, rerr = httpc:request_uri(ec.host .. path, {
        method = method,
        body = body and json.encode(body) or nil,
        headers = body and { ["Content-Type"] = "application/json" } or nil,
        ssl_verify = ec.tls.verify == true,
    })
    if not res then
        return nil, rerr
    end
    if res.status ~= 200 then
        return nil, "etcd answered " .. res.status .. " to " .. method .. " " .. path
    end
    local decoded, derr = json.decode(res.body)
    if type(decoded) ~= "table" then
        return nil, "etcd's answer to " .. path .. " is not JSON: " .. tostring(derr)
    end
    return decoded, ec
end

-- etcd's `/version` document (`{etcdserver = ..., etcdcluster = ...}`), or nil and an error.
function etcd_probe.server_version(_)
    return etcd_call("GET", "/version")
end

-- Reads `key` under the etcd prefix: `{body = range answer, headers = {["X-Etcd-Index"] =
-- the cluster's revision}}`, as APISIX's getkey reports the revision.
function etcd_probe.getkey(_, key)
    local ec, err = etcd_conf()
    if not ec then
        return nil, err
    end
    local body
    body, err = etcd_call("POST", "/v3/kv/range", { key = ngx.encode_base64(ec.prefix .. key) })
    if not body then
        return nil, err
    end
    local header = type(body.header) == "table" and body.header or {}
    return { body = body, headers = { ["X-Etcd-Index"] = tonumber(header.revision) } }
end

function _M.new(key)
    if key == nil then
        return setmetatable({ type = _M.type }, etcd_probe)
    end
    error("core.config.new(" .. tostring(key) .. ") is not supported by moongate: "
        .. "config is watched by the Rust config plane, not from Lua", 2)
end

function _M.fetch_created_obj(key)
    error("core.config.fetch_created_obj(" .. tostring(key) .. ") is not supported by moongate", 2)
end

return _M
