-- moongate's tablepool: reusable tables by pool name, with the lua-tablepool API
-- (fetch(tag, narr, nrec), release(tag, t, noclear)).
local new_tab, clear_tab = require("table.new"), require("table.clear")

local pools = {}
local MAX_POOL = 200

local _M = {}

function _M.fetch(tag, narr, nrec)
    local pool = pools[tag]
    if pool and pool.n > 0 then
        local t = pool[pool.n]
        pool[pool.n] = nil
        pool.n = pool.n - 1
        return t
    end
    return new_tab(narr or 0, nrec or 0)
end

function _M.release(tag, t, noclear)
    if not t then
        error("object empty", 2)
    end
    local pool = pools[tag]
    if not pool then
        pool = { n = 0 }
        pools[tag] = pool
    end
    if pool.n >= MAX_POOL then
        return
    end
    if not noclear then
        clear_tab(t)
    end
    pool.n = pool.n + 1
    pool[pool.n] = t
end

return _M
