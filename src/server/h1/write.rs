//! Writing a response to the client: the head into the connection's write buffer, then the
//! body's frames appended to it as long as the body has them at hand, so a response whose body
//! is ready (a small upstream answer, an error page) costs one write. The body is delimited by
//! the `Content-Length` it carries or its known size; otherwise it goes chunked to HTTP/1.1
//! clients and ends with the connection for HTTP/1.0 ones.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::Poll;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Version};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite};

use super::link::Link;
use crate::proxy::body::Body;

/// Buffered body bytes are written once they reach this.
const FLUSH_AT: usize = 16 * 1024;
/// A data frame this large is written as is instead of being copied into the buffer.
const DIRECT_AT: usize = 8 * 1024;

/// How the body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Out {
    /// No body goes out (HEAD, 1xx, 204, 304).
    Nothing,
    Length(u64),
    Chunked,
    /// Until the connection closes (HTTP/1.0 clients, length unknown).
    Close,
}

/// What the response is an answer to.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    pub head_request: bool,
    pub version: Version,
    /// The connection may carry another request after this one (the client wants it and no
    /// shutdown began).
    pub keep_alive: bool,
}

/// Writes `resp`; true when the connection may carry another request.
pub async fn response<S: AsyncRead + AsyncWrite + Unpin>(
    link: &RefCell<Link<S>>,
    buf: &mut Vec<u8>,
    resp: Response<Body>,
    ex: Exchange,
) -> bool {
    let (parts, mut body) = resp.into_parts();
    let status = parts.status;
    buf.clear();
    status_line(buf, status);
    // One pass over the fields: those that frame the body or describe the connection are held
    // back and written after it, as decided below; the others go out as they are.
    let mut declared: Option<&HeaderValue> = None;
    let mut te_chunked: Option<bool> = None;
    let mut connection = false;
    let mut close = false;
    let mut dated = false;
    for (name, value) in &parts.headers {
        if *name == header::CONTENT_LENGTH {
            declared = Some(value);
            continue;
        }
        if *name == header::TRANSFER_ENCODING {
            te_chunked = Some(has_token(value.as_bytes(), b"chunked"));
            continue;
        }
        if *name == header::CONNECTION {
            connection = true;
            close |= has_token(value.as_bytes(), b"close");
            continue;
        }
        dated |= *name == header::DATE;
        field(buf, name.as_str().as_bytes(), value.as_bytes());
    }
    let mut keep_alive = ex.keep_alive && !close;
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let mut out = if bodiless {
        if let Some(v) = declared {
            field(buf, b"content-length", v.as_bytes());
        }
        Out::Nothing
    } else if let Some(v) = declared {
        match parse_length(v.as_bytes().trim_ascii()) {
            Some(n) => {
                field(buf, b"content-length", v.as_bytes());
                Out::Length(n)
            }
            // A length that is not a number delimits nothing: the body ends with the
            // connection.
            None => Out::Close,
        }
    } else if te_chunked == Some(true) && ex.version == Version::HTTP_11 {
        buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Out::Chunked
    } else {
        let known = if body.is_end_stream() {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        match known {
            Some(n) => {
                let mut digits = itoa_buf();
                field(buf, b"content-length", format_u64(n, &mut digits));
                Out::Length(n)
            }
            None if ex.version == Version::HTTP_11 => {
                buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Out::Chunked
            }
            None => Out::Close,
        }
    };
    if out == Out::Close {
        keep_alive = false;
    }
    if ex.head_request {
        out = Out::Nothing;
    }
    if !keep_alive {
        buf.extend_from_slice(b"connection: close\r\n");
    } else if ex.version == Version::HTTP_10 {
        buf.extend_from_slice(b"connection: keep-alive\r\n");
    } else if connection {
        for v in parts.headers.get_all(header::CONNECTION) {
            field(buf, b"connection", v.as_bytes());
        }
    }
    if !dated {
        buf.extend_from_slice(b"date: ");
        date(buf);
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
    drop(parts);
    if out == Out::Nothing {
        // The body is not read: dropping it runs its completion (an upstream body of a HEAD
        // answer is complete already, so its connection is reused).
        drop(body);
        return write_all(link, buf).await.is_ok() && keep_alive;
    }

    let mut left = match out {
        Out::Length(n) => n,
        _ => u64::MAX,
    };
    loop {
        let next = poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(f) => Poll::Ready(Some(f)),
            // Nothing more at hand: what is buffered goes out while the body waits.
            Poll::Pending if !buf.is_empty() => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        })
        .await;
        let frame = match next {
            None => {
                if write_all(link, buf).await.is_err() {
                    return false;
                }
                buf.clear();
                continue;
            }
            Some(None) => break,
            // The body failed part way: the message cannot be completed, the connection ends
            // (the client sees what was sent before).
            Some(Some(Err(_))) => {
                let _ = write_all(link, buf).await;
                return false;
            }
            Some(Some(Ok(frame))) => frame,
        };
        let Ok(mut data) = frame.into_data() else {
            // Trailers are not forwarded.
            continue;
        };
        if out == Out::Length(0) || data.is_empty() {
            if body.is_end_stream() {
                break;
            }
            continue;
        }
        if let Out::Length(_) = out {
            if data.len() as u64 > left {
                // More than the declared length: the rest would be read as the next response.
                data.truncate(left as usize);
                keep_alive = false;
            }
            left -= data.len() as u64;
        }
        if out == Out::Chunked {
            buf.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
        }
        if data.len() >= DIRECT_AT {
            if write_all(link, buf).await.is_err() || write_all(link, &data).await.is_err() {
                return false;
            }
            buf.clear();
        } else {
            buf.extend_from_slice(&data);
        }
        if out == Out::Chunked {
            buf.extend_from_slice(b"\r\n");
        }
        if buf.len() >= FLUSH_AT {
            if write_all(link, buf).await.is_err() {
                return false;
            }
            buf.clear();
        }
        if left == 0 || body.is_end_stream() {
            break;
        }
    }
    match out {
        Out::Chunked => buf.extend_from_slice(b"0\r\n\r\n"),
        // A body shorter than its length leaves the client waiting for the rest: only closing
        // tells it the response is over.
        Out::Length(_) if left > 0 => keep_alive = false,
        Out::Close => keep_alive = false,
        _ => {}
    }
    if !buf.is_empty() && write_all(link, buf).await.is_err() {
        return false;
    }
    buf.clear();
    keep_alive
}

