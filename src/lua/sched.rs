//! Which request (or timer) the running Lua code belongs to, and the `ngx` functions that wait.
//!
//! Interleaved requests on one worker are Lua threads driven as futures. [`WithCtx`] records the
//! request's context id in a thread-local before every poll, so a Rust function behind `ngx.*`
//! knows whose request it is acting on ([`current`]) however many requests are suspended.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use mlua::{Lua, Table};

/// Identifies one request or timer context on a worker.
pub type CtxId = u64;

thread_local! {
    static CURRENT: Cell<Option<CtxId>> = const { Cell::new(None) };
}

/// The context whose Lua code is running right now, if any.
pub fn current() -> Option<CtxId> {
    CURRENT.with(Cell::get)
}

pin_project_lite::pin_project! {
    /// Runs `inner` as context `id`: [`current`] returns `id` during each poll.
    pub struct WithCtx<F> {
        id: CtxId,
        #[pin]
        inner: F,
    }
}

impl<F> WithCtx<F> {
    pub fn new(id: CtxId, inner: F) -> WithCtx<F> {
        WithCtx { id, inner }
    }
}

impl<F: Future> Future for WithCtx<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let prev = CURRENT.with(|c| c.replace(Some(*this.id)));
        let out = this.inner.poll(cx);
        CURRENT.with(|c| c.set(prev));
        out
    }
}

/// Registers `ngx.sleep` and `ngx.worker.*` into `ngx`.
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
    worker.set("exiting", lua.create_function(|_, ()| Ok(false))?)?;
    ngx.set("worker", worker)?;
    Ok(())
}
