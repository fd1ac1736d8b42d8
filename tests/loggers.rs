//! Logger plugins against real log servers: a fixture plugin written to APISIX's logger
//! pattern (apisix.utils.batch-processor-manager, resty.logger.socket, apisix.utils.rfc5424,
//! resty.http) ships entries to a TCP server, a UDP socket and an HTTP server started here.
//! Every wait is a condition polled with a deadline; nothing is timed.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

const FIXTURE: &str = include_str!("../t/fixtures/plugins/fixture-logger.lua");

/// A TCP log server: the bytes of every connection, appended.
fn tcp_sink() -> (u16, Arc<Mutex<Vec<u8>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let port = serve_each(move |mut c| {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = [0u8; 65536];
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            s.lock().unwrap().extend_from_slice(&buf[..n]);
        }
    });
    (port, seen)
}

/// A UDP log server: every datagram received.
fn udp_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = sock.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok(n) = sock.recv(&mut buf) {
            s.lock()
                .unwrap()
                .push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    (port, seen)
}

/// The requests an HTTP log server got: (request line, body).
type Posts = Arc<Mutex<Vec<(String, String)>>>;

/// An HTTP log server: answers every request `200 ok` once it has read it whole (head and
/// `Content-Length` body), and keeps the requests' bodies by path.
fn http_sink() -> (u16, Posts) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let port = serve_each(move |mut c| {
        let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
        let mut buf = Vec::new();
        let mut chunk = [0u8; 65536];
        loop {
            // One whole request in `buf`?
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                let len = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = String::from_utf8_lossy(&buf[end + 4..end + 4 + len]).into_owned();
                    let line = head.lines().next().unwrap_or_default().to_string();
                    s.lock().unwrap().push((line, body));
                    buf.drain(..end + 4 + len);
                    let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
                    if c.write_all(ok).is_err() {
                        break;
                    }
                    continue;
                }
            }
            match c.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    });
    (port, seen)
}

fn start(echo: u16, routes: &str) -> Gateway {
    let port = free_port();
    let config = format!("{}plugins:\n  - fixture-logger\n", config_yaml(port, ""));
    let yaml = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{echo}\": 1\nroutes:\n{routes}#END\n"
    );
    Gateway::start_with_files(
        &config,
        port,
        &yaml,
        &[("lua/plugins/fixture-logger.lua", FIXTURE)],
    )
}

fn route(id: &str, uri: &str, conf: &str) -> String {
    format!(
        "  - id: {id}\n    uri: {uri}\n    upstream_id: e\n    plugins:\n      fixture-logger: {conf}\n"
    )
}

fn wait_log(gw: &Gateway, needle: &str) -> String {
    let mut log = String::new();
    wait_until(needle, Duration::from_secs(10), || {
        log = gw.error_log();
        log.contains(needle)
    });
    log
}

#[test]
fn tcp_and_udp_loggers_deliver_rfc5424_lines() {
    let echo = Echo::start("e");
    let (tcp, tcp_seen) = tcp_sink();
    let (udp, udp_seen) = udp_sink();
    let gw = start(
        echo.port,
        &(route(
            "t",
            "/tcp/*",
            &format!("{{sink: tcp, port: {tcp}, batch_max_size: 2, inactive_timeout: 1}}"),
        ) + &route(
            "u",
            "/udp/*",
            &format!("{{sink: udp, port: {udp}, batch_max_size: 1}}"),
        )),
    );
    for path in ["/tcp/1", "/tcp/2", "/tcp/3", "/udp/1", "/udp/2"] {
        assert_eq!(gw.get(path).status, 200, "{path}");
    }

    // Two entries go out as a batch at once, the third once the route has been quiet.
    let text = || String::from_utf8_lossy(&tcp_seen.lock().unwrap()).into_owned();
    wait_until("three TCP log lines", Duration::from_secs(10), || {
        text().lines().count() >= 3
    });
    let pid = gw.pid();
    let lines: Vec<String> = text().lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    for (line, uri) in lines.iter().zip(["/tcp/1", "/tcp/2", "/tcp/3"]) {
        // <PRI = USER*8 + INFO>1 TIMESTAMP HOST APP PROCID - - MSG
        let parts: Vec<&str> = line.splitn(8, ' ').collect();
        assert_eq!(parts[0], "<14>1", "{line}");
        assert!(parts[1].ends_with('Z') && parts[1].contains('T'), "{line}");
        assert_eq!(
            &parts[2..7],
            ["localhost", "fixture", &pid.to_string(), "-", "-"]
        );
        assert_eq!(parts[7], format!("{{\"uri\":\"{uri}\"}}"), "{line}");
    }
    // batch_max_size 1: one datagram per request.
    wait_until("two UDP datagrams", Duration::from_secs(10), || {
        udp_seen.lock().unwrap().len() >= 2
    });
    let grams = udp_seen.lock().unwrap().clone();
    assert_eq!(grams.len(), 2, "{grams:?}");
    for uri in ["/udp/1", "/udp/2"] {
        let msg = format!("{{\"uri\":\"{uri}\"}}");
        assert!(grams.iter().any(|g| g.contains(&msg)), "{uri}: {grams:?}");
    }
    assert!(!gw.error_log().contains("[error]"), "{}", gw.error_log());
}

