//! The node configuration, `conf/config.yaml`, in APISIX's shape.
//!
//! The file is read as a tree, so every key can be accounted for: keys moongate implements are
//! read with APISIX's defaults; any other key produces exactly one warning naming its dotted path
//! (never an error), because a config written for APISIX must still start moongate. Values of
//! implemented keys that are wrong are errors, all of them collected.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use super::units::{parse_size, parse_time};
use crate::observability::access::DEFAULT_FORMAT;

/// One listening address from `apisix.node_listen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    pub ip: IpAddr,
    pub port: u16,
    pub http2: bool,
}

/// Where routes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// APISIX's standalone file (`conf/apisix.yaml`), reloaded on change.
    Yaml { path: PathBuf },
    /// `traditional` + `embedded`: the Admin API writes to the embedded store in
    /// `data_file`; `seed` (`conf/apisix.yaml`) fills it once when the file does not exist.
    Embedded { data_file: PathBuf, seed: PathBuf },
    /// An Envoy v3 bootstrap file (`deployment.role_data_plane.envoy_file`, default
    /// `conf/envoy.yaml`), reloaded on change; its listeners replace `apisix.node_listen`.
    Envoy { path: PathBuf },
    /// `config_provider: etcd`: the config lives in etcd (`deployment.etcd`), shared by every
    /// node; `last_good` is where this node keeps its last good listing, served when etcd is
    /// down at start.
    Etcd {
        etcd: EtcdConfig,
        last_good: PathBuf,
    },
}

impl Provider {
    /// The provider's name as `config_provider` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Provider::Yaml { .. } => "yaml",
            Provider::Embedded { .. } => "embedded",
            Provider::Envoy { .. } => "envoy",
            Provider::Etcd { .. } => "etcd",
        }
    }
}

/// `deployment.role`, APISIX's names: what a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Data plane and Admin API in one node.
    Traditional,
    /// Serves traffic from the config, never writes it (no Admin API).
    DataPlane,
    /// The Admin API only: no data-plane listener.
    ControlPlane,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Traditional => "traditional",
            Role::DataPlane => "data_plane",
            Role::ControlPlane => "control_plane",
        }
    }

    /// True when the node proxies traffic (every role but `control_plane`).
    pub fn serves_data(self) -> bool {
        self != Role::ControlPlane
    }
}

/// `deployment.etcd`, as APISIX names its keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// `host`: the cluster's endpoints, `http://` or `https://` URLs, tried in order.
    pub hosts: Vec<String>,
    /// `prefix`, default `/apisix`, without a trailing `/`.
    pub prefix: String,
    /// `timeout` (seconds, default 30): the longest one etcd request (connect included) may
    /// take before the next endpoint is tried.
    pub timeout: Duration,
    /// `user` and `password`, for etcd's own authentication.
    pub user: Option<(String, String)>,
    /// `tls`: used for `https://` endpoints.
    pub tls: EtcdTls,
    /// `apisix.ssl.ssl_trusted_certificate`: CA certificates trusted besides the webpki roots
    /// (APISIX verifies etcd against the same file).
    pub trusted_ca: Option<PathBuf>,
}

/// `deployment.etcd.tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// `cert` and `key`: a client certificate (PEM files), for etcd's `--client-cert-auth`.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `verify` (default true): check etcd's certificate chain and name.
    pub verify: bool,
    /// `sni`: the name sent and checked; default the endpoint's host.
    pub sni: Option<String>,
}

/// `deployment.admin`: the Admin API of a `traditional` node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// `admin_listen`, default `127.0.0.1:9180`.
    pub listen: std::net::SocketAddr,
    /// `admin_key`: (name, key, role); an empty key is generated at start.
    pub keys: Vec<(String, String, String)>,
    /// `admin_key_required: false` turns key checks off.
    pub key_required: bool,
    /// `allow_admin` CIDRs; empty = everyone.
    pub allow: Vec<String>,
    /// `allow_key_in_query`: accept `?api_key=` and the `x_api_key` cookie too.
    pub key_in_query: bool,
    /// `serve_on_data_port`: `/apisix/admin/*` is also answered on `node_listen`, as APISIX's
    /// test harness reaches it on port 1984.
    pub serve_on_data_port: bool,
    /// `enable_admin_cors` (default true): answers carry `Access-Control-Allow-Origin: *`.
    pub cors: bool,
    /// `admin_api_version`: `v3` (the default) or APISIX 2's envelopes (`default`, `v2`).
    pub v2: bool,
}

/// `apisix.enable_control` and `apisix.control`: the control API's listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlConfig {
    /// `apisix.control.ip`/`port` (default `127.0.0.1:9090`); `None` when
    /// `apisix.enable_control` is false.
    pub listen: Option<std::net::SocketAddr>,
    /// moongate's `apisix.control.serve_on_data_port`: `/v1/*` is also answered on
    /// `node_listen`, as APISIX's test harness reaches the control API on port 1984.
    pub serve_on_data_port: bool,
}

/// `apisix.ssl` (and `apisix.enable_http2`, `apisix.data_encryption.keyring`): the TLS
/// listeners and how they handshake.
#[derive(Debug, Clone, PartialEq)]
pub struct SslConfig {
    /// `apisix.ssl.enable` (default true, as APISIX).
    pub enable: bool,
    /// Where TLS is served: `apisix.ssl.listen` (default port 9443), or moongate's
    /// `moongate.tls_listen` when a test harness serves elsewhere. `http2` is
    /// `apisix.enable_http2`. Empty when TLS is off.
    pub listen: Vec<ListenAddr>,
    /// The ports `apisix.ssl.listen` names, as plugins read them (redirect's `http_to_https`
    /// sends clients to one); empty when TLS is off.
    pub ports: Vec<u16>,
    /// `ssl_protocols`, split (default `TLSv1.2 TLSv1.3`).
    pub protocols: Vec<String>,
    /// `ssl_ciphers`, OpenSSL's syntax (default APISIX's list).
    pub ciphers: String,
    /// `ssl_session_tickets` (default false).
    pub session_tickets: bool,
    /// `fallback_sni`: the certificate name used for clients that send no SNI.
    pub fallback_sni: Option<String>,
    /// `apisix.enable_http2` (default true): `h2` is offered by ALPN on TLS listeners.
    pub http2: bool,
    /// `apisix.data_encryption.keyring` (default APISIX's two keys; `null` = none): decrypts
    /// stored private keys.
    pub keyring: Vec<String>,
    /// `apisix.ssl.key_encrypt_salt`: older APISIX's key encryption, tried after the keyring.
    pub key_encrypt_salt: Vec<String>,
}

