//! The client socket, with nginx's client timeouts attached.
//!
//! Neither hyper (HTTP/2) nor our HTTP/1 server (`server::h1`) times the socket by itself. This
//! wrapper applies nginx's client timeouts where the connection waits on the socket: a connection that never sends a byte, a head that arrives too slowly
//! (`client_header_timeout`), an idle keep-alive connection (`keepalive_timeout`; for HTTP/2, the
//! idle timeout while no stream is open), and a peer that stops reading our response
//! (`send_timeout`, between two successful writes). Request bodies are bounded where they are read
//! (`proxy::body`), because only there is it known that someone is waiting for them. A timeout
//! surfaces as an I/O error, which closes the connection.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::observability::metrics::conn as conn_stats;

/// Client-side timeouts, resolved from the node config.
#[derive(Debug, Clone, Copy)]
pub struct ClientTimeouts {
    /// A new connection that sends nothing is closed after this.
    pub first_byte: Duration,
    pub header: Duration,
    pub body: Duration,
    pub send: Duration,
    pub keepalive: Duration,
    pub http2_idle: Duration,
}

/// Where an HTTP/1 connection is in its current message, as the connection loop tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Between requests: no byte of the next head seen yet (or a handler owns the request).
    Idle,
    /// Some bytes of a head, not all of it.
    Head,
    /// The answer is sent and the rest of the request body is being read and discarded.
    Body,
}

/// State one connection shares between its socket wrapper and its request handlers.
#[derive(Debug)]
pub struct ConnState {
    /// HTTP/1 (requests one after another) rather than HTTP/2.
    h1: bool,
    phase: Cell<Phase>,
    /// Requests whose response has not been fully sent.
    pub in_flight: Cell<u32>,
    /// When `in_flight` last dropped to zero (or the connection started).
    pub last_done: Cell<Instant>,
    /// Requests handled on this connection.
    pub requests: Cell<u64>,
    head_started: Cell<Option<Instant>>,
    last_read: Cell<Instant>,
    seen_bytes: Cell<bool>,
    started: Instant,
}

impl Drop for ConnState {
    fn drop(&mut self) {
        // A connection that closes mid-head or with requests in flight leaves the counts.
        if self.head_started.get().is_some() {
            conn_stats::reading(false);
        }
        for _ in 0..self.in_flight.get() {
            conn_stats::request_end();
        }
    }
}

impl ConnState {
    pub fn new(h1: bool) -> Rc<ConnState> {
        let now = Instant::now();
        Rc::new(ConnState {
            h1,
            phase: Cell::new(Phase::Idle),
            in_flight: Cell::new(0),
            last_done: Cell::new(now),
            requests: Cell::new(0),
            head_started: Cell::new(None),
            last_read: Cell::new(now),
            seen_bytes: Cell::new(false),
            started: now,
        })
    }

    /// A request handler started.
    pub fn begin(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
        self.requests.set(self.requests.get() + 1);
        conn_stats::request_begin();
    }

    /// A response was fully sent (or abandoned).
    pub fn end(&self) {
        let n = self.in_flight.get().saturating_sub(1);
        if n < self.in_flight.get() {
            conn_stats::request_end();
        }
        self.in_flight.set(n);
        if n == 0 {
            self.last_done.set(Instant::now());
        }
    }

    /// A request head started arriving (`Some`) or is complete (`None`); the process-wide
    /// `reading` count follows.
    fn set_head_started(&self, at: Option<Instant>) {
        match (self.head_started.get().is_some(), at.is_some()) {
            (false, true) => conn_stats::reading(true),
            (true, false) => conn_stats::reading(false),
            _ => {}
        }
        self.head_started.set(at);
    }

    /// An HTTP/1 connection: its requests are served one after another.
    pub fn is_h1(&self) -> bool {
        self.h1
    }

    fn phase(&self) -> Option<Phase> {
        self.h1.then(|| self.phase.get())
    }

    /// Part of a request head arrived (`client_header_timeout` runs from here).
    pub fn head_begins(&self) {
        if self.head_started.get().is_none() {
            self.set_head_started(Some(Instant::now()));
            self.phase.set(Phase::Head);
        }
    }

    /// The head is complete (or refused).
    pub fn head_done(&self) {
        if self.head_started.get().is_some() {
            self.set_head_started(None);
        }
        self.phase.set(Phase::Idle);
    }

