//! core.schema and moongate.jsonschema, checked inside a real moongate Lua VM: every keyword,
//! where defaults are filled (nested objects, oneOf/anyOf branches, arrays), the exact error
//! wording for each kind of failure, and APISIX-shaped plugin schemas (written here, equivalent
//! to key-auth's, limit-count's and proxy-rewrite's) validating and filling defaults as APISIX
//! does. The cases themselves are Lua, in `tests/lua/schema_cases.lua`, one group per test here.

use std::path::PathBuf;

use moongate::lua::vm::{LuaVm, VmOptions};

fn vm() -> LuaVm {
    // The built-in library (lua/) is what is under test; the prefix only needs to exist.
    let prefix = std::env::temp_dir().join(format!("moongate-schema-{}", std::process::id()));
    std::fs::create_dir_all(prefix.join("lua/plugins")).unwrap();
    LuaVm::new(&VmOptions::for_prefix(&prefix)).unwrap()
}

fn cases_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/lua/schema_cases.lua")
}

/// Runs one group of cases; panics listing every failing case by name.
fn run_group(group: &str) {
    let vm = vm();
    let src = std::fs::read_to_string(cases_file()).unwrap();
    let groups: mlua::Table = vm
        .lua()
        .load(&src)
        .set_name("@tests/lua/schema_cases.lua")
        .eval()
        .unwrap();
    let run: mlua::Function = groups.get("run").unwrap();
    let (passed, failures): (i64, Vec<String>) = run.call(group).unwrap();
    assert!(passed > 0, "group {group} ran no case");
    assert!(
        failures.is_empty(),
        "{} of {} cases in group {group} failed:\n{}",
        failures.len(),
        passed + failures.len() as i64,
        failures.join("\n")
    );
}

#[test]
fn smoke() {
    run_group("smoke");
}

#[test]
fn every_keyword_validates_with_the_reference_wording() {
    run_group("keywords");
}

#[test]
fn defaults_are_filled_where_apisix_fills_them() {
    run_group("defaults");
}

#[test]
fn apisix_shaped_schemas_validate_and_fill_defaults_as_apisix_does() {
    run_group("apisix");
}
