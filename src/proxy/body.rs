//! Body types flowing through the proxy, with the timeouts and limits that apply while they flow.
//!
//! Bodies stream: nothing here buffers a whole body. A request body is read from the client only as
//! fast as the upstream takes it, bounded by `client_body_timeout` between reads and by
//! `client_max_body_size` in total; a response body's read timeout is enforced on the upstream
//! socket itself. When a response body ends (or the client goes away) its [`Finish`] runs:
//! the access-log line, the connection's in-flight count, and returning the upstream connection
//! to the pool when it ended cleanly.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::h1::ResponseBody;
use tokio::time::{Instant, Sleep};

/// The client's request body as the connection delivers it: read by our HTTP/1 server from
/// the connection (`server::h1`), or hyper's for an HTTP/2 stream.
pub enum ClientIn {
    H1(crate::server::h1::RequestBody),
    H2(hyper::body::Incoming),
}

impl http_body::Body for ClientIn {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            ClientIn::H1(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(std::io::Error::other))),
            ClientIn::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(std::io::Error::other))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientIn::H1(b) => b.is_end_stream(),
            ClientIn::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientIn::H1(b) => b.size_hint(),
            ClientIn::H2(b) => b.size_hint(),
        }
    }
}

/// Why reading the client's body failed, so the handler can answer as nginx does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBodyError {
    /// Over `client_max_body_size`: 413.
    TooLarge,
    /// No data within `client_body_timeout`: 408.
    Timeout,
    /// The client's body was malformed or the client went away.
    Broken,
}

/// Errors a body yields to the connection writing it (`server::h1`, or hyper on HTTP/2).
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("client request body: {0:?}")]
    Client(ClientBodyError),
    #[error("upstream response body: {0}")]
    Upstream(std::io::Error),
}

/// Runs when a response body is done with (fully sent, or dropped early).
pub trait Finish {
    /// `bytes`: body bytes handed to the client; `complete`: the body reached its end.
    fn finish(self: Box<Self>, bytes: u64, complete: bool);
}

/// A request or response body.
pub struct Body {
    kind: Kind,
    bytes: u64,
    complete: bool,
    finish: Option<Box<dyn Finish>>,
}

// The client's and the upstream's bodies are boxed: unboxed they made every `Body` (and every
// `Response` the plugin path moves from function to function) 216 bytes, most of it for the
// kinds a response usually is not.
enum Kind {
    Empty,
    Full(Option<Bytes>),
    Client(Box<ClientBody>),
    Upstream(Box<ResponseBody>),
    /// Chunks a Lua content handler sends after `ngx.flush`; ends when the sender is dropped.
    Channel(tokio::sync::mpsc::UnboundedReceiver<Bytes>),
    Filtered(Box<Filtered>),
}

/// What a body filter made of one chunk: the data to send, and whether the body ends here.
pub type FilterFuture = Pin<Box<dyn std::future::Future<Output = (Bytes, bool)>>>;

/// Rewrites a response body chunk by chunk (the `body_filter` phase). `eof` is true once, on
/// the empty call after the last chunk.
pub trait BodyFilter {
    fn filter(&mut self, chunk: Bytes, eof: bool) -> FilterFuture;
}

pub struct Filtered {
    inner: Body,
    filter: Box<dyn BodyFilter>,
    pending: Option<FilterFuture>,
    /// The inner body reached its end (so an upstream connection may be reused).
    inner_ended: bool,
    /// The filter ended the body (at eof, or early by setting `ngx.arg[2]`).
    ended: bool,
    eof_sent: bool,
}

impl Body {
    pub fn empty() -> Body {
        Body::with(Kind::Empty)
    }

    pub fn full(data: impl Into<Bytes>) -> Body {
        Body::with(Kind::Full(Some(data.into())))
    }

    /// The length of a body the gateway holds whole (`None` for streamed ones).
    pub fn full_len(&self) -> Option<u64> {
        match &self.kind {
            Kind::Full(d) => Some(d.as_ref().map_or(0, |d| d.len() as u64)),
            _ => None,
        }
    }

    fn with(kind: Kind) -> Body {
        Body {
            kind,
            bytes: 0,
            complete: false,
            finish: None,
        }
    }

    /// The client's request body, to be forwarded upstream. `limit` (0 = none) is read as the
    /// body arrives, so a plugin may still change it (`set_client_max_body_size`); `chunked`
    /// only words the error line as nginx does.
    pub fn client(
        inner: ClientIn,
        limit: Rc<Cell<u64>>,
        chunked: bool,
        timeout: Duration,
        error: Rc<Cell<Option<ClientBodyError>>>,
    ) -> Body {
        Body::with(Kind::Client(Box::new(ClientBody {
            inner,
            unread: None,
            limit,
            chunked,
            received: 0,
            timeout,
            timer: None,
            error,
        })))
    }

    /// An upstream response body, to be forwarded to the client. Its read timeout is applied
    /// on the upstream socket (`upstream_io`).
    pub fn upstream(inner: ResponseBody) -> Body {
        // A body that is over before it starts (HEAD, 204, 304, `Content-Length: 0`) is never
        // polled: it is complete already, so its connection is reused.
        let complete = inner.is_end_stream();
        let mut body = Body::with(Kind::Upstream(Box::new(inner)));
        body.complete = complete;
        body
    }

    /// The bytes of a body held whole (cheap: shared, not copied), for a write that carries
    /// them with the request head.
    pub fn whole(&self) -> Option<Bytes> {
        match &self.kind {
            Kind::Full(d) => d.clone(),
            _ => None,
        }
    }

