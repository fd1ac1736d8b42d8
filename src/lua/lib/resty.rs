//! The small lua-resty-string family and friends: `resty.string` (`to_hex`, `atoi`),
//! `resty.random` (`bytes`), `resty.md5`, `resty.sha1`, `resty.sha224`, `resty.sha256`,
//! `resty.sha384`, `resty.sha512` (objects with `:update`, `:final`, `:reset`), and, in Lua so
//! LuaJIT compiles them, `resty.lrucache`, `resty.lock` and `tablepool`; `resty.core` loads as a
//! no-op.

use std::cell::RefCell;

use mlua::{Lua, Table, UserData, UserDataMethods};

use super::crypto::digest::{DigestAlg, Hasher};

/// The pure-Lua LRU cache, with lua-resty-lrucache's API.
const LRUCACHE: &str = include_str!("lrucache.lua");
/// resty.lock over ngx.shared, in Lua.
const LOCK: &str = include_str!("lock.lua");
/// lua-tablepool's API, in Lua.
const TABLEPOOL: &str = include_str!("tablepool.lua");

struct Digester {
    h: RefCell<Hasher>,
}

impl UserData for Digester {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("update", |_, d, s: mlua::LuaString| {
            d.h.borrow_mut().update(&s.as_bytes());
            Ok(true)
        });
        m.add_method("final", |lua, d, ()| {
            lua.create_string(d.h.borrow_mut().finish())
        });
        m.add_method("reset", |_, d, ()| {
            let mut h = d.h.borrow_mut();
            *h = Hasher::new(h.alg());
            Ok(true)
        });
    }
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "resty.string",
        lua.create_function(|lua, ()| {
            let m = lua.create_table()?;
            m.set(
                "to_hex",
                lua.create_function(|_, s: mlua::LuaString| {
                    Ok(s.as_bytes()
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<String>())
                })?,
            )?;
            m.set(
                "atoi",
                lua.create_function(|_, s: String| Ok(s.trim().parse::<i64>().ok()))?,
            )?;
            Ok(m)
        })?,
    )?;
    preload.set(
        "resty.random",
        lua.create_function(|lua, ()| {
            let m = lua.create_table()?;
            m.set(
                "bytes",
                lua.create_function(|lua, (len, _strong): (usize, Option<bool>)| {
                    let mut buf = vec![0u8; len];
                    getrandom(&mut buf).map_err(mlua::Error::runtime)?;
                    lua.create_string(buf)
                })?,
            )?;
            Ok(m)
        })?,
    )?;
    for alg in [
        DigestAlg::Md5,
        DigestAlg::Sha1,
        DigestAlg::Sha224,
        DigestAlg::Sha256,
        DigestAlg::Sha384,
        DigestAlg::Sha512,
    ] {
        preload.set(
            format!("resty.{}", alg.name()),
            lua.create_function(move |lua, ()| {
                let m = lua.create_table()?;
                m.set(
                    "new",
                    lua.create_function(move |lua, _: mlua::Value| {
                        lua.create_userdata(Digester {
                            h: RefCell::new(Hasher::new(alg)),
                        })
                    })?,
                )?;
                Ok(m)
            })?,
        )?;
    }
    let lru: mlua::Function = lua
        .load(LRUCACHE)
        .set_name("=resty/lrucache.lua")
        .into_function()?;
    preload.set("resty.lrucache", lru.clone())?;
    // The FFI flavour has the same API; one implementation serves both names.
    preload.set("resty.lrucache.pureffi", lru)?;
    preload.set(
        "resty.lock",
        lua.load(LOCK).set_name("=resty/lock.lua").into_function()?,
    )?;
    preload.set(
        "tablepool",
        lua.load(TABLEPOOL)
            .set_name("=tablepool.lua")
            .into_function()?,
    )?;
    // lua-resty-core patches nginx's C API into FFI; here the API is native already, so
    // `require("resty.core")` (which APISIX does first) has nothing left to do.
    preload.set("resty.core", lua.create_function(|_, ()| Ok(true))?)?;
    Ok(())
}

/// Random bytes from the kernel.
fn getrandom(buf: &mut [u8]) -> Result<(), String> {
    use std::io::Read;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .map_err(|e| format!("failed to read /dev/urandom: {e}"))
}
