//! Request shapes nginx refuses are refused before anything reaches the upstream.

mod support;

use std::time::Duration;

use support::*;

fn setup(http: &str) -> (Recorder, Gateway) {
    let rec = Recorder::start();
    let gw = Gateway::start(
        http,
        &format!(
            "routes:\n  - id: 1\n    uri: /*\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
            rec.port
        ),
    );
    (rec, gw)
}

fn status_of(gw: &Gateway, bytes: &[u8]) -> u16 {
    let out = raw(gw.port, bytes, Duration::from_secs(5));
    parse_responses(&out).first().map(|r| r.status).unwrap_or(0)
}

#[test]
fn smuggling_shapes_are_refused_and_never_forwarded() {
    let (rec, gw) = setup("");
    let vectors: Vec<(&str, &[u8], &[u16])> = vec![
        ("CL.TE", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX", &[400]),
        ("TE.CL", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n8\r\nSMUGGLED\r\n0\r\n\r\n", &[400]),
        ("TE list", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n", &[400, 501]),
        ("TE comma", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: ,chunked\r\n\r\n0\r\n\r\n", &[400, 501]),
        ("TE twice", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", &[400]),
        ("two equal CL", b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", &[400]),
        ("two Host", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", &[400]),
        ("two Authorization", b"GET / HTTP/1.1\r\nHost: a\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n", &[400]),
        ("no Host", b"GET / HTTP/1.1\r\nX: y\r\n\r\n", &[400]),
        ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: y\r\n z\r\n\r\n", &[400]),
        ("NUL", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", &[400]),
        ("lower-case method", b"get / HTTP/1.1\r\nHost: a\r\n\r\n", &[400]),
        ("space in name", b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: v\r\n\r\n", &[400]),
    ];
    for (name, bytes, expected) in vectors {
        let s = status_of(&gw, bytes);
        assert!(
            expected.contains(&s),
            "{name}: got {s}, expected {expected:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rec.text(), "", "the upstream saw a refused request");
    // The worker is still serving.
    assert_eq!(gw.get("/fine").status, 200);
}

#[test]
fn long_lines_are_refused_like_nginx() {
    let (rec, gw) = setup("");
    let uri = format!("GET /{} HTTP/1.1\r\nHost: a\r\n\r\n", "u".repeat(9000));
    assert_eq!(status_of(&gw, uri.as_bytes()), 414);
    let hdr = format!(
        "GET / HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "h".repeat(9000)
    );
    assert_eq!(status_of(&gw, hdr.as_bytes()), 400);
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: a\r\n{}\r\n",
        "X-H: v\r\n".repeat(200)
    );
    assert!([400, 431].contains(&status_of(&gw, huge.as_bytes())));
    assert_eq!(rec.text(), "");
    assert_eq!(gw.get("/ok").status, 200);
}

#[test]
fn bodies_over_client_max_body_size_get_413() {
    let (rec, gw) = setup("    client_max_body_size: 1k\n");
    let r = request(gw.port, "POST", "/b", &[], &vec![b'x'; 2048]);
    assert_eq!(r.status, 413);
    assert_eq!(
        rec.text(),
        "",
        "a declared oversize body never reaches the upstream"
    );
    assert_eq!(request(gw.port, "POST", "/b", &[], b"small").status, 200);
}

#[test]
fn a_chunked_body_growing_past_the_limit_gets_413() {
    let echo = Echo::start("e");
    let gw = Gateway::start(
        "    client_max_body_size: 1k\n",
        &format!(
            "routes:\n  - id: 1\n    uri: /*\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
            echo.port
        ),
    );
    let mut chunked = b"POST /b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..4 {
        chunked.extend_from_slice(b"200\r\n");
        chunked.extend_from_slice(&[b'y'; 512]);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(status_of(&gw, &chunked), 413);
    assert_eq!(gw.get("/ok").status, 200);
}

/// More of the reliability plan's vectors (§1.2), each followed by a pipelined request that
/// must never reach the upstream: the connection closes after a refusal.
#[test]
fn framing_vectors_nginx_refuses_are_refused_and_close_the_connection() {
    let (rec, gw) = setup("");
    let vectors: Vec<(&str, &[u8], &[u16])> = vec![
        (
            "TE in HTTP/1.0",
            b"POST / HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        (
            "space before colon",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
            &[400],
        ),
        (
            "TE xchunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
            &[400, 501],
        ),
        (
            "VT before chunked",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
            &[400, 501],
        ),
        (
            "CL with plus",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
            &[400],
        ),
        (
            "empty CL",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: \r\n\r\n",
            &[400],
        ),
        (
            "CL list",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
            &[400],
        ),
        (
            "two different CL",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
            &[400],
        ),
        (
            "CR in a value",
            b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n",
            &[400],
        ),
        (
            "empty name",
            b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n",
            &[400],
        ),
    ];
    for (name, bytes, expected) in vectors {
        let mut wire = bytes.to_vec();
        wire.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        let out = raw(gw.port, &wire, Duration::from_secs(5));
        let answers = parse_responses(&out);
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        assert!(
            answers.len() == 1 && expected.contains(&statuses[0]),
            "{name}: got {statuses:?}, expected one of {expected:?} and a closed connection"
        );
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rec.text(), "", "the upstream saw a refused request");
    assert_eq!(gw.get("/fine").status, 200);
}

/// A malformed chunk is a 400 and a closed connection; what was already streaming upstream is
/// cut short (no last chunk), never ended as a clean shorter body (reliability plan H1-07).
#[test]
fn malformed_chunks_get_400_and_the_upstream_never_sees_a_clean_body() {
    let (rec, gw) = setup("");
    let vectors: Vec<(&str, &[u8])> = vec![
        ("0x size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x3\r\nabc\r\n0\r\n\r\n"),
        ("empty size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\r\nabc\r\n0\r\n\r\n"),
        ("size overflow", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nabc\r\n0\r\n\r\n"),
        ("data longer than size", b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n"),
    ];
    for (name, bytes) in vectors {
        let mut wire = bytes.to_vec();
        wire.extend_from_slice(b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
        let out = raw(gw.port, &wire, Duration::from_secs(5));
        let statuses: Vec<u16> = parse_responses(&out).iter().map(|r| r.status).collect();
        assert_eq!(statuses, [400], "{name}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let seen = rec.text();
    assert!(!seen.contains("smuggled"), "{seen}");
    assert!(
        !seen.contains("0\r\n\r\n"),
        "a cut body was ended cleanly: {seen:?}"
    );
    assert_eq!(gw.get("/fine").status, 200);
}

/// A route that answers before reading the body (401 here) must not let the body be read as
/// the next request (reliability plan H1-04, Pingora CVE-2025-4366): the body is drained or
/// the connection closed, and the request hidden in it never reaches the upstream.
#[test]
fn a_body_left_unread_by_an_early_answer_is_never_a_request() {
    let rec = Recorder::start();
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /guarded\n    upstream:\n      nodes:\n        \"127.0.0.1:{p}\": 1\n    lua_handlers:\n      access_by_lua: |\n        ngx.exit(401)\n  - id: 2\n    uri: /admin\n    upstream:\n      nodes:\n        \"127.0.0.1:{p}\": 1\n#END\n",
            p = rec.port
        ),
    );
    let hidden = b"GET /admin HTTP/1.1\r\nHost: x\r\n\r\n";
    for pad in [0usize, 64, 64 * 1024] {
        let mut body = vec![b'p'; pad];
        body.extend_from_slice(hidden);
        let mut wire = format!(
            "POST /guarded HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        wire.extend_from_slice(&body);
        // A drained body leaves the connection open: the read ends on the timeout then.
        let out = raw(gw.port, &wire, Duration::from_secs(2));
        let statuses: Vec<u16> = parse_responses(&out).iter().map(|r| r.status).collect();
        assert_eq!(statuses, [401], "padding {pad}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(!rec.text().contains("/admin"), "{}", rec.text());
}
