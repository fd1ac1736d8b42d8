//! The request API: `ngx.var`, `ngx.ctx` and `ngx.req.*`, acting on the current request.
//!
//! Header tables follow lua-nginx-module: names lower-cased (unless `raw`), repeated headers as
//! lists, at most `max_headers` (100 by default, 0 = no limit, see `header_limit`) with
//! `"truncated"` as the second value, and a metatable that finds `Content_Type` or
//! `content-type` alike.

use bytes::{Bytes, BytesMut};
use http::{HeaderName, HeaderValue, Method};
use mlua::{IntoLuaMulti, Lua, LuaString, MultiValue, Table, Value};

use crate::lua::ngx::codec;
use crate::lua::raw::{self, Args, Pairs, Ret, Rets, Ty};
use crate::lua::request::{self, SharedReq};
use crate::plugin::ctx::ReqBody;

/// lua-nginx-module's method constants, as `ngx.req.set_method` takes them.
const METHODS: &[(i64, &str)] = &[
    (0x0002, "GET"),
    (0x0004, "HEAD"),
    (0x0008, "POST"),
    (0x0010, "PUT"),
    (0x0020, "DELETE"),
    (0x0040, "MKCOL"),
    (0x0080, "COPY"),
    (0x0100, "MOVE"),
    (0x0200, "OPTIONS"),
    (0x0400, "PROPFIND"),
    (0x0800, "PROPPATCH"),
    (0x1000, "LOCK"),
    (0x2000, "UNLOCK"),
    (0x4000, "PATCH"),
    (0x8000, "TRACE"),
];

fn rt(msg: impl Into<String>) -> mlua::Error {
    mlua::Error::runtime(msg.into())
}

/// A Lua value as header value(s): strings, numbers, or a list of them; `nil` clears.
pub fn header_values(v: &Value, api: &str) -> mlua::Result<Option<Vec<HeaderValue>>> {
    let one = |v: &Value| -> mlua::Result<HeaderValue> {
        let bytes: Vec<u8> = match v {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Integer(i) => i.to_string().into_bytes(),
            Value::Number(n) => crate::lua::lib::cjson::fmt_g(*n, 14).into_bytes(),
            Value::Boolean(b) => b.to_string().into_bytes(),
            other => {
                return Err(rt(format!(
                    "{api}: bad header value type: {}",
                    other.type_name()
                )));
            }
        };
        // nginx refuses CR/LF in header values: a way to inject headers.
        HeaderValue::from_bytes(&bytes).map_err(|_| rt(format!("{api}: invalid header value")))
    };
    match v {
        Value::Nil => Ok(None),
        Value::Table(t) => {
            let mut out = Vec::new();
            for x in t.sequence_values::<Value>() {
                out.push(one(&x?)?);
            }
            Ok(Some(out))
        }
        other => Ok(Some(vec![one(other)?])),
    }
}

pub fn header_name(name: &LuaString, api: &str) -> mlua::Result<HeaderName> {
    HeaderName::from_bytes(&name.as_bytes()).map_err(|_| {
        rt(format!(
            "{api}: invalid header name {:?}",
            name.to_string_lossy()
        ))
    })
}

/// A header table the way `ngx.req.get_headers` and `ngx.resp.get_headers` return it, for a
/// raw C function whose upvalue 1 is the metatable of non-raw tables: names lower-case (as
/// they are kept) or, with `raw`, as the client most likely wrote them; at most `max` (0 = no
/// limit) with `"truncated"` after the table when there were more.
pub fn headers_rets(headers: &http::HeaderMap, max: usize, raw: bool) -> Rets {
    headers_rets_with(&[], headers, max, raw)
}

/// [`headers_rets`] with `extra` entries first (lower-case names, raw or not), counted against
/// `max` before the headers, as lua-nginx-module adds the ones it takes from nginx's own state.
pub fn headers_rets_with(
    extra: &[(&str, &str)],
    headers: &http::HeaderMap,
    max: usize,
    raw: bool,
) -> Rets {
    let take = if max > 0 { max } else { usize::MAX };
    let total = extra.len() + headers.len();
    let mut pairs = Pairs::with_capacity(total.min(take));
    for (n, v) in extra.iter().take(take) {
        pairs.push(n.as_bytes(), v.as_bytes());
    }
    for (n, v) in headers.iter().take(take.saturating_sub(extra.len())) {
        if raw {
            pairs.push(canonical_case(n.as_str()).as_bytes(), v.as_bytes());
        } else {
            pairs.push(n.as_str().as_bytes(), v.as_bytes());
        }
    }
    let t = Ret::Headers(pairs, (!raw).then_some(1));
    if total > take {
        Rets::two(t, Ret::Static("truncated"))
    } else {
        Rets::one(t)
    }
}

