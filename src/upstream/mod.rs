//! Upstreams: compiled node lists and the balancers that pick a node per request.
//!
//! An [`UpstreamDef`] is immutable, built off the request path from a `config::resource::Upstream`
//! and shared by every worker through the snapshot. Each worker keeps its own mutable [`Picker`] per
//! upstream (smooth round-robin weights, EWMA scores, connection counts), as each nginx worker keeps
//! its own balancer state, so picking takes no lock. Connection pooling lives in the proxy, not here.

mod balancer;
pub mod dns;

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

use crate::config::resource::{
    self, BalancerType, HashOn, KeepalivePool, Nodes, PassHost, Timeout,
};
use crate::router::RequestVars;
pub use balancer::Picker;

/// One node, its address resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeDef {
    /// The host as configured (a name or an IP literal), for `pass_host: node` and logs.
    pub host: String,
    pub port: u16,
    /// Where to connect: for a node named by a domain, the address found when the upstream was
    /// compiled (unspecified when the name did not resolve then); the proxy asks [`dns`] for
    /// the current one.
    pub addr: SocketAddr,
    /// The domain of a node named by one (re-resolved at request time), `None` for IP literals.
    pub domain: Option<std::sync::Arc<str>>,
    pub weight: u32,
    pub priority: i32,
    /// `Host` for `pass_host: node`: the host, with the port unless it is 80.
    pub host_header: http::HeaderValue,
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
    /// `upstream_host` as a header value, made once.
    pub upstream_host_header: Option<http::HeaderValue>,
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

/// Resolves through the system resolver (`getaddrinfo`). Blocking: used off the request path,
/// when a snapshot is built.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, host: &str, port: u16) -> Result<Vec<IpAddr>, String> {
        (host, port)
            .to_socket_addrs()
            .map(|it| it.map(|a| a.ip()).collect())
            .map_err(|e| e.to_string())
    }
}

fn err(field: &str, message: impl Into<String>) -> UpstreamError {
    UpstreamError {
        field: field.to_string(),
        message: message.into(),
    }
}

/// Splits `host:port`, `[v6]:port`, `host` or `v6` into host and optional port.
fn split_host_port(s: &str) -> Result<(String, Option<u16>), String> {
    if let Some(rest) = s.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| format!("invalid node address {s:?}"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().map_err(|_| format!("invalid port in {s:?}"))?),
            None if after.is_empty() => None,
            None => return Err(format!("invalid node address {s:?}")),
        };
        return Ok((host.to_string(), port));
    }
    if s.parse::<std::net::Ipv6Addr>().is_ok() {
        return Ok((s.to_string(), None));
    }
    match s.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.to_string(),
            Some(p.parse().map_err(|_| format!("invalid port in {s:?}"))?),
        )),
        None => Ok((s.to_string(), None)),
    }
}

fn valid_hash_var(key: &str) -> bool {
    const NAMES: [&str; 10] = [
        "uri",
        "server_name",
        "server_addr",
        "request_uri",
        "remote_port",
        "remote_addr",
        "query_string",
        "host",
        "hostname",
        "mqtt_client_id",
    ];
    NAMES.contains(&key)
        || key.strip_prefix("arg_").is_some_and(|a| {
            !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        })
}

impl UpstreamDef {
    /// Whether the balancer learns from request outcomes (`ewma`, `least_conn`); the others
    /// skip the feedback calls entirely.
    pub fn needs_feedback(&self) -> bool {
        matches!(self.kind, BalancerType::Ewma | BalancerType::LeastConn)
    }

