//! The Admin API's own listener (`deployment.admin.admin_listen`), on a thread and runtime of
//! its own, and the channel through which the data-plane listener hands it requests when
//! `deployment.admin.serve_on_data_port` is on (how APISIX's test harness reaches it).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot};

use super::envelope::Answer;
use super::{AdminApi, AdminRequest, MAX_BODY};

/// Hands requests from other threads (a worker's) to the Admin API thread.
#[derive(Clone)]
pub struct AdminHandle {
    tx: mpsc::UnboundedSender<(AdminRequest, oneshot::Sender<Answer>)>,
}

impl AdminHandle {
    /// Answers `req` on the Admin API thread.
    pub async fn call(&self, req: AdminRequest) -> Answer {
        let (tx, rx) = oneshot::channel();
        if self.tx.send((req, tx)).is_err() {
            return Answer::error(503, "the Admin API has stopped");
        }
        rx.await
            .unwrap_or_else(|_| Answer::error(503, "the Admin API has stopped"))
    }
}

fn content_length(h: &http::HeaderMap) -> Option<u64> {
    h.get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
}

/// The headers of an Admin API answer: `Content-Type: application/json` and the ones the
/// answer adds (`X-API-VERSION`, CORS).
pub fn headers(resp: &mut http::HeaderMap, answer: &Answer) {
    resp.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    for (name, value) in &answer.headers {
        resp.insert(*name, HeaderValue::from_static(value));
    }
}

/// A running Admin API.
pub struct AdminServer {
    pub handle: AdminHandle,
    /// The bound address, `None` when only the data port serves the API.
    pub addr: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

async fn serve_one(
    api: Arc<AdminApi>,
    req: Request<Incoming>,
    remote: SocketAddr,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let answer = match Limited::new(body, MAX_BODY + 1).collect().await {
        Ok(b) => {
            api.handle(AdminRequest {
                method: parts.method,
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or("").to_string(),
                headers: parts.headers,
                body: b.to_bytes(),
                remote: remote.ip(),
            })
            .await
        }
        Err(_) => super::too_large(content_length(&parts.headers)),
    };
    let mut resp = Response::new(Full::new(Bytes::from(answer.body.clone())));
    *resp.status_mut() = http::StatusCode::from_u16(answer.status)
        .unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    headers(resp.headers_mut(), &answer);
    Ok(resp)
}

impl AdminServer {
    /// Binds `listen` (when given) and starts the Admin API thread.
    pub fn start(listen: Option<SocketAddr>, api: Arc<AdminApi>) -> std::io::Result<AdminServer> {
        let std_listener = match listen {
            Some(a) => {
                let l = std::net::TcpListener::bind(a).map_err(|e| {
                    std::io::Error::new(e.kind(), format!("Admin API: bind() to {a} failed ({e})"))
                })?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let addr = match &std_listener {
            Some(l) => Some(l.local_addr()?),
            None => None,
        };
        let (tx, mut rx) = mpsc::unbounded_channel::<(AdminRequest, oneshot::Sender<Answer>)>();
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("moongate-admin".into())
            .spawn(move || {
                rt.block_on(async move {
                    // The mirror follows the store for as long as this runtime runs.
                    if let Some(ix) = api.index.clone() {
                        tokio::spawn(ix.follow(api.store.clone()));
                    }
                    let listener = match std_listener.map(tokio::net::TcpListener::from_std) {
                        Some(Ok(l)) => Some(l),
                        Some(Err(e)) => {
                            log::error!("Admin API listener: {e}");
                            None
                        }
                        None => None,
                    };
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            Some((req, reply)) = rx.recv() => {
                                let api = api.clone();
                                tokio::spawn(async move {
                                    let _ = reply.send(api.handle(req).await);
                                });
                            }
                            accepted = async {
                                match &listener {
                                    Some(l) => l.accept().await,
                                    None => std::future::pending().await,
                                }
                            } => {
                                let Ok((stream, remote)) = accepted else { continue };
                                let api = api.clone();
                                tokio::spawn(async move {
                                    let service = hyper::service::service_fn(move |req| {
                                        serve_one(api.clone(), req, remote)
                                    });
                                    let _ = hyper::server::conn::http1::Builder::new()
                                        .serve_connection(TokioIo::new(stream), service)
                                        .await;
                                });
                            }
                        }
                    }
                });
            })?;
        Ok(AdminServer {
            handle: AdminHandle { tx },
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        self.halt();
    }
}
