//! A worker's Lua host: its VM, the plugins loaded into it, one checked conf table per plugin
//! per resource per snapshot, and the calls that run a phase of a chain for a request.
//!
//! Conf identity matters: APISIX plugins cache on their conf table (`core.lrucache.plugin_ctx`,
//! tables keyed by conf), so each compiled chain gets its conf tables made once, by the plugin's
//! own `check_schema` filling defaults, and every request running that chain gets the very same
//! tables — across snapshots too: a config change recompiles only the chains of the resources
//! it touched, so only those get new tables, as a new `conf_version` does in APISIX.
//!
//! The request path crosses from Rust into Lua once per phase that has Lua work, and creates no
//! Lua value from Rust on the way: under the worker's heap limit every value mlua makes from Rust
//! costs a protected call. What a request needs on the Lua side (its `ctx`, `ngx.ctx`) is made by
//! the runner itself (`runner.lua`) on the request's first entry, kept in a slot of the
//! runner's `live` table that `lua::request` hands the request, and recycled by the request the
//! slot goes to once this one is unregistered (as APISIX pools `ctx` and `ctx.var`); what is the
//! same for many requests (chains, route objects) is made once per snapshot.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use mlua::{Function, Lua, RegistryKey, Table, Value};
use rustc_hash::FxHashMap;
use tokio::time::Instant;

use super::entry::{self, Arg, First, Out, Outs};
use super::plugin;
use super::request::{self, SharedReq};
use super::sched::{self, Exitable};
use super::vm::{LuaVm, VmOptions};
use crate::plugin::{Chain, Impl, Phase};

const RUNNER: &str = include_str!("runner.lua");
/// The fewest chain-table entries at which dead chains are swept.
const SWEEP_MIN: usize = 256;

/// One chain's table (in a registry slot, as entries push it), with the tokens that tell
/// whether the chain is alive.
type ChainTable = (Vec<std::sync::Weak<()>>, RegistryKey);

/// What a phase run ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Every plugin ran; the request goes on. `consumer`: the `ctx.consumer_name` an auth
    /// plugin attached (reported after rewrite runs); `upstream_id`: `ctx.upstream_id` as a
    /// plugin left it (reported after rewrite and access runs).
    Continue {
        consumer: Option<String>,
        upstream_id: Option<String>,
    },
    /// Plugin `index` of the chain answered `return code, body`.
    Answer {
        index: usize,
        status: Option<u16>,
        body: Option<Bytes>,
    },
    /// `ngx.exit(code)` was called (the code is on the request).
    Exit,
    /// A Lua error, already logged; the request gets 500.
    Error,
}

/// The Lua code of a route's `lua_handlers`, compiled per worker and snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HandlerSource {
    /// (phase directive, e.g. `access_by_lua`, Lua source).
    pub chunks: Vec<(String, String)>,
}

/// The matched route as plugins see it (`ctx.route_id`, `ctx.matched_route`).
#[derive(Debug, Clone, Copy)]
pub struct RouteInfo<'a> {
    pub id: &'a str,
    pub name: Option<&'a str>,
    pub service_id: Option<&'a str>,
    /// `matched_route.modifiedIndex`.
    pub modified_index: Option<i64>,
}

/// The numbers the runner knows phases by (`runner.lua`'s `PHASES`).
fn phase_number(p: Phase) -> i64 {
    match p {
        Phase::Rewrite => 1,
        Phase::Access => 2,
        Phase::Balancer => 3,
        Phase::BeforeProxy => 4,
        Phase::HeaderFilter => 5,
        Phase::BodyFilter => 6,
        Phase::Log => 7,
    }
}

/// A compiled `*_by_lua` chunk, or why it did not compile.
type HandlerFn = Result<Function, String>;

pub struct LuaHost {
    vm: LuaVm,
    modules: HashMap<String, Table>,
    /// `runner.lua`'s entry for one run (in a registry slot, as entries push it).
    runner: RegistryKey,
    /// Gives a conf table its `_meta.parent` (see [`SET_PARENT`]).
    set_parent: Function,
    /// `runner.lua`'s entry for several groups in one call (`run_groups`).
    run_groups_fn: RegistryKey,
    /// `runner.lua`'s entry for a run of plugins past the bit mask (`run_listed`).
    run_listed_fn: RegistryKey,
    /// The threads entries run on.
    threads: entry::Threads,
    /// `runner.lua`'s route object maker, called once per route per snapshot.
    make_route: Function,
    /// Chain tables per compiled chain ([`crate::plugin::ChainId`]), with the tokens that tell
    /// whether the chain is still alive.
    chains: RefCell<FxHashMap<(u64, u64), ChainTable>>,
    /// `chains` is swept of dead chains when it grows to this many entries.
    sweep_at: Cell<usize>,
    /// Route objects of the newest snapshot version, by route id.
    routes: RefCell<FxHashMap<String, RouteSlot>>,
    /// Compiled handlers of the newest snapshot version, by (route key, directive).
    handlers: RefCell<FxHashMap<(String, String), Option<HandlerFn>>>,
    /// The newest snapshot version seen: the caches hold its values only. A request still on
    /// an older snapshot gets its values made anew (it holds them itself).
    newest: Cell<u64>,
    /// Longest time one phase may wait (on I/O, sleeps); past it the request fails.
    pub phase_timeout: Duration,
    memory_limit: Option<usize>,
    /// The VM's identity for `lua::request`'s state slots.
    vm_id: usize,
}

