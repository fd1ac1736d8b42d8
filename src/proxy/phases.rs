//! The request path of a route with plugins or Lua handlers: the phases around the upstream
//! exchange, as APISIX runs them.
//!
//! ```text
//! rewrite -> access -> (content_by_lua | before_proxy -> upstream) -> header_filter
//!         -> body_filter (per chunk) -> log (after the response is sent)
//! ```
//!
//! Each phase runs the global rules' chains, then the route's, each by descending priority;
//! native and Lua plugins interleave, and consecutive Lua plugins run in one call into the VM.
//! An answer (`return code, body`, `ngx.exit`, `ngx.say` output) from rewrite, access or
//! before_proxy skips the upstream but still passes header_filter, body_filter and log. Any Lua
//! error fails closed: 500, never a pass-through.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Response, StatusCode, Uri, header};
use tokio::time::Instant;

use super::body::{Body, BodyFilter, FilterFuture};
use super::{
    ConnCtx, Forward, LogData, OnPick, PickChoice, PickFuture, UpstreamDone, error_page, finish,
    upstream_headers,
};
use crate::config::snapshot::{ConsumerEntry, RouteEntry, Snapshot};
use crate::lua::host::{Group, GroupsOut, LuaHost, MAX_GROUPS, RouteInfo, Step};
use crate::lua::request::{self, SharedReq};
use crate::lua::sched;
use crate::plugin::ctx::{BalancerCtx, ReqBody};
use crate::plugin::native::Answer;
use crate::plugin::{Chain, Impl, Phase, RequestCtx};

/// A request's chains: the global rules' (usually one, or none) and the route's, inline.
type Chains = smallvec::SmallVec<[Arc<Chain>; 3]>;

/// Lua output goes out as nginx's `default_type` says in APISIX's configuration.
const DEFAULT_TYPE: &str = "text/plain";

/// What the proxy hands over once the route is known.
pub(super) struct Incoming {
    pub cx: Rc<ConnCtx>,
    pub snapshot: Arc<Snapshot>,
    pub route: Arc<RouteEntry>,
    pub parts: http::request::Parts,
    pub body: super::body::ClientIn,
    pub path: String,
    pub host: String,
    pub declared: Option<u64>,
    pub start: Instant,
    /// The route uri that matched and the parameters it captured.
    pub matched_uri: Option<Arc<str>>,
    /// The route host that matched, as `MatchedHost::pattern` spells it.
    pub matched_host: Option<String>,
    pub uri_params: Vec<(String, String)>,
    /// The client address after realip.
    pub client: std::net::SocketAddr,
    /// A request the gateway answers itself (the control API, `proxy::control`): no global
    /// rules run and `ctx` names no route.
    pub internal: bool,
    /// A request no route matched, run for the global rules only (`proxy::unrouted`): `ctx`
    /// names no route.
    pub unrouted: bool,
    /// The forwarding fields set on arrival, held apart from the headers
    /// (`RequestCtx::hold_arrival_forwarding`).
    pub arrival: Option<super::headers::Observed>,
}

/// How a run of phases ended.
enum Flow {
    Continue,
    /// Answer now with this status: what the plugins printed (`ngx.say`, `return code, body`),
    /// or the error page of the status when nothing was.
    Answer(u16),
}

/// One request's trip through the phases, shared by the body filter and the log phase.
struct Run {
    host: Option<Rc<LuaHost>>,
    version: u64,
    /// The global rules' chains, then the route's (replaced by the route merged with the
    /// consumer's plugins once an auth plugin identified one).
    chains: RefCell<Chains>,
    snapshot: Arc<Snapshot>,
    /// The `rewrite_in_consumer` pass: only plugins that came from the consumer run.
    consumer_pass: Cell<bool>,
    route: Arc<RouteEntry>,
    req: SharedReq,
    /// The `ctx.consumer_name` an auth plugin attached during rewrite.
    consumer: RefCell<Option<String>>,
    /// `ctx.upstream_id` as the rewrite and access plugins left it (traffic-split sets it).
    upstream_id: RefCell<Option<String>>,
    uses_lua: bool,
    /// No route matched: plugins see no route (`proxy::unrouted`).
    unrouted: bool,
}

fn any_phase(chains: &[Arc<Chain>], p: Phase) -> bool {
    chains.iter().any(|c| c.phases.contains(p))
}

impl Run {
    fn handler(&self, directive: &str) -> bool {
        self.route
            .handlers
            .as_ref()
            .is_some_and(|h| h.chunks.iter().any(|(d, _)| d == directive))
    }

