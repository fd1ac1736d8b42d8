//! The HTTP/1.1 server side of the proxy listeners (src/server/h1/), through the real binary
//! with raw client sockets writing exact bytes: pipelining, chunked request bodies with
//! trailers, `100 Continue`, HTTP/1.0 keep-alive rules, HEAD answers, heads and bodies split
//! across writes, refused heads, clients that go away mid-body, and shutdown of idle
//! connections.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use support::*;

fn setup() -> (Echo, Gateway) {
    let echo = Echo::start("e");
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /*\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
            echo.port
        ),
    );
    (echo, gw)
}

fn connect(port: u16) -> TcpStream {
    let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Reads until the server closes; `false` as second value when the read timed out instead.
fn read_to_close(s: &mut TcpStream) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            // A reset after the answer still means the server closed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (out, true),
            Err(_) => return (out, false),
        }
    }
}

/// Reads until one complete response with a `Content-Length` body is in.
fn read_one(s: &mut TcpStream) -> Resp {
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        if let Some(end) = out.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&out[..end]).to_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .expect("a content-length answer");
            if out.len() >= end + 4 + len {
                return parse_responses(&out[..end + 4 + len]).remove(0);
            }
        }
        let n = s.read(&mut buf).expect("the answer arrives");
        assert!(
            n > 0,
            "closed before the answer: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
}

#[test]
fn pipelined_requests_in_one_write_are_answered_in_order() {
    let (_echo, gw) = setup();
    let mut s = connect(gw.port);
    s.write_all(
        b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n\
          POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
          GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (out, closed) = read_to_close(&mut s);
    assert!(closed, "Connection: close did not close");
    let resps = parse_responses(&out);
    let uris: Vec<String> = resps
        .iter()
        .map(|r| r.json()["uri"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(uris, ["/a", "/b", "/c"]);
    assert_eq!(resps[1].json()["body"], "hello");
    assert_eq!(resps[2].header("connection"), Some("close"));
}

#[test]
fn a_chunked_request_body_with_extensions_and_trailers_arrives_whole() {
    let (_echo, gw) = setup();
    let mut s = connect(gw.port);
    s.write_all(
        b"POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n\
          GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (out, _) = read_to_close(&mut s);
    let resps = parse_responses(&out);
    assert_eq!(resps.len(), 2, "{}", String::from_utf8_lossy(&out));
    assert_eq!(resps[0].json()["body"], "hello world");
    assert!(resps[0].json()["headers"].get("x-trailer").is_none());
    assert_eq!(resps[1].json()["uri"], "/after");
}

#[test]
fn expect_100_continue_is_answered_when_the_body_is_first_read() {
    let (_echo, gw) = setup();
    let mut s = connect(gw.port);
    s.write_all(b"PUT /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut interim = [0u8; 25];
    s.read_exact(&mut interim).unwrap();
    assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(b"data").unwrap();
    let (out, _) = read_to_close(&mut s);
    let resps = parse_responses(&out);
    assert_eq!(resps[0].status, 200);
    assert_eq!(resps[0].json()["body"], "data");
    assert!(
        resps[0].json()["headers"].get("expect").is_none(),
        "the upstream was asked to continue too"
    );
}

#[test]
fn http_1_0_closes_unless_it_asks_for_keep_alive() {
    let (_echo, gw) = setup();
    let mut s = connect(gw.port);
    s.write_all(b"GET /old HTTP/1.0\r\n\r\n").unwrap();
    let (out, closed) = read_to_close(&mut s);
    assert!(
        closed,
        "an HTTP/1.0 connection without keep-alive stayed open"
    );
    let r = &parse_responses(&out)[0];
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));

    let mut s = connect(gw.port);
    s.write_all(b"GET /one HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        .unwrap();
    let r = read_one(&mut s);
    assert_eq!(r.header("connection"), Some("keep-alive"));
    assert_eq!(r.json()["uri"], "/one");
    s.write_all(b"GET /two HTTP/1.0\r\n\r\n").unwrap();
    let (out, closed) = read_to_close(&mut s);
    assert!(closed);
    assert_eq!(parse_responses(&out)[0].json()["uri"], "/two");
}

#[test]
fn a_head_answer_has_its_length_but_no_body() {
    let (_echo, gw) = setup();
    let mut s = connect(gw.port);
    s.write_all(
        b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (out, _) = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&out);
    let end = text.find("\r\n\r\n").unwrap();
    assert!(
        text[..end].to_lowercase().contains("content-length: "),
        "{text}"
    );
    assert!(
        text[end + 4..].starts_with("HTTP/1.1 200"),
        "bytes after a HEAD answer's head: {text}"
    );
    let second = parse_responses(&out[end + 4..]);
    assert_eq!(second[0].json()["uri"], "/g");
}

#[test]
fn content_length_with_transfer_encoding_is_a_400_and_the_connection_closes() {
    let (_echo, gw) = setup();
    let mut s = connect(gw.port);
    s.write_all(
        b"POST /s HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let (out, closed) = read_to_close(&mut s);
    assert!(
        closed,
        "the connection stayed open after a smuggling attempt"
    );
    let resps = parse_responses(&out);
    assert_eq!(resps.len(), 1, "{}", String::from_utf8_lossy(&out));
    assert_eq!(resps[0].status, 400);
}

#[test]
fn a_malformed_head_gets_nginx_s_400_page_and_the_connection_closes() {
    let (_echo, gw) = setup();
    let mut s = connect(gw.port);
    s.write_all(
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .unwrap();
    let (out, closed) = read_to_close(&mut s);
    assert!(closed);
    let resps = parse_responses(&out);
    assert_eq!(resps.len(), 1);
    assert_eq!(resps[0].status, 400);
    assert!(
        resps[0]
            .body
            .contains("<center><h1>400 Bad Request</h1></center>")
    );
    assert!(
        resps[0]
            .header("server")
            .is_some_and(|v| v.starts_with("moongate"))
    );
}

#[test]
fn a_head_and_a_body_split_across_many_writes_are_put_together() {
    let (_echo, gw) = setup();
    let mut s = connect(gw.port);
    let head = b"POST /split?q=1 HTTP/1.1\r\nHost: x\r\nX-Long: abcdefghij\r\nContent-Length: 10\r\nConnection: close\r\n\r\n";
    for b in head.chunks(3) {
        s.write_all(b).unwrap();
        std::thread::sleep(Duration::from_millis(2));
    }
    for b in [&b"0123"[..], b"45", b"6789"] {
        std::thread::sleep(Duration::from_millis(20));
        s.write_all(b).unwrap();
    }
    let (out, _) = read_to_close(&mut s);
    let r = &parse_responses(&out)[0];
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/split?q=1");
    assert_eq!(r.json()["headers"]["x-long"], "abcdefghij");
    assert_eq!(r.json()["body"], "0123456789");
}

#[test]
fn a_client_closing_mid_body_leaves_the_gateway_serving() {
    let (_echo, gw) = setup();
    for _ in 0..3 {
        let mut s = connect(gw.port);
        s.write_all(b"POST /gone HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly some")
            .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        drop(s);
    }
    let mut s = connect(gw.port);
    s.write_all(b"POST /gone HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")
        .unwrap();
    drop(s);
    assert_eq!(gw.get("/still").status, 200);
    // The log phase still ran for the requests whose client went away.
    wait_until(
        "the aborted requests in the access log",
        Duration::from_secs(5),
        || gw.access_log().matches("POST /gone").count() == 4,
    );
}

#[test]
fn shutdown_closes_an_idle_keep_alive_connection_at_once() {
    let (_echo, mut gw) = setup();
    let mut s = connect(gw.port);
    s.write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_one(&mut s).status, 200);
    gw.signal(libc::SIGTERM);
    let (_, closed) = read_to_close(&mut s);
    assert!(closed, "an idle connection was kept open through shutdown");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    // Closed by the drain, not dropped when the drain timed out.
    assert!(
        !gw.error_log()
            .contains("still open after the drain timeout"),
        "{}",
        gw.error_log()
    );
}

#[test]
fn a_client_closing_while_its_request_waits_on_the_upstream_abandons_it() {
    let (_echo, gw) = setup();
    let mut s = connect(gw.port);
    s.write_all(b"GET /delay/1500 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(s);
    wait_until("the abort in the error log", Duration::from_secs(5), || {
        gw.error_log()
            .contains("client prematurely closed connection while processing the request")
    });
    assert_eq!(gw.get("/after").status, 200);
}

#[test]
fn an_answer_given_without_reading_an_expected_body_skips_100_continue_and_closes() {
    let echo = Echo::start("e");
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /only\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
            echo.port
        ),
    );
    let mut s = connect(gw.port);
    s.write_all(
        b"PUT /elsewhere HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let (out, closed) = read_to_close(&mut s);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 404"), "{text}");
    assert!(!text.contains("100 Continue"), "{text}");
    assert!(
        closed,
        "the connection waited for a body the client was never asked for"
    );
}
