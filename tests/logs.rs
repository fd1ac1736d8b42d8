//! Access and error logs.

mod support;

use std::time::Duration;

use support::*;

fn routes(p: u16) -> String {
    format!(
        "routes:\n  - id: r1\n    uri: /*\n    upstream:\n      nodes:\n        \"127.0.0.1:{p}\": 1\n#END\n"
    )
}

#[test]
fn access_log_has_one_apisix_shaped_line_per_request() {
    let echo = Echo::start("e");
    let gw = Gateway::start("", &routes(echo.port));
    request(
        gw.port,
        "GET",
        "/hello?a=1",
        &[("User-Agent", "tester/1"), ("Referer", "http://ref.test/")],
        b"",
    );
    gw.get("/status/503");
    wait_until("two access log lines", Duration::from_secs(3), || {
        gw.access_log().lines().count() >= 2
    });
    let log = gw.access_log();
    let first = log.lines().next().unwrap();
    assert!(first.starts_with("127.0.0.1 - - ["), "{first}");
    assert!(
        first.contains("] localhost \"GET /hello?a=1 HTTP/1.1\" 200 12 "),
        "{first}"
    );
    assert!(
        first.contains("\"http://ref.test/\" \"tester/1\""),
        "{first}"
    );
    assert!(
        first.contains(&format!("127.0.0.1:{} 200 ", echo.port)),
        "{first}"
    );
    assert!(log.lines().nth(1).unwrap().contains("\" 503 "), "{log}");
}

#[test]
fn access_log_json_and_off() {
    let echo = Echo::start("e");
    let gw = Gateway::start(
        "    access_log_format: '{\"s\":\"$status\",\"u\":\"$request_uri\",\"r\":\"$route_id\"}'\n    access_log_format_escape: json\n",
        &routes(echo.port),
    );
    gw.get("/j\"x");
    wait_until("json line", Duration::from_secs(3), || {
        !gw.access_log().is_empty()
    });
    let line: serde_json::Value =
        serde_json::from_str(gw.access_log().lines().next().unwrap()).unwrap();
    assert_eq!(line["s"], "200");
    assert_eq!(line["r"], "r1");

    let off = Gateway::start("    enable_access_log: false\n", &routes(echo.port));
    off.get("/x");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(off.access_log(), "");
}

#[test]
fn error_log_lines_have_nginx_shape() {
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: r\n    uri: /*\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
            free_port()
        ),
    );
    assert_eq!(gw.get("/x").status, 502);
    wait_until("an error line", Duration::from_secs(3), || {
        gw.error_log().contains("[error]")
    });
    let log = gw.error_log();
    let line = log.lines().find(|l| l.contains("[error]")).unwrap();
    let b = line.as_bytes();
    assert_eq!(
        (b[4], b[7], b[10], b[13], b[16]),
        (b'/', b'/', b' ', b':', b':'),
        "{line}"
    );
    assert!(line[19..].starts_with(" [error] "), "{line}");
    let pid = line[28..].split('#').next().unwrap();
    assert_eq!(pid.parse::<i32>().unwrap(), gw.pid(), "{line}");
    assert!(line.contains("connect() failed"), "{line}");
}