    /// Puts back a chunk read from a client body that did not reach the upstream, so a retry
    /// sends it. Bodies of other kinds are sent again from a copy (`replay`).
    pub fn unread(&mut self, chunk: Bytes) {
        if let Kind::Client(b) = &mut self.kind {
            b.unread = Some(chunk);
        }
    }

    /// A copy of a body that can be sent again (empty or held whole), for a retry after the
    /// original went out.
    pub fn replay(&self) -> Option<Body> {
        match &self.kind {
            Kind::Empty => Some(Body::empty()),
            Kind::Full(d) => Some(Body::with(Kind::Full(d.clone()))),
            _ => None,
        }
    }

    /// A body fed by a channel (streamed Lua output).
    pub fn channel(rx: tokio::sync::mpsc::UnboundedReceiver<Bytes>) -> Body {
        Body::with(Kind::Channel(rx))
    }

    /// `inner` passed through `filter`.
    pub fn filtered(inner: Body, filter: Box<dyn BodyFilter>) -> Body {
        Body::with(Kind::Filtered(Box::new(Filtered {
            inner,
            filter,
            pending: None,
            inner_ended: false,
            ended: false,
            eof_sent: false,
        })))
    }

    /// Attaches the completion hook.
    pub fn on_finish(mut self, f: Box<dyn Finish>) -> Body {
        self.finish = Some(f);
        self
    }

    fn done(&mut self) {
        // A filter that cut the body short left the inner body unread: not reusable.
        self.complete = match &self.kind {
            Kind::Filtered(f) => f.inner_ended,
            _ => true,
        };
        let complete = self.complete;
        if let Some(f) = self.finish.take() {
            f.finish(self.bytes, complete);
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        if let Some(f) = self.finish.take() {
            f.finish(self.bytes, self.complete);
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let res = match &mut this.kind {
            Kind::Empty => Poll::Ready(None),
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Client(b) => b.poll_frame(cx),
            Kind::Upstream(b) => b.poll_frame(cx),
            Kind::Channel(rx) => match rx.poll_recv(cx) {
                Poll::Ready(Some(d)) => Poll::Ready(Some(Ok(Frame::data(d)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
            Kind::Filtered(f) => f.poll_frame(cx),
        };
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                }
                if this.is_end_stream_inner() {
                    this.done();
                }
            }
            Poll::Ready(None) => this.done(),
            _ => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.is_end_stream_inner()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Client(b) => {
                let mut hint = b.inner.size_hint();
                if let Some(d) = &b.unread {
                    let n = d.len() as u64;
                    hint.set_lower(hint.lower() + n);
                    if let Some(u) = hint.upper() {
                        hint.set_upper(u + n);
                    }
                }
                hint
            }
            Kind::Upstream(b) => b.size_hint(),
            Kind::Channel(_) | Kind::Filtered(_) => SizeHint::default(),
        }
    }
}

impl Body {
    fn is_end_stream_inner(&self) -> bool {
        use http_body::Body as _;
        match &self.kind {
            Kind::Empty => true,
            Kind::Full(d) => d.is_none(),
            Kind::Client(b) => b.unread.is_none() && b.inner.is_end_stream(),
            Kind::Upstream(b) => b.is_end_stream(),
            Kind::Channel(_) => false,
            Kind::Filtered(f) => f.ended && f.pending.is_none(),
        }
    }
}

impl Filtered {
    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        use http_body::Body as _;
        loop {
            if let Some(p) = self.pending.as_mut() {
                let (data, stop) = match p.as_mut().poll(cx) {
                    Poll::Ready(v) => v,
                    Poll::Pending => return Poll::Pending,
                };
                self.pending = None;
                if stop || self.eof_sent {
                    self.ended = true;
                }
                if !data.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                continue;
            }
            if self.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(d) => self.pending = Some(self.filter.filter(d, false)),
                    Err(trailers) => return Poll::Ready(Some(Ok(trailers))),
                },
                Poll::Ready(None) => {
                    self.inner_ended = true;
                    self.eof_sent = true;
                    self.pending = Some(self.filter.filter(Bytes::new(), true));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

struct ClientBody {
    inner: ClientIn,
    /// A chunk read and then put back (`Body::unread`): it comes out first.
    unread: Option<Bytes>,
    limit: Rc<Cell<u64>>,
    chunked: bool,
    received: u64,
    timeout: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    error: Rc<Cell<Option<ClientBodyError>>>,
}

impl ClientBody {
    fn fail(&self, e: ClientBodyError) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        self.error.set(Some(e));
        Poll::Ready(Some(Err(BodyError::Client(e))))
    }

    fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        use http_body::Body as _;
        if let Some(d) = self.unread.take() {
            return Poll::Ready(Some(Ok(Frame::data(d))));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.timer = None;
                if let Some(d) = frame.data_ref() {
                    self.received += d.len() as u64;
                    let limit = self.limit.get();
                    if limit > 0 && self.received > limit {
                        if self.chunked {
                            log::error!(
                                "client intended to send too large chunked body: {}+ bytes",
                                self.received
                            );
                        } else {
                            log::error!(
                                "client intended to send too large body: {} bytes",
                                self.received
                            );
                        }
                        return self.fail(ClientBodyError::TooLarge);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(_))) => self.fail(ClientBodyError::Broken),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let timeout = self.timeout;
                let timer = self.timer.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + timeout))
                });
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => self.fail(ClientBodyError::Timeout),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}
