-- core.table: the table helpers APISIX plugins use. Names not defined here (`unpack`, `maxn`, …)
-- fall through to Lua's `table` library.

local ngx = ngx
local type, pairs, ipairs, select, tostring = type, pairs, ipairs, select, tostring
local getmetatable, setmetatable, newproxy = getmetatable, setmetatable, newproxy
local ssub, sbyte = string.sub, string.byte

local lj_new = require("table.new")
local lj_nkeys = require("table.nkeys")
local lj_isarray = require("table.isarray")

local tbl = setmetatable({
    version = 0.2,
    -- LuaJIT's table extensions, under the names APISIX exports them.
    new = lj_new,
    clear = require("table.clear"),
    nkeys = lj_nkeys,
    clone = require("table.clone"),
    isarray = lj_isarray,
    isempty = require("table.isempty"),
    -- Lua's own, listed so they are plain fields (no metatable lookup on hot paths).
    insert = table.insert,
    concat = table.concat,
    sort = table.sort,
    remove = table.remove,
}, { __index = table })

------------------------------------------------------------------------------------------------
-- Filling and reading

-- Appends every argument after the current end (nil arguments keep their position); returns the
-- new length.
function tbl.insert_tail(list, ...)
    local last = #list
    local count = select("#", ...)
    for i = 1, count do
        list[last + i] = (select(i, ...))
    end
    return last + count
end

-- list[1], list[2], … = the arguments.
function tbl.set(list, ...)
    local count = select("#", ...)
    for i = 1, count do
        list[i] = (select(i, ...))
    end
end

-- Follows the keys given, one level each; nil as soon as a level is not a table.
function tbl.try_read_attr(root, ...)
    local node = root
    for i = 1, select("#", ...) do
        if type(node) ~= "table" then
            return nil
        end
        node = node[(select(i, ...))]
    end
    return node
end

-- The first index of `wanted` in the sequence `list` (nil for a non-table).
local function index_of(list, wanted)
    if type(list) == "table" then
        for idx, item in ipairs(list) do
            if item == wanted then
                return idx
            end
        end
    end
    return nil
end
tbl.array_find = index_of

-- Returns only the members of `src` whose keys appear (as keys) in `wanted`.
function tbl.pick(src, wanted)
    local kept = {}
    for key, val in pairs(src) do
        if wanted[key] ~= nil then
            kept[key] = val
        end
    end
    return kept
end

-- LuaJIT calls no `__gc` on tables. A userdata anchored in the table carries the finaliser, so
-- `mt.__gc(t)` runs when `t` is collected.
function tbl.setmt__gc(t, mt)
    local anchor = newproxy(true)
    getmetatable(anchor).__gc = function()
        mt.__gc(t)
    end
    t[anchor] = true
    return setmetatable(t, mt)
end

------------------------------------------------------------------------------------------------
-- Copying

local DOT = sbyte(".")

-- True when `path` equals `base` or names something inside it ("self.a" is inside "self").
local function within(path, base)
    local n = #base
    if ssub(path, 1, n) ~= base then
        return false
    end
    return #path == n or sbyte(path, n + 1) == DOT
end

-- Whether the member at `child_path` (inside `parent_path`) is shared rather than copied.
local function shared_member(opts, parent_path, child_path)
    if opts == nil then
        return false
    end
    if index_of(opts.shallows, child_path) then
        return true
    end
    local prefix = opts.shallow_prefix
    return prefix ~= nil and within(parent_path, prefix)
end

local function duplicate(src, seen, path, opts)
    local dst = lj_new(#src, 0)
    seen[src] = dst
    for key, val in pairs(src) do
        local child_path = path .. "." .. tostring(key)
        if type(val) ~= "table" or shared_member(opts, path, child_path) then
            dst[key] = val
        else
            dst[key] = seen[val] or duplicate(val, seen, child_path, opts)
        end
    end
    local meta = getmetatable(src)
    if meta ~= nil then
        setmetatable(dst, meta)
    end
    return dst
end

-- A copy sharing no table with `value` (metatables kept, cycles reproduced). `opts.shallows`
-- names paths such as "self.a.b" whose values are shared as they are; `opts.shallow_prefix`
-- shares every member of the tables at or under that path.
function tbl.deepcopy(value, opts)
    if type(value) ~= "table" then
        return value
    end
    return duplicate(value, {}, "self", opts)
end

------------------------------------------------------------------------------------------------
-- Merging and patching (the Admin API's PATCH semantics)

-- Objects merge key by key; arrays and scalars replace; `ngx.null` deletes. Returns `dst`.
local function merge_into(dst, src)
    for key, val in pairs(src) do
        local have = dst[key]
        if val == ngx.null then
            dst[key] = nil
        elseif type(val) == "table" and type(have) == "table"
            and not lj_isarray(have) and not lj_isarray(val) then
            merge_into(have, val)
        else
            dst[key] = val
        end
    end
    return dst
end
tbl.merge = merge_into

-- Sets the member at `sub_path` ("a/b") of `doc` to `conf`; an empty path replaces `doc`.
-- Returns nil, nil and the new document, or 400 and "invalid sub-path: /…".
function tbl.patch(doc, sub_path, conf)
    local steps = {}
    for step in (sub_path .. "/"):gmatch("(.-)/") do
        steps[#steps + 1] = step
    end

    local node = doc
    for i = 1, #steps - 1 do
        local key = steps[i]
        if node[key] == nil then
            node[key] = {}
        end
        node = node[key]
        if type(node) ~= "table" then
            return 400, "invalid sub-path: /" .. table.concat(steps, "/", 1, i)
        end
    end
    if type(node) ~= "table" then
        return 400, "invalid sub-path: /" .. sub_path
    end

    local leaf = steps[#steps]
    if leaf == nil or leaf == "" then
        return nil, nil, conf
    end
    node[leaf] = conf
    return nil, nil, doc
end

------------------------------------------------------------------------------------------------
-- Comparing

-- Same keys (values not compared).
function tbl.set_eq(left, right)
    if lj_nkeys(left) ~= lj_nkeys(right) then
        return false
    end
    for key in pairs(left) do
        if right[key] == nil then
            return false
        end
    end
    return true
end

-- Structural equality of nested tables; anything else by `==`.
local function same_shape(left, right)
    if type(left) ~= "table" or type(right) ~= "table" then
        return left == right
    end
    if lj_nkeys(left) ~= lj_nkeys(right) then
        return false
    end
    for key, val in pairs(left) do
        if not same_shape(val, right[key]) then
            return false
        end
    end
    return true
end
tbl.deep_eq = same_shape

return tbl
