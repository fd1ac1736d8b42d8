//! `cjson` and `cjson.safe`: lua-cjson's API and output, byte for byte.
//!
//! What plugins and APISIX's tests compare is the exact text: numbers as C's `%.14g`, keys in
//! table-iteration order, `/` escaped as `\/` unless `encode_escape_forward_slash(false)`, DEL as
//! `\u007f`, empty tables as `{}` unless marked as arrays, and lua-cjson's error messages. Each
//! instance (`cjson`, `cjson.safe`, every `cjson.new()`) keeps its own settings; `cjson.safe`
//! returns `nil, err` where `cjson` raises.

use std::cell::RefCell;
use std::rc::Rc;

use mlua::{Function, IntoLuaMulti, LightUserData, Lua, Table, Value};

/// Per-instance settings, with lua-cjson's defaults.
#[derive(Debug, Clone)]
struct Config {
    escape_forward_slash: bool,
    empty_table_as_object: bool,
    max_depth: usize,
    decode_max_depth: usize,
    precision: usize,
    sparse_convert: bool,
    sparse_ratio: u32,
    sparse_safe: u32,
    /// 0: error, 1: `NaN`/`Infinity`, 2: `null`.
    invalid_numbers: u8,
    decode_array_with_array_mt: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            escape_forward_slash: true,
            empty_table_as_object: true,
            max_depth: 1000,
            decode_max_depth: 1000,
            precision: 14,
            sparse_convert: false,
            sparse_ratio: 2,
            sparse_safe: 10,
            invalid_numbers: 0,
            decode_array_with_array_mt: false,
        }
    }
}

static EMPTY_ARRAY: u8 = 0;

fn null() -> LightUserData {
    LightUserData(std::ptr::null_mut())
}

fn empty_array() -> LightUserData {
    LightUserData(&EMPTY_ARRAY as *const u8 as *mut std::ffi::c_void)
}

/// The metatables shared by every instance of one VM.
#[derive(Clone)]
struct Marks {
    array_mt: Table,
    empty_array_mt: Table,
}

/// C's `%.{prec}g`.
pub fn fmt_g(x: f64, prec: usize) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let prec = prec.max(1);
    let sci = format!("{:.*e}", prec - 1, x);
    let (mant, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let mant = strip_zeros(mant);
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{mant}e{sign}{:02}", exp.abs())
    } else {
        let decimals = (prec as i32 - 1 - exp).max(0) as usize;
        strip_zeros(&format!("{:.*}", decimals, x)).to_string()
    }
}

fn strip_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

struct Encoder<'a> {
    cfg: &'a Config,
    marks: &'a Marks,
    out: Vec<u8>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Nil => "nil",
        Value::Boolean(_) => "boolean",
        Value::LightUserData(_) => "userdata",
        Value::Integer(_) | Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Table(_) => "table",
        Value::Function(_) => "function",
        Value::Thread(_) => "thread",
        _ => "userdata",
    }
}

