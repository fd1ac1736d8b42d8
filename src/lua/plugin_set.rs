//! What a worker's Lua code knows about the node's plugins, handed over once its VM has loaded
//! them: the Lua plugins this VM loaded (`apisix.plugin.plugins`, which the API router and the
//! control API walk for `api()` and `control_api()`), the native plugins (for `/v1/schema`), and
//! the plugin reload (`PUT /v1/plugins/reload`).
//!
//! The Lua side is `lua/moongate/plugin_set.lua`; this module fills its `natives` and `reload`
//! fields and calls its `publish`.

use std::sync::Arc;

use mlua::{Function, Lua, Table, Value};

use crate::plugin::registry::PluginRegistry;
use crate::plugin::{Catalog, Impl};

/// Publishes `catalog`'s plugins to the VM and gives it the reload of `registry`.
pub fn install(lua: &Lua, catalog: &Catalog, registry: &Arc<PluginRegistry>) -> mlua::Result<()> {
    let registry_generation = registry.generation();
    let require: Function = lua.globals().get("require")?;
    let set: Table = require.call("moongate.plugin_set")?;

    let mut natives: Vec<(&str, i64)> = catalog
        .names()
        .filter_map(|n| {
            let p = catalog.get(n)?;
            matches!(p.imp, Impl::Native(_)).then_some((n, p.priority))
        })
        .collect();
    natives.sort();
    let list = lua.create_table_with_capacity(natives.len(), 0)?;
    for (name, priority) in natives {
        let t = lua.create_table()?;
        t.set("name", name)?;
        t.set("priority", priority)?;
        list.push(t)?;
    }
    set.set("natives", list)?;

    // The reload loads every plugin file again on a thread of its own (it starts a plugin VM
    // and recompiles the routes): the worker's other requests go on while this one waits.
    let registry = registry.clone();
    let reload = lua.create_async_function(move |lua, ()| {
        let registry = registry.clone();
        async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let spawned = std::thread::Builder::new()
                .name("moongate-reload".into())
                .spawn(move || {
                    let _ = tx.send(registry.reload());
                });
            if let Err(e) = spawned {
                return Ok((Value::Nil, Value::String(lua.create_string(e.to_string())?)));
            }
            match rx.await {
                Ok(Ok(errors)) => {
                    for e in errors {
                        log::error!("{e}");
                    }
                    Ok((Value::Boolean(true), Value::Nil))
                }
                Ok(Err(e)) => Ok((
                    Value::Nil,
                    Value::String(lua.create_string(format!("cannot reload the plugins: {e}"))?),
                )),
                Err(_) => Ok((
                    Value::Nil,
                    Value::String(lua.create_string("the plugin reload stopped")?),
                )),
            }
        }
    })?;
    set.set("reload", reload)?;

    let names = lua.create_sequence_from(catalog.lua_names().iter().map(String::as_str))?;
    let publish: Function = set.get("publish")?;
    // `load_times` counts the loads of this worker's life (one at start, one per reload), as
    // in APISIX; each load is a fresh VM here, so the count comes from the registry.
    publish.call::<()>((names, registry_generation + 1))
}
