//! The request path from a parsed client request to a response: strictness checks, routing over
//! the current snapshot, node choice, forwarding with retries, and the response back.
//!
//! Everything here runs on one worker thread: the per-worker state ([`WorkerCtx`]: connection
//! pool, balancer state, access-log buffer) is reached through `Rc`/`RefCell`, never a lock. The
//! config snapshot is taken once per request and kept to its end, so a reload never shows a
//! request half of a change.

pub mod body;
pub mod control;
pub mod error_page;
pub mod gzip;
pub mod h1;
pub mod headers;
mod metrics_export;
pub mod phases;
pub mod pool;
pub mod realip;
pub mod request;
pub mod route_action;
mod unrouted;
pub mod upstream_io;
pub mod upstream_tls;

use std::cell::{Cell, RefCell};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, Version, header};
use tokio::time::Instant;

use crate::config::resource::{PassHost, Timeout};
use crate::config::snapshot::{RouteEntry, RouteUpstream, Snapshot};
use crate::observability::access::{self, Format, UpstreamRecord};
use crate::server::h1::Verdict;
use crate::server::timed_io::{ClientTimeouts, ConnState};
use crate::upstream::dns::{self, Resolved};
use crate::upstream::{Picker, UpstreamDef};
use body::{Body, ClientBodyError, ClientIn, Finish};
use pool::{ConnectError, Pool, PoolKey};

/// nginx's defaults for `proxy_connect_timeout`, `proxy_send_timeout`, `proxy_read_timeout`.
const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);

/// Server-wide settings the request path needs, resolved from the node config.
#[derive(Debug, Clone)]
pub struct Settings {
    pub timeouts: ClientTimeouts,
    /// `client_max_body_size`; 0 = unlimited.
    pub client_max_body_size: u64,
    /// Longest request or header line (`large_client_header_buffers`).
    pub max_line: usize,
    /// Requests served on one client connection before it is closed.
    pub keepalive_requests: u64,
    /// Access log path and format; `None` = off.
    pub access_log: Option<(PathBuf, Format)>,
    /// Whose header names the client address (`real_ip_*`); `None` = nobody is trusted.
    pub real_ip: Option<realip::RealIp>,
    /// `apisix.trusted_addresses`: when set, the `X-Forwarded-For` of any other peer is
    /// dropped before plugins see the request.
    pub trusted_addresses: Option<crate::router::ip::IpSet>,
    /// `plugin_attr.prometheus.export_uri` and `metric_prefix`, for the native plugin's
    /// export (`proxy::metrics_export`).
    pub prometheus_export_uri: String,
    pub prometheus_prefix: String,
}

/// What every worker shares.
pub struct Shared {
    pub store: Arc<ArcSwap<Snapshot>>,
    /// `deployment.admin.serve_on_data_port`: `/apisix/admin/*` on this listener goes to the
    /// Admin API (on its own thread), as APISIX's test harness expects.
    pub admin: Option<crate::admin::server::AdminHandle>,
    /// `apisix.control.serve_on_data_port`: `/v1/*` on this listener is the control API.
    pub control_on_data_port: bool,
    pub settings: Settings,
    /// How workers make their Lua hosts; `None` runs no Lua at all.
    pub lua: Option<LuaSettings>,
}

/// What a worker needs to make its Lua host.
#[derive(Clone)]
pub struct LuaSettings {
    /// The enabled plugins (the Lua ones are loaded again on each worker) and the VM settings.
    pub registry: Arc<crate::plugin::registry::PluginRegistry>,
    pub phase_timeout: Duration,
}

impl LuaSettings {
    fn make_host(&self, worker: usize) -> mlua::Result<crate::lua::host::LuaHost> {
        let mut vm = self.registry.vm_options().clone();
        vm.worker_id = worker;
        let catalog = self.registry.catalog();
        let host = crate::lua::host::LuaHost::new(&vm, catalog.lua_names(), self.phase_timeout)?;
        // What apisix.plugin, the API router and the control API read of this VM's plugins.
        crate::lua::plugin_set::install(host.lua(), &catalog, &self.registry)?;
        Ok(host)
    }
}

/// One worker thread's proxy state.
pub struct WorkerCtx {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub pool: Pool,
    /// Balancer state per upstream, keyed by the address of its shared definition; the `Weak`
    /// tells a live entry from one whose upstream was replaced by a config change.
    pickers: RefCell<rustc_hash::FxHashMap<usize, (Weak<UpstreamDef>, Picker)>>,
    access: Option<RefCell<access::Writer>>,
    server_header: HeaderValue,
    /// The worker's Lua host and the plugin generation it was made for; made again after a
    /// plugin reload.
    lua: RefCell<Option<(u64, Rc<crate::lua::host::LuaHost>)>>,
    /// The host of the plugin load before the last reload, kept while the configuration being
    /// served is still built against that load (its rebuild with the reloaded plugins has not
    /// come in, or failed): its chains run there, on the plugins they were checked against.
    lua_prev: RefCell<Option<(u64, Rc<crate::lua::host::LuaHost>)>>,
    /// The warning about `lua_prev` was logged.
    lua_prev_noted: Cell<bool>,
}

impl WorkerCtx {
    pub fn new(id: usize, shared: Arc<Shared>) -> std::io::Result<WorkerCtx> {
        let access = match &shared.settings.access_log {
            Some((path, _)) => Some(RefCell::new(access::Writer::open(path).map_err(|e| {
                std::io::Error::other(format!("cannot open the access log: {e}"))
            })?)),
            None => None,
        };
        let lua = match &shared.lua {
            Some(l) => {
                let generation = l.registry.generation();
                match l.make_host(id) {
                    Ok(h) => Some((generation, Rc::new(h))),
                    Err(e) => {
                        return Err(std::io::Error::other(format!(
                            "cannot start the Lua VM: {e}"
                        )));
                    }
                }
            }
            None => None,
        };
        Ok(WorkerCtx {
            lua: RefCell::new(lua),
            lua_prev: RefCell::new(None),
            lua_prev_noted: Cell::new(false),
            id,
            shared,
            pool: Pool::default(),
            pickers: RefCell::new(Default::default()),
            access,
            server_header: HeaderValue::from_static(concat!(
                "moongate/",
                env!("CARGO_PKG_VERSION")
            )),
        })
    }