impl Drop for LuaHost {
    fn drop(&mut self) {
        request::forget_vm(self.vm_id);
    }
}

crate::raw_fn!(mark_plugin, |args| {
    // Plugin run `i` of the chain starts now (0: the run is over): one clock read. The first
    // plugin of a run is marked by Rust before the call (`premark`), or by `enter_group`.
    let i = args.number(1).unwrap_or(0.0).max(0.0) as usize;
    if let Some(req) = request::try_current()
        && let Ok(mut r) = req.try_borrow_mut()
    {
        r.mark_plugin(i);
    }
    Ok(super::raw::Rets::none())
});

crate::raw_fn!(enter_group, |args| {
    // The next group of a call of several starts: the phase and chain slot it runs in (for
    // `ngx.get_phase()` and timings), and its first plugin (1-based), whose time starts now.
    // `false` when output was printed: the request answers.
    let phase = group_phase(args.number(1).unwrap_or(0.0))
        .ok_or("enter_group: only rewrite and access groups go in one call")?;
    let slot = args.number(2).unwrap_or(0.0).max(0.0) as u8;
    let first = args.number(3).unwrap_or(0.0).max(0.0) as usize;
    request::with_raw("the phase runner", |r| {
        super::raw::Ret::Bool(enter_group_of(r, phase, slot, first)).into()
    })
});

/// The phase of a group of a call of several (`run_groups`): rewrite or access.
fn group_phase(n: f64) -> Option<Phase> {
    match n as i64 {
        1 => Some(Phase::Rewrite),
        2 => Some(Phase::Access),
        _ => None,
    }
}

/// What entering a group does to the request; whether the group runs (no output printed).
fn enter_group_of(r: &mut crate::plugin::RequestCtx, phase: Phase, slot: u8, first: usize) -> bool {
    r.phase = Some(phase);
    r.ngx_phase = phase.ngx_phase();
    r.timing = (slot, Some(phase));
    r.mark_plugin(first);
    r.out.is_empty() || r.in_content
}

/// `enter_group` through LuaJIT's FFI, which a trace compiles (a call of the raw C function
/// ends the trace): 1 when the group runs, 0 when output was printed, -1 when the raw function
/// must be called instead to raise the error (no request, a phase no group has, a panic).
extern "C" fn moongate_enter_group(phase: f64, slot: f64, first: f64) -> std::ffi::c_int {
    let run = || {
        let Some(phase) = group_phase(phase) else {
            return -1;
        };
        let slot = slot.max(0.0) as u8;
        let first = first.max(0.0) as usize;
        request::with_raw("the phase runner", |r| {
            std::ffi::c_int::from(enter_group_of(r, phase, slot, first))
        })
        .unwrap_or(-1)
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)).unwrap_or(-1)
}

/// The Lua function the runner calls as `enter_group`: the FFI entry point, and the raw
/// function when that says so.
const ENTER_GROUP: &str = r#"
local ffi = require("ffi")
local addr, raw = ...
local c = ffi.cast("int (*)(double, double, double)", addr)
return function(phase, slot, first)
    local r = c(phase, slot, first)
    if r >= 0 then
        return r == 1
    end
    return raw(phase, slot, first)
end
"#;

// `upstream_peer()`: the address the upstream answered from (ip, port), or nothing yet.
crate::raw_fn!(upstream_peer, |_| {
    request::with_raw("the phase runner", |r| match r.upstream.addr {
        Some(a) => super::raw::Rets::two(
            super::raw::Ret::Str(a.ip().to_string().into_bytes()),
            super::raw::Ret::Num(a.port() as f64),
        ),
        None => super::raw::Rets::none(),
    })
});

/// `route_match(t)`: fills `t` (the request's `ctx.curr_req_matched`) with what the router
/// matched: `_path` (the route uri), `_host` (the route host, when the route has hosts) and
/// the uri's parameters.
unsafe extern "C-unwind" fn route_match(l: *mut mlua::ffi::lua_State) -> std::ffi::c_int {
    let pairs = request::with_raw("the phase runner", |r| {
        let mut p = super::raw::Pairs::with_capacity(r.uri_params.len() + 1);
        if let Some(u) = &r.matched_uri {
            p.push(b"_path", u.as_bytes());
        }
        if let Some(h) = &r.matched_host {
            p.push(b"_host", h.as_bytes());
        }
        for (k, v) in &r.uri_params {
            p.push(k.as_bytes(), v.as_bytes());
        }
        p
    });
    // SAFETY: called by Lua with a table as argument 1; only pushes and raw sets follow,
    // with `pairs` the one owned value (leaked at worst if a push runs out of memory).
    unsafe {
        if let Ok(pairs) = pairs
            && mlua::ffi::lua_type(l, 1) == mlua::ffi::LUA_TTABLE
        {
            super::raw::set_pairs(l, 1, &pairs);
        }
    }
    0
}

