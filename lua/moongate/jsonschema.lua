-- moongate.jsonschema: a JSON-schema validator with the observable behaviour of api7/jsonschema,
-- the validator APISIX's core.schema is built on (written here from its documented and observed
-- behaviour, not from its code).
--
-- A schema compiles once into a tree of Lua closures; validating runs them, returning `true` or
-- `false, message`. Three properties make it APISIX's validator rather than any validator:
--
--  * It fills defaults into the value it checks: after a property of an object was checked (or
--    found missing), a missing property whose subschema has a `default` (number, string, boolean
--    or table; tables are copied afresh every time) is set. Defaults are never validated, and
--    they are filled wherever the object is visited: inside every `oneOf` branch (all branches
--    run), inside `anyOf` branches up to the first that matches, in `allOf`, `not`, `if`,
--    `then`, `else` and `dependencies` schemas — even when that branch then fails.
--  * A Lua table is an object when it has no array part, an array when it is a sequence, and an
--    empty table is both; a mixed table is an object. Metatables (cjson.array_mt) do not count.
--  * Error messages are worded the way APISIX users and APISIX's own tests match them, and
--    checks run in the same order, so the first error reported is the same one.
--
-- This module never touches requests; the only ngx API it uses is `ngx.re.find` (`pattern`,
-- `patternProperties`, formats).

local type = type
local pairs = pairs
local ipairs = ipairs
local next = next
local tostring = tostring
local tonumber = tonumber
local error = error
local pcall = pcall
local setmetatable = setmetatable
local sformat = string.format
local sbyte = string.byte
local concat = table.concat
local floor = math.floor
local abs = math.abs
local nkeys = require("table.nkeys")

local _M = { version = 0.1 }

local json_encode, json_null
do
    local ok, cjson = pcall(require, "cjson.safe")
    if ok then
        json_encode = cjson.encode
        json_null = cjson.null
    end
end

local re_find = ngx and ngx.re and ngx.re.find

local function match_pattern(s, pattern)
    if type(s) ~= "string" and type(s) ~= "number" then
        return false
    end
    local from = re_find(s, pattern, "jo")
    return from ~= nil
end

-- 0: an object (no array part, or a mixed table); 1: empty (both object and array); 2: array.
local function tablekind(t)
    local len = #t
    if len == 0 then
        if next(t) == nil then
            return 1
        end
        return 0
    end
    if nkeys(t) == len then
        return 2
    end
    return 0
end
_M.tablekind = tablekind

-- Length in characters, counting each well-formed UTF-8 sequence once and each byte of a
-- malformed one on its own.
local function utf8_len(s)
    local i, n, count = 1, #s, 0
    while i <= n do
        local c = sbyte(s, i)
        local extra = 0
        local lo, hi = 0x80, 0xBF
        if c >= 0xC2 and c <= 0xDF then
            extra = 1
        elseif c >= 0xE0 and c <= 0xEF then
            extra = 2
            if c == 0xE0 then lo = 0xA0 elseif c == 0xED then hi = 0x9F end
        elseif c >= 0xF0 and c <= 0xF4 then
            extra = 3
            if c == 0xF0 then lo = 0x90 elseif c == 0xF4 then hi = 0x8F end
        end
        if i + extra > n then
            extra = 0
        end
        for j = 1, extra do
            local b = sbyte(s, i + j)
            if b < lo or b > hi then
                extra = 0
                break
            end
            lo, hi = 0x80, 0xBF
        end
        i = i + extra + 1
        count = count + 1
    end
    return count
end
_M.utf8_len = utf8_len

-- Deep equality of JSON-like values (tables compared by content, metatables ignored).
local function deep_equal(a, b, seen)
    if type(a) ~= type(b) then
        return false
    end
    if type(a) ~= "table" then
        return a == b
    end
    if a == b then
        return true
    end
    seen = seen or {}
    if seen[a] then
        return seen[a] == b
    end
    seen[a] = b
    for k, va in pairs(a) do
        local vb = b[k]
        if vb == nil or not deep_equal(va, vb, seen) then
            return false
        end
    end
    for k in pairs(b) do
        if a[k] == nil then
            return false
        end
    end
    return true
end
_M.deep_equal = deep_equal

