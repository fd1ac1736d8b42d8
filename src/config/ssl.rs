//! The `ssls` resource: APISIX's certificate objects, checked as APISIX checks them and turned
//! into the material rustls uses.
//!
//! [`check`] is what the Admin API and the config files apply to a new item: APISIX's schema
//! (`type`, `cert`/`key`, `certs`/`keys`, `sni`/`snis`, `client`, `status`, `ssl_protocols`,
//! `labels` …, with its error wording), then its `check_ssl_conf`: every certificate and key
//! must parse (keys decrypted with the keyring first). Values that are secret references
//! (`$env://NAME`, `$secret://…`) skip both, as in APISIX; they are resolved when the item is
//! compiled ([`Material::load`]).
//!
//! SNIs are kept as APISIX's `ssl_filter` leaves them: lower-case, without a trailing dot.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use serde_json::Value;

use super::keyring;

/// What an `ssls` item is for (`type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslType {
    /// Served to clients, chosen by SNI.
    Server,
    /// Presented to upstreams (`upstream.tls.client_cert_id`).
    Client,
}

/// `client`: mutual TLS towards clients.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuth {
    /// `ca`: the CA certificates (PEM, or a secret reference) client certificates must chain to.
    pub ca: String,
    /// `depth` (default 1): how many intermediates a client chain may have.
    pub depth: u32,
    /// `skip_mtls_uri_regex`: when set, the handshake accepts clients without a certificate and
    /// the request path requires one except on URIs matching one of these.
    pub skip_mtls_uri_regex: Vec<String>,
}

/// One `ssls` item, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Ssl {
    pub kind: SslType,
    /// `cert`/`key` followed by the pairs of `certs`/`keys`, as stored (keys may be encrypted,
    /// either may be a secret reference).
    pub pairs: Vec<(String, String)>,
    /// `sni` or `snis`, normalised; empty for `type: client`.
    pub snis: Vec<String>,
    pub client: Option<ClientAuth>,
    /// `status` is not 0.
    pub enabled: bool,
    /// `ssl_protocols` as written (`TLSv1.1`, `TLSv1.2`, `TLSv1.3`); `None` = the listener's.
    pub protocols: Option<Vec<String>>,
}

/// Why an item is refused. `schema` errors are APISIX's JSON-schema failures (the Admin API
/// prefixes them with `invalid configuration: `); the others are its certificate checks, shown
/// as they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SslError {
    /// The property that failed (empty for the object as a whole).
    pub field: String,
    pub message: String,
    pub schema: bool,
}

impl SslError {
    fn schema(field: &str, message: impl Into<String>) -> SslError {
        SslError {
            field: field.to_string(),
            message: message.into(),
            schema: true,
        }
    }

    fn check(message: impl Into<String>) -> SslError {
        SslError {
            field: String::new(),
            message: message.into(),
            schema: false,
        }
    }
}

impl std::fmt::Display for SslError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

const CERT_MIN: usize = 128;
const KEY_MIN: usize = 64;
const PEM_MAX: usize = 64 * 1024;
const HOST_PATTERN: &str = "^\\*$|^\\*?[0-9a-zA-Z-._\\[\\]:]+$";

/// A value is a secret reference when it names a secret manager or an environment variable
/// (APISIX's `is_secret_ref`: `$secret://…`, `$env://…` in any case).
pub fn is_secret_ref(s: &str) -> bool {
    s.starts_with("$secret://")
        || s.get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("$env://"))
}

/// Lua's name for a JSON value's type, as APISIX's schema errors say it.
fn lua_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) | Value::Object(_) => "table",
    }
}

/// A PEM-ish string property with APISIX's length bounds; secret references pass.
fn pem_string(v: &Value, min: usize) -> Result<&str, String> {
    let Value::String(s) = v else {
        return Err(format!("wrong type: expected string, got {}", lua_type(v)));
    };
    if is_secret_ref(s) {
        return Ok(s);
    }
    let n = s.chars().count();
    if n < min {
        return Err(format!(
            "string too short, expected at least {min}, got {n}"
        ));
    }
    if n > PEM_MAX {
        return Err(format!(
            "string too long, expected at most {PEM_MAX}, got {n}"
        ));
    }
    Ok(s)
}

fn valid_host(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let body = s.strip_prefix('*').unwrap_or(s);
    !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
}

fn host(v: &Value) -> Result<String, String> {
    let Value::String(s) = v else {
        return Err(format!("wrong type: expected string, got {}", lua_type(v)));
    };
    if !valid_host(s) {
        return Err(format!(
            "failed to match pattern {:?} with {s:?}",
            HOST_PATTERN
        ));
    }
    Ok(normalize_sni(s))
}

