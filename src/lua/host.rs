//! A worker's Lua host: its VM, the plugins loaded into it, one checked conf table per plugin
//! per resource per snapshot, and the calls that run a phase of a chain for a request.
//!
//! Conf identity matters: APISIX plugins cache on their conf table (`core.lrucache.plugin_ctx`,
//! tables keyed by conf), so each compiled chain gets its conf tables made once, by the plugin's
//! own `check_schema` filling defaults, and every request running that chain gets the very same
//! tables — across snapshots too: a config change recompiles only the chains of the resources
//! it touched, so only those get new tables, as a new `conf_version` does in APISIX.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use mlua::{Function, Lua, MultiValue, RegistryKey, Table, Value};
use tokio::time::Instant;

use super::plugin;
use super::request::{self, SharedReq};
use super::sched::{self, Exitable};
use super::vm::{LuaVm, VmOptions};
use crate::plugin::{Chain, Impl, Phase};

const RUNNER: &str = include_str!("runner.lua");
/// The fewest conf-table entries at which dead chains are swept.
const SWEEP_MIN: usize = 256;

/// What a phase run ended with.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Every plugin ran; the request goes on.
    Continue,
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

/// One chain's conf tables, with the tokens that tell whether the chain is alive.
type ConfTables = (Vec<std::sync::Weak<()>>, Rc<RegistryKey>);

