//! Per-worker upstream connection pools (`keepalive_pool`), keyed by the node address and, for
//! TLS connections, by the SNI and client configuration they were made with (a connection
//! made for one name or client certificate is never reused for another).
//!
//! Each worker owns its pool, so checkout and checkin take no lock. An idle connection has no
//! task watching it: at checkout (and at the periodic sweep) one non-blocking look at its socket
//! tells whether the upstream closed it or sent bytes out of turn, and such a connection is
//! dropped. Connections expire after `idle_timeout` and retire after `requests` uses, as nginx's
//! upstream keepalive does.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::h1::Stream;
use super::upstream_io::{UpstreamIo, UpstreamState};
use crate::config::resource::KeepalivePool;
use std::rc::Rc;

/// A usable upstream connection.
pub struct Conn {
    pub io: Stream,
    /// Bytes read from the socket and not yet consumed (empty between requests).
    pub read_buf: BytesMut,
    /// The request head is encoded here (kept: no allocation per request).
    pub write_buf: Vec<u8>,
    /// Read-timeout state shared with the connection's socket.
    pub state: Rc<UpstreamState>,
    /// Requests already sent on it.
    pub uses: u64,
    /// Came from the pool (may have been closed by the peer in the meantime).
    pub reused: bool,
}

struct Idle {
    conn: Conn,
    since: Instant,
    idle_timeout: Duration,
}

/// What identifies interchangeable connections.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub addr: SocketAddr,
    /// TLS connections: the SNI sent, and the client configuration (by address).
    pub tls: Option<(Option<String>, usize)>,
}

/// How a new connection handshakes TLS: the configuration, and the SNI (`None`: none sent).
pub struct TlsConnect {
    pub config: Arc<rustls::ClientConfig>,
    pub sni: Option<String>,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect() failed ({0})")]
    Io(io::Error),
    #[error("upstream timed out while connecting")]
    Timeout,
    #[error("SSL_do_handshake() failed ({0})")]
    Tls(io::Error),
    /// The node's domain did not resolve (APISIX's words for it).
    #[error("dns resolver domain: {0} error: {1}")]
    Resolve(std::sync::Arc<str>, String),
}

#[derive(Default)]
pub struct Pool {
    /// FxHash: SipHash of the address was about 900 instructions per request (checkout and
    /// checkin), and the keys are the configuration's node addresses (and, for TLS, names),
    /// not the client's.
    idle: RefCell<rustc_hash::FxHashMap<PoolKey, VecDeque<Idle>>>,
}

impl Pool {
    /// The most recently returned live connection to `addr`, if any.
    pub fn checkout(&self, key: &PoolKey) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(key)?;
        let now = Instant::now();
        while let Some(mut c) = list.pop_back() {
            if now.duration_since(c.since) < c.idle_timeout && c.conn.io.idle_usable() {
                c.conn.reused = true;
                return Some(c.conn);
            }
        }
        None
    }

    /// Keeps `conn` for reuse if the pool has room and the connection has uses left.
    pub fn checkin(&self, key: PoolKey, conn: Conn, cfg: &KeepalivePool) {
        if cfg.size == 0 || conn.uses >= cfg.requests || !conn.read_buf.is_empty() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(key).or_default();
        if list.len() >= cfg.size {
            // Drop the oldest: the newest is the most likely to still be open upstream.
            list.pop_front();
        }
        conn.state.end();
        list.push_back(Idle {
            conn,
            since: Instant::now(),
            idle_timeout: Duration::from_secs_f64(cfg.idle_timeout.max(0.0)),
        });
    }

    /// Closes idle connections that expired or were closed by the peer.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain_mut(|c| {
                now.duration_since(c.since) < c.idle_timeout && c.conn.io.idle_usable()
            });
            !list.is_empty()
        });
    }

    /// Opens a new connection to `addr`, over TLS with `tls`. `timeout` bounds the TCP connect and the TLS handshake together,
    /// as nginx's `proxy_connect_timeout` does.
    pub async fn connect(
        addr: SocketAddr,
        timeout: Duration,
        tls: Option<TlsConnect>,
    ) -> Result<Conn, ConnectError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Err(_) => return Err(ConnectError::Timeout),
        };
        let _ = stream.set_nodelay(true);
        let state = Rc::new(UpstreamState::default());
        let io = match tls {
            None => Stream::Plain(UpstreamIo::new(stream, state.clone())),
            Some(t) => {
                let name = match &t.sni {
                    Some(n) => ServerName::try_from(n.clone()).map_err(|_| {
                        ConnectError::Tls(io::Error::other(format!("bad SNI {n:?}")))
                    })?,
                    // An IP address tells rustls to send no SNI.
                    None => ServerName::IpAddress(addr.ip().into()),
                };
                let connector = tokio_rustls::TlsConnector::from(t.config);
                let tls = match tokio::time::timeout_at(deadline, connector.connect(name, stream))
                    .await
                {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return Err(ConnectError::Tls(e)),
                    Err(_) => return Err(ConnectError::Timeout),
                };
                Stream::Tls(Box::new(UpstreamIo::new(tls, state.clone())))
            }
        };
        Ok(Conn {
            io,
            read_buf: BytesMut::new(),
            write_buf: Vec::with_capacity(1024),
            state,
            uses: 0,
            reused: false,
        })
    }
}
