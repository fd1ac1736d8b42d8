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

struct Live {
    req: SharedReq,
    /// Where the request's Lua state (its APISIX `ctx`, its `ngx.ctx`) is, from the request's
    /// first Lua entry on: the VM and the slot of runner.lua's `live` table holding it.
    state: Option<(usize, StateSlot)>,
}

/// An index of runner.lua's `live` table (from 1; small and reused, so the table stays an
/// array).
pub type StateSlot = u32;

/// The `live` slots of one VM: the next never used, those of finished requests (`held`, most
/// recent last), and those emptied since (`clean`). A held slot still holds the finished
/// request's state, which the runner recycles when the slot goes to a new request.
#[derive(Default)]
struct VmSlots {
    next: StateSlot,
    held: std::collections::VecDeque<StateSlot>,
    clean: Vec<StateSlot>,
}

/// At most this many finished requests' states stay held in their slots (as many as the
/// runner pools). Past it, each first entry also has the runner empty the oldest held slot:
/// after a burst of concurrent requests, what their `ctx` and `ngx.ctx` held is freed as traffic
/// goes on, instead of staying referenced until each slot is reused.
const HELD_MAX: usize = 64;

/// What an entry tells the runner about the request's Lua state (see [`enter_state`]).
#[derive(Debug, Clone, Copy)]
pub struct StateEntry {
    /// The slot of the request's state.
    pub slot: StateSlot,
    /// The request's first entry into this VM: the runner makes the state.
    pub first: bool,
    /// A held slot the runner empties (recycling the state in it).
    pub trim: Option<StateSlot>,
}

thread_local! {
    static LIVE: RefCell<FxHashMap<CtxId, Live>> = RefCell::new(FxHashMap::default());
    /// The request [`try_current`] found last: the FFI entry points of one phase ask for the
    /// same request one after another, and this spares each the map lookup.
    static LAST: RefCell<Option<(CtxId, SharedReq)>> = const { RefCell::new(None) };
    /// Per VM (told apart by [`vm_of`]): its `live` slots.
    static SLOTS: RefCell<FxHashMap<usize, VmSlots>> = RefCell::new(FxHashMap::default());
}

/// Makes `req` reachable from Lua while its context id is current.
pub fn register(req: SharedReq) {
    let id = req.borrow().id;
    LIVE.with(|l| l.borrow_mut().insert(id, Live { req, state: None }));
}

/// The slot of request `id`'s Lua state in VM `vm`, about to be entered, and whether this is
/// the request's first entry into that VM: then the runner makes the state (recycling the one
/// a finished request left in the slot), and may be given a held slot to empty. Code with no
/// live request gets slot 0, made afresh on every entry.
pub fn enter_state(id: CtxId, vm: usize) -> StateEntry {
    LIVE.with(|l| {
        let mut l = l.borrow_mut();
        let Some(live) = l.get_mut(&id) else {
            return StateEntry {
                slot: 0,
                first: true,
                trim: None,
            };
        };
        match live.state {
            Some((v, slot)) if v == vm => StateEntry {
                slot,
                first: false,
                trim: None,
            },
            held => {
                // A state an older VM made (a plugin reload mid-request) is left to that VM.
                if let Some((old_vm, old)) = held {
                    release(old_vm, old);
                }
                let (slot, trim) = SLOTS.with(|s| {
                    let mut s = s.borrow_mut();
                    let slots = s.entry(vm).or_default();
                    let slot = match slots.held.pop_back() {
                        Some(slot) => slot,
                        None => slots.clean.pop().unwrap_or_else(|| {
                            slots.next += 1;
                            slots.next
                        }),
                    };
                    let trim = if slots.held.len() > HELD_MAX {
                        let t = slots.held.pop_front();
                        slots.clean.extend(t);
                        t
                    } else {
                        None
                    };
                    (slot, trim)
                });
                live.state = Some((vm, slot));
                StateEntry {
                    slot,
                    first: true,
                    trim,
                }
            }
        }
    })
}

/// Gives `slot` of VM `vm` back, its state to be recycled by the next request given it.
fn release(vm: usize, slot: StateSlot) {
    SLOTS.with(|s| s.borrow_mut().entry(vm).or_default().held.push_back(slot));
}

