//! The resource model: APISIX's `routes`, `services`, `upstreams` and the other resources, as they
//! appear in `conf/apisix.yaml`, in etcd values and in Admin API bodies.
//!
//! These are plain data with APISIX's field names and defaults. Validation that needs more than the
//! shape (cross-references, value ranges) lives in `config::validate`; compilation into matchers
//! and pickers lives in `config::snapshot`. This module never does I/O.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

/// A resource id. APISIX accepts ids as strings or integers (`id: 1` in YAML); both become a string.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Id(pub String);

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match Value::deserialize(d)? {
            Value::String(s) if !s.is_empty() => Ok(Id(s)),
            Value::Number(n) if n.is_u64() || n.is_i64() => Ok(Id(n.to_string())),
            other => Err(serde::de::Error::custom(format!(
                "id must be a non-empty string or an integer, got {other}"
            ))),
        }
    }
}

impl std::fmt::Display for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `plugins: {name: conf}` on a route, service, consumer, global rule or plugin config.
/// Kept as JSON: each plugin validates its own conf.
pub type PluginMap = BTreeMap<String, Value>;

/// `timeout: {connect, send, read}` in seconds (fractions allowed), on routes and upstreams.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Timeout {
    pub connect: f64,
    pub send: f64,
    pub read: f64,
}

/// A route: what to match and where to send it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uris: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote_addrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// lua-resty-expr expressions, evaluated by `router::expr`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vars: Option<Value>,
    /// A Lua function source; needs the LuaJIT host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter_func: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub script: Option<String>,
    #[serde(default)]
    pub priority: i64,
    /// 1 enabled (default), 0 disabled.
    #[serde(default = "one")]
    pub status: i64,
    #[serde(default, skip_serializing_if = "PluginMap::is_empty")]
    pub plugins: PluginMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_config_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_websocket: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
    /// moongate's extension: Lua code run in a phase, as nginx's `*_by_lua_block` directives
    /// (`rewrite_by_lua`, `access_by_lua`, `content_by_lua`, `header_filter_by_lua`,
    /// `body_filter_by_lua`, `log_by_lua`). A `content_by_lua` route answers from Lua.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lua_handlers: BTreeMap<String, String>,
    /// moongate-internal: what the route does besides proxying, set by config providers whose
    /// format has such route actions (Envoy's `prefix_rewrite`, `host_rewrite_literal`,
    /// `direct_response`, `redirect`). Never read from or written to APISIX resources.
    #[serde(skip)]
    pub action: RouteAction,
}

/// Route actions APISIX expresses with plugins and other formats put on the route itself.
/// The default does nothing: the request is proxied as it came.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RouteAction {
    /// Replace this leading part of `$uri` before proxying.
    pub prefix_rewrite: Option<PrefixRewrite>,
    /// The `Host` header the upstream receives.
    pub host_rewrite: Option<String>,
    /// Answer without proxying, once the plugins have run.
    pub answer: Option<FixedAnswer>,
}

impl RouteAction {
    pub fn is_none(&self) -> bool {
        *self == RouteAction::default()
    }
}

/// `prefix_rewrite`: a request whose path starts with `prefix` goes upstream with that part
/// replaced by `replacement`.
#[derive(Debug, Clone, PartialEq)]
pub struct PrefixRewrite {
    pub prefix: String,
    pub replacement: String,
}

/// An answer the gateway gives itself instead of proxying.
#[derive(Debug, Clone, PartialEq)]
pub enum FixedAnswer {
    /// A status and body (`text/plain` when the body is not empty).
    Direct {
        status: u16,
        body: String,
    },
    Redirect(RedirectAction),
    /// APISIX's `404 Route Not Found` JSON answer: what a request no route matched gets once
    /// the global rules ran (`proxy::unrouted`).
    RouteNotFound,
}

/// A redirect built from the request: each `Some` part replaces that part of the request's URL.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RedirectAction {
    pub status: u16,
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub path: Option<String>,
    /// Replace the matched prefix of the path (the route's prefix) with this.
    pub prefix_rewrite: Option<PrefixRewrite>,
    pub strip_query: bool,
}

/// The directives `lua_handlers` accepts.
pub const LUA_HANDLERS: [&str; 6] = [
    "rewrite_by_lua",
    "access_by_lua",
    "content_by_lua",
    "header_filter_by_lua",
    "body_filter_by_lua",
    "log_by_lua",
];

fn one() -> i64 {
    1
}

/// A service: upstream and plugins shared by routes that name it in `service_id`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    #[serde(default, skip_serializing_if = "PluginMap::is_empty")]
    pub plugins: PluginMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Upstream>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_id: Option<Id>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enable_websocket: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
}

/// How the balancer picks a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BalancerType {
    #[default]
    Roundrobin,
    Chash,
    Ewma,
    LeastConn,
}

/// What `chash` hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum HashOn {
    #[default]
    Vars,
    Header,
    Cookie,
    Consumer,
    VarsCombinations,
}

/// Which Host header the upstream receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum PassHost {
    /// The client's Host, unchanged.
    #[default]
    Pass,
    /// The picked node's host (and port when not the scheme's default).
    Node,
    /// `upstream_host`.
    Rewrite,
}

/// `keepalive_pool`: the idle connections kept per upstream per worker.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KeepalivePool {
    #[serde(default = "KeepalivePool::default_size")]
    pub size: usize,
    /// Seconds an idle connection is kept.
    #[serde(default = "KeepalivePool::default_idle_timeout")]
    pub idle_timeout: f64,
    /// Requests served on one connection before it is closed.
    #[serde(default = "KeepalivePool::default_requests")]
    pub requests: u64,
}

impl KeepalivePool {
    fn default_size() -> usize {
        320
    }
    fn default_idle_timeout() -> f64 {
        60.0
    }
    fn default_requests() -> u64 {
        1000
    }
}

impl Default for KeepalivePool {
    fn default() -> Self {
        KeepalivePool {
            size: Self::default_size(),
            idle_timeout: Self::default_idle_timeout(),
            requests: Self::default_requests(),
        }
    }
}

/// One upstream node, in the array form `{host, port, weight, priority}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Node {
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    pub weight: u32,
    #[serde(default)]
    pub priority: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

/// `nodes`: either `{"host:port": weight}` or `[{host, port, weight, priority}]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Nodes {
    Map(BTreeMap<String, u32>),
    List(Vec<Node>),
}

impl Default for Nodes {
    fn default() -> Self {
        Nodes::List(Vec::new())
    }
}

/// An upstream: the nodes a route proxies to and how.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub id: Option<Id>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desc: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: BalancerType,
    #[serde(default)]
    pub nodes: Nodes,
    #[serde(default)]
    pub hash_on: HashOn,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Timeout>,
    #[serde(default = "default_scheme")]
    pub scheme: String,
    #[serde(default)]
    pub pass_host: PassHost,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_pool: Option<KeepalivePool>,
    /// Health checks: refused until the health-check issue lands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checks: Option<Value>,
    /// Service discovery: refused until a discovery provider exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub discovery_args: Option<Value>,
    /// Client certificates towards the upstream: refused until the TLS issue lands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_time: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_time: Option<i64>,
}

fn default_scheme() -> String {
    "http".to_string()
}

/// Resources whose features land in later issues. They are parsed into the snapshot as JSON objects
/// with an id, so a config that carries them loads today and keeps loading when they start working.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpaqueResource {
    pub id: Id,
    pub value: Value,
}
