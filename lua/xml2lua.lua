-- xml2lua: an XML parser driven by a handler, and a Lua-table-to-XML writer, with xml2lua's API
-- (moongate's own implementation). `xml2lua.parser(handler):parse(text)` scans the document
-- and calls the handler's `starttag`, `endtag`, `text`, `cdata`, `comment`, `pi`, `decl` and
-- `dtd` methods (those it has); `xmlhandler.tree` is the handler that builds a Lua table.
-- `xml2lua.toXml(t, name)` writes a table back as XML.
--
-- Errors are raised through `parser.options.errorHandler(message, position)`, which by default
-- raises `"MESSAGE [char=N]"` with the messages xml2lua uses (`Error Parsing XML`,
-- `Unbalanced Tag`, `Incomplete XML Document`, …). Well-formedness is checked where a table
-- built from the document would otherwise be wrong: unbalanced or unterminated tags, and text
-- outside the root element (so a JSON body is refused instead of becoming an empty table).

local byte, sub, find, match, gsub, fmt, rep =
    string.byte, string.sub, string.find, string.match, string.gsub, string.format, string.rep
local char = string.char
local type, pairs, ipairs, tostring, tonumber, setmetatable, error, print =
    type, pairs, ipairs, tostring, tonumber, setmetatable, error, print
local tbl_sort, tbl_concat = table.sort, table.concat

local _M = { _VERSION = "1.6-moongate" }

local ERR = {
    xml = "Error Parsing XML",
    decl = "Error Parsing XMLDecl",
    pi = "Error Parsing Processing Instruction",
    comment = "Error Parsing Comment",
    cdata = "Error Parsing CDATA",
    dtd = "Error Parsing DTD",
    end_tag = "End Tag Attributes Invalid",
    unbalanced = "Unbalanced Tag",
    incomplete = "Incomplete XML Document",
}

local ENTITIES = { lt = "<", gt = ">", amp = "&", quot = '"', apos = "'" }

local function utf8_char(cp)
    if cp < 0x80 then
        return char(cp)
    elseif cp < 0x800 then
        return char(0xC0 + math.floor(cp / 0x40), 0x80 + cp % 0x40)
    elseif cp < 0x10000 then
        return char(0xE0 + math.floor(cp / 0x1000), 0x80 + math.floor(cp / 0x40) % 0x40,
            0x80 + cp % 0x40)
    end
    return char(0xF0 + math.floor(cp / 0x40000), 0x80 + math.floor(cp / 0x1000) % 0x40,
        0x80 + math.floor(cp / 0x40) % 0x40, 0x80 + cp % 0x40)
end

-- `&name;`, `&#NN;` and `&#xHH;` replaced; unknown names are left as written.
local function expand(s)
    if not find(s, "&", 1, true) then
        return s
    end
    return (gsub(s, "&(#?[xX]?)([%w]+);", function(kind, body)
        if kind == "" then
            return ENTITIES[body]
        end
        local cp = (kind == "#") and tonumber(body, 10) or tonumber(body, 16)
        if not cp or cp > 0x10FFFF then
            return nil
        end
        return utf8_char(cp)
    end))
end

local function trim(s)
    return match(s, "^%s*(.-)%s*$")
end

local Parser = {}
Parser.__index = Parser

local function default_error_handler(msg, pos)
    error(fmt("%s [char=%d]\n", msg or "Parse Error", pos), 0)
end

-- A parser feeding `handler`.
function _M.parser(handler)
    return setmetatable({
        handler = handler,
        options = { stripWS = 1, expandEntities = 1, errorHandler = default_error_handler },
    }, Parser)
end

function Parser:err(kind, pos)
    self.options.errorHandler(ERR[kind] or kind, pos)
    -- A handler that returns instead of raising leaves the parse at that point.
    error({ stopped = true }, 0)
end

function Parser:call(method, ...)
    local f = self.handler[method]
    if f then
        f(self.handler, ...)
    end
end

function Parser:value(s)
    if self.options.expandEntities then
        return expand(s)
    end
    return s
end

-- Attributes of a tag body (`a="1" b='2'`), or nil when malformed.
function Parser:attributes(body)
    local attrs = {}
    local i, n = 1, #body
    while i <= n do
        local s, e, name, quote = find(body, "^%s*([^%s=/>]+)%s*=%s*([\"'])", i)
        if not s then
            if find(body, "^%s*$", i) then
                break
            end
            return nil
        end
        local close = find(body, quote, e + 1, true)
        if not close then
            return nil
        end
        attrs[name] = self:value(sub(body, e + 1, close - 1))
        i = close + 1
        if i <= n and not find(body, "^%s", i) then
            return nil
        end
    end
    return attrs
end

function Parser:text(s, depth, pos)
    if self.options.stripWS then
        s = trim(s)
        if s == "" then
            return
        end
    end
    if depth == 0 then
        if trim(s) == "" then
            return
        end
        self:err("xml", pos)
    end
    self:call("text", self:value(s))
end

-- Parses `str`; the handler holds the result. `parse_attributes = false` skips attributes.
function Parser:parse(str, parse_attributes)
    if type(str) ~= "string" then
        self:err("xml", 0)
    end
    local ok, e = pcall(self.scan, self, str, parse_attributes ~= false)
    if not ok then
        if type(e) == "table" and e.stopped then
            return
        end
        error(e, 0)
    end
end

function Parser:scan(str, parse_attributes)
    local stack = {}
    local pos, n = 1, #str
    local seen_element = false
    while pos <= n do
        local lt = find(str, "<", pos, true)
        if not lt then
            self:text(sub(str, pos), #stack, pos)
            break
        end
        if lt > pos then
            self:text(sub(str, pos, lt - 1), #stack, pos)
        end
        if sub(str, lt, lt + 3) == "<!--" then
            local close = find(str, "-->", lt + 4, true)
            if not close then
                self:err("comment", lt)
            end
            self:call("comment", sub(str, lt + 4, close - 1))
            pos = close + 3
        elseif sub(str, lt, lt + 8) == "<![CDATA[" then
            local close = find(str, "]]>", lt + 9, true)
            if not close then
                self:err("cdata", lt)
            end
            if #stack == 0 then
                self:err("xml", lt)
            end
            local data = sub(str, lt + 9, close - 1)
            if self.handler.cdata then
                self:call("cdata", data)
            else
                self:call("text", data)
            end
            pos = close + 3
        elseif sub(str, lt, lt + 1) == "<?" then
            local close = find(str, "?>", lt + 2, true)
            if not close then
                self:err("pi", lt)
            end
            local name, rest = match(sub(str, lt + 2, close - 1), "^([^%s]+)%s*(.-)%s*$")
            if not name then
                self:err("pi", lt)
            end
            if name == "xml" then
                local attrs = self:attributes(rest)
                if not attrs then
                    self:err("decl", lt)
                end
                self:call("decl", { name = name, attrs = attrs })
            else
                self:call("pi", { name = name, attrs = { _text = rest } })
            end
            pos = close + 2
        elseif sub(str, lt, lt + 1) == "<!" then
            -- DOCTYPE and other declarations, with an optional [internal subset].
            local i, depth = lt + 2, 0
            local close
            while i <= n do
                local c = byte(str, i)
                if c == 91 then
                    depth = depth + 1
                elseif c == 93 then
                    depth = depth - 1
                elseif c == 62 and depth <= 0 then
                    close = i
                    break
                end
                i = i + 1
            end
            if not close then
                self:err("dtd", lt)
            end
            local name, rest = match(sub(str, lt + 2, close - 1), "^([^%s]+)%s*(.-)%s*$")
            self:call("dtd", { name = name or "", attrs = { _text = rest or "" } })
            pos = close + 1
        elseif sub(str, lt, lt + 1) == "</" then
            local close = find(str, ">", lt + 2, true)
            if not close then
                self:err("xml", lt)
            end
            local name = match(sub(str, lt + 2, close - 1), "^([^%s/>]+)%s*$")
            if not name then
                self:err("end_tag", lt)
            end
            if stack[#stack] ~= name then
                self:err("unbalanced", lt)
            end
            stack[#stack] = nil
            self:call("endtag", { name = name }, lt, close)
            pos = close + 1
        else
            -- A start tag; `>` inside quoted attribute values does not end it.
            local i, quote, close = lt + 1, nil, nil
            while i <= n do
                local c = byte(str, i)
                if quote then
                    if c == quote then
                        quote = nil
                    end
                elseif c == 34 or c == 39 then
                    quote = c
                elseif c == 62 then
                    close = i
                    break
                elseif c == 60 then
                    break
                end
                i = i + 1
            end
            if not close then
                self:err("xml", lt)
            end
            local body = sub(str, lt + 1, close - 1)
            local empty = byte(body, #body) == 47 -- "/"
            if empty then
                body = sub(body, 1, #body - 1)
            end
            local name, rest = match(body, "^([^%s/>=\"']+)(.*)$")
            if not name then
                self:err("xml", lt)
            end
            seen_element = true
            local attrs = {}
            if parse_attributes then
                attrs = self:attributes(rest)
                if not attrs then
                    self:err("xml", lt)
                end
            elseif not find(rest, "^%s") and rest ~= "" then
                self:err("xml", lt)
            end
            local tag = { name = name, attrs = attrs }
            self:call("starttag", tag, lt, close)
            if empty then
                self:call("endtag", { name = name }, lt, close)
            else
                stack[#stack + 1] = name
            end
            pos = close + 1
        end
    end
    if #stack > 0 then
        self:err("incomplete", n)
    end
    if not seen_element then
        self:err("xml", 1)
    end
end

local function escape(s)
    return (gsub(s, "[<>&\"']", {
        ["<"] = "&lt;", [">"] = "&gt;", ["&"] = "&amp;", ['"'] = "&quot;", ["'"] = "&apos;",
    }))
end

local function sorted_keys(t)
    local keys = {}
    for k in pairs(t) do
        if k ~= "_attr" and type(k) == "string" then
            keys[#keys + 1] = k
        end
    end
    tbl_sort(keys)
    return keys
end

local function is_list(t)
    if t[1] == nil then
        return false
    end
    for k in pairs(t) do
        if type(k) ~= "number" then
            return false
        end
    end
    return true
end

local function attr_text(attrs)
    if type(attrs) ~= "table" then
        return ""
    end
    local out = {}
    for _, k in ipairs(sorted_keys(attrs)) do
        out[#out + 1] = fmt(' %s="%s"', k, escape(tostring(attrs[k])))
    end
    return tbl_concat(out)
end

local render

-- Appends element `name` holding `value` to `out`, indented by `depth` levels.
render = function(out, name, value, depth)
    local pad = rep("  ", depth)
    if type(value) ~= "table" then
        out[#out + 1] = fmt("%s<%s>%s</%s>", pad, name, escape(tostring(value)), name)
        return
    end
    if is_list(value) then
        -- A list is the same element repeated.
        for _, item in ipairs(value) do
            render(out, name, item, depth)
        end
        return
    end
    local attrs = attr_text(value._attr)
    local keys = sorted_keys(value)
    local text = value[1]
    if #keys == 0 then
        if text ~= nil and type(text) ~= "table" then
            out[#out + 1] = fmt("%s<%s%s>%s</%s>", pad, name, attrs, escape(tostring(text)), name)
        else
            out[#out + 1] = fmt("%s<%s%s></%s>", pad, name, attrs, name)
        end
        return
    end
    out[#out + 1] = fmt("%s<%s%s>", pad, name, attrs)
    if text ~= nil and type(text) ~= "table" then
        out[#out + 1] = pad .. "  " .. escape(tostring(text))
    end
    for _, k in ipairs(keys) do
        render(out, k, value[k], depth + 1)
    end
    out[#out + 1] = fmt("%s</%s>", pad, name)
end

-- XML text for table `tb`: one element `table_name` holding it, or (without a name) one
-- element per key. Keys are written in sorted order; `_attr` gives attributes; a list is a
-- repeated element; one element per line, indented by two spaces per level.
function _M.toXml(tb, table_name, level)
    local out = {}
    local depth = (level or 1) - 1
    if table_name then
        render(out, table_name, tb, depth)
    elseif type(tb) == "table" then
        for _, k in ipairs(sorted_keys(tb)) do
            render(out, k, tb[k], depth)
        end
    end
    return tbl_concat(out, "\n")
end

-- A readable dump of a table, for debugging.
function _M.toString(t, indent)
    indent = indent or ""
    if type(t) ~= "table" then
        return tostring(t)
    end
    local out = { "{" }
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    tbl_sort(keys, function(a, b) return tostring(a) < tostring(b) end)
    for _, k in ipairs(keys) do
        out[#out + 1] = indent .. "  " .. tostring(k) .. " = " .. _M.toString(t[k], indent .. "  ")
    end
    out[#out + 1] = indent .. "}"
    return tbl_concat(out, "\n")
end

-- Prints `toString(t)`.
function _M.printable(t)
    print(_M.toString(t))
end

-- The content of a file, or raises.
function _M.loadFile(path)
    local f, err = io.open(path, "r")
    if not f then
        error("cannot open " .. tostring(path) .. ": " .. tostring(err), 2)
    end
    local data = f:read("*a")
    f:close()
    return data
end

return _M
