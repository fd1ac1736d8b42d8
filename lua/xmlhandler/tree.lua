-- xmlhandler.tree: the xml2lua handler that turns a document into nested Lua tables, with
-- xmlhandler.tree's shape (moongate's own implementation).
--
-- `handler.root[NAME]` is the root element. An element becomes a table of its children by
-- name, with its attributes under `_attr` and its text at `[1]`; an element holding only text
-- (no attributes, no children) becomes that string; an empty element stays `{}`. A name that
-- repeats under one parent becomes a list of those elements, in document order.
-- `options.noreduce[NAME] = true` keeps NAME as a table even when it holds only text.

local type, next, pairs, rawget, setmetatable = type, next, pairs, rawget, setmetatable

local tree = {}
tree.__index = tree

-- Lists this handler made for repeated names, so they are told apart from an element's table.
local function fresh(obj)
    obj.root = {}
    obj._stack = { { node = obj.root } }
    obj._lists = setmetatable({}, { __mode = "k" })
    obj.options = rawget(obj, "options") or { noreduce = {} }
    obj.options.noreduce = obj.options.noreduce or {}
    return obj
end

-- A new, empty tree handler.
function tree:new()
    return fresh(setmetatable({}, tree))
end

function tree:starttag(tag)
    local node = {}
    if tag.attrs and next(tag.attrs) ~= nil then
        node._attr = tag.attrs
    end
    local top = self._stack[#self._stack]
    local parent = top.node
    local name = tag.name
    local slot = { node = node, parent = parent, name = name }
    local existing = parent[name]
    if existing == nil then
        parent[name] = node
    elseif type(existing) == "table" and self._lists[existing] then
        existing[#existing + 1] = node
        slot.list, slot.index = existing, #existing
    else
        local list = { existing, node }
        self._lists[list] = true
        parent[name] = list
        slot.list, slot.index = list, 2
        -- The first element's slot moved into the list.
        for i = #self._stack, 1, -1 do
            local s = self._stack[i]
            if s.node == existing and s.parent == parent then
                s.list, s.index = list, 1
            end
        end
    end
    self._stack[#self._stack + 1] = slot
end

local function only_text(node)
    if type(node[1]) ~= "string" then
        return false
    end
    for k in pairs(node) do
        if k ~= 1 then
            return false
        end
    end
    return true
end

function tree:endtag(tag)
    local slot = self._stack[#self._stack]
    if not slot or slot.name ~= tag.name then
        return
    end
    self._stack[#self._stack] = nil
    local node = slot.node
    if self.options.noreduce[slot.name] or not only_text(node) then
        return
    end
    -- Text only: the element is its text.
    if slot.list then
        slot.list[slot.index] = node[1]
    else
        slot.parent[slot.name] = node[1]
    end
end

function tree:text(text)
    local node = self._stack[#self._stack].node
    if node[1] == nil then
        node[1] = text
    else
        node[1] = node[1] .. text
    end
end

tree.cdata = tree.text

-- The module is itself a usable handler (xml2lua's examples parse straight into it).
return fresh(tree)