-- A fresh copy of a default value, so no two confs share a table (and no metatable comes along).
local function copy_default(v)
    if type(v) ~= "table" then
        return v
    end
    local c = {}
    for k, x in pairs(v) do
        c[copy_default(k)] = copy_default(x)
    end
    return c
end

-- The first pair of equal items (their indexes), or nil when all items differ.
local function first_duplicate(arr)
    local index_of, tables, ntables = {}, {}, 0
    for i, v in ipairs(arr) do
        if type(v) == "table" then
            ntables = ntables + 1
            tables[ntables] = v
        elseif index_of[v] then
            return index_of[v], i
        end
        index_of[v] = i
    end
    for i = 1, ntables - 1 do
        for j = i + 1, ntables do
            if deep_equal(tables[i], tables[j]) then
                return index_of[tables[i]], index_of[tables[j]]
            end
        end
    end
    return nil
end

local parse_ip
do
    local ok, ffi = pcall(require, "ffi")
    if ok then
        pcall(ffi.cdef, "int inet_pton(int af, const char *src, void *dst);")
        local buf = ffi.new("unsigned char[16]")
        local AF_INET6 = ffi.os == "OSX" and 30 or 10
        local probe = pcall(function() return ffi.C.inet_pton end)
        if probe then
            parse_ip = function(family, s)
                return ffi.C.inet_pton(family == 4 and 2 or AF_INET6, s, buf) == 1
            end
        end
    end
end

-- `format` values checked, as regexes (PCRE via ngx.re) unless a precise parser exists.
local FORMAT_PATTERNS = {
    email = [[^[A-Za-z0-9_.\-]+@[A-Za-z0-9_.\-]+\.[A-Za-z]{2,4}$]],
    hostname = [[^[a-zA-Z0-9.\-]+$]],
    uri = [[^[a-zA-Z][a-zA-Z0-9+.\-]*:\S*$]],
    uuid = [[^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$]],
    date = [[^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$]],
    ["date-time"] = [[^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])[Tt]([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d+)?([Zz]|[+-]([01]\d|2[0-3]):[0-5]\d)$]],
    ipv4 = [[^((\d{1,2}|1\d\d|2[0-4]\d|25[0-5])\.){3}(\d{1,2}|1\d\d|2[0-4]\d|25[0-5])$]],
    ipv6 = [[^\s*([0-9A-Fa-f]{0,4}:){2,7}([0-9A-Fa-f]{0,4}|\d+\.\d+\.\d+\.\d+)(%.+)?\s*$]],
}

local function format_check(format)
    if (format == "ipv4" or format == "ipv6") and parse_ip then
        local family = format == "ipv4" and 4 or 6
        return function(s) return parse_ip(family, s) end
    end
    local pattern = FORMAT_PATTERNS[format]
    if not pattern then
        return nil -- unknown formats are annotations, as in api7/jsonschema
    end
    return function(s) return match_pattern(s, pattern) end
end

-- How a number in a schema reads in a message (the way Lua prints it: 1, 0.5, 1e-05).
local function num(n)
    return tostring(n)
end

-- JSON pointer part -> table key (numeric parts are 0-based array indexes).
local function pointer_key(part)
    part = part:gsub("%%(%x%x)", function(h) return string.char(tonumber(h, 16)) end)
    part = part:gsub("~1", "/"):gsub("~0", "~")
    local n = tonumber(part)
    if n then
        return n + 1, part
    end
    return part, part
end

local function resolve_ref(root, node)
    local seen = {}
    while type(node) == "table" and node["$ref"] ~= nil do
        if seen[node] then
            error("circular $ref: " .. tostring(node["$ref"]))
        end
        seen[node] = true
        local ref = node["$ref"]
        if type(ref) ~= "string" or sbyte(ref, 1) ~= 35 then -- '#'
            error("unsupported $ref " .. tostring(ref)
                  .. ": only references inside the schema (#/...) are supported")
        end
        local target = root
        for part in ref:sub(2):gmatch("[^/]+") do
            local key, raw = pointer_key(part)
            local nxt = type(target) == "table" and (target[key] or target[raw]) or nil
            if nxt == nil then
                error(sformat("reference not found: %s (at %q)", ref, raw))
            end
            target = nxt
        end
        node = target
    end
    return node
end

local TYPE_NAMES = {
    object = true, array = true, table = true, integer = true, string = true,
    boolean = true, number = true, null = true, ["function"] = true,
}

