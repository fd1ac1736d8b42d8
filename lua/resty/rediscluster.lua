-- resty.rediscluster: a Redis Cluster client with the API of lua-resty-redis-cluster (which
-- APISIX's limit-* plugins use for `policy: redis-cluster`), moongate's own implementation
-- over `resty.redis`.
--
--   local cluster = require("resty.rediscluster")
--   local red, err = cluster:new({
--       name = "c1", serv_list = {{ip = "127.0.0.1", port = 7000}, …},
--       auth = "password", username = "user",            -- optional
--       connect_timeout = 1000, send_timeout = 1000, read_timeout = 1000,
--       keepalive_timeout = 55000, keepalive_cons = 100,
--       max_redirection = 5, max_connection_attempts = 3,
--       connect_opts = {ssl = …, ssl_verify = …, server_name = …},
--       dict_name = "…",                                  -- accepted (see below)
--   })
--   red:set("k", "v"); red:eval(script, 1, key, …)
--   red:init_pipeline(); red:get("a"); red:get("b"); red:commit_pipeline()
--
-- The slot map (CLUSTER SLOTS) is fetched once per worker and cluster `name`, and fetched
-- again when a node answers MOVED or cannot be reached. A command goes to the master owning
-- its key's slot (hash tags `{…}` honoured); for EVAL/EVALSHA the key is the first of KEYS.
-- ASK redirections are followed with ASKING. Pipelines are split by node and sent as one
-- pipeline per node; a redirected command in a pipeline is retried on its own.
-- `dict_name` names the shared dict the original takes a lock in while it refreshes the slot
-- map; here one refresh at a time runs per worker, so the dict is not needed.

local redis = require("resty.redis")
local bit = require("bit")

local ngx = ngx
local tonumber, tostring, type, select, ipairs, pairs = tonumber, tostring, type, select, ipairs,
    pairs
local setmetatable, rawget, unpack = setmetatable, rawget, unpack
local str_byte, str_find, str_sub, str_match, str_lower = string.byte, string.find, string.sub,
    string.match, string.lower
local band, bxor, lshift, rshift = bit.band, bit.bxor, bit.lshift, bit.rshift
local math_random = math.random

local _M = { _VERSION = "1.3.3" }

local SLOTS = 16384

-- CRC16/XMODEM (polynomial 0x1021), the checksum Redis Cluster maps keys with.
local crc_table = {}
for i = 0, 255 do
    local crc = lshift(i, 8)
    for _ = 1, 8 do
        if band(crc, 0x8000) ~= 0 then
            crc = bxor(lshift(crc, 1), 0x1021)
        else
            crc = lshift(crc, 1)
        end
    end
    crc_table[i] = band(crc, 0xffff)
end

local function crc16(s)
    local crc = 0
    for i = 1, #s do
        local idx = band(bxor(rshift(crc, 8), str_byte(s, i)), 0xff)
        crc = band(bxor(lshift(crc, 8), crc_table[idx]), 0xffff)
    end
    return crc
end

-- The slot of a key: only the part inside the first non-empty `{…}` counts, if there is one.
local function key_slot(key)
    key = tostring(key)
    local open = str_find(key, "{", 1, true)
    if open then
        local close = str_find(key, "}", open + 1, true)
        if close and close > open + 1 then
            key = str_sub(key, open + 1, close - 1)
        end
    end
    return crc16(key) % SLOTS
end
_M.key_slot = key_slot

-- Per worker, by cluster (its name and the nodes it was given, so a conf that points the
-- same name at other nodes asks those): { slots = {[slot] = {master = node, replicas = {…}}} }.
local topologies = {}
-- Clusters whose slot map a request of this worker is fetching now, and the last failure.
local refreshing = {}
local last_failure = {}

local function cluster_id(config)
    local parts = { tostring(config.name) }
    for _, serv in ipairs(config.serv_list) do
        parts[#parts + 1] = tostring(serv.ip) .. ":" .. tostring(serv.port)
    end
    return table.concat(parts, " ")
end

local function node_of(entry)
    return { ip = entry[1], port = tonumber(entry[2]) }
end

local mt = {}
local client = {}

local function new_connection(self, ip, port)
    local cfg = self.config
    local red = redis.new()
    red:set_timeouts(cfg.connect_timeout or 1000, cfg.send_timeout or 1000,
        cfg.read_timeout or 1000)
    local opts = cfg.connect_opts or {}
    local pool_opts = {
        ssl = opts.ssl,
        ssl_verify = opts.ssl_verify,
        server_name = opts.server_name,
        pool = opts.pool,
        pool_size = opts.pool_size,
        backlog = opts.backlog,
    }
    local ok, err = red:connect(ip, port, pool_opts)
    if not ok then
        return nil, err
    end
    if red:get_reused_times() == 0 and cfg.auth and cfg.auth ~= "" then
        if cfg.username and cfg.username ~= "" then
            ok, err = red:auth(cfg.username, cfg.auth)
        else
            ok, err = red:auth(cfg.auth)
        end
        if not ok then
            red:close()
            return nil, err
        end
    end
    return red
end

local function release(self, red)
    local cfg = self.config
    red:set_keepalive(cfg.keepalive_timeout or 55000, cfg.keepalive_cons or 1000)
end

-- Asks the configured nodes in turn for the slot map.
local function fetch_topology(self)
    local errors = {}
    for _, serv in ipairs(self.config.serv_list or {}) do
        local red, err = new_connection(self, serv.ip, serv.port)
        if red then
            local ranges, cerr = red:cluster("slots")
            if type(ranges) == "table" then
                release(self, red)
                local slots = {}
                for _, range in ipairs(ranges) do
                    local shard = { master = node_of(range[3]), replicas = {} }
                    for i = 4, #range do
                        shard.replicas[#shard.replicas + 1] = node_of(range[i])
                    end
                    for slot = tonumber(range[1]), tonumber(range[2]) do
                        slots[slot] = shard
                    end
                end
                return { slots = slots }
            end
            red:close()
            errors[#errors + 1] = tostring(cerr)
        else
            errors[#errors + 1] = serv.ip .. ":" .. tostring(serv.port) .. " " .. tostring(err)
        end
    end
    return nil, "failed to fetch slots: " .. table.concat(errors, "; ")
end

-- Fetches the slot map again. When another request of this worker is already at it, waits
-- for that one (bounded by the time it may take) rather than asking the nodes twice.
local function refresh(self)
    local id = self.id
    if refreshing[id] then
        local cfg = self.config
        local budget = ((cfg.connect_timeout or 1000) + (cfg.read_timeout or 1000))
            * #cfg.serv_list / 1000
        local waited = 0
        while refreshing[id] and waited < budget do
            ngx.sleep(0.005)
            waited = waited + 0.005
        end
        if topologies[id] then
            return true
        end
        return nil, last_failure[id] or "failed to fetch slots: timed out waiting for a refresh"
    end
    refreshing[id] = true
    local topo, err = fetch_topology(self)
    refreshing[id] = nil
    if not topo then
        last_failure[id] = err
        return nil, err
    end
    topologies[id] = topo
    return true
end

function _M.new(_, config)
    if type(config) ~= "table" then
        return nil, "config must be a table"
    end
    if not config.name or not config.serv_list or #config.serv_list == 0 then
        return nil, "config.name and config.serv_list are required"
    end
    local self = setmetatable({ config = config, id = cluster_id(config) }, mt)
    if not topologies[self.id] then
        local ok, err = refresh(self)
        if not ok then
            return nil, err
        end
    end
    return self
end

-- The node serving `slot` (its master; any node when the slot is unknown).
local function node_for(self, slot)
    local topo = topologies[self.id]
    local shard = topo and slot and topo.slots[slot]
    if shard then
        return shard.master
    end
    local list = self.config.serv_list
    return list[math_random(#list)]
end

-- Which argument is the key a command is routed by.
local function routing_key(cmd, ...)
    if cmd == "eval" or cmd == "evalsha" then
        local nkeys = tonumber((select(2, ...)))
        if nkeys and nkeys > 0 then
            return (select(3, ...))
        end
        return nil
    end
    if select("#", ...) == 0 then
        return nil
    end
    return (select(1, ...))
end

local function redirection(err)
    if type(err) ~= "string" then
        return nil
    end
    local kind, addr = str_match(err, "^(%u+) %d+ (%S+)$")
    if kind ~= "MOVED" and kind ~= "ASK" then
        return nil
    end
    local ip, port = str_match(addr, "^(.*):(%d+)$")
    return kind, { ip = ip, port = tonumber(port) }
end

-- Runs one command, following redirections and retrying on failed connections.
local function execute(self, cmd, ...)
    local cfg = self.config
    local key = routing_key(cmd, ...)
    local slot = key ~= nil and key_slot(key) or nil
    local node = node_for(self, slot)
    local asking = false
    local attempts, redirects = 0, 0
    local max_attempts = cfg.max_connection_attempts or 3
    local max_redirects = cfg.max_redirection or 5
    while true do
        local red, err = new_connection(self, node.ip, node.port)
        if not red then
            attempts = attempts + 1
            if attempts >= max_attempts then
                return nil, err
            end
            refresh(self)
            node = node_for(self, slot)
        else
            if asking then
                red:asking()
            end
            local res, rerr = red[cmd](red, ...)
            if res == nil then
                -- the connection broke: it cannot go back to the pool
                red:close()
                return nil, rerr
            end
            release(self, red)
            local kind, target = redirection(rerr)
            if not kind then
                if rerr == nil then
                    return res
                end
                return res, rerr
            end
            redirects = redirects + 1
            if redirects > max_redirects then
                return nil, "too many redirections: " .. rerr
            end
            if kind == "MOVED" then
                refresh(self)
            end
            asking = kind == "ASK"
            node = target
        end
    end
end

-- Pipelines ------------------------------------------------------------------------------

function client.init_pipeline(self)
    self._reqs = {}
end

function client.cancel_pipeline(self)
    self._reqs = nil
end

function client.commit_pipeline(self)
    local reqs = rawget(self, "_reqs")
    if not reqs then
        return nil, "no pipeline"
    end
    self._reqs = nil

    -- group the commands by the node they go to, keeping their positions
    local groups, order = {}, {}
    for i, req in ipairs(reqs) do
        local key = routing_key(req.cmd, unpack(req.args, 1, req.n))
        local node = node_for(self, key ~= nil and key_slot(key) or nil)
        local id = node.ip .. ":" .. node.port
        local g = groups[id]
        if not g then
            g = { node = node, idx = {} }
            groups[id] = g
            order[#order + 1] = id
        end
        g.idx[#g.idx + 1] = i
    end

    local results = {}
    for _, id in ipairs(order) do
        local g = groups[id]
        local red, err = new_connection(self, g.node.ip, g.node.port)
        local replies
        if red then
            red:init_pipeline(#g.idx)
            for _, i in ipairs(g.idx) do
                local req = reqs[i]
                red[req.cmd](red, unpack(req.args, 1, req.n))
            end
            replies, err = red:commit_pipeline()
            if replies then
                release(self, red)
            else
                red:close()
            end
        end
        for k, i in ipairs(g.idx) do
            local reply = replies and replies[k]
            local req = reqs[i]
            local redirected = type(reply) == "table" and reply[1] == false
                and redirection(reply[2])
            if replies == nil or redirected then
                -- the node was unreachable or the slot moved: this command on its own
                local res, rerr = execute(self, req.cmd, unpack(req.args, 1, req.n))
                if res == nil then
                    return nil, rerr or err
                end
                if res == false then
                    res = { false, rerr }
                end
                reply = res
            end
            results[i] = reply
        end
    end
    return results
end

-- Every other method is a Redis command.
mt.__index = function(_, name)
    local f = client[name]
    if f ~= nil then
        return f
    end
    if type(name) ~= "string" or str_byte(name) == str_byte("_") then
        return nil
    end
    local cmd = str_lower(name)
    f = function(self, ...)
        local reqs = rawget(self, "_reqs")
        if reqs then
            reqs[#reqs + 1] = { cmd = cmd, args = { ... }, n = select("#", ...) }
            return
        end
        return execute(self, cmd, ...)
    end
    client[name] = f
    return f
end

-- Forget this worker's slot maps of cluster `name` (the next command fetches them again).
function _M.flush_slots(name)
    local prefix = tostring(name) .. " "
    for id in pairs(topologies) do
        if id:sub(1, #prefix) == prefix then
            topologies[id] = nil
        end
    end
end

return _M
