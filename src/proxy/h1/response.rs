//! Reading an upstream's response head: interim (1xx) responses skipped, the final head parsed
//! with `httparse` into the client's response head (hop-by-hop fields left out as they are
//! met), and the body's framing decided as nginx's proxy module decides it.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Version};
use tokio::io::AsyncReadExt;

use super::Framing;
use crate::proxy::pool::Conn;

/// Most header fields in a response head.
const MAX_HEADERS: usize = 100;
/// Largest response head (nginx's `proxy_buffer_size` is 4 or 8 KiB; hyper allowed ~400 KiB).
const MAX_HEAD: usize = 64 * 1024;
/// Bytes read at a time.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// The upstream's final response head.
pub struct ResponseHead {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The connection may carry another request once this response's body is read.
    pub keep_alive: bool,
}

/// Why no response head could be read.
#[derive(Debug)]
pub enum HeadError {
    /// The connection failed or closed; `started`: part of a response had arrived.
    Io {
        error: std::io::Error,
        started: bool,
    },
    /// The head is malformed or frames its body ambiguously: nginx's words for it.
    Invalid(String),
}

/// Reads until the final response head; `head_request`: the request was a HEAD (no body follows
/// whatever the head says).
pub async fn read_head(conn: &mut Conn, head_request: bool) -> Result<ResponseHead, HeadError> {
    let mut started = false;
    loop {
        if !conn.read_buf.is_empty() {
            started = true;
            match parse(&mut conn.read_buf, head_request)? {
                Some(Parsed::Final(head)) => return Ok(head),
                Some(Parsed::Interim) => continue,
                None => {}
            }
        }
        if conn.read_buf.len() >= MAX_HEAD {
            return Err(HeadError::Invalid("upstream sent too big header".into()));
        }
        conn.read_buf.reserve(READ_CHUNK);
        match conn.io.read_buf(&mut conn.read_buf).await {
            Ok(0) => {
                return Err(HeadError::Io {
                    error: std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "connection closed",
                    ),
                    started,
                });
            }
            Ok(_) => {}
            Err(error) => return Err(HeadError::Io { error, started }),
        }
    }
}

enum Parsed {
    Final(ResponseHead),
    /// A 1xx answer was skipped; its bytes are consumed.
    Interim,
}

/// The hop-by-hop fields met while converting a head.
#[derive(Default)]
struct Hop {
    close: bool,
    keep_alive: bool,
    /// `Connection` values that name other fields (to be removed from the head too).
    names_others: Vec<(usize, usize)>,
    transfer_encoding: Option<(usize, usize)>,
    transfer_encodings: u8,
    content_length: Option<u64>,
    content_lengths: u8,
    bad_content_length: Option<(usize, usize)>,
}

/// Parses the head at the front of the read buffer (consuming it); `None` while it is
/// incomplete.
fn parse(read_buf: &mut BytesMut, head_request: bool) -> Result<Option<Parsed>, HeadError> {
    let buf = &read_buf[..];
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut resp, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(HeadError::Invalid("upstream sent too big header".into()));
        }
        Err(httparse::Error::Status | httparse::Error::Version | httparse::Error::Token)
            if resp.code.is_none() =>
        {
            return Err(HeadError::Invalid(
                "upstream sent no valid HTTP/1.0 header".into(),
            ));
        }
        Err(_) => {
            return Err(HeadError::Invalid(format!(
                "upstream sent invalid header: \"{}\"",
                bad_line(buf)
            )));
        }
    };
    let code = resp.code.unwrap_or(0);
    let status = match StatusCode::from_u16(code) {
        Ok(s) if code >= 100 => s,
        _ => {
            return Err(HeadError::Invalid(
                "upstream sent no valid HTTP/1.0 header".into(),
            ));
        }
    };
    if status.is_informational() {
        if status == StatusCode::SWITCHING_PROTOCOLS {
            // Upgrades are never asked for (`Upgrade` is not forwarded).
            return Err(HeadError::Invalid(
                "upstream sent no valid HTTP/1.0 header".into(),
            ));
        }
        read_buf.advance(len);
        return Ok(Some(Parsed::Interim));
    }
    let version = if resp.version == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    // Header values are slices of the frozen head: their bytes are not copied. Names are
    // classified on their length and bytes before a `HeaderName` is made, so hop-by-hop
    // fields cost no parsing.
    let base = buf.as_ptr() as usize;
    let range = |v: &[u8]| {
        let start = v.as_ptr() as usize - base;
        (start, start + v.len())
    };
    let mut hop = Hop::default();
    // Which fields stay out (one bit each: `MAX_HEADERS` fits in 128).
    let mut out = 0u128;
    for (i, h) in resp.headers.iter().enumerate() {
        if classify(h.name.as_bytes(), h.value, range(h.value), &mut hop) {
            out |= 1 << i;
        }
    }
    let mut fields: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(resp.headers.len());
    for (i, h) in resp.headers.iter().enumerate() {
        if out & (1 << i) != 0
            || (!hop.names_others.is_empty() && named_by_connection(buf, &hop, h.name))
        {
            continue;
        }
        match HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(name) => {
                let (s, e) = range(h.value);
                fields.push((name, s, e));
            }
            Err(_) => {
                return Err(HeadError::Invalid(format!(
                    "upstream sent invalid header: \"{}\"",
                    h.name
                )));
            }
        }
    }
    let head: Bytes = read_buf.split_to(len).freeze();
    // Room for `Server` and a `Content-Length` added on the way to the client: a map that grows
    // copies all of its entries.
    let mut headers = HeaderMap::with_capacity(fields.len() + 2);
    for (name, s, e) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(s..e))
            .map_err(|_| HeadError::Invalid(format!("upstream sent invalid header: \"{name}\"")))?;
        headers.append(name, value);
    }

    let keep_alive = match version {
        Version::HTTP_10 => hop.keep_alive && !hop.close,
        _ => !hop.close,
    };
    let framing = framing(status, head_request, &hop, &head)?;
    let keep_alive = keep_alive && !matches!(framing, Framing::Close);
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Parsed::Final(ResponseHead {
        parts,
        framing,
        keep_alive,
    })))
}