    /// The route as plugins see it (`ctx.route_id`, `ctx.matched_route`).
    fn route_info(&self) -> RouteInfo<'_> {
        let r = &self.route;
        let modified_index = r
            .chain
            .as_ref()
            .filter(|c| c.owner.conf_type == "route")
            .and_then(|c| c.owner.conf_version.parse().ok());
        if self.unrouted {
            // The runner's route table for "no route": no ctx.route_id, no matched_route.
            return RouteInfo {
                id: "",
                name: None,
                service_id: None,
                modified_index: None,
            };
        }
        RouteInfo {
            id: &r.id.0,
            name: r.name.as_deref(),
            service_id: r.service_id.as_ref().map(|s| s.0.as_str()),
            modified_index,
        }
    }

    fn set_phase(&self, phase: Phase, slot: usize) {
        let mut r = self.req.borrow_mut();
        if matches!(phase, Phase::HeaderFilter | Phase::BodyFilter | Phase::Log) {
            r.in_content = false;
        }
        r.phase = Some(phase);
        r.ngx_phase = phase.ngx_phase();
        r.timing = (slot as u8, Some(phase));
    }

    /// Runs `phase` of every chain. An answer or error ends the phase at once.
    async fn phase(&self, phase: Phase) -> Flow {
        let slots = self.chains.borrow().len();
        for slot in 0..slots {
            let chain = self.chains.borrow()[slot].clone();
            if !chain.phases.contains(phase) {
                continue;
            }
            self.set_phase(phase, slot);
            let entries = &chain.entries;
            let mut i = 0;
            while i < entries.len() {
                if !self.runs(&chain, i, phase) {
                    i += 1;
                    continue;
                }
                match &entries[i].imp {
                    Impl::Native(p) => {
                        let res = match &entries[i].prepared {
                            Some(conf) => {
                                let mut r = self.req.borrow_mut();
                                if phase == Phase::Log && r.consumer_name.is_none() {
                                    // The consumer an auth plugin identified (the
                                    // prometheus plugin's `consumer` label).
                                    r.consumer_name = self.consumer.borrow().clone();
                                }
                                p.run(phase, conf, &mut r)
                            }
                            None => Err("the conf was never prepared".to_string()),
                        };
                        match res {
                            Ok(Some(a)) if phase.may_answer() => {
                                // A table body is JSON, as `core.response.exit` labels it.
                                if matches!(
                                    a.body,
                                    Some(
                                        serde_json::Value::Object(_) | serde_json::Value::Array(_)
                                    )
                                ) {
                                    self.req.borrow_mut().resp_headers.insert(
                                        header::CONTENT_TYPE,
                                        HeaderValue::from_static("application/json"),
                                    );
                                }
                                return self.answer(&chain, i, Some(a.status), body_of(&a));
                            }
                            Ok(_) => {}
                            Err(e) => {
                                log::error!(
                                    "plugin {} failed in phase {}: {e}",
                                    entries[i].name,
                                    phase.name()
                                );
                                return Flow::Answer(500);
                            }
                        }
                        i += 1;
                    }
                    Impl::Lua => {
                        // The run of Lua plugins up to the next native one goes in one call.
                        let mut run = vec![i];
                        let mut j = i + 1;
                        while j < entries.len() && matches!(entries[j].imp, Impl::Lua) {
                            if self.runs(&chain, j, phase) {
                                run.push(j);
                            }
                            j += 1;
                        }
                        i = j;
                        let Some(host) = self.host.clone() else {
                            log::error!(
                                "a Lua plugin was configured but this worker has no Lua host"
                            );
                            return Flow::Answer(500);
                        };
                        let step = host
                            .run_plugins(
                                self.version,
                                &chain,
                                phase,
                                &run,
                                &self.req,
                                &self.route_info(),
                            )
                            .await;
                        match step {
                            Step::Continue {
                                consumer,
                                upstream_id,
                            } => {
                                if consumer.is_some() {
                                    *self.consumer.borrow_mut() = consumer;
                                }
                                if matches!(phase, Phase::Rewrite | Phase::Access) {
                                    *self.upstream_id.borrow_mut() = upstream_id;
                                }
                            }
                            Step::Answer {
                                index,
                                status,
                                body,
                            } if phase.may_answer() => {
                                return self.answer(&chain, index, status, body);
                            }
                            Step::Answer { .. } => {}
                            Step::Exit => return self.exited(),
                            Step::Error => return Flow::Answer(500),
                        }
                    }
                }
                if let Some(f) = self.printed() {
                    return f;
                }
            }
        }
        Flow::Continue
    }

    /// The rewrite and access phases in one call into the VM, when every plugin they run is a
    /// Lua plugin without `_meta.filter` (evaluated when its phase comes) and the route has no
    /// rewrite/access handler: one crossing instead of one per phase and chain. `None` when
    /// that does not apply (the phases then run one by one); a consumer attached in rewrite
    /// stops the call for the merge, and access then runs the usual way.
    async fn rewrite_and_access_at_once(&self) -> Option<Flow> {
        let host = self.host.clone()?;
        if self.handler("rewrite_by_lua") || self.handler("access_by_lua") {
            return None;
        }
        let chains = self.chains.borrow().clone();
        let mut groups: smallvec::SmallVec<[Group<'_>; MAX_GROUPS]> = smallvec::SmallVec::new();
        for phase in [Phase::Rewrite, Phase::Access] {
            for (slot, chain) in chains.iter().enumerate() {
                let indices = chain.lua_run(phase)?;
                if !indices.is_empty() {
                    groups.push(Group {
                        chain,
                        slot,
                        phase,
                        indices,
                    });
                }
            }
        }
        if groups.len() < 2 {
            // One run or none: the usual path costs the same.
            return None;
        }
        self.set_phase(groups[0].phase, groups[0].slot);
        let out = host
            .run_groups(self.version, &groups, &self.req, &self.route_info())
            .await?;
        Some(match out {
            GroupsOut::Done {
                consumer: None,
                upstream_id,
            } => {
                *self.upstream_id.borrow_mut() = upstream_id;
                self.printed().unwrap_or(Flow::Continue)
            }
            // A consumer was attached and access has not run (the call stopped before it, or
            // the plan had no access group): the rest goes the usual way, merge then access.
            // A stop without a consumer is printed output, which answers.
            GroupsOut::Done { consumer, .. } | GroupsOut::Stopped { consumer, .. } => {
                if let Some(f) = self.printed() {
                    return Some(f);
                }
                if consumer.is_none() {
                    return Some(Flow::Continue);
                }
                *self.consumer.borrow_mut() = consumer;
                if let Flow::Answer(s) = self.merge_consumer().await {
                    return Some(Flow::Answer(s));
                }
                drop(groups);
                self.phase(Phase::Access).await
            }
            GroupsOut::Ended { group, step } => {
                let g = &groups[group];
                match step {
                    Step::Continue { .. } => self.printed().unwrap_or(Flow::Continue),
                    Step::Answer {
                        index,
                        status,
                        body,
                    } => self.answer(g.chain, index, status, body),
                    Step::Exit => self.exited(),
                    Step::Error => Flow::Answer(500),
                }
            }
        })
    }

    /// After rewrite: when an auth plugin attached a consumer (`ctx.consumer_name`) whose
    /// consumer or group has plugins, the route's chain becomes the merged one (consumer >
    /// group > route), `ctx.conf_*` say so, and the `rewrite_in_consumer` pass runs the rewrite
    /// of the plugins the consumer added.
    async fn merge_consumer(&self) -> Flow {
        let Some(route_chain) = self.route.chain.clone() else {
            return Flow::Continue;
        };
        let slot = self.chains.borrow().len() - 1;
        let Some(name) = self.consumer.borrow().clone() else {
            return Flow::Continue;
        };
        let Some(consumer) = self.snapshot.consumers.get(&name).cloned() else {
            log::info!("find consumer {name}, config changed: false");
            return Flow::Continue;
        };
        if let Some(g) = &consumer.missing_group {
            log::error!("failed to fetch consumer group config by id: {g}");
            return Flow::Answer(503);
        }
        // APISIX's line after its consumer merge, which tests and operators look for.
        log::info!(
            "find consumer {}, config changed: {}",
            consumer.username,
            consumer.chain.is_some()
        );
        let Some(cchain) = consumer.chain.clone() else {
            return Flow::Continue;
        };
        // The runner gives `ctx` the merged chain's owner when that chain first runs.
        let merged = merged_chain(self.version, &route_chain, &cchain, &consumer);
        self.chains.borrow_mut()[slot] = merged;
        self.consumer_pass.set(true);
        let flow = self.phase(Phase::Rewrite).await;
        self.consumer_pass.set(false);
        flow
    }

    /// Plugin `i` of `chain` takes part in `phase`: it implements it and its `_meta.filter`
    /// (if any) holds for the request as it is now.
    fn runs(&self, chain: &Chain, i: usize, phase: Phase) -> bool {
        let e = &chain.entries[i];
        if !e.phases.contains(phase) || (self.consumer_pass.get() && !e.from_consumer) {
            return false;
        }
        match &e.filter {
            None => true,
            Some(f) => {
                let r = self.req.borrow();
                f.eval(&|name| r.var(name).map(|v| Cow::Owned(v.into_owned())))
            }
        }
    }

    /// `return code, body` from entry `i`: APISIX's `_meta.error_response` replaces the body
    /// of an error answer, and every error answer is logged at warn.
    fn answer(&self, chain: &Chain, i: usize, status: Option<u16>, body: Option<Bytes>) -> Flow {
        let status = status.unwrap_or(200);
        let mut body = body;
        if status >= 400 {
            let e = &chain.entries[i];
            log::warn!("{} exits with http status code {status}", e.name);
            if let Some(er) = &e.error_response {
                body = Some(match er {
                    serde_json::Value::String(s) => Bytes::from(s.clone()),
                    other => Bytes::from(format!("{other}\n")),
                });
            }
        }
        let mut r = self.req.borrow_mut();
        r.status = status;
        if let Some(b) = body {
            r.out.push(b);
        }
        Flow::Answer(status)
    }

    /// The upstream this request goes to: the one a plugin chose with `apisix.upstream.set`,
    /// else the upstream `ctx.upstream_id` names (traffic-split sets it), else the route's.
    /// As in APISIX, a `ctx.upstream_id` that names no upstream answers 502.
    fn chosen_upstream(&self) -> Result<Arc<crate::upstream::UpstreamDef>, StatusCode> {
        if let Some(def) = self.req.borrow().upstream_choice.clone() {
            return Ok(def);
        }
        let id = self.upstream_id.borrow().clone();
        match id {
            Some(id) => match self
                .snapshot
                .upstreams
                .get(&crate::config::resource::Id(id.clone()))
            {
                Some(def) => Ok(def.clone()),
                None => {
                    log::error!("failed to find upstream by id: {id}");
                    Err(StatusCode::BAD_GATEWAY)
                }
            },
            None => super::upstream_of(&self.route),
        }
    }

    /// After `ngx.exit(code)`.
    fn exited(&self) -> Flow {
        let r = self.req.borrow();
        let code = r.exit.unwrap_or(0);
        if !r.out.is_empty() {
            return Flow::Answer(if r.status == 0 { 200 } else { r.status });
        }
        match code {
            // ngx.OK: the phase ends, the request goes on.
            0 => Flow::Continue,
            c if (200..1000).contains(&c) => Flow::Answer(c as u16),
            // ngx.ERROR and other codes nginx treats as failures.
            _ => Flow::Answer(500),
        }
    }

    /// Output printed in a phase that may answer sends the response, as in nginx (the first
    /// `ngx.say` sends the head).
    fn printed(&self) -> Option<Flow> {
        let r = self.req.borrow();
        (!r.out.is_empty() && !r.in_content)
            .then(|| Flow::Answer(if r.status == 0 { 200 } else { r.status }))
    }

    /// Runs the route's `*_by_lua` handler for `phase`, after the plugins of that phase.
    async fn handler_phase(&self, directive: &str, ngx_phase: &'static str) -> Flow {
        if !self.handler(directive) {
            return Flow::Continue;
        }
        let (Some(host), Some(src)) = (self.host.clone(), self.route.handlers.clone()) else {
            return Flow::Answer(500);
        };
        {
            let mut r = self.req.borrow_mut();
            if ngx_phase != "content" {
                r.in_content = false;
            }
            r.ngx_phase = ngx_phase;
            r.timing.1 = None;
        }
        let route_key = format!("route#{}", self.route.id);
        match host
            .run_handler(
                self.version,
                &route_key,
                &src,
                directive,
                &self.req,
                &self.route_info(),
            )
            .await
        {
            None | Some(Step::Continue { .. }) | Some(Step::Answer { .. }) => {
                self.printed().unwrap_or(Flow::Continue)
            }
            Some(Step::Exit) => self.exited(),
            Some(Step::Error) => Flow::Answer(500),
        }
    }

    /// After a filter phase ran while a streaming content handler goes on: the handler's
    /// own calls see the content phase again.
    fn filter_done(&self) {
        let mut r = self.req.borrow_mut();
        if r.content_running {
            r.in_content = true;
            r.ngx_phase = "content";
        }
    }

    /// The response the gateway makes for `Flow::Answer`.
    fn early_response(&self, status: u16) -> Response<Body> {
        let mut r = self.req.borrow_mut();
        let out = std::mem::take(&mut r.out);
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == 500 && out.is_empty() && r.exit.is_none() {
            // A failure: nothing the plugins said about the response stands.
            r.resp_headers.clear();
        }
        if out.is_empty() && status >= 300 {
            return error_page::page(code);
        }
        let body = concat(out);
        let mut resp = Response::new(Body::full(body));
        *resp.status_mut() = code;
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(DEFAULT_TYPE));
        resp
    }
}