    /// The loop moved on to `phase` (discarding a body: timed from now, per read).
    pub fn set_phase(&self, phase: Phase) {
        if phase == Phase::Body {
            self.last_read.set(Instant::now());
        }
        self.phase.set(phase);
    }
}

pin_project_lite::pin_project! {
    pub struct TimedIo<S> {
        #[pin]
        io: S,
        state: Rc<ConnState>,
        timeouts: ClientTimeouts,
        read_timer: Pin<Box<Sleep>>,
        read_deadline: Option<Instant>,
        write_timer: Pin<Box<Sleep>>,
        write_deadline: Option<Instant>,
    }
}

impl<S> TimedIo<S> {
    pub fn new(io: S, state: Rc<ConnState>, timeouts: ClientTimeouts) -> TimedIo<S> {
        let far = Instant::now() + Duration::from_secs(86400);
        TimedIo {
            io,
            state,
            timeouts,
            read_timer: Box::pin(tokio::time::sleep_until(far)),
            read_deadline: None,
            write_timer: Box::pin(tokio::time::sleep_until(far)),
            write_deadline: None,
        }
    }
}

/// When a pending read must give up, given where the connection is.
fn read_deadline(st: &ConnState, t: &ClientTimeouts) -> Option<Instant> {
    if st.in_flight.get() > 0 {
        // A handler owns the request: it bounds body reads itself, and waiting for the upstream
        // is not the client's fault.
        return None;
    }
    if !st.seen_bytes.get() {
        return Some(st.started + t.first_byte);
    }
    match st.phase() {
        None => Some(st.last_done.get() + t.http2_idle),
        Some(Phase::Idle) => Some(st.last_done.get() + t.keepalive),
        Some(Phase::Head) => st.head_started.get().map(|s| s + t.header),
        // The handler answered without reading the whole body; the loop discards the rest.
        Some(Phase::Body) => Some(st.last_read.get() + t.body),
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, format!("client timed out {what}"))
}

impl<S: AsyncRead> AsyncRead for TimedIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let st = &**this.state;
                let data = &buf.filled()[before..];
                if !data.is_empty() {
                    st.seen_bytes.set(true);
                    // Only a body being discarded after an answer is timed from its last read;
                    // skip the clock otherwise.
                    if st.phase.get() == Phase::Body && st.in_flight.get() == 0 {
                        st.last_read.set(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some(deadline) = read_deadline(this.state, this.timeouts) else {
                    return Poll::Pending;
                };
                // The timer is armed lazily: deadlines only move later as the connection makes
                // progress, so a timer set for an earlier deadline is left in place and, when it
                // fires early, re-armed. This keeps timer-wheel work off the per-request path.
                if this.read_deadline.is_none_or(|armed| armed > deadline) {
                    this.read_timer.as_mut().reset(deadline);
                    *this.read_deadline = Some(deadline);
                }
                loop {
                    match this.read_timer.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) if Instant::now() >= deadline => {
                            return Poll::Ready(Err(timed_out("reading from the client")));
                        }
                        Poll::Ready(()) => {
                            this.read_timer.as_mut().reset(deadline);
                            *this.read_deadline = Some(deadline);
                        }
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite> TimedIo<S> {
    /// Arms the send timer when a write cannot progress; disarms it when one does.
    fn guard_write<T>(
        write_timer: &mut Pin<Box<Sleep>>,
        write_deadline: &mut Option<Instant>,
        send: Duration,
        cx: &mut Context<'_>,
        res: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        match res {
            Poll::Ready(r) => {
                *write_deadline = None;
                Poll::Ready(r)
            }
            Poll::Pending => {
                if write_deadline.is_none() {
                    let d = Instant::now() + send;
                    write_timer.as_mut().reset(d);
                    *write_deadline = Some(d);
                }
                ready!(write_timer.as_mut().poll(cx));
                Poll::Ready(Err(timed_out("while sending to the client")))
            }
        }
    }
}

impl<S: AsyncWrite> AsyncWrite for TimedIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write(cx, buf);
        Self::guard_write(
            this.write_timer,
            this.write_deadline,
            this.timeouts.send,
            cx,
            res,
        )
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let res = this.io.poll_write_vectored(cx, bufs);
        Self::guard_write(
            this.write_timer,
            this.write_deadline,
            this.timeouts.send,
            cx,
            res,
        )
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let res = this.io.poll_flush(cx);
        Self::guard_write(
            this.write_timer,
            this.write_deadline,
            this.timeouts.send,
            cx,
            res,
        )
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
