//! The Envoy provider: an Envoy v3 bootstrap file (`static_resources` with listeners, an inline
//! HTTP connection manager route configuration and clusters) whose routes carry APISIX plugins
//! in `metadata.filter_metadata["envoy.filters.http.lua"].plugins: [{name, conf}]`, as the
//! envoy-apisix shim configures them. The file is read into the same [`Resources`] the
//! standalone file gives, and watched for changes the same way (`yaml::watch_source`).
//!
//! Every key the provider does not read gives one warning naming its YAML path; a value of the
//! wrong shape, or a key whose meaning cannot be honoured safely (TLS, other network filters,
//! match conditions), is an error naming its path and the file is refused. This module never
//! opens sockets: the listener addresses it finds are for the caller to listen on.

pub mod cluster;
pub mod route;
pub mod tree;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;

use serde_json::Value;

use super::yaml::Source;
use crate::config::standalone::{ConfigError, Resources};
use tree::{Report, index, join};

/// A listener the file asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// `codec_type` is not `HTTP1`: HTTP/2 (prior knowledge) is served too.
    pub http2: bool,
}

/// What one version of the file holds.
#[derive(Debug, Default)]
pub struct EnvoyConfig {
    pub resources: Resources,
    pub listeners: Vec<Listener>,
    /// `admin.address`, when set.
    pub admin: Option<SocketAddr>,
    /// One line per ignored path.
    pub warnings: Vec<String>,
    /// The YAML path of each route, by route id, to restate snapshot errors.
    pub paths: HashMap<String, String>,
    /// The YAML path of each cluster, by name.
    pub cluster_paths: HashMap<String, String>,
}

/// Reads and parses the file.
pub fn load(path: &Path) -> Result<EnvoyConfig, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError::new(
            path.display().to_string(),
            "(file)",
            format!("cannot read: {e}"),
        )]
    })?;
    parse(&text)
}

/// Parses the text of an Envoy bootstrap file.
pub fn parse(text: &str) -> Result<EnvoyConfig, Vec<ConfigError>> {
    let root: Value = serde_norway::from_str(text)
        .map_err(|e| vec![ConfigError::new("envoy.yaml", "(file)", e.to_string())])?;
    let mut r = Report::default();
    let mut out = EnvoyConfig::default();
    let Some(top) = r.obj(&root, "(file)") else {
        return Err(r.errors);
    };
    r.unknown_keys(top, "", &["static_resources", "admin"]);
    if let Some(admin) = top.get("admin") {
        out.admin = admin_address(&mut r, admin);
    }
    let Some(sr) = top.get("static_resources") else {
        r.error("static_resources", "the file has no static_resources");
        return Err(r.errors);
    };
    let Some(sr) = r.obj(sr, "static_resources") else {
        return Err(r.errors);
    };
    r.unknown_keys(sr, "static_resources", &["listeners", "clusters"]);

    let mut clusters = HashMap::new();
    let cpath = "static_resources.clusters";
    for (i, c) in r.list(sr.get("clusters"), cpath).iter().enumerate() {
        let p = index(cpath, i);
        if let Some(c) = cluster::read(&mut r, c, &p) {
            let name = c.upstream.id.clone().map(|i| i.0).unwrap_or_default();
            if clusters.contains_key(&name) {
                r.error(
                    &join(&p, "name"),
                    format!("duplicate cluster name {name:?}"),
                );
                continue;
            }
            out.resources.upstreams.push(c.upstream.clone());
            out.cluster_paths.insert(name.clone(), p.clone());
            clusters.insert(name, c);
        }
    }

    let lpath = "static_resources.listeners";
    let listeners = r.list(sr.get("listeners"), lpath);
    if listeners.is_empty() {
        r.error(lpath, "the file has no listeners");
    }
    let several = listeners.len() > 1;
    let mut built = route::Built::default();
    for (i, l) in listeners.iter().enumerate() {
        let p = index(lpath, i);
        if let Some(listener) = listener(&mut r, l, &p, &clusters, several, &mut built) {
            if out.listeners.iter().any(|x| x.addr == listener.addr) {
                r.error(
                    &join(&p, "address"),
                    format!("{} is listed twice", listener.addr),
                );
            }
            out.listeners.push(listener);
        }
    }
    // Requests no virtual host takes: Envoy answers 404 with no body.
    built.routes.push(crate::config::resource::Route {
        id: Some(crate::config::resource::Id("envoy#no-virtual-host".into())),
        uris: vec!["/*".into()],
        priority: -1,
        status: 1,
        action: crate::config::resource::RouteAction {
            answer: Some(crate::config::resource::FixedAnswer::Direct {
                status: 404,
                body: String::new(),
            }),
            ..Default::default()
        },
        ..Default::default()
    });
    if !r.errors.is_empty() {
        return Err(r.errors);
    }
    out.resources.routes = built.routes;
    out.paths = built.paths;
    out.warnings = r.warnings;
    Ok(out)
}

