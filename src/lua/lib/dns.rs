//! `require("moongate.dns")`: name resolution for `core.resolver` and `core.dns_client`,
//! through the system resolver (as cosockets resolve), without blocking the worker: the
//! lookup suspends only the calling request.

use mlua::{Lua, Table, Value};

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "moongate.dns",
        lua.create_function(|lua, ()| {
            let m = lua.create_table()?;
            // `resolve(name)` → list of address strings (IPv4 first, in resolver order), or
            // `nil, err`.
            m.set(
                "resolve",
                lua.create_async_function(|lua, name: String| async move {
                    match tokio::net::lookup_host((name.as_str(), 0)).await {
                        Ok(addrs) => {
                            let mut v4 = Vec::new();
                            let mut v6 = Vec::new();
                            for a in addrs {
                                let ip = a.ip();
                                let s = ip.to_string();
                                let list = if ip.is_ipv4() { &mut v4 } else { &mut v6 };
                                if !list.contains(&s) {
                                    list.push(s);
                                }
                            }
                            v4.extend(v6);
                            let t = lua.create_sequence_from(v4)?;
                            Ok((Value::Table(t), Value::Nil))
                        }
                        Err(e) => Ok((
                            Value::Nil,
                            Value::String(
                                lua.create_string(format!("failed to resolve {name}: {e}"))?,
                            ),
                        )),
                    }
                })?,
            )?;
            Ok(m)
        })?,
    )
}
