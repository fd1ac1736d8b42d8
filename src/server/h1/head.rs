//! Parsing a client's request head: `httparse` over the connection's read buffer, then the
//! request parts, the body's framing and the connection's keep-alive wish, all from one pass
//! over the bytes. Shapes nginx refuses only after looking at the whole head (a too long line,
//! `Content-Length` with `Transfer-Encoding`) are judged here and handed to the proxy as a
//! [`Verdict`], so it answers and logs them like any request; shapes no request can be made
//! of are a [`Reject`], answered by the connection loop.

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

/// Most header fields in a request head (hyper's limit, kept).
const MAX_HEADERS: usize = 100;
/// Header fields the proxy may add to a request's map.
const FORWARDING_ROOM: usize = 6;
/// Largest request head buffered before it is refused (hyper's `max_buf_size`, kept).
pub const MAX_HEAD: usize = 256 * 1024;

/// What the head shows that nginx refuses; the proxy answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// `Content-Length` together with `Transfer-Encoding`: nginx answers 400.
    ContentLengthWithChunked,
    /// The request line is longer than the configured limit: nginx answers 414.
    RequestLineTooLong,
    /// A header line is longer than the configured limit: nginx answers 400.
    HeaderLineTooLong,
    /// `Content-Length` twice, even with equal values: nginx answers 400.
    DuplicateContentLength,
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(u64),
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    pub parts: http::request::Parts,
    pub verdict: Verdict,
    pub body: BodyFraming,
    /// The client asked to keep the connection (HTTP/1.1 without `Connection: close`,
    /// HTTP/1.0 with `Connection: keep-alive`).
    pub keep_alive: bool,
    /// `Expect: 100-continue` on HTTP/1.1: answered when the body is first read.
    pub expect_continue: bool,
}

/// A head no request can be made of: answered with `status`, then the connection closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reject {
    pub status: StatusCode,
    pub reason: &'static str,
}

fn reject(status: StatusCode, reason: &'static str) -> Reject {
    Reject { status, reason }
}

