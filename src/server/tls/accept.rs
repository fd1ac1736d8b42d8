//! The server side of a handshake: read the ClientHello, pick the `ssls` entry for its SNI in
//! the current snapshot, and finish with that entry's configuration.
//!
//! The snapshot is read once per handshake (an `ArcSwap` load, no lock), so a certificate
//! added or changed through the Admin API or a config file serves the next handshake, and
//! connections already open keep the one they started with, as nginx does.
//!
//! A hello whose name no item serves (nor `fallback_sni`, when it sends none) fails with a
//! `handshake_failure` alert, as nginx fails it when APISIX's certificate phase finds nothing;
//! it is logged once per connection.

use std::sync::{Arc, OnceLock};

use rustls::server::{Acceptor, ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, server::WantsServerCert};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;

use super::info::TlsInfo;
use super::settings;
use super::sni::{Lookup, SslIndex};

/// Why a handshake did not complete.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// The client closed, or sent something that is not TLS.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// No `ssls` item serves the name (or the client sent none, and there is no
    /// `fallback_sni`).
    #[error("failed to find any SSL certificate by SNI: {0}")]
    NoCertificate(String),
    #[error(
        "failed to find SNI: please check if the client requests via IP or uses an outdated protocol"
    )]
    NoSni,
    /// The item's `ssl_protocols` names nothing moongate can offer.
    #[error("ssls item {0}: none of its ssl_protocols can be offered")]
    NoProtocol(String),
}

/// Completes the server handshake on `io`, with the certificates of `index`.
pub async fn handshake<S>(
    io: S,
    index: &SslIndex,
) -> Result<(TlsStream<S>, TlsInfo), HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let start = LazyConfigAcceptor::new(Acceptor::default(), io).await?;
    let settings = settings::current();
    let sni = start
        .client_hello()
        .server_name()
        .map(crate::config::ssl::normalize_sni);
    let name = match sni.as_deref().or(settings.fallback_sni.as_deref()) {
        Some(n) => n.to_string(),
        None => {
            refuse(start).await;
            return Err(HandshakeError::NoSni);
        }
    };
    let entry = match index.lookup(&name) {
        Lookup::Found(e) => e,
        Lookup::Missing => {
            refuse(start).await;
            return Err(HandshakeError::NoCertificate(name));
        }
    };
    let Some(config) = entry.server.clone() else {
        refuse(start).await;
        return Err(HandshakeError::NoProtocol(entry.id.0.clone()));
    };
    let stream = start.into_stream(config).await?;
    let info = TlsInfo::of(stream.get_ref().1, Some(entry));
    Ok((stream, info))
}

/// Finishes a hello with a configuration that has no certificate: rustls answers with a
/// `handshake_failure` alert, which is what clients see from nginx in the same case.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(start: tokio_rustls::StartHandshake<S>) {
    let _ = start.into_stream(refusing_config()).await;
}

fn refusing_config() -> Arc<ServerConfig> {
    static CONFIG: OnceLock<Arc<ServerConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let s = settings::current();
            let builder: rustls::ConfigBuilder<ServerConfig, WantsServerCert> =
                match ServerConfig::builder_with_provider(s.provider.clone())
                    .with_protocol_versions(rustls::ALL_VERSIONS)
                {
                    Ok(b) => b.with_no_client_auth(),
                    // The ring provider always offers TLS 1.2 and 1.3.
                    Err(_) => ServerConfig::builder().with_no_client_auth(),
                };
            Arc::new(builder.with_cert_resolver(Arc::new(NoCertificate)))
        })
        .clone()
}

#[derive(Debug)]
struct NoCertificate;

impl ResolvesServerCert for NoCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        None
    }
}
