//! Plugins as APISIX defines them, whatever they are written in: the phases, the chain a resource
//! runs (global rules, then the route's plugins, by descending priority), the per-request context
//! both kinds share, and the trait native Rust plugins implement.
//!
//! A chain is compiled once per config snapshot, off the request path: each entry knows its
//! plugin's priority (after `_meta.priority`), whether `_meta.disable` is set, its compiled
//! `_meta.filter` and its `_meta.error_response`. Lua entries carry the conf as JSON; each
//! worker turns it into one checked Lua table per compiled chain (see `lua::host`).
//!
//! A compiled chain is shared, as one `Arc`, by every snapshot in which its resource did not
//! change, and carries a [`ChainId`]: the key under which workers keep its conf tables. So a
//! change to one route leaves the conf tables of every other route — the tables APISIX plugins
//! key their caches on — the very same objects.

pub mod catalog;
pub mod ctx;
pub mod native;
pub mod registry;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use serde_json::Value;

use crate::router::expr::Expr;
pub use catalog::{Catalog, PluginInfo};
pub use ctx::RequestCtx;

/// A plugin phase, in request order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    Rewrite,
    Access,
    /// Each time the proxy picks an upstream node (every try): `ctx.balancer_ip`/`port`, and
    /// `ngx.balancer` to change the peer, the tries and the timeouts of this try.
    Balancer,
    BeforeProxy,
    HeaderFilter,
    BodyFilter,
    Log,
}

impl Phase {
    pub const ALL: [Phase; 7] = [
        Phase::Rewrite,
        Phase::Access,
        Phase::Balancer,
        Phase::BeforeProxy,
        Phase::HeaderFilter,
        Phase::BodyFilter,
        Phase::Log,
    ];

    /// The name of the phase function in a plugin module.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::Balancer => "balancer",
            Phase::BeforeProxy => "before_proxy",
            Phase::HeaderFilter => "header_filter",
            Phase::BodyFilter => "body_filter",
            Phase::Log => "log",
        }
    }

    /// What `ngx.get_phase()` answers while the phase runs: APISIX runs `rewrite` and `access`
    /// plugins inside nginx's access phase and `before_proxy` in the balancer phase.
    pub fn ngx_phase(self) -> &'static str {
        match self {
            Phase::Rewrite | Phase::Access => "access",
            Phase::Balancer | Phase::BeforeProxy => "balancer",
            Phase::HeaderFilter => "header_filter",
            Phase::BodyFilter => "body_filter",
            Phase::Log => "log",
        }
    }

    /// Phases whose `return code, body` ends the request.
    pub fn may_answer(self) -> bool {
        matches!(
            self,
            Phase::Rewrite | Phase::Access | Phase::Balancer | Phase::BeforeProxy
        )
    }

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A set of phases, as a bit mask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PhaseSet(u8);

impl PhaseSet {
    pub fn insert(&mut self, p: Phase) {
        self.0 |= p.bit();
    }

    pub fn contains(self, p: Phase) -> bool {
        self.0 & p.bit() != 0
    }

    pub fn union(self, o: PhaseSet) -> PhaseSet {
        PhaseSet(self.0 | o.0)
    }

    pub fn from_names<'a>(names: impl IntoIterator<Item = &'a str>) -> PhaseSet {
        let mut s = PhaseSet::default();
        for n in names {
            if let Some(p) = Phase::ALL.iter().find(|p| p.name() == n) {
                s.insert(*p);
            }
        }
        s
    }
}

/// How a chain entry is implemented.
#[derive(Clone)]
pub enum Impl {
    /// An APISIX Lua module, run on the worker's VM.
    Lua,
    Native(Arc<dyn native::NativePlugin>),
}

impl std::fmt::Debug for Impl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Impl::Lua => f.write_str("Lua"),
            Impl::Native(p) => write!(f, "Native({})", p.name()),
        }
    }
}

/// One plugin of a chain, with its conf.
#[derive(Debug, Clone)]
pub struct ChainEntry {
    pub name: String,
    /// The plugin's priority, or `_meta.priority` when the conf sets it.
    pub priority: i64,
    pub imp: Impl,
    pub phases: PhaseSet,
    /// The conf as configured (defaults are filled per worker by the plugin's `check_schema`).
    pub conf: Value,
    /// `_meta.filter`: the plugin runs only when it holds.
    pub filter: Option<Expr>,
    /// `_meta.error_response`: replaces the body of any answer with status >= 400.
    pub error_response: Option<Value>,
    /// Came from the consumer (or its group) and was not on the route: APISIX's
    /// `_from_consumer`, which the `rewrite_in_consumer` pass runs.
    pub from_consumer: bool,
    /// A native plugin's conf, checked and compiled once for this snapshot.
    pub prepared: Option<native::Prepared>,
    /// The resource the conf was written in (`/apisix/routes/1`, `/apisix/services/2` …):
    /// APISIX's `conf._meta.parent.resource_key`, which rate limiters put in their keys so
    /// that each resource counts on its own.
    pub parent: String,
}

