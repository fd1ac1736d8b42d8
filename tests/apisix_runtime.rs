//! What APISIX-Runtime's nginx adds, in moongate's proxy core: the realip settings of
//! config.yaml (`nginx_config.http.real_ip_*`), `apisix.trusted_addresses`, and the
//! `resty.apisix.*` Lua API (`set_real_ip`, `set_gzip`, the request-header flag), checked
//! through the real binary with an echo upstream.

mod support;

use std::io::Read;
use std::time::Duration;

use support::*;

const RUNTIME: &str = include_str!("../t/fixtures/plugins/fixture-runtime.lua");

fn gateway(echo: &Echo, http: &str, apisix: &str, plugin_conf: &str) -> Gateway {
    let port = free_port();
    let config = format!(
        "{}plugins:\n  - fixture-runtime\n  - ip-restriction\n",
        config_yaml(port, http).replace("apisix:\n", &format!("apisix:\n{apisix}"))
    );
    let routes = routes_file(&format!(
        "routes:\n  - id: r1\n    uri: /echo\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n    plugins:\n      fixture-runtime: {plugin_conf}\n  - id: r2\n    uri: /only-10\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n    plugins:\n      ip-restriction:\n        whitelist: [\"10.1.2.3\"]",
        echo.port, echo.port
    ));
    Gateway::start_with_files(
        &config,
        port,
        &routes,
        &[("lua/plugins/fixture-runtime.lua", RUNTIME)],
    )
}

fn last_access_line(gw: &Gateway) -> String {
    let mut line = String::new();
    wait_until("an access-log line", Duration::from_secs(5), || {
        line = gw.access_log().lines().last().unwrap_or("").to_string();
        !line.is_empty()
    });
    line
}

#[test]
fn a_trusted_proxy_header_becomes_the_client_address_everywhere() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "    real_ip_header: X-Forwarded-For\n    real_ip_recursive: \"on\"\n    real_ip_from: [127.0.0.1, 192.168.0.0/16]\n",
        "",
        "{}",
    );
    // The nearest untrusted hop is the client: 10.1.2.3.
    let r = request(
        gw.port,
        "GET",
        "/only-10",
        &[("X-Forwarded-For", "8.8.8.8, 10.1.2.3, 192.168.7.7")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let seen = r.json();
    assert_eq!(seen["headers"]["x-real-ip"], "10.1.2.3");
    assert_eq!(
        seen["headers"]["x-forwarded-for"],
        "8.8.8.8, 10.1.2.3, 192.168.7.7, 10.1.2.3"
    );
    assert!(
        last_access_line(&gw).starts_with("10.1.2.3 "),
        "{}",
        gw.access_log()
    );
    // Without the header the peer is the client, and the route refuses it.
    assert_eq!(request(gw.port, "GET", "/only-10", &[], b"").status, 403);
}

#[test]
fn apisix_default_trusts_x_real_ip_from_loopback_only() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "", "", "{}");
    let r = request(
        gw.port,
        "GET",
        "/only-10",
        &[("X-Real-IP", "10.1.2.3")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(
        gw.port,
        "GET",
        "/only-10",
        &[("X-Forwarded-For", "10.1.2.3")],
        b"",
    );
    assert_eq!(r.status, 403, "X-Forwarded-For is not the default header");
}

#[test]
fn set_real_ip_changes_remote_addr_the_upstream_headers_and_the_access_log() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "", "", "{}");
    let r = request(
        gw.port,
        "GET",
        "/echo",
        &[("X-Client", "203.0.113.9#4455")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(r.header("X-Seen"), Some("203.0.113.9 4455 127.0.0.1"));
    assert_eq!(r.json()["headers"]["x-real-ip"], "203.0.113.9");
    assert!(
        last_access_line(&gw).starts_with("203.0.113.9 "),
        "{}",
        gw.access_log()
    );
    let r = request(gw.port, "GET", "/echo", &[("X-Client", "2001:db8::7")], b"");
    assert_eq!(r.status, 200);
    let seen = r.header("X-Seen").unwrap_or("");
    assert!(seen.starts_with("2001:db8::7 "), "{seen}");
    let r = request(gw.port, "GET", "/echo", &[("X-Client", "[::1]")], b"");
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid ip address: [::1]");
}

#[test]
fn the_request_header_flag_follows_set_header_and_clear() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "", "", "{}");
    let r = request(gw.port, "GET", "/echo", &[], b"");
    assert_eq!(r.header("X-Header-Flag"), Some("false true false"));
    assert_eq!(r.json()["headers"]["x-touched"], "1");
}