/// The resolved node configuration.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub listen: Vec<ListenAddr>,
    pub worker_processes: usize,
    pub worker_shutdown_timeout: Duration,
    pub error_log: PathBuf,
    pub error_log_level: String,
    pub access_log: Option<PathBuf>,
    pub access_log_format: String,
    pub access_log_format_escape: String,
    /// 0 = unlimited (APISIX's default).
    pub client_max_body_size: u64,
    /// `large_client_header_buffers`: (count, size); `size` is the longest request/header line.
    pub large_client_header_buffers: (usize, usize),
    pub client_header_timeout: Duration,
    pub client_body_timeout: Duration,
    pub send_timeout: Duration,
    pub keepalive_timeout: Duration,
    pub keepalive_requests: u64,
    /// A new connection that sends nothing is closed after this (moongate's own setting).
    pub connection_idle_timeout: Duration,
    pub http2_idle_timeout: Duration,
    /// `real_ip_header` (default `X-Real-IP`), `real_ip_recursive` (default off) and
    /// `real_ip_from` (default `127.0.0.1`, `unix:`): whose header names the client address.
    pub real_ip_header: String,
    pub real_ip_recursive: bool,
    pub real_ip_from: Vec<String>,
    /// `apisix.trusted_addresses`: peers whose `X-Forwarded-For` is kept; when set, an
    /// untrusted peer's is dropped before plugins run. Empty = not configured.
    pub trusted_addresses: Vec<String>,
    /// `apisix.dns_resolver_valid`: seconds a resolved node name is used before it is resolved
    /// again (default 30).
    pub dns_resolver_valid: u64,
    pub provider: Provider,
    /// `deployment.role`.
    pub role: Role,
    /// The Admin API, `None` for a node without one (`data_plane`).
    pub admin: Option<AdminConfig>,
    /// The enabled plugin names (`plugins:`), when the file lists them.
    pub plugins: Option<Vec<String>>,
    /// The control API (`/v1/*`, plugins' `control_api()`).
    pub control: ControlConfig,
    /// `plugin_attr.prometheus.export_addr` (default `127.0.0.1:9091`): where the prometheus
    /// plugin's metrics are served when it is enabled; `None` with
    /// `plugin_attr.prometheus.enable_export_server: false` (then the data port serves them
    /// through `public-api`).
    pub prometheus_export: Option<std::net::SocketAddr>,
    /// `plugin_attr.prometheus.export_uri` (default `/apisix/prometheus/metrics`) and
    /// `metric_prefix` (default `apisix_`), for the native plugin's export.
    pub prometheus_export_uri: String,
    pub prometheus_prefix: String,
    /// `apisix.extra_lua_path`: `package.path` patterns searched before moongate's own.
    pub extra_lua_path: String,
    /// `lua_shared_dict` and `custom_lua_shared_dict`: (name, bytes), APISIX's defaults included.
    pub shared_dicts: Vec<(String, usize)>,
    /// `apisix.ssl.ssl_trusted_certificate`: CA certificates cosockets trust besides the
    /// system-independent webpki roots (`lua_ssl_trusted_certificate` in APISIX's nginx.conf).
    pub ssl_trusted_certificate: Option<PathBuf>,
    /// `apisix.ssl` and what goes with it: TLS listeners, protocols, ciphers, the keyring.
    pub ssl: SslConfig,
    /// `moongate.lua_memory_limit`: largest Lua heap per worker, bytes (0 = no limit).
    pub lua_memory_limit: u64,
    /// `moongate.lua_phase_timeout`: longest a phase's Lua may wait before the request fails.
    pub lua_phase_timeout: Duration,
    /// The whole file as parsed, for Lua's `core.config.local_conf()` (plugins read their own
    /// keys, `plugin_attr.NAME` and more, that moongate itself does not interpret).
    pub raw: Value,
}

/// The dictionaries APISIX declares by default (`nginx_config.http.lua_shared_dict`), so plugins
/// that expect them find them.
const DEFAULT_SHARED_DICTS: &[(&str, &str)] = &[
    ("internal-status", "10m"),
    ("plugin-limit-req", "10m"),
    ("plugin-limit-count", "10m"),
    // limit-count's reset times (sized as plugin-limit-count, as APISIX's template does) and
    // the lock its delayed Redis sync takes.
    ("plugin-limit-count-reset-header", "10m"),
    ("plugin-limit-count-lock", "10m"),
    ("prometheus-metrics", "10m"),
    // The prometheus exporter keeps its rendered scrape text here between refreshes.
    ("prometheus-cache", "10m"),
    ("plugin-limit-conn", "10m"),
    ("upstream-healthcheck", "10m"),
    ("worker-events", "10m"),
    ("lrucache-lock", "10m"),
    ("balancer-ewma", "10m"),
    ("balancer-ewma-locks", "10m"),
    ("balancer-ewma-last-touched-at", "10m"),
    ("plugin-limit-req-redis-cluster-slot-lock", "1m"),
    ("plugin-limit-count-redis-cluster-slot-lock", "1m"),
    ("plugin-limit-conn-redis-cluster-slot-lock", "1m"),
    ("plugin-graphql-limit-count", "10m"),
    ("plugin-graphql-limit-count-reset-header", "10m"),
    ("plugin-ai-rate-limiting", "10m"),
    ("plugin-ai-rate-limiting-reset-header", "10m"),
    ("tracing_buffer", "10m"),
    ("plugin-api-breaker", "10m"),
    ("etcd-cluster-health-check", "10m"),
    ("discovery", "1m"),
    ("jwks", "1m"),
    ("introspection", "10m"),
    ("access-tokens", "1m"),
    ("ext-plugin", "1m"),
    ("tars", "1m"),
    ("cas-auth", "10m"),
    ("ocsp-stapling", "10m"),
    ("mcp-session", "10m"),
    // The memory zone of APISIX's default `apisix.proxy_cache.zones` (proxy-cache's
    // `cache_strategy: memory`), which its template declares as a shared dict.
    ("memory_cache", "50m"),
];

/// A value in `config.yaml` that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// A key moongate does not use.
pub type Warning = String;

/// Every key moongate reads. Anything else in the file gets one warning.
const KNOWN: &[&str] = &[
    "apisix",
    "apisix.node_listen",
    "apisix.enable_ipv6",
    "apisix.trusted_addresses",
    "apisix.dns_resolver_valid",
    "apisix.ssl",
    "apisix.ssl.enable",
    "apisix.ssl.listen",
    "apisix.ssl.ssl_protocols",
    "apisix.ssl.ssl_ciphers",
    "apisix.ssl.ssl_session_tickets",
    "apisix.ssl.fallback_sni",
    "apisix.ssl.key_encrypt_salt",
    "apisix.enable_http2",
    "apisix.data_encryption",
    "apisix.data_encryption.keyring",
    "apisix.data_encryption.enable_encrypt_fields",
    "moongate.tls_listen",
    "nginx_config",
    "nginx_config.worker_processes",
    "nginx_config.worker_shutdown_timeout",
    "nginx_config.error_log",
    "nginx_config.error_log_level",
    "nginx_config.http",
    "nginx_config.http.access_log",
    "nginx_config.http.enable_access_log",
    "nginx_config.http.access_log_format",
    "nginx_config.http.access_log_format_escape",
    "nginx_config.http.client_max_body_size",
    "nginx_config.http.client_header_buffer_size",
    "nginx_config.http.large_client_header_buffers",
    "nginx_config.http.client_header_timeout",
    "nginx_config.http.client_body_timeout",
    "nginx_config.http.send_timeout",
    "nginx_config.http.keepalive_timeout",
    "nginx_config.http.keepalive_requests",
    "nginx_config.http.connection_idle_timeout",
    "nginx_config.http.http2_idle_timeout",
    "nginx_config.http.real_ip_header",
    "nginx_config.http.real_ip_recursive",
    "nginx_config.http.real_ip_from",
    "deployment",
    "deployment.role",
    "deployment.role_data_plane",
    "deployment.role_data_plane.config_provider",
    "deployment.role_traditional",
    "deployment.role_traditional.config_provider",
    "deployment.admin",
    "deployment.admin.admin_listen",
    "deployment.admin.admin_listen.ip",
    "deployment.admin.admin_listen.port",
    "deployment.admin.admin_key",
    "deployment.admin.admin_key_required",
    "deployment.admin.allow_admin",
    "deployment.admin.allow_key_in_query",
    "deployment.admin.serve_on_data_port",
    "deployment.admin.enable_admin_cors",
    "deployment.admin.admin_api_version",
    "deployment.role_data_plane.envoy_file",
    "deployment.role_control_plane",
    "deployment.role_control_plane.config_provider",
    "deployment.etcd",
    "deployment.etcd.host",
    "deployment.etcd.prefix",
    "deployment.etcd.timeout",
    "deployment.etcd.user",
    "deployment.etcd.password",
    "deployment.etcd.tls",
    "deployment.etcd.tls.cert",
    "deployment.etcd.tls.key",
    "deployment.etcd.tls.verify",
    "deployment.etcd.tls.sni",
    "plugins",
    // Read by Lua plugins through core.config.local_conf() / plugin.plugin_attr().
    "plugin_attr",
    "apisix.extra_lua_path",
    "apisix.ssl.ssl_trusted_certificate",
    "nginx_config.http.lua_shared_dict",
    "nginx_config.http.custom_lua_shared_dict",
    "moongate",
    "moongate.lua_memory_limit",
    "moongate.lua_phase_timeout",
    // The control API (src/proxy/control.rs); `router` is read by apisix.control.router.
    "apisix.enable_control",
    "apisix.control",
    "apisix.control.ip",
    "apisix.control.port",
    "apisix.control.router",
    "apisix.control.serve_on_data_port",
];

