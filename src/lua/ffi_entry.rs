//! LuaJIT FFI entry points for the hottest request functions (`ngx.req.get_headers`, ...).
//!
//! Why: a call from Lua into a raw C function (`lua::raw`) cannot be compiled into a JIT trace
//! and builds its results through the Lua C API (a `lua_pushlstring` and a `lua_rawset` per
//! header). An FFI call is compiled into the trace of the Lua code that makes it, and the Lua
//! side makes its strings with `ffi.string` from bytes Rust left in memory it owns. The Lua
//! wrappers (`ffi_entry.lua`) are installed over the raw functions at VM setup; they keep the
//! raw functions for every case the fast path does not take (no request, a timer, arguments of
//! unusual types, results too big for the scratch buffers), so errors and rare forms behave
//! exactly as before.
//!
//! Soundness, whoever calls these functions and with whatever arguments (a plugin can reach the
//! function pointers through `debug`):
//! - they never unwind: each body runs under `catch_unwind`, and a failure of any kind is a
//!   status (or a null result) that makes the wrapper call the raw function instead;
//! - they take no pointer from Lua except a string with its length, read only within that
//!   length and only during the call;
//! - results are left in per-thread scratch buffers that are allocated once and never moved or
//!   freed while the thread runs. A Lua wrapper reads them right after the call, before calling
//!   into Rust again; a nested call (from a `__gc` finalizer running during an allocation of the
//!   reading loop) may overwrite them, which can mix fields of two results but never leads a
//!   read out of bounds: every offset a pointer field holds is below `BYTES` and every length
//!   at most `BYTES`, in a buffer of `2 * BYTES`.

use std::cell::UnsafeCell;
use std::ffi::c_int;
use std::panic::AssertUnwindSafe;

use http::HeaderValue;
use mlua::{LightUserData, Lua, Table};

use super::ngx::req::{self, HeaderValues};
use super::ngx::shared::{Dict, Incr, MAX_KEY};
use super::request;
use crate::proxy::headers::Observed;
use std::sync::Arc;

/// Most headers one result holds; a request with more takes the raw function's path.
const ENTRIES: usize = 128;
/// Most bytes of header names and values one result holds (see the module comment for why the
/// buffer is twice this).
const BYTES: usize = 32 * 1024;

/// One header of a [`HeaderList`] (`struct` layout shared with `ffi_entry.lua`).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct HeaderEntry {
    name: *const u8,
    value: *const u8,
    name_len: u32,
    value_len: u32,
    /// 1 when the name is the one of the entry before (a repeated header: its values follow
    /// one another, as a header map yields them).
    repeated: u32,
    /// The name's place (1-based) in [`KNOWN_NAMES`] when it is one of them and the names are
    /// lower case, else 0: the Lua side then takes a string it made once instead of making it
    /// from the bytes (`ffi.string` hashes and looks up every string it makes).
    known: u32,
}

/// Request header names most requests carry, or APISIX adds, as the Lua side of
/// `ngx.req.get_headers()` gets them ready-made (see [`HeaderEntry::known`]).
const KNOWN_NAMES: [&str; 24] = [
    "host",
    "user-agent",
    "accept",
    "accept-encoding",
    "accept-language",
    "connection",
    "content-type",
    "content-length",
    "cookie",
    "authorization",
    "referer",
    "origin",
    "cache-control",
    "pragma",
    "upgrade",
    "te",
    "if-none-match",
    "if-modified-since",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-for",
    "x-real-ip",
    "x-request-id",
];