/// Lower case, no trailing dot: how SNIs are compared.
pub fn normalize_sni(s: &str) -> String {
    s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase()
}

fn list<'a>(v: &'a Value, field: &str) -> Result<&'a Vec<Value>, SslError> {
    v.as_array().ok_or_else(|| {
        SslError::schema(
            field,
            format!("wrong type: expected array, got {}", lua_type(v)),
        )
    })
}

/// The schema part of APISIX's check, in the order its validator reports failures.
fn check_schema(v: &Value) -> Result<Ssl, SslError> {
    let Some(obj) = v.as_object() else {
        return Err(SslError::schema(
            "",
            format!("wrong type: expected object, got {}", lua_type(v)),
        ));
    };
    const KNOWN: [&str; 15] = [
        "id",
        "desc",
        "labels",
        "create_time",
        "update_time",
        "type",
        "cert",
        "key",
        "sni",
        "snis",
        "certs",
        "keys",
        "client",
        "status",
        "ssl_protocols",
    ];
    for k in obj.keys() {
        // APISIX's ssl schema has no `name` either: it is refused like any unknown key.
        if !KNOWN.contains(&k.as_str()) {
            return Err(SslError::schema(
                "",
                format!("additional properties forbidden, found {k}"),
            ));
        }
    }
    if let Some(d) = obj.get("desc") {
        match d {
            Value::String(s) if s.chars().count() <= 256 => {}
            Value::String(s) => {
                return Err(SslError::schema(
                    "desc",
                    format!(
                        "string too long, expected at most 256, got {}",
                        s.chars().count()
                    ),
                ));
            }
            other => {
                return Err(SslError::schema(
                    "desc",
                    format!("wrong type: expected string, got {}", lua_type(other)),
                ));
            }
        }
    }
    if let Some(l) = obj.get("labels") {
        let Some(m) = l.as_object() else {
            return Err(SslError::schema(
                "labels",
                format!("wrong type: expected object, got {}", lua_type(l)),
            ));
        };
        for (k, val) in m {
            let bad = match val {
                Value::String(s) if s.is_empty() || s.chars().count() > 256 => {
                    Some(format!("string length out of range: {s:?}"))
                }
                Value::String(s) if s.chars().any(char::is_whitespace) => {
                    Some(format!("failed to match pattern \"^\\\\S+$\" with {s:?}"))
                }
                Value::String(_) => None,
                other => Some(format!(
                    "wrong type: expected string, got {}",
                    lua_type(other)
                )),
            };
            if let Some(why) = bad {
                return Err(SslError::schema(
                    "labels",
                    format!("failed to validate {k} (matching \".*\"): {why}"),
                ));
            }
        }
    }
    let kind = match obj.get("type") {
        None => SslType::Server,
        Some(Value::String(s)) if s == "server" => SslType::Server,
        Some(Value::String(s)) if s == "client" => SslType::Client,
        Some(_) => {
            return Err(SslError::schema("type", "matches none of the enum values"));
        }
    };
    let cert = match obj.get("cert") {
        Some(c) => Some(pem_string(c, CERT_MIN).map_err(|e| SslError::schema("cert", e))?),
        None => None,
    };
    let key = match obj.get("key") {
        Some(k) => Some(pem_string(k, KEY_MIN).map_err(|e| SslError::schema("key", e))?),
        None => None,
    };
    let mut snis = Vec::new();
    if let Some(s) = obj.get("sni") {
        snis.push(host(s).map_err(|e| SslError::schema("sni", e))?);
    }
    let has_snis = obj.contains_key("snis");
    if let Some(s) = obj.get("snis") {
        let items = list(s, "snis")?;
        if items.is_empty() {
            return Err(SslError::schema(
                "snis",
                "expect array to have at least 1 items",
            ));
        }
        for (i, item) in items.iter().enumerate() {
            let h = host(item).map_err(|e| {
                SslError::schema("snis", format!("failed to validate item {}: {e}", i + 1))
            })?;
            // `snis` wins over `sni` when both are given, as APISIX's router reads it.
            if i == 0 {
                snis.clear();
            }
            snis.push(h);
        }
    }
    let mut extra_certs = Vec::new();
    if let Some(c) = obj.get("certs") {
        for (i, item) in list(c, "certs")?.iter().enumerate() {
            extra_certs.push(pem_string(item, CERT_MIN).map_err(|e| {
                SslError::schema("certs", format!("failed to validate item {}: {e}", i + 1))
            })?);
        }
    }
    let mut extra_keys = Vec::new();
    if let Some(k) = obj.get("keys") {
        for (i, item) in list(k, "keys")?.iter().enumerate() {
            extra_keys.push(pem_string(item, KEY_MIN).map_err(|e| {
                SslError::schema("keys", format!("failed to validate item {}: {e}", i + 1))
            })?);
        }
    }
    let client = match obj.get("client") {
        None => None,
        Some(Value::Object(c)) => {
            let Some(ca) = c.get("ca") else {
                return Err(SslError::schema("client", "property \"ca\" is required"));
            };
            let ca = pem_string(ca, CERT_MIN).map_err(|e| {
                SslError::schema("client", format!("property \"ca\" validation failed: {e}"))
            })?;
            let depth = match c.get("depth") {
                None => 1,
                Some(d) => match d.as_u64() {
                    Some(n) => u32::try_from(n).unwrap_or(u32::MAX),
                    None => {
                        return Err(SslError::schema(
                            "client",
                            "property \"depth\" validation failed: expected a non-negative integer",
                        ));
                    }
                },
            };
            let mut skip = Vec::new();
            if let Some(s) = c.get("skip_mtls_uri_regex") {
                let Some(items) = s.as_array() else {
                    return Err(SslError::schema(
                        "client",
                        format!(
                            "property \"skip_mtls_uri_regex\" validation failed: wrong type: expected array, got {}",
                            lua_type(s)
                        ),
                    ));
                };
                if items.is_empty() {
                    return Err(SslError::schema(
                        "client",
                        "property \"skip_mtls_uri_regex\" validation failed: expect array to have at least 1 items",
                    ));
                }
                for item in items {
                    let Some(re) = item.as_str() else {
                        return Err(SslError::schema(
                            "client",
                            "property \"skip_mtls_uri_regex\" validation failed: wrong type: expected string",
                        ));
                    };
                    if skip.iter().any(|s: &String| s == re) {
                        return Err(SslError::schema(
                            "client",
                            "property \"skip_mtls_uri_regex\" validation failed: expected unique items but items are equal",
                        ));
                    }
                    if let Err(e) = pcre2::bytes::Regex::new(re) {
                        return Err(SslError::schema(
                            "client",
                            format!(
                                "property \"skip_mtls_uri_regex\" validation failed: invalid regex {re:?}: {e}"
                            ),
                        ));
                    }
                    skip.push(re.to_string());
                }
            }
            Some(ClientAuth {
                ca: ca.to_string(),
                depth,
                skip_mtls_uri_regex: skip,
            })
        }
        Some(other) => {
            return Err(SslError::schema(
                "client",
                format!("wrong type: expected object, got {}", lua_type(other)),
            ));
        }
    };
    let enabled = match obj.get("status") {
        None => true,
        Some(s) if s.as_i64() == Some(1) => true,
        Some(s) if s.as_i64() == Some(0) => false,
        Some(_) => {
            return Err(SslError::schema(
                "status",
                "matches none of the enum values",
            ));
        }
    };
    let protocols = match obj.get("ssl_protocols") {
        None => None,
        Some(p) => {
            let items = list(p, "ssl_protocols")?;
            if items.len() > 3 {
                return Err(SslError::schema(
                    "ssl_protocols",
                    format!("expect array to have at most 3 items, got {}", items.len()),
                ));
            }
            let mut out: Vec<String> = Vec::new();
            for (i, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(s @ ("TLSv1.1" | "TLSv1.2" | "TLSv1.3")) => {
                        if out.iter().any(|o| o == s) {
                            return Err(SslError::schema(
                                "ssl_protocols",
                                "expected unique items but items are equal",
                            ));
                        }
                        out.push(s.to_string());
                    }
                    _ => {
                        return Err(SslError::schema(
                            "ssl_protocols",
                            format!(
                                "failed to validate item {}: matches none of the enum values",
                                i + 1
                            ),
                        ));
                    }
                }
            }
            Some(out)
        }
    };
    // APISIX's `if type == server then oneOf(sni|snis + key + cert) else key + cert`.
    match kind {
        SslType::Server => {
            let named = obj.contains_key("sni") ^ has_snis;
            if !(named && cert.is_some() && key.is_some()) {
                return Err(SslError::schema("", "then clause did not match"));
            }
        }
        SslType::Client => {
            if cert.is_none() || key.is_none() {
                return Err(SslError::schema("", "else clause did not match"));
            }
        }
    }
    let mut pairs = vec![(
        cert.unwrap_or_default().to_string(),
        key.unwrap_or_default().to_string(),
    )];
    if kind == SslType::Server {
        if extra_certs.len() != extra_keys.len() {
            return Err(SslError::check("mismatched number of certs and keys"));
        }
        pairs.extend(
            extra_certs
                .iter()
                .zip(extra_keys.iter())
                .map(|(c, k)| (c.to_string(), k.to_string())),
        );
    } else {
        snis.clear();
    }
    Ok(Ssl {
        kind,
        pairs,
        snis,
        client,
        enabled,
        protocols,
    })
}

