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
//!
//! The router is persistent: [`Router::insert`] and [`Router::remove`] change one route and copy
//! only the index nodes on that route's paths, everything else is shared with the router it was
//! cloned from. A config change thus updates the router of the next snapshot without a rebuild,
//! however many routes there are, and requests on the previous snapshot are never disturbed.

pub mod expr;
pub mod ip;
mod path;

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use expr::Expr;
use ip::IpSet;
use path::{Cand, PathIndex, UriKind};

use crate::pmap::PMap;

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
    /// The uri (as configured) through which the route matched: APISIX's
    /// `ctx.curr_req_matched._path`.
    pub uri: Option<Arc<str>>,
    /// Which of the route's hosts matched, for `ctx.curr_req_matched._host`.
    pub host: MatchedHost,
}

/// How the request's host met the matched route's hosts. Kept as a tag rather than a string
/// so a match allocates nothing: [`MatchedHost::pattern`] spells it when asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatchedHost {
    /// The route has no hosts.
    Any,
    /// The route lists the request's host itself.
    Exact,
    /// The route's `*SUFFIX` matched; the suffix's length in bytes.
    Wildcard(usize),
}

impl MatchedHost {
    /// The route host that matched `host` (the request's, lower-cased as the router saw it):
    /// `foo.com`, `*.foo.com`, or `None` for a route without hosts.
    pub fn pattern(self, host: &str) -> Option<String> {
        match self {
            MatchedHost::Any => None,
            MatchedHost::Exact => Some(host.to_string()),
            MatchedHost::Wildcard(len) => host
                .get(host.len().saturating_sub(len)..)
                .map(|suffix| format!("*{suffix}")),
        }
    }
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
pub struct Filters {
    /// The route's slot in the snapshot's route table.
    index: usize,
    /// Allowed methods as bits; 0 = any.
    methods: u16,
    remote_addrs: IpSet,
    vars: Option<Expr>,
    /// The route's uris as configured.
    uris: Box<[Arc<str>]>,
}

/// One route compiled for the router: checked, ready to be inserted into and later removed
/// from a [`Router`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RouteRule {
    filters: Arc<Filters>,
    /// Each configured uri, classified.
    uris: Arc<[(UriKind, usize)]>,
    /// Lower-cased, without duplicates; empty = any host.
    hosts: Arc<[String]>,
    priority: i64,
    order: usize,
}

impl RouteRule {
    /// Checks and compiles `spec`; `order` is its position in the config, the last
    /// tie-breaker between candidates of one path. Every problem is reported.
    pub fn compile(spec: &RouteSpec, order: usize) -> Result<RouteRule, Vec<RouterError>> {
        let mut errors = Vec::new();
        let err = |field: &'static str, message: String| RouterError {
            id: spec.id.clone(),
            field,
            message,
        };
        let mut methods = 0u16;
        for m in &spec.methods {
            match method_bit(m) {
                Some(b) => methods |= b,
                None => errors.push(err(
                    "methods",
                    format!(
                        "unknown method {m:?} (expected one of {})",
                        METHODS.join(", ")
                    ),
                )),
            }
        }
        let remote_addrs = IpSet::parse(&spec.remote_addrs).unwrap_or_else(|e| {
            errors.push(err("remote_addrs", e));
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
                    None
                }
            },
        };
        if spec.uris.is_empty() {
            errors.push(err("uri", "a route needs `uri` or `uris`".into()));
        }
        let mut uris = Vec::with_capacity(spec.uris.len());
        for u in &spec.uris {
            match path::classify(u) {
                Ok(k) => uris.push((k, u.len())),
                Err(e) => errors.push(err("uri", e)),
            }
        }
        let mut hosts: Vec<String> = Vec::with_capacity(spec.hosts.len());
        for h in &spec.hosts {
            let h = h.to_ascii_lowercase();
            if !valid_host(&h) {
                errors.push(err("hosts", format!("invalid host {h:?}")));
            } else if !hosts.contains(&h) {
                hosts.push(h);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(RouteRule {
            filters: Arc::new(Filters {
                index: spec.index,
                methods,
                remote_addrs,
                vars,
                uris: spec.uris.iter().map(|u| Arc::from(u.as_str())).collect(),
            }),
            uris: uris.into(),
            hosts: hosts.into(),
            priority: spec.priority,
            order,
        })
    }

    /// The route-table slot the rule answers with.
    pub fn index(&self) -> usize {
        self.filters.index
    }

    fn insert_into(&self, idx: &mut PathIndex) {
        for (pos, (kind, uri_len)) in self.uris.iter().enumerate() {
            let base = Cand {
                filters: self.filters.clone(),
                priority: self.priority,
                uri_len: *uri_len,
                order: self.order,
                uri_pos: u16::try_from(pos).unwrap_or(u16::MAX),
                pattern: None,
            };
            match kind {
                UriKind::Exact(p) => idx.insert_exact(p, base),
                UriKind::Prefix(p) => idx.insert_prefix(p.as_bytes(), base),
                UriKind::Param { prefix, pattern } => idx.insert_prefix(
                    prefix.as_bytes(),
                    Cand {
                        pattern: Some(Arc::new(pattern.clone())),
                        ..base
                    },
                ),
            }
        }
    }

    fn remove_from(&self, idx: &mut PathIndex) {
        for (kind, _) in self.uris.iter() {
            match kind {
                UriKind::Exact(p) => idx.remove_exact(p, &self.filters),
                UriKind::Prefix(p) | UriKind::Param { prefix: p, .. } => {
                    idx.remove_prefix(p.as_bytes(), &self.filters)
                }
            }
        }
    }
}

