-- resty.redis: a Redis client over cosockets with lua-resty-redis's documented API (moongate's
-- own implementation, written from the README's contract).
--
-- One object owns one `ngx.socket.tcp()`. Any method name that is not one of the client's own
-- (connect, set_keepalive, init_pipeline …) is a Redis command: `red:hget(k, f)` sends
-- `HGET k f`. Replies map to Lua as the README states:
--   status `+OK`          -> the string "OK"
--   error  `-ERR …`       -> false, "ERR …"            (inside an array: {false, "ERR …"})
--   integer `:5`          -> 5
--   bulk   `$3 foo`       -> "foo";  `$-1` -> ngx.null
--   array  `*2 …`         -> a Lua list;  `*-1` -> ngx.null
-- A failure of the connection itself (refused, timeout, closed) gives nil, err.

local ngx = ngx
local null = ngx.null
local tcp = ngx.socket.tcp
local byte, sub, lower = string.byte, string.sub, string.lower
local concat = table.concat
local tostring, tonumber, type, pairs, select = tostring, tonumber, type, pairs, select
local setmetatable, rawget, rawset, unpack = setmetatable, rawget, rawset, unpack
local new_tab = require("table.new")

local _M = { _VERSION = "0.31" }

-- Methods of the client itself; every other name is a command.
local client = {}
local mt = { __index = nil } -- set below, once the command generator exists

-- Reply type bytes.
local STATUS, ERROR, INTEGER, BULK, ARRAY = byte("+"), byte("-"), byte(":"), byte("$"), byte("*")

local function sock_of(self)
    return rawget(self, "_sock")
end

function _M.new(_)
    local sock, err = tcp()
    if not sock then
        return nil, err
    end
    return setmetatable({ _sock = sock }, mt)
end

