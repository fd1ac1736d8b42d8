//! `require("ngx.semaphore")`: `new(n)`, `sema:post(n)`, `sema:wait(timeout)`, `sema:count()`,
//! for synchronising the requests and timers of one worker.

use std::rc::Rc;
use std::time::Duration;

use mlua::{IntoLuaMulti, Lua, UserData, UserDataMethods, Value};
use tokio::sync::Semaphore;

struct Sema(Rc<Semaphore>);

impl UserData for Sema {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("post", |_, s, n: Option<usize>| {
            s.0.add_permits(n.unwrap_or(1));
            Ok(())
        });
        m.add_method("count", |_, s, ()| Ok(s.0.available_permits()));
        m.add_async_method("wait", |lua, s, timeout: Option<f64>| async move {
            let sem = s.0.clone();
            let timeout = timeout.unwrap_or(0.0);
            if timeout.is_nan() || timeout < 0.0 {
                return Err(mlua::Error::runtime(
                    "bad argument #1 to 'wait' (invalid timeout)",
                ));
            }
            let got = if timeout == 0.0 {
                sem.try_acquire().ok()
            } else {
                tokio::time::timeout(Duration::from_secs_f64(timeout), sem.acquire())
                    .await
                    .ok()
                    .and_then(Result::ok)
            };
            match got {
                Some(permit) => {
                    // The resource is consumed: OpenResty semaphores do not give it back on their own.
                    permit.forget();
                    true.into_lua_multi(&lua)
                }
                None => (Value::Nil, "timeout").into_lua_multi(&lua),
            }
        });
    }
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let module = lua.create_table()?;
    module.set(
        "new",
        lua.create_function(|lua, n: Option<usize>| {
            lua.create_userdata(Sema(Rc::new(Semaphore::new(n.unwrap_or(0)))))
        })?,
    )?;
    let loaded: mlua::Table = lua.globals().get::<mlua::Table>("package")?.get("loaded")?;
    loaded.set("ngx.semaphore", module)?;
    Ok(())
}
