//! `resty.openssl.pkey`: `new` (PEM/DER/JWK, or a generated key), `sign`, `verify`,
//! `is_private`, `get_key_type`, `tostring`/`to_PEM`, `PADDINGS`, with lua-resty-openssl's
//! argument conventions and `(nil, err)` returns. What jwt-auth calls:
//! `pkey.new(pem):sign(digest_obj)` (RS*), `:sign(data, "sha256", PSS_PADDING)` (PS*),
//! `:sign(data, "sha256", nil, {ecdsa_use_raw = true})` (ES*), `:sign(data)` (EdDSA), and the
//! matching `:verify(sig, data, md, padding, opts)`. Operations lua-resty-openssl has but
//! moongate does not (encrypt, derive, sign_raw …) raise an error naming them.

use mlua::{Lua, Table, UserData, UserDataMethods, Value};

use super::digest::{DigestAlg, DigestObject};
use super::key::{Format, Half, Key};
use super::rsa_sig::{self, SaltLen};

/// `pkey.PADDINGS`, OpenSSL's numbers.
const RSA_PKCS1_PADDING: i64 = 1;
const RSA_PKCS1_PSS_PADDING: i64 = 6;
const PADDINGS: [(&str, i64); 6] = [
    ("RSA_PKCS1_PADDING", RSA_PKCS1_PADDING),
    ("RSA_SSLV23_PADDING", 2),
    ("RSA_NO_PADDING", 3),
    ("RSA_PKCS1_OAEP_PADDING", 4),
    ("RSA_X931_PADDING", 5),
    ("RSA_PKCS1_PSS_PADDING", RSA_PKCS1_PSS_PADDING),
];

/// A `pkey` instance.
pub struct PKey {
    pub key: Key,
}

/// What to sign or verify: a message (hashed here with the named digest, or signed whole for
/// Ed25519) or a digest object's current state.
enum Input {
    Message(Vec<u8>),
    Digest(DigestAlg, Vec<u8>),
}

fn input_arg(v: &Value, method: &str, pos: u8) -> Result<Input, String> {
    match v {
        Value::String(s) => Ok(Input::Message(s.as_bytes().to_vec())),
        Value::UserData(ud) => {
            let d = ud.borrow::<DigestObject>().map_err(|_| {
                format!("pkey:{method}: expect a digest instance or a string at #{pos}")
            })?;
            // EVP_SignFinal works on a copy: the digest object stays usable.
            let mut h = d.hasher.borrow().clone();
            Ok(Input::Digest(h.alg(), h.finish()))
        }
        _ => Err(format!(
            "pkey:{method}: expect a digest instance or a string at #{pos}"
        )),
    }
}

/// The sign/verify options jwt-auth and friends pass: RSA padding, PSS salt length and
/// `ecdsa_use_raw`.
struct SigOpts {
    pss: bool,
    salt: SaltLen,
    ecdsa_raw: bool,
}

fn sig_opts(padding: &Value, opts: &Option<Table>, verifying: bool) -> Result<SigOpts, String> {
    let pad = match padding {
        Value::Nil => RSA_PKCS1_PADDING,
        Value::Integer(i) => *i,
        Value::Number(n) => *n as i64,
        Value::String(s) => s
            .to_str()
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| format!("invalid padding: {}", s.display()))?,
        other => return Err(format!("invalid padding: {}", other.type_name())),
    };
    let pss = match pad {
        RSA_PKCS1_PADDING => false,
        RSA_PKCS1_PSS_PADDING => true,
        other => {
            return Err(format!(
                "RSA padding {other} is not supported for sign/verify by moongate (1 = PKCS#1 v1.5 and 6 = PSS are)"
            ));
        }
    };
    let mut salt = if verifying {
        SaltLen::Max
    } else {
        SaltLen::Digest
    };
    let mut ecdsa_raw = false;
    if let Some(t) = opts {
        ecdsa_raw = t.get::<Option<bool>>("ecdsa_use_raw").ok().flatten() == Some(true);
        match t.get::<Value>("pss_saltlen").unwrap_or(Value::Nil) {
            Value::Nil => {}
            Value::Integer(-1) => salt = SaltLen::Digest,
            Value::Integer(-2) | Value::Integer(-3) => salt = SaltLen::Max,
            Value::Integer(n) if n >= 0 => salt = SaltLen::Exact(n as usize),
            Value::Number(n) if n >= 0.0 => salt = SaltLen::Exact(n as usize),
            other => return Err(format!("invalid pss_saltlen: {other:?}")),
        }
    }
    Ok(SigOpts {
        pss,
        salt,
        ecdsa_raw,
    })
}

