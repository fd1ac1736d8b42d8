//! TLS for cosockets (`tcpsock:sslhandshake`) over rustls with the ring provider.
//!
//! OpenResty verifies nothing unless `ssl_verify` is true, so three client configurations exist:
//! one accepting any certificate, one checking the chain only (no `server_name` to check against),
//! and one checking the chain and the host name. The trust store is webpki-roots plus the PEM file
//! given to [`set_trusted_certificate`] (what `lua_ssl_trusted_certificate` names). Sessions are
//! resumed by rustls' own in-memory cache in each configuration, keyed by server name.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpStream, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A cosocket's connection: plain TCP, a unix domain socket, or TLS over either. Pooled
/// connections keep this whole, so a kept-alive TLS connection stays TLS.
pub(super) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream<Stream>>),
}

impl Stream {
    pub(super) fn is_tls(&self) -> bool {
        matches!(self, Stream::Tls(_))
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What `sslhandshake` returns on success. rustls resumes sessions itself, so it carries nothing;
/// passing it back as `reused_session` is accepted and ignored.
pub(super) struct Session;

impl mlua::UserData for Session {}

#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("cannot read trusted certificates from {path}: {source}")]
    Read {
        path: String,
        source: rustls::pki_types::pem::Error,
    },
    #[error("no certificate found in {0}")]
    Empty(String),
    #[error("bad trusted certificate in {path}: {source}")]
    Cert { path: String, source: rustls::Error },
    #[error("cannot build the TLS verifier: {0}")]
    Verifier(String),
}

struct Configs {
    any: Arc<ClientConfig>,
    chain: Arc<ClientConfig>,
    full: Arc<ClientConfig>,
}

/// Extra trust anchors (DER) and the configurations built from them, shared by all workers.
static EXTRA_ROOTS: RwLock<Vec<CertificateDer<'static>>> = RwLock::new(Vec::new());
static CONFIGS: RwLock<Option<Arc<Configs>>> = RwLock::new(None);

/// Trusts the certificates in the PEM file at `path` in addition to webpki-roots, for
/// `ssl_verify = true` handshakes from now on. Replaces what an earlier call set. Returns how
/// many certificates were read.
pub fn set_trusted_certificate(path: impl AsRef<Path>) -> Result<usize, TlsConfigError> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|source| TlsConfigError::Read {
            path: shown.clone(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsConfigError::Empty(shown));
    }
    // Parsed here so that a bad file is reported now, not at the first handshake.
    let mut check = RootCertStore::empty();
    for c in &certs {
        check
            .add(c.clone())
            .map_err(|source| TlsConfigError::Cert {
                path: shown.clone(),
                source,
            })?;
    }
    let n = certs.len();
    *EXTRA_ROOTS.write().unwrap_or_else(|e| e.into_inner()) = certs;
    *CONFIGS.write().unwrap_or_else(|e| e.into_inner()) = None;
    Ok(n)
}

fn configs() -> Result<Arc<Configs>, TlsConfigError> {
    if let Some(c) = CONFIGS.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(c.clone());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots()), provider.clone())
        .build()
        .map_err(|e| TlsConfigError::Verifier(e.to_string()))?;
    let build = |inner: Option<Arc<WebPkiServerVerifier>>, check_name: bool| {
        let v = Verifier {
            inner,
            check_name,
            provider: provider.clone(),
        };
        ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map(|b| {
                Arc::new(
                    b.dangerous()
                        .with_custom_certificate_verifier(Arc::new(v))
                        .with_no_client_auth(),
                )
            })
            .map_err(|e| TlsConfigError::Verifier(e.to_string()))
    };
    let c = Arc::new(Configs {
        any: build(None, false)?,
        chain: build(Some(webpki.clone()), false)?,
        full: build(Some(webpki), true)?,
    });
    *CONFIGS.write().unwrap_or_else(|e| e.into_inner()) = Some(c.clone());
    Ok(c)
}

/// webpki's roots and the ones `ssl_trusted_certificate` adds.
fn roots() -> RootCertStore {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    for c in EXTRA_ROOTS.read().unwrap_or_else(|e| e.into_inner()).iter() {
        // Checked by set_trusted_certificate already.
        let _ = roots.add(c.clone());
    }
    roots
}

/// The server-certificate check of TLS clients outside Lua (upstream TLS, `proxy::upstream_tls`):
/// with `verify`, the chain against the same roots as cosockets and the name; without, none
/// (nginx's `proxy_ssl_verify off`).
pub fn server_verifier(
    verify: bool,
) -> Result<Arc<dyn rustls::client::danger::ServerCertVerifier>, TlsConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let inner = if verify {
        Some(
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots()), provider.clone())
                .build()
                .map_err(|e| TlsConfigError::Verifier(e.to_string()))?,
        )
    } else {
        None
    };
    Ok(Arc::new(Verifier {
        inner,
        check_name: true,
        provider,
    }))
}

/// webpki's verification, or none (`inner` unset), optionally without the host-name check.
#[derive(Debug)]
struct Verifier {
    inner: Option<Arc<WebPkiServerVerifier>>,
    check_name: bool,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(inner) = &self.inner else {
            return Ok(ServerCertVerified::assertion());
        };
        match inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            // webpki checks the name only after the chain, so this error means the chain is
            // good; with no server_name given OpenResty checks the chain alone.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            r => r,
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Runs a client handshake over `stream`. `name` sets SNI (an IP literal sends none) and, with
/// `verify`, the name the certificate must match. Errors read as OpenResty's (OpenSSL's
/// `code: reason` for chain failures).
pub(super) async fn handshake(
    stream: Stream,
    name: Option<&str>,
    verify: bool,
) -> Result<Stream, String> {
    let configs = configs().map_err(|e| e.to_string())?;
    let server_name = match name {
        Some(n) => {
            ServerName::try_from(n.to_owned()).map_err(|_| format!("bad server name: {n}"))?
        }
        // Without a name there is no SNI: an IP address (the peer's where known, which also keys
        // rustls' session cache per peer) tells rustls to send none.
        None => {
            let ip = match &stream {
                Stream::Tcp(s) => s.peer_addr().map(|a| a.ip()).ok(),
                _ => None,
            };
            ServerName::IpAddress(
                ip.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
                    .into(),
            )
        }
    };
    let config = match (verify, name.is_some()) {
        (false, _) => configs.any.clone(),
        (true, false) => configs.chain.clone(),
        (true, true) => configs.full.clone(),
    };
    match TlsConnector::from(config)
        .connect(server_name, stream)
        .await
    {
        Ok(s) => Ok(Stream::Tls(Box::new(s))),
        Err(e) => Err(handshake_error(&e)),
    }
}

fn handshake_error(e: &io::Error) -> String {
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return match e.kind() {
            io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => {
                "handshake failed".into()
            }
            _ => super::io_err(e),
        };
    };
    match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. } => {
                "certificate host mismatch".into()
            }
            CertificateError::UnknownIssuer => "20: unable to get local issuer certificate".into(),
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                "10: certificate has expired".into()
            }
            CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                "9: certificate is not yet valid".into()
            }
            CertificateError::Revoked => "23: certificate revoked".into(),
            CertificateError::BadSignature => "7: certificate signature failure".into(),
            other => format!("certificate verify failed: {other:?}"),
        },
        other => format!("handshake failed: {other}"),
    }
}
