//! `resty.aes` (lua-resty-string's API): `aes:new(key, salt, cipher, hash, hash_rounds, iv_len,
//! enable_padding)`, `aes.cipher(size, mode)`, `aes.hash.*`, `:encrypt(s, no_padding)`,
//! `:decrypt(s, no_padding)`. AES-128/192/256 in CBC and ECB with PKCS#7 padding — what APISIX's
//! `data_encryption` (the `encrypt_fields` keyring) uses: `aes:new(k, nil, aes.cipher(256, "cbc"),
//! {iv = k})`. Keys come either verbatim (a `{iv = …}` table as 4th argument) or from OpenSSL's
//! `EVP_BytesToKey` over the password, salt and digest. Other modes (gcm, ctr, cfb, ofb) are
//! refused at `new` with an error naming the mode.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit, generic_array::GenericArray};
use mlua::{Lua, Table, UserData, UserDataMethods, Value};

use super::digest::DigestAlg;

const BLOCK: usize = 16;

/// An AES key schedule of one of the three sizes.
enum AesKey {
    A128(aes::Aes128),
    A192(aes::Aes192),
    A256(aes::Aes256),
}

impl AesKey {
    fn new(key: &[u8]) -> Option<AesKey> {
        Some(match key.len() {
            16 => AesKey::A128(aes::Aes128::new_from_slice(key).ok()?),
            24 => AesKey::A192(aes::Aes192::new_from_slice(key).ok()?),
            32 => AesKey::A256(aes::Aes256::new_from_slice(key).ok()?),
            _ => return None,
        })
    }

    fn encrypt_block(&self, block: &mut [u8]) {
        let b = GenericArray::from_mut_slice(block);
        match self {
            AesKey::A128(k) => k.encrypt_block(b),
            AesKey::A192(k) => k.encrypt_block(b),
            AesKey::A256(k) => k.encrypt_block(b),
        }
    }

