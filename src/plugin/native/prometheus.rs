//! `prometheus` (native): counts every request of a route into the families APISIX's
//! prometheus exporter declares, under the same names and labels, so dashboards built for
//! APISIX read moongate's numbers unchanged:
//!
//! - `apisix_http_status{code, route, matched_uri, matched_host, service, consumer, node,
//!   request_type, request_llm_model, llm_model, response_source}` (counter);
//! - `apisix_http_latency{type, route, service, consumer, node, request_type,
//!   request_llm_model, llm_model}` (histogram, milliseconds; `type` = `request`,
//!   `upstream` when an upstream answered, `apisix`);
//! - `apisix_bandwidth{type, route, service, consumer, node, request_type,
//!   request_llm_model, llm_model}` (counter, bytes; `type` = `ingress`, `egress`).
//!
//! It writes into the process-wide registry (`observability::metrics`), namespace
//! `prometheus-metrics`, the one the `prometheus` Lua library gives APISIX's exporter: a family
//! registered by both sides is one family (same name, labels and buckets), so a scrape never
//! shows a series twice. The export listener renders that namespace (`proxy::metrics_export`).
//!
//! A Lua `prometheus.lua` in the plugin directories (APISIX's own) takes the name over, as for
//! every native plugin; this one is what runs without it.
//!
//! The request path does no locking: each worker thread keeps the series it already wrote in
//! a cache of its own keyed by the label values, so a request costs one key build, one hash
//! lookup and an atomic add per series (a new label combination takes the family's lock once).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};

use serde_json::Value;

use super::{Answer, NativePlugin, Prepared, phases, prepared, schema};
use crate::observability::metrics::{self, Family, FamilyDef, Kind, Series};
use crate::plugin::{Phase, PhaseSet, RequestCtx};

/// The namespace APISIX's exporter initialises the Lua library with.
pub const NAMESPACE: &str = "prometheus-metrics";

/// Latency buckets in milliseconds, APISIX's default (1 ms to 60 s).
const DEFAULT_BUCKETS: [f64; 15] = [
    1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0, 30000.0,
    60000.0,
];

/// Series a worker keeps per family before it starts over (label cardinality is the user's;
/// the cache must not grow with it without bound).
const CACHE_MAX: usize = 4096;

const STATUS_LABELS: [&str; 11] = [
    "code",
    "route",
    "matched_uri",
    "matched_host",
    "service",
    "consumer",
    "node",
    "request_type",
    "request_llm_model",
    "llm_model",
    "response_source",
];
const LATENCY_LABELS: [&str; 8] = [
    "type",
    "route",
    "service",
    "consumer",
    "node",
    "request_type",
    "request_llm_model",
    "llm_model",
];

/// The plugin, with the node's `plugin_attr.prometheus` settings and the dictionary size.
pub struct Prometheus {
    prefix: String,
    buckets: Vec<f64>,
    capacity: usize,
    families: OnceLock<Result<Families, String>>,
}

struct Families {
    status: Arc<Family>,
    latency: Arc<Family>,
    bandwidth: Arc<Family>,
}

struct Conf {
    prefer_name: bool,
}

impl Prometheus {
    /// `attr` is `plugin_attr.prometheus` (`metric_prefix`, `default_buckets`), `capacity` the
    /// size of the `prometheus-metrics` dictionary, which bounds the metrics' memory.
    pub fn new(attr: &Value, capacity: usize) -> Prometheus {
        let prefix = attr["metric_prefix"]
            .as_str()
            .unwrap_or("apisix_")
            .to_string();
        let buckets = match attr["default_buckets"].as_array() {
            Some(list) if !list.is_empty() => list.iter().filter_map(Value::as_f64).collect(),
            _ => DEFAULT_BUCKETS.to_vec(),
        };
        Prometheus {
            prefix,
            buckets,
            capacity,
            families: OnceLock::new(),
        }
    }

