//! The per-request context plugins act on: the request as it will go upstream (method, uri,
//! args, headers, body), the response as it will go to the client (status, headers, output), the
//! variables plugins read and write (`ngx.var`, `ctx.var`), and what the proxy learnt on the way
//! (upstream address, status, timings).
//!
//! Native plugins get it as `&mut RequestCtx`; Lua code reaches the same value through the
//! worker's registry of live requests (`lua::request`), keyed by the request's context id.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Method, Version};
use tokio::time::Instant;

use super::Phase;
use crate::config::snapshot::RouteEntry;
use crate::lua::sched::CtxId;
use crate::observability::ticks::{Span, Ticks};
use crate::proxy::body::Body;
use crate::proxy::headers::Observed;

/// The client's request body, as far as plugins have touched it.
pub enum ReqBody {
    /// Not read: streams to the upstream as it arrives (`None`: the request has no body).
    Unread(Option<Body>),
    /// Read whole by `ngx.req.read_body()` or replaced by `ngx.req.set_body_data()`.
    Read(Bytes),
    /// `ngx.req.discard_body()`: the upstream gets no body.
    Discarded,
}

/// What the upstream exchange produced, for `$upstream_*`.
#[derive(Debug, Clone, Default)]
pub struct UpstreamInfo {
    pub addr: Option<SocketAddr>,
    pub status: Option<u16>,
    pub connect_time: Option<Duration>,
    pub header_time: Option<Duration>,
    pub response_time: Option<Duration>,
    /// `https` for `scheme: https` upstreams.
    pub scheme: Option<&'static str>,
}

/// The node choice of the current upstream try, as the balancer phase reads and changes it
/// (`ctx.balancer_ip`, `ngx.balancer`).
#[derive(Debug, Clone)]
pub struct BalancerCtx {
    /// The picked node: its host as configured (an IP or a name) and port.
    pub host: String,
    pub port: u16,
    /// 1 for the first try, then one more per retry.
    pub try_no: u32,
    /// How the previous try ended (`ngx.balancer.get_last_failure`): `("failed", 502)` …
    pub last_failure: Option<(&'static str, u16)>,
    /// `ngx.balancer.set_current_peer`: where this try goes instead of the node.
    pub peer: Option<SocketAddr>,
    /// `ngx.balancer.set_more_tries`: the retries allowed after this try.
    pub more_tries: Option<u32>,
    /// `ngx.balancer.set_timeouts`: connect, send and read timeouts of this try, in seconds.
    pub timeouts: [Option<f64>; 3],
}

/// Variables nginx lets APISIX write (declared with `set` in APISIX's nginx.conf) plus any name a
/// plugin writes; nginx would refuse undeclared names, moongate keeps them (a documented superset).
pub type VarMap = HashMap<String, String>;

/// The plugin run a request's timing mark names as running (`RequestCtx::running_plugin`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunningPlugin {
    /// The plugin's place in its chain, 1-based.
    pub index: usize,
    /// The chain's slot among the request's chains.
    pub slot: u8,
    pub phase: Phase,
}