/// The `max_headers` and `raw` arguments of `ngx.req.get_headers` (`ffi_limit`, read as
/// lua-resty-core's FFI function reads them: [`header_limit`]) and `ngx.resp.get_headers` (a
/// C function in lua-nginx-module: a negative number is no limit). Not a number: 100. `raw`
/// by truthiness in both.
pub fn headers_args(args: &Args, ffi_limit: bool) -> (usize, bool) {
    let max = args
        .number(1)
        .map(|n| {
            if ffi_limit {
                header_limit(n)
            } else {
                n.max(0.0) as usize
            }
        })
        .unwrap_or(100);
    let raw = match args.ty(2) {
        Ty::Nil | Ty::None => false,
        Ty::Bool => args.bool(2).unwrap_or(false),
        _ => true,
    };
    (max, raw)
}

/// How many headers `get_headers(max)` returns (0: all), as lua-nginx-module reads
/// `max_headers`, a C `int`: a negative number is the default, 100, and so is one no `int`
/// holds (NaN, 1e300: LuaJIT converts them to the lowest `int`); a fraction is cut.
pub fn header_limit(max: f64) -> usize {
    if (0.0..2_147_483_648.0).contains(&max) {
        max as usize
    } else {
        100
    }
}

/// The metatable of non-raw header tables (`h.content_type`, `h["Content-Type"]`).
pub fn header_metatable(lua: &Lua) -> mlua::Result<Table> {
    let mt = lua.create_table()?;
    mt.set("__index", header_normalizer(lua)?)?;
    Ok(mt)
}

/// A header value argument of a raw function: a string, number or boolean, or a list of them;
/// `None` for `nil` (clear).
pub fn raw_header_values(args: &Args, i: i32, api: &str) -> Result<Option<HeaderValues>, String> {
    let one = |bytes: &[u8]| {
        // nginx refuses CR/LF in header values: a way to inject headers.
        HeaderValue::from_bytes(bytes).map_err(|_| format!("{api}: invalid header value"))
    };
    let bad = |ty: Ty| format!("{api}: bad header value type: {}", ty.name());
    match args.ty(i) {
        Ty::Nil | Ty::None => Ok(None),
        // Counters and lengths: integral numbers without going through text.
        Ty::Number
            if args
                .number(i)
                .is_some_and(|n| n.fract() == 0.0 && n.abs() < 1e15) =>
        {
            Ok(Some(HeaderValues::One(HeaderValue::from(
                args.number(i).unwrap_or(0.0) as i64,
            ))))
        }
        Ty::Table => {
            let items = args.text_list(i).map_err(bad)?;
            items
                .iter()
                .map(|v| one(v))
                .collect::<Result<_, _>>()
                .map(|vs| Some(HeaderValues::Many(vs)))
        }
        ty => match args.text(i) {
            Some(v) => Ok(Some(HeaderValues::One(one(&v)?))),
            None => Err(bad(ty)),
        },
    }
}

/// What a header is set to: one value (the common case: no list to allocate) or a list.
pub enum HeaderValues {
    One(HeaderValue),
    Many(Vec<HeaderValue>),
}

impl HeaderValues {
    /// Replaces the values `name` has in `map` with these (an empty list removes it).
    pub fn set_in(self, map: &mut http::HeaderMap, name: &HeaderName) {
        match self {
            // `insert` replaces every value the name had: one hash of the name, not two.
            HeaderValues::One(v) => {
                map.insert(name.clone(), v);
            }
            HeaderValues::Many(vs) => {
                map.remove(name);
                for v in vs {
                    map.append(name.clone(), v);
                }
            }
        }
    }
}

/// A header name argument of a raw function (with `_` read as `-` when `underscores`).
pub fn raw_header_name(
    args: &Args,
    i: i32,
    api: &str,
    underscores: bool,
) -> Result<HeaderName, String> {
    let Some(name) = args.text(i) else {
        return Err(format!(
            "bad argument #{i} to '{api}' (string expected, got {})",
            args.ty(i).name()
        ));
    };
    header_name_of(&name, api, underscores)
}

