//! The listener-wide TLS settings of `apisix.ssl` (`ssl_protocols`, `ssl_ciphers`,
//! `ssl_session_tickets`, `fallback_sni`) and `apisix.enable_http2`, mapped onto rustls.
//!
//! rustls offers TLS 1.2 and 1.3 only, with forward-secret AEAD suites only (ECDHE with
//! AES-GCM or ChaCha20-Poly1305). Names of what it cannot do (`TLSv1.1`, `DHE-…`, CBC suites)
//! are left out with a warning naming them; a setting that leaves nothing is an error.
//!
//! The settings are fixed for the life of the process: installed once at start ([`install`])
//! and read by every certificate compiled afterwards.

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;
use rustls::crypto::ring::cipher_suite as cs;
use rustls::{SupportedCipherSuite, SupportedProtocolVersion};

/// APISIX's default `apisix.ssl.ssl_protocols`.
pub const DEFAULT_PROTOCOLS: &str = "TLSv1.2 TLSv1.3";

/// APISIX's default `apisix.ssl.ssl_ciphers`.
pub const DEFAULT_CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384";

/// OpenSSL's names of the TLS 1.2 suites rustls implements.
const TLS12_NAMES: [(&str, SupportedCipherSuite); 6] = [
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-RSA-AES128-GCM-SHA256",
        cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
    ),
    (
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-RSA-AES256-GCM-SHA384",
        cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
    ),
    (
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
    (
        "ECDHE-RSA-CHACHA20-POLY1305",
        cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    ),
];

/// OpenSSL's (and nginx's `$ssl_cipher`) name of a suite.
pub fn openssl_name(suite: SupportedCipherSuite) -> &'static str {
    let id = suite.suite();
    for (name, s) in TLS12_NAMES {
        if s.suite() == id {
            return name;
        }
    }
    if id == cs::TLS13_AES_128_GCM_SHA256.suite() {
        "TLS_AES_128_GCM_SHA256"
    } else if id == cs::TLS13_AES_256_GCM_SHA384.suite() {
        "TLS_AES_256_GCM_SHA384"
    } else if id == cs::TLS13_CHACHA20_POLY1305_SHA256.suite() {
        "TLS_CHACHA20_POLY1305_SHA256"
    } else {
        "UNKNOWN"
    }
}

/// nginx's `$ssl_protocol` spelling of a version.
pub fn protocol_name(v: rustls::ProtocolVersion) -> &'static str {
    match v {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        rustls::ProtocolVersion::TLSv1_1 => "TLSv1.1",
        rustls::ProtocolVersion::TLSv1_0 => "TLSv1",
        _ => "unknown",
    }
}

/// The versions of a protocol list (`TLSv1.2 TLSv1.3`, or an `ssls` item's list), and the
/// names rustls cannot offer. The result may be empty (nothing can be offered).
pub fn parse_protocols<'a>(
    names: impl IntoIterator<Item = &'a str>,
) -> (Vec<&'static SupportedProtocolVersion>, Vec<String>) {
    let mut versions = Vec::new();
    let mut refused = Vec::new();
    for n in names {
        let v = match n {
            "TLSv1.3" => &rustls::version::TLS13,
            "TLSv1.2" => &rustls::version::TLS12,
            other => {
                refused.push(other.to_string());
                continue;
            }
        };
        if !versions
            .iter()
            .any(|x: &&SupportedProtocolVersion| x.version == v.version)
        {
            versions.push(v);
        }
    }
    (versions, refused)
}

