//! `ngx.config`, `require("ngx.process")` and `require("ngx.errlog")`: what APISIX asks about the
//! host it runs in. Features moongate lacks answer with an error naming them rather than a
//! silent success, so a plugin relying on them fails where the cause is visible.

use std::path::Path;

use mlua::{Lua, Table};

use crate::observability::errlog;

/// The nginx version whose API moongate emulates (1.25.3, as `ngx.config.nginx_version`).
const NGINX_VERSION: i64 = 1_025_003;
/// The lua-nginx-module API level emulated (0.10.26); APISIX compares against it.
const NGX_LUA_VERSION: i64 = 10_026;

fn unsupported(what: &'static str) -> impl Fn(&Lua, mlua::MultiValue) -> mlua::Result<()> {
    move |_, _| {
        Err(mlua::Error::runtime(format!(
            "{what} is not supported by moongate"
        )))
    }
}

pub fn register(lua: &Lua, ngx: &Table, prefix: &Path) -> mlua::Result<()> {
    let config = lua.create_table()?;
    config.set("subsystem", "http")?;
    config.set("debug", false)?;
    config.set("nginx_version", NGINX_VERSION)?;
    config.set("ngx_lua_version", NGX_LUA_VERSION)?;
    // nginx reports its prefix with a trailing slash and code concatenates onto it.
    let mut p = prefix.display().to_string();
    if !p.ends_with('/') {
        p.push('/');
    }
    config.set("prefix", lua.create_function(move |_, ()| Ok(p.clone()))?)?;
    config.set(
        "nginx_configure",
        lua.create_function(|_, ()| Ok(" --with-moongate"))?,
    )?;
    ngx.set("config", config)?;

    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "ngx.process",
        lua.create_function(|lua, ()| {
            let m = lua.create_table()?;
            // moongate has no privileged agent and no single-process mode: every VM is a worker.
            m.set("type", lua.create_function(|_, ()| Ok("worker"))?)?;
            // Workers are threads of one process, so the "master" is this process.
            m.set(
                "get_master_pid",
                lua.create_function(|_, ()| Ok(std::process::id()))?,
            )?;
            m.set(
                "enable_privileged_agent",
                lua.create_function(|_, _: mlua::MultiValue| {
                    Ok((
                        mlua::Value::Nil,
                        "privileged agent is not supported by moongate",
                    ))
                })?,
            )?;
            m.set(
                "signal_graceful_exit",
                lua.create_function(unsupported("ngx.process.signal_graceful_exit"))?,
            )?;
            Ok(m)
        })?,
    )?;
    preload.set(
        "ngx.errlog",
        lua.create_function(|lua, ()| {
            let m = lua.create_table()?;
            m.set(
                "raw_log",
                lua.create_function(|_, (lvl, msg): (i64, mlua::LuaString)| {
                    let Some(l) = super::log::level(lvl) else {
                        return Err(mlua::Error::runtime(format!(
                            "bad argument #1 to 'raw_log' (bad log level: {lvl})"
                        )));
                    };
                    // Unlike ngx.log, no `[lua] file:line:` prefix.
                    super::log::write(l, &msg.to_string_lossy());
                    Ok(())
                })?,
            )?;
            m.set(
                "get_sys_filter_level",
                lua.create_function(|_, ()| Ok(errlog::level() as i64 + 1))?,
            )?;
            m.set(
                "set_filter_level",
                lua.create_function(unsupported("ngx.errlog.set_filter_level"))?,
            )?;
            m.set(
                "get_logs",
                lua.create_function(unsupported(
                    "ngx.errlog.get_logs (it needs lua_capture_error_log)",
                ))?,
            )?;
            Ok(m)
        })?,
    )?;
    Ok(())
}