/// `name`'s place (1-based) in [`KNOWN_NAMES`], or 0. A `match` on the string: the compiler
/// tells names apart by length first, then compares the few of that length (a scan of the list
/// cost about 100 instructions per name).
fn known_name(name: &str) -> u32 {
    match name {
        "host" => 1,
        "user-agent" => 2,
        "accept" => 3,
        "accept-encoding" => 4,
        "accept-language" => 5,
        "connection" => 6,
        "content-type" => 7,
        "content-length" => 8,
        "cookie" => 9,
        "authorization" => 10,
        "referer" => 11,
        "origin" => 12,
        "cache-control" => 13,
        "pragma" => 14,
        "upgrade" => 15,
        "te" => 16,
        "if-none-match" => 17,
        "if-modified-since" => 18,
        "x-forwarded-proto" => 19,
        "x-forwarded-host" => 20,
        "x-forwarded-port" => 21,
        "x-forwarded-for" => 22,
        "x-real-ip" => 23,
        "x-request-id" => 24,
        _ => 0,
    }
}

const EMPTY: HeaderEntry = HeaderEntry {
    name: std::ptr::null(),
    value: std::ptr::null(),
    name_len: 0,
    value_len: 0,
    repeated: 0,
    known: 0,
};

/// The headers `moongate_req_get_headers` found.
#[repr(C)]
pub struct HeaderList {
    count: i32,
    /// 1 when there were more headers than asked for.
    truncated: i32,
    entries: [HeaderEntry; ENTRIES],
}

/// A string result: `len` bytes at `ptr` (always the start of the scratch bytes), or no string
/// (`len` is [`NOT_FOUND`] or [`USE_RAW`]).
#[repr(C)]
pub struct StrResult {
    ptr: *const u8,
    len: i64,
}

/// `len` of a [`StrResult`] when there is no such value (`nil`).
const NOT_FOUND: i64 = -1;
/// `len` of a [`StrResult`], or a status, when the wrapper must call the raw function.
const USE_RAW: i64 = -2;

/// What `moongate_dict_incr` did (`status`: 0 a number, 1 `err` says why not, 2 no memory,
/// 3 the wrapper must call the raw function).
#[repr(C)]
pub struct IncrResult {
    status: i32,
    /// 0 "not found", 1 "not a number".
    err: i32,
    /// `forcible` (0 or 1) when `init` was given, -1 otherwise.
    forcible: i32,
    _pad: i32,
    value: f64,
}

/// A worker thread's result buffers.
struct Scratch {
    list: HeaderList,
    first: StrResult,
    incr: IncrResult,
    bytes: Box<[u8]>,
}

thread_local! {
    static SCRATCH: Box<UnsafeCell<Scratch>> = Box::new(UnsafeCell::new(Scratch {
        list: HeaderList { count: 0, truncated: 0, entries: [EMPTY; ENTRIES] },
        first: StrResult { ptr: std::ptr::null(), len: NOT_FOUND },
        incr: IncrResult { status: 0, err: 0, forcible: -1, _pad: 0, value: 0.0 },
        bytes: vec![0u8; 2 * BYTES].into_boxed_slice(),
    }));
}

/// Runs `f` on this thread's scratch buffers. `f` must not call into Lua (nothing else then
/// touches the buffers while it runs).
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> Option<R> {
    // SAFETY: the buffers are only reached here, on this thread, and `f` makes no call that
    // could come back here; Lua reads them only between calls (module comment).
    SCRATCH.try_with(|s| f(unsafe { &mut *s.get() })).ok()
}

/// Appends `parts` (one after another) to `bytes` at `*used`: where they start, or `None` when
/// they do not fit in `BYTES`.
fn put(bytes: &mut [u8], used: &mut usize, parts: &[u8], canonical: bool) -> Option<*const u8> {
    let end = used.checked_add(parts.len()).filter(|&e| e <= BYTES)?;
    let dst = &mut bytes[*used..end];
    if canonical {
        // `content-type` as the client most likely wrote it (`Content-Type`), as
        // `ngx.req.get_headers(n, true)` gives it: HTTP/1 names reach us lower-cased.
        let mut up = true;
        for (d, &c) in dst.iter_mut().zip(parts) {
            *d = if up { c.to_ascii_uppercase() } else { c };
            up = c == b'-';
        }
    } else {
        dst.copy_from_slice(parts);
    }
    let start = bytes[*used..].as_ptr();
    *used = end;
    Some(start)
}