/// The compiled router for one snapshot.
#[derive(Debug, Clone, Default)]
pub struct Router {
    by_host: PMap<String, PathIndex>,
    /// `*suffix` hosts, keyed by the suffix (`.example.com` for `*.example.com`; the empty suffix
    /// for `*`, which takes any host). APISIX stores these as prefixes of the reversed host, so
    /// `*example.com` (no dot) also takes `example.com` itself; probing by length does the same.
    by_wildcard: PMap<String, PathIndex>,
    /// Distinct wildcard suffix lengths, longest first, each with how many suffixes have it.
    wildcard_lens: Arc<Vec<(usize, usize)>>,
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

/// The index of `key` in `map`, made when missing.
fn index_of<'a>(map: &'a mut PMap<String, PathIndex>, key: &str) -> (&'a mut PathIndex, bool) {
    let made = !map.contains_key(key);
    if made {
        map.insert(key.to_string(), PathIndex::default());
    }
    match map.get_mut(key) {
        Some(i) => (i, made),
        None => unreachable!("inserted just above"),
    }
}

impl Router {
    /// Compiles the routes (their order is their `index`). Every invalid route is reported,
    /// not just the first.
    pub fn build(specs: Vec<RouteSpec>) -> Result<Router, Vec<RouterError>> {
        let mut errors = Vec::new();
        let mut rules = Vec::with_capacity(specs.len());
        for spec in &specs {
            match RouteRule::compile(spec, spec.index) {
                Ok(r) => rules.push(r),
                Err(e) => errors.extend(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut r = Router::default();
        for rule in &rules {
            r.insert(rule);
        }
        Ok(r)
    }

    /// Adds a route.
    pub fn insert(&mut self, rule: &RouteRule) {
        if rule.hosts.is_empty() {
            rule.insert_into(&mut self.any_host);
        }
        for h in rule.hosts.iter() {
            match h.strip_prefix('*') {
                Some(suffix) => {
                    let (idx, made) = index_of(&mut self.by_wildcard, suffix);
                    rule.insert_into(idx);
                    if made {
                        self.count_wildcard(suffix.len(), 1);
                    }
                }
                None => rule.insert_into(index_of(&mut self.by_host, h).0),
            }
        }
    }

    /// Removes a route added with [`Router::insert`] (the same rule, or a clone of it).
    pub fn remove(&mut self, rule: &RouteRule) {
        if rule.hosts.is_empty() {
            rule.remove_from(&mut self.any_host);
        }
        for h in rule.hosts.iter() {
            let (map, key) = match h.strip_prefix('*') {
                Some(suffix) => (&mut self.by_wildcard, suffix),
                None => (&mut self.by_host, h.as_str()),
            };
            let Some(idx) = map.get_mut(key) else {
                continue;
            };
            rule.remove_from(idx);
            if idx.is_empty() {
                map.remove(key);
                if h.starts_with('*') {
                    self.count_wildcard(key.len(), -1);
                }
            }
        }
    }

    fn count_wildcard(&mut self, len: usize, delta: isize) {
        let lens = Arc::make_mut(&mut self.wildcard_lens);
        match lens.iter().position(|(l, _)| *l == len) {
            Some(i) => {
                let n = lens[i].1 as isize + delta;
                if n <= 0 {
                    lens.remove(i);
                } else {
                    lens[i].1 = n as usize;
                }
            }
            None if delta > 0 => {
                let at = lens.partition_point(|(l, _)| *l > len);
                lens.insert(at, (len, delta as usize));
            }
            None => {}
        }
    }

    /// The first route that matches, in APISIX's precedence.
    pub fn find<R: RequestVars + ?Sized>(&self, req: &R) -> Option<RouteMatch> {
        let host = req.host();
        let path = req.path();
        if !self.by_host.is_empty()
            && let Some(idx) = self.by_host.get(host)
            && let Some(m) = self.find_in(idx, path, req)
        {
            return Some(RouteMatch {
                host: MatchedHost::Exact,
                ..m
            });
        }
        for &(len, _) in self.wildcard_lens.iter() {
            if len > host.len() || !host.is_char_boundary(host.len() - len) {
                continue;
            }
            if let Some(idx) = self.by_wildcard.get(&host[host.len() - len..])
                && let Some(m) = self.find_in(idx, path, req)
            {
                return Some(RouteMatch {
                    host: MatchedHost::Wildcard(len),
                    ..m
                });
            }
        }
        self.find_in(&self.any_host, path, req)
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
            let f = &*c.filters;
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
                uri: f.uris.get(c.uri_pos as usize).cloned(),
                host: MatchedHost::Any,
            });
        }
        None
    }
}

#[cfg(test)]
mod tests;
