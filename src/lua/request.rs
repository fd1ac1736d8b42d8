//! The requests live on this worker, as Lua code reaches them: `ngx.*` functions are global but
//! act on "the current request", the one whose context id the driver set before resuming Lua
//! (`sched::current`). Timers have a context id but no request; code there that touches the
//! request API gets OpenResty's error for the timer context.

use std::cell::RefCell;
use std::rc::Rc;

use rustc_hash::FxHashMap;

use super::sched::{self, CtxId};
use crate::plugin::RequestCtx;

/// A request shared by the proxy and the Lua code working on it.
pub type SharedReq = Rc<RefCell<RequestCtx>>;

struct Live {
    req: SharedReq,
    /// The registry slot of the request's Lua state (`ngx.ctx` lives there), once made.
    state: Option<std::ffi::c_int>,
}

thread_local! {
    static LIVE: RefCell<FxHashMap<CtxId, Live>> = RefCell::new(FxHashMap::default());
}

/// Makes `req` reachable from Lua while its context id is current.
pub fn register(req: SharedReq) {
    let id = req.borrow().id;
    LIVE.with(|l| l.borrow_mut().insert(id, Live { req, state: None }));
}

/// Records the registry slot of request `id`'s Lua state (see `lua::host::LuaState`).
pub fn set_state_slot(id: CtxId, slot: std::ffi::c_int) {
    LIVE.with(|l| {
        if let Some(x) = l.borrow_mut().get_mut(&id) {
            x.state = Some(slot);
        }
    });
}

/// The registry slot of the current request's Lua state, or the error `api` raises where
/// there is no request (or no state yet).
pub fn state_slot(api: &str) -> Result<std::ffi::c_int, String> {
    sched::current()
        .and_then(|id| LIVE.with(|l| l.borrow().get(&id).and_then(|x| x.state)))
        .ok_or_else(|| no_request_message(api))
}

/// Forgets a finished request. (Its Lua state, `ngx.ctx` included, is held by the proxy and
/// goes with it.)
pub fn unregister(id: CtxId) {
    LIVE.with(|l| l.borrow_mut().remove(&id));
}

/// OpenResty's error for request APIs called where there is no request: in a timer, or
/// outside any Lua context.
pub fn no_request(api: &str) -> mlua::Error {
    mlua::Error::runtime(no_request_message(api))
}

/// The text of [`no_request`].
pub fn no_request_message(api: &str) -> String {
    match sched::current() {
        Some(_) => format!("API disabled in the context of ngx.timer ({api})"),
        None => "no request found".to_string(),
    }
}

/// The current request, or OpenResty's error for code that runs without one.
pub fn current(api: &str) -> mlua::Result<SharedReq> {
    try_current().ok_or_else(|| no_request(api))
}

/// The current request, if there is one.
pub fn try_current() -> Option<SharedReq> {
    let id = sched::current()?;
    LIVE.with(|l| l.borrow().get(&id).map(|x| x.req.clone()))
}

/// Runs `f` on the current request. `f` must not call back into Lua.
pub fn with<R>(api: &str, f: impl FnOnce(&mut RequestCtx) -> R) -> mlua::Result<R> {
    with_raw(api, f).map_err(mlua::Error::runtime)
}

/// [`with`] for raw C functions (`lua::raw`): the error is the message to raise.
pub fn with_raw<R>(api: &str, f: impl FnOnce(&mut RequestCtx) -> R) -> Result<R, String> {
    let req = try_current().ok_or_else(|| no_request_message(api))?;
    let mut r = req
        .try_borrow_mut()
        .map_err(|_| format!("{api}: the request is busy"))?;
    Ok(f(&mut r))
}