impl Encoder<'_> {
    fn string(&mut self, s: &[u8]) {
        self.out.push(b'"');
        for &b in s {
            match b {
                b'"' => self.out.extend_from_slice(b"\\\""),
                b'\\' => self.out.extend_from_slice(b"\\\\"),
                b'/' if self.cfg.escape_forward_slash => self.out.extend_from_slice(b"\\/"),
                0x08 => self.out.extend_from_slice(b"\\b"),
                b'\t' => self.out.extend_from_slice(b"\\t"),
                b'\n' => self.out.extend_from_slice(b"\\n"),
                0x0c => self.out.extend_from_slice(b"\\f"),
                b'\r' => self.out.extend_from_slice(b"\\r"),
                c if c < 0x20 || c == 0x7f => self
                    .out
                    .extend_from_slice(format!("\\u{:04x}", c).as_bytes()),
                c => self.out.push(c),
            }
        }
        self.out.push(b'"');
    }

    fn number(&mut self, x: f64) -> Result<(), String> {
        if !x.is_finite() {
            match self.cfg.invalid_numbers {
                0 => return Err("Cannot serialise number: must not be NaN or Infinity".into()),
                1 => {
                    let s: &[u8] = if x.is_nan() {
                        b"NaN"
                    } else if x < 0.0 {
                        b"-Infinity"
                    } else {
                        b"Infinity"
                    };
                    self.out.extend_from_slice(s);
                    return Ok(());
                }
                _ => {
                    self.out.extend_from_slice(b"null");
                    return Ok(());
                }
            }
        }
        self.out
            .extend_from_slice(fmt_g(x, self.cfg.precision).as_bytes());
        Ok(())
    }

    fn value(&mut self, v: &Value, depth: usize) -> Result<(), String> {
        match v {
            Value::Nil => self.out.extend_from_slice(b"null"),
            Value::Boolean(b) => self
                .out
                .extend_from_slice(if *b { b"true" } else { b"false" }),
            Value::Integer(i) => self.number(*i as f64)?,
            Value::Number(n) => self.number(*n)?,
            Value::String(s) => self.string(&s.as_bytes()),
            Value::LightUserData(u) if u.0.is_null() => self.out.extend_from_slice(b"null"),
            Value::LightUserData(u) if *u == empty_array() => self.out.extend_from_slice(b"[]"),
            Value::Table(t) => self.table(t, depth + 1)?,
            other => {
                return Err(format!(
                    "Cannot serialise {}: type not supported",
                    type_name(other)
                ));
            }
        }
        Ok(())
    }

    fn table(&mut self, t: &Table, depth: usize) -> Result<(), String> {
        if depth > self.cfg.max_depth {
            return Err(format!("Cannot serialise, excessive nesting ({depth})"));
        }
        let mt = t.metatable();
        if mt.as_ref() == Some(&self.marks.array_mt) {
            return self.array(t, t.raw_len(), depth);
        }
        // Array length as lua-cjson finds it: every key a positive integer.
        let mut max = 0usize;
        let mut items = 0usize;
        let mut is_array = true;
        for pair in t.pairs::<Value, Value>() {
            let (k, _) = pair.map_err(|e| e.to_string())?;
            let idx = match k {
                Value::Integer(i) if i >= 1 => Some(i as usize),
                Value::Number(n) if n >= 1.0 && n.fract() == 0.0 => Some(n as usize),
                _ => None,
            };
            match idx {
                Some(i) => {
                    max = max.max(i);
                    items += 1;
                }
                None => {
                    is_array = false;
                    break;
                }
            }
        }
        if is_array
            && self.cfg.sparse_ratio > 0
            && max > items * self.cfg.sparse_ratio as usize
            && max > self.cfg.sparse_safe as usize
        {
            if !self.cfg.sparse_convert {
                return Err("Cannot serialise table: excessively sparse array".into());
            }
            is_array = false;
        }
        if is_array && (max > 0 || !self.cfg.empty_table_as_object) {
            return self.array(t, max, depth);
        }
        if is_array && max == 0 && mt.as_ref() == Some(&self.marks.empty_array_mt) {
            self.out.extend_from_slice(b"[]");
            return Ok(());
        }
        self.out.push(b'{');
        let mut first = true;
        for pair in t.pairs::<Value, Value>() {
            let (k, v) = pair.map_err(|e| e.to_string())?;
            if !first {
                self.out.push(b',');
            }
            first = false;
            match &k {
                Value::String(s) => self.string(&s.as_bytes()),
                Value::Integer(i) => {
                    self.out.push(b'"');
                    self.number(*i as f64)?;
                    self.out.push(b'"');
                }
                Value::Number(n) => {
                    self.out.push(b'"');
                    self.number(*n)?;
                    self.out.push(b'"');
                }
                other => {
                    return Err(format!(
                        "Cannot serialise {}: table key must be a number or string",
                        type_name(other)
                    ));
                }
            }
            self.out.push(b':');
            self.value(&v, depth)?;
        }
        self.out.push(b'}');
        Ok(())
    }

    fn array(&mut self, t: &Table, len: usize, depth: usize) -> Result<(), String> {
        self.out.push(b'[');
        for i in 1..=len {
            if i > 1 {
                self.out.push(b',');
            }
            let v: Value = t.raw_get(i).map_err(|e| e.to_string())?;
            self.value(&v, depth)?;
        }
        self.out.push(b']');
        Ok(())
    }
}

