//! ECDSA over the NIST curves JWT names (P-256 for ES256, P-384 for ES384, P-521 for ES512):
//! loading keys from PKCS#8, SEC1, SPKI and JWK, signing and verifying a prehashed message, and
//! the raw `r ‖ s` signature form (`ecdsa_use_raw`) JWS uses instead of DER.

use ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
use p256::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, LineEnding,
};

/// A key pair on one curve; the signing half is absent for a public key.
pub struct Pair<S, V> {
    pub signing: Option<S>,
    pub verifying: V,
}

/// An EC key on one of the supported curves.
pub enum EcKey {
    P256(Pair<p256::ecdsa::SigningKey, p256::ecdsa::VerifyingKey>),
    P384(Pair<p384::ecdsa::SigningKey, p384::ecdsa::VerifyingKey>),
    P521(Pair<p521::ecdsa::SigningKey, p521::ecdsa::VerifyingKey>),
}

/// Runs `$body` with `$pair` bound to the curve's key pair and `$c` naming the curve's crate,
/// so one expression serves all three curves.
macro_rules! each_curve {
    ($key:expr, $pair:ident, $c:ident => $body:expr) => {
        match $key {
            EcKey::P256($pair) => {
                #[allow(unused_imports)]
                use p256 as $c;
                $body
            }
            EcKey::P384($pair) => {
                #[allow(unused_imports)]
                use p384 as $c;
                $body
            }
            EcKey::P521($pair) => {
                #[allow(unused_imports)]
                use p521 as $c;
                $body
            }
        }
    };
}

impl EcKey {
    /// A private key in PKCS#8 DER, on whichever supported curve its parameters name.
    pub fn from_pkcs8_der(der: &[u8]) -> Option<EcKey> {
        if let Ok(k) = p256::SecretKey::from_pkcs8_der(der) {
            return Some(EcKey::from_p256_secret(&k));
        }
        if let Ok(k) = p384::SecretKey::from_pkcs8_der(der) {
            return Some(EcKey::from_p384_secret(&k));
        }
        p521::SecretKey::from_pkcs8_der(der)
            .ok()
            .and_then(|k| EcKey::from_p521_secret(&k))
    }

    /// A private key in SEC1 DER (`EC PRIVATE KEY`).
    pub fn from_sec1_der(der: &[u8]) -> Option<EcKey> {
        if let Ok(k) = p256::SecretKey::from_sec1_der(der) {
            return Some(EcKey::from_p256_secret(&k));
        }
        if let Ok(k) = p384::SecretKey::from_sec1_der(der) {
            return Some(EcKey::from_p384_secret(&k));
        }
        p521::SecretKey::from_sec1_der(der)
            .ok()
            .and_then(|k| EcKey::from_p521_secret(&k))
    }

    /// A public key in SubjectPublicKeyInfo DER (`PUBLIC KEY`).
    pub fn from_public_key_der(der: &[u8]) -> Option<EcKey> {
        if let Ok(k) = p256::PublicKey::from_public_key_der(der) {
            return Some(EcKey::P256(Pair {
                signing: None,
                verifying: k.into(),
            }));
        }
        if let Ok(k) = p384::PublicKey::from_public_key_der(der) {
            return Some(EcKey::P384(Pair {
                signing: None,
                verifying: k.into(),
            }));
        }
        let k = p521::PublicKey::from_public_key_der(der).ok()?;
        let verifying = p521::ecdsa::VerifyingKey::from_affine(*k.as_affine()).ok()?;
        Some(EcKey::P521(Pair {
            signing: None,
            verifying,
        }))
    }

    /// A JWK of `kty: EC`; private when it carries `d`.
    pub fn from_jwk(crv: &str, jwk: &str, private: bool) -> Result<EcKey, String> {
        let bad = |e: p256::elliptic_curve::Error| format!("invalid EC JWK: {e}");
        Ok(match (crv, private) {
            ("P-256", true) => {
                EcKey::from_p256_secret(&p256::SecretKey::from_jwk_str(jwk).map_err(bad)?)
            }
            ("P-256", false) => EcKey::P256(Pair {
                signing: None,
                verifying: p256::PublicKey::from_jwk_str(jwk).map_err(bad)?.into(),
            }),
            ("P-384", true) => {
                EcKey::from_p384_secret(&p384::SecretKey::from_jwk_str(jwk).map_err(bad)?)
            }
            ("P-384", false) => EcKey::P384(Pair {
                signing: None,
                verifying: p384::PublicKey::from_jwk_str(jwk).map_err(bad)?.into(),
            }),
            ("P-521", true) => {
                EcKey::from_p521_secret(&p521::SecretKey::from_jwk_str(jwk).map_err(bad)?)
                    .ok_or_else(|| "invalid EC JWK".to_string())?
            }
            ("P-521", false) => {
                let k = p521::PublicKey::from_jwk_str(jwk).map_err(bad)?;
                EcKey::P521(Pair {
                    signing: None,
                    verifying: p521::ecdsa::VerifyingKey::from_affine(*k.as_affine())
                        .map_err(|e| format!("invalid EC JWK: {e}"))?,
                })
            }
            (other, _) => return Err(format!("unsupported curve \"{other}\"")),
        })
    }

