//! The certificates and keys of an `ssls` body must be readable before they are stored, as
//! APISIX's Admin API checks them: PEM that decodes to one whole DER structure (a truncated or
//! garbled certificate is refused, not found out when a TLS listener first needs it). The
//! messages are APISIX's, which name the OpenSSL calls it makes.

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::Value;

/// True when `der` is one DER SEQUENCE whose declared length is exactly what follows.
fn whole_der(der: &[u8]) -> bool {
    let [0x30, first, rest @ ..] = der else {
        return false;
    };
    let (len, body) = if first & 0x80 == 0 {
        (*first as usize, rest)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return false;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, &rest[n..])
    };
    body.len() == len
}

/// A `$secret://` or `$env://` reference is resolved later, not parsed now.
fn is_reference(text: &str) -> bool {
    text.starts_with("$secret://") || text.to_ascii_uppercase().starts_with("$ENV://")
}

fn cert(text: &str) -> Result<(), String> {
    match CertificateDer::from_pem_slice(text.as_bytes()) {
        Ok(der) if whole_der(&der) => Ok(()),
        _ => Err("failed to parse cert: PEM_read_bio_X509_AUX() failed".into()),
    }
}

fn key(text: &str) -> Result<(), String> {
    match PrivateKeyDer::from_pem_slice(text.as_bytes()) {
        Ok(der) if whole_der(der.secret_der()) => Ok(()),
        _ => Err("failed to parse key: PEM_read_bio_PrivateKey() failed".into()),
    }
}

/// A certificate and its key, unless either is a reference.
fn pair(c: Option<&str>, k: Option<&str>) -> Result<(), String> {
    if c.is_some_and(is_reference) || k.is_some_and(is_reference) {
        return Ok(());
    }
    if let Some(c) = c {
        cert(c)?;
    }
    if let Some(k) = k {
        key(k)?;
    }
    Ok(())
}

/// Checks an `ssls` body that passed its schema.
pub fn check(conf: &Value) -> Result<(), String> {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_string);
    pair(
        text(conf.get("cert")).as_deref(),
        text(conf.get("key")).as_deref(),
    )?;
    if conf.get("type").and_then(Value::as_str) == Some("client") {
        return Ok(());
    }
    let list = |name: &str| -> Vec<String> {
        conf.get(name)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    let (certs, keys) = (list("certs"), list("keys"));
    if certs.len() != keys.len() {
        return Err("mismatched number of certs and keys".into());
    }
    for (i, (c, k)) in certs.iter().zip(&keys).enumerate() {
        pair(Some(c), Some(k))
            .map_err(|e| format!("failed to handle cert-key pair[{}]: {e}", i + 1))?;
    }
    if let Some(ca) = text(conf.get("client").and_then(|c| c.get("ca")))
        && !is_reference(&ca)
    {
        cert(&ca).map_err(|e| format!("failed to validate client_cert: {e}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_must_add_up() {
        assert!(whole_der(&[0x30, 0x02, 0x05, 0x00]));
        assert!(!whole_der(&[0x30, 0x03, 0x05, 0x00]));
        assert!(whole_der(&[0x30, 0x81, 0x01, 0x00]));
        assert!(!whole_der(&[0x31, 0x00]));
        assert!(!whole_der(&[]));
    }

    #[test]
    fn unreadable_material_is_refused_in_apisix_words() {
        let garbled = "-----BEGIN CERTIFICATE-----\nMIIEojCCAwqgAwIBAgIJAK253pMhgCkx\n-----END CERTIFICATE-----\n";
        assert_eq!(
            check(&serde_json::json!({"cert": garbled, "key": "$secret://vault/k"})),
            Ok(())
        );
        assert_eq!(
            check(&serde_json::json!({"cert": garbled, "key": "x"})).unwrap_err(),
            "failed to parse cert: PEM_read_bio_X509_AUX() failed"
        );
        assert_eq!(
            check(&serde_json::json!({"certs": ["a"], "keys": []})).unwrap_err(),
            "mismatched number of certs and keys"
        );
    }
}