/// The runner's entry flags: the route object holds this request's match (`_match_path`,
/// `_match_host`) and the request has no uri parameters: `ctx.curr_req_matched` is filled from
/// it, without `route_match`.
const ENTRY_MATCH_ON_ROUTE: i64 = 1;
/// The request's first entry into this VM: the runner makes its Lua state.
const ENTRY_FIRST: i64 = 2;

/// The first four arguments of every runner entry: the route object, the entry flags, the
/// slot of the request's Lua state and a slot to empty (see runner.lua's `state_of`).
struct EntryHead {
    route: RouteArg,
    flags: i64,
    state: request::StateEntry,
}

impl EntryHead {
    fn args(&self) -> [Arg; 4] {
        [
            self.route.arg(),
            Arg::Int(self.flags),
            Arg::Int(i64::from(self.state.slot)),
            self.state.trim.map_or(Arg::Nil, |t| Arg::Int(i64::from(t))),
        ]
    }
}

/// The route object an entry pushes: a cached one's registry slot (pushed right away, before
/// anything could drop the cache), or the key of one made for a request of an older snapshot.
enum RouteArg {
    Cached(std::ffi::c_int),
    Own(RegistryKey),
}

impl RouteArg {
    fn arg(&self) -> Arg {
        match self {
            RouteArg::Cached(slot) => Arg::Ref(*slot),
            RouteArg::Own(key) => Arg::Ref(key.id()),
        }
    }
}

/// A cached route object and the match its `_match_*` fields hold now.
struct RouteSlot {
    table: Table,
    /// `table` in a registry slot, as entries push it.
    key: RegistryKey,
    path: Option<String>,
    host: Option<String>,
}

impl RouteSlot {
    /// Makes the route object hold this match, writing its fields only when it changed.
    fn hold_match(&mut self, path: Option<&str>, host: Option<&str>) -> mlua::Result<()> {
        if self.path.as_deref() != path {
            self.table.raw_set("_match_path", path)?;
            self.path = path.map(str::to_string);
        }
        if self.host.as_deref() != host {
            self.table.raw_set("_match_host", host)?;
            self.host = host.map(str::to_string);
        }
        Ok(())
    }
}

impl LuaHost {
    /// Makes the worker's VM and loads `plugins` into it (running their `init()`). A plugin that
    /// fails here is logged and left out; the control thread reported it already at start.
    pub fn new(
        opts: &VmOptions,
        plugins: &[String],
        phase_timeout: Duration,
    ) -> mlua::Result<LuaHost> {
        let vm = LuaVm::new(opts)?;
        let lua = vm.lua();
        let mut modules = HashMap::new();
        let require: Function = lua.globals().get("require")?;
        for name in plugins {
            match plugin::load(&vm, name) {
                Ok(_) => {
                    let m: Table = require.call(format!("apisix.plugins.{name}"))?;
                    modules.insert(name.clone(), m);
                }
                Err(e) => log::error!("{e}"),
            }
        }
        let (runner, make_route, run_groups_fn, describe, run_listed_fn): (
            Function,
            Function,
            Function,
            Function,
            Function,
        ) = lua.load(RUNNER).set_name("=moongate/runner.lua").call((
            super::raw::function(lua, mark_plugin, ())?,
            lua.named_registry_value::<Table>(super::ngx::resp::LIVE_STATES)?,
            super::raw::function(lua, super::ngx::balancer::picked, ())?,
            lua.load(ENTER_GROUP)
                .set_name("=moongate/enter_group")
                .call::<Function>((
                    mlua::LightUserData(moongate_enter_group as *mut std::ffi::c_void),
                    super::raw::function(lua, enter_group, ())?,
                ))?,
            super::raw::function(lua, route_match, ())?,
            super::raw::function(lua, upstream_peer, ())?,
        ))?;
        let mut vm_id = 0;
        // SAFETY: reads the allocator of the VM's main state, in a protected call.
        unsafe { lua.exec_raw::<()>((), |l| vm_id = request::vm_of(l))? };
        let set_parent: Function = lua
            .load(SET_PARENT)
            .set_name("=moongate/set_parent")
            .call(())?;
        let threads = entry::Threads::new(runner.clone(), describe);
        let runner = lua.create_registry_value(runner)?;
        let run_groups_fn = lua.create_registry_value(run_groups_fn)?;
        let run_listed_fn = lua.create_registry_value(run_listed_fn)?;
        Ok(LuaHost {
            vm_id,
            vm,
            modules,
            runner,
            set_parent,
            run_groups_fn,
            run_listed_fn,
            threads,
            make_route,
            chains: RefCell::new(FxHashMap::default()),
            sweep_at: Cell::new(SWEEP_MIN),
            routes: RefCell::new(FxHashMap::default()),
            handlers: RefCell::new(FxHashMap::default()),
            newest: Cell::new(0),
            phase_timeout,
            memory_limit: opts.memory_limit,
        })
    }