fn body_of(a: &Answer) -> Option<Bytes> {
    match &a.body {
        None => None,
        Some(serde_json::Value::String(s)) => Some(Bytes::from(s.clone())),
        Some(v) => Some(Bytes::from(format!("{v}\n"))),
    }
}

fn concat(chunks: Vec<Bytes>) -> Bytes {
    match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.into_iter().next().unwrap_or_default(),
        _ => {
            let mut b = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in chunks {
                b.extend_from_slice(&c);
            }
            b.freeze()
        }
    }
}

/// Serves a request through the phases.
pub(super) async fn serve(inc: Incoming, log: Option<Box<LogData>>) -> Response<Body> {
    let Incoming {
        cx,
        snapshot,
        route,
        parts,
        body,
        path,
        host,
        declared,
        start,
        matched_uri,
        matched_host,
        uri_params,
        client,
        internal,
        unrouted,
        arrival,
    } = inc;
    let settings = &cx.worker.shared.settings;
    let globals: &[Arc<Chain>] = if internal {
        &[]
    } else {
        &snapshot.global_chains
    };
    let chains: Chains = globals
        .iter()
        .cloned()
        .chain(route.chain.iter().cloned())
        .collect();
    let uses_lua = route.handlers.is_some() || chains.iter().any(|c| c.has_lua);

    let body_error = Rc::new(Cell::new(None));
    let has_body = !(declared == Some(0)
        || (declared.is_none() && !parts.headers.contains_key(header::TRANSFER_ENCODING)));
    // Shared with the request context: `set_client_max_body_size` changes it until the body
    // has been read.
    let body_limit = Rc::new(Cell::new(settings.client_max_body_size));
    let client_body = has_body.then(|| {
        Body::client(
            body,
            body_limit.clone(),
            parts.headers.contains_key(header::TRANSFER_ENCODING),
            settings.timeouts.body,
            body_error.clone(),
        )
    });
    let request_uri = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let args = parts.uri.query().unwrap_or("").to_string();
    let client_uri = parts.uri.clone();
    let head_length = super::request::head_length(&parts.method, &parts.uri, &parts.headers);
    // Made in its final place: a 1.4 kB context built on the stack and then moved into the
    // `Rc` is one more copy of it per request.
    let req: SharedReq = Rc::new(RefCell::new(RequestCtx::new(
        sched::next_ctx_id(),
        parts.method,
        parts.version,
        path,
        args,
        request_uri,
        host,
        parts.headers,
        client,
        cx.remote,
        cx.local,
        ReqBody::Unread(client_body),
        start,
    )));
    let id = {
        let mut ctx = req.borrow_mut();
        ctx.scheme = cx.scheme();
        ctx.tls = cx.tls.clone();
        ctx.body_limit = Some(body_limit);
        ctx.request_length = declared.unwrap_or(0) + head_length;
        if let Some(o) = arrival {
            ctx.hold_arrival_forwarding(o);
        }
        if !internal && !unrouted {
            ctx.route = Some(route.clone());
            ctx.matched_uri = matched_uri;
            ctx.matched_host = matched_host;
            ctx.uri_params = uri_params;
        }
        ctx.id
    };
    if uses_lua {
        request::register(req.clone());
        crate::lua::config_view::set_current(&snapshot);
    }
    // This future may be dropped mid-phase (an HTTP/2 stream reset by the client, the end of the
    // shutdown drain): forget the request then.
    let mut registered = Registered(uses_lua.then_some(id));
    let run = Rc::new(Run {
        host: if uses_lua {
            // The chains' plugin load picks the VM (the previous one after a reload whose
            // configuration rebuild has not come in).
            cx.worker
                .lua_host_for(chains.iter().map(|c| c.generation).next())
        } else {
            cx.worker.lua_host()
        },
        version: snapshot.version,
        chains: RefCell::new(chains),
        snapshot: snapshot.clone(),
        consumer_pass: Cell::new(false),
        route,
        req,
        consumer: RefCell::new(None),
        upstream_id: RefCell::new(None),
        uses_lua,
        unrouted,
    });

    let flow = before_upstream(&run).await;
    let (resp, up) = match flow {
        Flow::Answer(status) => (run.early_response(status), None),
        Flow::Continue if run.handler("content_by_lua") => (content(&run).await, None),
        // The route answers itself (a direct response, a redirect) once the plugins let it.
        Flow::Continue if run.route.action.answer.is_some() => match &run.route.action.answer {
            Some(a) => (super::route_action::fixed(a, &run.req.borrow()), None),
            None => (run.early_response(500), None),
        },
        Flow::Continue => match forward(&run, &cx, &client_uri, body_error).await {
            Ok((resp, up)) => (resp, Some(up)),
            Err((resp, up)) => (resp, up),
        },
    };
    let resp = respond(&run, &cx, resp, up, log, id).await;
    // From here the log phase's tail unregisters it.
    registered.0 = None;
    resp
}

