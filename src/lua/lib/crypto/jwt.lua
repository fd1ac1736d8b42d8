-- resty.jwt for moongate: the parts of lua-resty-jwt's API APISIX uses.
--   load_jwt(token)          parse a compact JWS (what jwt-auth's parser calls)
--   jwt_encode / jwt_decode  base64url (+ JSON) helpers
--   sign(key, {header, payload})  compact JWS with HS/RS/PS/ES/EdDSA (google-cloud-oauth signs RS256)
-- Verification lives in APISIX's own jwt-auth parser (over resty.openssl.*); verify, verify_jwt_obj
-- and JWE raise an error naming them.

local cjson = require("cjson.safe")
local mac = require("resty.openssl.mac")
local digest = require("resty.openssl.digest")
local pkey = require("resty.openssl.pkey")

local decode_base64 = ngx.decode_base64
local encode_base64 = ngx.encode_base64
local type, pcall, error, setmetatable = type, pcall, error, setmetatable
local str_rep, str_format, tostring = string.rep, string.format, tostring

local _M = { _VERSION = "0.2.3-moongate" }
local mt = { __index = _M }

-- Dots separate the parts; like the original, empty parts are dropped, so "a..b" has two.
local function parts_of(token)
    local parts = {}
    for part in token:gmatch("[^.]+") do
        parts[#parts + 1] = part
    end
    return parts
end

function _M.jwt_encode(_, value)
    if type(value) == "table" then
        value = cjson.encode(value)
    end
    return (encode_base64(value):gsub("%+", "-"):gsub("/", "_"):gsub("=", ""))
end

function _M.jwt_decode(_, text, as_json)
    text = text:gsub("%-", "+"):gsub("_", "/")
    local short = #text % 4
    if short > 0 then
        text = text .. str_rep("=", 4 - short)
    end
    local raw = decode_base64(text)
    if not raw then
        return nil
    end
    if as_json then
        return cjson.decode(raw)
    end
    return raw
end

local function parse(token)
    if type(token) ~= "string" then
        error({ reason = "invalid jwt string" })
    end
    local parts = parts_of(token)
    if #parts == 4 or #parts == 5 then
        error({ reason = "JWE tokens are not supported by moongate's resty.jwt" })
    end
    if #parts ~= 3 then
        error({ reason = "invalid jwt string" })
    end
    local header = _M:jwt_decode(parts[1], true)
    if not header then
        error({ reason = "invalid header: " .. parts[1] })
    end
    local payload = _M:jwt_decode(parts[2], true)
    if not payload then
        error({ reason = "invalid payload: " .. parts[2] })
    end
    return {
        raw_header = parts[1],
        raw_payload = parts[2],
        header = header,
        payload = payload,
        signature = parts[3],
    }
end

function _M.load_jwt(_, token)
    local ok, res = pcall(parse, token)
    if not ok then
        local reason = type(res) == "table" and res.reason or "invalid jwt string"
        return { valid = false, verified = false, reason = reason }
    end
    res.valid = true
    res.verified = false
    return res
end

local hmac_digest = { HS256 = "sha256", HS384 = "sha384", HS512 = "sha512" }
local rsa_digest = { RS256 = "sha256", RS384 = "sha384", RS512 = "sha512" }
local pss_digest = { PS256 = "sha256", PS384 = "sha384", PS512 = "sha512" }
local ec_digest = { ES256 = "sha256", ES384 = "sha384", ES512 = "sha512" }

local function signature_of(alg, key, message)
    if hmac_digest[alg] then
        local m = assert(mac.new(key, "HMAC", nil, hmac_digest[alg]))
        return m:final(message)
    end
    local k, err = pkey.new(key)
    if not k then
        error({ reason = "failed to load private key: " .. tostring(err) })
    end
    local sig
    if rsa_digest[alg] then
        local d = digest.new(rsa_digest[alg])
        d:update(message)
        sig, err = k:sign(d)
    elseif pss_digest[alg] then
        sig, err = k:sign(message, pss_digest[alg], pkey.PADDINGS.RSA_PKCS1_PSS_PADDING)
    elseif ec_digest[alg] then
        sig, err = k:sign(message, ec_digest[alg], nil, { ecdsa_use_raw = true })
    elseif alg == "EdDSA" or alg == "Ed25519" then
        sig, err = k:sign(message)
    else
        error({ reason = "unsupported alg: " .. tostring(alg) })
    end
    if not sig then
        error({ reason = "signature error: " .. tostring(err) })
    end
    return sig
end

-- sign(key, {header = {alg = …}, payload = {…}}): the compact token; errors are raised as
-- {reason = …} tables, as the original raises them.
function _M.sign(_, key, jwt_obj)
    local header, payload = jwt_obj.header, jwt_obj.payload
    if type(header) ~= "table" or type(payload) ~= "table" then
        error({ reason = "missing part header or payload" })
    end
    local message = str_format("%s.%s", _M:jwt_encode(header), _M:jwt_encode(payload))
    return message .. "." .. _M:jwt_encode(signature_of(header.alg, key, message))
end

local function refused(name)
    return function()
        error("resty.jwt: " .. name .. "() is not supported by moongate; APISIX's jwt-auth "
            .. "verifies through its own parser over resty.openssl", 2)
    end
end

for _, name in ipairs({ "verify", "verify_jwt_obj", "sign_jwe", "set_trusted_certs_file",
                        "set_alg_whitelist", "set_x5u_content_retriever",
                        "set_payload_encoder", "set_payload_decoder" }) do
    _M[name] = refused(name)
end

return setmetatable(_M, mt)
