//! The server side of a handshake: read the ClientHello, pick the `ssls` entry for its SNI in
//! the current snapshot, and finish with that entry's configuration.
//!
//! The snapshot is read once per handshake (an `ArcSwap` load, no lock), so a certificate
//! added or changed through the Admin API or a config file serves the next handshake, and
//! connections already open keep the one they started with, as nginx does.
//!
//! A hello whose name no item serves (nor `fallback_sni`, when it sends none) fails with an
//! `internal_error` alert, as nginx fails it when APISIX's certificate phase finds nothing; it
//! is logged once per connection.

use rustls::server::Acceptor;
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

/// Answers a hello no certificate serves with a fatal `internal_error` alert and closes: what
/// nginx's OpenSSL sends when APISIX's certificate phase fails, so clients report the same
/// ("tlsv1 alert internal error").
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(start: tokio_rustls::StartHandshake<S>) {
    use tokio::io::AsyncWriteExt;
    // A plaintext alert record: type 21, TLS 1.2 record version, length 2, fatal (2),
    // internal_error (80). It precedes any ServerHello, so TLS 1.3 clients read it as is.
    const ALERT: [u8; 7] = [21, 3, 3, 0, 2, 2, 80];
    let mut io = start.io;
    let _ = io.write_all(&ALERT).await;
    let _ = io.shutdown().await;
}
