//! Lua C functions for the per-request hot path, written against the raw Lua API instead of
//! mlua's callback machinery.
//!
//! Why: the worker VM runs under a heap limit, and with a limit set mlua makes every value it
//! creates from Rust (a string a callback returns, a table it builds) in a protected call of its
//! own, about 2,000 instructions each, plus a C closure for the error handler that becomes
//! garbage. A raw C function is what lua-nginx-module's functions are: Lua calls it directly,
//! and an error it raises (or "not enough memory" from a push past the heap limit) unwinds
//! through it to the protected boundary of the Lua code that called it (`lua_resume`, `pcall`).
//!
//! The contract that keeps that sound, enforced by [`call`]: a function's body is plain Rust that
//! reads its arguments and computes its results (into [`Rets`]) without calling the Lua API,
//! under `catch_unwind`; only then are the results pushed, or the error raised, with nothing
//! owned left alive in the frame that a Lua error would unwind through.

use std::borrow::Cow;
use std::ffi::c_int;
use std::panic::AssertUnwindSafe;

use mlua::{Function, Lua, ffi};

/// The arguments a raw function was called with (1-based, as in Lua).
pub struct Args {
    l: *mut ffi::lua_State,
    n: c_int,
}

/// The Lua type of an argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ty {
    None,
    Nil,
    Bool,
    Number,
    Str,
    Table,
    Other,
}

impl Ty {
    /// The name Lua error messages use.
    pub fn name(self) -> &'static str {
        match self {
            Ty::None => "no value",
            Ty::Nil => "nil",
            Ty::Bool => "boolean",
            Ty::Number => "number",
            Ty::Str => "string",
            Ty::Table => "table",
            Ty::Other => "userdata",
        }
    }
}

impl Args {
    pub fn ty(&self, i: c_int) -> Ty {
        if i < 1 || i > self.n {
            return Ty::None;
        }
        // SAFETY: `i` is a valid stack index of this call.
        match unsafe { ffi::lua_type(self.l, i) } {
            ffi::LUA_TNIL => Ty::Nil,
            ffi::LUA_TBOOLEAN => Ty::Bool,
            ffi::LUA_TNUMBER => Ty::Number,
            ffi::LUA_TSTRING => Ty::Str,
            ffi::LUA_TTABLE => Ty::Table,
            _ => Ty::Other,
        }
    }

    /// Argument `i` when it is a string (never converted from a number: that would allocate).
    pub fn str(&self, i: c_int) -> Option<&[u8]> {
        if self.ty(i) != Ty::Str {
            return None;
        }
        let mut len = 0usize;
        // SAFETY: a string argument stays on the stack (and alive) for the whole call.
        unsafe {
            let p = ffi::lua_tolstring(self.l, i, &mut len);
            if p.is_null() {
                return None;
            }
            Some(std::slice::from_raw_parts(p.cast::<u8>(), len))
        }
    }

    /// Argument `i` when it is a number.
    pub fn number(&self, i: c_int) -> Option<f64> {
        if self.ty(i) != Ty::Number {
            return None;
        }
        // SAFETY: a number argument.
        Some(unsafe { ffi::lua_tonumber(self.l, i) })
    }

    /// Argument `i` when it is a boolean.
    pub fn bool(&self, i: c_int) -> Option<bool> {
        if self.ty(i) != Ty::Bool {
            return None;
        }
        // SAFETY: a boolean argument.
        Some(unsafe { ffi::lua_toboolean(self.l, i) != 0 })
    }

    /// Argument `i` when it is a full userdata whose metatable is upvalue `mt` of the running
    /// function: its memory block.
    pub fn userdata(&self, i: c_int, mt: c_int) -> Option<*mut std::ffi::c_void> {
        if i < 1 || i > self.n {
            return None;
        }
        // SAFETY: `lua_getmetatable` pushes one value (or none) without allocating; it is
        // popped before returning.
        unsafe {
            if ffi::lua_type(self.l, i) != ffi::LUA_TUSERDATA
                || ffi::lua_getmetatable(self.l, i) == 0
            {
                return None;
            }
            let same = ffi::lua_rawequal(self.l, -1, ffi::lua_upvalueindex(mt)) != 0;
            ffi::lua_settop(self.l, -2);
            if !same {
                return None;
            }
            let p = ffi::lua_touserdata(self.l, i);
            (!p.is_null()).then_some(p)
        }
    }