fn admin_address(r: &mut Report, v: &Value) -> Option<SocketAddr> {
    let m = r.obj(v, "admin")?;
    r.unknown_keys(m, "admin", &["address", "access_log_path", "access_log"]);
    let (host, port) = cluster::socket_address(r, m.get("address"), "admin.address")?;
    let ip = ip_of(r, &host, "admin.address.socket_address.address")?;
    r.ignored(
        "admin",
        "moongate has no status and metrics listener yet; the admin address is not opened",
    );
    Some(SocketAddr::new(ip, port))
}

fn ip_of(r: &mut Report, host: &str, path: &str) -> Option<IpAddr> {
    match host.parse() {
        Ok(ip) => Some(ip),
        Err(_) => {
            r.error(path, format!("{host:?} is not an IP address"));
            None
        }
    }
}

/// One listener: its address and the route configuration of its HTTP connection manager.
fn listener(
    r: &mut Report,
    v: &Value,
    path: &str,
    clusters: &HashMap<String, cluster::Cluster>,
    several: bool,
    built: &mut route::Built,
) -> Option<Listener> {
    let m = r.obj(v, path)?;
    if m.contains_key("listener_filters") {
        r.error(
            &join(path, "listener_filters"),
            "listener filters are not supported by moongate's envoy provider",
        );
    }
    r.unknown_keys(
        m,
        path,
        &["name", "address", "filter_chains", "listener_filters"],
    );
    // A broken address still lets the routes be read, so their errors are reported too.
    let addr = cluster::socket_address(r, m.get("address"), &join(path, "address")).and_then(
        |(host, port)| {
            ip_of(r, &host, &join(path, "address.socket_address.address"))
                .map(|ip| SocketAddr::new(ip, port))
        },
    );
    let port = addr.map_or(0, |a| a.port());
    let fpath = join(path, "filter_chains");
    let chains = r.list(m.get("filter_chains"), &fpath);
    if chains.is_empty() {
        r.error(&fpath, "a listener needs a filter chain");
        return None;
    }
    let mut http2 = true;
    for (i, fc) in chains.iter().enumerate() {
        let cp = index(&fpath, i);
        let Some(fc) = r.obj(fc, &cp) else { continue };
        for k in ["transport_socket", "filter_chain_match"] {
            if fc.contains_key(k) {
                r.error(
                    &join(&cp, k),
                    "not supported by moongate's envoy provider (TLS and chain selection)",
                );
            }
        }
        r.unknown_keys(
            fc,
            &cp,
            &["filters", "transport_socket", "filter_chain_match", "name"],
        );
        let flist_path = join(&cp, "filters");
        for (j, f) in r.list(fc.get("filters"), &flist_path).iter().enumerate() {
            let p = index(&flist_path, j);
            if let Some(h2) =
                http_connection_manager(r, f, &p, clusters, several.then_some(port), built)
            {
                http2 = h2;
            }
        }
    }
    Some(Listener { addr: addr?, http2 })
}

const HCM_NAMES: [&str; 2] = [
    "envoy.filters.network.http_connection_manager",
    "envoy.http_connection_manager",
];

/// The HTTP connection manager filter; returns whether HTTP/2 is served.
fn http_connection_manager(
    r: &mut Report,
    v: &Value,
    path: &str,
    clusters: &HashMap<String, cluster::Cluster>,
    listener_port: Option<u16>,
    built: &mut route::Built,
) -> Option<bool> {
    let m = r.obj(v, path)?;
    r.unknown_keys(m, path, &["name", "typed_config"]);
    let name = m.get("name").and_then(Value::as_str).unwrap_or("");
    let tpath = join(path, "typed_config");
    let Some(tc) = m.get("typed_config") else {
        r.error(&tpath, "the HTTP connection manager needs a typed_config");
        return None;
    };
    let tc = r.obj(tc, &tpath)?;
    let ty = tc.get("@type").and_then(Value::as_str).unwrap_or("");
    if !HCM_NAMES.contains(&name) && !ty.ends_with("HttpConnectionManager") {
        r.error(
            path,
            format!(
                "network filter {name:?} is not supported; only the HTTP connection manager is"
            ),
        );
        return None;
    }
    if tc.contains_key("rds") {
        r.error(
            &join(&tpath, "rds"),
            "RDS is not supported; put the route_config inline",
        );
        return None;
    }
    r.unknown_keys(
        tc,
        &tpath,
        &[
            "@type",
            "codec_type",
            "stat_prefix",
            "route_config",
            "http_filters",
        ],
    );
    let http2 = match tc.get("codec_type") {
        None => true,
        Some(c) => match r
            .string(c, &join(&tpath, "codec_type"))
            .map(tree::enum_name)
            .as_deref()
        {
            Some("AUTO") | Some("HTTP2") => true,
            Some("HTTP1") => false,
            Some(other) => {
                r.error(
                    &join(&tpath, "codec_type"),
                    format!("codec_type {other} is not supported (AUTO, HTTP1, HTTP2)"),
                );
                return None;
            }
            None => return None,
        },
    };
    let fpath = join(&tpath, "http_filters");
    for (i, f) in r.list(tc.get("http_filters"), &fpath).iter().enumerate() {
        http_filter(r, f, &index(&fpath, i));
    }
    let rpath = join(&tpath, "route_config");
    let Some(rc) = tc.get("route_config") else {
        r.error(
            &rpath,
            "the HTTP connection manager needs an inline route_config",
        );
        return None;
    };
    let rc = r.obj(rc, &rpath)?;
    r.unknown_keys(rc, &rpath, &["name", "virtual_hosts"]);
    let vpath = join(&rpath, "virtual_hosts");
    let vhosts = r.list(rc.get("virtual_hosts"), &vpath);
    route::virtual_hosts(r, vhosts, &vpath, clusters, listener_port, built);
    Some(http2)
}