    pub fn lua(&self) -> &Lua {
        self.vm.lua()
    }

    /// Whether plugin `name` loaded on this worker's VM.
    pub fn has_plugin(&self, name: &str) -> bool {
        self.modules.contains_key(name)
    }

    /// Whether values of snapshot `version` are cached: it is the newest seen (the caches
    /// are emptied when a newer one comes).
    fn cacheable(&self, version: u64) -> bool {
        if version > self.newest.get() {
            self.newest.set(version);
            self.routes.borrow_mut().clear();
            self.handlers.borrow_mut().clear();
        }
        version == self.newest.get()
    }

    /// The chain as Lua sees it: `{name, mod, conf}` per Lua plugin (`false` for native
    /// ones, so indices line up) and the owner's `conf_type`, `conf_id`, `conf_version`, made
    /// once per compiled chain. Returns its registry slot, to push right away (the slot is
    /// given up when the chain dies).
    fn chain_table(&self, chain: &Chain) -> Result<std::ffi::c_int, String> {
        let key = chain.id.key();
        if let Some((_, t)) = self.chains.borrow().get(&key) {
            return Ok(t.id());
        }
        let lua = self.lua();
        let err = |e: mlua::Error| e.to_string();
        let t = lua
            .create_table_with_capacity(chain.entries.len(), 4)
            .map_err(err)?;
        for (i, e) in chain.entries.iter().enumerate() {
            let v = match &e.imp {
                Impl::Native(_) => Value::Boolean(false),
                Impl::Lua => {
                    let module = self
                        .modules
                        .get(&e.name)
                        .ok_or_else(|| format!("plugin {} is not loaded on this worker", e.name))?;
                    let conf = plugin::check_conf(&self.vm, &e.name, &e.conf, None)?;
                    // Checked as stored (APISIX checks before decrypting), then opened.
                    plugin::seal_table(&self.vm, &e.name, &conf, None, plugin::Seal::Decrypt)?;
                    self.set_parent
                        .call::<()>((&conf, e.parent.as_str(), chain.owner.conf_version.as_str()))
                        .map_err(err)?;
                    let entry = lua.create_table().map_err(err)?;
                    entry.set("name", e.name.as_str()).map_err(err)?;
                    entry.set("mod", module.clone()).map_err(err)?;
                    entry.set("conf", conf).map_err(err)?;
                    Value::Table(entry)
                }
            };
            t.raw_set(i + 1, v).map_err(err)?;
        }
        let o = &chain.owner;
        t.set("conf_type", o.conf_type.as_str()).map_err(err)?;
        t.set("conf_id", o.conf_id.as_str()).map_err(err)?;
        t.set("conf_version", o.conf_version.as_str())
            .map_err(err)?;
        t.set("global", o.conf_type == "global_rule").map_err(err)?;
        let mut chains = self.chains.borrow_mut();
        // Tables of chains no snapshot holds any more are dropped in one sweep once the map
        // doubled since the last one: amortised O(1) per new chain, never a scan per change.
        if chains.len() >= self.sweep_at.get() {
            chains.retain(|_, (alive, _)| crate::plugin::ChainId::alive(alive));
            self.sweep_at.set((chains.len() * 2).max(SWEEP_MIN));
        }
        let t = lua.create_registry_value(t).map_err(err)?;
        let slot = t.id();
        chains.insert(key, (chain.id.watch(), t));
        Ok(slot)
    }

    /// What the runner's entry points take first ([`EntryHead`]): the route object plugins see
    /// as `ctx.matched_route` (made once per route per snapshot version), the entry flags
    /// ([`ENTRY_MATCH_ON_ROUTE`], [`ENTRY_FIRST`]), the slot of the request's Lua state and
    /// a slot to empty.
    ///
    /// The route object also carries what the router matched (`_match_path`, `_match_host`)
    /// for a request without uri parameters, so the runner fills `ctx.curr_req_matched` from
    /// it instead of calling back into Rust: only a route whose requests match different uris
    /// or hosts in turn pays for setting them again.
    fn route_entry(
        &self,
        version: u64,
        route: &RouteInfo<'_>,
        req: &SharedReq,
    ) -> mlua::Result<EntryHead> {
        let r = req.borrow();
        let head = |route: RouteArg, flags: i64| {
            let state = request::enter_state(r.id, self.vm_id);
            EntryHead {
                route,
                flags: if state.first {
                    flags | ENTRY_FIRST
                } else {
                    flags
                },
                state,
            }
        };
        // A cached route object takes this request's match when there are no uri parameters
        // (those come from `route_match`).
        let hold = |slot: &mut RouteSlot| -> mlua::Result<i64> {
            if !r.uri_params.is_empty() {
                return Ok(0);
            }
            slot.hold_match(r.matched_uri.as_deref(), r.matched_host.as_deref())?;
            Ok(ENTRY_MATCH_ON_ROUTE)
        };
        let cache = self.cacheable(version);
        if cache && let Some(slot) = self.routes.borrow_mut().get_mut(route.id) {
            let flags = hold(slot)?;
            return Ok(head(RouteArg::Cached(slot.key.id()), flags));
        }
        let t: Table =
            self.make_route
                .call((route.id, route.name, route.service_id, route.modified_index))?;
        let key = self.lua().create_registry_value(t.clone())?;
        if !cache {
            return Ok(head(RouteArg::Own(key), 0));
        }
        let mut slot = RouteSlot {
            table: t,
            key,
            path: None,
            host: None,
        };
        let flags = hold(&mut slot)?;
        let arg = RouteArg::Cached(slot.key.id());
        self.routes.borrow_mut().insert(route.id.to_string(), slot);
        Ok(head(arg, flags))
    }

