-- Licensed under the Apache License, Version 2.0.
--
-- `resty.template`: moongate's own implementation of lua-resty-template's documented template
-- language and API, for APISIX's body-transformer, ai-prompt-template and ai plugins.
--
-- A template compiles to Lua source that appends to an output list. Free names in the template
-- resolve in the render's context first, then `context`, `template` and `blocks`, then the
-- globals (so `string.gsub`, `tostring` … work), and assignments stay in the render's own
-- environment. The compiled chunk is kept as bytecode, and every render loads its own copy
-- with its own environment: two requests rendering the same template at once (a template may
-- call a function that yields) never see each other's variables.

local type = type
local tostring = tostring
local setmetatable = setmetatable
local setfenv = setfenv
local loadstring = loadstring
local string_dump = string.dump
local str_find = string.find
local str_sub = string.sub
local str_format = string.format
local str_gsub = string.gsub
local concat = table.concat
local io_open = io.open

local _M = { _VERSION = "2.0" }

local ngx_null = ngx and ngx.null

---------------------------------------------------------------------------------------------
-- Output helpers the compiled code calls.
---------------------------------------------------------------------------------------------

--- `{*expr*}`: the value as text; nil (and ngx.null) write nothing, a function writes what it
--- returns.
function _M.output(s)
    if s == nil or s == ngx_null then
        return ""
    end
    local t = type(s)
    if t == "function" then
        return _M.output(s())
    end
    if t == "string" then
        return s
    end
    return tostring(s)
end

local html_escapes = {
    ["&"] = "&amp;",
    ["<"] = "&lt;",
    [">"] = "&gt;",
    ['"'] = "&quot;",
    ["'"] = "&#39;",
    ["/"] = "&#47;",
}

--- `{{expr}}`: `output` with the HTML special characters replaced by entities.
function _M.escape(s)
    if type(s) == "string" then
        return (str_gsub(s, "[&<>\"'/]", html_escapes))
    end
    return _M.output(s)
end

---------------------------------------------------------------------------------------------
-- Loading views.
---------------------------------------------------------------------------------------------

-- `_M.root`, when set, is the directory file views are read from.
local function read_file(path)
    if _M.root and str_sub(path, 1, 1) ~= "/" then
        path = _M.root .. "/" .. path
    end
    local f = io_open(path, "rb")
    if not f then
        return nil
    end
    local text = f:read("*a")
    f:close()
    return text
end

--- The template text of a view: the file's content when `view` names a readable file (and
--- `plain` is not true), else `view` itself.
function _M.load(view, plain)
    if type(view) ~= "string" then
        return view
    end
    if plain == true then
        return view
    end
    -- Only something that can be a file name is looked up on disk: a template text with
    -- tags or line breaks never is.
    if not str_find(view, "[{\n]") and #view < 4096 then
        local text = read_file(view)
        if text then
            return text
        end
    end
    return view
end

---------------------------------------------------------------------------------------------
-- Parsing: template text -> Lua source.
---------------------------------------------------------------------------------------------

local closers = {
    ["{"] = "}}",
    ["*"] = "*}",
    ["%"] = "%}",
    ["#"] = "#}",
    ["("] = ")}",
    ["["] = "]}",
}

local function trim(s)
    return (str_gsub(s, "^%s*(.-)%s*$", "%1"))
end