/// The digest of `input`, with the digest named by `md_alg` (or the key's default, sha256).
fn prehash(input: Input, md_alg: &Option<String>) -> Result<(DigestAlg, Vec<u8>), String> {
    match input {
        Input::Digest(alg, h) => Ok((alg, h)),
        Input::Message(m) => {
            let alg = match md_alg {
                None => DigestAlg::Sha256,
                Some(name) => DigestAlg::from_name(name).ok_or_else(|| {
                    format!("pkey:sign_verify_prepare: invalid digest type \"{name}\"")
                })?,
            };
            Ok((alg, alg.hash(&[&m])))
        }
    }
}

impl PKey {
    fn sign(
        &self,
        input: Input,
        md_alg: &Option<String>,
        opts: &SigOpts,
    ) -> Result<Vec<u8>, String> {
        match &self.key {
            Key::Rsa { private, .. } => {
                let k = private.as_ref().ok_or("pkey:sign: missing private key")?;
                let (alg, hash) = prehash(input, md_alg)?;
                let r = if opts.pss {
                    rsa_sig::sign_pss(k, alg, &hash, opts.salt)
                } else {
                    rsa_sig::sign_pkcs1(k, alg, &hash)
                };
                r.map_err(|e| format!("pkey:sign: {e}"))
            }
            Key::Ec(k) => {
                let (_, hash) = prehash(input, md_alg)?;
                k.sign_prehash(&hash, opts.ecdsa_raw)
                    .map_err(|e| format!("pkey:sign: {e}"))
            }
            Key::Ed25519 { signing, .. } => {
                let sk = signing.as_ref().ok_or("pkey:sign: missing private key")?;
                match input {
                    // Ed25519 signs the message itself and takes no digest (as in OpenSSL).
                    Input::Message(m) if md_alg.is_none() => {
                        use ed25519_dalek::Signer;
                        Ok(sk.sign(&m).to_bytes().to_vec())
                    }
                    Input::Message(_) => Err(
                        "pkey:sign_verify_prepare: Init failed: Ed25519 takes no digest"
                            .to_string(),
                    ),
                    Input::Digest(..) => Err(
                        "pkey:sign: EVP_SignFinal: Ed25519 cannot sign a digest instance"
                            .to_string(),
                    ),
                }
            }
        }
    }

    fn verify(
        &self,
        sig: &[u8],
        input: Input,
        md_alg: &Option<String>,
        opts: &SigOpts,
    ) -> Result<bool, String> {
        match &self.key {
            Key::Rsa { public, .. } => {
                let (alg, hash) = prehash(input, md_alg)?;
                Ok(if opts.pss {
                    rsa_sig::verify_pss(public, alg, &hash, sig, opts.salt)
                } else {
                    rsa_sig::verify_pkcs1(public, alg, &hash, sig)
                })
            }
            Key::Ec(k) => {
                if opts.ecdsa_raw && sig.len() != 2 * k.field_len() {
                    // lua-resty-openssl's wording, "pkey:sign" prefix included.
                    return Err(format!(
                        "pkey:sign: ecdsa.sig_raw2der: invalid signature length, expect {} but got {}",
                        2 * k.field_len(),
                        sig.len()
                    ));
                }
                let (_, hash) = prehash(input, md_alg)?;
                Ok(k.verify_prehash(&hash, sig, opts.ecdsa_raw))
            }
            Key::Ed25519 { verifying, .. } => match input {
                Input::Message(m) if md_alg.is_none() => {
                    let Ok(sig) = ed25519_dalek::Signature::from_slice(sig) else {
                        return Ok(false);
                    };
                    Ok(verifying.verify_strict(&m, &sig).is_ok())
                }
                _ => Err(
                    "pkey:sign_verify_prepare: Init failed: Ed25519 takes no digest".to_string(),
                ),
            },
        }
    }
}