#[test]
fn untrusted_peers_lose_their_forwarded_for_when_a_trust_boundary_is_set() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "  trusted_addresses: [\"192.168.0.0/16\"]\n",
        "{}",
    );
    let r = request(
        gw.port,
        "GET",
        "/echo",
        &[("X-Forwarded-For", "1.1.1.1")],
        b"",
    );
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "127.0.0.1");
    let gw2 = gateway(&echo, "", "  trusted_addresses: [\"127.0.0.0/8\"]\n", "{}");
    let r = request(
        gw2.port,
        "GET",
        "/echo",
        &[("X-Forwarded-For", "1.1.1.1")],
        b"",
    );
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "1.1.1.1, 127.0.0.1");
}

/// The body of a raw HTTP/1.1 response, de-chunked, as bytes.
fn raw_body(raw: &[u8]) -> (String, Vec<u8>) {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut rest = &raw[split + 4..];
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return (head, rest.to_vec());
    }
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("chunk size");
        let size = usize::from_str_radix(
            String::from_utf8_lossy(&rest[..eol])
                .split(';')
                .next()
                .unwrap()
                .trim(),
            16,
        )
        .expect("hex chunk size");
        rest = &rest[eol + 2..];
        if size == 0 {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    (head, body)
}

fn post(port: u16, accept: Option<&str>, body: &str) -> (String, Vec<u8>) {
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(a) = accept {
        req.push_str(&format!("Accept-Encoding: {a}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    raw_body(&raw(port, req.as_bytes(), Duration::from_secs(10)))
}

#[test]
fn set_gzip_compresses_for_clients_that_accept_it() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "", "", "{gzip: 9}");
    let payload = "0123456789".repeat(200);
    let (head, body) = post(gw.port, Some("gzip, deflate"), &payload);
    assert!(
        head.to_ascii_lowercase().contains("content-encoding: gzip"),
        "{head}"
    );
    assert!(
        !head.to_ascii_lowercase().contains("content-length"),
        "{head}"
    );
    let mut text = String::new();
    flate2::read::GzDecoder::new(&body[..])
        .read_to_string(&mut text)
        .expect("a gzip stream");
    assert!(
        text.contains(&payload),
        "the echo of the body comes back whole"
    );
    assert!(body.len() < payload.len() / 4, "compressed: {}", body.len());
    // A client that does not take gzip gets the body as it is.
    let (head, body) = post(gw.port, None, &payload);
    assert!(
        !head.to_ascii_lowercase().contains("content-encoding"),
        "{head}"
    );
    assert!(String::from_utf8_lossy(&body).contains(&payload));
    let (head, _) = post(gw.port, Some("gzip;q=0"), &payload);
    assert!(
        !head.to_ascii_lowercase().contains("content-encoding"),
        "{head}"
    );
}

#[test]
fn set_gzip_refuses_a_bad_level() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "", "", "{gzip: 12}");
    let r = request(gw.port, "GET", "/echo", &[("Accept-Encoding", "gzip")], b"");
    assert_eq!(
        r.header("X-Gzip-Error"),
        Some("compress_level should be between 1 and 9")
    );
    assert_eq!(r.header("Content-Encoding"), None);
}

fn post_chunked(port: u16, chunks: &[&str]) -> (String, Vec<u8>) {
    let mut req = String::from(
        "POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n",
    );
    for c in chunks {
        req.push_str(&format!("{:x}\r\n{c}\r\n", c.len()));
    }
    req.push_str("0\r\n\r\n");
    raw_body(&raw(port, req.as_bytes(), Duration::from_secs(10)))
}

#[test]
fn set_client_max_body_size_limits_this_request_body() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "", "", "{max_body: 5}");
    let r = request(gw.port, "POST", "/echo", &[], b"123456");
    assert_eq!(r.status, 413, "{r:?}");
    let r = request(gw.port, "POST", "/echo", &[], b"12345");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["body"], "12345");
    let (head, _) = post_chunked(gw.port, &["Hello ", "world"]);
    assert!(head.starts_with("HTTP/1.1 413"), "{head}");
    assert!(
        gw.error_log()
            .contains("client intended to send too large chunked body"),
        "{}",
        gw.error_log()
    );
    // 0 lifts the limit, chunked bodies included.
    let open = gateway(&echo, "    client_max_body_size: 4\n", "", "{max_body: 0}");
    let (head, body) = post_chunked(open.port, &["Hello ", "world"]);
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{head}\n{}",
        open.error_log()
    );
    let v: serde_json::Value = serde_json::from_slice(&body).expect("echo JSON");
    assert_eq!(v["body"], "Hello world");
}
