-- core.string: plain-text helpers, plus (through `__index`) Lua's `string` library, so
-- `core.string.format`/`sub`/`byte` are the standard functions.

local type, error, setmetatable = type, error, setmetatable
local find, sub, byte = string.find, string.sub, string.byte
local ngx = ngx
local re_gsub = ngx.re.gsub

local _M = { version = 0.1 }
setmetatable(_M, { __index = string })

-- Plain (non-pattern) find.
function _M.find(haystack, needle, from)
    return find(haystack, needle, from or 1, true)
end

function _M.has_prefix(s, prefix)
    if type(s) ~= "string" or type(prefix) ~= "string" then
        error("unexpected type: s:" .. type(s) .. ", prefix:" .. type(prefix))
    end
    return #s >= #prefix and sub(s, 1, #prefix) == prefix
end

function _M.has_suffix(s, suffix)
    if type(s) ~= "string" or type(suffix) ~= "string" then
        error("unexpected type: s:" .. type(s) .. ", suffix:" .. type(suffix))
    end
    return #s >= #suffix and (#suffix == 0 or sub(s, -#suffix) == suffix)
end

-- Position of the last byte `ch` at or before `idx` (default: the end), or nil.
function _M.rfind_char(s, ch, idx)
    local b = byte(ch)
    for i = idx or #s, 1, -1 do
        if byte(s, i) == b then
            return i
        end
    end
    return nil
end

-- A Redis Lua script without leading indentation and with no blanks after commas, so the
-- same script always has the same SHA.
function _M.compress_script(s)
    s = re_gsub(s, [[^\s+]], "", "mjo")
    s = re_gsub(s, [[,\s+]], ",", "mjo")
    return s
end

-- No limit on the number of arguments (ngx.decode_args stops at 100 by default).
function _M.decode_args(args)
    return ngx.decode_args(args, 0)
end

function _M.encode_args(args)
    return ngx.encode_args(args)
end

return _M