    fn decrypt_block(&self, block: &mut [u8]) {
        let b = GenericArray::from_mut_slice(block);
        match self {
            AesKey::A128(k) => k.decrypt_block(b),
            AesKey::A192(k) => k.decrypt_block(b),
            AesKey::A256(k) => k.decrypt_block(b),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Cbc,
    Ecb,
}

/// One `resty.aes` instance. Like the original's contexts, every `encrypt`/`decrypt` starts
/// from the IV given at `new`: calls do not chain into each other.
pub struct AesCipher {
    key: AesKey,
    iv: [u8; BLOCK],
    mode: Mode,
    padding: bool,
}

impl AesCipher {
    /// AES in CBC mode with `key` (16, 24 or 32 bytes) and `iv`, PKCS#7-padded: what APISIX's
    /// `data_encryption` keyring uses (each entry is both key and IV).
    pub fn cbc(key: &[u8], iv: &[u8]) -> Option<AesCipher> {
        Some(AesCipher {
            key: AesKey::new(key)?,
            iv: iv.try_into().ok()?,
            mode: Mode::Cbc,
            padding: true,
        })
    }

    pub fn encrypt(&self, plain: &[u8], padding: bool) -> Option<Vec<u8>> {
        let mut buf = plain.to_vec();
        if padding {
            let pad = BLOCK - buf.len() % BLOCK;
            buf.extend(std::iter::repeat_n(pad as u8, pad));
        } else if !buf.len().is_multiple_of(BLOCK) {
            // OpenSSL: "data not multiple of block length".
            return None;
        }
        let mut prev = self.iv;
        for chunk in buf.chunks_mut(BLOCK) {
            if self.mode == Mode::Cbc {
                chunk.iter_mut().zip(prev.iter()).for_each(|(c, p)| *c ^= p);
            }
            self.key.encrypt_block(chunk);
            prev.copy_from_slice(chunk);
        }
        Some(buf)
    }

    pub fn decrypt(&self, cipher: &[u8], padding: bool) -> Option<Vec<u8>> {
        if !cipher.len().is_multiple_of(BLOCK) || (padding && cipher.is_empty()) {
            return None;
        }
        let mut buf = cipher.to_vec();
        let mut prev = self.iv;
        for chunk in buf.chunks_mut(BLOCK) {
            let mut this = [0u8; BLOCK];
            this.copy_from_slice(chunk);
            self.key.decrypt_block(chunk);
            if self.mode == Mode::Cbc {
                chunk.iter_mut().zip(prev.iter()).for_each(|(c, p)| *c ^= p);
            }
            prev = this;
        }
        if padding {
            let pad = *buf.last()? as usize;
            if pad == 0 || pad > BLOCK || buf[buf.len() - pad..].iter().any(|&b| b as usize != pad)
            {
                return None;
            }
            buf.truncate(buf.len() - pad);
        }
        Some(buf)
    }
}

/// OpenSSL's `EVP_BytesToKey`: D_1 = H^rounds(pass ‖ salt), D_i = H^rounds(D_{i-1} ‖ pass ‖
/// salt), concatenated until key and IV are filled.
fn bytes_to_key(
    alg: DigestAlg,
    pass: &[u8],
    salt: Option<&[u8]>,
    rounds: u32,
    key_len: usize,
    iv_len: usize,
) -> (Vec<u8>, Vec<u8>) {
    let mut out = Vec::with_capacity(key_len + iv_len);
    let mut prev: Vec<u8> = Vec::new();
    while out.len() < key_len + iv_len {
        let mut d = alg.hash(&[&prev, pass, salt.unwrap_or(&[])]);
        for _ in 1..rounds.max(1) {
            d = alg.hash(&[&d]);
        }
        out.extend_from_slice(&d);
        prev = d;
    }
    let iv = out[key_len..key_len + iv_len].to_vec();
    out.truncate(key_len);
    (out, iv)
}

impl UserData for AesCipher {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method(
            "encrypt",
            |lua, c, (s, no_padding): (mlua::LuaString, Option<bool>)| match c
                .encrypt(&s.as_bytes(), c.padding && no_padding != Some(true))
            {
                Some(out) => Ok((Value::String(lua.create_string(out)?), Value::Nil)),
                None => Ok((
                    Value::Nil,
                    Value::String(lua.create_string("EVP_EncryptFinal_ex failed")?),
                )),
            },
        );
        m.add_method(
            "decrypt",
            |lua, c, (s, no_padding): (mlua::LuaString, Option<bool>)| match c
                .decrypt(&s.as_bytes(), c.padding && no_padding != Some(true))
            {
                Some(out) => Ok((Value::String(lua.create_string(out)?), Value::Nil)),
                None => Ok((
                    Value::Nil,
                    Value::String(lua.create_string("EVP_DecryptFinal_ex failed")?),
                )),
            },
        );
    }
}

fn nil_err(lua: &Lua, msg: &str) -> mlua::Result<(Value, Value)> {
    Ok((Value::Nil, Value::String(lua.create_string(msg)?)))
}

/// `aes:new`'s arguments: the module itself, key, salt, cipher, hash, hash_rounds, iv_len and
/// enable_padding.
type NewArgs = (
    Value,
    mlua::LuaString,
    Option<mlua::LuaString>,
    Option<Table>,
    Value,
    Option<u32>,
    Option<usize>,
    Option<bool>,
);

/// `aes:new(key, salt, cipher, hash, hash_rounds, iv_len, enable_padding)`.
fn new_cipher(
    lua: &Lua,
    (_module, key, salt, cipher, hash, rounds, iv_len, enable_padding): NewArgs,
) -> mlua::Result<(Value, Value)> {
    let (size, mode_name): (usize, String) = match &cipher {
        Some(t) => (t.get("size")?, t.get("cipher")?),
        None => (128, "cbc".to_string()),
    };
    let mode = match mode_name.as_str() {
        "cbc" => Mode::Cbc,
        "ecb" => Mode::Ecb,
        other => {
            return Err(mlua::Error::runtime(format!(
                "resty.aes: cipher mode \"{other}\" is not supported by moongate (cbc and ecb are)"
            )));
        }
    };
    let key_len = size / 8;
    // `iv_len` only matters to AEAD modes in the original; CBC always takes one block.
    let _ = iv_len;
    let iv_len = if mode == Mode::Ecb { 0 } else { BLOCK };
    let key = key.as_bytes();
    let salt = salt.map(|s| s.as_bytes().to_vec());
    if salt.as_ref().is_some_and(|s| s.len() != 8) {
        return nil_err(lua, "salt must be 8 characters or nil");
    }
    let (key_bytes, iv_bytes) = match hash {
        // An explicit key and IV: `{iv = "...", method = f}` (method derives the key).
        Value::Table(t) => {
            let iv: Option<mlua::LuaString> = t.get("iv")?;
            let Some(iv) = iv.map(|s| s.as_bytes().to_vec()) else {
                return nil_err(lua, "iv is needed");
            };
            // As lua-resty-string: an IV up to the key's length is accepted and the cipher
            // reads its first block (APISIX passes the 32-byte key itself as the IV).
            if iv.len() > key_len {
                return nil_err(lua, "bad iv length");
            }
            let derived = match t.get::<Option<mlua::Function>>("method")? {
                Some(f) => f
                    .call::<mlua::LuaString>(lua.create_string(&*key)?)?
                    .as_bytes()
                    .to_vec(),
                None => key.to_vec(),
            };
            if derived.len() != key_len {
                return nil_err(lua, "bad key length");
            }
            (derived, iv)
        }
        Value::Nil => bytes_to_key(
            DigestAlg::Md5,
            &key,
            salt.as_deref(),
            rounds.unwrap_or(1),
            key_len,
            iv_len,
        ),
        Value::String(name) => {
            let name = name.to_str()?.to_string();
            let Some(alg) = DigestAlg::from_name(&name) else {
                return Err(mlua::Error::runtime(format!(
                    "resty.aes: unknown hash {name:?}; use one of aes.hash"
                )));
            };
            bytes_to_key(
                alg,
                &key,
                salt.as_deref(),
                rounds.unwrap_or(1),
                key_len,
                iv_len,
            )
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "resty.aes: bad hash argument (a {}); use aes.hash.X or {{iv = ...}}",
                other.type_name()
            )));
        }
    };
    let Some(aes_key) = AesKey::new(&key_bytes) else {
        return nil_err(lua, "bad key length");
    };
    let mut iv = [0u8; BLOCK];
    let n = iv_bytes.len().min(BLOCK);
    iv[..n].copy_from_slice(&iv_bytes[..n]);
    let c = AesCipher {
        key: aes_key,
        iv,
        mode,
        padding: enable_padding.unwrap_or(true),
    };
    Ok((Value::UserData(lua.create_userdata(c)?), Value::Nil))
}