    /// The worker's Lua host, made again first when the plugins were reloaded since: the old
    /// plugins' `destroy()` runs, the new VM's plugins ran `init()` as they loaded. A new VM
    /// that fails to start is logged and the old one keeps serving.
    pub fn lua_host(&self) -> Option<Rc<crate::lua::host::LuaHost>> {
        let settings = self.shared.lua.as_ref()?;
        let mut cur = self.lua.borrow_mut();
        let generation = settings.registry.generation();
        if let Some((g, host)) = cur.as_ref()
            && *g != generation
        {
            log::info!("start to hot reload plugins");
            match settings.make_host(self.id) {
                Ok(new) => {
                    // The old plugins stay loaded until the configuration is rebuilt against
                    // the new ones (`settle_lua`).
                    let old = (*g, host.clone());
                    if let Some((_, older)) = self.lua_prev.borrow_mut().replace(old) {
                        older.destroy_plugins();
                    }
                    *cur = Some((generation, Rc::new(new)));
                }
                Err(e) => {
                    log::error!(
                        "plugin reload: cannot start the new Lua VM, keeping the old one: {e}"
                    );
                    let old = host.clone();
                    *cur = Some((generation, old));
                }
            }
        }
        cur.as_ref().map(|(_, h)| h.clone())
    }

    /// The host to run chains built against plugin load `generation` on: the current one, or
    /// the previous one while the served configuration still comes from before the reload.
    pub fn lua_host_for(&self, generation: Option<u64>) -> Option<Rc<crate::lua::host::LuaHost>> {
        let cur = self.lua_host()?;
        if let (Some(g), Some((pg, prev))) = (generation, self.lua_prev.borrow().as_ref())
            && g == *pg
        {
            return Some(prev.clone());
        }
        Some(cur)
    }

    /// Drops the previous plugin load's host (running its plugins' `destroy()`) once the
    /// served configuration is built against the current load; says once why it is kept
    /// otherwise.
    fn settle_lua(&self) {
        let Some(prev_gen) = self.lua_prev.borrow().as_ref().map(|(g, _)| *g) else {
            return;
        };
        let snapshot = self.shared.store.load();
        let served = snapshot
            .global_chains
            .iter()
            .chain(snapshot.routes.iter().filter_map(|r| r.chain.as_ref()))
            .map(|c| c.generation)
            .next();
        if served == Some(prev_gen) {
            if !self.lua_prev_noted.replace(true) {
                log::warn!(
                    "plugin reload: the configuration has not been rebuilt with the reloaded plugins yet (or it failed to): its routes keep running on the plugins they were checked against"
                );
            }
            return;
        }
        self.lua_prev_noted.set(false);
        if let Some((_, prev)) = self.lua_prev.borrow_mut().take() {
            prev.destroy_plugins();
        }
    }

    /// Periodic per-worker housekeeping: flush logs, expire idle upstream connections, forget
    /// balancer state of upstreams that no longer exist.
    pub fn tick(&self) {
        if let Some(w) = &self.access {
            w.borrow_mut().flush();
        }
        // After a plugin reload every worker switches to the new plugins now, not on its next
        // request: the old plugins' destroy() and the new ones' init() (timers they start) run
        // promptly, as APISIX's workers reload on the reload event.
        if self.shared.lua.is_some() {
            let _ = self.lua_host();
            self.settle_lua();
        }
        self.pool.sweep();
        self.pickers
            .borrow_mut()
            .retain(|_, (weak, _)| weak.strong_count() > 0);
    }

    fn with_picker<R>(&self, def: &Arc<UpstreamDef>, f: impl FnOnce(&mut Picker) -> R) -> R {
        let key = Arc::as_ptr(def) as usize;
        let mut pickers = self.pickers.borrow_mut();
        let entry = pickers
            .entry(key)
            .or_insert_with(|| (Arc::downgrade(def), Picker::new(def)));
        if !std::ptr::eq(entry.0.as_ptr(), Arc::as_ptr(def)) || entry.0.strong_count() == 0 {
            *entry = (Arc::downgrade(def), Picker::new(def));
        }
        f(&mut entry.1)
    }
}

/// One client connection, as its requests see it.
pub struct ConnCtx {
    pub worker: Rc<WorkerCtx>,
    pub state: Rc<ConnState>,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The client IP and local port as header values, made once per connection.
    pub remote_ip: HeaderValue,
    pub local_port: HeaderValue,
    /// The listener's purpose: the proxy, or the control API only.
    pub serves: crate::server::Serves,
    /// HTTP/1: resolves when the previous request's log phase is over. nginx runs the log
    /// phase before it reads the next request of a connection, and plugins count on it
    /// (limit-conn's `leaving` must come before the next pipelined request's `incoming`).
    pub log_barrier: std::cell::RefCell<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// The handshake, on TLS listeners (`$scheme` is `https`, `$ssl_*` come from it).
    pub tls: Option<Rc<crate::server::tls::TlsInfo>>,
}

impl ConnCtx {
    /// `$scheme`: `https` on TLS listeners.
    pub fn scheme(&self) -> &'static str {
        if self.tls.is_some() { "https" } else { "http" }
    }

    pub fn new(
        worker: Rc<WorkerCtx>,
        state: Rc<ConnState>,
        remote: SocketAddr,
        local: SocketAddr,
    ) -> ConnCtx {
        let remote_ip =
            HeaderValue::from_str(&crate::router::ip::canonical(remote.ip()).to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("-"));
        ConnCtx {
            worker,
            state,
            remote,
            local,
            remote_ip,
            local_port: HeaderValue::from(local.port()),
            serves: crate::server::Serves::Proxy,
            log_barrier: Default::default(),
            tls: None,
        }
    }
}

/// What the access log needs about one request, captured before the request is forwarded.
struct LogData {
    /// The client address (`$remote_addr`): the connection's, or what realip or a plugin's
    /// `set_real_ip` made it.
    remote: SocketAddr,
    start: Instant,
    method: String,
    request_uri: String,
    uri: String,
    protocol: &'static str,
    host: String,
    headers: Vec<Option<String>>,
    request_length: u64,
    status: u16,
    route_id: Option<String>,
    upstream: Option<UpstreamRecord>,
}

/// Runs when the response body is done: balancer feedback, pool return, access log, accounting,
/// then the `tail` (the plugins' log phase).
struct Done {
    cx: Rc<ConnCtx>,
    log: Option<Box<LogData>>,
    upstream: Option<UpstreamDone>,
    tail: Option<Tail>,
}