/// Merged chains by (route chain key, consumer), for one snapshot version.
type MergedChains = (u64, HashMap<(String, String), Arc<Chain>>);

thread_local! {
    /// Merged route+consumer chains of this worker, for the newest snapshot version seen.
    static MERGED: RefCell<MergedChains> = RefCell::new((0, HashMap::new()));
}

/// The route's chain merged with `consumer`'s, made once per snapshot version per worker (the
/// conf tables plugins cache on hang off its key, so it must stay the same chain).
fn merged_chain(
    version: u64,
    route: &Arc<Chain>,
    cchain: &Arc<Chain>,
    consumer: &ConsumerEntry,
) -> Arc<Chain> {
    MERGED.with(|m| {
        let mut m = m.borrow_mut();
        if m.0 != version {
            if version < m.0 {
                // A request still on an older snapshot: build without caching.
                return Arc::new(
                    route.merged_with_consumer(cchain, merged_owner(version, route, consumer)),
                );
            }
            *m = (version, HashMap::new());
        }
        m.1.entry((route.key.clone(), consumer.username.clone()))
            .or_insert_with(|| {
                Arc::new(route.merged_with_consumer(cchain, merged_owner(version, route, consumer)))
            })
            .clone()
    })
}

/// `ctx.conf_type`/`conf_id`/`conf_version` as APISIX sets them after the merge: the
/// consumer's and its group's versions are their own revisions (see `ConsumerEntry`).
fn merged_owner(
    _version: u64,
    route: &Chain,
    consumer: &ConsumerEntry,
) -> crate::plugin::ConfOwner {
    let o = &route.owner;
    let mut owner = crate::plugin::ConfOwner {
        conf_type: format!("{}&consumer", o.conf_type),
        conf_id: format!("{}&{}", o.conf_id, consumer.username),
        conf_version: format!("{}&{}", o.conf_version, consumer.conf_version),
    };
    if let Some(g) = &consumer.group_id {
        owner.conf_type.push_str("&consumer_group");
        owner.conf_id.push('&');
        owner.conf_id.push_str(g);
        owner.conf_version.push('&');
        owner
            .conf_version
            .push_str(consumer.group_version.as_deref().unwrap_or(""));
    }
    owner
}