/// `require("resty.aes")`.
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set("_VERSION", "0.16")?;
    let hash = lua.create_table()?;
    for alg in [
        DigestAlg::Md5,
        DigestAlg::Sha1,
        DigestAlg::Sha224,
        DigestAlg::Sha256,
        DigestAlg::Sha384,
        DigestAlg::Sha512,
    ] {
        hash.set(alg.name(), alg.name())?;
    }
    m.set("hash", hash)?;
    m.set(
        "cipher",
        lua.create_function(|lua, (size, mode): (Option<usize>, Option<String>)| {
            let size = size.unwrap_or(128);
            let mode = mode.unwrap_or_else(|| "cbc".to_string());
            // The modes OpenSSL has for AES; an unknown one gives nil, as the original does.
            let known = ["cbc", "ecb", "cfb1", "cfb8", "cfb128", "ofb", "ctr", "gcm"];
            if ![128, 192, 256].contains(&size) || !known.contains(&mode.as_str()) {
                return Ok(Value::Nil);
            }
            let t = lua.create_table()?;
            t.set("size", size)?;
            t.set("cipher", mode.as_str())?;
            t.set("method", format!("aes-{size}-{mode}"))?;
            Ok(Value::Table(t))
        })?,
    )?;
    m.set("new", lua.create_function(new_cipher)?)?;
    Ok(m)
}
