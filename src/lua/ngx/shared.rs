//! `ngx.shared.DICT`: dictionaries shared by every worker of the process, as `lua_shared_dict`.
//!
//! A dictionary is a byte-capacity store in Rust behind one mutex (nginx guards each shared
//! zone with one lock too), so workers on different threads see the same values. Capacity is
//! accounted per item as key length + value length + [`ITEM_OVERHEAD`] bytes, a stand-in for
//! nginx's slab and node overhead. When `set`, `add`, `incr` (with `init`) or a push needs room,
//! the least recently used items are evicted and `forcible` is true; the `safe_*` variants never
//! evict and answer `nil, "no memory"` instead. Return values and error strings follow
//! lua-nginx-module.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use mlua::{IntoLuaMulti, Lua, MultiValue, Table, UserData, UserDataMethods, Value};

/// Bytes charged per item on top of its key and value.
pub const ITEM_OVERHEAD: usize = 64;
const MAX_KEY: usize = 65535;

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
    tick: u64,
}

#[derive(Debug, Default)]
struct Store {
    items: HashMap<Vec<u8>, Item>,
    /// Use order: tick → key, oldest first.
    lru: BTreeMap<u64, Vec<u8>>,
    used: usize,
    tick: u64,
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
    fn touch(&mut self, key: &[u8]) {
        self.tick += 1;
        let tick = self.tick;
        if let Some(it) = self.items.get_mut(key) {
            self.lru.remove(&it.tick);
            it.tick = tick;
            self.lru.insert(tick, key.to_vec());
        }
    }

    fn remove(&mut self, key: &[u8]) -> Option<Item> {
        let it = self.items.remove(key)?;
        self.lru.remove(&it.tick);
        self.used -= it.size;
        Some(it)
    }

    /// Makes room for `need` more bytes within `cap`: expired items first, then the least
    /// recently used when `evict`. Returns whether anything live was evicted, or `None` when
    /// there is no room.
    fn room(&mut self, need: usize, cap: usize, evict: bool, keep: &[u8]) -> Option<bool> {
        if self.used + need <= cap {
            return Some(false);
        }
        let now = Instant::now();
        let expired: Vec<Vec<u8>> = self
            .items
            .iter()
            .filter(|(_, it)| !it.live(now))
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if k != keep {
                self.remove(&k);
            }
        }
        let mut forcible = false;
        while self.used + need > cap {
            if !evict {
                return None;
            }
            let victim = self.lru.values().find(|k| k.as_slice() != keep)?.clone();
            self.remove(&victim);
            forcible = true;
        }
        Some(forcible)
    }

    fn put(&mut self, key: &[u8], val: Val, flags: u32, expires: Option<Instant>) {
        let size = key.len() + val_size(&val) + ITEM_OVERHEAD;
        self.remove(key);
        self.tick += 1;
        self.used += size;
        self.lru.insert(self.tick, key.to_vec());
        self.items.insert(
            key.to_vec(),
            Item {
                val,
                flags,
                expires,
                size,
                tick: self.tick,
            },
        );
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
        let live = s.items.get(key).is_some_and(|it| it.live(now));
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
        let freed = s.items.get(key).map_or(0, |it| it.size);
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
}

struct Handle(Arc<Dict>);

fn key_of(v: &Value) -> Result<Vec<u8>, &'static str> {
    match v {
        Value::Nil => Err("nil key"),
        Value::String(s) if s.as_bytes().is_empty() => Err("empty key"),
        Value::String(s) if s.as_bytes().len() > MAX_KEY => Err("key too long"),
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(_) | Value::Number(_) => Ok(v.to_string().unwrap_or_default().into_bytes()),
        _ => Err("bad key type"),
    }
}

fn val_of(v: &Value) -> Result<Option<Val>, &'static str> {
    match v {
        Value::Nil => Ok(None),
        Value::Boolean(b) => Ok(Some(Val::Bool(*b))),
        Value::Integer(i) => Ok(Some(Val::Num(*i as f64))),
        Value::Number(n) => Ok(Some(Val::Num(*n))),
        Value::String(s) => Ok(Some(Val::Str(s.as_bytes().to_vec()))),
        _ => Err("bad value type"),
    }
}

fn to_lua(lua: &Lua, v: &Val) -> mlua::Result<Value> {
    Ok(match v {
        Val::Bool(b) => Value::Boolean(*b),
        Val::Num(n) => Value::Number(*n),
        Val::Str(s) => Value::String(lua.create_string(s)?),
        Val::List(_) => Value::Nil,
    })
}

fn elem_to_lua(lua: &Lua, e: Elem) -> mlua::Result<Value> {
    Ok(match e {
        Elem::Num(n) => Value::Number(n),
        Elem::Str(s) => Value::String(lua.create_string(&s)?),
    })
}

fn fail(lua: &Lua, err: &str) -> mlua::Result<MultiValue> {
    (Value::Nil, err.to_string()).into_lua_multi(lua)
}

macro_rules! key_or_fail {
    ($lua:expr, $k:expr) => {
        match key_of(&$k) {
            Ok(k) => k,
            Err(e) => return fail($lua, e),
        }
    };
}

