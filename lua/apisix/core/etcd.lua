-- apisix.core.etcd: APISIX's helpers for reading and writing etcd from Lua, over moongate's
-- config store (`moongate.store`: etcd, or the embedded store of a single node). Keys are
-- given without the prefix (`/routes/1`), values are tables (stored as JSON), and answers have
-- the shapes APISIX's helpers return: `res.status` (200/201/404), `res.body.node` =
-- `{key, value, createdIndex, modifiedIndex}`, `res.body.list` for a directory read,
-- `res.headers["X-Etcd-Index"]`.
--
-- Writes go through the same store the Admin API writes to, so the data plane and the Admin
-- API see them. A data_plane node refuses them, as APISIX does. APISIX's lower-level members
-- (its etcd client objects, watch formatting, leases by id) have no moongate counterpart and
-- raise an error naming themselves.

local store = require("moongate.store")
local json = require("apisix.core.json")
local type, tostring, tonumber, setmetatable, error = type, tostring, tonumber, setmetatable, error
local format, byte, sub = string.format, string.byte, string.sub

local _M = {}

local NO_STORE = "this moongate node keeps its config in a file: there is no etcd to talk to"

-- The full store key of `key`, or nil and why.
local function full_key(key)
    local prefix = store.prefix()
    if not prefix then
        return nil, NO_STORE
    end
    return prefix .. key
end

local function response(status, body, revision)
    return {
        status = status,
        body = body,
        headers = { ["X-Etcd-Index"] = revision },
    }
end

local function not_found(revision)
    local res = response(404, { message = "Key not found" }, revision)
    res.reason = "Not found"
    return res
end

-- A stored item as APISIX's node; its value decoded (text that is not JSON stays text, as
-- APISIX's old directory markers).
local function node_of(item)
    local value = json.decode(item.value)
    if value == nil then
        value = item.value
    end
    return {
        key = item.key,
        value = value,
        createdIndex = item.create_revision,
        modifiedIndex = item.mod_revision,
    }
end

local function encoded(value)
    if type(value) == "table" then
        local text, err = json.encode(value)
        if not text then
            return nil, "failed to encode the value: " .. tostring(err)
        end
        return text
    end
    return tostring(value)
end

--- `get(key)`: the item at `key`; `get(key, true)`: every item under `key` as `body.list`.
function _M.get(key, is_dir)
    local real, why = full_key(key)
    if not real then
        return nil, why
    end
    if not is_dir then
        local item, err = store.get(real)
        if err then
            return nil, err
        end
        if not item then
            return not_found(0)
        end
        return response(200, { node = node_of(item) }, item.mod_revision)
    end
    local items, revision = store.range(real)
    if not items then
        return nil, revision
    end
    if #items == 0 then
        return not_found(revision)
    end
    local list = setmetatable({}, json.array_mt)
    for i = 1, #items do
        local node = node_of(items[i])
        -- directory markers (`init_dir`) are not resources
        if type(node.value) == "table" then
            list[#list + 1] = node
        end
    end
    local dir = real
    if byte(dir, -1) == 47 then -- "/"
        dir = sub(dir, 1, -2)
    end
    return response(200, { list = list, node = { key = dir, dir = true } }, revision)
end

local function write(key, value, ttl, mod_revision)
    local real, why = full_key(key)
    if not real then
        return nil, why
    end
    local text, err = encoded(value)
    if not text then
        return nil, err
    end
    local item, replaced = store.put(real, text, ttl and tonumber(ttl), mod_revision)
    if not item then
        if replaced == "changed" then
            return nil, "value changed before overwritten"
        end
        return nil, replaced
    end
    local status = replaced and 200 or 201
    return response(status, { node = { key = real, value = value } }, item.mod_revision), nil, item
end

--- `set(key, value[, ttl])`: 201 when created, 200 when replaced.
function _M.set(key, value, ttl)
    local res, err = write(key, value, ttl)
    return res, err
end

--- `atomic_set(key, value, ttl, mod_revision)`: only if the key is still at `mod_revision`.
function _M.atomic_set(key, value, ttl, mod_revision)
    local res, err = write(key, value, ttl, mod_revision)
    return res, err
end

--- `push(dir, value[, ttl])`: stores `value` under a new 20-digit id (the revision of a write
--- to `/gen_id`, as APISIX makes ids) and sets `value.id`.
function _M.push(key, value, ttl)
    local _, err, gen = write("/gen_id", 1)
    if not gen then
        return nil, err
    end
    value.id = format("%020d", gen.mod_revision)
    return write(key .. "/" .. value.id, value, ttl)
end

--- `delete(key)`: 200 with `body.key` and `body.deleted`, or 404.
function _M.delete(key)
    local real, why = full_key(key)
    if not real then
        return nil, why
    end
    local gone, err = store.delete(real)
    if err then
        return nil, err
    end
    if not gone then
        return not_found(0)
    end
    return response(200, { key = real, deleted = "1", node = {} }, gone.mod_revision)
end

--- `rmdir(dir)`: deletes every key under `dir`.
function _M.rmdir(key)
    local real, why = full_key(key)
    if not real then
        return nil, why
    end
    local n, err = store.delete_dir(real)
    if not n then
        return nil, err
    end
    if n == 0 then
        return not_found(0)
    end
    return response(200, { key = real, deleted = tostring(n), node = {} }, 0)
end

local UNSUPPORTED = "core.etcd.%s is not supported by moongate: its config store is not "
    .. "reached through Lua etcd client objects"

return setmetatable(_M, {
    __index = function(_, member)
        error(format(UNSUPPORTED, tostring(member)), 2)
    end,
})
