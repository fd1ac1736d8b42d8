-- core.config_util: helpers over config items: `iterate_values` (the values of a list of
-- config items) and `parse_time_unit` ("1h30m" → seconds, APISIX's units and errors).

local type, ipairs, tonumber = type, ipairs, tonumber

local _M = {}

-- Iterates `(index, item)` over the non-nil items of a config item list.
function _M.iterate_values(tab)
    local i = 0
    return function()
        while true do
            i = i + 1
            local v = tab[i]
            if v == nil then
                return nil
            end
            if type(v) == "table" then
                return i, v
            end
        end
    end
end

-- Units from the largest down: a duration names each at most once, in this order.
local UNITS = {
    { "y", 31536000 }, { "M", 2592000 }, { "w", 604800 }, { "d", 86400 },
    { "h", 3600 }, { "m", 60 }, { "s", 1 }, { "ms", 0.001 },
}
local RANK, SECONDS = {}, {}
for i, u in ipairs(UNITS) do
    RANK[u[1]], SECONDS[u[1]] = i, u[2]
end
local SECOND_RANK = RANK.s

-- "10", "10s", "1h30m", "1h 30m", "1s100ms", "1y1M1w1d1h1m1s1ms", "1h110" (a bare last number is
-- seconds) → seconds; `nil, err` naming what is wrong: `invalid data: C` (C the character that
-- cannot start a number, empty at the end), `unexpected unit: U` (out of order or repeated),
-- `specific unit conflicts with the default unit second` (a bare number after `s` or `ms`).
function _M.parse_time_unit(s)
    if type(s) == "number" then
        s = tostring(s)
    end
    if type(s) ~= "string" then
        return nil, "invalid data: " .. tostring(s)
    end
    local total, pos, last_rank, len = 0, 1, 0, #s
    repeat
        pos = s:match("^%s*()", pos)
        local num, after = s:match("^(%d+)()", pos)
        if not num then
            return nil, "invalid data: " .. s:sub(pos, pos)
        end
        after = s:match("^%s*()", after)
        local unit = s:match("^ms", after) or s:match("^[yMwdhms]", after)
        if unit then
            local rank = RANK[unit]
            if rank <= last_rank then
                return nil, "unexpected unit: " .. unit
            end
            last_rank = rank
            total = total + tonumber(num) * SECONDS[unit]
            pos = after + #unit
        elseif after > len then
            if last_rank >= SECOND_RANK then
                return nil, "specific unit conflicts with the default unit second"
            end
            return total + tonumber(num)
        else
            return nil, "invalid data: " .. s:sub(after, after)
        end
        pos = s:match("^%s*()", pos)
    until pos > len
    return total
end

return _M
