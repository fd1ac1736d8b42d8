-- The Lua side of moongate's FFI entry points (src/lua/ffi_entry.rs): thin wrappers that call
-- Rust through LuaJIT's FFI on the common path and the raw C function they replace for
-- everything else, so errors and rare argument forms behave as the raw function always did.
--
-- Run once at VM setup with the `ngx` table and the entry points' addresses. Results Rust
-- hands back point into its per-thread scratch buffers: each wrapper reads them at once, before
-- it calls into Rust again.

local ngx, addrs = ...

local ffi = require("ffi")
local new_tab = require("table.new")
local ffi_string = ffi.string
local ffi_cast = ffi.cast
local type, setmetatable, rawget, pairs, tonumber = type, setmetatable, rawget, pairs, tonumber

-- Anonymous types (no ffi.cdef): nothing is declared in the C namespace plugins share.
local header_entry_t = ffi.typeof([[struct {
    const char *name;
    const char *value;
    uint32_t name_len;
    uint32_t value_len;
    uint32_t repeated;
    uint32_t known;
}]])
local header_list_t = ffi.typeof("struct { int32_t count; int32_t truncated; $ entries[128]; }",
    header_entry_t)

-- Header names Rust gives by their place in this list instead of as bytes (ffi_entry.rs,
-- `KNOWN_NAMES`): strings made once, where `ffi.string` would hash and look up each one again.
local known_names = addrs.known_names

local function entry(name, ctype)
    return ffi_cast(ctype, addrs[name])
end

------------------------------------------------------------------------------------------------
-- ngx.req.get_headers

local req = ngx.req
local raw_get_headers = req.get_headers
-- The metatable of non-raw header tables: the one the raw function hands out (its upvalue).
local _, headers_mt = debug.getupvalue(raw_get_headers, 1)
local c_get_headers = entry("req_get_headers",
    ffi.typeof("const $ *(*)(double, int)", header_list_t))