/// Fills `s.list` from `headers`, then the forwarding fields set on arrival that are not among
/// them (`RequestCtx::headers_and_arrival`): `None` when they do not fit the scratch buffers.
fn fill_headers(
    s: &mut Scratch,
    headers: &http::HeaderMap,
    arrival: Option<&Observed>,
    max: f64,
    raw: bool,
) -> Option<()> {
    let max = req::header_limit(max);
    let take = if max > 0 { max } else { usize::MAX };
    let held = arrival.map_or(0, |o| o.fields().count());
    let total = headers.len() + held;
    let n = total.min(take);
    if n > ENTRIES {
        return None;
    }
    // Two plain loops, not one chain of iterator adapters over both sources: that cost about a
    // hundred instructions per header.
    let mut fill = Fill {
        s,
        used: 0,
        count: 0,
        n,
        prev: None,
        raw,
    };
    for (name, value) in headers {
        let name = name.as_str();
        if !fill.push(name, if raw { 0 } else { known_name(name) }, value)? {
            break;
        }
    }
    for (name, value) in arrival.into_iter().flat_map(Observed::fields) {
        if !fill.push(name, if raw { 0 } else { known_name(name) }, value)? {
            break;
        }
    }
    fill.s.list.count = n as i32;
    fill.s.list.truncated = i32::from(total > take);
    Some(())
}

/// The filling of the scratch list by [`fill_headers`].
struct Fill<'a, 's> {
    s: &'s mut Scratch,
    used: usize,
    count: usize,
    /// How many entries the list gets.
    n: usize,
    prev: Option<&'a str>,
    raw: bool,
}

impl<'a> Fill<'a, '_> {
    /// Adds one header (`known`: its place in [`KNOWN_NAMES`], or 0): `Some(false)` when the
    /// list is full, `None` when the bytes do not fit.
    fn push(&mut self, name: &'a str, known: u32, value: &HeaderValue) -> Option<bool> {
        if self.count == self.n {
            return Some(false);
        }
        // A known name is not read from the bytes (the Lua side has it ready-made): it is not
        // copied, and its pointer is the buffer's start, in bounds like every other.
        let name_ptr = if known != 0 {
            self.s.bytes.as_ptr()
        } else {
            put(&mut self.s.bytes, &mut self.used, name.as_bytes(), self.raw)?
        };
        let value_ptr = put(&mut self.s.bytes, &mut self.used, value.as_bytes(), false)?;
        self.s.list.entries[self.count] = HeaderEntry {
            name: name_ptr,
            value: value_ptr,
            name_len: name.len() as u32,
            value_len: value.len() as u32,
            repeated: u32::from(self.prev == Some(name)),
            known,
        };
        self.prev = Some(name);
        self.count += 1;
        Some(true)
    }
}

/// `ngx.req.get_headers(max, raw)`: the request's headers in the scratch list, or null when the
/// wrapper must call the raw function (no request, busy, too many or too big, a bug).
extern "C" fn moongate_req_get_headers(max: f64, raw: c_int) -> *const HeaderList {
    let run = || {
        request::with_raw("ngx.req.get_headers", |r| {
            with_scratch(|s| {
                let (headers, arrival) = r.headers_and_arrival();
                fill_headers(s, headers, arrival, max, raw != 0)
                    .map(|()| &s.list as *const HeaderList)
            })
            .flatten()
        })
        .ok()
        .flatten()
    };
    std::panic::catch_unwind(AssertUnwindSafe(run))
        .ok()
        .flatten()
        .unwrap_or(std::ptr::null())
}

/// Runs `f` under `catch_unwind`; a panic is `on_panic` (never an unwind into LuaJIT).
fn guarded<R>(on_panic: R, f: impl FnOnce() -> R) -> R {
    std::panic::catch_unwind(AssertUnwindSafe(f)).unwrap_or(on_panic)
}