/// Forgets a finished request; its Lua state's slot goes to a later request.
pub fn unregister(id: CtxId) {
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if last.as_ref().is_some_and(|(l, _)| *l == id) {
            *last = None;
        }
    });
    if let Some(Live {
        state: Some((vm, slot)),
        ..
    }) = LIVE.with(|l| l.borrow_mut().remove(&id))
    {
        release(vm, slot);
    }
}

/// Forgets the slots of a VM that is going away (a later VM may even get the same address).
pub fn forget_vm(vm: usize) {
    SLOTS.with(|s| s.borrow_mut().remove(&vm));
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

/// `state_slot()`: the slot of runner.lua's `live` table holding the current request's Lua
/// state; where there is no request, the error `ngx.ctx` raises there (and `nil` before the
/// request's first entry into this VM).
///
/// # Safety
/// Called by Lua as a C function with a valid state.
pub unsafe extern "C-unwind" fn state_slot(l: *mut ffi::lua_State) -> std::ffi::c_int {
    // SAFETY: called by Lua.
    unsafe {
        let vm = vm_of(l);
        let live = sched::current()
            .and_then(|id| LIVE.with(|x| x.borrow().get(&id).map(|live| live.state)));
        ffi::lua_checkstack(l, 1);
        match live {
            Some(Some((v, slot))) if v == vm => ffi::lua_pushnumber(l, slot as ffi::lua_Number),
            Some(_) => ffi::lua_pushnil(l),
            None => return super::raw::raise(l, no_request_message("ngx.ctx")),
        }
    }
    1
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
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        if let Some((l, req)) = last.as_ref()
            && *l == id
        {
            return Some(req.clone());
        }
        let req = LIVE.with(|l| l.borrow().get(&id).map(|x| x.req.clone()))?;
        *last = Some((id, req.clone()));
        Some(req)
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn live_request(id: CtxId) {
        register(Rc::new(RefCell::new(RequestCtx::for_test(
            id,
            http::Version::HTTP_11,
            http::HeaderMap::new(),
        ))));
    }

    #[test]
    fn finished_requests_slots_are_reused_and_past_a_burst_the_oldest_are_emptied() {
        let vm = 7;
        // A burst of concurrent requests: each gets a new slot on its first entry only.
        let burst = HELD_MAX as u64 + 10;
        for id in 1..=burst {
            live_request(id);
            let e = enter_state(id, vm);
            assert_eq!((e.slot, e.first, e.trim), (id as StateSlot, true, None));
            let again = enter_state(id, vm);
            assert_eq!((again.slot, again.first), (id as StateSlot, false));
        }
        for id in 1..=burst {
            unregister(id);
        }
        // The next requests reuse the slots released last, and each has the runner empty the
        // oldest held slot while more than HELD_MAX stay held: 74 held, then 72, 70, 68, 66, 64.
        let mut trimmed = Vec::new();
        for id in 1000..1020 {
            live_request(id);
            let e = enter_state(id, vm);
            assert!(e.first);
            assert!(e.slot as u64 <= burst, "{e:?}");
            trimmed.extend(e.trim);
        }
        assert_eq!(trimmed, (1..=5).collect::<Vec<StateSlot>>());
        for id in 1000..1020 {
            unregister(id);
        }
        let (held, clean) = SLOTS.with(|s| {
            let s = s.borrow();
            (s[&vm].held.len(), s[&vm].clean.clone())
        });
        assert_eq!(held, HELD_MAX + 5);
        assert_eq!(clean, vec![1, 2, 3, 4, 5]);
        // A request of another VM (a plugin reload) gets a state there; the old VM's slot is
        // released to that VM.
        live_request(2000);
        let a = enter_state(2000, vm);
        let b = enter_state(2000, vm + 1);
        assert!(b.first);
        assert_eq!(b.slot, 1);
        let held_a = SLOTS.with(|s| s.borrow()[&vm].held.back().copied());
        assert_eq!(held_a, Some(a.slot));
        forget_vm(vm);
        forget_vm(vm + 1);
        assert!(enter_state(9999, vm).slot == 0, "no live request: slot 0");
    }
}
