//! HMAC, one keyed engine behind the three Lua faces plugins use:
//! `resty.openssl.mac` (`new(key, "HMAC", nil, digest)`, what jwt-auth signs HS* with),
//! `resty.openssl.hmac` (`new(key, digest)`), and lua-resty-hmac's `resty.hmac`
//! (`hmac:new(key, hmac.ALGOS.X)`, `final(data, hex)`, what hmac-auth signs with).

use std::cell::RefCell;

use hmac::{Hmac, Mac};
use mlua::{Lua, MultiValue, Table, UserData, UserDataMethods, Value};

use super::digest::{DigestAlg, for_each_string};

/// A keyed HMAC state of one digest.
#[derive(Clone)]
pub enum HmacState {
    Md5(Hmac<md5::Md5>),
    Sha1(Hmac<sha1::Sha1>),
    Sha224(Hmac<sha2::Sha224>),
    Sha256(Hmac<sha2::Sha256>),
    Sha384(Hmac<sha2::Sha384>),
    Sha512(Hmac<sha2::Sha512>),
}

impl HmacState {
    pub fn new(alg: DigestAlg, key: &[u8]) -> HmacState {
        // HMAC takes keys of any length (long ones are hashed first), so keying cannot fail.
        fn keyed<M: Mac + hmac::digest::KeyInit>(key: &[u8]) -> M {
            <M as hmac::digest::KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| unreachable!("HMAC accepts keys of every length"))
        }
        match alg {
            DigestAlg::Md5 => HmacState::Md5(keyed(key)),
            DigestAlg::Sha1 => HmacState::Sha1(keyed(key)),
            DigestAlg::Sha224 => HmacState::Sha224(keyed(key)),
            DigestAlg::Sha256 => HmacState::Sha256(keyed(key)),
            DigestAlg::Sha384 => HmacState::Sha384(keyed(key)),
            DigestAlg::Sha512 => HmacState::Sha512(keyed(key)),
        }
    }

    pub fn update(&mut self, b: &[u8]) {
        match self {
            HmacState::Md5(m) => m.update(b),
            HmacState::Sha1(m) => m.update(b),
            HmacState::Sha224(m) => m.update(b),
            HmacState::Sha256(m) => m.update(b),
            HmacState::Sha384(m) => m.update(b),
            HmacState::Sha512(m) => m.update(b),
        }
    }

    /// The MAC so far; the state starts over with the same key afterwards.
    pub fn finish(&mut self) -> Vec<u8> {
        match self {
            HmacState::Md5(m) => m.finalize_reset().into_bytes().to_vec(),
            HmacState::Sha1(m) => m.finalize_reset().into_bytes().to_vec(),
            HmacState::Sha224(m) => m.finalize_reset().into_bytes().to_vec(),
            HmacState::Sha256(m) => m.finalize_reset().into_bytes().to_vec(),
            HmacState::Sha384(m) => m.finalize_reset().into_bytes().to_vec(),
            HmacState::Sha512(m) => m.finalize_reset().into_bytes().to_vec(),
        }
    }
}

/// One HMAC instance: the running state and the freshly keyed one `reset` returns to.
pub struct HmacObject {
    state: RefCell<HmacState>,
    keyed: HmacState,
    /// `resty.hmac`'s `final(data, true)` returns hex; the OpenSSL faces have no such flag.
    hex_flag: bool,
}

impl HmacObject {
    fn new(alg: DigestAlg, key: &[u8], hex_flag: bool) -> HmacObject {
        let keyed = HmacState::new(alg, key);
        HmacObject {
            state: RefCell::new(keyed.clone()),
            keyed,
            hex_flag,
        }
    }
}