impl UserData for Handle {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("get", |lua, h, k: Value| {
            let key = key_or_fail!(lua, k);
            let mut s = h.0.lock();
            let now = Instant::now();
            let found = s
                .items
                .get(&key)
                .filter(|it| it.live(now))
                .map(|it| (it.val.clone(), it.flags));
            match found {
                Some((Val::List(_), _)) => fail(lua, "value is a list"),
                Some((v, flags)) => {
                    s.touch(&key);
                    if flags != 0 {
                        (to_lua(lua, &v)?, flags).into_lua_multi(lua)
                    } else {
                        to_lua(lua, &v)?.into_lua_multi(lua)
                    }
                }
                None => Value::Nil.into_lua_multi(lua),
            }
        });
        m.add_method("get_stale", |lua, h, k: Value| {
            let key = key_or_fail!(lua, k);
            let s = h.0.lock();
            let now = Instant::now();
            match s.items.get(&key) {
                Some(it) if matches!(it.val, Val::List(_)) => fail(lua, "value is a list"),
                Some(it) => {
                    let flags = if it.flags != 0 {
                        Value::Integer(it.flags as i64)
                    } else {
                        Value::Nil
                    };
                    (to_lua(lua, &it.val)?, flags, !it.live(now)).into_lua_multi(lua)
                }
                None => Value::Nil.into_lua_multi(lua),
            }
        });
        for (name, mode, evict) in [
            ("set", Mode::Set, true),
            ("safe_set", Mode::Set, false),
            ("add", Mode::Add, true),
            ("safe_add", Mode::Add, false),
            ("replace", Mode::Replace, true),
        ] {
            m.add_method(
                name,
                move |lua, h, (k, v, ttl, flags): (Value, Value, Option<f64>, Option<u32>)| {
                    let key = key_or_fail!(lua, k);
                    let val = match val_of(&v) {
                        Ok(v) => v,
                        Err(e) => return (Value::Nil, e).into_lua_multi(lua),
                    };
                    if mode != Mode::Set && val.is_none() {
                        return (false, "attempt to add or replace nil values", false)
                            .into_lua_multi(lua);
                    }
                    let (ok, err, forcible) = h.0.store_val(
                        &key,
                        val,
                        ttl.unwrap_or(0.0),
                        flags.unwrap_or(0),
                        mode,
                        evict,
                    );
                    (ok, err, forcible).into_lua_multi(lua)
                },
            );
        }
        m.add_method(
            "incr",
            |lua, h, (k, by, init, init_ttl): (Value, Value, Option<f64>, Option<f64>)| {
                let key = key_or_fail!(lua, k);
                let Some(by) = (match by {
                    Value::Integer(i) => Some(i as f64),
                    Value::Number(n) => Some(n),
                    _ => None,
                }) else {
                    return fail(lua, "cannot add or subtract a non-number");
                };
                let dict = &h.0;
                let mut s = dict.lock();
                let now = Instant::now();
                let current = s
                    .items
                    .get(&key)
                    .filter(|it| it.live(now))
                    .map(|it| it.val.clone());
                match current {
                    Some(Val::Num(n)) => {
                        let v = n + by;
                        if let Some(it) = s.items.get_mut(&key) {
                            it.val = Val::Num(v);
                        }
                        s.touch(&key);
                        // `forcible` is only returned when `init` was given.
                        if init.is_some() {
                            (v, Value::Nil, false).into_lua_multi(lua)
                        } else {
                            v.into_lua_multi(lua)
                        }
                    }
                    Some(_) => fail(lua, "not a number"),
                    None => match init {
                        None => fail(lua, "not found"),
                        Some(init) => {
                            // Initialise under the same lock: two workers incrementing a missing
                            // key at once must both count.
                            let v = init + by;
                            let val = Val::Num(v);
                            let size = key.len() + val_size(&val) + ITEM_OVERHEAD;
                            let freed = s.items.get(&key).map_or(0, |it| it.size);
                            match s.room(size.saturating_sub(freed), dict.capacity, true, &key) {
                                Some(forcible) => {
                                    let ttl = init_ttl.unwrap_or(0.0);
                                    let expires =
                                        (ttl > 0.0).then(|| now + Duration::from_secs_f64(ttl));
                                    s.put(&key, val, 0, expires);
                                    (v, Value::Nil, forcible).into_lua_multi(lua)
                                }
                                None => (Value::Nil, "no memory", false).into_lua_multi(lua),
                            }
                        }
                    },
                }
            },
        );
        m.add_method("delete", |lua, h, k: Value| {
            let key = key_or_fail!(lua, k);
            h.0.lock().remove(&key);
            true.into_lua_multi(lua)
        });
        m.add_method("flush_all", |_, h, ()| {
            let mut s = h.0.lock();
            let past = Instant::now() - Duration::from_millis(1);
            for it in s.items.values_mut() {
                it.expires = Some(past);
            }
            Ok(())
        });
        m.add_method("flush_expired", |_, h, max: Option<usize>| {
            let mut s = h.0.lock();
            let now = Instant::now();
            let max = max.unwrap_or(0);
            let mut expired: Vec<Vec<u8>> = s
                .items
                .iter()
                .filter(|(_, it)| !it.live(now))
                .map(|(k, _)| k.clone())
                .collect();
            if max > 0 {
                expired.truncate(max);
            }
            for k in &expired {
                s.remove(k);
            }
            Ok(expired.len())
        });
        m.add_method("get_keys", |lua, h, max: Option<usize>| {
            let s = h.0.lock();
            let now = Instant::now();
            let max = max.unwrap_or(1024);
            let t = lua.create_table()?;
            for (k, _) in s.items.iter().filter(|(_, it)| it.live(now)) {
                if max > 0 && t.raw_len() >= max {
                    break;
                }
                t.raw_push(lua.create_string(k)?)?;
            }
            Ok(t)
        });
        m.add_method("ttl", |lua, h, k: Value| {
            let key = key_or_fail!(lua, k);
            let s = h.0.lock();
            let now = Instant::now();
            // An expired item that is not evicted yet reports how long ago it expired, as a
            // negative ttl (nginx evicts lazily, too).
            match s.items.get(&key) {
                Some(it) => it
                    .expires
                    .map_or(0.0, |e| {
                        if e >= now {
                            e.duration_since(now).as_secs_f64()
                        } else {
                            -now.duration_since(e).as_secs_f64()
                        }
                    })
                    .into_lua_multi(lua),
                None => fail(lua, "not found"),
            }
        });
        m.add_method("expire", |lua, h, (k, ttl): (Value, f64)| {
            let key = key_or_fail!(lua, k);
            let mut s = h.0.lock();
            let now = Instant::now();
            match s.items.get_mut(&key).filter(|it| it.live(now)) {
                Some(it) => {
                    it.expires = (ttl > 0.0).then(|| now + Duration::from_secs_f64(ttl));
                    true.into_lua_multi(lua)
                }
                None => fail(lua, "not found"),
            }
        });
        m.add_method("capacity", |_, h, ()| Ok(h.0.capacity));
        m.add_method("free_space", |_, h, ()| {
            Ok(h.0.capacity.saturating_sub(h.0.lock().used))
        });
        for (name, front) in [("lpush", true), ("rpush", false)] {
            m.add_method(name, move |lua, h, (k, v): (Value, Value)| {
                let key = key_or_fail!(lua, k);
                let elem = match v {
                    Value::Integer(i) => Elem::Num(i as f64),
                    Value::Number(n) => Elem::Num(n),
                    Value::String(s) => Elem::Str(s.as_bytes().to_vec()),
                    _ => return fail(lua, "bad value type"),
                };
                let dict = &h.0;
                let mut s = dict.lock();
                let now = Instant::now();
                let mut list = match s
                    .items
                    .get(&key)
                    .filter(|it| it.live(now))
                    .map(|it| it.val.clone())
                {
                    Some(Val::List(l)) => l,
                    Some(_) => return fail(lua, "value not a list"),
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
                let freed = s.items.get(&key).map_or(0, |it| it.size);
                if s.room(size.saturating_sub(freed), dict.capacity, true, &key)
                    .is_none()
                {
                    return fail(lua, "no memory");
                }
                let expires = s.items.get(&key).and_then(|it| it.expires);
                s.put(&key, val, 0, expires);
                len.into_lua_multi(lua)
            });
        }
        for (name, front) in [("lpop", true), ("rpop", false)] {
            m.add_method(name, move |lua, h, k: Value| {
                let key = key_or_fail!(lua, k);
                let mut s = h.0.lock();
                let now = Instant::now();
                let Some(it) = s.items.get_mut(&key).filter(|it| it.live(now)) else {
                    return Value::Nil.into_lua_multi(lua);
                };
                let Val::List(list) = &mut it.val else {
                    return fail(lua, "value not a list");
                };
                let e = if front {
                    list.pop_front()
                } else {
                    list.pop_back()
                };
                let empty = list.is_empty();
                if empty {
                    s.remove(&key);
                }
                match e {
                    Some(e) => elem_to_lua(lua, e)?.into_lua_multi(lua),
                    None => Value::Nil.into_lua_multi(lua),
                }
            });
        }
        m.add_method("llen", |lua, h, k: Value| {
            let key = key_or_fail!(lua, k);
            let s = h.0.lock();
            let now = Instant::now();
            match s
                .items
                .get(&key)
                .filter(|it| it.live(now))
                .map(|it| &it.val)
            {
                Some(Val::List(l)) => l.len().into_lua_multi(lua),
                Some(_) => fail(lua, "value not a list"),
                None => 0.into_lua_multi(lua),
            }
        });
    }
}

/// Installs `ngx.shared` with one object per dictionary.
pub fn register(lua: &Lua, ngx: &Table, dicts: &SharedDicts) -> mlua::Result<()> {
    let shared = lua.create_table()?;
    for (name, d) in &dicts.dicts {
        shared.set(name.as_str(), lua.create_userdata(Handle(d.clone()))?)?;
    }
    ngx.set("shared", shared)?;
    Ok(())
}