    /// Calls every loaded plugin's `destroy()` (plugin reload), logging failures.
    pub fn destroy_plugins(&self) {
        for (name, m) in &self.modules {
            if let Ok(Some(f)) = m.get::<Option<Function>>("destroy")
                && let Err(e) = f.call::<()>(())
            {
                log::error!("failed to run destroy() of plugin [{name}]: {e}");
            }
        }
    }

    /// Runs `phase` of the Lua plugins at `indices` of `chain`, in that order.
    #[allow(clippy::too_many_arguments)]
    pub async fn run_plugins(
        &self,
        version: u64,
        chain: &Chain,
        phase: Phase,
        indices: &[usize],
        req: &SharedReq,
        route: &RouteInfo<'_>,
    ) -> Step {
        let chain_t = match self.chain_table(chain) {
            Ok(t) => t,
            Err(e) => {
                log::error!("failed to prepare the plugins of {}: {e}", chain.key);
                return Step::Error;
            }
        };
        let entry = match self.route_entry(version, route, req) {
            Ok(t) => t,
            Err(e) => {
                log::error!("failed to prepare the route object of {}: {e}", route.id);
                return Step::Error;
            }
        };
        let phase_no = phase_number(phase);
        let [a, b, c, d] = entry.args();
        let head = [a, b, c, d, Arg::Ref(chain_t), Arg::Int(phase_no)];
        // The plugins to run as a bit mask (no list to allocate), while indices fit a double.
        let out = if indices.iter().all(|&i| i < 52) {
            let mask = plugin_mask(indices);
            premark(req, mask);
            let [a, b, c, d, e, f] = head;
            self.drive(
                req,
                self.runner.id(),
                &[a, b, c, d, e, f, Arg::Num(mask as f64)],
            )
            .await
        } else {
            let mut args = Vec::with_capacity(indices.len() + 6);
            args.extend(head);
            args.extend(indices.iter().map(|&i| Arg::Int(i as i64 + 1)));
            self.drive(req, self.run_listed_fn.id(), &args).await
        };
        drop(entry);
        let running = req.borrow().running_plugin();
        req.borrow_mut().mark_plugin(0);
        match (out, running) {
            (Driven::Done([kind, index, status, body, _]), _) => {
                step_of(chain, phase, req, kind, index, status, body)
            }
            (Driven::Failed(e), Some(r)) => plugin_failed(chain, phase, r.index, &e, req),
            (other, _) => self.failed_run(other, chain, phase),
        }
    }

    /// What a run that did not return ended with.
    fn failed_run(&self, out: Driven, chain: &Chain, phase: Phase) -> Step {
        match out {
            Driven::Exited => Step::Exit,
            Driven::TimedOut => {
                log::error!(
                    "{} phase of a plugin in {} did not finish within {:?}: the request is failed",
                    phase.name(),
                    chain.key,
                    self.phase_timeout
                );
                Step::Error
            }
            Driven::Failed(e) => {
                log::error!(
                    "failed to run the {} phase of {}: {e}",
                    phase.name(),
                    chain.key
                );
                Step::Error
            }
            Driven::Done(_) => Step::Continue {
                consumer: None,
                upstream_id: None,
            },
        }
    }