/// Checks an item as APISIX's Admin API does (schema, then every certificate and key), and
/// returns it parsed.
pub fn check(v: &Value) -> Result<Ssl, SslError> {
    let ssl = check_schema(v)?;
    for (i, (cert, key)) in ssl.pairs.iter().enumerate() {
        if is_secret_ref(cert) || is_secret_ref(key) {
            continue;
        }
        if let Err(e) = parse_pair(cert, key) {
            return Err(SslError::check(if i == 0 {
                e
            } else {
                format!("failed to handle cert-key pair[{i}]: {e}")
            }));
        }
    }
    if let Some(c) = &ssl.client
        && !is_secret_ref(&c.ca)
        && let Err(e) = parse_certs(&c.ca)
    {
        return Err(SslError::check(format!(
            "failed to validate client_cert: failed to parse cert: {e}"
        )));
    }
    Ok(ssl)
}

/// The certificates of a PEM text, in order. The error is OpenSSL's wording, as APISIX shows it.
pub fn parse_certs(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|_| "PEM_read_bio_X509_AUX() failed".to_string())?;
    if certs.is_empty() {
        return Err("PEM_read_bio_X509_AUX() failed".into());
    }
    for c in &certs {
        x509_parser::parse_x509_certificate(c)
            .map_err(|_| "PEM_read_bio_X509_AUX() failed".to_string())?;
    }
    Ok(certs)
}

