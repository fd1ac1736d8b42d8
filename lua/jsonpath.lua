-- Licensed under the Apache License, Version 2.0.
--
-- `jsonpath`: moongate's own JSONPath over decoded JSON tables, with the API of the `jsonpath`
-- rock that APISIX's acl and data-mask plugins require (`parse`, `query`, `paths`, `nodes`,
-- `value`, `parent`, `apply`, `stringify`). Written from the documented JSONPath syntax
-- (Goessner's), not from any implementation.
--
-- A path without a leading "$" starts at the root ("a.b" is "$.a.b").
-- A path is a list whose first element is "$", then string keys and 0-based array indexes, as
-- JSONPath numbers arrays. Results come in document order: arrays by index, object keys sorted
-- (Lua tables have no order of their own; sorting keeps answers stable). Filter `[?(…)]` and
-- script `[(…)]` subscripts are refused at parse time with an error naming them: they evaluate
-- JavaScript in the original library, and no APISIX plugin needs them.

local type = type
local pairs = pairs
local ipairs = ipairs
local tonumber = tonumber
local tostring = tostring
local sort = table.sort
local concat = table.concat
local str_find = string.find
local str_sub = string.sub
local str_format = string.format

local _M = { version = "1.0" }

local array_mt
do
    local ok, cjson = pcall(require, "cjson")
    if ok then
        array_mt = cjson.array_mt
    end
end

-- A table whose keys are exactly 1..n (n > 0), or one cjson marked as an array.
local function is_array(t)
    if array_mt and getmetatable(t) == array_mt then
        return true
    end
    local n = #t
    if n == 0 then
        return false
    end
    local count = 0
    for _ in pairs(t) do
        count = count + 1
        if count > n then
            return false
        end
    end
    return count == n
end

-- The children of a table as (key, value) in document order; keys are JSONPath keys
-- (0-based numbers for arrays, strings for objects).
local function children(t)
    local out = {}
    if is_array(t) then
        for i = 1, #t do
            out[#out + 1] = { i - 1, t[i] }
        end
        return out
    end
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    sort(keys, function(a, b)
        local ta, tb = type(a), type(b)
        if ta ~= tb then
            return ta < tb
        end
        return a < b
    end)
    for _, k in ipairs(keys) do
        out[#out + 1] = { k, t[k] }
    end
    return out
end

---------------------------------------------------------------------------------------------
-- Parsing: "$" then components {scope = "child"|"descendant", kind = ..., ...}.
---------------------------------------------------------------------------------------------

local function parse_error(expr, pos, what)
    return nil, str_format("jsonpath: %s at position %d of %q", what, pos, expr)
end

-- One subscript item inside brackets: a quoted string, an integer, or a slice.
local function parse_item(expr, text, pos)
    local q = str_sub(text, 1, 1)
    if q == "'" or q == '"' then
        if #text < 2 or str_sub(text, -1) ~= q then
            return parse_error(expr, pos, "unterminated string")
        end
        local inner = str_sub(text, 2, -2)
        inner = inner:gsub("\\(.)", "%1")
        return { kind = "member", name = inner }
    end
    if str_find(text, ":", 1, true) then
        local a, b, c = text:match("^%s*(%-?%d*)%s*:%s*(%-?%d*)%s*:?%s*(%-?%d*)%s*$")
        if not a then
            return parse_error(expr, pos, "invalid slice " .. text)
        end
        local step = tonumber(c) or 1
        if step == 0 then
            return parse_error(expr, pos, "slice step 0")
        end
        return { kind = "slice", from = tonumber(a), to = tonumber(b), step = step }
    end
    local n = text:match("^%s*(%-?%d+)%s*$")
    if n then
        return { kind = "index", index = tonumber(n) }
    end
    if text:match("^%s*%*%s*$") then
        return { kind = "wildcard" }
    end
    local name = text:match("^%s*([%w_%$%-]+)%s*$")
    if name then
        return { kind = "member", name = name }
    end
    return parse_error(expr, pos, "invalid subscript " .. text)
end

-- The text between "[" at `pos` and its matching "]", split on top-level commas.
local function parse_brackets(expr, pos)
    local first = str_sub(expr, pos + 1, pos + 1)
    if first == "?" or first == "(" then
        return parse_error(expr, pos,
            "filter and script expressions ([?(…)], [(…)]) are not supported by moongate's jsonpath")
    end
    local items, buf, i, quote = {}, {}, pos + 1, nil
    while i <= #expr do
        local ch = str_sub(expr, i, i)
        if quote then
            buf[#buf + 1] = ch
            if ch == "\\" then
                i = i + 1
                buf[#buf + 1] = str_sub(expr, i, i)
            elseif ch == quote then
                quote = nil
            end
        elseif ch == "'" or ch == '"' then
            quote = ch
            buf[#buf + 1] = ch
        elseif ch == "," or ch == "]" then
            local item, err = parse_item(expr, concat(buf):match("^%s*(.-)%s*$"), i)
            if not item then
                return nil, err
            end
            items[#items + 1] = item
            buf = {}
            if ch == "]" then
                return items, i + 1
            end
        else
            buf[#buf + 1] = ch
        end
        i = i + 1
    end
    return parse_error(expr, pos, "unclosed [")
end

local parse_cache = {}
local parse_cache_size = 0

--- Parses a JSONPath expression. Returns the list of components (the first is the root), or
--- nil and an error.
function _M.parse(expr)
    if type(expr) ~= "string" then
        return nil, "jsonpath: the path expression must be a string"
    end
    local cached = parse_cache[expr]
    if cached then
        return cached
    end
    local comps = { { kind = "root" } }
    local pos = 2
    local text = expr
    if str_sub(expr, 1, 1) ~= "$" then
        -- A path without its root ("groups", acl's default) is read from the root, as the
        -- original library reads it.
        if expr == "" then
            return parse_error(expr, 1, "empty path")
        end
        local first = str_sub(expr, 1, 1)
        expr = (first == "[" or first == ".") and "$" .. expr or "$." .. expr
    end
    while pos <= #expr do
        local scope = "child"
        local ch = str_sub(expr, pos, pos)
        if ch == "." then
            if str_sub(expr, pos + 1, pos + 1) == "." then
                scope = "descendant"
                pos = pos + 2
            else
                pos = pos + 1
            end
            ch = str_sub(expr, pos, pos)
            if ch == "*" then
                comps[#comps + 1] = { scope = scope, items = { { kind = "wildcard" } } }
                pos = pos + 1
            elseif ch == "[" and scope == "descendant" then
                local items, next_pos = parse_brackets(expr, pos)
                if not items then
                    return nil, next_pos
                end
                comps[#comps + 1] = { scope = scope, items = items }
                pos = next_pos
            else
                local name = expr:match("^[%w_%$%-]+", pos)
                if not name then
                    return parse_error(expr, pos, "expected a member name")
                end
                comps[#comps + 1] = { scope = scope, items = { { kind = "member", name = name } } }
                pos = pos + #name
            end
        elseif ch == "[" then
            local items, next_pos = parse_brackets(expr, pos)
            if not items then
                return nil, next_pos
            end
            comps[#comps + 1] = { scope = scope, items = items }
            pos = next_pos
        else
            return parse_error(expr, pos, str_format("unexpected %q", ch))
        end
    end
    -- A small cache: plugins parse the same configured expression on every request.
    if parse_cache_size > 1024 then
        parse_cache = {}
        parse_cache_size = 0
    end
    parse_cache[text] = comps
    parse_cache_size = parse_cache_size + 1
    return comps
end

---------------------------------------------------------------------------------------------
-- Evaluation over nodes {path = {...}, value = v}.
---------------------------------------------------------------------------------------------

local function extend(path, key)
    local p = {}
    for i = 1, #path do
        p[i] = path[i]
    end
    p[#p + 1] = key
    return p
end

local function select_item(node, item, out)
    local v = node.value
    if type(v) ~= "table" then
        return
    end
    local kind = item.kind
    if kind == "wildcard" then
        for _, kv in ipairs(children(v)) do
            out[#out + 1] = { path = extend(node.path, kv[1]), value = kv[2] }
        end
    elseif kind == "member" then
        local child = v[item.name]
        if child ~= nil and not is_array(v) then
            out[#out + 1] = { path = extend(node.path, item.name), value = child }
        end
    elseif kind == "index" then
        if is_array(v) then
            local idx = item.index
            if idx < 0 then
                idx = #v + idx
            end
            local child = v[idx + 1]
            if child ~= nil then
                out[#out + 1] = { path = extend(node.path, idx), value = child }
            end
        end
    elseif kind == "slice" then
        if is_array(v) then
            local n, step = #v, item.step
            local from, to = item.from, item.to
            if step > 0 then
                from = from or 0
                to = to or n
            else
                from = from or n - 1
                to = to or -n - 1
            end
            if from < 0 then from = from + n end
            if to < 0 then to = to + n end
            local i = from
            while (step > 0 and i < to) or (step < 0 and i > to) do
                if i >= 0 and i < n then
                    out[#out + 1] = { path = extend(node.path, i), value = v[i + 1] }
                end
                i = i + step
            end
        end
    end
end

-- The node and every node below it, parents before children.
local function descend(node, out)
    out[#out + 1] = node
    if type(node.value) == "table" then
        for _, kv in ipairs(children(node.value)) do
            descend({ path = extend(node.path, kv[1]), value = kv[2] }, out)
        end
    end
end

local function evaluate(obj, expr, count)
    if type(obj) ~= "table" then
        return nil, "jsonpath: obj needs to be a table"
    end
    local comps, err = _M.parse(expr)
    if not comps then
        return nil, err
    end
    local nodes = { { path = { "$" }, value = obj } }
    for ci = 2, #comps do
        local comp = comps[ci]
        local bases = nodes
        if comp.scope == "descendant" then
            bases = {}
            for _, n in ipairs(nodes) do
                descend(n, bases)
            end
        end
        local out = {}
        for _, n in ipairs(bases) do
            for _, item in ipairs(comp.items) do
                select_item(n, item, out)
            end
        end
        nodes = out
    end
    if count and count < #nodes then
        local limited = {}
        for i = 1, count do
            limited[i] = nodes[i]
        end
        nodes = limited
    end
    return nodes
end

--- Every {path, value} the expression matches (at most `count`).
function _M.nodes(obj, expr, count)
    return evaluate(obj, expr, count)
end

--- Every value the expression matches.
function _M.query(obj, expr, count)
    local nodes, err = evaluate(obj, expr, count)
    if not nodes then
        return nil, err
    end
    local out = {}
    for i, n in ipairs(nodes) do
        out[i] = n.value
    end
    return out
end

--- Every path the expression matches.
function _M.paths(obj, expr, count)
    local nodes, err = evaluate(obj, expr, count)
    if not nodes then
        return nil, err
    end
    local out = {}
    for i, n in ipairs(nodes) do
        out[i] = n.path
    end
    return out
end

local function lua_key(k)
    if type(k) == "number" then
        return k + 1
    end
    return k
end

-- The table holding the element at `path` (a jsonpath path), creating missing objects when
-- `create` is set.
local function holder(obj, path, create)
    local t = obj
    for i = 2, #path - 1 do
        local k = lua_key(path[i])
        local nxt = t[k]
        if type(nxt) ~= "table" then
            if not create then
                return nil
            end
            nxt = {}
            t[k] = nxt
        end
        t = nxt
    end
    return t
end

-- A path of plain members and indexes only (no wildcard, slice, union or descendant), as a
-- jsonpath path: what `value` may create when nothing matches.
local function plain_path(expr)
    local comps = _M.parse(expr)
    if not comps then
        return nil
    end
    local path = { "$" }
    for ci = 2, #comps do
        local c = comps[ci]
        if c.scope ~= "child" or #c.items ~= 1 then
            return nil
        end
        local item = c.items[1]
        if item.kind == "member" then
            path[#path + 1] = item.name
        elseif item.kind == "index" and item.index >= 0 then
            path[#path + 1] = item.index
        else
            return nil
        end
    end
    return path
end

--- The first value the expression matches; with `new_value`, sets it there first (creating
--- the path when nothing matches and the path is plain members and indexes).
function _M.value(obj, expr, new_value)
    local nodes, err = evaluate(obj, expr, 1)
    if not nodes then
        return nil, err
    end
    if new_value ~= nil then
        local path = nodes[1] and nodes[1].path or plain_path(expr)
        if not path or #path < 2 then
            return nil, "jsonpath: cannot set a value at " .. expr
        end
        local t = holder(obj, path, true)
        t[lua_key(path[#path])] = new_value
        return new_value
    end
    return nodes[1] and nodes[1].value
end

--- The parent of the first match.
function _M.parent(obj, expr)
    local nodes, err = evaluate(obj, expr, 1)
    if not nodes then
        return nil, err
    end
    local n = nodes[1]
    if not n or #n.path < 2 then
        return nil
    end
    if #n.path == 2 then
        return obj
    end
    return holder(obj, n.path, false)
end

--- Replaces every match by `fn(value)`; returns the nodes with their new values. Deepest
--- matches go first, so a parent's replacement never hides a child's.
function _M.apply(obj, expr, fn)
    local nodes, err = evaluate(obj, expr)
    if not nodes then
        return nil, err
    end
    sort(nodes, function(a, b) return #a.path > #b.path end)
    for _, n in ipairs(nodes) do
        local v = fn(n.value)
        if #n.path >= 2 then
            local t = holder(obj, n.path, false)
            if t then
                t[lua_key(n.path[#n.path])] = v
            end
        end
        n.value = v
    end
    return nodes
end

--- A path (list) back to an expression: `$.a[0]["b c"]`.
function _M.stringify(path)
    if type(path) ~= "table" then
        return nil, "jsonpath: path needs to be a table"
    end
    local out = { "$" }
    local start = path[1] == "$" and 2 or 1
    for i = start, #path do
        local k = path[i]
        if type(k) == "number" then
            out[#out + 1] = "[" .. k .. "]"
        elseif tostring(k):match("^[%a_%$][%w_%$]*$") then
            out[#out + 1] = "." .. k
        else
            out[#out + 1] = '["' .. tostring(k):gsub('["\\]', "\\%0") .. '"]'
        end
    end
    return concat(out)
end

return _M