/// One request's context.
pub struct RequestCtx {
    pub id: CtxId,
    /// The phase running now (`None` before the first and in the content handler).
    pub phase: Option<Phase>,
    /// What `ngx.get_phase()` answers now.
    pub ngx_phase: &'static str,
    /// In a Lua content handler (`content_by_lua`).
    pub in_content: bool,
    pub start: Instant,
    pub start_wall: SystemTime,
    pub method: Method,
    pub version: Version,
    /// `$uri`: the normalised, decoded path; plugins may change it.
    pub uri: String,
    /// `$args`: the raw query string; plugins may change it.
    pub args: String,
    /// `$request_uri`: as the client sent it, which is also the path and query the upstream
    /// gets when no plugin changed `uri`/`args`.
    pub request_uri: String,
    pub uri_changed: bool,
    pub args_changed: bool,
    /// `$host`.
    pub host: String,
    /// The request's headers as they will go upstream. Reached through [`RequestCtx::headers`]
    /// and [`RequestCtx::headers_mut`], which first put in the fields `arrival` holds, or
    /// through the readers and writers that handle those fields themselves (`header`,
    /// `headers_and_arrival`, `headers_mut_for`, `upstream_headers`).
    headers: HeaderMap,
    /// `X-Forwarded-Proto`/`-Host`/`-Port` as this hop set them on arrival (APISIX's template
    /// sets them as request headers before any plugin runs), while they are not in `headers`:
    /// when the client sent no forwarding field and its peer is not trusted, they are only
    /// added, after the client's own fields. Inserting them costs three hashes of long names
    /// per request; held here, `get_headers` and `$http_*` read them as if they were there,
    /// the upstream request gets them written after its own fields (as a plugin-less route
    /// does), and they go into `headers` only when something else reads the whole map or
    /// changes one of them. The same fields and values either way; a field a plugin adds
    /// meanwhile goes before them.
    arrival: Option<Observed>,
    /// A request header was set, added or cleared since `resty.apisix.request`'s
    /// `clear_request_header()` (APISIX drops its header cache on it).
    pub req_headers_set: bool,
    /// `resty.apisix.response.set_gzip`: compress the response body (level 1–9).
    pub gzip: Option<u32>,
    /// The client body's size limit (0 = none), shared with the body as it streams, for
    /// `resty.apisix.client.set_client_max_body_size`.
    pub body_limit: Option<std::rc::Rc<std::cell::Cell<u64>>>,
    /// The client (`$remote_addr`, `$remote_port`): the connection's peer unless realip or
    /// `resty.apisix.client.set_real_ip` named another.
    pub remote: SocketAddr,
    /// The connection's peer (`$realip_remote_addr`, `$realip_remote_port`).
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub scheme: &'static str,
    /// The connection's handshake, on TLS listeners (`$ssl_*`).
    pub tls: Option<std::rc::Rc<crate::server::tls::TlsInfo>>,
    pub body: ReqBody,
    pub request_length: u64,
    pub vars: VarMap,
    /// The route the request matched (none for a request no route matched, or one the gateway
    /// answers itself): its id, name and service id, as `route_id()` and the others read them.
    /// Held whole: copying the three strings cost three allocations per request.
    pub route: Option<Arc<RouteEntry>>,
    /// The route uri the router matched (APISIX's `curr_req_matched._path`) and the
    /// parameters it captured (`uri_param_NAME`).
    pub matched_uri: Option<Arc<str>>,
    /// The route host that matched (`foo.com`, `*.foo.com`), for `curr_req_matched._host`.
    pub matched_host: Option<String>,
    /// `ctx.consumer_name`: the consumer an auth plugin identified, handed to the native
    /// plugins of the log phase.
    pub consumer_name: Option<String>,
    pub uri_params: Vec<(String, String)>,
    /// The upstream a plugin chose for this request (`apisix.upstream.set`), instead of the
    /// route's.
    pub upstream_choice: Option<std::sync::Arc<crate::upstream::UpstreamDef>>,
    // The response side.
    /// `ngx.status`: 0 until someone sets it or a response arrives.
    pub status: u16,
    pub resp_headers: HeaderMap,
    /// The response head has gone to the client: status and headers are frozen.
    pub headers_sent: bool,
    /// A content handler is still running (its filters may run meanwhile, once it flushed).
    pub content_running: bool,
    /// The content handler's first `ngx.flush` sent the head: later output goes straight to
    /// the body stream.
    pub streaming: bool,
    /// A phase handler has printed output: as in nginx, the status and headers are now
    /// committed (later changes are refused) even though moongate still buffers the body.
    /// The header filter starts with it cleared.
    pub output_started: bool,
    /// `ngx.say`/`ngx.print` output not yet sent.
    pub out: Vec<Bytes>,
    /// `ngx.exit(code)` was called: the running Lua stops here.
    pub exit: Option<i64>,
    /// The body filter's current chunk and end-of-body flag (`ngx.arg[1]`, `ngx.arg[2]`).
    pub arg_chunk: Bytes,
    pub arg_eof: bool,
    pub upstream: UpstreamInfo,
    pub bytes_sent: u64,
    /// Time spent in each plugin run, as (chain slot, entry index, phase, time): slot 0 is the
    /// global rules' chain, 1 the route's. Kept in the cheap clock's ticks (`Span::duration`
    /// gives the time). Read by the metrics of a later stage.
    pub timings: smallvec::SmallVec<[(u8, u32, Phase, Span); 4]>,
    /// The chain slot and phase being timed now, and the plugin run that started last.
    pub timing: (u8, Option<Phase>),
    /// The plugin run timed now: its index, the chain slot and phase it runs in, its start.
    mark: Option<(u32, u8, Phase, Ticks)>,
    /// Content output flushed early with `ngx.flush`: the head and these chunks go out at once.
    pub stream: Option<tokio::sync::mpsc::UnboundedSender<Bytes>>,
    /// Fired by the first `ngx.flush` of a content handler: the head may go out.
    pub head_signal: Option<tokio::sync::oneshot::Sender<()>>,
    /// `ngx.eof()` was called: no more output.
    pub eof: bool,
    /// The node choice while the balancer phase runs.
    pub balancer: Option<BalancerCtx>,
}

