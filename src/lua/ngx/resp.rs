//! The response API: `ngx.status`, `ngx.header`, `ngx.resp.get_headers`, `ngx.say`,
//! `ngx.print`, `ngx.flush`, `ngx.eof`, `ngx.exit`, `ngx.redirect`, `ngx.exec`, `ngx.arg`,
//! `ngx.headers_sent`, `ngx.ctx`, `ngx.get_phase`, `ngx.on_abort`.
//!
//! Output is collected on the request and sent by the proxy when the phase ends (or at once
//! with `ngx.flush` in a content handler). `ngx.exit` stops the calling Lua for good: it marks
//! the context and waits forever, and the driver (`sched::Exitable`) drops it.

use bytes::{Bytes, BytesMut};
use mlua::{Function, IntoLuaMulti, Lua, LuaString, MultiValue, Table, Value};

use super::req::{
    HeaderValues, header_name, header_values, headers_args, headers_rets_with, raw_header_name,
    raw_header_values,
};
use crate::lua::raw::{self, Ret, Rets};
use crate::lua::request;
use crate::lua::sched;

fn rt(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::runtime(msg.into())
}

/// The `*_by_lua*` context name OpenResty puts in "API disabled" errors.
fn context_name(phase: &str) -> String {
    match phase {
        "timer" => "ngx.timer".into(),
        p => format!("{p}_by_lua*"),
    }
}

fn phase_of(r: &crate::plugin::RequestCtx) -> &'static str {
    if r.in_content {
        return "content";
    }
    r.ngx_phase
}

/// Appends print arguments the way lua-nginx-module flattens them: strings, numbers, booleans,
/// `nil`, `ngx.null`, and (nested) arrays of those.
fn flatten(v: &Value, out: &mut BytesMut, api: &str) -> mlua::Result<()> {
    match v {
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        Value::Integer(i) => out.extend_from_slice(print_number(*i as f64).as_bytes()),
        Value::Number(n) => out.extend_from_slice(print_number(*n).as_bytes()),
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Nil => out.extend_from_slice(b"nil"),
        Value::LightUserData(u) if u.0.is_null() => out.extend_from_slice(b"null"),
        Value::Table(t) => {
            // Only arrays: every key a positive integer (holes print as nil).
            let mut max = 0i64;
            for pair in t.pairs::<Value, Value>() {
                let (k, _) = pair?;
                let idx = match k {
                    Value::Integer(i) if i > 0 => i,
                    Value::Number(n) if n > 0.0 && n.fract() == 0.0 => n as i64,
                    _ => {
                        return Err(rt(format!(
                            "bad argument #1 to '{api}' (non-array table found)"
                        )));
                    }
                };
                max = max.max(idx);
            }
            for i in 1..=max {
                flatten(&t.raw_get::<Value>(i)?, out, api)?;
            }
        }
        other => {
            return Err(rt(format!(
                "bad argument #1 to '{api}' (string, number, boolean, nil, ngx.null, or array table expected, got {})",
                other.type_name()
            )));
        }
    }
    Ok(())
}

/// Numbers print as lua-nginx-module prints them: an integral value in the 32-bit range as an
/// integer, anything else with `%.14g` (so 2^53 is `9.007199254741e+15` and -0.0 is `0`).
fn print_number(n: f64) -> String {
    if n == (n as i32) as f64 {
        (n as i32).to_string()
    } else {
        crate::lua::lib::cjson::fmt_g(n, 14)
    }
}

