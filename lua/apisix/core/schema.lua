-- core.schema: JSON-schema checks for plugin and resource confs, as APISIX's core.schema offers
-- them. `check(schema, conf)` validates conf and fills the schema's defaults into it (see
-- moongate.jsonschema for where defaults land and how errors read); validators are compiled once
-- per schema table and cached. The resource schemas (`route`, `upstream`, `ip_def` ...) are
-- apisix.schema_def's, readable through this module; the module itself is read-only.

local jsonschema = require("moongate.jsonschema")
local schema_def = require("apisix.schema_def")
local type = type
local pcall = pcall
local require = require
local error = error
local sbyte = string.byte
local sfind = string.find
local upper = string.upper

local _M = {
    version = 0.3,
    -- the second argument plugins' check_schema(conf, schema_type) receives
    TYPE_CONSUMER = 1,
    TYPE_METADATA = 2,
}

-- A string that is a `$secret://` or `$env://` reference is not checked against a string schema:
-- it is resolved to its value at run time. apisix.secret owns the rule when it is installed;
-- this is the same rule for when it is not.
local function is_secret_ref_here(value, schema)
    if type(value) ~= "string" or sbyte(value, 1) ~= 36 then -- '$'
        return false
    end
    if schema and schema.type and schema.type ~= "string" then
        return false
    end
    return sfind(value, "$secret://", 1, true) == 1 or sfind(upper(value), "$ENV://", 1, true) == 1
end

local is_secret_ref
local opts = {
    skip_validation = function(value, schema)
        if not is_secret_ref then
            -- required late: apisix.secret needs apisix.core, which needs this module
            local ok, secret = pcall(require, "apisix.secret")
            is_secret_ref = ok and type(secret) == "table" and secret.is_secret_ref
                            or is_secret_ref_here
        end
        return is_secret_ref(value, schema)
    end,
}

--- The compiled validator of `schema`: `validator` or `nil, err` (a schema that cannot compile).
local function get_validator(schema)
    return jsonschema.compile(schema, opts)
end
_M.valid = get_validator

--- Checks `conf` against `schema`, filling defaults into `conf`: `true` or `false, err`.
function _M.check(schema, conf)
    local validator, err = jsonschema.compile(schema, opts)
    if not validator then
        return false, err
    end
    return validator(conf)
end

return setmetatable(_M, {
    __index = schema_def,
    __newindex = function() error("no modification allowed") end,
})
