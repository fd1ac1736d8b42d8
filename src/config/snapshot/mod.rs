//! The config snapshot: every resource compiled (router, upstreams, merged routes) into one
//! immutable value that workers read through `ArcSwap`.
//!
//! A snapshot is built off the request path from parsed [`Resources`]. Upstream definitions that
//! did not change since the previous snapshot are reused (the same `Arc`), so each worker's
//! balancer state for them survives unrelated config changes.

use std::collections::HashMap;
use std::sync::Arc;

use super::resource::{Id, PluginMap, Service, Timeout, Upstream};
use super::standalone::{ConfigError, OtherResources, Resources};
use crate::router::{RouteSpec, Router};
use crate::upstream::{Resolve, UpstreamDef};

/// One immutable version of the whole configuration.
pub struct Snapshot {
    pub version: u64,
    /// Enabled routes, in file order; `RouteSpec::index` points here.
    pub routes: Vec<Arc<RouteEntry>>,
    pub router: Router,
    pub upstreams: HashMap<Id, Arc<UpstreamDef>>,
    pub services: HashMap<Id, Service>,
    pub others: OtherResources,
    /// Source of every compiled upstream (by id, or `route#ID` for inline ones), for reuse.
    sources: HashMap<String, (Upstream, Arc<UpstreamDef>)>,
}

/// A route merged with its service, ready to serve.
#[derive(Debug)]
pub struct RouteEntry {
    pub id: Id,
    pub name: Option<String>,
    pub service_id: Option<Id>,
    pub upstream: RouteUpstream,
    /// Service plugins overlaid by route plugins.
    pub plugins: PluginMap,
    /// The route's `timeout`, else its upstream's.
    pub timeout: Option<Timeout>,
    pub enable_websocket: bool,
}

/// Where a route sends requests, or why it cannot.
#[derive(Debug)]
pub enum RouteUpstream {
    Ready(Arc<UpstreamDef>),
    /// `service_id` names a service that does not exist: APISIX answers 404.
    MissingService(Id),
    /// `upstream_id` names an upstream that does not exist: APISIX answers 502.
    MissingUpstream(Id),
    /// Neither the route nor its service has an upstream: 502.
    NoUpstream,
}

