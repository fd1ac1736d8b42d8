//! The connections of one [`EtcdStore`](super::EtcdStore) to its cluster: a lazily connected
//! gRPC channel per endpoint of `deployment.etcd.host`, tried in order from the last one that
//! answered (failover), each call bounded by `deployment.etcd.timeout`.
//!
//! It owns reachability reporting: when no endpoint answers, one warning is logged for the
//! whole outage (not one per call or retry), and one notice when etcd answers again. TLS
//! (`https://` endpoints) is rustls with the ring provider, as everywhere in moongate.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etcd_client::{Client, ConnectOptions};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tonic::Code;

use crate::config::node::EtcdConfig;

/// HTTP/2 pings on a busy connection (a watch is always open on a data-plane node), so a
/// silently dead etcd is noticed; etcd refuses pings more often than every 5 s.
const KEEPALIVE: Duration = Duration::from_secs(10);

/// Why a call failed, before it becomes a [`StoreError`](crate::config::store::StoreError).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Failure {
    /// No endpoint answered; the text names each endpoint and its error.
    Down(String),
    /// The revision asked for was compacted (etcd's own floor is given when known).
    Compacted,
    /// A response was larger than the client accepts: ask for less.
    TooLarge,
    /// etcd answered with an error (permissions, a bad request).
    Refused(String),
}

/// An error as one readable line: gRPC's message and the root cause under it
/// (`tcp connect error: Connection refused (os error 111)`), not the whole debug chain.
pub(super) fn brief(e: &etcd_client::Error) -> String {
    let (mut text, mut source): (String, Option<&dyn std::error::Error>) = match e {
        etcd_client::Error::GRpcStatus(s) => {
            (s.message().to_string(), std::error::Error::source(s))
        }
        other => (other.to_string(), None),
    };
    let mut root = None;
    while let Some(s) = source {
        root = Some(s);
        source = s.source();
    }
    if let Some(r) = root {
        let r = r.to_string();
        if !text.contains(&r) {
            text = if text.is_empty() {
                r
            } else {
                format!("{text}: {r}")
            };
        }
    }
    text
}

/// How an error from the etcd client is handled.
pub(super) fn classify(e: &etcd_client::Error) -> Failure {
    use etcd_client::Error as E;
    match e {
        E::GRpcStatus(s) => {
            let msg = s.message();
            match s.code() {
                Code::OutOfRange if msg.contains("compacted") => Failure::Compacted,
                Code::OutOfRange | Code::ResourceExhausted if msg.contains("too large") => {
                    Failure::TooLarge
                }
                // Connection refused or reset, no leader, a timeout, a broken HTTP/2 stream:
                // another endpoint may do better.
                Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown => {
                    Failure::Down(brief(e))
                }
                _ => Failure::Refused(brief(e)),
            }
        }
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) => Failure::Down(brief(e)),
        other => Failure::Refused(brief(other)),
    }
}

struct Endpoint {
    url: String,
    channel: tonic::transport::Channel,
    /// Made on first use: with `user` set, making it authenticates (a round trip).
    client: tokio::sync::Mutex<Option<Client>>,
}

/// Every endpoint of the cluster and which one answered last.
pub(super) struct Endpoints {
    endpoints: Vec<Endpoint>,
    options: ConnectOptions,
    timeout: Duration,
    preferred: AtomicUsize,
    reachable: AtomicBool,
}

