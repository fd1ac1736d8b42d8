-- core.string: byte-string helpers plugins use. Anything else (`format`, `sub`, `byte`, …) is
-- looked up in Lua's own `string` library.

local ngx = ngx
local type, error, setmetatable = type, error, setmetatable
local sfind, ssub, sbyte, sformat = string.find, string.sub, string.byte, string.format

local text = setmetatable({ version = 0.1 }, { __index = string })

-- Searches `needle` literally (no Lua patterns), from position `init` (default 1).
function text.find(haystack, needle, init)
    return sfind(haystack, needle, init or 1, true)
end

-- Both affix checks refuse non-strings with the message APISIX's callers may match on.
local function want_strings(subject, affix, role)
    if type(subject) == "string" and type(affix) == "string" then
        return
    end
    error(sformat("unexpected type: s:%s, %s:%s", type(subject), role, type(affix)), 2)
end

function text.has_prefix(s, prefix)
    want_strings(s, prefix, "prefix")
    return ssub(s, 1, #prefix) == prefix
end

function text.has_suffix(s, suffix)
    want_strings(s, suffix, "suffix")
    local n = #suffix
    if n == 0 then
        return true
    end
    return #s >= n and ssub(s, -n) == suffix
end

-- Index of the last byte equal to `ch` at or before `idx` (default: the last byte), or nil.
function text.rfind_char(s, ch, idx)
    local wanted = sbyte(ch)
    local pos = idx or #s
    while pos >= 1 do
        if sbyte(s, pos) == wanted then
            return pos
        end
        pos = pos - 1
    end
    return nil
end

-- Normalises a Redis Lua script (no indentation, no blanks after commas) so one script always
-- hashes to the same SHA for EVALSHA.
function text.compress_script(script)
    local trimmed = ngx.re.gsub(script, [[^\s+]], "", "mjo")
    return (ngx.re.gsub(trimmed, [[,\s+]], ",", "mjo"))
end

-- ngx.decode_args stops at 100 arguments unless told otherwise; plugins want them all.
function text.decode_args(query)
    return ngx.decode_args(query, 0)
end

function text.encode_args(args)
    return ngx.encode_args(args)
end

return text
