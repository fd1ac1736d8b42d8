//! Reading an upstream's response head: interim (1xx) responses skipped, the final head parsed
//! with `httparse` into the client's response head (hop-by-hop fields left out as they are
//! met), and the body's framing decided as nginx's proxy module decides it.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes};
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
            match parse(conn, head_request)? {
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

/// Parses the head at the front of the read buffer; `None` while it is incomplete.
fn parse(conn: &mut Conn, head_request: bool) -> Result<Option<Parsed>, HeadError> {
    let buf = &conn.read_buf[..];
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
        conn.read_buf.advance(len);
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
    let mut fields: Vec<(HeaderName, usize, usize)> = Vec::with_capacity(resp.headers.len());
    let mut hop = Hop::default();
    for h in resp.headers.iter() {
        let start = h.value.as_ptr() as usize - base;
        let range = (start, start + h.value.len());
        if classify(h.name.as_bytes(), h.value, range, &mut hop) {
            continue;
        }
        match HeaderName::from_bytes(h.name.as_bytes()) {
            Ok(name) => fields.push((name, range.0, range.1)),
            Err(_) => {
                return Err(HeadError::Invalid(format!(
                    "upstream sent invalid header: \"{}\"",
                    h.name
                )));
            }
        }
    }
    let head: Bytes = conn.read_buf.split_to(len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, s, e) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(s..e))
            .map_err(|_| HeadError::Invalid(format!("upstream sent invalid header: \"{name}\"")))?;
        headers.append(name, value);
    }
    for &(s, e) in &hop.names_others {
        for token in head[s..e].split(|b| *b == b',') {
            if let Ok(name) = HeaderName::from_bytes(token.trim_ascii()) {
                headers.remove(name);
            }
        }
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
