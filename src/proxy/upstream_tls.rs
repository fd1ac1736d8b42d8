//! TLS towards upstreams (`scheme: https`): the upstream's `tls` block compiled into a rustls
//! client configuration, and the handshake a new upstream connection makes.
//!
//! As APISIX's nginx does (`proxy_ssl_server_name on; proxy_ssl_name $upstream_host`), the SNI
//! is the host the request carries upstream (per `pass_host`), without its port; an IP address
//! sends none. Upstream certificates are not verified (nginx's `proxy_ssl_verify off`) unless
//! `tls.verify` is true; then the chain must lead to the webpki roots or to
//! `apisix.ssl.ssl_trusted_certificate`, and the certificate must name the SNI host.
//!
//! A client certificate comes from `tls.client_cert`/`client_key` (compiled with the upstream)
//! or from an `ssls` item of `type: client` named by `tls.client_cert_id`, looked up in the
//! snapshot when a connection is opened, so that a changed item is used by the next
//! connection.

use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;
use serde_json::Value;

use crate::config::resource::Id;

/// An upstream's `tls` block, compiled.
#[derive(Debug)]
pub struct UpstreamTls {
    /// `tls.verify`.
    pub verify: bool,
    /// `tls.client_cert_id`: resolved per connection.
    pub client_cert_id: Option<Id>,
    /// The configuration for connections without `client_cert_id` (the inline client
    /// certificate, if any, built in).
    pub config: Arc<ClientConfig>,
    /// The block compiled, for comparisons.
    source: Option<Value>,
}

impl PartialEq for UpstreamTls {
    /// Two compiles of the same block are the same (their configurations differ only by
    /// address).
    fn eq(&self, other: &UpstreamTls) -> bool {
        self.source == other.source
    }
}

impl UpstreamTls {
    /// Compiles `tls` (absent: no client certificate, no verification). Errors name the field
    /// as APISIX's schema does.
    pub fn compile(tls: Option<&Value>) -> Result<UpstreamTls, (String, String)> {
        let bad = |field: &str, m: String| (format!("tls.{field}"), m);
        let empty = serde_json::Map::new();
        let obj = match tls {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(_) => return Err(("tls".into(), "wrong type: expected object".into())),
        };
        for k in obj.keys() {
            if !matches!(
                k.as_str(),
                "client_cert" | "client_key" | "client_cert_id" | "verify"
            ) {
                return Err((
                    "tls".into(),
                    format!("additional properties forbidden, found {k}"),
                ));
            }
        }
        let verify = match obj.get("verify") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(bad("verify", "wrong type: expected boolean".into())),
        };
        let text = |k: &str| -> Result<Option<&str>, (String, String)> {
            match obj.get(k) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s)),
                Some(_) => Err(bad(k, "wrong type: expected string".into())),
            }
        };
        let cert = text("client_cert")?;
        let key = text("client_key")?;
        let client_cert_id = match obj.get("client_cert_id") {
            None => None,
            Some(Value::String(s)) if !s.is_empty() => Some(Id(s.clone())),
            Some(Value::Number(n)) => Some(Id(n.to_string())),
            Some(_) => return Err(bad("client_cert_id", "expected an ssl id".into())),
        };
        let inline = match (cert, key, &client_cert_id) {
            (Some(_), Some(_), Some(_)) | (Some(_), None, Some(_)) | (None, Some(_), Some(_)) => {
                return Err((
                    "tls".into(),
                    "client_cert_id and client_cert/client_key are mutually exclusive".into(),
                ));
            }
            (Some(_), None, None) | (None, Some(_), None) => {
                return Err((
                    "tls".into(),
                    "client_cert and client_key must be given together".into(),
                ));
            }
            (Some(c), Some(k), None) => {
                let c = crate::config::ssl::resolve_ref(c).map_err(|e| bad("client_cert", e))?;
                let k = crate::config::ssl::resolve_ref(k).map_err(|e| bad("client_key", e))?;
                Some(crate::config::ssl::parse_pair(&c, &k).map_err(|e| bad("client_cert", e))?)
            }
            _ => None,
        };
        let config = client_config(verify, inline).map_err(|e| ("tls".to_string(), e))?;
        Ok(UpstreamTls {
            verify,
            client_cert_id,
            config,
            source: tls.cloned(),
        })
    }
}

/// How one try reaches its node over TLS: the SNI and the client certificate source, worked
/// out before a pooled connection is looked for (they are part of its key).
pub struct Plan {
    sni: Option<String>,
    source: Source,
}

enum Source {
    /// The upstream's own configuration.
    Compiled(Arc<ClientConfig>),
    /// `client_cert_id`'s certificate, as the snapshot has it now.
    Item {
        verify: bool,
        key: Arc<CertifiedKey>,
    },
}