    /// Registers the families once per process (every worker, and the Lua library, gets the
    /// same ones).
    fn families(&self) -> Result<&Families, String> {
        self.families
            .get_or_init(|| {
                let ns = metrics::global().namespace(NAMESPACE, self.capacity);
                let def = |name: &str, help: &str, kind, labels: &[&str], buckets: &[f64]| {
                    ns.register(FamilyDef {
                        name: format!("{}{name}", self.prefix),
                        help: help.to_string(),
                        kind,
                        labels: labels.iter().map(|l| l.to_string()).collect(),
                        buckets: buckets.to_vec(),
                        exptime: None,
                    })
                    .map_err(|e| format!("prometheus: {e}"))
                };
                Ok(Families {
                    status: def(
                        "http_status",
                        "HTTP status codes per service in APISIX",
                        Kind::Counter,
                        &STATUS_LABELS,
                        &[],
                    )?,
                    latency: def(
                        "http_latency",
                        "HTTP request latency in milliseconds per service in APISIX",
                        Kind::Histogram,
                        &LATENCY_LABELS,
                        &self.buckets,
                    )?,
                    bandwidth: def(
                        "bandwidth",
                        "Total bandwidth in bytes consumed per service in APISIX",
                        Kind::Counter,
                        &LATENCY_LABELS,
                        &[],
                    )?,
                })
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// One family's series a worker already wrote, by label key.
type SeriesCache = HashMap<Box<str>, Arc<Series>>;

thread_local! {
    /// This worker's series, per family (by address).
    static SERIES: RefCell<HashMap<usize, SeriesCache>> = RefCell::new(HashMap::new());
}

/// Writes `v` into the series of `values` in `family` through the worker's cache.
fn write(family: &Arc<Family>, values: &[&str], v: f64, observe: bool) {
    let mut key = String::with_capacity(values.iter().map(|s| s.len() + 1).sum());
    for (i, s) in values.iter().enumerate() {
        if i > 0 {
            key.push('\u{1}');
        }
        key.push_str(s);
    }
    let fam = Arc::as_ptr(family) as usize;
    let apply = |s: &Series| if observe { s.observe(v) } else { s.add(v) };
    SERIES.with(|cache| {
        let mut cache = cache.borrow_mut();
        let cache = cache.entry(fam).or_default();
        if let Some(s) = cache.get(key.as_str())
            && apply(s)
        {
            return;
        }
        // Not cached, or deleted/expired meanwhile: look it up (or make it) in the family.
        match family.series(values) {
            Ok(s) => {
                apply(&s);
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key.into_boxed_str(), s);
            }
            Err(e) => log::error!("prometheus: {e}"),
        }
    });
}

impl NativePlugin for Prometheus {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn priority(&self) -> i64 {
        500
    }

    fn phases(&self) -> PhaseSet {
        phases(&[Phase::Log])
    }

    fn prepare(&self, v: &Value) -> Result<Prepared, String> {
        let o = schema::object(v)?;
        let prefer_name = schema::boolean(o, "prefer_name")?.unwrap_or(false);
        self.families()?;
        Ok(Arc::new(Conf { prefer_name }))
    }

    fn run(
        &self,
        _phase: Phase,
        conf: &Prepared,
        req: &mut RequestCtx,
    ) -> Result<Option<Answer>, String> {
        let c: &Conf = prepared(conf, self.name())?;
        let f = self.families()?;
        let route = match (req.route_id(), req.route_name()) {
            (_, Some(name)) if c.prefer_name => name,
            (Some(id), _) => id,
            (None, _) => "",
        };
        let service = req.service_id().unwrap_or("");
        let node = req
            .upstream
            .addr
            .map(|a| a.ip().to_string())
            .unwrap_or_default();
        // What a Lua plugin of this request wrote, else APISIX's nginx.conf values.
        let var = |name: &str, default: &'static str| -> String {
            req.vars
                .get(name)
                .cloned()
                .unwrap_or_else(|| default.to_string())
        };
        let consumer = req.consumer_name.clone().unwrap_or_default();
        let request_type = var("request_type", "traditional_http");
        let req_model = var("request_llm_model", "");
        let model = var("llm_model", "");
        let code = req.status.to_string();
        let source = match (req.upstream.status, req.upstream.header_time) {
            (None, _) => "apisix",
            (Some(_), Some(_)) => "upstream",
            (Some(_), None) => "nginx",
        };
        let total_ms = req.start.elapsed().as_secs_f64() * 1000.0;
        let common = [
            route,
            service,
            &consumer,
            &node,
            &request_type,
            &req_model,
            &model,
        ];
        let with = |kind: &'static str| -> [&str; 8] {
            [
                kind, common[0], common[1], common[2], common[3], common[4], common[5], common[6],
            ]
        };
        write(&f.latency, &with("request"), total_ms, true);
        let apisix_ms = match req.upstream.response_time {
            Some(up) => {
                let up_ms = up.as_secs_f64() * 1000.0;
                write(&f.latency, &with("upstream"), up_ms, true);
                (total_ms - up_ms).max(0.0)
            }
            None => total_ms,
        };
        write(&f.latency, &with("apisix"), apisix_ms, true);
        write(
            &f.bandwidth,
            &with("ingress"),
            req.request_length as f64,
            false,
        );
        write(&f.bandwidth, &with("egress"), req.bytes_sent as f64, false);
        // The status last: a reader that sees a request in `http_status` sees all of it.
        write(
            &f.status,
            &[
                &code,
                route,
                req.matched_uri.as_deref().unwrap_or(""),
                req.matched_host.as_deref().unwrap_or(""),
                service,
                &consumer,
                &node,
                &request_type,
                &req_model,
                &model,
                source,
            ],
            1.0,
            false,
        );

        Ok(None)
    }
}
