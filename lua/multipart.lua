-- Licensed under the Apache License, Version 2.0.
--
-- `multipart`: moongate's own parser and writer of multipart bodies (RFC 7578 form-data and
-- the other multipart/* types), with the API of the `lua-multipart` rock that APISIX's
-- body-transformer requires: `multipart(body, content_type)` → an object with `get`,
-- `get_all`, `get_all_with_arrays`, `get_as_array`, `get_all_as_arrays`, `set_simple`,
-- `delete`, `tostring`.
--
-- Parts are split on the boundary of the Content-Type; line breaks may be CRLF (the standard)
-- or bare LF (what hand-written bodies often use). A part is keyed by the `name` of its
-- `Content-Disposition`; parts without a name are kept in order for `tostring` but have no
-- key. `tostring` writes CRLF line breaks.

local setmetatable = setmetatable
local type = type
local ipairs = ipairs
local pairs = pairs
local tostring = tostring
local concat = table.concat
local insert = table.insert
local remove = table.remove
local str_find = string.find
local str_sub = string.sub
local str_lower = string.lower
local str_match = string.match
local str_gsub = string.gsub

local Multipart = {}
Multipart.__index = Multipart

local function boundary_of(content_type)
    if type(content_type) ~= "string" then
        return nil
    end
    local b = str_match(content_type, ';%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]="([^"]+)"')
        or str_match(content_type, ";%s*[Bb][Oo][Uu][Nn][Dd][Aa][Rr][Yy]=([^;%s]+)")
    return b
end

-- The value of parameter `param` of a header value (`form-data; name="x"; filename="f"`).
local function header_param(value, param)
    local lower = str_lower(value)
    local s, e = str_find(lower, ";%s*" .. param .. '%s*=%s*"')
    if s then
        local close = str_find(value, '"', e + 1, true)
        if close then
            return str_sub(value, e + 1, close - 1)
        end
    end
    s, e = str_find(lower, ";%s*" .. param .. "%s*=%s*")
    if s then
        return str_match(value, "^([^;%s]*)", e + 1)
    end
    return nil
end

-- Splits one part (the text between two boundary lines) into its headers and value.
local function parse_part(text)
    local head, value
    local s, e = str_find(text, "\r\n\r\n", 1, true)
    local s2, e2 = str_find(text, "\n\n", 1, true)
    if s and (not s2 or s <= s2) then
        head, value = str_sub(text, 1, s - 1), str_sub(text, e + 1)
    elseif s2 then
        head, value = str_sub(text, 1, s2 - 1), str_sub(text, e2 + 1)
    else
        -- No blank line: headers only, an empty value.
        head, value = text, ""
    end
    local headers = {}
    local name
    for line in (head .. "\n"):gmatch("([^\n]*)\n") do
        line = str_gsub(line, "\r$", "")
        if line ~= "" then
            headers[#headers + 1] = line
            local hname, hvalue = str_match(line, "^([^:]+):%s*(.*)$")
            if hname and str_lower(hname) == "content-disposition" then
                name = header_param(hvalue, "name")
            end
        end
    end
    return { name = name, headers = headers, value = value }
end

--- Parses `body` as a multipart body of `content_type` (which carries the boundary).
local function new(body, content_type)
    local self = setmetatable({ _parts = {}, _index = {} }, Multipart)
    local boundary = boundary_of(content_type)
    self._boundary = boundary or "------------------------moongate"
    if type(body) ~= "string" or body == "" or not boundary then
        return self
    end
    local delim = "--" .. boundary
    local pos = str_find(body, delim, 1, true)
    while pos do
        local after = pos + #delim
        if str_sub(body, after, after + 1) == "--" then
            break
        end
        -- The part starts after the line break that ends the boundary line.
        local line_end = str_find(body, "\n", after, true)
        if not line_end then
            break
        end
        local next_pos = str_find(body, delim, line_end + 1, true)
        if not next_pos then
            break
        end
        local text = str_sub(body, line_end + 1, next_pos - 1)
        -- The line break before the next boundary belongs to the boundary.
        text = str_gsub(text, "\r?\n$", "")
        local part = parse_part(text)
        insert(self._parts, part)
        if part.name then
            local list = self._index[part.name]
            if not list then
                list = {}
                self._index[part.name] = list
            end
            list[#list + 1] = part
        end
        pos = next_pos
    end
    return self
end

--- The first part named `name`: `{name, headers, value}`, or nil.
function Multipart:get(name)
    local list = self._index[name]
    return list and list[1]
end

--- `{name = value}` of the first part of each name.
function Multipart:get_all()
    local out = {}
    for name, list in pairs(self._index) do
        out[name] = list[1].value
    end
    return out
end

--- `{name = value}`, a list of values for a name that repeats.
function Multipart:get_all_with_arrays()
    local out = {}
    for name, list in pairs(self._index) do
        if #list == 1 then
            out[name] = list[1].value
        else
            local values = {}
            for i, part in ipairs(list) do
                values[i] = part.value
            end
            out[name] = values
        end
    end
    return out
end

--- The values of every part named `name`, in order (nil when there is none).
function Multipart:get_as_array(name)
    local list = self._index[name]
    if not list then
        return nil
    end
    local values = {}
    for i, part in ipairs(list) do
        values[i] = part.value
    end
    return values
end

--- `{name = {values…}}` for every name.
function Multipart:get_all_as_arrays()
    local out = {}
    for name in pairs(self._index) do
        out[name] = self:get_as_array(name)
    end
    return out
end

--- Sets the value of the part named `name` (the first one), or appends a new form-data part
--- with an optional file name and content type.
function Multipart:set_simple(name, value, filename, content_type)
    value = tostring(value)
    local part = self:get(name)
    if part and not filename and not content_type then
        part.value = value
        return
    end
    local disposition = 'Content-Disposition: form-data; name="' .. name .. '"'
    if filename then
        disposition = disposition .. '; filename="' .. filename .. '"'
    end
    local headers = { disposition }
    if content_type then
        headers[2] = "Content-Type: " .. content_type
    end
    if part then
        part.headers, part.value = headers, value
        return
    end
    part = { name = name, headers = headers, value = value }
    insert(self._parts, part)
    self._index[name] = { part }
end

--- Removes every part named `name`.
function Multipart:delete(name)
    if not self._index[name] then
        return
    end
    self._index[name] = nil
    for i = #self._parts, 1, -1 do
        if self._parts[i].name == name then
            remove(self._parts, i)
        end
    end
end

--- The body again, CRLF line breaks, closed by the final boundary.
function Multipart:tostring()
    local out = {}
    local delim = "--" .. self._boundary
    for _, part in ipairs(self._parts) do
        out[#out + 1] = delim
        for _, h in ipairs(part.headers) do
            out[#out + 1] = h
        end
        out[#out + 1] = ""
        out[#out + 1] = part.value
    end
    out[#out + 1] = delim .. "--"
    return concat(out, "\r\n") .. "\r\n"
end

Multipart.__tostring = Multipart.tostring

return setmetatable({ new = new }, {
    __call = function(_, body, content_type)
        return new(body, content_type)
    end,
})
