-- resty.chash: a consistent-hash ring over `{[id] = weight}` with lua-resty-balancer's API
-- (moongate's own implementation).
--
-- Each node gets 160 points per unit of weight, at the CRC-32 of `id` and the point's number;
-- `find(key)` takes the first point at or after the CRC-32 of `key`, going round. Adding or
-- removing a node moves only the keys that land on its points. The points are moongate's own
-- (nginx's `hash … consistent` places them differently), so a key may map to another node
-- than under OpenResty; the guarantees are the same.

local ngx = ngx
local crc32 = ngx.crc32_long
local pairs, tonumber, tostring, setmetatable = pairs, tonumber, tostring, setmetatable
local floor = math.floor
local tbl_sort = table.sort

local _M = { _VERSION = "0.05" }
local mt = { __index = _M }

local POINTS_PER_WEIGHT = 160

local function copy_weights(nodes)
    local out = {}
    for id, w in pairs(nodes or {}) do
        w = tonumber(w) or 0
        if w > 0 then
            out[id] = w
        end
    end
    return out
end

local function rebuild(self)
    local ring = {}
    for id, weight in pairs(self.nodes) do
        local text = tostring(id)
        for i = 1, floor(POINTS_PER_WEIGHT * weight) do
            ring[#ring + 1] = { hash = crc32(text .. "\0" .. i), id = id }
        end
    end
    -- Ties (two points on one hash) are broken by id so the ring does not depend on `pairs`.
    tbl_sort(ring, function(a, b)
        if a.hash ~= b.hash then
            return a.hash < b.hash
        end
        return tostring(a.id) < tostring(b.id)
    end)
    local hashes, ids = {}, {}
    for i = 1, #ring do
        hashes[i], ids[i] = ring[i].hash, ring[i].id
    end
    self.hashes, self.ids = hashes, ids
end

-- `ch = chash:new({[id] = weight, ...})`.
function _M.new(_, nodes)
    local self = setmetatable({ nodes = copy_weights(nodes) }, mt)
    rebuild(self)
    return self
end

function _M.reinit(self, nodes)
    self.nodes = copy_weights(nodes)
    rebuild(self)
end

function _M.set(self, id, weight)
    weight = tonumber(weight) or 0
    self.nodes[id] = weight > 0 and weight or nil
    rebuild(self)
end

function _M.delete(self, id)
    self.nodes[id] = nil
    rebuild(self)
end

function _M.incr(self, id, weight)
    self:set(id, (self.nodes[id] or 0) + (tonumber(weight) or 1))
end

function _M.decr(self, id, weight)
    self:set(id, (self.nodes[id] or 0) - (tonumber(weight) or 1))
end

-- The id owning `key`, and the index of its point (for `next`); nil on an empty ring.
function _M.find(self, key)
    local hashes = self.hashes
    local n = #hashes
    if n == 0 then
        return nil
    end
    local h = crc32(tostring(key))
    -- First point with hash >= h, by binary search; past the end wraps to the first.
    local lo, hi = 1, n + 1
    while lo < hi do
        local mid = floor((lo + hi) / 2)
        if hashes[mid] < h then
            lo = mid + 1
        else
            hi = mid
        end
    end
    if lo > n then
        lo = 1
    end
    return self.ids[lo], lo
end

-- The point after `index` (going round): its id and index. Callers retrying on another node
-- call it until the id differs.
function _M.next(self, index)
    local n = #self.hashes
    if n == 0 then
        return nil
    end
    index = (tonumber(index) or 0) % n + 1
    return self.ids[index], index
end

return _M
