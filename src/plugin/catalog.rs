//! The enabled plugins of a node: their names, priorities and phases, and the checker that
//! validates confs against each plugin's own `check_schema` when a snapshot is built.
//!
//! Lua plugins are loaded once on a control thread with a VM of its own (the workers load them
//! again on theirs, since nothing Lua crosses threads). That VM answers schema checks for the
//! config providers, which run on other threads, over a channel; the answer is only "valid or
//! why not": the defaults a check fills in are filled again on each worker's own conf table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, mpsc};

use serde_json::Value;

use super::native::{self, NativePlugin};
use super::{Impl, PhaseSet};
use crate::lua::vm::{LuaVm, VmOptions};

/// What a snapshot needs to know about one enabled plugin.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    pub name: String,
    pub priority: i64,
    pub phases: PhaseSet,
    pub imp: Impl,
    /// `type = "auth"`: identifies consumers.
    pub is_auth: bool,
}

/// What the control VM is asked about one plugin, or about one Admin API resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// Check a conf (the answer is empty text).
    Check,
    /// The schema as JSON text.
    Schema,
    /// Check a resource body (`name` is its kind) at this stage of `moongate.admin_checks`.
    Resource(&'static str),
    /// Call `moongate.admin_checks[op](name, conf)`, which answers text or an error.
    AdminCall(&'static str),
    /// The conf with its `encrypt_fields` transformed, as JSON text; empty when unchanged.
    Seal(crate::lua::plugin::Seal),
}

struct CheckRequest {
    name: String,
    conf: Value,
    schema_type: Option<i64>,
    ask: Ask,
    reply: mpsc::Sender<Result<String, String>>,
}

/// The enabled plugins.
pub struct Catalog {
    plugins: HashMap<String, PluginInfo>,
    /// The names of the Lua plugins that loaded, for the workers to load in turn.
    lua_names: Vec<String>,
    checker: Option<Mutex<mpsc::Sender<CheckRequest>>>,
    /// The plugin load this catalog came from (0 at start, one more per reload): chains built
    /// against it carry it, so a worker runs them on a VM that loaded the same plugins.
    generation: u64,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("plugins", &self.plugins.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Catalog {
    /// No plugins at all (tests, and nodes that enable none).
    pub fn empty() -> Catalog {
        Catalog {
            plugins: HashMap::new(),
            lua_names: Vec::new(),
            checker: None,
            generation: 0,
        }
    }

    /// Loads `enabled` (the `plugins:` list; `None` = every plugin file found in the plugin
    /// directories, and every native plugin): Lua plugins from their modules, native plugins by
    /// name when no Lua file of that name exists. A plugin that fails to load is reported in the
    /// returned list and left out, as APISIX leaves it out (a failing Lua file does not fall back
    /// to the native plugin: the user asked for the Lua one).
    pub fn load(
        opts: &VmOptions,
        enabled: Option<&[String]>,
    ) -> std::io::Result<(Catalog, Vec<String>)> {
        let node: serde_json::Value =
            serde_json::from_str(&opts.node_config_json).unwrap_or(serde_json::Value::Null);
        let natives: HashMap<&'static str, Arc<dyn NativePlugin>> = native::all(&node)
            .into_iter()
            .map(|p| (p.name(), p))
            .collect();
        // A Lua file in the plugin directories wins over the native plugin of the same name,
        // so a user can run APISIX's own implementation instead of ours.
        let lua_files = discover(&opts.plugin_dirs);
        let names: Vec<String> = match enabled {
            Some(list) => list.to_vec(),
            None => {
                let mut n = lua_files.clone();
                for name in natives.keys() {
                    if !n.iter().any(|x| x == name) {
                        n.push(name.to_string());
                    }
                }
                n
            }
        };
        let mut plugins = HashMap::new();
        let mut lua_wanted = Vec::new();
        for name in &names {
            if let Some(p) = natives
                .get(name.as_str())
                .filter(|_| !lua_files.contains(name))
            {
                plugins.insert(
                    name.clone(),
                    PluginInfo {
                        name: name.clone(),
                        priority: p.priority(),
                        phases: p.phases(),
                        imp: Impl::Native(p.clone()),
                        is_auth: false,
                    },
                );
            } else {
                lua_wanted.push(name.clone());
            }
        }
        let (tx, rx) = mpsc::channel::<CheckRequest>();
        let (loaded_tx, loaded_rx) = mpsc::channel();
        let opts = opts.clone();
        std::thread::Builder::new()
            .name("moongate-plugins".into())
            .stack_size(8 << 20)
            .spawn(move || control_thread(opts, lua_wanted, loaded_tx, rx))?;
        let (loaded, errors): (Vec<crate::lua::plugin::LoadedPlugin>, Vec<String>) = loaded_rx
            .recv()
            .unwrap_or_else(|_| (Vec::new(), vec!["the plugin loader thread died".into()]));
        let mut lua_names = Vec::new();
        for p in loaded {
            lua_names.push(p.name.clone());
            plugins.insert(
                p.name.clone(),
                PluginInfo {
                    name: p.name.clone(),
                    priority: p.priority,
                    phases: PhaseSet::from_names(p.phases.iter().copied()),
                    imp: Impl::Lua,
                    is_auth: p.is_auth,
                },
            );
        }
        Ok((
            Catalog {
                plugins,
                lua_names,
                checker: Some(Mutex::new(tx)),
                generation: 0,
            },
            errors,
        ))
    }

    pub fn get(&self, name: &str) -> Option<&PluginInfo> {
        self.plugins.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.plugins.keys().map(String::as_str)
    }

    /// The plugin load this catalog came from.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Marks the catalog as plugin load `generation` (the registry numbers its reloads).
    pub fn with_generation(mut self, generation: u64) -> Catalog {
        self.generation = generation;
        self
    }

    pub fn lua_names(&self) -> &[String] {
        &self.lua_names
    }

    /// Runs the plugin's schema check on a copy of `conf`.
    pub fn check(&self, name: &str, conf: &Value, schema_type: Option<i64>) -> Result<(), String> {
        match self.plugins.get(name).map(|p| &p.imp) {
            None => Err(format!("unknown plugin [{name}]")),
            // Worded as APISIX wraps a plugin's own check_schema error.
            Some(Impl::Native(p)) => p.check_conf(conf).map_err(|e| {
                format!("failed to check the configuration of plugin {name} err: {e}")
            }),
            Some(Impl::Lua) => {
                let Some(checker) = &self.checker else {
                    return Err(format!("unknown plugin [{name}]"));
                };
                self.ask(checker, name, conf.clone(), schema_type, Ask::Check)
                    .map(|_| ())
            }
        }
    }

    /// The plugin's schema (`schema_type` 1 = consumer, 2 = metadata) as JSON. Native
    /// plugins have none to show yet: the error says so.
    pub fn schema(&self, name: &str, schema_type: Option<i64>) -> Result<Value, String> {
        match self.plugins.get(name).map(|p| &p.imp) {
            None => Err(format!("unknown plugin [{name}]")),
            Some(Impl::Native(_)) => Err(format!(
                "plugin {name} is native: its schema is not served by the Admin API yet"
            )),
            Some(Impl::Lua) => {
                let Some(checker) = &self.checker else {
                    return Err(format!("unknown plugin [{name}]"));
                };
                let text = self.ask(checker, name, Value::Null, schema_type, Ask::Schema)?;
                serde_json::from_str(&text).map_err(|e| e.to_string())
            }
        }
    }

    /// Runs `moongate.admin_checks` on `conf` as a `kind` resource at `stage` (`shape` or
    /// `code`): `Err` is the Admin API's error message. A catalog without a VM (no plugins
    /// loaded at all) has nothing to check with and accepts.
    pub fn check_resource(
        &self,
        kind: &str,
        stage: &'static str,
        id: &str,
        conf: &Value,
    ) -> Result<(), String> {
        let Some(checker) = &self.checker else {
            return Ok(());
        };
        // The id travels with the body: `[kind, id]` as the name, split again on the VM side.
        let text = self.ask(
            checker,
            &format!("{kind}\n{id}"),
            conf.clone(),
            None,
            Ask::Resource(stage),
        )?;
        if text.is_empty() { Ok(()) } else { Err(text) }
    }

    /// Calls `moongate.admin_checks[op](name, conf)` on the plugin VM: the Admin API's schema
    /// endpoints and plugin listings, which need the loaded plugins and the schemas.
    pub fn admin_call(&self, op: &'static str, name: &str, conf: &Value) -> Result<String, String> {
        let Some(checker) = &self.checker else {
            return Err("no plugin VM on this node".into());
        };
        self.ask(checker, name, conf.clone(), None, Ask::AdminCall(op))
    }

    /// `conf` with the plugin's `encrypt_fields` encrypted or decrypted (APISIX's
    /// `data_encryption`), or `None` when nothing changed: encryption is off on this node, the
    /// plugin lists no field, or it is native.
    pub fn seal(
        &self,
        name: &str,
        conf: &Value,
        schema_type: Option<i64>,
        seal: crate::lua::plugin::Seal,
    ) -> Result<Option<Value>, String> {
        if !matches!(self.plugins.get(name).map(|p| &p.imp), Some(Impl::Lua)) {
            return Ok(None);
        }
        let Some(checker) = &self.checker else {
            return Ok(None);
        };
        let text = self.ask(checker, name, conf.clone(), schema_type, Ask::Seal(seal))?;
        if text.is_empty() {
            return Ok(None);
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| e.to_string())
    }

    fn ask(
        &self,
        checker: &Mutex<mpsc::Sender<CheckRequest>>,
        name: &str,
        conf: Value,
        schema_type: Option<i64>,
        ask: Ask,
    ) -> Result<String, String> {
        let (reply_tx, reply_rx) = mpsc::channel();
        let sent = checker
            .lock()
            .map_err(|_| "the plugin checker is gone".to_string())?
            .send(CheckRequest {
                name: name.to_string(),
                conf,
                schema_type,
                ask,
                reply: reply_tx,
            });
        if sent.is_err() {
            return Err("the plugin checker is gone".into());
        }
        reply_rx
            .recv()
            .unwrap_or_else(|_| Err("the plugin checker is gone".into()))
    }
}

/// Every `NAME.lua` and `NAME/init.lua` in the plugin directories, sorted.
fn discover(dirs: &[std::path::PathBuf]) -> Vec<String> {
    let mut names = Vec::new();
    for dir in dirs {
        let Ok(rd) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            let name = if path.is_dir() && path.join("init.lua").is_file() {
                e.file_name().to_string_lossy().into_owned()
            } else if path.extension().is_some_and(|x| x == "lua") {
                match path.file_stem() {
                    Some(s) => s.to_string_lossy().into_owned(),
                    None => continue,
                }
            } else {
                continue;
            };
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

fn control_thread(
    opts: VmOptions,
    wanted: Vec<String>,
    loaded_tx: mpsc::Sender<(Vec<crate::lua::plugin::LoadedPlugin>, Vec<String>)>,
    rx: mpsc::Receiver<CheckRequest>,
) {
    // Plugins may start timers or sockets at load time: give them a runtime to do it on.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build_local(tokio::runtime::LocalOptions::default())
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = loaded_tx.send((Vec::new(), vec![format!("plugin loader: {e}")]));
            return;
        }
    };
    rt.block_on(async move {
        let vm = match LuaVm::new(&opts) {
            Ok(vm) => vm,
            Err(e) => {
                let _ = loaded_tx.send((Vec::new(), vec![format!("plugin loader VM: {e}")]));
                return;
            }
        };
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        for name in &wanted {
            match crate::lua::plugin::load(&vm, name) {
                Ok(p) => loaded.push(p),
                Err(e) => errors.push(e),
            }
        }
        let _ = loaded_tx.send((loaded, errors));
        // Checks are rare (config changes): serve them one at a time, off the worker threads.
        // The thread blocks between checks, so timers a plugin starts at load time here do not
        // fire on this VM; they do on the workers', where plugins run for real.
        while let Ok(req) = rx.recv() {
            let r = match req.ask {
                Ask::Schema => crate::lua::plugin::schema_json(&vm, &req.name, req.schema_type),
                Ask::Check => {
                    crate::lua::plugin::check_conf(&vm, &req.name, &req.conf, req.schema_type)
                        .map(|_| String::new())
                }
                Ask::AdminCall(op) => crate::lua::plugin::admin_call(&vm, op, &req.name, &req.conf),
                Ask::Resource(stage) => {
                    let (kind, id) = req.name.split_once('\n').unwrap_or((&req.name, ""));
                    crate::lua::plugin::check_resource(&vm, kind, stage, id, &req.conf)
                        .map(|failure| failure.unwrap_or_default())
                }
                Ask::Seal(seal) => {
                    crate::lua::plugin::seal_conf(&vm, &req.name, &req.conf, req.schema_type, seal)
                        .map(Option::unwrap_or_default)
                }
            };
            let _ = req.reply.send(r);
        }
    });
}