impl Snapshot {
    /// Compiles `res`. Every problem is reported, not just the first.
    pub fn build(
        res: Resources,
        version: u64,
        previous: Option<&Snapshot>,
        resolver: &dyn Resolve,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut sources: HashMap<String, (Upstream, Arc<UpstreamDef>)> = HashMap::new();
        let mut compile = |key: String,
                           label: String,
                           up: &Upstream,
                           errors: &mut Vec<ConfigError>|
         -> Option<Arc<UpstreamDef>> {
            if let Some((src, def)) = previous.and_then(|p| p.sources.get(&key))
                && src == up
            {
                sources.insert(key, (up.clone(), def.clone()));
                return Some(def.clone());
            }
            match UpstreamDef::compile(up, resolver) {
                Ok(def) => {
                    let def = Arc::new(def);
                    sources.insert(key, (up.clone(), def.clone()));
                    Some(def)
                }
                Err(e) => {
                    errors.push(ConfigError::new(label, e.field, e.message));
                    None
                }
            }
        };

        let mut upstreams = HashMap::new();
        for u in &res.upstreams {
            let Some(id) = &u.id else { continue };
            if let Some(def) = compile(
                format!("upstream#{id}"),
                format!("upstreams[id={id}]"),
                u,
                &mut errors,
            ) {
                upstreams.insert(id.clone(), def);
            }
        }
        let mut services = HashMap::new();
        let mut service_upstreams: HashMap<Id, Arc<UpstreamDef>> = HashMap::new();
        for s in &res.services {
            let Some(id) = &s.id else { continue };
            refuse_plugins(&format!("services[id={id}]"), &s.plugins, &mut errors);
            if let Some(u) = &s.upstream
                && let Some(def) = compile(
                    format!("service#{id}"),
                    format!("services[id={id}]"),
                    u,
                    &mut errors,
                )
            {
                service_upstreams.insert(id.clone(), def);
            }
            services.insert(id.clone(), s.clone());
        }

        let mut routes = Vec::new();
        let mut specs = Vec::new();
        for r in &res.routes {
            if r.status == 0 {
                continue;
            }
            let Some(id) = r.id.clone() else { continue };
            let label = format!("routes[id={id}]");
            if r.filter_func.is_some() {
                errors.push(ConfigError::new(
                    &label,
                    "filter_func",
                    "not supported yet (needs the Lua host)",
                ));
            }
            if r.script.is_some() {
                errors.push(ConfigError::new(
                    &label,
                    "script",
                    "not supported yet (needs the Lua host)",
                ));
            }
            if r.plugin_config_id.is_some() {
                errors.push(ConfigError::new(
                    &label,
                    "plugin_config_id",
                    "plugin configs are not supported yet (no plugin runtime)",
                ));
            }
            let service = r.service_id.as_ref().and_then(|sid| services.get(sid));
            let mut plugins = service.map(|s| s.plugins.clone()).unwrap_or_default();
            plugins.extend(r.plugins.iter().map(|(k, v)| (k.clone(), v.clone())));
            refuse_plugins(&label, &r.plugins, &mut errors);

            let upstream = if let Some(u) = &r.upstream {
                match compile(format!("route#{id}"), label.clone(), u, &mut errors) {
                    Some(def) => RouteUpstream::Ready(def),
                    None => continue,
                }
            } else if let Some(uid) = &r.upstream_id {
                match upstreams.get(uid) {
                    Some(def) => RouteUpstream::Ready(def.clone()),
                    None if res.upstreams.iter().any(|u| u.id.as_ref() == Some(uid)) => continue,
                    None => {
                        log::warn!(
                            "{label}: upstream_id {uid} names no upstream; requests will get 502"
                        );
                        RouteUpstream::MissingUpstream(uid.clone())
                    }
                }
            } else if let Some(sid) = &r.service_id {
                match (service, service_upstreams.get(sid)) {
                    (None, _) => {
                        log::warn!(
                            "{label}: service_id {sid} names no service; requests will get 404"
                        );
                        RouteUpstream::MissingService(sid.clone())
                    }
                    (Some(_), Some(def)) => RouteUpstream::Ready(def.clone()),
                    (Some(s), None) => match &s.upstream_id {
                        Some(uid) => match upstreams.get(uid) {
                            Some(def) => RouteUpstream::Ready(def.clone()),
                            None => {
                                log::warn!(
                                    "{label}: service {sid} names upstream {uid}, which does not exist; requests will get 502"
                                );
                                RouteUpstream::MissingUpstream(uid.clone())
                            }
                        },
                        None => RouteUpstream::NoUpstream,
                    },
                }
            } else {
                RouteUpstream::NoUpstream
            };

            let up_timeout = match &upstream {
                RouteUpstream::Ready(def) => def.timeout,
                _ => None,
            };
            let mut uris = r.uris.clone();
            if uris.is_empty()
                && let Some(u) = &r.uri
            {
                uris.push(u.clone());
            }
            let mut hosts = r.hosts.clone();
            if let Some(h) = &r.host {
                hosts.push(h.clone());
            }
            if hosts.is_empty()
                && let Some(s) = service
            {
                hosts = s.hosts.clone();
            }
            let mut remote_addrs = r.remote_addrs.clone();
            if let Some(a) = &r.remote_addr {
                remote_addrs.push(a.clone());
            }
            specs.push(RouteSpec {
                index: routes.len(),
                id: id.0.clone(),
                uris,
                hosts,
                methods: r.methods.clone(),
                remote_addrs,
                vars: r.vars.clone(),
                priority: r.priority,
            });
            routes.push(Arc::new(RouteEntry {
                id,
                name: r.name.clone(),
                service_id: r.service_id.clone(),
                upstream,
                plugins,
                timeout: r.timeout.or(up_timeout),
                enable_websocket: r
                    .enable_websocket
                    .or(service.and_then(|s| s.enable_websocket))
                    .unwrap_or(false),
            }));
        }
        let router =
            match Router::build(specs) {
                Ok(r) => r,
                Err(errs) => {
                    errors.extend(errs.into_iter().map(|e| {
                        ConfigError::new(format!("routes[id={}]", e.id), e.field, e.message)
                    }));
                    Router::default()
                }
            };
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Snapshot {
            version,
            routes,
            router,
            upstreams,
            services,
            others: res.others,
            sources,
        })
    }
}

/// No plugin runtime exists yet: a resource that asks for plugins is refused rather than served
/// without them (fail closed: an auth plugin silently missing would open the route).
fn refuse_plugins(label: &str, plugins: &PluginMap, errors: &mut Vec<ConfigError>) {
    for name in plugins.keys() {
        errors.push(ConfigError::new(
            label,
            format!("plugins.{name}"),
            format!("plugin {name:?} is not available: moongate has no plugin runtime yet"),
        ));
    }
}

#[cfg(test)]
mod tests;