/// The `len` bytes a Lua string argument handed over at `p`, or `None` for a length no string
/// has. Only those bytes are read, and only during the call.
///
/// # Safety
/// `p` points to `len` readable bytes for the whole call (what LuaJIT passes for a string).
unsafe fn bytes_arg<'a>(p: *const u8, len: usize) -> Option<&'a [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if p.is_null() || len > isize::MAX as usize {
        return None;
    }
    // SAFETY: the function's contract.
    Some(unsafe { std::slice::from_raw_parts(p, len) })
}

/// A header value from a string (`kind` 0: `""` clears, as with the raw functions), a number
/// (`kind` 1) or `nil` (`kind` 2: clears); `Err` when the wrapper must call the raw function
/// (which raises the error).
fn value_arg(value: &[u8], num: f64, kind: c_int) -> Result<Option<HeaderValues>, ()> {
    match kind {
        2 => Ok(None),
        0 if value.is_empty() => Ok(None),
        // nginx refuses CR/LF in header values; the raw function raises that error.
        0 => HeaderValue::from_bytes(value)
            .map(|v| Some(HeaderValues::One(v)))
            .map_err(|_| ()),
        1 if num.fract() == 0.0 && num.abs() < 1e15 => {
            Ok(Some(HeaderValues::One(HeaderValue::from(num as i64))))
        }
        1 => HeaderValue::from_bytes(super::raw::number_text(num).as_bytes())
            .map(|v| Some(HeaderValues::One(v)))
            .map_err(|_| ()),
        _ => Err(()),
    }
}

/// The headers a setter entry point writes: the API it stands for, and what setting does once
/// the arguments are read.
struct HeaderTarget {
    api: &'static str,
    set: fn(&mut crate::plugin::RequestCtx, &http::HeaderName, Option<HeaderValues>),
}

/// Most header names the setters hand out ids for, per worker; past it a name takes the raw
/// function (see `moongate_header_name_id`).
const NAME_IDS: usize = 4096;

/// The header names the Lua setters know by id: each name is parsed once, and the setter's
/// wrapper finds the id with a lookup of the name string it has, which LuaJIT already hashed.
#[derive(Default)]
struct NameIds {
    names: Vec<http::HeaderName>,
    ids: rustc_hash::FxHashMap<(Box<[u8]>, bool), c_int>,
}

thread_local! {
    static NAMES: std::cell::RefCell<NameIds> = std::cell::RefCell::new(NameIds::default());
}

/// The id of header name `name` (`_` read as `-` when `underscores` is not 0, as
/// `ngx.header` reads it): -1 for a name nginx refuses (the raw function raises the error),
/// -2 when no id can be given (the table is full: the raw function then serves the name).
///
/// # Safety
/// `name` points to `name_len` readable bytes for the call.
unsafe extern "C" fn moongate_header_name_id(
    name: *const u8,
    name_len: usize,
    underscores: c_int,
) -> c_int {
    // SAFETY: the function's contract.
    let Some(name) = (unsafe { bytes_arg(name, name_len) }) else {
        return -2;
    };
    let underscores = underscores != 0;
    guarded(-2, || {
        NAMES
            .try_with(|n| {
                let mut n = n.borrow_mut();
                let key = (Box::<[u8]>::from(name), underscores);
                if let Some(&id) = n.ids.get(&key) {
                    return id;
                }
                let Ok(parsed) = req::header_name_of(name, "", underscores) else {
                    return -1;
                };
                if n.names.len() >= NAME_IDS {
                    return -2;
                }
                let id = n.names.len() as c_int;
                n.names.push(parsed);
                n.ids.insert(key, id);
                id
            })
            .unwrap_or(-2)
    })
}

/// The header name with id `id`, if there is one.
fn name_of_id(id: c_int) -> Option<http::HeaderName> {
    let i = usize::try_from(id).ok()?;
    NAMES
        .try_with(|n| n.borrow().names.get(i).cloned())
        .ok()
        .flatten()
}

/// `ngx.req.set_header(name, value)`.
const REQUEST_HEADERS: HeaderTarget = HeaderTarget {
    api: "ngx.req.set_header",
    set: req::set_request_header,
};

