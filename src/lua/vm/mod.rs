//! One LuaJIT VM per worker: standard libraries including `ffi`, `jit` and `debug` (APISIX and
//! OpenResty libraries need them), OpenResty's table extensions, the coroutine wrappers, module
//! paths over `lua/` and `lua/plugins/`, and a bounded heap.

use std::path::{Path, PathBuf};

use mlua::{Function, Lua, LuaOptions, MultiValue, StdLib, Table};

use super::sched::{CtxId, WithCtx};

pub mod builtin;
mod sandbox;
pub use sandbox::SandboxBudget;

/// The prelude every VM runs first (table extensions, coroutines, plugin searcher).
const PRELUDE: &str = include_str!("prelude.lua");

/// How a worker's VM is set up.
#[derive(Debug, Clone)]
pub struct VmOptions {
    /// Module roots, searched in order as `ROOT/?.lua` and `ROOT/?/init.lua` (e.g. the
    /// project's `lua/` and `apisix.extra_lua_path` entries).
    pub lua_paths: Vec<PathBuf>,
    /// `apisix.extra_lua_path`: `package.path` patterns searched first.
    pub extra_lua_path: String,
    /// Where `apisix.plugins.NAME` files live (e.g. `lua/plugins/`).
    pub plugin_dirs: Vec<PathBuf>,
    /// Largest Lua heap in bytes; an allocation past it fails the running code, not the worker.
    pub memory_limit: Option<usize>,
    pub worker_id: usize,
    pub worker_count: usize,
    /// `ngx.shared` dictionaries, the same for every worker.
    pub shared_dicts: crate::lua::ngx::shared::SharedDicts,
    /// The gateway's prefix directory, as `ngx.config.prefix()` reports it.
    pub prefix: PathBuf,
    /// The node's `config.yaml` as JSON text, for `core.config.local_conf()`.
    pub node_config_json: std::sync::Arc<str>,
}

impl VmOptions {
    /// The defaults for a prefix directory: `lua/` for modules, `lua/plugins/` for plugins.
    pub fn for_prefix(prefix: &Path) -> VmOptions {
        VmOptions {
            lua_paths: vec![prefix.join("lua")],
            extra_lua_path: String::new(),
            plugin_dirs: vec![prefix.join("lua/plugins")],
            memory_limit: None,
            worker_id: 0,
            worker_count: 1,
            shared_dicts: Default::default(),
            prefix: prefix.to_path_buf(),
            node_config_json: std::sync::Arc::from("{}"),
        }
    }
}

/// The JIT parameters OpenResty's LuaJIT branch has as defaults (its `lj_jit.h`).
const JIT_PARAMS: &str =
    r#"jit.opt.start("maxtrace=8000", "maxrecord=16000", "minstitch=3", "maxmcode=40960")"#;

/// A worker's Lua VM.
pub struct LuaVm {
    lua: Lua,
}

fn lua_path(roots: &[PathBuf]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for r in roots {
        let r = r.display();
        parts.push(format!("{r}/?.lua"));
        parts.push(format!("{r}/?/init.lua"));
    }
    parts.join(";")
}

impl LuaVm {
    pub fn new(opts: &VmOptions) -> mlua::Result<LuaVm> {
        // SAFETY: `ffi` and `debug` are what make the VM "unsafe" to mlua; OpenResty code needs
        // both, and only trusted plugin code runs here.
        let lua =
            unsafe { Lua::unsafe_new_with(StdLib::ALL, LuaOptions::new().thread_pool_size(64)) };
        if let Some(limit) = opts.memory_limit {
            lua.set_memory_limit(limit)?;
        }
        // OpenResty's LuaJIT branch raises these defaults (upstream: 1,000 traces, 4,000 IR
        // instructions per trace, no stitching minimum, 2 MB of machine code). Plugin code is
        // written and tuned under OpenResty's values: with upstream's, a long plugin chain's
        // entry exceeds `maxrecord` ("trace too long") and runs partly in the interpreter.
        lua.load(JIT_PARAMS)
            .set_name("=moongate/jit_params")
            .exec()?;
        let package: Table = lua.globals().get("package")?;
        let mut path = lua_path(&opts.lua_paths);
        if !opts.extra_lua_path.is_empty() {
            path = format!("{};{path}", opts.extra_lua_path.trim_end_matches(';'));
        }
        package.set("path", path)?;
        package.set("cpath", "")?;
        let dirs: Vec<String> = opts
            .plugin_dirs
            .iter()
            .map(|d| d.display().to_string())
            .collect();
        lua.load(PRELUDE)
            .set_name("=moongate/prelude.lua")
            .call::<()>((Lua::poll_pending(), dirs))?;
        builtin::register(&lua)?;
        let ngx = lua.create_table()?;
        super::ngx::register(
            &lua,
            &ngx,
            opts.worker_id,
            opts.worker_count,
            &opts.shared_dicts,
        )?;
        super::lib::cjson::register(&lua)?;
        super::lib::resty::register(&lua)?;
        super::lib::apisix_runtime::register(&lua)?;
        super::config_view::register(&lua)?;
        super::store_api::register(&lua)?;
        super::upstream_choice::register(&lua)?;
        super::ngx::config::register(&lua, &ngx, &opts.prefix)?;
        super::lib::node::register(&lua, opts.node_config_json.clone())?;
        super::lib::dns::register(&lua)?;
        super::lib::inflate::register(&lua)?;
        super::lib::metrics::register(&lua)?;
        super::lib::crypto::register(&lua)?;
        // Last: the wrappers take the raw functions the `ngx` table holds now.
        super::ffi_entry::register(&lua, &ngx, &opts.shared_dicts)?;
        lua.globals().set("ngx", ngx.clone())?;
        // OpenResty code may also `require("ngx")` (the same table).
        let loaded: mlua::Table = lua.globals().get::<mlua::Table>("package")?.get("loaded")?;
        loaded.set("ngx", ngx)?;
        Ok(LuaVm { lua })
    }

    pub fn lua(&self) -> &Lua {
        &self.lua
    }

    /// Runs `func(args)` in a new Lua thread as context `id`; the returned future may be
    /// interleaved with other contexts' futures on the worker.
    pub fn run(
        &self,
        id: CtxId,
        func: Function,
        args: MultiValue,
    ) -> mlua::Result<impl std::future::Future<Output = mlua::Result<MultiValue>>> {
        let thread = self.lua.create_thread(func)?;
        Ok(WithCtx::new(id, thread.into_async::<MultiValue>(args)?))
    }
}

#[cfg(test)]
mod tests;
