//! The config snapshot: every resource compiled (router, upstreams, merged routes) into one
//! immutable value that workers read through `ArcSwap`.
//!
//! Snapshots are built off the request path by a [`Builder`], which keeps what it compiled and
//! recompiles only what a change touches: routes, their plugin chains and upstream definitions
//! that did not change are the same `Arc`s in the next snapshot, so each worker's balancer
//! state and Lua conf tables for them survive unrelated config changes.

mod builder;
mod table;

use std::sync::Arc;

use super::resource::{Id, PluginMap, Route, RouteAction, Service, Timeout, Upstream};
use super::standalone::{ConfigError, OtherResources, Resources};
use crate::lua::host::HandlerSource;
use crate::plugin::{Catalog, Chain};
use crate::pmap::PMap;
use crate::router::Router;
use crate::server::tls::SslIndex;
use crate::upstream::{Resolve, UpstreamDef};
pub use builder::{Applied, Builder, Change, Item, ItemError};
pub use table::RouteTable;

/// One immutable version of the whole configuration. Every part is persistent or shared by
/// `Arc`, so the next snapshot (see [`Builder`]) costs what changed, not what there is.
pub struct Snapshot {
    pub version: u64,
    /// Enabled routes by slot; [`Router::find`] answers with the slot.
    pub routes: RouteTable,
    pub router: Router,
    /// Compiled `upstreams` resources by id.
    pub upstreams: PMap<Id, Arc<UpstreamDef>>,
    pub others: Arc<OtherResources>,
    /// The config version at which consumers, credentials, consumer groups or plugin
    /// metadata (what Lua reads through `moongate.config`) last changed.
    pub lua_view_version: u64,
    /// One chain per global rule, in id order: they run before the route's plugins.
    pub global_chains: Vec<Arc<Chain>>,
    /// Consumers by username, with the plugins they add to a route once identified.
    pub consumers: PMap<String, Arc<ConsumerEntry>>,
    /// The routes, services and upstreams as configured, for the control API's dumps.
    pub configured: Configured,
    /// Compiled `ssls` items, indexed by SNI for TLS handshakes.
    pub ssls: Arc<SslIndex>,
}

/// Every route (disabled ones too), service and upstream as the config source gave them, each
/// with its load order: what the control API's `/v1/routes` and kin show. Persistent like the
/// rest of the snapshot, so a change does not copy every route.
#[derive(Debug, Default, Clone)]
pub struct Configured {
    pub routes: PMap<Id, (usize, Arc<Route>)>,
    pub services: PMap<Id, (usize, Arc<Service>)>,
    pub upstreams: PMap<Id, (usize, Arc<Upstream>)>,
}

/// The values of `map` in load order.
fn in_order<T>(map: &PMap<Id, (usize, Arc<T>)>) -> Vec<&T> {
    let mut v: Vec<(usize, &T)> = map.values().map(|(o, t)| (*o, &**t)).collect();
    v.sort_by_key(|(o, _)| *o);
    v.into_iter().map(|(_, t)| t).collect()
}

impl Configured {
    pub fn routes(&self) -> Vec<&Route> {
        in_order(&self.routes)
    }

    pub fn services(&self) -> Vec<&Service> {
        in_order(&self.services)
    }

    pub fn upstreams(&self) -> Vec<&Upstream> {
        in_order(&self.upstreams)
    }
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
    /// The merged plugins `chain` was compiled from.
    pub plugins: PluginMap,
    /// The consumer's `conf_version` (its revision), which APISIX appends to the route's once
    /// the consumer is merged in; and its group's.
    pub conf_version: String,
    pub group_version: Option<String>,
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
    /// Compiles `res` in one go (a file provider's first load, `moongate check`): every
    /// problem is reported, not just the first, and any problem refuses the whole set.
    /// Providers that follow changes keep a [`Builder`] instead.
    pub fn build(
        res: Resources,
        version: u64,
        resolver: &dyn Resolve,
        catalog: &Catalog,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        let mut b = Builder::new();
        let changes = Item::all(res)
            .into_iter()
            .map(|i| Change::Put(i, version))
            .collect();
        let applied = b.apply_all(changes, version, resolver, catalog);
        if !applied.errors.is_empty() {
            return Err(applied.errors.into_iter().map(|e| e.error).collect());
        }
        Ok(b.snapshot(version))
    }

    /// [`Snapshot::build`] for a provider that goes on following its source: also returns the
    /// builder holding the result, to apply the next versions to.
    pub fn build_followed(
        res: Resources,
        version: u64,
        resolver: &dyn Resolve,
        catalog: &Arc<Catalog>,
    ) -> Result<(Snapshot, Builder), Vec<ConfigError>> {
        let mut b = Builder::new();
        let items = Item::all(res).into_iter().map(|i| (i, version)).collect();
        let applied = b.sync(items, version, resolver, catalog);
        if !applied.errors.is_empty() {
            return Err(applied.errors.into_iter().map(|e| e.error).collect());
        }
        Ok((b.snapshot(version), b))
    }

    /// A snapshot with nothing in it.
    pub fn empty() -> Snapshot {
        Builder::new().snapshot(0)
    }
}

#[cfg(test)]
mod tests;
