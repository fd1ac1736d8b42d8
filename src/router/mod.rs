//! APISIX route matching over one config snapshot.
//!
//! Semantics follow APISIX's default `radixtree_host_uri` router (lua-resty-radixtree underneath):
//! routes with hosts are indexed by host first (exact host, then the longest `*.suffix` wildcard),
//! and only when no host-indexed route matches are routes without hosts tried. Within one index,
//! exact paths come first, then path prefixes (`/foo*`, `:param` segments) from the longest to the
//! shortest; candidates that share a path are ordered by descending `priority`, then by the length
//! of the configured uri (longer first, as radixtree does), then by position in the route table. A candidate whose filters (`methods`, `remote_addrs`, `vars`) fail falls through to
//! the next one. This module never does I/O and never allocates on the match path beyond the captured
//! `:param` values.

pub mod expr;
pub mod ip;
mod path;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;

use expr::Expr;
use ip::IpSet;
use path::{Cand, PathIndex, UriKind};

use serde_json::Value;

/// What the router needs to know about a route. Built by the snapshot from a route merged with its
/// service (`hosts` come from the service when the route has none).
#[derive(Debug, Clone, Default)]
pub struct RouteSpec {
    /// Position of the route in the snapshot's route table; returned by [`Router::find`].
    pub index: usize,
    /// The route id, for error messages.
    pub id: String,
    /// `uri`/`uris`: exact paths, `/prefix*`, `/a/:name/b`.
    pub uris: Vec<String>,
    /// `host`/`hosts`: exact names or `*.example.com`; empty = any host.
    pub hosts: Vec<String>,
    /// `methods`; empty = any method.
    pub methods: Vec<String>,
    /// `remote_addr`/`remote_addrs`: IPs and CIDRs, v4 and v6; empty = any client.
    pub remote_addrs: Vec<String>,
    /// `vars`: a lua-resty-expr expression list.
    pub vars: Option<Value>,
    pub priority: i64,
}

/// The request as the router sees it.
pub trait RequestVars {
    /// `$request_method`, e.g. `GET`.
    fn method(&self) -> &str;
    /// `$host`: lower case, without the port.
    fn host(&self) -> &str;
    /// `$uri`: the normalised path without the query string.
    fn path(&self) -> &str;
    /// The client address (`$remote_addr`).
    fn remote_addr(&self) -> Option<IpAddr>;
    /// Any other nginx-style variable used by `vars` expressions: `arg_*`, `http_*`, `cookie_*`,
    /// `uri`, `host`, `remote_addr`, `request_method`, `server_port` … `None` when unset.
    fn var(&self, name: &str) -> Option<Cow<'_, str>>;
}

/// A matched route and the `:param` values captured from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    pub index: usize,
    pub params: Vec<(String, String)>,
    /// The router's slot of the route and which of its uris matched, for [`Router::matched_uri`].
    slot: u32,
    uri_pos: u16,
}

/// A route that cannot be compiled, naming the route id and field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("route {id}: {field}: {message}")]
pub struct RouterError {
    pub id: String,
    pub field: &'static str,
    pub message: String,
}

/// The methods APISIX accepts in `methods`, as bits.
const METHODS: [&str; 10] = [
    "GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS", "CONNECT", "TRACE", "PURGE",
];

fn method_bit(m: &str) -> Option<u16> {
    METHODS.iter().position(|x| *x == m).map(|i| 1u16 << i)
}

/// What a route checks once its path matched.
#[derive(Debug)]
struct Filters {
    index: usize,
    /// Allowed methods as bits; 0 = any.
    methods: u16,
    remote_addrs: IpSet,
    vars: Option<Expr>,
    /// The route's uris as configured.
    uris: Box<[Box<str>]>,
}

/// The compiled router for one snapshot.
#[derive(Debug, Default)]
pub struct Router {
    routes: Vec<Filters>,
    by_host: HashMap<String, PathIndex>,
    /// `*suffix` hosts, keyed by the suffix (`.example.com` for `*.example.com`; the empty suffix
    /// for `*`, which takes any host). APISIX stores these as prefixes of the reversed host, so
    /// `*example.com` (no dot) also takes `example.com` itself; probing by length does the same.
    by_wildcard: HashMap<String, PathIndex>,
    /// Distinct wildcard suffix lengths, longest first.
    wildcard_lens: Vec<usize>,
    any_host: PathIndex,
}

/// APISIX's `host_def`: `*` alone, or an optional leading `*` and then letters, digits and
/// `-._[]:`.
fn valid_host(h: &str) -> bool {
    if h == "*" {
        return true;
    }
    let body = h.strip_prefix('*').unwrap_or(h);
    !body.is_empty()
        && body.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        })
}

