//! What the upstream receives and what the client gets back.

mod support;

use support::*;

fn gw(echo: &Echo) -> Gateway {
    Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /*\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
            echo.port
        ),
    )
}

#[test]
fn upstream_sees_apisix_forwarding_headers() {
    let echo = Echo::start("e");
    let gw = gw(&echo);
    let r = request(
        gw.port,
        "GET",
        "/h?x=1",
        &[
            ("Host", "site.test:8080"),
            ("X-Forwarded-For", "1.2.3.4"),
            ("X-Forwarded-Proto", "https"),
            ("Forwarded", "for=evil"),
        ],
        b"",
    );
    let h = &r.json()["headers"];
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "site.test:8080");
    assert_eq!(h["x-forwarded-port"], "8080");
    assert_eq!(h["host"], "site.test:8080");
    assert!(h.get("forwarded").is_none());
    assert_eq!(r.json()["uri"], "/h?x=1");
    let r = request(gw.port, "GET", "/h", &[("Host", "plain.test")], b"");
    assert_eq!(r.json()["headers"]["x-forwarded-port"], gw.port.to_string());
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "127.0.0.1");
}

#[test]
fn a_trusted_peer_keeps_its_forwarding_headers() {
    let echo = Echo::start("e");
    let port = free_port();
    let config = config_yaml(port, "").replacen(
        "apisix:\n",
        "apisix:\n  trusted_addresses: [\"127.0.0.0/8\"]\n",
        1,
    );
    let gw = Gateway::start_with_config(
        &config,
        port,
        &routes_file(&format!(
            "routes:\n  - id: 1\n    uri: /*\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1",
            echo.port
        )),
    );
    let r = raw(
        gw.port,
        b"GET /t HTTP/1.1\r\nHost: site.test\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Proto: grpc\r\nX-Forwarded-Port: 10443\r\nForwarded: for=1.2.3.4\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(5),
    );
    let text = String::from_utf8_lossy(&r);
    let body = &text[text.find("\r\n\r\n").map(|i| i + 4).unwrap_or(0)..];
    let json: serde_json::Value = serde_json::from_str(body.trim()).unwrap_or_default();
    let h = &json["headers"];
    assert_eq!(h["x-forwarded-proto"], "https, grpc", "{text}");
    assert_eq!(h["x-forwarded-port"], "10443");
    // Not sent: what this hop saw.
    assert_eq!(h["x-forwarded-host"], "site.test");
    assert_eq!(h["forwarded"], "for=1.2.3.4");
}

#[test]
fn hop_by_hop_headers_are_not_forwarded() {
    let echo = Echo::start("e");
    let gw = gw(&echo);
    let r = request(
        gw.port,
        "GET",
        "/hop",
        &[
            ("Connection", "keep-alive, X-Private"),
            ("X-Private", "1"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Connection", "keep-alive"),
            ("Upgrade", "websocket"),
            ("X-Kept", "yes"),
        ],
        b"",
    );
    let h = r.json()["headers"].clone();
    for gone in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(h.get(gone).is_none(), "{gone} was forwarded: {h}");
    }
    assert_eq!(h["x-kept"], "yes");
}

#[test]
fn responses_carry_the_moongate_server_header() {
    let echo = Echo::start("e");
    let gw = gw(&echo);
    let r = gw.get("/hello");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "hello world\n");
    assert_eq!(
        r.header("server"),
        Some(concat!("moongate/", env!("CARGO_PKG_VERSION")))
    );
    assert_eq!(gw.get("/status/418").status, 418);
}

#[test]
fn large_bodies_stream_both_ways() {
    let echo = Echo::start("e");
    let gw = gw(&echo);
    let body = vec![b'z'; 8 * 1024 * 1024];
    let r = request(gw.port, "POST", "/big", &[], &body);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"].as_str().map(str::len), Some(body.len()));
}

#[test]
fn chunked_request_bodies_are_forwarded() {
    let echo = Echo::start("e");
    let gw = gw(&echo);
    let raw_resp = raw(
        gw.port,
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        std::time::Duration::from_secs(5),
    );
    let r = &parse_responses(&raw_resp)[0];
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["body"], "hello world");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let echo = Echo::start("e");
    let gw = gw(&echo);
    let out = raw(
        gw.port,
        b"GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\nGET /status/202 HTTP/1.1\r\nHost: x\r\n\r\nGET /status/203 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        std::time::Duration::from_secs(5),
    );
    let statuses: Vec<u16> = parse_responses(&out).iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![201, 202, 203]);
}

#[test]
fn http2_prior_knowledge_is_served_where_enabled() {
    let echo = Echo::start("e");
    let port = free_port();
    let config = config_yaml(port, "").replace(
        &format!("      port: {port}\n"),
        &format!("      port: {port}\n      enable_http2: true\n"),
    );
    let gw = Gateway::start_with_config(
        &config,
        port,
        &format!(
            "routes:\n  - id: 1\n    uri: /*\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
            echo.port
        ),
    );
    // HTTP/1.1 still works on the same port.
    assert_eq!(gw.get("/hello").status, 200);
    // An HTTP/2 client (curl, when installed) gets an HTTP/2 answer.
    if let Ok(out) = std::process::Command::new("curl")
        .args([
            "-s",
            "--http2-prior-knowledge",
            "-o",
            "/dev/null",
            "-w",
            "%{http_version} %{http_code}",
            &format!("http://127.0.0.1:{port}/hello"),
        ])
        .output()
    {
        assert_eq!(String::from_utf8_lossy(&out.stdout), "2 200");
    }
}
