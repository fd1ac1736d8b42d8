//! `require("moongate.store")`: the process's config store (embedded or etcd) as Lua sees it,
//! the ground under the `apisix.core.etcd` shim. Keys are full store keys (`/apisix/routes/1`),
//! values the stored text; every call yields while the store answers, so a worker keeps
//! serving other requests meanwhile.
//!
//! - `prefix()` → `"/apisix"`, or nil when this node has no store (a yaml config).
//! - `get(key)` → item | nil; `range(dir)` → items in key order, store revision;
//!   an item is `{key=, value=, create_revision=, mod_revision=}`.
//! - `put(key, value[, ttl[, mod_revision]])` → item, replaced (bool) | nil, err; with
//!   `mod_revision` the key must still be at that revision (`"changed"` otherwise).
//! - `delete(key)` → the deleted item | nil; `delete_dir(dir)` → how many keys went.

use std::time::Duration;

use mlua::{Lua, Table, Value};

use crate::config::store::shared::{self, Shared};
use crate::config::store::{Item, Precondition, StoreError};

fn store() -> mlua::Result<Shared> {
    shared::get().ok_or_else(|| {
        mlua::Error::runtime(
            "moongate.store: this node keeps no config store (its config is a file)",
        )
    })
}

fn writable() -> mlua::Result<Shared> {
    let s = store()?;
    if !s.writable {
        return Err(mlua::Error::runtime(
            "moongate.store: a data_plane node does not write to the config store",
        ));
    }
    Ok(s)
}

fn item_table(lua: &Lua, i: &Item) -> mlua::Result<Table> {
    let t = lua.create_table()?;
    t.set("key", i.key.as_str())?;
    t.set("value", lua.create_string(&i.value)?)?;
    t.set("create_revision", i.create_revision)?;
    t.set("mod_revision", i.mod_revision)?;
    Ok(t)
}

fn failed(lua: &Lua, e: StoreError) -> mlua::Result<(Value, Value)> {
    Ok((Value::Nil, Value::String(lua.create_string(e.to_string())?)))
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = lua.create_table()?;
    m.set(
        "prefix",
        lua.create_function(|_, ()| Ok(shared::get().map(|s| s.store.prefix().to_string())))?,
    )?;
    m.set(
        "get",
        lua.create_async_function(|lua, key: String| async move {
            let s = store()?;
            match s.store.get(&key).await {
                Ok(Some(i)) => Ok((Value::Table(item_table(&lua, &i)?), Value::Nil)),
                Ok(None) => Ok((Value::Nil, Value::Nil)),
                Err(e) => failed(&lua, e),
            }
        })?,
    )?;
    m.set(
        "range",
        lua.create_async_function(|lua, dir: String| async move {
            let s = store()?;
            match s.store.list().await {
                Ok(listing) => {
                    let t = lua.create_table()?;
                    for i in listing.items.iter().filter(|i| i.key.starts_with(&dir)) {
                        t.push(item_table(&lua, i)?)?;
                    }
                    Ok((Value::Table(t), Value::Integer(listing.revision)))
                }
                Err(e) => failed(&lua, e),
            }
        })?,
    )?;
    m.set(
        "put",
        lua.create_async_function(
            |lua, (key, value, ttl, rev): (String, mlua::LuaString, Option<f64>, Option<i64>)| async move {
                let s = writable()?;
                let bytes = value.as_bytes().to_vec();
                let existed = match rev {
                    Some(_) => true,
                    None => match s.store.get(&key).await {
                        Ok(p) => p.is_some(),
                        Err(e) => return failed(&lua, e),
                    },
                };
                let pre = rev.map_or(Precondition::None, Precondition::ModRevision);
                let stored = match ttl.filter(|t| *t > 0.0) {
                    Some(t) => {
                        s.store
                            .put_with_ttl(&key, bytes, pre, Duration::from_secs_f64(t.ceil()))
                            .await
                    }
                    None => s.store.put(&key, bytes, pre).await,
                };
                match stored {
                    Ok(i) => Ok((Value::Table(item_table(&lua, &i)?), Value::Boolean(existed))),
                    Err(StoreError::Conflict(_)) => Ok((
                        Value::Nil,
                        Value::String(lua.create_string("changed")?),
                    )),
                    Err(e) => failed(&lua, e),
                }
            },
        )?,
    )?;
    m.set(
        "delete",
        lua.create_async_function(|lua, key: String| async move {
            let s = writable()?;
            match s.store.delete(&key, Precondition::None).await {
                Ok(Some(i)) => Ok((Value::Table(item_table(&lua, &i)?), Value::Nil)),
                Ok(None) => Ok((Value::Nil, Value::Nil)),
                Err(e) => failed(&lua, e),
            }
        })?,
    )?;
    m.set(
        "delete_dir",
        lua.create_async_function(|lua, dir: String| async move {
            let s = writable()?;
            let listing = match s.store.list().await {
                Ok(l) => l,
                Err(e) => return failed(&lua, e),
            };
            let mut n = 0i64;
            for i in listing.items.iter().filter(|i| i.key.starts_with(&dir)) {
                match s.store.delete(&i.key, Precondition::None).await {
                    Ok(Some(_)) => n += 1,
                    Ok(None) => {}
                    Err(e) => return failed(&lua, e),
                }
            }
            Ok((Value::Integer(n), Value::Nil))
        })?,
    )?;
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "moongate.store",
        lua.create_function(move |_, ()| Ok(m.clone()))?,
    )?;
    Ok(())
}