/// `ngx.header[name] = value` (lua-nginx-module turns `_` into `-` in response header names
/// it is given: the wrapper asks for their ids so).
const RESPONSE_HEADERS: HeaderTarget = HeaderTarget {
    api: "ngx.header",
    set: super::ngx::resp::set_response_header,
};

/// Sets the header with name id `id` (`moongate_header_name_id`) of `target` to a string
/// (`kind` 0), number (`kind` 1) or `nil` (`kind` 2) value: 0 when done, 1 when the wrapper
/// must call the raw function.
///
/// # Safety
/// `value` points to `value_len` readable bytes for the call.
unsafe fn set_header(
    target: &HeaderTarget,
    id: c_int,
    value: *const u8,
    value_len: usize,
    num: f64,
    kind: c_int,
) -> c_int {
    // SAFETY: the function's contract.
    let Some(value) = (unsafe { bytes_arg(value, value_len) }) else {
        return 1;
    };
    guarded(1, || {
        let Some(n) = name_of_id(id) else {
            return 1;
        };
        let Ok(vals) = value_arg(value, num, kind) else {
            return 1;
        };
        match request::with_raw(target.api, |r| (target.set)(r, &n, vals)) {
            Ok(()) => 0,
            Err(_) => 1,
        }
    })
}

/// The three entry points of a header setter, one per value type: an FFI call the interpreter
/// makes (when the calling code is not compiled) converts each argument on its own, so each
/// takes only what its value type needs.
macro_rules! setter_entries {
    ($target:ident, $str:ident, $num:ident, $clear:ident) => {
        /// A string value (`""` clears) for the header with name id `id`.
        ///
        /// # Safety
        /// `value` points to `value_len` readable bytes for the call.
        unsafe extern "C" fn $str(id: c_int, value: *const u8, value_len: usize) -> c_int {
            // SAFETY: the function's contract.
            unsafe { set_header(&$target, id, value, value_len, 0.0, 0) }
        }

        /// A number value.
        extern "C" fn $num(id: c_int, num: f64) -> c_int {
            // SAFETY: no pointer is passed.
            unsafe { set_header(&$target, id, std::ptr::null(), 0, num, 1) }
        }

        /// `nil`: clears.
        extern "C" fn $clear(id: c_int) -> c_int {
            // SAFETY: no pointer is passed.
            unsafe { set_header(&$target, id, std::ptr::null(), 0, 0.0, 2) }
        }
    };
}

setter_entries!(
    REQUEST_HEADERS,
    moongate_req_set_header_str,
    moongate_req_set_header_num,
    moongate_req_clear_header
);
setter_entries!(
    RESPONSE_HEADERS,
    moongate_resp_set_header_str,
    moongate_resp_set_header_num,
    moongate_resp_clear_header
);

/// `moongate.headers.first(name)`: the first value of request header `name` in the scratch
/// string (`len` [`NOT_FOUND`] for none, [`USE_RAW`] when the wrapper must call the raw
/// function).
///
/// # Safety
/// `name` points to `name_len` readable bytes for the call.
unsafe extern "C" fn moongate_req_header_first(
    name: *const u8,
    name_len: usize,
) -> *const StrResult {
    // SAFETY: the function's contract.
    let name = unsafe { bytes_arg(name, name_len) };
    let run = || {
        let name = name?;
        request::with_raw("ngx.req.get_headers", |r| {
            let (headers, arrival) = r.headers_and_arrival();
            let found = req::first_header(headers, arrival, name).map(HeaderValue::as_bytes);
            with_scratch(|s| {
                s.first.ptr = s.bytes.as_ptr();
                s.first.len = match found {
                    None => NOT_FOUND,
                    Some(v) if v.len() <= BYTES => {
                        s.bytes[..v.len()].copy_from_slice(v);
                        v.len() as i64
                    }
                    Some(_) => USE_RAW,
                };
                &s.first as *const StrResult
            })
        })
        .ok()
        .flatten()
    };
    // Every failure is a `USE_RAW` answer, which needs the scratch buffers themselves.
    guarded(None, run).unwrap_or_else(|| {
        with_scratch(|s| {
            s.first.len = USE_RAW;
            &s.first as *const StrResult
        })
        .unwrap_or(std::ptr::null())
    })
}