fn nil_err(lua: &Lua, msg: &str) -> mlua::Result<(Value, Value)> {
    Ok((Value::Nil, Value::String(lua.create_string(msg)?)))
}

/// Methods lua-resty-openssl's pkey has that moongate does not implement.
const REFUSED: [&str; 10] = [
    "encrypt",
    "decrypt",
    "sign_raw",
    "verify_raw",
    "verify_recover",
    "derive",
    "get_parameters",
    "set_parameters",
    "get_default_digest_type",
    "get_provider_name",
];

impl UserData for PKey {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method(
            "sign",
            |lua, k, (input, md_alg, padding, opts): (Value, Option<String>, Value, Option<Table>)| {
                let result = input_arg(&input, "sign", 1).and_then(|input| {
                    let o = sig_opts(&padding, &opts, false)?;
                    k.sign(input, &md_alg, &o)
                });
                match result {
                    Ok(sig) => Ok((Value::String(lua.create_string(sig)?), Value::Nil)),
                    Err(e) => nil_err(lua, &e),
                }
            },
        );
        m.add_method(
            "verify",
            |lua,
             k,
             (sig, input, md_alg, padding, opts): (
                Value,
                Value,
                Option<String>,
                Value,
                Option<Table>,
            )| {
                let Value::String(sig) = sig else {
                    return nil_err(lua, "pkey:verify: expect a string at #1");
                };
                let result = input_arg(&input, "verify", 2).and_then(|input| {
                    let o = sig_opts(&padding, &opts, true)?;
                    k.verify(&sig.as_bytes(), input, &md_alg, &o)
                });
                match result {
                    Ok(true) => Ok((Value::Boolean(true), Value::Nil)),
                    Ok(false) => Ok((
                        Value::Boolean(false),
                        Value::String(lua.create_string("pkey:verify: bad signature")?),
                    )),
                    Err(e) => nil_err(lua, &e),
                }
            },
        );
        m.add_method("is_private", |_, k, ()| Ok(k.key.is_private()));
        m.add_method("get_key_type", |lua, k, ()| {
            let (nid, name, oid) = k.key.key_type();
            let t = lua.create_table()?;
            t.set("nid", nid)?;
            t.set("sn", name)?;
            t.set("ln", name)?;
            t.set("id", oid)?;
            Ok(t)
        });
        m.add_method(
            "tostring",
            |lua, k, (which, fmt): (Option<String>, Option<String>)| tostring(lua, k, which, fmt),
        );
        m.add_method("to_PEM", |lua, k, which: Option<String>| {
            tostring(lua, k, which, Some("PEM".to_string()))
        });
        for name in REFUSED {
            m.add_method(name, move |_, _, _: mlua::MultiValue| -> mlua::Result<()> {
                Err(mlua::Error::runtime(format!(
                    "resty.openssl.pkey: pkey:{name}() is not supported by moongate"
                )))
            });
        }
    }
}

/// `pkey:tostring(pub_or_priv, fmt)`: PEM (SPKI / PKCS#8) or JWK.
fn tostring(
    lua: &Lua,
    k: &PKey,
    which: Option<String>,
    fmt: Option<String>,
) -> mlua::Result<(Value, Value)> {
    let private = match which.as_deref() {
        None | Some("public") | Some("PublicKey") => false,
        Some("private") | Some("PrivateKey") => true,
        Some(other) => {
            return nil_err(
                lua,
                &format!("pkey:tostring: can only export private or public key, not {other}"),
            );
        }
    };
    let out = match fmt.as_deref().unwrap_or("PEM") {
        "PEM" if private => k.key.private_pem(),
        "PEM" => k.key.public_pem(),
        "JWK" => k.key.to_jwk(private),
        other => Err(format!(
            "format \"{other}\" is not supported by moongate (PEM and JWK are)"
        )),
    };
    match out {
        Ok(s) => Ok((Value::String(lua.create_string(s)?), Value::Nil)),
        Err(e) => nil_err(lua, &format!("pkey:tostring: {e}")),
    }
}