local function is_integer(v, vt)
    if vt == "number" then
        return v % 1 == 0
    end
    if vt == "cdata" then
        local n = tonumber(v)
        return n ~= nil and n % 1 == 0
    end
    return false
end

local function type_matches(name, v, vt, kind, null)
    if name == "object" then
        return vt == "table" and kind <= 1
    elseif name == "array" then
        return vt == "table" and kind >= 1
    elseif name == "integer" then
        return is_integer(v, vt)
    elseif name == "null" then
        return v == null
    end
    return vt == name -- string, boolean, number, table, function
end

-- A compiled schema node is a function(value) -> ok, err. It is built from a list of checks,
-- each function(value, vtype, kind) returning nil to go on, `false, err` to fail, or `true` to
-- accept the value at once (what a `true` schema under `items`/`propertyNames` does in the
-- reference validator).
local compile_node

local function child(state, sub)
    return compile_node(state, sub)
end

local function run_all(checks, n, skip, schema)
    if n == 0 and not skip then
        return function() return true end
    end
    return function(v)
        local vt = type(v)
        if skip and vt == "string" and skip(v, schema) then
            return true
        end
        local kind = vt == "table" and tablekind(v)
        for i = 1, n do
            local ok, err = checks[i](v, vt, kind)
            if ok ~= nil then
                if ok then
                    return true
                end
                return false, err
            end
        end
        return true
    end
end

