//! APISIX route matching over one config snapshot.
//!
//! Semantics follow APISIX's default `radixtree_host_uri` router (lua-resty-radixtree underneath):
//! routes with hosts are indexed by host first (exact host, then the longest `*.suffix` wildcard),
//! and only when no host-indexed route matches are routes without hosts tried. Within one index,
//! exact paths come first, then path prefixes (`/foo*`, `:param` segments) from the longest to the
//! shortest; candidates that share a path are ordered by descending `priority`, then by position in
//! the route table. A candidate whose filters (`methods`, `remote_addrs`, `vars`) fail falls through to
//! the next one. This module never does I/O and never allocates on the match path beyond the captured
//! `:param` values.

use std::borrow::Cow;
use std::net::IpAddr;

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
}

/// A route that cannot be compiled, naming the route id and field.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("route {id}: {field}: {message}")]
pub struct RouterError {
    pub id: String,
    pub field: &'static str,
    pub message: String,
}

/// The compiled router for one snapshot.
#[derive(Debug, Default)]
pub struct Router {}

impl Router {
    /// Compiles the routes. Every invalid route is reported, not just the first.
    pub fn build(specs: Vec<RouteSpec>) -> Result<Router, Vec<RouterError>> {
        let _ = specs;
        todo!("router: being written")
    }

    /// The first route that matches, in APISIX's precedence.
    pub fn find<R: RequestVars + ?Sized>(&self, req: &R) -> Option<RouteMatch> {
        let _ = req;
        todo!("router: being written")
    }
}