/// Work that runs once the response is sent: `tail(body bytes sent, done)`; dropping `done`
/// when the work is over lets the connection's next request start (see `ConnCtx::log_barrier`).
pub(crate) type Tail = Box<dyn FnOnce(u64, LogDone)>;

/// Held by a request's log phase until it ends.
pub(crate) type LogDone = Option<tokio::sync::oneshot::Sender<()>>;

struct UpstreamDone {
    def: Arc<UpstreamDef>,
    node: usize,
    key: PoolKey,
    started: Instant,
    /// Where the response body leaves its connection when it was read to the end and may be
    /// reused.
    conn: h1::ConnSlot,
}

impl Finish for Done {
    fn finish(self: Box<Self>, bytes: u64, complete: bool) {
        let Done {
            cx,
            log,
            upstream,
            tail,
        } = *self;
        let worker = &cx.worker;
        if let Some(u) = upstream {
            // Only the balancers that count requests in flight or time them were told of the
            // start (`Forward::run`); the others need no clock read and no map lookup here.
            if u.def.needs_feedback() {
                worker.with_picker(&u.def, |p| {
                    p.on_finish(u.node, u.started.elapsed(), !complete)
                });
            }
            if complete && let Some(conn) = u.conn.take() {
                worker.pool.checkin(u.key, conn, &u.def.keepalive_pool);
            }
        }
        if let (Some(log), Some(writer), Some((_, format))) = (
            log,
            worker.access.as_ref(),
            worker.shared.settings.access_log.as_ref(),
        ) {
            let (uri, args) = log.uri.split_once('?').unwrap_or((&log.uri, ""));
            let record = access::Record {
                remote: log.remote,
                server_port: cx.local.port(),
                method: &log.method,
                request_uri: &log.request_uri,
                uri,
                args,
                protocol: log.protocol,
                host: &log.host,
                status: log.status,
                body_bytes_sent: bytes,
                bytes_sent: bytes,
                request_length: log.request_length,
                start: log.start.into_std(),
                upstream: log.upstream.as_ref(),
                route_id: log.route_id.as_deref(),
                headers: &log.headers,
            };
            let mut w = writer.borrow_mut();
            format.write_line(&record, w.buffer());
            w.maybe_flush();
        }
        cx.state.end();
        if let Some(t) = tail {
            // Only HTTP/1 serves a connection's requests one after another.
            let done = if cx.state.is_h1() {
                let (tx, rx) = tokio::sync::oneshot::channel();
                *cx.log_barrier.borrow_mut() = Some(rx);
                Some(tx)
            } else {
                None
            };
            t(bytes, done);
        }
    }
}

/// Hands an `/apisix/admin/*` request on the data port to the Admin API.
async fn admin_on_data_port(
    admin: &crate::admin::server::AdminHandle,
    parts: http::request::Parts,
    body: ClientIn,
    path: &str,
    remote: SocketAddr,
) -> Response<Body> {
    use http_body_util::BodyExt;
    let limited = http_body_util::Limited::new(body, crate::admin::MAX_BODY + 1);
    let answer = match limited.collect().await {
        Ok(b) => {
            admin
                .call(crate::admin::AdminRequest {
                    method: parts.method,
                    path: path.to_string(),
                    query: parts.uri.query().unwrap_or("").to_string(),
                    headers: parts.headers,
                    body: b.to_bytes(),
                    remote: remote.ip(),
                })
                .await
        }
        Err(_) => crate::admin::too_large(
            parts
                .headers
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        ),
    };
    let mut resp = Response::new(Body::full(answer.body.clone()));
    *resp.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    crate::admin::server::headers(resp.headers_mut(), &answer);
    resp
}