#[test]
fn http_logger_posts_batches_by_size_and_after_inactivity() {
    let echo = Echo::start("e");
    let (port, posts) = http_sink();
    let gw = start(
        echo.port,
        &(route(
            "h",
            "/h/*",
            &format!("{{sink: http, port: {port}, batch_max_size: 3, inactive_timeout: 60}}"),
        ) + &route(
            "q",
            "/q/*",
            &format!("{{sink: http, port: {port}, batch_max_size: 50, inactive_timeout: 1}}"),
        )),
    );
    for path in ["/h/1", "/h/2", "/h/3"] {
        assert_eq!(gw.get(path).status, 200, "{path}");
    }
    let uris_of = |body: &str| -> Vec<String> {
        let entries: serde_json::Value = serde_json::from_str(body).unwrap();
        entries
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["uri"].as_str().unwrap().to_string())
            .collect()
    };
    // The third entry fills the batch: one POST with all three, long before inactive_timeout.
    wait_until("a POST", Duration::from_secs(10), || {
        !posts.lock().unwrap().is_empty()
    });
    let first = posts.lock().unwrap()[0].clone();
    assert_eq!(first.0, "POST /log HTTP/1.1");
    assert_eq!(uris_of(&first.1), ["/h/1", "/h/2", "/h/3"]);

    // Under the size, the entry goes out once the route has been quiet for a second.
    assert_eq!(gw.get("/q/1").status, 200);
    wait_until("the quiet batch", Duration::from_secs(10), || {
        posts.lock().unwrap().len() >= 2
    });
    let all = posts.lock().unwrap().clone();
    assert_eq!(all.len(), 2, "{all:?}");
    assert_eq!(uris_of(&all[1].1), ["/q/1"]);
    assert!(!gw.error_log().contains("[error]"), "{}", gw.error_log());
}

#[test]
fn a_dead_log_server_is_retried_then_the_entries_are_dropped() {
    let echo = Echo::start("e");
    // A port nothing listens on: bound, then closed.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = start(
        echo.port,
        &route(
            "d",
            "/d",
            &format!(
                "{{sink: tcp, port: {dead}, batch_max_size: 1, max_retry_count: 2, retry_delay: 0}}"
            ),
        ),
    );
    assert_eq!(
        gw.get("/d").status,
        200,
        "the request never waits for the log server"
    );
    let log = wait_log(
        &gw,
        "Batch Processor[fixture logger] exceeded the max_retry_count[3] dropping the entries",
    );
    let failures = log
        .matches("Batch Processor[fixture logger] failed to process entries: ")
        .count();
    assert_eq!(failures, 3, "one try and two retries:\n{log}");
    assert!(log.contains("failed to connect the log server"), "{log}");
}

#[test]
fn the_module_wide_logger_ships_over_a_unix_socket() {
    let dir = TempDir::new("unix-log");
    let path = dir.0.join("log.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for mut c in listener.incoming().flatten() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            let mut buf = [0u8; 4096];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        }
    });
    let port = free_port();
    let lua = format!(
        r#"local logger = require("resty.logger.socket")
        ngx.say("initted before: ", tostring(logger.initted()))
        ngx.say("log before init: ", select(2, logger.log("x")))
        local ok, err = logger.init({{ path = "{}", flush_limit = 1024, drop_limit = 10 }})
        ngx.say("init: ", tostring(ok), " ", tostring(err), ", initted: ", tostring(logger.initted()))
        ngx.say("log: ", logger.log("first|"))
        ngx.say("over drop_limit: ", select(2, logger.log("much too long")))
        ngx.say("flush: ", (logger.flush()))
        ngx.say("bad init: ", select(2, logger.init({{ flush_limit = 1 }})))
"#,
        path.display()
    );
    let indented: String = lua
        .lines()
        .map(|l| format!("        {}\n", l.trim_start()))
        .collect();
    let routes = format!(
        "routes:\n  - id: u\n    uri: /unix\n    lua_handlers:\n      content_by_lua: |\n{indented}#END\n"
    );
    let gw = Gateway::start_with_config(&config_yaml(port, ""), port, &routes);
    let r = gw.get("/unix");
    assert_eq!(r.status, 200, "{}\n{}", r.body, gw.error_log());
    assert_eq!(
        r.body,
        "initted before: false\nlog before init: not initialized\ninit: true nil, initted: true\nlog: 6\nover drop_limit: logger buffer is full, this log message will be dropped\nflush: 6\nbad init: no logging server configured. \"host\"/\"port\" or \"path\" is required.\n"
    );
    wait_until(
        "the line on the unix socket",
        Duration::from_secs(10),
        || seen.lock().unwrap().as_slice() == b"first|",
    );
}
