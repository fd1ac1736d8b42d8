//! `require("moongate.node")`: what the Lua shim needs to know about the node it runs on.
//! `config_json()` is the node's `config.yaml`, parsed once by the Rust config loader and
//! handed over as JSON text, so `core.config.local_conf()` reads the same file, with the same
//! YAML parser, as the gateway did at start.

use std::sync::Arc;

use mlua::{Lua, Table};

pub fn register(lua: &Lua, config_json: Arc<str>) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "moongate.node",
        lua.create_function(move |lua, ()| {
            let m = lua.create_table()?;
            let text = config_json.clone();
            m.set(
                "config_json",
                lua.create_function(move |_, ()| Ok(text.to_string()))?,
            )?;
            Ok(m)
        })?,
    )
}
