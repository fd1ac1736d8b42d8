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

local core = require("apisix.core")
local config = require("moongate.config")
local docs = require("moongate.config_doc")

local type, pairs, pcall, require, tostring = type, pairs, pcall, require, tostring
local byte, sub, find, upper = string.byte, string.sub, string.find, string.upper

local SECRET = "$secret://"
local ENV = core.env.PREFIX -- "$ENV://", compared upper-cased
local DOLLAR = 36

local _M = {}

local function starts(s, prefix)
    return sub(s, 1, #prefix) == prefix
end

local function env_ref(s)
    return starts(upper(sub(s, 1, #ENV)), ENV)
end

-- True when `value` is a reference. Used by core.schema as its skip hook: with a `schema`, only
-- a field that may hold a string is skipped (a reference never stands for a number).
function _M.is_secret_ref(value, schema)
    if type(value) ~= "string" or byte(value, 1) ~= DOLLAR then
        return false
    end
    if schema and schema.type and schema.type ~= "string" then
        return false
    end
    return starts(value, SECRET) or env_ref(value)
end

function _M.check_secret_uri(uri)
    if type(uri) ~= "string" then
        return false, "error secret_uri type: " .. type(uri)
    end
    if not starts(uri, SECRET) and not env_ref(uri) then
        return false, "error secret_uri prefix: " .. uri
    end
    return true
end

-- `$secret://manager/id/key/with/slashes` -> { manager, confid, key }
local function parse_secret_uri(uri)
    local ok, err = _M.check_secret_uri(uri)
    if not ok then
        return nil, err
    end
    local rest = sub(uri, #SECRET + 1)
    local a = find(rest, "/", 1, true)
    if not a then
        return nil, "error format: no secret manager"
    end
    local b = find(rest, "/", a + 1, true)
    if not b then
        return nil, "error format: no secret conf id"
    end
    local key = sub(rest, b + 1)
    if key == "" then
        return nil, "error format: no secret key id"
    end
    return { manager = sub(rest, 1, a - 1), confid = sub(rest, a + 1, b - 1), key = key }
end

-- The secret config items and their version, as APISIX's `secrets()` gives them.
function _M.secrets()
    return docs.items("secrets")
end

local function fetch_secret_uri(uri)
    core.log.info("fetching data from secret uri: ", uri)
    local ref, err = parse_secret_uri(uri)
    if not ref then
        return nil, err
    end
    local item = docs.get("secrets", ref.manager .. "/" .. ref.confid)
    if not item then
        return nil, "no secret conf, secret_uri: " .. uri
    end
    local ok, manager = pcall(require, "apisix.secret." .. ref.manager)
    if not ok or type(manager) ~= "table" or type(manager.get) ~= "function" then
        return nil, "no secret manager: " .. ref.manager
    end
    return manager.get(item.value, ref.key)
end

-- Exposed as APISIX exposes it (its tests call it directly).
_M.fetch_by_uri = fetch_secret_uri

local function lru_attr(name, default)
    local v = core.table.try_read_attr(core.config.local_conf(), "apisix", "lru", "secret", name)
    return v or default
end

local cache = core.lrucache.new({
    ttl = lru_attr("ttl", 300),
    count = lru_attr("count", 512),
    neg_ttl = lru_attr("neg_ttl", 60),
    neg_count = lru_attr("neg_count", 512),
    invalid_stale = true,
})

-- The value a reference stands for, or `nil[, err]` (also for a string that is no reference).
local function fetch(s, use_cache)
    if byte(s, 1) ~= DOLLAR then
        return nil
    end
    local resolve
    if env_ref(s) then
        resolve = core.env.fetch_by_uri
    elseif starts(s, SECRET) then
        resolve = fetch_secret_uri
    else
        return nil
    end
    if not use_cache then
        return resolve(s)
    end
    return cache(s, config.version() or 0, resolve, s)
end

local function resolve_in(t, use_cache)
    for k, v in pairs(t) do
        if type(v) == "string" then
            local val, err = fetch(v, use_cache)
            if val == nil then
                if _M.is_secret_ref(v) then
                    -- The reference text stays, and must never pass for the value: say so.
                    core.log.error("failed to resolve secret reference: ", v, ", field: ",
                                   tostring(k), ", err: ", err or "no value")
                end
            else
                t[k] = val
            end
        elseif type(v) == "table" then
            resolve_in(v, use_cache)
        end
    end
    return t
end

-- A deep copy of `refs` with every reference replaced by its value (unresolved ones are kept
-- as written, with an error logged). `nil` for a non-table.
function _M.fetch_secrets(refs, use_cache)
    if type(refs) ~= "table" then
        return nil
    end
    return resolve_in(core.table.deepcopy(refs), use_cache)
end

local function any_ref(t, seen)
    if seen[t] then
        return false
    end
    seen[t] = true
    for _, v in pairs(t) do
        if type(v) == "string" then
            if _M.is_secret_ref(v) then
                return true
            end
        elseif type(v) == "table" and any_ref(v, seen) then
            return true
        end
    end
    return false
end

function _M.has_secret_ref(conf)
    return type(conf) == "table" and any_ref(conf, {})
end

local function collect(t, out, use_cache, seen)
    if seen[t] then
        return
    end
    seen[t] = true
    for _, v in pairs(t) do
        if type(v) == "string" then
            if _M.is_secret_ref(v) then
                out[v] = fetch(v, use_cache)
            end
        elseif type(v) == "table" then
            collect(v, out, use_cache, seen)
        end
    end
end

-- reference -> current value, for every reference in `conf`.
function _M.collect_secret_values(conf, use_cache)
    local out = {}
    if type(conf) == "table" then
        collect(conf, out, use_cache, {})
    end
    return out
end

-- APISIX watches /secrets here; moongate's snapshot already carries them.
function _M.init_worker() end

return _M