/// [`raw_header_name`] of a name's bytes.
pub fn header_name_of(name: &[u8], api: &str, underscores: bool) -> Result<HeaderName, String> {
    let fixed;
    let bytes: &[u8] = if underscores && name.contains(&b'_') {
        fixed = name
            .iter()
            .map(|&b| if b == b'_' { b'-' } else { b })
            .collect::<Vec<u8>>();
        &fixed
    } else {
        name
    };
    cached_header_name(bytes).ok_or_else(|| {
        format!(
            "{api}: invalid header name {:?}",
            String::from_utf8_lossy(bytes)
        )
    })
}

/// Header names plugins use, parsed once per worker: parsing a non-standard name lower-cases
/// and copies it each time, and plugins set the same few names on every request.
fn cached_header_name(bytes: &[u8]) -> Option<HeaderName> {
    const MAX: usize = 512;
    thread_local! {
        static PARSED: std::cell::RefCell<rustc_hash::FxHashMap<Box<[u8]>, HeaderName>> =
            std::cell::RefCell::new(Default::default());
    }
    if let Some(n) = PARSED.with(|c| c.borrow().get(bytes).cloned()) {
        return Some(n);
    }
    let n = HeaderName::from_bytes(bytes).ok()?;
    PARSED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MAX {
            c.clear();
        }
        c.insert(bytes.into(), n.clone());
    });
    Some(n)
}

/// The method as a static string, for the common ones.
fn method_text(m: &Method) -> Ret {
    let known = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
        Method::TRACE,
        Method::CONNECT,
    ];
    const NAMES: [&str; 9] = [
        "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "TRACE", "CONNECT",
    ];
    match known.iter().position(|k| k == m) {
        Some(i) => Ret::Static(NAMES[i]),
        None => Ret::Str(m.as_str().as_bytes().to_vec()),
    }
}

crate::raw_fn!(var_index, |args| {
    let Some(name) = args.str(2) else {
        return Ok(Ret::Nil.into());
    };
    let name =
        std::str::from_utf8(name).map_err(|_| "ngx.var: invalid variable name".to_string())?;
    request::with_raw("ngx.var", |r| {
        match r.var(name) {
            Some(v) => Ret::Str(v.into_owned().into_bytes()),
            None => Ret::Nil,
        }
        .into()
    })
});

crate::raw_fn!(req_get_headers, |args| {
    let (max, raw) = headers_args(args, true);
    request::with_raw("ngx.req.get_headers", |r| {
        headers_rets(r.headers(), max, raw)
    })
});

crate::raw_fn!(req_get_method, |_| {
    request::with_raw("ngx.req.get_method", |r| method_text(&r.method).into())
});

crate::raw_fn!(req_set_header, |args| {
    let n = raw_header_name(args, 1, "ngx.req.set_header", false)?;
    let mut vals = raw_header_values(args, 2, "ngx.req.set_header")?;
    // As nginx's header helper: a single empty value removes the header, it does not send an
    // empty one.
    if args.str(2).is_some_and(|v| v.is_empty()) {
        vals = None;
    }
    request::with_raw("ngx.req.set_header", |r| set_request_header(r, &n, vals))?;
    Ok(Rets::none())
});

/// What `ngx.req.set_header` does to the request once its arguments are read (`None` clears).
pub fn set_request_header(
    r: &mut crate::plugin::RequestCtx,
    n: &HeaderName,
    vals: Option<HeaderValues>,
) {
    r.req_headers_set = true;
    match vals {
        Some(v) => v.set_in(r.headers_mut_for(n), n),
        None => {
            r.headers_mut_for(n).remove(n);
        }
    }
    if n == http::header::HOST
        && let Some(h) = r.header(n.as_str())
    {
        r.host = String::from_utf8_lossy(h.as_bytes()).to_ascii_lowercase();
    }
}

// `first(name)` of the internal `moongate.headers` module: the first value of request header
// `name` as `ngx.req.get_headers()[name]` finds it (a lower-case name as it is, then with `_`
// read as `-`; any other name lower-cased with `_` read as `-`, as the table's metatable does),
// without making the table of every header: apisix.core.request.header asks for one header,
// and building the whole table was most of an auth plugin's cost per request.
crate::raw_fn!(req_header_first, |args| {
    let Some(name) = args.str(1) else {
        return Err(format!(
            "bad argument #1 to 'first' (string expected, got {})",
            args.ty(1).name()
        ));
    };
    request::with_raw("ngx.req.get_headers", |r| {
        let (headers, arrival) = r.headers_and_arrival();
        Rets::one(
            first_header(headers, arrival, name)
                .map(|v| Ret::Str(v.as_bytes().to_vec()))
                .unwrap_or(Ret::Nil),
        )
    })
});

