//! `ngx.shared.DICT`: dictionaries shared by every worker of the process, as `lua_shared_dict`.
//!
//! A dictionary is a byte-capacity store in Rust behind one mutex (nginx guards each shared
//! zone with one lock too), so workers on different threads see the same values. Capacity is
//! accounted per item as key length + value length + [`ITEM_OVERHEAD`] bytes, a stand-in for
//! nginx's slab and node overhead. When `set`, `add`, `incr` (with `init`) or a push needs room,
//! the least recently used items are evicted and `forcible` is true; the `safe_*` variants never
//! evict and answer `nil, "no memory"` instead. Return values and error strings follow
//! lua-nginx-module.
//!
//! The use order is a linked list through the items (as nginx's queue), so a read moves its
//! item to the front without allocating. The methods are raw C functions (`lua::raw`): they are
//! on the request path of every counting and caching plugin.

use std::collections::{HashMap, VecDeque};
use std::ffi::c_int;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mlua::{Lua, Table, ffi};

use crate::lua::raw::{self, Args, Ret, Rets, Ty};

/// Bytes charged per item on top of its key and value.
pub const ITEM_OVERHEAD: usize = 64;
pub const MAX_KEY: usize = 65535;
/// No slot: the ends of the use-order list.
const NIL: usize = usize::MAX;

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Bool(bool),
    Num(f64),
    Str(Vec<u8>),
    List(VecDeque<Elem>),
}

#[derive(Debug, Clone, PartialEq)]
enum Elem {
    Num(f64),
    Str(Vec<u8>),
}

#[derive(Debug)]
struct Item {
    val: Val,
    flags: u32,
    expires: Option<Instant>,
    size: usize,
}

/// An item in its slot, linked into the use order (`prev` is more recent).
#[derive(Debug)]
struct Slot {
    key: Box<[u8]>,
    item: Item,
    prev: usize,
    next: usize,
}

#[derive(Debug)]
struct Store {
    /// Key → slot. The std hasher: keys come from requests, so they must not be able to
    /// collide on purpose.
    index: HashMap<Box<[u8]>, usize>,
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    /// Most and least recently used slots.
    head: usize,
    tail: usize,
    used: usize,
}

impl Default for Store {
    fn default() -> Store {
        Store {
            index: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            used: 0,
        }
    }
}

/// One dictionary.
#[derive(Debug)]
pub struct Dict {
    capacity: usize,
    store: Mutex<Store>,
}

fn val_size(v: &Val) -> usize {
    match v {
        Val::Bool(_) => 1,
        Val::Num(_) => 8,
        Val::Str(s) => s.len(),
        Val::List(l) => l
            .iter()
            .map(|e| 16 + if let Elem::Str(s) = e { s.len() } else { 8 })
            .sum(),
    }
}

impl Item {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|e| e > now)
    }
}

impl Store {
    fn slot(&self, i: usize) -> Option<&Slot> {
        self.slots.get(i).and_then(Option::as_ref)
    }

    fn slot_mut(&mut self, i: usize) -> Option<&mut Slot> {
        self.slots.get_mut(i).and_then(Option::as_mut)
    }

    fn get(&self, key: &[u8]) -> Option<&Item> {
        let i = *self.index.get(key)?;
        self.slot(i).map(|s| &s.item)
    }

    fn get_mut(&mut self, key: &[u8]) -> Option<&mut Item> {
        let i = *self.index.get(key)?;
        self.slot_mut(i).map(|s| &mut s.item)
    }

    /// The live item under `key`.
    fn live(&self, key: &[u8], now: Instant) -> Option<&Item> {
        self.get(key).filter(|it| it.live(now))
    }

    fn unlink(&mut self, i: usize) {
        let (prev, next) = match self.slot(i) {
            Some(s) => (s.prev, s.next),
            None => return,
        };
        match self.slot_mut(prev) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slot_mut(next) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
    }

    fn link_front(&mut self, i: usize) {
        let old = self.head;
        if let Some(s) = self.slot_mut(i) {
            s.prev = NIL;
            s.next = old;
        }
        match self.slot_mut(old) {
            Some(h) => h.prev = i,
            None => self.tail = i,
        }
        self.head = i;
    }

    /// Slot `i` was used: it becomes the most recently used.
    fn touch_slot(&mut self, i: usize) {
        if self.head != i {
            self.unlink(i);
            self.link_front(i);
        }
    }