fn output(lua: &Lua, args: MultiValue, newline: bool, api: &str) -> mlua::Result<MultiValue> {
    let mut buf = BytesMut::new();
    for a in args.iter() {
        flatten(a, &mut buf, api)?;
    }
    if newline {
        buf.extend_from_slice(b"\n");
    }
    request::with(api, |r| {
        let phase = phase_of(r);
        if matches!(phase, "header_filter" | "body_filter" | "log" | "balancer") {
            return Err(rt(format!(
                "API disabled in the context of {}",
                context_name(phase)
            )));
        }
        if r.exit.is_some() {
            return Value::Nil.into_lua_multi(lua);
        }
        if r.eof {
            return (Value::Nil, "seen eof").into_lua_multi(lua);
        }
        r.output_started = true;
        let chunk = buf.freeze();
        match &r.stream {
            Some(tx) if r.streaming => {
                let _ = tx.send(chunk);
            }
            _ => r.out.push(chunk),
        }
        1i64.into_lua_multi(lua)
    })?
}

crate::raw_fn!(header_index, |args| {
    // lua-nginx-module turns `_` into `-` in response header names it is given.
    let name = raw_header_name(args, 2, "ngx.header", true)?;
    request::with_raw("ngx.header", |r| {
        let mut all = r.resp_headers.get_all(&name).iter();
        match (all.next(), all.next()) {
            (None, _) => Ret::Nil,
            (Some(v), None) => Ret::Str(v.as_bytes().to_vec()),
            (Some(a), Some(b)) => {
                let mut list = vec![a.as_bytes().to_vec(), b.as_bytes().to_vec()];
                list.extend(all.map(|v| v.as_bytes().to_vec()));
                Ret::List(list)
            }
        }
        .into()
    })
});

crate::raw_fn!(header_newindex, |args| {
    let name = raw_header_name(args, 2, "ngx.header", true)?;
    let mut vals = raw_header_values(args, 3, "ngx.header")?;
    // As nginx's header helper: a single empty value removes the header.
    if args.str(3).is_some_and(|v| v.is_empty()) {
        vals = None;
    }
    request::with_raw("ngx.header", |r| set_response_header(r, &name, vals))?;
    Ok(Rets::none())
});

/// What `ngx.header[name] = value` does once its arguments are read (`None` deletes).
pub fn set_response_header(
    r: &mut crate::plugin::RequestCtx,
    name: &http::HeaderName,
    vals: Option<HeaderValues>,
) {
    if r.headers_sent || r.output_started {
        log::error!("attempt to set ngx.header.HEADER after sending out response headers");
        return;
    }
    match vals {
        Some(v) => v.set_in(&mut r.resp_headers, name),
        None => {
            r.resp_headers.remove(name);
        }
    }
}

crate::raw_fn!(resp_get_headers, |args| {
    let (max, raw) = headers_args(args, false);
    request::with_raw("ngx.resp.get_headers", |r| {
        headers_rets_with(
            &[("connection", connection_entry(r))],
            &r.resp_headers,
            max,
            raw,
        )
    })
});

/// The `connection` entry lua-nginx-module puts into `ngx.resp.get_headers()` from nginx's own
/// state, not from the header list: `upgrade` for a 101, else whether nginx keeps the client
/// connection alive as it decides from the request: a `Connection` header naming `close`
/// (looked for first) or `keep-alive`, else HTTP/1.1 and later keep it.
fn connection_entry(r: &crate::plugin::RequestCtx) -> &'static str {
    if r.status == 101 {
        return "upgrade";
    }
    let mut keep = r.version > http::Version::HTTP_10;
    for v in r.headers_and_arrival().0.get_all(http::header::CONNECTION) {
        let v = v.as_bytes().to_ascii_lowercase();
        if v.windows(5).any(|w| w == b"close") {
            keep = false;
        } else if v.windows(10).any(|w| w == b"keep-alive") {
            keep = true;
        }
    }
    if keep { "keep-alive" } else { "close" }
}

/// Ends the calling Lua for good: the context is marked exited and this never completes, so
/// its driver (`sched::Exitable`) drops the code without running another line of it.
async fn stop_here(id: sched::CtxId) -> mlua::Result<()> {
    sched::mark_exited(id);
    std::future::pending::<()>().await;
    Ok(())
}