/// Known keys whose value is a map of names the user chooses.
const MAP_VALUED: &[&str] = &[
    "plugin_attr",
    "nginx_config.http.lua_shared_dict",
    "nginx_config.http.custom_lua_shared_dict",
];

/// Top-level sections APISIX has; their unimplemented keys are "not supported yet", not "unknown".
const APISIX_SECTIONS: &[&str] = &[
    "apisix",
    "nginx_config",
    "deployment",
    "plugins",
    "stream_plugins",
    "plugin_attr",
    "discovery",
    "graphql",
    "ext-plugin",
    "wasm",
    "xrpc",
    "moongate",
];

struct Reader<'a> {
    root: &'a Value,
    errors: Vec<ConfigError>,
}

impl<'a> Reader<'a> {
    fn get(&self, path: &str) -> Option<&'a Value> {
        let mut v = self.root;
        for part in path.split('.') {
            v = v.as_object()?.get(part)?;
        }
        (!v.is_null()).then_some(v)
    }

    /// True when `path` is present and explicitly `null` (`admin_key: ~`).
    fn is_null(&self, path: &str) -> bool {
        let mut v = self.root;
        for part in path.split('.') {
            match v.as_object().and_then(|o| o.get(part)) {
                Some(x) => v = x,
                None => return false,
            }
        }
        v.is_null()
    }

    fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.to_string(),
            message: message.into(),
        });
    }

    fn string(&mut self, path: &str, default: &str) -> String {
        match self.get(path) {
            None => default.to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(other) => {
                self.error(path, format!("expected a string, got {other}"));
                default.to_string()
            }
        }
    }

    fn boolean(&mut self, path: &str, default: bool) -> bool {
        match self.get(path) {
            None => default,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                self.error(path, format!("expected true or false, got {other}"));
                default
            }
        }
    }

    fn time(&mut self, path: &str, default: &str) -> Duration {
        let s = self.string(path, default);
        parse_time(&s).unwrap_or_else(|e| {
            self.error(path, e);
            Duration::from_secs(60)
        })
    }

    fn size(&mut self, path: &str, default: &str) -> u64 {
        let s = self.string(path, default);
        parse_size(&s).unwrap_or_else(|e| {
            self.error(path, e);
            0
        })
    }

    fn number(&mut self, path: &str, default: u64) -> u64 {
        match self.get(path) {
            None => default,
            Some(v) => match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            {
                Some(n) => n,
                None => {
                    self.error(path, format!("expected a non-negative integer, got {v}"));
                    default
                }
            },
        }
    }
}

/// Walks the tree and warns once for every key that is not read.
fn unknown_keys(v: &Value, prefix: &str, out: &mut Vec<Warning>) {
    let Some(map) = v.as_object() else { return };
    for (k, child) in map {
        let path = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        if KNOWN.contains(&path.as_str()) {
            // `plugins` is a list; `apisix.ssl` etc. are sections whose children are checked;
            // the dictionary maps have user-chosen names as keys.
            if child.is_object() && !MAP_VALUED.contains(&path.as_str()) {
                unknown_keys(child, &path, out);
            }
            continue;
        }
        let top = path.split('.').next().unwrap_or("");
        if APISIX_SECTIONS.contains(&top) {
            out.push(format!("{path}: not supported by moongate yet; ignored"));
        } else {
            out.push(format!("{path}: unknown key; ignored"));
        }
    }
}

fn parse_listen(r: &mut Reader<'_>, enable_ipv6: bool) -> Vec<ListenAddr> {
    const PATH: &str = "apisix.node_listen";
    let items: Vec<Value> = match r.get(PATH) {
        None => vec![Value::from(9080)],
        Some(Value::Array(a)) => a.clone(),
        Some(v) => vec![v.clone()],
    };
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{PATH}[{i}]");
        let port_of = |v: &Value| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        };
        let (ip, port, http2) = match item {
            Value::Object(o) => {
                let ip = match o.get("ip").and_then(Value::as_str) {
                    None => None,
                    Some(s) => match s.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
                        Ok(ip) => Some(ip),
                        Err(_) => {
                            r.error(&format!("{at}.ip"), format!("invalid IP address {s:?}"));
                            continue;
                        }
                    },
                };
                let port = o.get("port").and_then(port_of);
                let http2 = o
                    .get("enable_http2")
                    .and_then(Value::as_bool)
                    .unwrap_or(false);
                (ip, port, http2)
            }
            other => (None, port_of(other), false),
        };
        let Some(port) = port.filter(|p| *p > 0 && *p <= u16::MAX as u64) else {
            r.error(
                &at,
                "expected a port number (1-65535) or {ip, port, enable_http2}",
            );
            continue;
        };
        let port = port as u16;
        match ip {
            Some(ip) => out.push(ListenAddr { ip, port, http2 }),
            None => {
                out.push(ListenAddr {
                    ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
                    port,
                    http2,
                });
                if enable_ipv6 {
                    out.push(ListenAddr {
                        ip: IpAddr::V6(Ipv6Addr::UNSPECIFIED),
                        port,
                        http2,
                    });
                }
            }
        }
    }
    out
}

/// One `apisix.ssl.listen` (or `moongate.tls_listen`) list, as APISIX's CLI reads it: items
/// `{ip, port, enable_http3}` (a bare port is accepted too); `port` defaults to 9443; without
/// `ip` the port is bound on 0.0.0.0 and, with `enable_ipv6`, on `[::]`.
fn parse_ssl_listen(
    r: &mut Reader<'_>,
    path: &str,
    items: &[Value],
    enable_ipv6: bool,
    http2: bool,
) -> (Vec<ListenAddr>, Vec<u16>) {
    let mut out = Vec::new();
    let mut ports = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let (ip, port) = match item {
            Value::Object(o) => {
                if o.contains_key("enable_http2") {
                    r.error(
                        &format!("{at}.enable_http2"),
                        "port level enable_http2 in ssl.listen is deprecated from 3.9 version, and you should use enable_http2 in apisix level",
                    );
                }
                if o.get("enable_http3").and_then(Value::as_bool) == Some(true) {
                    r.error(
                        &format!("{at}.enable_http3"),
                        "HTTP/3 (QUIC) is not supported by moongate; remove enable_http3",
                    );
                }
                let ip = match o.get("ip") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(s)) => {
                        match s.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>() {
                            Ok(ip) => Some(ip),
                            Err(_) => {
                                r.error(&format!("{at}.ip"), format!("invalid IP address {s:?}"));
                                continue;
                            }
                        }
                    }
                    Some(other) => {
                        r.error(
                            &format!("{at}.ip"),
                            format!("https listen ip format error, must be string, got {other}"),
                        );
                        continue;
                    }
                };
                let port = match o.get("port") {
                    None | Some(Value::Null) => Some(9443),
                    Some(v) => v.as_u64(),
                };
                (ip, port)
            }
            Value::Number(n) => (None, n.as_u64()),
            _ => (None, None),
        };
        let Some(port) = port.filter(|p| *p > 0 && *p <= u16::MAX as u64) else {
            r.error(&at, "expected {ip, port} with a port number (1-65535)");
            continue;
        };
        let port = port as u16;
        ports.push(port);
        let mut push = |ip: IpAddr| {
            let a = ListenAddr { ip, port, http2 };
            if !out.contains(&a) {
                out.push(a);
            }
        };
        match ip {
            Some(ip) => push(ip),
            None => {
                push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                if enable_ipv6 {
                    push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                }
            }
        }
    }
    (out, ports)
}

