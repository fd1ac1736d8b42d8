//! The config snapshot: every resource compiled (router, upstreams, merged routes) into one
//! immutable value that workers read through `ArcSwap`.
//!
//! A snapshot is built off the request path from parsed [`Resources`]. Upstream definitions that
//! did not change since the previous snapshot are reused (the same `Arc`), so each worker's
//! balancer state for them survives unrelated config changes.

use std::collections::HashMap;
use std::sync::Arc;

use super::resource::{Id, PluginMap, Route, RouteAction, Service, Timeout, Upstream};
use super::standalone::{ConfigError, OtherResources, Resources};
use crate::lua::host::HandlerSource;
use crate::plugin::{Catalog, Chain, ConfOwner};
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
    /// One chain per global rule, in id order: they run before the route's plugins.
    pub global_chains: Vec<Arc<Chain>>,
    /// Consumers by username, with the plugins they add to a route once identified.
    pub consumers: HashMap<String, Arc<ConsumerEntry>>,
    /// The routes, services and upstreams as configured, for the control API's dumps.
    pub configured: Configured,
    /// Source of every compiled upstream (by id, or `route#ID` for inline ones), for reuse.
    sources: HashMap<String, (Upstream, Arc<UpstreamDef>)>,
}

/// Every route (disabled ones too), service and upstream in config order, as the config
/// source gave them: what the control API's `/v1/routes` and kin show.
#[derive(Debug, Default)]
pub struct Configured {
    pub routes: Vec<Route>,
    pub services: Vec<Service>,
    pub upstreams: Vec<Upstream>,
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
    /// The plugins to run (service < plugin_config < route), `None` when there are none.
    pub chain: Option<Arc<Chain>>,
    /// `lua_handlers`, moongate's per-phase Lua code.
    pub handlers: Option<Arc<HandlerSource>>,
    /// `plugin_config_id` names a plugin config that does not exist: APISIX answers 503.
    pub missing_plugin_config: Option<Id>,
    /// What the route does besides proxying (rewrites, fixed answers); see `proxy::route_action`.
    pub action: RouteAction,
}

impl RouteEntry {
    /// The request must go through the phase runner.
    pub fn has_phases(&self) -> bool {
        self.chain.is_some()
            || self.handlers.is_some()
            || self.missing_plugin_config.is_some()
            || !self.action.is_none()
    }
}

/// A consumer as the phase runner needs it after an auth plugin identified it.
#[derive(Debug)]
pub struct ConsumerEntry {
    pub username: String,
    pub group_id: Option<String>,
    /// The consumer's non-auth plugins over its group's (consumer wins), validated; `None`
    /// when neither has any. Auth plugins are left out: they already ran in rewrite, and their
    /// consumer-side conf follows the plugin's consumer schema, not its route schema.
    pub chain: Option<Arc<Chain>>,
    /// `group_id` names a consumer group that does not exist: APISIX answers 503.
    pub missing_group: Option<String>,
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
        catalog: &Catalog,
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
            let service = r.service_id.as_ref().and_then(|sid| services.get(sid));
            // APISIX's merge: the service's plugins, overlaid by the plugin config's, overlaid
            // by the route's own.
            let mut plugins = service.map(|s| s.plugins.clone()).unwrap_or_default();
            let mut missing_plugin_config = None;
            if let Some(pcid) = &r.plugin_config_id {
                match res.others.plugin_configs.iter().find(|p| &p.id == pcid) {
                    Some(pc) => {
                        if let Some(m) = pc.value.get("plugins").and_then(|v| v.as_object()) {
                            plugins.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                        }
                    }
                    None => {
                        log::warn!(
                            "{label}: plugin_config_id {pcid} names no plugin config; requests will get 503"
                        );
                        missing_plugin_config = Some(pcid.clone());
                    }
                }
            }
            plugins.extend(r.plugins.iter().map(|(k, v)| (k.clone(), v.clone())));
            let owner = match &r.service_id {
                Some(sid) if service.is_some() => ConfOwner {
                    conf_type: "route&service".into(),
                    conf_id: format!("{id}&{sid}"),
                    conf_version: format!("{version}&{version}"),
                },
                _ => ConfOwner {
                    conf_type: "route".into(),
                    conf_id: id.0.clone(),
                    conf_version: version.to_string(),
                },
            };
            let chain = if plugins.is_empty() {
                None
            } else {
                match Chain::build(format!("route#{id}"), owner, &plugins, catalog) {
                    Ok(c) => Some(Arc::new(c)),
                    Err(errs) => {
                        for e in errs {
                            errors.push(ConfigError::new(&label, e.field, e.message));
                        }
                        continue;
                    }
                }
            };
            let mut handlers = HandlerSource::default();
            for (directive, code) in &r.lua_handlers {
                if !crate::config::resource::LUA_HANDLERS.contains(&directive.as_str()) {
                    errors.push(ConfigError::new(
                        &label,
                        format!("lua_handlers.{directive}"),
                        format!(
                            "unknown directive; expected one of {}",
                            crate::config::resource::LUA_HANDLERS.join(", ")
                        ),
                    ));
                }
                handlers.chunks.push((directive.clone(), code.clone()));
            }
            let handlers = (!handlers.chunks.is_empty()).then(|| Arc::new(handlers));

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
                chain,
                handlers,
                missing_plugin_config,
                action: r.action.clone(),
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
        let global_chains = global_chains(&res.others.global_rules, version, catalog, &mut errors);
        let consumers = consumer_entries(&res.others, version, catalog, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Snapshot {
            global_chains,
            consumers,
            version,
            routes,
            router,
            upstreams,
            services,
            others: res.others,
            configured: Configured {
                routes: res.routes,
                services: res.services,
                upstreams: res.upstreams,
            },
            sources,
        })
    }
}

