//! The project's own `.t` suites, run through `moongate test` (the real binary, real gateways
//! on the fixed test ports), and the runner's must-fail self-tests, which must be reported as
//! failures. The suites share ports 1984/1970, so they run one at a time.

use std::process::Command;
use std::sync::Mutex;

const BIN: &str = env!("CARGO_BIN_EXE_moongate");

static PORTS: Mutex<()> = Mutex::new(());

fn moongate_test(args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .arg("test")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run moongate test");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[test]
fn own_suites_pass_through_the_runner() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let (ok, out) = moongate_test(&[
        "t/runner/basics.t",
        "t/runner/apisix-prologue.t",
        "t/runner/servers.t",
        "t/runner/skip-all.t",
        "t/runner/init-worker.t",
        "t/runner/hup.t",
        "t/runner/prologue-env.t",
        "t/ngx",
        "t/libs",
        "t/shim",
    ]);
    assert!(ok, "moongate test failed:\n{out}");
    assert!(lines_starting(&out, "not ok").is_empty(), "{out}");
    // The skips are the ones the files ask for, each with its reason.
    let skips = lines_starting(&out, "skip - ");
    assert_eq!(skips.len(), 5, "{out}");
    assert!(
        out.contains(
            "main_config: nginx directive `worker_rlimit_nofile` has no moongate translation"
        ),
        "{out}"
    );
    assert!(
        out.contains("section --- stream_request is not supported"),
        "{out}"
    );
    assert!(
        out.contains("nginx directive `echo` has no moongate translation"),
        "{out}"
    );
    assert!(out.contains("# skip_eval: 1 + 1 == 2"), "{out}");
    assert!(
        out.contains("skipped by plan(skip_all): this file is skipped on purpose"),
        "{out}"
    );
    // LAST stops the file: its TEST 5 is never reported.
    assert!(!out.contains("apisix-prologue.t TEST 5"), "{out}");
    let closing = out.lines().last().unwrap_or_default();
    assert!(closing.ends_with("0 failed, 5 skipped"), "{closing}");
}

#[test]
fn blocks_that_must_fail_are_reported_as_failures() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let (ok, out) = moongate_test(&["t/runner/must-fail.t", "t/runner/must-fail-apisix.t"]);
    assert!(!ok, "a run with failures must exit non-zero:\n{out}");
    assert!(lines_starting(&out, "ok - ").is_empty(), "{out}");
    assert_eq!(lines_starting(&out, "not ok - ").len(), 10, "{out}");
    for reason in [
        "response_body differs",
        "error_code: expected 200, got 404",
        "no_error_log: \"[error]\" found in the error log",
        "error_log: \"this line is never logged\" not found",
        "response header X-Never: expected \"1\", got no such header",
        "request 2: response_body differs",
        "an error nobody asked about",
        "access_log: \"GET /never-requested\" not found in the access log",
        "error_code_like: status 404 does not match /^2\\d\\d$/",
    ] {
        assert!(out.contains(reason), "missing {reason:?} in:\n{out}");
    }
    assert!(
        out.trim_end().ends_with("0 passed, 10 failed, 0 skipped"),
        "{out}"
    );
}

#[test]
fn only_runs_one_block() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let (ok, out) = moongate_test(&["--only", "must-fail.t:2", "t/runner/must-fail.t"]);
    assert!(!ok);
    assert_eq!(lines_starting(&out, "not ok - ").len(), 1, "{out}");
    assert!(out.contains("must-fail.t TEST 2: wrong status"), "{out}");
}

#[test]
fn the_server_lua_module_serves_the_apisix_upstream_ports() {
    let _ports = PORTS.lock().unwrap_or_else(|e| e.into_inner());
    let (ok, out) = moongate_test(&[
        "--server-lua",
        "t/fixtures/test-server.lua",
        "t/runner/upstream.t",
    ]);
    assert!(ok, "{out}");
    assert!(
        out.trim_end().ends_with("3 passed, 0 failed, 0 skipped"),
        "{out}"
    );
}