/// A private key from its PEM text (PKCS#8, PKCS#1 or SEC1).
pub fn parse_key(pem: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem.as_bytes())
        .map_err(|_| "PEM_read_bio_PrivateKey() failed".to_string())
}

/// A certificate chain and its (possibly encrypted) key as rustls signs with them. Errors are
/// APISIX's: `failed to parse cert: …`, `failed to decrypt previous encrypted key`,
/// `failed to parse key: …`; and moongate's own when the key does not belong to the
/// certificate.
pub fn parse_pair(cert: &str, key: &str) -> Result<Arc<CertifiedKey>, String> {
    let chain = parse_certs(cert).map_err(|e| format!("failed to parse cert: {e}"))?;
    let key = keyring::decrypt_private_key(key)
        .map_err(|_| "failed to decrypt previous encrypted key".to_string())?;
    let der = parse_key(&key).map_err(|e| format!("failed to parse key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    match CertifiedKey::from_der(chain, der, &provider) {
        Ok(ck) => Ok(Arc::new(ck)),
        Err(rustls::Error::InconsistentKeys(_)) => {
            Err("failed to parse key: the private key does not match the certificate".into())
        }
        Err(e) => Err(format!("failed to parse key: {e}")),
    }
}

/// Resolves a secret reference to its value: `$env://NAME` (or `$env://NAME/field` of a JSON
/// value) from the environment. Secret managers (`$secret://`) are refused, naming the value.
pub fn resolve_ref(s: &str) -> Result<String, String> {
    if !is_secret_ref(s) {
        return Ok(s.to_string());
    }
    if s.starts_with("$secret://") {
        return Err(format!(
            "{s}: secret manager references are not supported for certificates yet; use $env:// or the PEM text"
        ));
    }
    let path = &s[7..];
    let (name, sub) = path.split_once('/').unwrap_or((path, ""));
    log::info!("fetching data from env uri: {s}");
    let value =
        std::env::var(name).map_err(|_| format!("{s}: environment variable {name} is not set"))?;
    if sub.is_empty() {
        return Ok(value);
    }
    let doc: Value =
        serde_json::from_str(&value).map_err(|e| format!("{s}: {name} is not JSON ({e})"))?;
    doc.get(sub)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("{s}: {name} has no string field {sub:?}"))
}

/// An item's certificates and keys as rustls uses them, secret references resolved.
pub struct Material {
    /// One entry per `cert`/`key` pair (RSA and ECDSA, say), in order.
    pub keys: Vec<Arc<CertifiedKey>>,
    /// `client.ca`, parsed.
    pub client_ca: Option<Vec<CertificateDer<'static>>>,
}