/// The TLS 1.2 suites an OpenSSL cipher string names, in its order, and the names left out.
/// `HIGH`, `ALL` and `DEFAULT` stand for every suite; `!NAME`/`-NAME` remove a suite named
/// earlier; other keywords and names are left out. TLS 1.3 suites are always offered (nginx's
/// `ssl_ciphers` does not govern them either), so their names are accepted and change nothing.
pub fn parse_ciphers(list: &str) -> (Vec<SupportedCipherSuite>, Vec<String>) {
    let mut suites: Vec<SupportedCipherSuite> = Vec::new();
    let mut ignored = Vec::new();
    for token in list
        .split([':', ',', ' '])
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        if let Some(name) = token.strip_prefix(['!', '-']) {
            if let Some((_, s)) = TLS12_NAMES.iter().find(|(n, _)| *n == name) {
                suites.retain(|x| x.suite() != s.suite());
            }
            continue;
        }
        if token.starts_with('+') || token.starts_with('@') {
            continue;
        }
        if token.starts_with("TLS_") {
            continue;
        }
        if matches!(token, "HIGH" | "ALL" | "DEFAULT") {
            for (_, s) in TLS12_NAMES {
                if !suites.iter().any(|x| x.suite() == s.suite()) {
                    suites.push(s);
                }
            }
            continue;
        }
        match TLS12_NAMES.iter().find(|(n, _)| *n == token) {
            Some((_, s)) => {
                if !suites.iter().any(|x| x.suite() == s.suite()) {
                    suites.push(*s);
                }
            }
            None => ignored.push(token.to_string()),
        }
    }
    (suites, ignored)
}

/// The node's TLS settings, resolved.
#[derive(Debug)]
pub struct Settings {
    /// `ssl_protocols`: the versions offered when an `ssls` item names none.
    pub versions: Vec<&'static SupportedProtocolVersion>,
    /// The ring provider with the suites `ssl_ciphers` allows, in its order (TLS 1.3 first).
    pub provider: Arc<CryptoProvider>,
    /// `ssl_session_tickets`: resume with stateless tickets besides the session cache.
    pub session_tickets: bool,
    /// `fallback_sni`: the name used when a client sends none.
    pub fallback_sni: Option<String>,
    /// `apisix.enable_http2`: offer `h2` by ALPN.
    pub http2: bool,
}

impl Default for Settings {
    fn default() -> Settings {
        let (versions, _) = parse_protocols(DEFAULT_PROTOCOLS.split_whitespace());
        let (suites, _) = parse_ciphers(DEFAULT_CIPHERS);
        Settings {
            versions,
            provider: provider_with(&suites),
            session_tickets: false,
            fallback_sni: None,
            http2: true,
        }
    }
}

/// The ring provider offering every TLS 1.3 suite and `tls12` in that order.
pub fn provider_with(tls12: &[SupportedCipherSuite]) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::ring::default_provider();
    let mut suites: Vec<SupportedCipherSuite> = vec![
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    suites.extend_from_slice(tls12);
    p.cipher_suites = suites;
    Arc::new(p)
}

static INSTALLED: OnceLock<Arc<Settings>> = OnceLock::new();

/// Sets the process's TLS settings from the node config; the first call wins.
pub fn install(s: Settings) {
    let _ = INSTALLED.set(Arc::new(s));
}

/// The process's TLS settings: what [`install`] set, else APISIX's defaults.
pub fn current() -> Arc<Settings> {
    INSTALLED
        .get_or_init(|| Arc::new(Settings::default()))
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apisix_default_ciphers_keep_what_rustls_has() {
        let (suites, ignored) = parse_ciphers(DEFAULT_CIPHERS);
        assert_eq!(suites.len(), 6);
        assert_eq!(
            ignored,
            vec!["DHE-RSA-AES128-GCM-SHA256", "DHE-RSA-AES256-GCM-SHA384"]
        );
        assert_eq!(openssl_name(suites[0]), "ECDHE-ECDSA-AES128-GCM-SHA256");
    }

    #[test]
    fn cipher_keywords_and_exclusions() {
        let (suites, ignored) = parse_ciphers("HIGH:!ECDHE-RSA-AES128-GCM-SHA256:!aNULL:!MD5");
        assert_eq!(suites.len(), 5);
        assert!(ignored.is_empty(), "{ignored:?}");
        let (suites, ignored) = parse_ciphers("AES128-SHA:DES-CBC3-SHA");
        assert!(suites.is_empty());
        assert_eq!(ignored.len(), 2);
    }

    #[test]
    fn protocols_rustls_cannot_offer_are_named() {
        let (v, refused) = parse_protocols(["TLSv1.1", "TLSv1.2", "TLSv1.3"]);
        assert_eq!(v.len(), 2);
        assert_eq!(refused, vec!["TLSv1.1"]);
        let (v, refused) = parse_protocols(["TLSv1.1"]);
        assert!(v.is_empty());
        assert_eq!(refused, vec!["TLSv1.1"]);
    }
}