/// A decoding error in lua-cjson's words: `Expected <what> but found <token> at character <n>`.
struct Decoder<'a> {
    lua: &'a Lua,
    cfg: &'a Config,
    marks: &'a Marks,
    s: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Decoder<'_> {
    fn skip_ws(&mut self) {
        while self.pos < self.s.len() && matches!(self.s[self.pos], b' ' | b'\t' | b'\n' | b'\r') {
            self.pos += 1;
        }
    }

    /// The name lua-cjson gives the token at the current position.
    fn found(&self) -> &'static str {
        match self.s.get(self.pos) {
            None | Some(0) => "T_END",
            Some(b'{') => "T_OBJ_BEGIN",
            Some(b'}') => "T_OBJ_END",
            Some(b'[') => "T_ARR_BEGIN",
            Some(b']') => "T_ARR_END",
            Some(b',') => "T_COMMA",
            Some(b':') => "T_COLON",
            Some(b'"') => "T_STRING",
            Some(b't' | b'f') => "T_BOOLEAN",
            Some(b'n') => "T_NULL",
            Some(b'-' | b'0'..=b'9') => "T_NUMBER",
            _ => "invalid token",
        }
    }

    fn expected(&self, what: &str) -> String {
        format!(
            "Expected {what} but found {} at character {}",
            self.found(),
            self.pos + 1
        )
    }

    fn value(&mut self) -> Result<Value, String> {
        self.skip_ws();
        let start = self.pos;
        match self.s.get(self.pos) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(|s| {
                self.lua
                    .create_string(&s)
                    .map(Value::String)
                    .map_err(|e| e.to_string())
            })?,
            Some(b't') if self.s[self.pos..].starts_with(b"true") => {
                self.pos += 4;
                Ok(Value::Boolean(true))
            }
            Some(b'f') if self.s[self.pos..].starts_with(b"false") => {
                self.pos += 5;
                Ok(Value::Boolean(false))
            }
            Some(b'n') if self.s[self.pos..].starts_with(b"null") => {
                self.pos += 4;
                Ok(Value::LightUserData(null()))
            }
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => {
                self.pos = start;
                if matches!(self.s.get(self.pos), Some(b't' | b'f' | b'n')) {
                    return Err(format!(
                        "Expected value but found invalid token at character {}",
                        self.pos + 1
                    ));
                }
                Err(self.expected("value"))
            }
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.pos;
        if self.s[self.pos] == b'-' {
            self.pos += 1;
        }
        while self.pos < self.s.len()
            && matches!(
                self.s[self.pos],
                b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'
            )
        {
            self.pos += 1;
        }
        let text = std::str::from_utf8(&self.s[start..self.pos]).unwrap_or("");
        // lua-cjson reads numbers with strtod: leading zeros are accepted (`01` is 1).
        let digits = text.trim_start_matches('-');
        match text.parse::<f64>() {
            Ok(n) if !digits.is_empty() && digits.as_bytes()[0].is_ascii_digit() => {
                Ok(Value::Number(n))
            }
            _ => Err(format!(
                "Expected value but found invalid number at character {}",
                start + 1
            )),
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, String> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            let Some(&c) = self.s.get(self.pos) else {
                return Err(format!(
                    "Expected value but found unexpected end of string at character {}",
                    self.pos + 1
                ));
            };
            self.pos += 1;
            match c {
                b'"' => return Ok(out),
                b'\\' => {
                    // Escape errors point at the backslash, as lua-cjson reports them.
                    let esc_at = self.pos - 1;
                    let Some(&e) = self.s.get(self.pos) else {
                        return Err(format!(
                            "Expected value but found unexpected end of string at character {}",
                            self.pos + 1
                        ));
                    };
                    self.pos += 1;
                    match e {
                        b'"' => out.push(b'"'),
                        b'\\' => out.push(b'\\'),
                        b'/' => out.push(b'/'),
                        b'b' => out.push(0x08),
                        b'f' => out.push(0x0c),
                        b'n' => out.push(b'\n'),
                        b'r' => out.push(b'\r'),
                        b't' => out.push(b'\t'),
                        b'u' => {
                            let cp = self.hex4().and_then(|hi| {
                                if (0xd800..0xdc00).contains(&hi) {
                                    if self.s.get(self.pos..self.pos + 2) != Some(b"\\u") {
                                        return None;
                                    }
                                    self.pos += 2;
                                    let lo = self.hex4()?;
                                    if !(0xdc00..0xe000).contains(&lo) {
                                        return None;
                                    }
                                    Some(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))
                                } else if (0xdc00..0xe000).contains(&hi) {
                                    None
                                } else {
                                    Some(hi)
                                }
                            });
                            match cp.and_then(char::from_u32) {
                                Some(ch) => {
                                    let mut buf = [0u8; 4];
                                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                                }
                                None => {
                                    return Err(format!(
                                        "Expected value but found invalid unicode escape code at character {}",
                                        esc_at + 1
                                    ));
                                }
                            }
                        }
                        _ => {
                            return Err(format!(
                                "Expected value but found invalid escape code at character {}",
                                esc_at + 1
                            ));
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = self.s.get(self.pos..self.pos + 4)?;
        let v = u32::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()?;
        self.pos += 4;
        Some(v)
    }

    fn descend(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > self.cfg.decode_max_depth {
            return Err(format!(
                "Found too many nested data structures ({}) at character {}",
                self.depth,
                self.pos + 1
            ));
        }
        Ok(())
    }

    fn object(&mut self) -> Result<Value, String> {
        self.descend()?;
        self.pos += 1;
        let t = self.lua.create_table().map_err(|e| e.to_string())?;
        self.skip_ws();
        if self.s.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Table(t));
        }
        loop {
            self.skip_ws();
            if self.s.get(self.pos) != Some(&b'"') {
                return Err(self.expected("object key string"));
            }
            let k = self.string()?;
            self.skip_ws();
            if self.s.get(self.pos) != Some(&b':') {
                return Err(self.expected("colon"));
            }
            self.pos += 1;
            let v = self.value()?;
            t.raw_set(self.lua.create_string(&k).map_err(|e| e.to_string())?, v)
                .map_err(|e| e.to_string())?;
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Value::Table(t));
                }
                _ => return Err(self.expected("comma or object end")),
            }
        }
    }

    fn array(&mut self) -> Result<Value, String> {
        self.descend()?;
        self.pos += 1;
        let t = self.lua.create_table().map_err(|e| e.to_string())?;
        if self.cfg.decode_array_with_array_mt {
            t.set_metatable(Some(self.marks.array_mt.clone()))
                .map_err(|e| e.to_string())?;
        }
        self.skip_ws();
        if self.s.get(self.pos) == Some(&b']') {
            self.pos += 1;
            self.depth -= 1;
            return Ok(Value::Table(t));
        }
        let mut i = 1;
        loop {
            let v = self.value()?;
            t.raw_set(i, v).map_err(|e| e.to_string())?;
            i += 1;
            self.skip_ws();
            match self.s.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    self.depth -= 1;
                    return Ok(Value::Table(t));
                }
                _ => return Err(self.expected("comma or array end")),
            }
        }
    }
}