fn protocol_name(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The answer to a request head no request could be made of (malformed, too large): nginx's
/// error page, and the connection closes. It is logged as nginx logs it.
pub fn refuse_head(cx: &ConnCtx, status: StatusCode, reason: &str) -> Response<Body> {
    log::info!(
        "{reason} while reading client request headers, client: {}",
        cx.remote.ip()
    );
    let mut resp = error_page::page(status);
    resp.headers_mut()
        .insert(header::SERVER, cx.worker.server_header.clone());
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

/// Handles one request. Never fails: every problem becomes the response nginx/APISIX would give.
/// `verdict`: what the HTTP/1 parser found wrong with the head (HTTP/2: `Ok`).
pub async fn handle(
    req: Request<ClientIn>,
    verdict: Verdict,
    cx: Rc<ConnCtx>,
) -> Result<Response<Body>, Infallible> {
    // The previous request's log phase first (it is bounded by the Lua phase timeout; the
    // channel also resolves if that work is dropped).
    let previous = cx.log_barrier.borrow_mut().take();
    if let Some(rx) = previous {
        let _ = rx.await;
    }
    cx.state.begin();
    let start = Instant::now();
    let settings = &cx.worker.shared.settings;
    let (mut parts, body) = req.into_parts();
    // nginx's realip runs before anything else looks at the client.
    let client = match &settings.real_ip {
        Some(r) => r.client(cx.remote, &parts.headers),
        None => cx.remote,
    };
    // With a trust boundary, a peer outside it cannot forge the chain of addresses (APISIX's
    // access phase drops its X-Forwarded-For; the upstream gets only the peer's address).
    if let Some(trusted) = &settings.trusted_addresses
        && !trusted.contains(cx.remote.ip())
    {
        parts.headers.remove("x-forwarded-for");
    }

    let mut log = settings.access_log.as_ref().map(|(_, format)| {
        let request_uri = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| parts.uri.to_string());
        Box::new(LogData {
            remote: client,
            start,
            method: parts.method.as_str().to_string(),
            uri: request_uri.clone(),
            request_uri,
            protocol: protocol_name(parts.version),
            host: String::new(),
            headers: format.capture(&parts.headers),
            request_length: 0,
            status: 0,
            route_id: None,
            upstream: None,
        })
    });

    if let Err((status, reason)) = request::check(
        &parts.method,
        parts.version,
        &parts.headers,
        verdict,
        settings.max_line,
    ) {
        log::info!(
            "{reason} while reading client request headers, client: {}",
            client.ip()
        );
        let mut resp = error_page::page(status);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(finish(resp, &cx, log, None, None));
    }

    let raw_path = parts.uri.path();
    let Some(path) = request::normalize_path(raw_path) else {
        return Ok(finish(
            error_page::page(StatusCode::BAD_REQUEST),
            &cx,
            log,
            None,
            None,
        ));
    };
    // An `ssls` item with `client.skip_mtls_uri_regex` let a client without a certificate
    // through the handshake: only the URIs it lists may be served to it.
    if let Some(tls) = &cx.tls
        && let Some(entry) = &tls.entry
        && entry.wants_client_cert()
        && tls.client.is_none()
        && !entry.skips_mtls(&path)
    {
        log::error!(
            "client certificate verification is not passed: NONE, client: {}",
            client.ip()
        );
        return Ok(finish(
            error_page::page(StatusCode::BAD_REQUEST),
            &cx,
            log,
            None,
            None,
        ));
    }
    let host = request::host_of(&parts.uri, &parts.headers);
    let query = parts.uri.query().unwrap_or("");
    let request_uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    if let Some(l) = log.as_mut() {
        l.host = host.to_string();
        l.uri = if query.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{query}")
        };
    }

    // The listeners' own servers (metrics, control, admin) are boxed: their futures are larger
    // than the proxy path's, and an inline one would size (and copy) every request's future.
    if cx.serves == crate::server::Serves::PrometheusExport {
        let path = path.into_owned();
        let host = host.into_owned();
        return Ok(Box::pin(metrics_export::serve(
            cx.clone(),
            parts,
            body,
            path,
            host,
            start,
        ))
        .await);
    }
    if cx.serves == crate::server::Serves::Control
        || (cx.worker.shared.control_on_data_port && path.starts_with("/v1/"))
    {
        let path = path.into_owned();
        let host = host.into_owned();
        return Ok(Box::pin(control::serve(cx.clone(), parts, body, path, host, start)).await);
    }

    if let Some(admin) = &cx.worker.shared.admin
        && (path == "/apisix/admin" || path.starts_with("/apisix/admin/"))
    {
        let path = path.into_owned();
        let resp = Box::pin(admin_on_data_port(admin, parts, body, &path, cx.remote)).await;
        return Ok(finish(resp, &cx, log, None, None));
    }

    let snapshot = cx.worker.shared.store.load_full();
    let view = request::View {
        method: parts.method.as_str(),
        host: &host,
        path: &path,
        query,
        request_uri,
        remote: client,
        server_port: cx.local.port(),
        headers: &parts.headers,
        tls: cx.tls.as_deref(),
    };
    // A request no route matched still runs the global rules, as in APISIX (their plugins may
    // answer, and their log phase sees the 404); without global rules it is answered here.
    let (matched, unrouted) = match snapshot.router.find(&view) {
        Some(m) => (m, false),
        None if !snapshot.global_chains.is_empty() => (
            crate::router::RouteMatch {
                index: usize::MAX,
                params: Vec::new(),
                uri: None,
                host: crate::router::MatchedHost::Any,
            },
            true,
        ),
        None => return Ok(finish(error_page::route_not_found(), &cx, log, None, None)),
    };
    let found = if unrouted {
        Some(unrouted::ROUTE.clone())
    } else {
        snapshot.routes.get(matched.index).cloned()
    };
    let Some(route) = found else {
        log::error!(
            "router returned route index {} outside the route table",
            matched.index
        );
        return Ok(finish(
            error_page::page(StatusCode::INTERNAL_SERVER_ERROR),
            &cx,
            log,
            None,
            None,
        ));
    };
    if let Some(l) = log.as_mut()
        && !unrouted
    {
        l.route_id = Some(route.id.0.clone());
    }
    // The client's declared body size is refused before anything reaches the upstream.
    let limit = settings.client_max_body_size;
    let declared: Option<u64> = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    if limit > 0 && declared.is_some_and(|n| n > limit) {
        log::error!(
            "client intended to send too large body: {} bytes, client: {}, request: \"{} {}\"",
            declared.unwrap_or(0),
            client.ip(),
            parts.method,
            request_uri
        );
        let mut resp = error_page::page(StatusCode::PAYLOAD_TOO_LARGE);
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return Ok(finish(resp, &cx, log, None, None));
    }
    if let Some(l) = log.as_mut() {
        l.request_length =
            declared.unwrap_or(0) + request::head_length(&parts.method, &parts.uri, &parts.headers);
    }

    let apisix_route = route.handlers.is_none();
    if route.has_phases() || !snapshot.global_chains.is_empty() {
        let path = path.into_owned();
        let host = host.into_owned();
        let arrival = if apisix_route {
            forwarding_on_arrival(&mut parts.headers, &parts.uri, &cx)
        } else {
            None
        };
        let matched_uri = matched.uri.clone();
        let matched_host = matched.host.pattern(&host);
        return Ok(phases::serve(
            phases::Incoming {
                cx: cx.clone(),
                matched_uri,
                matched_host,
                uri_params: matched.params,
                snapshot,
                route,
                parts,
                body,
                path,
                host,
                declared,
                start,
                client,
                internal: false,
                unrouted,
                arrival,
            },
            log,
        )
        .await);
    }
    let def = match upstream_of(&route) {
        Ok(def) => def,
        Err(status) => return Ok(finish(error_page::page(status), &cx, log, None, None)),
    };
    let hash_key = match def.kind {
        crate::config::resource::BalancerType::Chash => def.hash_key(&view, None),
        _ => None,
    };

    let upstream_uri: Uri = match parts.uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    };
    let body_error = Rc::new(Cell::new(None));
    let body_limit = Rc::new(Cell::new(limit));
    let chunked = parts.headers.contains_key(header::TRANSFER_ENCODING);
    let has_body = !(declared == Some(0) || (declared.is_none() && !chunked));
    let client_body = has_body.then(|| {
        Body::client(
            body,
            body_limit.clone(),
            chunked,
            settings.timeouts.body,
            body_error.clone(),
        )
    });

    let mut up_headers = parts.headers;
    let apart = if apisix_route {
        forwarding_apart(&mut up_headers, &parts.uri, &cx, client)
    } else {
        None
    };
    let (client_host, forwarding) = match apart {
        Some((f, host)) => (host, Some(f)),
        None => {
            if apisix_route {
                neutralize_on_arrival(&mut up_headers, &parts.uri, &cx);
            }
            upstream_headers(&mut up_headers, &parts.uri, &cx, client)
        }
    };

    let mut fwd = Forward {
        cx: &cx,
        route: &route,
        def,
        method: parts.method,
        uri: upstream_uri,
        headers: up_headers,
        forwarding,
        client_host,
        body: client_body,
        body_error,
        hash_key,
        start,
        host_override: None,
        req: None,
        on_pick: None,
        first: None,
    };
    Ok(match fwd.run(&mut log).await {
        Ok((resp, up)) => finish(resp, &cx, log, Some(up), None),
        Err((resp, up)) => finish(resp, &cx, log, up, None),
    })
}

