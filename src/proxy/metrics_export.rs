//! The prometheus plugin's export server: `plugin_attr.prometheus.export_addr` (default
//! `127.0.0.1:9091`), a listener of its own as APISIX's nginx.conf declares it.
//!
//! With APISIX's Lua plugin loaded, every request runs the exporter's `export_metrics()` (the
//! metrics at `export_uri`, a 404 elsewhere), as the control API's handlers run
//! (`control::serve_internal`): on the worker that accepted the connection, no global rules,
//! no access log. With the native plugin (`plugin::native::prometheus`), `GET export_uri`
//! renders the `prometheus-metrics` namespace here, after setting the node-wide gauges the
//! exporter would (connections, requests, node info).

use std::rc::Rc;
use std::sync::{Arc, LazyLock};

use super::body::ClientIn;
use tokio::time::Instant;

use super::ConnCtx;
use super::body::Body;
use crate::config::snapshot::RouteEntry;

/// The version `node_info` reports: the APISIX release whose contract moongate follows, as
/// `core.version.VERSION` says (`lua/apisix/core/version.lua`).
const APISIX_VERSION: &str = "3.11.0";

const HANDLER: &str = "return require(\"apisix.plugins.prometheus.exporter\").export_metrics()";

/// Its id holds characters APISIX's id schema refuses, so no configured route shares its
/// handler cache key.
static EXPORT_ROUTE: LazyLock<Arc<RouteEntry>> =
    LazyLock::new(|| super::control::internal_route("(prometheus export)", HANDLER));

/// Answers one request on the export listener.
pub(super) async fn serve(
    cx: Rc<ConnCtx>,
    parts: http::request::Parts,
    body: ClientIn,
    path: String,
    host: String,
    start: Instant,
) -> http::Response<Body> {
    let lua_plugin = cx.worker.shared.lua.as_ref().is_some_and(|l| {
        l.registry
            .catalog()
            .get("prometheus")
            .is_some_and(|p| matches!(p.imp, crate::plugin::Impl::Lua))
    });
    if lua_plugin {
        return super::control::serve_internal(
            EXPORT_ROUTE.clone(),
            cx,
            parts,
            body,
            path,
            host,
            start,
        )
        .await;
    }
    let settings = &cx.worker.shared.settings;
    if parts.method != http::Method::GET || path != settings.prometheus_export_uri {
        return super::error_page::page(http::StatusCode::NOT_FOUND);
    }
    let text = native_text(&settings.prometheus_prefix);
    let mut resp = http::Response::new(Body::full(text));
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    resp
}

/// The node-wide gauges (as the exporter sets them at each refresh) and then every family of
/// the `prometheus-metrics` namespace, which the native plugin and the Lua library share.
fn native_text(prefix: &str) -> String {
    use crate::observability::metrics::{self, FamilyDef, Kind, conn};
    use crate::plugin::native::prometheus::NAMESPACE;
    // The capacity only matters to whoever makes the namespace first: the plugin did, with
    // the dictionary's size, when its first conf was prepared.
    let ns = metrics::global().namespace(NAMESPACE, 10 << 20);
    let gauge = |name: &str, help: &str, labels: &[&str]| {
        ns.register(FamilyDef {
            name: format!("{prefix}{name}"),
            help: help.to_string(),
            kind: Kind::Gauge,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            buckets: Vec::new(),
            exptime: None,
        })
    };
    let set =
        |family: Result<Arc<metrics::Family>, metrics::MetricError>, labels: &[&str], v: f64| {
            match family.and_then(|f| f.series(labels)) {
                Ok(s) => {
                    s.set(v);
                }
                Err(e) => log::error!("prometheus: {e}"),
            }
        };
    for (state, v) in conn::snapshot() {
        if state == "total" {
            set(
                gauge(
                    "http_requests_total",
                    "The total number of client requests since APISIX started",
                    &[],
                ),
                &[],
                v as f64,
            );
        } else {
            set(
                gauge(
                    "nginx_http_current_connections",
                    "Number of HTTP connections",
                    &["state"],
                ),
                &[state],
                v as f64,
            );
        }
    }
    let hostname = crate::plugin::ctx::hostname();
    set(
        gauge("node_info", "Info of APISIX node", &["hostname", "version"]),
        &[&hostname, APISIX_VERSION],
        1.0,
    );
    metrics::text::render(&ns)
}
