//! The incremental snapshot builder: keeps every resource and what was compiled from it, and
//! turns a batch of changes into the next snapshot by recompiling only what depends on them.
//!
//! What a change recompiles:
//! - a route: that route;
//! - a service, an upstream or a plugin config: the routes that use it (a route records the ids
//!   it looked up, found or not, so creating a missing service fixes the routes that named it);
//! - a consumer or consumer group: the consumers concerned; a global rule: the global chains;
//! - a plugin reload (a new catalog): every chain.
//!
//! Everything else is shared with the previous snapshot: compiled routes and their plugin
//! chains (so workers keep their Lua conf tables, and plugins their caches), upstream
//! definitions (so balancer state survives), and the router and route table, which are
//! persistent and change by insert/remove. A change equal to what is stored, but for
//! `create_time`/`update_time` (an Admin API re-`PUT` of the same body), changes nothing.
//!
//! Each resource keeps the revision it was last changed at (its etcd `mod_revision`); plugin
//! confs see it as APISIX's per-resource `conf_version` (`route`, `route#plugin_config`,
//! `…&service`), so a change to one route leaves the `conf_version` of every other route as
//! it was. The builder never touches a published snapshot: it only makes new ones.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::Value;

use super::{Configured, ConsumerEntry, RouteEntry, RouteTable, RouteUpstream, Snapshot};
use crate::config::resource::{Id, OpaqueResource, PluginMap, Route, Service, Upstream};
use crate::config::standalone::{ConfigError, KINDS, OtherResources, Resources};
use crate::lua::host::HandlerSource;
use crate::plugin::{Catalog, Chain, ConfOwner};
use crate::pmap::PMap;
use crate::router::{RouteRule, RouteSpec, Router};
use crate::server::tls::{SslEntry, SslIndex};
use crate::upstream::{Resolve, UpstreamDef};

/// One resource, parsed.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // transient: each is moved into an `Arc` once applied
pub enum Item {
    Route(Route),
    Service(Service),
    Upstream(Upstream),
    /// Any other kind; credentials are `consumers` whose id is `NAME/credentials/ID`.
    Other(&'static str, OpaqueResource),
}

impl Item {
    pub fn kind(&self) -> &'static str {
        match self {
            Item::Route(_) => "routes",
            Item::Service(_) => "services",
            Item::Upstream(_) => "upstreams",
            Item::Other(k, _) => k,
        }
    }

    pub fn id(&self) -> Id {
        match self {
            Item::Route(r) => r.id.clone(),
            Item::Service(s) => s.id.clone(),
            Item::Upstream(u) => u.id.clone(),
            Item::Other(_, o) => Some(o.id.clone()),
        }
        .unwrap_or_else(|| Id(String::new()))
    }

    /// Parses one value of `kind` (a [`KINDS`] name) with the checks `conf/apisix.yaml` gets.
    pub fn parse(kind: &str, value: &Value) -> Result<Item, ConfigError> {
        let mut res = Resources::default();
        res.add_item(kind, 0, value)?;
        Item::all(res)
            .pop()
            .ok_or_else(|| ConfigError::new(kind, "(item)", "nothing parsed"))
    }

    /// Every resource of `res`, in file order within each kind.
    pub fn all(res: Resources) -> Vec<Item> {
        let mut out: Vec<Item> = Vec::new();
        out.extend(res.upstreams.into_iter().map(Item::Upstream));
        out.extend(res.services.into_iter().map(Item::Service));
        let mut o = res.others;
        for kind in KINDS {
            if let Some(list) = o.list_mut(kind) {
                out.extend(
                    std::mem::take(list)
                        .into_iter()
                        .map(|r| Item::Other(kind, r)),
                );
            }
        }
        out.extend(res.routes.into_iter().map(Item::Route));
        out
    }

    /// The item without `create_time`/`update_time`, which the Admin API sets on every write
    /// and nothing served reads: two items equal without them configure the same thing.
    fn untimed(&self) -> Item {
        let mut c = self.clone();
        match &mut c {
            Item::Route(r) => (r.create_time, r.update_time) = (None, None),
            Item::Service(s) => (s.create_time, s.update_time) = (None, None),
            Item::Upstream(u) => (u.create_time, u.update_time) = (None, None),
            Item::Other(_, o) => {
                if let Some(m) = o.value.as_object_mut() {
                    m.remove("create_time");
                    m.remove("update_time");
                }
            }
        }
        c
    }
}

