-- core.data_encryption: the keyring of `apisix.data_encryption.keyring` in config.yaml, used to
-- keep plugin `encrypt_fields` (and other secrets) encrypted at rest.
--
-- The format is APISIX's, so values written by either gateway read on the other: AES in CBC
-- mode with PKCS#7 padding, the keyring entry serving as both key and IV (16 bytes: AES-128,
-- 32 bytes: AES-256), the ciphertext base64-encoded (standard alphabet, padded). `encrypt`
-- uses the first entry of the keyring; `decrypt` tries every entry in turn, so a keyring can be
-- rotated by putting the new key first and keeping the old ones after it.

local ngx = ngx
local type, ipairs, error, tostring = type, ipairs, error, tostring
local clog = require("apisix.core.log")
local node_conf = require("apisix.core.config_local")

local data_encryption = {}

local KEY_BITS = { [16] = 128, [32] = 256 }

-- `nil` and APISIX's wording of a failed step: "decrypt ssl key failed", "failed to encrypt".
local function failed(step, subject)
    if subject then
        return nil, step .. " " .. subject .. " failed"
    end
    return nil, step .. " failed"
end

-- One cipher per usable keyring entry, in keyring order. An entry of another length is left
-- out with an [error] line (config.yaml validation should have refused it).
function data_encryption.init_iv_tbl(ring)
    local aes = require("resty.aes")
    if type(ring) == "string" then
        ring = { ring }
    end
    local ciphers = {}
    if type(ring) ~= "table" then
        return ciphers
    end
    for _, secret in ipairs(ring) do
        local bits = type(secret) == "string" and KEY_BITS[#secret]
        if bits then
            local c, why = aes:new(secret, nil, aes.cipher(bits, "cbc"), { iv = secret })
            if not c then
                error("data_encryption: cannot set up AES-" .. bits .. "-CBC: " .. tostring(why))
            end
            ciphers[#ciphers + 1] = c
        else
            clog.error("ignored data_encryption keyring entry: expected a 16 byte ",
                "(AES-128) or 32 byte (AES-256) key, got ",
                type(secret) == "string" and #secret or type(secret), " bytes")
        end
    end
    return ciphers
end

-- `value` encrypted with the first cipher, base64-encoded; nil and why without a cipher.
function data_encryption.aes_cbc_encrypt(ciphers, value)
    local first = ciphers[1]
    if first == nil then
        return nil, "no keyring configured"
    end
    local sealed = first:encrypt(value)
    if sealed ~= nil then
        return ngx.encode_base64(sealed)
    end
    return nil, "failed to encrypt"
end

-- The plain text of base64 `value`, from the first cipher that decrypts it. `subject` names
-- what is decrypted in the error ("base64 decode ssl key failed", "decrypt ssl key failed").
function data_encryption.aes_cbc_decrypt(ciphers, value, subject)
    local raw = type(value) == "string" and ngx.decode_base64(value)
    if not raw then
        return failed("base64 decode", subject)
    end
    for _, c in ipairs(ciphers) do
        local plain = c:decrypt(raw)
        if plain ~= nil then
            return plain
        end
    end
    return failed("decrypt", subject)
end

-- The node's keyring, built once per worker.
local keyring
local function ring()
    if keyring == nil then
        local conf = node_conf.local_conf()
        local section = conf and conf.apisix and conf.apisix.data_encryption
        keyring = data_encryption.init_iv_tbl(type(section) == "table" and section.keyring or nil)
    end
    return keyring
end

-- With the node's keyring: the encrypted text, or `value` itself when there is no keyring (or
-- encryption failed, which is logged).
function data_encryption.encrypt(value)
    local ciphers = ring()
    if #ciphers == 0 then
        return value
    end
    local sealed, why = data_encryption.aes_cbc_encrypt(ciphers, value)
    if sealed == nil then
        clog.error("failed to encrypt the data: ", why)
        return value
    end
    return sealed
end

-- With the node's keyring: the plain text, or nil and why; `value` itself without a keyring.
function data_encryption.decrypt(value, subject)
    local ciphers = ring()
    if #ciphers == 0 then
        return value
    end
    return data_encryption.aes_cbc_decrypt(ciphers, value, subject)
end

return data_encryption
