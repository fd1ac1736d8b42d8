//! A small HTTP backend for demos, tests and benchmarks (`moongate echo`).
//!
//! Every path answers 200 with the request it received as JSON (`server`, `method`, `uri`,
//! `headers`, `body`) and an `X-Echo-Server` header, except: `/hello` answers `hello world\n`
//! (like APISIX's test upstream), `/status/NNN` answers with that status, and `/delay/MS`
//! waits MS milliseconds first.

use std::convert::Infallible;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;

/// Serves until the listener fails. Runs on the current thread (`spawn_local`).
pub async fn serve(listener: TcpListener, name: String) -> std::io::Result<()> {
    let name: Rc<str> = name.into();
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let name = name.clone();
                tokio::task::spawn_local(async move {
                    let svc = service_fn(move |req| answer(req, name.clone()));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        })
        .await
}

async fn answer(
    req: Request<Incoming>,
    name: Rc<str>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = req.uri().path().to_string();
    if let Some(ms) = path
        .strip_prefix("/delay/")
        .and_then(|m| m.parse::<u64>().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    let mut resp = if path == "/hello" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"hello world\n")));
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        r
    } else {
        let status = path
            .strip_prefix("/status/")
            .and_then(|s| s.parse::<u16>().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        let method = req.method().to_string();
        let uri = req.uri().to_string();
        let mut headers = Map::new();
        for (k, v) in req.headers() {
            let v = Value::String(String::from_utf8_lossy(v.as_bytes()).into_owned());
            match headers.get_mut(k.as_str()) {
                Some(Value::Array(a)) => a.push(v),
                Some(prev) => *prev = Value::Array(vec![prev.clone(), v]),
                None => {
                    headers.insert(k.as_str().to_string(), v);
                }
            }
        }
        let body = match req.into_body().collect().await {
            Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
            Err(_) => String::new(),
        };
        let doc = json!({"server": &*name, "method": method, "uri": uri, "headers": headers, "body": body});
        let mut r = Response::new(Full::new(Bytes::from(doc.to_string())));
        *r.status_mut() = status;
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        r
    };
    if let Ok(v) = HeaderValue::from_str(&name) {
        resp.headers_mut().insert("x-echo-server", v);
    }
    Ok(resp)
}
