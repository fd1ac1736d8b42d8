//! `ngx.re.match/find/gmatch/sub/gsub` and `require("ngx.re")` (`split`, `opt`), with PCRE
//! semantics through PCRE2 (JIT-compiled where available).
//!
//! Option letters as lua-nginx-module takes them: `i` caseless, `m` multi-line, `s` dot-all,
//! `x` extended, `u` UTF-8, `U` UTF-8 without validity check, `a` anchored at the start
//! position, `D` duplicate group names, `j` JIT, `o` compile once (every pattern is cached
//! here, bounded). `d` (DFA matching) and `J` (JavaScript compatibility) have no PCRE2
//! equivalent and are refused with an error naming them. Compiled patterns are cached per
//! worker, keyed by pattern and options.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use mlua::{Function, IntoLuaMulti, Lua, LuaString, MultiValue, Table, Value};
use pcre2::bytes::{CaptureLocations, Regex, RegexBuilder};

/// OpenResty links PCRE1, and tests compare its compile errors: PCRE2's messages that PCRE1
/// words differently are translated back; the others are the same text in both.
fn pcre1_wording(pcre2: &str) -> &str {
    match pcre2 {
        "missing closing parenthesis" => "missing )",
        "quantifier does not follow a repeatable item" => "nothing to repeat",
        "unmatched closing parenthesis" => "unmatched parentheses",
        "missing ) after (?# comment" => "missing ) after comment",
        other => other,
    }
}

/// lua-nginx-module's default `lua_regex_cache_max_entries`.
const CACHE_MAX: usize = 1024;

struct Compiled {
    re: Regex,
    names: Vec<Option<String>>,
    utf8: bool,
}

/// Compiled patterns by (pattern, option letters).
type Cache = HashMap<(Vec<u8>, String), Rc<Compiled>>;

thread_local! {
    static CACHE: RefCell<Cache> = RefCell::new(HashMap::new());
}

/// Compiles (or finds in the cache) `pattern` with option letters `opts`.
fn compile(pattern: &[u8], opts: &str) -> Result<Rc<Compiled>, String> {
    let key = (pattern.to_vec(), opts.to_string());
    if let Some(c) = CACHE.with(|c| c.borrow().get(&key).cloned()) {
        return Ok(c);
    }
    let mut b = RegexBuilder::new();
    let mut utf8 = false;
    let mut prefix = String::new();
    let mut anchored = false;
    for ch in opts.chars() {
        match ch {
            'i' => {
                b.caseless(true);
            }
            'm' => {
                b.multi_line(true);
            }
            's' => {
                b.dotall(true);
            }
            'x' => {
                b.extended(true);
            }
            'u' => {
                b.utf(true);
                utf8 = true;
            }
            // PCRE2 checks UTF-8 validity only where it must; `U` and `u` behave alike here.
            'U' => {
                b.utf(true);
                utf8 = true;
            }
            'a' => anchored = true,
            'D' => prefix.push_str("(?J)"),
            'j' => {
                b.jit_if_available(true);
            }
            'o' => {}
            'd' => {
                return Err(
                    "regex option \"d\" (DFA matching) is not supported by moongate".into(),
                );
            }
            'J' => {
                return Err(
                    "regex option \"J\" (JavaScript compatibility) is not supported with PCRE2"
                        .into(),
                );
            }
            other => return Err(format!("unknown flag \"{other}\" (flags \"{opts}\")")),
        }
    }
    let text = std::str::from_utf8(pattern).map_err(|_| "regex is not valid UTF-8".to_string())?;
    // `\G` asserts the match starts where the search starts: PCRE's anchored mode.
    let full = if anchored {
        format!("{prefix}\\G(?:{text})")
    } else {
        format!("{prefix}{text}")
    };
    let re = b.build(&full).map_err(|e| {
        let msg = e.to_string();
        let reason = msg.rsplit(": ").next().unwrap_or("");
        format!(
            "pcre_compile() failed: {} in \"{text}\"",
            pcre1_wording(reason)
        )
    })?;
    let names = re.capture_names().to_vec();
    let c = Rc::new(Compiled { re, names, utf8 });
    CACHE.with(|cache| {
        let mut cache = cache.borrow_mut();
        if cache.len() >= CACHE_MAX
            && let Some(k) = cache.keys().next().cloned()
        {
            cache.remove(&k);
        }
        cache.insert(key, c.clone());
    });
    Ok(c)
}

