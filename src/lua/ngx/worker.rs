//! `ngx.sleep` and `ngx.worker.*`.

use std::time::Duration;

use mlua::{Lua, Table};

use crate::lua::sched;

pub fn register(lua: &Lua, ngx: &Table, worker_id: usize, worker_count: usize) -> mlua::Result<()> {
    ngx.set(
        "sleep",
        lua.create_async_function(|_, secs: f64| async move {
            if secs.is_nan() || secs < 0.0 || !secs.is_finite() {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #1 to 'sleep' (invalid sleep duration \"{secs}\")"
                )));
            }
            if secs == 0.0 {
                // As in OpenResty: give other requests a turn without waiting.
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_secs_f64(secs)).await;
            }
            Ok(())
        })?,
    )?;
    let worker = lua.create_table()?;
    worker.set("id", lua.create_function(move |_, ()| Ok(worker_id))?)?;
    worker.set("count", lua.create_function(move |_, ()| Ok(worker_count))?)?;
    worker.set("pid", lua.create_function(|_, ()| Ok(std::process::id()))?)?;
    worker.set(
        "exiting",
        lua.create_function(|_, ()| Ok(sched::exiting()))?,
    )?;
    ngx.set("worker", worker)?;
    Ok(())
}
