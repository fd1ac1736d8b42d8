//! Prometheus metrics through the real binary: the native `prometheus` plugin counts requests
//! into the families APISIX's exporter declares (same names and labels), and the export
//! listener (`plugin_attr.prometheus.export_addr`) serves them with the node-wide gauges.
//! Every assertion compares a scrape with the requests this test made.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::*;

/// A gateway with `workers` workers whose export listener is on its own free port.
struct Node {
    gw: Gateway,
    export: u16,
    _echo: Echo,
}

const ROUTES: &str = "services:
  - id: s1
    upstream:
      nodes:
        \"127.0.0.1:ECHO\": 1
routes:
  - id: r1
    uri: /a
    plugins:
      prometheus: {}
    upstream:
      nodes:
        \"127.0.0.1:ECHO\": 1
  - id: r2
    uri: /b*
    hosts: [foo.com]
    service_id: s1
    plugins:
      prometheus: {}
      request-id: {}
  - id: r3
    uri: /c
    upstream:
      nodes:
        \"127.0.0.1:ECHO\": 1
  - id: r4
    uri: /gone
    plugins:
      prometheus: {}
    upstream:
      nodes:
        \"127.0.0.1:SILENT\": 1
";

/// A Lua plugin writing through the `prometheus` library into the namespace the native plugin
/// uses: the family both declare (`apisix_http_status`, same labels) and one of its own.
const FIXTURE: &str = r#"
local prometheus = require("prometheus")
local metrics
local function declare()
    if metrics then
        return
    end
    local p = prometheus.init("prometheus-metrics", "apisix_")
    metrics = {
        status = p:counter("http_status", "HTTP status codes per service in APISIX",
            {"code", "route", "matched_uri", "matched_host", "service", "consumer", "node",
             "request_type", "request_llm_model", "llm_model", "response_source"}),
        hits = p:counter("fixture_hits_total", "Requests the fixture logged", {"route"}),
    }
end
return {
    version = 0.1,
    priority = 400,
    name = "fixture-prom",
    schema = {type = "object"},
    init = declare,
    log = function(_, ctx)
        declare()
        metrics.status:inc(1, {ngx.var.status, ctx.route_id, "/both", "", "", "",
            "127.0.0.1", "traditional_http", "", "", "upstream"})
        metrics.hits:inc(1, {ctx.route_id})
    end,
}
"#;

const SHARED_ROUTES: &str = "routes:
  - id: r5
    uri: /both
    plugins:
      prometheus: {}
      fixture-prom: {}
    upstream:
      nodes:
        \"127.0.0.1:ECHO\": 1
";

impl Node {
    fn start(workers: u32, extra: &str) -> Node {
        Node::start_with(workers, extra, ROUTES, &[])
    }

    fn start_with(workers: u32, extra: &str, routes: &str, files: &[(&str, &str)]) -> Node {
        let echo = Echo::start("metrics-backend");
        let port = free_port();
        let export = free_port();
        let config = config_yaml(port, "").replace(
            "worker_processes: 1",
            &format!("worker_processes: {workers}"),
        );
        // The helpers turn the export listener off; this node has it, on a free port.
        let config = config.replace(
            NO_EXPORT,
            &format!(
                "plugin_attr:\n  prometheus:\n    export_addr:\n      ip: 127.0.0.1\n      port: {export}\n{extra}"
            ),
        );
        let routes = routes
            .replace("ECHO", &echo.port.to_string())
            .replace("SILENT", &free_port().to_string());
        let gw = Gateway::start_with_files(&config, port, &routes_file(&routes), files);
        Node {
            gw,
            export,
            _echo: echo,
        }
    }

    /// A scrape once `ready` holds: the log phase runs after the response went out (as in
    /// nginx), so the last requests' writes may land just after the client saw the answers.
    fn scrape_when(&self, ready: impl Fn(&Scrape) -> bool) -> Scrape {
        wait_until(
            "the metrics of the requests made",
            Duration::from_secs(10),
            || ready(&self.scrape()),
        );
        self.scrape()
    }

    fn scrape(&self) -> Scrape {
        let r = request(self.export, "GET", "/apisix/prometheus/metrics", &[], b"");
        assert_eq!(r.status, 200, "{r:?}\n{}", self.gw.error_log());
        assert!(
            r.header("content-type")
                .is_some_and(|t| t.starts_with("text/plain")),
            "{r:?}"
        );
        Scrape::parse(&r.body)
    }
}