/// Runs one search from byte offset `start`; fills `locs`.
fn search(
    c: &Compiled,
    subject: &[u8],
    start: usize,
    locs: &mut CaptureLocations,
) -> Result<Option<(usize, usize)>, String> {
    if start > subject.len() {
        return Ok(None);
    }
    c.re.captures_read_at(locs, subject, start)
        .map(|m| m.map(|m| (m.start(), m.end())))
        .map_err(|e| format!("pcre_exec() failed: {e}"))
}

/// The captures table lua-nginx-module returns: `[0]` the match, `[n]` groups (`false` when a
/// group did not take part), named groups by name too.
fn captures_table(
    lua: &Lua,
    c: &Compiled,
    subject: &[u8],
    locs: &CaptureLocations,
    reuse: Option<Table>,
) -> mlua::Result<Table> {
    let t = match reuse {
        Some(t) => {
            t.clear()?;
            t
        }
        None => lua.create_table_with_capacity(locs.len(), 0)?,
    };
    for i in 0..locs.len() {
        let v = match locs.get(i) {
            Some((s, e)) => Value::String(lua.create_string(&subject[s..e])?),
            None => Value::Boolean(false),
        };
        if let Some(Some(name)) = c.names.get(i) {
            t.raw_set(name.as_str(), v.clone())?;
        }
        t.raw_set(i, v)?;
    }
    Ok(t)
}

/// Where a search starts: `ctx.pos` (1-based) when given.
fn start_of(ctx: &Option<Table>) -> mlua::Result<usize> {
    Ok(match ctx {
        Some(t) => t
            .get::<Option<i64>>("pos")?
            .map(|p| (p.max(1) - 1) as usize)
            .unwrap_or(0),
        None => 0,
    })
}

fn set_pos(ctx: &Option<Table>, end: usize) -> mlua::Result<()> {
    if let Some(t) = ctx {
        t.set("pos", end as i64 + 1)?;
    }
    Ok(())
}

/// The next position after an empty match: one character on (a UTF-8 sequence with `u`).
fn step(subject: &[u8], pos: usize, utf8: bool) -> usize {
    let mut p = pos + 1;
    if utf8 {
        while p < subject.len() && (subject[p] & 0xC0) == 0x80 {
            p += 1;
        }
    }
    p
}

enum Piece {
    Lit(Vec<u8>),
    Group(usize),
}

/// Parses a `sub`/`gsub` template: `$0`..`$99`, `${n}`, `$$`. A bad template is refused with
/// the reason nginx's template compiler logs (the caller gets only a generic error back, as
/// from OpenResty).
fn parse_template(t: &[u8]) -> Result<Vec<Piece>, String> {
    let whole = || String::from_utf8_lossy(t).into_owned();
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut i = 0;
    while i < t.len() {
        if t[i] != b'$' {
            lit.push(t[i]);
            i += 1;
            continue;
        }
        i += 1;
        if t.get(i) == Some(&b'$') {
            lit.push(b'$');
            i += 1;
            continue;
        }
        let braced = t.get(i) == Some(&b'{');
        if braced {
            i += 1;
        }
        let start = i;
        let mut n = 0usize;
        while let Some(d) = t.get(i).filter(|d| d.is_ascii_digit()) {
            n = n.saturating_mul(10).saturating_add((d - b'0') as usize);
            i += 1;
        }
        if i == start {
            return Err(format!(
                "invalid capturing variable name found in \"{}\"",
                whole()
            ));
        }
        if braced {
            if t.get(i) != Some(&b'}') {
                return Err(format!(
                    "the closing bracket in \"{}\" variable is missing",
                    whole()
                ));
            }
            i += 1;
        }
        out.push(Piece::Lit(std::mem::take(&mut lit)));
        out.push(Piece::Group(n));
    }
    out.push(Piece::Lit(lit));
    Ok(out)
}

