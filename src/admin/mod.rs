//! The Admin API: APISIX's `/apisix/admin/*` over a config [`Store`].
//!
//! `server` owns the listener (its own thread and runtime, never a worker's), `auth` who may
//! call, `resources` what each resource is and how a body is checked, `handlers` the methods,
//! `envelope` the JSON answers. The API writes only to the store; the data-plane sync
//! (`config::provider::store`) is what turns those writes into served config, the same way
//! for the embedded store and for etcd. This module never touches the request path.

pub mod auth;
pub mod envelope;
pub mod handlers;
pub mod index;
pub mod mirrored;
pub mod resources;
pub mod server;
pub mod start;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::config::store::Store;
use crate::plugin::registry::PluginRegistry;
use auth::Access;
use envelope::Answer;
use handlers::Handlers;

/// APISIX refuses request bodies above 1.5 MiB.
pub const MAX_BODY: usize = 1536 * 1024;

/// One Admin API request, whichever listener it came in on.
#[derive(Debug, Clone)]
pub struct AdminRequest {
    pub method: http::Method,
    /// The path, `/apisix/admin/...`.
    pub path: String,
    pub query: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    pub remote: IpAddr,
}

/// The Admin API of one node.
pub struct AdminApi {
    pub store: Arc<dyn Store>,
    /// The enabled plugins; `PUT /apisix/admin/plugins/reload` reloads them.
    pub plugins: Arc<PluginRegistry>,
    pub access: Access,
    /// The mirror of the store lists and delete checks read; `None` to read the store.
    pub index: Option<Arc<index::Index>>,
}

impl AdminApi {
    /// Answers one request.
    pub async fn handle(&self, req: AdminRequest) -> Answer {
        let remote = crate::router::ip::canonical(req.remote);
        if !self.access.address_allowed(remote) {
            log::warn!(
                "Admin API request from {remote} refused: not in deployment.admin.allow_admin"
            );
            return Answer::error(403, "403 Forbidden: client address is not in allow_admin");
        }
        let Some(rest) = req.path.strip_prefix("/apisix/admin") else {
            return Answer::error(404, "not found");
        };
        let rest = rest.trim_start_matches('/').trim_end_matches('/');
        if rest.is_empty() {
            return if req.method == http::Method::HEAD {
                Answer {
                    status: 200,
                    body: String::new(),
                }
            } else {
                Answer::error(404, "not found")
            };
        }
        if let Err((status, body)) = self.access.check(&req.method, &req.headers, &req.query) {
            return Answer { status, body };
        }
        if req.body.len() > MAX_BODY {
            return Answer::error(400, "invalid request body: request body is too large");
        }
        let body: Option<Value> = if req.body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice(&req.body) {
                Ok(v) => Some(v),
                Err(e) => {
                    return Answer::json(
                        400,
                        json!({
                            "error_msg": format!("invalid request body: {e}"),
                            "req_body": String::from_utf8_lossy(&req.body),
                        }),
                    );
                }
            }
        };
        if let Some(p) = rest.strip_prefix("plugins") {
            return self.plugins(&req.method, p.trim_start_matches('/'), &req.query);
        }
        if rest == "schema" || rest.starts_with("schema/") {
            return Answer::error(
                501,
                "the /apisix/admin/schema endpoints are not supported by moongate yet",
            );
        }
        if rest == "configs" || rest.starts_with("configs/") {
            return Answer::error(
                501,
                "the /apisix/admin/configs endpoints (API-driven standalone mode) are not supported by moongate",
            );
        }
        let target = match handlers::target(rest) {
            Ok(t) => t,
            Err(a) => return a,
        };
        if target.kind.name == "stream_routes" {
            return Answer::error(400, "stream mode is disabled, can not add stream routes");
        }
        let catalog = self.plugins.catalog();
        let h = Handlers {
            store: self.store.as_ref(),
            catalog: &catalog,
            index: self.index.as_deref(),
        };
        match req.method {
            http::Method::GET => h.get(&target, &req.query).await,
            http::Method::PUT => h.put(&target, body, &req.query).await,
            http::Method::POST => h.post(&target, body, &req.query).await,
            http::Method::PATCH => h.patch(&target, body, &req.query).await,
            http::Method::DELETE => h.delete(&target, &req.query).await,
            _ => Answer::error(404, "not found"),
        }
    }

    /// `plugins/list`, `plugins/reload`, `plugins/{name}`.
    fn plugins(&self, method: &http::Method, rest: &str, query: &str) -> Answer {
        match rest {
            "reload" => {
                if method != http::Method::PUT {
                    return Answer::error(
                        405,
                        format!(
                            "please use PUT method to reload the plugins, {method} method is not allowed."
                        ),
                    );
                }
                // As APISIX: the plugin files load again on every worker, and the answer
                // does not wait for the workers to switch.
                match self.plugins.reload() {
                    Ok(errors) => {
                        for e in errors {
                            log::error!("{e}");
                        }
                        Answer {
                            status: 200,
                            body: "done".into(),
                        }
                    }
                    Err(e) => Answer::error(503, format!("cannot reload the plugins: {e}")),
                }
            }
            "list" | "" => {
                let catalog = self.plugins.catalog();
                let mut names: Vec<&str> = catalog.names().collect();
                names.sort_unstable();
                Answer::json(200, json!(names))
            }
            name => match self.plugins.catalog().get(name) {
                None => Answer::error(404, format!("plugin not found: {name}")),
                Some(_) => {
                    let schema_type = match auth::query_arg(query, "schema_type").as_deref() {
                        Some("consumer") => Some(1),
                        Some("metadata") => Some(2),
                        _ => None,
                    };
                    match self.plugins.catalog().schema(name, schema_type) {
                        Ok(v) => Answer::json(200, v),
                        Err(e) => Answer::error(501, e),
                    }
                }
            },
        }
    }
}
