-- apisix.core: the table every APISIX plugin starts from (`local core = require("apisix.core")`).
-- Each member is one of our own sub-modules under apisix/core/, named as APISIX names them so
-- plugin authors find them where they expect. `core.schema` is loaded on first use (its
-- validator is heavy and many call sites never touch it), and so is `core.etcd`; members that
-- need nginx internals moongate does not have raise an error naming themselves when touched.

local require, error, setmetatable, rawset = require, error, setmetatable, rawset

local utils = require("apisix.core.utils")
local config_local = require("apisix.core.config_local")

local core = {
    version = require("apisix.core.version"),
    log = require("apisix.core.log"),
    config = require("apisix.core.config"),
    config_util = require("apisix.core.config_util"),
    json = require("apisix.core.json"),
    table = require("apisix.core.table"),
    request = require("apisix.core.request"),
    response = require("apisix.core.response"),
    lrucache = require("apisix.core.lrucache"),
    string = require("apisix.core.string"),
    ctx = require("apisix.core.ctx"),
    timer = require("apisix.core.timer"),
    id = require("apisix.core.id"),
    ip = require("apisix.core.ip"),
    io = require("apisix.core.io"),
    utils = utils,
    sleep = utils.sleep,
    tablepool = require("tablepool"),
    resolver = require("apisix.core.resolver"),
    dns_client = require("apisix.core.dns.client"),
    os = require("apisix.core.os"),
    math = require("apisix.core.math"),
    event = require("apisix.core.event"),
    env = require("apisix.core.env"),
    config_local = config_local,
    empty_tab = {},
}

-- Members that exist in APISIX but need what moongate lacks (pubsub over websocket with
-- protobuf): a clear error instead of `nil`.
local refused = {
    pubsub = "core.pubsub is not supported by moongate",
}

local function refused_module(name, msg)
    return setmetatable({}, {
        __index = function(_, k)
            error(msg .. " (core." .. name .. "." .. tostring(k) .. ")", 2)
        end,
    })
end

for name, msg in pairs(refused) do
    core[name] = refused_module(name, msg)
end

-- Members loaded on first use: the validator and schema_def only when a plugin validates, the
-- keyring only when something encrypts, the config store's helpers only when something reads or
-- writes it.
local on_demand = {
    schema = "apisix.core.schema",
    data_encryption = "apisix.core.data_encryption",
    etcd = "apisix.core.etcd",
}

return setmetatable(core, {
    __index = function(members, name)
        local module_name = on_demand[name]
        if module_name == nil then
            return nil
        end
        local loaded = require(module_name)
        rawset(members, name, loaded)
        return loaded
    end,
})
