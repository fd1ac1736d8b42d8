//! What APISIX-Runtime's nginx module gives Lua (`resty.apisix.client`, `resty.apisix.response`,
//! `resty.apisix.request`), as hooks into moongate's proxy core: the client address of a request,
//! gzip of its response, and the flag that says a request header changed. Members the proxy core
//! has no equivalent for raise an error naming them.

use std::net::{IpAddr, SocketAddr};

use mlua::{Lua, Table, Value};

use crate::lua::request;

fn unsupported(
    lua: &Lua,
    module: &'static str,
    name: &'static str,
) -> mlua::Result<mlua::Function> {
    lua.create_function(move |_, _: mlua::MultiValue| -> mlua::Result<()> {
        Err(mlua::Error::runtime(format!(
            "{module}.{name} is not supported by moongate yet"
        )))
    })
}

/// `set_real_ip(ip, port?)`: the request's client address becomes `ip` (and `port`), for
/// `$remote_addr`/`$remote_port`, the access log and the `X-Real-IP`/`X-Forwarded-For` sent
/// upstream; `$realip_remote_addr` keeps the connection's. `true`, or `nil, err`.
fn set_real_ip(lua: &Lua) -> mlua::Result<mlua::Function> {
    lua.create_function(|lua, (ip, port): (Value, Option<Value>)| {
        let fail = |msg: String| -> mlua::Result<(Value, Value)> {
            Ok((Value::Nil, Value::String(lua.create_string(&msg)?)))
        };
        let Value::String(ip) = ip else {
            return fail("ip must be a string".into());
        };
        let text = ip.to_string_lossy();
        let Ok(addr) = text.parse::<IpAddr>() else {
            return fail(format!("invalid ip address: {text}"));
        };
        let port = match port {
            None | Some(Value::Nil) => None,
            Some(Value::Integer(p)) if (0..=65535).contains(&p) => Some(p as u16),
            Some(Value::Number(p)) if p.fract() == 0.0 && (0.0..=65535.0).contains(&p) => {
                Some(p as u16)
            }
            Some(other) => {
                return fail(format!(
                    "invalid port: {}",
                    other.to_string().unwrap_or_default()
                ));
            }
        };
        request::with("resty.apisix.client.set_real_ip", |r| {
            r.remote = SocketAddr::new(addr, port.unwrap_or(r.remote.port()));
        })?;
        Ok((Value::Boolean(true), Value::Nil))
    })
}

/// `set_client_max_body_size(bytes)`: the limit of this request's body (0 = none), applied
/// as the body is read or forwarded; over it the client gets 413. `true`, or `nil, err`.
fn set_client_max_body_size(lua: &Lua) -> mlua::Result<mlua::Function> {
    lua.create_function(|lua, size: Value| {
        let bytes = match size {
            Value::Integer(n) if n >= 0 => n as u64,
            Value::Number(n) if n >= 0.0 && n.fract() == 0.0 => n as u64,
            _ => {
                return Ok((
                    Value::Nil,
                    Value::String(lua.create_string("size should be a non-negative integer")?),
                ));
            }
        };
        request::with("resty.apisix.client.set_client_max_body_size", |r| {
            if let Some(limit) = &r.body_limit {
                limit.set(bytes);
            }
        })?;
        Ok((Value::Boolean(true), Value::Nil))
    })
}

/// `set_gzip({buffer_num, buffer_size, compress_level})`: compress this response with gzip at
/// `compress_level` (1–9) when nginx's gzip filter would (see lua-api.md). The buffer settings
/// are accepted and not used: moongate compresses as the body streams.
fn set_gzip(lua: &Lua) -> mlua::Result<mlua::Function> {
    lua.create_function(|lua, opts: Value| {
        let fail = |msg: &str| -> mlua::Result<(Value, Value)> {
            Ok((Value::Nil, Value::String(lua.create_string(msg)?)))
        };
        let Value::Table(opts) = opts else {
            return fail("opts should be a table");
        };
        let level: Option<i64> = opts.get("compress_level")?;
        let level = match level {
            None => 1,
            Some(l) if (1..=9).contains(&l) => l as u32,
            Some(_) => return fail("compress_level should be between 1 and 9"),
        };
        for key in ["buffer_num", "buffer_size"] {
            let v: Option<i64> = opts.get(key)?;
            if v.is_some_and(|n| n < 1) {
                return fail(&format!("{key} should be a positive integer"));
            }
        }
        request::with("resty.apisix.response.set_gzip", |r| {
            r.gzip = Some(level);
        })?;
        Ok((Value::Boolean(true), Value::Nil))
    })
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "resty.apisix.client",
        lua.create_function(|lua, ()| {
            const M: &str = "resty.apisix.client";
            let m = lua.create_table()?;
            m.set("set_real_ip", set_real_ip(lua)?)?;
            m.set("set_client_max_body_size", set_client_max_body_size(lua)?)?;
            m.set(
                "set_proxy_request_buffering",
                unsupported(lua, M, "set_proxy_request_buffering")?,
            )?;
            m.set("enable_mirror", unsupported(lua, M, "enable_mirror")?)?;
            Ok(m)
        })?,
    )?;
    preload.set(
        "resty.apisix.response",
        lua.create_function(|lua, ()| {
            let m = lua.create_table()?;
            m.set("set_gzip", set_gzip(lua)?)?;
            m.set(
                "skip_body_filter_by_lua",
                unsupported(lua, "resty.apisix.response", "skip_body_filter_by_lua")?,
            )?;
            Ok(m)
        })?,
    )?;
    preload.set(
        "resty.apisix.request",
        lua.create_function(|lua, ()| {
            let m = lua.create_table()?;
            m.set(
                "is_request_header_set",
                lua.create_function(|_, ()| {
                    request::with("resty.apisix.request.is_request_header_set", |r| {
                        r.req_headers_set
                    })
                })?,
            )?;
            m.set(
                "clear_request_header",
                lua.create_function(|_, ()| {
                    request::with("resty.apisix.request.clear_request_header", |r| {
                        r.req_headers_set = false;
                    })
                })?,
            )?;
            Ok(m)
        })?,
    )?;
    Ok(())
}