impl Router {
    /// Compiles the routes. Every invalid route is reported, not just the first.
    pub fn build(specs: Vec<RouteSpec>) -> Result<Router, Vec<RouterError>> {
        let mut errors = Vec::new();
        let mut r = Router::default();
        for spec in specs {
            let err = |field: &'static str, message: String| RouterError {
                id: spec.id.clone(),
                field,
                message,
            };
            let mut ok = true;
            let mut methods = 0u16;
            for m in &spec.methods {
                match method_bit(m) {
                    Some(b) => methods |= b,
                    None => {
                        errors.push(err(
                            "methods",
                            format!(
                                "unknown method {m:?} (expected one of {})",
                                METHODS.join(", ")
                            ),
                        ));
                        ok = false;
                    }
                }
            }
            let remote_addrs = IpSet::parse(&spec.remote_addrs).unwrap_or_else(|e| {
                errors.push(err("remote_addrs", e));
                ok = false;
                IpSet::default()
            });
            let vars = match &spec.vars {
                None => None,
                Some(v) => match Expr::compile(v) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        errors.push(err(
                            "vars",
                            format!("failed to validate the 'vars' expression: {e}"),
                        ));
                        ok = false;
                        None
                    }
                },
            };
            if spec.uris.is_empty() {
                errors.push(err("uri", "a route needs `uri` or `uris`".into()));
                ok = false;
            }
            let mut kinds = Vec::with_capacity(spec.uris.len());
            for u in &spec.uris {
                match path::classify(u) {
                    Ok(k) => kinds.push(k),
                    Err(e) => {
                        errors.push(err("uri", e));
                        ok = false;
                    }
                }
            }
            let hosts: Vec<String> = spec.hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
            for h in &hosts {
                if !valid_host(h) {
                    errors.push(err("hosts", format!("invalid host {h:?}")));
                    ok = false;
                }
            }
            if !ok {
                continue;
            }
            let slot = r.routes.len() as u32;
            r.routes.push(Filters {
                index: spec.index,
                methods,
                remote_addrs,
                vars,
                uris: spec.uris.iter().map(|u| u.as_str().into()).collect(),
            });
            let insert_all = |idx: &mut PathIndex| {
                for (pos, (k, uri)) in kinds.iter().zip(&spec.uris).enumerate() {
                    let base = Cand {
                        route: slot,
                        priority: spec.priority,
                        uri_len: uri.len(),
                        order: spec.index,
                        uri_pos: u16::try_from(pos).unwrap_or(u16::MAX),
                        pattern: None,
                    };
                    match k {
                        UriKind::Exact(p) => idx.insert_exact(p, base),
                        UriKind::Prefix(p) => idx.insert_prefix(p.as_bytes(), base),
                        UriKind::Param { prefix, pattern } => idx.insert_prefix(
                            prefix.as_bytes(),
                            Cand {
                                pattern: Some(Box::new(pattern.clone())),
                                ..base
                            },
                        ),
                    }
                }
            };
            if hosts.is_empty() {
                insert_all(&mut r.any_host);
            }
            let mut seen: Vec<&str> = Vec::with_capacity(hosts.len());
            for h in &hosts {
                if seen.contains(&h.as_str()) {
                    continue;
                }
                seen.push(h);
                match h.strip_prefix('*') {
                    Some(suffix) => {
                        insert_all(r.by_wildcard.entry(suffix.to_string()).or_default())
                    }
                    None => insert_all(r.by_host.entry(h.clone()).or_default()),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        r.any_host.finish();
        for v in r.by_host.values_mut() {
            v.finish();
        }
        for v in r.by_wildcard.values_mut() {
            v.finish();
        }
        let mut lens: Vec<usize> = r.by_wildcard.keys().map(String::len).collect();
        lens.sort_unstable_by(|a, b| b.cmp(a));
        lens.dedup();
        r.wildcard_lens = lens;
        Ok(r)
    }

    /// The first route that matches, in APISIX's precedence.
    pub fn find<R: RequestVars + ?Sized>(&self, req: &R) -> Option<RouteMatch> {
        let host = req.host();
        let path = req.path();
        if !self.by_host.is_empty()
            && let Some(idx) = self.by_host.get(host)
            && let Some(m) = self.find_in(idx, path, req)
        {
            return Some(m);
        }
        for &len in &self.wildcard_lens {
            if len > host.len() || !host.is_char_boundary(host.len() - len) {
                continue;
            }
            if let Some(idx) = self.by_wildcard.get(&host[host.len() - len..])
                && let Some(m) = self.find_in(idx, path, req)
            {
                return Some(m);
            }
        }
        self.find_in(&self.any_host, path, req)
    }

    /// The uri pattern (as configured) through which `m` matched.
    pub fn matched_uri(&self, m: &RouteMatch) -> Option<&str> {
        let f = self.routes.get(m.slot as usize)?;
        f.uris.get(m.uri_pos as usize).map(|u| &**u)
    }

    fn find_in<R: RequestVars + ?Sized>(
        &self,
        idx: &PathIndex,
        path: &str,
        req: &R,
    ) -> Option<RouteMatch> {
        if let Some(cands) = idx.exact(path)
            && let Some(m) = self.first_passing(cands, path, req)
        {
            return Some(m);
        }
        idx.prefixes(path, |cands| self.first_passing(cands, path, req))
    }

    fn first_passing<R: RequestVars + ?Sized>(
        &self,
        cands: &[Cand],
        path: &str,
        req: &R,
    ) -> Option<RouteMatch> {
        for c in cands {
            let mut params = Vec::new();
            if let Some(p) = &c.pattern
                && !p.matches(path, &mut params)
            {
                continue;
            }
            let f = &self.routes[c.route as usize];
            if f.methods != 0 && method_bit(req.method()).is_none_or(|b| f.methods & b == 0) {
                continue;
            }
            if !f.remote_addrs.is_empty()
                && req
                    .remote_addr()
                    .is_none_or(|ip| !f.remote_addrs.contains(ip))
            {
                continue;
            }
            if let Some(e) = &f.vars
                && !e.eval(&|name| req.var(name))
            {
                continue;
            }
            return Some(RouteMatch {
                index: f.index,
                params,
                slot: c.route,
                uri_pos: c.uri_pos,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests;
