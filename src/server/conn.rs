//! Serving one client connection: HTTP/1.1 (keep-alive, pipelining; our own server, `h1`) or,
//! on listeners with
//! `enable_http2`, HTTP/2 with prior knowledge, told apart by the connection preface; on TLS
//! listeners, after the handshake, HTTP/2 when ALPN agreed on `h2`.

use std::net::SocketAddr;
use std::rc::Rc;

use hyper::server::conn::http2;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::watch;

use super::h1::Verdict;
use super::timed_io::{ConnState, TimedIo};
use super::tls;
use crate::proxy::{self, ConnCtx, WorkerCtx, body::ClientIn};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Spawns tasks on the worker's `LocalSet`, for hyper's HTTP/2 streams.
#[derive(Clone, Copy)]
struct LocalExec;

impl<F> hyper::rt::Executor<F> for LocalExec
where
    F: std::future::Future + 'static,
{
    fn execute(&self, fut: F) {
        tokio::task::spawn_local(fut);
    }
}

/// Serves `stream` until the client closes it, a timeout closes it, or shutdown drains it.
/// On TLS listeners the handshake comes first; a failed one closes the connection.
pub async fn serve(
    stream: TcpStream,
    remote: SocketAddr,
    spec: super::ListenSpec,
    worker: Rc<WorkerCtx>,
    shutdown: watch::Receiver<bool>,
    drain: Rc<super::drain::Drain>,
) {
    let _ = stream.set_nodelay(true);
    let local = stream.local_addr().unwrap_or(remote);
    let timeouts = worker.shared.settings.timeouts;
    if !spec.tls {
        let is_h2 = spec.http2 && sniff_h2(&stream, timeouts.first_byte).await;
        serve_http(
            stream, is_h2, None, remote, local, spec, worker, shutdown, drain,
        )
        .await;
        return;
    }
    // Plain HTTP on the TLS port gets nginx's answer instead of a silent close.
    if sent_plain_http(&stream, timeouts.first_byte).await {
        log::info!("client {remote} sent plain HTTP request to HTTPS port");
        let mut stream = stream;
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, PLAIN_HTTP_ON_TLS).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
        return;
    }
    // nginx bounds the handshake by `client_header_timeout`.
    let index = worker.shared.store.load().ssls.clone();
    let (tls, info) =
        match tokio::time::timeout(timeouts.header, tls::accept::handshake(stream, &index)).await {
            Ok(Ok(done)) => done,
            Ok(Err(tls::accept::HandshakeError::Io(e))) => {
                log::info!("SSL handshake with {remote} failed: {e}");
                return;
            }
            Ok(Err(e)) => {
                log::warn!("{e}, client: {remote}");
                return;
            }
            Err(_) => {
                log::info!("SSL handshake with {remote} timed out");
                return;
            }
        };
    let is_h2 = spec.http2 && info.alpn.as_deref() == Some(b"h2".as_slice());
    serve_http(
        tls,
        is_h2,
        Some(Rc::new(info)),
        remote,
        local,
        spec,
        worker,
        shutdown,
        drain,
    )
    .await;
}

#[allow(clippy::too_many_arguments)]
async fn serve_http<S>(
    stream: S,
    is_h2: bool,
    tls: Option<Rc<tls::TlsInfo>>,
    remote: SocketAddr,
    local: SocketAddr,
    spec: super::ListenSpec,
    worker: Rc<WorkerCtx>,
    mut shutdown: watch::Receiver<bool>,
    drain: Rc<super::drain::Drain>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let settings = &worker.shared.settings;
    let timeouts = settings.timeouts;
    let state = ConnState::new(!is_h2);
    let mut cx = ConnCtx::new(worker.clone(), state.clone(), remote, local);
    cx.serves = spec.serves;
    cx.tls = tls;
    let cx = Rc::new(cx);
    let io = TimedIo::new(stream, state, timeouts);
    if !is_h2 {
        super::h1::serve(io, cx, &drain).await;
        return;
    }
    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
        proxy::handle(req.map(ClientIn::H2), Verdict::Ok, cx.clone())
    });
    let conn = http2::Builder::new(LocalExec)
        .timer(TokioTimer::new())
        .max_concurrent_streams(128)
        .max_pending_accept_reset_streams(Some(64))
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = shutdown.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

/// nginx's answer to plain HTTP on a TLS port (its 497 case, sent as 400).
const PLAIN_HTTP_ON_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/html\r\nContent-Length: 220\r\nConnection: close\r\n\r\n<html>\r\n<head><title>400 The plain HTTP request was sent to HTTPS port</title></head>\r\n<body>\r\n<center><h1>400 Bad Request</h1></center>\r\n<center>The plain HTTP request was sent to HTTPS port</center>\r\n</body>\r\n</html>\r\n";

/// The first byte is an ASCII letter (a request method) rather than a TLS record type.
async fn sent_plain_http(stream: &TcpStream, deadline: std::time::Duration) -> bool {
    let mut b = [0u8; 1];
    match tokio::time::timeout(deadline, stream.peek(&mut b)).await {
        Ok(Ok(1)) => b[0].is_ascii_uppercase(),
        _ => false,
    }
}

/// Waits for the first bytes and tells whether they are the HTTP/2 preface. Peeking consumes
/// nothing, so HTTP/1 parsing starts from the first byte either way.
async fn sniff_h2(stream: &TcpStream, deadline: std::time::Duration) -> bool {
    let mut buf = [0u8; 24];
    let peek = async {
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n >= H2_PREFACE.len() => return buf == *H2_PREFACE,
                Ok(n) if !H2_PREFACE.starts_with(&buf[..n]) => return false,
                // A prefix of the preface: wait for more.
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(1)).await,
            }
        }
    };
    tokio::time::timeout(deadline, peek).await.unwrap_or(false)
}
