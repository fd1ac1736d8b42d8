//! The node's `data_encryption` keyring, as the Rust side uses it: private keys of `ssls`
//! resources (and upstream `tls.client_key`) may be stored encrypted (APISIX encrypts them), and
//! decrypted here before rustls sees them.
//!
//! The format is APISIX's, shared with the Lua shim (`apisix.core.data_encryption`): AES-CBC with
//! PKCS#7 padding, each keyring entry serving as both key and IV (16 bytes: AES-128, 32 bytes:
//! AES-256), the ciphertext base64-encoded. Encryption uses the first entry; decryption tries
//! every entry in turn, so a keyring rotates by putting the new key first. Older APISIX versions
//! encrypted keys with `apisix.ssl.key_encrypt_salt` the same way; those salts are tried after
//! the keyring.
//!
//! The keyring is part of the node config, fixed for the life of the process: it is installed
//! once at start ([`install`]) and read wherever a stored key is decoded.

use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::lua::lib::crypto::aes::AesCipher;

/// APISIX's default `apisix.data_encryption.keyring`.
pub const DEFAULT_KEYRING: [&str; 2] = ["qeddd145sfvddff3", "edd1c9f0985e76a2"];

/// The ciphers of a keyring, in the order they are tried.
pub struct Keyring {
    /// The entries used for encryption and decryption (`data_encryption.keyring`).
    ring: Vec<AesCipher>,
    /// Decryption only (`apisix.ssl.key_encrypt_salt`).
    salts: Vec<AesCipher>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Keyring({} keys, {} salts)",
            self.ring.len(),
            self.salts.len()
        )
    }
}

/// A keyring entry that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("expected a 16 byte (AES-128) or 32 byte (AES-256) key, got {0} bytes")]
pub struct BadKey(pub usize);

fn cipher(key: &str) -> Result<AesCipher, BadKey> {
    let b = key.as_bytes();
    match b.len() {
        16 | 32 => AesCipher::cbc(b, &b[..16]).ok_or(BadKey(b.len())),
        n => Err(BadKey(n)),
    }
}

impl Keyring {
    /// A keyring from `keys` (encrypting and decrypting) and `salts` (decrypting only).
    pub fn new(keys: &[String], salts: &[String]) -> Result<Keyring, BadKey> {
        Ok(Keyring {
            ring: keys.iter().map(|k| cipher(k)).collect::<Result<_, _>>()?,
            salts: salts.iter().map(|k| cipher(k)).collect::<Result<_, _>>()?,
        })
    }

    /// APISIX's default keyring.
    pub fn apisix_default() -> Keyring {
        let keys: Vec<String> = DEFAULT_KEYRING.iter().map(|s| s.to_string()).collect();
        Keyring::new(&keys, &[]).unwrap_or(Keyring {
            ring: Vec::new(),
            salts: Vec::new(),
        })
    }

    /// True when values are stored in clear text (`keyring: null`).
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// `plain` encrypted with the first entry and base64-encoded; `None` without a keyring.
    pub fn encrypt(&self, plain: &str) -> Option<String> {
        let first = self.ring.first()?;
        let sealed = first.encrypt(plain.as_bytes(), true)?;
        Some(STANDARD.encode(sealed))
    }

    /// The plain text of base64 `sealed`, from the first entry (then salt) that decrypts it to
    /// text.
    pub fn decrypt(&self, sealed: &str) -> Option<String> {
        let raw = STANDARD.decode(sealed.trim()).ok()?;
        self.ring
            .iter()
            .chain(self.salts.iter())
            .filter_map(|c| c.decrypt(&raw, true))
            .find_map(|plain| String::from_utf8(plain).ok())
    }
}

static INSTALLED: OnceLock<Keyring> = OnceLock::new();

/// Sets the process's keyring from the node config. The first call wins; a second one is
/// ignored (the node config does not change while the process runs).
pub fn install(ring: Keyring) {
    let _ = INSTALLED.set(ring);
}

/// The process's keyring: what [`install`] set, else APISIX's default.
pub fn current() -> &'static Keyring {
    INSTALLED.get_or_init(Keyring::apisix_default)
}

/// A private key as stored: PEM text (starts with `---`) is used as it is, anything else is
/// taken as keyring-encrypted, as APISIX's `aes_decrypt_pkey` does. The error is APISIX's
/// wording.
pub fn decrypt_private_key(stored: &str) -> Result<String, &'static str> {
    if stored.starts_with("---") {
        return Ok(stored.to_string());
    }
    let ring = current();
    if ring.is_empty() && ring.salts.is_empty() {
        return Ok(stored.to_string());
    }
    ring.decrypt(stored).ok_or("decrypt ssl key failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_the_first_key_and_decrypts_with_any() {
        let a = Keyring::new(&["edd1c9f0985e76a1".into(), "qeddd145sfvddff3".into()], &[]).unwrap();
        let sealed = a.encrypt("-----BEGIN PRIVATE KEY-----").unwrap();
        assert_ne!(sealed, "-----BEGIN PRIVATE KEY-----");
        assert_eq!(a.decrypt(&sealed).unwrap(), "-----BEGIN PRIVATE KEY-----");
        // The second entry alone cannot read what the first wrote.
        let b = Keyring::new(&["qeddd145sfvddff3".into()], &[]).unwrap();
        assert_eq!(b.decrypt(&sealed), None);
        // A keyring holding the first entry anywhere can.
        let c = Keyring::new(&["qeddd145sfvddff3".into(), "edd1c9f0985e76a1".into()], &[]).unwrap();
        assert_eq!(c.decrypt(&sealed).unwrap(), "-----BEGIN PRIVATE KEY-----");
        // An old key_encrypt_salt decrypts too.
        let d = Keyring::new(&[], &["edd1c9f0985e76a1".into()]).unwrap();
        assert_eq!(d.decrypt(&sealed).unwrap(), "-----BEGIN PRIVATE KEY-----");
    }

    #[test]
    fn refuses_keys_of_other_lengths() {
        assert_eq!(Keyring::new(&["short".into()], &[]).unwrap_err(), BadKey(5));
        assert!(Keyring::new(&["0123456789abcdef0123456789abcdef".into()], &[]).is_ok());
    }

    #[test]
    fn matches_apisix_ciphertext() {
        // `openssl enc -aes-128-cbc -K <key> -iv <key> -base64` of "hello", the key being
        // "qeddd145sfvddff3": what APISIX stores.
        let k = Keyring::new(&["qeddd145sfvddff3".into()], &[]).unwrap();
        assert_eq!(k.encrypt("hello").unwrap(), "RdO7hElVO+FhS5u1spmKUQ==");
        assert_eq!(k.decrypt("RdO7hElVO+FhS5u1spmKUQ==").unwrap(), "hello");
    }
}
