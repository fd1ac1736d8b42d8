//! One HTTP/1 client connection, request after request: read a head (bytes left over are the
//! start of the next one, so pipelined requests are served in order), hand the request to the
//! proxy, write its answer, read whatever the proxy left of the request body, and go on while
//! both sides want to keep the connection.
//!
//! A client that closes its connection while its request is handled abandons the request, as
//! under hyper (nginx's `proxy_ignore_client_abort off`).
//!
//! Shutdown: a connection waiting for its next request closes at once; a request being served
//! is answered (with `Connection: close`) and then the connection closes.

use std::cell::RefCell;
use std::future::poll_fn;
use std::pin::Pin;
use std::rc::Rc;
use std::task::Poll;

use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncWrite};

use super::body::RequestBody;
use super::head::{self, BodyFraming, Head, Reject};
use super::link::{BodySource, BodyState, Continue, Link};
use super::write::{self, Exchange};
use crate::proxy::h1::chunked::Decoder;
use crate::proxy::{self, ConnCtx, body::ClientIn};
use crate::server::drain::{Drain, IdleSlot};
use crate::server::timed_io::{Phase, TimedIo};

/// Serves the connection until the client closes it, a timeout or an error ends it, or
/// shutdown drains it.
pub async fn serve<S>(io: TimedIo<S>, cx: Rc<ConnCtx>, drain: &Drain)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    let max_line = cx.worker.shared.settings.max_line;
    let link = Rc::new(RefCell::new(Link::new(io)));
    let mut out = Vec::with_capacity(4096);
    let idle = drain.slot();
    loop {
        let head = match read_head(&link, &cx, max_line, drain, &idle).await {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(reject) => {
                let resp = proxy::refuse_head(&cx, reject.status, reject.reason);
                let ex = Exchange {
                    head_request: false,
                    version: http::Version::HTTP_11,
                    keep_alive: false,
                };
                write::response(&link, &mut out, resp, ex).await;
                break;
            }
        };
        let seq = {
            let mut l = link.borrow_mut();
            l.seq += 1;
            l.body = match head.body {
                BodyFraming::None => BodyState::Done,
                BodyFraming::Length(n) => BodyState::Length(n),
                BodyFraming::Chunked => BodyState::Chunked(Decoder::default()),
            };
            l.expect = if head.expect_continue && head.body != BodyFraming::None {
                Continue::Owed(0)
            } else {
                Continue::NotAsked
            };
            l.seq
        };
        let Head {
            parts,
            verdict,
            keep_alive,
            ..
        } = head;
        let ex = Exchange {
            head_request: parts.method == Method::HEAD,
            version: parts.version,
            keep_alive,
        };
        let src: Rc<RefCell<dyn BodySource>> = link.clone();
        let req = Request::from_parts(parts, ClientIn::H1(RequestBody::new(src, seq)));
        let resp = tokio::select! {
            biased;
            r = proxy::handle(req, verdict, cx.clone()) => match r {
                Ok(r) => r,
                Err(never) => match never {},
            },
            () = client_gone(&link, seq) => {
                // As under hyper, the request is abandoned (its upstream exchange too).
                log::info!(
                    "client prematurely closed connection while processing the request, client: {}",
                    cx.remote.ip()
                );
                break;
            }
        };
        let ex = Exchange {
            keep_alive: ex.keep_alive && !drain.stopping(),
            ..ex
        };
        if !write::response(&link, &mut out, resp, ex).await {
            break;
        }
        if !discard_body(&link, &cx, seq).await || drain.stopping() {
            break;
        }
    }
    // Our side is done; the peer sees the end of the stream (TLS: a close_notify).
    let _ = poll_fn(|c| Pin::new(&mut link.borrow_mut().io).poll_shutdown(c)).await;
}

/// Reads until a complete head; `Ok(None)` when the connection ends first (closed by the
/// client, timed out, or shut down while waiting for a request).
async fn read_head<S: AsyncRead + AsyncWrite + Unpin>(
    link: &RefCell<Link<S>>,
    cx: &ConnCtx,
    max_line: usize,
    drain: &Drain,
    idle: &IdleSlot,
) -> Result<Option<Head>, Reject> {
    let state = &cx.state;
    loop {
        {
            let mut l = link.borrow_mut();
            if !l.read_buf.is_empty() {
                let parsed = head::parse(&mut l.read_buf, max_line);
                // `client_header_timeout` runs once a head did not come whole in one read (no
                // clock read for the usual head).
                if matches!(parsed, Ok(None)) {
                    state.head_begins();
                } else {
                    state.head_done();
                }
                if let Some(h) = parsed? {
                    return Ok(Some(h));
                }
            }
        }
        let waiting = link.borrow().read_buf.is_empty();
        let n = poll_fn(|c| {
            let read = link.borrow_mut().poll_fill(c);
            // Between requests, shutdown closes the connection at once.
            if read.is_pending() && waiting && drain.poll_stopped(idle, c).is_ready() {
                return Poll::Ready(None);
            }
            read.map(Some)
        })
        .await;
        let Some(n) = n else {
            return Ok(None);
        };
        match n {
            Ok(0) => {
                if !link.borrow().read_buf.is_empty() {
                    log::info!(
                        "client prematurely closed connection while reading client request headers, client: {}",
                        cx.remote.ip()
                    );
                }
                return Ok(None);
            }
            Ok(_) => {}
            Err(e) => {
                log::info!(
                    "{e} while reading client request headers, client: {}",
                    cx.remote.ip()
                );
                return Ok(None);
            }
        }
    }
}

/// Resolves when the client closes the connection while its request is being handled. Only
/// once the body is read (before that, the body's reader sees the close); bytes that arrive
/// meanwhile are a pipelined request's, kept in the read buffer.
async fn client_gone<S: AsyncRead + AsyncWrite + Unpin>(link: &RefCell<Link<S>>, seq: u64) {
    poll_fn(|c| {
        let mut l = link.borrow_mut();
        // The task is woken whenever the handler progresses: the body's end is seen then.
        if !l.body_ended(seq) {
            return Poll::Pending;
        }
        while l.read_buf.len() < head::MAX_HEAD {
            match l.poll_fill(c) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(()),
                Poll::Ready(Ok(_)) => {}
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Pending
    })
    .await
}

/// Reads and discards what the proxy left unread of request `seq`'s body, so the next
/// request's head is found after it; false when the connection cannot go on.
async fn discard_body<S: AsyncRead + AsyncWrite + Unpin>(
    link: &RefCell<Link<S>>,
    cx: &ConnCtx,
    seq: u64,
) -> bool {
    {
        let l = link.borrow();
        if l.body_ended(seq) {
            return true;
        }
        // The client waits for `100 Continue` before sending the body it was never asked for.
        if l.expect == Continue::Owed(0) || matches!(l.body, BodyState::Failed) {
            return false;
        }
    }
    cx.state.set_phase(Phase::Body);
    let ok = loop {
        match poll_fn(|c| link.borrow_mut().poll_body(seq, c)).await {
            None => break true,
            Some(Ok(_)) => {}
            Some(Err(_)) => break false,
        }
    };
    cx.state.set_phase(Phase::Idle);
    ok
}
