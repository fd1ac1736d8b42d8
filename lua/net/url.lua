-- net.url: URL and query-string parsing, building, normalising and resolving, with the API of
-- the net-url rock (moongate's own implementation of its documented behaviour).
--
-- `url.parse(text)` gives a table with `scheme`, `user`, `password`, `userinfo`, `host`, `port`
-- (a number), `authority`, `path`, `query` (a table of decoded parameters that prints back as a
-- query string) and `fragment`; `tostring(u)` builds the URL again. Paths come back with
-- their escapes decoded and what a path may not hold bare escaped again; `normalize` also
-- removes dot segments and repeated slashes.

local type, pairs, ipairs, next, tostring, tonumber, setmetatable =
    type, pairs, ipairs, next, tostring, tonumber, setmetatable
local find, sub, gsub, lower, upper, match, byte, char, fmt =
    string.find, string.sub, string.gsub, string.lower, string.upper, string.match,
    string.byte, string.char, string.format
local concat, sort = table.concat, table.sort

local M = { _VERSION = "1.2" }

-- Behaviour switches, as the rock names them.
M.options = {
    separator = "&",
    cumulative_parameters = false,
    legal_in_path = {
        [":"] = true, ["-"] = true, ["_"] = true, ["."] = true, ["!"] = true, ["~"] = true,
        ["*"] = true, ["'"] = true, ["("] = true, [")"] = true, ["@"] = true, ["&"] = true,
        ["="] = true, ["$"] = true, [","] = true, [";"] = true,
    },
    legal_in_query = {
        [":"] = true, ["-"] = true, ["_"] = true, ["."] = true, [","] = true, ["!"] = true,
        ["~"] = true, ["*"] = true, ["'"] = true, [";"] = true, ["("] = true, [")"] = true,
        ["@"] = true, ["$"] = true,
    },
    query_plus_is_space = true,
}

-- Default ports, removed by `normalize`.
M.services = {
    acap = 674, cap = 1026, dict = 2628, ftp = 21, gopher = 70, http = 80, https = 443,
    iax = 4569, icap = 1344, imap = 143, ipp = 631, ldap = 389, mtqp = 1038, mupdate = 3905,
    news = 2009, nfs = 2049, nntp = 119, rtsp = 554, sip = 5060, snmp = 161, telnet = 23,
    tftp = 69, vemmi = 575, afs = 1483, jms = 5673, rsync = 873, prospero = 191,
    videotex = 516, ws = 80, wss = 443,
}

-- Characters a user name or password keeps unescaped (RFC 3986's userinfo, without `:`).
local LEGAL_IN_USERINFO = {
    ["-"] = true, ["_"] = true, ["."] = true, ["~"] = true, ["!"] = true, ["$"] = true,
    ["&"] = true, ["'"] = true, ["("] = true, [")"] = true, ["*"] = true, ["+"] = true,
    [","] = true, [";"] = true, ["="] = true,
}

local url_mt = {}
url_mt.__index = M

local function decode(s)
    return (gsub(s, "%%(%x%x)", function(h) return char(tonumber(h, 16)) end))
end

local function encode(s, legal)
    return (gsub(s, "[^%w]", function(c)
        if legal[c] then
            return c
        end
        return fmt("%%%02X", byte(c))
    end))
end

-- A path as the rock keeps it: escapes decoded, then everything that may not stand bare in a
-- path segment escaped again (upper-case hex), `/` kept: `a=%40%23` becomes `a=@%23`. An
-- escaped slash stays escaped: decoding it would split a segment in two.
local function clean_segments(s)
    local out = gsub(decode(s), "[^%w/]", function(c)
        if M.options.legal_in_path[c] then
            return c
        end
        return fmt("%%%02X", byte(c))
    end)
    return out
end

local function clean_path(s)
    if not find(s, "%%2[fF]") then
        return clean_segments(s)
    end
    local parts, from = {}, 1
    while true do
        local at = find(s, "%%2[fF]", from)
        if not at then
            parts[#parts + 1] = clean_segments(sub(s, from))
            break
        end
        parts[#parts + 1] = clean_segments(sub(s, from, at - 1))
        from = at + 3
    end
    return concat(parts, "%2F")
end

local function decode_query_part(s)
    if M.options.query_plus_is_space then
        s = gsub(s, "%+", " ")
    end
    return decode(s)
end

local query_mt = {}

-- Sets `t[key]` for a query key that may carry PHP-style brackets: `a[]` appends to list `a`,
-- `a[b]` sets field `b` of `a`, nested as deep as written.
local function assign(t, key, value)
    local base, rest = match(key, "^([^%[]+)(%[.*%])$")
    if not base then
        if M.options.cumulative_parameters and t[key] ~= nil then
            if type(t[key]) ~= "table" then
                t[key] = { t[key] }
            end
            local list = t[key]
            list[#list + 1] = value
        else
            t[key] = value
        end
        return
    end
    local node = t
    local name = base
    for sub_key in rest:gmatch("%[([^%]]*)%]") do
        if type(node[name]) ~= "table" then
            node[name] = setmetatable({}, query_mt)
        end
        node = node[name]
        if sub_key == "" then
            name = #node + 1
        else
            name = tonumber(sub_key) or sub_key
        end
    end
    node[name] = value
end

-- A query string as a table of decoded parameters (`sep` defaults to `options.separator`).
function M.parseQuery(str, sep)
    local query = setmetatable({}, query_mt)
    if type(str) ~= "string" or str == "" then
        return query
    end
    sep = sep or M.options.separator
    local pos = 1
    while pos <= #str + 1 do
        local from, to = find(str, sep, pos, true)
        local piece = sub(str, pos, (from or #str + 1) - 1)
        if piece ~= "" then
            local eq = find(piece, "=", 1, true)
            local k, v
            if eq then
                k, v = sub(piece, 1, eq - 1), sub(piece, eq + 1)
            else
                k, v = piece, ""
            end
            k = decode_query_part(k)
            if k ~= "" then
                assign(query, k, decode_query_part(v))
            end
        end
        if not from then
            break
        end
        pos = to + 1
    end
    return query
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    sort(keys, function(a, b)
        if type(a) == type(b) then
            return a < b
        end
        return type(a) == "number"
    end)
    return keys
end

-- A query string for `tab` (keys sorted; nested tables as `key[sub]=value`).
function M.buildQuery(tab, sep, key)
    sep = sep or M.options.separator
    local out = {}
    for _, k in ipairs(sorted_keys(tab)) do
        local v = tab[k]
        local name = encode(tostring(k), M.options.legal_in_query)
        if key then
            name = key .. "[" .. name .. "]"
        end
        if type(v) == "table" then
            out[#out + 1] = M.buildQuery(v, sep, name)
        else
            local value = encode(tostring(v), M.options.legal_in_query)
            out[#out + 1] = name .. "=" .. value
        end
    end
    return concat(out, sep)
end

query_mt.__tostring = function(q)
    return M.buildQuery(q)
end

-- Sets `userinfo`, `user`, `password`, `host`, `port` from an authority text.
function M.setAuthority(self, authority)
    self.authority = authority
    self.userinfo, self.user, self.password, self.host, self.port = nil, nil, nil, nil, nil
    local rest = authority
    local at = find(rest, "@[^@]*$")
    if at then
        local userinfo = sub(rest, 1, at - 1)
        rest = sub(rest, at + 1)
        self.userinfo = userinfo
        local colon = find(userinfo, ":", 1, true)
        if colon then
            self.user = decode(sub(userinfo, 1, colon - 1))
            self.password = decode(sub(userinfo, colon + 1))
        else
            self.user = decode(userinfo)
        end
    end
    local host, port = match(rest, "^(%[.+%]):(%d+)$")
    if not host then
        host, port = match(rest, "^([^:]*):(%d+)$")
    end
    if host then
        self.host, self.port = host, tonumber(port)
    else
        self.host = rest
    end
    return authority
end

-- Replaces the query with a table or a query string.
function M.setQuery(self, query)
    if type(query) == "table" then
        self.query = setmetatable(query, query_mt)
    else
        self.query = M.parseQuery(query)
    end
    return self.query
end

-- Parses `text` into a URL object.
function M.parse(text)
    local u = setmetatable({ query = setmetatable({}, query_mt) }, url_mt)
    text = tostring(text or "")
    local hash = find(text, "#", 1, true)
    if hash then
        u.fragment = sub(text, hash + 1)
        text = sub(text, 1, hash - 1)
    end
    local q = find(text, "?", 1, true)
    if q then
        u:setQuery(sub(text, q + 1))
        text = sub(text, 1, q - 1)
    end
    local scheme, rest = match(text, "^(%a[%w%+%-%.]*):(.*)$")
    if scheme then
        u.scheme = lower(scheme)
        text = rest
    end
    local authority, path = match(text, "^//([^/]*)(.*)$")
    if authority then
        u:setAuthority(authority)
        text = path
    end
    u.path = clean_path(text)
    return u
end

-- The authority as it prints (`user:password@host:port`).
local function authority_text(u)
    if not u.host then
        return nil
    end
    local a = u.host
    if u.port then
        a = a .. ":" .. tostring(u.port)
    end
    if u.user then
        local info = encode(u.user, LEGAL_IN_USERINFO)
        if u.password then
            info = info .. ":" .. encode(u.password, LEGAL_IN_USERINFO)
        end
        a = info .. "@" .. a
    elseif u.userinfo then
        a = u.userinfo .. "@" .. a
    end
    return a
end

-- The URL as text.
function M.build(self)
    local out = {}
    if self.scheme then
        out[#out + 1] = self.scheme .. ":"
    end
    local authority = authority_text(self)
    if authority then
        out[#out + 1] = "//" .. authority
    end
    local path = self.path or ""
    if authority and path ~= "" and sub(path, 1, 1) ~= "/" then
        path = "/" .. path
    end
    out[#out + 1] = path
    local q = self.query and M.buildQuery(self.query) or ""
    if q ~= "" then
        out[#out + 1] = "?" .. q
    end
    if self.fragment then
        out[#out + 1] = "#" .. self.fragment
    end
    return concat(out)
end

url_mt.__tostring = M.build

-- RFC 3986 5.2.4: `.` and `..` segments resolved out of `path`.
function M.removeDotSegments(path)
    local out = {}
    local absolute = sub(path, 1, 1) == "/"
    local trailing = false
    for segment in (path .. "/"):gmatch("([^/]*)/") do
        trailing = false
        if segment == ".." then
            if #out > 0 then
                out[#out] = nil
            end
            trailing = true
        elseif segment == "." then
            trailing = true
        elseif segment ~= "" or #out == 0 and not absolute then
            out[#out + 1] = segment
        end
    end
    -- `path` ended in `/`, `.` or `..`: it names a directory.
    if sub(path, -1) == "/" or trailing then
        out[#out + 1] = ""
    end
    local joined = concat(out, "/")
    if absolute then
        joined = "/" .. joined
    end
    return (gsub(joined, "//+", "/"))
end

-- Percent-escapes of unreserved characters decoded, the others upper-cased.
local function normalize_escapes(s)
    return (gsub(s, "%%(%x%x)", function(h)
        local c = char(tonumber(h, 16))
        if find(c, "^[%w%-%._~]$") then
            return c
        end
        return "%" .. upper(h)
    end))
end

-- Lower-case scheme and host, no default port, no empty or dot segments in the path
-- (`http://www.FOO.com:80///foo/../foo/./bar` → `http://www.foo.com/foo/bar`). Changes and
-- returns the object.
function M.normalize(self)
    if self.scheme then
        self.scheme = lower(self.scheme)
    end
    if self.host then
        self.host = lower(self.host)
        if self.port and self.scheme and M.services[self.scheme] == self.port then
            self.port = nil
        end
    end
    local path = normalize_escapes(self.path or "")
    path = gsub(path, "//+", "/")
    path = M.removeDotSegments(path)
    if path == "" and self.host then
        path = "/"
    end
    self.path = path
    self.authority = authority_text(self)
    return self
end

-- A new URL: `other` (text or object) resolved against this one as base (RFC 3986 5.2).
function M.resolve(self, other)
    if type(other) == "string" then
        other = M.parse(other)
    end
    local r = setmetatable({ query = setmetatable({}, query_mt) }, url_mt)
    if other.scheme then
        r.scheme = other.scheme
        r:setAuthority(other.authority or "")
        if not other.host then
            r.host = nil
        end
        r.path = M.removeDotSegments(other.path or "")
        r.query = other.query
    else
        r.scheme = self.scheme
        if other.host then
            r:setAuthority(other.authority or "")
            r.path = M.removeDotSegments(other.path or "")
            r.query = other.query
        else
            if self.host then
                r:setAuthority(self.authority or "")
            end
            local opath = other.path or ""
            if opath == "" then
                r.path = self.path
                if next(other.query) ~= nil then
                    r.query = other.query
                else
                    r.query = self.query
                end
            else
                if sub(opath, 1, 1) == "/" then
                    r.path = M.removeDotSegments(opath)
                else
                    local base = self.path or ""
                    local dir
                    if self.host and base == "" then
                        dir = "/"
                    else
                        dir = match(base, "^(.*/)") or ""
                    end
                    r.path = M.removeDotSegments(dir .. opath)
                end
                r.query = other.query
            end
        end
    end
    r.fragment = other.fragment
    return r
end

-- Appends one path segment (escaped, `/` included); also `u / "segment"`.
function M.addSegment(self, segment)
    local path = self.path or ""
    if sub(path, -1) ~= "/" then
        path = path .. "/"
    end
    self.path = path .. encode(tostring(segment), M.options.legal_in_path)
    return self
end

url_mt.__div = M.addSegment

return M