impl Material {
    /// Loads what `ssl` names. Errors name the pair (`pair[i]`) or the CA.
    pub fn load(ssl: &Ssl) -> Result<Material, String> {
        let mut keys = Vec::with_capacity(ssl.pairs.len());
        for (i, (cert, key)) in ssl.pairs.iter().enumerate() {
            let cert = resolve_ref(cert)?;
            let key = resolve_ref(key)?;
            let ck = parse_pair(&cert, &key).map_err(|e| {
                if i == 0 {
                    e
                } else {
                    format!("failed to handle cert-key pair[{i}]: {e}")
                }
            })?;
            keys.push(ck);
        }
        let client_ca = match &ssl.client {
            Some(c) => {
                let pem = resolve_ref(&c.ca)?;
                Some(parse_certs(&pem).map_err(|e| {
                    format!("failed to validate client_cert: failed to parse cert: {e}")
                })?)
            }
            None => None,
        };
        Ok(Material { keys, client_ca })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pem_pair(name: &str) -> (String, String) {
        let ck = rcgen::generate_simple_self_signed(vec![name.to_string()]).unwrap();
        (ck.cert.pem(), ck.signing_key.serialize_pem())
    }

    #[test]
    fn accepts_a_server_certificate_and_normalises_snis() {
        let (cert, key) = pem_pair("www.test.com");
        let ssl = check(
            &json!({"id": "1", "cert": cert, "key": key, "snis": ["WWW.Test.com.", "*.test.com"]}),
        )
        .unwrap();
        assert_eq!(ssl.kind, SslType::Server);
        assert_eq!(ssl.snis, vec!["www.test.com", "*.test.com"]);
        assert!(ssl.enabled);
        assert_eq!(ssl.pairs.len(), 1);
    }

    #[test]
    fn refuses_what_apisix_refuses_with_its_words() {
        let (cert, key) = pem_pair("a.com");
        let err = |v: Value| check(&v).unwrap_err();
        assert_eq!(
            err(json!({"cert": cert, "key": key})).message,
            "then clause did not match"
        );
        assert_eq!(
            err(json!({"cert": cert, "key": key, "snis": []})).message,
            "expect array to have at least 1 items"
        );
        let e = err(
            json!({"cert": cert, "key": key, "sni": "a.com", "certs": ["https://APISIX_TEST_SSL_CERTS"], "keys": [key]}),
        );
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            (
                "certs",
                "failed to validate item 1: string too short, expected at least 128, got 29"
            )
        );
        let e =
            err(json!({"cert": cert, "key": key, "sni": "a.com", "ssl_protocols": ["TLSv1.0"]}));
        assert_eq!(
            e.message,
            "failed to validate item 1: matches none of the enum values"
        );
        let bad_cert = format!("{}x", "-".repeat(200));
        let e = err(json!({"cert": bad_cert, "key": key, "sni": "a.com"}));
        assert_eq!(
            e.message,
            "failed to parse cert: PEM_read_bio_X509_AUX() failed"
        );
        assert!(!e.schema);
        let e = err(json!({"cert": cert, "key": "-".repeat(80), "sni": "a.com"}));
        assert_eq!(
            e.message,
            "failed to parse key: PEM_read_bio_PrivateKey() failed"
        );
        let e = err(json!({"cert": cert, "key": "x".repeat(80), "sni": "a.com"}));
        assert_eq!(e.message, "failed to decrypt previous encrypted key");
        let e = err(
            json!({"cert": cert, "key": key, "sni": "a.com", "certs": [cert], "keys": ["-".repeat(80)]}),
        );
        assert_eq!(
            e.message,
            "failed to handle cert-key pair[1]: failed to parse key: PEM_read_bio_PrivateKey() failed"
        );
        let (_, other_key) = pem_pair("b.com");
        let e = err(json!({"cert": cert, "key": other_key, "sni": "a.com"}));
        assert!(e.message.contains("does not match"), "{}", e.message);
    }

    #[test]
    fn client_certificates_need_no_sni_and_secret_references_skip_checks() {
        let (cert, key) = pem_pair("client");
        let ssl = check(&json!({"type": "client", "cert": cert, "key": key})).unwrap();
        assert_eq!(ssl.kind, SslType::Client);
        assert!(ssl.snis.is_empty());
        let ssl = check(&json!({"sni": "a.com", "cert": "$ENV://A_CERT", "key": "$env://A_KEY"}))
            .unwrap();
        assert_eq!(ssl.pairs[0].0, "$ENV://A_CERT");
    }

    #[test]
    fn encrypted_keys_are_decrypted_with_the_keyring() {
        let (cert, key) = pem_pair("a.com");
        let sealed = keyring::current().encrypt(&key).unwrap();
        assert!(parse_pair(&cert, &sealed).is_ok());
    }
}
