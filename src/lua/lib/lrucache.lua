-- moongate's resty.lrucache: a least-recently-used cache with the lua-resty-lrucache API
-- (new, get, set, delete, flush_all, count, capacity, get_keys). Values live in this worker's
-- Lua heap; items expire after their ttl (seconds, fractions allowed).
local ngx_now = ngx.now
local setmetatable = setmetatable

local _M = { _VERSION = "0.13" }
local mt = { __index = _M }

function _M.new(size)
    if type(size) ~= "number" or size < 1 then
        return nil, "size too small"
    end
    -- A doubly linked list: head is the most recently used, tail the least.
    local head, tail = {}, {}
    head.next, tail.prev = tail, head
    return setmetatable({ size = size, n = 0, map = {}, head = head, tail = tail }, mt)
end

local function unlink(node)
    node.prev.next = node.next
    node.next.prev = node.prev
end

local function push_front(self, node)
    node.next = self.head.next
    node.prev = self.head
    self.head.next.prev = node
    self.head.next = node
end

function _M.get(self, key)
    local node = self.map[key]
    if not node then
        return nil
    end
    unlink(node)
    push_front(self, node)
    if node.expire and node.expire <= ngx_now() then
        return nil, node.value, node.flags
    end
    return node.value, nil, node.flags
end

function _M.set(self, key, value, ttl, flags)
    local node = self.map[key]
    if node then
        unlink(node)
    else
        if self.n >= self.size then
            local last = self.tail.prev
            unlink(last)
            self.map[last.key] = nil
            self.n = self.n - 1
        end
        node = { key = key }
        self.map[key] = node
        self.n = self.n + 1
    end
    node.value = value
    node.flags = flags
    node.expire = (ttl and ttl > 0) and (ngx_now() + ttl) or nil
    push_front(self, node)
end

function _M.delete(self, key)
    local node = self.map[key]
    if not node then
        return false
    end
    unlink(node)
    self.map[key] = nil
    self.n = self.n - 1
    return true
end

function _M.flush_all(self)
    self.map = {}
    self.n = 0
    self.head.next, self.tail.prev = self.tail, self.head
end

function _M.count(self)
    return self.n
end

function _M.capacity(self)
    return self.size
end

function _M.get_keys(self, max_count, res)
    res = res or {}
    local i, node = 0, self.head.next
    while node ~= self.tail and (not max_count or max_count == 0 or i < max_count) do
        i = i + 1
        res[i] = node.key
        node = node.next
    end
    res[i + 1] = nil
    return res
end

return _M
