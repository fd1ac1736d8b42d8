//! Encoding and digest functions: `ngx.escape_uri`, `unescape_uri`, `encode_args`, `decode_args`,
//! `encode_base64`, `decode_base64`, `require("ngx.base64")`, `md5`, `md5_bin`, `sha1_bin`,
//! `hmac_sha1`, `crc32_short`, `crc32_long`, `quote_sql_str`, and `ngx.null`.
//!
//! Outputs were checked against OpenResty's lua-nginx-module 0.10.23 on the same inputs.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use hmac::Mac;
use md5::Digest as _;
use mlua::{IntoLuaMulti, LightUserData, Lua, LuaString, Table, Value};

/// Bytes `escape_uri` leaves alone in the default mode (2, a URI component).
fn component_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'_' | b'.' | b'~' | b'!' | b'*' | b'\'' | b'(' | b')'
        )
}

/// Bytes escaped in mode 0 (a whole URI, nginx's NGX_ESCAPE_URI): space, `#`, `%`, `?`,
/// controls and non-ASCII. `"` stays as it is in this mode.
fn uri_unsafe(b: u8) -> bool {
    b <= 0x20 || b >= 0x7f || matches!(b, b'#' | b'%' | b'?')
}

pub fn escape_uri(s: &[u8], mode: i64) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    for &b in s {
        let escape = if mode == 0 {
            uri_unsafe(b)
        } else {
            !component_safe(b)
        };
        if escape {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.push(b);
        }
    }
    out
}

/// `%XX` decoded and `+` as a space; malformed escapes are kept as they are.
pub fn unescape_uri(s: &[u8]) -> Vec<u8> {
    crate::uri::unescape(s).into_owned()
}

fn arg_piece(v: &Value) -> mlua::Result<Option<Vec<u8>>> {
    Ok(match v {
        Value::String(s) => Some(escape_uri(&s.as_bytes(), 2)),
        Value::Integer(i) => Some(i.to_string().into_bytes()),
        Value::Number(n) => Some(crate::lua::lib::cjson::fmt_g(*n, 14).into_bytes()),
        _ => None,
    })
}

/// lua-nginx-module's wording for a value `encode_args` cannot put in a query string.
fn bad_arg_value(v: &Value) -> mlua::Error {
    mlua::Error::runtime(format!(
        "attempt to use {} as query arg value",
        v.type_name()
    ))
}

fn encode_args(lua: &Lua, t: Table) -> mlua::Result<LuaString> {
    let mut out: Vec<u8> = Vec::new();
    let mut push = |k: &[u8], v: Option<&[u8]>| {
        if !out.is_empty() {
            out.push(b'&');
        }
        out.extend_from_slice(k);
        if let Some(v) = v {
            out.push(b'=');
            out.extend_from_slice(v);
        }
    };
    for pair in t.pairs::<Value, Value>() {
        let (k, v) = pair?;
        let key = match arg_piece(&k)? {
            Some(k) => k,
            None => {
                return Err(mlua::Error::runtime(
                    "attempt to use a non-string key in encode_args",
                ));
            }
        };
        match &v {
            Value::Boolean(true) => push(&key, None),
            Value::Boolean(false) => {}
            Value::Table(list) => {
                // Every value of the inner table is one more `key=value`; only scalars fit.
                for item in list.pairs::<Value, Value>() {
                    match item?.1 {
                        Value::Boolean(true) => push(&key, None),
                        Value::Boolean(false) => {}
                        other => match arg_piece(&other)? {
                            Some(p) => push(&key, Some(&p)),
                            None => return Err(bad_arg_value(&other)),
                        },
                    }
                }
            }
            other => match arg_piece(other)? {
                Some(p) => push(&key, Some(&p)),
                None => return Err(bad_arg_value(other)),
            },
        }
    }
    lua.create_string(&out)
}

/// `ngx.decode_args(str, max)`: repeated keys become lists, a bare key is `true`; at most `max`
/// arguments (100 by default, 0 = no limit), then `"truncated"` as the second value.
pub fn decode_args(lua: &Lua, s: &[u8], max: usize) -> mlua::Result<(Table, Option<&'static str>)> {
    let t = lua.create_table()?;
    let mut n = 0usize;
    for part in s.split(|b| *b == b'&') {
        // nginx's argument parser drops `=value` pieces that have no key.
        if part.is_empty() || part[0] == b'=' {
            continue;
        }
        if max > 0 && n >= max {
            return Ok((t, Some("truncated")));
        }
        n += 1;
        let (k, v) = match part.iter().position(|b| *b == b'=') {
            Some(i) => (&part[..i], Some(&part[i + 1..])),
            None => (part, None),
        };
        let key = lua.create_string(unescape_uri(k))?;
        let val = match v {
            Some(v) => Value::String(lua.create_string(unescape_uri(v))?),
            None => Value::Boolean(true),
        };
        match t.raw_get::<Value>(key.clone())? {
            Value::Nil => t.raw_set(key, val)?,
            Value::Table(list) => list.raw_push(val)?,
            prev => {
                let list = lua.create_sequence_from([prev, val])?;
                t.raw_set(key, list)?;
            }
        }
    }
    Ok((t, None))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// lua-nginx-module escapes like MySQL: `\0 \b \n \r \t \Z \\ \' \"`.
fn quote_sql(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'\'');
    for &b in s {
        match b {
            0 => out.extend_from_slice(b"\\0"),
            0x08 => out.extend_from_slice(b"\\b"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x1a => out.extend_from_slice(b"\\Z"),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\'' => out.extend_from_slice(b"\\'"),
            b'"' => out.extend_from_slice(b"\\\""),
            c => out.push(c),
        }
    }
    out.push(b'\'');
    out
}

fn bytes_arg(v: Value, func: &str) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(i) => Ok(i.to_string().into_bytes()),
        Value::Number(n) => Ok(crate::lua::lib::cjson::fmt_g(n, 14).into_bytes()),
        Value::Nil => Ok(Vec::new()),
        other => Err(mlua::Error::runtime(format!(
            "bad argument #1 to '{func}' (string expected, got {})",
            other.type_name()
        ))),
    }
}