-- Puts entry `e` of a filled list into `t`: a repeated header's values become a list.
local function put_header(t, e)
    local known = e.known
    local k = known ~= 0 and known_names[known] or ffi_string(e.name, e.name_len)
    local v = ffi_string(e.value, e.value_len)
    if e.repeated ~= 0 then
        local prev = rawget(t, k)
        if type(prev) == "table" then
            prev[#prev + 1] = v
        else
            t[k] = { prev, v }
        end
    else
        t[k] = v
    end
end

-- Builds the header table of a filled list. The first sixteen entries are put without a loop:
-- a loop inside the request's entry makes LuaJIT end the entry's trace there (an inner loop
-- in a root trace), and everything before the loop then runs in the interpreter.
local function header_table(list, n)
    local t = new_tab(0, n)
    local es = list.entries
    if n > 0 then put_header(t, es[0]) else return t end
    if n > 1 then put_header(t, es[1]) else return t end
    if n > 2 then put_header(t, es[2]) else return t end
    if n > 3 then put_header(t, es[3]) else return t end
    if n > 4 then put_header(t, es[4]) else return t end
    if n > 5 then put_header(t, es[5]) else return t end
    if n > 6 then put_header(t, es[6]) else return t end
    if n > 7 then put_header(t, es[7]) else return t end
    if n > 8 then put_header(t, es[8]) else return t end
    if n > 9 then put_header(t, es[9]) else return t end
    if n > 10 then put_header(t, es[10]) else return t end
    if n > 11 then put_header(t, es[11]) else return t end
    if n > 12 then put_header(t, es[12]) else return t end
    if n > 13 then put_header(t, es[13]) else return t end
    if n > 14 then put_header(t, es[14]) else return t end
    if n > 15 then put_header(t, es[15]) else return t end
    for i = 16, n - 1 do
        put_header(t, es[i])
    end
    return t
end

req.get_headers = function(max, raw)
    -- `raw` by truthiness, as OpenResty reads it.
    local list = c_get_headers(type(max) == "number" and max or 100, raw and 1 or 0)
    if list == nil then
        return raw_get_headers(max, raw)
    end
    local n = list.count
    local truncated = list.truncated ~= 0
    local t = header_table(list, n)
    if not raw then
        setmetatable(t, headers_mt)
    end
    if truncated then
        return t, "truncated"
    end
    return t
end

------------------------------------------------------------------------------------------------
-- Header setters: a string name and a string, number or nil value take the FFI path; every
-- other form (a list, a boolean, a bad name or value) the raw function, which also raises the
-- errors.

-- One entry point per value type (src/lua/ffi_entry.rs says why). Names go by the id Rust
-- gives each name once (`c_name_id`): the setter finds it in its own table, keyed by the name
-- string LuaJIT already hashed, instead of Rust hashing and parsing the name on every call.
local set_str_t = ffi.typeof("int (*)(int, const char *, size_t)")
local set_num_t = ffi.typeof("int (*)(int, double)")
local clear_t = ffi.typeof("int (*)(int)")
local c_name_id = entry("header_name_id", ffi.typeof("int (*)(const char *, size_t, int)"))
-- Names one setter keeps ids for; a plugin making new names on every request would otherwise
-- grow the table without bound. Past it, names not kept ask Rust each time.
local MAX_NAME_IDS = 1024

-- `underscores`: 1 when `_` in a name is read as `-` (ngx.header).
local function header_setter(c_str, c_num, c_clear, raw_set, underscores)
    local ids, kept = {}, 0
    return function(name, value)
        if type(name) == "string" then
            local id = ids[name]
            if id == nil then
                -- -1: a name nginx refuses; -2: no id (the raw function serves it).
                id = c_name_id(name, #name, underscores)
                if kept < MAX_NAME_IDS then
                    ids[name] = id
                    kept = kept + 1
                end
            end
            if id >= 0 then
                local tv = type(value)
                if tv == "string" then
                    if c_str(id, value, #value) == 0 then
                        return
                    end
                elseif value == nil then
                    if c_clear(id) == 0 then
                        return
                    end
                elseif tv == "number" then
                    if c_num(id, value) == 0 then
                        return
                    end
                end
            end
        end
        return raw_set(name, value)
    end
end

local raw_set_header = req.set_header
req.set_header = header_setter(entry("req_set_str", set_str_t), entry("req_set_num", set_num_t),
    entry("req_clear", clear_t), raw_set_header, 0)

-- ngx.header[name] = value (its metatable's __newindex; the table itself stays empty).
local header_mt = debug.getmetatable(ngx.header)
local raw_header_newindex = header_mt.__newindex
local set_resp_header = header_setter(entry("resp_set_str", set_str_t),
    entry("resp_set_num", set_num_t), entry("resp_clear", clear_t),
    function(name, value) return raw_header_newindex(ngx.header, name, value) end, 1)
header_mt.__newindex = function(_, name, value)
    return set_resp_header(name, value)
end

------------------------------------------------------------------------------------------------
-- moongate.headers.first (core.request.header's one-header lookup)

local str_result_t = ffi.typeof("struct { const char *ptr; int64_t len; }")
local headers_mod = require("moongate.headers")
local raw_first = headers_mod.first
local c_first = entry("req_header_first", ffi.typeof("const $ *(*)(const char *, size_t)",
    str_result_t))

headers_mod.first = function(name)
    if type(name) == "string" then
        local res = c_first(name, #name)
        if res ~= nil then
            local len = tonumber(res.len)
            if len >= 0 then
                return ffi_string(res.ptr, len)
            elseif len == -1 then
                return nil
            end
        end
    end
    return raw_first(name)
end

------------------------------------------------------------------------------------------------
-- ngx.shared.DICT:incr

local incr_result_t = ffi.typeof([[struct {
    int32_t status;
    int32_t err;
    int32_t forcible;
    int32_t pad;
    double value;
}]])
local c_incr = entry("dict_incr", ffi.typeof(
    "const $ *(*)(uint32_t, const char *, size_t, double, double, int, double)", incr_result_t))
local incr_errors = { [0] = "not found", [1] = "not a number" }

-- Each dictionary handle's index on the Rust side (weak: the handles belong to ngx.shared).
local dict_index = setmetatable({}, { __mode = "k" })
local dict_methods
for name, idx in pairs(addrs.dict_indexes) do
    local handle = ngx.shared[name]
    if handle ~= nil then
        dict_index[handle] = idx
        dict_methods = dict_methods or debug.getmetatable(handle).__index
    end
end

if dict_methods then
    local raw_incr = dict_methods.incr
    dict_methods.incr = function(self, key, by, init, init_ttl)
        local idx = dict_index[self]
        if idx ~= nil and type(key) == "string" and type(by) == "number" then
            local has_init = type(init) == "number"
            local res = c_incr(idx, key, #key, by, has_init and init or 0, has_init and 1 or 0,
                type(init_ttl) == "number" and init_ttl or 0)
            if res ~= nil then
                local status = res.status
                if status == 0 then
                    local value = res.value
                    if res.forcible >= 0 then
                        return value, nil, res.forcible == 1
                    end
                    return value
                elseif status == 1 then
                    return nil, incr_errors[res.err]
                elseif status == 2 then
                    return nil, "no memory", false
                end
            end
        end
        return raw_incr(self, key, by, init, init_ttl)
    end
end

------------------------------------------------------------------------------------------------
-- ngx.now, ngx.time: the clock read through the FFI, which a trace compiles (a call of the raw
-- function ends the trace). Neither can fail, so no raw function is kept.

local c_now = entry("now", ffi.typeof("double (*)(void)"))
local floor = math.floor

ngx.now = function()
    return c_now()
end

ngx.time = function()
    return floor(c_now())
end

------------------------------------------------------------------------------------------------
-- moongate.config.version (apisix.consumer and the secret cache check it on every request):
-- through the FFI for the same reason. It cannot fail either.

local c_config_version = entry("config_version", ffi.typeof("double (*)(void)"))

require("moongate.config").version = function()
    local v = c_config_version()
    if v < 0 then
        return nil
    end
    return v
end
