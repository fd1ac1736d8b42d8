-- core.config_util: helpers over config items: `iterate_values` (the values of a list of
-- config items) and `parse_time_unit` ("1h30m" → seconds).

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

local units = { s = 1, m = 60, h = 3600, d = 86400, w = 604800 }

-- "10", "10s", "5m", "1h30m", "2d" → seconds; `nil, err` for anything else.
function _M.parse_time_unit(s)
    local n = tonumber(s)
    if n then
        return n
    end
    if type(s) ~= "string" or s == "" then
        return nil, "invalid data: " .. tostring(s)
    end
    local total, pos = 0, 1
    while pos <= #s do
        local num, unit, nxt = s:match("^(%d+)([smhdw])()", pos)
        if not num then
            return nil, "invalid data: " .. s
        end
        total = total + tonumber(num) * units[unit]
        pos = nxt
    end
    return total
end

return _M