enum Replacement {
    Template(Vec<Piece>),
    Func(Function),
}

/// `sub` (`global = false`) and `gsub`.
fn substitute(
    lua: &Lua,
    subject: &[u8],
    re: &[u8],
    repl: Value,
    opts: &str,
    global: bool,
) -> mlua::Result<MultiValue> {
    let c = match compile(re, opts) {
        Ok(c) => c,
        Err(e) => return (Value::Nil, Value::Nil, e).into_lua_multi(lua),
    };
    let repl = match repl {
        Value::Function(f) => Replacement::Func(f),
        Value::String(s) => match parse_template(&s.as_bytes()) {
            Ok(p) => Replacement::Template(p),
            Err(reason) => {
                log::error!("{reason}");
                return (
                    Value::Nil,
                    Value::Nil,
                    "failed to compile the replacement template",
                )
                    .into_lua_multi(lua);
            }
        },
        Value::Integer(_) | Value::Number(_) => {
            Replacement::Template(vec![Piece::Lit(repl.to_string()?.into_bytes())])
        }
        other => {
            return Err(mlua::Error::runtime(format!(
                "bad argument #3 to 'gsub' (string, number, or function expected, got {})",
                other.type_name()
            )));
        }
    };
    let mut locs = c.re.capture_locations();
    let mut out = Vec::with_capacity(subject.len());
    let mut last = 0usize;
    let mut pos = 0usize;
    let mut n = 0i64;
    while let Some((s, e)) = search(&c, subject, pos, &mut locs).map_err(mlua::Error::runtime)? {
        out.extend_from_slice(&subject[last..s]);
        match &repl {
            Replacement::Template(pieces) => {
                for p in pieces {
                    match p {
                        Piece::Lit(l) => out.extend_from_slice(l),
                        Piece::Group(g) => {
                            if let Some((a, b)) = locs.get(*g) {
                                out.extend_from_slice(&subject[a..b]);
                            }
                        }
                    }
                }
            }
            Replacement::Func(f) => {
                let m = captures_table(lua, &c, subject, &locs, None)?;
                let v: Value = f.call(m)?;
                let text = match v {
                    Value::String(s) => s.as_bytes().to_vec(),
                    other => other.to_string()?.into_bytes(),
                };
                out.extend_from_slice(&text);
            }
        }
        n += 1;
        last = e;
        if s == e {
            // An empty match: keep the next character and search after it.
            if e >= subject.len() {
                break;
            }
            let next = step(subject, e, c.utf8);
            out.extend_from_slice(&subject[e..next]);
            last = next;
            pos = next;
        } else {
            pos = e;
        }
        if !global {
            break;
        }
    }
    if last < subject.len() {
        out.extend_from_slice(&subject[last..]);
    }
    (lua.create_string(&out)?, n).into_lua_multi(lua)
}

fn subject_bytes(v: &Value, func: &str) -> mlua::Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Integer(_) | Value::Number(_) => Ok(v.to_string()?.into_bytes()),
        other => Err(mlua::Error::runtime(format!(
            "bad argument #1 to '{func}' (string expected, got {})",
            other.type_name()
        ))),
    }
}

fn regex_bytes(v: &LuaString) -> Vec<u8> {
    v.as_bytes().to_vec()
}

