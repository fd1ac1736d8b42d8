-- resty.jit-uuid: UUID generation and validation with lua-resty-jit-uuid's API (moongate's own
-- implementation). v4 UUIDs come from `math.random`, as the original's do, so `seed()` matters;
-- moongate seeds every worker's generator from the kernel when the module loads (each worker has
-- its own VM, so no two share a sequence even before a plugin calls `seed`). v3 and v5 are the
-- RFC 4122 name-based forms over MD5 and SHA-1.

local ngx = ngx
local bit = require("bit")
local band, bor, tohex = bit.band, bit.bor, bit.tohex
local random, randomseed, floor = math.random, math.randomseed, math.floor
local byte, char, sub, gsub, fmt, find = string.byte, string.char, string.sub, string.gsub,
    string.format, string.find
local type, tonumber = type, tonumber

local _M = { _VERSION = "0.0.7" }

-- A seed no other worker (or restart) is likely to share.
local function kernel_seed()
    local f = io.open("/dev/urandom", "rb")
    if f then
        local s = f:read(4)
        f:close()
        if s and #s == 4 then
            local a, b, c, d = byte(s, 1, 4)
            return ((a * 256 + b) * 256 + c) * 256 + d
        end
    end
    return floor(ngx.now() * 1000) + ngx.worker.id()
end

-- Seeds `math.random` (with `seed`, or a fresh kernel seed) and returns the seed used.
function _M.seed(seed)
    if seed == nil then
        seed = kernel_seed()
    elseif type(seed) ~= "number" then
        return nil, "seed must be a number"
    end
    randomseed(seed)
    return seed
end

-- A random (version 4) UUID, lower-case.
function _M.generate_v4()
    return fmt("%s-%s-%s-%s-%s",
        tohex(random(0, 0xffff) * 0x10000 + random(0, 0xffff), 8),
        tohex(random(0, 0xffff), 4),
        -- version nibble 4
        tohex(bor(band(random(0, 0xffff), 0x0fff), 0x4000), 4),
        -- variant bits 10
        tohex(bor(band(random(0, 0xffff), 0x3fff), 0x8000), 4),
        tohex(random(0, 0xffff), 4) .. tohex(random(0, 0xffff) * 0x10000 + random(0, 0xffff), 8))
end

local CANONICAL = "^%x%x%x%x%x%x%x%x%-%x%x%x%x%-%x%x%x%x%-[89abAB]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$"

-- True for a UUID in its canonical 8-4-4-4-12 form (any case, any version) with the RFC 4122
-- variant.
function _M.is_valid(str)
    if type(str) ~= "string" or #str ~= 36 then
        return false
    end
    return find(str, CANONICAL) ~= nil
end

-- The 16 bytes of a canonical UUID.
local function to_bytes(uuid)
    local hex = gsub(uuid, "-", "")
    return (gsub(hex, "%x%x", function(h) return char(tonumber(h, 16)) end))
end

-- A name-based UUID: the namespace's bytes and the name through `hash`, version `ver`.
local function name_based(hash, ver, namespace, name)
    if not _M.is_valid(namespace) then
        return nil, "namespace must be a valid UUID"
    end
    if type(name) ~= "string" then
        return nil, "name must be a string"
    end
    local h = hash(to_bytes(namespace) .. name)
    local b = { byte(h, 1, 16) }
    b[7] = bor(band(b[7], 0x0f), ver * 16)
    b[9] = bor(band(b[9], 0x3f), 0x80)
    local hex = ""
    for i = 1, 16 do
        hex = hex .. tohex(b[i], 2)
    end
    return fmt("%s-%s-%s-%s-%s", sub(hex, 1, 8), sub(hex, 9, 12), sub(hex, 13, 16),
        sub(hex, 17, 20), sub(hex, 21, 32))
end

-- Version 3 (MD5) UUID of `name` in `namespace` (a UUID), or `nil, err`.
function _M.generate_v3(namespace, name)
    return name_based(ngx.md5_bin, 3, namespace, name)
end

-- Version 5 (SHA-1) UUID of `name` in `namespace` (a UUID), or `nil, err`.
function _M.generate_v5(namespace, name)
    return name_based(ngx.sha1_bin, 5, namespace, name)
end

local function factory(gen)
    return function(namespace)
        if not _M.is_valid(namespace) then
            return nil, "namespace must be a valid UUID"
        end
        return function(name)
            return gen(namespace, name)
        end
    end
end

-- `factory_v3(ns)` / `factory_v5(ns)`: a generator `f(name)` bound to one namespace.
_M.factory_v3 = factory(_M.generate_v3)
_M.factory_v5 = factory(_M.generate_v5)

_M.seed()

-- `uuid()` is `uuid.generate_v4()`.
return setmetatable(_M, { __call = function() return _M.generate_v4() end })