/// Consumers (credentials, `NAME/credentials/ID`, carry auth confs only and are left to the
/// Lua side) with their merged group and consumer plugins.
fn consumer_entries(
    others: &OtherResources,
    version: u64,
    catalog: &Catalog,
    errors: &mut Vec<ConfigError>,
) -> HashMap<String, Arc<ConsumerEntry>> {
    let plugins_of = |v: &serde_json::Value| -> PluginMap {
        v.get("plugins")
            .and_then(|p| p.as_object())
            .map(|m| {
                m.iter()
                    .filter(|(name, _)| !catalog.get(name).is_some_and(|i| i.is_auth))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut out = HashMap::new();
    for c in &others.consumers {
        let username = c.id.0.clone();
        if username.contains("/credentials/") {
            continue;
        }
        let group_id = c.value.get("group_id").and_then(|g| match g {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
        let mut merged = PluginMap::default();
        let mut missing_group = None;
        if let Some(gid) = &group_id {
            match others.consumer_groups.iter().find(|g| &g.id.0 == gid) {
                Some(g) => merged.extend(plugins_of(&g.value)),
                None => missing_group = Some(gid.clone()),
            }
        }
        for (k, v) in plugins_of(&c.value) {
            merged.insert(k, v);
        }
        let label = format!("consumers[username={username}]");
        let chain = if merged.is_empty() {
            None
        } else {
            let owner = ConfOwner {
                conf_type: "consumer".into(),
                conf_id: username.clone(),
                conf_version: version.to_string(),
            };
            match Chain::build(format!("consumer#{username}"), owner, &merged, catalog) {
                Ok(c) if !c.entries.is_empty() => Some(Arc::new(c)),
                Ok(_) => None,
                Err(errs) => {
                    for e in errs {
                        errors.push(ConfigError::new(&label, e.field, e.message));
                    }
                    continue;
                }
            }
        };
        out.insert(
            username.clone(),
            Arc::new(ConsumerEntry {
                username,
                group_id,
                chain,
                missing_group,
            }),
        );
    }
    out
}

/// One chain per global rule, in id order.
fn global_chains(
    rules: &[crate::config::resource::OpaqueResource],
    version: u64,
    catalog: &Catalog,
    errors: &mut Vec<ConfigError>,
) -> Vec<Arc<Chain>> {
    let mut rules: Vec<_> = rules.iter().collect();
    rules.sort_by(|a, b| a.id.cmp(&b.id));
    let mut out = Vec::new();
    for g in rules {
        let label = format!("global_rules[id={}]", g.id);
        let plugins: PluginMap = match g.value.get("plugins").and_then(|v| v.as_object()) {
            Some(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            None => {
                errors.push(ConfigError::new(&label, "plugins", "is required"));
                continue;
            }
        };
        let owner = ConfOwner {
            conf_type: "global_rule".into(),
            conf_id: g.id.0.clone(),
            conf_version: version.to_string(),
        };
        match Chain::build(format!("global_rule#{}", g.id), owner, &plugins, catalog) {
            Ok(c) if !c.entries.is_empty() => out.push(Arc::new(c)),
            Ok(_) => {}
            Err(errs) => {
                for e in errs {
                    errors.push(ConfigError::new(&label, e.field, e.message));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
