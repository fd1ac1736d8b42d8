//! Entering the runner: how Rust starts a request's Lua work, with the raw Lua API.
//!
//! Why not `Function::call_async`: mlua's generic call costs about 5,000 instructions per entry
//! around the Lua work itself (its argument and result conversions, a recycled thread taken
//! from and given back to its pool, the poll of an async thread and its drop). Most entries
//! never wait: the runner runs the plugins of a phase and returns. So an entry resumes a thread
//! of this worker's own pool once, directly, with its arguments pushed from registry slots and
//! numbers, and reads the results off the thread's stack. Only when the Lua code waits (an
//! mlua async function yielded its "pending" marker, e.g. a cosocket read or `ngx.sleep`) is
//! the thread handed to mlua as an async thread ([`Waiting`]), which the caller polls as
//! before. The async function that yielded was polled once without a waker of ours (mlua's
//! default, a no-op one); the async thread's first poll resumes it, and it polls its future
//! again with the task's waker, so no wake-up is lost.
//!
//! One difference from mlua's own implicit threads: a handed-over thread that is dropped while
//! still waiting (the client went away, the phase timed out) keeps its pending future until the
//! Lua garbage collector frees the thread, as timers' and light threads' coroutines already do;
//! mlua cannot be asked to drop the future of a thread it did not create for the call.

use std::cell::RefCell;
use std::ffi::c_int;

use mlua::thread::AsyncThread;
use mlua::{Function, Lua, MultiValue, Thread, Value, ffi};

/// An argument of an entry, pushed with the raw API.
#[derive(Debug, Clone, Copy)]
pub enum Arg {
    /// The value in this registry slot (a chain table, a route object, a function).
    Ref(c_int),
    Int(i64),
    Num(f64),
    Nil,
}

/// A value the runner returned, copied off the thread's stack.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Out {
    #[default]
    Nil,
    Bool(bool),
    Num(f64),
    Str(Vec<u8>),
    /// A table, function or other value: nothing the runner returns means one.
    Other,
}

impl Out {
    fn from_value(v: &Value) -> Out {
        match v {
            Value::Nil => Out::Nil,
            Value::Boolean(b) => Out::Bool(*b),
            Value::Integer(i) => Out::Num(*i as f64),
            Value::Number(n) => Out::Num(*n),
            Value::String(s) => Out::Str(s.as_bytes().to_vec()),
            _ => Out::Other,
        }
    }

    /// A string (or a number, as `tostring` writes it); `None` for anything else.
    pub fn text(&self) -> Option<String> {
        match self {
            Out::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Out::Num(n) => Some(super::raw::number_text(*n)),
            _ => None,
        }
    }

    /// A number the runner returned (an index, a status code).
    pub fn number(&self) -> Option<f64> {
        match self {
            Out::Num(n) => Some(*n),
            _ => None,
        }
    }

    pub fn is_str(&self, s: &[u8]) -> bool {
        matches!(self, Out::Str(v) if v == s)
    }
}

/// How many results an entry reads (runner.lua returns at most five).
pub const OUTS: usize = 5;

/// What an entry returned, missing results as [`Out::Nil`].
pub type Outs = [Out; OUTS];

/// Reads the results of a finished run (`MultiValue` from a handed-over thread).
pub fn outs_of(values: &MultiValue) -> Outs {
    let mut outs: Outs = Default::default();
    for (o, v) in outs.iter_mut().zip(values.iter()) {
        *o = Out::from_value(v);
    }
    outs
}

/// How the first resume of an entry ended.
pub enum First {
    Done(Outs),
    /// The Lua code raised an error the runner did not catch (or ran out of memory).
    Failed(String),
    /// The Lua code waits: the thread, now mlua's to poll.
    Waiting(AsyncThread<MultiValue>),
}

/// Finished threads kept for the next entries; past this many they are left to the collector.
const POOL_MAX: usize = 64;

/// A worker's pool of Lua threads for entries.
pub struct Threads {
    pool: RefCell<Vec<Thread>>,
    /// Any function: a new thread is made with one, then emptied.
    seed: Function,
    /// `describe(thread, err)`: the text of the error that ended `thread`, with the thread's
    /// traceback (runner.lua's `describe_failure`).
    describe: Function,
}

impl Threads {
    pub fn new(seed: Function, describe: Function) -> Threads {
        Threads {
            pool: RefCell::new(Vec::new()),
            seed,
            describe,
        }
    }

