//! Asymmetric keys as `resty.openssl.pkey` loads them: PEM (`PRIVATE KEY`, `RSA PRIVATE KEY`,
//! `EC PRIVATE KEY`, `PUBLIC KEY`, `RSA PUBLIC KEY`), DER (PKCS#8, SPKI, PKCS#1, SEC1) and JWK
//! (RSA, EC, OKP/Ed25519), for RSA, ECDSA P-256/P-384/P-521 and Ed25519; and their PEM/JWK export.
//! Never touches Lua.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{BigUint, RsaPrivateKey, RsaPublicKey};

use super::ec::EcKey;

/// Which encodings `pkey.new` may try (its `opts.format`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Pem,
    Der,
    Jwk,
    Any,
}

/// Which halves `pkey.new` may load (its `opts.type`: `pr`, `pu`, `*`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Private,
    Public,
    Any,
}

impl Half {
    fn allows_private(self) -> bool {
        self != Half::Public
    }
    fn allows_public(self) -> bool {
        self != Half::Private
    }
}

/// A loaded key.
pub enum Key {
    Rsa {
        private: Option<Box<RsaPrivateKey>>,
        public: RsaPublicKey,
    },
    Ec(EcKey),
    Ed25519 {
        signing: Option<ed25519_dalek::SigningKey>,
        verifying: ed25519_dalek::VerifyingKey,
    },
}

/// Why a key did not load.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// What OpenSSL 3's decoders say when nothing they know matches the input; kept verbatim
    /// because it is the text users see from lua-resty-openssl.
    #[error("error:1E08010C:DECODER routines::unsupported")]
    Unsupported,
    #[error("encrypted private keys are not supported by moongate (decrypt the key first)")]
    Encrypted,
    #[error("{0}")]
    Jwk(String),
}

/// One PEM block: its label and the decoded body. Lenient as OpenSSL is: text around the block,
/// CRLF line ends and any line width are fine.
fn parse_pem(text: &str) -> Option<(String, Vec<u8>, bool)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + "-----BEGIN ".len()..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let body_start = label_end + 5;
    let end_marker = format!("-----END {label}-----");
    let body_end = rest.find(&end_marker)?;
    let body = rest.get(body_start..body_end)?;
    // Legacy encrypted PEM carries `Proc-Type: 4,ENCRYPTED` headers before the base64.
    let encrypted = body.contains("ENCRYPTED");
    let b64: String = body
        .lines()
        .filter(|l| !l.contains(':'))
        .flat_map(|l| l.chars())
        .filter(|c| !c.is_whitespace())
        .collect();
    let der = STANDARD.decode(b64).ok()?;
    Some((label, der, encrypted))
}

fn rsa_key(private: RsaPrivateKey) -> Key {
    Key::Rsa {
        public: private.to_public_key(),
        private: Some(Box::new(private)),
    }
}

fn ed25519_private(signing: ed25519_dalek::SigningKey) -> Key {
    Key::Ed25519 {
        verifying: signing.verifying_key(),
        signing: Some(signing),
    }
}

/// PKCS#8 private key DER, any algorithm.
fn from_pkcs8(der: &[u8]) -> Option<Key> {
    if let Ok(k) = RsaPrivateKey::from_pkcs8_der(der) {
        return Some(rsa_key(k));
    }
    if let Some(k) = EcKey::from_pkcs8_der(der) {
        return Some(Key::Ec(k));
    }
    ed25519_dalek::SigningKey::from_pkcs8_der(der)
        .ok()
        .map(ed25519_private)
}

/// SubjectPublicKeyInfo DER, any algorithm.
fn from_spki(der: &[u8]) -> Option<Key> {
    if let Ok(public) = RsaPublicKey::from_public_key_der(der) {
        return Some(Key::Rsa {
            private: None,
            public,
        });
    }
    if let Some(k) = EcKey::from_public_key_der(der) {
        return Some(Key::Ec(k));
    }
    ed25519_dalek::VerifyingKey::from_public_key_der(der)
        .ok()
        .map(|verifying| Key::Ed25519 {
            signing: None,
            verifying,
        })
}

fn from_pkcs1_public(der: &[u8]) -> Option<Key> {
    RsaPublicKey::from_pkcs1_der(der)
        .ok()
        .map(|public| Key::Rsa {
            private: None,
            public,
        })
}

/// DER of unknown kind: private encodings first, as OpenSSL's `d2i_PrivateKey` then
/// `d2i_PUBKEY` are tried.
fn from_der(der: &[u8], half: Half) -> Option<Key> {
    if half.allows_private() {
        if let Some(k) = from_pkcs8(der) {
            return Some(k);
        }
        if let Ok(k) = RsaPrivateKey::from_pkcs1_der(der) {
            return Some(rsa_key(k));
        }
        if let Some(k) = EcKey::from_sec1_der(der) {
            return Some(Key::Ec(k));
        }
    }
    if half.allows_public() {
        if let Some(k) = from_spki(der) {
            return Some(k);
        }
        return from_pkcs1_public(der);
    }
    None
}

