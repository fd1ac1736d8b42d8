//! The config snapshot as Lua reads it: `require("moongate.config")`, the source of
//! `apisix.consumer` (consumers and credentials), consumer groups, plugin metadata, global
//! rules, SSLs and secret configs (`apisix.secret`, `apisix.global_rules`, `apisix.router`),
//! and, through `configured(kind)`, of the routes, services and upstreams the control API dumps
//! and `apisix.upstream`, `apisix.http.service` and `apisix.router` read.
//!
//! Each worker remembers the newest snapshot a request on it started with; Lua asks for the
//! resources as JSON once per version of them (`Snapshot::lua_view_version`, which route
//! changes leave alone) and caches the decoded tables itself, so nothing is converted on the
//! request path after the first request of a version.

use std::cell::RefCell;
use std::sync::Arc;

use mlua::{Lua, Table, Value};
use serde_json::{Map, Value as Json, json};

use crate::config::resource::{Id, OpaqueResource};
use crate::config::snapshot::Snapshot;

thread_local! {
    static CURRENT: RefCell<Option<Arc<Snapshot>>> = const { RefCell::new(None) };
}

/// Records the snapshot a request on this worker runs with (the newest one wins).
pub fn set_current(s: &Arc<Snapshot>) {
    CURRENT.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|old| old.version < s.version) {
            *c = Some(s.clone());
        }
    });
}

fn current() -> Option<Arc<Snapshot>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// `moongate.config.version()`: the Lua view's version of the snapshot this worker runs with.
pub fn current_view_version() -> Option<u64> {
    CURRENT.with(|c| c.borrow().as_ref().map(|s| s.lua_view_version))
}

/// The config plane's published snapshot, for the thread that runs plugins' `check_schema` for
/// the Admin API: no request ever runs there, yet a check may read the config (file-logger
/// takes its `path` from its plugin metadata when the conf has none).
static CHECKS_SEE: std::sync::RwLock<Option<Arc<arc_swap::ArcSwap<Snapshot>>>> =
    std::sync::RwLock::new(None);

/// Makes the checks see `published` (called when the config plane starts).
pub fn serve_checks_from(published: Arc<arc_swap::ArcSwap<Snapshot>>) {
    if let Ok(mut w) = CHECKS_SEE.write() {
        *w = Some(published);
    }
}

/// Before a check: the check thread's view becomes the newest published snapshot.
pub fn refresh_for_check() {
    let latest = CHECKS_SEE
        .read()
        .ok()
        .and_then(|r| r.as_ref().map(|p| p.load_full()));
    if let Some(s) = latest {
        set_current(&s);
    }
}

/// APISIX's config item shape: `{key, value, modifiedIndex, createdIndex}`.
fn items(kind: &str, list: &[OpaqueResource], version: u64) -> Json {
    Json::Array(
        list.iter()
            .map(|r| {
                let mut value = r.value.clone();
                if let Json::Object(m) = &mut value {
                    m.entry("id")
                        .or_insert_with(|| Json::String(r.id.0.clone()));
                }
                json!({
                    "key": format!("/{kind}/{}", r.id.0),
                    "value": value,
                    "modifiedIndex": version,
                    "createdIndex": version,
                })
            })
            .collect(),
    )
}

/// The resources Lua reads, as one JSON document.
fn document(s: &Snapshot) -> String {
    let o = &s.others;
    let mut m = Map::new();
    let v = s.lua_view_version;
    m.insert("version".into(), json!(v));
    m.insert("consumers".into(), items("consumers", &o.consumers, v));
    m.insert(
        "consumer_groups".into(),
        items("consumer_groups", &o.consumer_groups, v),
    );
    m.insert(
        "plugin_metadata".into(),
        items("plugin_metadata", &o.plugin_metadata, v),
    );
    m.insert(
        "global_rules".into(),
        items("global_rules", &o.global_rules, s.version),
    );
    m.insert("ssls".into(), items("ssls", &o.ssls, s.version));
    m.insert("secrets".into(), items("secrets", &o.secrets, s.version));
    Json::Object(m).to_string()
}