/// `http_filters[]`: the Lua filter (whose code moongate does not run: it runs the plugins
/// itself) and the router are accepted; any other filter is ignored with a warning.
fn http_filter(r: &mut Report, v: &Value, path: &str) {
    let Some(m) = r.obj(v, path) else { return };
    r.unknown_keys(m, path, &["name", "typed_config"]);
    let name = m.get("name").and_then(Value::as_str).unwrap_or("");
    let tc = m.get("typed_config").and_then(Value::as_object);
    let ty = tc
        .and_then(|t| t.get("@type"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let tpath = join(path, "typed_config");
    if name == "envoy.router"
        || name == "envoy.filters.http.router"
        || ty.ends_with("router.v3.Router")
    {
        return;
    }
    if name.ends_with(".lua") || name == "envoy.lua" || ty.ends_with("lua.v3.Lua") {
        if let Some(tc) = tc {
            r.unknown_keys(
                tc,
                &tpath,
                &[
                    "@type",
                    "inline_code",
                    "source_codes",
                    "default_source_code",
                ],
            );
            for k in ["inline_code", "source_codes", "default_source_code"] {
                if tc.contains_key(k) {
                    r.ignored(
                        &join(&tpath, k),
                        "Envoy Lua code is not run; moongate runs the plugins named in the route metadata",
                    );
                }
            }
        }
        return;
    }
    r.ignored(path, &format!("HTTP filter {name:?} is not supported"));
}

/// The provider as a watched file source.
pub struct EnvoySource {
    /// The listeners the process opened; a reload that changes them needs a restart.
    pub listeners: Vec<Listener>,
    located: Located,
}

impl EnvoySource {
    pub fn new(started: &EnvoyConfig) -> EnvoySource {
        EnvoySource {
            listeners: started.listeners.clone(),
            located: started.located(),
        }
    }
}

/// Restates the snapshot builder's `routes[id=X]` and `upstreams[id=X]` errors as the YAML
/// paths of route X and cluster X.
pub fn locate(errors: Vec<ConfigError>, cfg: &Located) -> Vec<ConfigError> {
    errors
        .into_iter()
        .map(|e| {
            let inner = |prefix: &str| {
                e.resource
                    .strip_prefix(prefix)
                    .and_then(|s| s.strip_suffix(']'))
                    .map(str::to_string)
            };
            if let Some(p) = inner("upstreams[id=").and_then(|id| cfg.clusters.get(&id)) {
                return ConfigError::new("envoy.yaml", format!("{p} ({})", e.field), e.message);
            }
            match inner("routes[id=").and_then(|id| cfg.routes.get(&id)) {
                Some(p) => {
                    let field = match e.field.strip_prefix("plugins.") {
                        Some(name) => format!(
                            "{p}.metadata.filter_metadata[\"{}\"].plugins[name={name}]",
                            route::LUA_FILTER
                        ),
                        None => format!("{p} ({})", e.field),
                    };
                    ConfigError::new("envoy.yaml", field, e.message)
                }
                None => e,
            }
        })
        .collect()
}

/// Where routes and clusters sit in the file, by id.
#[derive(Debug, Clone, Default)]
pub struct Located {
    pub routes: HashMap<String, String>,
    pub clusters: HashMap<String, String>,
}

impl EnvoyConfig {
    pub fn located(&self) -> Located {
        Located {
            routes: self.paths.clone(),
            clusters: self.cluster_paths.clone(),
        }
    }
}

impl Source for EnvoySource {
    fn parse(&mut self, path: &Path, text: &str) -> Result<Option<Resources>, Vec<ConfigError>> {
        let cfg = parse(text)?;
        for w in &cfg.warnings {
            log::warn!("{w}");
        }
        if cfg.listeners != self.listeners {
            log::warn!(
                "{}: the listeners changed; moongate keeps listening on the addresses it started with until it is restarted",
                path.display()
            );
        }
        self.located = cfg.located();
        Ok(Some(cfg.resources))
    }

    fn locate(&self, errors: Vec<ConfigError>) -> Vec<ConfigError> {
        locate(errors, &self.located)
    }
}

#[cfg(test)]
mod tests;
