//! The upstream socket with `timeout.read` applied where hyper waits on it.
//!
//! The read timeout is armed when a request is sent and disarmed when its response ends, so an
//! idle pooled connection is never timed out. To keep timer work off the per-request path the
//! timer is armed once per request and re-armed lazily: a read that brings data only marks
//! progress, and when the timer fires after progress it is pushed one timeout further. A silent
//! upstream therefore times out exactly on time; one that stalls mid-response times out between
//! one and two timeouts after its last data.

use std::cell::Cell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// What the proxy and the socket wrapper share about one upstream connection.
#[derive(Debug, Default)]
pub struct UpstreamState {
    /// The read timeout while a request is in flight; `None` while idle.
    read_timeout: Cell<Option<Duration>>,
    /// Set when a read gave up on the timeout (so the error is a 504, not a 502).
    timed_out: Cell<bool>,
    progressed: Cell<bool>,
    /// A new deadline to arm, set by [`UpstreamState::begin`].
    rearm: Cell<Option<Instant>>,
}

impl UpstreamState {
    /// A request is being sent: reads must bring data within `timeout`.
    pub fn begin(&self, timeout: Duration) {
        self.read_timeout.set(Some(timeout));
        self.timed_out.set(false);
        self.progressed.set(false);
        self.rearm.set(Some(Instant::now() + timeout));
    }

    /// The response ended: the connection is idle.
    pub fn end(&self) {
        self.read_timeout.set(None);
        self.rearm.set(None);
    }

    pub fn timed_out(&self) -> bool {
        self.timed_out.get()
    }
}

pin_project_lite::pin_project! {
    pub struct UpstreamIo<S> {
        #[pin]
        io: S,
        state: Rc<UpstreamState>,
        timer: Pin<Box<Sleep>>,
        armed: bool,
    }
}

impl<S> UpstreamIo<S> {
    pub fn new(io: S, state: Rc<UpstreamState>) -> UpstreamIo<S> {
        UpstreamIo {
            io,
            state,
            timer: Box::pin(tokio::time::sleep(Duration::from_secs(86400))),
            armed: false,
        }
    }
}

impl<S: AsyncRead> AsyncRead for UpstreamIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.state.progressed.set(true);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let st = &**this.state;
                if let Some(at) = st.rearm.take() {
                    this.timer.as_mut().reset(at);
                    *this.armed = true;
                }
                let Some(timeout) = st.read_timeout.get() else {
                    return Poll::Pending;
                };
                if !*this.armed {
                    return Poll::Pending;
                }
                loop {
                    match this.timer.as_mut().poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(()) if st.progressed.replace(false) => {
                            this.timer.as_mut().reset(Instant::now() + timeout);
                        }
                        Poll::Ready(()) => {
                            *this.armed = false;
                            st.timed_out.set(true);
                            return Poll::Ready(Err(io::Error::new(
                                io::ErrorKind::TimedOut,
                                "upstream timed out (110: Connection timed out) while reading upstream",
                            )));
                        }
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite> AsyncWrite for UpstreamIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.project().io.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}
