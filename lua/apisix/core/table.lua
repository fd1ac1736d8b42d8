-- core.table: small table helpers plugins use, plus (through `__index`) everything in Lua's
-- `table` library, so `core.table.concat`/`sort`/`remove` are the standard functions.

local new_tab = require("table.new")
local clear_tab = require("table.clear")
local nkeys = require("table.nkeys")
local isarray = require("table.isarray")
local isempty = require("table.isempty")
local clone = require("table.clone")
local type, pairs, ipairs, select, tostring, getmetatable, setmetatable, newproxy =
    type, pairs, ipairs, select, tostring, getmetatable, setmetatable, newproxy
local sub, byte = string.sub, string.byte
local ngx_null = ngx.null

local _M = {
    version = 0.2,
    new = new_tab,
    clear = clear_tab,
    nkeys = nkeys,
    clone = clone,
    isarray = isarray,
    isempty = isempty,
    insert = table.insert,
    concat = table.concat,
    sort = table.sort,
    remove = table.remove,
}
setmetatable(_M, { __index = table })

-- Appends the arguments (nils included, as positions) after `#tab`; returns the new length.
function _M.insert_tail(tab, ...)
    local n = #tab
    for i = 1, select("#", ...) do
        n = n + 1
        tab[n] = select(i, ...)
    end
    return n
end

-- Writes the arguments into tab[1..n].
function _M.set(tab, ...)
    for i = 1, select("#", ...) do
        tab[i] = select(i, ...)
    end
end

-- `try_read_attr(t, "a", "b")` is t.a.b, or nil where a step is not a table.
function _M.try_read_attr(tab, ...)
    for i = 1, select("#", ...) do
        if type(tab) ~= "table" then
            return nil
        end
        tab = tab[select(i, ...)]
    end
    return tab
end

local function array_find(array, val)
    if type(array) ~= "table" then
        return nil
    end
    for i, v in ipairs(array) do
        if v == val then
            return i
        end
    end
    return nil
end
_M.array_find = array_find

-- Sets metatable `mt` on `t` and runs `mt.__gc(t)` when `t` is collected (LuaJIT tables have
-- no `__gc`: a proxy userdata stored in the table carries it).
function _M.setmt__gc(t, mt)
    local proxy = newproxy(true)
    getmetatable(proxy).__gc = function()
        mt.__gc(t)
    end
    t[proxy] = true
    return setmetatable(t, mt)
end

-- `path` is `prefix` or below it (the next character is a dot).
local function under(path, prefix)
    if sub(path, 1, #prefix) ~= prefix then
        return false
    end
    return #path == #prefix or byte(path, #prefix + 1) == 46
end

-- `deepcopy(t, opts)`: a copy sharing nothing with `t`, metatables kept, cycles preserved.
-- `opts.shallows` lists paths (`"self.a.b"`) whose values are shared instead of copied;
-- `opts.shallow_prefix` shares every member of tables at or below that path.
local function copy_table(orig, copies, path, opts)
    local copy = new_tab(#orig, 0)
    copies[orig] = copy
    for k, v in pairs(orig) do
        local child = path .. "." .. tostring(k)
        if
            opts
            and (
                array_find(opts.shallows, child)
                or (opts.shallow_prefix and under(path, opts.shallow_prefix))
            )
        then
            copy[k] = v
        elseif type(v) == "table" then
            copy[k] = copies[v] or copy_table(v, copies, child, opts)
        else
            copy[k] = v
        end
    end
    local mt = getmetatable(orig)
    if mt ~= nil then
        setmetatable(copy, mt)
    end
    return copy
end

function _M.deepcopy(orig, opts)
    if type(orig) ~= "table" then
        return orig
    end
    return copy_table(orig, {}, "self", opts)
end

-- Recursive merge of `extend` into `origin` (arrays replace, `ngx.null` deletes), as the
-- Admin API's PATCH merges. Returns `origin`.
local function merge(origin, extend)
    for k, v in pairs(extend) do
        if type(v) == "table" then
            local cur = origin[k]
            if type(cur) == "table" and not isarray(cur) and not isarray(v) then
                merge(cur, v)
            else
                origin[k] = v
            end
        elseif v == ngx_null then
            origin[k] = nil
        else
            origin[k] = v
        end
    end
    return origin
end
_M.merge = merge

-- `patch(value, "a/b", conf)` sets value.a.b = conf (an empty sub path replaces the whole
-- value). Returns `nil, nil, new_value`, or `400, "invalid sub-path: /…"`.
function _M.patch(node_value, sub_path, conf)
    local parts = {}
    for part in (sub_path .. "/"):gmatch("(.-)/") do
        parts[#parts + 1] = part
    end
    local cur = node_value
    for i = 1, #parts - 1 do
        local name = parts[i]
        if cur[name] == nil then
            cur[name] = {}
        end
        cur = cur[name]
        if type(cur) ~= "table" then
            return 400, "invalid sub-path: /" .. table.concat(parts, "/", 1, i)
        end
    end
    if type(cur) ~= "table" then
        return 400, "invalid sub-path: /" .. sub_path
    end
    local last = parts[#parts]
    if last and last ~= "" then
        cur[last] = conf
    else
        node_value = conf
    end
    return nil, nil, node_value
end

-- Same set of keys.
function _M.set_eq(a, b)
    if nkeys(a) ~= nkeys(b) then
        return false
    end
    for k in pairs(a) do
        if b[k] == nil then
            return false
        end
    end
    return true
end

local function deep_eq(a, b)
    if type(a) ~= "table" or type(b) ~= "table" then
        return a == b
    end
    if nkeys(a) ~= nkeys(b) then
        return false
    end
    for k, v in pairs(a) do
        if not deep_eq(v, b[k]) then
            return false
        end
    end
    return true
end
_M.deep_eq = deep_eq

-- The members of `obj` whose keys are keys of `attrs`.
function _M.pick(obj, attrs)
    local out = {}
    for k, v in pairs(obj) do
        if attrs[k] ~= nil then
            out[k] = v
        end
    end
    return out
end

return _M
