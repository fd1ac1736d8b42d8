-- pl.tablex: the table helpers of Penlight that plugins and APISIX's modules call (moongate's
-- own implementation of Penlight's documented API; not the whole module).

local type, pairs, ipairs, setmetatable, getmetatable =
    type, pairs, ipairs, setmetatable, getmetatable
local tbl_sort = table.sort

local _M = {}

-- A shallow copy (same metatable not kept, as Penlight's `copy`).
function _M.copy(t)
    local out = {}
    for k, v in pairs(t) do
        out[k] = v
    end
    return out
end

-- A deep copy: nested tables copied, cycles kept as cycles, metatables shared.
function _M.deepcopy(t)
    local seen = {}
    local function walk(v)
        if type(v) ~= "table" then
            return v
        end
        if seen[v] then
            return seen[v]
        end
        local out = {}
        seen[v] = out
        for k, x in pairs(v) do
            out[walk(k)] = walk(x)
        end
        return setmetatable(out, getmetatable(v))
    end
    return walk(t)
end

-- True when `a` and `b` hold equal values all the way down (`ignore_mt`: do not use `__eq`;
-- `eps`: tolerance for numbers).
function _M.deepcompare(a, b, ignore_mt, eps)
    local ta, tb = type(a), type(b)
    if ta ~= tb then
        return false
    end
    if ta ~= "table" then
        if ta == "number" and eps then
            return math.abs(a - b) < eps
        end
        return a == b
    end
    local mt = getmetatable(a)
    if not ignore_mt and mt and mt.__eq then
        return a == b
    end
    for k, v in pairs(a) do
        local w = b[k]
        if w == nil or not _M.deepcompare(v, w, ignore_mt, eps) then
            return false
        end
    end
    for k in pairs(b) do
        if a[k] == nil then
            return false
        end
    end
    return true
end

-- Number of keys.
function _M.size(t)
    local n = 0
    for _ in pairs(t) do
        n = n + 1
    end
    return n
end

-- The keys / values as a list (in `pairs` order).
function _M.keys(t)
    local out = {}
    for k in pairs(t) do
        out[#out + 1] = k
    end
    return out
end

function _M.values(t)
    local out = {}
    for _, v in pairs(t) do
        out[#out + 1] = v
    end
    return out
end

-- Index of `v` in the list `t` (from `idx`, negative counts from the end), or nil.
function _M.find(t, v, idx)
    idx = idx or 1
    if idx < 0 then
        idx = #t + idx + 1
    end
    for i = idx, #t do
        if t[i] == v then
            return i
        end
    end
    return nil
end

-- `{[k] = f(v, ...)}` for every pair, and the list form `imap`.
function _M.map(f, t, ...)
    local out = {}
    for k, v in pairs(t) do
        out[k] = f(v, ...)
    end
    return out
end

function _M.imap(f, t, ...)
    local out = {}
    for i, v in ipairs(t) do
        out[i] = f(v, ...)
    end
    return out
end

-- The list items for which `f(v, arg)` is true.
function _M.filter(t, f, arg)
    local out = {}
    for _, v in ipairs(t) do
        if f(v, arg) then
            out[#out + 1] = v
        end
    end
    return out
end

-- Keys of `t1` and `t2` together (`dup`: `t2` wins), or only the shared ones.
function _M.merge(t1, t2, dup)
    local out = {}
    for k, v in pairs(t1) do
        if dup or t2[k] ~= nil then
            out[k] = v
        end
    end
    if dup then
        for k, v in pairs(t2) do
            out[k] = v
        end
    end
    return out
end

-- `t1`'s pairs whose key is not in `t2` (`symm`: and `t2`'s not in `t1`).
function _M.difference(t1, t2, symm)
    local out = {}
    for k, v in pairs(t1) do
        if t2[k] == nil then
            out[k] = v
        end
    end
    if symm then
        for k, v in pairs(t2) do
            if t1[k] == nil then
                out[k] = v
            end
        end
    end
    return out
end

-- `t` updated with every pair of `u`; returns `t`.
function _M.update(t, u)
    for k, v in pairs(u) do
        t[k] = v
    end
    return t
end

-- True when the two lists hold the same values in order.
function _M.compare(a, b, cmp)
    if #a ~= #b then
        return false
    end
    for i = 1, #a do
        if cmp then
            if not cmp(a[i], b[i]) then
                return false
            end
        elseif a[i] ~= b[i] then
            return false
        end
    end
    return true
end

-- The pairs of `t` in key order (or by `cmp` of the keys), as an iterator.
function _M.sort(t, cmp)
    local keys = _M.keys(t)
    tbl_sort(keys, cmp)
    local i = 0
    return function()
        i = i + 1
        local k = keys[i]
        if k ~= nil then
            return k, t[k]
        end
    end
end

-- `{[v] = true}` for every value of the list `t`.
function _M.makeset(t)
    local out = {}
    for _, v in ipairs(t) do
        out[v] = true
    end
    return out
end

-- `{[v] = number of times v is in the list t}`.
function _M.count_map(t)
    local out = {}
    for _, v in ipairs(t) do
        out[v] = (out[v] or 0) + 1
    end
    return out
end

-- Every pair of `t1` and `t2` (`t2` wins on a shared key).
function _M.union(t1, t2)
    return _M.merge(t1, t2, true)
end

-- The pairs whose key is in both (values from `t1`).
function _M.intersection(t1, t2)
    return _M.merge(t1, t2, false)
end

return _M
