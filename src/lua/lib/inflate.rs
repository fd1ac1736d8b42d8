//! `require("moongate.inflate")`: decompression of response bodies for
//! `apisix.utils.content-decode` (response-rewrite's filters and the loggers read a compressed
//! upstream body as text through it).
//!
//! `gzip(data)` → the decompressed bytes, or `nil, err`. Several gzip members in a row are
//! decoded one after the other, as `gunzip` does. Output is capped (a small compressed body can
//! expand without bound): past [`MAX_OUTPUT`] the call fails instead of filling the heap.

use std::io::Read;

use flate2::read::MultiGzDecoder;
use mlua::{Lua, LuaString, Table, Value};

/// Largest decompressed body (64 MiB).
const MAX_OUTPUT: u64 = 64 << 20;

pub fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    let mut reader = MultiGzDecoder::new(data).take(MAX_OUTPUT + 1);
    reader.read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.len() as u64 > MAX_OUTPUT {
        return Err(format!(
            "decompressed body is larger than {} bytes",
            MAX_OUTPUT
        ));
    }
    Ok(out)
}

pub fn register(lua: &Lua) -> mlua::Result<()> {
    let m = lua.create_table()?;
    m.set(
        "gzip",
        lua.create_function(|lua, data: LuaString| match gunzip(&data.as_bytes()) {
            Ok(out) => Ok((Value::String(lua.create_string(out)?), Value::Nil)),
            Err(e) => Ok((Value::Nil, Value::String(lua.create_string(e)?))),
        })?,
    )?;
    let preload: Table = lua.globals().get::<Table>("package")?.get("preload")?;
    preload.set(
        "moongate.inflate",
        lua.create_function(move |_, ()| Ok(m.clone()))?,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::gunzip;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn members_in_a_row_decode_and_garbage_is_an_error() {
        let mut two = gz(b"hello ");
        two.extend(gz(b"world"));
        assert_eq!(gunzip(&two).unwrap(), b"hello world");
        assert!(gunzip(b"not gzip at all").is_err());
        assert_eq!(gunzip(&gz(b"")).unwrap(), b"");
    }
}