    /// A fresh key on the curve OpenSSL names `curve` (`prime256v1`, `secp384r1`, `P-521` …).
    pub fn generate(curve: &str) -> Option<EcKey> {
        let mut rng = rand_core::OsRng;
        Some(match curve {
            "prime256v1" | "P-256" | "secp256r1" => {
                EcKey::from_p256_secret(&p256::SecretKey::random(&mut rng))
            }
            "secp384r1" | "P-384" => EcKey::from_p384_secret(&p384::SecretKey::random(&mut rng)),
            "secp521r1" | "P-521" => EcKey::from_p521_secret(&p521::SecretKey::random(&mut rng))?,
            _ => return None,
        })
    }

    fn from_p256_secret(k: &p256::SecretKey) -> EcKey {
        let signing = p256::ecdsa::SigningKey::from(k);
        EcKey::P256(Pair {
            verifying: *signing.verifying_key(),
            signing: Some(signing),
        })
    }

    fn from_p384_secret(k: &p384::SecretKey) -> EcKey {
        let signing = p384::ecdsa::SigningKey::from(k);
        EcKey::P384(Pair {
            verifying: *signing.verifying_key(),
            signing: Some(signing),
        })
    }

    fn from_p521_secret(k: &p521::SecretKey) -> Option<EcKey> {
        let signing = p521::ecdsa::SigningKey::from_bytes(&k.to_bytes()).ok()?;
        Some(EcKey::P521(Pair {
            // p521 0.13 gates `verifying_key()` behind a feature it never declares.
            verifying: p521::ecdsa::VerifyingKey::from(&signing),
            signing: Some(signing),
        }))
    }

    /// Bytes of one coordinate (and of `r` and `s` in a raw signature).
    pub fn field_len(&self) -> usize {
        match self {
            EcKey::P256(_) => 32,
            EcKey::P384(_) => 48,
            EcKey::P521(_) => 66,
        }
    }

    /// The JWK curve name.
    pub fn curve_name(&self) -> &'static str {
        match self {
            EcKey::P256(_) => "P-256",
            EcKey::P384(_) => "P-384",
            EcKey::P521(_) => "P-521",
        }
    }

    pub fn is_private(&self) -> bool {
        each_curve!(self, pair, _c => pair.signing.is_some())
    }

    /// A digest shorter than the field, left-padded with zeros: the same integer, which is how
    /// OpenSSL reads it (sha256 on P-521, say); the ecdsa crate refuses digests under half the
    /// field length.
    fn widen(&self, hash: &[u8]) -> Vec<u8> {
        let n = self.field_len();
        if hash.len() >= n {
            return hash.to_vec();
        }
        let mut out = vec![0u8; n - hash.len()];
        out.extend_from_slice(hash);
        out
    }

    /// Signs a message digest; the signature is raw `r ‖ s` when `raw`, DER otherwise.
    pub fn sign_prehash(&self, hash: &[u8], raw: bool) -> Result<Vec<u8>, String> {
        let hash = &self.widen(hash);
        each_curve!(self, pair, c => {
            let Some(sk) = &pair.signing else {
                return Err("missing private key".to_string());
            };
            let sig: c::ecdsa::Signature = sk.sign_prehash(hash).map_err(|e| e.to_string())?;
            Ok(if raw { sig.to_bytes().to_vec() } else { sig.to_der().as_bytes().to_vec() })
        })
    }

    /// Checks a raw (`r ‖ s`) or DER signature over a message digest.
    pub fn verify_prehash(&self, hash: &[u8], signature: &[u8], raw: bool) -> bool {
        let hash = &self.widen(hash);
        each_curve!(self, pair, c => {
            let sig = if raw {
                c::ecdsa::Signature::from_slice(signature)
            } else {
                c::ecdsa::Signature::from_der(signature)
            };
            sig.is_ok_and(|sig| pair.verifying.verify_prehash(hash, &sig).is_ok())
        })
    }

    /// The public key as SPKI PEM.
    pub fn public_pem(&self) -> Result<String, String> {
        each_curve!(self, pair, c => {
            let point = pair.verifying.to_encoded_point(false);
            let pk = c::PublicKey::from_sec1_bytes(point.as_bytes()).map_err(|e| e.to_string())?;
            pk.to_public_key_pem(LineEnding::LF).map_err(|e| e.to_string())
        })
    }

    /// The private key as PKCS#8 PEM.
    pub fn private_pem(&self) -> Result<String, String> {
        each_curve!(self, pair, c => {
            let Some(sk) = &pair.signing else {
                return Err("missing private key".to_string());
            };
            let secret = c::SecretKey::from_bytes(&sk.to_bytes()).map_err(|e| e.to_string())?;
            secret
                .to_pkcs8_pem(LineEnding::LF)
                .map(|s| s.to_string())
                .map_err(|e| e.to_string())
        })
    }

    /// The public point's affine coordinates and, for a private key, the scalar.
    pub fn jwk_parts(&self) -> (Vec<u8>, Vec<u8>, Option<Vec<u8>>) {
        each_curve!(self, pair, _c => {
            let point = pair.verifying.to_encoded_point(false);
            let x = point.x().map(|b| b.to_vec()).unwrap_or_default();
            let y = point.y().map(|b| b.to_vec()).unwrap_or_default();
            (x, y, pair.signing.as_ref().map(|s| s.to_bytes().to_vec()))
        })
    }
}
