//! The crypto libraries APISIX's auth plugins and data encryption `require`, native and
//! OpenSSL-free (RustCrypto crates): `resty.openssl.digest`, `resty.openssl.hmac`,
//! `resty.openssl.mac`, `resty.openssl.pkey`, `resty.openssl.rand`, `resty.hmac`, `resty.aes`,
//! and, in Lua over those, `resty.jwt` and `resty.openssl.auxiliary.jwk`. Each registers as a `package.preload` entry, so nothing
//! loads until a plugin asks for it.

pub mod aes;
pub mod digest;
pub mod ec;
pub mod hmac;
pub mod key;
pub mod pkey;
pub mod rand;
pub mod rsa_sig;

#[cfg(test)]
mod tests;

use mlua::{Lua, Table};

/// lua-resty-jwt's API subset, in Lua over the modules here.
const JWT: &str = include_str!("jwt.lua");

/// `resty.openssl.auxiliary.jwk` (openid-connect exports keys with `dump_jwk`): a thin layer
/// over `pkey:tostring(…, "JWK")` and `pkey.new(…, {format = "JWK"})`.
const JWK: &str = r#"
local pkey = require("resty.openssl.pkey")
local _M = {}
function _M.dump_jwk(key, is_priv)
    if not pkey.istype(key) then
        return nil, "jwk.dump_jwk: expect a pkey instance at #1"
    end
    return key:tostring(is_priv and "private" or "public", "JWK")
end
function _M.load_jwk(txt)
    return pkey.new(txt, {format = "JWK"})
end
return _M
"#;

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    type Loader = fn(&Lua) -> mlua::Result<Table>;
    let natives: [(&str, Loader); 7] = [
        ("resty.openssl.digest", digest::module),
        ("resty.openssl.hmac", hmac::openssl_hmac_module),
        ("resty.openssl.mac", hmac::openssl_mac_module),
        ("resty.openssl.pkey", pkey::module),
        ("resty.openssl.rand", rand::module),
        ("resty.hmac", hmac::resty_hmac_module),
        ("resty.aes", aes::module),
    ];
    for (name, loader) in natives {
        preload.set(name, lua.create_function(move |lua, ()| loader(lua))?)?;
    }
    preload.set(
        "resty.jwt",
        lua.load(JWT).set_name("=resty/jwt.lua").into_function()?,
    )?;
    preload.set(
        "resty.openssl.auxiliary.jwk",
        lua.load(JWK)
            .set_name("=resty/openssl/auxiliary/jwk.lua")
            .into_function()?,
    )?;
    Ok(())
}
