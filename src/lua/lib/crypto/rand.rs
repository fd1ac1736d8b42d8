//! `resty.openssl.rand`: `bytes(length)` from the operating system's CSPRNG.

use mlua::{Lua, Table, Value};
use rand_core::{OsRng, RngCore};

/// `length` random bytes, or the reason the kernel refused.
pub fn random_bytes(length: usize) -> Result<Vec<u8>, rand_core::Error> {
    let mut buf = vec![0u8; length];
    OsRng.try_fill_bytes(&mut buf)?;
    Ok(buf)
}

/// `require("resty.openssl.rand")`.
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set(
        "bytes",
        // The second argument (`private`, RAND_priv_bytes) changes nothing here: every
        // byte comes from the same kernel CSPRNG.
        lua.create_function(|lua, (length, _private): (Value, Option<bool>)| {
            let n = match length {
                Value::Integer(i) if i >= 0 => i as usize,
                Value::Number(f) if f >= 0.0 && f.fract() == 0.0 => f as usize,
                _ => {
                    return Ok((
                        Value::Nil,
                        Value::String(lua.create_string("rand.bytes: expect a number at #1")?),
                    ));
                }
            };
            match random_bytes(n) {
                Ok(b) => Ok((Value::String(lua.create_string(b)?), Value::Nil)),
                Err(e) => Ok((
                    Value::Nil,
                    Value::String(lua.create_string(format!("rand.bytes: {e}"))?),
                )),
            }
        })?,
    )?;
    Ok(m)
}
