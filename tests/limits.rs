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
