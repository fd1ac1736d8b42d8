-- core.json: JSON as APISIX plugins see it, over moongate's native cjson. Loading it configures
-- `cjson` and `cjson.safe` (and every `cjson.new()` instance) the way APISIX does at start:
-- decoded arrays carry `cjson.array_mt` (so `[]` re-encodes as `[]`), and "/" is not escaped.
-- Encoding follows lua-cjson byte for byte (numbers as %.14g, an empty table as `{}`, keys in
-- table order); `stably_encode` and `canonical_encode` sort object keys so equal tables give
-- equal text.

local cjson_raw = require("cjson")
local cjson = require("cjson.safe") -- the non-raising variant is what plugins get
local wipe = require("table.clear")
local ngx = ngx
local type, pairs, ipairs, tostring, getmetatable, setmetatable =
    type, pairs, ipairs, tostring, getmetatable, setmetatable
local sort, concat = table.sort, table.concat

local function configure(instance)
    instance.decode_array_with_array_mt(true)
    instance.encode_escape_forward_slash(false)
end

local function patch(module)
    if module._apisix_patched then
        return
    end
    configure(module)
    local new = module.new
    module.new = function(...)
        local inst = new(...)
        configure(inst)
        return inst
    end
    module._apisix_patched = true
end
patch(cjson_raw)
patch(cjson)

local json_encode, json_decode, null, array_mt = cjson.encode, cjson.decode, cjson.null, cjson.array_mt

local codec = {
    version = 0.1,
    array_mt = array_mt,
    null = null,
}

-- Removes every JSON null, at any depth, in place.
function codec.strip_nulls(doc)
    for key, val in pairs(doc) do
        local kind = type(val)
        if val == null then
            doc[key] = nil
        elseif kind == "table" then
            codec.strip_nulls(val)
        end
    end
    return doc
end

-- `decode(text, {null_as_nil = true})` drops JSON nulls (a top-level null becomes nil).
function codec.decode(text, opts)
    local doc, why = json_decode(text)
    if doc == nil or not (opts and opts.null_as_nil) then
        return doc, why
    end
    if doc == null then
        return nil, why
    end
    if type(doc) == "table" then
        codec.strip_nulls(doc)
    end
    return doc, why
end

-- `force`: values JSON cannot hold (functions, userdata, cdata) and tables met again (cycles)
-- become their `tostring` instead of failing the encoding.
local function printable(v)
    local t = type(v)
    if t == "function" or t == "userdata" or t == "cdata" or t == "table" or t == "thread" then
        if v == null then
            return v
        end
        return tostring(v)
    end
    return v
end

local seen = {}

local function forced_copy(value)
    if type(value) ~= "table" then
        return printable(value)
    end
    local copy = {}
    for k, member in pairs(value) do
        local slot = printable(k)
        if type(member) ~= "table" then
            copy[slot] = printable(member)
        elseif seen[member] then
            copy[slot] = tostring(member)
        else
            seen[member] = true
            copy[slot] = forced_copy(member)
        end
    end
    return setmetatable(copy, getmetatable(value) == array_mt and array_mt or nil)
end

local function encode(value, force)
    if not force then
        return json_encode(value)
    end
    wipe(seen)
    if type(value) == "table" then
        seen[value] = true
    end
    local printable_copy = forced_copy(value)
    wipe(seen)
    return json_encode(printable_copy)
end
codec.encode = encode

-- Sorted-key encoding. `empty_as_array`: how an empty table without `array_mt` is written
-- (`[]` for stably_encode, as the dkjson encoder APISIX uses there writes it; `{}` for
-- canonical_encode).
local function is_sequence(t)
    local n = 0
    for k in pairs(t) do
        if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then
            return false
        end
        n = n + 1
    end
    for i = 1, n do
        if t[i] == nil then
            return false
        end
    end
    return true, n
end

local function key_less(a, b)
    local ta, tb = type(a), type(b)
    if ta == tb and (ta == "string" or ta == "number") then
        return a < b
    end
    return tostring(a) < tostring(b)
end

local sorted_value

local function sorted_table(t, out, empty_as_array, depth)
    if depth > 1000 then
        return nil, "Cannot serialise, excessive nesting (1001)"
    end
    local arr, n = is_sequence(t)
    if n == 0 then
        if getmetatable(t) == array_mt then
            out[#out + 1] = "[]"
        else
            out[#out + 1] = empty_as_array and "[]" or "{}"
        end
        return true
    end
    if arr then
        out[#out + 1] = "["
        for i = 1, n do
            if i > 1 then
                out[#out + 1] = ","
            end
            local ok, err = sorted_value(t[i], out, empty_as_array, depth + 1)
            if not ok then
                return nil, err
            end
        end
        out[#out + 1] = "]"
        return true
    end
    local keys = {}
    for k in pairs(t) do
        keys[#keys + 1] = k
    end
    sort(keys, key_less)
    out[#out + 1] = "{"
    for pos, k in ipairs(keys) do
        if pos > 1 then
            out[#out + 1] = ","
        end
        out[#out + 1] = json_encode(tostring(k))
        out[#out + 1] = ":"
        local ok, err = sorted_value(t[k], out, empty_as_array, depth + 1)
        if not ok then
            return nil, err
        end
    end
    out[#out + 1] = "}"
    return true
end

sorted_value = function(v, out, empty_as_array, depth)
    local kind = type(v)
    if kind == "table" then
        return sorted_table(v, out, empty_as_array, depth)
    end
    local s, err = json_encode(v)
    if not s then
        return nil, err
    end
    out[#out + 1] = s
    return true
end

local function sorted_encode(data, empty_as_array)
    local out = {}
    local ok, err = sorted_value(data, out, empty_as_array, 0)
    if not ok then
        return nil, err
    end
    return concat(out)
end

-- The same text for equal tables, whatever their insertion order (APISIX uses it to version
-- confs). Differs from APISIX's dkjson-based one in number formatting (%.14g, as cjson).
function codec.stably_encode(data)
    return sorted_encode(data, true)
end

-- Sorted keys, empty tables as objects unless marked with `array_mt`.
function codec.canonical_encode(value)
    return sorted_encode(value, false)
end

-- `delay_encode(data, force)`: a value whose `tostring` is the encoding, for log arguments, so
-- nothing is encoded when the line is filtered out. A ring of 16 objects is reused, as in
-- APISIX: keep the result only for the log call it is made for.
local ring_size, ring_idx, ring = 16, 0, {}
local function deferred_text(pending)
    local text, why = encode(pending.data, pending.force)
    if text then
        return text
    end
    ngx.log(ngx.WARN, "failed to encode: ", why, " force: ", pending.force)
    return ""
end
local delay_mt = { __tostring = deferred_text }
for i = 1, ring_size do
    ring[i] = setmetatable({ data = "", force = false }, delay_mt)
end

function codec.delay_encode(data, force)
    ring_idx = ring_idx % ring_size + 1
    local d = ring[ring_idx]
    d.data = data
    d.force = force
    return d
end

return codec