    /// Resumes the function in registry slot `entry` with `args` on a thread of the pool, once.
    pub fn resume(&self, lua: &Lua, entry: c_int, args: &[Arg]) -> First {
        let thread = match self.pool.borrow_mut().pop() {
            Some(t) => t,
            None => match lua.create_thread(self.seed.clone()) {
                Ok(t) => t,
                Err(e) => return First::Failed(e.to_string()),
            },
        };
        let ts = thread.state();
        let mut nres: c_int = 0;
        // SAFETY: `ts` is a thread of this VM that is not running: new (its seed function on
        // the stack), or back in the pool after it returned. The stack is emptied, grown for
        // the arguments and filled with values from this VM's registry and numbers; only then
        // is it resumed, from Rust (no Lua frame of this worker is running: the proxy calls
        // this from its task). Nothing pushed here can raise a Lua error but an allocation in
        // `lua_checkstack`, which reports failure instead.
        let status = unsafe {
            ffi::lua_settop(ts, 0);
            if ffi::lua_checkstack(ts, args.len() as c_int + 1) == 0 {
                return First::Failed("memory error: cannot grow the Lua stack".into());
            }
            ffi::lua_rawgeti(ts, ffi::LUA_REGISTRYINDEX, entry.into());
            for a in args {
                match *a {
                    Arg::Ref(slot) => {
                        ffi::lua_rawgeti(ts, ffi::LUA_REGISTRYINDEX, slot.into());
                    }
                    Arg::Int(i) => ffi::lua_pushinteger(ts, i as ffi::lua_Integer),
                    Arg::Num(n) => ffi::lua_pushnumber(ts, n),
                    Arg::Nil => ffi::lua_pushnil(ts),
                }
            }
            ffi::lua_resume(ts, std::ptr::null_mut(), args.len() as c_int, &mut nres)
        };
        match status {
            ffi::LUA_OK => {
                // SAFETY: the thread returned: its stack holds exactly its `nres` results.
                let outs = unsafe { read_outs(ts, nres) };
                // SAFETY: as above; the results were copied out.
                unsafe { ffi::lua_settop(ts, 0) };
                let mut pool = self.pool.borrow_mut();
                if pool.len() < POOL_MAX {
                    pool.push(thread);
                }
                First::Done(outs)
            }
            ffi::LUA_YIELD => {
                // mlua's async threads start from an empty stack after a yield, as they leave
                // one themselves: the values yielded (the "pending" marker) are dropped.
                // SAFETY: the thread is suspended; only the values it yielded are above its
                // frames.
                unsafe { ffi::lua_settop(ts, 0) };
                match thread.into_async::<MultiValue>(()) {
                    Ok(t) => First::Waiting(t),
                    Err(e) => First::Failed(e.to_string()),
                }
            }
            code => {
                let text = if code == ffi::LUA_ERRMEM {
                    // SAFETY: a failed thread holds its error value on top.
                    format!("memory error: {}", unsafe { error_text(ts) })
                } else {
                    format!("runtime error: {}", self.failure_text(lua, &thread))
                };
                // SAFETY: the failed thread is not resumed again; emptying its stack drops
                // what its frames held (a plugin's locals) now, not when the thread is freed.
                unsafe { ffi::lua_settop(ts, 0) };
                First::Failed(text)
            }
        }
    }

    /// The error that ended `thread` (a failed resume; its frames are still there to walk), with
    /// its traceback, as the runner's `describe` writes it; the bare value when that fails.
    fn failure_text(&self, lua: &Lua, thread: &Thread) -> String {
        let ts = thread.state();
        // SAFETY: `ts` is a failed thread of this VM: its error value is on top. Moving one
        // value between threads of one VM raises no error; the stack guard of `exec_raw` takes
        // it as the call's result.
        let err = unsafe {
            if ffi::lua_gettop(ts) == 0 {
                return "unknown error".into();
            }
            lua.exec_raw::<Value>((), |state| ffi::lua_xmove(ts, state, 1))
        };
        match err {
            Ok(err) => self
                .describe
                .call::<String>((thread, err.clone()))
                .unwrap_or_else(|_| match err {
                    Value::String(s) => s.to_string_lossy(),
                    other => format!("(error object is a {} value)", other.type_name()),
                }),
            Err(e) => e.to_string(),
        }
    }
}

/// Copies up to [`OUTS`] results off the top of `ts`'s stack.
///
/// # Safety
/// `ts` must hold at least `n` values.
unsafe fn read_outs(ts: *mut ffi::lua_State, n: c_int) -> Outs {
    let mut outs: Outs = Default::default();
    for (i, o) in outs.iter_mut().enumerate().take(n.max(0) as usize) {
        let idx = i as c_int + 1;
        // SAFETY: `idx <= n` is a valid index; strings are copied before the stack changes.
        *o = unsafe {
            match ffi::lua_type(ts, idx) {
                ffi::LUA_TNIL => Out::Nil,
                ffi::LUA_TBOOLEAN => Out::Bool(ffi::lua_toboolean(ts, idx) != 0),
                ffi::LUA_TNUMBER => Out::Num(ffi::lua_tonumber(ts, idx)),
                ffi::LUA_TSTRING => {
                    let mut len = 0usize;
                    let p = ffi::lua_tolstring(ts, idx, &mut len);
                    if p.is_null() {
                        Out::Nil
                    } else {
                        Out::Str(std::slice::from_raw_parts(p.cast::<u8>(), len).to_vec())
                    }
                }
                _ => Out::Other,
            }
        };
    }
    outs
}

/// The error value on top of a failed thread, as text (not converted by a metamethod: that
/// could raise another error outside any protected call).
///
/// # Safety
/// `ts` must be a thread whose resume failed.
unsafe fn error_text(ts: *mut ffi::lua_State) -> String {
    // SAFETY: the error value is on top of the failed thread's stack.
    unsafe {
        if ffi::lua_gettop(ts) == 0 {
            return "unknown error".into();
        }
        match ffi::lua_type(ts, -1) {
            ffi::LUA_TSTRING | ffi::LUA_TNUMBER => {
                let mut len = 0usize;
                let p = ffi::lua_tolstring(ts, -1, &mut len);
                if p.is_null() {
                    return "unknown error".into();
                }
                String::from_utf8_lossy(std::slice::from_raw_parts(p.cast::<u8>(), len))
                    .into_owned()
            }
            t => {
                let name = std::ffi::CStr::from_ptr(ffi::lua_typename(ts, t));
                format!("(error object is a {} value)", name.to_string_lossy())
            }
        }
    }
}