/// `apisix.ssl` with APISIX's defaults: on, port 9443, TLS 1.2 and 1.3.
fn parse_ssl(
    r: &mut Reader<'_>,
    enable_ipv6: bool,
    plain: &[ListenAddr],
    warnings: &mut Vec<Warning>,
) -> SslConfig {
    use crate::server::tls::settings as tls;
    let enable = r.boolean("apisix.ssl.enable", true);
    let http2 = r.boolean("apisix.enable_http2", true);
    let listen_items: Vec<Value> = match r.get("apisix.ssl.listen") {
        None => vec![serde_json::json!({"port": 9443})],
        Some(Value::Array(a)) => a.clone(),
        Some(other) => {
            r.error(
                "apisix.ssl.listen",
                format!("expected a list of {{ip, port}}, got {other}"),
            );
            Vec::new()
        }
    };
    let (mut listen, ports) =
        parse_ssl_listen(r, "apisix.ssl.listen", &listen_items, enable_ipv6, http2);
    if let Some(v) = r.get("moongate.tls_listen") {
        let items = match v {
            Value::Array(a) => a.clone(),
            other => vec![other.clone()],
        };
        listen = parse_ssl_listen(r, "moongate.tls_listen", &items, enable_ipv6, http2).0;
    }
    for a in &listen {
        if plain.iter().any(|p| p.port == a.port && p.ip == a.ip) {
            r.error(
                "apisix.ssl.listen",
                format!("https listen port {} conflicts with http", a.port),
            );
        }
    }
    let protocols_text = r.string("apisix.ssl.ssl_protocols", tls::DEFAULT_PROTOCOLS);
    let protocols: Vec<String> = protocols_text
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let (versions, refused) = tls::parse_protocols(protocols.iter().map(String::as_str));
    for p in &refused {
        if p.starts_with("TLSv") || p.starts_with("SSLv") {
            warnings.push(format!(
                "apisix.ssl.ssl_protocols: {p} is not offered (moongate speaks TLSv1.2 and TLSv1.3 only)"
            ));
        } else {
            r.error(
                "apisix.ssl.ssl_protocols",
                format!("unknown protocol {p:?} (TLSv1.2, TLSv1.3)"),
            );
        }
    }
    if enable && versions.is_empty() && refused.iter().all(|p| p.starts_with("TLSv")) {
        r.error(
            "apisix.ssl.ssl_protocols",
            format!("{protocols_text:?}: none of these can be offered; moongate speaks TLSv1.2 and TLSv1.3"),
        );
    }
    let ciphers = r.string("apisix.ssl.ssl_ciphers", tls::DEFAULT_CIPHERS);
    let (suites, ignored) = tls::parse_ciphers(&ciphers);
    if r.get("apisix.ssl.ssl_ciphers").is_some() && !ignored.is_empty() {
        warnings.push(format!(
            "apisix.ssl.ssl_ciphers: not offered (rustls has no such suite, or the keyword is not understood): {}",
            ignored.join(":")
        ));
    }
    if suites.is_empty()
        && versions
            .iter()
            .any(|v| v.version == rustls::ProtocolVersion::TLSv1_2)
    {
        r.error(
            "apisix.ssl.ssl_ciphers",
            "none of these TLSv1.2 suites can be offered; rustls has ECDHE-(ECDSA|RSA)-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)",
        );
    }
    let session_tickets = r.boolean("apisix.ssl.ssl_session_tickets", false);
    let fallback_sni = Some(r.string("apisix.ssl.fallback_sni", ""))
        .filter(|s| !s.is_empty())
        .map(|s| crate::config::ssl::normalize_sni(&s));
    let strings = |r: &mut Reader<'_>, path: &str, v: Option<&Value>| -> Vec<String> {
        match v {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|k| match k {
                    Value::String(s) => Some(s.clone()),
                    other => {
                        r.error(path, format!("expected a string key, got {other}"));
                        None
                    }
                })
                .collect(),
            Some(other) => {
                r.error(
                    path,
                    format!("expected a key or a list of keys, got {other}"),
                );
                Vec::new()
            }
        }
    };
    // `keyring: null` turns encryption off; no `keyring` key at all means APISIX's default.
    let section = r.root.get("apisix").and_then(|a| a.get("data_encryption"));
    let keyring = match section
        .and_then(|d| d.as_object())
        .map(|d| d.get("keyring"))
    {
        Some(Some(v)) => strings(r, "apisix.data_encryption.keyring", Some(v)),
        _ => crate::config::keyring::DEFAULT_KEYRING
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    let salt_value = r.get("apisix.ssl.key_encrypt_salt").cloned();
    let key_encrypt_salt = strings(r, "apisix.ssl.key_encrypt_salt", salt_value.as_ref());
    if let Err(e) = crate::config::keyring::Keyring::new(&keyring, &key_encrypt_salt) {
        r.error("apisix.data_encryption.keyring", e.to_string());
    }
    SslConfig {
        enable,
        listen: if enable { listen } else { Vec::new() },
        ports: if enable { ports } else { Vec::new() },
        protocols,
        ciphers,
        session_tickets,
        fallback_sni,
        http2,
        keyring,
        key_encrypt_salt,
    }
}

