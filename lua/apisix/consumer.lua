-- apisix.consumer: the consumers (and their credentials) of the running config, as auth
-- plugins look them up, with APISIX's API: plugin, consumers_conf, consumers_kv,
-- find_consumer, attach_consumer, consumers, get_anonymous_consumer.
--
-- moongate's snapshot is the source (`moongate.config`): it is decoded once per config
-- version per worker, and every table below is rebuilt only when the version changes, so the
-- same consumer objects are seen by every request of one version (plugins key caches on them).

local config = require("moongate.config")
local cjson = require("cjson.safe")

local pairs, ipairs, type, tostring = pairs, ipairs, type, tostring
local sub, find, match = string.sub, string.find, string.match
local os_getenv = os.getenv

-- core.schema.TYPE_CONSUMER: the schema type auth plugins check consumer confs with.
local TYPE_CONSUMER = 1

local _M = {}

-- The decoded document and what is derived from it, for one config version.
local state = { version = nil }

local function shallow_copy(t)
    local c = {}
    for k, v in pairs(t) do
        c[k] = v
    end
    return c
end

local function current()
    local v = config.version()
    if v == nil then
        return nil
    end
    if state.version ~= v then
        local _, text = config.document()
        local doc, err = cjson.decode(text)
        if not doc then
            ngx.log(ngx.ERR, "failed to decode the config document: ", err)
            return nil
        end
        state = {
            version = v,
            doc = doc,
            by_name = {},   -- username -> config item
            plugins = {},   -- plugin name -> { nodes, len, conf_version }
            kv = {},        -- plugin name .. "#" .. key attr -> { key value -> consumer }
        }
        for _, item in ipairs(doc.consumers or {}) do
            if not find(item.key, "/credentials/", 1, true) then
                state.by_name[item.value.id] = item
            end
        end
    end
    return state
end

local function plugin_module(name)
    local ok, mod = pcall(require, "apisix.plugins." .. name)
    if ok and type(mod) == "table" then
        return mod
    end
    return nil
end

-- `/consumers/jack/credentials/c1` -> "jack", "c1"
local function credential_parts(key)
    return match(key, "^/consumers/([^/]+)/credentials/([^/]+)$")
end

-- One node of `plugin(name).nodes`: the consumer (a copy of its value) with that plugin's
-- conf as `auth_conf`, as APISIX builds it for consumers and for credentials.
local function consumer_node(st, item, name, conf)
    local consumer
    local owner, credential_id = credential_parts(item.key)
    if owner then
        local parent = st.by_name[owner]
        if not parent then
            return nil, "failed to get the consumer for the credential " .. item.key
        end
        consumer = shallow_copy(parent.value)
        consumer.modifiedIndex = parent.modifiedIndex
        consumer.credential_id = credential_id
    else
        consumer = shallow_copy(item.value)
        consumer.modifiedIndex = item.modifiedIndex
    end
    if type(consumer.labels) == "table" then
        consumer.custom_id = consumer.labels.custom_id
    end
    consumer.consumer_name = consumer.id
    consumer.auth_conf = conf
    return consumer
end

local function build_plugin_nodes(st, plugin_name)
    local mod = plugin_module(plugin_name)
    if not mod or mod.type ~= "auth" then
        return nil
    end
    local conf_set
    for _, item in ipairs(st.doc.consumers or {}) do
        local plugins = type(item.value) == "table" and item.value.plugins
        local conf = type(plugins) == "table" and plugins[plugin_name]
        if type(conf) == "table" then
            -- The data plane fills the consumer-side defaults, as APISIX's checker does;
            -- a consumer whose conf fails is left out (fail closed), with the reason logged.
            local ok, err = true, nil
            if mod.check_schema then
                ok, err = mod.check_schema(conf, TYPE_CONSUMER)
            end
            if not ok then
                ngx.log(ngx.ERR, "failed to check the configuration of plugin ", plugin_name,
                        " for consumer ", tostring(item.key), ": ", err)
            else
                local node, nerr = consumer_node(st, item, plugin_name, conf)
                if not node then
                    ngx.log(ngx.ERR, "failed to construct consumer data for plugin ",
                            plugin_name, ": ", nerr)
                else
                    conf_set = conf_set or { nodes = {}, len = 0, conf_version = st.version }
                    conf_set.len = conf_set.len + 1
                    conf_set.nodes[conf_set.len] = node
                end
            end
        end
    end
    return conf_set or false