    /// The slot of the live item under `key`.
    fn live_slot(&self, key: &[u8], now: Instant) -> Option<usize> {
        let i = *self.index.get(key)?;
        self.slot(i).filter(|s| s.item.live(now)).map(|_| i)
    }

    fn remove(&mut self, key: &[u8]) -> Option<Item> {
        let i = self.index.remove(key)?;
        self.unlink(i);
        let slot = self.slots.get_mut(i)?.take()?;
        self.free.push(i);
        self.used -= slot.item.size;
        Some(slot.item)
    }

    /// Makes room for `need` more bytes within `cap`: expired items first, then the least
    /// recently used when `evict`. Returns whether anything live was evicted, or `None` when
    /// there is no room.
    fn room(&mut self, need: usize, cap: usize, evict: bool, keep: &[u8]) -> Option<bool> {
        if self.used + need <= cap {
            return Some(false);
        }
        let now = Instant::now();
        let expired: Vec<Box<[u8]>> = self
            .slots
            .iter()
            .flatten()
            .filter(|s| !s.item.live(now) && &*s.key != keep)
            .map(|s| s.key.clone())
            .collect();
        for k in expired {
            self.remove(&k);
        }
        let mut forcible = false;
        while self.used + need > cap {
            if !evict {
                return None;
            }
            // The least recently used item other than `keep`.
            let mut i = self.tail;
            while let Some(s) = self.slot(i) {
                if &*s.key != keep {
                    break;
                }
                i = s.prev;
            }
            let victim = self.slot(i)?.key.clone();
            self.remove(&victim);
            forcible = true;
        }
        Some(forcible)
    }

