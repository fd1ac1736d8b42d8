//! core.schema and moongate.jsonschema, checked inside a real moongate Lua VM: every keyword,
//! where defaults are filled (nested objects, oneOf/anyOf branches, arrays), the exact error
//! wording for each kind of failure, and APISIX-shaped plugin schemas (written here, equivalent
//! to key-auth's, limit-count's and proxy-rewrite's) validating and filling defaults as APISIX
//! does. The cases themselves are Lua, in `tests/lua/schema_cases.lua`, one group per test here;
//! the last test runs a plugin checked by core.schema in the real binary.

mod support;

use std::path::PathBuf;
use std::time::Duration;

use moongate::lua::vm::{LuaVm, VmOptions};
use support::*;

/// A VM over an empty prefix: the built-in library (lua/) is what is under test. The prefix
/// directory lives as long as the returned guard.
fn vm() -> (LuaVm, TempDir) {
    let prefix = TempDir::new("schema");
    std::fs::create_dir_all(prefix.0.join("lua/plugins")).unwrap();
    let vm = LuaVm::new(&VmOptions::for_prefix(&prefix.0)).unwrap();
    (vm, prefix)
}

fn cases_file() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/lua/schema_cases.lua")
}

/// Runs one group of cases; panics listing every failing case by name.
fn run_group(group: &str) {
    let (vm, _prefix) = vm();
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

const FIXTURE: &str = include_str!("../t/fixtures/plugins/fixture-schema.lua");

#[test]
fn a_plugin_checked_by_core_schema_gets_defaults_and_bad_confs_are_refused_in_apisix_words() {
    let echo = Echo::start("e");
    let port = free_port();
    let config = format!("{}plugins:\n  - fixture-schema\n", config_yaml(port, ""));
    let upstream = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\n",
        echo.port
    );
    let routes = format!(
        "{upstream}routes:\n  - id: r1\n    uri: /echo\n    upstream_id: e\n    plugins:\n      fixture-schema: {{pool: {{}}}}\n#END\n"
    );
    let gw = Gateway::start_with_files(
        &config,
        port,
        &routes,
        &[("lua/plugins/fixture-schema.lua", FIXTURE)],
    );
    let r = gw.get("/echo");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(
        r.header("x-conf-seen"),
        Some(r#"{"header":"apikey","pool":{"size":320},"rejected_code":503}"#)
    );
    // A bad conf never replaces the good snapshot, and the log says what was wrong.
    gw.write_routes(&format!(
        "{upstream}routes:\n  - id: r1\n    uri: /echo\n    upstream_id: e\n    plugins:\n      fixture-schema: {{rejected_code: 600}}\n#END\n"
    ));
    let needle = "failed to check the configuration of plugin fixture-schema err: property \"rejected_code\" validation failed: expected 600 to be at most 599";
    wait_until(needle, Duration::from_secs(5), || {
        gw.error_log().contains(needle)
    });
    assert_eq!(
        gw.get("/echo").header("x-conf-seen"),
        Some(r#"{"header":"apikey","pool":{"size":320},"rejected_code":503}"#)
    );
}