local function emit_text(out, text)
    if text ~= "" then
        out[#out + 1] = "___[#___+1]=" .. str_format("%q", text) .. "\n"
    end
end

local parse_into

-- `{(name)}` or `{(name, context-expr)}`: a file view, included with the given context.
local function include_code(inner)
    local comma = str_find(inner, ",", 1, true)
    local name, ctx = inner, nil
    if comma then
        name, ctx = str_sub(inner, 1, comma - 1), str_sub(inner, comma + 1)
    end
    name = trim(name)
    name = str_gsub(name, "^[\"'](.*)[\"']$", "%1")
    return "___[#___+1]=___include(" .. str_format("%q", name) .. ","
        .. (ctx and trim(ctx) ~= "" and ("(" .. ctx .. ")") or "context") .. ")\n"
end

-- Appends to `out` the Lua code of `view` from `pos` on.
parse_into = function(view, out)
    local pos, len = 1, #view
    while pos <= len do
        local s = str_find(view, "{", pos, true)
        if not s then
            emit_text(out, str_sub(view, pos))
            break
        end
        local c = str_sub(view, s + 1, s + 1)
        local closer = closers[c]
        local block_name = c == "-" and view:match("^{%-([%w_]+)%-}", s)
        if not closer and not block_name then
            emit_text(out, str_sub(view, pos, s))
            pos = s + 1
        elseif s > 1 and str_sub(view, s - 1, s - 1) == "\\" then
            -- \{{ … writes the tag's opening characters as text.
            emit_text(out, str_sub(view, pos, s - 2) .. "{" .. c)
            pos = s + 2
        elseif block_name then
            local marker = "{-" .. block_name .. "-}"
            local body_start = s + #marker
            local e = str_find(view, marker, body_start, true)
            if not e then
                emit_text(out, str_sub(view, pos, body_start - 1))
                pos = body_start
            else
                emit_text(out, str_sub(view, pos, s - 1))
                local inner = str_sub(view, body_start, e - 1)
                if block_name == "verbatim" or block_name == "raw" then
                    emit_text(out, inner)
                else
                    -- A named block renders into `blocks[name]`, not into the output.
                    out[#out + 1] = "do local ___={}\n"
                    parse_into(inner, out)
                    out[#out + 1] = "blocks[" .. str_format("%q", block_name)
                        .. "]=___concat(___) end\n"
                end
                pos = e + #marker
            end
        else
            local e = str_find(view, closer, s + 2, true)
            if not e then
                -- An opened tag that never closes is text.
                emit_text(out, str_sub(view, pos, s + 1))
                pos = s + 2
            else
                emit_text(out, str_sub(view, pos, s - 1))
                local inner = str_sub(view, s + 2, e - 1)
                pos = e + 2
                if c == "{" then
                    out[#out + 1] = "___[#___+1]=___escape(" .. inner .. ")\n"
                elseif c == "*" then
                    out[#out + 1] = "___[#___+1]=___output(" .. inner .. ")\n"
                elseif c == "%" then
                    out[#out + 1] = inner .. "\n"
                    -- The line break right after a code tag is not output.
                    if str_sub(view, pos, pos) == "\n" then
                        pos = pos + 1
                    elseif str_sub(view, pos, pos + 1) == "\r\n" then
                        pos = pos + 2
                    end
                elseif c == "(" then
                    out[#out + 1] = include_code(inner)
                elseif c == "[" then
                    out[#out + 1] = "___[#___+1]=___include(" .. inner .. ",context)\n"
                end
                -- "#": a comment, nothing.
            end
        end
    end
end

--- The Lua source a template compiles to.
function _M.parse(view, plain)
    local text = _M.load(view, plain)
    if type(text) ~= "string" then
        error("resty.template: a view must be a string, got " .. type(text), 2)
    end
    local out = {
        "local context,___escape,___output,___include,___concat,blocks=...\n",
        "local ___={}\n",
    }
    parse_into(text, out)
    out[#out + 1] = "return ___concat(___)\n"
    return concat(out)
end

---------------------------------------------------------------------------------------------
-- Compiling and rendering.
---------------------------------------------------------------------------------------------

_M.cache = {}
local cache_size = 0
local caching = true

--- Turns the compile cache on or off; returns the previous setting.
function _M.caching(enable)
    local previous = caching
    if enable ~= nil then
        caching = enable == true
    end
    return previous
end

local function make_env(context, blocks)
    return setmetatable({}, {
        __index = function(_, k)
            local v = context[k]
            if v ~= nil then
                return v
            end
            if k == "context" then
                return context
            elseif k == "template" then
                return _M
            elseif k == "blocks" then
                return blocks
            end
            return _G[k]
        end,
    })
end

local function include(name, context)
    return _M.process(name, context)
end

--- Compiles a view (a file name or the template text) to `render(context) -> text`, and says
--- whether it came from the cache. `cache_key` names the cache entry ("no-cache": none; by
--- default the view itself).
function _M.compile(view, cache_key, plain)
    if type(view) ~= "string" then
        error("resty.template: a view must be a string, got " .. type(view), 2)
    end
    local key = cache_key or view
    local bytecode = caching and key ~= "no-cache" and _M.cache[key]
    local cached = bytecode ~= nil and bytecode ~= false
    if not cached then
        local source = _M.parse(view, plain)
        local chunk, err = loadstring(source, "=" .. (cache_key or "template"))
        if not chunk then
            error(err, 2)
        end
        bytecode = string_dump(chunk)
        if caching and key ~= "no-cache" then
            if cache_size >= 1024 then
                _M.cache = {}
                cache_size = 0
            end
            _M.cache[key] = bytecode
            cache_size = cache_size + 1
        end
    end
    local render = function(context)
        context = context or {}
        local blocks = {}
        local fn = loadstring(bytecode)
        setfenv(fn, make_env(context, blocks))
        return fn(context, _M.escape, _M.output, include, concat, blocks)
    end
    return render, cached
end

function _M.compile_string(view, cache_key)
    return _M.compile(view, cache_key, true)
end

function _M.compile_file(view, cache_key)
    local text = read_file(view)
    if not text then
        error("resty.template: cannot read template file " .. view, 2)
    end
    return _M.compile(text, cache_key or view, true)
end

--- Renders a view with `context` and returns the text.
function _M.process(view, context, cache_key, plain)
    local render = _M.compile(view, cache_key, plain)
    return render(context)
end

function _M.process_string(view, context, cache_key)
    return _M.process(view, context, cache_key, true)
end

function _M.process_file(view, context, cache_key)
    return (_M.compile_file(view, cache_key))(context)
end

--- Where `render` writes: the response body (`ngx.print`).
function _M.print(text)
    return ngx.print(text)
end

--- Renders a view with `context` and writes it with `template.print`.
function _M.render(view, context, cache_key, plain)
    return _M.print(_M.process(view, context, cache_key, plain))
end

function _M.render_string(view, context, cache_key)
    return _M.render(view, context, cache_key, true)
end

function _M.render_file(view, context, cache_key)
    return _M.print(_M.process_file(view, context, cache_key))
end

--- A template object: its own fields are the render's context.
function _M.new(view, layout)
    if layout ~= nil then
        error("resty.template.new: layouts are not supported by moongate's resty.template", 2)
    end
    local object = {}
    local methods = {
        process = function(self, context)
            local ctx = setmetatable({}, {
                __index = function(_, k)
                    local v = context and context[k]
                    if v ~= nil then
                        return v
                    end
                    return self[k]
                end,
            })
            return _M.process(view, ctx)
        end,
        render = function(self, context)
            return _M.print(self:process(context))
        end,
    }
    return setmetatable(object, { __index = methods, __tostring = methods.process })
end

-- What lua-resty-template documents and moongate does not provide raises an error naming it.
local refused = {
    precompile = true,
    precompile_string = true,
    precompile_file = true,
}
setmetatable(_M, {
    __index = function(_, k)
        if refused[k] ~= nil then
            error("resty.template." .. k .. " is not supported by moongate's resty.template", 2)
        end
        return nil
    end,
})

return _M
