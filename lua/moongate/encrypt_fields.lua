-- moongate.encrypt_fields: keeps the fields a plugin lists in its schema's `encrypt_fields`
-- encrypted at rest, as APISIX does when `apisix.data_encryption.enable_encrypt_fields` is on
-- (its default) and the config lives in a store (etcd, or moongate's embedded store): the
-- Admin API encrypts them before writing, shows them decrypted, and the data plane decrypts them
-- in the conf tables plugins get. Values use core.data_encryption's format (AES-CBC with the
-- keyring, base64), so a store written by APISIX reads here and the other way round.
--
-- A field is a dotted path into the conf ("auth.password"). Along the path a list is walked
-- element by element; at the end a string is transformed, and so is every string member of a
-- list or a map found there. A value that does not decrypt (written before encryption was on,
-- or with another keyring) stays as it is, with an [info] line saying so.

local type, pairs, ipairs, next, tostring, require, pcall =
    type, pairs, ipairs, next, tostring, require, pcall
local sfind, ssub = string.find, string.sub

local clog = require("apisix.core.log")
local node_conf = require("apisix.core.config_local")

local TYPE_CONSUMER, TYPE_METADATA = 1, 2

local encrypt_fields = {}

-- Whether confs are kept encrypted on this node (read once per worker).
local on
function encrypt_fields.enabled()
    if on ~= nil then
        return on
    end
    local conf = node_conf.local_conf() or {}
    local de = conf.apisix and conf.apisix.data_encryption
    if type(de) ~= "table" or not de.enable_encrypt_fields then
        on = false
        return on
    end
    local deployment = type(conf.deployment) == "table" and conf.deployment or {}
    local role = deployment.role or "traditional"
    local role_conf = deployment["role_" .. role]
    local provider = type(role_conf) == "table" and role_conf.config_provider
    if not provider then
        provider = role == "data_plane" and "yaml" or "embedded"
    end
    -- A file the user writes (yaml, json) holds what they wrote.
    on = provider == "etcd" or provider == "embedded"
    return on
end

-- The schema whose `encrypt_fields` apply: a consumer's conf of a plugin without a
-- consumer_schema falls back to the plugin's schema.
local function schema_for(module, schema_type)
    if schema_type == TYPE_CONSUMER then
        return module.consumer_schema or module.schema
    end
    if schema_type == TYPE_METADATA then
        return module.metadata_schema
    end
    return module.schema
end

local function is_list(t)
    return #t > 0 or next(t) == nil
end

-- Transforms the strings at `path` under `node`; returns how many changed.
local function walk(node, path, fn, report)
    local dot = sfind(path, ".", 1, true)
    if dot then
        local child = node[ssub(path, 1, dot - 1)]
        if type(child) ~= "table" then
            return 0
        end
        local rest = ssub(path, dot + 1)
        if is_list(child) then
            local n = 0
            for _, item in ipairs(child) do
                if type(item) == "table" then
                    n = n + walk(item, rest, fn, report)
                end
            end
            return n
        end
        return walk(child, rest, fn, report)
    end

    local value = node[path]
    local targets
    if type(value) == "string" then
        targets = { { node, path, path } }
    elseif type(value) == "table" then
        targets = {}
        for k, item in pairs(value) do
            if type(item) == "string" then
                targets[#targets + 1] = { value, k, path .. "." .. tostring(k) }
            end
        end
    else
        return 0
    end
    local n = 0
    for _, t in ipairs(targets) do
        local holder, key, where = t[1], t[2], t[3]
        local out, why = fn(holder[key])
        if out == nil then
            report(where, why)
        elseif out ~= holder[key] then
            holder[key] = out
            n = n + 1
        end
    end
    return n
end

local operations = {
    encrypt = function()
        local de = require("apisix.core.data_encryption")
        return de.encrypt, clog.warn
    end,
    decrypt = function()
        local de = require("apisix.core.data_encryption")
        return de.decrypt, clog.info
    end,
}

-- Applies `op` ("encrypt" or "decrypt") to the `encrypt_fields` of plugin `name` in `conf`,
-- in place. Returns true when a value changed. Does nothing when encryption is off, the plugin
-- does not load, or it lists no field.
function encrypt_fields.apply(name, conf, schema_type, op)
    if type(conf) ~= "table" or not encrypt_fields.enabled() then
        return false
    end
    local loaded, module = pcall(require, "apisix.plugins." .. name)
    if not loaded or type(module) ~= "table" then
        return false
    end
    local schema = schema_for(module, schema_type)
    local fields = type(schema) == "table" and schema.encrypt_fields
    if type(fields) ~= "table" or fields[1] == nil then
        return false
    end
    local fn, log_at = operations[op]()
    local function report(where, why)
        log_at("failed to ", op, " the conf of plugin [", name, "] key [", where, "], err: ", why)
    end
    local changed = 0
    for _, path in ipairs(fields) do
        if type(path) == "string" then
            changed = changed + walk(conf, path, fn, report)
        end
    end
    return changed > 0
end

return encrypt_fields
