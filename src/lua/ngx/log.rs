//! `ngx.log` and the level constants, writing to moongate's error log in nginx's line shape with
//! the `[lua] file.lua:LINE: func(): ` prefix OpenResty adds, so `--- error_log` checks and greps
//! written for OpenResty match.

use mlua::{Lua, Table, Value, Variadic};

use crate::observability::errlog::NginxLevel;

/// OpenResty's level constants, most severe first.
const LEVELS: [(&str, i64); 9] = [
    ("STDERR", 0),
    ("EMERG", 1),
    ("ALERT", 2),
    ("CRIT", 3),
    ("ERR", 4),
    ("WARN", 5),
    ("NOTICE", 6),
    ("INFO", 7),
    ("DEBUG", 8),
];

pub(super) fn level(n: i64) -> Option<NginxLevel> {
    Some(match n {
        // nginx writes `ngx.STDERR` messages without a level filter; the closest is `emerg`'s
        // always-written severity, but labelled as nginx labels them.
        0 | 1 => NginxLevel::Emerg,
        2 => NginxLevel::Alert,
        3 => NginxLevel::Crit,
        4 => NginxLevel::Error,
        5 => NginxLevel::Warn,
        6 => NginxLevel::Notice,
        7 => NginxLevel::Info,
        8 => NginxLevel::Debug,
        _ => return None,
    })
}

/// One `ngx.log` argument as OpenResty prints it.
fn piece(v: &Value, i: usize) -> mlua::Result<String> {
    Ok(match v {
        Value::Nil => "nil".into(),
        Value::Boolean(b) => b.to_string(),
        Value::String(s) => s.to_string_lossy(),
        Value::Integer(_) | Value::Number(_) => v.to_string()?,
        Value::LightUserData(u) if u.0.is_null() => "null".into(),
        Value::Table(t) => match t
            .metatable()
            .and_then(|m| m.get::<mlua::Function>("__tostring").ok())
        {
            Some(f) => f.call::<String>(t.clone())?,
            None => {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #{} to 'log' (expected table to have __tostring metamethod)",
                    i + 2
                )));
            }
        },
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #{} to 'log' (string, number, boolean, or nil expected, got {})",
                i + 2,
                other.type_name()
            )));
        }
    })
}

/// `[lua] file.lua:12: func(): ` for the Lua function `depth` levels up.
pub fn location(lua: &Lua, depth: usize) -> String {
    lua.inspect_stack(depth, |d| {
        let src = d.source();
        let file = src.short_src.as_deref().unwrap_or("?");
        let file = file.rsplit('/').next().unwrap_or(file).to_string();
        let line = d
            .current_line()
            .map(|l| l.to_string())
            .unwrap_or_else(|| "0".into());
        match d.names().name {
            Some(name) => format!("[lua] {file}:{line}: {name}(): "),
            None => format!("[lua] {file}:{line}: "),
        }
    })
    .unwrap_or_else(|| "[lua] ".into())
}

pub fn register(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    for (name, n) in LEVELS {
        ngx.set(name, n)?;
    }
    ngx.set(
        "log",
        lua.create_function(|lua, (lvl, args): (i64, Variadic<Value>)| {
            let Some(l) = level(lvl) else {
                return Err(mlua::Error::runtime(format!(
                    "bad argument #1 to 'log' (bad log level: {lvl})"
                )));
            };
            let mut msg = location(lua, 1);
            for (i, a) in args.iter().enumerate() {
                msg.push_str(&piece(a, i)?);
            }
            write(l, &msg);
            Ok(())
        })?,
    )?;
    // lua-nginx-module's global `print` is `ngx.log(ngx.NOTICE, ...)`: it goes to the error
    // log, never to stdout.
    lua.globals().set(
        "print",
        lua.create_function(|lua, args: Variadic<Value>| {
            let mut msg = location(lua, 1);
            for (i, a) in args.iter().enumerate() {
                msg.push_str(&piece(a, i)?);
            }
            write(NginxLevel::Notice, &msg);
            Ok(())
        })?,
    )?;
    Ok(())
}

/// nginx's tail of an error-log line written while a request runs:
/// `, client: ADDR, server: NAME, request: "LINE", host: "HOST"`. Tests and log tooling match
/// on it (APISIX's suites expect the `,` right after a plugin's message).
fn request_context() -> Option<String> {
    let req = crate::lua::request::try_current()?;
    let r = req.try_borrow().ok()?;
    let mut tail = format!(
        ", client: {}, server: _, request: \"{} {} {}\"",
        crate::router::ip::canonical(r.remote.ip()),
        r.method,
        r.request_uri,
        crate::plugin::ctx::protocol(r.version)
    );
    if let Some(h) = r.header(http::header::HOST.as_str()) {
        tail.push_str(", host: \"");
        tail.push_str(&String::from_utf8_lossy(h.as_bytes()));
        tail.push('"');
    }
    Some(tail)
}

/// Writes `msg` to the error log at `l` (shared by `ngx.log` and `ngx.errlog.raw_log`), with
/// the request's context when one is running.
pub(super) fn write(l: NginxLevel, msg: &str) {
    let target = match l {
        NginxLevel::Emerg => "emerg",
        NginxLevel::Alert => "alert",
        NginxLevel::Crit => "crit",
        NginxLevel::Notice => "notice",
        _ => "lua",
    };
    let level = match l {
        NginxLevel::Error | NginxLevel::Emerg | NginxLevel::Alert | NginxLevel::Crit => {
            log::Level::Error
        }
        NginxLevel::Warn => log::Level::Warn,
        NginxLevel::Notice | NginxLevel::Info => log::Level::Info,
        NginxLevel::Debug => log::Level::Debug,
    };
    if !log::log_enabled!(target: target, level) {
        return;
    }
    match request_context() {
        Some(tail) => log::log!(target: target, level, "{msg}{tail}"),
        None => log::log!(target: target, level, "{msg}"),
    }
}