/// The upstream a route sends to, or the status APISIX answers when it has none (logged).
fn upstream_of(route: &RouteEntry) -> Result<Arc<UpstreamDef>, StatusCode> {
    let status = match &route.upstream {
        RouteUpstream::Ready(def) => return Ok(def.clone()),
        RouteUpstream::MissingService(id) => {
            log::error!(
                "failed to fetch service configuration by id: {id}, route: {}",
                route.id
            );
            StatusCode::NOT_FOUND
        }
        RouteUpstream::MissingUpstream(id) => {
            log::error!("failed to find upstream by id: {id}, route: {}", route.id);
            StatusCode::BAD_GATEWAY
        }
        RouteUpstream::NoUpstream => {
            log::error!(
                "missing upstream configuration in route {} or its service",
                route.id
            );
            StatusCode::BAD_GATEWAY
        }
    };
    Err(status)
}

/// Turns the client's headers into the upstream's: hop-by-hop headers out, APISIX's
/// `X-Forwarded-For`/`X-Real-IP` in (`X-Forwarded-Proto`/`-Host`/`-Port` were set on arrival).
/// Returns the client's `Host` (HTTP/2: its `:authority`), and the forwarding fields to write
/// after the request's own when the request carries no `X-Forwarded-For`/`X-Real-IP` to
/// combine with (inserting these two names into the map hashes them byte by byte; nothing
/// reads them there any more).
fn upstream_headers(
    headers: &mut http::HeaderMap,
    uri: &Uri,
    cx: &ConnCtx,
    client: SocketAddr,
) -> (Option<HeaderValue>, Option<headers::Forwarding>) {
    let (client_host, client_ip) = leave_client_hop(headers, uri, cx, client);
    if headers::has_client_forwarding(headers) {
        headers::set_forwarding(headers, &client_ip);
        return (client_host, None);
    }
    let apart = headers::Forwarding {
        observed: None,
        client_ip,
    };
    (client_host, Some(apart))
}

/// The plugin-less path's shortcut for [`neutralize_on_arrival`] then [`upstream_headers`]
/// when the client sent no forwarding field and its peer is not trusted (nothing of the
/// client's to keep or replace): the forwarding fields are computed apart, to be written after
/// the request's own (`headers::Forwarding`), and only hop-by-hop fields and `Expect` leave the
/// map. `None` when the shortcut does not apply (the map is untouched then). Returns the
/// fields and the client's `Host`.
fn forwarding_apart(
    headers: &mut http::HeaderMap,
    uri: &Uri,
    cx: &ConnCtx,
    client: SocketAddr,
) -> Option<(headers::Forwarding, Option<HeaderValue>)> {
    let observed = observed_if_only_added(headers, uri, cx)?;
    let (client_host, client_ip) = leave_client_hop(headers, uri, cx, client);
    let f = headers::Forwarding {
        observed: Some(observed),
        client_ip,
    };
    Some((f, client_host))
}

/// `X-Forwarded-Proto`/`-Host`/`-Port` as this hop sets them, when setting them only adds them:
/// the client sent no forwarding field and its peer is not trusted (nothing of the client's to
/// keep or replace). `None` otherwise.
fn observed_if_only_added(
    headers: &http::HeaderMap,
    uri: &Uri,
    cx: &ConnCtx,
) -> Option<headers::Observed> {
    if peer_trusted(cx) || headers::any_forwarding(headers) {
        return None;
    }
    let (host, port) = observed_forwarding(headers, uri, cx);
    Some(headers::Observed {
        proto: HeaderValue::from_static(cx.scheme()),
        host,
        port,
    })
}

/// What both ways of building the upstream's headers do first: the client's `Host`, read
/// before the hop-by-hop fields and `Expect` leave the map, and the client's address as a
/// header value.
fn leave_client_hop(
    headers: &mut http::HeaderMap,
    uri: &Uri,
    cx: &ConnCtx,
    client: SocketAddr,
) -> (Option<HeaderValue>, HeaderValue) {
    let client_host = client_host(headers, uri);
    headers::strip_hop_by_hop(headers);
    // `100-continue` is answered to the client by this hop (`server::h1` does it when the
    // body is first read, hyper on HTTP/2); the upstream gets the body without being asked,
    // as nginx sends it.
    // Looked for before removing: a removal hashes the name, a look at the names does not.
    if headers.keys().any(|k| k == header::EXPECT) {
        headers.remove(header::EXPECT);
    }
    let client_ip = if client == cx.remote {
        cx.remote_ip.clone()
    } else {
        HeaderValue::from_str(&crate::router::ip::canonical(client.ip()).to_string())
            .unwrap_or_else(|_| cx.remote_ip.clone())
    };
    (client_host, client_ip)
}

/// The `Host` header, or on HTTP/2 (which carries it as `:authority`) the URI's authority.
fn client_host(headers: &http::HeaderMap, uri: &Uri) -> Option<HeaderValue> {
    headers.get(header::HOST).cloned().or_else(|| {
        uri.authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    })
}

/// The connection's peer is inside `apisix.trusted_addresses`: its forwarding fields stay.
fn peer_trusted(cx: &ConnCtx) -> bool {
    cx.worker
        .shared
        .settings
        .trusted_addresses
        .as_ref()
        .is_some_and(|t| t.contains(cx.remote.ip()))
}

/// APISIX's forwarding fields on arrival, set as [`neutralize_on_arrival`] sets them, or, when
/// the client sent no forwarding field and its peer is not trusted (so they are only added),
/// returned to be held apart from the headers (`RequestCtx::hold_arrival_forwarding`).
fn forwarding_on_arrival(
    headers: &mut http::HeaderMap,
    uri: &Uri,
    cx: &ConnCtx,
) -> Option<headers::Observed> {
    let observed = observed_if_only_added(headers, uri, cx);
    if observed.is_none() {
        neutralize_on_arrival(headers, uri, cx);
    }
    observed
}