/// `client_cert_id` names no usable item.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("failed to find upstream ssl object for client_cert_id {0}")]
    Missing(String),
    #[error("upstream ssl object {0} for client_cert_id is not of type client")]
    NotClient(String),
}

impl Plan {
    /// The plan for a request whose upstream `Host` is `host` (its SNI, per `pass_host`).
    pub fn new(
        tls: &UpstreamTls,
        host: Option<&http::HeaderValue>,
        worker: &crate::proxy::WorkerCtx,
    ) -> Result<Plan, PlanError> {
        let sni = host.and_then(|h| h.to_str().ok()).and_then(sni_of);
        let source = match &tls.client_cert_id {
            None => Source::Compiled(tls.config.clone()),
            Some(id) => {
                let snapshot = worker.shared.store.load();
                let entry = snapshot
                    .ssls
                    .get(id)
                    .ok_or_else(|| PlanError::Missing(id.0.clone()))?;
                let key = entry
                    .client_key
                    .clone()
                    .ok_or_else(|| PlanError::NotClient(id.0.clone()))?;
                Source::Item {
                    verify: tls.verify,
                    key,
                }
            }
        };
        Ok(Plan { sni, source })
    }

    /// The TLS part of the pool key: the SNI, and the configuration or certificate used.
    pub fn pool_key(&self) -> (Option<String>, usize) {
        let id = match &self.source {
            Source::Compiled(c) => Arc::as_ptr(c) as *const () as usize,
            Source::Item { key, verify } => {
                Arc::as_ptr(key) as *const () as usize + *verify as usize
            }
        };
        (self.sni.clone(), id)
    }

    /// What a new connection handshakes with.
    pub fn connect(
        self,
    ) -> Result<crate::proxy::pool::TlsConnect, crate::proxy::pool::ConnectError> {
        let config = match self.source {
            Source::Compiled(c) => c,
            Source::Item { verify, key } => client_config(verify, Some(key))
                .map_err(|e| crate::proxy::pool::ConnectError::Tls(std::io::Error::other(e)))?,
        };
        Ok(crate::proxy::pool::TlsConnect {
            config,
            sni: self.sni,
        })
    }
}

/// A client configuration: HTTP/1.1 by ALPN, the verifier `verify` asks for, and `client` as
/// the certificate presented when the server asks for one.
pub fn client_config(
    verify: bool,
    client: Option<Arc<CertifiedKey>>,
) -> Result<Arc<ClientConfig>, String> {
    let verifier = crate::lua::ngx::socket::server_verifier(verify).map_err(|e| e.to_string())?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match client {
        Some(ck) => builder.with_client_cert_resolver(Arc::new(Present(ck))),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Presents one certificate whatever the server asks.
#[derive(Debug)]
struct Present(Arc<CertifiedKey>);

impl ResolvesClientCert for Present {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The SNI for an upstream host value (`host`, `host:port`, `[v6]:port`): the host without its
/// port; `None` for an IP address (no SNI is sent).
pub fn sni_of(host: &str) -> Option<String> {
    let bare = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        host.rsplit_once(':')
            .filter(|(_, p)| p.bytes().all(|b| b.is_ascii_digit()))
            .map_or(host, |(h, _)| h)
    };
    if bare.is_empty() || bare.parse::<std::net::IpAddr>().is_ok() {
        return None;
    }
    Some(bare.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sni_drops_the_port_and_ip_addresses() {
        assert_eq!(
            sni_of("api.example.com:8443").as_deref(),
            Some("api.example.com")
        );
        assert_eq!(sni_of("Example.com").as_deref(), Some("example.com"));
        assert_eq!(sni_of("127.0.0.1:443"), None);
        assert_eq!(sni_of("[::1]:443"), None);
    }

    #[test]
    fn tls_blocks_are_checked() {
        assert!(!UpstreamTls::compile(None).unwrap().verify);
        assert!(
            UpstreamTls::compile(Some(&json!({"verify": true})))
                .unwrap()
                .verify
        );
        let e = UpstreamTls::compile(Some(&json!({"client_cert": "x"}))).unwrap_err();
        assert_eq!(e.1, "client_cert and client_key must be given together");
        let e = UpstreamTls::compile(Some(
            &json!({"client_cert": "x", "client_key": "y", "client_cert_id": "1"}),
        ))
        .unwrap_err();
        assert!(e.1.contains("mutually exclusive"), "{e:?}");
        let ck = rcgen::generate_simple_self_signed(vec!["client".to_string()]).unwrap();
        let t = UpstreamTls::compile(Some(&json!({
            "client_cert": ck.cert.pem(), "client_key": ck.signing_key.serialize_pem(),
        })))
        .unwrap();
        assert!(t.config.client_auth_cert_resolver.has_certs());
        let t = UpstreamTls::compile(Some(&json!({"client_cert_id": 7}))).unwrap();
        assert_eq!(t.client_cert_id, Some(Id("7".into())));
    }
}
