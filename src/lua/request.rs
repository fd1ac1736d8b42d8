//! The requests live on this worker, as Lua code reaches them: `ngx.*` functions are global but
//! act on "the current request", the one whose context id the driver set before resuming Lua
//! (`sched::current`). Timers have a context id but no request; code there that touches the
//! request API gets OpenResty's error for the timer context.

use std::cell::RefCell;
use std::rc::Rc;

use mlua::ffi;
use rustc_hash::FxHashMap;

use super::sched::{self, CtxId};
use crate::plugin::RequestCtx;

/// A request shared by the proxy and the Lua code working on it.
pub type SharedReq = Rc<RefCell<RequestCtx>>;

/// A registry slot of one VM (the VM told apart by its allocator's state, unique per VM).
type Slot = (usize, std::ffi::c_int);

struct Live {
    req: SharedReq,
    /// The registry slot of the request's Lua state (its APISIX `ctx`, its `ngx.ctx`), once
    /// the runner made it.
    state: Option<Slot>,
}

thread_local! {
    static LIVE: RefCell<FxHashMap<CtxId, Live>> = RefCell::new(FxHashMap::default());
    /// Slots of finished requests' Lua states, for the runner to recycle (`take_retired`).
    static RETIRED: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// At most this many finished states wait for recycling; past it the oldest are forgotten (a
/// VM that stopped serving, after a plugin reload, leaves its slots behind).
const MAX_RETIRED: usize = 1024;

/// Makes `req` reachable from Lua while its context id is current.
pub fn register(req: SharedReq) {
    let id = req.borrow().id;
    LIVE.with(|l| l.borrow_mut().insert(id, Live { req, state: None }));
}

/// Whether the runner made request `id`'s Lua state already (it passes the answer to the runner,
/// which then makes the state on a first entry without asking for it).
pub fn has_state(id: CtxId) -> bool {
    LIVE.with(|l| l.borrow().get(&id).is_some_and(|x| x.state.is_some()))
}

/// Forgets a finished request; its Lua state is handed to the runner for recycling.
pub fn unregister(id: CtxId) {
    if let Some(Live {
        state: Some(slot), ..
    }) = LIVE.with(|l| l.borrow_mut().remove(&id))
    {
        RETIRED.with(|r| {
            let mut r = r.borrow_mut();
            if r.len() >= MAX_RETIRED {
                r.remove(0);
            }
            r.push(slot);
        });
    }
}

/// Forgets the finished states of a VM that is going away (its registry goes with it; a later
/// VM may even get the same address).
pub fn forget_vm(vm: usize) {
    RETIRED.with(|r| r.borrow_mut().retain(|(v, _)| *v != vm));
}

/// The VM a Lua state belongs to: the address of its allocator's state.
///
/// # Safety
/// `l` is a live Lua state.
pub unsafe fn vm_of(l: *mut ffi::lua_State) -> usize {
    let mut ud = std::ptr::null_mut();
    // SAFETY: reading the allocator of a live state.
    unsafe { ffi::lua_getallocf(l, &mut ud) };
    ud as usize
}

/// `req_state(strict)`: the current request's Lua state; before the runner made it (or where
/// there is no request), `nil`, or with `strict` the error `ngx.ctx` raises there.
///
/// # Safety
/// Called by Lua as a C function with a valid state.
pub unsafe extern "C-unwind" fn req_state(l: *mut ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called by Lua; the slot belongs to this VM (checked) and holds the state.
    unsafe {
        let strict = ffi::lua_toboolean(l, 1) != 0;
        let vm = vm_of(l);
        let slot = sched::current()
            .and_then(|id| LIVE.with(|x| x.borrow().get(&id).and_then(|x| x.state)))
            .filter(|(v, _)| *v == vm);
        match slot {
            Some((_, slot)) => {
                ffi::lua_checkstack(l, 1);
                ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, slot as ffi::lua_Integer);
            }
            None if strict => return super::raw::raise(l, no_request_message("ngx.ctx")),
            None => ffi::lua_pushnil(l),
        }
    }
    1
}

/// `adopt_state(state)`: the runner made the current request's Lua state; it is kept in a
/// registry slot until the request is unregistered. Returns what `take_retired` would (a
/// finished request's state to recycle, or `nil`) and whether more may wait: one call into Rust
/// for both on a request's first entry.
///
/// # Safety
/// Called by Lua as a C function with a valid state.
pub unsafe extern "C-unwind" fn adopt_state(l: *mut ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called by Lua with the state as argument 1; `luaL_ref` pops it (and may raise
    // "not enough memory" with nothing owned alive here).
    unsafe {
        ffi::lua_settop(l, 1);
        let vm = vm_of(l);
        let slot = ffi::luaL_ref(l, ffi::LUA_REGISTRYINDEX);
        if slot >= 0 {
            keep_state(l, vm, slot);
        }
        push_retired(l, vm);
        let more = RETIRED.with(|r| !r.borrow().is_empty());
        ffi::lua_pushboolean(l, std::ffi::c_int::from(more));
    }
    2
}

/// Gives registry slot `slot` (of VM `vm`) to the current request as its Lua state.
///
/// # Safety
/// `l` is a state of VM `vm` in a C function Lua called; `slot` is a fresh registry slot.
unsafe fn keep_state(l: *mut ffi::lua_State, vm: usize, slot: std::ffi::c_int) {
    // SAFETY: see the function's contract.
    unsafe {
        let kept = sched::current().is_some_and(|id| {
            LIVE.with(|x| match x.borrow_mut().get_mut(&id) {
                Some(live) => {
                    live.state = Some((vm, slot));
                    true
                }
                None => false,
            })
        });
        if !kept {
            // No live request to hold it (a timer): the slot is freed at once.
            ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, slot);
        }
    }
}

/// `take_retired()`: the Lua state of a finished request of this VM, its slot freed; `nil`
/// when there is none.
///
/// # Safety
/// Called by Lua as a C function with a valid state.
pub unsafe extern "C-unwind" fn take_retired(l: *mut ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called by Lua.
    unsafe { push_retired(l, vm_of(l)) };
    1
}

/// Pushes the Lua state of a finished request of VM `vm`, its slot freed, or `nil`.
///
/// # Safety
/// `l` is a state of VM `vm` in a C function Lua called.
unsafe fn push_retired(l: *mut ffi::lua_State, vm: usize) {
    let slot = RETIRED.with(|r| {
        let mut r = r.borrow_mut();
        let i = r.iter().rposition(|(v, _)| *v == vm)?;
        Some(r.swap_remove(i).1)
    });
    // SAFETY: the slot belongs to this VM (checked above) and was never freed.
    unsafe {
        ffi::lua_checkstack(l, 2);
        match slot {
            Some(slot) => {
                ffi::lua_rawgeti(l, ffi::LUA_REGISTRYINDEX, slot as ffi::lua_Integer);
                ffi::luaL_unref(l, ffi::LUA_REGISTRYINDEX, slot);
            }
            None => ffi::lua_pushnil(l),
        }
    }
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