fn decode(lua: &Lua, cfg: &Config, marks: &Marks, s: &[u8]) -> Result<Value, String> {
    let mut d = Decoder {
        lua,
        cfg,
        marks,
        s,
        pos: 0,
        depth: 0,
    };
    let v = d.value()?;
    d.skip_ws();
    if d.pos < s.len() {
        return Err(d.expected("the end"));
    }
    Ok(v)
}

/// lua-cjson's boolean-ish settings accept `true`/`false`, `"on"`/`"off"`.
fn flag(v: &Value, current: bool) -> Result<bool, mlua::Error> {
    match v {
        Value::Nil => Ok(current),
        Value::Boolean(b) => Ok(*b),
        Value::String(s) if s.as_bytes().as_ref() == b"on" => Ok(true),
        Value::String(s) if s.as_bytes().as_ref() == b"off" => Ok(false),
        _ => Err(mlua::Error::runtime("bad argument #1 (invalid option)")),
    }
}

/// Builds one instance (`safe`: errors returned as `nil, err`).
fn instance(lua: &Lua, marks: &Marks, safe: bool) -> mlua::Result<Table> {
    let cfg = Rc::new(RefCell::new(Config::default()));
    let m = lua.create_table()?;
    m.set("null", Value::LightUserData(null()))?;
    m.set("empty_array", Value::LightUserData(empty_array()))?;
    m.set("array_mt", marks.array_mt.clone())?;
    m.set("empty_array_mt", marks.empty_array_mt.clone())?;
    m.set("_NAME", if safe { "cjson.safe" } else { "cjson" })?;
    m.set("_VERSION", "2.1.0.14")?;

    // The Rust functions return `nil, err`; the raising instance wraps them in Lua so the error
    // value is the plain message string lua-cjson raises, not a Rust error object.
    let raising = |f: Function| -> mlua::Result<Function> {
        if safe {
            return Ok(f);
        }
        lua.load("local f = ... return function(v) local r, err = f(v) if err ~= nil then error(err, 0) end return r end")
            .set_name("=cjson")
            .call(f)
    };
    let (c, mk) = (cfg.clone(), marks.clone());
    let encode = lua.create_function(move |lua, v: Value| {
        let cfg = c.borrow();
        let mut e = Encoder {
            cfg: &cfg,
            marks: &mk,
            out: Vec::with_capacity(64),
        };
        match e.value(&v, 0) {
            Ok(()) => lua.create_string(&e.out)?.into_lua_multi(lua),
            Err(msg) => (Value::Nil, msg).into_lua_multi(lua),
        }
    })?;
    m.set("encode", raising(encode)?)?;
    let (c, mk) = (cfg.clone(), marks.clone());
    let decode_fn = lua.create_function(move |lua, s: Value| {
        let text = match &s {
            Value::String(s) => s.as_bytes().to_vec(),
            Value::Integer(_) | Value::Number(_) => s.to_string()?.into_bytes(),
            other => {
                let msg = format!(
                    "bad argument #1 to 'decode' (string expected, got {})",
                    type_name(other)
                );
                return (Value::Nil, msg).into_lua_multi(lua);
            }
        };
        let cfg = c.borrow();
        match decode(lua, &cfg, &mk, &text) {
            Ok(v) => v.into_lua_multi(lua),
            Err(msg) => (Value::Nil, msg).into_lua_multi(lua),
        }
    })?;
    m.set("decode", raising(decode_fn)?)?;

    // Settings: each returns its current value(s), as lua-cjson does.
    macro_rules! bool_setting {
        ($name:literal, $field:ident) => {{
            let c = cfg.clone();
            m.set(
                $name,
                lua.create_function(move |_, v: Value| {
                    let mut cfg = c.borrow_mut();
                    cfg.$field = flag(&v, cfg.$field)?;
                    Ok(cfg.$field)
                })?,
            )?;
        }};
    }
    bool_setting!("encode_escape_forward_slash", escape_forward_slash);
    bool_setting!("encode_empty_table_as_object", empty_table_as_object);
    bool_setting!("decode_array_with_array_mt", decode_array_with_array_mt);
    let c = cfg.clone();
    m.set(
        "encode_max_depth",
        lua.create_function(move |_, n: Option<usize>| {
            let mut cfg = c.borrow_mut();
            if let Some(n) = n {
                cfg.max_depth = n.max(1);
            }
            Ok(cfg.max_depth)
        })?,
    )?;
    let c = cfg.clone();
    m.set(
        "decode_max_depth",
        lua.create_function(move |_, n: Option<usize>| {
            let mut cfg = c.borrow_mut();
            if let Some(n) = n {
                cfg.decode_max_depth = n.max(1);
            }
            Ok(cfg.decode_max_depth)
        })?,
    )?;
    let c = cfg.clone();
    m.set(
        "encode_number_precision",
        lua.create_function(move |_, n: Option<usize>| {
            let mut cfg = c.borrow_mut();
            if let Some(n) = n {
                if !(1..=16).contains(&n) {
                    return Err(mlua::Error::runtime("bad argument #1 to 'encode_number_precision' (expected integer between 1 and 16)"));
                }
                cfg.precision = n;
            }
            Ok(cfg.precision)
        })?,
    )?;
    let c = cfg.clone();
    m.set(
        "encode_sparse_array",
        lua.create_function(
            move |_, (convert, ratio, safe_n): (Value, Option<u32>, Option<u32>)| {
                let mut cfg = c.borrow_mut();
                cfg.sparse_convert = flag(&convert, cfg.sparse_convert)?;
                if let Some(r) = ratio {
                    cfg.sparse_ratio = r;
                }
                if let Some(s) = safe_n {
                    cfg.sparse_safe = s;
                }
                Ok((cfg.sparse_convert, cfg.sparse_ratio, cfg.sparse_safe))
            },
        )?,
    )?;
    let c = cfg.clone();
    m.set(
        "encode_invalid_numbers",
        lua.create_function(move |lua, v: Value| {
            let mut cfg = c.borrow_mut();
            cfg.invalid_numbers = match &v {
                Value::Nil => cfg.invalid_numbers,
                Value::String(s) if s.as_bytes().as_ref() == b"null" => 2,
                other => u8::from(flag(other, cfg.invalid_numbers != 0)?),
            };
            match cfg.invalid_numbers {
                2 => "null".into_lua_multi(lua),
                n => (n == 1).into_lua_multi(lua),
            }
        })?,
    )?;
    let mk = marks.clone();
    m.set(
        "new",
        lua.create_function(move |lua, ()| instance(lua, &mk, safe))?,
    )?;
    Ok(m)
}