/// Unregisters a request whose handling was dropped before it had a response.
struct Registered(Option<sched::CtxId>);

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(id) = self.0 {
            request::unregister(id);
            // A request dropped mid-phase (client gone) takes its light threads with it.
            sched::finish(id);
        }
    }
}

/// rewrite and access, with the route's handlers after each.
async fn before_upstream(run: &Rc<Run>) -> Flow {
    if let Some(pc) = &run.route.missing_plugin_config {
        log::error!(
            "failed to fetch plugin config by id: {pc}, route: {}",
            run.route.id
        );
        return Flow::Answer(503);
    }
    if let Some(flow) = run.rewrite_and_access_at_once().await {
        return flow;
    }
    for (phase, directive, ngx_phase) in [
        (Phase::Rewrite, "rewrite_by_lua", "rewrite"),
        (Phase::Access, "access_by_lua", "access"),
    ] {
        if let Flow::Answer(s) = run.phase(phase).await {
            return Flow::Answer(s);
        }
        if let Flow::Answer(s) = run.handler_phase(directive, ngx_phase).await {
            return Flow::Answer(s);
        }
        if phase == Phase::Rewrite
            && let Flow::Answer(s) = run.merge_consumer().await
        {
            return Flow::Answer(s);
        }
    }
    Flow::Continue
}

