-- apisix.consumer: the consumers (and their credentials) of the running config, as auth
-- plugins look them up, with APISIX's API: plugin, consumers_conf, consumers_kv,
-- find_consumer, attach_consumer, consumers, get_anonymous_consumer.
--
-- moongate's snapshot is the source (`moongate.config`): it is decoded once per config
-- version per worker, and every table below is rebuilt only when the version changes, so the
-- same consumer objects are seen by every request of one version (plugins key caches on them).

local config = require("moongate.config")
local safe_json = require("cjson.safe")

local pairs, ipairs, type, tostring = pairs, ipairs, type, tostring
local find, match = string.find, string.match

-- core.schema.TYPE_CONSUMER: the schema type auth plugins check consumer confs with.
local TYPE_CONSUMER = 1

local consumers = {}

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
        local doc, err = safe_json.decode(text)
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
    consumer.consumer_name, consumer.auth_conf = consumer.id, conf
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
                -- Fields kept encrypted at rest are opened once the conf passed its check.
                require("moongate.encrypt_fields").apply(plugin_name, conf, TYPE_CONSUMER,
                    "decrypt")
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
function consumers.plugin(name)
    local st = current()
    if not st then
        return nil
    end
    local built = st.plugins[name]
    if built == nil then
        built = build_plugin_nodes(st, name) or false
        st.plugins[name] = built
    end
    return built or nil
end

consumers.consumers_conf = consumers.plugin

-- A consumer as the auth plugin sees it: a copy whose `auth_conf` has its `$env://` and
-- `$secret://` references replaced (apisix.secret). Loaded on first use: apisix.secret needs
-- apisix.core, which plugins have loaded by then.
local function with_secrets(consumer)
    local secret = require("apisix.secret")
    local copy = shallow_copy(consumer)
    copy.auth_conf = secret.fetch_secrets(consumer.auth_conf, false)
    return copy, secret.has_secret_ref(copy.auth_conf)
end

-- key value -> consumer for one auth plugin's key attribute. A consumer whose key is missing,
-- or whose auth conf keeps a reference that did not resolve, is left out (fail closed: the
-- literal reference text never matches).
function consumers.consumers_kv(plugin_name, plugin_set, key_attr)
    local st = current()
    if not st or not plugin_set then
        return {}
    end
    local cache_key = plugin_name .. "#" .. key_attr
    local kv = st.kv[cache_key]
    if kv then
        return kv
    end
    kv = {}
    for _, node in ipairs(plugin_set.nodes) do
        local consumer, unresolved = with_secrets(node)
        local value = consumer.auth_conf[key_attr]
        if value == nil then
            ngx.log(ngx.ERR, "missing consumer auth credential '", key_attr,
                    "', skipping consumer: ", tostring(consumer.consumer_name))
        elseif unresolved then
            ngx.log(ngx.ERR, "failed to resolve secret reference in consumer auth ",
                    "credential, skipping consumer: ", tostring(consumer.consumer_name))
        else
            kv[value] = consumer
        end
    end
    st.kv[cache_key] = kv
    return kv
end

function consumers.find_consumer(plugin_name, attr, presented)
    local plugin_set = consumers.plugin(plugin_name)
    if plugin_set == nil then
        return nil, nil, "Missing related consumer"
    end
    return consumers.consumers_kv(plugin_name, plugin_set, attr)[presented], plugin_set
end

-- The auth plugin found its consumer: the runner merges the consumer's plugins into the
-- route after rewrite (consumer > group > route), keyed on ctx.consumer_name.
-- apisix.core.request, required on first use (not at load: core requires this module).
local creq

function consumers.attach_consumer(ctx, who, plugin_set)
    ctx.consumer = who
    ctx.consumer_name, ctx.consumer_group_id = who.consumer_name, who.group_id
    ctx.consumer_ver = plugin_set.conf_version

    -- Upstream request headers naming the consumer (a nil value removes a header the client
    -- sent). Three calls, not a loop over a list: measured, the loop's trace made six new
    -- table keys (and two rehashes) per request that the straight calls do not.
    creq = creq or require("apisix.core.request")
    creq.set_header(ctx, "X-Consumer-Username", who.username)
    creq.set_header(ctx, "X-Credential-Identifier", who.credential_id)
    creq.set_header(ctx, "X-Consumer-Custom-ID", who.custom_id)
end

-- Every consumer (credentials left out) and the config version.
function consumers.consumers()
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

function consumers.get_anonymous_consumer(name)
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

function consumers.get_consumer_key_from_credential_key(cred_key)
    local owner = match(cred_key, "^/consumers/([^/]+)/credentials/")
    return owner and ("/consumers/" .. owner) or nil
end

return consumers
