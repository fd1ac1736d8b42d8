-- pl.path: the POSIX path helpers of Penlight that plugins call (moongate's own implementation
-- of Penlight's documented API; not the whole module). Paths are `/`-separated.

local type, error, select = type, error, select
local sub, match = string.sub, string.match
local concat = table.concat
local io_open = io.open

local _M = { sep = "/", dirsep = ":" }

local function check(n, p)
    if type(p) ~= "string" then
        error(("argument %d expected a 'string', got a '%s'"):format(n, type(p)), 3)
    end
end

function _M.isabs(p)
    check(1, p)
    return sub(p, 1, 1) == "/"
end

-- `p1/p2/...`; an absolute part starts over from itself.
function _M.join(p1, p2, ...)
    check(1, p1)
    if p2 == nil then
        return p1
    end
    check(2, p2)
    local joined
    if _M.isabs(p2) or p1 == "" then
        joined = p2
    elseif sub(p1, -1) == "/" then
        joined = p1 .. p2
    else
        joined = p1 .. "/" .. p2
    end
    if select("#", ...) > 0 then
        return _M.join(joined, ...)
    end
    return joined
end

-- `A//B`, `A/./B` and `A/foo/../B` all become `A/B`; a trailing `/` goes; `..` above a
-- relative start is kept; the empty path is `.`. As POSIX allows, a leading `//` stays.
function _M.normpath(p)
    check(1, p)
    if p == "" then
        return "."
    end
    local lead = ""
    if sub(p, 1, 2) == "//" and sub(p, 3, 3) ~= "/" then
        lead = "//"
    elseif sub(p, 1, 1) == "/" then
        lead = "/"
    end
    local parts = {}
    for seg in p:gmatch("[^/]+") do
        if seg == ".." then
            if #parts > 0 and parts[#parts] ~= ".." then
                parts[#parts] = nil
            elseif lead == "" then
                parts[#parts + 1] = ".."
            end
        elseif seg ~= "." then
            parts[#parts + 1] = seg
        end
    end
    local out = lead .. concat(parts, "/")
    if out == "" then
        return "."
    end
    return out
end

-- The working directory joined with `p` (normalised).
function _M.abspath(p, pwd)
    check(1, p)
    if not _M.isabs(p) then
        pwd = pwd or os.getenv("PWD") or "/"
        p = _M.join(pwd, p)
    end
    return _M.normpath(p)
end

-- `dir, file` of `p` (`/a/b/c` → `/a/b`, `c`).
function _M.splitpath(p)
    check(1, p)
    local dir, file = match(p, "^(.*)/([^/]*)$")
    if not dir then
        return "", p
    end
    if dir == "" and sub(p, 1, 1) == "/" then
        dir = "/"
    end
    return dir, file
end

function _M.dirname(p)
    return (_M.splitpath(p))
end

function _M.basename(p)
    local _, file = _M.splitpath(p)
    return file
end

-- `root, ext` (`a/b.tar.gz` → `a/b.tar`, `.gz`); a leading dot is not an extension.
function _M.splitext(p)
    check(1, p)
    local dot = match(p, "^.*()%.[^/.]*$")
    local slash = match(p, "^.*()/") or 0
    if not dot or dot <= slash + 1 then
        return p, ""
    end
    return sub(p, 1, dot - 1), sub(p, dot)
end

function _M.extension(p)
    local _, ext = _M.splitext(p)
    return ext
end

-- `p` when it exists (readable by this process), else false.
function _M.exists(p)
    check(1, p)
    local f = io_open(p, "r")
    if not f then
        return false
    end
    f:close()
    return p
end

-- Directories open but cannot be read as files.
function _M.isdir(p)
    check(1, p)
    local f = io_open(p, "r")
    if not f then
        return false
    end
    local _, _, code = f:read(1)
    f:close()
    return code == 21
end

function _M.isfile(p)
    check(1, p)
    local f = io_open(p, "r")
    if not f then
        return false
    end
    local _, _, code = f:read(0)
    f:close()
    return code ~= 21
end

-- `~` at the start replaced by `$HOME`.
function _M.expanduser(p)
    check(1, p)
    if sub(p, 1, 1) ~= "~" then
        return p
    end
    local home = os.getenv("HOME") or ""
    return home .. sub(p, 2)
end

return _M