/// One configured route, service or upstream as APISIX stores it.
fn configured_value<T: serde::Serialize>(id: &Id, item: &T) -> Option<OpaqueResource> {
    let mut value = serde_json::to_value(item).ok()?;
    // An inline upstream has no id: serde writes it as null, APISIX leaves it out.
    if let Some(up) = value.get_mut("upstream").and_then(Json::as_object_mut)
        && up.get("id").is_some_and(Json::is_null)
    {
        up.remove("id");
    }
    Some(OpaqueResource {
        id: id.clone(),
        value,
    })
}

/// `routes`, `services` or `upstreams` as configured, as config items (one JSON array). Kept
/// apart from [`document`]: only the control API reads them, and they can be many.
fn configured(s: &Snapshot, kind: &str) -> Option<String> {
    let c = &s.configured;
    let list: Vec<OpaqueResource> = match kind {
        "routes" => c
            .routes()
            .into_iter()
            .filter_map(|r| configured_value(r.id.as_ref()?, r))
            .collect(),
        "services" => c
            .services()
            .into_iter()
            .filter_map(|r| configured_value(r.id.as_ref()?, r))
            .collect(),
        "upstreams" => c
            .upstreams()
            .into_iter()
            .filter_map(|r| configured_value(r.id.as_ref()?, r))
            .collect(),
        _ => return None,
    };
    Some(items(kind, &list, s.version).to_string())
}

/// One item of `routes`, `services` or `upstreams` (`{key, value, modifiedIndex…}`), without
/// serialising the others: what `ctx.matched_route.value` reads on first use.
fn configured_item(s: &Snapshot, kind: &str, id: &str) -> Option<String> {
    let c = &s.configured;
    let id = Id(id.to_string());
    let one = match kind {
        "routes" => configured_value(&id, &*c.routes.get(&id)?.1)?,
        "services" => configured_value(&id, &*c.services.get(&id)?.1)?,
        "upstreams" => configured_value(&id, &*c.upstreams.get(&id)?.1)?,
        _ => return None,
    };
    match items(kind, &[one], s.version) {
        Json::Array(mut a) => a.pop().map(|v| v.to_string()),
        _ => None,
    }
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = lua.create_table()?;
    m.set(
        "version",
        lua.create_function(|_, ()| Ok(current_view_version()))?,
    )?;
    // The snapshot's own version, which every change moves (what `configured` is as of).
    m.set(
        "snapshot_version",
        lua.create_function(|_, ()| Ok(current().map(|s| s.version)))?,
    )?;
    // `(version, json)`, or nothing before the first request with a snapshot.
    m.set(
        "document",
        lua.create_function(|lua, ()| match current() {
            Some(s) => Ok((
                Value::Integer(s.lua_view_version as i64),
                Value::String(lua.create_string(document(&s))?),
            )),
            None => Ok((Value::Nil, Value::Nil)),
        })?,
    )?;
    // `(version, json)` of `routes`, `services` or `upstreams`; an error for other kinds.
    m.set(
        "configured",
        lua.create_function(|lua, kind: String| match current() {
            Some(s) => match configured(&s, &kind) {
                Some(text) => Ok((
                    Value::Integer(s.version as i64),
                    Value::String(lua.create_string(text)?),
                )),
                None => Err(mlua::Error::runtime(format!(
                    "moongate.config.configured: unknown kind {kind:?}"
                ))),
            },
            None => Ok((Value::Nil, Value::Nil)),
        })?,
    )?;
    // `json` of one item of `routes`, `services` or `upstreams`, or nil when there is none.
    m.set(
        "configured_item",
        lua.create_function(|_, (kind, id): (String, String)| {
            Ok(current().and_then(|s| configured_item(&s, &kind, &id)))
        })?,
    )?;
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "moongate.config",
        lua.create_function(move |_, ()| Ok(m.clone()))?,
    )?;
    Ok(())
}