fn from_pem_block(label: &str, der: &[u8], half: Half) -> Option<Key> {
    let private = half.allows_private();
    let public = half.allows_public();
    match label {
        "PRIVATE KEY" if private => from_pkcs8(der),
        "RSA PRIVATE KEY" if private => RsaPrivateKey::from_pkcs1_der(der).ok().map(rsa_key),
        "EC PRIVATE KEY" if private => EcKey::from_sec1_der(der).map(Key::Ec),
        "PUBLIC KEY" if public => from_spki(der),
        "RSA PUBLIC KEY" if public => from_pkcs1_public(der),
        _ => None,
    }
}

fn b64url_field(jwk: &serde_json::Value, name: &str) -> Result<Option<Vec<u8>>, KeyError> {
    match jwk.get(name) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .map(Some)
            .map_err(|_| KeyError::Jwk(format!("jwk: failed to decode \"{name}\""))),
        Some(_) => Err(KeyError::Jwk(format!("jwk: \"{name}\" must be a string"))),
    }
}

fn required(jwk: &serde_json::Value, name: &str) -> Result<Vec<u8>, KeyError> {
    b64url_field(jwk, name)?.ok_or_else(|| KeyError::Jwk(format!("jwk: missing \"{name}\"")))
}

/// A JWK (RFC 7517) of kty RSA, EC or OKP (Ed25519).
fn from_jwk(text: &str) -> Result<Key, KeyError> {
    let jwk: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| KeyError::Jwk(format!("jwk: failed to decode JSON: {e}")))?;
    let kty = jwk.get("kty").and_then(|v| v.as_str()).unwrap_or("");
    match kty {
        "RSA" => {
            let n = BigUint::from_bytes_be(&required(&jwk, "n")?);
            let e = BigUint::from_bytes_be(&required(&jwk, "e")?);
            match b64url_field(&jwk, "d")? {
                Some(d) => {
                    let d = BigUint::from_bytes_be(&d);
                    let primes = match (b64url_field(&jwk, "p")?, b64url_field(&jwk, "q")?) {
                        (Some(p), Some(q)) => {
                            vec![BigUint::from_bytes_be(&p), BigUint::from_bytes_be(&q)]
                        }
                        _ => Vec::new(),
                    };
                    let k = RsaPrivateKey::from_components(n, e, d, primes)
                        .map_err(|e| KeyError::Jwk(format!("jwk: invalid RSA key: {e}")))?;
                    Ok(rsa_key(k))
                }
                None => Ok(Key::Rsa {
                    private: None,
                    public: RsaPublicKey::new(n, e)
                        .map_err(|e| KeyError::Jwk(format!("jwk: invalid RSA key: {e}")))?,
                }),
            }
        }
        "EC" => {
            let crv = jwk.get("crv").and_then(|v| v.as_str()).unwrap_or("");
            EcKey::from_jwk(crv, text, jwk.get("d").is_some())
                .map(Key::Ec)
                .map_err(|e| KeyError::Jwk(format!("jwk: {e}")))
        }
        "OKP" => {
            let crv = jwk.get("crv").and_then(|v| v.as_str()).unwrap_or("");
            if crv != "Ed25519" {
                return Err(KeyError::Jwk(format!(
                    "jwk: OKP curve \"{crv}\" is not supported by moongate (Ed25519 is)"
                )));
            }
            if let Some(d) = b64url_field(&jwk, "d")? {
                let seed: [u8; 32] = d
                    .try_into()
                    .map_err(|_| KeyError::Jwk("jwk: Ed25519 \"d\" must be 32 bytes".into()))?;
                return Ok(ed25519_private(ed25519_dalek::SigningKey::from_bytes(
                    &seed,
                )));
            }
            let x: [u8; 32] = required(&jwk, "x")?
                .try_into()
                .map_err(|_| KeyError::Jwk("jwk: Ed25519 \"x\" must be 32 bytes".into()))?;
            let verifying = ed25519_dalek::VerifyingKey::from_bytes(&x)
                .map_err(|e| KeyError::Jwk(format!("jwk: invalid Ed25519 key: {e}")))?;
            Ok(Key::Ed25519 {
                signing: None,
                verifying,
            })
        }
        other => Err(KeyError::Jwk(format!(
            "jwk: not yet supported jwk type \"{other}\""
        ))),
    }
}

impl Key {
    /// Loads `input` the way `pkey.new(input, {format = …, type = …})` does.
    pub fn load(input: &[u8], format: Format, half: Half) -> Result<Key, KeyError> {
        let text = std::str::from_utf8(input).ok();
        if matches!(format, Format::Pem | Format::Any)
            && let Some((label, der, encrypted)) = text.and_then(parse_pem)
        {
            if label == "ENCRYPTED PRIVATE KEY" || encrypted {
                return Err(KeyError::Encrypted);
            }
            return from_pem_block(&label, &der, half).ok_or(KeyError::Unsupported);
        }
        if matches!(format, Format::Jwk | Format::Any) {
            if let Some(t) = text.filter(|t| t.trim_start().starts_with('{')) {
                match from_jwk(t) {
                    Ok(k) => return Ok(k),
                    Err(e) if format == Format::Jwk => return Err(e),
                    Err(_) => {}
                }
            } else if format == Format::Jwk {
                return Err(KeyError::Jwk("jwk: failed to decode JSON".into()));
            }
        }
        if matches!(format, Format::Der | Format::Any)
            && let Some(k) = from_der(input, half)
        {
            return Ok(k);
        }
        Err(KeyError::Unsupported)
    }