pub fn register(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let re = lua.create_table()?;
    re.set(
        "match",
        lua.create_function(
            |lua,
             (subj, regex, opts, ctx, res): (
                Value,
                LuaString,
                Option<String>,
                Option<Table>,
                Option<Table>,
            )| {
                let subject = subject_bytes(&subj, "match")?;
                let c = match compile(&regex_bytes(&regex), opts.as_deref().unwrap_or("")) {
                    Ok(c) => c,
                    Err(e) => return (Value::Nil, e).into_lua_multi(lua),
                };
                let mut locs = c.re.capture_locations();
                match search(&c, &subject, start_of(&ctx)?, &mut locs) {
                    Ok(Some((_, e))) => {
                        set_pos(&ctx, e)?;
                        captures_table(lua, &c, &subject, &locs, res)?.into_lua_multi(lua)
                    }
                    Ok(None) => Value::Nil.into_lua_multi(lua),
                    Err(e) => (Value::Nil, e).into_lua_multi(lua),
                }
            },
        )?,
    )?;
    re.set(
        "find",
        lua.create_function(
            |lua,
             (subj, regex, opts, ctx, nth): (
                Value,
                LuaString,
                Option<String>,
                Option<Table>,
                Option<usize>,
            )| {
                let subject = subject_bytes(&subj, "find")?;
                let c = match compile(&regex_bytes(&regex), opts.as_deref().unwrap_or("")) {
                    Ok(c) => c,
                    Err(e) => return (Value::Nil, Value::Nil, e).into_lua_multi(lua),
                };
                let mut locs = c.re.capture_locations();
                match search(&c, &subject, start_of(&ctx)?, &mut locs) {
                    Ok(Some((_, e))) => {
                        set_pos(&ctx, e)?;
                        match locs.get(nth.unwrap_or(0)) {
                            Some((a, b)) => (a as i64 + 1, b as i64).into_lua_multi(lua),
                            None => Value::Nil.into_lua_multi(lua),
                        }
                    }
                    Ok(None) => Value::Nil.into_lua_multi(lua),
                    Err(e) => (Value::Nil, Value::Nil, e).into_lua_multi(lua),
                }
            },
        )?,
    )?;
    re.set(
        "gmatch",
        lua.create_function(
            |lua, (subj, regex, opts): (Value, LuaString, Option<String>)| {
                let subject = Rc::new(subject_bytes(&subj, "gmatch")?);
                let c = match compile(&regex_bytes(&regex), opts.as_deref().unwrap_or("")) {
                    Ok(c) => c,
                    Err(e) => return (Value::Nil, e).into_lua_multi(lua),
                };
                let pos = RefCell::new(Some(0usize));
                let iter = lua.create_function(move |lua, ()| {
                    let Some(start) = *pos.borrow() else {
                        return Value::Nil.into_lua_multi(lua);
                    };
                    let mut locs = c.re.capture_locations();
                    match search(&c, &subject, start, &mut locs) {
                        Ok(Some((s, e))) => {
                            let next = if s == e { step(&subject, e, c.utf8) } else { e };
                            *pos.borrow_mut() = (next <= subject.len()).then_some(next);
                            captures_table(lua, &c, &subject, &locs, None)?.into_lua_multi(lua)
                        }
                        Ok(None) => {
                            *pos.borrow_mut() = None;
                            Value::Nil.into_lua_multi(lua)
                        }
                        Err(e) => (Value::Nil, e).into_lua_multi(lua),
                    }
                })?;
                iter.into_lua_multi(lua)
            },
        )?,
    )?;
    re.set(
        "sub",
        lua.create_function(
            |lua, (subj, regex, repl, opts): (Value, LuaString, Value, Option<String>)| {
                substitute(
                    lua,
                    &subject_bytes(&subj, "sub")?,
                    &regex_bytes(&regex),
                    repl,
                    opts.as_deref().unwrap_or(""),
                    false,
                )
            },
        )?,
    )?;
    re.set(
        "gsub",
        lua.create_function(
            |lua, (subj, regex, repl, opts): (Value, LuaString, Value, Option<String>)| {
                substitute(
                    lua,
                    &subject_bytes(&subj, "gsub")?,
                    &regex_bytes(&regex),
                    repl,
                    opts.as_deref().unwrap_or(""),
                    true,
                )
            },
        )?,
    )?;
    ngx.set("re", re)?;

    // `require("ngx.re")`: split and opt.
    let module = lua.create_table()?;
    module.set(
        "split",
        lua.create_function(
            |lua,
             (subj, regex, opts, ctx, max, res): (
                Value,
                LuaString,
                Option<String>,
                Option<Table>,
                Option<i64>,
                Option<Table>,
            )| {
                let subject = subject_bytes(&subj, "split")?;
                let c = match compile(&regex_bytes(&regex), opts.as_deref().unwrap_or("")) {
                    Ok(c) => c,
                    Err(e) => return (Value::Nil, e).into_lua_multi(lua),
                };
                let out = match res {
                    Some(t) => {
                        t.clear()?;
                        t
                    }
                    None => lua.create_table()?,
                };
                let max = max.unwrap_or(0).max(0) as usize;
                let mut locs = c.re.capture_locations();
                let mut last = start_of(&ctx)?;
                let mut pos = last;
                let mut pieces = 0usize;
                loop {
                    if max > 0 && pieces + 1 >= max {
                        break;
                    }
                    let Some((s, e)) =
                        search(&c, &subject, pos, &mut locs).map_err(mlua::Error::runtime)?
                    else {
                        break;
                    };
                    if s == e {
                        // An empty match splits after the next character.
                        if s >= subject.len() {
                            break;
                        }
                        let next = step(&subject, s.max(last), c.utf8);
                        if s == last {
                            out.raw_push(lua.create_string(&subject[last..next])?)?;
                            pieces += 1;
                            last = next;
                            pos = next;
                            continue;
                        }
                    }
                    out.raw_push(lua.create_string(&subject[last..s])?)?;
                    pieces += 1;
                    // Captured groups are returned between the pieces, as lua-resty-core does.
                    for g in 1..locs.len() {
                        if let Some((a, b)) = locs.get(g) {
                            out.raw_push(lua.create_string(&subject[a..b])?)?;
                        }
                    }
                    last = e;
                    pos = if s == e { step(&subject, e, c.utf8) } else { e };
                }
                if last <= subject.len() {
                    out.raw_push(lua.create_string(&subject[last..])?)?;
                }
                if max == 0 {
                    // Without a limit, trailing empty fields are dropped (Perl's split rule,
                    // which lua-resty-core follows); with one, they are kept.
                    let mut n = out.raw_len();
                    while n > 0
                        && out
                            .raw_get::<LuaString>(n)
                            .is_ok_and(|s| s.as_bytes().is_empty())
                    {
                        out.raw_set(n, Value::Nil)?;
                        n -= 1;
                    }
                }
                out.into_lua_multi(lua)
            },
        )?,
    )?;
    module.set(
        "opt",
        lua.create_function(|_, (name, _value): (String, Value)| match name.as_str() {
            // PCRE2's JIT stack grows on its own; accept the setting as OpenResty does.
            "jit_stack_size" => Ok(()),
            other => Err(mlua::Error::runtime(format!(
                "unrecognized option name \"{other}\""
            ))),
        })?,
    )?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("ngx.re", module)?;

    // `require("resty.core.regex")`: the one member plugins call, `re_match_compile(re, opts)`,
    // which they use to check a pattern when a conf is validated. Bad flags raise (as
    // lua-resty-core's option parser does); a pattern that does not compile gives `nil, err`.
    let core_regex = lua.create_table()?;
    core_regex.set(
        "re_match_compile",
        lua.create_function(|lua, (regex, opts): (LuaString, Option<String>)| {
            let opts = opts.unwrap_or_default();
            match compile(&regex_bytes(&regex), &opts) {
                Ok(c) => {
                    let t = lua.create_table()?;
                    t.set("regex", regex)?;
                    t.set("options", opts)?;
                    t.set("ncaptures", c.re.captures_len().saturating_sub(1))?;
                    t.into_lua_multi(lua)
                }
                Err(e) if e.starts_with("unknown flag") || e.starts_with("regex option") => {
                    Err(mlua::Error::runtime(e))
                }
                Err(e) => (Value::Nil, e).into_lua_multi(lua),
            }
        })?,
    )?;
    loaded.set("resty.core.regex", core_regex)?;
    Ok(())
}
