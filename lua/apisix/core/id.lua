-- core.id: this node's id (`get()`), read from `conf/apisix.uid` under the prefix or made
-- once (a random UUID) and written there, so it survives restarts; `gen_uuid_v4()`.

local random_bytes = require("resty.random").bytes
local node_conf = require("apisix.core.config_local")
local clog = require("apisix.core.log")
local format, byte, match, open = string.format, string.byte, string.match, io.open
local bor, band = bit.bor, bit.band

local id = { version = 0.1 }

function id.gen_uuid_v4()
    local b = { byte(random_bytes(16), 1, 16) }
    b[7] = bor(band(b[7], 0x0f), 0x40) -- version 4
    b[9] = bor(band(b[9], 0x3f), 0x80) -- RFC 4122 variant
    return format(
        "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
        b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8],
        b[9], b[10], b[11], b[12], b[13], b[14], b[15], b[16]
    )
end

local uid

local function uid_path()
    return ngx.config.prefix() .. "conf/apisix.uid"
end

function id.init()
    local conf = node_conf.local_conf()
    local configured = conf and conf.apisix and conf.apisix.id
    if configured then
        uid = configured
        return
    end
    local path = uid_path()
    local f = open(path, "rb")
    if f then
        local text = f:read("*a") or ""
        f:close()
        uid = match(text, "^%s*(.-)%s*$")
        if uid ~= "" then
            return
        end
    end
    uid = id.gen_uuid_v4()
    local w, err = open(path, "w")
    if not w then
        clog.error("failed to write the node id to ", path, ": ", err)
        return
    end
    w:write(uid)
    w:close()
end

function id.get()
    if not uid then
        id.init()
    end
    return uid
end

return id
