//! `ngx.timer.at`, `ngx.timer.every`, `ngx.timer.running_count`, `ngx.timer.pending_count`.
//!
//! A timer's callback runs in its own Lua thread with its own context id and no request, as
//! OpenResty runs it, called as `callback(premature, ...)`. When the worker begins to exit,
//! pending timers fire at once with `premature = true` and new ones are refused
//! (`nil, "process exiting"`).

use std::cell::Cell;
use std::time::Duration;

use mlua::{Function, IntoLuaMulti, Lua, MultiValue, Table, Value};

use crate::lua::sched;

thread_local! {
    static RUNNING: Cell<usize> = const { Cell::new(0) };
    static PENDING: Cell<usize> = const { Cell::new(0) };
}

fn bump(c: &'static std::thread::LocalKey<Cell<usize>>, up: bool) {
    c.with(|c| {
        c.set(if up {
            c.get() + 1
        } else {
            c.get().saturating_sub(1)
        })
    });
}

/// Runs `f(premature, args...)` once in a fresh context.
async fn fire(lua: &Lua, f: &Function, premature: bool, args: &MultiValue) {
    let mut call_args = MultiValue::with_capacity(args.len() + 1);
    call_args.push_back(Value::Boolean(premature));
    call_args.extend(args.iter().cloned());
    bump(&RUNNING, true);
    let result = match lua.create_thread(f.clone()) {
        Ok(thread) => match thread.into_async::<()>(call_args) {
            // `ngx.exit` in a timer ends the timer's code, as in OpenResty.
            Ok(fut) => {
                let id = sched::next_ctx_id();
                let r = sched::Exitable::new(id, fut).await;
                if matches!(r, Some(Ok(()))) {
                    sched::join_threads(id).await;
                }
                sched::finish(id);
                r.unwrap_or(Ok(()))
            }
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    bump(&RUNNING, false);
    if let Err(e) = result {
        log::error!("lua entry thread aborted: runtime error: {e}\ncontext: ngx.timer");
    }
}

fn delay_of(d: f64, every: bool) -> Result<Duration, String> {
    if d.is_nan() || d < 0.0 || (every && d == 0.0) || !d.is_finite() {
        return Err(format!(
            "bad argument #1 to '{}' (invalid delay)",
            if every { "every" } else { "at" }
        ));
    }
    Ok(Duration::from_secs_f64(d))
}

pub fn register(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let timer = lua.create_table()?;
    timer.set(
        "at",
        lua.create_function(|lua, (delay, f, args): (f64, Function, MultiValue)| {
            let delay = delay_of(delay, false).map_err(mlua::Error::runtime)?;
            if sched::exiting() {
                return (Value::Nil, "process exiting").into_lua_multi(lua);
            }
            let weak = lua.weak();
            bump(&PENDING, true);
            tokio::task::spawn_local(async move {
                let premature = tokio::select! {
                    _ = tokio::time::sleep(delay) => false,
                    _ = sched::exit_signal() => true,
                };
                bump(&PENDING, false);
                if let Some(lua) = weak.try_upgrade() {
                    fire(&lua, &f, premature, &args).await;
                }
            });
            true.into_lua_multi(lua)
        })?,
    )?;
    timer.set(
        "every",
        lua.create_function(|lua, (delay, f, args): (f64, Function, MultiValue)| {
            let delay = delay_of(delay, true).map_err(mlua::Error::runtime)?;
            if sched::exiting() {
                return (Value::Nil, "process exiting").into_lua_multi(lua);
            }
            let weak = lua.weak();
            bump(&PENDING, true);
            tokio::task::spawn_local(async move {
                loop {
                    let premature = tokio::select! {
                        _ = tokio::time::sleep(delay) => false,
                        _ = sched::exit_signal() => true,
                    };
                    let Some(lua) = weak.try_upgrade() else { break };
                    bump(&PENDING, false);
                    fire(&lua, &f, premature, &args).await;
                    if premature {
                        return;
                    }
                    bump(&PENDING, true);
                }
                bump(&PENDING, false);
            });
            true.into_lua_multi(lua)
        })?,
    )?;
    timer.set(
        "running_count",
        lua.create_function(|_, ()| Ok(RUNNING.with(Cell::get)))?,
    )?;
    timer.set(
        "pending_count",
        lua.create_function(|_, ()| Ok(PENDING.with(Cell::get)))?,
    )?;
    ngx.set("timer", timer)?;
    Ok(())
}
