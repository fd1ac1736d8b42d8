//! The HTTP/1.1 exchange with upstreams (src/proxy/h1/), through the real binary against raw
//! upstreams that write exact bytes: response framing (chunked with extensions and trailers,
//! `Content-Length`, read until close, no body for HEAD/204/304), interim 1xx answers, malformed
//! heads, connection reuse, and request bodies of unknown length.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

/// One request as the upstream read it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    /// Header lines, names lower-cased.
    headers: Vec<(String, String)>,
    /// The body, de-chunked when it came chunked.
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What the upstream does after answering.
#[derive(PartialEq)]
enum After {
    KeepOpen,
    Close,
    /// Close the idle connection once the answer is read (a pooled connection dies).
    CloseWhenIdle,
}

type Script = dyn Fn(&Seen) -> (Vec<u8>, After) + Send + Sync;

/// A raw upstream: reads each request, writes the bytes the script gives back.
struct RawUpstream {
    port: u16,
    accepts: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Seen>>>,
    /// Connections the upstream closed while idle.
    idle_closed: Arc<AtomicUsize>,
}

impl RawUpstream {
    fn start(script: impl Fn(&Seen) -> (Vec<u8>, After) + Send + Sync + 'static) -> RawUpstream {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let accepts = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let idle_closed = Arc::new(AtomicUsize::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (a, s, ic) = (accepts.clone(), seen.clone(), idle_closed.clone());
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                a.fetch_add(1, Ordering::SeqCst);
                let (s, ic, script) = (s.clone(), ic.clone(), script.clone());
                std::thread::spawn(move || serve(c, &*script, &s, &ic));
            }
        });
        RawUpstream {
            port,
            accepts,
            seen,
            idle_closed,
        }
    }

    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request")
    }

    fn route(&self) -> String {
        format!(
            "routes:\n  - id: 1\n    uri: /*\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
            self.port
        )
    }
}

fn serve(mut c: TcpStream, script: &Script, seen: &Mutex<Vec<Seen>>, idle_closed: &AtomicUsize) {
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = Vec::new();
    loop {
        let Some(req) = read_request(&mut c, &mut buf) else {
            return;
        };
        seen.lock().unwrap().push(req.clone());
        let (answer, after) = script(&req);
        if c.write_all(&answer).is_err() {
            return;
        }
        match after {
            After::KeepOpen => {}
            After::Close => return,
            After::CloseWhenIdle => {
                // The gateway has read the whole answer once it has forwarded it; closing
                // now leaves it a pooled connection the upstream no longer serves.
                std::thread::sleep(Duration::from_millis(50));
                idle_closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// Reads more bytes into `buf`; false at EOF or error.
fn fill(c: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut tmp = [0u8; 65536];
    match c.read(&mut tmp) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&tmp[..n]);
            true
        }
    }
}

fn read_request(c: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let end = loop {
        if let Some(e) = find(buf, b"\r\n\r\n") {
            break e;
        }
        if !fill(c, buf) {
            return None;
        }
    };
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    buf.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_string();
    let path = first.next()?.to_string();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut req = Seen {
        method,
        path,
        headers,
        body: Vec::new(),
    };
    if req.header("transfer-encoding") == Some("chunked") {
        loop {
            let le = loop {
                if let Some(le) = find(buf, b"\r\n") {
                    break le;
                }
                if !fill(c, buf) {
                    return None;
                }
            };
            let size =
                usize::from_str_radix(String::from_utf8_lossy(&buf[..le]).trim(), 16).ok()?;
            buf.drain(..le + 2);
            while buf.len() < size + 2 {
                if !fill(c, buf) {
                    return None;
                }
            }
            req.body.extend_from_slice(&buf[..size]);
            buf.drain(..size + 2);
            if size == 0 {
                break;
            }
        }
    } else if let Some(n) = req
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        while buf.len() < n {
            if !fill(c, buf) {
                return None;
            }
        }
        req.body = buf.drain(..n).collect();
    }
    Some(req)
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn gateway(up: &RawUpstream) -> Gateway {
    Gateway::start("", &up.route())
}

#[test]
fn a_chunked_answer_with_extensions_and_trailers_is_decoded_and_its_connection_reused() {
    let up = RawUpstream::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n5;name=\"v\"\r\nhello\r\n6 ; x=1\r\n world\r\n0\r\nX-Sum: 11\r\n\r\n".to_vec(),
            After::KeepOpen,
        )
    });
    let gw = gateway(&up);
    for _ in 0..3 {
        let r = request(gw.port, "GET", "/c", &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "hello world");
        assert_eq!(r.header("trailer"), None, "hop-by-hop Trailer forwarded");
    }
    assert_eq!(
        up.accepts(),
        1,
        "the chunked answer's connection was not reused"
    );
}

