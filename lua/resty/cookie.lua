-- resty.cookie: the request's cookies and Set-Cookie for the response, with lua-resty-cookie's
-- API (moongate's own implementation).

local ngx = ngx
local type, tostring, setmetatable, pairs = type, tostring, setmetatable, pairs
local find, sub, byte = string.find, string.sub, string.byte
local concat = table.concat

local _M = { _VERSION = "0.1.0" }
local mt = { __index = _M }

local NO_COOKIE = "no cookie found in the current request"

local function is_space(c)
    return c == 32 or c == 9
end

-- `name=value` pairs separated by `;` (spaces around them ignored); the first of a repeated
-- name wins, as nginx's `$cookie_NAME`. A pair without `=` is skipped.
local function parse(header)
    local out = {}
    local pos, n = 1, #header
    while pos <= n do
        local semi = find(header, ";", pos, true) or n + 1
        local a, b = pos, semi - 1
        while a <= b and is_space(byte(header, a)) do
            a = a + 1
        end
        while b >= a and is_space(byte(header, b)) do
            b = b - 1
        end
        local eq = find(header, "=", a, true)
        if eq and eq <= b then
            local k = sub(header, a, eq - 1)
            if k ~= "" and out[k] == nil then
                out[k] = sub(header, eq + 1, b)
            end
        end
        pos = semi + 1
    end
    return out
end

-- A cookie object for the current request (`ck:new()`).
function _M.new(_)
    local header = ngx.var.http_cookie
    local self = setmetatable({ raw = header }, mt)
    return self
end

local function fields(self)
    if self.fields == nil then
        if not self.raw then
            return nil
        end
        self.fields = parse(self.raw)
    end
    return self.fields
end

-- The value of cookie `name`; `nil, err` when the request has no Cookie header, `nil` when it
-- has no such cookie.
function _M.get(self, name)
    local f = fields(self)
    if not f then
        return nil, NO_COOKIE
    end
    return f[name]
end

-- Every cookie as `{name = value}`, or `nil, err` without a Cookie header.
function _M.get_all(self)
    local f = fields(self)
    if not f then
        return nil, NO_COOKIE
    end
    local out = {}
    for k, v in pairs(f) do
        out[k] = v
    end
    return out
end

-- Bytes of the Cookie header (0 without one).
function _M.get_cookie_size(self)
    return self.raw and #self.raw or 0
end

local function set_cookie_text(c)
    local parts = { tostring(c.key) .. "=" .. tostring(c.value) }
    if c.expires then
        parts[#parts + 1] = "Expires=" .. tostring(c.expires)
    end
    if c.max_age then
        parts[#parts + 1] = "Max-Age=" .. tostring(c.max_age)
    end
    if c.domain then
        parts[#parts + 1] = "Domain=" .. tostring(c.domain)
    end
    if c.path then
        parts[#parts + 1] = "Path=" .. tostring(c.path)
    end
    if c.secure then
        parts[#parts + 1] = "Secure"
    end
    if c.httponly then
        parts[#parts + 1] = "HttpOnly"
    end
    if c.samesite then
        parts[#parts + 1] = "SameSite=" .. tostring(c.samesite)
    end
    if c.extension then
        parts[#parts + 1] = tostring(c.extension)
    end
    return concat(parts, "; ")
end

-- Adds a `Set-Cookie` response header for `{key, value, path, domain, expires, max_age,
-- secure, httponly, samesite, extension}`; the same cookie text twice is sent once.
function _M.set(self, c)
    if type(c) ~= "table" then
        return nil, "cookie should be a table"
    end
    if c.key == nil then
        return nil, 'missing cookie field "key"'
    end
    if c.value == nil then
        return nil, 'missing cookie field "value"'
    end
    local text = set_cookie_text(c)
    local existing = ngx.header["Set-Cookie"]
    local list = {}
    if type(existing) == "table" then
        for i = 1, #existing do
            list[i] = existing[i]
        end
    elseif existing then
        list[1] = existing
    end
    for i = 1, #list do
        if list[i] == text then
            return true
        end
    end
    list[#list + 1] = text
    ngx.header["Set-Cookie"] = list
    return true
end

return _M