local function add_type(checks, schema, null)
    local t = schema.type
    local tt = type(t)
    if tt == "string" then
        if not TYPE_NAMES[t] then
            error("invalid JSON type: " .. t)
        end
        local msg = "wrong type: expected " .. t .. ", got "
        if t == "string" or t == "number" or t == "boolean" or t == "table" or t == "function" then
            checks[#checks + 1] = function(_, vt)
                if vt ~= t then return false, msg .. vt end
            end
        else
            checks[#checks + 1] = function(v, vt, kind)
                if not type_matches(t, v, vt, kind, null) then return false, msg .. vt end
            end
        end
    elseif tt == "table" then
        for _, name in ipairs(t) do
            if not TYPE_NAMES[name] then
                error("invalid JSON type: " .. tostring(name))
            end
        end
        local msg = "wrong type: expected one of " .. concat(t, ", ") .. ", got "
        local n = #t
        checks[#checks + 1] = function(v, vt, kind)
            for i = 1, n do
                if type_matches(t[i], v, vt, kind, null) then return nil end
            end
            return false, msg .. vt
        end
    elseif tt ~= "nil" then
        error('invalid "type" type: got ' .. tt)
    end
end

-- Keywords whose value must be a list or a map: a schema that gives anything else cannot be
-- compiled (the reference validator fails iterating it, with Lua's "table expected" words,
-- which APISIX passes on and its users match).
local TABLE_KEYWORDS = {
    "required", "properties", "patternProperties", "dependencies", "enum",
    "allOf", "anyOf", "oneOf", "definitions",
}

local function check_keyword_shapes(node)
    for _, k in ipairs(TABLE_KEYWORDS) do
        local v = node[k]
        if v ~= nil and type(v) ~= "table" then
            error(sformat("invalid schema keyword %q: table expected, got %s", k, type(v)))
        end
    end
end

local function is_default_kind(d)
    local td = type(d)
    return td == "number" or td == "string" or td == "boolean" or td == "table"
end

local function add_object(state, checks, schema)
    if not (schema.properties or schema.additionalProperties ~= nil or schema.patternProperties
            or schema.minProperties or schema.maxProperties or schema.dependencies
            or schema.required) then
        return
    end
    local properties = schema.properties or {}
    local dependencies = schema.dependencies or {}

    -- The required names not declared in `properties` are checked after them, in the order of
    -- this set (built the way the reference builds it, so the first reported name matches).
    local required_rest = {}
    if type(schema.required) == "table" then
        for _, k in ipairs(schema.required) do required_rest[k] = true end
    end

    -- One step per declared property: check it, its dependencies, `required`, then the default.
    local props, nprops = {}, 0
    for name, sub in pairs(properties) do
        local p = {
            name = name,
            validate = child(state, sub),
            failed = 'property "' .. tostring(name) .. '" validation failed: ',
        }
        local dep = dependencies[name]
        if dep ~= nil then
            if type(dep) == "table" and #dep > 0 then
                p.dep_names = dep
            else
                p.dep_validate = child(state, dep)
            end
        end
        if required_rest[name] then
            p.required = true
            required_rest[name] = nil
        end
        if type(sub) == "table" and sub.default ~= nil and is_default_kind(sub.default) then
            p.default = sub.default
            p.default_is_table = type(sub.default) == "table"
        end
        nprops = nprops + 1
        props[nprops] = p
    end
    local rest, nrest = {}, 0
    for name in pairs(required_rest) do
        nrest = nrest + 1
        rest[nrest] = name
    end
    local deps_rest, ndeps = {}, 0
    for name, dep in pairs(dependencies) do
        if properties[name] == nil then
            local d = { name = name }
            if type(dep) == "table" and #dep > 0 then
                d.names = dep
            else
                d.validate = child(state, dep)
            end
            ndeps = ndeps + 1
            deps_rest[ndeps] = d
        end
    end

    local additional = schema.additionalProperties
    local declared, additional_validate
    if additional ~= nil and additional ~= true then
        declared = {}
        for name in pairs(properties) do declared[name] = true end
        if type(additional) == "table" then
            additional_validate = child(state, additional)
        end
    end
    local patterns, npatterns = {}, 0
    if schema.patternProperties then
        for patt, sub in pairs(schema.patternProperties) do
            npatterns = npatterns + 1
            patterns[npatterns] = {
                pattern = patt,
                validate = child(state, sub),
                failed = ' (matching "' .. patt .. '"): ',
            }
        end
    end
    local min_props, max_props = schema.minProperties, schema.maxProperties
    local count_props = min_props ~= nil or max_props ~= nil
    local walk = npatterns > 0 or declared ~= nil or count_props

    checks[#checks + 1] = function(v, vt, kind)
        if vt ~= "table" or kind > 1 then
            return nil
        end
        for i = 1, nprops do
            local p = props[i]
            local name = p.name
            local pv = v[name]
            if pv ~= nil then
                local ok, err = p.validate(pv)
                if not ok then
                    return false, p.failed .. err
                end
                local dep_names = p.dep_names
                if dep_names then
                    for _, dn in ipairs(dep_names) do
                        if v[dn] == nil then
                            return false, 'property "' .. tostring(dn) .. '" is required when "'
                                          .. tostring(name) .. '" is set'
                        end
                    end
                elseif p.dep_validate then
                    ok, err = p.dep_validate(v)
                    if not ok then
                        return false, 'failed to validate dependent schema for "'
                                      .. tostring(name) .. '": ' .. err
                    end
                end
            elseif p.required then
                return false, 'property "' .. tostring(name) .. '" is required'
            end
            if pv == nil and p.default ~= nil then
                if p.default_is_table then
                    v[name] = copy_default(p.default)
                else
                    v[name] = p.default
                end
            end
        end
        for i = 1, nrest do
            if v[rest[i]] == nil then
                return false, 'property "' .. tostring(rest[i]) .. '" is required'
            end
        end
        for i = 1, ndeps do
            local d = deps_rest[i]
            if v[d.name] ~= nil then
                if d.names then
                    for _, dn in ipairs(d.names) do
                        if v[dn] == nil then
                            return false, 'property "' .. tostring(dn) .. '" is required when "'
                                          .. tostring(d.name) .. '" is set'
                        end
                    end
                else
                    local ok, err = d.validate(v)
                    if not ok then
                        return false, 'failed to validate dependent schema for "'
                                      .. tostring(d.name) .. '": ' .. err
                    end
                end
            end
        end
        if walk then
            local count = 0
            for k, pv in pairs(v) do
                local matched = false
                for i = 1, npatterns do
                    local pt = patterns[i]
                    if match_pattern(k, pt.pattern) then
                        local ok, err = pt.validate(pv)
                        if not ok then
                            return false, "failed to validate " .. tostring(k) .. pt.failed .. err
                        end
                        matched = true
                    end
                end
                if declared and not (declared[k] or matched) then
                    if additional_validate then
                        local ok, err = additional_validate(pv)
                        if not ok then
                            return false, "failed to validate additional property "
                                          .. tostring(k) .. ": " .. err
                        end
                    else
                        return false, "additional properties forbidden, found " .. tostring(k)
                    end
                end
                count = count + 1
            end
            if min_props and count < min_props then
                return false, "expect object to have at least " .. num(min_props) .. " properties"
            end
            if max_props and count > max_props then
                return false, "expect object to have at most " .. num(max_props) .. " properties"
            end
        end
        return nil
    end

    -- `required: []` in the reference validator means "the value must be an empty table".
    if type(schema.required) == "table" and #schema.required == 0 then
        checks[#checks + 1] = function(_, _, kind)
            if kind ~= 1 then
                return false, "the input data should be an empty table"
            end
        end
    end
end

local function add_array(state, checks, schema)
    local items = schema.items
    if not (items ~= nil or schema.minItems or schema.maxItems or schema.uniqueItems) then
        return
    end
    if items == true then
        checks[#checks + 1] = function() return true end
        return
    elseif items == false then
        checks[#checks + 1] = function(_, vt, kind)
            if vt == "table" and kind == 1 then return true end
            return false, "expect false always"
        end
        return
    end
    local min_items, max_items = schema.minItems, schema.maxItems
    local tuple, ntuple, list_validate
    local extra_forbidden, extra_validate
    if type(items) == "table" and #items > 0 then
        tuple, ntuple = {}, #items
        for i, sub in ipairs(items) do tuple[i] = child(state, sub) end
        if schema.additionalItems == false then
            extra_forbidden = true
        elseif type(schema.additionalItems) == "table" then
            extra_validate = child(state, schema.additionalItems)
        end
    elseif items ~= nil then
        list_validate = child(state, items)
    end
    local unique = schema.uniqueItems

    checks[#checks + 1] = function(v, vt, kind)
        if vt ~= "table" or kind < 1 then
            return nil
        end
        if min_items or max_items then
            local n = #v
            if min_items and n < min_items then
                return false, "expect array to have at least " .. num(min_items) .. " items"
            end
            if max_items and n > max_items then
                return false, "expect array to have at most " .. num(max_items) .. " items"
            end
        end
        if tuple then
            local complete = true
            for i = 1, ntuple do
                local item = v[i]
                if item == nil then
                    complete = false
                    break
                end
                local ok, err = tuple[i](item)
                if not ok then
                    return false, "failed to validate item " .. i .. ": " .. err
                end
            end
            if complete then
                if extra_forbidden and v[ntuple + 1] ~= nil then
                    return false, "found unexpected extra items in array"
                elseif extra_validate then
                    for i = ntuple + 1, #v do
                        local ok, err = extra_validate(v[i])
                        if not ok then
                            return false, sformat("failed to validate additional item %d: %s",
                                                  i, err)
                        end
                    end
                end
            end
        elseif list_validate then
            for i, item in ipairs(v) do
                local ok, err = list_validate(item)
                if not ok then
                    return false, sformat("failed to validate item %d: %s", i, err)
                end
            end
        end
        if unique then
            local i, j = first_duplicate(v)
            if i then
                return false, sformat("expected unique items but items %d and %d are equal", i, j)
            end
        end
        return nil
    end
end

local function add_string(checks, schema)
    local min_len, max_len, pattern = schema.minLength, schema.maxLength, schema.pattern
    if not (min_len or max_len or pattern) then
        return
    end
    local short = min_len and sformat("string too short, expected at least %d, got ", min_len)
    local long = max_len and sformat("string too long, expected at most %d, got ", max_len)
    local pattern_msg = pattern and ("failed to match pattern " .. sformat("%q", pattern) .. " with ")
    checks[#checks + 1] = function(v, vt)
        if vt ~= "string" then
            return nil
        end
        if min_len then
            local c = utf8_len(v)
            if c < min_len then return false, short .. c end
        end
        if max_len then
            local c = utf8_len(v)
            if c > max_len then return false, long .. c end
        end
        if pattern and not match_pattern(v, pattern) then
            return false, pattern_msg .. sformat("%q", v)
        end
        return nil
    end
end

local function add_number(checks, schema)
    local minimum, maximum = schema.minimum, schema.maximum
    local xmin, xmax = schema.exclusiveMinimum, schema.exclusiveMaximum
    local mof = schema.multipleOf
    if not (minimum or maximum or xmin or xmax or mof) then
        return
    end
    -- Draft 4 spells exclusive bounds as booleans beside minimum/maximum.
    if xmin == true then xmin = minimum; minimum = nil elseif xmin == false then xmin = nil end
    if xmax == true then xmax = maximum; maximum = nil elseif xmax == false then xmax = nil end
    local at_least = minimum and (" to be at least " .. num(minimum))
    local greater = xmin and (" to be greater than " .. num(xmin))
    local at_most = maximum and (" to be at most " .. num(maximum))
    local smaller = xmax and (" to be smaller than " .. num(xmax))
    local multiple = mof and (" to be a multiple of " .. num(mof))
    local int_mof = mof and floor(mof) == mof
    checks[#checks + 1] = function(v, vt)
        if vt ~= "number" then
            return nil
        end
        if minimum and v < minimum then return false, "expected " .. num(v) .. at_least end
        if xmin and v <= xmin then return false, "expected " .. num(v) .. greater end
        if maximum and v > maximum then return false, "expected " .. num(v) .. at_most end
        if xmax and v >= xmax then return false, "expected " .. num(v) .. smaller end
        if mof then
            local bad
            if int_mof then
                bad = v % mof ~= 0
            else
                -- a relative tolerance, so 1.13 is a multiple of 0.01 despite binary floats
                local q = v / mof
                local r = floor(q + 0.5)
                local tol = 1e-12 * (r == 0 and 1 or abs(r))
                bad = abs(q - r) > tol
            end
            if bad then return false, "expected " .. num(v) .. multiple end
        end
        return nil
    end
end

local function add_enum(checks, schema)
    local enum = schema.enum
    if enum == nil then
        return
    end
    local n = #enum
    local has_table = false
    for _, e in ipairs(enum) do
        if type(e) == "table" then has_table = true end
    end
    checks[#checks + 1] = function(v)
        for i = 1, n do
            local e = enum[i]
            if e == v or (has_table and type(e) == "table" and deep_equal(v, e)) then
                return nil
            end
        end
        return false, "matches none of the enum values"
    end
end

local function add_combinators(state, checks, schema)
    if schema.allOf then
        local subs = {}
        for i, sub in ipairs(schema.allOf) do subs[i] = child(state, sub) end
        local n = #subs
        checks[#checks + 1] = function(v)
            for i = 1, n do
                local ok, err = subs[i](v)
                if not ok then return false, "allOf " .. i .. " failed: " .. err end
            end
            return nil
        end
    end
    if schema.anyOf then
        local subs, requires = {}, {}
        for i, sub in ipairs(schema.anyOf) do
            subs[i] = child(state, sub)
            if json_encode and type(sub) == "table" and sub.required then
                local s = json_encode(sub.required)
                if s then requires[#requires + 1] = s end
            end
        end
        local n = #subs
        local msg = "object matches none of the required"
        if #requires > 0 then
            msg = msg .. ": " .. concat(requires, " or ")
        end
        checks[#checks + 1] = function(v)
            for i = 1, n do
                if subs[i](v) then return nil end
            end
            return false, msg
        end
    end
    if schema.oneOf then
        local subs = {}
        for i, sub in ipairs(schema.oneOf) do subs[i] = child(state, sub) end
        local n = #subs
        checks[#checks + 1] = function(v)
            local matched
            for i = 1, n do
                if subs[i](v) then
                    if matched then
                        return false, sformat("value should match only one schema, but matches "
                                              .. "both schemas %d and %d", matched, i)
                    end
                    matched = i
                end
            end
            if not matched then
                return false, "value should match only one schema, but matches none"
            end
            return nil
        end
    end
    if schema["if"] ~= nil then
        local cond = child(state, schema["if"])
        local then_ = schema["then"] ~= nil and child(state, schema["then"])
        local else_ = schema["else"] ~= nil and child(state, schema["else"])
        checks[#checks + 1] = function(v)
            if cond(v) then
                if then_ and not then_(v) then return false, "then clause did not match" end
            elseif else_ and not else_(v) then
                return false, "else clause did not match"
            end
            return nil
        end
    end
    if schema["not"] ~= nil then
        local sub = child(state, schema["not"])
        checks[#checks + 1] = function(v)
            if sub(v) then return false, "value wasn't supposed to match schema" end
        end
    end
end

local function add_tail(state, checks, schema)
    local names = schema.propertyNames
    if names == true then
        checks[#checks + 1] = function() return true end
    elseif names == false then
        checks[#checks + 1] = function(_, vt, kind)
            if vt == "table" and kind == 1 then return true end
            return false, "expect false always"
        end
    end
    if type(schema.format) == "string" then
        local valid = format_check(schema.format)
        if valid then
            local msg = "expect valid " .. schema.format .. " format but got: "
            checks[#checks + 1] = function(v, vt)
                if vt == "string" and not valid(v) then return false, msg .. v end
            end
        end
    end
    if schema.const ~= nil then
        local const = schema.const
        checks[#checks + 1] = function(v)
            if not deep_equal(v, const) then return false, "failed to check const value" end
        end
    end
    local contains = schema.contains
    if contains == true then
        checks[#checks + 1] = function(_, vt, kind)
            if vt == "table" and kind == 2 then return true end
            return false, "check contains: expect array table"
        end
    elseif contains == false then
        checks[#checks + 1] = function(_, vt)
            if vt ~= "table" then return true end
            return false, "check contains: expect table"
        end
    elseif contains ~= nil then
        local sub = child(state, contains)
        checks[#checks + 1] = function(v, vt, kind)
            if vt == "table" and kind == 1 then
                return false, "check contains: empty array is invalid"
            end
            if vt ~= "table" then
                return nil
            end
            local n, misses = #v, 0
            for _, item in ipairs(v) do
                if not sub(item) then misses = misses + 1 end
            end
            if n > 0 and misses == n then return false, "failed to check contains" end
            return nil
        end
    end
end

compile_node = function(state, schema)
    if schema == true then
        return function() return true end
    elseif schema == false then
        return function() return false, "expect false always" end
    end
    if type(schema) ~= "table" then
        error("invalid schema: expected a table or a boolean, got " .. type(schema))
    end
    local node = resolve_ref(state.root, schema)
    if node ~= schema then
        return compile_node(state, node)
    end
    local done = state.compiled[node]
    if done then
        return done
    end
    if state.compiling[node] then
        -- a cycle through $ref: call whatever this node compiles to, once it has
        return function(v) return state.compiled[node](v) end
    end
    state.compiling[node] = true
    check_keyword_shapes(node)
    local checks = {}
    add_type(checks, node, state.null)
    add_object(state, checks, node)
    add_array(state, checks, node)
    add_string(checks, node)
    add_number(checks, node)
    add_enum(checks, node)
    add_combinators(state, checks, node)
    add_tail(state, checks, node)
    local fn = run_all(checks, #checks, state.skip, node)
    state.compiling[node] = nil
    state.compiled[node] = fn
    return fn
end

--- Compiles `schema` into `validator(value) -> true | false, message`. Raises an error for a
-- schema it cannot compile. `opts`: `skip_validation(value, subschema)` (a string value for
-- which it returns true passes that subschema unchecked: APISIX's secret references),
-- `null` (the value the "null" type matches; cjson.null by default).
function _M.generate_validator(schema, opts)
    local state = {
        root = schema,
        compiled = {},
        compiling = {},
        skip = opts and opts.skip_validation,
        null = opts and opts.null or json_null,
    }
    return compile_node(state, schema)
end

-- Validators per options object, then per schema table; weak keys, so a schema that is no
-- longer referenced takes its validator with it.
local caches = setmetatable({}, { __mode = "k" })
local NO_OPTS = {}

--- The cached validator for `schema` (compiled on first use): `validator` or `nil, err`.
-- The schema table is the key: a schema changed after its first use keeps its old validator,
-- as in APISIX.
function _M.compile(schema, opts)
    local key = opts or NO_OPTS
    local cache = caches[key]
    if not cache then
        cache = setmetatable({}, { __mode = "k" })
        caches[key] = cache
    end
    local v = cache[schema]
    if v then
        return v
    end
    local ok, res = pcall(_M.generate_validator, schema, opts)
    if not ok then
        return nil, res
    end
    if type(schema) == "table" then
        cache[schema] = res
    end
    return res
end

--- Validates `value` against `schema` (filling defaults into it): `true` or `false, message`.
function _M.validate(schema, value, opts)
    local validator, err = _M.compile(schema, opts)
    if not validator then
        return false, err
    end
    return validator(value)
end

return _M
