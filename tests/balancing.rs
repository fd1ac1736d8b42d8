//! Balancers, retries and upstream failures through the real binary.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;

fn counts(gw: &Gateway, path: &str, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let mut c = HashMap::new();
    for _ in 0..n {
        let r = request(gw.port, "GET", path, headers, b"");
        assert_eq!(r.status, 200, "{}", r.body);
        *c.entry(r.header("x-echo-server").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    c
}

#[test]
fn roundrobin_follows_weights_exactly_on_one_worker() {
    let (a, b, c) = (Echo::start("a"), Echo::start("b"), Echo::start("c"));
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /w\n    upstream:\n      type: roundrobin\n      nodes:\n        \"127.0.0.1:{}\": 5\n        \"127.0.0.1:{}\": 1\n        \"127.0.0.1:{}\": 1\n#END\n",
            a.port, b.port, c.port
        ),
    );
    let got = counts(&gw, "/w", 140, &[]);
    assert_eq!((got["a"], got["b"], got["c"]), (100, 20, 20));
}

#[test]
fn chash_sends_one_key_to_one_node() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /c\n    upstream:\n      type: chash\n      hash_on: vars\n      key: arg_user\n      nodes:\n        \"127.0.0.1:{}\": 1\n        \"127.0.0.1:{}\": 1\n#END\n",
            a.port, b.port
        ),
    );
    let mut seen = HashMap::new();
    for user in 0..20 {
        let path = format!("/c?user=u{user}");
        let first = request(gw.port, "GET", &path, &[], b"")
            .header("x-echo-server")
            .unwrap()
            .to_string();
        for _ in 0..3 {
            assert_eq!(
                request(gw.port, "GET", &path, &[], b"")
                    .header("x-echo-server")
                    .unwrap(),
                first
            );
        }
        *seen.entry(first).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 2, "keys spread over both nodes: {seen:?}");
}

#[test]
fn retries_go_to_a_live_node_when_one_refuses() {
    let live = Echo::start("live");
    let dead = free_port();
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /r\n    upstream:\n      nodes:\n        \"127.0.0.1:{dead}\": 1\n        \"127.0.0.1:{}\": 1\n#END\n",
            live.port
        ),
    );
    let got = counts(&gw, "/r", 10, &[]);
    assert_eq!(got.get("live"), Some(&10));
    assert!(gw.error_log().contains("while connecting to upstream"));
}

#[test]
fn lower_priority_nodes_take_over_when_higher_ones_fail() {
    let backup = Echo::start("backup");
    let dead = free_port();
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /p\n    upstream:\n      nodes:\n        - {{host: 127.0.0.1, port: {dead}, weight: 1, priority: 10}}\n        - {{host: 127.0.0.1, port: {}, weight: 1, priority: 0}}\n#END\n",
            backup.port
        ),
    );
    assert_eq!(counts(&gw, "/p", 5, &[]).get("backup"), Some(&5));
}

#[test]
fn all_nodes_down_is_502_and_slow_upstream_is_504() {
    let (d1, d2) = (free_port(), free_port());
    let silent = silent_backend();
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /down\n    upstream:\n      nodes:\n        \"127.0.0.1:{d1}\": 1\n        \"127.0.0.1:{d2}\": 1\n  - id: 2\n    uri: /slow\n    timeout: {{connect: 1, send: 1, read: 0.5}}\n    upstream:\n      nodes:\n        \"127.0.0.1:{silent}\": 1\n#END\n"
        ),
    );
    assert_eq!(gw.get("/down").status, 502);
    let t = std::time::Instant::now();
    assert_eq!(gw.get("/slow").status, 504);
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(gw.error_log().contains("upstream timed out"));
}

