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
pub mod settle;
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
    /// `enable_admin_cors`.
    pub cors: bool,
    /// `admin_api_version: default`: APISIX 2's envelopes.
    pub v2: bool,
    /// When set, a write is answered once this node's data plane applied it.
    pub settle: Option<settle::Settle>,
}

impl AdminApi {
    /// Answers one request, with the headers APISIX puts on each kind of answer.
    pub async fn handle(&self, req: AdminRequest) -> Answer {
        let mut answer = self.answer(&req).await;
        // CORS on every answer that got past the address check (APISIX sets it before the
        // key is checked).
        if self.cors && answer.status != 403 {
            answer.headers.push(("access-control-allow-origin", "*"));
        }
        answer
    }

    async fn answer(&self, req: &AdminRequest) -> Answer {
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
                Answer::text(200, "")
            } else {
                Answer::error(404, "not found")
            };
        }
        if let Err((status, body)) = self.access.check(&req.method, &req.headers, &req.query) {
            return Answer::text(status, body);
        }
        if req.body.len() > MAX_BODY {
            return too_large(Some(req.body.len() as u64));
        }
        if rest == "configs/validate" {
            if req.method != http::Method::POST {
                return Answer::error(404, "not found");
            }
            let yaml = req
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|t| t.starts_with("application/yaml"));
            let catalog = self.plugins.catalog();
            let h = Handlers {
                store: self.store.as_ref(),
                catalog: &catalog,
                index: self.index.as_deref(),
            };
            return h.validate_configs(&req.body, yaml).await;
        }
        let body: Option<Value> = if req.body.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            match serde_json::from_slice(&req.body).or_else(|e| {
                // APISIX decodes with lua-cjson, which takes raw control characters (a
                // newline in a serverless function's code) inside strings as they are.
                match escape_raw_controls(&req.body) {
                    Some(fixed) => serde_json::from_slice(&fixed).map_err(|_| e),
                    None => Err(e),
                }
            }) {
                Ok(v) => Some(v),
                Err(e) => {
                    // APISIX logs the refused body too; tests grep for this line.
                    log::error!(
                        "invalid request body: {} err: {e}",
                        String::from_utf8_lossy(&req.body)
                    );
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
        if rest == "plugins" || rest.starts_with("plugins/") {
            let p = rest["plugins".len()..].trim_start_matches('/');
            return self.plugins(&req.method, p, &req.query);
        }
        if let Some(s) = rest.strip_prefix("schema/") {
            return self.schema(&req.method, s, &req.query, body.as_ref());
        }
        if rest == "configs" || rest.starts_with("configs/") {
            return Answer::error(
                501,
                "the /apisix/admin/configs endpoint (API-driven standalone mode) is not supported by moongate",
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
        let answer = match req.method {
            http::Method::GET => h.get(&target, &req.query).await,
            http::Method::PUT => h.put(&target, body, &req.query).await,
            http::Method::POST => h.post(&target, body, &req.query).await,
            http::Method::PATCH => h.patch(&target, body, &req.query).await,
            http::Method::DELETE => h.delete(&target, &req.query).await,
            _ => return Answer::error(404, "not found"),
        };
        // Read-your-writes: a write is answered once this node's data plane serves it.
        if req.method != http::Method::GET
            && answer.status < 300
            && let Some(s) = &self.settle
        {
            s.wait().await;
        }
        // Only resource answers say which envelope they use, as in APISIX.
        let mut answer = if self.v2 {
            let dir = format!("{}/{}", self.store.prefix(), target.kind.name);
            envelope::to_v2(&req.method, &dir, answer)
        } else {
            answer
        };
        answer
            .headers
            .push(("x-api-version", if self.v2 { "v2" } else { "v3" }));
        answer
    }

    /// `schema/{resource}`, `schema/plugins/{name}`, `schema/validate/{resource}`.
    fn schema(
        &self,
        method: &http::Method,
        rest: &str,
        query: &str,
        body: Option<&Value>,
    ) -> Answer {
        let catalog = self.plugins.catalog();
        if let Some(kind) = rest.strip_prefix("validate/") {
            if *method != http::Method::POST {
                return Answer::error(404, "not found");
            }
            if resources::find(kind).is_none() {
                return Answer::error(404, format!("Unsupported resource type: {kind}"));
            }
            let conf = body.cloned().unwrap_or(Value::Null);
            return match catalog.admin_call("validate", kind, &conf) {
                Ok(_) => Answer::text(200, ""),
                Err(e) => Answer::error(400, e),
            };
        }
        if *method != http::Method::GET {
            return Answer::error(404, "not found");
        }
        if let Some(name) = rest.strip_prefix("plugins/") {
            return self.plugins(method, name, query);
        }
        match catalog.admin_call("resource_schema", rest, &Value::Null) {
            Ok(text) => Answer::text(200, text + "\n"),
            Err(e) => Answer::error(400, e),
        }
    }

    /// `plugins/list`, `plugins/reload`, `plugins/{name}`, `plugins?all=true`.
    fn plugins(&self, method: &http::Method, rest: &str, query: &str) -> Answer {
        let subsystem = auth::query_arg(query, "subsystem").unwrap_or_else(|| "http".into());
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
                        Answer::text(200, "done")
                    }
                    Err(e) => Answer::error(503, format!("cannot reload the plugins: {e}")),
                }
            }
            "list" => {
                if subsystem != "http" && subsystem != "stream" {
                    return Answer::text(400, "invalid subsystem passed");
                }
                let catalog = self.plugins.catalog();
                // Highest priority first, as APISIX lists them.
                let mut names: Vec<(i64, &str)> = match subsystem.as_str() {
                    "http" => catalog
                        .names()
                        .map(|n| (catalog.get(n).map_or(0, |p| p.priority), n))
                        .collect(),
                    _ => Vec::new(),
                };
                names.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
                Answer::json(
                    200,
                    json!(names.into_iter().map(|(_, n)| n).collect::<Vec<_>>()),
                )
            }
            "" => {
                if subsystem != "http" && subsystem != "stream" {
                    return Answer::error(400, format!("unsupported subsystem: {subsystem}"));
                }
                if auth::query_arg(query, "all").as_deref() != Some("true") {
                    return Answer::error(404, "not found");
                }
                let catalog = self.plugins.catalog();
                let mut names: Vec<&str> = match subsystem.as_str() {
                    "http" => catalog.names().collect(),
                    _ => Vec::new(),
                };
                names.sort_unstable();
                let mut all =
                    match catalog.admin_call("plugins_info", &names.join("\n"), &Value::Null) {
                        Ok(text) => serde_json::from_str::<Value>(&text).unwrap_or(json!({})),
                        Err(e) => return Answer::error(503, e),
                    };
                // Native plugins have no Lua module: their name and priority still show.
                for n in names {
                    if let (Some(o), Some(p)) = (all.get_mut(n), catalog.get(n))
                        && let Some(o) = o.as_object_mut()
                    {
                        o.entry("priority").or_insert(json!(p.priority));
                    }
                }
                Answer::json(200, all)
            }
            name => {
                if subsystem != "http" && subsystem != "stream" {
                    return Answer::error(400, format!("unsupported subsystem: {subsystem}"));
                }
                let catalog = self.plugins.catalog();
                if subsystem != "http" || catalog.get(name).is_none() {
                    return Answer::error(
                        404,
                        format!("plugin not found in subsystem {subsystem}"),
                    );
                }
                let schema_type = match auth::query_arg(query, "schema_type").as_deref() {
                    Some("consumer") => Some(1),
                    Some("metadata") => Some(2),
                    _ => None,
                };
                match catalog.schema(name, schema_type) {
                    Ok(v) => Answer::json(200, v),
                    Err(e) => Answer::error(501, e),
                }
            }
        }
    }
}