/// One change to apply.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // transient, as `Item`
pub enum Change {
    /// The item as of `revision` (its store `mod_revision`; a file provider's config version).
    Put(Item, u64),
    Delete(&'static str, Id),
}

/// A resource that is not served, and why.
#[derive(Debug, Clone)]
pub struct ItemError {
    pub kind: &'static str,
    pub id: Id,
    pub error: ConfigError,
}

/// What one [`Builder::apply`] did.
#[derive(Debug, Default)]
pub struct Applied {
    /// Resources left out (each reported once per change that touched it).
    pub errors: Vec<ItemError>,
    /// The changes that bring the builder back to where it was (an all-or-nothing caller
    /// applies them when it refuses the batch).
    pub undo: Vec<Change>,
    /// Something served changed: publish a new snapshot.
    pub changed: bool,
    /// How many routes were compiled.
    pub routes_compiled: usize,
    /// Everything was compiled again (a new plugin catalog): `undo` alone cannot restore the
    /// chains compiled against the old one.
    pub full: bool,
}

#[derive(Debug)]
struct Src<T> {
    value: Arc<T>,
    revision: u64,
}

impl<T> Clone for Src<T> {
    fn clone(&self) -> Self {
        Src {
            value: self.value.clone(),
            revision: self.revision,
        }
    }
}

/// A route as served: its slot, its entry and its router rule.
struct Served {
    slot: usize,
    entry: Arc<RouteEntry>,
    rule: RouteRule,
}

/// A resource a route looked up.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Dep {
    Service(Id),
    Upstream(Id),
    PluginConfig(Id),
}

/// The builder's state; lives on the thread that follows a provider.
#[derive(Default)]
pub struct Builder {
    catalog: Option<Arc<Catalog>>,
    routes: HashMap<Id, Src<Route>>,
    services: HashMap<Id, Src<Service>>,
    upstreams: HashMap<Id, Src<Upstream>>,
    others: HashMap<&'static str, BTreeMap<Id, Src<OpaqueResource>>>,
    /// Compiled definitions and the source each was compiled from, for reuse.
    upstream_defs: HashMap<Id, (Arc<Upstream>, Arc<UpstreamDef>)>,
    service_defs: HashMap<Id, (Upstream, Arc<UpstreamDef>)>,
    inline_defs: HashMap<Id, (Upstream, Arc<UpstreamDef>)>,
    served: HashMap<Id, Served>,
    /// What each route looked up, and who looked each thing up.
    deps_of: HashMap<Id, Vec<Dep>>,
    users: HashMap<Dep, HashSet<Id>>,
    /// Load order of each route: ties between routes on one path go to the older.
    orders: HashMap<Id, usize>,
    next_order: usize,
    free_slots: Vec<usize>,
    next_slot: usize,
    globals: BTreeMap<Id, (u64, Option<Arc<Chain>>)>,
    // What the next snapshot publishes.
    table: RouteTable,
    router: Router,
    upstreams_out: PMap<Id, Arc<UpstreamDef>>,
    consumers: PMap<String, Arc<ConsumerEntry>>,
    global_chains: Vec<Arc<Chain>>,
    others_out: Arc<OtherResources>,
    lua_view_version: u64,
    configured: Configured,
    /// Compiled `ssls` items and the JSON each was compiled from, for reuse.
    ssl_entries: BTreeMap<Id, (serde_json::Value, Arc<SslEntry>)>,
    ssl_index: Arc<SslIndex>,
}

/// What a batch touched, to recompile.
#[derive(Default)]
struct Dirty {
    routes: HashSet<Id>,
    upstreams: HashSet<Id>,
    services: HashSet<Id>,
    consumers: HashSet<String>,
    groups: HashSet<String>,
    globals: bool,
    others: bool,
    lua_view: bool,
    ssls: bool,
}

impl Builder {
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The snapshot of the current state. Cheap: every part is shared.
    pub fn snapshot(&self, version: u64) -> Snapshot {
        Snapshot {
            version,
            routes: self.table.clone(),
            router: self.router.clone(),
            upstreams: self.upstreams_out.clone(),
            others: self.others_out.clone(),
            lua_view_version: self.lua_view_version,
            global_chains: self.global_chains.clone(),
            consumers: self.consumers.clone(),
            configured: self.configured.clone(),
            ssls: self.ssl_index.clone(),
        }
    }

    /// Applies `changes`, compiled against `catalog` (a different catalog than last time, a
    /// plugin reload, recompiles every chain).
    pub fn apply(
        &mut self,
        changes: Vec<Change>,
        version: u64,
        resolver: &dyn Resolve,
        catalog: &Arc<Catalog>,
    ) -> Applied {
        let all = !self
            .catalog
            .as_ref()
            .is_some_and(|c| Arc::ptr_eq(c, catalog));
        self.catalog = Some(catalog.clone());
        self.apply_with(changes, version, resolver, catalog, all)
    }

