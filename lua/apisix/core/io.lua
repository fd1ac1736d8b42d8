-- core.io: whole-file reads.

local open = io.open

local _M = {}

-- The file's content, or `nil, err`.
function _M.get_file(path)
    local f, err = open(path, "rb")
    if not f then
        return nil, err
    end
    local data, rerr = f:read("*a")
    f:close()
    if not data then
        return nil, rerr
    end
    return data
end

return _M