#[test]
fn pass_host_modes_set_the_upstream_host() {
    let e = Echo::start("e");
    let p = e.port;
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - {{id: 1, uri: /pass, upstream: {{nodes: {{\"127.0.0.1:{p}\": 1}}}}}}\n  - {{id: 2, uri: /node, upstream: {{pass_host: node, nodes: {{\"127.0.0.1:{p}\": 1}}}}}}\n  - {{id: 3, uri: /rewrite, upstream: {{pass_host: rewrite, upstream_host: up.test, nodes: {{\"127.0.0.1:{p}\": 1}}}}}}\n#END\n"
        ),
    );
    let host = |path| {
        request(gw.port, "GET", path, &[("Host", "client.test:81")], b"").json()["headers"]["host"]
            .clone()
    };
    assert_eq!(host("/pass"), "client.test:81");
    assert_eq!(host("/node"), format!("127.0.0.1:{p}"));
    assert_eq!(host("/rewrite"), "up.test");
}

#[test]
fn least_conn_and_ewma_serve_from_live_nodes() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    for kind in ["least_conn", "ewma"] {
        let gw = Gateway::start(
            "",
            &format!(
                "routes:\n  - id: 1\n    uri: /l\n    upstream:\n      type: {kind}\n      nodes:\n        \"127.0.0.1:{}\": 1\n        \"127.0.0.1:{}\": 1\n#END\n",
                a.port, b.port
            ),
        );
        let got = counts(&gw, "/l", 20, &[]);
        assert_eq!(got.values().sum::<usize>(), 20, "{kind}: {got:?}");
    }
}

#[test]
fn an_upstream_stalling_mid_body_is_cut_off_after_the_read_timeout() {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf);
                let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
                std::thread::sleep(Duration::from_secs(10));
            });
        }
    });
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /stall\n    timeout: {{connect: 1, send: 1, read: 0.5}}\n    upstream:\n      nodes:\n        \"127.0.0.1:{port}\": 1\n#END\n"
        ),
    );
    let t = std::time::Instant::now();
    let out = raw(
        gw.port,
        b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(8),
    );
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the stalled body was not cut off"
    );
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.ends_with("0123456789"),
        "the client must see a truncated body, not a complete one: {text}"
    );
}

#[test]
fn least_conn_avoids_the_node_busy_with_a_slow_request() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /*\n    upstream:\n      type: least_conn\n      nodes:\n        \"127.0.0.1:{}\": 1\n        \"127.0.0.1:{}\": 1\n#END\n",
            a.port, b.port
        ),
    );
    let port = gw.port;
    let slow = std::thread::spawn(move || {
        request(port, "GET", "/delay/1500", &[], b"")
            .header("x-echo-server")
            .map(str::to_string)
    });
    std::thread::sleep(Duration::from_millis(300));
    let got = counts(&gw, "/fast", 10, &[]);
    let busy = slow.join().unwrap().unwrap();
    assert_eq!(
        got.get(&busy),
        None,
        "least_conn sent requests to the busy node: {got:?}"
    );
    assert_eq!(got.values().sum::<usize>(), 10);
}

#[test]
fn node_names_resolve_per_request_and_an_unknown_name_fails_only_its_tries() {
    let live = Echo::start("live");
    // `.invalid` never resolves (RFC 6761): the route is still served, as APISIX serves it,
    // and a try that picks the name fails over to the next node.
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /named\n    upstream:\n      nodes:\n        \"localhost:{p}\": 1\n  - id: 2\n    uri: /mixed\n    upstream:\n      nodes:\n        \"moongate-nowhere.invalid:{p}\": 1\n        \"127.0.0.1:{p}\": 1\n  - id: 3\n    uri: /nowhere\n    upstream:\n      nodes:\n        \"moongate-nowhere.invalid:{p}\": 1\n#END\n",
            p = live.port
        ),
    );
    let got = counts(&gw, "/named", 3, &[]);
    assert_eq!(
        got.get("live"),
        Some(&3),
        "a node named localhost is reached"
    );
    let got = counts(&gw, "/mixed", 4, &[]);
    assert_eq!(
        got.get("live"),
        Some(&4),
        "tries fail over from the unknown name"
    );
    let r = request(gw.port, "GET", "/nowhere", &[], b"");
    assert_eq!(r.status, 502, "{}", r.body);
    let log = gw.error_log();
    assert!(
        log.contains("dns resolver domain: moongate-nowhere.invalid error:"),
        "{log}"
    );
    assert!(
        !log.contains("is invalid and is not served"),
        "the routes are not refused at load: {log}"
    );
}
