//! Slow and silent clients are bounded, as nginx bounds them.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::*;

fn gw(http: &str) -> (Echo, Gateway) {
    let echo = Echo::start("e");
    let gw = Gateway::start(
        http,
        &format!(
            "routes:\n  - id: 1\n    uri: /*\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
            echo.port
        ),
    );
    (echo, gw)
}

/// Seconds until the server closes `s` (reads until EOF or error), bounded by `limit`.
fn closed_after(mut s: TcpStream, limit: Duration) -> Option<Duration> {
    let t = Instant::now();
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return Some(t.elapsed()),
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None;
            }
            Err(_) => return Some(t.elapsed()),
        }
    }
}

#[test]
fn a_connection_that_sends_nothing_is_closed() {
    let (_e, gw) = gw("    connection_idle_timeout: 1s\n");
    let s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    assert!(
        closed_after(s, Duration::from_secs(6)).is_some(),
        "silent connection stayed open"
    );
}

#[test]
fn a_head_dripping_slower_than_client_header_timeout_is_cut() {
    let (_e, gw) = gw("    client_header_timeout: 1s\n");
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let t = Instant::now();
    // Keep dripping bytes: the deadline counts from the head's first byte, not the last.
    let mut closed = false;
    while t.elapsed() < Duration::from_secs(6) {
        if s.write_all(b"X-A: b\r\n").is_err() {
            closed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        closed || closed_after(s, Duration::from_secs(2)).is_some(),
        "dripping head was not cut"
    );
}

#[test]
fn an_idle_keepalive_connection_is_closed_after_keepalive_timeout() {
    let (_e, gw) = gw("    keepalive_timeout: 1s\n");
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let after = closed_after(s, Duration::from_secs(6)).expect("keep-alive connection stayed open");
    assert!(
        after >= Duration::from_millis(500),
        "closed too early: {after:?}"
    );
}

#[test]
fn a_stalled_request_body_ends_with_408() {
    let (_e, gw) = gw("    client_body_timeout: 1s\n");
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
        .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let mut out = Vec::new();
    let t = Instant::now();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "the stalled body was not timed out"
    );
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}