/// The first value of request header `name` as `moongate.headers.first` finds it.
/// `arrival`: the forwarding fields set on arrival not yet among `headers`
/// (`RequestCtx::headers_and_arrival`).
pub fn first_header<'a>(
    headers: &'a http::HeaderMap,
    arrival: Option<&'a crate::proxy::headers::Observed>,
    name: &[u8],
) -> Option<&'a HeaderValue> {
    let lower = !name.iter().any(u8::is_ascii_uppercase);
    let normalized = || -> Vec<u8> {
        name.iter()
            .map(|&b| {
                if b == b'_' {
                    b'-'
                } else {
                    b.to_ascii_lowercase()
                }
            })
            .collect()
    };
    let value = |n: &[u8]| {
        cached_header_name(n).and_then(|n| {
            headers
                .get(&n)
                .or_else(|| arrival.and_then(|o| o.field(n.as_str()).flatten()))
        })
    };
    if lower {
        value(name).or_else(|| {
            if name.contains(&b'_') {
                value(&normalized())
            } else {
                None
            }
        })
    } else {
        value(&normalized())
    }
}

crate::raw_fn!(req_clear_header, |args| {
    let n = raw_header_name(args, 1, "ngx.req.clear_header", false)?;
    request::with_raw("ngx.req.clear_header", |r| {
        r.req_headers_set = true;
        r.headers_mut_for(&n).remove(&n);
    })?;
    Ok(Rets::none())
});

/// `content-type` as the client most likely wrote it (`Content-Type`): HTTP/1 header names
/// reach us lower-cased, so `raw` tables give the canonical capitalisation.
fn canonical_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut up = true;
    for c in name.chars() {
        out.push(if up { c.to_ascii_uppercase() } else { c });
        up = c == '-';
    }
    out
}

/// Reads the whole client body into memory (`ngx.req.read_body`).
pub async fn read_body(req: &SharedReq) -> Result<(), String> {
    // The body enforces `client_max_body_size` and `client_body_timeout` itself.
    let body = {
        let mut r = req.borrow_mut();
        match std::mem::replace(&mut r.body, ReqBody::Discarded) {
            ReqBody::Unread(Some(b)) => b,
            ReqBody::Unread(None) => {
                r.body = ReqBody::Unread(None);
                return Ok(());
            }
            other => {
                r.body = other;
                return Ok(());
            }
        }
    };
    use http_body_util::BodyExt;
    let mut buf = BytesMut::new();
    let mut body = body;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(f)) => {
                if let Some(d) = f.data_ref() {
                    buf.extend_from_slice(d);
                }
            }
            Some(Err(e)) => {
                // The body's own limits (size, timeout) tripped: nothing usable was read.
                req.borrow_mut().body = ReqBody::Discarded;
                return Err(e.to_string());
            }
        }
    }
    req.borrow_mut().body = ReqBody::Read(buf.freeze());
    Ok(())
}

/// The `__index` of header tables: `t.Content_Type`, `t["Content-Type"]` and
/// `t["content-type"]` all find `content-type`.
pub fn header_normalizer(lua: &Lua) -> mlua::Result<mlua::Function> {
    lua.load(
        r#"return function(t, k)
            if type(k) ~= "string" then return nil end
            local n = k:lower():gsub("_", "-")
            if n ~= k then return rawget(t, n) end
        end"#,
    )
    .set_name("=moongate/headers.lua")
    .eval()
}