/// A `content_by_lua` handler answers. Its output is sent whole when it ends, or from its
/// first `ngx.flush` on as it comes.
async fn content(run: &Rc<Run>) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let (head_tx, head_rx) = tokio::sync::oneshot::channel();
    {
        let mut r = run.req.borrow_mut();
        r.in_content = true;
        r.content_running = true;
        r.ngx_phase = "content";
        r.stream = Some(tx);
        r.head_signal = Some(head_tx);
    }
    let me = run.clone();
    let task = tokio::task::spawn_local(async move {
        let flow = me.handler_phase("content_by_lua", "content").await;
        let mut r = me.req.borrow_mut();
        r.content_running = false;
        if r.streaming
            && let Some(tx) = r.stream.take()
        {
            for chunk in r.out.drain(..) {
                let _ = tx.send(chunk);
            }
        }
        r.stream = None;
        r.head_signal = None;
        flow
    });
    if head_rx.await.is_ok() {
        // Streaming: the head goes now, with what the handler had set by its first flush.
        let r = run.req.borrow();
        let status = if r.status == 0 { 200 } else { r.status };
        let mut resp = Response::new(Body::channel(rx));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(DEFAULT_TYPE));
        return resp;
    }
    let flow = task.await.unwrap_or(Flow::Answer(500));
    let mut r = run.req.borrow_mut();
    r.in_content = false;
    let status = match flow {
        Flow::Answer(s) => s,
        Flow::Continue => {
            if r.status == 0 {
                200
            } else {
                r.status
            }
        }
    };
    drop(r);
    if status < 300 || !run.req.borrow().out.is_empty() {
        let out = std::mem::take(&mut run.req.borrow_mut().out);
        let mut resp = Response::new(Body::full(concat(out)));
        *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(DEFAULT_TYPE));
        resp
    } else {
        run.early_response(status)
    }
}

/// before_proxy, then the upstream exchange with the request as the plugins left it.
async fn forward(
    run: &Rc<Run>,
    cx: &Rc<ConnCtx>,
    client_uri: &Uri,
    body_error: Rc<Cell<Option<super::body::ClientBodyError>>>,
) -> Result<(Response<Body>, UpstreamDone), (Response<Body>, Option<UpstreamDone>)> {
    let route = run.route.clone();
    let def = run
        .chosen_upstream()
        .map_err(|status| (error_page::page(status), None))?;
    // The balancer phase runs when a node is picked: for the first try before before_proxy
    // (APISIX's order), then on every retry inside the upstream exchange.
    let balancer = any_phase(&run.chains.borrow(), Phase::Balancer)
        .then(|| BalancerPhase { run: run.clone() });
    let mut first = None;
    if let Some(b) = &balancer {
        let key = hash_key(&def, &mut run.req.borrow_mut());
        let picked = cx
            .worker
            .with_picker(&def, |p| p.pick(&def, key.as_deref(), &[]));
        if let Some(idx) = picked {
            match b.picked(&def.nodes[idx], 1, None).await {
                Ok(choice) => first = Some((idx, choice)),
                Err(resp) => return Err((resp, None)),
            }
        }
    }
    if any_phase(&run.chains.borrow(), Phase::BeforeProxy)
        && let Flow::Answer(s) = run.phase(Phase::BeforeProxy).await
    {
        return Err((run.early_response(s), None));
    }
    let later_phases = {
        let chains = run.chains.borrow();
        [
            Phase::Balancer,
            Phase::HeaderFilter,
            Phase::BodyFilter,
            Phase::Log,
        ]
        .into_iter()
        .any(|p| any_phase(&chains, p))
    };
    let mut fwd = {
        let mut r = run.req.borrow_mut();
        r.ngx_phase = "balancer";
        let hash_key = hash_key(&def, &mut r);
        super::route_action::rewrite_path(&route.action, &mut r);
        let uri: Uri = match r.upstream_target() {
            // Unchanged: the client's own path and query, without parsing them again.
            Cow::Borrowed(t) if t == r.request_uri => match client_uri.path_and_query() {
                Some(pq) => Uri::from(pq.clone()),
                None => Uri::from_static("/"),
            },
            target => match target.parse() {
                Ok(u) => u,
                Err(_) => {
                    log::error!("invalid upstream uri {target:?} set by a plugin");
                    return Err((error_page::page(StatusCode::INTERNAL_SERVER_ERROR), None));
                }
            },
        };
        // After this point the request's headers are read only by the phases that run later
        // (the balancer phase of a retry, header and body filters, log) and by gzip. Without
        // them the upstream request takes the headers instead of a copy.
        let read_later = r.gzip.is_some()
            || later_phases
            || run.handler("header_filter_by_lua")
            || run.handler("body_filter_by_lua")
            || run.handler("log_by_lua");
        let (mut headers, arrival) = r.upstream_headers(!read_later);
        let body = match std::mem::replace(&mut r.body, ReqBody::Discarded) {
            ReqBody::Unread(b) => b,
            ReqBody::Read(bytes) => {
                headers.remove(header::TRANSFER_ENCODING);
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
                let b = (!bytes.is_empty()).then(|| Body::full(bytes.clone()));
                r.body = ReqBody::Read(bytes);
                b
            }
            ReqBody::Discarded => {
                headers.remove(header::TRANSFER_ENCODING);
                headers.remove(header::CONTENT_LENGTH);
                None
            }
        };
        // A plugin's `$upstream_host` wins over the route's own host rewrite.
        let host_override = r
            .vars
            .get("upstream_host")
            .and_then(|h| HeaderValue::from_str(h).ok())
            .or_else(|| super::route_action::host_rewrite(&route.action));
        // The forwarding fields held apart since arrival go after the request's own ones: in
        // the fields the upstream writer adds, or, when a plugin gave the request an
        // `X-Forwarded-For` or `X-Real-IP` to combine with, into the headers before them.
        let mut arrival = arrival;
        if arrival.is_some()
            && super::headers::has_client_forwarding(&headers)
            && let Some(o) = arrival.take()
        {
            o.insert_into(&mut headers);
        }
        let (client_host, mut forwarding) =
            upstream_headers(&mut headers, client_uri, cx, r.remote);
        match (forwarding.as_mut(), arrival) {
            (Some(f), arrival) => f.observed = arrival,
            // Not reached (the fields went in above when the request had those): kept so the
            // fields can never be lost.
            (None, Some(o)) => o.insert_into(&mut headers),
            (None, None) => {}
        }
        // Built in one place: every intermediate tuple was another copy of the headers,
        // the uri and the body.
        Forward {
            cx,
            route: &route,
            def,
            method: r.method.clone(),
            uri,
            headers,
            forwarding,
            client_host,
            body,
            body_error,
            hash_key,
            start: r.start,
            host_override,
            req: Some(run.req.clone()),
            on_pick: balancer.as_ref().map(|b| b as &dyn OnPick),
            first,
        }
    };
    // The access-log record is made from the plugin context in `respond`.
    fwd.run(&mut None).await
}

