//! Which request (or timer) the running Lua code belongs to, and the `ngx` functions that wait.
//!
//! Interleaved requests on one worker are Lua threads driven as futures. [`WithCtx`] records the
//! request's context id in a thread-local before every poll, so a Rust function behind `ngx.*`
//! knows whose request it is acting on ([`current`]) however many requests are suspended.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::task::JoinHandle;

/// Identifies one request or timer context on a worker.
pub type CtxId = u64;

thread_local! {
    static CURRENT: Cell<Option<CtxId>> = const { Cell::new(None) };
}

/// The context whose Lua code is running right now, if any.
pub fn current() -> Option<CtxId> {
    CURRENT.with(Cell::get)
}

/// Runs `f` as context `id`: [`current`] returns `id` while it runs (a direct resume of the
/// context's Lua code, `lua::entry`).
pub fn run_as<T>(id: CtxId, f: impl FnOnce() -> T) -> T {
    let prev = CURRENT.with(|c| c.replace(Some(id)));
    let out = f();
    CURRENT.with(|c| c.set(prev));
    out
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

/// The Lua of one context run (a request phase or a timer): whether its code called
/// `ngx.exit`, who to wake when it does, and its light threads still running.
#[derive(Default)]
struct Group {
    exited: bool,
    wakers: Vec<Waker>,
    threads: Vec<JoinHandle<()>>,
}

thread_local! {
    static GROUPS: RefCell<rustc_hash::FxHashMap<CtxId, Group>> = RefCell::new(Default::default());
}

fn with_group<T>(id: CtxId, f: impl FnOnce(&mut Group) -> T) -> T {
    GROUPS.with(|g| f(g.borrow_mut().entry(id).or_default()))
}

/// Marks context `id` as exited and wakes every driver of its Lua (the entry thread and its
/// light threads), so all of them stop, whichever one called `ngx.exit`.
pub fn mark_exited(id: CtxId) {
    let wakers = with_group(id, |g| {
        g.exited = true;
        std::mem::take(&mut g.wakers)
    });
    for w in wakers {
        w.wake();
    }
}

/// Whether code of context `id` called `ngx.exit`.
pub fn is_exited(id: CtxId) -> bool {
    GROUPS.with(|g| g.borrow().get(&id).is_some_and(|g| g.exited))
}

/// Records a light thread of context `id`, so the run waits for it or stops it.
pub fn add_thread(id: CtxId, task: JoinHandle<()>) {
    with_group(id, |g| g.threads.push(task));
}

/// Whether context `id` has light threads that were not waited for yet.
pub fn has_threads(id: CtxId) -> bool {
    GROUPS.with(|g| g.borrow().get(&id).is_some_and(|g| !g.threads.is_empty()))
}

/// Waits for the light threads of context `id` still running (and those they spawn), as
/// OpenResty waits for them before a phase ends. Returns false when one of them called
/// `ngx.exit`: the others are stopped then.
pub async fn join_threads(id: CtxId) -> bool {
    loop {
        let next = GROUPS.with(|g| g.borrow_mut().get_mut(&id).and_then(|g| g.threads.pop()));
        let Some(task) = next else {
            return !is_exited(id);
        };
        let _ = task.await;
        if is_exited(id) {
            abort_threads(id);
            return false;
        }
    }
}

/// Stops every light thread of context `id` (its entry thread exited or failed).
pub fn abort_threads(id: CtxId) {
    let threads = GROUPS.with(|g| {
        g.borrow_mut()
            .get_mut(&id)
            .map(|g| std::mem::take(&mut g.threads))
    });
    for t in threads.into_iter().flatten() {
        t.abort();
    }
}

/// Forgets context `id`'s run state; the next phase of the same request starts clean.
pub fn finish(id: CtxId) {
    let group = GROUPS.with(|g| g.borrow_mut().remove(&id));
    for t in group.into_iter().flat_map(|g| g.threads) {
        t.abort();
    }
}

pin_project_lite::pin_project! {
    /// Runs `inner` as context `id`, like [`WithCtx`], and stops driving it when code of that
    /// context (this thread or a light thread) calls `ngx.exit`, which waits forever, so
    /// nothing after it runs, not even a `pcall` handler: the output is `None` then.
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
        let id = *this.id;
        if is_exited(id) {
            return Poll::Ready(None);
        }
        let prev = CURRENT.with(|c| c.replace(Some(id)));
        let out = this.inner.poll(cx);
        CURRENT.with(|c| c.set(prev));
        match out {
            Poll::Ready(v) => Poll::Ready(Some(v)),
            Poll::Pending if is_exited(id) => Poll::Ready(None),
            Poll::Pending => {
                with_group(id, |g| {
                    if !g.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                        g.wakers.push(cx.waker().clone());
                    }
                });
                Poll::Pending
            }
        }
    }
}
