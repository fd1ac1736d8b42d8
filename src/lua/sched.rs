//! Which request (or timer) the running Lua code belongs to, and the `ngx` functions that wait.
//!
//! Interleaved requests on one worker are Lua threads driven as futures. [`WithCtx`] records the
//! request's context id in a thread-local before every poll, so a Rust function behind `ngx.*`
//! knows whose request it is acting on ([`current`]) however many requests are suspended.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

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

thread_local! {
    static NEXT_ID: Cell<CtxId> = const { Cell::new(1) };
    static EXITING: Cell<bool> = const { Cell::new(false) };
    static EXIT: std::rc::Rc<tokio::sync::Notify> = std::rc::Rc::new(tokio::sync::Notify::new());
}

/// A fresh context id for a new request or timer on this worker.
pub fn next_ctx_id() -> CtxId {
    NEXT_ID.with(|n| {
        let id = n.get();
        n.set(id + 1);
        id
    })
}

/// The worker is shutting down: `ngx.worker.exiting()` turns true and pending timers run at
/// once with `premature = true`.
pub fn begin_exit() {
    EXITING.with(|e| e.set(true));
    EXIT.with(|n| n.notify_waiters());
}

pub fn exiting() -> bool {
    EXITING.with(Cell::get)
}

/// Completes when [`begin_exit`] is called (at once if it already was).
pub async fn exit_signal() {
    let notify = EXIT.with(|n| n.clone());
    let notified = notify.notified();
    if exiting() {
        return;
    }
    notified.await;
}

thread_local! {
    /// Contexts whose Lua code called `ngx.exit`: their driver stops resuming them.
    static EXITED: std::cell::RefCell<Vec<CtxId>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks context `id` as exited; the function that called `ngx.exit` never returns.
pub fn mark_exited(id: CtxId) {
    EXITED.with(|e| e.borrow_mut().push(id));
}

fn take_exited(id: CtxId) -> bool {
    EXITED.with(|e| {
        let mut e = e.borrow_mut();
        match e.iter().position(|x| *x == id) {
            Some(i) => {
                e.swap_remove(i);
                true
            }
            None => false,
        }
    })
}

pin_project_lite::pin_project! {
    /// Runs `inner` as context `id`, like [`WithCtx`], and stops driving it when its code calls
    /// `ngx.exit` (which waits forever, so nothing after it runs, not even a `pcall` handler):
    /// the output is `None` then.
    pub struct Exitable<F> {
        id: CtxId,
        #[pin]
        inner: F,
    }
}

impl<F> Exitable<F> {
    pub fn new(id: CtxId, inner: F) -> Exitable<F> {
        Exitable { id, inner }
    }
}

impl<F: Future> Future for Exitable<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        let this = self.project();
        let prev = CURRENT.with(|c| c.replace(Some(*this.id)));
        let out = this.inner.poll(cx);
        CURRENT.with(|c| c.set(prev));
        match out {
            Poll::Ready(v) => {
                take_exited(*this.id);
                Poll::Ready(Some(v))
            }
            Poll::Pending if take_exited(*this.id) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
