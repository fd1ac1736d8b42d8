//! The prometheus plugin's export server: `plugin_attr.prometheus.export_addr` (default
//! `127.0.0.1:9091`), a listener of its own as APISIX's nginx.conf declares it, whose every
//! request runs the exporter's `export_metrics()` (the metrics at `export_uri`, a 404
//! elsewhere). The handler runs as the control API's does (`control::serve_internal`): on the
//! worker that accepted the connection, no global rules, no access log.

use std::rc::Rc;
use std::sync::{Arc, LazyLock};

use hyper::body::Incoming;
use tokio::time::Instant;

use super::ConnCtx;
use super::body::Body;
use crate::config::resource::{Id, RouteAction};
use crate::config::snapshot::{RouteEntry, RouteUpstream};
use crate::lua::host::HandlerSource;

const HANDLER: &str = "return require(\"apisix.plugins.prometheus.exporter\").export_metrics()";

/// Its id holds characters APISIX's id schema refuses, so no configured route shares its
/// handler cache key.
static EXPORT_ROUTE: LazyLock<Arc<RouteEntry>> = LazyLock::new(|| {
    Arc::new(RouteEntry {
        id: Id("(prometheus export)".into()),
        name: None,
        service_id: None,
        upstream: RouteUpstream::NoUpstream,
        plugins: Default::default(),
        timeout: None,
        enable_websocket: false,
        chain: None,
        handlers: Some(Arc::new(HandlerSource {
            chunks: vec![("content_by_lua".into(), HANDLER.into())],
        })),
        missing_plugin_config: None,
        action: RouteAction::default(),
    })
});

/// Answers one request on the export listener.
pub(super) async fn serve(
    cx: Rc<ConnCtx>,
    parts: http::request::Parts,
    body: Incoming,
    path: String,
    host: String,
    start: Instant,
) -> http::Response<Body> {
    super::control::serve_internal(EXPORT_ROUTE.clone(), cx, parts, body, path, host, start).await
}
