//! Start-up, reload, shutdown and the CLI.

mod support;

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

fn routes(echo_port: u16, uri: &str) -> String {
    format!(
        "routes:\n  - id: r\n    uri: {uri}\n    upstream:\n      nodes:\n        \"127.0.0.1:{echo_port}\": 1\n#END\n"
    )
}

#[test]
fn route_file_changes_apply_within_a_second_and_bad_files_keep_the_old_routes() {
    let echo = Echo::start("e");
    let gw = Gateway::start("", &routes(echo.port, "/v1"));
    assert_eq!(gw.get("/v1").status, 200);
    gw.write_routes(&routes(echo.port, "/v2"));
    wait_until("the new route", Duration::from_secs(2), || {
        gw.get("/v2").status == 200
    });
    assert_eq!(gw.get("/v1").status, 404);

    // Invalid: the old routes keep serving and the error names resource, id and field.
    gw.write_routes(
        "routes:\n  - id: broken\n    uri: /v3\n    methods: [FETCH]\n    upstream_id: x\n#END\n",
    );
    wait_until("the error", Duration::from_secs(3), || {
        gw.error_log().contains("routes[id=broken]: methods")
    });
    assert_eq!(gw.get("/v2").status, 200);
    assert!(gw.error_log().contains("[error]"));

    // Half-written (no #END yet): ignored until complete.
    gw.write_routes(&routes(echo.port, "/v4").replace("#END\n", ""));
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(gw.get("/v4").status, 404);
    assert_eq!(gw.get("/v2").status, 200);
}

#[test]
fn sighup_reloads_the_route_file() {
    let echo = Echo::start("e");
    let gw = Gateway::start("", &routes(echo.port, "/a"));
    gw.write_routes(&routes(echo.port, "/b"));
    gw.signal(libc::SIGHUP);
    wait_until("reload after SIGHUP", Duration::from_secs(2), || {
        gw.get("/b").status == 200
    });
}

#[test]
fn reload_under_load_fails_no_request() {
    let echo = Echo::start("e");
    let gw = Gateway::start("", &routes(echo.port, "/load*"));
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for _ in 0..3 {
        let (stop, bad, done, port) = (stop.clone(), bad.clone(), done.clone(), gw.port);
        threads.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if request(port, "GET", "/load/x", &[], b"").status != 200 {
                    bad.fetch_add(1, Ordering::Relaxed);
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for i in 0..10 {
        // The same route under a different upstream id each time: every change is a new snapshot.
        let yaml = format!(
            "upstreams:\n  - id: u{i}\n    nodes:\n      \"127.0.0.1:{}\": 1\nroutes:\n  - id: r\n    uri: /load*\n    upstream_id: u{i}\n#END\n",
            echo.port
        );
        gw.write_routes(&yaml);
        std::thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 50);
    assert_eq!(bad.load(Ordering::Relaxed), 0);
    assert!(gw.error_log().matches("loaded").count() >= 1 || !gw.error_log().contains("[error]"));
}

#[test]
fn sigterm_lets_in_flight_requests_finish_then_exits_zero() {
    let echo = Echo::start("e");
    let mut gw = Gateway::start("", &routes(echo.port, "/delay/*"));
    let port = gw.port;
    let inflight = std::thread::spawn(move || request(port, "GET", "/delay/1000", &[], b"").status);
    std::thread::sleep(Duration::from_millis(300));
    gw.signal(libc::SIGTERM);
    assert_eq!(inflight.join().unwrap(), 200);
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "still accepting after shutdown"
    );
}

#[test]
fn a_port_in_use_fails_start_up_with_a_clear_message() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let dir = TempDir::new("busy");
    std::fs::write(dir.0.join("conf/config.yaml"), config_yaml(port, "")).unwrap();
    std::fs::write(dir.0.join("conf/apisix.yaml"), "#END\n").unwrap();
    let out = Command::new(BIN)
        .args(["run", "-p"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("bind() to 127.0.0.1:{port} failed")),
        "{err}"
    );
}

#[test]
fn check_reports_every_error_and_version_prints() {
    let dir = TempDir::new("check");
    std::fs::write(
        dir.0.join("conf/config.yaml"),
        "nginx_config:\n  worker_processes: zero\n  error_log_level: loud\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "-p"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nginx_config.worker_processes")
            && err.contains("nginx_config.error_log_level"),
        "{err}"
    );

    std::fs::write(dir.0.join("conf/config.yaml"), "").unwrap();
    std::fs::write(dir.0.join("conf/apisix.yaml"), "routes:\n  - id: 1\n    uri: nope\n  - id: 2\n    uri: /x\n    upstream: {nodes: {\"127.0.0.1:1\": 1}, scheme: grpc}\n#END\n").unwrap();
    let out = Command::new(BIN)
        .args(["check", "-p"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("routes[id=1]: uri") && err.contains("routes[id=2]: scheme"),
        "{err}"
    );

    std::fs::write(
        dir.0.join("conf/apisix.yaml"),
        "routes:\n  - id: 1\n    uri: /x\n    upstream: {nodes: {\"127.0.0.1:1\": 1}}\n#END\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check", "-p"])
        .arg(&dir.0)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = Command::new(BIN).arg("version").output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        concat!("moongate ", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn unknown_config_keys_are_warned_once_in_the_error_log_and_do_not_stop_start_up() {
    let echo = Echo::start("e");
    let port = free_port();
    let config = config_yaml(port, "").replace("apisix:\n", "apisix:\n  proxy_mode: http&stream\n")
        + "made_up_section: 1\n";
    let gw = Gateway::start_with_config(&config, port, &routes(echo.port, "/w"));
    assert_eq!(gw.get("/w").status, 200);
    let log = gw.error_log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("apisix.proxy_mode: not supported by moongate yet"))
            .count(),
        1,
        "{log}"
    );
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("made_up_section: unknown key"))
            .count(),
        1,
        "{log}"
    );
}