/// APISIX's sanitising of `X-Forwarded-Proto`/`-Host`/`-Port` and `Forwarded` on arrival
/// ([`headers::neutralize_forwarded`]). It belongs to APISIX's `location /`: a `lua_handlers`
/// route (an nginx location of its own, in a test harness) sees the client's headers as sent.
fn neutralize_on_arrival(headers: &mut http::HeaderMap, uri: &Uri, cx: &ConnCtx) {
    // Room for the three set here and the two `upstream_headers` may add, in one allocation
    // instead of a map that grows (and rehashes) on the way.
    headers.reserve(5);
    let (fwd_host, fwd_port) = observed_forwarding(headers, uri, cx);
    headers::neutralize_forwarded(headers, cx.scheme(), fwd_host, fwd_port, peer_trusted(cx));
}

/// `$var_x_forwarded_host`/`_port` of APISIX's template: the Host header (HTTP/2: the
/// `:authority`, with its port), else `$host`; the Host header's port, else the port the
/// client connected to.
fn observed_forwarding(
    headers: &http::HeaderMap,
    uri: &Uri,
    cx: &ConnCtx,
) -> (Option<HeaderValue>, HeaderValue) {
    let client_host = client_host(headers, uri);
    let fwd_port = match client_host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .and_then(request::port_of_host)
    {
        Some(p) if p.parse() == Ok(cx.local.port()) => cx.local_port.clone(),
        Some(p) => HeaderValue::from_str(p).unwrap_or_else(|_| cx.local_port.clone()),
        None => cx.local_port.clone(),
    };
    // `$host` matters only without a Host header (owning it costs an allocation).
    let fwd_host =
        client_host.or_else(|| HeaderValue::from_str(&request::host_of(uri, headers)).ok());
    (fwd_host, fwd_port)
}

/// Attaches the completion hook to a response the gateway made itself (or an upstream response
/// already wrapped).
fn finish(
    resp: Response<Body>,
    cx: &Rc<ConnCtx>,
    mut log: Option<Box<LogData>>,
    upstream: Option<UpstreamDone>,
    tail: Option<Tail>,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    parts
        .headers
        .insert(header::SERVER, cx.worker.server_header.clone());
    if cx.state.requests.get() >= cx.worker.shared.settings.keepalive_requests {
        parts
            .headers
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    if let Some(l) = log.as_mut() {
        l.status = parts.status.as_u16();
    }
    let done = Box::new(Done {
        cx: cx.clone(),
        log,
        upstream,
        tail,
    });
    Response::from_parts(parts, body.on_finish(done))
}

/// How the balancer phase of plugins (`phases`) left an upstream try: where it goes instead of
/// the picked node, the retries allowed from here, and this try's timeouts in seconds
/// (connect, send, read).
#[derive(Debug, Default, Clone)]
pub(super) struct PickChoice {
    pub peer: Option<SocketAddr>,
    pub more_tries: Option<u32>,
    pub timeouts: [Option<f64>; 3],
}

/// A boxed future of the balancer phase's outcome: the try's choice, or the response the
/// plugins ended the request with.
pub(super) type PickFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<PickChoice, Response<Body>>> + 'a>>;

/// Runs each time the proxy picks a node for a try (the balancer phase of plugins).
pub(super) trait OnPick {
    /// `node` was picked for try `try_no` (1-based); `last_failure` is how the previous try
    /// ended, as `ngx.balancer.get_last_failure` reports it.
    fn picked<'a>(
        &'a self,
        node: &'a crate::upstream::NodeDef,
        try_no: u32,
        last_failure: Option<(&'static str, u16)>,
    ) -> PickFuture<'a>;
}

/// One request on its way upstream, with everything needed to retry it.
struct Forward<'a> {
    cx: &'a Rc<ConnCtx>,
    route: &'a Arc<RouteEntry>,
    def: Arc<UpstreamDef>,
    method: Method,
    uri: Uri,
    headers: http::HeaderMap,
    /// Forwarding fields written after `headers` (plugin-less requests; see
    /// `headers::Forwarding`).
    forwarding: Option<headers::Forwarding>,
    client_host: Option<HeaderValue>,
    body: Option<Body>,
    body_error: Rc<Cell<Option<ClientBodyError>>>,
    hash_key: Option<String>,
    start: Instant,
    /// `$upstream_host` set by a plugin: the upstream's `Host`, whatever `pass_host` says.
    host_override: Option<HeaderValue>,
    /// The plugin context, told the upstream's address, status and timings.
    req: Option<crate::lua::request::SharedReq>,
    /// The balancer phase, run for every try after the first.
    on_pick: Option<&'a dyn OnPick>,
    /// The first try's node, picked (and passed through the balancer phase) before
    /// before_proxy ran.
    first: Option<(usize, PickChoice)>,
}

/// A response the gateway made after the upstream failed, and the upstream part for the log.
type Failed = (Response<Body>, Option<UpstreamDone>);

