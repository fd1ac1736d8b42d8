//! Per-worker upstream connection pools (`keepalive_pool`), keyed by the node address.
//!
//! Each worker owns its pool, so checkout and checkin take no lock. Idle connections are watched
//! for peer close by their hyper connection task (a closed one reports `is_closed`), expire after
//! `idle_timeout`, and retire after `requests` uses, as nginx's upstream keepalive does.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::Body;
use super::upstream_io::{UpstreamIo, UpstreamState};
use crate::config::resource::KeepalivePool;
use std::rc::Rc;

/// A usable upstream connection.
pub struct Conn {
    pub sender: SendRequest<Body>,
    /// Read-timeout state shared with the connection's socket.
    pub state: Rc<UpstreamState>,
    /// Requests already sent on it.
    pub uses: u64,
    /// Came from the pool (may have been closed by the peer in the meantime).
    pub reused: bool,
}

struct Idle {
    sender: SendRequest<Body>,
    state: Rc<UpstreamState>,
    uses: u64,
    since: Instant,
    idle_timeout: Duration,
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connect() failed ({0})")]
    Io(io::Error),
    #[error("upstream timed out while connecting")]
    Timeout,
    #[error("HTTP handshake failed: {0}")]
    Handshake(hyper::Error),
    /// The node's domain did not resolve (APISIX's words for it).
    #[error("dns resolver domain: {0} error: {1}")]
    Resolve(std::sync::Arc<str>, String),
}

#[derive(Default)]
pub struct Pool {
    /// FxHash: SipHash of the address was about 900 instructions per request (checkout and
    /// checkin), and the keys are the configuration's node addresses, not the client's.
    idle: RefCell<rustc_hash::FxHashMap<SocketAddr, VecDeque<Idle>>>,
}

impl Pool {
    /// The most recently returned live connection to `addr`, if any.
    pub fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.idle.borrow_mut();
        let list = idle.get_mut(&addr)?;
        let now = Instant::now();
        while let Some(c) = list.pop_back() {
            if !c.sender.is_closed()
                && c.sender.is_ready()
                && now.duration_since(c.since) < c.idle_timeout
            {
                return Some(Conn {
                    sender: c.sender,
                    state: c.state,
                    uses: c.uses,
                    reused: true,
                });
            }
        }
        None
    }

    /// Keeps `conn` for reuse if the pool has room and the connection has uses left.
    pub fn checkin(&self, addr: SocketAddr, conn: Conn, cfg: &KeepalivePool) {
        if cfg.size == 0 || conn.uses >= cfg.requests || conn.sender.is_closed() {
            return;
        }
        let mut idle = self.idle.borrow_mut();
        let list = idle.entry(addr).or_default();
        if list.len() >= cfg.size {
            // Drop the oldest: the newest is the most likely to still be open upstream.
            list.pop_front();
        }
        conn.state.end();
        list.push_back(Idle {
            sender: conn.sender,
            state: conn.state,
            uses: conn.uses,
            since: Instant::now(),
            idle_timeout: Duration::from_secs_f64(cfg.idle_timeout.max(0.0)),
        });
    }

    /// Closes idle connections that expired or were closed by the peer.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut idle = self.idle.borrow_mut();
        idle.retain(|_, list| {
            list.retain(|c| !c.sender.is_closed() && now.duration_since(c.since) < c.idle_timeout);
            !list.is_empty()
        });
    }

    /// Opens a new HTTP/1.1 connection to `addr`; its driver task runs on the current worker.
    pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<Conn, ConnectError> {
        let stream = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(ConnectError::Io(e)),
            Err(_) => return Err(ConnectError::Timeout),
        };
        let _ = stream.set_nodelay(true);
        let state = Rc::new(UpstreamState::default());
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(UpstreamIo::new(stream, state.clone())))
            .await
            .map_err(ConnectError::Handshake)?;
        tokio::task::spawn_local(async move {
            // Errors here are the upstream closing or breaking the connection; the request that
            // was using it sees the error itself.
            let _ = conn.await;
        });
        Ok(Conn {
            sender,
            state,
            uses: 0,
            reused: false,
        })
    }
}