fn to_hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl UserData for HmacObject {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("update", |_, h, args: MultiValue| {
            let mut st = h.state.borrow_mut();
            for_each_string("hmac:update", &args, |b| st.update(b))?;
            Ok(true)
        });
        m.add_method(
            "final",
            |lua, h, (data, hex): (Option<mlua::LuaString>, Option<bool>)| {
                let mut st = h.state.borrow_mut();
                if let Some(d) = data {
                    st.update(&d.as_bytes());
                }
                let mac = st.finish();
                if h.hex_flag && hex == Some(true) {
                    lua.create_string(to_hex(&mac))
                } else {
                    lua.create_string(mac)
                }
            },
        );
        m.add_method("reset", |_, h, ()| {
            *h.state.borrow_mut() = h.keyed.clone();
            Ok(true)
        });
    }
}

fn nil_err(lua: &Lua, msg: String) -> mlua::Result<(Value, Value)> {
    Ok((Value::Nil, Value::String(lua.create_string(msg)?)))
}

fn ok_obj(lua: &Lua, obj: HmacObject) -> mlua::Result<(Value, Value)> {
    Ok((Value::UserData(lua.create_userdata(obj)?), Value::Nil))
}

/// `require("resty.openssl.mac")`: only the HMAC MAC type exists here.
pub fn openssl_mac_module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set(
        "new",
        lua.create_function(
            |lua,
             (key, typ, _cipher, digest): (
                mlua::LuaString,
                String,
                Option<String>,
                Option<String>,
            )| {
                if !typ.eq_ignore_ascii_case("HMAC") {
                    return nil_err(
                        lua,
                        format!(
                            "mac.new: invalid mac type \"{typ}\" (moongate implements only HMAC)"
                        ),
                    );
                }
                let Some(alg) = digest.as_deref().and_then(DigestAlg::from_name) else {
                    return nil_err(lua, "mac.new: invalid cipher or digest type".to_string());
                };
                ok_obj(lua, HmacObject::new(alg, &key.as_bytes(), false))
            },
        )?,
    )?;
    m.set(
        "istype",
        lua.create_function(|_, v: Value| {
            Ok(matches!(v, Value::UserData(ud) if ud.is::<HmacObject>()))
        })?,
    )?;
    Ok(m)
}

/// `require("resty.openssl.hmac")`: `new(key, digest_name)`, sha1 by default.
pub fn openssl_hmac_module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set(
        "new",
        lua.create_function(|lua, (key, typ): (mlua::LuaString, Option<String>)| {
            let name = typ.unwrap_or_else(|| "sha1".to_string());
            match DigestAlg::from_name(&name) {
                Some(alg) => ok_obj(lua, HmacObject::new(alg, &key.as_bytes(), false)),
                None => nil_err(lua, format!("hmac.new: invalid digest type \"{name}\"")),
            }
        })?,
    )?;
    Ok(m)
}

/// `require("resty.hmac")`, lua-resty-hmac's API: `hmac:new(key, hmac.ALGOS.SHA256)` (MD5 when
/// no algorithm is given), `update(s)`, `final(s, hex)`, `reset()`. `ALGOS` values are opaque
/// tokens here (strings instead of `EVP_MD*` cdata); plugins only pass them back to `new`.
pub fn resty_hmac_module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    let algos = lua.create_table()?;
    for (k, alg) in [
        ("MD5", DigestAlg::Md5),
        ("SHA1", DigestAlg::Sha1),
        ("SHA256", DigestAlg::Sha256),
        ("SHA384", DigestAlg::Sha384),
        ("SHA512", DigestAlg::Sha512),
    ] {
        algos.set(k, alg.name())?;
    }
    m.set("ALGOS", algos)?;
    m.set("_VERSION", "0.06")?;
    m.set(
        "new",
        lua.create_function(
            |lua, (_module, key, algo): (Value, mlua::LuaString, Option<String>)| {
                let name = algo.unwrap_or_else(|| "md5".to_string());
                let Some(alg) = DigestAlg::from_name(&name) else {
                    return Err(mlua::Error::runtime(format!(
                        "resty.hmac: unknown algorithm {name:?}; use one of hmac.ALGOS"
                    )));
                };
                lua.create_userdata(HmacObject::new(alg, &key.as_bytes(), true))
            },
        )?,
    )?;
    Ok(m)
}
