//! How a Lua plugin picks the upstream of its request: `require("moongate.upstream")`, the
//! native half of `apisix.upstream.set` (traffic-split, example-plugin).
//!
//! A plugin hands over an upstream conf under a key and version it chooses (traffic-split uses
//! `roundrobin#route_1_2` at `ctx.conf_version`). The conf is compiled once per key and version
//! on this worker, like any configured upstream, and kept; the request then goes to it instead
//! of the route's. Requests after the first only name the key and version, so no conf crosses
//! into Rust on the request path. The definitions are shared `Arc`s, so the worker's balancer
//! state for one key lives as long as its version does.
//!
//! Node names must be resolved before they get here (`apisix.upstream` resolves them through
//! the non-blocking resolver): compiling never blocks the worker on DNS.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use mlua::{Lua, Table};

use super::request;
use crate::config::resource::Upstream;
use crate::upstream::{Resolve, UpstreamDef};

/// Inline upstreams kept per worker; past this many keys the oldest set is dropped.
const MAX_KEYS: usize = 4096;

thread_local! {
    /// key -> (version, definition)
    static CHOSEN: RefCell<HashMap<String, (String, Arc<UpstreamDef>)>> =
        RefCell::new(HashMap::new());
}

/// No lookup while compiling (this runs on the request path, where a blocking `getaddrinfo`
/// would stall the worker): named nodes keep their name and the proxy resolves them without
/// blocking when it picks them (see `upstream::dns`).
struct NoDns;

impl Resolve for NoDns {
    fn resolve(&self, host: &str, _port: u16) -> Result<Vec<IpAddr>, String> {
        Err(format!("{host}: resolved when a request picks it"))
    }
}

fn choose(def: Arc<UpstreamDef>) -> mlua::Result<()> {
    request::with("apisix.upstream.set", |r| r.upstream_choice = Some(def))
}

/// `use(key, version)`: true when that definition is kept here (and is now the request's).
fn use_kept(_: &Lua, (key, version): (String, String)) -> mlua::Result<bool> {
    let kept = CHOSEN.with(|c| {
        c.borrow()
            .get(&key)
            .filter(|(v, _)| *v == version)
            .map(|(_, d)| d.clone())
    });
    match kept {
        Some(def) => {
            choose(def)?;
            Ok(true)
        }
        None => Ok(false),
    }
}

/// `compile(key, version, json)`: compiles and keeps the conf, makes it the request's.
/// `Err` is why moongate cannot proxy to it.
fn compile(key: String, version: String, json: &str) -> mlua::Result<Result<(), String>> {
    let up: Upstream = match serde_json::from_str(json) {
        Ok(u) => u,
        Err(e) => return Ok(Err(format!("invalid upstream: {e}"))),
    };
    let def = match UpstreamDef::compile(&up, &NoDns) {
        Ok(d) => Arc::new(d),
        Err(e) => return Ok(Err(e.to_string())),
    };
    CHOSEN.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX_KEYS && !c.contains_key(&key) {
            c.clear();
        }
        c.insert(key, (version, def.clone()));
    });
    choose(def)?;
    Ok(Ok(()))
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = lua.create_table()?;
    m.set("use", lua.create_function(use_kept)?)?;
    m.set(
        "compile",
        lua.create_function(
            |_, (key, version, json): (String, String, mlua::LuaString)| match compile(
                key,
                version,
                &json.to_str()?,
            )? {
                Ok(()) => Ok((Some(true), None)),
                Err(e) => Ok((None, Some(e))),
            },
        )?,
    )?;
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "moongate.upstream",
        lua.create_function(move |_, ()| Ok(m.clone()))?,
    )?;
    Ok(())
}
