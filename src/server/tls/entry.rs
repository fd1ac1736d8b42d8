//! One `ssls` item compiled: the rustls configuration its handshakes complete with.
//!
//! Each server entry has its own `ServerConfig` (certificates, client verifier, protocols, its
//! own session cache), built once when the item changes and shared by every worker through the
//! snapshot. A session therefore only resumes with the certificate entry it was made with, and
//! rustls refuses to resume one under another SNI.

use std::sync::Arc;

use pcre2::bytes::Regex;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};

use super::settings::{self, Settings};
use crate::config::resource::Id;
use crate::config::ssl::{Material, Ssl, SslType};

/// A compiled `ssls` item.
#[derive(Debug)]
pub struct SslEntry {
    pub id: Id,
    /// The item as checked (SNIs, `client`, `type`, `status`).
    pub ssl: Ssl,
    /// The configuration handshakes for this item complete with; `None` when none of its
    /// `ssl_protocols` can be offered (its handshakes are refused).
    pub server: Option<Arc<ServerConfig>>,
    /// A `type: client` item: the certificate and key presented to upstreams.
    pub client_key: Option<Arc<CertifiedKey>>,
    /// `client.skip_mtls_uri_regex`, compiled.
    pub skip_mtls: Vec<Regex>,
}

impl SslEntry {
    /// Compiles `ssl` with the process's TLS settings. Errors say what failed (a pair that does
    /// not parse, an unresolvable `$env://` reference, a bad CA).
    pub fn compile(id: Id, ssl: Ssl) -> Result<SslEntry, String> {
        Self::compile_with(id, ssl, &settings::current())
    }

    pub fn compile_with(id: Id, ssl: Ssl, settings: &Settings) -> Result<SslEntry, String> {
        let material = Material::load(&ssl)?;
        let skip_mtls = match &ssl.client {
            Some(c) => c
                .skip_mtls_uri_regex
                .iter()
                .map(|re| Regex::new(re).map_err(|e| format!("skip_mtls_uri_regex {re:?}: {e}")))
                .collect::<Result<Vec<_>, _>>()?,
            None => Vec::new(),
        };
        if ssl.kind == SslType::Client {
            return Ok(SslEntry {
                id,
                client_key: material.keys.first().cloned(),
                ssl,
                server: None,
                skip_mtls,
            });
        }
        let server = server_config(&ssl, &material, settings)?;
        Ok(SslEntry {
            id,
            ssl,
            server,
            client_key: None,
            skip_mtls,
        })
    }

    /// The item asks for client certificates (`client`).
    pub fn wants_client_cert(&self) -> bool {
        self.ssl.client.is_some()
    }

    /// `uri` is one of `skip_mtls_uri_regex`'s: it may be served without a client certificate.
    pub fn skips_mtls(&self, uri: &str) -> bool {
        self.skip_mtls
            .iter()
            .any(|re| re.is_match(uri.as_bytes()).unwrap_or(false))
    }
}

fn server_config(
    ssl: &Ssl,
    material: &Material,
    settings: &Settings,
) -> Result<Option<Arc<ServerConfig>>, String> {
    let versions = match &ssl.protocols {
        Some(list) => {
            let (v, refused) = settings::parse_protocols(list.iter().map(String::as_str));
            if !refused.is_empty() {
                log::warn!(
                    "ssl_protocols: {} not offered (moongate speaks TLSv1.2 and TLSv1.3 only)",
                    refused.join(", ")
                );
            }
            v
        }
        None => settings.versions.clone(),
    };
    if versions.is_empty() {
        return Ok(None);
    }
    let builder = ServerConfig::builder_with_provider(settings.provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("cannot offer {versions:?}: {e}"))?;
    let builder = match (&ssl.client, &material.client_ca) {
        (Some(auth), Some(ca)) => {
            let mut roots = RootCertStore::empty();
            for c in ca {
                roots
                    .add(c.clone())
                    .map_err(|e| format!("client.ca: {e}"))?;
            }
            let roots = Arc::new(roots);
            let b = WebPkiClientVerifier::builder_with_provider(roots, settings.provider.clone());
            // With `skip_mtls_uri_regex` the handshake lets clients without a certificate in;
            // the request path then asks for one except on the skipped URIs.
            let b = if auth.skip_mtls_uri_regex.is_empty() {
                b
            } else {
                b.allow_unauthenticated()
            };
            let inner = b.build().map_err(|e| format!("client.ca: {e}"))?;
            builder.with_client_cert_verifier(Arc::new(DepthLimited {
                inner,
                depth: auth.depth,
                anchors: ca.clone(),
            }))
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(PickKey {
        keys: material.keys.clone(),
    }));
    config.alpn_protocols = if settings.http2 {
        vec![b"h2".to_vec(), b"http/1.1".to_vec()]
    } else {
        vec![b"http/1.1".to_vec()]
    };
    // nginx's `ssl_prefer_server_ciphers on`: the configured order wins.
    config.ignore_client_order = true;
    config.session_storage = rustls::server::ServerSessionMemoryCache::new(SESSION_CACHE);
    if settings.session_tickets {
        config.ticketer =
            rustls::crypto::ring::Ticketer::new().map_err(|e| format!("session tickets: {e}"))?;
    }
    Ok(Some(Arc::new(config)))
}

/// Sessions kept per certificate entry for resumption (nginx's `shared:SSL:20m` holds about
/// 80,000 across all names).
const SESSION_CACHE: usize = 16 * 1024;

/// Chooses among an item's certificates (`cert` and `certs`: an RSA and an ECDSA one, say) the
/// first whose key can sign with a scheme the client offers, as OpenSSL does.
#[derive(Debug)]
struct PickKey {
    keys: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for PickKey {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let offered = hello.signature_schemes();
        self.keys
            .iter()
            .find(|k| k.key.choose_scheme(offered).is_some())
            .or_else(|| self.keys.first())
            .cloned()
    }
}

/// webpki's client verification plus `client.depth`: a client chain may hold at most `depth`
/// intermediate certificates (OpenSSL's verify depth; certificates that are themselves in
/// `client.ca` are not counted).
#[derive(Debug)]
struct DepthLimited {
    inner: Arc<dyn ClientCertVerifier>,
    depth: u32,
    anchors: Vec<CertificateDer<'static>>,
}

impl ClientCertVerifier for DepthLimited {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let counted = intermediates
            .iter()
            .filter(|c| !self.anchors.iter().any(|a| a.as_ref() == c.as_ref()))
            .count();
        if counted > self.depth as usize {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(DepthExceeded(
                    self.depth,
                )))),
            ));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[derive(Debug)]
struct DepthExceeded(u32);

impl std::fmt::Display for DepthExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "certificate chain too long (client.depth is {})", self.0)
    }
}

impl std::error::Error for DepthExceeded {}