/// The metatable of `ngx`. `ngx.ctx` lives in the request's Lua state, made by the runner on
/// the request's first Lua entry and kept in a slot of the `live` table.
const NGX_MT: &str = r#"
local state_slot, live, get_status, set_status, headers_sent = ...
local type, rawset, error = type, rawset, error

local function state()
    local slot = state_slot()
    local st = slot and live[slot]
    if not st then
        error("ngx.ctx: the request has no Lua state yet", 3)
    end
    return st
end

return {
    __index = function(_, k)
        if k == "ctx" then
            local st = state()
            local c = st.ngx_ctx
            if c == nil then
                c = {}
                st.ngx_ctx = c
            end
            return c
        elseif k == "status" then
            return get_status()
        elseif k == "headers_sent" then
            return headers_sent()
        end
        return nil
    end,
    __newindex = function(t, k, v)
        if k == "ctx" then
            if type(v) ~= "table" then
                error("ctx should be a table while getting a " .. type(v), 2)
            end
            state().ngx_ctx = v
        elseif k == "status" then
            set_status(v)
        else
            rawset(t, k, v)
        end
    end,
}
"#;

crate::raw_fn!(get_status, |_| {
    request::with_raw("ngx.status", |r| Ret::Num(r.status as f64).into())
});

crate::raw_fn!(headers_sent, |_| {
    request::with_raw("ngx.headers_sent", |r| {
        Ret::Bool(r.headers_sent || r.output_started || r.streaming).into()
    })
});