#[test]
fn an_answer_without_length_runs_until_close_and_its_connection_is_not_reused() {
    let up = RawUpstream::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end".to_vec(),
            After::Close,
        )
    });
    let gw = gateway(&up);
    for _ in 0..2 {
        let r = request(gw.port, "GET", "/u", &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "until the end");
    }
    assert_eq!(up.accepts(), 2);
}

#[test]
fn interim_answers_before_the_final_one_are_skipped() {
    let up = RawUpstream::start(|_| {
        let mut a = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n".to_vec();
        a.extend_from_slice(&ok("final"));
        (a, After::KeepOpen)
    });
    let gw = gateway(&up);
    for _ in 0..2 {
        let r = request(gw.port, "GET", "/i", &[], b"");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, "final");
        assert_eq!(
            r.header("link"),
            None,
            "a header of the 103 leaked into the answer"
        );
    }
    assert_eq!(up.accepts(), 1);
}

#[test]
fn head_204_and_304_answers_have_no_body_whatever_their_length_says() {
    let up = RawUpstream::start(|req| {
        let a: &[u8] = match (req.method.as_str(), req.path.as_str()) {
            ("HEAD", _) => b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n",
            (_, "/204") => b"HTTP/1.1 204 No Content\r\n\r\n",
            (_, "/304") => b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"e\"\r\n\r\n",
            _ => return (ok("body"), After::KeepOpen),
        };
        (a.to_vec(), After::KeepOpen)
    });
    let gw = gateway(&up);
    let raw_head = raw(
        gw.port,
        b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&raw_head).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("content-length: 1000"), "{text}");
    assert!(
        text.ends_with("\r\n\r\n"),
        "a HEAD answer carried a body: {text}"
    );
    // Each empty answer left the connection ready for the next request: an answer read
    // past its end (or waited for) would break the request after it.
    for path in ["/204", "/x", "/304", "/x"] {
        let r = request(gw.port, "GET", path, &[], b"");
        match path {
            "/204" => assert_eq!((r.status, r.body.as_str()), (204, "")),
            "/304" => {
                assert_eq!(r.status, 304);
                assert_eq!(r.header("etag"), Some("\"e\""));
            }
            _ => assert_eq!((r.status, r.body.as_str()), (200, "body")),
        }
    }
    assert_eq!(
        up.accepts(),
        1,
        "an empty answer's connection was not reused"
    );
}

#[test]
fn connection_close_from_the_upstream_or_http_1_0_opens_a_new_connection_next_time() {
    let up = RawUpstream::start(|req| match req.path.as_str() {
        "/close" => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec(),
            After::Close,
        ),
        "/old" => (
            b"HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\nold".to_vec(),
            After::Close,
        ),
        _ => (
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nka".to_vec(),
            After::KeepOpen,
        ),
    });
    let gw = gateway(&up);
    assert_eq!(request(gw.port, "GET", "/close", &[], b"").body, "ok");
    assert_eq!(request(gw.port, "GET", "/close", &[], b"").body, "ok");
    assert_eq!(
        up.accepts(),
        2,
        "a `Connection: close` connection was reused"
    );
    assert_eq!(request(gw.port, "GET", "/old", &[], b"").body, "old");
    assert_eq!(up.accepts(), 3);
    // HTTP/1.0 with keep-alive is reused.
    assert_eq!(request(gw.port, "GET", "/ka", &[], b"").body, "ka");
    assert_eq!(request(gw.port, "GET", "/ka", &[], b"").body, "ka");
    assert_eq!(
        up.accepts(),
        4,
        "an HTTP/1.0 keep-alive connection was not reused"
    );
}