end

-- `{nodes = {consumer...}, len = n, conf_version = v}` for an auth plugin, or nil.
function _M.plugin(plugin_name)
    local st = current()
    if not st then
        return nil
    end
    local p = st.plugins[plugin_name]
    if p == nil then
        p = build_plugin_nodes(st, plugin_name)
        st.plugins[plugin_name] = p or false
    end
    return p or nil
end

_M.consumers_conf = _M.plugin

-- `$env://NAME` references resolve from the environment; `$secret://` needs a secret
-- manager, which moongate does not have yet: such a consumer is skipped, never matched by
-- the literal reference text.
local function resolve_ref(v)
    if type(v) ~= "string" then
        return v, true
    end
    if sub(v, 1, 7) == "$env://" then
        local name = sub(v, 8)
        local slash = find(name, "/", 1, true)
        local val = os_getenv(slash and sub(name, 1, slash - 1) or name)
        return val, val ~= nil
    end
    if sub(v, 1, 10) == "$secret://" then
        return nil, false
    end
    return v, true
end

-- key value -> consumer for one auth plugin's key attribute.
function _M.consumers_kv(plugin_name, consumer_conf, key_attr)
    local st = current()
    if not st or not consumer_conf then
        return {}
    end
    local cache_key = plugin_name .. "#" .. key_attr
    local kv = st.kv[cache_key]
    if kv then
        return kv
    end
    kv = {}
    for _, consumer in ipairs(consumer_conf.nodes) do
        local value, ok = resolve_ref(consumer.auth_conf[key_attr])
        if value == nil or not ok then
            ngx.log(ngx.ERR, "missing or unresolved consumer auth credential '", key_attr,
                    "', skipping consumer: ", tostring(consumer.consumer_name))
        else
            kv[value] = consumer
        end
    end
    st.kv[cache_key] = kv
    return kv
end

function _M.find_consumer(plugin_name, key, key_value)
    local consumer_conf = _M.plugin(plugin_name)
    if not consumer_conf then
        return nil, nil, "Missing related consumer"
    end
    local kv = _M.consumers_kv(plugin_name, consumer_conf, key)
    return kv[key_value], consumer_conf
end

-- The auth plugin found its consumer: the runner merges the consumer's plugins into the
-- route after rewrite (consumer > group > route), keyed on ctx.consumer_name.
function _M.attach_consumer(ctx, consumer, conf)
    ctx.consumer = consumer
    ctx.consumer_name = consumer.consumer_name
    ctx.consumer_group_id = consumer.group_id
    ctx.consumer_ver = conf.conf_version

    local core = require("apisix.core")
    core.request.set_header(ctx, "X-Consumer-Username", consumer.username)
    core.request.set_header(ctx, "X-Credential-Identifier", consumer.credential_id)
    core.request.set_header(ctx, "X-Consumer-Custom-ID", consumer.custom_id)
end

-- Every consumer (credentials left out) and the config version.
function _M.consumers()
    local st = current()
    if not st then
        return nil, nil
    end
    local list = {}
    for _, item in ipairs(st.doc.consumers or {}) do
        if not find(item.key, "/credentials/", 1, true) then
            list[#list + 1] = item
        end
    end
    return list, st.version
end

function _M.get_anonymous_consumer(name)
    local st = current()
    local item = st and st.by_name[name]
    if not item then
        return nil, nil, "failed to get anonymous consumer " .. tostring(name)
    end
    local consumer = shallow_copy(item.value)
    consumer.consumer_name = item.value.id
    consumer.modifiedIndex = item.modifiedIndex
    return consumer, { conf_version = item.modifiedIndex }
end

function _M.get_consumer_key_from_credential_key(key)
    local owner = match(key, "^/consumers/([^/]+)/credentials/")
    return owner and ("/consumers/" .. owner) or nil
end

return _M
