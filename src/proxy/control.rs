//! The control API: APISIX's `/v1/*` endpoints (`/v1/schema`, `/v1/routes`, `/v1/plugins/reload`
//! ...) and the routes plugins declare with `control_api()`, on the control listener
//! (`apisix.control`, default `127.0.0.1:9090`) and, with `apisix.control.serve_on_data_port`,
//! under `/v1/` on the data port.
//!
//! It is served the way a route with a `content_by_lua` handler is: the request goes through
//! the phase runner on the worker that accepted it, with a request context (`ngx.var`,
//! `ngx.req.*`, `core.request.*`, `core.response.exit` work in handlers), and the handler is
//! `moongate.control`'s `serve()`, which dispatches with `apisix.control.router` as APISIX's
//! `apisix.http_control()` does. No global rule runs on it.

use std::rc::Rc;
use std::sync::{Arc, LazyLock};

use super::body::ClientIn;
use http::header;
use tokio::time::Instant;

use super::ConnCtx;
use super::body::Body;
use super::phases;
use crate::config::resource::{Id, RouteAction};
use crate::config::snapshot::{RouteEntry, RouteUpstream};
use crate::lua::host::HandlerSource;

/// The Lua the control route runs as its content handler.
const HANDLER: &str = "return require(\"moongate.control\").serve()";

/// The route every control request takes. Its id holds characters APISIX's id schema refuses, so
/// no configured route shares its handler cache key.
static CONTROL_ROUTE: LazyLock<Arc<RouteEntry>> =
    LazyLock::new(|| internal_route("(control API)", HANDLER));

/// A route of the gateway's own (control API, metrics export) whose only work is `handler`, a
/// `content_by_lua` chunk: no upstream, no plugins.
pub(super) fn internal_route(id: &str, handler: &str) -> Arc<RouteEntry> {
    Arc::new(RouteEntry {
        id: Id(id.into()),
        name: None,
        service_id: None,
        upstream: RouteUpstream::NoUpstream,
        plugins: Default::default(),
        timeout: None,
        enable_websocket: false,
        chain: None,
        handlers: Some(Arc::new(HandlerSource {
            chunks: vec![("content_by_lua".into(), handler.into())],
        })),
        missing_plugin_config: None,
        action: RouteAction::default(),
    })
}

/// Answers one control API request (its path already normalized).
pub(super) async fn serve(
    cx: Rc<ConnCtx>,
    parts: http::request::Parts,
    body: ClientIn,
    path: String,
    host: String,
    start: Instant,
) -> http::Response<Body> {
    serve_internal(CONTROL_ROUTE.clone(), cx, parts, body, path, host, start).await
}

/// Runs `route` (an endpoint of the gateway's own, whose content handler answers) for one
/// request: no global rules, no route in `ctx`, no access log, the peer is the client.
pub(super) async fn serve_internal(
    route: Arc<RouteEntry>,
    cx: Rc<ConnCtx>,
    parts: http::request::Parts,
    body: ClientIn,
    path: String,
    host: String,
    start: Instant,
) -> http::Response<Body> {
    let declared: Option<u64> = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let snapshot = cx.worker.shared.store.load_full();
    // The control port trusts no proxy header: the peer is the client.
    let client = cx.remote;
    phases::serve(
        phases::Incoming {
            cx,
            snapshot,
            route,
            parts,
            body,
            path,
            host,
            declared,
            start,
            matched_uri: None,
            matched_host: None,
            uri_params: Vec::new(),
            client,
            internal: true,
            unrouted: false,
            arrival: None,
        },
        // As APISIX's control server: no access log.
        None,
    )
    .await
}
