//! The client connection as the request body and the response writer share it: the socket (with
//! its timeouts), the read buffer leftover bytes of a pipelined request wait in, and where the
//! current request's body is. It lives in an `Rc<RefCell<_>>` borrowed only inside one poll,
//! never across an await, so the body (owned by the proxy) and the loop (writing the answer)
//! never meet a held borrow.

use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::SizeHint;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};

use crate::proxy::h1::chunked::{self, Decoder};
use crate::server::timed_io::TimedIo;

/// Bytes read at a time.
pub const READ_CHUNK: usize = 16 * 1024;

/// What nginx sends when a body is first read after `Expect: 100-continue`.
const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// Where the current request's body is.
#[derive(Debug)]
pub enum BodyState {
    /// No body, or all of it was read.
    Done,
    /// Bytes left of a `Content-Length` body.
    Length(u64),
    Chunked(Decoder),
    /// The body cannot be read to its end (malformed, or the client closed): the connection
    /// cannot carry another request.
    Failed,
}

/// The interim answer to `Expect: 100-continue`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Continue {
    NotAsked,
    /// Asked and not yet (fully) sent: bytes of it written so far.
    Owed(usize),
    Sent,
}

/// Why a body read failed.
#[derive(Debug, thiserror::Error)]
pub enum BodyFault {
    #[error("client sent invalid chunked body")]
    Invalid,
    #[error("client prematurely closed connection")]
    Closed,
    #[error("{0}")]
    Io(#[from] io::Error),
}

pub struct Link<S> {
    pub io: TimedIo<S>,
    pub read_buf: BytesMut,
    pub body: BodyState,
    pub expect: Continue,
    /// The request being served: a body handle of an earlier request reads nothing.
    pub seq: u64,
}

/// The body side of a [`Link`], without its socket type.
pub trait BodySource {
    fn poll_body(
        &mut self,
        seq: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyFault>>>;
    fn body_hint(&self, seq: u64) -> SizeHint;
    fn body_ended(&self, seq: u64) -> bool;
}

impl<S: AsyncRead + AsyncWrite + Unpin> Link<S> {
    pub fn new(io: TimedIo<S>) -> Link<S> {
        Link {
            io,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            body: BodyState::Done,
            expect: Continue::NotAsked,
            seq: 0,
        }
    }

    /// Reads what the socket has into the read buffer; `Ok(0)` when the client closed.
    pub fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read_buf.capacity() - self.read_buf.len() < 1024 {
            self.read_buf.reserve(READ_CHUNK);
        }
        // `read_buf` keeps no state between polls: a new one each time is the same future.
        let read = pin!(self.io.read_buf(&mut self.read_buf));
        read.poll(cx)
    }

    /// Writes the rest of `100 Continue`.
    fn poll_continue(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Continue::Owed(done) = self.expect {
            if done == CONTINUE.len() {
                match Pin::new(&mut self.io).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.expect = Continue::Sent,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return Poll::Pending,
                }
                break;
            }
            match Pin::new(&mut self.io).poll_write(cx, &CONTINUE[done..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.expect = Continue::Owed(done + n),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> BodySource for Link<S> {
    fn poll_body(
        &mut self,
        seq: u64,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, BodyFault>>> {
        if seq != self.seq {
            return Poll::Ready(None);
        }
        if matches!(self.body, BodyState::Done) {
            return Poll::Ready(None);
        }
        match self.poll_continue(cx) {
            Poll::Ready(Ok(())) => {}
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(e)) => {
                self.body = BodyState::Failed;
                return Poll::Ready(Some(Err(BodyFault::Io(e))));
            }
        }
        loop {
            match &mut self.body {
                BodyState::Done => return Poll::Ready(None),
                BodyState::Failed => return Poll::Ready(Some(Err(BodyFault::Closed))),
                BodyState::Length(left) => {
                    if !self.read_buf.is_empty() {
                        let n = (*left).min(self.read_buf.len() as u64);
                        let data = self.read_buf.split_to(n as usize).freeze();
                        *left -= n;
                        if *left == 0 {
                            self.body = BodyState::Done;
                        }
                        return Poll::Ready(Some(Ok(data)));
                    }
                }
                BodyState::Chunked(dec) => match dec.decode(&mut self.read_buf) {
                    Ok(chunked::Step::Data(d)) => return Poll::Ready(Some(Ok(d))),
                    Ok(chunked::Step::End) => {
                        self.body = BodyState::Done;
                        return Poll::Ready(None);
                    }
                    Ok(chunked::Step::NeedMore) => {}
                    Err(chunked::Invalid) => {
                        self.body = BodyState::Failed;
                        return Poll::Ready(Some(Err(BodyFault::Invalid)));
                    }
                },
            }
            match self.poll_fill(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Ok(0)) => {
                    self.body = BodyState::Failed;
                    return Poll::Ready(Some(Err(BodyFault::Closed)));
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => {
                    self.body = BodyState::Failed;
                    return Poll::Ready(Some(Err(BodyFault::Io(e))));
                }
            }
        }
    }

    fn body_hint(&self, seq: u64) -> SizeHint {
        match self.body {
            _ if seq != self.seq => SizeHint::with_exact(0),
            BodyState::Done => SizeHint::with_exact(0),
            BodyState::Length(n) => SizeHint::with_exact(n),
            BodyState::Chunked(_) | BodyState::Failed => SizeHint::default(),
        }
    }

    fn body_ended(&self, seq: u64) -> bool {
        seq != self.seq || matches!(self.body, BodyState::Done)
    }
}