/// Parses the head at the front of `buf`, consuming it; `None` while it is incomplete.
/// `max_line`: the longest request or header line accepted (`large_client_header_buffers`).
pub fn parse(buf: &mut BytesMut, max_line: usize) -> Result<Option<Head>, Reject> {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut []);
    let bytes = &buf[..];
    let len = match req.parse_with_uninit_headers(bytes, &mut slots) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if bytes.len() >= MAX_HEAD => {
            return Err(reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "client sent too large request",
            ));
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(reject(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "client sent too many header lines",
            ));
        }
        Err(httparse::Error::Version) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "client sent invalid version",
            ));
        }
        Err(httparse::Error::Token) if req.method.is_none() => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "client sent invalid method",
            ));
        }
        Err(_) => {
            return Err(reject(
                StatusCode::BAD_REQUEST,
                "client sent invalid request",
            ));
        }
    };
    let base = bytes.as_ptr() as usize;
    let range = |v: &[u8]| {
        let start = v.as_ptr() as usize - base;
        (start, start + v.len())
    };
    let (Some(method), Some(path), Some(minor)) = (req.method, req.path, req.version) else {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "client sent invalid request",
        ));
    };
    let version = if minor == 0 {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    let method = Method::from_bytes(method.as_bytes())
        .map_err(|_| reject(StatusCode::BAD_REQUEST, "client sent invalid method"))?;
    let mut verdict = Verdict::Ok;
    // The request line runs from the method (empty lines before it are skipped) to the version.
    let line_start = req.method.map_or(0, |m| range(m.as_bytes()).0);
    let line_len = range(path.as_bytes()).1 - line_start + " HTTP/1.x".len();
    if line_len > max_line {
        verdict = Verdict::RequestLineTooLong;
    }
    let uri_range = range(path.as_bytes());

    let mut content_length: Option<u64> = None;
    let mut content_lengths = 0u8;
    let mut chunked: Option<bool> = None;
    let mut close = false;
    let mut keep_alive_token = false;
    let mut expect_continue = false;
    // Where each field's name and value are in the head (on the stack: no allocation); the map
    // is made once the head is split off the buffer and its values can share it.
    let mut fields = [(0u32, 0u32, 0u32, 0u32); MAX_HEADERS];
    let count = req.headers.len();
    for (h, slot) in req.headers.iter().zip(fields.iter_mut()) {
        let name = h.name.as_bytes();
        let (vs, ve) = range(h.value);
        if verdict == Verdict::Ok && ve - range(name).0 > max_line {
            verdict = Verdict::HeaderLineTooLong;
        }
        let value = h.value;
        if name.eq_ignore_ascii_case(b"content-length") {
            content_lengths = content_lengths.saturating_add(1);
            let n = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| {
                    reject(
                        StatusCode::BAD_REQUEST,
                        "client sent invalid \"Content-Length\" header",
                    )
                })?;
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            // Framed as chunked when the last coding is `chunked`; the proxy refuses any
            // other coding (501).
            let last = value.rsplit(|b| *b == b',').next().unwrap_or(b"");
            chunked = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive_token |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
        }
        let (ns, ne) = range(name);
        // Heads are at most `MAX_HEAD` bytes: offsets fit in 32 bits.
        *slot = (ns as u32, ne as u32, vs as u32, ve as u32);
    }
    if content_lengths > 1 && verdict == Verdict::Ok {
        verdict = Verdict::DuplicateContentLength;
    }
    if chunked.is_some() && content_lengths > 0 && verdict == Verdict::Ok {
        verdict = Verdict::ContentLengthWithChunked;
    }
    if chunked.is_some() && version == Version::HTTP_10 {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "client sent \"Transfer-Encoding\" in an HTTP/1.0 request",
        ));
    }

    let head: Bytes = buf.split_to(len).freeze();
    let uri = Uri::from_maybe_shared(head.slice(uri_range.0..uri_range.1))
        .map_err(|_| reject(StatusCode::BAD_REQUEST, "client sent invalid request"))?;
    // Room for the forwarding headers the proxy adds (`X-Forwarded-*`, `X-Real-IP`): a map
    // that grows copies all of its entries.
    let mut headers = HeaderMap::with_capacity(count + FORWARDING_ROOM);
    for &(ns, ne, s, e) in &fields[..count] {
        let name = HeaderName::from_bytes(&head[ns as usize..ne as usize])
            .map_err(|_| reject(StatusCode::BAD_REQUEST, "client sent invalid header line"))?;
        let (s, e) = (s as usize, e as usize);
        let value = HeaderValue::from_maybe_shared(head.slice(s..e))
            .map_err(|_| reject(StatusCode::BAD_REQUEST, "client sent invalid header line"))?;
        headers.append(name, value);
    }
    let body = match (chunked, content_length) {
        (Some(true), _) => BodyFraming::Chunked,
        // A coding other than chunked: the proxy refuses the request, no body is read.
        (Some(false), _) => BodyFraming::None,
        (None, Some(n)) if n > 0 => BodyFraming::Length(n),
        _ => BodyFraming::None,
    };
    let keep_alive = match version {
        Version::HTTP_10 => keep_alive_token && !close,
        _ => !close,
    };
    let (mut parts, ()) = http::Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Head {
        parts,
        verdict,
        body,
        keep_alive,
        expect_continue: expect_continue && version == Version::HTTP_11,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Option<Head>, Reject> {
        let mut buf = BytesMut::from(input);
        parse(&mut buf, 8192)
    }

    #[test]
    fn a_head_is_parsed_and_consumed_leaving_what_follows() {
        let mut buf = BytesMut::from(
            &b"\r\nPOST /a?b=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET"[..],
        );
        let head = parse(&mut buf, 8192).unwrap().unwrap();
        assert_eq!(head.parts.method, Method::POST);
        assert_eq!(head.parts.uri, "/a?b=1");
        assert_eq!(head.parts.headers["host"], "x");
        assert_eq!(head.body, BodyFraming::Length(3));
        assert!(head.keep_alive);
        assert_eq!(&buf[..], b"abcGET");
    }

    #[test]
    fn an_incomplete_head_waits_at_every_split() {
        let input = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        for n in 0..input.len() {
            assert!(parse_all(&input[..n]).unwrap().is_none(), "split {n}");
        }
    }

    #[test]
    fn framing_shapes_nginx_refuses_get_their_verdict() {
        let v = |s: &[u8]| parse_all(s).unwrap().unwrap().verdict;
        assert_eq!(
            v(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Verdict::ContentLengthWithChunked
        );
        assert_eq!(
            v(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\ncontent-length: 1\r\n\r\n"),
            Verdict::DuplicateContentLength
        );
        let long = "a".repeat(9000);
        assert_eq!(
            v(format!("GET /{long} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()),
            Verdict::RequestLineTooLong
        );
        assert_eq!(
            v(format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {long}\r\n\r\n").as_bytes()),
            Verdict::HeaderLineTooLong
        );
    }

    #[test]
    fn malformed_heads_are_rejected() {
        let status = |s: &[u8]| parse_all(s).unwrap_err().status;
        assert_eq!(status(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n"), 400);
        assert_eq!(status(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            status(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X-H: v\r\n".repeat(200));
        assert_eq!(status(many.as_bytes()), 431);
    }

    #[test]
    fn bare_lf_line_ends_are_accepted_and_a_bare_cr_is_not() {
        let h = parse_all(b"GET /lf HTTP/1.1\nHost: x\n\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.uri, "/lf");
        assert_eq!(
            parse_all(b"GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n")
                .unwrap_err()
                .status,
            400
        );
    }

    #[test]
    fn values_come_without_surrounding_whitespace() {
        // `request::check` relies on it: only HTTP/2 values are checked for it.
        let h = parse_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \t a b \t\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.parts.headers["x-a"], "a b");
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let ka = |s: &[u8]| parse_all(s).unwrap().unwrap().keep_alive;
        assert!(ka(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
        assert!(!ka(
            b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ));
        assert!(!ka(b"GET / HTTP/1.0\r\n\r\n"));
        assert!(ka(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    #[test]
    fn chunked_and_continue_are_seen() {
        let h = parse_all(
            b"PUT / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(h.body, BodyFraming::Chunked);
        assert!(h.expect_continue);
    }
}
