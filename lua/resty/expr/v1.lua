-- resty.expr.v1: lua-resty-expr's expression DSL (moongate's own implementation).
--
-- An expression is a list of rules that must all hold, or a logical operator (`AND`, `OR`,
-- `!AND`, `!OR`, any case) followed by rules or nested expressions. A rule is
-- `{var, op, value}`, `{var, "!", op, value}` (negated) or `{var, value}` (equality with the
-- lower-cased value). `ex:eval(ctx)` reads each `var` as `ctx[var]` (`ngx.var` when no ctx).
--
-- The router's `vars` (src/router/expr.rs) implements the same rules in Rust for string
-- variables; this one runs in Lua because plugins evaluate against `ctx.var`, whose values are
-- looked up lazily and may be tables (`has`) or numbers. Both keep lua-resty-expr's error
-- words and comparison rules; keep them in step.

local ipmatcher = require("resty.ipmatcher")
local ngx = ngx
local re_find = ngx.re.find
local type, tostring, tonumber, ipairs, setmetatable = type, tostring, tonumber, ipairs, setmetatable
local lower, upper = string.lower, string.upper

local _M = { _VERSION = 0.1 }
local mt = { __index = _M }

local LOGIC = { ["AND"] = true, ["OR"] = true, ["!AND"] = true, ["!OR"] = true }

-- A JSON `null` (from a decoded conf) stands for "no value", as a missing variable.
local function is_null(v)
    return v == nil or v == ngx.null
end

-- Lua's tostring for the scalars a rule names variables and operators with.
local function scalar_string(v)
    local t = type(v)
    if t == "string" then
        return v
    end
    if t == "number" then
        return tostring(v)
    end
    return nil
end

local function eq(l, r)
    if type(r) == "number" then
        return tonumber(l) == r
    end
    if is_null(r) then
        return l == nil
    end
    return l == r
end

local function numeric(cmp)
    return function(l, r)
        local a, b = tonumber(l), r
        if a == nil or b == nil then
            return false
        end
        return cmp(a, b)
    end
end

local function regex(flags)
    return function(l, pattern)
        local tl = type(l)
        if tl == "number" then
            l = tostring(l)
        elseif tl ~= "string" then
            return false
        end
        local from, _, err = re_find(l, pattern, flags)
        if err then
            return nil, err
        end
        return from ~= nil
    end
end

local OPS = {
    ["=="] = eq,
    ["~="] = function(l, r) return not eq(l, r) end,
    [">"] = numeric(function(a, b) return a > b end),
    [">="] = numeric(function(a, b) return a >= b end),
    ["<"] = numeric(function(a, b) return a < b end),
    ["<="] = numeric(function(a, b) return a <= b end),
    ["~~"] = regex("jo"),
    ["~*"] = regex("joi"),
    ["in"] = function(l, list)
        if l == nil or type(list) ~= "table" then
            return false
        end
        for _, v in ipairs(list) do
            if v == l then
                return true
            end
        end
        return false
    end,
    ["has"] = function(l, v)
        if type(l) ~= "table" then
            return false
        end
        for _, item in ipairs(l) do
            if item == v then
                return true
            end
        end
        return false
    end,
    ["ipmatch"] = function(l, matcher)
        if type(l) ~= "string" then
            return false
        end
        return matcher:match(l) == true
    end,
}

-- The right-hand side as the operator wants it, checked once at `new`.
local function prepare(op, value)
    if op == ">" or op == ">=" or op == "<" or op == "<=" then
        return tonumber(value)
    end
    if op == "~~" or op == "~*" then
        local pattern = scalar_string(value)
        if not pattern then
            return nil, "regex must be a string"
        end
        local _, _, err = re_find("", pattern, op == "~*" and "joi" or "jo")
        if err then
            return nil, "failed to compile regex " .. pattern .. ": " .. err
        end
        return pattern
    end
    if op == "ipmatch" then
        local list = value
        if type(value) == "string" and value ~= "" then
            list = { value }
        elseif type(value) ~= "table" or #value == 0 then
            return nil, "invalid ip address"
        end
        local matcher, err = ipmatcher.new(list)
        if not matcher then
            return nil, err
        end
        return matcher
    end
    if is_null(value) then
        return nil
    end
    return value
end

local function compile_rule(rule)
    local var, op, value, reverse
    if #rule == 4 then
        if rule[2] ~= "!" then
            return nil, "bad 'not' expression"
        end
        var, op, value, reverse = rule[1], rule[3], rule[4], true
    else
        var, op, value, reverse = rule[1], rule[2], rule[3], false
    end
    var = scalar_string(var)
    if not var then
        return nil, "invalid expression"
    end
    op = scalar_string(op)
    if not op then
        return nil, "invalid expression"
    end
    op = lower(op)
    if not OPS[op] then
        if #rule ~= 2 then
            return nil, "invalid operator '" .. op .. "'"
        end
        -- `{var, value}`: equality with the value (lower-cased, as lua-resty-expr does).
        op, value = "==", op
    end
    local rhs, err = prepare(op, value)
    if err then
        return nil, err
    end
    return { var = var, fn = OPS[op], rhs = rhs, reverse = reverse }
end

local compile_node

local function compile_children(list, from)
    local kids = {}
    for i = from, #list do
        local child = list[i]
        if type(child) ~= "table" then
            return nil, "invalid expression"
        end
        local node, err = compile_node(child)
        if not node then
            return nil, err
        end
        kids[#kids + 1] = node
    end
    return kids
end

compile_node = function(list)
    if #list == 0 then
        return nil, "rule too short"
    end
    local first = list[1]
    if type(first) == "table" then
        local kids, err = compile_children(list, 1)
        if not kids then
            return nil, err
        end
        return { logic = "AND", kids = kids }
    end
    if type(first) == "string" and LOGIC[upper(first)] then
        if #list <= 2 then
            return nil, "rule too short"
        end
        local kids, err = compile_children(list, 2)
        if not kids then
            return nil, err
        end
        return { logic = upper(first), kids = kids }
    end
    return compile_rule(list)
end

-- `ex, err`: the compiled expression of `rule`.
function _M.new(rule)
    if type(rule) ~= "table" then
        return nil, "rule should be an array"
    end
    if #rule == 0 then
        return setmetatable({ root = false }, mt)
    end
    local first = rule[1]
    if type(first) ~= "table" and not (type(first) == "string" and LOGIC[upper(first)]) then
        return nil, "rule should be wrapped inside brackets"
    end
    local root, err = compile_node(rule)
    if not root then
        return nil, err
    end
    return setmetatable({ root = root }, mt)
end

local eval_node

local function eval_rule(node, ctx)
    local ok, err = node.fn(ctx[node.var], node.rhs)
    if ok == nil then
        return nil, err
    end
    if node.reverse then
        return not ok
    end
    return ok
end

eval_node = function(node, ctx)
    local logic = node.logic
    if not logic then
        return eval_rule(node, ctx)
    end
    -- AND stops at the first false, OR at the first true; the `!` forms negate the result.
    local want = (logic == "OR" or logic == "!OR")
    local kids = node.kids
    for i = 1, #kids do
        local ok, err = eval_node(kids[i], ctx)
        if ok == nil then
            return nil, err
        end
        if ok == want then
            return logic == "OR" or logic == "!AND"
        end
    end
    return logic == "AND" or logic == "!OR"
end

-- `true`/`false`, or `nil, err` when a regular expression fails to run.
function _M.eval(self, ctx)
    if not self.root then
        return true
    end
    return eval_node(self.root, ctx or ngx.var)
end

return _M