impl NodeConfig {
    /// Reads `file` (relative paths in it start from `prefix`). A missing file means all
    /// defaults, as APISIX runs with its defaults.
    pub fn load(
        prefix: &Path,
        file: &Path,
    ) -> Result<(NodeConfig, Vec<Warning>), Vec<ConfigError>> {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(vec![ConfigError {
                    path: file.display().to_string(),
                    message: format!("cannot read: {e}"),
                }]);
            }
        };
        Self::parse(prefix, &text)
    }

    /// Parses the text of a `config.yaml`.
    pub fn parse(
        prefix: &Path,
        text: &str,
    ) -> Result<(NodeConfig, Vec<Warning>), Vec<ConfigError>> {
        let root: Value = if text.trim().is_empty() {
            Value::Object(Map::new())
        } else {
            super::yaml_doc::parse(text).map_err(|e| {
                vec![ConfigError {
                    path: "config.yaml".into(),
                    message: e.to_string(),
                }]
            })?
        };
        if !root.is_object() && !root.is_null() {
            return Err(vec![ConfigError {
                path: "config.yaml".into(),
                message: "expected a mapping at the top level".into(),
            }]);
        }
        let mut warnings = Vec::new();
        unknown_keys(&root, "", &mut warnings);
        let mut r = Reader {
            root: &root,
            errors: Vec::new(),
        };

        let enable_ipv6 = r.boolean("apisix.enable_ipv6", true);
        let listen = parse_listen(&mut r, enable_ipv6);
        let ssl = parse_ssl(&mut r, enable_ipv6, &listen, &mut warnings);

        let worker_processes = match r.get("nginx_config.worker_processes") {
            None => available_cores(),
            Some(Value::String(s)) if s == "auto" => available_cores(),
            Some(v) => match v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            {
                Some(n) if n >= 1 => n as usize,
                _ => {
                    r.error(
                        "nginx_config.worker_processes",
                        format!("expected \"auto\" or an integer >= 1, got {v}"),
                    );
                    1
                }
            },
        };
        let worker_shutdown_timeout = r.time("nginx_config.worker_shutdown_timeout", "240s");
        let error_log = prefix.join(r.string("nginx_config.error_log", "logs/error.log"));
        let error_log_level = r.string("nginx_config.error_log_level", "warn");
        if crate::observability::errlog::NginxLevel::parse(&error_log_level).is_none() {
            r.error("nginx_config.error_log_level", format!("unknown level {error_log_level:?} (debug, info, notice, warn, error, crit, alert, emerg)"));
        }
        let access_log = if r.boolean("nginx_config.http.enable_access_log", true) {
            let p = r.string("nginx_config.http.access_log", "logs/access.log");
            (p != "off").then(|| prefix.join(p))
        } else {
            None
        };
        let access_log_format = r.string("nginx_config.http.access_log_format", DEFAULT_FORMAT);
        let access_log_format_escape =
            r.string("nginx_config.http.access_log_format_escape", "default");
        let client_max_body_size = r.size("nginx_config.http.client_max_body_size", "0");
        let lchb = r.string("nginx_config.http.large_client_header_buffers", "4 8k");
        let large_client_header_buffers =
            match lchb.split_whitespace().collect::<Vec<_>>().as_slice() {
                [n, size] => match (n.parse::<usize>(), parse_size(size)) {
                    (Ok(n), Ok(s)) if n > 0 && s > 0 => (n, s as usize),
                    _ => {
                        r.error(
                            "nginx_config.http.large_client_header_buffers",
                            format!("expected \"NUMBER SIZE\" like \"4 8k\", got {lchb:?}"),
                        );
                        (4, 8192)
                    }
                },
                _ => {
                    r.error(
                        "nginx_config.http.large_client_header_buffers",
                        format!("expected \"NUMBER SIZE\" like \"4 8k\", got {lchb:?}"),
                    );
                    (4, 8192)
                }
            };
        r.size("nginx_config.http.client_header_buffer_size", "1k");
        let client_header_timeout = r.time("nginx_config.http.client_header_timeout", "60s");
        let client_body_timeout = r.time("nginx_config.http.client_body_timeout", "60s");
        let send_timeout = r.time("nginx_config.http.send_timeout", "10s");
        let keepalive_timeout = r.time("nginx_config.http.keepalive_timeout", "60s");
        let keepalive_requests = r
            .number("nginx_config.http.keepalive_requests", 1000)
            .max(1);
        let dns_resolver_valid = r.number(
            "apisix.dns_resolver_valid",
            crate::upstream::dns::DEFAULT_VALID_SECS,
        );
        let connection_idle_timeout = r.time("nginx_config.http.connection_idle_timeout", "60s");
        let http2_idle_timeout = r.time("nginx_config.http.http2_idle_timeout", "180s");
        let real_ip_header = r.string("nginx_config.http.real_ip_header", "X-Real-IP");
        if real_ip_header.eq_ignore_ascii_case("proxy_protocol") {
            r.error(
                "nginx_config.http.real_ip_header",
                "proxy_protocol is not supported (moongate listeners do not speak the PROXY protocol); name a header",
            );
        }
        let real_ip_recursive = match r.get("nginx_config.http.real_ip_recursive") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if s == "on" => true,
            Some(Value::String(s)) if s == "off" => false,
            Some(other) => {
                r.error(
                    "nginx_config.http.real_ip_recursive",
                    format!("expected \"on\" or \"off\", got {other}"),
                );
                false
            }
        };
        let real_ip_from: Vec<String> = match r.get("nginx_config.http.real_ip_from") {
            None => vec!["127.0.0.1".into(), "unix:".into()],
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            Some(other) => {
                r.error(
                    "nginx_config.http.real_ip_from",
                    format!("expected a list of addresses or CIDRs, got {other}"),
                );
                Vec::new()
            }
        };
        let trusted_addresses: Vec<String> = match r.get("apisix.trusted_addresses") {
            None => Vec::new(),
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect(),
            Some(other) => {
                r.error(
                    "apisix.trusted_addresses",
                    format!("expected a list of addresses or CIDRs, got {other}"),
                );
                Vec::new()
            }
        };
        if let Err(e) = crate::router::ip::IpSet::parse(&trusted_addresses) {
            r.error("apisix.trusted_addresses", e);
        }
        if let Err(e) =
            crate::proxy::realip::RealIp::new(&real_ip_header, real_ip_recursive, &real_ip_from)
        {
            r.error("nginx_config.http.real_ip_from", e);
        }

        let role_name = r.string("deployment.role", "data_plane");
        let (role, provider, admin) = parse_provider(&mut r, prefix, &role_name);
        if admin.is_none() && r.get("deployment.admin").is_some() {
            warnings.push(format!(
                "deployment.admin: ignored: a {role_name} node serves no Admin API (use role: traditional)"
            ));
        }
        if !matches!(provider, Provider::Etcd { .. }) && r.get("deployment.etcd").is_some() {
            warnings.push(format!(
                "deployment.etcd: ignored: this node's config provider is not etcd ({})",
                provider.name()
            ));
        }
        let plugins = match r.get("plugins") {
            None => None,
            Some(Value::Array(a)) => Some(
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            Some(other) => {
                r.error(
                    "plugins",
                    format!("expected a list of plugin names, got {other}"),
                );
                None
            }
        };
        let extra_lua_path = r.string("apisix.extra_lua_path", "");
        let ssl_trusted_certificate = match r.string("apisix.ssl.ssl_trusted_certificate", "") {
            s if s.is_empty() || s == "system" => None,
            s => Some(prefix.join(s)),
        };
        let mut shared_dicts: Vec<(String, usize)> = Vec::new();
        let declare = |name: &str, size: u64, out: &mut Vec<(String, usize)>| {
            out.retain(|(n, _)| n != name);
            out.push((name.to_string(), size as usize));
        };
        for (n, size) in DEFAULT_SHARED_DICTS {
            declare(n, parse_size(size).unwrap_or(1 << 20), &mut shared_dicts);
        }
        for path in [
            "nginx_config.http.lua_shared_dict",
            "nginx_config.http.custom_lua_shared_dict",
        ] {
            match r.get(path) {
                None => {}
                Some(Value::Object(m)) => {
                    for (name, v) in m {
                        let text = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            other => other.to_string(),
                        };
                        match parse_size(&text) {
                            Ok(size) if size > 0 => declare(name, size, &mut shared_dicts),
                            _ => r.error(
                                &format!("{path}.{name}"),
                                format!("expected a size like \"10m\", got {v}"),
                            ),
                        }
                    }
                }
                Some(other) => r.error(
                    path,
                    format!("expected a mapping of dictionary names to sizes, got {other}"),
                ),
            }
        }
        let control = parse_control(&mut r);
        let prometheus_export = parse_prometheus_export(&mut r);
        let prometheus_export_uri = r.string(
            "plugin_attr.prometheus.export_uri",
            "/apisix/prometheus/metrics",
        );
        let prometheus_prefix = r.string("plugin_attr.prometheus.metric_prefix", "apisix_");
        let lua_memory_limit = r.size("moongate.lua_memory_limit", "1g");
        let lua_phase_timeout = r.time("moongate.lua_phase_timeout", "60s");
        if !r.errors.is_empty() {
            return Err(r.errors);
        }
        Ok((
            NodeConfig {
                listen,
                worker_processes,
                worker_shutdown_timeout,
                error_log,
                error_log_level,
                access_log,
                access_log_format,
                access_log_format_escape,
                client_max_body_size,
                large_client_header_buffers,
                client_header_timeout,
                client_body_timeout,
                send_timeout,
                keepalive_timeout,
                keepalive_requests,
                connection_idle_timeout,
                http2_idle_timeout,
                real_ip_header,
                real_ip_recursive,
                real_ip_from,
                trusted_addresses,
                dns_resolver_valid,
                provider,
                role,
                admin,
                plugins,
                control,
                prometheus_export,
                prometheus_export_uri,
                prometheus_prefix,
                extra_lua_path,
                ssl_trusted_certificate,
                ssl,
                shared_dicts,
                lua_memory_limit,
                lua_phase_timeout,
                raw: root.clone(),
            },
            warnings,
        ))
    }
}