    /// Runs several groups of Lua plugins in one call into the VM, in order: the rewrite and
    /// access phases of a request whose chains need no Rust between them (no native plugin, no
    /// `_meta.filter` to evaluate at its time, no `*_by_lua` handler). It stops before the
    /// first access group when an auth plugin attached a consumer (the merge is Rust's), and
    /// before any group once output was printed. `None` when the groups cannot go in one call
    /// (more than [`MAX_GROUPS`], or a plugin index past the bit mask).
    pub async fn run_groups(
        &self,
        version: u64,
        groups: &[Group<'_>],
        req: &SharedReq,
        route: &RouteInfo<'_>,
    ) -> Option<GroupsOut> {
        if groups.is_empty()
            || groups.len() > MAX_GROUPS
            || groups.iter().any(|g| g.indices.iter().any(|&i| i >= 52))
        {
            return None;
        }
        let mut tables = [Arg::Nil; MAX_GROUPS];
        for (slot, g) in tables.iter_mut().zip(groups) {
            match self.chain_table(g.chain) {
                Ok(t) => *slot = Arg::Ref(t),
                Err(e) => {
                    log::error!("failed to prepare the plugins of {}: {e}", g.chain.key);
                    return Some(GroupsOut::Ended {
                        group: 0,
                        step: Step::Error,
                    });
                }
            }
        }
        let entry = match self.route_entry(version, route, req) {
            Ok(t) => t,
            Err(e) => {
                log::error!("failed to prepare the route object of {}: {e}", route.id);
                return Some(GroupsOut::Ended {
                    group: 0,
                    step: Step::Error,
                });
            }
        };
        // After the entry head, the number of groups, then per group: its chain, (phase
        // number * 256 + chain slot) * 64 + its first plugin's index, plugin bit mask (see
        // runner.lua's run_groups).
        const GROUPS_AT: usize = 5;
        let mut args = [Arg::Nil; GROUPS_AT + 3 * MAX_GROUPS];
        args[..4].copy_from_slice(&entry.args());
        args[4] = Arg::Int(groups.len() as i64);
        for (k, g) in groups.iter().enumerate() {
            let mask = plugin_mask(g.indices);
            let first = i64::from(mask.trailing_zeros());
            args[GROUPS_AT + 3 * k] = tables[k];
            args[GROUPS_AT + 1 + 3 * k] =
                Arg::Num(((phase_number(g.phase) * 256 + g.slot as i64) * 64 + first) as f64);
            args[GROUPS_AT + 2 + 3 * k] = Arg::Num(mask as f64);
        }
        premark(req, plugin_mask(groups[0].indices));
        // Only the groups there are: the runner's parameters past them are nil.
        let used = GROUPS_AT + 3 * groups.len();
        let out = self
            .drive(req, self.run_groups_fn.id(), &args[..used])
            .await;
        drop(entry);
        let running = req.borrow().running_plugin();
        req.borrow_mut().mark_plugin(0);
        let group_at = |v: &Out| match v.number() {
            Some(g) if g >= 1.0 => (g as usize - 1).min(groups.len() - 1),
            _ => 0,
        };
        Some(match out {
            Driven::Done([kind, index, status, body, group]) => {
                if kind == Out::Bool(true) {
                    return Some(GroupsOut::Done {
                        consumer: index.text(),
                        upstream_id: status.text(),
                    });
                }
                if kind.is_str(b"stop") {
                    return Some(GroupsOut::Stopped {
                        next: group_at(&index),
                        consumer: match status {
                            Out::Str(_) => status.text(),
                            _ => None,
                        },
                    });
                }
                let g = &groups[group_at(&group)];
                GroupsOut::Ended {
                    group: group_at(&group),
                    step: step_of(g.chain, g.phase, req, kind, index, status, body),
                }
            }
            other => {
                // Exited, timed out or failed: blame the group that was running, and for an
                // error the plugin in it.
                let g = {
                    let r = req.borrow();
                    groups
                        .iter()
                        .position(|g| r.timing.0 as usize == g.slot && r.timing.1 == Some(g.phase))
                        .unwrap_or(0)
                };
                let (chain, phase) = (groups[g].chain, groups[g].phase);
                let step = match (other, running) {
                    (Driven::Failed(e), Some(r))
                        if usize::from(r.slot) == groups[g].slot && r.phase == phase =>
                    {
                        plugin_failed(chain, phase, r.index, &e, req)
                    }
                    (other, _) => self.failed_run(other, chain, phase),
                };
                GroupsOut::Ended { group: g, step }
            }
        })
    }

    /// Runs the route's `DIRECTIVE` handler (e.g. `content_by_lua`) if it has one.
    pub async fn run_handler(
        &self,
        version: u64,
        route_key: &str,
        src: &HandlerSource,
        directive: &str,
        req: &SharedReq,
        route: &RouteInfo<'_>,
    ) -> Option<Step> {
        let f = match self.handler(version, route_key, src, directive)? {
            Ok(f) => f,
            Err(e) => {
                let id = route_key.strip_prefix("route#").unwrap_or(route_key);
                log::error!("failed to load {directive} of route {id}: {e}");
                return Some(Step::Error);
            }
        };
        let entry = match self.route_entry(version, route, req) {
            Ok(t) => t,
            Err(e) => {
                log::error!("failed to prepare the route object of {}: {e}", route.id);
                return Some(Step::Error);
            }
        };
        let f = match self.lua().create_registry_value(f) {
            Ok(k) => k,
            Err(e) => {
                log::error!("failed to prepare {directive} of route {}: {e}", route.id);
                return Some(Step::Error);
            }
        };
        let [a, b, c, d] = entry.args();
        let args = [a, b, c, d, Arg::Ref(f.id()), Arg::Int(0)];
        let out = self.drive(req, self.runner.id(), &args).await;
        drop((entry, f));
        Some(match out {
            Driven::Done(_) => Step::Continue {
                consumer: None,
                upstream_id: None,
            },
            Driven::Exited => Step::Exit,
            Driven::TimedOut => {
                log::error!("{directive} did not finish within {:?}", self.phase_timeout);
                Step::Error
            }
            Driven::Failed(e) => {
                let e = e.strip_prefix("runtime error: ").unwrap_or(&e);
                let r = req.borrow();
                log::error!(
                    "lua entry thread aborted: runtime error: {e}, client: {}, server: , request: \"{} {} {}\", host: \"{}\"",
                    r.remote.ip(),
                    r.method,
                    r.request_uri,
                    crate::plugin::ctx::protocol(r.version),
                    r.host
                );
                Step::Error
            }
        })
    }

    /// The compiled `directive` chunk of the route, if it has one. Each chunk is compiled on
    /// its own, so a chunk that does not compile fails its own directive only, under its own
    /// name.
    fn handler(
        &self,
        version: u64,
        route_key: &str,
        src: &HandlerSource,
        directive: &str,
    ) -> Option<HandlerFn> {
        let cache = self.cacheable(version);
        let key = (route_key.to_string(), directive.to_string());
        if cache && let Some(f) = self.handlers.borrow().get(&key) {
            return f.clone();
        }
        let compiled = src
            .chunks
            .iter()
            .find(|(d, _)| d == directive)
            .map(|(d, code)| {
                self.lua()
                    .load(code.as_str())
                    .set_name(format!(
                        "={d}(route {})",
                        route_key.strip_prefix("route#").unwrap_or(route_key)
                    ))
                    .into_function()
                    .map_err(|e| e.to_string())
            });
        if cache {
            self.handlers.borrow_mut().insert(key, compiled.clone());
        }
        compiled
    }

    /// Drives the entry in registry slot `entry` with `args` as the request's Lua thread until
    /// it returns, calls `ngx.exit`, fails, or waits past the phase timeout (armed only once
    /// the code first waits). The first resume is a direct one (`lua::entry`); only code that
    /// waits is driven as an mlua async thread.
    async fn drive(&self, req: &SharedReq, entry: std::ffi::c_int, args: &[Arg]) -> Driven {
        let id = req.borrow().id;
        if sched::is_exited(id) {
            sched::finish(id);
            return Driven::Exited;
        }
        let first = sched::run_as(id, || self.threads.resume(self.lua(), entry, args));
        let mut deadline = None;
        let mut out = match first {
            First::Done(v) => Driven::Done(v),
            First::Failed(e) => Driven::Failed(e),
            // `ngx.exit` waits forever once it marked the request: the run is over.
            First::Waiting(_) if sched::is_exited(id) => Driven::Exited,
            First::Waiting(thread) => {
                let at = Instant::now() + self.phase_timeout;
                deadline = Some(at);
                match tokio::time::timeout_at(at, Exitable::new(id, thread)).await {
                    Ok(None) => Driven::Exited,
                    Ok(Some(Ok(v))) => Driven::Done(entry::outs_of(&v)),
                    Ok(Some(Err(e))) => Driven::Failed(e.to_string()),
                    Err(_) => {
                        sched::finish(id);
                        return Driven::TimedOut;
                    }
                }
            }
        };
        // Light threads the phase spawned: waited for when it returned normally (as
        // OpenResty does), stopped when it exited or failed.
        if matches!(out, Driven::Done(_)) && sched::has_threads(id) {
            let at = deadline.unwrap_or_else(|| Instant::now() + self.phase_timeout);
            match tokio::time::timeout_at(at, sched::join_threads(id)).await {
                Ok(true) => {}
                Ok(false) => out = Driven::Exited,
                Err(_) => out = Driven::TimedOut,
            }
        }
        sched::finish(id);
        // LuaJIT has no emergency collection: when a run left the heap near its limit (a
        // plugin that allocated without bound and failed), collect now, so the next request
        // does not fail for it.
        if let Some(limit) = self.memory_limit
            && self.lua().used_memory() > limit / 4 * 3
        {
            let _ = self.lua().gc_collect();
            let _ = self.lua().gc_collect();
        }
        out
    }
}

/// The bit mask the runner takes for the plugins at `indices` (0-based; each below 52, so the
/// mask survives the trip through a Lua number).
fn plugin_mask(indices: &[usize]) -> u64 {
    indices.iter().fold(0u64, |m, &i| m | 1 << i)
}

/// Starts the time of the first plugin of a run given by `mask` (its lowest set bit), as the
/// runner's `mark` would: it leaves that mark to the caller (one call into Rust less per run).
fn premark(req: &SharedReq, mask: u64) {
    if mask != 0 {
        req.borrow_mut()
            .mark_plugin(mask.trailing_zeros() as usize + 1);
    }
}

/// At most this many groups go in one call (`LuaHost::run_groups`); runner.lua's `run_groups`
/// takes exactly this many as named parameters.
pub const MAX_GROUPS: usize = 4;

/// One run of Lua plugins: the plugins at `indices` (0-based) of `chain` in `phase`; `slot` is
/// the chain's place among the request's chains (for timings).
pub struct Group<'a> {
    pub chain: &'a Chain,
    pub slot: usize,
    pub phase: Phase,
    pub indices: &'a [usize],
}

