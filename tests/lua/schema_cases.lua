local groups = {}
local order = {}
local current
local function group(name) current = {}; groups[name] = current; order[#order+1] = name end
local function case(name, fn) current[#current + 1] = { name = name, fn = fn } end

local function show(v)
    if type(v) == "string" then return string.format("%q", v) end
    return tostring(v)
end
local function eq(got, want, what)
    if got ~= want then
        error((what and (what .. ": ") or "") .. "got " .. show(got) .. ", want " .. show(want), 2)
    end
end

local jsonschema = require("moongate.jsonschema")
local schema = require("apisix.core.schema")


local cjson = require("cjson.safe")

-- check(schema, value) -> ok, err with a fresh validator (generate_validator, not the cache)
local function check(sch, v)
    return jsonschema.generate_validator(sch)(v)
end
local function ok_(sch, v, what)
    local ok, err = check(sch, v)
    if not ok then error((what or "value") .. " should pass, failed: " .. tostring(err), 2) end
end
local function fails(sch, v, want, what)
    local ok, err = check(sch, v)
    if ok then error((what or "value") .. " should fail with " .. show(want) .. ", passed", 2) end
    if err ~= want then error((what or "value") .. ": error " .. show(err) .. ", want " .. show(want), 2) end
end

group("smoke")
case("core.schema.check reports in APISIX's words", function()
    local ok, err = schema.check({ type = "object", properties = { key = { type = "string" } } }, { key = 1 })
    eq(ok, false)
    eq(err, 'property "key" validation failed: wrong type: expected string, got number')
end)

group("keywords")
case("type: each JSON type", function()
    ok_({ type = "string" }, "a"); fails({ type = "string" }, 1, "wrong type: expected string, got number")
    ok_({ type = "number" }, 1.5); fails({ type = "number" }, "1", "wrong type: expected number, got string")
    ok_({ type = "integer" }, 3); fails({ type = "integer" }, 3.5, "wrong type: expected integer, got number")
    fails({ type = "integer" }, "3", "wrong type: expected integer, got string")
    ok_({ type = "boolean" }, false); fails({ type = "boolean" }, "true", "wrong type: expected boolean, got string")
    ok_({ type = "null" }, cjson.null); fails({ type = "null" }, false, "wrong type: expected null, got boolean")
    ok_({ type = "object" }, { a = 1 }); fails({ type = "object" }, { 1, 2 }, "wrong type: expected object, got table")
    ok_({ type = "array" }, { 1, 2 }); fails({ type = "array" }, { a = 1 }, "wrong type: expected array, got table")
    fails({ type = "array" }, "x", "wrong type: expected array, got string")
end)
case("type: an empty table is both object and array; a mixed table is an object", function()
    ok_({ type = "object" }, {}); ok_({ type = "array" }, {})
    ok_({ type = "object" }, setmetatable({}, cjson.array_mt), "empty array_mt table as object")
    ok_({ type = "object" }, { 1, a = 2 }); fails({ type = "array" }, { 1, a = 2 }, "wrong type: expected array, got table")
end)
case("type: a list of types", function()
    local s = { type = { "string", "integer" } }
    ok_(s, "a"); ok_(s, 2)
    fails(s, true, "wrong type: expected one of string, integer, got boolean")
    fails(s, 2.5, "wrong type: expected one of string, integer, got number")
end)
case("type: an unknown type name refuses to compile", function()
    local v, err = jsonschema.compile({ type = "str" })
    eq(v, nil); eq(err:find("invalid JSON type: str", 1, true) ~= nil, true, err)
end)
case("a keyword that must be a list or map but is not refuses to compile", function()
    local v, err = jsonschema.compile({ type = "object", required = "name" })
    eq(v, nil); eq(err:find("table expected, got string", 1, true) ~= nil, true, err)
    v, err = jsonschema.compile({ enum = 3 })
    eq(v, nil); eq(err:find('"enum": table expected, got number', 1, true) ~= nil, true, err)
end)
case("enum and const", function()
    local e = { enum = { "a", 1, true, { x = 1 } } }
    ok_(e, "a"); ok_(e, 1); ok_(e, true); ok_(e, { x = 1 })
    fails(e, "b", "matches none of the enum values"); fails(e, { x = 2 }, "matches none of the enum values")
    ok_({ const = { 1, 2 } }, { 1, 2 }); fails({ const = "x" }, "y", "failed to check const value")
end)
case("properties and required", function()
    local s = { type = "object", properties = { a = { type = "string" } }, required = { "a", "b" } }
    ok_(s, { a = "x", b = 1 })
    fails(s, { b = 1 }, 'property "a" is required')
    fails(s, { a = "x" }, 'property "b" is required')
    fails(s, { a = 1, b = 1 }, 'property "a" validation failed: wrong type: expected string, got number')
    ok_({ properties = { a = { type = "string" } }, required = { "a" } }, "x", "object keywords skip non-objects")
    fails({ required = {} }, { a = 1 }, "the input data should be an empty table")
    ok_({ required = {} }, {})
end)
case("additionalProperties: false and a schema", function()
    local s = { type = "object", properties = { a = {} }, additionalProperties = false }
    ok_(s, { a = 1 }); fails(s, { a = 1, foo = 2 }, "additional properties forbidden, found foo")
    local t = { type = "object", properties = { a = {} }, additionalProperties = { type = "integer" } }
    ok_(t, { a = "x", b = 2 })
    fails(t, { b = "x" }, "failed to validate additional property b: wrong type: expected integer, got string")
end)
case("patternProperties, alone and with additionalProperties", function()
    local s = { type = "object", patternProperties = { ["^x-"] = { type = "string" } } }
    ok_(s, { ["x-a"] = "1", other = 2 })
    fails(s, { ["x-a"] = 1 }, 'failed to validate x-a (matching "^x-"): wrong type: expected string, got number')
    local t = { type = "object", patternProperties = { ["^x-"] = {} }, additionalProperties = false }
    ok_(t, { ["x-a"] = 1 }); fails(t, { y = 1 }, "additional properties forbidden, found y")
    local p = { patternProperties = { ["^\\d+$"] = { type = "integer" } } }
    fails(p, { ["12"] = "a" }, 'failed to validate 12 (matching "^\\d+$"): wrong type: expected integer, got string')
end)
case("minProperties and maxProperties", function()
    local s = { type = "object", minProperties = 1, maxProperties = 2 }
    fails(s, {}, "expect object to have at least 1 properties")
    fails(s, { a = 1, b = 2, c = 3 }, "expect object to have at most 2 properties")
    ok_(s, { a = 1 })
end)
case("dependencies: a list of names and a schema", function()
    local s = { properties = { a = {} }, dependencies = { a = { "b" }, c = { "d" } } }
    fails(s, { a = 1 }, 'property "b" is required when "a" is set')
    fails(s, { c = 1 }, 'property "d" is required when "c" is set')
    ok_(s, { a = 1, b = 2, c = 3, d = 4 }); ok_(s, {})
    local t = { properties = { a = {} }, dependencies = { a = { required = { "b" } }, z = { properties = { n = { type = "string" } } } } }
    fails(t, { a = 1 }, 'failed to validate dependent schema for "a": property "b" is required')
    fails(t, { z = 1, n = 2 }, 'failed to validate dependent schema for "z": property "n" validation failed: wrong type: expected string, got number')
end)
case("items: one schema for all, tuples, additionalItems", function()
    local s = { type = "array", items = { type = "integer" } }
    ok_(s, { 1, 2 }); fails(s, { 1, "x" }, "failed to validate item 2: wrong type: expected integer, got string")
    local t = { items = { { type = "string" }, { type = "integer" } }, additionalItems = false }
    ok_(t, { "a", 1 }); ok_(t, { "a" }, "a short tuple")
    fails(t, { 1 }, "failed to validate item 1: wrong type: expected string, got number")
    fails(t, { "a", 1, 2 }, "found unexpected extra items in array")
    local u = { items = { { type = "string" } }, additionalItems = { type = "boolean" } }
    fails(u, { "a", true, 3 }, "failed to validate additional item 3: wrong type: expected boolean, got number")
end)
case("minItems, maxItems, uniqueItems", function()
    local s = { type = "array", minItems = 1, maxItems = 2, uniqueItems = true }
    fails(s, {}, "expect array to have at least 1 items")
    fails(s, { 1, 2, 3 }, "expect array to have at most 2 items")
    fails(s, { 7, 7 }, "expected unique items but items 1 and 2 are equal")
    fails(s, { { a = 1 }, { a = 1 } }, "expected unique items but items 1 and 2 are equal")
    ok_(s, { 1, "1" })
end)
case("minLength and maxLength count UTF-8 characters", function()
    local s = { type = "string", minLength = 2, maxLength = 3 }
    fails(s, "a", "string too short, expected at least 2, got 1")
    fails(s, "abcd", "string too long, expected at most 3, got 4")
    ok_(s, "\u{e9}\u{e9}\u{e9}", "three two-byte characters")
    fails({ minLength = 1 }, "", "string too short, expected at least 1, got 0")
end)
case("pattern: PCRE through ngx.re; the message quotes both sides as Lua does", function()
    ok_({ pattern = "^x" }, "xy"); fails({ pattern = "^x" }, "y", 'failed to match pattern "^x" with "y"')
    fails({ pattern = [[^\d+$]] }, 'a"b', [[failed to match pattern "^\\d+$" with "a\"b"]])
    ok_({ pattern = "^x" }, 5, "pattern ignores non-strings")
end)
case("format: ipv4, ipv6, hostname, uri, email", function()
    ok_({ format = "ipv4" }, "10.0.0.1"); fails({ format = "ipv4" }, "10.0.0.256", "expect valid ipv4 format but got: 10.0.0.256")
    -- addresses are judged by the system's inet_pton, as under OpenResty: no leading zeros
    fails({ format = "ipv4" }, "1.2.3.04", "expect valid ipv4 format but got: 1.2.3.04")
    ok_({ format = "ipv6" }, "::1"); ok_({ format = "ipv6" }, "2001:db8::8a2e:370:7334")
    ok_({ format = "ipv6" }, "::ffff:10.0.0.1"); fails({ format = "ipv6" }, "1::2::3", "expect valid ipv6 format but got: 1::2::3")
    fails({ format = "ipv6" }, "1.2.3.4", "expect valid ipv6 format but got: 1.2.3.4")
    ok_({ format = "hostname" }, "a-b.example.com"); fails({ format = "hostname" }, "a b", "expect valid hostname format but got: a b")
    ok_({ format = "uri" }, "http://x/y"); fails({ format = "uri" }, "/x", "expect valid uri format but got: /x")
    ok_({ format = "email" }, "a.b@example.com"); fails({ format = "email" }, "a@b", "expect valid email format but got: a@b")
    ok_({ format = "unknown-format" }, "anything")
end)
case("minimum, maximum, exclusive bounds (draft 6 numbers and draft 4 booleans), multipleOf", function()
    fails({ minimum = 1 }, 0, "expected 0 to be at least 1")
    fails({ maximum = 65535 }, 65536, "expected 65536 to be at most 65535")
    fails({ exclusiveMinimum = 0 }, 0, "expected 0 to be greater than 0")
    fails({ exclusiveMinimum = 0 }, -1, "expected -1 to be greater than 0")
    fails({ exclusiveMaximum = 10 }, 10, "expected 10 to be smaller than 10")
    fails({ minimum = 0.00001 }, -0.1, "expected -0.1 to be at least 1e-05")
    fails({ minimum = 0, exclusiveMinimum = true }, 0, "expected 0 to be greater than 0")
    ok_({ minimum = 0, exclusiveMinimum = false }, 0)
    fails({ multipleOf = 3 }, 7, "expected 7 to be a multiple of 3")
    ok_({ multipleOf = 0.01 }, 1.13); fails({ multipleOf = 0.5 }, 1.2, "expected 1.2 to be a multiple of 0.5")
    ok_({ minimum = 1 }, "0", "number keywords ignore strings")
end)
case("anyOf, oneOf, allOf, not", function()
    local any = { anyOf = { { required = { "a" } }, { required = { "b" } } } }
    ok_(any, { b = 1 }); fails(any, {}, 'object matches none of the required: ["a"] or ["b"]')
    fails({ anyOf = { { type = "string" }, { type = "integer" } } }, true, "object matches none of the required")
    local one = { oneOf = { { type = "string" }, { type = "string", minLength = 2 } } }
    ok_(one, "a"); fails(one, "ab", "value should match only one schema, but matches both schemas 1 and 2")
    fails(one, 1, "value should match only one schema, but matches none")
    local all = { allOf = { { type = "string" }, { minLength = 2 } } }
    ok_(all, "ab"); fails(all, "a", "allOf 2 failed: string too short, expected at least 2, got 1")
    fails({ ["not"] = { type = "string" } }, "a", "value wasn't supposed to match schema")
end)
case("if, then, else", function()
    local s = { ["if"] = { properties = { t = { const = "a" } } }, ["then"] = { required = { "x" } }, ["else"] = { required = { "y" } } }
    ok_(s, { t = "a", x = 1 }); ok_(s, { t = "b", y = 1 })
    fails(s, { t = "a" }, "then clause did not match"); fails(s, { t = "b" }, "else clause did not match")
end)
case("boolean schemas, contains", function()
    ok_(true, 1); fails(false, 1, "expect false always")
    fails({ properties = { a = false } }, { a = 1 }, 'property "a" validation failed: expect false always')
    local c = { contains = { type = "integer" } }
    ok_(c, { "a", 1 }); fails(c, { "a" }, "failed to check contains")
    fails(c, {}, "check contains: empty array is invalid")
end)
case("$ref to local definitions, including recursion", function()
    local s = {
        definitions = { port = { type = "integer", maximum = 65535 } },
        properties = { p = { ["$ref"] = "#/definitions/port" } },
    }
    ok_(s, { p = 80 }); fails(s, { p = 70000 }, 'property "p" validation failed: expected 70000 to be at most 65535')
    local tree = { type = "object", properties = { name = { type = "string" }, kids = { type = "array", items = { ["$ref"] = "#" } } } }
    ok_(tree, { name = "a", kids = { { name = "b", kids = { { name = "c" } } } } })
    fails(tree, { kids = { { kids = { { name = 1 } } } } },
        'property "kids" validation failed: failed to validate item 1: property "kids" validation failed: '
        .. 'failed to validate item 1: property "name" validation failed: wrong type: expected string, got number')
    local v, err = jsonschema.compile({ properties = { a = { ["$ref"] = "http://elsewhere/x" } } })
    eq(v, nil); eq(err:find("unsupported $ref", 1, true) ~= nil, true, err)
    v, err = jsonschema.compile({ properties = { a = { ["$ref"] = "#/definitions/none" } } })
    eq(v, nil); eq(err:find("reference not found", 1, true) ~= nil, true, err)
end)
case("checks run in the reference validator's order: type first, then object, array, string, number, enum, combinators", function()
    fails({ type = "string", enum = { "a" }, minLength = 3 }, "b", "string too short, expected at least 3, got 1")
    fails({ type = "integer", enum = { 1 }, minimum = 5 }, 2, "expected 2 to be at least 5")
    fails({ enum = { "a" }, anyOf = { { type = "integer" } } }, "b", "matches none of the enum values")
end)

group("defaults")
case("a missing property gets its default; a present one keeps its value", function()
    local s = { type = "object", properties = { header = { type = "string", default = "apikey" }, hide = { type = "boolean", default = false } } }
    local conf = {}
    ok_(s, conf); eq(conf.header, "apikey"); eq(conf.hide, false)
    conf = { header = "x" }; ok_(s, conf); eq(conf.header, "x")
end)
case("defaults are not validated, and required wins over a default", function()
    local s = { properties = { n = { type = "integer", minimum = 5, default = 1 } } }
    local conf = {}; ok_(s, conf); eq(conf.n, 1)
    local r = { properties = { n = { type = "integer", default = 1 } }, required = { "n" } }
    conf = {}; fails(r, conf, 'property "n" is required'); eq(conf.n, nil)
end)
case("table defaults are fresh copies each time, without metatables", function()
    local d = setmetatable({ 200, 302 }, cjson.array_mt)
    local s = { properties = { codes = { type = "array", default = d } } }
    local a, b = {}, {}
    ok_(s, a); ok_(s, b)
    eq(#a.codes, 2); eq(a.codes[2], 302)
    eq(a.codes == b.codes, false, "shared table"); eq(a.codes == d, false, "the schema's own table")
    eq(getmetatable(a.codes), nil)
    local e = {}; ok_({ properties = { t = { default = {} } } }, e); eq(type(e.t), "table")
end)
case("nested objects get their defaults when present; an object default is not filled further", function()
    local s = { type = "object", properties = {
        pool = { type = "object", default = {}, properties = { size = { type = "integer", default = 320 } } } } }
    local conf = { pool = {} }; ok_(s, conf); eq(conf.pool.size, 320)
    conf = {}; ok_(s, conf); eq(type(conf.pool), "table"); eq(conf.pool.size, nil)
end)
case("defaults fill inside array items, and into an empty table seen as an object", function()
    local s = { type = "array", items = { type = "object", properties = { priority = { type = "integer", default = 0 } } } }
    local nodes = { { host = "a" }, { host = "b", priority = 3 } }
    ok_(s, nodes); eq(nodes[1].priority, 0); eq(nodes[2].priority, 3)
    local o = { type = "object", properties = { a = { default = 1 } } }
    local empty = setmetatable({}, cjson.array_mt)
    ok_(o, empty); eq(empty.a, 1)
    local arr = { 1, 2 }; ok_({ properties = { a = { default = 1 } } }, arr); eq(arr.a, nil, "arrays are not objects")
end)
case("oneOf runs every branch, so each branch's defaults are filled even when it fails", function()
    local s = { oneOf = {
        { properties = { policy = { default = "local" }, a = { default = "A" } } },
        { properties = { b = { default = "B" } }, required = { "redis_host" } },
    } }
    local conf = {}; ok_(s, conf); eq(conf.policy, "local"); eq(conf.a, "A"); eq(conf.b, "B")
    -- a branch failing its type check fills nothing; one failing after its properties (on a
    -- required name it does not declare) has filled its defaults already
    local c = {}
    local s3 = { oneOf = { { type = "string", properties = { d0 = { default = 0 } } },
                           { required = { "k" }, properties = { d1 = { default = 1 } } },
                           { properties = { d2 = { default = 2 } } } } }
    ok_(s3, c); eq(c.d0, nil); eq(c.d1, 1); eq(c.d2, 2)
end)
case("anyOf stops at the first matching branch; later branches fill nothing", function()
    local s = { anyOf = { { properties = { a = { default = 1 } } }, { properties = { b = { default = 2 } } } } }
    local conf = {}; ok_(s, conf); eq(conf.a, 1); eq(conf.b, nil)
    local t = { anyOf = { { properties = { a = { default = 1 } }, required = { "z" } }, { properties = { b = { default = 2 } } } } }
    conf = {}; ok_(t, conf); eq(conf.a, 1, "the failed first branch filled its default"); eq(conf.b, 2)
end)
case("allOf, if/then/else and not fill defaults too", function()
    local c = {}
    ok_({ allOf = { { properties = { a = { default = 1 } } }, { properties = { b = { default = 2 } } } } }, c)
    eq(c.a, 1); eq(c.b, 2)
    c = { t = "x" }
    ok_({ ["if"] = { properties = { t = { const = "x" } } }, ["then"] = { properties = { d = { default = "T" } } } }, c)
    eq(c.d, "T")
    c = {}
    ok_({ ["not"] = { required = { "q" }, properties = { n = { default = 1 } } } }, c)
    eq(c.n, 1, "the not-schema filled its default, then failed on q")
end)

group("apisix")
-- Equivalents of APISIX plugin schemas, written for this test.
local key_auth = {
    type = "object",
    properties = {
        header = { type = "string", default = "apikey" },
        query = { type = "string", default = "apikey" },
        hide_credentials = { type = "boolean", default = false },
        realm = schema.get_realm_schema("key"),
        anonymous_consumer = schema.anonymous_consumer_schema,
    },
}
local key_auth_consumer = {
    type = "object",
    properties = { key = { type = "string" } },
    encrypt_fields = { "key" },
    required = { "key" },
}
local limit_count = {
    type = "object",
    properties = {
        count = { oneOf = { { type = "integer", exclusiveMinimum = 0 }, { type = "string" } } },
        time_window = { oneOf = { { type = "integer", exclusiveMinimum = 0 }, { type = "string" } } },
        group = { type = "string" },
        key = { type = "string", default = "remote_addr" },
        key_type = { type = "string", enum = { "var", "var_combination", "constant" }, default = "var" },
        rejected_code = { type = "integer", minimum = 200, maximum = 599, default = 503 },
        rejected_msg = { type = "string", minLength = 1 },
        policy = { type = "string", enum = { "local", "redis", "redis-cluster" }, default = "local" },
        allow_degradation = { type = "boolean", default = false },
        show_limit_quota_header = { type = "boolean", default = true },
    },
    required = { "count", "time_window" },
    ["if"] = { properties = { policy = { enum = { "redis" } } } },
    ["then"] = {
        properties = {
            redis_host = { type = "string", minLength = 2 },
            redis_port = { type = "integer", minimum = 1, default = 6379 },
            redis_timeout = { type = "integer", minimum = 1, default = 1000 },
        },
        required = { "redis_host" },
    },
}
local proxy_rewrite = {
    type = "object",
    properties = {
        uri = { type = "string", minLength = 1, maxLength = 4096, pattern = [[^\/.*]] },
        method = { type = "string", enum = { "GET", "POST", "PUT" } },
        regex_uri = { type = "array", minItems = 2, items = { type = "string" } },
        host = { type = "string", pattern = [[^[0-9a-zA-Z-.]+(:\d{1,5})?$]] },
        headers = {
            type = "object",
            minProperties = 1,
            properties = {
                set = { type = "object", minProperties = 1,
                        patternProperties = { ["^[^:]+$"] = { oneOf = { { type = "string" }, { type = "number" } } } } },
                remove = { type = "array", minItems = 1, items = { type = "string" } },
            },
        },
        use_real_request_uri_unsafe = { type = "boolean", default = false },
    },
    minProperties = 1,
}

case("key-auth: defaults filled, consumer conf requires key", function()
    local conf = {}
    eq(schema.check(key_auth, conf), true)
    eq(conf.header, "apikey"); eq(conf.query, "apikey"); eq(conf.hide_credentials, false); eq(conf.realm, "key")
    local ok, err = schema.check(key_auth_consumer, {})
    eq(ok, false); eq(err, 'property "key" is required')
    ok, err = schema.check(key_auth_consumer, { key = 123 })
    eq(err, 'property "key" validation failed: wrong type: expected string, got number')
    ok, err = schema.check(key_auth, { anonymous_consumer = "" })
    eq(err, 'property "anonymous_consumer" validation failed: string too short, expected at least 1, got 0')
end)
case("limit-count: defaults, oneOf counts, redis branch of if/then", function()
    local conf = { count = 2, time_window = 60 }
    eq(schema.check(limit_count, conf), true)
    eq(conf.key, "remote_addr"); eq(conf.key_type, "var"); eq(conf.rejected_code, 503); eq(conf.policy, "local")
    eq(conf.show_limit_quota_header, true); eq(conf.redis_port, nil)
    local ok, err = schema.check(limit_count, { count = -1, time_window = 60 })
    eq(err, 'property "count" validation failed: value should match only one schema, but matches none')
    ok, err = schema.check(limit_count, { count = 1, time_window = 60, rejected_code = 600 })
    eq(err, 'property "rejected_code" validation failed: expected 600 to be at most 599')
    ok, err = schema.check(limit_count, { count = 1 })
    eq(err, 'property "time_window" is required')
    local r = { count = 1, time_window = 1, policy = "redis", redis_host = "127.0.0.1" }
    eq(schema.check(limit_count, r), true); eq(r.redis_port, 6379); eq(r.redis_timeout, 1000)
    ok, err = schema.check(limit_count, { count = 1, time_window = 1, policy = "redis" })
    eq(err, "then clause did not match")
end)
case("proxy-rewrite: patterns, nested header maps, minProperties", function()
    local conf = { uri = "/x", headers = { set = { ["X-A"] = "1", ["X-N"] = 2 } } }
    eq(schema.check(proxy_rewrite, conf), true); eq(conf.use_real_request_uri_unsafe, false)
    local ok, err = schema.check(proxy_rewrite, { uri = "home" })
    eq(err, [[property "uri" validation failed: failed to match pattern "^\\/.*" with "home"]])
    ok, err = schema.check(proxy_rewrite, { headers = { set = { ["X-A"] = true } } })
    eq(err, 'property "headers" validation failed: property "set" validation failed: failed to validate X-A '
            .. '(matching "^[^:]+$"): value should match only one schema, but matches none')
    -- minProperties counts after defaults are filled: `{}` passes, as it does in APISIX
    eq(schema.check(proxy_rewrite, {}), true)
    ok, err = schema.check(proxy_rewrite, { headers = {} })
    eq(err, 'property "headers" validation failed: expect object to have at least 1 properties')
    ok, err = schema.check(proxy_rewrite, { regex_uri = { "^/a" } })
    eq(err, 'property "regex_uri" validation failed: expect array to have at least 2 items')
end)
case("route, upstream, consumer resource schemas", function()
    local route = { uri = "/a", upstream = { nodes = { ["127.0.0.1:1980"] = 1 }, type = "roundrobin" } }
    eq(schema.check(schema.route, route), true)
    eq(route.priority, 0); eq(route.status, 1)
    eq(route.upstream.scheme, "http"); eq(route.upstream.pass_host, "pass"); eq(route.upstream.hash_on, "vars")
    local ok, err = schema.check(schema.route, { plugins = {} })
    eq(err, "allOf 1 failed: value should match only one schema, but matches none")
    ok, err = schema.check(schema.route, { uri = "/a", upstream = { nodes = {} }, foo = 1 })
    eq(err, "additional properties forbidden, found foo")
    ok, err = schema.check(schema.route, { uri = "/a" })
    eq(err:sub(1, 38), "object matches none of the required: [")
    ok, err = schema.check(schema.upstream, { nodes = { ["a:1"] = 1 }, checks = { passive = {} } })
    eq(err, 'property "checks" validation failed: object matches none of the required: ["active"] or ["active","passive"]')
    local up = { nodes = { { host = "a", port = 80, weight = 1 } }, checks = { active = { healthy = {} } } }
    eq(schema.check(schema.upstream, up), true)
    eq(up.nodes[1].priority, 0); eq(up.checks.active.http_path, "/"); eq(up.checks.active.healthy.successes, 2)
    eq(up.checks.active.healthy.http_statuses[2], 302)
    ok, err = schema.check(schema.upstream, { nodes = {}, tls = { client_cert = string.rep("c", 128) } })
    eq(err, 'property "tls" validation failed: failed to validate dependent schema for "client_cert": property "client_key" is required')
    ok, err = schema.check(schema.consumer, { username = "a b" })
    eq(err, [[property "username" validation failed: failed to match pattern "^[a-zA-Z0-9_\\-]+$" with "a b"]])
    eq(schema.check(schema.id_schema, "abc"), true)
    ok, err = schema.check(schema.id_schema, "a b")
    eq(err, 'object matches none of the required')
    eq(schema.check({ type = "string", anyOf = schema.ip_def }, "10.0.0.0/8"), true)
    eq(schema.check({ type = "string", anyOf = schema.ip_def }, "::1"), true)
    eq(schema.check(schema.uri_def, "http://127.0.0.1:9200"), true)
end)
case("core.schema: constants, read-only table, valid(), compile errors as check failures", function()
    eq(schema.TYPE_CONSUMER, 1); eq(schema.TYPE_METADATA, 2)
    eq(pcall(function() schema.x = 1 end), false)
    eq(type(schema.valid(key_auth)), "function"); eq(schema.valid(key_auth), schema.valid(key_auth))
    local ok, err = schema.check({ type = "nope" }, {})
    eq(ok, false); eq(err:find("invalid JSON type: nope", 1, true) ~= nil, true, err)
    eq(type(schema.plugin_injected_schema._meta.properties.disable), "table")
    eq(schema.plugin_injected_schema["$comment"], "this is a mark for our injected plugin schema")
end)
case("secret references ($secret://, $env://) skip string checks only", function()
    local s = { type = "object", properties = { uri = { type = "string", pattern = "^/" }, n = { type = "integer" } } }
    eq(schema.check(s, { uri = "$env://TEST_URI" }), true)
    eq(schema.check(s, { uri = "$secret://vault/1/uri" }), true)
    local ok, err = schema.check(s, { uri = "$other://x" })
    eq(err, [[property "uri" validation failed: failed to match pattern "^/" with "$other://x"]])
    ok, err = schema.check(s, { n = "$env://N" })
    eq(err, 'property "n" validation failed: wrong type: expected integer, got string')
end)
case("_meta: the injected schema validates disable/priority/filter/error_response/pre_function", function()
    local sch = { type = "object", properties = { _meta = schema.plugin_injected_schema._meta } }
    eq(schema.check(sch, { _meta = { disable = true, priority = 1, filter = { { "arg_a", "==", "b" } },
                                     error_response = { message = "x" }, pre_function = "return function() end" } }), true)
    local ok, err = schema.check(sch, { _meta = { disable = "yes" } })
    eq(err, 'property "_meta" validation failed: property "disable" validation failed: wrong type: expected boolean, got string')
    ok, err = schema.check(sch, { _meta = { error_response = 1 } })
    eq(err, 'property "_meta" validation failed: property "error_response" validation failed: value should match only one schema, but matches none')
    ok, err = schema.check(sch, { _meta = { prefunction = "x" } })
    eq(err, 'property "_meta" validation failed: additional properties forbidden, found prefunction')
end)
case("validators are compiled once per schema table", function()
    local s = { type = "string" }
    local v1 = jsonschema.compile(s)
    eq(jsonschema.compile(s), v1); eq(jsonschema.compile({ type = "string" }) == v1, false)
end)
case("speed: a typical plugin conf validates in microseconds (figure printed)", function()
    local n = 20000
    local v = schema.valid(limit_count)
    local t0 = os.clock()
    for _ = 1, n do v({ count = 2, time_window = 60, rejected_code = 429 }) end
    local per = (os.clock() - t0) / n * 1e6
    io.stderr:write(string.format("schema speed: limit-count conf validated in %.2f us (%d runs)\n", per, n))
    local t1 = os.clock()
    for _ = 1, n do v = schema.valid(key_auth); v({}) end
    io.stderr:write(string.format("schema speed: key-auth conf validated in %.2f us incl. cache lookup\n",
        (os.clock() - t1) / n * 1e6))
    eq(per < 1000, true, "far too slow")
end)

return {
    run = function(name)
        local list = groups[name]
        if not list then error("no group " .. name) end
        local passed, failures = 0, {}
        for _, c in ipairs(list) do
            local ok, err = pcall(c.fn)
            if ok then passed = passed + 1 else failures[#failures + 1] = c.name .. ": " .. tostring(err) end
        end
        return passed, failures
    end,
}