/// Registers `cjson` and `cjson.safe` in `package.preload`.
pub fn register(lua: &Lua) -> mlua::Result<()> {
    let marks = Marks {
        array_mt: lua.create_table()?,
        empty_array_mt: lua.create_table()?,
    };
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    let mk = marks.clone();
    let plain: Function = lua.create_function(move |lua, ()| instance(lua, &mk, false))?;
    preload.set("cjson", plain)?;
    let mk = marks;
    let safe: Function = lua.create_function(move |lua, ()| instance(lua, &mk, true))?;
    preload.set("cjson.safe", safe)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lua() -> Lua {
        let lua = Lua::new();
        register(&lua).unwrap();
        lua
    }

    fn eval(lua: &Lua, code: &str) -> String {
        lua.load(code)
            .eval::<String>()
            .unwrap_or_else(|e| panic!("{code}: {e}"))
    }

    // Expected outputs below were produced by lua-cjson 2.1.0 (Debian's lua-cjson under
    // lua5.1) on the same inputs.

    #[test]
    fn numbers_and_strings_encode_byte_for_byte() {
        let lua = lua();
        assert_eq!(
            eval(
                &lua,
                r#"return require("cjson").encode({0.1, 1e300, -0, 2^53, 100, 3.14159265358979, 1/3, 1e-5, 123456789012345, "a/b\"c\\\1\127é", true})"#
            ),
            r#"[0.1,1e+300,-0,9.007199254741e+15,100,3.1415926535898,0.33333333333333,1e-05,1.2345678901234e+14,"a\/b\"c\\\u0001\u007fé",true]"#
        );
    }

    #[test]
    fn decode_errors_use_lua_cjson_words_and_positions() {
        let lua = lua();
        let cases = [
            (
                "[1,2",
                "Expected comma or array end but found T_END at character 5",
            ),
            (
                "{\"a\" 1}",
                "Expected colon but found T_NUMBER at character 6",
            ),
            (
                "{1:2}",
                "Expected object key string but found T_NUMBER at character 2",
            ),
            (
                "[1 2]",
                "Expected comma or array end but found T_NUMBER at character 4",
            ),
            (
                "nul",
                "Expected value but found invalid token at character 1",
            ),
            (
                "[-]",
                "Expected value but found invalid number at character 2",
            ),
            (
                "\"abc",
                "Expected value but found unexpected end of string at character 5",
            ),
            (
                "\"\\x\"",
                "Expected value but found invalid escape code at character 2",
            ),
            (
                "[1]x",
                "Expected the end but found invalid token at character 4",
            ),
            ("", "Expected value but found T_END at character 1"),
            (" ", "Expected value but found T_END at character 2"),
        ];
        let f: Function = lua.load(r#"return function(s) local ok, err = pcall(require("cjson").decode, s) return err end"#).eval().unwrap();
        for (input, want) in cases {
            let got: String = f.call(input).unwrap();
            assert_eq!(got, want, "{input:?}");
        }
        let safe: (Value, String) = lua
            .load(r#"return require("cjson.safe").decode("[")"#)
            .eval()
            .unwrap();
        assert_eq!(safe.0, Value::Nil);
        assert!(
            safe.1.starts_with("Expected value but found T_END"),
            "{}",
            safe.1
        );
    }

    #[test]
    fn tables_encode_as_lua_cjson_does() {
        let lua = lua();
        let cases = [
            ("{}", "{}"),
            ("setmetatable({}, cjson.empty_array_mt)", "[]"),
            ("setmetatable({}, cjson.array_mt)", "[]"),
            ("{cjson.empty_array, cjson.null}", "[[],null]"),
            ("{1, 2, nil, 4}", "[1,2,null,4]"),
            ("{[1] = 'a', [2] = 'b'}", r#"["a","b"]"#),
            ("{a = {b = {c = 1}}}", r#"{"a":{"b":{"c":1}}}"#),
            ("{[1.5] = 'x'}", r#"{"1.5":"x"}"#),
        ];
        for (expr, want) in cases {
            let code = format!("local cjson = require('cjson') return cjson.encode({expr})");
            assert_eq!(eval(&lua, &code), want, "{expr}");
        }
        let err = |code: &str| lua.load(code).exec().unwrap_err().to_string();
        assert!(
            err("require('cjson').encode({[20] = 1})")
                .contains("Cannot serialise table: excessively sparse array")
        );
        assert!(
            err("require('cjson').encode({f = print})")
                .contains("Cannot serialise function: type not supported")
        );
        assert!(
            err("require('cjson').encode(0/0)")
                .contains("Cannot serialise number: must not be NaN or Infinity")
        );
        // Nesting to the limit recurses 1,000 levels: give it the stack a worker thread has.
        let deep = std::thread::Builder::new()
            .stack_size(16 << 20)
            .spawn(|| {
                let vm = self::tests::lua();
                vm.load("local t = {} t.t = t local ok, err = pcall(require('cjson').encode, t) return err").eval::<String>().unwrap()
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(deep, "Cannot serialise, excessive nesting (1001)");
    }

    #[test]
    fn settings_are_per_instance() {
        let lua = lua();
        assert_eq!(
            eval(
                &lua,
                r#"local a, b = require("cjson"), require("cjson").new()
                b.encode_escape_forward_slash(false)
                b.encode_empty_table_as_object(false)
                return a.encode({"/"}) .. b.encode({"/"}) .. a.encode({}) .. b.encode({})"#
            ),
            r#"["\/"]["/"]{}[]"#
        );
    }

    #[test]
    fn decode_builds_lua_values() {
        let lua = lua();
        let ok: bool = lua
            .load(
                r#"local cjson = require("cjson")
                local t = cjson.decode([[{"a":[1,2,{"b":null}],"s":"\u00e9\ud83d\ude00","n":-1.5e2,"t":true}]])
                cjson.decode_array_with_array_mt(true)
                local arr = cjson.decode('[]')
                return t.a[2] == 2 and t.a[3].b == cjson.null and t.s == "é😀" and t.n == -150 and t.t == true
                    and getmetatable(arr) == cjson.array_mt and cjson.encode(arr) == "[]"
                    and cjson.decode("01") == 1"#,
            )
            .eval()
            .unwrap();
        assert!(ok);
    }
}
