//! Embeds moongate's own Lua library (`lua/`, except the user-facing `lua/plugins/`) into the
//! binary, so an installed `moongate` needs no Lua tree beside it: `require("apisix.core")`
//! and the other modules we ship resolve from the binary when no file on `package.path`
//! provides them (see `src/lua/vm/builtin.rs`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn collect(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        let rel = path.strip_prefix(root).expect("under root");
        if path.is_dir() {
            if rel == Path::new("plugins") {
                continue; // plugins are the user's, found by directory listing at run time
            }
            collect(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "lua") {
            let stem = rel.with_extension("");
            let mut parts: Vec<String> = stem
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "init") && parts.len() > 1 {
                parts.pop();
            }
            out.push((parts.join("."), path.clone()));
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let root = manifest.join("lua");
    println!("cargo:rerun-if-changed=lua");
    // nginx's `ngx_stat_*` counters (observability::metrics::conn) are looked up by name
    // through LuaJIT's FFI, which only sees the executable's dynamic symbols: export those
    // seven, nothing else.
    let dynlist = manifest.join("build/ngx_stat.dynlist");
    println!("cargo:rerun-if-changed=build/ngx_stat.dynlist");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!(
            "cargo:rustc-link-arg-bins=-Wl,--dynamic-list={}",
            dynlist.display()
        );
    }
    let mut modules = Vec::new();
    collect(&root, &root, &mut modules);
    let mut code = String::from("pub static MODULES: &[(&str, &str, &str)] = &[\n");
    for (name, path) in &modules {
        let rel = path.strip_prefix(&manifest).expect("under manifest");
        writeln!(
            code,
            "    ({name:?}, {:?}, include_str!({:?})),",
            rel.display().to_string(),
            path.display().to_string()
        )
        .expect("write to string");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it"));
    std::fs::write(out.join("builtin_lua.rs"), code).expect("write builtin_lua.rs");
}
