//! An upstream response body read straight from its connection, in the task of the request
//! (the client connection's writer polls it): no connection task, no channel. When the body reaches its end
//! and the connection may carry another request, the connection is put in the shared slot the
//! request's completion hook checks it into the pool from.

use std::cell::Cell;
use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::io::AsyncReadExt;

use super::chunked::Step;
use super::response::READ_CHUNK;
use super::{Framing, UpstreamContext};
use crate::proxy::body::BodyError;
use crate::proxy::pool::Conn;

/// Where a connection whose response was read to its end waits to be checked in.
pub type ConnSlot = Rc<Cell<Option<Conn>>>;

pub struct ResponseBody {
    /// `None` once the body ended or failed.
    conn: Option<Conn>,
    framing: Framing,
    keep_alive: bool,
    slot: ConnSlot,
    context: Box<UpstreamContext>,
    /// A failure (logged already) to report on the next poll (see `fail`).
    failed: bool,
}

impl ResponseBody {
    pub fn new(
        conn: Conn,
        framing: Framing,
        keep_alive: bool,
        slot: ConnSlot,
        context: Box<UpstreamContext>,
    ) -> ResponseBody {
        let mut body = ResponseBody {
            conn: Some(conn),
            framing,
            keep_alive,
            slot,
            context,
            failed: false,
        };
        if matches!(body.framing, Framing::Length(0)) {
            body.ended();
        }
        body
    }

    /// The body was read to its end: the connection goes to the slot when it can be reused
    /// (nothing unread after the body: bytes beyond it mean the stream is out of step).
    fn ended(&mut self) {
        if let Some(conn) = self.conn.take()
            && self.keep_alive
            && conn.read_buf.is_empty()
        {
            self.slot.set(Some(conn));
        }
        self.framing = Framing::Length(0);
    }

    /// The body cannot go on. The error is reported on the next poll, after a wake-up: the
    /// client side first sends what it was handed (a client sees the body up to the failure,
    /// as under nginx, instead of losing the last bytes with the connection).
    fn fail(
        &mut self,
        what: &str,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let timed_out = self.conn.as_ref().is_some_and(|c| c.state.timed_out());
        self.conn = None;
        let msg = if timed_out {
            "upstream timed out (110: Connection timed out) while reading upstream".to_string()
        } else {
            format!("{what} while reading upstream")
        };
        log::error!("{msg}, {}", self.context);
        self.failed = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    pub fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if std::mem::take(&mut self.failed) {
            return Poll::Ready(Some(Err(BodyError::Upstream(io::Error::other(
                "the upstream response body failed (see the error log)",
            )))));
        }
        loop {
            let Some(conn) = self.conn.as_mut() else {
                return Poll::Ready(None);
            };
            match &mut self.framing {
                Framing::Length(0) => {
                    self.ended();
                    return Poll::Ready(None);
                }
                Framing::Length(left) => {
                    if !conn.read_buf.is_empty() {
                        let n = (*left).min(conn.read_buf.len() as u64);
                        let data = conn.read_buf.split_to(n as usize).freeze();
                        *left -= n;
                        if *left == 0 {
                            self.ended();
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                Framing::Chunked(dec) => match dec.decode(&mut conn.read_buf) {
                    Ok(Step::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                    Ok(Step::End) => {
                        self.ended();
                        return Poll::Ready(None);
                    }
                    Ok(Step::NeedMore) => {}
                    Err(_) => return self.fail("upstream sent invalid chunked response", cx),
                },
                Framing::Close => {
                    if !conn.read_buf.is_empty() {
                        let data = conn.read_buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            }
            match poll_fill(conn, cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    if matches!(self.framing, Framing::Close) {
                        // The end of a body without length: the connection ends with it.
                        self.conn = None;
                        self.framing = Framing::Length(0);
                        return Poll::Ready(None);
                    }
                    return self.fail("upstream prematurely closed connection", cx);
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    return self.fail(&format!("recv() failed ({})", super::errno_text(&e)), cx);
                }
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        !self.failed && (self.conn.is_none() || matches!(self.framing, Framing::Length(0)))
    }

    pub fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Length(n) if self.conn.is_some() => SizeHint::with_exact(n),
            Framing::Length(_) => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// Reads what the socket has into the connection's buffer.
fn poll_fill(conn: &mut Conn, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if conn.read_buf.capacity() - conn.read_buf.len() < 1024 {
        conn.read_buf.reserve(READ_CHUNK);
    }
    // `read_buf` keeps no state between polls: a new one each time is the same future.
    let read = pin!(conn.io.read_buf(&mut conn.read_buf));
    read.poll(cx)
}
