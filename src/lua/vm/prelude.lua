-- moongate's Lua prelude: runs once in every worker VM before any user code.
-- It supplies what upstream LuaJIT lacks and OpenResty's LuaJIT has, replaces `coroutine.*` so
-- that I/O waits inside user coroutines suspend the whole request, and installs the searcher that
-- maps `apisix.plugins.NAME` onto `lua/plugins/`.
local PENDING, plugin_dirs = ...

local next, type, pairs, select = next, type, pairs, select
local pack = function(...) return { n = select("#", ...), ... } end
local unpack = unpack

-- OpenResty LuaJIT table extensions, in plain Lua so LuaJIT can compile them.
package.preload["table.nkeys"] = function()
    return function(t)
        local n = 0
        for _ in pairs(t) do n = n + 1 end
        return n
    end
end
package.preload["table.clone"] = function()
    return function(t)
        local c = {}
        for k, v in pairs(t) do c[k] = v end
        return c
    end
end
package.preload["table.isarray"] = function()
    return function(t)
        if type(t) ~= "table" then return false end
        local n = 0
        for k in pairs(t) do
            if type(k) ~= "number" or k < 1 or k % 1 ~= 0 then return false end
            n = n + 1
        end
        for i = 1, n do
            if t[i] == nil then return false end
        end
        return true
    end
end
package.preload["table.isempty"] = function()
    return function(t) return next(t) == nil end
end

-- Coroutines, the way lua-nginx-module wraps them: when a coroutine's body waits on Rust I/O,
-- mlua yields its PENDING marker; `resume` passes that marker up to the request's driver and,
-- when polled again, resumes the child, so the wait suspends the request, not the plugin's view
-- of its coroutine. Values a user coroutine yields itself reach its resumer as usual.
local co = coroutine
local raw_resume, raw_yield, raw_status, raw_create = co.resume, co.yield, co.status, co.create

local function resume(thread, ...)
    local res = pack(raw_resume(thread, ...))
    while res[1] and res.n == 2 and res[2] == PENDING and raw_status(thread) == "suspended" do
        raw_yield(PENDING)
        res = pack(raw_resume(thread))
    end
    return unpack(res, 1, res.n)
end

local function wrap(f)
    local thread = raw_create(f)
    return function(...)
        local res = pack(resume(thread, ...))
        if not res[1] then
            error(res[2], 2)
        end
        return unpack(res, 2, res.n)
    end
end

coroutine.resume = resume
coroutine.wrap = wrap

-- `require("apisix.plugins.NAME")` and `require("apisix.plugins.NAME.sub")` resolve to
-- `<dir>/NAME.lua`, `<dir>/NAME/init.lua` and `<dir>/NAME/sub.lua` in each plugin directory, so a
-- user can drop single plugin files or APISIX's whole plugins folder into `lua/plugins/`.
local function plugin_searcher(name)
    local rest = name:match("^apisix%.plugins%.(.+)$")
    if not rest then
        return nil
    end
    local rel = rest:gsub("%.", "/")
    local tried = {}
    for _, dir in ipairs(plugin_dirs) do
        for _, cand in ipairs({ dir .. "/" .. rel .. ".lua", dir .. "/" .. rel .. "/init.lua" }) do
            local f = io.open(cand, "rb")
            if f then
                f:close()
                local chunk, err = loadfile(cand)
                if not chunk then
                    error("error loading module '" .. name .. "' from file '" .. cand .. "':\n\t" .. err, 2)
                end
                return chunk
            end
            tried[#tried + 1] = "\n\tno file '" .. cand .. "'"
        end
    end
    return table.concat(tried)
end

local loaders = package.loaders or package.searchers
table.insert(loaders, 2, plugin_searcher)

-- Errors raised by the host's Rust functions reach Lua as mlua error objects. OpenResty code
-- expects strings (`err:find(...)`, `"failed: " .. err`), so `pcall` and `xpcall` hand them over
-- as the plain message, the way lua-nginx-module's C functions raise them.
local raw_pcall, raw_xpcall, tostring, sub, find = pcall, xpcall, tostring, string.sub, string.find

local function plain(err)
    if type(err) ~= "userdata" then
        return err
    end
    local s = tostring(err)
    local at = 1
    while true do
        local i, j = find(s, "caused by: ", at, true)
        if not i then break end
        at = j + 1
    end
    s = sub(s, at)
    if sub(s, 1, 15) == "runtime error: " then
        s = sub(s, 16)
    end
    -- mlua appends the Rust-side traceback; a Lua caller sees only the message, as in nginx.
    local tb = find(s, "\nstack traceback:", 1, true)
    if tb then
        s = sub(s, 1, tb - 1)
    end
    return s
end

local function fix(ok, ...)
    if ok then
        return ok, ...
    end
    return false, plain((...))
end

pcall = function(f, ...)
    return fix(raw_pcall(f, ...))
end

xpcall = function(f, handler, ...)
    return raw_xpcall(f, function(err) return handler(plain(err)) end, ...)
end

-- For the host's own Lua (the phase runner's `describe_failure`): the error-to-message
-- conversion.
package.loaded["moongate.request"] = {
    plain = plain,
}
