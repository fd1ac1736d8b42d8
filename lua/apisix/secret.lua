-- apisix.secret: references to values kept elsewhere, written in a conf instead of the value.
--
--   $env://NAME[/field]                  the environment variable NAME (a field of its JSON)
--   $secret://MANAGER/ID/KEY             the secret KEY of the secret config MANAGER/ID (the
--                                        Admin API's /apisix/admin/secrets/MANAGER/ID), read
--                                        through the module apisix.secret.MANAGER
--
-- Plugins only ask `is_secret_ref(s)` (to skip checks on a value that is not there yet); the
-- runner gives phase functions a copy of their conf with every reference replaced
-- (`fetch_secrets`), and consumers' auth confs are resolved the same way. Resolved values are
-- cached per worker (apisix.lru.secret.{ttl,count,neg_ttl,neg_count} in config.yaml) and forgotten
-- when the config changes.

local core = require "apisix.core"
local config = require "moongate.config"
local docs = require "moongate.config_doc"

local type, next, pcall, require, tostring = type, next, pcall, require, tostring
local byte, sub, find, upper = string.byte, string.sub, string.find, string.upper

local SECRET = "$secret://"
local ENV = core.env.PREFIX -- "$ENV://", compared upper-cased
local DOLLAR = 36

local secrets = {}

local function starts(s, prefix)
    return sub(s, 1, #prefix) == prefix
end

local function env_ref(s)
    return starts(upper(sub(s, 1, #ENV)), ENV)
end

-- A reference, as a string value: `$secret://…`, or `$env://…` in any case.
local function is_ref(s)
    return byte(s, 1) == DOLLAR and (starts(s, SECRET) or env_ref(s))
end

-- True when `value` is a reference. Used by core.schema as its skip hook: with a `schema`, only
-- a field that may hold a string is skipped (a reference never stands for a number).
secrets.is_secret_ref = function(value, schema)
    if type(value) ~= "string" then
        return false
    end
    local declared = schema and schema.type
    if declared and declared ~= "string" then
        return false
    end
    return is_ref(value)
end

secrets.check_secret_uri = function(uri)
    local kind = type(uri)
    if kind ~= "string" then
        return false, "error secret_uri type: " .. kind
    end
    if starts(uri, SECRET) or env_ref(uri) then
        return true
    end
    return false, "error secret_uri prefix: " .. uri
end

local function format_error(what)
    return nil, "error format: no secret " .. what
end

-- `$secret://manager/id/key/with/slashes` -> { manager, confid, key }
local function split_secret_uri(uri)
    local ok, why = secrets.check_secret_uri(uri)
    if not ok then
        return nil, why
    end
    local path = sub(uri, #SECRET + 1)
    local slash1 = find(path, "/", 1, true)
    if slash1 == nil then
        return format_error("manager")
    end
    local slash2 = find(path, "/", slash1 + 1, true)
    if slash2 == nil then
        return format_error("conf id")
    end
    local rest = sub(path, slash2 + 1)
    if #rest == 0 then
        return format_error("key id")
    end
    return { manager = sub(path, 1, slash1 - 1), confid = sub(path, slash1 + 1, slash2 - 1),
             key = rest }
end

-- The secret config items and their version, as APISIX's `secrets()` gives them.
secrets.secrets = function()
    return docs.items("secrets")
end

local function from_manager(uri)
    core.log.info("fetching data from secret uri: ", uri)
    local ref, why = split_secret_uri(uri)
    if ref == nil then
        return nil, why
    end
    local item = docs.get("secrets", ref.manager .. "/" .. ref.confid)
    if item == nil then
        return nil, "no secret conf, secret_uri: " .. uri
    end
    local loaded, manager = pcall(require, "apisix.secret." .. ref.manager)
    if not loaded or type(manager) ~= "table" or type(manager.get) ~= "function" then
        return nil, "no secret manager: " .. ref.manager
    end
    return manager.get(item.value, ref.key)
end

-- Exposed as APISIX exposes it (its tests call it directly).
secrets.fetch_by_uri = from_manager

local lru_setting = function(name, default)
    local local_conf = core.config.local_conf()
    return core.table.try_read_attr(local_conf, "apisix", "lru", "secret", name) or default
end

local cache = core.lrucache.new({
    ttl = lru_setting("ttl", 300),
    count = lru_setting("count", 512),
    neg_ttl = lru_setting("neg_ttl", 60),
    neg_count = lru_setting("neg_count", 512),
    invalid_stale = true,
})

-- The value a reference stands for, or `nil[, err]` (also for a string that is no reference).
local function value_of(s, use_cache)
    local resolve
    if byte(s, 1) ~= DOLLAR then
        return nil
    elseif env_ref(s) then
        resolve = core.env.fetch_by_uri
    elseif starts(s, SECRET) then
        resolve = from_manager
    else
        return nil
    end
    if use_cache then
        return cache(s, config.version() or 0, resolve, s)
    end
    return resolve(s)
end

-- Calls `visit(t, key, value)` for every string inside `t` (tables seen once), until `visit`
-- returns true; returns whether it did.
local function each_string(t, visit, seen)
    if seen[t] then
        return false
    end
    seen[t] = true
    local k, v = next(t)
    while k ~= nil do
        local kind = type(v)
        if kind == "table" then
            if each_string(v, visit, seen) then
                return true
            end
        elseif kind == "string" and visit(t, k, v) then
            return true
        end
        k, v = next(t, k)
    end
    return false
end

-- A deep copy of `refs` with every reference replaced by its value (unresolved ones are kept
-- as written, with an error logged). `nil` for a non-table.
secrets.fetch_secrets = function(refs, use_cache)
    if type(refs) ~= "table" then
        return nil
    end
    local copy = core.table.deepcopy(refs)
    each_string(copy, function(owner, field, text)
        local resolved, why = value_of(text, use_cache)
        if resolved ~= nil then
            owner[field] = resolved
        elseif is_ref(text) then
            -- The reference text stays, and must never pass for the value: say so.
            core.log.error("failed to resolve secret reference: ", text, ", field: ",
                           tostring(field), ", err: ", why or "no value")
        end
    end, {})
    return copy
end

secrets.has_secret_ref = function(conf)
    if type(conf) ~= "table" then
        return false
    end
    return each_string(conf, function(_, _, text) return is_ref(text) end, {})
end

-- reference -> current value, for every reference in `conf`.
secrets.collect_secret_values = function(conf, use_cache)
    local found = {}
    if type(conf) == "table" then
        each_string(conf, function(_, _, text)
            if is_ref(text) then
                found[text] = value_of(text, use_cache)
            end
        end, {})
    end
    return found
end

-- APISIX watches /secrets here; moongate's snapshot already carries them.
secrets.init_worker = function() end

return secrets