/// `deployment.role` and its provider, and the Admin API a `traditional` or `control_plane`
/// node serves.
fn parse_provider(
    r: &mut Reader<'_>,
    prefix: &Path,
    role: &str,
) -> (Role, Provider, Option<AdminConfig>) {
    let yaml = Provider::Yaml {
        path: prefix.join("conf/apisix.yaml"),
    };
    let etcd = |r: &mut Reader<'_>| Provider::Etcd {
        etcd: parse_etcd(r, prefix),
        last_good: prefix.join("data/etcd-last-good.json"),
    };
    match role {
        "data_plane" => {
            const KEY: &str = "deployment.role_data_plane.config_provider";
            let name = r.string(KEY, "yaml");
            let provider = match name.as_str() {
                "yaml" => yaml,
                "etcd" => etcd(r),
                "envoy" => Provider::Envoy {
                    path: prefix
                        .join(r.string("deployment.role_data_plane.envoy_file", "conf/envoy.yaml")),
                },
                other => {
                    r.error(
                        KEY,
                        format!(
                            "config provider {other:?} is not supported yet (\"yaml\", \"etcd\" or \"envoy\")"
                        ),
                    );
                    yaml
                }
            };
            (Role::DataPlane, provider, None)
        }
        "traditional" => {
            const KEY: &str = "deployment.role_traditional.config_provider";
            let name = r.string(KEY, "embedded");
            let provider = match name.as_str() {
                "embedded" => Provider::Embedded {
                    data_file: prefix.join("data/store.json"),
                    seed: prefix.join("conf/apisix.yaml"),
                },
                "etcd" => etcd(r),
                other => {
                    r.error(
                        KEY,
                        format!("unknown config provider {other:?} (embedded or etcd)"),
                    );
                    yaml
                }
            };
            (Role::Traditional, provider, Some(parse_admin(r)))
        }
        "control_plane" => {
            const KEY: &str = "deployment.role_control_plane.config_provider";
            let name = r.string(KEY, "etcd");
            let provider = if name == "etcd" {
                etcd(r)
            } else {
                r.error(
                    KEY,
                    format!("config provider {name:?}: a control_plane node works on etcd only"),
                );
                yaml
            };
            (Role::ControlPlane, provider, Some(parse_admin(r)))
        }
        other => {
            r.error(
                "deployment.role",
                format!(
                    "unknown role {other:?} (\"traditional\", \"data_plane\" or \"control_plane\")"
                ),
            );
            (Role::DataPlane, yaml, None)
        }
    }
}

/// `deployment.etcd`, with APISIX's defaults.
fn parse_etcd(r: &mut Reader<'_>, prefix: &Path) -> EtcdConfig {
    const HOST: &str = "deployment.etcd.host";
    let hosts: Vec<String> = match r.get(HOST) {
        None => vec!["http://127.0.0.1:2379".to_string()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| match v {
                Value::String(s) => s.trim_end_matches('/').to_string(),
                other => other.to_string(),
            })
            .collect(),
        Some(Value::String(s)) => vec![s.trim_end_matches('/').to_string()],
        Some(other) => {
            r.error(HOST, format!("expected a list of URLs, got {other}"));
            Vec::new()
        }
    };
    if r.get(HOST).is_some() && hosts.is_empty() {
        r.error(HOST, "expected at least one etcd URL");
    }
    for (i, h) in hosts.iter().enumerate() {
        let ok = ["http://", "https://"]
            .iter()
            .any(|s| h.strip_prefix(s).is_some_and(|rest| !rest.is_empty()))
            && h.parse::<http::Uri>().is_ok_and(|u| u.host().is_some());
        if !ok {
            r.error(
                &format!("{HOST}[{i}]"),
                format!(
                    "expected an http:// or https:// URL like \"http://127.0.0.1:2379\", got {h:?}"
                ),
            );
        }
    }
    let etcd_prefix = r.string("deployment.etcd.prefix", "/apisix");
    let etcd_prefix = etcd_prefix.trim_end_matches('/').to_string();
    if etcd_prefix.is_empty() {
        r.error(
            "deployment.etcd.prefix",
            "expected a key prefix like \"/apisix\"",
        );
    }
    let timeout = match r.number("deployment.etcd.timeout", 30) {
        0 => {
            r.error("deployment.etcd.timeout", "expected at least 1 (seconds)");
            30
        }
        n => n,
    };
    let user = r.get("deployment.etcd.user").is_some().then(|| {
        (
            r.string("deployment.etcd.user", ""),
            r.string("deployment.etcd.password", ""),
        )
    });
    if user.is_none() && r.get("deployment.etcd.password").is_some() {
        r.error(
            "deployment.etcd.password",
            "a password needs deployment.etcd.user too",
        );
    }
    let path = |r: &mut Reader<'_>, key: &str| {
        let s = r.string(key, "");
        (!s.is_empty()).then(|| prefix.join(s))
    };
    let tls = EtcdTls {
        cert: path(r, "deployment.etcd.tls.cert"),
        key: path(r, "deployment.etcd.tls.key"),
        verify: r.boolean("deployment.etcd.tls.verify", true),
        sni: Some(r.string("deployment.etcd.tls.sni", "")).filter(|s| !s.is_empty()),
    };
    if tls.cert.is_some() != tls.key.is_some() {
        r.error(
            "deployment.etcd.tls",
            "cert and key go together: give both or neither",
        );
    }
    let trusted_ca = match r.string("apisix.ssl.ssl_trusted_certificate", "") {
        s if s.is_empty() || s == "system" => None,
        s => Some(prefix.join(s)),
    };
    EtcdConfig {
        hosts,
        prefix: etcd_prefix,
        timeout: Duration::from_secs(timeout),
        user,
        tls,
        trusted_ca,
    }
}

/// `apisix.enable_control` (default true) and `apisix.control.{ip, port}` (default
/// `127.0.0.1:9090`), as APISIX reads them.
fn parse_control(r: &mut Reader<'_>) -> ControlConfig {
    const PATH: &str = "apisix.control";
    let serve_on_data_port = r.boolean("apisix.control.serve_on_data_port", false);
    if !r.boolean("apisix.enable_control", true) {
        return ControlConfig {
            listen: None,
            serve_on_data_port,
        };
    }
    let ip = r.string(&format!("{PATH}.ip"), "127.0.0.1");
    let port = r.number(&format!("{PATH}.port"), 9090);
    let listen = match (
        ip.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>(),
        u16::try_from(port),
    ) {
        (Ok(ip), Ok(port)) if port > 0 => std::net::SocketAddr::new(ip, port),
        _ => {
            r.error(
                PATH,
                format!("expected {{ip, port}} with a valid address and port, got {ip}:{port}"),
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 9090))
        }
    };
    ControlConfig {
        listen: Some(listen),
        serve_on_data_port,
    }
}

/// `plugin_attr.prometheus.enable_export_server` (default true) and `export_addr.{ip, port}`
/// (default `127.0.0.1:9091`), as APISIX reads them.
fn parse_prometheus_export(r: &mut Reader<'_>) -> Option<std::net::SocketAddr> {
    const PATH: &str = "plugin_attr.prometheus.export_addr";
    if !r.boolean("plugin_attr.prometheus.enable_export_server", true) {
        return None;
    }
    let ip = r.string(&format!("{PATH}.ip"), "127.0.0.1");
    let port = r.number(&format!("{PATH}.port"), 9091);
    match (
        ip.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>(),
        u16::try_from(port),
    ) {
        (Ok(ip), Ok(port)) if port > 0 => Some(std::net::SocketAddr::new(ip, port)),
        _ => {
            r.error(
                PATH,
                format!("expected {{ip, port}} with a valid address and port, got {ip}:{port}"),
            );
            None
        }
    }
}

