//! `ngx.thread.spawn`, `ngx.thread.wait`, `ngx.thread.kill`: light threads of the current request.
//!
//! A light thread runs a function in its own Lua thread under the same context id as its
//! parent. `spawn` lets it run until its first wait before returning, as OpenResty does;
//! `wait` returns the first of the given threads to finish (`true, results...` or `false, err`);
//! `kill` stops one that has not finished.

use std::cell::RefCell;
use std::rc::Rc;

use mlua::{
    AnyUserData, Function, IntoLuaMulti, Lua, MultiValue, Table, UserData, Value, Variadic,
};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

use crate::lua::sched::{self, Exitable};

struct Shared {
    result: RefCell<Option<Result<MultiValue, String>>>,
    done: Notify,
}

/// The handle `ngx.thread.spawn` returns.
struct LightThread {
    shared: Rc<Shared>,
    task: RefCell<Option<AbortHandle>>,
    /// Waited for or killed already: a second wait or kill is an error, as in OpenResty.
    gone: std::cell::Cell<bool>,
}

impl UserData for LightThread {}

fn handle(ud: &AnyUserData) -> mlua::Result<mlua::UserDataRef<LightThread>> {
    ud.borrow::<LightThread>()
}

pub fn register(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let thread = lua.create_table()?;
    thread.set(
        "spawn",
        lua.create_async_function(|lua, (f, args): (Function, MultiValue)| async move {
            let id = sched::current().unwrap_or_else(sched::next_ctx_id);
            // Exitable: `ngx.exit` in any thread of the context stops this one too.
            let fut = Exitable::new(id, lua.create_thread(f)?.into_async::<MultiValue>(args)?);
            let shared = Rc::new(Shared {
                result: RefCell::new(None),
                done: Notify::new(),
            });
            let s = shared.clone();
            let task = tokio::task::spawn_local(async move {
                let r = match fut.await {
                    Some(r) => r.map_err(|e| e.to_string()),
                    None => Err("exited".to_string()),
                };
                *s.result.borrow_mut() = Some(r);
                s.done.notify_one();
            });
            let abort = task.abort_handle();
            // The phase (or timer) that spawned it waits for it before it ends.
            sched::add_thread(id, task);
            // The child runs before the parent continues, until its first wait.
            tokio::task::yield_now().await;
            lua.create_userdata(LightThread {
                shared,
                task: RefCell::new(Some(abort)),
                gone: std::cell::Cell::new(false),
            })
        })?,
    )?;
    thread.set(
        "wait",
        lua.create_async_function(|lua, threads: Variadic<AnyUserData>| async move {
            if threads.is_empty() {
                return Err(mlua::Error::runtime(
                    "bad argument #1 to 'wait' (thread expected)",
                ));
            }
            let mut shared = Vec::with_capacity(threads.len());
            for t in threads.iter() {
                let h = handle(t)?;
                if h.gone.get() {
                    return (false, "already waited or killed").into_lua_multi(&lua);
                }
                shared.push(h.shared.clone());
            }
            loop {
                for (i, s) in shared.iter().enumerate() {
                    if let Some(r) = s.result.borrow_mut().take() {
                        handle(&threads[i])?.gone.set(true);
                        return match r {
                            Ok(values) => {
                                let mut out = MultiValue::with_capacity(values.len() + 1);
                                out.push_back(Value::Boolean(true));
                                out.extend(values);
                                Ok(out)
                            }
                            Err(e) => (false, e).into_lua_multi(&lua),
                        };
                    }
                }
                let waits = shared.iter().map(|s| Box::pin(s.done.notified()));
                futures_util::future::select_all(waits).await;
            }
        })?,
    )?;
    thread.set(
        "kill",
        lua.create_function(|lua, t: AnyUserData| {
            let h = handle(&t)?;
            if h.gone.get() || h.shared.result.borrow().is_some() {
                return (Value::Nil, "already waited or killed").into_lua_multi(lua);
            }
            h.gone.set(true);
            if let Some(task) = h.task.borrow_mut().take() {
                task.abort();
            }
            true.into_lua_multi(lua)
        })?,
    )?;
    ngx.set("thread", thread)?;
    Ok(())
}