/// The `chash` key of the request as it is now.
fn hash_key(def: &crate::upstream::UpstreamDef, r: &mut RequestCtx) -> Option<String> {
    match def.kind {
        crate::config::resource::BalancerType::Chash => {
            r.settle_arrival();
            let view = super::request::View {
                method: r.method.as_str(),
                host: &r.host,
                path: &r.uri,
                query: &r.args,
                request_uri: &r.request_uri,
                remote: r.remote,
                server_port: r.local.port(),
                headers: r.headers_and_arrival().0,
                tls: r.tls.as_deref(),
            };
            def.hash_key(&view, None)
        }
        _ => None,
    }
}

/// The balancer phase of the route's plugins, run for each node the proxy picks.
struct BalancerPhase {
    run: Rc<Run>,
}

impl OnPick for BalancerPhase {
    fn picked<'a>(
        &'a self,
        node: &'a crate::upstream::NodeDef,
        try_no: u32,
        last_failure: Option<(&'static str, u16)>,
    ) -> PickFuture<'a> {
        Box::pin(async move {
            self.run.req.borrow_mut().balancer = Some(BalancerCtx {
                host: node.host.clone(),
                port: node.port,
                try_no,
                last_failure,
                peer: None,
                more_tries: None,
                timeouts: [None; 3],
            });
            let flow = self.run.phase(Phase::Balancer).await;
            let choice = self.run.req.borrow_mut().balancer.take();
            match flow {
                Flow::Answer(s) => Err(self.run.early_response(s)),
                Flow::Continue => Ok(choice
                    .map(|b| PickChoice {
                        peer: b.peer,
                        more_tries: b.more_tries,
                        timeouts: b.timeouts,
                    })
                    .unwrap_or_default()),
            }
        })
    }
}

