-- resty.http_headers: a header table whose lookups ignore case, as lua-resty-http's responses
-- carry them (`res.headers["content-type"]` and `res.headers["Content-Type"]` are the same
-- entry). The first spelling stored is the one `pairs` shows; later writes in another case
-- replace the value under that spelling.

local lower = string.lower
local rawget, rawset, setmetatable = rawget, rawset, setmetatable

local _M = { _VERSION = "0.17.2" }

function _M.new()
    -- spelling[lower-cased name] = the name as first stored
    local spelling = {}
    local mt = {
        __index = function(t, k)
            if type(k) ~= "string" then
                return nil
            end
            local name = spelling[lower(k)]
            if name == nil then
                return nil
            end
            return rawget(t, name)
        end,
        __newindex = function(t, k, v)
            if type(k) ~= "string" then
                rawset(t, k, v)
                return
            end
            local key = lower(k)
            local name = spelling[key]
            if name == nil then
                if v == nil then
                    return
                end
                spelling[key] = k
                name = k
            elseif v == nil then
                spelling[key] = nil
            end
            rawset(t, name, v)
        end,
    }
    return setmetatable({}, mt)
end

return _M
