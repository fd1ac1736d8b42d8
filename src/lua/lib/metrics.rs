//! `require("moongate.metrics")`: the metric registry (`observability::metrics`) as Lua sees it,
//! the native half of `lua/prometheus.lua` (nginx-lua-prometheus' API).
//!
//! Registration, lookups, deletion and rendering are ordinary Lua functions. The writes on the
//! request path are not: `fn_add`, `fn_set` and `fn_observe` are the addresses of C-ABI
//! functions that `prometheus.lua` calls through LuaJIT's FFI with a series pointer, so an
//! `inc` that finds its series in the worker's lookup table is a JIT-compiled call doing one
//! atomic add, with no Lua/C API round trip.
//!
//! A series pointer is only valid while the [`SeriesRef`] userdata it came from is alive: the
//! Lua side keeps both in one lookup entry.

use std::sync::Arc;
use std::time::Duration;

use mlua::{IntoLuaMulti, LightUserData, Lua, MultiValue, Table, UserData, UserDataMethods, Value};

use crate::observability::metrics::{self, Family, FamilyDef, Kind, Namespace, Series, text};

/// Keeps a series alive for the pointer handed to Lua.
struct SeriesRef {
    _keep: Arc<Series>,
}
impl UserData for SeriesRef {}

struct NamespaceRef(Arc<Namespace>);
struct FamilyRef(Arc<Family>);

// The FFI entry points: `series` comes from `Arc::as_ptr` of a `SeriesRef` the caller keeps.
// They return 1 when recorded, 0 when the series was deleted meanwhile (look it up again).

unsafe extern "C" fn series_add(series: *const Series, v: f64) -> i32 {
    // SAFETY: the Lua side only passes pointers of live `SeriesRef`s (see the module doc).
    unsafe { (*series).add(v) as i32 }
}

unsafe extern "C" fn series_set(series: *const Series, v: f64) -> i32 {
    // SAFETY: as `series_add`.
    unsafe { (*series).set(v) as i32 }
}

unsafe extern "C" fn series_observe(series: *const Series, v: f64) -> i32 {
    // SAFETY: as `series_add`.
    unsafe { (*series).observe(v) as i32 }
}

fn strings(t: Option<Table>) -> mlua::Result<Vec<String>> {
    let Some(t) = t else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for v in t.sequence_values::<Value>() {
        out.push(match v? {
            Value::String(s) => s.to_string_lossy(),
            Value::Integer(i) => i.to_string(),
            Value::Number(n) => {
                let mut s = String::new();
                text::push_number(&mut s, n);
                s
            }
            Value::Boolean(b) => b.to_string(),
            other => {
                return Err(mlua::Error::runtime(format!(
                    "a label must be a string or a number, got {}",
                    other.type_name()
                )));
            }
        });
    }
    Ok(out)
}

fn fail(lua: &Lua, e: impl ToString) -> mlua::Result<MultiValue> {
    (Value::Nil, e.to_string()).into_lua_multi(lua)
}

impl UserData for NamespaceRef {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        // register(kind, name, help, label_names, buckets, exptime) -> family | nil, err
        m.add_method(
            "register",
            |lua,
             this,
             (kind, name, help, labels, buckets, exptime): (
                String,
                String,
                Option<String>,
                Option<Table>,
                Option<Table>,
                Option<f64>,
            )| {
                let Some(kind) = Kind::parse(&kind) else {
                    return fail(lua, format!("unknown metric type {kind}"));
                };
                let labels = strings(labels)?;
                let buckets: Vec<f64> = match buckets {
                    Some(t) => t.sequence_values::<f64>().collect::<mlua::Result<_>>()?,
                    None => Vec::new(),
                };
                let def = FamilyDef {
                    name,
                    help: help.unwrap_or_default(),
                    kind,
                    labels,
                    buckets,
                    exptime: exptime
                        .filter(|e| *e > 0.0 && e.is_finite())
                        .map(Duration::from_secs_f64),
                };
                match this.0.register(def) {
                    Ok(f) => FamilyRef(f).into_lua_multi(lua),
                    Err(e) => fail(lua, e),
                }
            },
        );
        m.add_method("render", |_, this, ()| Ok(text::render(&this.0)));
        m.add_method("name", |_, this, ()| Ok(this.0.name.clone()));
    }
}

impl UserData for FamilyRef {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        // series(label_values) -> ref, pointer | nil, err
        m.add_method("series", |lua, this, values: Option<Table>| {
            let values = strings(values)?;
            match this.0.series(&values) {
                Ok(s) => {
                    let ptr = LightUserData(Arc::as_ptr(&s) as *mut std::ffi::c_void);
                    (SeriesRef { _keep: s }, ptr).into_lua_multi(lua)
                }
                Err(e) => fail(lua, e),
            }
        });
        m.add_method("del", |lua, this, values: Option<Table>| {
            let values = strings(values)?;
            match this.0.del(&values) {
                Ok(found) => found.into_lua_multi(lua),
                Err(e) => fail(lua, e),
            }
        });
        m.add_method("reset", |_, this, ()| {
            this.0.reset();
            Ok(())
        });
        m.add_method("label_count", |_, this, ()| Ok(this.0.def.labels.len()));
    }
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "moongate.metrics",
        lua.create_function(|lua, ()| {
            let m = lua.create_table()?;
            // namespace(name, capacity_bytes): shared by every worker asking for that name.
            m.set(
                "namespace",
                lua.create_function(|_, (name, capacity): (String, usize)| {
                    Ok(NamespaceRef(metrics::global().namespace(&name, capacity)))
                })?,
            )?;
            type Write = unsafe extern "C" fn(*const Series, f64) -> i32;
            let addr = |f: Write| LightUserData(f as *mut std::ffi::c_void);
            m.set("fn_add", addr(series_add))?;
            m.set("fn_set", addr(series_set))?;
            m.set("fn_observe", addr(series_observe))?;
            Ok(m)
        })?,
    )
}