    /// A freshly generated key, as `pkey.new({type = …})` makes one.
    pub fn generate(kind: &str, bits: usize, curve: &str) -> Result<Key, String> {
        match kind {
            "RSA" => RsaPrivateKey::new(&mut rand_core::OsRng, bits)
                .map(rsa_key)
                .map_err(|e| e.to_string()),
            "EC" => EcKey::generate(curve)
                .map(Key::Ec)
                .ok_or_else(|| format!("unknown curve {curve}")),
            "Ed25519" => Ok(ed25519_private(ed25519_dalek::SigningKey::generate(
                &mut rand_core::OsRng,
            ))),
            other => Err(format!("unsupported type {other}")),
        }
    }

    pub fn is_private(&self) -> bool {
        match self {
            Key::Rsa { private, .. } => private.is_some(),
            Key::Ec(k) => k.is_private(),
            Key::Ed25519 { signing, .. } => signing.is_some(),
        }
    }

    /// The key's algorithm as OpenSSL's object table names it: (nid, short name, OID).
    pub fn key_type(&self) -> (i64, &'static str, &'static str) {
        match self {
            Key::Rsa { .. } => (6, "rsaEncryption", "1.2.840.113549.1.1.1"),
            Key::Ec(_) => (408, "id-ecPublicKey", "1.2.840.10045.2.1"),
            Key::Ed25519 { .. } => (1087, "ED25519", "1.3.101.112"),
        }
    }

    /// SPKI PEM of the public half.
    pub fn public_pem(&self) -> Result<String, String> {
        match self {
            Key::Rsa { public, .. } => public
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| e.to_string()),
            Key::Ec(k) => k.public_pem(),
            Key::Ed25519 { verifying, .. } => verifying
                .to_public_key_pem(LineEnding::LF)
                .map_err(|e| e.to_string()),
        }
    }

    /// PKCS#8 PEM of the private half.
    pub fn private_pem(&self) -> Result<String, String> {
        match self {
            Key::Rsa {
                private: Some(k), ..
            } => k
                .to_pkcs8_pem(LineEnding::LF)
                .map(|s| s.to_string())
                .map_err(|e| e.to_string()),
            Key::Ec(k) => k.private_pem(),
            Key::Ed25519 {
                signing: Some(k), ..
            } => k
                .to_pkcs8_pem(LineEnding::LF)
                .map(|s| s.to_string())
                .map_err(|e| e.to_string()),
            _ => Err("missing private key".to_string()),
        }
    }

    /// The key as a JWK JSON object (public members only unless `private`).
    pub fn to_jwk(&self, private: bool) -> Result<String, String> {
        let enc = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut obj = serde_json::Map::new();
        let mut put = |k: &str, v: String| {
            obj.insert(k.to_string(), serde_json::Value::String(v));
        };
        match self {
            Key::Rsa {
                private: priv_key,
                public,
            } => {
                put("kty", "RSA".into());
                put("n", enc(&public.n().to_bytes_be()));
                put("e", enc(&public.e().to_bytes_be()));
                if private {
                    let k = priv_key.as_ref().ok_or("missing private key")?;
                    put("d", enc(&k.d().to_bytes_be()));
                    if let [p, q] = k.primes() {
                        put("p", enc(&p.to_bytes_be()));
                        put("q", enc(&q.to_bytes_be()));
                        // RFC 7518 6.3.2: with p and q come the CRT values.
                        if let (Some(dp), Some(dq), Some(qi)) =
                            (k.dp(), k.dq(), k.crt_coefficient())
                        {
                            put("dp", enc(&dp.to_bytes_be()));
                            put("dq", enc(&dq.to_bytes_be()));
                            put("qi", enc(&qi.to_bytes_be()));
                        }
                    }
                }
            }
            Key::Ec(k) => {
                let (x, y, d) = k.jwk_parts();
                put("kty", "EC".into());
                put("crv", k.curve_name().into());
                put("x", enc(&x));
                put("y", enc(&y));
                if private {
                    put("d", enc(&d.ok_or("missing private key")?));
                }
            }
            Key::Ed25519 { signing, verifying } => {
                put("kty", "OKP".into());
                put("crv", "Ed25519".into());
                put("x", enc(verifying.as_bytes()));
                if private {
                    let s = signing.as_ref().ok_or("missing private key")?;
                    put("d", enc(&s.to_bytes()));
                }
            }
        }
        Ok(serde_json::Value::Object(obj).to_string())
    }
}