#[test]
fn a_pooled_connection_the_upstream_closed_while_idle_is_replaced() {
    let up = RawUpstream::start(|_| (ok("fresh"), After::CloseWhenIdle));
    let gw = gateway(&up);
    for n in 1..=3 {
        let r = request(gw.port, "GET", "/p", &[], b"");
        assert_eq!((r.status, r.body.as_str()), (200, "fresh"));
        wait_until("the upstream to close", Duration::from_secs(10), || {
            up.idle_closed.load(Ordering::SeqCst) == n
        });
    }
    assert_eq!(up.accepts(), 3);
    assert!(
        !gw.error_log().contains("[error]"),
        "a stale pooled connection was reported: {}",
        gw.error_log()
    );
}

#[test]
fn a_malformed_status_line_is_a_502() {
    let up = RawUpstream::start(|_| (b"HTTX/1.1 200 OK\r\n\r\n".to_vec(), After::Close));
    let gw = gateway(&up);
    let r = request(gw.port, "GET", "/m", &[], b"");
    assert_eq!(r.status, 502);
    let log = gw.error_log();
    assert!(
        log.contains(
            "upstream sent no valid HTTP/1.0 header while reading response header from upstream"
        ),
        "{log}"
    );
    // Not retried: nginx retries errors and timeouts, not invalid answers.
    assert_eq!(up.accepts(), 1);
}

#[test]
fn an_invalid_header_line_is_a_502() {
    let up = RawUpstream::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nBad Header: x\r\n\r\nok".to_vec(),
            After::Close,
        )
    });
    let gw = gateway(&up);
    assert_eq!(request(gw.port, "GET", "/m", &[], b"").status, 502);
    let log = gw.error_log();
    assert!(
        log.contains("upstream sent invalid header: \"Bad Header: x\" while reading response header from upstream"),
        "{log}"
    );
}

#[test]
fn content_length_together_with_chunked_is_a_502() {
    let up = RawUpstream::start(|_| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec(),
            After::Close,
        )
    });
    let gw = gateway(&up);
    assert_eq!(request(gw.port, "GET", "/b", &[], b"").status, 502);
    let log = gw.error_log();
    assert!(
        log.contains("upstream sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time while reading response header from upstream"),
        "{log}"
    );
}

