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

use bytes::Bytes;
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
    let (mut parts, mut body) = resp.into_parts();
    let status = parts.status;
    let mut keep_alive = ex.keep_alive
        && !parts
            .headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"close"));
    let bodiless = status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    let declared = parts.headers.get(header::CONTENT_LENGTH).map(|v| {
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    });
    let out = if bodiless {
        Out::Nothing
    } else if let Some(n) = declared {
        match n {
            Some(n) if !ex.head_request => Out::Length(n),
            Some(_) => Out::Nothing,
            None => {
                // A length that is not a number cannot delimit anything: the body ends with
                // the connection.
                parts.headers.remove(header::CONTENT_LENGTH);
                keep_alive = false;
                if ex.head_request {
                    Out::Nothing
                } else {
                    Out::Close
                }
            }
        }
    } else if parts
        .headers
        .get(header::TRANSFER_ENCODING)
        .is_some_and(|v| has_token(v.as_bytes(), b"chunked"))
        && ex.version == Version::HTTP_11
    {
        if ex.head_request {
            Out::Nothing
        } else {
            Out::Chunked
        }
    } else {
        parts.headers.remove(header::TRANSFER_ENCODING);
        let known = if body.is_end_stream() {
            Some(0)
        } else {
            body.size_hint().exact()
        };
        match known {
            Some(n) => {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                if ex.head_request {
                    Out::Nothing
                } else {
                    Out::Length(n)
                }
            }
            None if ex.head_request => Out::Nothing,
            None if ex.version == Version::HTTP_11 => {
                parts.headers.insert(
                    header::TRANSFER_ENCODING,
                    HeaderValue::from_static("chunked"),
                );
                Out::Chunked
            }
            None => {
                keep_alive = false;
                Out::Close
            }
        }
    };
    if keep_alive {
        if ex.version == Version::HTTP_10 {
            parts
                .headers
                .insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        }
    } else {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }

    buf.clear();
    encode_head(buf, status, &parts.headers);
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
            if write_all(link, buf).await.is_err() || write_bytes(link, &data).await.is_err() {
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

/// The status line and header fields, with `Date` added as hyper added it.
fn encode_head(buf: &mut Vec<u8>, status: StatusCode, headers: &http::HeaderMap) {
    if status == StatusCode::OK {
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        buf.extend_from_slice(b"HTTP/1.1 ");
        buf.extend_from_slice(status.as_str().as_bytes());
        buf.push(b' ');
        buf.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    for (name, value) in headers {
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if !headers.contains_key(header::DATE) {
        buf.extend_from_slice(b"date: ");
        date(buf);
        buf.extend_from_slice(b"\r\n");
    }
    buf.extend_from_slice(b"\r\n");
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

async fn write_bytes<S: AsyncRead + AsyncWrite + Unpin>(
    link: &RefCell<Link<S>>,
    data: &Bytes,
) -> io::Result<()> {
    write_all(link, data).await
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
    fn the_head_carries_the_status_line_fields_and_date() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        let mut buf = Vec::new();
        encode_head(&mut buf, StatusCode::NOT_FOUND, &headers);
        let text = String::from_utf8(buf).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 404 Not Found\r\nx-a: 1\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
    }

    #[test]
    fn tokens_are_found_in_lists() {
        assert!(has_token(b"keep-alive, Close", b"close"));
        assert!(!has_token(b"closed", b"close"));
    }
}