#[cfg(test)]
impl RequestCtx {
    /// A `GET /` context for unit tests, with `version` and `headers`; loopback addresses.
    pub fn for_test(id: CtxId, version: Version, headers: HeaderMap) -> RequestCtx {
        let addr: SocketAddr = ([127, 0, 0, 1], 1).into();
        RequestCtx::new(
            id,
            Method::GET,
            version,
            "/".into(),
            String::new(),
            "/".into(),
            "localhost".into(),
            headers,
            addr,
            addr,
            addr,
            ReqBody::Discarded,
            Instant::now(),
        )
    }
}

impl RequestCtx {
    /// `$route_id`: the matched route's id.
    pub fn route_id(&self) -> Option<&str> {
        self.route.as_ref().map(|r| r.id.0.as_str())
    }

    /// `$route_name`: the matched route's name.
    pub fn route_name(&self) -> Option<&str> {
        self.route.as_ref().and_then(|r| r.name.as_deref())
    }

    /// `$service_id`: the service of the matched route.
    pub fn service_id(&self) -> Option<&str> {
        self.route
            .as_ref()
            .and_then(|r| r.service_id.as_ref())
            .map(|s| s.0.as_str())
    }

    /// A context for a request that has just been routed; the proxy fills in the rest.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: CtxId,
        method: Method,
        version: Version,
        uri: String,
        args: String,
        request_uri: String,
        host: String,
        headers: HeaderMap,
        remote: SocketAddr,
        peer: SocketAddr,
        local: SocketAddr,
        body: ReqBody,
        start: Instant,
    ) -> RequestCtx {
        RequestCtx {
            id,
            phase: None,
            ngx_phase: "rewrite",
            in_content: false,
            start,
            start_wall: SystemTime::now(),
            method,
            version,
            uri,
            args,
            request_uri,
            uri_changed: false,
            args_changed: false,
            host,
            headers,
            arrival: None,
            req_headers_set: false,
            gzip: None,
            body_limit: None,
            remote,
            peer,
            local,
            scheme: "http",
            tls: None,
            body,
            request_length: 0,
            vars: VarMap::new(),
            route: None,
            matched_uri: None,
            matched_host: None,
            consumer_name: None,
            uri_params: Vec::new(),
            upstream_choice: None,
            status: 0,
            resp_headers: HeaderMap::new(),
            headers_sent: false,
            content_running: false,
            streaming: false,
            output_started: false,
            out: Vec::new(),
            exit: None,
            arg_chunk: Bytes::new(),
            arg_eof: false,
            upstream: UpstreamInfo::default(),
            bytes_sent: 0,
            timings: smallvec::SmallVec::new(),
            timing: (0, None),
            mark: None,
            stream: None,
            head_signal: None,
            eof: false,
            balancer: None,
        }
    }

    /// Plugin run `index` (1-based; 0 = none) starts now: the previous one's time is recorded.
    /// One read of the cheap clock per plugin run.
    pub fn mark_plugin(&mut self, index: usize) {
        let now = Ticks::now();
        if let Some((i, slot, phase, t)) = self.mark.take() {
            self.timings.push((slot, i - 1, phase, now.since(t)));
        }
        if index > 0
            && let (slot, Some(phase)) = self.timing
        {
            self.mark = Some((index as u32, slot, phase, now));
        }
    }

    /// The plugin run marked as running now (see `mark_plugin`), if any.
    pub fn running_plugin(&self) -> Option<RunningPlugin> {
        self.mark.map(|(index, slot, phase, _)| RunningPlugin {
            index: index as usize,
            slot,
            phase,
        })
    }

    /// The upstream request target: `$upstream_uri` when a plugin set it, else the changed
    /// `uri` and `args`, else exactly what the client sent.
    pub fn upstream_target(&self) -> Cow<'_, str> {
        if let Some(u) = self.vars.get("upstream_uri").filter(|u| !u.is_empty()) {
            return Cow::Borrowed(u);
        }
        if !self.uri_changed && !self.args_changed {
            return Cow::Borrowed(&self.request_uri);
        }
        let path: Cow<'_, str> = if self.uri_changed {
            Cow::Owned(String::from_utf8_lossy(&encode_path(&self.uri)).into_owned())
        } else {
            Cow::Borrowed(self.request_uri.split('?').next().unwrap_or("/"))
        };
        if self.args.is_empty() {
            path
        } else {
            Cow::Owned(format!("{path}?{}", self.args))
        }
    }

    /// Holds the forwarding fields set on arrival apart from the headers (see `arrival`). The
    /// headers must hold none of them.
    pub fn hold_arrival_forwarding(&mut self, observed: Observed) {
        self.arrival = Some(observed);
    }

    /// The request's headers, the forwarding fields set on arrival among them.
    pub fn headers(&mut self) -> &HeaderMap {
        self.settle_arrival();
        &self.headers
    }

    /// The request's headers to change, the forwarding fields set on arrival among them.
    pub fn headers_mut(&mut self) -> &mut HeaderMap {
        self.settle_arrival();
        &mut self.headers
    }

    /// The first value of request header `name` (lower case), the forwarding fields set on
    /// arrival among them.
    pub fn header(&self, name: &str) -> Option<&http::HeaderValue> {
        self.headers
            .get(name)
            .or_else(|| self.arrival.as_ref().and_then(|o| o.field(name).flatten()))
    }

    /// The request's headers, to change the fields named `name` only: the forwarding fields set
    /// on arrival stay apart unless `name` is one of them. A field added so goes before them
    /// (the order of fields of different names carries no meaning, RFC 9110 §5.3).
    pub fn headers_mut_for(&mut self, name: &http::HeaderName) -> &mut HeaderMap {
        if self
            .arrival
            .as_ref()
            .is_some_and(|o| o.field(name.as_str()).is_some())
        {
            self.settle_arrival();
        }
        &mut self.headers
    }

    /// The headers and, apart, the forwarding fields set on arrival that are not in them yet
    /// (they come after the headers'). For readers that take both without paying for the
    /// insertion (`ngx.req.get_headers`).
    pub fn headers_and_arrival(&self) -> (&HeaderMap, Option<&Observed>) {
        (&self.headers, self.arrival.as_ref())
    }

    /// The headers for the upstream request, taken (`take`) or copied, and the forwarding
    /// fields set on arrival that are not in them, for the upstream writer to add after them.
    /// A copy is a copy of the settled headers: the phases after it read them.
    pub fn upstream_headers(&mut self, take: bool) -> (HeaderMap, Option<Observed>) {
        if take {
            (std::mem::take(&mut self.headers), self.arrival.take())
        } else {
            (self.headers().clone(), None)
        }
    }

    /// Puts the forwarding fields set on arrival into the headers (see `arrival`).
    pub fn settle_arrival(&mut self) {
        if let Some(o) = self.arrival.take() {
            o.insert_into(&mut self.headers);
        }
    }

    /// Reads a variable as `ngx.var.NAME` does. `None` when it has no value.
    pub fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(v) = self.vars.get(name) {
            return Some(Cow::Borrowed(v));
        }
        if let Some(h) = name.strip_prefix("http_") {
            let wanted = h.replace('_', "-");
            if let Some(o) = &self.arrival
                && let Some(held) = o.field(&wanted)
            {
                // Held apart, the only value of its name (see `arrival`).
                return held.map(|v| String::from_utf8_lossy(v.as_bytes()));
            }
            let mut all = self.headers.get_all(wanted.as_str()).iter();
            let first = all.next()?;
            // nginx joins repeated headers for a few names only; cookies with "; ".
            let mut s = String::from_utf8_lossy(first.as_bytes()).into_owned();
            for more in all {
                s.push_str(if wanted == "cookie" { "; " } else { ", " });
                s.push_str(&String::from_utf8_lossy(more.as_bytes()));
            }
            return Some(Cow::Owned(s));
        }
        if let Some(h) = name.strip_prefix("sent_http_") {
            let wanted = h.replace('_', "-");
            return self
                .resp_headers
                .get(wanted.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()));
        }
        if let Some(arg) = name.strip_prefix("arg_") {
            return query_arg_raw(&self.args, arg).map(Cow::Borrowed);
        }
        if let Some(c) = name.strip_prefix("cookie_") {
            return cookie(&self.headers, c).map(Cow::Borrowed);
        }
        let secs = |d: Duration| format!("{:.3}", d.as_secs_f64());
        Some(match name {
            "uri" | "document_uri" => Cow::Borrowed(&self.uri),
            // APISIX keeps the request target as sent in `$real_request_uri` (its own
            // `request_uri` is rebuilt from the normalised path).
            "request_uri" | "real_request_uri" => Cow::Borrowed(&self.request_uri),
            "args" | "query_string" => {
                if self.args.is_empty() {
                    return None;
                }
                Cow::Borrowed(&self.args)
            }
            "is_args" => Cow::Borrowed(if self.args.is_empty() { "" } else { "?" }),
            "host" => Cow::Borrowed(&self.host),
            "hostname" => Cow::Owned(hostname()),
            // nginx's `$pid` is its worker's; moongate's workers share one process.
            "pid" => Cow::Owned(std::process::id().to_string()),
            "remote_addr" | "binary_remote_addr_text" => {
                Cow::Owned(crate::router::ip::canonical(self.remote.ip()).to_string())
            }
            "remote_port" => Cow::Owned(self.remote.port().to_string()),
            "realip_remote_addr" => {
                Cow::Owned(crate::router::ip::canonical(self.peer.ip()).to_string())
            }
            "realip_remote_port" => Cow::Owned(self.peer.port().to_string()),
            "server_addr" => Cow::Owned(crate::router::ip::canonical(self.local.ip()).to_string()),
            "server_port" => Cow::Owned(self.local.port().to_string()),
            "scheme" => Cow::Borrowed(self.scheme),
            "https" => Cow::Borrowed(if self.scheme == "https" { "on" } else { "" }),
            "request_method" | "method" => Cow::Borrowed(self.method.as_str()),
            "request_length" => Cow::Owned(self.request_length.to_string()),
            "request_time" => Cow::Owned(secs(self.start.elapsed())),
            "server_protocol" => Cow::Borrowed(protocol(self.version)),
            "content_type" => return self.header_str("content-type"),
            "content_length" => return self.header_str("content-length"),
            "http_host_or_host" => Cow::Borrowed(&self.host),
            "status" => {
                if self.status == 0 {
                    return None;
                }
                Cow::Owned(self.status.to_string())
            }
            "bytes_sent" | "body_bytes_sent" => Cow::Owned(self.bytes_sent.to_string()),
            "upstream_addr" => Cow::Owned(self.upstream.addr?.to_string()),
            "upstream_status" => Cow::Owned(self.upstream.status?.to_string()),
            "upstream_response_time" => Cow::Owned(secs(self.upstream.response_time?)),
            "upstream_connect_time" => Cow::Owned(secs(self.upstream.connect_time?)),
            "upstream_header_time" => Cow::Owned(secs(self.upstream.header_time?)),
            "upstream_scheme" => Cow::Borrowed(self.upstream.scheme.unwrap_or("http")),
            // The values APISIX's nginx.conf `set`s for every request, until a plugin writes
            // them (the prometheus exporter labels every request with them).
            "request_type" => Cow::Borrowed("traditional_http"),
            // Set empty by the same `location /` until the proxy (or a plugin) fills them.
            "upstream_uri"
            | "upstream_mirror_host"
            | "upstream_mirror_uri"
            | "upstream_mirror_grpc_path"
            | "upstream_upgrade"
            | "upstream_connection"
            | "upstream_unresolved_host"
            | "request_line"
            | "ctx_ref"
            | "rate_limiting_info"
            | "opentelemetry_context_traceparent"
            | "opentelemetry_trace_id"
            | "opentelemetry_span_id"
            | "zipkin_context_traceparent"
            | "zipkin_trace_id"
            | "zipkin_span_id"
            | "dubbo_service_name"
            | "dubbo_service_version"
            | "dubbo_method" => Cow::Borrowed(""),
            // `set $upstream_host $http_host`: empty without a Host header.
            "upstream_host" => return Some(self.header_str("host").unwrap_or(Cow::Borrowed(""))),
            "request_llm_model" | "llm_model" | "llm_content_risk_level" | "llm_end_user_id" => {
                Cow::Borrowed("")
            }
            "llm_time_to_first_token"
            | "llm_prompt_tokens"
            | "llm_completion_tokens"
            | "llm_total_tokens"
            | "llm_tool_count"
            | "llm_cache_read_input_tokens"
            | "llm_cache_creation_input_tokens"
            | "llm_reasoning_tokens" => Cow::Borrowed("0"),
            "llm_stream" | "llm_has_tool_calls" => Cow::Borrowed("false"),
            "time_iso8601" => {
                let mut s = String::new();
                crate::observability::clock::push_time_iso8601(&mut s);
                Cow::Owned(s)
            }
            "time_local" => {
                let mut s = String::new();
                crate::observability::clock::push_time_local(&mut s);
                Cow::Owned(s)
            }
            "msec" => Cow::Owned(format!(
                "{:.3}",
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_secs_f64()
            )),
            "request_id" | "apisix_request_id" => {
                Cow::Owned(format!("{:032x}", request_id(self.id, self.start_wall)))
            }
            "route_id" => return self.route_id().map(Cow::Borrowed),
            "route_name" => return self.route_name().map(Cow::Borrowed),
            "service_id" => return self.service_id().map(Cow::Borrowed),
            n if n.starts_with("ssl_") => Cow::Owned(self.tls.as_ref()?.var(n)?),
            _ => return None,
        })
    }

    fn header_str(&self, name: &str) -> Option<Cow<'_, str>> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()))
    }

    /// Writes a variable as `ngx.var.NAME = value` does. `uri`, `args` and `request_method`
    /// change the request itself; read-only built-ins are refused with nginx's words.
    pub fn set_var(&mut self, name: &str, value: &str) -> Result<(), String> {
        match name {
            "args" | "query_string" => {
                self.args = value.to_string();
                self.args_changed = true;
            }
            "uri"
            | "request_uri"
            | "host"
            | "remote_addr"
            | "remote_port"
            | "server_addr"
            | "server_port"
            | "scheme"
            | "request_length"
            | "request_time"
            | "status"
            | "bytes_sent"
            | "body_bytes_sent"
            | "server_protocol"
            | "request_method"
            | "is_args"
            | "msec"
            | "time_iso8601"
            | "time_local"
            | "hostname"
            | "pid"
            | "request_id"
            | "document_uri"
            | "realip_remote_addr"
            | "realip_remote_port"
            | "https"
            | "content_type"
            | "content_length"
            | "upstream_addr"
            | "upstream_status"
            | "upstream_response_time"
            | "upstream_connect_time"
            | "upstream_header_time" => {
                return Err(format!("variable \"{name}\" not changeable"));
            }
            n if n.starts_with("http_")
                || n.starts_with("arg_")
                || n.starts_with("cookie_")
                || n.starts_with("sent_http_") =>
            {
                return Err(format!("variable \"{name}\" not changeable"));
            }
            _ => {
                self.vars.insert(name.to_string(), value.to_string());
            }
        }
        Ok(())
    }

    /// Unsets a writable variable (`ngx.var.NAME = nil`).
    pub fn unset_var(&mut self, name: &str) -> Result<(), String> {
        if name == "args" || name == "query_string" {
            self.args.clear();
            self.args_changed = true;
            return Ok(());
        }
        if self.vars.remove(name).is_none() && self.var(name).is_some() {
            return Err(format!("variable \"{name}\" not changeable"));
        }
        Ok(())
    }
}

/// `$request_id`: 16 random-looking bytes as hex, stable for one request.
fn request_id(id: CtxId, start: SystemTime) -> u128 {
    let t = start
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    // A cheap mix (splitmix-style) of the start time, the worker-local id and the thread.
    let mut x = t ^ ((id as u128) << 64) ^ (std::process::id() as u128);
    x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    x ^ (x >> 61)
}

pub(crate) fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

pub fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// `$arg_NAME`: nginx gives the raw (still escaped) value of the first `NAME=` argument; a
/// bare `NAME` without `=` does not count.
fn query_arg_raw<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    for pair in query.split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        if k.eq_ignore_ascii_case(name) {
            return Some(v);
        }
    }
    None
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    for value in headers.get_all(http::header::COOKIE) {
        let Ok(s) = value.to_str() else { continue };
        for part in s.split(';') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            if k.trim() == name {
                return Some(v.trim());
            }
        }
    }
    None
}

/// Escapes a decoded path for the request line, as nginx escapes a changed `$uri`.
pub fn encode_path(path: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len());
    for &b in path.as_bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~!$&'()*+,;=:@%".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}
