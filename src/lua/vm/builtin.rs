//! moongate's own Lua library (the `apisix.core` shim and the OpenResty libraries we write in
//! Lua), embedded in the binary by `build.rs` from the repository's `lua/` tree.
//!
//! The searcher sits after `package.path`, so a file under the prefix's `lua/` or
//! `apisix.extra_lua_path` overrides a built-in module of the same name. Debug builds read
//! the source tree first, so editing a shim file needs no rebuild while developing; release
//! builds use only what was embedded.

use std::borrow::Cow;

use mlua::{Function, Lua, Table, Value};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/builtin_lua.rs"));
}

/// The built-in module names, for diagnostics and docs.
pub fn module_names() -> impl Iterator<Item = &'static str> {
    generated::MODULES.iter().map(|(name, _, _)| *name)
}

/// `(chunk name, source)` of built-in module `name`.
fn find(name: &str) -> Option<(String, Cow<'static, str>)> {
    if cfg!(debug_assertions) {
        let rel = name.replace('.', "/");
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/lua/");
        for cand in [format!("{rel}.lua"), format!("{rel}/init.lua")] {
            if cand.starts_with("plugins/") {
                continue;
            }
            let path = format!("{root}{cand}");
            if let Ok(text) = std::fs::read_to_string(&path) {
                return Some((format!("lua/{cand}"), Cow::Owned(text)));
            }
        }
    }
    generated::MODULES
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, rel, src)| (rel.to_string(), Cow::Borrowed(*src)))
}

/// Adds the built-in searcher right after the `package.path` searcher.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let searcher = lua.create_function(|lua, name: String| -> mlua::Result<Value> {
        let Some((chunk, source)) = find(&name) else {
            return Ok(Value::String(
                lua.create_string(format!("\n\tno built-in module '{name}'"))?,
            ));
        };
        match lua
            .load(source.as_ref())
            .set_name(format!("@{chunk}"))
            .into_function()
        {
            Ok(f) => Ok(Value::Function(f)),
            Err(e) => Err(mlua::Error::runtime(format!(
                "error loading module '{name}' from built-in file '{chunk}':\n\t{e}"
            ))),
        }
    })?;
    let package: Table = lua.globals().get("package")?;
    let loaders: Table = match package.get::<Option<Table>>("loaders")? {
        Some(t) => t,
        None => package.get("searchers")?,
    };
    // [preload, plugins, package.path, ...]: built-ins go right after package.path.
    let insert: Function = lua.globals().get::<Table>("table")?.get("insert")?;
    insert.call::<()>((loaders, 4, searcher))
}