pub fn register(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    // ngx.var
    let var = lua.create_table()?;
    let var_mt = lua.create_table()?;
    var_mt.set("__index", raw::function(lua, var_index, ())?)?;
    var_mt.set(
        "__newindex",
        lua.create_function(|_, (_, name, value): (Value, LuaString, Value)| {
            let name = name.to_str()?;
            let r = request::with("ngx.var", |r| match &value {
                Value::Nil => r.unset_var(&name),
                Value::String(s) => r.set_var(&name, &s.to_string_lossy()),
                Value::Integer(i) => r.set_var(&name, &i.to_string()),
                Value::Number(n) => r.set_var(&name, &crate::lua::lib::cjson::fmt_g(*n, 14)),
                other => Err(format!(
                    "bad variable value type \"{}\" for \"{name}\"",
                    other.type_name()
                )),
            })?;
            r.map_err(rt)
        })?,
    )?;
    var.set_metatable(Some(var_mt))?;
    ngx.raw_set("var", var)?;

    let req = lua.create_table()?;
    req.set(
        "get_headers",
        raw::function(lua, req_get_headers, header_metatable(lua)?)?,
    )?;
    req.set("set_header", raw::function(lua, req_set_header, ())?)?;
    // `require("ngx.req").add_header`: lua-resty-core's append (not replace) of a request
    // header, which APISIX's core.request.add_header uses.
    let add_header = lua.create_function(|_, (name, value): (LuaString, Value)| {
        let n = header_name(&name, "ngx.req.add_header")?;
        let vals = header_values(&value, "ngx.req.add_header")?;
        request::with("ngx.req.add_header", |r| {
            r.req_headers_set = true;
            for v in vals.into_iter().flatten() {
                r.headers_mut_for(&n).append(n.clone(), v);
            }
        })
    })?;
    let headers = lua.create_table()?;
    headers.set("first", raw::function(lua, req_header_first, ())?)?;
    let module = lua.create_table()?;
    module.set("add_header", add_header)?;
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "ngx.req",
        lua.create_function(move |_, ()| Ok(module.clone()))?,
    )?;
    preload.set(
        "moongate.headers",
        lua.create_function(move |_, ()| Ok(headers.clone()))?,
    )?;
    req.set("clear_header", raw::function(lua, req_clear_header, ())?)?;
    req.set(
        "get_uri_args",
        lua.create_function(|lua, max: Option<i64>| {
            let args = request::with("ngx.req.get_uri_args", |r| r.args.clone())?;
            let (t, trunc) =
                codec::decode_args(lua, args.as_bytes(), max.unwrap_or(100).max(0) as usize)?;
            (t, trunc).into_lua_multi(lua)
        })?,
    )?;
    let encode_args: mlua::Function = ngx.get("encode_args")?;
    req.set(
        "set_uri_args",
        lua.create_function(move |_, args: Value| {
            let s: String = match args {
                Value::String(s) => s.to_str()?.to_string(),
                Value::Table(t) => encode_args.call::<LuaString>(t)?.to_str()?.to_string(),
                Value::Nil => String::new(),
                other => {
                    return Err(rt(format!(
                        "bad argument #1 to 'set_uri_args' (string or table expected, got {})",
                        other.type_name()
                    )));
                }
            };
            request::with("ngx.req.set_uri_args", |r| {
                r.args = s;
                r.args_changed = true;
            })
        })?,
    )?;
    req.set(
        "set_uri",
        lua.create_function(|_, (uri, jump, _binary): (LuaString, Option<bool>, Option<bool>)| {
            if jump == Some(true) {
                return Err(rt(
                    "ngx.req.set_uri: jump = true (an internal redirect) is not supported by moongate",
                ));
            }
            let uri = uri.to_str()?.to_string();
            if uri.is_empty() {
                return Err(rt("attempt to use zero-length uri"));
            }
            request::with("ngx.req.set_uri", |r| {
                r.uri = uri;
                r.uri_changed = true;
            })
        })?,
    )?;
    req.set("get_method", raw::function(lua, req_get_method, ())?)?;
    req.set(
        "set_method",
        lua.create_function(|_, m: i64| {
            let Some((_, name)) = METHODS.iter().find(|(c, _)| *c == m) else {
                return Err(rt(format!("unsupported HTTP method: {m}")));
            };
            let method = Method::from_bytes(name.as_bytes()).map_err(|e| rt(e.to_string()))?;
            request::with("ngx.req.set_method", |r| r.method = method)
        })?,
    )?;
    req.set(
        "http_version",
        lua.create_function(|_, ()| {
            request::with("ngx.req.http_version", |r| match r.version {
                http::Version::HTTP_09 => 0.9,
                http::Version::HTTP_10 => 1.0,
                http::Version::HTTP_2 => 2.0,
                http::Version::HTTP_3 => 3.0,
                _ => 1.1,
            })
        })?,
    )?;
    req.set(
        "raw_header",
        lua.create_function(|lua, no_request_line: Option<bool>| {
            let s = request::with("ngx.req.raw_header", |r| {
                let mut s = String::new();
                if no_request_line != Some(true) {
                    s.push_str(&format!(
                        "{} {} {}\r\n",
                        r.method,
                        r.request_uri,
                        crate::plugin::ctx::protocol(r.version)
                    ));
                }
                for (n, v) in r.headers() {
                    s.push_str(&canonical_case(n.as_str()));
                    s.push_str(": ");
                    s.push_str(&String::from_utf8_lossy(v.as_bytes()));
                    s.push_str("\r\n");
                }
                s.push_str("\r\n");
                s
            })?;
            lua.create_string(&s)
        })?,
    )?;
    req.set(
        "start_time",
        lua.create_function(|_, ()| {
            request::with("ngx.req.start_time", |r| {
                r.start_wall
                    .duration_since(std::time::SystemTime::UNIX_EPOCH)
                    .map(|d| (d.as_millis() as f64) / 1000.0)
                    .unwrap_or(0.0)
            })
        })?,
    )?;
    req.set(
        "is_internal",
        lua.create_function(|_, ()| request::with("ngx.req.is_internal", |_| false))?,
    )?;
    req.set(
        "read_body",
        lua.create_async_function(|_, ()| async move {
            let r = request::current("ngx.req.read_body")?;
            read_body(&r).await.map_err(rt)
        })?,
    )?;
    req.set(
        "discard_body",
        lua.create_function(|_, ()| {
            request::with("ngx.req.discard_body", |r| r.body = ReqBody::Discarded)
        })?,
    )?;
    req.set(
        "get_body_data",
        lua.create_function(|lua, max: Option<usize>| {
            let data = request::with("ngx.req.get_body_data", |r| match &r.body {
                ReqBody::Read(b) => Some(b.clone()),
                _ => None,
            })?;
            match data {
                Some(b) if !b.is_empty() => {
                    let b = match max {
                        Some(m) if m > 0 && m < b.len() => b.slice(..m),
                        _ => b,
                    };
                    lua.create_string(&b).map(Value::String)
                }
                _ => Ok(Value::Nil),
            }
        })?,
    )?;
    // Bodies are kept in memory whatever their size, so there is never a body file.
    req.set(
        "get_body_file",
        lua.create_function(|_, ()| {
            request::with("ngx.req.get_body_file", |_| ())?;
            Ok(Value::Nil)
        })?,
    )?;
    req.set(
        "set_body_data",
        lua.create_function(|_, data: LuaString| {
            let b = Bytes::copy_from_slice(&data.as_bytes());
            request::with("ngx.req.set_body_data", |r| r.body = ReqBody::Read(b))
        })?,
    )?;
    req.set(
        "set_body_file",
        lua.create_function(|_, (path, _auto_clean): (String, Option<bool>)| {
            let data = std::fs::read(&path)
                .map_err(|e| rt(format!("ngx.req.set_body_file: cannot read {path}: {e}")))?;
            request::with("ngx.req.set_body_file", |r| {
                r.body = ReqBody::Read(Bytes::from(data))
            })
        })?,
    )?;
    req.set(
        "init_body",
        lua.create_function(|_, _size: Option<usize>| {
            request::with("ngx.req.init_body", |r| {
                r.body = ReqBody::Read(Bytes::new())
            })
        })?,
    )?;
    req.set(
        "append_body",
        lua.create_function(|_, data: LuaString| {
            request::with("ngx.req.append_body", |r| {
                let mut b = match &r.body {
                    ReqBody::Read(b) => BytesMut::from(&b[..]),
                    _ => BytesMut::new(),
                };
                b.extend_from_slice(&data.as_bytes());
                r.body = ReqBody::Read(b.freeze());
            })
        })?,
    )?;
    req.set(
        "finish_body",
        lua.create_function(|_, ()| request::with("ngx.req.finish_body", |_| ()))?,
    )?;
    req.set(
        "get_post_args",
        lua.create_function(|lua, max: Option<i64>| {
            let body = request::with("ngx.req.get_post_args", |r| match &r.body {
                ReqBody::Read(b) => Ok(b.clone()),
                ReqBody::Unread(None) | ReqBody::Discarded => Ok(Bytes::new()),
                ReqBody::Unread(Some(_)) => Err(()),
            })?;
            match body {
                Err(()) => Err(rt(
                    "request body not read yet: call ngx.req.read_body() first",
                )),
                Ok(b) => {
                    let (t, trunc) =
                        codec::decode_args(lua, &b, max.unwrap_or(100).max(0) as usize)?;
                    (t, trunc).into_lua_multi(lua)
                }
            }
        })?,
    )?;
    req.set(
        "socket",
        lua.create_function(|_, _: MultiValue| -> mlua::Result<()> {
            Err(rt("ngx.req.socket is not supported by moongate yet"))
        })?,
    )?;
    ngx.set("req", req)?;
    Ok(())
}