#[test]
fn a_body_of_unknown_length_reaches_the_upstream_chunked_and_intact() {
    let up = RawUpstream::start(|req| {
        let body = String::from_utf8_lossy(&req.body).into_owned();
        (ok(&body), After::KeepOpen)
    });
    let gw = gateway(&up);
    let mut wire = b"POST /up?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut expected = String::new();
    for i in 0..20 {
        let chunk = format!("part {i} of the body;");
        expected.push_str(&chunk);
        wire.extend_from_slice(format!("{:x}\r\n{chunk}\r\n", chunk.len()).as_bytes());
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(gw.port, &wire, Duration::from_secs(10));
    let r = &parse_responses(&answer)[0];
    assert_eq!(r.status, 200);
    assert_eq!(r.body, expected);
    let seen = up.last();
    assert_eq!(
        (seen.method.as_str(), seen.path.as_str()),
        ("POST", "/up?x=1")
    );
    assert_eq!(seen.header("transfer-encoding"), Some("chunked"));
    assert_eq!(seen.header("content-length"), None);
    assert_eq!(String::from_utf8_lossy(&seen.body), expected);

    // A body with a length goes as is.
    let r = request(gw.port, "PUT", "/len", &[], b"exactly this");
    assert_eq!(r.body, "exactly this");
    assert_eq!(up.last().header("content-length"), Some("12"));
    assert_eq!(up.last().header("transfer-encoding"), None);
}

#[test]
fn a_large_streamed_answer_arrives_intact() {
    const SIZE: usize = 6 * 1024 * 1024;
    let pattern: Vec<u8> = (0..SIZE).map(|i| b'a' + (i % 26) as u8).collect();
    let chunked_pattern = pattern.clone();
    let up = RawUpstream::start(move |req| {
        if req.path == "/chunked" {
            let mut a = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            for part in chunked_pattern.chunks(100_000) {
                a.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                a.extend_from_slice(part);
                a.extend_from_slice(b"\r\n");
            }
            a.extend_from_slice(b"0\r\n\r\n");
            return (a, After::KeepOpen);
        }
        let mut a = format!("HTTP/1.1 200 OK\r\nContent-Length: {SIZE}\r\n\r\n").into_bytes();
        a.extend_from_slice(&chunked_pattern);
        (a, After::KeepOpen)
    });
    let gw = gateway(&up);
    for path in ["/length", "/chunked"] {
        let r = request(gw.port, "GET", path, &[], b"");
        assert_eq!(r.status, 200, "{path}");
        assert_eq!(r.body.len(), SIZE, "{path}");
        assert!(r.body.as_bytes() == &pattern[..], "{path}: body differs");
    }
    assert_eq!(up.accepts(), 1);
}

#[test]
fn an_upstream_that_takes_no_request_bytes_times_out_on_the_send_timeout() {
    // Accepts and never reads: the request body fills the socket buffers, then nothing moves.
    let silent = silent_backend();
    let gw = Gateway::start(
        "",
        &format!(
            "routes:\n  - id: 1\n    uri: /*\n    timeout: {{connect: 1, send: 1, read: 30}}\n    upstream:\n      nodes:\n        \"127.0.0.1:{silent}\": 1\n#END\n"
        ),
    );
    const SIZE: usize = 64 * 1024 * 1024;
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(
        format!(
            "POST /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {SIZE}\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let mut writer = s.try_clone().unwrap();
    // The body goes from another thread: the gateway stops reading it once the upstream does.
    std::thread::spawn(move || {
        let block = vec![b'b'; 1024 * 1024];
        for _ in 0..SIZE / block.len() {
            if writer.write_all(&block).is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        answer.extend_from_slice(&buf[..n]);
        if find(&answer, b"\r\n\r\n").is_some() {
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    let log = gw.error_log();
    assert!(
        log.contains(
            "upstream timed out (110: Connection timed out) while sending request to upstream"
        ),
        "{log}"
    );
}

#[test]
fn request_bodies_that_arrive_late_or_in_large_chunks_reach_the_upstream_intact() {
    let up = RawUpstream::start(|req| (ok(&req.body.len().to_string()), After::KeepOpen));
    let gw = gateway(&up);

    // A body that comes after the head (the head goes upstream first, the body follows).
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    wait_until(
        "the head to reach the upstream",
        Duration::from_secs(10),
        || up.accepts() == 1,
    );
    s.write_all(b"5\r\nlate \r\n4\r\nbody\r\n0\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert_eq!(parse_responses(&answer)[0].body, "9");
    assert_eq!(String::from_utf8_lossy(&up.last().body), "late body");

    // Chunks larger than what travels with the head, with and without a length.
    let big: Vec<u8> = (0..3 * 1024 * 1024)
        .map(|i| b'0' + (i % 10) as u8)
        .collect();
    let r = request(gw.port, "POST", "/big", &[], &big);
    assert_eq!(r.body, big.len().to_string());
    assert!(
        up.last().body == big,
        "a large body with a length arrived altered"
    );
    let mut wire = b"POST /bigchunks HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for part in big.chunks(700_000) {
        wire.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        wire.extend_from_slice(part);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    let answer = raw(gw.port, &wire, Duration::from_secs(10));
    assert_eq!(parse_responses(&answer)[0].body, big.len().to_string());
    assert!(
        up.last().body == big,
        "a large chunked body arrived altered"
    );
}

#[test]
fn an_upstream_closing_before_its_answer_is_a_502_and_one_closing_mid_body_cuts_it() {
    let up = RawUpstream::start(|req| match req.path.as_str() {
        "/none" => (Vec::new(), After::Close),
        _ => (
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part".to_vec(),
            After::Close,
        ),
    });
    let gw = gateway(&up);
    assert_eq!(request(gw.port, "GET", "/none", &[], b"").status, 502);
    let log = gw.error_log();
    assert!(
        log.contains(
            "upstream prematurely closed connection while reading response header from upstream"
        ),
        "{log}"
    );
    // The head was forwarded already: the client sees a cut body (fewer bytes than announced,
    // then the connection closes).
    let answer = raw(
        gw.port,
        b"GET /part HTTP/1.1\r\nHost: x\r\n\r\n",
        Duration::from_secs(10),
    );
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("only part"), "{text}");
    wait_until("the body error line", Duration::from_secs(5), || {
        gw.error_log()
            .contains("upstream prematurely closed connection while reading upstream")
    });
}
