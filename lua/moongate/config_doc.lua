-- moongate.config_doc: the running config's resources as Lua tables, decoded once per config
-- version per worker and shared by the modules that read them (apisix.secret, apisix.upstream,
-- apisix.http.service, apisix.global_rules, apisix.router). A version's routes, services and
-- upstreams are decoded the first time one of them is asked for. Every item has APISIX's shape:
-- `{key = "/KIND/ID", value = {...}, modifiedIndex = N, createdIndex = N}`. The tables are the
-- same for every request of one version: treat them as read-only.

local config = require("moongate.config")
local cjson = require("cjson.safe").new()
cjson.decode_array_with_array_mt(true)

local ipairs, sub = ipairs, string.sub

local _M = {}

local state = { version = false }

-- The decoded document and its version, or nil before the first request of any config.
function _M.current()
    local v = config.version()
    if v == nil then
        return nil
    end
    if state.version ~= v then
        local _, text = config.document()
        local doc, err = cjson.decode(text or "")
        if type(doc) ~= "table" then
            ngx.log(ngx.ERR, "failed to decode the config document: ", err)
            return nil
        end
        state = { version = v, doc = doc, index = {} }
    end
    return state.doc, state.version
end

-- Routes, services and upstreams are not in the document (they can be many, and only a few
-- plugins read them): they are asked for per kind, once per version.
local CONFIGURED = { routes = true, services = true, upstreams = true }

-- The items of `kind` (a list, possibly empty) and the version.
function _M.items(kind)
    local doc, v = _M.current()
    if not doc then
        return nil, nil
    end
    local list = doc[kind]
    if list == nil and CONFIGURED[kind] then
        local _, text = config.configured(kind)
        list = text and cjson.decode(text)
        if type(list) ~= "table" then
            ngx.log(ngx.ERR, "failed to decode the configured ", kind)
            list = {}
        end
        doc[kind] = list
    end
    return list or {}, v
end

-- The item of `kind` whose id (the key after `/KIND/`) is `id`, or nil.
function _M.get(kind, id)
    local doc = _M.current()
    if not doc then
        return nil
    end
    local index = state.index[kind]
    if not index then
        index = {}
        local skip = #kind + 3 -- "/" .. kind .. "/"
        for _, item in ipairs((_M.items(kind))) do
            index[sub(item.key, skip)] = item
        end
        state.index[kind] = index
    end
    return index[tostring(id)]
end

return _M