impl Endpoints {
    /// Builds one lazy channel per endpoint; nothing is connected yet. Must run inside the
    /// runtime that will drive the channels.
    pub(super) fn new(cfg: &EtcdConfig) -> Result<Endpoints, String> {
        if cfg.hosts.is_empty() {
            return Err("deployment.etcd.host lists no endpoint".into());
        }
        let tls = if cfg.hosts.iter().any(|h| h.starts_with("https://")) {
            Some(tls_config(cfg)?)
        } else {
            None
        };
        let mut endpoints = Vec::with_capacity(cfg.hosts.len());
        for url in &cfg.hosts {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| format!("deployment.etcd.host {url:?}: {e}"))?;
            let host = uri
                .host()
                .ok_or_else(|| format!("deployment.etcd.host {url:?}: no host"))?
                .trim_matches(|c| c == '[' || c == ']')
                .to_string();
            let endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| format!("deployment.etcd.host {url:?}: {e}"))?
                .connect_timeout(cfg.timeout)
                .http2_keep_alive_interval(KEEPALIVE)
                .keep_alive_timeout(cfg.timeout.min(Duration::from_secs(20)))
                .keep_alive_while_idle(false)
                .tcp_nodelay(true);
            let channel = match (&tls, uri.scheme_str()) {
                (Some(config), Some("https")) => {
                    let name = cfg.tls.sni.clone().unwrap_or_else(|| host.clone());
                    let name = ServerName::try_from(name.clone())
                        .map_err(|e| format!("deployment.etcd.tls.sni {name:?}: {e}"))?;
                    let port = uri.port_u16().unwrap_or(443);
                    endpoint.connect_with_connector_lazy(tls_connector(
                        config.clone(),
                        name,
                        host,
                        port,
                    ))
                }
                _ => endpoint.connect_lazy(),
            };
            endpoints.push(Endpoint {
                url: url.clone(),
                channel,
                client: tokio::sync::Mutex::new(None),
            });
        }
        let mut options = ConnectOptions::new();
        if let Some((user, password)) = &cfg.user {
            options = options
                .with_user(user.clone(), password.clone())
                .with_auto_token_refresh(true);
        }
        Ok(Endpoints {
            endpoints,
            options,
            timeout: cfg.timeout,
            preferred: AtomicUsize::new(0),
            reachable: AtomicBool::new(true),
        })
    }

    pub(super) fn urls(&self) -> Vec<&str> {
        self.endpoints.iter().map(|e| e.url.as_str()).collect()
    }

    async fn client(&self, ep: &Endpoint) -> Result<Client, etcd_client::Error> {
        let mut slot = ep.client.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let c = Client::from_channel(
            etcd_client::Channel::Tonic(ep.channel.clone()),
            Some(self.options.clone()),
        )
        .await?;
        *slot = Some(c.clone());
        Ok(c)
    }

    /// Runs `op` against the endpoints, starting with the one that answered last and moving
    /// on when one is unreachable. The timeout bounds `op` until it returns (for a watch: until
    /// the stream is open, not the stream's life).
    pub(super) async fn call<T, F, Fut>(&self, op: F) -> Result<T, Failure>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.endpoints.len();
        let first = self.preferred.load(Ordering::Relaxed) % n;
        let mut failures: Vec<String> = Vec::new();
        for k in 0..n {
            let i = (first + k) % n;
            let ep = &self.endpoints[i];
            let attempt = async {
                let client = self.client(ep).await?;
                op(client).await
            };
            let err = match tokio::time::timeout(self.timeout, attempt).await {
                Ok(Ok(v)) => {
                    if i != first {
                        self.preferred.store(i, Ordering::Relaxed);
                        log::warn!(
                            "etcd endpoint {} failed ({}); now using {}",
                            self.endpoints[first].url,
                            failures.first().map(String::as_str).unwrap_or("?"),
                            ep.url
                        );
                    }
                    self.up();
                    return Ok(v);
                }
                Ok(Err(e)) => classify(&e),
                Err(_) => Failure::Down(format!("no answer within {:?}", self.timeout)),
            };
            match err {
                Failure::Down(why) => failures.push(format!("{}: {why}", ep.url)),
                other => {
                    // etcd answered: it is reachable, the request itself was refused.
                    self.up();
                    return Err(other);
                }
            }
        }
        Err(self.down(failures.join("; ")))
    }

    /// Records that etcd answered; logs the end of an outage once.
    pub(super) fn up(&self) {
        if !self.reachable.swap(true, Ordering::Relaxed) {
            log::info!(
                target: "notice",
                "etcd {} is reachable again; Admin API writes are accepted",
                self.urls().join(", ")
            );
        }
    }

    /// Records that no endpoint answered; logs the start of an outage once.
    pub(super) fn down(&self, why: String) -> Failure {
        if self.reachable.swap(false, Ordering::Relaxed) {
            log::warn!(
                "etcd is unreachable ({why}); the last good config keeps serving and Admin API writes answer 503 until it is back"
            );
        }
        Failure::Down(why)
    }
}

/// The client TLS configuration for `https://` endpoints (`deployment.etcd.tls`).
fn tls_config(cfg: &EtcdConfig) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("etcd TLS: {e}"))?;
    let builder = if cfg.tls.verify {
        let mut roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        if let Some(ca) = &cfg.trusted_ca {
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("apisix.ssl.ssl_trusted_certificate {}: {e}", ca.display()))?;
            for c in certs {
                roots.add(c).map_err(|e| {
                    format!("apisix.ssl.ssl_trusted_certificate {}: {e}", ca.display())
                })?;
            }
        }
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
    };
    let mut config = match (&cfg.tls.cert, &cfg.tls.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("deployment.etcd.tls.cert {}: {e}", cert.display()))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| format!("deployment.etcd.tls.key {}: {e}", key.display()))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("deployment.etcd.tls.cert/key: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    // gRPC runs over HTTP/2, which etcd's TLS listener expects to be negotiated.
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Connects TCP then TLS to `host:port`, sending and checking `name`.
fn tls_connector(
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
    host: String,
    port: u16,
) -> impl tower::Service<
    http::Uri,
    Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
    Error = std::io::Error,
    Future = impl Future<
        Output = std::io::Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>>,
    > + Send,
> + Send
+ Clone
+ 'static {
    tower::service_fn(move |_uri: http::Uri| {
        let config = config.clone();
        let name = name.clone();
        let host = host.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(TokioIo::new(tls))
        }
    })
}

/// `deployment.etcd.tls.verify: false`: any certificate is accepted (signatures still checked).
#[derive(Debug)]
struct AcceptAny(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