/// header_filter, the body filter, and the log phase once the response is sent.
async fn respond(
    run: &Rc<Run>,
    cx: &Rc<ConnCtx>,
    resp: Response<Body>,
    up: Option<UpstreamDone>,
    mut log: Option<Box<LogData>>,
    id: sched::CtxId,
) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    {
        let mut r = run.req.borrow_mut();
        r.in_content = false;
        // The header filter may still change the status and headers.
        r.output_started = false;
        // Headers plugins set before there was a response override the response's own.
        let pre = std::mem::take(&mut r.resp_headers);
        r.resp_headers = std::mem::take(&mut parts.headers);
        let mut last = None;
        for (name, value) in pre {
            match name {
                Some(n) => {
                    r.resp_headers.insert(n.clone(), value);
                    last = Some(n);
                }
                None => {
                    if let Some(n) = &last {
                        r.resp_headers.append(n.clone(), value);
                    }
                }
            }
        }
        if !r.headers_sent || r.status == 0 {
            r.status = parts.status.as_u16();
        }
    }
    let mut status_override = None;
    if any_phase(&run.chains.borrow(), Phase::HeaderFilter) || run.handler("header_filter_by_lua") {
        let mut flow = run.phase(Phase::HeaderFilter).await;
        if matches!(flow, Flow::Continue) {
            flow = run
                .handler_phase("header_filter_by_lua", "header_filter")
                .await;
        }
        if let Flow::Answer(500) = flow {
            status_override = Some(500);
        }
    }
    run.filter_done();
    let filtering =
        any_phase(&run.chains.borrow(), Phase::BodyFilter) || run.handler("body_filter_by_lua");
    let needs_log_phase = any_phase(&run.chains.borrow(), Phase::Log) || run.handler("log_by_lua");
    // Lua runs after the head is sent (body filter, log, a streaming content handler): the
    // request stays reachable from Lua, with the response as sent.
    let lua_later =
        run.uses_lua && (filtering || needs_log_phase || run.req.borrow().content_running);
    let body = {
        let mut r = run.req.borrow_mut();
        r.headers_sent = true;
        if let Some(s) = status_override {
            // The header filter failed: the client gets a plain 500, as nginx sends it.
            drop(r);
            let page = error_page::page(StatusCode::INTERNAL_SERVER_ERROR);
            let (p, b) = page.into_parts();
            parts.status = p.status;
            parts.headers = p.headers;
            run.req.borrow_mut().status = s;
            b
        } else {
            parts.status = StatusCode::from_u16(r.status).unwrap_or(parts.status);
            parts.headers = if lua_later {
                r.resp_headers.clone()
            } else {
                std::mem::take(&mut r.resp_headers)
            };
            if filtering {
                // The filter may change the length: the body goes out chunked.
                parts.headers.remove(header::CONTENT_LENGTH);
            } else if let Some(len) = body.full_len()
                && r.method != http::Method::HEAD
                && parts
                    .headers
                    .get(header::CONTENT_LENGTH)
                    .is_some_and(|v| v.as_bytes() != len.to_string().as_bytes())
            {
                // A `Content-Length` Lua set that is not the length of the body it printed
                // would break the connection: the body's own length is sent.
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            }
            let gzip = r.gzip.filter(|_| {
                super::gzip::applies(
                    &r.method,
                    r.headers_and_arrival().0,
                    parts.status,
                    &parts.headers,
                )
            });
            if gzip.is_some() {
                super::gzip::prepare_headers(&mut parts.headers);
            }
            drop(r);
            let body = if filtering {
                Body::filtered(body, Box::new(LuaBodyFilter { run: run.clone() }))
            } else {
                body
            };
            // After the Lua body filters, as nginx's gzip filter comes after lua-nginx-module's.
            match gzip {
                Some(level) => Body::filtered(body, Box::new(super::gzip::GzipFilter::new(level))),
                None => body,
            }
        }
    };
    if let Some(l) = log.as_mut() {
        let r = run.req.borrow();
        // A plugin's `set_real_ip` is what the access log reports, as `$remote_addr` does.
        l.remote = r.remote;
        if let (Some(addr), Some(status)) = (r.upstream.addr, r.upstream.status) {
            l.upstream = Some(crate::observability::access::UpstreamRecord {
                addr,
                status: Some(status),
                connect_time: r.upstream.connect_time,
                header_time: r.upstream.header_time,
                response_time: r.upstream.response_time,
                host: String::new(),
                uri: r.upstream_target().into_owned(),
                scheme: r.upstream.scheme.unwrap_or("http"),
            });
        }
    }
    if run.uses_lua && !lua_later {
        // No Lua runs for this request any more.
        request::unregister(id);
    }
    let tail: Option<super::Tail> = if needs_log_phase || lua_later {
        let run = run.clone();
        Some(Box::new(move |bytes: u64, done: super::LogDone| {
            tokio::task::spawn_local(async move {
                run.req.borrow_mut().bytes_sent = bytes;
                if needs_log_phase {
                    run.phase(Phase::Log).await;
                    run.handler_phase("log_by_lua", "log").await;
                }
                if run.uses_lua {
                    request::unregister(id);
                }
                drop(done);
            });
        }))
    } else {
        None
    };
    finish(Response::from_parts(parts, body), cx, log, up, tail)
}

/// The body_filter phase, once per chunk and once more at the end.
struct LuaBodyFilter {
    run: Rc<Run>,
}

impl BodyFilter for LuaBodyFilter {
    fn filter(&mut self, chunk: Bytes, eof: bool) -> FilterFuture {
        let run = self.run.clone();
        Box::pin(async move {
            {
                let mut r = run.req.borrow_mut();
                r.arg_chunk = chunk;
                r.arg_eof = eof;
            }
            let mut flow = run.phase(Phase::BodyFilter).await;
            if matches!(flow, Flow::Continue) {
                flow = run.handler_phase("body_filter_by_lua", "body_filter").await;
            }
            run.filter_done();
            let mut r = run.req.borrow_mut();
            if let Flow::Answer(500) = flow {
                // Too late to change the status: cut the body, as nginx aborts it.
                return (Bytes::new(), true);
            }
            let data = std::mem::take(&mut r.arg_chunk);
            (data, r.arg_eof && !eof)
        })
    }
}
