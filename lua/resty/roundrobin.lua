-- resty.roundrobin: weighted round robin over `{[id] = weight}` with lua-resty-balancer's API
-- (moongate's own implementation).
--
-- The pick is nginx's smooth weighted round robin: every pick adds each node's weight to its
-- running score, takes the highest score and lowers it by the total weight. Over any run of
-- `total weight` picks each node is chosen exactly `weight` times, spread out rather than in
-- bursts. Like the api7 build APISIX uses, a new balancer starts at a random point of its
-- cycle, so workers do not all hit the same node first.

local pairs, tonumber, tostring, setmetatable = pairs, tonumber, tostring, setmetatable
local random = math.random
local tbl_sort = table.sort

local _M = { _VERSION = "0.05" }
local mt = { __index = _M }

-- Nodes in a fixed order (by id text) so a balancer built twice behaves the same.
local function rebuild(self)
    local ids = {}
    for id, w in pairs(self.nodes) do
        if w > 0 then
            ids[#ids + 1] = id
        end
    end
    tbl_sort(ids, function(a, b) return tostring(a) < tostring(b) end)
    local total = 0
    local current = {}
    for i = 1, #ids do
        total = total + self.nodes[ids[i]]
        current[i] = 0
    end
    self.ids, self.current, self.total = ids, current, total
end

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

-- `rr = roundrobin:new({[id] = weight, ...})`.
function _M.new(_, nodes)
    local self = setmetatable({ nodes = copy_weights(nodes) }, mt)
    rebuild(self)
    if self.total > 0 then
        for _ = 1, random(self.total) - 1 do
            self:find()
        end
    end
    return self
end

-- Replaces all nodes.
function _M.reinit(self, nodes)
    self.nodes = copy_weights(nodes)
    rebuild(self)
end

-- Sets node `id`'s weight (adds it when new; 0 removes it).
function _M.set(self, id, weight)
    weight = tonumber(weight) or 0
    if weight > 0 then
        self.nodes[id] = weight
    else
        self.nodes[id] = nil
    end
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

-- The next node's id, or nil when no node has a weight.
function _M.find(self)
    local ids, current, total = self.ids, self.current, self.total
    local n = #ids
    if n == 0 then
        return nil
    end
    if n == 1 then
        return ids[1]
    end
    local best
    for i = 1, n do
        current[i] = current[i] + self.nodes[ids[i]]
        if not best or current[i] > current[best] then
            best = i
        end
    end
    current[best] = current[best] - total
    return ids[best]
end

_M.next = _M.find

return _M