pub fn register(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    ngx.set(
        "null",
        Value::LightUserData(LightUserData(std::ptr::null_mut())),
    )?;
    ngx.set(
        "escape_uri",
        lua.create_function(|lua, (s, mode): (Value, Option<i64>)| {
            lua.create_string(escape_uri(&bytes_arg(s, "escape_uri")?, mode.unwrap_or(2)))
        })?,
    )?;
    ngx.set(
        "unescape_uri",
        lua.create_function(|lua, s: Value| {
            lua.create_string(unescape_uri(&bytes_arg(s, "unescape_uri")?))
        })?,
    )?;
    ngx.set(
        "encode_args",
        lua.create_function(|lua, t: Table| encode_args(lua, t))?,
    )?;
    ngx.set(
        "decode_args",
        lua.create_function(|lua, (s, max): (Value, Option<usize>)| {
            let (t, err) = decode_args(lua, &bytes_arg(s, "decode_args")?, max.unwrap_or(100))?;
            (t, err).into_lua_multi(lua)
        })?,
    )?;
    ngx.set(
        "encode_base64",
        lua.create_function(|lua, (s, no_pad): (Value, Option<bool>)| {
            let b = bytes_arg(s, "encode_base64")?;
            let e = if no_pad.unwrap_or(false) {
                STANDARD_NO_PAD.encode(b)
            } else {
                STANDARD.encode(b)
            };
            lua.create_string(e)
        })?,
    )?;
    ngx.set(
        "decode_base64",
        lua.create_function(|lua, s: Value| {
            let b = bytes_arg(s, "decode_base64")?;
            // OpenResty accepts input with or without padding; anything else is nil. nginx's
            // decoder stops at the first `=`, ignoring whatever follows it.
            let b = match b.iter().position(|&c| c == b'=') {
                Some(i) => &b[..i],
                None => &b[..],
            };
            let decoded = STANDARD_NO_PAD.decode(b);
            match decoded {
                Ok(d) => Ok(Value::String(lua.create_string(d)?)),
                Err(_) => Ok(Value::Nil),
            }
        })?,
    )?;
    ngx.set(
        "md5",
        lua.create_function(|_, s: Value| Ok(hex(&md5::Md5::digest(bytes_arg(s, "md5")?))))?,
    )?;
    ngx.set(
        "md5_bin",
        lua.create_function(|lua, s: Value| {
            lua.create_string(md5::Md5::digest(bytes_arg(s, "md5_bin")?))
        })?,
    )?;
    ngx.set(
        "sha1_bin",
        lua.create_function(|lua, s: Value| {
            lua.create_string(sha1::Sha1::digest(bytes_arg(s, "sha1_bin")?))
        })?,
    )?;
    ngx.set(
        "hmac_sha1",
        lua.create_function(|lua, (key, s): (Value, Value)| {
            let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&bytes_arg(key, "hmac_sha1")?)
                .map_err(|e| mlua::Error::runtime(e.to_string()))?;
            mac.update(&bytes_arg(s, "hmac_sha1")?);
            lua.create_string(mac.finalize().into_bytes())
        })?,
    )?;
    let crc = lua.create_function(|_, s: Value| Ok(crc32fast::hash(&bytes_arg(s, "crc32")?)))?;
    ngx.set("crc32_short", crc.clone())?;
    ngx.set("crc32_long", crc)?;
    ngx.set(
        "quote_sql_str",
        lua.create_function(|lua, s: Value| {
            lua.create_string(quote_sql(&bytes_arg(s, "quote_sql_str")?))
        })?,
    )?;

    let b64 = lua.create_table()?;
    b64.set(
        "encode_base64url",
        lua.create_function(|lua, s: Value| {
            lua.create_string(URL_SAFE_NO_PAD.encode(bytes_arg(s, "encode_base64url")?))
        })?,
    )?;
    b64.set(
        "decode_base64url",
        lua.create_function(|lua, s: Value| {
            match URL_SAFE_NO_PAD.decode(bytes_arg(s, "decode_base64url")?) {
                Ok(d) => Ok(Value::String(lua.create_string(d)?)),
                Err(_) => Ok(Value::Nil),
            }
        })?,
    )?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("ngx.base64", b64)?;
    Ok(())
}