/// `pkey.new(key_or_config, opts)`.
fn new_pkey(lua: &Lua, (arg, opts): (Value, Option<Table>)) -> mlua::Result<(Value, Value)> {
    let loaded = match arg {
        Value::String(s) => {
            let (format, half) = match &opts {
                Some(t) => {
                    let format = match t.get::<Option<String>>("format")?.as_deref() {
                        None | Some("*") => Format::Any,
                        Some("PEM") => Format::Pem,
                        Some("DER") => Format::Der,
                        Some("JWK") => Format::Jwk,
                        Some(_) => {
                            return nil_err(
                                lua,
                                "pkey.new:load_key: expecting 'DER', 'PEM', 'JWK' or '*' as \"format\"",
                            );
                        }
                    };
                    let half = match t.get::<Option<String>>("type")?.as_deref() {
                        None | Some("*") => Half::Any,
                        Some("pr") => Half::Private,
                        Some("pu") => Half::Public,
                        Some(_) => {
                            return nil_err(
                                lua,
                                "pkey.new:load_key: expecting 'pr', 'pu' or '*' as \"type\"",
                            );
                        }
                    };
                    if t.contains_key("passphrase")? || t.contains_key("passphrase_cb")? {
                        return Err(mlua::Error::runtime(
                            "resty.openssl.pkey: passphrase-protected keys are not supported by moongate",
                        ));
                    }
                    (format, half)
                }
                None => (Format::Any, Half::Any),
            };
            Key::load(&s.as_bytes(), format, half).map_err(|e| format!("pkey.new:load_key: {e}"))
        }
        Value::Nil | Value::Table(_) => {
            let config = match &arg {
                Value::Table(t) => Some(t.clone()),
                _ => None,
            };
            let get = |k: &str| -> mlua::Result<Option<Value>> {
                match &config {
                    Some(t) => t.get::<Option<Value>>(k),
                    None => Ok(None),
                }
            };
            let kind = match get("type")? {
                Some(Value::String(s)) => s.to_str()?.to_string(),
                _ => "RSA".to_string(),
            };
            let bits = match get("bits")? {
                Some(Value::Integer(i)) if i > 0 => i as usize,
                Some(Value::Number(n)) if n > 0.0 => n as usize,
                _ => 2048,
            };
            let curve = match get("curve")? {
                Some(Value::String(s)) => s.to_str()?.to_string(),
                _ => "prime192v1".to_string(),
            };
            Key::generate(&kind, bits, &curve).map_err(|e| format!("pkey.new:generate_key: {e}"))
        }
        Value::Integer(_) | Value::Number(_) => {
            Err("pkey.new: unexpected type number at #1".into())
        }
        other => Err(format!(
            "pkey.new: unexpected type {} at #1",
            other.type_name()
        )),
    };
    match loaded {
        Ok(key) => Ok((
            Value::UserData(lua.create_userdata(PKey { key })?),
            Value::Nil,
        )),
        Err(e) => nil_err(lua, &e),
    }
}

/// `require("resty.openssl.pkey")`.
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set("new", lua.create_function(new_pkey)?)?;
    let paddings = lua.create_table()?;
    for (name, n) in PADDINGS {
        paddings.set(name, n)?;
    }
    m.set("PADDINGS", paddings)?;
    m.set(
        "istype",
        lua.create_function(|_, v: Value| Ok(matches!(v, Value::UserData(ud) if ud.is::<PKey>())))?,
    )?;
    m.set(
        "paramgen",
        lua.create_function(|_, _: mlua::MultiValue| -> mlua::Result<()> {
            Err(mlua::Error::runtime(
                "resty.openssl.pkey: pkey.paramgen() is not supported by moongate",
            ))
        })?,
    )?;
    Ok(m)
}