impl Forward<'_> {
    fn timeouts(&self) -> Timeout {
        let secs = DEFAULT_UPSTREAM_TIMEOUT.as_secs_f64();
        self.route.timeout.or(self.def.timeout).unwrap_or(Timeout {
            connect: secs,
            send: secs,
            read: secs,
        })
    }

    /// The `Host` header for the upstream, per `pass_host`.
    fn upstream_host(&self, node: &crate::upstream::NodeDef) -> Option<HeaderValue> {
        if let Some(h) = &self.host_override {
            return Some(h.clone());
        }
        match self.def.pass_host {
            PassHost::Pass => self.client_host.clone(),
            PassHost::Node => Some(node.host_header.clone()),
            PassHost::Rewrite => self.def.upstream_host_header.clone(),
        }
    }

    fn describe(&self, addr: SocketAddr) -> String {
        self.context(addr).to_string()
    }

    /// What error lines about this try name (`describe`), kept by the response body too.
    fn context(&self, addr: SocketAddr) -> h1::UpstreamContext {
        h1::UpstreamContext {
            client: self.cx.remote.ip(),
            server: self.cx.local,
            method: self.method.clone(),
            uri: self.uri.clone(),
            scheme: if self.def.tls.is_some() {
                "https"
            } else {
                "http"
            },
            addr,
            host: self.client_host.clone(),
        }
    }

    /// Tries nodes until one answers or the retry budget is spent.
    async fn run(
        &mut self,
        log: &mut Option<Box<LogData>>,
    ) -> Result<(Response<Body>, UpstreamDone), Failed> {
        let t = self.timeouts();
        let connect_timeout = secs(t.connect);
        let send_timeout = secs(t.send);
        let read_timeout = secs(t.read);
        let worker = self.cx.worker.clone();
        let mut tried: Vec<usize> = Vec::new();
        let mut tries_left = self.def.retries;
        let retry_deadline = self.def.retry_timeout.map(|d| self.start + d);
        let mut last_status = StatusCode::BAD_GATEWAY;

        let mut try_no = 0u32;
        let mut last_failure: Option<(&'static str, u16)> = None;
        loop {
            try_no += 1;
            let (idx, choice) = match self.first.take() {
                Some(first) => first,
                None => {
                    let mut picked = worker.with_picker(&self.def, |p| {
                        p.pick(&self.def, self.hash_key.as_deref(), &tried)
                    });
                    if picked.is_none() && self.on_pick.is_some() && !tried.is_empty() {
                        // Tries the balancer phase allowed beyond the nodes: start over.
                        tried.clear();
                        picked = worker.with_picker(&self.def, |p| {
                            p.pick(&self.def, self.hash_key.as_deref(), &tried)
                        });
                    }
                    let Some(idx) = picked else {
                        if tried.is_empty() {
                            log::error!(
                                "failed to pick server: no valid upstream node, route: {}",
                                self.route.id
                            );
                            return Err((error_page::page(StatusCode::SERVICE_UNAVAILABLE), None));
                        }
                        return Err((error_page::page(last_status), None));
                    };
                    let choice = match self.on_pick {
                        Some(h) => match h.picked(&self.def.nodes[idx], try_no, last_failure).await
                        {
                            Ok(c) => c,
                            Err(resp) => return Err((resp, None)),
                        },
                        None => PickChoice::default(),
                    };
                    (idx, choice)
                }
            };
            if let Some(n) = choice.more_tries {
                tries_left = n;
            }
            let connect_timeout = choice.timeouts[0].map_or(connect_timeout, secs);
            let send_timeout = choice.timeouts[1].map_or(send_timeout, secs);
            let read_timeout = choice.timeouts[2].map_or(read_timeout, secs);
            let mut node = self.def.nodes[idx].clone();
            if let Some(peer) = choice.peer {
                node.addr = peer;
            }
            let feedback = self.def.needs_feedback();
            if feedback {
                worker.with_picker(&self.def, |p| p.on_start(idx));
            }
            // The log's copy of what was sent, only when there is a log to write it to.
            let logging = log.is_some();
            // The try's timings are read by the access log, the plugins (`$upstream_*`) and
            // the balancers that time requests; without any of them no clock is read.
            let timed = logging || self.req.is_some() || feedback;
            let try_start = if timed { Instant::now() } else { self.start };
            let upstream_host = self.upstream_host(&node);
            let scheme = if self.def.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let mut record = UpstreamRecord {
                scheme,
                addr: node.addr,
                status: None,
                connect_time: None,
                header_time: None,
                response_time: None,
                host: match (&upstream_host, logging) {
                    (Some(h), true) => String::from_utf8_lossy(h.as_bytes()).into_owned(),
                    _ => String::new(),
                },
                uri: if logging {
                    self.uri.to_string()
                } else {
                    String::new()
                },
            };

            // A node named by a domain goes where the name points now (a balancer's peer
            // choice wins).
            let mut unresolved = None;
            if let Some(name) = node.domain.clone()
                && choice.peer.is_none()
            {
                match dns::resolve(&name, node.port).await {
                    Resolved::Fresh(ip) => node.addr = SocketAddr::new(ip, node.port),
                    Resolved::Stale(ip, e) => {
                        log::warn!(
                            "dns resolver domain: {name} error: {e}; using its last address {ip}"
                        );
                        node.addr = SocketAddr::new(ip, node.port);
                    }
                    Resolved::Failed(e) => unresolved = Some(ConnectError::Resolve(name, e)),
                }
                record.addr = node.addr;
            }

            // The node this try goes to, as nginx's `$upstream_addr` names it even when the
            // connection fails (APISIX's `ctx.balancer_ip` is set before connecting too).
            if let Some(req) = &self.req
                && unresolved.is_none()
            {
                req.borrow_mut().upstream.addr = Some(node.addr);
            }

            let tls = match &self.def.tls {
                Some(t) => match upstream_tls::Plan::new(t, upstream_host.as_ref(), &worker) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        log::error!("{e}, {}", self.describe(node.addr));
                        return Err((error_page::page(StatusCode::BAD_GATEWAY), None));
                    }
                },
                None => None,
            };
            let key = PoolKey {
                addr: node.addr,
                tls: tls.as_ref().map(upstream_tls::Plan::pool_key),
            };
            // A pooled connection first; the peer may have closed it, then a fresh one.
            let mut conn = None;
            if unresolved.is_none() {
                conn = worker.pool.checkout(&key);
            }
            let conn = match (conn, unresolved) {
                (_, Some(e)) => Err(e),
                (Some(c), None) => Ok(c),
                (None, None) => match tls.map(upstream_tls::Plan::connect).transpose() {
                    Ok(tls) => Pool::connect(node.addr, connect_timeout, tls).await,
                    Err(e) => Err(e),
                },
            };
            record.connect_time = timed.then(|| try_start.elapsed());
            let mut conn = match conn {
                Ok(c) => c,
                Err(e) => {
                    log::error!(
                        "{e} while connecting to upstream, {}",
                        self.describe(node.addr)
                    );
                    if feedback {
                        worker.with_picker(&self.def, |p| {
                            p.on_finish(idx, try_start.elapsed(), true)
                        });
                    }
                    tried.push(idx);
                    last_status = match e {
                        ConnectError::Timeout => StatusCode::GATEWAY_TIMEOUT,
                        _ => StatusCode::BAD_GATEWAY,
                    };
                    last_failure = Some(("failed", last_status.as_u16()));
                    record.status = Some(last_status.as_u16());
                    if let Some(l) = log.as_mut() {
                        l.upstream = Some(record);
                    }
                    if self.can_retry(&mut tries_left, retry_deadline) {
                        continue;
                    }
                    return Err((error_page::page(last_status), None));
                }
            };

            let host = upstream_host.unwrap_or_else(|| node.host_header.clone());
            // A copy of a body held whole, for a retry after it went out (a streamed body
            // cannot be sent twice).
            let had_body = self.body.is_some();
            let replay = if tries_left > 0 || conn.reused {
                self.body.as_ref().and_then(Body::replay)
            } else {
                None
            };
            conn.uses += 1;
            let sent = h1::send(
                &mut conn.io,
                &mut conn.write_buf,
                &h1::RequestHead {
                    method: &self.method,
                    uri: &self.uri,
                    host: &host,
                    headers: &self.headers,
                    forwarding: self.forwarding.as_ref(),
                },
                &mut self.body,
                send_timeout,
            )
            .await;
            let outcome = match sent {
                Ok(()) => {
                    conn.state.begin(read_timeout);
                    h1::read_head(&mut conn, self.method == Method::HEAD)
                        .await
                        .map_err(TryError::Head)
                }
                Err(e) => Err(TryError::Send(e)),
            };
            // What a retry would send: the body still unsent, or the copy of one held whole.
            let replayable = !had_body || self.body.is_some() || replay.is_some();
            if self.body.is_none() {
                self.body = replay;
            }
            match outcome {
                Ok(head) => {
                    record.header_time = timed.then(|| try_start.elapsed());
                    record.status = Some(head.parts.status.as_u16());
                    let slot = h1::ConnSlot::default();
                    // The try is over: what error lines name moves to the body, uncopied.
                    let context = Box::new(h1::UpstreamContext {
                        client: self.cx.remote.ip(),
                        server: self.cx.local,
                        method: std::mem::take(&mut self.method),
                        uri: std::mem::take(&mut self.uri),
                        scheme,
                        addr: node.addr,
                        host: self.client_host.take(),
                    });
                    let body = Body::upstream(h1::ResponseBody::new(
                        conn,
                        head.framing,
                        head.keep_alive,
                        slot.clone(),
                        context,
                    ));
                    let done = UpstreamDone {
                        def: self.def.clone(),
                        node: idx,
                        key,
                        started: try_start,
                        conn: slot,
                    };
                    // One clock read for both records.
                    let response_time =
                        (self.req.is_some() || log.is_some()).then(|| self.start.elapsed());
                    if let Some(req) = &self.req {
                        let mut r = req.borrow_mut();
                        r.upstream.addr = Some(node.addr);
                        r.upstream.scheme = Some(scheme);
                        r.upstream.status = record.status;
                        r.upstream.connect_time = record.connect_time;
                        r.upstream.header_time = record.header_time;
                        r.upstream.response_time = response_time;
                    }
                    if let Some(l) = log.as_mut() {
                        record.response_time = response_time;
                        l.upstream = Some(record);
                    }
                    return Ok((Response::from_parts(head.parts, body), done));
                }
                Err(e) => {
                    if let Some(client_err) = self.body_error.get() {
                        worker.with_picker(&self.def, |p| {
                            p.on_finish(idx, try_start.elapsed(), false)
                        });
                        return Err((client_body_failure(client_err), None));
                    }
                    if feedback {
                        worker.with_picker(&self.def, |p| {
                            p.on_finish(idx, try_start.elapsed(), true)
                        });
                    }
                    let timed_out = matches!(e, TryError::Send(h1::SendError::Timeout))
                        || conn.state.timed_out();
                    let (message, while_doing) = match &e {
                        _ if timed_out => (
                            "upstream timed out (110: Connection timed out)".to_string(),
                            if matches!(e, TryError::Send(_)) {
                                "sending request to"
                            } else {
                                "reading response header from"
                            },
                        ),
                        TryError::Send(h1::SendError::Unsent(err) | h1::SendError::Io(err)) => (
                            format!("writev() failed ({})", h1::errno_text(err)),
                            "sending request to",
                        ),
                        TryError::Send(_) => ("writev() failed".to_string(), "sending request to"),
                        TryError::Head(h1::HeadError::Io { error, .. })
                            if error.kind() == std::io::ErrorKind::UnexpectedEof =>
                        {
                            (
                                "upstream prematurely closed connection".to_string(),
                                "reading response header from",
                            )
                        }
                        TryError::Head(h1::HeadError::Io { error, .. }) => (
                            format!("recv() failed ({})", h1::errno_text(error)),
                            "reading response header from",
                        ),
                        TryError::Head(h1::HeadError::Invalid(m)) => {
                            (m.clone(), "reading response header from")
                        }
                    };
                    log::error!(
                        "{message} while {while_doing} upstream, {}",
                        self.describe(node.addr)
                    );
                    // A pooled connection the upstream closed while it sat idle fails before
                    // any byte of an answer: not the node's fault, the request goes again on
                    // a new connection (nginx's rule for cached connections).
                    let stale = conn.reused
                        && !timed_out
                        && matches!(
                            e,
                            TryError::Send(h1::SendError::Unsent(_) | h1::SendError::Io(_))
                                | TryError::Head(h1::HeadError::Io { started: false, .. })
                        );
                    if stale && replayable {
                        continue;
                    }
                    tried.push(idx);
                    last_status = if timed_out {
                        StatusCode::GATEWAY_TIMEOUT
                    } else {
                        StatusCode::BAD_GATEWAY
                    };
                    last_failure = Some(("failed", last_status.as_u16()));
                    // A malformed answer is not retried (nginx's `proxy_next_upstream` is
                    // `error timeout` by default); nor is a request whose body is gone.
                    if matches!(e, TryError::Head(h1::HeadError::Invalid(_))) || !replayable {
                        return Err((error_page::page(last_status), None));
                    }
                    if self.can_retry(&mut tries_left, retry_deadline) {
                        continue;
                    }
                    return Err((error_page::page(last_status), None));
                }
            }
        }
    }

    fn can_retry(&self, tries_left: &mut u32, deadline: Option<Instant>) -> bool {
        if *tries_left == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
            return false;
        }
        *tries_left -= 1;
        true
    }
}

/// How one upstream try failed.
enum TryError {
    Send(h1::SendError),
    Head(h1::HeadError),
}

fn client_body_failure(e: ClientBodyError) -> Response<Body> {
    let status = match e {
        ClientBodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ClientBodyError::Timeout => StatusCode::REQUEST_TIMEOUT,
        ClientBodyError::Broken => StatusCode::BAD_REQUEST,
    };
    let mut resp = error_page::page(status);
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or(DEFAULT_UPSTREAM_TIMEOUT)
}