/// Whether a `Connection` field of the head names `name` (such a field describes this hop only).
fn named_by_connection(buf: &[u8], hop: &Hop, name: &str) -> bool {
    hop.names_others.iter().any(|&(s, e)| {
        buf[s..e]
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(name.as_bytes()))
    })
}

/// Records a hop-by-hop or framing field; true when it stays out of the client's head.
fn classify(name: &[u8], value: &[u8], range: (usize, usize), hop: &mut Hop) -> bool {
    let is = |n: &str| name.len() == n.len() && name.eq_ignore_ascii_case(n.as_bytes());
    match name.len() {
        10 if is("connection") => {
            for token in value.split(|b| *b == b',') {
                let token = token.trim_ascii();
                if token.eq_ignore_ascii_case(b"close") {
                    hop.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    hop.keep_alive = true;
                } else if !token.is_empty() && hop.names_others.last() != Some(&range) {
                    hop.names_others.push(range);
                }
            }
            true
        }
        10 if is("keep-alive") => true,
        2 if is("te") => true,
        7 if is("trailer") || is("upgrade") => true,
        16 if is("proxy-connection") => true,
        18 if is("proxy-authenticate") => true,
        17 if is("transfer-encoding") => {
            hop.transfer_encoding = Some(range);
            hop.transfer_encodings = hop.transfer_encodings.saturating_add(1);
            true
        }
        14 if is("content-length") => {
            hop.content_lengths = hop.content_lengths.saturating_add(1);
            match std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(n) => hop.content_length = Some(n),
                None => hop.bad_content_length = Some(range),
            }
            // End to end: it stays in the head (and frames the client's response).
            false
        }
        _ => false,
    }
}

/// How the body after this head is delimited, or nginx's complaint about it.
fn framing(
    status: StatusCode,
    head_request: bool,
    hop: &Hop,
    head: &Bytes,
) -> Result<Framing, HeadError> {
    let text = |(s, e): (usize, usize)| String::from_utf8_lossy(&head[s..e]).into_owned();
    if let Some(r) = hop.bad_content_length {
        return Err(HeadError::Invalid(format!(
            "upstream sent invalid \"Content-Length\" header: \"Content-Length: {}\"",
            text(r)
        )));
    }
    if hop.content_lengths > 1 || hop.transfer_encodings > 1 {
        let which = if hop.content_lengths > 1 {
            "Content-Length"
        } else {
            "Transfer-Encoding"
        };
        return Err(HeadError::Invalid(format!(
            "upstream sent duplicate header line: \"{which}\""
        )));
    }
    if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok(Framing::Length(0));
    }
    if let Some(te) = hop.transfer_encoding {
        if hop.content_length.is_some() {
            return Err(HeadError::Invalid(
                "upstream sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time"
                    .into(),
            ));
        }
        if !head[te.0..te.1]
            .trim_ascii()
            .eq_ignore_ascii_case(b"chunked")
        {
            return Err(HeadError::Invalid(format!(
                "upstream sent unknown \"Transfer-Encoding\": \"{}\"",
                text(te)
            )));
        }
        return Ok(Framing::Chunked(Default::default()));
    }
    Ok(match hop.content_length {
        Some(n) => Framing::Length(n),
        None => Framing::Close,
    })
}