fn parse_admin(r: &mut Reader<'_>) -> AdminConfig {
    const LISTEN: &str = "deployment.admin.admin_listen";
    let ip = r.string(&format!("{LISTEN}.ip"), "127.0.0.1");
    let port = r.number(&format!("{LISTEN}.port"), 9180);
    let listen = match (
        ip.trim_matches(|c| c == '[' || c == ']').parse::<IpAddr>(),
        u16::try_from(port),
    ) {
        (Ok(ip), Ok(port)) if port > 0 => std::net::SocketAddr::new(ip, port),
        _ => {
            r.error(
                LISTEN,
                format!("expected {{ip, port}} with a valid address and port, got {ip}:{port}"),
            );
            std::net::SocketAddr::from(([127, 0, 0, 1], 9180))
        }
    };
    const KEYS: &str = "deployment.admin.admin_key";
    let mut keys = Vec::new();
    // `admin_key: null` is APISIX's way to run without keys (its test harness does); absent
    // means one admin key, generated at start.
    let no_keys = r.is_null(KEYS);
    match r.get(KEYS) {
        None if no_keys => {}
        None => keys.push(("admin".to_string(), String::new(), "admin".to_string())),
        Some(Value::Array(list)) => {
            for (i, k) in list.iter().enumerate() {
                let field = |f: &str| k.get(f).and_then(Value::as_str).map(str::to_string);
                let role = field("role").unwrap_or_else(|| "admin".into());
                if role != "admin" && role != "viewer" {
                    r.error(
                        &format!("{KEYS}[{i}].role"),
                        format!("unknown role {role:?} (admin or viewer)"),
                    );
                }
                keys.push((
                    field("name").unwrap_or_else(|| format!("key{i}")),
                    field("key").unwrap_or_default(),
                    role,
                ));
            }
        }
        Some(other) => r.error(
            KEYS,
            format!("expected a list of {{name, key, role}}, got {other}"),
        ),
    }
    const ALLOW: &str = "deployment.admin.allow_admin";
    let allow = match r.get(ALLOW) {
        None => vec!["127.0.0.0/24".to_string()],
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Some(other) => {
            r.error(ALLOW, format!("expected a list of CIDRs, got {other}"));
            Vec::new()
        }
    };
    for c in &allow {
        if let Err(e) = crate::router::ip::Cidr::parse(c) {
            r.error(ALLOW, e);
        }
    }
    // As APISIX's CLI: no key at all is only accepted while the API is reachable from
    // loopback alone.
    if no_keys && allow != ["127.0.0.0/24"] {
        r.error(
            KEYS,
            "null (no Admin API key) is only allowed when deployment.admin.allow_admin is [127.0.0.0/24]; set a key",
        );
    }
    AdminConfig {
        listen,
        keys,
        key_required: r.boolean("deployment.admin.admin_key_required", true),
        allow,
        key_in_query: r.boolean("deployment.admin.allow_key_in_query", false),
        serve_on_data_port: r.boolean("deployment.admin.serve_on_data_port", false),
        cors: r.boolean("deployment.admin.enable_admin_cors", true),
        v2: match r
            .string("deployment.admin.admin_api_version", "v3")
            .as_str()
        {
            "v3" => false,
            "default" | "v2" => true,
            other => {
                r.error(
                    "deployment.admin.admin_api_version",
                    format!("expected v3 or default, got {other:?}"),
                );
                false
            }
        },
    }
}

