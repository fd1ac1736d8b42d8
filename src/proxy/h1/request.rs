//! Writing a request to the upstream: the head in one buffer (with a small body held whole
//! appended to it, so most requests cost one write), then a streamed body as is when its length
//! is known, chunked otherwise. `timeout.send` bounds each wait for the socket to take bytes,
//! as nginx's `proxy_send_timeout` does.

use std::future::poll_fn;
use std::io::{self, Write as _};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Uri};
use http_body::Body as _;
use tokio::io::AsyncWrite;
use tokio::time::Sleep;

use super::stream::Stream;
use crate::proxy::body::Body;

/// A body held whole up to this size travels in the head's write.
const INLINE_BODY: usize = 16 * 1024;

/// What the upstream is sent.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    /// The `Host` field (any `Host` in `headers` is left out).
    pub host: &'a HeaderValue,
    pub headers: &'a HeaderMap,
    /// Forwarding fields kept out of `headers` (see `proxy::headers::Forwarding`).
    pub forwarding: Option<&'a crate::proxy::headers::Forwarding>,
}

/// Why sending failed.
#[derive(Debug)]
pub enum SendError {
    /// Not a byte reached the connection: the request (body included) is intact.
    Unsent(io::Error),
    /// The connection failed after part of the request was written.
    Io(io::Error),
    /// The socket took no bytes within `timeout.send`.
    Timeout,
    /// Reading the client's body failed (its error is in the body's error cell).
    ClientBody,
}

/// Writes the request; the body is taken from `body` once its bytes start going out. `buf` is
/// the connection's write buffer, kept from one request to the next (no allocation per head).
pub async fn send(
    io: &mut Stream,
    buf: &mut Vec<u8>,
    head: &RequestHead<'_>,
    body: &mut Option<Body>,
    timeout: Duration,
) -> Result<(), SendError> {
    let mut w = Writer {
        io,
        timeout,
        timer: None,
        wrote: false,
    };
    buf.clear();
    encode_head(buf, head);
    // How the body is delimited: a `Content-Length` given wins; a body of exactly known length
    // gets one; any other body goes chunked.
    let streamed = body.as_ref().is_some_and(|b| !b.is_end_stream());
    let mut chunked = false;
    if streamed && !head.headers.contains_key(header::CONTENT_LENGTH) {
        match body.as_ref().and_then(|b| b.size_hint().exact()) {
            Some(n) => {
                buf.extend_from_slice(b"content-length: ");
                buf.extend_from_slice(n.to_string().as_bytes());
                buf.extend_from_slice(b"\r\n");
            }
            None => {
                buf.extend_from_slice(b"transfer-encoding: chunked\r\n");
                chunked = true;
            }
        }
    }
    buf.extend_from_slice(b"\r\n");
    if !chunked
        && let Some(data) = body.as_ref().and_then(Body::whole)
        && data.len() <= INLINE_BODY
    {
        // A small body held whole goes in the head's write.
        buf.extend_from_slice(&data);
        w.write_all(buf).await?;
        *body = None;
        return w.flush().await;
    }
    let Some(mut b) = body.take_if(|_| streamed) else {
        w.write_all(buf).await?;
        return w.flush().await;
    };
    // A streamed body's first chunk goes in the head's write too when it is already there
    // (one look, no waiting: the head is not held back for a slow client).
    let mut first: Option<Bytes> = None;
    let mut ended = false;
    match poll_fn(|cx| Poll::Ready(Pin::new(&mut b).poll_frame(cx))).await {
        Poll::Ready(Some(Ok(frame))) => {
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                if data.len() <= INLINE_BODY {
                    frame_into(buf, &data, chunked);
                }
                first = Some(data);
            }
        }
        Poll::Ready(Some(Err(_))) => return Err(SendError::ClientBody),
        Poll::Ready(None) => ended = true,
        Poll::Pending => {}
    }
    if ended && chunked {
        buf.extend_from_slice(b"0\r\n\r\n");
    }
    if let Err(e) = w.write_all(buf).await {
        if let SendError::Unsent(_) = e {
            // Nothing went out: the body goes back whole (its first chunk too) for a retry.
            if let Some(data) = first {
                b.unread(data);
            }
            *body = Some(b);
        }
        return Err(e);
    }
    if let Some(data) = first.filter(|d| d.len() > INLINE_BODY) {
        write_data(&mut w, buf, &data, chunked).await?;
    }
    if !ended {
        loop {
            let frame = poll_fn(|cx| Pin::new(&mut b).poll_frame(cx)).await;
            match frame {
                Some(Ok(frame)) => {
                    // Trailers of the client's body are not forwarded.
                    if let Ok(data) = frame.into_data()
                        && !data.is_empty()
                    {
                        write_data(&mut w, buf, &data, chunked).await?;
                    }
                }
                Some(Err(_)) => return Err(SendError::ClientBody),
                None => break,
            }
        }
        if chunked {
            w.write_all(b"0\r\n\r\n").await?;
        }
    }
    w.flush().await
}

