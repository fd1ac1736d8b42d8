-- pl.stringx: the Python-style string helpers of Penlight that plugins call (moongate's own
-- implementation of Penlight's documented API; not the whole module). Every function takes the
-- string first, as Penlight's do, so they also work as `stringx.f(s, ...)`.

local type, error, ipairs = type, error, ipairs
local find, sub, rep, gsub, match, lower, upper, fmt =
    string.find, string.sub, string.rep, string.gsub, string.match, string.lower,
    string.upper, string.format
local concat = table.concat

local _M = {}

local function assert_string(n, s)
    if type(s) ~= "string" then
        error(fmt("argument %d expected a 'string', got a '%s'", n, type(s)), 3)
    end
end

-- `chars` as a Lua pattern class body (every character literal).
local function class_of(chars)
    return (gsub(chars, "[%^%]%-%%]", "%%%0"))
end

-- Whitespace (or the characters of `chars`) removed from both ends.
function _M.strip(s, chars)
    assert_string(1, s)
    if chars then
        local c = class_of(chars)
        return (gsub(gsub(s, "^[" .. c .. "]+", ""), "[" .. c .. "]+$", ""))
    end
    return match(s, "^%s*(.-)%s*$")
end

function _M.lstrip(s, chars)
    assert_string(1, s)
    local c = chars and class_of(chars) or "%s"
    return (gsub(s, "^[" .. c .. "]+", ""))
end

function _M.rstrip(s, chars)
    assert_string(1, s)
    local c = chars and class_of(chars) or "%s"
    return (gsub(s, "[" .. c .. "]+$", ""))
end

-- The list of pieces of `s` between occurrences of `sep` (plain text); without `sep`, the runs
-- of non-space characters. `n` limits the number of pieces (the last holds the rest).
function _M.split(s, sep, n)
    assert_string(1, s)
    local out = {}
    if sep == nil or sep == "" then
        for word in s:gmatch("%S+") do
            out[#out + 1] = word
        end
        if n and #out > n then
            local rest = {}
            for i = n, #out do
                rest[#rest + 1] = out[i]
            end
            for i = #out, n, -1 do
                out[i] = nil
            end
            out[n] = concat(rest, " ")
        end
        return out
    end
    local pos = 1
    while true do
        if n and #out == n - 1 then
            out[#out + 1] = sub(s, pos)
            break
        end
        local from, to = find(s, sep, pos, true)
        if not from then
            out[#out + 1] = sub(s, pos)
            break
        end
        out[#out + 1] = sub(s, pos, from - 1)
        pos = to + 1
    end
    return out
end

function _M.startswith(s, prefix)
    assert_string(1, s)
    return sub(s, 1, #prefix) == prefix
end

function _M.endswith(s, suffix)
    assert_string(1, s)
    if type(suffix) == "table" then
        for _, x in ipairs(suffix) do
            if _M.endswith(s, x) then
                return true
            end
        end
        return false
    end
    return #suffix == 0 or sub(s, -#suffix) == suffix
end

-- Index of the first (`lfind`) or last (`rfind`) plain occurrence of `sub_s`, within
-- `[first, last]`; nil when absent.
function _M.lfind(s, sub_s, first, last)
    assert_string(1, s)
    local from = find(s, sub_s, first or 1, true)
    if from and (not last or from + #sub_s - 1 <= last) then
        return from
    end
    return nil
end

function _M.rfind(s, sub_s, first, last)
    assert_string(1, s)
    local found
    local pos = first or 1
    while true do
        local from = find(s, sub_s, pos, true)
        if not from or (last and from + #sub_s - 1 > last) then
            break
        end
        found = from
        pos = from + 1
    end
    return found
end

-- `s` with (the first `n`) plain occurrences of `old` replaced by `new`.
function _M.replace(s, old, new, n)
    assert_string(1, s)
    local escaped = gsub(old, "[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0")
    local repl = gsub(new, "%%", "%%%%")
    return (gsub(s, escaped, repl, n))
end

function _M.count(s, sub_s)
    assert_string(1, s)
    local c, pos = 0, 1
    while true do
        local from, to = find(s, sub_s, pos, true)
        if not from then
            return c
        end
        c = c + 1
        pos = to + 1
    end
end

function _M.join(sep, list)
    return concat(list, sep)
end

function _M.splitlines(s, keep_ends)
    assert_string(1, s)
    local out = {}
    local pos = 1
    while pos <= #s do
        local from, to = find(s, "\r?\n", pos)
        if not from then
            out[#out + 1] = sub(s, pos)
            break
        end
        out[#out + 1] = sub(s, pos, keep_ends and to or from - 1)
        pos = to + 1
    end
    return out
end

function _M.isdigit(s)
    return find(s, "^%d+$") ~= nil
end

function _M.isalpha(s)
    return find(s, "^%a+$") ~= nil
end

function _M.isalnum(s)
    return find(s, "^%w+$") ~= nil
end

function _M.isspace(s)
    return find(s, "^%s+$") ~= nil
end

function _M.islower(s)
    return find(s, "%l") ~= nil and not find(s, "%u")
end

function _M.isupper(s)
    return find(s, "%u") ~= nil and not find(s, "%l")
end

function _M.capitalize(s)
    return upper(sub(s, 1, 1)) .. lower(sub(s, 2))
end

-- `s` centred (`center`), left- (`ljust`) or right-justified (`rjust`) in `w` columns.
function _M.ljust(s, w, ch)
    return s .. rep(ch or " ", w - #s)
end

function _M.rjust(s, w, ch)
    return rep(ch or " ", w - #s) .. s
end

function _M.center(s, w, ch)
    local pad = w - #s
    if pad <= 0 then
        return s
    end
    local left = math.floor(pad / 2)
    return rep(ch or " ", left) .. s .. rep(ch or " ", pad - left)
end

-- `s` cut to `w` characters, ending in `tail` (default "...") when cut.
function _M.shorten(s, w, tail)
    if #s <= w then
        return s
    end
    tail = tail or "..."
    return sub(s, 1, w - #tail) .. tail
end

return _M