    fn put(&mut self, key: &[u8], val: Val, flags: u32, expires: Option<Instant>) {
        let size = key.len() + val_size(&val) + ITEM_OVERHEAD;
        self.remove(key);
        self.used += size;
        let slot = Slot {
            key: key.into(),
            item: Item {
                val,
                flags,
                expires,
                size,
            },
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.link_front(i);
        self.index.insert(key.into(), i);
    }

    fn items(&self) -> impl Iterator<Item = (&[u8], &Item)> {
        self.slots.iter().flatten().map(|s| (&*s.key, &s.item))
    }
}

/// How `set`-like operations treat an existing key.
#[derive(Clone, Copy, PartialEq)]
enum Mode {
    Set,
    Add,
    Replace,
}

impl Dict {
    pub fn new(capacity: usize) -> Dict {
        Dict {
            capacity,
            store: Mutex::new(Store::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Store> {
        match self.store.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// `set`/`add`/`replace` and their `safe_` forms: `(ok, err, forcible)`.
    fn store_val(
        &self,
        key: &[u8],
        val: Option<Val>,
        ttl: f64,
        flags: u32,
        mode: Mode,
        evict: bool,
    ) -> (bool, Option<&'static str>, bool) {
        let mut s = self.lock();
        let now = Instant::now();
        let live = s.live(key, now).is_some();
        match mode {
            Mode::Add if live => return (false, Some("exists"), false),
            Mode::Replace if !live => return (false, Some("not found"), false),
            _ => {}
        }
        let Some(val) = val else {
            s.remove(key);
            return (true, None, false);
        };
        let size = key.len() + val_size(&val) + ITEM_OVERHEAD;
        let freed = s.get(key).map_or(0, |it| it.size);
        let need = size.saturating_sub(freed);
        match s.room(need, self.capacity, evict, key) {
            Some(forcible) => {
                let expires = (ttl > 0.0).then(|| now + Duration::from_secs_f64(ttl));
                s.put(key, val, flags, expires);
                (true, None, forcible)
            }
            None => (false, Some("no memory"), false),
        }
    }

    /// `incr(key, by, init, init_ttl)`.
    fn incr(&self, key: &[u8], by: f64, init: Option<f64>, init_ttl: f64) -> Rets {
        match self.incr_value(key, by, init, init_ttl) {
            Incr::Num(v, None) => Rets::one(Ret::Num(v)),
            Incr::Num(v, Some(forcible)) => Rets::three(Ret::Num(v), Ret::Nil, Ret::Bool(forcible)),
            Incr::NoMemory => Rets::three(Ret::Nil, Ret::Static("no memory"), Ret::Bool(false)),
            Incr::Fail(err) => fail(err),
        }
    }

    /// [`Dict::incr`]'s outcome before it becomes Lua values (the FFI entry point reads it).
    pub fn incr_value(&self, key: &[u8], by: f64, init: Option<f64>, init_ttl: f64) -> Incr {
        let mut s = self.lock();
        let now = Instant::now();
        // One lookup for the common case: a live number, changed in place.
        let slot = s.live_slot(key, now);
        let current = slot.and_then(|i| s.slot_mut(i)).map(|sl| &mut sl.item.val);
        match current {
            Some(Val::Num(n)) => {
                *n += by;
                let v = *n;
                if let Some(i) = slot {
                    s.touch_slot(i);
                }
                // `forcible` is only returned when `init` was given.
                Incr::Num(v, init.map(|_| false))
            }
            Some(_) => Incr::Fail("not a number"),
            None => match init {
                None => Incr::Fail("not found"),
                Some(init) => {
                    // Initialise under the same lock: two workers incrementing a missing key
                    // at once must both count.
                    let v = init + by;
                    let val = Val::Num(v);
                    let size = key.len() + val_size(&val) + ITEM_OVERHEAD;
                    let freed = s.get(key).map_or(0, |it| it.size);
                    match s.room(size.saturating_sub(freed), self.capacity, true, key) {
                        Some(forcible) => {
                            let expires =
                                (init_ttl > 0.0).then(|| now + Duration::from_secs_f64(init_ttl));
                            s.put(key, val, 0, expires);
                            Incr::Num(v, Some(forcible))
                        }
                        None => Incr::NoMemory,
                    }
                }
            },
        }
    }
}

/// What `incr` did: the new value (with `forcible` when `init` was given), or why not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Incr {
    Num(f64, Option<bool>),
    /// "not found", "not a number".
    Fail(&'static str),
    /// The dictionary had no room for the initial value.
    NoMemory,
}

/// Every dictionary the node config declares, shared by all workers.
#[derive(Debug, Default, Clone)]
pub struct SharedDicts {
    dicts: HashMap<String, Arc<Dict>>,
}

impl SharedDicts {
    /// `(name, capacity in bytes)` pairs, as `lua_shared_dict` declares them.
    pub fn new(decl: &[(String, usize)]) -> SharedDicts {
        SharedDicts {
            dicts: decl
                .iter()
                .map(|(n, c)| (n.clone(), Arc::new(Dict::new(*c))))
                .collect(),
        }
    }

    /// Every dictionary with its name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<Dict>)> {
        self.dicts.iter().map(|(n, d)| (n.as_str(), d))
    }
}

/// `nil, err` as the methods return failures.
fn fail(err: &'static str) -> Rets {
    Rets::two(Ret::Nil, Ret::Static(err))
}

/// The key argument (2; 1 is the dictionary): strings as they are, numbers as `tostring`
/// writes them.
fn key_arg(args: &Args) -> Result<std::borrow::Cow<'_, [u8]>, &'static str> {
    match args.ty(2) {
        Ty::Nil | Ty::None => Err("nil key"),
        Ty::Str | Ty::Number => {
            let k = args.text(2).unwrap_or_default();
            if k.is_empty() {
                Err("empty key")
            } else if k.len() > MAX_KEY {
                Err("key too long")
            } else {
                Ok(k)
            }
        }
        _ => Err("bad key type"),
    }
}

fn val_arg(args: &Args, i: c_int) -> Result<Option<Val>, &'static str> {
    match args.ty(i) {
        Ty::Nil | Ty::None => Ok(None),
        Ty::Bool => Ok(args.bool(i).map(Val::Bool)),
        Ty::Number => Ok(args.number(i).map(Val::Num)),
        Ty::Str => Ok(args.str(i).map(|s| Val::Str(s.to_vec()))),
        _ => Err("bad value type"),
    }
}

fn to_ret(v: &Val) -> Ret {
    match v {
        Val::Bool(b) => Ret::Bool(*b),
        Val::Num(n) => Ret::Num(*n),
        Val::Str(s) => Ret::Str(s.clone()),
        Val::List(_) => Ret::Nil,
    }
}

/// The dictionary a method was called on: argument 1, a userdata whose metatable is the
/// method's upvalue 1 (anything else is refused, never read as a dictionary).
fn dict(args: &Args) -> Result<&Dict, String> {
    let p = args
        .userdata(1, 1)
        .ok_or_else(|| "bad \"zone\" argument: call the methods as dict:method(...)".to_string())?;
    // SAFETY: a userdata with the dictionaries' metatable holds an `Option<Arc<Dict>>`,
    // written when it was made; it is on the stack (so alive) for the whole call.
    let slot = unsafe { &*(p as *const Option<Arc<Dict>>) };
    slot.as_deref()
        .ok_or_else(|| "the shared dictionary is closed".to_string())
}

/// Runs `f` on the dictionary and key of a `dict:method(key, ...)` call; a bad key answers
/// `nil, err`, as lua-nginx-module does.
fn keyed(args: &Args, f: impl FnOnce(&Dict, &[u8]) -> Rets) -> Result<Rets, String> {
    let d = dict(args)?;
    match key_arg(args) {
        Ok(k) => Ok(f(d, &k)),
        Err(e) => Ok(fail(e)),
    }
}

crate::raw_fn!(dict_get, |args| {
    keyed(args, |d, key| {
        let mut s = d.lock();
        let now = Instant::now();
        let slot = s.live_slot(key, now);
        let found = slot.and_then(|i| s.slot(i)).map(|sl| {
            (
                matches!(sl.item.val, Val::List(_)),
                to_ret(&sl.item.val),
                sl.item.flags,
            )
        });
        match found {
            Some((true, _, _)) => fail("value is a list"),
            Some((false, v, flags)) => {
                if let Some(i) = slot {
                    s.touch_slot(i);
                }
                if flags != 0 {
                    Rets::two(v, Ret::Num(flags as f64))
                } else {
                    Rets::one(v)
                }
            }
            None => Rets::one(Ret::Nil),
        }
    })
});

crate::raw_fn!(dict_get_stale, |args| {
    keyed(args, |d, key| {
        let s = d.lock();
        let now = Instant::now();
        match s.get(key) {
            Some(it) if matches!(it.val, Val::List(_)) => fail("value is a list"),
            Some(it) => {
                let flags = if it.flags != 0 {
                    Ret::Num(it.flags as f64)
                } else {
                    Ret::Nil
                };
                Rets::three(to_ret(&it.val), flags, Ret::Bool(!it.live(now)))
            }
            None => Rets::one(Ret::Nil),
        }
    })
});

/// `set`, `safe_set`, `add`, `safe_add`, `replace`: `(key, value, exptime, flags)`.
fn store(args: &Args, mode: Mode, evict: bool) -> Result<Rets, String> {
    keyed(args, |d, key| {
        let val = match val_arg(args, 3) {
            Ok(v) => v,
            Err(e) => return fail(e),
        };
        if mode != Mode::Set && val.is_none() {
            return Rets::three(
                Ret::Bool(false),
                Ret::Static("attempt to add or replace nil values"),
                Ret::Bool(false),
            );
        }
        let ttl = args.number(4).unwrap_or(0.0);
        let flags = args.number(5).unwrap_or(0.0).max(0.0) as u32;
        let (ok, err, forcible) = d.store_val(key, val, ttl, flags, mode, evict);
        Rets::three(
            Ret::Bool(ok),
            err.map_or(Ret::Nil, Ret::Static),
            Ret::Bool(forcible),
        )
    })
}

crate::raw_fn!(dict_set, |args| store(args, Mode::Set, true));
crate::raw_fn!(dict_safe_set, |args| store(args, Mode::Set, false));
crate::raw_fn!(dict_add, |args| store(args, Mode::Add, true));
crate::raw_fn!(dict_safe_add, |args| store(args, Mode::Add, false));
crate::raw_fn!(dict_replace, |args| store(args, Mode::Replace, true));

crate::raw_fn!(dict_incr, |args| {
    keyed(args, |d, key| {
        let Some(by) = args.number(3) else {
            return fail("cannot add or subtract a non-number");
        };
        d.incr(key, by, args.number(4), args.number(5).unwrap_or(0.0))
    })
});

crate::raw_fn!(dict_delete, |args| {
    keyed(args, |d, key| {
        d.lock().remove(key);
        Rets::one(Ret::Bool(true))
    })
});

crate::raw_fn!(dict_flush_all, |args| {
    let d = dict(args)?;
    let mut s = d.lock();
    let past = Instant::now() - Duration::from_millis(1);
    for it in s.slots.iter_mut().flatten() {
        it.item.expires = Some(past);
    }
    Ok(Rets::none())
});

crate::raw_fn!(dict_flush_expired, |args| {
    let d = dict(args)?;
    let max = args.number(2).unwrap_or(0.0).max(0.0) as usize;
    let mut s = d.lock();
    let now = Instant::now();
    let mut expired: Vec<Box<[u8]>> = s
        .items()
        .filter(|(_, it)| !it.live(now))
        .map(|(k, _)| k.into())
        .collect();
    if max > 0 {
        expired.truncate(max);
    }
    for k in &expired {
        s.remove(k);
    }
    Ok(Ret::Num(expired.len() as f64).into())
});

crate::raw_fn!(dict_get_keys, |args| {
    let d = dict(args)?;
    let max = args.number(2).map_or(1024, |n| n.max(0.0) as usize);
    let s = d.lock();
    let now = Instant::now();
    let keys = s
        .items()
        .filter(|(_, it)| it.live(now))
        .take(if max > 0 { max } else { usize::MAX })
        .map(|(k, _)| k.to_vec())
        .collect();
    Ok(Ret::List(keys).into())
});

crate::raw_fn!(dict_ttl, |args| {
    keyed(args, |d, key| {
        let s = d.lock();
        let now = Instant::now();
        // An expired item that is not evicted yet reports how long ago it expired, as a
        // negative ttl (nginx evicts lazily, too).
        match s.get(key) {
            Some(it) => Rets::one(Ret::Num(it.expires.map_or(0.0, |e| {
                if e >= now {
                    e.duration_since(now).as_secs_f64()
                } else {
                    -now.duration_since(e).as_secs_f64()
                }
            }))),
            None => fail("not found"),
        }
    })
});

crate::raw_fn!(dict_expire, |args| {
    let Some(ttl) = args.number(3) else {
        return Err(format!(
            "bad argument #2 to 'expire' (number expected, got {})",
            args.ty(3).name()
        ));
    };
    keyed(args, |d, key| {
        let mut s = d.lock();
        let now = Instant::now();
        match s.get_mut(key).filter(|it| it.live(now)) {
            Some(it) => {
                it.expires = (ttl > 0.0).then(|| now + Duration::from_secs_f64(ttl));
                Rets::one(Ret::Bool(true))
            }
            None => fail("not found"),
        }
    })
});

crate::raw_fn!(dict_capacity, |args| {
    Ok(Ret::Num(dict(args)?.capacity as f64).into())
});

crate::raw_fn!(dict_free_space, |args| {
    let d = dict(args)?;
    let used = d.lock().used;
    Ok(Ret::Num(d.capacity.saturating_sub(used) as f64).into())
});

fn push(args: &Args, front: bool) -> Result<Rets, String> {
    keyed(args, |d, key| {
        let elem = match args.ty(3) {
            Ty::Number => Elem::Num(args.number(3).unwrap_or(0.0)),
            Ty::Str => Elem::Str(args.str(3).unwrap_or_default().to_vec()),
            _ => return fail("bad value type"),
        };
        let mut s = d.lock();
        let now = Instant::now();
        let mut list = match s.live(key, now).map(|it| it.val.clone()) {
            Some(Val::List(l)) => l,
            Some(_) => return fail("value not a list"),
            None => VecDeque::new(),
        };
        if front {
            list.push_front(elem);
        } else {
            list.push_back(elem);
        }
        let len = list.len();
        let val = Val::List(list);
        let size = key.len() + val_size(&val) + ITEM_OVERHEAD;
        let freed = s.get(key).map_or(0, |it| it.size);
        if s.room(size.saturating_sub(freed), d.capacity, true, key)
            .is_none()
        {
            return fail("no memory");
        }
        let expires = s.get(key).and_then(|it| it.expires);
        s.put(key, val, 0, expires);
        Rets::one(Ret::Num(len as f64))
    })
}

fn pop(args: &Args, front: bool) -> Result<Rets, String> {
    keyed(args, |d, key| {
        let mut s = d.lock();
        let now = Instant::now();
        let Some(it) = s.get_mut(key).filter(|it| it.live(now)) else {
            return Rets::one(Ret::Nil);
        };
        let Val::List(list) = &mut it.val else {
            return fail("value not a list");
        };
        let e = if front {
            list.pop_front()
        } else {
            list.pop_back()
        };
        if list.is_empty() {
            s.remove(key);
        }
        Rets::one(match e {
            Some(Elem::Num(n)) => Ret::Num(n),
            Some(Elem::Str(s)) => Ret::Str(s),
            None => Ret::Nil,
        })
    })
}

crate::raw_fn!(dict_lpush, |args| push(args, true));
crate::raw_fn!(dict_rpush, |args| push(args, false));
crate::raw_fn!(dict_lpop, |args| pop(args, true));
crate::raw_fn!(dict_rpop, |args| pop(args, false));

crate::raw_fn!(dict_llen, |args| {
    keyed(args, |d, key| {
        let s = d.lock();
        match s.live(key, Instant::now()).map(|it| &it.val) {
            Some(Val::List(l)) => Rets::one(Ret::Num(l.len() as f64)),
            Some(_) => fail("value not a list"),
            None => Rets::one(Ret::Num(0.0)),
        }
    })
});

/// `__gc` of a dictionary handle: drops the worker's reference to the dictionary (once; the
/// slot is emptied, and the metatable is hidden from `getmetatable`).
unsafe extern "C-unwind" fn dict_gc(l: *mut ffi::lua_State) -> c_int {
    // SAFETY: `__gc` gets the handle; handles are only made by `new_handle`.
    unsafe {
        let p = ffi::lua_touserdata(l, 1) as *mut Option<Arc<Dict>>;
        if !p.is_null() {
            drop((*p).take());
        }
    }
    0
}

const METHODS: &[(&str, ffi::lua_CFunction)] = &[
    ("get", dict_get),
    ("get_stale", dict_get_stale),
    ("set", dict_set),
    ("safe_set", dict_safe_set),
    ("add", dict_add),
    ("safe_add", dict_safe_add),
    ("replace", dict_replace),
    ("incr", dict_incr),
    ("delete", dict_delete),
    ("flush_all", dict_flush_all),
    ("flush_expired", dict_flush_expired),
    ("get_keys", dict_get_keys),
    ("ttl", dict_ttl),
    ("expire", dict_expire),
    ("capacity", dict_capacity),
    ("free_space", dict_free_space),
    ("lpush", dict_lpush),
    ("rpush", dict_rpush),
    ("lpop", dict_lpop),
    ("rpop", dict_rpop),
    ("llen", dict_llen),
];

/// A handle on `dict`: a userdata holding a reference to it, with the dictionaries' metatable.
fn new_handle(lua: &Lua, mt: &Table, dict: Arc<Dict>) -> mlua::Result<mlua::Value> {
    let mut dict = Some(dict);
    // SAFETY: a protected call with the metatable as argument 1; the new userdata's memory is
    // initialised before anything else can see it.
    unsafe {
        lua.exec_raw(mt, |l| {
            let p = ffi::lua_newuserdata(l, std::mem::size_of::<Option<Arc<Dict>>>())
                as *mut Option<Arc<Dict>>;
            std::ptr::write(p, dict.take());
            ffi::lua_pushvalue(l, 1);
            ffi::lua_setmetatable(l, -2);
            ffi::lua_remove(l, 1);
        })
    }
}

/// Installs `ngx.shared` with one object per dictionary.
pub fn register(lua: &Lua, ngx: &Table, dicts: &SharedDicts) -> mlua::Result<()> {
    let mt = lua.create_table()?;
    let methods = lua.create_table()?;
    for (name, f) in METHODS {
        // Each method checks its first argument against the metatable (its upvalue 1).
        methods.raw_set(*name, raw::function(lua, *f, mt.clone())?)?;
    }
    mt.raw_set("__index", methods)?;
    // SAFETY: `dict_gc` only reads the handle it is given.
    mt.raw_set("__gc", unsafe { lua.create_c_function(dict_gc)? })?;
    mt.raw_set("__metatable", "ngx.shared.DICT")?;
    let shared = lua.create_table()?;
    for (name, d) in &dicts.dicts {
        shared.set(name.as_str(), new_handle(lua, &mt, d.clone())?)?;
    }
    ngx.set("shared", shared)?;
    Ok(())
}