fn status_line(buf: &mut Vec<u8>, status: StatusCode) {
    if status == StatusCode::OK {
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        buf.extend_from_slice(b"HTTP/1.1 ");
        buf.extend_from_slice(status.as_str().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
}

/// One header line.
fn field(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.reserve(name.len() + value.len() + 4);
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// A `Content-Length` value: decimal digits, nothing else (at most 19, far from overflow).
fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 {
        return None;
    }
    let mut n = 0u64;
    for &b in v {
        if !b.is_ascii_digit() {
            return None;
        }
        n = n * 10 + u64::from(b - b'0');
    }
    Some(n)
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `n` in decimal, in `digits`.
fn format_u64(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &digits[i..];
        }
    }
}

thread_local! {
    /// The `Date` value of the current second, made once a second per worker.
    static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((0, [b' '; 29])) };
}

fn date(buf: &mut Vec<u8>) {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            let text = httpdate::fmt_http_date(now);
            if text.len() == 29 {
                d.1.copy_from_slice(text.as_bytes());
                d.0 = secs;
            } else {
                buf.extend_from_slice(text.as_bytes());
                return;
            }
        }
        buf.extend_from_slice(&d.1);
    });
}

/// Whether a comma-separated field value holds `token` (case-insensitively).
fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// Writes all of `data` and flushes (a TLS stream holds written bytes until then).
pub async fn write_all<S: AsyncRead + AsyncWrite + Unpin>(
    link: &RefCell<Link<S>>,
    data: &[u8],
) -> io::Result<()> {
    let mut data = data;
    poll_fn(|cx| {
        let mut l = link.borrow_mut();
        while !data.is_empty() {
            match Pin::new(&mut l.io).poll_write(cx, data) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => data = &data[n..],
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Pin::new(&mut l.io).poll_flush(cx)
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_status_lines_are_written_as_http_wants() {
        let mut d = itoa_buf();
        assert_eq!(format_u64(0, &mut d), b"0");
        assert_eq!(
            format_u64(18_446_744_073_709_551_615, &mut d),
            b"18446744073709551615"
        );
        let mut buf = Vec::new();
        status_line(&mut buf, StatusCode::NOT_FOUND);
        assert_eq!(buf, b"HTTP/1.1 404 Not Found\r\n");
    }

    #[test]
    fn tokens_are_found_in_lists() {
        assert!(has_token(b"keep-alive, Close", b"close"));
        assert!(!has_token(b"closed", b"close"));
    }
}