/// Which resource a chain's confs belong to, as APISIX tells plugins through `ctx.conf_type`,
/// `ctx.conf_id` and `ctx.conf_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfOwner {
    /// `route`, `route&service`, `global_rule`, `plugin_config` …
    pub conf_type: String,
    pub conf_id: String,
    pub conf_version: String,
}

/// The identity of one compiled chain, for per-worker caches that outlive snapshots (the Lua
/// conf tables): a key, and tokens that die with the chain (and, for a route chain merged
/// with a consumer's, with either of the two), so a cache can drop what no snapshot uses.
#[derive(Debug, Clone)]
pub struct ChainId {
    key: (u64, u64),
    alive: Vec<Arc<()>>,
}

static NEXT_CHAIN: AtomicU64 = AtomicU64::new(1);

impl ChainId {
    /// A new identity: every compiled chain is distinct from every other.
    fn fresh() -> ChainId {
        ChainId {
            key: (NEXT_CHAIN.fetch_add(1, Ordering::Relaxed), 0),
            alive: vec![Arc::new(())],
        }
    }

    /// Unique among live chains; equal only for the same chain (or the same merge of two).
    pub fn key(&self) -> (u64, u64) {
        self.key
    }

    /// Tokens a cache keeps to tell whether the chain is still alive.
    pub fn watch(&self) -> Vec<Weak<()>> {
        self.alive.iter().map(Arc::downgrade).collect()
    }

    /// True while every token of `watched` is alive.
    pub fn alive(watched: &[Weak<()>]) -> bool {
        watched.iter().all(|w| w.strong_count() > 0)
    }
}

/// The plugins one resource runs, sorted by descending priority (ties keep the plugin name
/// order, which is the order of the conf object's keys in our maps).
#[derive(Debug, Clone)]
pub struct Chain {
    /// Names the resource in logs (`route#1`, `global_rule#g`); unique within a snapshot.
    pub key: String,
    /// Keys the per-worker conf tables: unique to this compiled chain, kept across snapshots.
    pub id: ChainId,
    pub owner: ConfOwner,
    pub entries: Vec<ChainEntry>,
    /// The union of the phases the entries implement.
    pub phases: PhaseSet,
    /// Any entry is a Lua plugin: the request needs the VM.
    pub has_lua: bool,
    /// The plugin load (`Catalog::generation`) the chain was built against: its Lua entries
    /// run on a VM of that load.
    pub generation: u64,
    /// For rewrite and access: the entries that run in that phase when every one of them is a
    /// Lua plugin without `_meta.filter` (so the phase can run in one call with others);
    /// `None` otherwise.
    pub lua_runs: [Option<Box<[usize]>>; 2],
}

/// [`Chain::lua_runs`] of `entries`.
fn lua_runs(entries: &[ChainEntry]) -> [Option<Box<[usize]>>; 2] {
    [Phase::Rewrite, Phase::Access].map(|phase| {
        let mut run = Vec::new();
        for (i, e) in entries.iter().enumerate() {
            if !e.phases.contains(phase) {
                continue;
            }
            if !matches!(e.imp, Impl::Lua) || e.filter.is_some() {
                return None;
            }
            run.push(i);
        }
        Some(run.into_boxed_slice())
    })
}

impl Chain {
    /// [`Chain::lua_runs`] for rewrite or access.
    pub fn lua_run(&self, phase: Phase) -> Option<&[usize]> {
        match phase {
            Phase::Rewrite => self.lua_runs[0].as_deref(),
            Phase::Access => self.lua_runs[1].as_deref(),
            _ => None,
        }
    }
}

/// Why a resource's plugins cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ChainError {
    pub field: String,
    pub message: String,
}

/// The resource key of a chain's own confs, from the chain key (`route#1` ->
/// `/apisix/routes/1`); confs merged in from elsewhere get theirs with [`Chain::set_parent`].
fn default_parent(chain_key: &str) -> String {
    let (kind, id) = chain_key.split_once('#').unwrap_or((chain_key, ""));
    let dir = match kind {
        "route" => "routes",
        "service" => "services",
        "consumer" => "consumers",
        "consumer_group" => "consumer_groups",
        "global_rule" => "global_rules",
        "plugin_config" => "plugin_configs",
        other => other,
    };
    format!("/apisix/{dir}/{id}")
}