thread_local! {
    /// The dictionaries the wrappers reach by index (`ngx.shared` handles are userdata, which
    /// an FFI call cannot check the type of: the Lua side maps each handle to its index).
    static DICTS: std::cell::RefCell<Vec<Arc<Dict>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// The index of `d` in this thread's [`DICTS`] (a VM made again on the thread, after a plugin
/// reload, finds the same dictionaries at the same indexes).
fn dict_index(d: &Arc<Dict>) -> usize {
    DICTS.with(|v| {
        let mut v = v.borrow_mut();
        match v.iter().position(|x| Arc::ptr_eq(x, d)) {
            Some(i) => i,
            None => {
                v.push(d.clone());
                v.len() - 1
            }
        }
    })
}

/// `dict:incr(key, by, init, init_ttl)` for dictionary `dict` (an index the wrapper got at
/// setup), a string key and a number `by` (`has_init` 0 when `init` was not a number): the
/// outcome in the scratch [`IncrResult`], or null / status 3 when the wrapper must call the
/// raw function.
///
/// # Safety
/// `key` points to `key_len` readable bytes for the call.
unsafe extern "C" fn moongate_dict_incr(
    dict: u32,
    key: *const u8,
    key_len: usize,
    by: f64,
    init: f64,
    has_init: c_int,
    init_ttl: f64,
) -> *const IncrResult {
    // SAFETY: the function's contract.
    let key = unsafe { bytes_arg(key, key_len) };
    let outcome = guarded(None, || {
        let key = key.filter(|k| !k.is_empty() && k.len() <= MAX_KEY)?;
        let d = DICTS.with(|v| v.borrow().get(dict as usize).cloned())?;
        Some(d.incr_value(key, by, (has_init != 0).then_some(init), init_ttl))
    });
    with_scratch(|s| {
        let r = &mut s.incr;
        r.forcible = -1;
        match outcome {
            Some(Incr::Num(v, forcible)) => {
                r.status = 0;
                r.value = v;
                if let Some(f) = forcible {
                    r.forcible = i32::from(f);
                }
            }
            Some(Incr::Fail(err)) => {
                r.status = 1;
                r.err = i32::from(err != "not found");
            }
            Some(Incr::NoMemory) => r.status = 2,
            None => r.status = 3,
        }
        r as *const IncrResult
    })
    .unwrap_or(std::ptr::null())
}

/// `ngx.now()` (and `ngx.time()`, its whole part): the clock, no request needed.
extern "C" fn moongate_now() -> f64 {
    guarded(0.0, super::ngx::time::now_secs)
}

/// `moongate.config.version()`: the config version plugins' caches key on, `-1` for none (no
/// request has run with a snapshot yet). Auth plugins read it on every request.
extern "C" fn moongate_config_version() -> f64 {
    guarded(-1.0, || {
        super::config_view::current_view_version().map_or(-1.0, |v| v as f64)
    })
}

fn addr(p: *const ()) -> LightUserData {
    LightUserData(p as *mut std::ffi::c_void)
}

/// The source of the Lua wrappers.
const WRAPPERS: &str = include_str!("ffi_entry.lua");

/// Installs the FFI wrappers over the raw functions `ngx` holds (call once the `ngx` table is
/// complete).
pub fn register(
    lua: &Lua,
    ngx: &Table,
    dicts: &super::ngx::shared::SharedDicts,
) -> mlua::Result<()> {
    let fns = lua.create_table()?;
    fns.set(
        "req_get_headers",
        addr(moongate_req_get_headers as *const ()),
    )?;
    let setters: [(&str, *const ()); 6] = [
        ("req_set_str", moongate_req_set_header_str as *const ()),
        ("req_set_num", moongate_req_set_header_num as *const ()),
        ("req_clear", moongate_req_clear_header as *const ()),
        ("resp_set_str", moongate_resp_set_header_str as *const ()),
        ("resp_set_num", moongate_resp_set_header_num as *const ()),
        ("resp_clear", moongate_resp_clear_header as *const ()),
    ];
    for (name, f) in setters {
        fns.set(name, addr(f))?;
    }
    fns.set("header_name_id", addr(moongate_header_name_id as *const ()))?;
    fns.set(
        "req_header_first",
        addr(moongate_req_header_first as *const ()),
    )?;
    fns.set("dict_incr", addr(moongate_dict_incr as *const ()))?;
    fns.set("now", addr(moongate_now as *const ()))?;
    fns.set("config_version", addr(moongate_config_version as *const ()))?;
    let indexes = lua.create_table()?;
    for (name, d) in dicts.iter() {
        indexes.set(name, dict_index(d))?;
    }
    fns.set("dict_indexes", indexes)?;
    fns.set("known_names", lua.create_sequence_from(KNOWN_NAMES)?)?;
    lua.load(WRAPPERS)
        .set_name("=moongate/ffi_entry.lua")
        .call::<()>((ngx.clone(), fns))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut m = http::HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn read(s: &Scratch) -> Vec<(String, String, bool)> {
        (0..s.list.count as usize)
            .map(|i| {
                let e = s.list.entries[i];
                // SAFETY: entries below `count` point into `s.bytes` with their lengths.
                let (n, v) = unsafe {
                    (
                        std::slice::from_raw_parts(e.name, e.name_len as usize),
                        std::slice::from_raw_parts(e.value, e.value_len as usize),
                    )
                };
                // As the Lua side reads it: a known name from the list, not from the bytes.
                let name = match e.known {
                    0 => String::from_utf8_lossy(n).into_owned(),
                    k => KNOWN_NAMES[k as usize - 1].to_string(),
                };
                (
                    name,
                    String::from_utf8_lossy(v).into_owned(),
                    e.repeated != 0,
                )
            })
            .collect()
    }

    /// What `fill_headers` lists for `m` (with `arrival`), and whether it was truncated.
    fn listed(
        m: &http::HeaderMap,
        arrival: Option<&Observed>,
        max: f64,
        raw: bool,
    ) -> (Vec<(String, String, bool)>, i32) {
        with_scratch(|s| {
            fill_headers(s, m, arrival, max, raw).unwrap();
            (read(s), s.list.truncated)
        })
        .unwrap()
    }

    #[test]
    fn repeated_headers_are_marked_and_raw_names_capitalised() {
        let m = map(&[("x-a", "1"), ("content-type", "t"), ("x-a", "2")]);
        let got = listed(&m, None, 0.0, true);
        assert_eq!(got.1, 0);
        assert_eq!(
            got.0,
            vec![
                ("X-A".into(), "1".into(), false),
                ("X-A".into(), "2".into(), true),
                ("Content-Type".into(), "t".into(), false),
            ]
        );
    }

    #[test]
    fn forwarding_fields_held_apart_come_after_the_headers_and_count_against_max() {
        let m = map(&[("host", "h"), ("apikey", "k")]);
        let arrival = Observed {
            proto: HeaderValue::from_static("http"),
            host: None,
            port: HeaderValue::from_static("9080"),
        };
        let got = listed(&m, Some(&arrival), 0.0, true);
        assert_eq!(got.1, 0);
        assert_eq!(
            got.0,
            vec![
                ("Host".into(), "h".into(), false),
                ("Apikey".into(), "k".into(), false),
                ("X-Forwarded-Proto".into(), "http".into(), false),
                ("X-Forwarded-Port".into(), "9080".into(), false),
            ]
        );
        let got = listed(&m, Some(&arrival), 3.0, false);
        assert_eq!(got.1, 1);
        assert_eq!(got.0.len(), 3);
        assert_eq!(got.0[2].0, "x-forwarded-proto");
    }

    #[test]
    fn known_names_are_found_by_place_and_only_in_lower_case_lists() {
        for (i, n) in KNOWN_NAMES.iter().enumerate() {
            assert_eq!(known_name(n), i as u32 + 1, "{n}");
        }
        assert_eq!(known_name("x-forwarded"), 0);
        assert_eq!(known_name("apikey"), 0);
        let m = map(&[("host", "h"), ("apikey", "k")]);
        let known = |raw| {
            with_scratch(|s| {
                fill_headers(s, &m, None, 0.0, raw).unwrap();
                (s.list.entries[0].known, s.list.entries[1].known)
            })
            .unwrap()
        };
        assert_eq!(known(false), (1, 0));
        // Raw names are capitalised: made from their bytes.
        assert_eq!(known(true), (0, 0));
    }

    #[test]
    fn max_truncates_and_too_big_refuses() {
        let m = map(&[("a", "1"), ("b", "2"), ("c", "3")]);
        let got = with_scratch(|s| {
            fill_headers(s, &m, None, 2.0, false).unwrap();
            (s.list.count, s.list.truncated)
        });
        assert_eq!(got, Some((2, 1)));
        let big = "v".repeat(BYTES);
        let m = map(&[("a", &big)]);
        assert_eq!(
            with_scratch(|s| fill_headers(s, &m, None, 0.0, false)),
            Some(None)
        );
        let many: Vec<(String, String)> = (0..ENTRIES + 1)
            .map(|i| (format!("h{i}"), "v".to_string()))
            .collect();
        let refs: Vec<(&str, &str)> = many.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        let m = map(&refs);
        assert_eq!(
            with_scratch(|s| fill_headers(s, &m, None, 0.0, false)),
            Some(None)
        );
        // With a limit below the entries' room the same map fits.
        assert_eq!(
            with_scratch(|s| fill_headers(s, &m, None, 100.0, false).map(|()| s.list.count)),
            Some(Some(100))
        );
    }

    /// Sandboxed code (JIT off, counted) outside any request: every wrapper answers as the raw
    /// function does there, the dictionary works, and the entry points refuse what no string
    /// could be (a null pointer with a length) without reading it, and name ids never given.
    #[test]
    fn sandboxed_code_without_a_request_gets_the_raw_answers() {
        use crate::lua::vm::{LuaVm, SandboxBudget, VmOptions};
        let mut opts = VmOptions::for_prefix(std::path::Path::new("/nonexistent"));
        opts.shared_dicts = super::super::ngx::shared::SharedDicts::new(&[("d".into(), 1 << 20)]);
        let vm = LuaVm::new(&opts).unwrap();
        let f = vm
            .load_sandboxed(
                "sandboxed",
                r#"
                local out = {}
                local function try(f, ...)
                  local ok, err = pcall(f, ...)
                  out[#out + 1] = tostring(ok) .. " " .. tostring(err)
                end
                try(ngx.req.get_headers)
                try(ngx.req.set_header, "X-A", "v")
                try(function() ngx.header["X-A"] = 1 end)
                try(require("moongate.headers").first, "host")
                out[#out + 1] = tostring(ngx.shared.d:incr("k", 2, 40))
                local up = {}
                for i = 1, 20 do
                  local name, v = debug.getupvalue(ngx.req.set_header, i)
                  if name == nil then break end
                  up[name] = v
                end
                out[#out + 1] = tostring(up.c_str(0, nil, 100))
                out[#out + 1] = tostring(up.c_str(-3, "x", 1))
                out[#out + 1] = tostring(up.c_clear(99999))
                out[#out + 1] = tostring(up.c_name_id(nil, 7, 0))
                out[#out + 1] = tostring(up.c_name_id("Bad Name", 8, 0))
                return table.concat(out, "\n")
                "#,
                SandboxBudget {
                    instructions: 1_000_000,
                },
            )
            .unwrap();
        let got: String = f.call(()).unwrap();
        assert_eq!(
            got,
            "false no request found\n\
             false no request found\n\
             false no request found\n\
             false no request found\n\
             42\n1\n1\n1\n-2\n-1"
        );
    }
}
