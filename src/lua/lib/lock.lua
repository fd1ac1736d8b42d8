-- moongate's resty.lock: a non-blocking lock over an ngx.shared dictionary, with the
-- lua-resty-lock API (new, lock, unlock, expire). Waiting polls the dictionary with growing
-- sleeps, which suspend only the waiting request.
local ngx_shared, ngx_sleep, ngx_now = ngx.shared, ngx.sleep, ngx.now
local setmetatable = setmetatable

local _M = { _VERSION = "0.09" }
local mt = { __index = _M }

function _M.new(_, dict_name, opts)
    local dict = ngx_shared[dict_name]
    if not dict then
        return nil, "dictionary not found"
    end
    opts = opts or {}
    return setmetatable({
        dict = dict,
        exptime = opts.exptime or 30,
        timeout = opts.timeout or 5,
        step = opts.step or 0.001,
        ratio = opts.ratio or 2,
        max_step = opts.max_step or 0.5,
    }, mt)
end

function _M.lock(self, key)
    if not key then
        return nil, "nil key"
    end
    if self.key then
        return nil, "locked"
    end
    local ok, err = self.dict:add(key, true, self.exptime)
    if ok then
        self.key = key
        return 0
    end
    if err ~= "exists" then
        return nil, err
    end
    local start, step = ngx_now(), self.step
    while ngx_now() - start < self.timeout do
        local wait = step
        local left = self.timeout - (ngx_now() - start)
        if wait > left then wait = left end
        ngx_sleep(wait)
        ok, err = self.dict:add(key, true, self.exptime)
        if ok then
            self.key = key
            return ngx_now() - start
        end
        if err ~= "exists" then
            return nil, err
        end
        step = step * self.ratio
        if step > self.max_step then step = self.max_step end
    end
    return nil, "timeout"
end

function _M.unlock(self)
    if not self.key then
        return nil, "unlocked"
    end
    self.dict:delete(self.key)
    self.key = nil
    return 1
end

function _M.expire(self, time)
    if not self.key then
        return nil, "unlocked"
    end
    local ok, err = self.dict:replace(self.key, true, time or self.exptime)
    if not ok then
        return nil, err
    end
    return true
end

return _M