/// `body` with the raw control bytes inside JSON strings written as `\u00XX` escapes, or
/// `None` when it has none.
fn escape_raw_controls(body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(body.len() + 16);
    let (mut in_string, mut escaped, mut changed) = (false, false, false);
    for &b in body {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            } else if b < 0x20 {
                out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
                changed = true;
                continue;
            }
        } else if b == b'"' {
            in_string = true;
        }
        out.push(b);
    }
    changed.then_some(out)
}

/// The answer to a body over [`MAX_BODY`], in APISIX's words (logged as APISIX logs it);
/// `size` is the declared `Content-Length`, when there was one.
pub fn too_large(size: Option<u64>) -> Answer {
    let why = match size {
        Some(n) => format!("request size {n} is greater than the maximum size {MAX_BODY} allowed"),
        None => format!("request body is greater than the maximum size {MAX_BODY} allowed"),
    };
    log::error!("failed to read request body: {why}");
    Answer::error(400, format!("invalid request body: {why}"))
}

#[cfg(test)]
mod body_tests {
    use super::escape_raw_controls;

    #[test]
    fn raw_controls_inside_strings_become_escapes() {
        let body = b"{\"f\": \"a\nb\tc\\\"\",\n \"g\": 1}";
        let fixed = escape_raw_controls(body).expect("changed");
        let v: serde_json::Value = serde_json::from_slice(&fixed).expect("valid JSON");
        assert_eq!(v["f"], "a\nb\tc\"");
        assert_eq!(v["g"], 1);
        assert_eq!(escape_raw_controls(b"{\"a\":\n1}"), None);
    }
}