/// How a call of several groups ended.
pub enum GroupsOut {
    /// Every group ran through; when they were all rewrite groups, the consumer an auth
    /// plugin attached; `ctx.upstream_id` as the plugins left it.
    Done {
        consumer: Option<String>,
        upstream_id: Option<String>,
    },
    /// Stopped before group `next` (0-based): output was printed, or an auth plugin attached
    /// `consumer` (its merge comes first).
    Stopped {
        next: usize,
        consumer: Option<String>,
    },
    /// Group `group` answered, exited or failed.
    Ended { group: usize, step: Step },
}

/// Reads what the runner returned for one run: its end, an answer, or an error (logged).
fn step_of(
    chain: &Chain,
    phase: Phase,
    req: &SharedReq,
    kind: Out,
    index: Out,
    status: Out,
    body: Out,
) -> Step {
    let kind = match kind {
        Out::Str(s) => s,
        Out::Bool(true) => {
            // The run went through; an auth plugin may have attached a consumer.
            return Step::Continue {
                consumer: index.text(),
                upstream_id: status.text(),
            };
        }
        _ => {
            return Step::Continue {
                consumer: None,
                upstream_id: None,
            };
        }
    };
    let index = match index.number() {
        Some(i) if i >= 1.0 => i as usize - 1,
        _ => 0,
    };
    if kind == b"error" {
        let msg = match status {
            Out::Str(s) => {
                let s = String::from_utf8_lossy(&s);
                s.strip_prefix("runtime error: ")
                    .map(str::to_string)
                    .unwrap_or_else(|| s.into_owned())
            }
            Out::Nil => "unknown error".into(),
            v => format!("{v:?}"),
        };
        let name = chain
            .entries
            .get(index)
            .map(|e| e.name.as_str())
            .unwrap_or("?");
        log_plugin_error(name, phase, &msg, req);
        return Step::Error;
    }
    let status = match status.number() {
        // A status out of range is no status; a fractional one is cut, as Lua's would be.
        Some(c) if c.fract() == 0.0 => u16::try_from(c as i64).ok(),
        Some(c) => Some(c as u16),
        None => None,
    };
    let body = match body {
        Out::Str(s) => Some(Bytes::from(s)),
        _ => None,
    };
    Step::Answer {
        index,
        status,
        body,
    }
}

