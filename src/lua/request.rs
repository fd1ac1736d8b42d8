//! The requests live on this worker, as Lua code reaches them: `ngx.*` functions are global but
//! act on "the current request", the one whose context id the driver set before resuming Lua
//! (`sched::current`). Timers have a context id but no request; code there that touches the
//! request API gets OpenResty's error for the timer context.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use mlua::{Lua, RegistryKey, Table};

use super::sched::{self, CtxId};
use crate::plugin::RequestCtx;

/// A request shared by the proxy and the Lua code working on it.
pub type SharedReq = Rc<RefCell<RequestCtx>>;

struct Live {
    req: SharedReq,
    /// `ngx.ctx`, made on first use.
    ngx_ctx: Option<RegistryKey>,
}

thread_local! {
    static LIVE: RefCell<HashMap<CtxId, Live>> = RefCell::new(HashMap::new());
}

/// Makes `req` reachable from Lua while its context id is current.
pub fn register(req: SharedReq) {
    let id = req.borrow().id;
    LIVE.with(|l| l.borrow_mut().insert(id, Live { req, ngx_ctx: None }));
}

/// Forgets a finished request (its `ngx.ctx` becomes garbage).
pub fn unregister(id: CtxId) {
    LIVE.with(|l| l.borrow_mut().remove(&id));
}

fn no_request(api: &str) -> mlua::Error {
    match sched::current() {
        Some(_) => {
            mlua::Error::runtime(format!("API disabled in the context of ngx.timer ({api})"))
        }
        None => mlua::Error::runtime("no request found"),
    }
}

/// The current request, or OpenResty's error for code that runs without one.
pub fn current(api: &str) -> mlua::Result<SharedReq> {
    let id = sched::current().ok_or_else(|| no_request(api))?;
    LIVE.with(|l| l.borrow().get(&id).map(|x| x.req.clone()))
        .ok_or_else(|| no_request(api))
}

/// The current request, if there is one.
pub fn try_current() -> Option<SharedReq> {
    let id = sched::current()?;
    LIVE.with(|l| l.borrow().get(&id).map(|x| x.req.clone()))
}

/// Runs `f` on the current request. `f` must not call back into Lua.
pub fn with<R>(api: &str, f: impl FnOnce(&mut RequestCtx) -> R) -> mlua::Result<R> {
    let req = current(api)?;
    let mut r = req
        .try_borrow_mut()
        .map_err(|_| mlua::Error::runtime(format!("{api}: the request is busy")))?;
    Ok(f(&mut r))
}

/// `ngx.ctx` of the current request, made on first use.
pub fn ngx_ctx(lua: &Lua) -> mlua::Result<Table> {
    let id = sched::current().ok_or_else(|| no_request("ngx.ctx"))?;
    let existing = LIVE.with(|l| {
        l.borrow()
            .get(&id)
            .map(|x| x.ngx_ctx.as_ref().map(|k| lua.registry_value::<Table>(k)))
    });
    match existing {
        None => Err(no_request("ngx.ctx")),
        Some(Some(t)) => t,
        Some(None) => {
            let t = lua.create_table()?;
            set_ngx_ctx(lua, t.clone())?;
            Ok(t)
        }
    }
}

/// `ngx.ctx = t`.
pub fn set_ngx_ctx(lua: &Lua, t: Table) -> mlua::Result<()> {
    let id = sched::current().ok_or_else(|| no_request("ngx.ctx"))?;
    let key = lua.create_registry_value(t)?;
    LIVE.with(|l| {
        if let Some(x) = l.borrow_mut().get_mut(&id) {
            x.ngx_ctx = Some(key);
            Ok(())
        } else {
            Err(no_request("ngx.ctx"))
        }
    })
}