    /// Argument `i` as a header value would read it: a string, or a number or boolean in the
    /// text Lua's `tostring` gives.
    pub fn text(&self, i: c_int) -> Option<Cow<'_, [u8]>> {
        match self.ty(i) {
            Ty::Str => self.str(i).map(Cow::Borrowed),
            Ty::Number => self
                .number(i)
                .map(|n| Cow::Owned(number_text(n).into_bytes())),
            Ty::Bool => self
                .bool(i)
                .map(|b| Cow::Borrowed(if b { &b"true"[..] } else { &b"false"[..] })),
            _ => None,
        }
    }

    /// The array part `1..n` of table argument `i`, each element as [`Args::text`] reads it.
    /// `Err` names the type of the first element that is not text.
    pub fn text_list(&self, i: c_int) -> Result<Vec<Vec<u8>>, Ty> {
        let mut out = Vec::new();
        // SAFETY: `lua_rawgeti` of a table argument pushes one value; it is read and popped at
        // once, and `lua_rawgeti` does not allocate or raise.
        unsafe {
            let n = ffi::lua_objlen(self.l, i);
            for k in 1..=n {
                ffi::lua_rawgeti(self.l, i, k as ffi::lua_Integer);
                let top = ffi::lua_gettop(self.l);
                let one = Args { l: self.l, n: top };
                let v = one.text(top).map(|c| c.into_owned());
                let ty = one.ty(top);
                ffi::lua_settop(self.l, top - 1);
                match v {
                    Some(v) => out.push(v),
                    None => return Err(ty),
                }
            }
        }
        Ok(out)
    }
}

/// Numbers as `tostring` writes them: integral values without a fraction, others with `%.14g`.
pub fn number_text(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        crate::lua::lib::cjson::fmt_g(n, 14)
    }
}

/// One value a raw function returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Ret {
    Nil,
    Bool(bool),
    Num(f64),
    Str(Vec<u8>),
    Static(&'static str),
    /// A table made of string keys and values (a list under a repeated key), with the upvalue
    /// at this index (1-based) as its metatable when it is a table. The pairs of a repeated
    /// name must follow one another, as a header map yields them.
    Headers(Pairs, Option<c_int>),
    /// A list of strings.
    List(Vec<Vec<u8>>),
}

/// Name/value pairs in one buffer (two allocations however many pairs).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pairs {
    buf: Vec<u8>,
    /// (name start, value start, value end) in `buf`.
    spans: Vec<(usize, usize, usize)>,
}

impl Pairs {
    pub fn with_capacity(n: usize) -> Pairs {
        Pairs {
            buf: Vec::with_capacity(n * 32),
            spans: Vec::with_capacity(n),
        }
    }

    pub fn push(&mut self, name: &[u8], value: &[u8]) {
        let a = self.buf.len();
        self.buf.extend_from_slice(name);
        let b = self.buf.len();
        self.buf.extend_from_slice(value);
        self.spans.push((a, b, self.buf.len()));
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Pair `i` (0-based; `i < len()`).
    fn at(&self, i: usize) -> (&[u8], &[u8]) {
        let (a, b, c) = self.spans[i];
        (&self.buf[a..b], &self.buf[b..c])
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.spans
            .iter()
            .map(|&(a, b, c)| (&self.buf[a..b], &self.buf[b..c]))
    }
}

/// Up to three results.
#[derive(Debug, Default)]
pub struct Rets {
    vals: [Option<Ret>; 3],
}

impl Rets {
    pub fn none() -> Rets {
        Rets::default()
    }

    pub fn one(v: Ret) -> Rets {
        Rets {
            vals: [Some(v), None, None],
        }
    }

    pub fn two(a: Ret, b: Ret) -> Rets {
        Rets {
            vals: [Some(a), Some(b), None],
        }
    }