/// The first line of the head that looks wrong, for the log (bounded).
fn bad_line(buf: &[u8]) -> String {
    let token = |b: &u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(b);
    let line = buf
        .split(|b| *b == b'\n')
        .skip(1)
        .map(<[u8]>::trim_ascii_end)
        .take_while(|l| !l.is_empty())
        .find(|l| match l.iter().position(|b| *b == b':') {
            Some(colon) => {
                colon == 0
                    || !l[..colon].iter().all(token)
                    || l.iter().any(|b| *b < 0x20 && *b != b'\t')
            }
            None => true,
        })
        .unwrap_or(&[]);
    String::from_utf8_lossy(&line[..line.len().min(256)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The final head of `wire` (interim ones skipped), and what is left after it.
    fn final_head(wire: &str, head_request: bool) -> Result<(ResponseHead, BytesMut), String> {
        let mut buf = BytesMut::from(wire.as_bytes());
        loop {
            match parse(&mut buf, head_request) {
                Ok(Some(Parsed::Final(h))) => return Ok((h, buf)),
                Ok(Some(Parsed::Interim)) => continue,
                Ok(None) => return Err("incomplete".into()),
                Err(HeadError::Invalid(m)) => return Err(m),
                Err(HeadError::Io { error, .. }) => return Err(error.to_string()),
            }
        }
    }

    fn framing_of(wire: &str) -> Result<(String, bool), String> {
        final_head(wire, false).map(|(h, _)| (format!("{:?}", h.framing), h.keep_alive))
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let len = framing_of("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n").unwrap();
        assert_eq!(len, ("Length(12)".into(), true));
        let chunked = framing_of("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n").unwrap();
        assert!(chunked.0.starts_with("Chunked"), "{chunked:?}");
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\n\r\n").unwrap(),
            ("Close".into(), false)
        );
        assert_eq!(
            framing_of("HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap(),
            ("Length(0)".into(), true)
        );
        let (head, _) = final_head("HTTP/1.1 200 OK\r\nContent-Length: 99\r\n\r\n", true).unwrap();
        assert!(matches!(head.framing, Framing::Length(0)));
        assert_eq!(head.parts.headers["content-length"], "99");
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let ka = |wire: &str| framing_of(wire).unwrap().1;
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!ka("HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(ka(
            "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!ka(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"
        ));
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_left_out() {
        let (head, rest) = final_head(
            "HTTP/1.1 200 OK\r\nConnection: x-hop, keep-alive\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\nUpgrade: h2c\r\nX-End: 2\r\nX-End: 3\r\nContent-Length: 2\r\n\r\nok",
            false,
        )
        .unwrap();
        let names: Vec<&str> = head.parts.headers.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-end", "content-length"]);
        assert_eq!(head.parts.headers.get_all("x-end").iter().count(), 2);
        assert_eq!(&rest[..], b"ok");
    }

    #[test]
    fn interim_answers_are_skipped() {
        let (head, rest) = final_head(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: <a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 1\r\n\r\nx",
            false,
        )
        .unwrap();
        assert_eq!(head.parts.status, StatusCode::CREATED);
        assert!(head.parts.headers.get("link").is_none());
        assert_eq!(&rest[..], b"x");
    }

    #[test]
    fn ambiguous_or_malformed_heads_are_refused_in_nginx_words() {
        let err = |wire: &str| framing_of(wire).unwrap_err();
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            "upstream sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time"
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"),
            "upstream sent duplicate header line: \"Content-Length\""
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"),
            "upstream sent invalid \"Content-Length\" header: \"Content-Length: -1\""
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            "upstream sent unknown \"Transfer-Encoding\": \"gzip, chunked\""
        );
        assert_eq!(
            err("SIP/2.0 200 OK\r\n\r\n"),
            "upstream sent no valid HTTP/1.0 header"
        );
        assert_eq!(
            err("HTTP/1.1 101 Switching Protocols\r\n\r\n"),
            "upstream sent no valid HTTP/1.0 header"
        );
        assert_eq!(
            err("HTTP/1.1 200 OK\r\nGood: 1\r\nBad\x01: 2\r\n\r\n"),
            "upstream sent invalid header: \"Bad\x01: 2\""
        );
        assert_eq!(
            framing_of("HTTP/1.1 200 OK\r\nContent-Le"),
            Err("incomplete".into())
        );
    }
}