    /// Makes the builder hold exactly `items` (a whole file or store listing): what is new or
    /// different is put, what is gone is deleted, the rest is left as it is.
    pub fn sync(
        &mut self,
        items: Vec<(Item, u64)>,
        version: u64,
        resolver: &dyn Resolve,
        catalog: &Arc<Catalog>,
    ) -> Applied {
        let mut seen: HashSet<(&'static str, Id)> = HashSet::new();
        let mut changes = Vec::with_capacity(items.len());
        for (item, rev) in items {
            seen.insert((item.kind(), item.id()));
            changes.push(Change::Put(item, rev));
        }
        let mut gone: Vec<(&'static str, Id)> = Vec::new();
        gone.extend(self.routes.keys().map(|id| ("routes", id.clone())));
        gone.extend(self.services.keys().map(|id| ("services", id.clone())));
        gone.extend(self.upstreams.keys().map(|id| ("upstreams", id.clone())));
        for (kind, m) in &self.others {
            gone.extend(m.keys().map(|id| (*kind, id.clone())));
        }
        gone.retain(|k| !seen.contains(k));
        gone.sort();
        changes.extend(gone.into_iter().map(|(k, id)| Change::Delete(k, id)));
        self.apply(changes, version, resolver, catalog)
    }

    /// Applies `changes` compiling everything against `catalog` (a one-shot build).
    pub(super) fn apply_all(
        &mut self,
        changes: Vec<Change>,
        version: u64,
        resolver: &dyn Resolve,
        catalog: &Catalog,
    ) -> Applied {
        self.apply_with(changes, version, resolver, catalog, true)
    }

    fn apply_with(
        &mut self,
        changes: Vec<Change>,
        version: u64,
        resolver: &dyn Resolve,
        catalog: &Catalog,
        all: bool,
    ) -> Applied {
        let mut out = Applied {
            full: all,
            ..Applied::default()
        };
        let mut dirty = Dirty::default();
        let mut undone: HashSet<(&'static str, Id)> = HashSet::new();
        for change in changes {
            let (kind, id) = match &change {
                Change::Put(item, _) => (item.kind(), item.id()),
                Change::Delete(kind, id) => (*kind, id.clone()),
            };
            let before = self.current(kind, &id);
            let same = match (&change, &before) {
                (Change::Put(new, _), Some((old, _))) => new.untimed() == old.untimed(),
                (Change::Delete(..), None) => true,
                _ => false,
            };
            if same {
                continue;
            }
            if undone.insert((kind, id.clone())) {
                out.undo.push(match before {
                    Some((item, rev)) => Change::Put(item, rev),
                    None => Change::Delete(kind, id.clone()),
                });
            }
            out.changed = true;
            self.store(change, &mut dirty);
        }
        if all {
            dirty.routes.extend(self.routes.keys().cloned());
            dirty.routes.extend(self.served.keys().cloned());
            dirty
                .consumers
                .extend(self.others_of("consumers").keys().map(|i| i.0.clone()));
            dirty.consumers.extend(self.consumers.keys().cloned());
            dirty.globals = true;
            out.changed = true;
        }
        if !out.changed {
            return out;
        }

        for id in sorted(&dirty.upstreams) {
            self.compile_upstream(&id, resolver, &mut out.errors);
            dirty.routes.extend(self.users_of(&Dep::Upstream(id)));
        }
        for id in sorted(&dirty.services) {
            self.compile_service(&id, resolver, &mut out.errors);
            dirty.routes.extend(self.users_of(&Dep::Service(id)));
        }
        // Routes in load order, so errors and tie-breaks come out as in the file.
        let mut routes: Vec<(usize, Id)> = dirty
            .routes
            .into_iter()
            .map(|id| (self.orders.get(&id).copied().unwrap_or(usize::MAX), id))
            .collect();
        routes.sort();
        for (_, id) in routes {
            self.recompile_route(&id, resolver, catalog, all, &mut out);
        }

        if !dirty.groups.is_empty() {
            let members: Vec<String> = self
                .others_of("consumers")
                .values()
                .filter(|c| group_of(&c.value.value).is_some_and(|g| dirty.groups.contains(&g)))
                .map(|c| c.value.id.0.clone())
                .collect();
            dirty.consumers.extend(members);
        }
        let mut consumers: Vec<String> = dirty.consumers.into_iter().collect();
        consumers.sort();
        for name in consumers {
            self.recompile_consumer(&name, catalog, all, &mut out.errors);
        }
        if dirty.globals {
            self.recompile_globals(catalog, all, &mut out.errors);
        }
        if dirty.others {
            self.others_out = Arc::new(self.collect_others());
        }
        if dirty.ssls {
            self.recompile_ssls(&mut out.errors);
        }
        if dirty.lua_view {
            self.lua_view_version = version;
        }
        out
    }

    /// The stored item of `kind`/`id` and its revision.
    fn current(&self, kind: &'static str, id: &Id) -> Option<(Item, u64)> {
        match kind {
            "routes" => self
                .routes
                .get(id)
                .map(|s| (Item::Route((*s.value).clone()), s.revision)),
            "services" => self
                .services
                .get(id)
                .map(|s| (Item::Service((*s.value).clone()), s.revision)),
            "upstreams" => self
                .upstreams
                .get(id)
                .map(|s| (Item::Upstream((*s.value).clone()), s.revision)),
            other => self
                .others
                .get(other)
                .and_then(|m| m.get(id))
                .map(|s| (Item::Other(other, (*s.value).clone()), s.revision)),
        }
    }

    /// Compiles the `ssls` items that changed (an unchanged item keeps its entry, and with it
    /// its TLS session cache) and rebuilds the SNI index. An item that does not compile is
    /// left out and reported.
    fn recompile_ssls(&mut self, errors: &mut Vec<ItemError>) {
        let mut next = BTreeMap::new();
        for (id, src) in self.others_of("ssls") {
            let value = &src.value.value;
            if let Some((old, e)) = self.ssl_entries.get(id)
                && old == value
            {
                next.insert(id.clone(), (old.clone(), e.clone()));
                continue;
            }
            let compiled = crate::config::ssl::check(value)
                .map_err(|e| e.to_string())
                .and_then(|ssl| SslEntry::compile(id.clone(), ssl));
            match compiled {
                Ok(e) => {
                    next.insert(id.clone(), (value.clone(), Arc::new(e)));
                }
                Err(message) => errors.push(ItemError {
                    kind: "ssls",
                    id: id.clone(),
                    error: ConfigError::new(format!("ssls[id={id}]"), "", message),
                }),
            }
        }
        let entries: BTreeMap<Id, Arc<SslEntry>> = next
            .iter()
            .map(|(id, (_, e))| (id.clone(), e.clone()))
            .collect();
        self.ssl_index = Arc::new(SslIndex::new(&entries));
        self.ssl_entries = next;
    }

    fn others_of(&self, kind: &str) -> &BTreeMap<Id, Src<OpaqueResource>> {
        static EMPTY: BTreeMap<Id, Src<OpaqueResource>> = BTreeMap::new();
        self.others.get(kind).unwrap_or(&EMPTY)
    }

    /// Records a change in the sources and what it makes dirty.
    fn store(&mut self, change: Change, dirty: &mut Dirty) {
        match change {
            Change::Put(item, revision) => {
                let id = item.id();
                match item {
                    Item::Route(r) => {
                        if !self.orders.contains_key(&id) {
                            self.orders.insert(id.clone(), self.next_order);
                            self.next_order += 1;
                        }
                        let value = Arc::new(r);
                        let order = self.orders.get(&id).copied().unwrap_or(usize::MAX);
                        self.configured
                            .routes
                            .insert(id.clone(), (order, value.clone()));
                        self.routes.insert(id.clone(), Src { value, revision });
                        dirty.routes.insert(id);
                    }
                    Item::Service(s) => {
                        let value = Arc::new(s);
                        let order = {
                            let had = self.configured.services.get(&id).map(|(o, _)| *o);
                            self.order_of(had)
                        };
                        self.configured
                            .services
                            .insert(id.clone(), (order, value.clone()));
                        self.services.insert(id.clone(), Src { value, revision });
                        dirty.services.insert(id);
                    }
                    Item::Upstream(u) => {
                        let value = Arc::new(u);
                        let order = {
                            let had = self.configured.upstreams.get(&id).map(|(o, _)| *o);
                            self.order_of(had)
                        };
                        self.configured
                            .upstreams
                            .insert(id.clone(), (order, value.clone()));
                        self.upstreams.insert(id.clone(), Src { value, revision });
                        dirty.upstreams.insert(id);
                    }
                    Item::Other(kind, o) => {
                        let value = Arc::new(o);
                        self.others
                            .entry(kind)
                            .or_default()
                            .insert(id.clone(), Src { value, revision });
                        self.other_changed(kind, &id, dirty);
                    }
                }
            }
            Change::Delete(kind, id) => match kind {
                "routes" => {
                    self.routes.remove(&id);
                    self.orders.remove(&id);
                    self.configured.routes.remove(&id);
                    dirty.routes.insert(id);
                }
                "services" => {
                    self.services.remove(&id);
                    self.configured.services.remove(&id);
                    dirty.services.insert(id);
                }
                "upstreams" => {
                    self.upstreams.remove(&id);
                    self.configured.upstreams.remove(&id);
                    dirty.upstreams.insert(id);
                }
                other => {
                    if let Some(m) = self.others.get_mut(other) {
                        m.remove(&id);
                    }
                    self.other_changed(other, &id, dirty);
                }
            },
        }
    }

    /// The load order a resource already has, or the next one.
    fn order_of(&mut self, existing: Option<usize>) -> usize {
        match existing {
            Some(o) => o,
            None => {
                self.next_order += 1;
                self.next_order - 1
            }
        }
    }

    fn other_changed(&self, kind: &str, id: &Id, dirty: &mut Dirty) {
        dirty.others = true;
        match kind {
            "plugin_configs" => {
                dirty
                    .routes
                    .extend(self.users_of(&Dep::PluginConfig(id.clone())));
            }
            "consumers" => {
                dirty.lua_view = true;
                // A credential (`NAME/credentials/ID`) only feeds the Lua side.
                if !id.0.contains("/credentials/") {
                    dirty.consumers.insert(id.0.clone());
                }
            }
            "consumer_groups" => {
                dirty.lua_view = true;
                dirty.groups.insert(id.0.clone());
            }
            // Lua reads these through `moongate.config.document()`, cached per view version.
            "ssls" => {
                dirty.ssls = true;
                dirty.lua_view = true;
            }
            "plugin_metadata" | "secrets" => dirty.lua_view = true,
            "global_rules" => {
                dirty.globals = true;
                dirty.lua_view = true;
            }
            _ => {}
        }
    }

    fn users_of(&self, dep: &Dep) -> Vec<Id> {
        self.users
            .get(dep)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn set_deps(&mut self, route: &Id, deps: Vec<Dep>) {
        for d in self.deps_of.remove(route).unwrap_or_default() {
            if let Some(s) = self.users.get_mut(&d) {
                s.remove(route);
                if s.is_empty() {
                    self.users.remove(&d);
                }
            }
        }
        if deps.is_empty() {
            return;
        }
        for d in &deps {
            self.users
                .entry(d.clone())
                .or_default()
                .insert(route.clone());
        }
        self.deps_of.insert(route.clone(), deps);
    }

    fn compile_upstream(&mut self, id: &Id, resolver: &dyn Resolve, errors: &mut Vec<ItemError>) {
        let Some(src) = self.upstreams.get(id).cloned() else {
            self.upstream_defs.remove(id);
            self.upstreams_out.remove(id);
            return;
        };
        if let Some((old, _)) = self.upstream_defs.get(id)
            && **old == *src.value
        {
            return;
        }
        match UpstreamDef::compile(&src.value, resolver) {
            Ok(def) => {
                let def = Arc::new(def);
                self.upstreams_out.insert(id.clone(), def.clone());
                self.upstream_defs.insert(id.clone(), (src.value, def));
            }
            Err(e) => {
                self.upstream_defs.remove(id);
                self.upstreams_out.remove(id);
                errors.push(ItemError {
                    kind: "upstreams",
                    id: id.clone(),
                    error: ConfigError::new(format!("upstreams[id={id}]"), e.field, e.message),
                });
            }
        }
    }

    fn compile_service(&mut self, id: &Id, resolver: &dyn Resolve, errors: &mut Vec<ItemError>) {
        let inline = self.services.get(id).and_then(|s| s.value.upstream.clone());
        let Some(up) = inline else {
            self.service_defs.remove(id);
            return;
        };
        match compile_inline(&mut self.service_defs, id, &up, resolver) {
            Ok(_) => {}
            Err(e) => errors.push(ItemError {
                kind: "services",
                id: id.clone(),
                error: ConfigError::new(format!("services[id={id}]"), e.field, e.message),
            }),
        }
    }

    /// Takes route `id` out of what is served and, if it still exists and compiles, puts its
    /// new version back (in the same slot).
    fn recompile_route(
        &mut self,
        id: &Id,
        resolver: &dyn Resolve,
        catalog: &Catalog,
        all: bool,
        out: &mut Applied,
    ) {
        let previous = self.served.remove(id);
        if let Some(p) = &previous {
            self.router.remove(&p.rule);
        }
        let src = self.routes.get(id).cloned().filter(|s| s.value.status != 0);
        let Some(src) = src else {
            self.set_deps(id, Vec::new());
            self.inline_defs.remove(id);
            if let Some(p) = previous {
                self.release(p.slot);
            }
            return;
        };
        let slot = match &previous {
            Some(p) => p.slot,
            None => self.free_slots.pop().unwrap_or_else(|| {
                self.next_slot += 1;
                self.next_slot - 1
            }),
        };
        out.routes_compiled += 1;
        let reuse = if all { None } else { previous.as_ref() };
        let (result, deps) = self.compile_route(id, &src, slot, reuse, resolver, catalog);
        self.set_deps(id, deps);
        match result {
            Ok((entry, rule)) => {
                let entry = Arc::new(entry);
                self.router.insert(&rule);
                self.table.set(slot, Some(entry.clone()));
                self.served.insert(id.clone(), Served { slot, entry, rule });
            }
            Err(errors) => {
                self.release(slot);
                out.errors.extend(errors.into_iter().map(|error| ItemError {
                    kind: "routes",
                    id: id.clone(),
                    error,
                }));
            }
        }
    }

    fn release(&mut self, slot: usize) {
        self.table.set(slot, None);
        self.free_slots.push(slot);
    }

    /// Compiles one route merged with its service and plugin config. Returns what it looked
    /// up, found or not, whatever the outcome.
    #[allow(clippy::type_complexity)]
    fn compile_route(
        &mut self,
        id: &Id,
        src: &Src<Route>,
        slot: usize,
        previous: Option<&Served>,
        resolver: &dyn Resolve,
        catalog: &Catalog,
    ) -> (Result<(RouteEntry, RouteRule), Vec<ConfigError>>, Vec<Dep>) {
        let r = &*src.value;
        let label = format!("routes[id={id}]");
        let mut errors = Vec::new();
        let mut deps = Vec::new();
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
        let service = r.service_id.as_ref().and_then(|sid| {
            deps.push(Dep::Service(sid.clone()));
            self.services.get(sid).cloned()
        });
        // APISIX's merge: the service's plugins, overlaid by the plugin config's, overlaid by
        // the route's own.
        let mut plugins = service
            .as_ref()
            .map(|s| s.value.plugins.clone())
            .unwrap_or_default();
        let mut missing_plugin_config = None;
        let mut route_version = src.revision.to_string();
        // The plugins the plugin config gave, for their `_meta.parent`.
        let mut from_plugin_config: Vec<String> = Vec::new();
        if let Some(pcid) = &r.plugin_config_id {
            deps.push(Dep::PluginConfig(pcid.clone()));
            match self.others_of("plugin_configs").get(pcid) {
                Some(pc) => {
                    if let Some(m) = pc.value.value.get("plugins").and_then(|v| v.as_object()) {
                        plugins.extend(m.iter().map(|(k, v)| (k.clone(), v.clone())));
                        from_plugin_config.extend(m.keys().cloned());
                    }
                    route_version = format!("{route_version}#{}", pc.revision);
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
        let owner = match (&r.service_id, &service) {
            (Some(sid), Some(s)) => ConfOwner {
                conf_type: "route&service".into(),
                conf_id: format!("{id}&{sid}"),
                conf_version: format!("{route_version}&{}", s.revision),
            },
            _ => ConfOwner {
                conf_type: "route".into(),
                conf_id: id.0.clone(),
                conf_version: route_version,
            },
        };
        let reusable = previous.filter(|p| p.entry.plugins == plugins);
        let chain = if plugins.is_empty() {
            None
        } else if let Some(c) = reusable
            .and_then(|p| p.entry.chain.as_ref())
            .filter(|c| c.owner == owner)
        {
            Some(c.clone())
        } else {
            match Chain::build(format!("route#{id}"), owner, &plugins, catalog) {
                Ok(mut c) => {
                    // Confs the route did not write itself keep the key of the resource they
                    // came from, as APISIX's merge keeps their `_meta.parent`.
                    for name in plugins.keys().filter(|n| !r.plugins.contains_key(*n)) {
                        let origin = match (&r.plugin_config_id, &r.service_id) {
                            (Some(pcid), _) if from_plugin_config.contains(name) => {
                                format!("/apisix/plugin_configs/{pcid}")
                            }
                            (_, Some(sid)) => format!("/apisix/services/{sid}"),
                            _ => continue,
                        };
                        c.set_parent(name, &origin);
                    }
                    Some(Arc::new(c))
                }
                Err(errs) => {
                    errors.extend(
                        errs.into_iter()
                            .map(|e| ConfigError::new(&label, e.field, e.message)),
                    );
                    None
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
        let handlers = (!handlers.chunks.is_empty()).then(|| {
            match previous.and_then(|p| p.entry.handlers.clone()) {
                Some(h) if *h == handlers => h,
                _ => Arc::new(handlers),
            }
        });

        let upstream = if let Some(u) = &r.upstream {
            match compile_inline(&mut self.inline_defs, id, u, resolver) {
                Ok(def) => Some(RouteUpstream::Ready(def)),
                Err(e) => {
                    errors.push(ConfigError::new(&label, e.field, e.message));
                    None
                }
            }
        } else {
            self.inline_defs.remove(id);
            Some(if let Some(uid) = &r.upstream_id {
                deps.push(Dep::Upstream(uid.clone()));
                self.upstream_by_id(&label, uid)
            } else if let Some(sid) = &r.service_id {
                match (&service, self.service_defs.get(sid)) {
                    (None, _) => {
                        log::warn!(
                            "{label}: service_id {sid} names no service; requests will get 404"
                        );
                        RouteUpstream::MissingService(sid.clone())
                    }
                    (Some(_), Some((_, def))) => RouteUpstream::Ready(def.clone()),
                    (Some(s), None) => match &s.value.upstream_id {
                        Some(uid) => {
                            deps.push(Dep::Upstream(uid.clone()));
                            self.upstream_by_id(&label, uid)
                        }
                        None => RouteUpstream::NoUpstream,
                    },
                }
            } else {
                RouteUpstream::NoUpstream
            })
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
            && let Some(s) = &service
        {
            hosts = s.value.hosts.clone();
        }
        let mut remote_addrs = r.remote_addrs.clone();
        if let Some(a) = &r.remote_addr {
            remote_addrs.push(a.clone());
        }
        let spec = RouteSpec {
            index: slot,
            id: id.0.clone(),
            uris,
            hosts,
            methods: r.methods.clone(),
            remote_addrs,
            vars: r.vars.clone(),
            priority: r.priority,
        };
        let order = self.orders.get(id).copied().unwrap_or(usize::MAX);
        let rule = match RouteRule::compile(&spec, order) {
            Ok(rule) => Some(rule),
            Err(errs) => {
                errors.extend(
                    errs.into_iter()
                        .map(|e| ConfigError::new(&label, e.field, e.message)),
                );
                None
            }
        };
        let (Some(upstream), Some(rule), true) = (upstream, rule, errors.is_empty()) else {
            return (Err(errors), deps);
        };
        let up_timeout = match &upstream {
            RouteUpstream::Ready(def) => def.timeout,
            _ => None,
        };
        let entry = RouteEntry {
            id: id.clone(),
            name: r.name.clone(),
            service_id: r.service_id.clone(),
            upstream,
            plugins,
            timeout: r.timeout.or(up_timeout),
            enable_websocket: r
                .enable_websocket
                .or(service.as_ref().and_then(|s| s.value.enable_websocket))
                .unwrap_or(false),
            chain,
            handlers,
            missing_plugin_config,
            action: r.action.clone(),
        };
        (Ok((entry, rule)), deps)
    }

    fn upstream_by_id(&self, label: &str, uid: &Id) -> RouteUpstream {
        match self.upstream_defs.get(uid) {
            Some((_, def)) => RouteUpstream::Ready(def.clone()),
            None => {
                let why = if self.upstreams.contains_key(uid) {
                    "which is invalid"
                } else {
                    "which does not exist"
                };
                log::warn!(
                    "{label}: upstream_id {uid} names an upstream {why}; requests will get 502"
                );
                RouteUpstream::MissingUpstream(uid.clone())
            }
        }
    }

    /// Consumers (credentials carry auth confs only and are left to the Lua side) with their
    /// merged group and consumer plugins.
    fn recompile_consumer(
        &mut self,
        name: &str,
        catalog: &Catalog,
        all: bool,
        errors: &mut Vec<ItemError>,
    ) {
        // Credentials (`NAME/credentials/ID`) only feed the Lua side.
        if name.contains("/credentials/") {
            return;
        }
        let previous = self.consumers.remove(name);
        let Some(src) = self
            .others_of("consumers")
            .get(&Id(name.to_string()))
            .cloned()
        else {
            return;
        };
        let plugins_of = |v: &Value| -> PluginMap {
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
        let group_id = group_of(&src.value.value);
        let mut merged = PluginMap::default();
        let mut missing_group = None;
        let mut group_version = None;
        if let Some(gid) = &group_id {
            match self.others_of("consumer_groups").get(&Id(gid.clone())) {
                Some(g) => {
                    merged.extend(plugins_of(&g.value.value));
                    group_version = Some(g.revision.to_string());
                }
                None => missing_group = Some(gid.clone()),
            }
        }
        merged.extend(plugins_of(&src.value.value));
        let conf_version = src.revision.to_string();
        let label = format!("consumers[username={name}]");
        let owner = ConfOwner {
            conf_type: "consumer".into(),
            conf_id: name.to_string(),
            conf_version: conf_version.clone(),
        };
        let reusable = previous
            .filter(|p| !all && p.plugins == merged)
            .and_then(|p| p.chain.clone())
            .filter(|c| c.owner == owner);
        let chain = if merged.is_empty() {
            None
        } else if let Some(c) = reusable {
            Some(c)
        } else {
            match Chain::build(format!("consumer#{name}"), owner, &merged, catalog) {
                Ok(mut c) if !c.entries.is_empty() => {
                    // The group's confs the consumer does not override belong to the group.
                    if let Some(gid) = &group_id {
                        let own = plugins_of(&src.value.value);
                        for plugin in merged.keys().filter(|n| !own.contains_key(*n)) {
                            c.set_parent(plugin, &format!("/apisix/consumer_groups/{gid}"));
                        }
                    }
                    Some(Arc::new(c))
                }
                Ok(_) => None,
                Err(errs) => {
                    errors.extend(errs.into_iter().map(|e| ItemError {
                        kind: "consumers",
                        id: Id(name.to_string()),
                        error: ConfigError::new(&label, e.field, e.message),
                    }));
                    return;
                }
            }
        };
        self.consumers.insert(
            name.to_string(),
            Arc::new(ConsumerEntry {
                username: name.to_string(),
                group_id,
                chain,
                missing_group,
                plugins: merged,
                conf_version,
                group_version,
            }),
        );
    }

    /// One chain per global rule, in id order; unchanged rules keep their chain.
    fn recompile_globals(&mut self, catalog: &Catalog, all: bool, errors: &mut Vec<ItemError>) {
        let rules: Vec<(Id, Src<OpaqueResource>)> = self
            .others_of("global_rules")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut next = BTreeMap::new();
        for (id, src) in rules {
            if !all
                && let Some((rev, chain)) = self.globals.get(&id)
                && *rev == src.revision
            {
                next.insert(id, (*rev, chain.clone()));
                continue;
            }
            let label = format!("global_rules[id={id}]");
            let err = |field: String, message: String| ItemError {
                kind: "global_rules",
                id: id.clone(),
                error: ConfigError::new(&label, field, message),
            };
            let plugins: PluginMap =
                match src.value.value.get("plugins").and_then(|v| v.as_object()) {
                    Some(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                    None => {
                        errors.push(err("plugins".into(), "is required".into()));
                        continue;
                    }
                };
            let owner = ConfOwner {
                conf_type: "global_rule".into(),
                conf_id: id.0.clone(),
                conf_version: src.revision.to_string(),
            };
            match Chain::build(format!("global_rule#{id}"), owner, &plugins, catalog) {
                Ok(c) => {
                    let chain = (!c.entries.is_empty()).then(|| Arc::new(c));
                    next.insert(id, (src.revision, chain));
                }
                Err(errs) => errors.extend(errs.into_iter().map(|e| err(e.field, e.message))),
            }
        }
        self.global_chains = next.values().filter_map(|(_, c)| c.clone()).collect();
        self.globals = next;
    }

    fn collect_others(&self) -> OtherResources {
        let mut o = OtherResources::default();
        for (kind, items) in &self.others {
            if let Some(list) = o.list_mut(kind) {
                list.extend(items.values().map(|s| (*s.value).clone()));
            }
        }
        o
    }
}

/// A consumer's `group_id`, as text.
fn group_of(v: &Value) -> Option<String> {
    v.get("group_id").and_then(|g| match g {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    })
}

/// Compiles an inline upstream, reusing the definition compiled from an equal one.
fn compile_inline(
    cache: &mut HashMap<Id, (Upstream, Arc<UpstreamDef>)>,
    id: &Id,
    up: &Upstream,
    resolver: &dyn Resolve,
) -> Result<Arc<UpstreamDef>, crate::upstream::UpstreamError> {
    if let Some((src, def)) = cache.get(id)
        && src == up
    {
        return Ok(def.clone());
    }
    match UpstreamDef::compile(up, resolver) {
        Ok(def) => {
            let def = Arc::new(def);
            cache.insert(id.clone(), (up.clone(), def.clone()));
            Ok(def)
        }
        Err(e) => {
            cache.remove(id);
            Err(e)
        }
    }
}

fn sorted(set: &HashSet<Id>) -> Vec<Id> {
    let mut v: Vec<Id> = set.iter().cloned().collect();
    v.sort();
    v
}