    /// Compiles an upstream, resolving host names through `resolver` (the first address is used,
    /// as APISIX picks one address per node name).
    pub fn compile(
        up: &resource::Upstream,
        resolver: &dyn Resolve,
    ) -> Result<UpstreamDef, UpstreamError> {
        if up.scheme != "http" {
            return Err(err(
                "scheme",
                format!(
                    "scheme {:?} is not supported yet (only \"http\")",
                    up.scheme
                ),
            ));
        }
        if up.checks.is_some() {
            return Err(err("checks", "health checks are not supported yet"));
        }
        if up.discovery_type.is_some() || up.service_name.is_some() {
            return Err(err(
                "discovery_type",
                "service discovery is not supported yet; list `nodes` instead",
            ));
        }
        if up.tls.is_some() {
            return Err(err("tls", "TLS towards upstreams is not supported yet"));
        }
        let default_port = 80;
        let raw: Vec<(String, Option<u16>, u32, i32)> = match &up.nodes {
            Nodes::Map(m) => m
                .iter()
                .map(|(k, w)| {
                    split_host_port(k)
                        .map(|(h, p)| (h, p, *w, 0))
                        .map_err(|e| err("nodes", e))
                })
                .collect::<Result<_, _>>()?,
            Nodes::List(l) => l
                .iter()
                .map(|n| (n.host.clone(), n.port, n.weight, n.priority))
                .collect(),
        };
        let mut nodes = Vec::with_capacity(raw.len());
        for (host, port, weight, priority) in raw {
            if host.is_empty() {
                return Err(err("nodes", "a node needs a host"));
            }
            let port = port.unwrap_or(default_port);
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            // A name that does not resolve now is kept: requests that pick it fail (and log
            // why) until it does, as with APISIX, which resolves at request time.
            let (ip, domain) = match bare.parse::<IpAddr>() {
                Ok(ip) => (ip, None),
                Err(_) => {
                    let found = resolver
                        .resolve(bare, port)
                        .ok()
                        .and_then(|a| a.first().copied());
                    if let Some(ip) = found {
                        dns::seed(bare, ip);
                    }
                    (
                        found.unwrap_or(IpAddr::from([0, 0, 0, 0])),
                        Some(std::sync::Arc::from(bare)),
                    )
                }
            };
            let host_text = match (port, bare.contains(':')) {
                (80, false) => bare.to_string(),
                (80, true) => format!("[{bare}]"),
                (_, false) => format!("{bare}:{port}"),
                (_, true) => format!("[{bare}]:{port}"),
            };
            let host_header = http::HeaderValue::from_str(&host_text)
                .map_err(|_| err("nodes", format!("invalid host {bare:?}")))?;
            nodes.push(NodeDef {
                host: bare.to_string(),
                port,
                addr: SocketAddr::new(ip, port),
                domain,
                weight,
                priority,
                host_header,
            });
        }
        if up.pass_host == PassHost::Rewrite
            && up.upstream_host.as_deref().is_none_or(str::is_empty)
        {
            return Err(err(
                "upstream_host",
                "`pass_host: rewrite` needs `upstream_host`",
            ));
        }
        if up.kind == BalancerType::Chash {
            let key = up.key.as_deref().unwrap_or("");
            let ok = match up.hash_on {
                HashOn::Consumer => true,
                HashOn::Vars => valid_hash_var(key),
                HashOn::Header | HashOn::Cookie => {
                    !key.is_empty()
                        && key
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }
                HashOn::VarsCombinations => !key.is_empty(),
            };
            if !ok {
                return Err(err(
                    "key",
                    format!("invalid `key` {key:?} for `hash_on: {:?}`", up.hash_on).to_lowercase(),
                ));
            }
        }
        if let Some(t) = up.timeout
            && (t.connect <= 0.0 || t.send <= 0.0 || t.read <= 0.0)
        {
            return Err(err(
                "timeout",
                "connect, send and read must be greater than 0",
            ));
        }
        let retries = up.retries.unwrap_or(nodes.len().saturating_sub(1) as u32);
        let retry_timeout = up
            .retry_timeout
            .filter(|t| *t > 0.0)
            .and_then(|t| Duration::try_from_secs_f64(t).ok());
        Ok(UpstreamDef {
            nodes,
            kind: up.kind,
            hash_on: up.hash_on,
            key: up.key.clone(),
            retries,
            retry_timeout,
            timeout: up.timeout,
            pass_host: up.pass_host,
            upstream_host: up.upstream_host.clone(),
            upstream_host_header: match &up.upstream_host {
                Some(h) => Some(
                    http::HeaderValue::from_str(h)
                        .map_err(|_| err("upstream_host", format!("invalid host {h:?}")))?,
                ),
                None => None,
            },
            keepalive_pool: up.keepalive_pool.unwrap_or_default(),
        })
    }

    /// The `chash` key for this request, per `hash_on`/`key`, falling back to `remote_addr` when
    /// it is missing or empty, as APISIX does.
    pub fn hash_key<R: RequestVars + ?Sized>(
        &self,
        req: &R,
        consumer: Option<&str>,
    ) -> Option<String> {
        let key = self.key.as_deref().unwrap_or("");
        let v: Option<String> = match self.hash_on {
            HashOn::Vars => req.var(key).map(|c| c.into_owned()),
            HashOn::Header => req
                .var(&format!(
                    "http_{}",
                    key.to_ascii_lowercase().replace('-', "_")
                ))
                .map(|c| c.into_owned()),
            HashOn::Cookie => req.var(&format!("cookie_{key}")).map(|c| c.into_owned()),
            HashOn::Consumer => consumer.map(str::to_string),
            HashOn::VarsCombinations => Some(resolve_template(key, req)),
        };
        match v {
            Some(s) if !s.is_empty() => Some(s),
            _ => req.var("remote_addr").map(|c| c.into_owned()),
        }
    }
}

/// Replaces `$name` and `${name}` with variable values (missing ones with nothing).
fn resolve_template<R: RequestVars + ?Sized>(tpl: &str, req: &R) -> String {
    let mut out = String::with_capacity(tpl.len());
    let b = tpl.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (name, next) = if b.get(i + 1) == Some(&b'{') {
                match tpl[i + 2..].find('}') {
                    Some(end) => (tpl[i + 2..i + 2 + end].trim(), i + 3 + end),
                    None => ("", i + 1),
                }
            } else {
                let start = i + 1;
                let mut j = start;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.')
                {
                    j += 1;
                }
                (&tpl[start..j], j)
            };
            if !name.is_empty() {
                if let Some(v) = req.var(name) {
                    out.push_str(&v);
                }
                i = next;
                continue;
            }
        }
        let ch = tpl[i..].chars().next().unwrap_or('$');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests;
