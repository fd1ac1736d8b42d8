//! Message digests: the algorithm names OpenSSL accepts, one incremental hasher over them, and
//! `resty.openssl.digest` (`new`, `update`, `final`, `reset`) on top. Every other crypto module
//! names its hash through [`DigestAlg`], so "which digests does moongate know" has one answer.

use std::cell::RefCell;

use mlua::{Lua, MultiValue, Table, UserData, UserDataMethods, Value};
use sha2::Digest as _;

/// A digest algorithm, by the names OpenSSL's `EVP_get_digestbyname` knows for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestAlg {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl DigestAlg {
    /// Looks a name up the way OpenSSL does: case-insensitive, with its aliases
    /// (`SHA256`, `sha-256`, `SHA2-256`, `RSA-SHA256` …).
    pub fn from_name(name: &str) -> Option<DigestAlg> {
        let lower = name.to_ascii_lowercase();
        let bare = lower.strip_prefix("rsa-").unwrap_or(&lower);
        Some(match bare {
            "md5" => DigestAlg::Md5,
            "sha1" | "sha-1" => DigestAlg::Sha1,
            "sha224" | "sha-224" | "sha2-224" => DigestAlg::Sha224,
            "sha256" | "sha-256" | "sha2-256" => DigestAlg::Sha256,
            "sha384" | "sha-384" | "sha2-384" => DigestAlg::Sha384,
            "sha512" | "sha-512" | "sha2-512" => DigestAlg::Sha512,
            _ => return None,
        })
    }

    /// The lowercase OpenSSL short name.
    pub fn name(self) -> &'static str {
        match self {
            DigestAlg::Md5 => "md5",
            DigestAlg::Sha1 => "sha1",
            DigestAlg::Sha224 => "sha224",
            DigestAlg::Sha256 => "sha256",
            DigestAlg::Sha384 => "sha384",
            DigestAlg::Sha512 => "sha512",
        }
    }

    /// Bytes in one digest.
    pub fn output_len(self) -> usize {
        match self {
            DigestAlg::Md5 => 16,
            DigestAlg::Sha1 => 20,
            DigestAlg::Sha224 => 28,
            DigestAlg::Sha256 => 32,
            DigestAlg::Sha384 => 48,
            DigestAlg::Sha512 => 64,
        }
    }

    /// The digest of the concatenation of `parts`.
    pub fn hash(self, parts: &[&[u8]]) -> Vec<u8> {
        let mut h = Hasher::new(self);
        for p in parts {
            h.update(p);
        }
        h.finish()
    }
}

/// An incremental hash of one [`DigestAlg`].
#[derive(Clone)]
pub enum Hasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    pub fn new(alg: DigestAlg) -> Hasher {
        match alg {
            DigestAlg::Md5 => Hasher::Md5(md5::Md5::new()),
            DigestAlg::Sha1 => Hasher::Sha1(sha1::Sha1::new()),
            DigestAlg::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            DigestAlg::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            DigestAlg::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            DigestAlg::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        }
    }

    pub fn alg(&self) -> DigestAlg {
        match self {
            Hasher::Md5(_) => DigestAlg::Md5,
            Hasher::Sha1(_) => DigestAlg::Sha1,
            Hasher::Sha224(_) => DigestAlg::Sha224,
            Hasher::Sha256(_) => DigestAlg::Sha256,
            Hasher::Sha384(_) => DigestAlg::Sha384,
            Hasher::Sha512(_) => DigestAlg::Sha512,
        }
    }

    pub fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Md5(h) => h.update(b),
            Hasher::Sha1(h) => h.update(b),
            Hasher::Sha224(h) => h.update(b),
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha384(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }

    /// The digest so far; the hasher starts over afterwards.
    pub fn finish(&mut self) -> Vec<u8> {
        match self {
            Hasher::Md5(h) => h.finalize_reset().to_vec(),
            Hasher::Sha1(h) => h.finalize_reset().to_vec(),
            Hasher::Sha224(h) => h.finalize_reset().to_vec(),
            Hasher::Sha256(h) => h.finalize_reset().to_vec(),
            Hasher::Sha384(h) => h.finalize_reset().to_vec(),
            Hasher::Sha512(h) => h.finalize_reset().to_vec(),
        }
    }
}

/// A `resty.openssl.digest` instance. `pkey:sign(digest)` reads its state (without consuming
/// it, as `EVP_SignFinal` works on a copy).
pub struct DigestObject {
    pub hasher: RefCell<Hasher>,
}

/// Feeds every string argument to `f`, as `update(...)` does in lua-resty-openssl; anything
/// else is an error naming the method.
pub fn for_each_string(
    method: &str,
    args: &MultiValue,
    mut f: impl FnMut(&[u8]),
) -> mlua::Result<()> {
    for v in args.iter() {
        match v {
            Value::String(s) => f(&s.as_bytes()),
            other => {
                return Err(mlua::Error::runtime(format!(
                    "{method}: expect a string, got {}",
                    other.type_name()
                )));
            }
        }
    }
    Ok(())
}

impl UserData for DigestObject {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("update", |_, d, args: MultiValue| {
            let mut h = d.hasher.borrow_mut();
            for_each_string("digest:update", &args, |b| h.update(b))?;
            Ok(true)
        });
        m.add_method("final", |lua, d, s: Option<mlua::LuaString>| {
            let mut h = d.hasher.borrow_mut();
            if let Some(s) = s {
                h.update(&s.as_bytes());
            }
            lua.create_string(h.finish())
        });
        m.add_method("reset", |_, d, ()| {
            let mut h = d.hasher.borrow_mut();
            *h = Hasher::new(h.alg());
            Ok(true)
        });
    }
}

/// `require("resty.openssl.digest")`.
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set(
        "new",
        lua.create_function(|lua, typ: Option<String>| {
            // lua-resty-openssl defaults to sha1 when no type is given.
            let name = typ.unwrap_or_else(|| "sha1".to_string());
            match DigestAlg::from_name(&name) {
                Some(alg) => Ok((
                    Value::UserData(lua.create_userdata(DigestObject {
                        hasher: RefCell::new(Hasher::new(alg)),
                    })?),
                    Value::Nil,
                )),
                None => Ok((
                    Value::Nil,
                    Value::String(
                        lua.create_string(format!("digest.new: invalid digest type \"{name}\""))?,
                    ),
                )),
            }
        })?,
    )?;
    m.set(
        "istype",
        lua.create_function(|_, v: Value| {
            Ok(matches!(v, Value::UserData(ud) if ud.is::<DigestObject>()))
        })?,
    )?;
    Ok(m)
}
