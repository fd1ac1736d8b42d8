//! Upstreams: compiled node lists and the balancers that pick a node per request.
//!
//! An [`UpstreamDef`] is immutable, built off the request path from a `config::resource::Upstream`
//! and shared by every worker through the snapshot. Each worker keeps its own mutable [`Picker`] per
//! upstream (smooth round-robin weights, EWMA scores, connection counts), as each nginx worker keeps
//! its own balancer state, so picking takes no lock. Connection pooling lives in the proxy, not here.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::resource::{self, BalancerType, HashOn, KeepalivePool, PassHost, Timeout};
use crate::router::RequestVars;

/// One node, its address resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDef {
    /// The host as configured (a name or an IP literal), for `pass_host: node` and logs.
    pub host: String,
    pub port: u16,
    /// Where to connect.
    pub addr: SocketAddr,
    pub weight: u32,
    pub priority: i32,
}

/// A compiled upstream, shared by all workers.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamDef {
    pub nodes: Vec<NodeDef>,
    pub kind: BalancerType,
    pub hash_on: HashOn,
    pub key: Option<String>,
    /// Extra tries after the first; APISIX's default is one per other node.
    pub retries: u32,
    /// Total time budget for retries; `None` = unbounded.
    pub retry_timeout: Option<Duration>,
    pub timeout: Option<Timeout>,
    pub pass_host: PassHost,
    pub upstream_host: Option<String>,
    pub keepalive_pool: KeepalivePool,
}

/// An upstream that cannot be compiled, naming the field.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{field}: {message}")]
pub struct UpstreamError {
    pub field: String,
    pub message: String,
}

/// Resolves a host name to addresses (injected so tests and the snapshot builder control DNS).
pub trait Resolve {
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String>;
}

impl UpstreamDef {
    /// Compiles an upstream, resolving host names through `resolver`.
    pub fn compile(up: &resource::Upstream, resolver: &dyn Resolve) -> Result<UpstreamDef, UpstreamError> {
        let _ = (up, resolver);
        todo!("upstream: being written")
    }

    /// The `chash` key for this request, per `hash_on`/`key` (falls back to `remote_addr`).
    pub fn hash_key<R: RequestVars + ?Sized>(&self, req: &R, consumer: Option<&str>) -> Option<String> {
        let _ = (req, consumer);
        todo!("upstream: being written")
    }
}

/// Per-worker balancer state for one upstream.
#[derive(Debug)]
pub struct Picker {}

impl Picker {
    pub fn new(def: &UpstreamDef) -> Picker {
        let _ = def;
        todo!("upstream: being written")
    }

    /// Picks a node index into `def.nodes`, never one in `tried`; `None` when none is left.
    /// Higher `priority` groups are used first; a lower group only once every node above it was tried.
    pub fn pick(&mut self, def: &UpstreamDef, hash_key: Option<&str>, tried: &[usize]) -> Option<usize> {
        let _ = (def, hash_key, tried);
        todo!("upstream: being written")
    }

    /// A request to `node` started (least_conn counts it).
    pub fn on_start(&mut self, node: usize) {
        let _ = node;
    }

    /// A request to `node` finished after `elapsed`; `failed` when it could not be served.
    pub fn on_finish(&mut self, node: usize, elapsed: Duration, failed: bool) {
        let _ = (node, elapsed, failed);
    }
}