/// Appends `data` as the body's framing wants it.
fn frame_into(buf: &mut Vec<u8>, data: &[u8], chunked: bool) {
    if chunked {
        let _ = write!(buf, "{:x}\r\n", data.len());
        buf.extend_from_slice(data);
        buf.extend_from_slice(b"\r\n");
    } else {
        buf.extend_from_slice(data);
    }
}

/// Writes one chunk of a streamed body: a small one framed in `buf` with one write, a large
/// one as is (its chunk framing around it).
async fn write_data(
    w: &mut Writer<'_>,
    buf: &mut Vec<u8>,
    data: &Bytes,
    chunked: bool,
) -> Result<(), SendError> {
    if !chunked {
        return w.write_all(data).await;
    }
    buf.clear();
    if data.len() <= INLINE_BODY {
        frame_into(buf, data, true);
        return w.write_all(buf).await;
    }
    let _ = write!(buf, "{:x}\r\n", data.len());
    w.write_all(buf).await?;
    w.write_all(data).await?;
    w.write_all(b"\r\n").await
}

/// The request line and fields, lower-case names as hyper wrote them (HTTP/1 names are
/// case-insensitive; HTTP/2 clients' are lower-case anyway).
fn encode_head(buf: &mut Vec<u8>, head: &RequestHead<'_>) {
    buf.extend_from_slice(head.method.as_str().as_bytes());
    buf.push(b' ');
    match head.uri.path_and_query() {
        Some(pq) => buf.extend_from_slice(pq.as_str().as_bytes()),
        None => buf.push(b'/'),
    }
    buf.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    buf.extend_from_slice(head.host.as_bytes());
    buf.extend_from_slice(b"\r\n");
    for (name, value) in head.headers {
        if name == header::HOST {
            continue;
        }
        buf.extend_from_slice(name.as_str().as_bytes());
        buf.extend_from_slice(b": ");
        buf.extend_from_slice(value.as_bytes());
        buf.extend_from_slice(b"\r\n");
    }
    if let Some(f) = head.forwarding {
        f.encode(buf);
    }
}

struct Writer<'a> {
    io: &'a mut Stream,
    timeout: Duration,
    /// Armed only when the socket makes us wait (most writes complete at once).
    timer: Option<Pin<Box<Sleep>>>,
    wrote: bool,
}

impl Writer<'_> {
    fn fail(&self, e: io::Error) -> SendError {
        if self.wrote {
            SendError::Io(e)
        } else {
            SendError::Unsent(e)
        }
    }

    async fn write_all(&mut self, mut data: &[u8]) -> Result<(), SendError> {
        while !data.is_empty() {
            let n = poll_fn(|cx| match Pin::new(&mut *self.io).poll_write(cx, data) {
                Poll::Ready(r) => Poll::Ready(Ok(r)),
                Poll::Pending => {
                    let timeout = self.timeout;
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    match timer.as_mut().poll(cx) {
                        Poll::Ready(()) => Poll::Ready(Err(SendError::Timeout)),
                        Poll::Pending => Poll::Pending,
                    }
                }
            })
            .await?;
            match n {
                Ok(0) => return Err(self.fail(io::ErrorKind::WriteZero.into())),
                Ok(n) => {
                    // Progress: the next wait gets a whole timeout again.
                    self.timer = None;
                    self.wrote = true;
                    data = &data[n..];
                }
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<(), SendError> {
        poll_fn(|cx| Pin::new(&mut *self.io).poll_flush(cx))
            .await
            .map_err(|e| self.fail(e))
    }
}