/// A parsed exposition: `name{labels}` → value, and the `# TYPE` of each family.
struct Scrape {
    text: String,
    samples: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = HashMap::new();
        let mut types = HashMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                if let (Some(n), Some(t)) = (it.next(), it.next()) {
                    types.insert(n.to_string(), t.to_string());
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
            let value: f64 = value.parse().expect("a sample value is a number");
            assert!(
                samples.insert(series.to_string(), value).is_none(),
                "series {series} appears twice:\n{text}"
            );
        }
        Scrape {
            text: text.to_string(),
            samples,
            types,
        }
    }

    fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    fn value(&self, series: &str) -> f64 {
        self.get(series)
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.text))
    }

    /// Every sample of `name` whose labels contain each of `with` (`k="v"` strings).
    fn matching(&self, name: &str, with: &[&str]) -> Vec<(String, f64)> {
        let mut out: Vec<(String, f64)> = self
            .samples
            .iter()
            .filter(|(k, _)| {
                k.split_once('{')
                    .is_some_and(|(n, labels)| n == name && with.iter().all(|w| labels.contains(w)))
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

fn status_series(
    code: u16,
    route: &str,
    uri: &str,
    host: &str,
    service: &str,
    source: &str,
) -> String {
    format!(
        "apisix_http_status{{code=\"{code}\",route=\"{route}\",matched_uri=\"{uri}\",matched_host=\"{host}\",service=\"{service}\",consumer=\"\",node=\"127.0.0.1\",request_type=\"traditional_http\",request_llm_model=\"\",llm_model=\"\",response_source=\"{source}\"}}"
    )
}

fn common_labels(kind: &str, route: &str, service: &str) -> String {
    format!(
        "type=\"{kind}\",route=\"{route}\",service=\"{service}\",consumer=\"\",node=\"127.0.0.1\",request_type=\"traditional_http\",request_llm_model=\"\",llm_model=\"\""
    )
}

fn get(port: u16, path: &str, host: Option<&str>) -> Resp {
    let headers: Vec<(&str, &str)> = host.map(|h| ("Host", h)).into_iter().collect();
    request(port, "GET", path, &headers, b"")
}

#[test]
fn counters_move_by_exactly_the_requests_made_with_apisix_names_and_labels() {
    let node = Node::start(1, "");
    let port = node.gw.port;
    for _ in 0..3 {
        let r = get(port, "/a", None);
        assert_eq!(
            r.status,
            200,
            "{r:?}\n{}\n{}",
            node.gw.error_log(),
            node.gw.stderr()
        );
    }
    for _ in 0..2 {
        assert_eq!(get(port, "/b/x", Some("foo.com")).status, 200);
    }
    // r3 has no prometheus plugin: not counted.
    assert_eq!(get(port, "/c", None).status, 200);
    // r4's node refuses connections: the gateway's 502 is counted, with the node it tried.
    assert_eq!(get(port, "/gone", None).status, 502);

    let s = node.scrape_when(|s| {
        s.get(&status_series(200, "r1", "/a", "", "", "upstream")) == Some(3.0)
            && s.get(&status_series(
                200, "r2", "/b*", "foo.com", "s1", "upstream",
            )) == Some(2.0)
            && s.matching("apisix_http_status", &["route=\"r4\""]).len() == 1
    });
    assert_eq!(s.types["apisix_http_status"], "counter");
    assert_eq!(s.types["apisix_http_latency"], "histogram");
    assert_eq!(s.types["apisix_bandwidth"], "counter");
    assert_eq!(
        s.value(&status_series(200, "r1", "/a", "", "", "upstream")),
        3.0
    );
    // A route with only native plugins (prometheus, request-id) behind a host and a service.
    assert_eq!(
        s.value(&status_series(
            200, "r2", "/b*", "foo.com", "s1", "upstream"
        )),
        2.0
    );
    assert!(
        s.matching("apisix_http_status", &["route=\"r3\""])
            .is_empty(),
        "{}",
        s.text
    );
    let gone = s.matching(
        "apisix_http_status",
        &["code=\"502\"", "route=\"r4\"", "node=\"127.0.0.1\""],
    );
    assert_eq!(gone.len(), 1, "{}", s.text);
    assert_eq!(gone[0].1, 1.0);

    // Histograms: per series, buckets are cumulative, +Inf equals _count, _count the requests.
    for (route, service, n) in [("r1", "", 3.0), ("r2", "s1", 2.0)] {
        for kind in ["request", "upstream", "apisix"] {
            let labels = common_labels(kind, route, service);
            let count = s.value(&format!("apisix_http_latency_count{{{labels}}}"));
            assert_eq!(count, n, "{kind} {route}");
            let sum = s.value(&format!("apisix_http_latency_sum{{{labels}}}"));
            assert!(sum >= 0.0, "{kind} {route} sum {sum}");
            let mut buckets: Vec<(f64, f64)> = s
                .matching("apisix_http_latency_bucket", &[&labels])
                .into_iter()
                .map(|(k, v)| {
                    let le = k
                        .rsplit_once("le=\"")
                        .and_then(|(_, r)| r.strip_suffix("\"}"))
                        .expect("a bucket has le");
                    let le = if le == "+Inf" {
                        f64::INFINITY
                    } else {
                        le.parse().expect("le is a number")
                    };
                    (le, v)
                })
                .collect();
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert_eq!(buckets.len(), 16, "15 bounds and +Inf: {buckets:?}");
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "not cumulative: {buckets:?}"
            );
            assert_eq!(buckets.last().map(|b| b.1), Some(count));
        }
        // Bandwidth: egress carries at least the responses' heads, ingress the request heads.
        let egress = s.value(&format!(
            "apisix_bandwidth{{{}}}",
            common_labels("egress", route, service)
        ));
        let ingress = s.value(&format!(
            "apisix_bandwidth{{{}}}",
            common_labels("ingress", route, service)
        ));
        assert!(egress >= n * 17.0, "{route} egress {egress}");
        assert!(ingress >= n * 16.0, "{route} ingress {ingress}");
    }

    // The node-wide gauges APISIX's exporter sets.
    assert_eq!(s.types["apisix_nginx_http_current_connections"], "gauge");
    assert!(s.value("apisix_nginx_http_current_connections{state=\"accepted\"}") >= 7.0);
    assert!(s.value("apisix_nginx_http_current_connections{state=\"active\"}") >= 1.0);
    assert!(s.value("apisix_http_requests_total") >= 7.0);
    assert_eq!(
        s.matching("apisix_node_info", &["version=\"3.11.0\""])
            .len(),
        1
    );

    // A later scrape: the counters moved by exactly the requests made since.
    for _ in 0..4 {
        assert_eq!(get(port, "/a", None).status, 200);
    }
    let t = node
        .scrape_when(|t| t.get(&status_series(200, "r1", "/a", "", "", "upstream")) == Some(7.0));
    assert_eq!(
        t.value(&status_series(200, "r1", "/a", "", "", "upstream")),
        7.0
    );
    assert_eq!(
        t.value(&format!(
            "apisix_http_latency_count{{{}}}",
            common_labels("request", "r1", "")
        )),
        7.0
    );
    assert_eq!(
        t.value(&status_series(
            200, "r2", "/b*", "foo.com", "s1", "upstream"
        )),
        2.0
    );
}

#[test]
fn two_workers_write_one_total() {
    let node = Node::start(2, "");
    let port = node.gw.port;
    // Each request on a connection of its own, so both workers' accept loops take some.
    let n = 40;
    for _ in 0..n {
        assert_eq!(get(port, "/a", None).status, 200);
    }
    let s = node.scrape_when(|s| {
        s.get(&status_series(200, "r1", "/a", "", "", "upstream")) == Some(n as f64)
    });
    assert_eq!(
        s.value(&status_series(200, "r1", "/a", "", "", "upstream")),
        n as f64
    );
    assert_eq!(
        s.value(&format!(
            "apisix_http_latency_count{{{}}}",
            common_labels("apisix", "r1", "")
        )),
        n as f64
    );
}

#[test]
fn export_listener_serves_only_the_export_uri_and_can_be_switched_off() {
    let node = Node::start(1, "    export_uri: /m\n");
    assert_eq!(get(node.gw.port, "/a", None).status, 200);
    assert_eq!(request(node.export, "GET", "/m", &[], b"").status, 200);
    assert_eq!(
        request(node.export, "GET", "/apisix/prometheus/metrics", &[], b"").status,
        404
    );
    assert_eq!(request(node.export, "POST", "/m", &[], b"").status, 404);
    // The data port does not answer the export uri by itself.
    assert_eq!(get(node.gw.port, "/m", None).status, 404);
    drop(node);

    let off = Node::start(1, "    enable_export_server: false\n");
    assert_eq!(get(off.gw.port, "/a", None).status, 200);
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", off.export)).is_err(),
        "the export port must stay closed"
    );
}

#[test]
fn the_lua_library_and_the_native_plugin_share_one_registry() {
    let node = Node::start_with(
        2,
        "",
        SHARED_ROUTES,
        &[("lua/plugins/fixture-prom.lua", FIXTURE)],
    );
    for _ in 0..3 {
        let r = get(node.gw.port, "/both", None);
        assert_eq!(r.status, 200, "{r:?}\n{}", node.gw.error_log());
    }
    // `Scrape::parse` refuses a series listed twice: one family, one series, both writers.
    let s = node.scrape_when(|s| {
        s.get("apisix_fixture_hits_total{route=\"r5\"}") == Some(3.0)
            && s.get(&status_series(200, "r5", "/both", "", "", "upstream")) == Some(6.0)
    });
    assert_eq!(
        s.value(&status_series(200, "r5", "/both", "", "", "upstream")),
        6.0,
        "3 requests, each counted by the native plugin and by the Lua one"
    );
    assert_eq!(s.value("apisix_fixture_hits_total{route=\"r5\"}"), 3.0);
    assert_eq!(s.value("apisix_nginx_metric_errors_total"), 0.0);
    assert!(
        s.matching("apisix_http_latency_count", &["route=\"r5\""])
            .iter()
            .all(|(_, v)| *v == 3.0),
        "{}",
        s.text
    );
}

/// Reports what `core.config.new()` tells APISIX's exporter about the config server.
const PROBE: &str = r#"
local core = require("apisix.core")
return {
    version = 0.1,
    priority = 100,
    name = "fixture-etcd-probe",
    schema = {type = "object"},
    access = function()
        local c = core.config.new()
        local v, err = c:server_version()
        local res, gerr = c:getkey("/phantomkey")
        return 200, {type = c.type, etcdserver = v and v.etcdserver, err = err,
                     index = res and res.headers["X-Etcd-Index"], gerr = gerr}
    end,
}
"#;

#[test]
fn core_config_probes_the_etcd_the_node_uses_as_the_exporter_reads_it() {
    let etcd = Etcd::start();
    let (gw, admin) = Gateway::start_etcd(
        "traditional",
        &[etcd.url()],
        "",
        "",
        &[("lua/plugins/fixture-etcd-probe.lua", PROBE)],
    );
    let put = admin_call(
        admin,
        "PUT",
        "/apisix/admin/routes/probe",
        Some(&serde_json::json!({"uri": "/probe", "plugins": {"fixture-etcd-probe": {}}})),
    );
    assert!(put.status < 300, "{put:?}");
    let written = etcd.revision();
    wait_until("the probe route", Duration::from_secs(10), || {
        get(gw.port, "/probe", None).status == 200
    });
    let body = get(gw.port, "/probe", None).json();
    assert_eq!(body["type"], "etcd", "{body}");
    assert!(
        body["etcdserver"]
            .as_str()
            .is_some_and(|v| v.starts_with('3')),
        "{body}\n{}",
        gw.error_log()
    );
    // etcd's revision at the read: at least the route's write, at most now.
    let index = body["index"].as_i64().unwrap_or(-1);
    assert!(
        index >= written && index <= etcd.revision(),
        "{body} (written at {written})"
    );
}

/// An auth plugin that takes every request as consumer `jack`.
const AUTH: &str = r#"
return {
    version = 0.1,
    priority = 2500,
    type = "auth",
    name = "fixture-auth",
    schema = {type = "object"},
    rewrite = function(_, ctx)
        ctx.consumer_name = "jack"
    end,
}
"#;

const AUTH_ROUTES: &str = "consumers:
  - username: jack
routes:
  - id: r6
    uri: /who
    plugins:
      fixture-auth: {}
      prometheus: {}
    upstream:
      nodes:
        \"127.0.0.1:ECHO\": 1
";

#[test]
fn the_consumer_an_auth_plugin_identified_is_a_label() {
    let node = Node::start_with(
        1,
        "",
        AUTH_ROUTES,
        &[("lua/plugins/fixture-auth.lua", AUTH)],
    );
    for _ in 0..2 {
        let r = get(node.gw.port, "/who", None);
        assert_eq!(r.status, 200, "{r:?}\n{}", node.gw.error_log());
    }
    let series = "apisix_http_status{code=\"200\",route=\"r6\",matched_uri=\"/who\",matched_host=\"\",service=\"\",consumer=\"jack\",node=\"127.0.0.1\",request_type=\"traditional_http\",request_llm_model=\"\",llm_model=\"\",response_source=\"upstream\"}";
    let s = node.scrape_when(|s| s.get(series) == Some(2.0));
    assert_eq!(s.value(series), 2.0);
}