/// How an entry ended. What the runner returns: `(kind, index, code or message, body)`, and
/// for several groups the group (1-based) it is about; fewer when it ends well.
enum Driven {
    Done(Outs),
    Exited,
    TimedOut,
    Failed(String),
}

/// An entry that failed while plugin `index` (1-based) of `chain` was running: the runner calls
/// plugins without a protected call, so their errors end the entry, and the timing mark names
/// the plugin. Logged as a plugin's error always was.
fn plugin_failed(chain: &Chain, phase: Phase, index: usize, err: &str, req: &SharedReq) -> Step {
    let msg = err.strip_prefix("runtime error: ").unwrap_or(err);
    let name = chain
        .entries
        .get(index.wrapping_sub(1))
        .map(|e| e.name.as_str())
        .unwrap_or("?");
    log_plugin_error(name, phase, msg, req);
    Step::Error
}

fn log_plugin_error(plugin: &str, phase: Phase, msg: &str, req: &SharedReq) {
    let r = req.borrow();
    log::error!(
        "lua entry thread aborted: runtime error: {msg}\nplugin: {plugin}, phase: {}, client: {}, server: , request: \"{} {} {}\", host: \"{}\"",
        phase.name(),
        r.remote.ip(),
        r.method,
        r.request_uri,
        crate::plugin::ctx::protocol(r.version),
        r.host
    );
}

/// APISIX's `set_plugins_meta_parent`: `conf._meta.parent = {resource_key, resource_version}`
/// behind a metatable, so it is readable but never part of the conf's JSON (nor of
/// `conf_version`, which hashes that JSON).
const SET_PARENT: &str = r#"
local type, getmetatable, setmetatable = type, getmetatable, setmetatable
return function(conf, resource_key, resource_version)
    local meta = conf._meta
    if meta == nil then
        meta = {}
        conf._meta = meta
    end
    if type(meta) ~= "table" or meta.parent ~= nil then
        return
    end
    local parent = { resource_key = resource_key, resource_version = resource_version }
    local mt = getmetatable(meta)
    if mt == nil then
        setmetatable(meta, { __index = { parent = parent } })
    elseif type(mt.__index) == "table" then
        mt.__index.parent = parent
    else
        mt.__index = { parent = parent }
    end
end
"#;

#[cfg(test)]
pub fn for_tests(dir: &std::path::Path, plugins: &[String]) -> LuaHost {
    let opts = VmOptions::for_prefix(dir);
    match LuaHost::new(&opts, plugins, Duration::from_secs(5)) {
        Ok(h) => h,
        Err(e) => panic!("host: {e}"),
    }
}
