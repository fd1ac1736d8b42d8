-- core.schema: JSON-schema checks for plugin and resource confs, as APISIX's core.schema offers
-- them. `check(schema, conf)` validates conf and fills the schema's defaults into it (see
-- moongate.jsonschema for where defaults land and how errors read); validators are compiled once
-- per schema table and cached. The resource schemas (`route`, `upstream`, `ip_def` ...) are
-- apisix.schema_def's, readable through this module; the module itself is read-only.

local jsonschema = require("moongate.jsonschema")
local resource_schemas = require("apisix.schema_def")
local type = type
local pcall = pcall
local require = require
local error = error
local sbyte = string.byte
local sfind = string.find
local upper = string.upper

local schema = {
    version = 0.3,
    -- the second argument plugins' check_schema(conf, schema_type) receives
    TYPE_CONSUMER = 1,
    TYPE_METADATA = 2,
}

-- A string that is a `$secret://` or `$env://` reference is not checked against a string schema:
-- it is resolved to its value at run time. apisix.secret owns the rule when it is installed;
-- this is the same rule for when it is not.
local function is_secret_ref_here(value, sub)
    if type(value) ~= "string" or sbyte(value, 1) ~= 36 then -- '$'
        return false
    end
    local declared = sub and sub.type
    if declared and declared ~= "string" then
        return false
    end
    return sfind(value, "$secret://", 1, true) == 1 or sfind(upper(value), "$ENV://", 1, true) == 1
end

local is_secret_ref
local opts = {
    skip_validation = function(value, sub)
        if not is_secret_ref then
            -- required late: apisix.secret needs apisix.core, which needs this module
            local ok, secret = pcall(require, "apisix.secret")
            is_secret_ref = ok and type(secret) == "table" and secret.is_secret_ref
                            or is_secret_ref_here
        end
        return is_secret_ref(value, sub)
    end,
}

--- The compiled validator of `s`: `validator` or `nil, err` (a schema that cannot compile).
function schema.valid(s)
    return jsonschema.compile(s, opts)
end

--- Checks `conf` against `s`, filling defaults into `conf`: `true` or `false, err`.
function schema.check(s, conf)
    local validator, why = jsonschema.compile(s, opts)
    if validator == nil then
        return false, why
    end
    return validator(conf)
end

local function read_only()
    error("no modification allowed")
end

return setmetatable(schema, { __index = resource_schemas, __newindex = read_only })