pub struct LuaHost {
    vm: LuaVm,
    modules: HashMap<String, RegistryKey>,
    runner: Function,
    /// Gives a conf table its `_meta.parent` (see [`SET_PARENT`]).
    set_parent: Function,
    /// Conf tables per compiled chain ([`crate::plugin::ChainId`]), with the tokens that tell
    /// whether the chain is still alive.
    chains: RefCell<HashMap<(u64, u64), ConfTables>>,
    /// `chains` is swept of dead chains when it grows to this many entries.
    sweep_at: Cell<usize>,
    handlers: RefCell<HashMap<(u64, String), Rc<RegistryKey>>>,
    /// The newest snapshot version seen; older entries are dropped when it changes.
    newest: Cell<u64>,
    /// Longest time one phase may wait (on I/O, sleeps); past it the request fails.
    pub phase_timeout: Duration,
    memory_limit: Option<usize>,
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
                    modules.insert(name.clone(), lua.create_registry_value(m)?);
                }
                Err(e) => log::error!("{e}"),
            }
        }
        let mark = lua.create_function(|_, i: usize| {
            if let Some(req) = request::try_current() {
                let mut r = req.borrow_mut();
                r.mark_plugin(i);
            }
            Ok(())
        })?;
        let runner: Function = lua
            .load(RUNNER)
            .set_name("=moongate/runner.lua")
            .call(mark)?;
        let set_parent: Function = lua
            .load(SET_PARENT)
            .set_name("=moongate/set_parent")
            .call(())?;
        Ok(LuaHost {
            vm,
            modules,
            runner,
            set_parent,
            chains: RefCell::new(HashMap::new()),
            sweep_at: Cell::new(SWEEP_MIN),
            handlers: RefCell::new(HashMap::new()),
            newest: Cell::new(0),
            phase_timeout,
            memory_limit: opts.memory_limit,
        })
    }

    pub fn lua(&self) -> &Lua {
        self.vm.lua()
    }

    fn forget_old(&self, version: u64) {
        if version > self.newest.get() {
            self.newest.set(version);
            // Requests still on the previous snapshot keep their tables alive through `Rc`.
            self.handlers.borrow_mut().retain(|(v, _), _| *v >= version);
        }
    }

    /// The chain's entries as Lua sees them: `{name, mod, conf}` per Lua plugin (`false` for
    /// native ones, so indices line up), made once per compiled chain.
    fn chain_table(&self, chain: &Chain) -> Result<Table, String> {
        let lua = self.lua();
        let key = chain.id.key();
        if let Some((_, k)) = self.chains.borrow().get(&key) {
            return lua.registry_value(k).map_err(|e| e.to_string());
        }
        let t = lua
            .create_table_with_capacity(chain.entries.len(), 0)
            .map_err(|e| e.to_string())?;
        for (i, e) in chain.entries.iter().enumerate() {
            let v = match &e.imp {
                Impl::Native(_) => Value::Boolean(false),
                Impl::Lua => {
                    let m = self
                        .modules
                        .get(&e.name)
                        .ok_or_else(|| format!("plugin {} is not loaded on this worker", e.name))?;
                    let module: Table = lua.registry_value(m).map_err(|x| x.to_string())?;
                    let conf = plugin::check_conf(&self.vm, &e.name, &e.conf, None)?;
                    // Checked as stored (APISIX checks before decrypting), then opened.
                    plugin::seal_table(&self.vm, &e.name, &conf, None, plugin::Seal::Decrypt)?;
                    self.set_parent
                        .call::<()>((&conf, e.parent.as_str(), chain.owner.conf_version.as_str()))
                        .map_err(|x| x.to_string())?;
                    let entry = lua.create_table().map_err(|x| x.to_string())?;
                    entry
                        .set("name", e.name.as_str())
                        .map_err(|x| x.to_string())?;
                    entry.set("mod", module).map_err(|x| x.to_string())?;
                    entry.set("conf", conf).map_err(|x| x.to_string())?;
                    Value::Table(entry)
                }
            };
            t.raw_set(i + 1, v).map_err(|e| e.to_string())?;
        }
        let k = lua
            .create_registry_value(t.clone())
            .map_err(|e| e.to_string())?;
        let mut chains = self.chains.borrow_mut();
        // Tables of chains no snapshot holds any more are dropped in one sweep once the map
        // doubled since the last one: amortised O(1) per new chain, never a scan per change.
        if chains.len() >= self.sweep_at.get() {
            chains.retain(|_, (alive, _)| crate::plugin::ChainId::alive(alive));
            self.sweep_at.set((chains.len() * 2).max(SWEEP_MIN));
        }
        chains.insert(key, (chain.id.watch(), Rc::new(k)));
        Ok(t)
    }

    /// Calls every loaded plugin's `destroy()` (plugin reload), logging failures.
    pub fn destroy_plugins(&self) {
        let lua = self.lua();
        for (name, key) in &self.modules {
            let Ok(m) = lua.registry_value::<Table>(key) else {
                continue;
            };
            if let Ok(Some(f)) = m.get::<Option<Function>>("destroy")
                && let Err(e) = f.call::<()>(())
            {
                log::error!("failed to run destroy() of plugin [{name}]: {e}");
            }
        }
    }

    /// The APISIX `ctx` table plugins receive, for one request and chain owner: the owner's
    /// `conf_*`, the route and service ids, then `apisix.core.ctx` gives it `ctx.var` and the
    /// route fields (`matched_route`, `curr_req_matched`) as APISIX's init does.
    pub fn new_api_ctx(
        &self,
        req: &SharedReq,
        owner: &crate::plugin::ConfOwner,
    ) -> mlua::Result<Table> {
        let lua = self.lua();
        let init: Function = lua.named_registry_value("moongate.api_ctx").or_else(
            |_| -> mlua::Result<Function> {
                let f: Function = lua.load(API_CTX).set_name("=moongate/api_ctx.lua").eval()?;
                lua.set_named_registry_value("moongate.api_ctx", f.clone())?;
                Ok(f)
            },
        )?;
        // One call that builds the whole table Lua-side: each field set from Rust would be a
        // protected call of its own.
        // The request is not borrowed across the call: core.ctx may read it.
        let (
            route_id,
            route_name,
            service_id,
            matched_uri,
            matched_host,
            params,
            real_request_uri,
            request_uri,
        ) = {
            let r = req.borrow();
            let params = if r.uri_params.is_empty() {
                None
            } else {
                let t = lua.create_table_with_capacity(0, r.uri_params.len())?;
                for (k, v) in &r.uri_params {
                    t.raw_set(k.as_str(), v.as_str())?;
                }
                Some(t)
            };
            let normalised = if r.args.is_empty() {
                r.uri.clone()
            } else {
                format!("{}?{}", r.uri, r.args)
            };
            (
                r.route_id.clone(),
                r.route_name.clone(),
                r.service_id.clone(),
                r.matched_uri.clone(),
                r.matched_host.clone(),
                params,
                r.request_uri.clone(),
                normalised,
            )
        };
        init.call((
            owner.conf_type.as_str(),
            owner.conf_id.as_str(),
            owner.conf_version.as_str(),
            route_id,
            route_name,
            service_id,
            matched_uri,
            params,
            real_request_uri,
            request_uri,
            matched_host,
        ))
    }

    /// Points `api_ctx` at another chain owner (global rules, then the route).
    pub fn set_owner(&self, api_ctx: &Table, owner: &crate::plugin::ConfOwner) -> mlua::Result<()> {
        api_ctx.set("conf_type", owner.conf_type.as_str())?;
        api_ctx.set("conf_id", owner.conf_id.as_str())?;
        api_ctx.set("conf_version", owner.conf_version.as_str())
    }

    /// Runs `phase` of the Lua plugins at `indices` of `chain`, in that order. (The snapshot
    /// version is not needed any more: conf tables belong to the chain, whatever snapshot it
    /// came with.)
    pub async fn run_plugins(
        &self,
        _version: u64,
        chain: &Chain,
        phase: Phase,
        indices: &[usize],
        req: &SharedReq,
        api_ctx: &Table,
    ) -> Step {
        let chain_t = match self.chain_table(chain) {
            Ok(t) => t,
            Err(e) => {
                log::error!("failed to prepare the plugins of {}: {e}", chain.key);
                return Step::Error;
            }
        };
        let mut args = MultiValue::with_capacity(indices.len() + 3);
        args.push_back(Value::String(
            match self.lua().create_string(phase.name()) {
                Ok(s) => s,
                Err(_) => return Step::Error,
            },
        ));
        args.push_back(Value::Table(chain_t));
        args.push_back(Value::Table(api_ctx.clone()));
        for i in indices {
            args.push_back(Value::Integer(*i as i64 + 1));
        }
        let describe = |i: usize| {
            chain
                .entries
                .get(i)
                .map(|e| e.name.as_str())
                .unwrap_or("?")
                .to_string()
        };
        let out = self.drive(req, self.runner.clone(), args).await;
        req.borrow_mut().mark_plugin(0);
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
            Driven::Done(vals) => {
                let mut it = vals.into_iter();
                let kind = it.next();
                let kind = match &kind {
                    Some(Value::String(s)) => s.to_string_lossy(),
                    _ => return Step::Continue,
                };
                let index = match it.next() {
                    Some(Value::Integer(i)) if i >= 1 => i as usize - 1,
                    _ => 0,
                };
                match kind.as_str() {
                    "error" => {
                        let msg = match it.next() {
                            Some(Value::String(s)) => {
                                let s = s.to_string_lossy();
                                s.strip_prefix("runtime error: ")
                                    .map(str::to_string)
                                    .unwrap_or(s)
                            }
                            Some(v) => format!("{v:?}"),
                            None => "unknown error".into(),
                        };
                        log_plugin_error(&describe(index), phase, &msg, req);
                        Step::Error
                    }
                    _ => {
                        let status = match it.next() {
                            Some(Value::Integer(c)) => u16::try_from(c).ok(),
                            Some(Value::Number(c)) => Some(c as u16),
                            _ => None,
                        };
                        let body = match it.next() {
                            Some(Value::String(s)) => Some(Bytes::copy_from_slice(&s.as_bytes())),
                            _ => None,
                        };
                        Step::Answer {
                            index,
                            status,
                            body,
                        }
                    }
                }
            }
        }
    }

    /// Runs the route's `DIRECTIVE` handler (e.g. `content_by_lua`) if it has one.
    pub async fn run_handler(
        &self,
        version: u64,
        route_key: &str,
        src: &HandlerSource,
        directive: &str,
        req: &SharedReq,
    ) -> Option<Step> {
        let f = match self.handler(version, route_key, src, directive) {
            Ok(Some(f)) => f,
            Ok(None) => return None,
            Err(e) => {
                log::error!("failed to load {directive} of route {route_key}: {e}");
                return Some(Step::Error);
            }
        };
        Some(match self.drive(req, f, MultiValue::new()).await {
            Driven::Done(_) => Step::Continue,
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

    fn handler(
        &self,
        version: u64,
        route_key: &str,
        src: &HandlerSource,
        directive: &str,
    ) -> mlua::Result<Option<Function>> {
        self.forget_old(version);
        let lua = self.lua();
        let key = (version, route_key.to_string());
        let t: Table = match self.handlers.borrow().get(&key) {
            Some(k) => lua.registry_value(k)?,
            None => lua.create_table()?,
        };
        if self.handlers.borrow().get(&key).is_none() {
            for (d, code) in &src.chunks {
                let f = lua
                    .load(code.as_str())
                    .set_name(format!(
                        "={d}(route {})",
                        route_key.strip_prefix("route#").unwrap_or(route_key)
                    ))
                    .into_function()?;
                t.set(d.as_str(), f)?;
            }
            let k = lua.create_registry_value(t.clone())?;
            self.handlers.borrow_mut().insert(key, Rc::new(k));
        }
        t.get::<Option<Function>>(directive)
    }

    /// Drives `f(args)` as the request's Lua thread until it returns, calls `ngx.exit`, fails,
    /// or waits past the phase timeout (armed only once the code first waits).
    async fn drive(&self, req: &SharedReq, f: Function, args: MultiValue) -> Driven {
        let id = req.borrow().id;
        let thread = match self.lua().create_thread(f) {
            Ok(t) => t,
            Err(e) => return Driven::Failed(e.to_string()),
        };
        let fut = match thread.into_async::<MultiValue>(args) {
            Ok(f) => f,
            Err(e) => return Driven::Failed(e.to_string()),
        };
        let mut fut = std::pin::pin!(Exitable::new(id, fut));
        // Most phases never wait: poll once before arming a timer.
        let first = std::future::poll_fn(|cx| match fut.as_mut().poll(cx) {
            std::task::Poll::Ready(v) => std::task::Poll::Ready(Some(v)),
            std::task::Poll::Pending => std::task::Poll::Ready(None),
        })
        .await;
        let mut deadline = None;
        let out = match first {
            Some(v) => v,
            None => {
                let at = Instant::now() + self.phase_timeout;
                deadline = Some(at);
                match tokio::time::timeout_at(at, fut).await {
                    Ok(v) => v,
                    Err(_) => {
                        sched::finish(id);
                        return Driven::TimedOut;
                    }
                }
            }
        };
        let mut out = match out {
            None => Driven::Exited,
            Some(Ok(v)) => Driven::Done(v),
            Some(Err(e)) => Driven::Failed(e.to_string()),
        };
        // Light threads the phase spawned: waited for when it returned normally (as
        // OpenResty does), stopped when it exited or failed.
        if matches!(out, Driven::Done(_)) {
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

enum Driven {
    Done(MultiValue),
    Exited,
    TimedOut,
    Failed(String),
}

use std::future::Future as _;

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

/// Completes a new `api_ctx` on the Lua side (see `new_api_ctx`).
const API_CTX: &str = r#"
local core_ctx = require("apisix.core.ctx")
return function(conf_type, conf_id, conf_version, route_id, route_name, service_id,
                matched_uri, params, real_request_uri, request_uri, matched_host)
    local api_ctx = {
        conf_type = conf_type, conf_id = conf_id, conf_version = conf_version,
        route_id = route_id, route_name = route_name, service_id = service_id,
    }
    core_ctx.set_vars_meta(api_ctx)
    -- As APISIX's access phase does: plugins see `request_uri` rebuilt from the normalised
    -- uri (so `/./a` cannot slip past a check on `/a`), the client's text in
    -- `real_request_uri`.
    local var = api_ctx.var
    var.real_request_uri = real_request_uri
    var.request_uri = request_uri
    local route_id = api_ctx.route_id
    if route_id then
        -- What plugins read of the matched route; `plugins` is filled by the runner.
        local version = api_ctx.conf_type == "route" and tonumber(api_ctx.conf_version) or nil
        api_ctx.matched_route = {
            key = "/apisix/routes/" .. route_id,
            modifiedIndex = version,
            value = { id = route_id, name = api_ctx.route_name, service_id = api_ctx.service_id },
        }
    end
    -- What the router matched: the route uri (`_path`), the route host (`_host`, nil for a
    -- route without hosts) and the uri's parameters (`uri_param_NAME`).
    local matched = params or {}
    matched._path = matched_uri
    matched._host = matched_host
    api_ctx.curr_req_matched = matched
    return api_ctx
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