-- connect(host, port, opts?) or connect("unix:/path", opts?). `opts`: `ssl`, `ssl_verify`,
-- `server_name`, `pool`, `pool_size`, `backlog` (the last three are the cosocket's).
function client.connect(self, host, port_or_opts, maybe_opts)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    rawset(self, "_subscribed", false)
    rawset(self, "_reqs", nil)

    local opts, ok, err
    if type(port_or_opts) == "table" then
        opts = port_or_opts
        ok, err = sock:connect(host, opts)
    elseif port_or_opts == nil then
        ok, err = sock:connect(host)
    else
        opts = maybe_opts
        if opts then
            ok, err = sock:connect(host, port_or_opts, opts)
        else
            ok, err = sock:connect(host, port_or_opts)
        end
    end
    if not ok then
        return ok, err
    end

    if opts and opts.ssl then
        ok, err = sock:sslhandshake(false, opts.server_name, opts.ssl_verify)
        if not ok then
            return nil, "failed to do ssl handshake: " .. tostring(err)
        end
    end
    return ok
end

function client.set_timeout(self, timeout)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    sock:settimeout(timeout)
    return true
end

function client.set_timeouts(self, connect_timeout, send_timeout, read_timeout)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    sock:settimeouts(connect_timeout, send_timeout, read_timeout)
    return true
end

-- Returns the connection to the worker's pool. A connection listening to channels cannot be
-- reused by someone else, so that is refused.
function client.set_keepalive(self, max_idle_timeout, pool_size)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    if rawget(self, "_subscribed") then
        return nil, "subscribed state"
    end
    return sock:setkeepalive(max_idle_timeout, pool_size)
end

function client.get_reused_times(self)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    return sock:getreusedtimes()
end

function client.close(self)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    rawset(self, "_subscribed", false)
    return sock:close()
end

-- Reading replies -------------------------------------------------------------------------

local read_reply

-- One element of an array reply: an error inside an array is kept as {false, err}.
local function read_element(sock)
    local v, err = read_reply(sock)
    if v == nil then
        return nil, err
    end
    if v == false then
        return { false, err }
    end
    return v
end

read_reply = function(sock)
    local line, err = sock:receive()
    if not line then
        return nil, err
    end
    local kind = byte(line)
    if kind == BULK then
        local size = tonumber(sub(line, 2))
        if not size then
            return nil, "bad reply"
        end
        if size < 0 then
            return null
        end
        local data, rerr = sock:receive(size + 2)
        if not data then
            return nil, rerr
        end
        return sub(data, 1, size)
    elseif kind == STATUS then
        return sub(line, 2)
    elseif kind == INTEGER then
        return tonumber(sub(line, 2))
    elseif kind == ERROR then
        return false, sub(line, 2)
    elseif kind == ARRAY then
        local n = tonumber(sub(line, 2))
        if not n then
            return nil, "bad reply"
        end
        if n < 0 then
            return null
        end
        local list = {}
        for i = 1, n do
            local v, verr = read_element(sock)
            if v == nil then
                return nil, verr
            end
            list[i] = v
        end
        return list
    end
    return nil, "bad reply"
end

-- Writing requests ------------------------------------------------------------------------

-- The RESP encoding of one command, as a list of pieces for `sock:send` (no copy of the
-- arguments). Non-string arguments are sent as their `tostring`.
local function encode(name, ...)
    local n = select("#", ...)
    local parts = { "*", n + 1, "\r\n$", #name, "\r\n", name, "\r\n" }
    local k = #parts
    for i = 1, n do
        local arg = select(i, ...)
        if type(arg) ~= "string" then
            arg = tostring(arg)
        end
        parts[k + 1] = "$"
        parts[k + 2] = #arg
        parts[k + 3] = "\r\n"
        parts[k + 4] = arg
        parts[k + 5] = "\r\n"
        k = k + 5
    end
    return concat(parts)
end

-- Pub/sub bookkeeping: the third element of a (p)subscribe/(p)unsubscribe reply is the number
-- of channels the connection still listens to; at 0 it is an ordinary connection again.
local SUBSCRIPTION = {
    subscribe = true, psubscribe = true, unsubscribe = true, punsubscribe = true,
}

local function note_subscription(self, reply)
    if type(reply) == "table" and SUBSCRIPTION[reply[1]] and type(reply[3]) == "number" then
        rawset(self, "_subscribed", reply[3] > 0)
    end
end

-- A (un)subscribe command answers once per channel. With no channel named, `unsubscribe`
-- answers once per channel it leaves, the last answer carrying a count of 0.
local function run_subscription(self, sock, name, nargs)
    local replies = {}
    local expected = nargs
    while true do
        local reply, err = read_reply(sock)
        if reply == nil then
            return nil, err
        end
        if reply == false then
            return false, err
        end
        note_subscription(self, reply)
        replies[#replies + 1] = reply
        if expected > 0 then
            if #replies >= expected then
                break
            end
        elseif type(reply) ~= "table" or reply[3] == 0 or reply[3] == nil then
            break
        end
    end
    if #replies == 1 then
        return replies[1]
    end
    return replies
end

local function run(self, name, ...)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    local req = encode(name, ...)

    local queued = rawget(self, "_reqs")
    if queued then
        queued[#queued + 1] = req
        return
    end

    local sent, err = sock:send(req)
    if not sent then
        return nil, err
    end
    if SUBSCRIPTION[name] then
        return run_subscription(self, sock, name, select("#", ...))
    end
    return read_reply(sock)
end

-- A method for command `name`, made once and kept on the method table.
local function command(name)
    local wire = lower(name)
    local f = function(self, ...)
        return run(self, wire, ...)
    end
    rawset(client, name, f)
    return f
end

mt.__index = function(_, name)
    local f = client[name]
    if f ~= nil then
        return f
    end
    if type(name) ~= "string" or byte(name) == byte("_") then
        return nil
    end
    return command(name)
end

-- Pipelining -------------------------------------------------------------------------------

-- Commands are queued until commit_pipeline; a second init drops what was queued.
function client.init_pipeline(self, n)
    rawset(self, "_reqs", new_tab(n or 4, 0))
end

function client.cancel_pipeline(self)
    rawset(self, "_reqs", nil)
end

-- Sends every queued command at once and returns their replies in order (an error reply as
-- {false, err}); a connection failure gives nil, err.
function client.commit_pipeline(self)
    local queued = rawget(self, "_reqs")
    if not queued then
        return nil, "no pipeline"
    end
    rawset(self, "_reqs", nil)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    if #queued == 0 then
        return {}
    end
    local sent, err = sock:send(concat(queued))
    if not sent then
        return nil, err
    end
    local replies = {}
    for i = 1, #queued do
        local v, rerr = read_element(sock)
        if v == nil then
            return nil, rerr
        end
        note_subscription(self, v)
        replies[i] = v
    end
    return replies
end

-- Helpers ----------------------------------------------------------------------------------

-- hmset(key, {field = value, …}) or hmset(key, field, value, …).
function client.hmset(self, key, ...)
    if select("#", ...) == 1 then
        local t = ...
        if type(t) == "table" then
            local flat, n = {}, 0
            for field, value in pairs(t) do
                flat[n + 1] = field
                flat[n + 2] = value
                n = n + 2
            end
            return run(self, "hmset", key, unpack(flat, 1, n))
        end
    end
    return run(self, "hmset", key, ...)
end

-- The next message pushed to a subscribed connection.
function client.read_reply(self)
    local sock = sock_of(self)
    if not sock then
        return nil, "not initialized"
    end
    if not rawget(self, "_subscribed") then
        return nil, "not subscribed"
    end
    local reply, err = read_reply(sock)
    note_subscription(self, reply)
    return reply, err
end

-- {k1, v1, k2, v2} -> {k1 = v1, k2 = v2} (e.g. for HGETALL's reply).
function client.array_to_hash(_, list)
    local hash = {}
    for i = 1, #list, 2 do
        hash[list[i]] = list[i + 1]
    end
    return hash
end

-- Declares command methods up front. Every command already works without it; it is kept for
-- code written against older versions of the library.
function _M.add_commands(...)
    for i = 1, select("#", ...) do
        local name = select(i, ...)
        if type(name) == "string" and client[name] == nil then
            command(name)
        end
    end
end

-- Redis module commands: after `register_module_prefix("bf")`, `red:bf():add(k, v)` sends
-- `BF.ADD k v`.
function _M.register_module_prefix(prefix)
    local wire_prefix = lower(prefix) .. "."
    client[prefix] = function(self)
        return setmetatable({}, {
            __index = function(_, name)
                return function(_, ...)
                    return run(self, wire_prefix .. lower(name), ...)
                end
            end,
        })
    end
end

_M.array_to_hash = client.array_to_hash
_M.null = null

-- `redis.connect` and friends are reachable through the module too, as callers write
-- `redis.new()` then `red:connect(…)`, and some call the functions on the module itself.
setmetatable(_M, {
    __index = function(_, name)
        return client[name]
    end,
})

return _M