    pub fn three(a: Ret, b: Ret, c: Ret) -> Rets {
        Rets {
            vals: [Some(a), Some(b), Some(c)],
        }
    }
}

impl From<Ret> for Rets {
    fn from(v: Ret) -> Rets {
        Rets::one(v)
    }
}

/// The body of a raw function: its arguments in, its results or an error message out.
pub type Body = fn(&Args) -> Result<Rets, String>;

/// Runs `body` as the C function called with state `l`: see the module comment.
///
/// # Safety
/// `l` is the state Lua called the C function with.
pub unsafe fn call(l: *mut ffi::lua_State, body: Body) -> c_int {
    // SAFETY: reading the argument count of the running call.
    let args = Args {
        l,
        n: unsafe { ffi::lua_gettop(l) },
    };
    let out = std::panic::catch_unwind(AssertUnwindSafe(|| body(&args)));
    match out {
        // SAFETY: pushing onto the running call's stack; `rets` is consumed as it is pushed.
        Ok(Ok(rets)) => unsafe { push_all(l, rets) },
        // SAFETY: raising from a C function called by Lua.
        Ok(Err(msg)) => unsafe { raise(l, msg) },
        Err(_) => unsafe { raise(l, "internal error in a moongate function (a bug)".into()) },
    }
}

/// Raises `msg` as a Lua error (a plain string, as lua-nginx-module's functions raise them).
///
/// # Safety
/// Called from a C function Lua called; never returns.
pub unsafe fn raise(l: *mut ffi::lua_State, msg: String) -> c_int {
    // SAFETY: the message is copied into Lua, then dropped before the error unwinds.
    unsafe {
        ffi::lua_checkstack(l, 2);
        ffi::lua_pushlstring(l, msg.as_ptr().cast(), msg.len());
        drop(msg);
        ffi::lua_error(l)
    }
}

unsafe fn push_all(l: *mut ffi::lua_State, rets: Rets) -> c_int {
    let mut n = 0;
    for v in rets.vals.into_iter().flatten() {
        // SAFETY: see `push`.
        unsafe { push(l, v) };
        n += 1;
    }
    n
}

/// Pushes one result.
///
/// # Safety
/// `l` is the running call's state. A push may raise "not enough memory": the values not yet
/// pushed are then leaked at worst, never used.
unsafe fn push(l: *mut ffi::lua_State, v: Ret) {
    unsafe {
        ffi::lua_checkstack(l, 4);
        match v {
            Ret::Nil => ffi::lua_pushnil(l),
            Ret::Bool(b) => ffi::lua_pushboolean(l, b as c_int),
            Ret::Num(n) => ffi::lua_pushnumber(l, n),
            Ret::Str(s) => {
                ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
            }
            Ret::Static(s) => {
                ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
            }
            Ret::List(items) => {
                ffi::lua_createtable(l, items.len().min(1 << 16) as c_int, 0);
                for (i, s) in items.iter().enumerate() {
                    ffi::lua_pushlstring(l, s.as_ptr().cast(), s.len());
                    ffi::lua_rawseti(l, -2, i as ffi::lua_Integer + 1);
                }
            }
            Ret::Headers(entries, mt) => {
                ffi::lua_createtable(l, 0, entries.len().min(64) as c_int);
                // A header map yields the values of one name one after another, so a run of
                // equal names is a repeated header: its value becomes the list of the run's
                // values. One raw set per name, no lookup of what the table already holds.
                let mut i = 0;
                while i < entries.len() {
                    let (k, v) = entries.at(i);
                    let mut end = i + 1;
                    while end < entries.len() && entries.at(end).0 == k {
                        end += 1;
                    }
                    ffi::lua_pushlstring(l, k.as_ptr().cast(), k.len());
                    if end == i + 1 {
                        ffi::lua_pushlstring(l, v.as_ptr().cast(), v.len());
                    } else {
                        ffi::lua_createtable(l, (end - i).min(1 << 16) as c_int, 0);
                        for (n, j) in (i..end).enumerate() {
                            let v = entries.at(j).1;
                            ffi::lua_pushlstring(l, v.as_ptr().cast(), v.len());
                            ffi::lua_rawseti(l, -2, n as ffi::lua_Integer + 1);
                        }
                    }
                    ffi::lua_rawset(l, -3);
                    i = end;
                }
                if let Some(i) = mt
                    && ffi::lua_type(l, ffi::lua_upvalueindex(i)) == ffi::LUA_TTABLE
                {
                    ffi::lua_pushvalue(l, ffi::lua_upvalueindex(i));
                    ffi::lua_setmetatable(l, -2);
                }
            }
        }
    }
}

/// Sets `t[name] = value` for every pair into the table at stack index `t` (raw sets).
///
/// # Safety
/// `l` is the running call's state and `t` a valid absolute index of a table.
pub unsafe fn set_pairs(l: *mut ffi::lua_State, t: c_int, pairs: &Pairs) {
    unsafe {
        ffi::lua_checkstack(l, 3);
        for (k, v) in pairs.iter() {
            ffi::lua_pushlstring(l, k.as_ptr().cast(), k.len());
            ffi::lua_pushlstring(l, v.as_ptr().cast(), v.len());
            ffi::lua_rawset(l, t);
        }
    }
}

/// Makes a Lua function of the C function `f` with `upvalues` (values of the VM, e.g. a
/// metatable the function hands out).
pub fn function(
    lua: &Lua,
    f: ffi::lua_CFunction,
    upvalues: impl mlua::IntoLuaMulti,
) -> mlua::Result<Function> {
    // SAFETY: the closure is made in a protected call with the upvalues pushed as arguments;
    // the function left on the stack is the call's result.
    unsafe {
        lua.exec_raw(upvalues, |state| {
            let n = ffi::lua_gettop(state);
            ffi::lua_pushcclosure(state, f, n);
        })
    }
}

/// Declares an `extern "C-unwind"` Lua C function running the plain-Rust `body` under the
/// module's contract.
#[macro_export]
macro_rules! raw_fn {
    (pub $name:ident, $body:expr) => {
        /// # Safety
        /// Called by Lua as a C function with a valid state.
        pub unsafe extern "C-unwind" fn $name(l: *mut ::mlua::ffi::lua_State) -> ::std::ffi::c_int {
            let body: $crate::lua::raw::Body = $body;
            // SAFETY: called by Lua as a C function.
            unsafe { $crate::lua::raw::call(l, body) }
        }
    };
    ($name:ident, $body:expr) => {
        unsafe extern "C-unwind" fn $name(l: *mut ::mlua::ffi::lua_State) -> ::std::ffi::c_int {
            let body: $crate::lua::raw::Body = $body;
            // SAFETY: called by Lua as a C function.
            unsafe { $crate::lua::raw::call(l, body) }
        }
    };
}