crate::raw_fn!(set_status, |args| {
    let bad = || "bad argument to 'ngx.status' (number expected)".to_string();
    let code = match args.ty(1) {
        raw::Ty::Number => args.number(1).unwrap_or(0.0) as i64,
        raw::Ty::Str => std::str::from_utf8(args.str(1).unwrap_or_default())
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    request::with_raw("ngx.status", |r| {
        if r.headers_sent || r.output_started {
            log::error!("attempt to set ngx.status after sending out response headers");
            return;
        }
        if (100..=999).contains(&code) {
            r.status = code as u16;
        }
    })?;
    Ok(Rets::none())
});

/// The registry name of the table of requests' Lua states (by slot, see
/// `request::enter_state`), shared by `ngx.ctx` and the runner.
pub const LIVE_STATES: &str = "moongate.live_states";

pub fn register(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    // ngx.status, ngx.ctx and ngx.headers_sent are fields with behaviour: served by the
    // metatable of `ngx` (NGX_MT), so they must never be raw fields of it.
    let live = lua.create_table()?;
    lua.set_named_registry_value(LIVE_STATES, &live)?;
    let mt: Table = lua.load(NGX_MT).set_name("=moongate/ngx_mt.lua").call((
        raw::function(lua, request::state_slot, ())?,
        live,
        raw::function(lua, get_status, ())?,
        raw::function(lua, set_status, ())?,
        raw::function(lua, headers_sent, ())?,
    ))?;
    ngx.set_metatable(Some(mt))?;

    let header = lua.create_table()?;
    let hmt = lua.create_table()?;
    hmt.set("__index", raw::function(lua, header_index, ())?)?;
    hmt.set("__newindex", raw::function(lua, header_newindex, ())?)?;
    header.set_metatable(Some(hmt))?;
    ngx.raw_set("header", header)?;

    let resp = lua.create_table()?;
    resp.set(
        "get_headers",
        raw::function(lua, resp_get_headers, super::req::header_metatable(lua)?)?,
    )?;
    resp.set(
        "add_header",
        lua.create_function(|_, (k, v): (LuaString, Value)| {
            let name = header_name(&k, "ngx.resp.add_header")?;
            let vals = header_values(&v, "ngx.resp.add_header")?;
            request::with("ngx.resp.add_header", |r| {
                // nginx keeps one Content-Type and one Content-Length: adding one replaces it.
                let single =
                    name == http::header::CONTENT_TYPE || name == http::header::CONTENT_LENGTH;
                for v in vals.into_iter().flatten() {
                    if single {
                        r.resp_headers.insert(name.clone(), v);
                    } else {
                        r.resp_headers.append(name.clone(), v);
                    }
                }
            })
        })?,
    )?;
    // `require("ngx.resp")`: lua-resty-core's module form of the same `add_header`.
    let module = lua.create_table()?;
    module.set("add_header", resp.get::<Function>("add_header")?)?;
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "ngx.resp",
        lua.create_function(move |_, ()| Ok(module.clone()))?,
    )?;
    ngx.raw_set("resp", resp)?;

    ngx.raw_set(
        "say",
        lua.create_function(|lua, args: MultiValue| output(lua, args, true, "say"))?,
    )?;
    ngx.raw_set(
        "print",
        lua.create_function(|lua, args: MultiValue| output(lua, args, false, "print"))?,
    )?;
    ngx.raw_set(
        "flush",
        lua.create_function(|_, _wait: Option<bool>| {
            request::with("ngx.flush", |r| {
                let phase = phase_of(r);
                if phase != "content" {
                    // Outside a content handler output is sent when the phase ends.
                    return if matches!(phase, "header_filter" | "body_filter" | "log") {
                        Err(rt(format!(
                            "API disabled in the context of {}",
                            context_name(phase)
                        )))
                    } else {
                        Ok(Value::Integer(1))
                    };
                }
                if let Some(tx) = &r.stream {
                    r.streaming = true;
                    for chunk in r.out.drain(..) {
                        let _ = tx.send(chunk);
                    }
                    // The head goes out now: wake the proxy waiting for it.
                    if let Some(h) = r.head_signal.take() {
                        let _ = h.send(());
                    }
                }
                Ok(Value::Integer(1))
            })?
        })?,
    )?;
    ngx.raw_set(
        "eof",
        lua.create_function(|_, ()| {
            request::with("ngx.eof", |r| {
                if r.eof {
                    return 1;
                }
                r.eof = true;
                // In a content handler the response ends now: what was printed goes out with
                // the head, the body is closed, and the handler may go on working (its later
                // output answers `nil, "seen eof"`).
                if phase_of(r) == "content"
                    && let Some(tx) = r.stream.take()
                {
                    r.streaming = true;
                    for chunk in r.out.drain(..) {
                        let _ = tx.send(chunk);
                    }
                    if let Some(h) = r.head_signal.take() {
                        let _ = h.send(());
                    }
                }
                1
            })
        })?,
    )?;
    ngx.raw_set(
        "exit",
        lua.create_async_function(|_, code: Value| async move {
            let code = match code {
                Value::Integer(i) => i,
                Value::Number(n) => n as i64,
                _ => return Err(rt("bad argument #1 to 'exit' (number expected)")),
            };
            let id = sched::current().ok_or_else(|| rt("no request found"))?;
            if let Some(req) = request::try_current() {
                let mut r = req.borrow_mut();
                let phase = phase_of(&r);
                if matches!(phase, "body_filter" | "log") {
                    return Err(rt(format!(
                        "API disabled in the context of {}",
                        context_name(phase)
                    )));
                }
                r.exit = Some(code);
            }
            stop_here(id).await
        })?,
    )?;
    ngx.raw_set(
        "redirect",
        lua.create_async_function(|_, (uri, status): (LuaString, Option<i64>)| async move {
            let status = status.unwrap_or(302);
            if ![301, 302, 303, 307, 308].contains(&status) {
                return Err(rt(format!(
                    "only ngx.HTTP_MOVED_TEMPORARILY, ngx.HTTP_MOVED_PERMANENTLY, ngx.HTTP_PERMANENT_REDIRECT, ngx.HTTP_SEE_OTHER, and ngx.HTTP_TEMPORARY_REDIRECT are allowed, got {status}"
                )));
            }
            let loc = http::HeaderValue::from_bytes(&uri.as_bytes())
                .map_err(|_| rt("ngx.redirect: invalid uri"))?;
            let id = sched::current().ok_or_else(|| rt("no request found"))?;
            request::with("ngx.redirect", |r| {
                r.resp_headers.insert(http::header::LOCATION, loc);
                r.status = status as u16;
                r.exit = Some(status);
            })?;
            stop_here(id).await
        })?,
    )?;
    ngx.raw_set(
        "exec",
        lua.create_function(|_, _: MultiValue| -> mlua::Result<()> {
            Err(rt(
                "ngx.exec is not supported by moongate yet (internal redirects to another location)",
            ))
        })?,
    )?;
    ngx.raw_set(
        "get_phase",
        lua.create_function(|_, ()| {
            Ok(match request::try_current() {
                Some(r) => phase_of(&r.borrow()),
                None if sched::current().is_some() => "timer",
                None => "init_worker",
            })
        })?,
    )?;
    ngx.raw_set(
        "on_abort",
        lua.create_function(|_, _f: mlua::Function| {
            request::with("ngx.on_abort", |_| ())?;
            Ok((Value::Nil, "lua_check_client_abort is off"))
        })?,
    )?;

    // ngx.arg[1] is the body filter's chunk, ngx.arg[2] its end-of-body flag.
    let arg = lua.create_table()?;
    let amt = lua.create_table()?;
    amt.set(
        "__index",
        lua.create_function(|lua, (_, i): (Value, i64)| {
            let r = request::current("ngx.arg")?;
            let r = r.borrow();
            match i {
                1 => lua.create_string(&r.arg_chunk).map(Value::String),
                2 => Ok(Value::Boolean(r.arg_eof)),
                _ => Ok(Value::Nil),
            }
        })?,
    )?;
    amt.set(
        "__newindex",
        lua.create_function(|_, (_, i, v): (Value, i64, Value)| {
            request::with("ngx.arg", |r| {
                if r.ngx_phase != "body_filter" {
                    return Err(rt(format!(
                        "API disabled in the context of {}",
                        context_name(phase_of(r))
                    )));
                }
                match i {
                    1 => {
                        let mut buf = BytesMut::new();
                        flatten(&v, &mut buf, "ngx.arg")?;
                        if matches!(v, Value::Nil) {
                            buf.clear();
                        }
                        r.arg_chunk = Bytes::from(buf);
                    }
                    2 => r.arg_eof = matches!(v, Value::Boolean(true)),
                    _ => return Err(rt("ngx.arg: only [1] and [2] can be set")),
                }
                Ok(())
            })?
        })?,
    )?;
    arg.set_metatable(Some(amt))?;
    ngx.raw_set("arg", arg)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::RequestCtx;

    fn ctx(version: http::Version, connection: Option<&str>) -> RequestCtx {
        let mut headers = http::HeaderMap::new();
        if let Some(c) = connection {
            headers.insert(http::header::CONNECTION, c.parse().unwrap());
        }
        RequestCtx::for_test(1, version, headers)
    }

    #[test]
    fn the_connection_entry_is_nginx_keepalive_decision() {
        use http::Version;
        assert_eq!(connection_entry(&ctx(Version::HTTP_11, None)), "keep-alive");
        assert_eq!(connection_entry(&ctx(Version::HTTP_2, None)), "keep-alive");
        assert_eq!(connection_entry(&ctx(Version::HTTP_10, None)), "close");
        assert_eq!(
            connection_entry(&ctx(Version::HTTP_11, Some("Close"))),
            "close"
        );
        assert_eq!(
            connection_entry(&ctx(Version::HTTP_10, Some("Keep-Alive"))),
            "keep-alive"
        );
        // nginx looks for "close" before "keep-alive".
        assert_eq!(
            connection_entry(&ctx(Version::HTTP_11, Some("keep-alive, close"))),
            "close"
        );
        let mut upgraded = ctx(Version::HTTP_11, Some("upgrade"));
        upgraded.status = 101;
        assert_eq!(connection_entry(&upgraded), "upgrade");
    }
}
