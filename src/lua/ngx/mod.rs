//! The `ngx` API, one file per `ngx.*` area, each registering its functions in one place.

pub mod balancer;
pub mod codec;
pub mod config;
pub mod consts;
pub mod location;
pub mod log;
pub mod re;
pub mod req;
pub mod resp;
pub mod semaphore;
pub mod shared;
pub mod socket;
pub mod thread;
pub mod time;
pub mod timer;
pub mod worker;

use mlua::{Lua, Table};

/// Registers every area implemented so far into `ngx`.
pub fn register(
    lua: &Lua,
    ngx: &Table,
    worker_id: usize,
    worker_count: usize,
    dicts: &shared::SharedDicts,
) -> mlua::Result<()> {
    worker::register(lua, ngx, worker_id, worker_count)?;
    timer::register(lua, ngx)?;
    thread::register(lua, ngx)?;
    semaphore::register(lua)?;
    codec::register(lua, ngx)?;
    time::register(lua, ngx)?;
    re::register(lua, ngx)?;
    consts::register(lua, ngx)?;
    log::register(lua, ngx)?;
    shared::register(lua, ngx, dicts)?;
    socket::register(lua, ngx)?;
    socket::register_udp(lua, ngx)?;
    req::register(lua, ngx)?;
    resp::register(lua, ngx)?;
    location::register(lua, ngx)?;
    balancer::register(lua)?;
    Ok(())
}