fn available_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<(NodeConfig, Vec<Warning>), Vec<ConfigError>> {
        NodeConfig::parse(Path::new("/p"), text)
    }

    #[test]
    fn defaults_follow_apisix() {
        let (c, w) = parse("").unwrap();
        assert!(w.is_empty());
        assert_eq!(
            c.listen[0],
            ListenAddr {
                ip: "0.0.0.0".parse().unwrap(),
                port: 9080,
                http2: false
            }
        );
        assert_eq!(
            c.listen.len(),
            2,
            "IPv6 too, as APISIX's enable_ipv6 default"
        );
        assert_eq!(c.error_log, PathBuf::from("/p/logs/error.log"));
        assert_eq!(c.access_log, Some(PathBuf::from("/p/logs/access.log")));
        assert_eq!(c.client_max_body_size, 0);
        assert_eq!(c.large_client_header_buffers, (4, 8192));
        assert_eq!(c.keepalive_timeout, Duration::from_secs(60));
        assert_eq!(c.send_timeout, Duration::from_secs(10));
        assert_eq!(
            c.provider,
            Provider::Yaml {
                path: PathBuf::from("/p/conf/apisix.yaml")
            }
        );
    }

    #[test]
    fn the_control_api_follows_apisix_keys() {
        let (c, _) = parse("").unwrap();
        assert_eq!(
            c.control.listen,
            Some("127.0.0.1:9090".parse().unwrap()),
            "enabled on 127.0.0.1:9090 by default, as APISIX"
        );
        assert!(!c.control.serve_on_data_port);
        let (c, w) = parse("apisix:\n  control:\n    ip: 0.0.0.0\n    port: 9191\n    router: radixtree_uri_with_parameter\n    serve_on_data_port: true\n").unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.control.listen, Some("0.0.0.0:9191".parse().unwrap()));
        assert!(c.control.serve_on_data_port);
        let (c, _) = parse("apisix:\n  enable_control: false\n  control: {port: 9191}\n").unwrap();
        assert_eq!(c.control.listen, None);
        let errs = parse("apisix:\n  control: {ip: nowhere, port: 9191}\n").unwrap_err();
        assert_eq!(errs[0].path, "apisix.control");
    }

    #[test]
    fn every_listen_form_is_accepted() {
        let (c, _) = parse("apisix:\n  enable_ipv6: false\n  node_listen: 9081\n").unwrap();
        assert_eq!(c.listen.len(), 1);
        assert_eq!(c.listen[0].port, 9081);
        let (c, _) = parse("apisix:\n  enable_ipv6: false\n  node_listen: [9081, 9082]\n").unwrap();
        assert_eq!(
            c.listen.iter().map(|l| l.port).collect::<Vec<_>>(),
            vec![9081, 9082]
        );
        let (c, _) = parse("apisix:\n  node_listen:\n    - ip: 127.0.0.1\n      port: 9083\n      enable_http2: true\n    - ip: \"::1\"\n      port: 9084\n").unwrap();
        assert_eq!(
            c.listen[0],
            ListenAddr {
                ip: "127.0.0.1".parse().unwrap(),
                port: 9083,
                http2: true
            }
        );
        assert_eq!(c.listen[1].ip, "::1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn unknown_keys_warn_once_each_and_never_fail() {
        let (c, w) = parse("apisix:\n  node_listen: 9080\n  proxy_mode: http\nnginx_config:\n  http:\n    lua_shared_dict: {my-dict: 1m}\n    charset: utf-8\nfoo: 1\n").unwrap();
        assert!(c.shared_dicts.contains(&("my-dict".to_string(), 1 << 20)));
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(
            w.iter()
                .any(|x| x.starts_with("apisix.proxy_mode: not supported"))
        );
        assert!(
            w.iter()
                .any(|x| x.starts_with("nginx_config.http.charset: not supported"))
        );
        assert!(w.iter().any(|x| x.starts_with("foo: unknown key")));
    }

    #[test]
    fn real_ip_settings_default_to_apisix_and_are_checked() {
        let (c, _) = parse("").unwrap();
        assert_eq!(c.real_ip_header, "X-Real-IP");
        assert!(!c.real_ip_recursive);
        assert_eq!(c.real_ip_from, vec!["127.0.0.1", "unix:"]);
        let (c, w) = parse("nginx_config:\n  http:\n    real_ip_header: X-Forwarded-For\n    real_ip_recursive: \"on\"\n    real_ip_from: [10.0.0.0/8]\n").unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.real_ip_header, "X-Forwarded-For");
        assert!(c.real_ip_recursive);
        assert_eq!(c.real_ip_from, vec!["10.0.0.0/8"]);
        let errs = parse(
            "nginx_config:\n  http:\n    real_ip_recursive: maybe\n    real_ip_from: [not-an-ip]\n",
        )
        .unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "nginx_config.http.real_ip_recursive",
                "nginx_config.http.real_ip_from"
            ]
        );
    }

    #[test]
    fn ssl_defaults_are_apisix_and_tls_listen_moves_the_socket_only() {
        let (c, w) = parse("").unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert!(c.ssl.enable);
        assert_eq!(c.ssl.ports, vec![9443]);
        // 0.0.0.0 and, with enable_ipv6 (the default), [::].
        assert_eq!(c.ssl.listen.len(), 2);
        assert!(c.ssl.listen.iter().all(|l| l.port == 9443));
        assert!(c.ssl.http2);
        assert_eq!(c.ssl.protocols, vec!["TLSv1.2", "TLSv1.3"]);
        let (c, _) = parse("apisix:\n  enable_ipv6: false\n  ssl:\n    listen:\n      - port: 9445\n      - ip: 127.0.0.2\n        port: 9446\n    fallback_sni: Example.COM\nmoongate:\n  tls_listen: [{ip: 127.0.0.1, port: 1994}]\n").unwrap();
        assert_eq!(c.ssl.ports, vec![9445, 9446]);
        assert_eq!(c.ssl.listen.len(), 1);
        assert_eq!(c.ssl.listen[0].port, 1994);
        assert_eq!(c.ssl.fallback_sni.as_deref(), Some("example.com"));
        let (c, _) = parse("apisix:\n  ssl:\n    enable: false\n").unwrap();
        assert!(c.ssl.listen.is_empty() && c.ssl.ports.is_empty());
        let errs = parse("apisix:\n  node_listen: [9443]\n  enable_ipv6: false\n").unwrap_err();
        assert!(errs[0].message.contains("conflicts with http"), "{errs:?}");
        let errs = parse("apisix:\n  data_encryption:\n    keyring: [short]\n").unwrap_err();
        assert_eq!(errs[0].path, "apisix.data_encryption.keyring");
    }

    #[test]
    fn every_bad_value_is_reported() {
        let errs = parse("apisix:\n  node_listen: 70000\n  ssl:\n    ssl_protocols: TLSv9\nnginx_config:\n  worker_processes: 0\n  error_log_level: loud\n  http:\n    client_max_body_size: lots\n    keepalive_timeout: soon\ndeployment:\n  role: sideways\n").unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "apisix.node_listen[0]",
                "apisix.ssl.ssl_protocols",
                "nginx_config.worker_processes",
                "nginx_config.error_log_level",
                "nginx_config.http.client_max_body_size",
                "nginx_config.http.keepalive_timeout",
                "deployment.role",
            ]
        );
    }

    #[test]
    fn traditional_embedded_reads_the_admin_section() {
        let (c, w) = parse("deployment:\n  role: traditional\n  role_traditional:\n    config_provider: embedded\n  admin:\n    admin_listen: {ip: 127.0.0.1, port: 9181}\n    admin_key:\n      - {name: v, key: abc, role: viewer}\n    allow_admin: [10.0.0.0/8]\n").unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(
            c.provider,
            Provider::Embedded {
                data_file: PathBuf::from("/p/data/store.json"),
                seed: PathBuf::from("/p/conf/apisix.yaml")
            }
        );
        let a = c.admin.unwrap();
        assert_eq!(a.listen.port(), 9181);
        assert_eq!(a.keys, vec![("v".into(), "abc".into(), "viewer".into())]);
        assert_eq!(a.allow, vec!["10.0.0.0/8".to_string()]);
        let (c, w) = parse("deployment:\n  admin:\n    admin_key_required: false\n").unwrap();
        assert!(c.admin.is_none());
        assert!(w[0].starts_with("deployment.admin: ignored"), "{w:?}");
    }

    #[test]
    fn etcd_roles_and_deployment_etcd_use_apisix_names_and_defaults() {
        let (c, w) = parse(
            "deployment:\n  role: traditional\n  role_traditional:\n    config_provider: etcd\n",
        )
        .unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(c.role, Role::Traditional);
        assert!(c.admin.is_some());
        let Provider::Etcd { etcd, last_good } = c.provider else {
            panic!("etcd provider expected")
        };
        assert_eq!(etcd.hosts, vec!["http://127.0.0.1:2379".to_string()]);
        assert_eq!(etcd.prefix, "/apisix");
        assert_eq!(etcd.timeout, Duration::from_secs(30));
        assert_eq!(etcd.user, None);
        assert!(etcd.tls.verify);
        assert_eq!(last_good, PathBuf::from("/p/data/etcd-last-good.json"));

        let (c, w) = parse("apisix:\n  ssl:\n    ssl_trusted_certificate: conf/ca.pem\ndeployment:\n  role: data_plane\n  role_data_plane:\n    config_provider: etcd\n  etcd:\n    host:\n      - https://10.0.0.1:2379\n      - \"https://10.0.0.2:2379/\"\n    prefix: /gw/\n    timeout: 5\n    watch_timeout: 50\n    user: root\n    password: secret\n    tls:\n      cert: conf/c.pem\n      key: conf/k.pem\n      verify: false\n      sni: etcd.internal\n").unwrap();
        assert_eq!(c.role, Role::DataPlane);
        assert!(c.admin.is_none());
        assert_eq!(
            w,
            vec!["deployment.etcd.watch_timeout: not supported by moongate yet; ignored"]
        );
        let Provider::Etcd { etcd, .. } = c.provider else {
            panic!("etcd provider expected")
        };
        assert_eq!(
            etcd.hosts,
            vec!["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
        );
        assert_eq!(etcd.prefix, "/gw");
        assert_eq!(etcd.timeout, Duration::from_secs(5));
        assert_eq!(etcd.user, Some(("root".into(), "secret".into())));
        assert_eq!(etcd.tls.cert, Some(PathBuf::from("/p/conf/c.pem")));
        assert_eq!(etcd.tls.key, Some(PathBuf::from("/p/conf/k.pem")));
        assert!(!etcd.tls.verify);
        assert_eq!(etcd.tls.sni.as_deref(), Some("etcd.internal"));
        assert_eq!(etcd.trusted_ca, Some(PathBuf::from("/p/conf/ca.pem")));

        let (c, _) = parse("deployment:\n  role: control_plane\n").unwrap();
        assert_eq!(c.role, Role::ControlPlane);
        assert!(!c.role.serves_data());
        assert!(matches!(c.provider, Provider::Etcd { .. }));
        assert!(c.admin.is_some());

        let errs = parse("deployment:\n  role: control_plane\n  role_control_plane:\n    config_provider: yaml\n  etcd:\n    host: [127.0.0.1:2379]\n    timeout: 0\n    tls: {cert: c.pem}\n").unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec!["deployment.role_control_plane.config_provider",]
        );
        let errs = parse("deployment:\n  role: traditional\n  role_traditional:\n    config_provider: etcd\n  etcd:\n    host: [127.0.0.1:2379]\n    timeout: 0\n    tls: {cert: c.pem}\n").unwrap_err();
        let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "deployment.etcd.host[0]",
                "deployment.etcd.timeout",
                "deployment.etcd.tls",
            ]
        );
        let (_, w) = parse("deployment:\n  etcd:\n    host: [http://127.0.0.1:2379]\n").unwrap();
        assert!(w[0].starts_with("deployment.etcd: ignored"), "{w:?}");
    }

    #[test]
    fn access_log_can_be_turned_off() {
        let (c, _) = parse("nginx_config:\n  http:\n    enable_access_log: false\n").unwrap();
        assert_eq!(c.access_log, None);
        let (c, _) =
            parse("nginx_config:\n  worker_processes: 3\n  http:\n    client_max_body_size: 1k\n")
                .unwrap();
        assert_eq!((c.worker_processes, c.client_max_body_size), (3, 1024));
    }
}