impl Chain {
    /// Records that plugin `name`'s conf came from the resource `resource_key` (a service's
    /// or plugin config's plugin merged into a route, a consumer group's into a consumer).
    pub fn set_parent(&mut self, name: &str, resource_key: &str) {
        for e in self.entries.iter_mut().filter(|e| e.name == name) {
            e.parent = resource_key.to_string();
        }
    }

    /// Compiles `plugins: {name: conf}`: every name must be an enabled plugin, every conf must
    /// pass that plugin's schema check, and `_meta` must be well-formed. All problems are
    /// reported.
    pub fn build(
        key: String,
        owner: ConfOwner,
        plugins: &crate::config::resource::PluginMap,
        catalog: &Catalog,
    ) -> Result<Chain, Vec<ChainError>> {
        let mut errors = Vec::new();
        let mut entries = Vec::with_capacity(plugins.len());
        for (name, conf) in plugins {
            let field = format!("plugins.{name}");
            let Some(info) = catalog.get(name) else {
                errors.push(ChainError {
                    field,
                    message: format!("unknown plugin [{name}]"),
                });
                continue;
            };
            // A native conf is checked by compiling it; the compiled form is kept for requests.
            let checked = match &info.imp {
                Impl::Native(p) => p.prepare(conf).map(Some),
                Impl::Lua => catalog.check(name, conf, None).map(|()| None),
            };
            let prepared = match checked {
                Ok(p) => p,
                Err(e) => {
                    errors.push(ChainError { field, message: e });
                    continue;
                }
            };
            let meta = conf.get("_meta");
            if meta
                .and_then(|m| m.get("disable"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
            {
                continue;
            }
            let mut priority = info.priority;
            if let Some(p) = meta.and_then(|m| m.get("priority")) {
                match p.as_i64() {
                    Some(p) => priority = p,
                    None => errors.push(ChainError {
                        field: format!("{field}._meta.priority"),
                        message: "wrong type: expected integer".into(),
                    }),
                }
            }
            let filter = match meta.and_then(|m| m.get("filter")) {
                Some(f) => match Expr::compile(f) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        errors.push(ChainError {
                            field: format!("{field}._meta.filter"),
                            message: format!("failed to validate the 'vars' expression: {e}"),
                        });
                        continue;
                    }
                },
                None => None,
            };
            entries.push(ChainEntry {
                name: name.clone(),
                priority,
                imp: info.imp.clone(),
                phases: info.phases,
                conf: conf.clone(),
                filter,
                error_response: meta.and_then(|m| m.get("error_response")).cloned(),
                from_consumer: false,
                prepared,
                parent: default_parent(&key),
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        // Stable: equal priorities keep name order, so every worker and every reload agree.
        entries.sort_by_key(|e| std::cmp::Reverse(e.priority));
        let phases = entries
            .iter()
            .fold(PhaseSet::default(), |s, e| s.union(e.phases));
        let has_lua = entries.iter().any(|e| matches!(e.imp, Impl::Lua));
        Ok(Chain {
            key,
            id: ChainId::fresh(),
            owner,
            lua_runs: lua_runs(&entries),
            entries,
            phases,
            has_lua,
            generation: catalog.generation(),
        })
    }

    /// The route's chain after an auth plugin identified a consumer (APISIX's
    /// `merge_consumer_route`): the consumer's plugins (its group's overlaid by its own, see
    /// [`crate::config::snapshot::ConsumerEntry`]) replace the route's plugins of the same
    /// name and join the others, in priority order. Both chains are validated already, so
    /// this does no schema work on the request path.
    pub fn merged_with_consumer(&self, consumer: &Chain, owner: ConfOwner) -> Chain {
        let mut entries: Vec<ChainEntry> = self
            .entries
            .iter()
            .filter(|e| !consumer.entries.iter().any(|c| c.name == e.name))
            .cloned()
            .collect();
        for c in &consumer.entries {
            let mut e = c.clone();
            e.from_consumer = !self.entries.iter().any(|r| r.name == c.name);
            entries.push(e);
        }
        entries.sort_by(|a, b| {
            b.priority
                .cmp(&a.priority)
                .then_with(|| a.name.cmp(&b.name))
        });
        let phases = entries
            .iter()
            .fold(PhaseSet::default(), |s, e| s.union(e.phases));
        let has_lua = entries.iter().any(|e| matches!(e.imp, Impl::Lua));
        // The same route chain merged with the same consumer chain is the same chain: its conf
        // tables live as long as both parts do.
        let mut alive = self.id.alive.clone();
        alive.extend(consumer.id.alive.iter().cloned());
        Chain {
            key: format!("{}&{}", self.key, consumer.key),
            id: ChainId {
                key: (self.id.key.0, consumer.id.key.0),
                alive,
            },
            owner,
            lua_runs: lua_runs(&entries),
            entries,
            phases,
            has_lua,
            generation: self.generation,
        }
    }
}
