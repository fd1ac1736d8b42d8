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

group("smoke")
case("loads", function()
    local ok, err = schema.check({ type = "object", properties = { key = { type = "string" } } }, { key = 1 })
    eq(ok, false)
    eq(err, 'property "key" validation failed: wrong type: expected string, got number')
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
