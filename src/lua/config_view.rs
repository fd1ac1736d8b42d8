//! The config snapshot as Lua reads it: `require("moongate.config")`, the source of
//! `apisix.consumer` (consumers and credentials), consumer groups, plugin metadata and the
//! secret configs `apisix.secret` reads, and the upstreams, services, routes and global rules
//! `apisix.upstream`, `apisix.http.service`, `apisix.router` and `apisix.global_rules` read.
//!
//! Each worker remembers the newest snapshot a request on it started with; Lua asks for the
//! resources as JSON once per snapshot version and caches the decoded tables itself, so
//! nothing is converted on the request path after the first request of a version.

use std::cell::RefCell;
use std::sync::Arc;

use mlua::{Lua, Table, Value};
use serde_json::{Map, Value as Json, json};

use crate::config::resource::OpaqueResource;
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

/// Items of a kind the snapshot keeps typed, in the same shape as [`items`].
fn typed_items<'a, T: serde::Serialize + 'a>(
    kind: &str,
    list: impl IntoIterator<Item = (&'a str, &'a T)>,
    version: u64,
) -> Json {
    Json::Array(
        list.into_iter()
            .map(|(id, v)| {
                let mut value = serde_json::to_value(v).unwrap_or(Json::Null);
                if let Json::Object(o) = &mut value {
                    o.insert("id".into(), Json::String(id.to_string()));
                }
                json!({
                    "key": format!("/{kind}/{id}"),
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
    m.insert("version".into(), json!(s.version));
    m.insert(
        "consumers".into(),
        items("consumers", &o.consumers, s.version),
    );
    m.insert(
        "consumer_groups".into(),
        items("consumer_groups", &o.consumer_groups, s.version),
    );
    m.insert(
        "plugin_metadata".into(),
        items("plugin_metadata", &o.plugin_metadata, s.version),
    );
    m.insert("secrets".into(), items("secrets", &o.secrets, s.version));
    m.insert(
        "global_rules".into(),
        items("global_rules", &o.global_rules, s.version),
    );
    m.insert("ssls".into(), items("ssls", &o.ssls, s.version));
    let mut ups: Vec<(&str, &crate::config::resource::Upstream)> = s.upstream_confs().collect();
    ups.sort_by(|a, b| a.0.cmp(b.0));
    m.insert("upstreams".into(), typed_items("upstreams", ups, s.version));
    let mut services: Vec<(&str, &crate::config::resource::Service)> = s
        .services
        .iter()
        .map(|(id, v)| (id.0.as_str(), v))
        .collect();
    services.sort_by(|a, b| a.0.cmp(b.0));
    m.insert(
        "services".into(),
        typed_items("services", services, s.version),
    );
    let routes = s
        .route_confs
        .iter()
        .filter_map(|r| r.id.as_ref().map(|id| (id.0.as_str(), r)));
    m.insert("routes".into(), typed_items("routes", routes, s.version));
    Json::Object(m).to_string()
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = lua.create_table()?;
    m.set(
        "version",
        lua.create_function(|_, ()| Ok(current().map(|s| s.version)))?,
    )?;
    // `(version, json)`, or nothing before the first request with a snapshot.
    m.set(
        "document",
        lua.create_function(|lua, ()| match current() {
            Some(s) => Ok((
                Value::Integer(s.version as i64),
                Value::String(lua.create_string(document(&s))?),
            )),
            None => Ok((Value::Nil, Value::Nil)),
        })?,
    )?;
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "moongate.config",
        lua.create_function(move |_, ()| Ok(m.clone()))?,
    )?;
    Ok(())
}
