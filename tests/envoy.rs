//! The Envoy provider through the real binary: match and route fields, Envoy's domain
//! precedence, first-match order, clusters and lb policies, plugins from the Lua filter
//! metadata running in their phases with checked confs, warnings for ignored paths, errors for
//! broken structure, reload; and the `examples/envoy-compose` demo, started without Docker by its
//! `run-local.sh`, answering every `curl` of its README as documented.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;

const TRACE: &str = include_str!("../t/fixtures/plugins/fixture-trace.lua");

/// A bootstrap with one listener on `port` whose route config holds `vhosts`.
fn bootstrap(port: u16, vhosts: Value, clusters: Value) -> String {
    json!({
        "static_resources": {
            "listeners": [{
                "name": "ingress",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "ingress_http",
                        "codec_type": "AUTO",
                        "route_config": {"name": "local", "virtual_hosts": vhosts},
                        "http_filters": [{"name": "envoy.filters.http.router"}]
                    }
                }]}]
            }],
            "clusters": clusters
        }
    })
    .to_string()
}

/// A STATIC cluster of loopback endpoints `(port, weight)`.
fn cluster(name: &str, lb: &str, endpoints: &[(u16, u32)]) -> Value {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(port, w)| {
            json!({
                "endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": port}}},
                "load_balancing_weight": w
            })
        })
        .collect();
    json!({
        "name": name, "connect_timeout": "0.5s", "type": "STATIC", "lb_policy": lb,
        "load_assignment": {"cluster_name": name, "endpoints": [{"lb_endpoints": eps}]}
    })
}

fn direct(m: Value, status: u16, body: &str) -> Value {
    json!({"match": m, "direct_response": {"status": status, "body": {"inline_string": body}}})
}

/// Starts moongate with `deployment.role_data_plane.config_provider: envoy`.
fn start(port: u16, envoy: &str, files: &[(&str, &str)]) -> Gateway {
    let config = config_yaml(port, "").replace(
        "config_provider: yaml",
        "config_provider: envoy\n    envoy_file: conf/envoy.yaml",
    );
    let mut all = vec![("conf/envoy.yaml", envoy)];
    all.extend_from_slice(files);
    Gateway::start_with_files(&config, port, "", &all)
}

fn rewrite_envoy(gw: &Gateway, text: &str) {
    let tmp = gw.dir.0.join("conf/envoy.yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, gw.dir.0.join("conf/envoy.yaml")).unwrap();
}

fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> Resp {
    request(port, "GET", path, headers, b"")
}

/// `moongate check --envoy FILE`: (success, stdout + stderr).
fn check(envoy: &str) -> (bool, String) {
    let dir = TempDir::new("envoy-check");
    let file = dir.0.join("envoy.yaml");
    std::fs::write(&file, envoy).unwrap();
    let out = Command::new(BIN)
        .args(["check", "-p"])
        .arg(&dir.0)
        .arg("--envoy")
        .arg(&file)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn routes_match_paths_headers_and_queries_first_match_wins() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let port = free_port();
    let to = |c: &str| json!({"cluster": c});
    let routes = json!([
        {"match": {"path": "/exact"}, "route": to("b")},
        {"match": {"safe_regex": {"regex": "/items/[0-9]+"}}, "route": to("b")},
        {"match": {"prefix": "/api", "headers": [{"name": "x-version", "exact_match": "v2"}]}, "route": to("b")},
        {"match": {"prefix": "/api", "headers": [{"name": "x-tenant", "string_match": {"prefix": "acme", "ignore_case": true}}]}, "route": to("b")},
        {"match": {"prefix": "/api", "headers": [{"name": "x-debug", "present_match": true}]}, "direct_response": {"status": 299, "body": {"inline_string": "debug"}}},
        {"match": {"prefix": "/api", "headers": [{"name": "x-user", "exact_match": "bot", "invert_match": true}], "query_parameters": [{"name": "q", "string_match": {"exact": "1"}}]}, "direct_response": {"status": 298}},
        {"match": {"prefix": "/api"}, "route": to("a")},
        direct(json!({"prefix": "/first"}), 201, "first"),
        direct(json!({"prefix": "/first"}), 202, "second"),
        direct(json!({"prefix": "/CaSe", "case_sensitive": false}), 203, "case"),
        {"match": {"prefix": "/"}, "route": to("a")}
    ]);
    let envoy = bootstrap(
        port,
        json!([{"name": "all", "domains": ["*"], "routes": routes}]),
        json!([
            cluster("a", "ROUND_ROBIN", &[(a.port, 1)]),
            cluster("b", "ROUND_ROBIN", &[(b.port, 1)])
        ]),
    );
    let _gw = start(port, &envoy, &[]);
    let server = |path: &str, h: &[(&str, &str)]| {
        let r = get(port, path, h);
        format!(
            "{} {}",
            r.status,
            r.header("x-echo-server").unwrap_or(&r.body)
        )
    };
    assert_eq!(server("/exact", &[]), "200 b");
    assert_eq!(server("/exact/more", &[]), "200 a");
    assert_eq!(server("/items/42", &[]), "200 b");
    // The regex must match the whole path, and never the query.
    assert_eq!(server("/items/42x", &[]), "200 a");
    assert_eq!(server("/items/x?n=/items/1", &[]), "200 a");
    assert_eq!(server("/api/x", &[("X-Version", "v2")]), "200 b");
    assert_eq!(server("/api/x", &[("X-Version", "v1")]), "200 a");
    assert_eq!(server("/api/x", &[("X-Tenant", "ACME-corp")]), "200 b");
    assert_eq!(server("/api/x", &[("X-Debug", "")]), "299 debug");
    assert_eq!(server("/api/x?q=1", &[]), "298 ");
    assert_eq!(server("/api/x?q=1", &[("X-User", "bot")]), "200 a");
    assert_eq!(server("/api/x?q=2", &[]), "200 a");
    // Two routes on the same prefix: the first in the file wins.
    assert_eq!(server("/first/x", &[]), "201 first");
    assert_eq!(server("/case/X", &[]), "203 case");
    assert_eq!(server("/elsewhere", &[]), "200 a");
}

#[test]
fn virtual_hosts_are_chosen_by_envoy_domain_precedence() {
    let port = free_port();
    let vh = |name: &str, domains: Value, body: &str| json!({"name": name, "domains": domains, "routes": [direct(json!({"prefix": "/"}), 200, body)]});
    let envoy = bootstrap(
        port,
        json!([
            vh("any", json!(["*"]), "any"),
            vh("prefix", json!(["api.*"]), "prefix"),
            vh("short-suffix", json!(["*.example.com"]), "short-suffix"),
            vh("long-suffix", json!(["*.b.example.com"]), "long-suffix"),
            {"name": "exact", "domains": ["api.example.com", "www.example.com"],
             "routes": [direct(json!({"path": "/only"}), 200, "exact")]}
        ]),
        json!([]),
    );
    let _gw = start(port, &envoy, &[]);
    let at = |host: &str, path: &str| {
        let r = get(port, path, &[("Host", host)]);
        format!("{} {}", r.status, r.body)
    };
    assert_eq!(at("api.example.com", "/only"), "200 exact");
    assert_eq!(at("WWW.Example.com:8080", "/only"), "200 exact");
    // The exact virtual host has no route for this path: 404, no fall-through to a wider one.
    assert_eq!(at("api.example.com", "/else"), "404 ");
    assert_eq!(at("x.b.example.com", "/"), "200 long-suffix");
    assert_eq!(at("x.example.com", "/"), "200 short-suffix");
    // `*.example.com` needs something before the dot.
    assert_eq!(at("example.com", "/"), "200 any");
    assert_eq!(at("api.other.test", "/"), "200 prefix");
    assert_eq!(at("other.test", "/"), "200 any");
}

#[test]
fn without_a_matching_virtual_host_the_answer_is_envoys_empty_404() {
    let port = free_port();
    let envoy = bootstrap(
        port,
        json!([{"name": "one", "domains": ["one.test"], "routes": [direct(json!({"prefix": "/"}), 200, "one")]}]),
        json!([]),
    );
    let _gw = start(port, &envoy, &[]);
    assert_eq!(get(port, "/", &[("Host", "one.test")]).body, "one");
    let r = get(port, "/", &[("Host", "two.test")]);
    assert_eq!((r.status, r.body.as_str()), (404, ""));
}

#[test]
fn route_actions_rewrite_redirect_answer_retry_and_time_out() {
    let echo = Echo::start("e");
    let dead = free_port();
    let silent = silent_backend();
    let port = free_port();
    let routes = json!([
        {"match": {"prefix": "/old/"}, "route": {"cluster": "e", "prefix_rewrite": "/new/", "host_rewrite_literal": "backend.internal"}},
        {"match": {"prefix": "/go"}, "redirect": {"https_redirect": true, "host_redirect": "secure.test", "prefix_rewrite": "/gone"}},
        {"match": {"path": "/moved"}, "redirect": {"path_redirect": "/here?x=1", "response_code": "FOUND"}},
        {"match": {"prefix": "/strip"}, "redirect": {"port_redirect": 8443, "strip_query": true}},
        {"match": {"prefix": "/retry"}, "route": {"cluster": "flaky", "retry_policy": {"retry_on": "connect-failure", "num_retries": 1}}},
        {"match": {"prefix": "/noretry"}, "route": {"cluster": "flaky"}},
        {"match": {"prefix": "/slow"}, "route": {"cluster": "silent", "timeout": "0.5s"}}
    ]);
    let envoy = bootstrap(
        port,
        json!([{"name": "v", "domains": ["*"], "routes": routes}]),
        json!([
            cluster("e", "ROUND_ROBIN", &[(echo.port, 1)]),
            cluster("flaky", "ROUND_ROBIN", &[(dead, 1), (echo.port, 1)]),
            cluster("silent", "ROUND_ROBIN", &[(silent, 1)])
        ]),
    );
    let gw = start(port, &envoy, &[]);
    let r = get(port, "/old/page?a=1", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    let up = r.json();
    assert_eq!(up["uri"], "/new/page?a=1");
    assert_eq!(up["headers"]["host"], "backend.internal");

    let r = get(port, "/go/x?y=2", &[("Host", "shop.test:8080")]);
    assert_eq!(
        (r.status, r.header("location")),
        (301, Some("https://secure.test/gone/x?y=2"))
    );
    let r = get(port, "/moved?old=1", &[]);
    assert_eq!(
        (r.status, r.header("location")),
        (302, Some("http://localhost/here?x=1"))
    );
    let r = get(port, "/strip/a?b=c", &[("Host", "h.test:80")]);
    assert_eq!(r.header("location"), Some("http://h.test:8443/strip/a"));

    // Round robin alternates between the dead node and the live one: without retries one of
    // two requests fails, with `num_retries: 1` none does.
    let no_retry: Vec<u16> = (0..4).map(|_| get(port, "/noretry", &[]).status).collect();
    assert!(no_retry.contains(&502), "{no_retry:?}");
    let retry: Vec<u16> = (0..4).map(|_| get(port, "/retry", &[]).status).collect();
    assert_eq!(retry, vec![200; 4]);

    let t = Instant::now();
    assert_eq!(get(port, "/slow", &[]).status, 504);
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    drop(gw);
}

#[test]
fn clusters_balance_by_their_lb_policy_and_weights() {
    let (a, b) = (Echo::start("a"), Echo::start("b"));
    let port = free_port();
    let routes = json!([
        {"match": {"prefix": "/rr"}, "route": {"cluster": "weighted"}},
        {"match": {"prefix": "/hash"}, "route": {"cluster": "hashed"}},
        {"match": {"prefix": "/least"}, "route": {"cluster": "least"}},
        {"match": {"prefix": "/random"}, "route": {"cluster": "random"}}
    ]);
    let envoy = bootstrap(
        port,
        json!([{"name": "v", "domains": ["*"], "routes": routes}]),
        json!([
            cluster("weighted", "ROUND_ROBIN", &[(a.port, 3), (b.port, 1)]),
            cluster("hashed", "RING_HASH", &[(a.port, 1), (b.port, 1)]),
            cluster("least", "LEAST_REQUEST", &[(a.port, 1), (b.port, 1)]),
            cluster("random", "RANDOM", &[(a.port, 1), (b.port, 1)])
        ]),
    );
    let _gw = start(port, &envoy, &[]);
    let servers = |path: &str, n: usize| -> Vec<String> {
        (0..n)
            .map(|_| {
                get(port, path, &[])
                    .header("x-echo-server")
                    .unwrap_or("-")
                    .to_string()
            })
            .collect()
    };
    let rr = servers("/rr", 8);
    assert_eq!(rr.iter().filter(|s| *s == "a").count(), 6, "{rr:?}");
    assert_eq!(rr.iter().filter(|s| *s == "b").count(), 2, "{rr:?}");
    // One client address hashes to one node.
    let hashed = servers("/hash", 6);
    assert!(
        hashed.iter().all(|s| *s == hashed[0]) && hashed[0] != "-",
        "{hashed:?}"
    );
    // Sequential requests leave both nodes idle: least_conn spreads them over both.
    let least = servers("/least", 6);
    assert!(
        least.contains(&"a".into()) && least.contains(&"b".into()),
        "{least:?}"
    );
    let random = servers("/random", 6);
    assert!(
        random.contains(&"a".into()) && random.contains(&"b".into()),
        "{random:?}"
    );
}

#[test]
fn plugins_from_the_lua_filter_metadata_run_in_their_phases_by_priority() {
    let echo = Echo::start("e");
    let port = free_port();
    let plugins =
        |list: Value| json!({"filter_metadata": {"envoy.filters.http.lua": {"plugins": list}}});
    let routes = json!([
        {"match": {"prefix": "/traced"}, "route": {"cluster": "e"},
         "typed_per_filter_config": {"envoy.filters.http.lua": {"@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.LuaPerRoute", "name": "entry.lua"}},
         "metadata": plugins(json!([
            {"name": "fixture-trace", "conf": {"label": "t"}},
            {"name": "request-id"},
            {"name": "uri-blocker", "conf": {"block_rules": ["forbidden"]}}
         ]))},
        {"match": {"prefix": "/off"}, "route": {"cluster": "e"},
         "typed_per_filter_config": {"envoy.filters.http.lua": {"disabled": true}},
         "metadata": plugins(json!([{"name": "uri-blocker", "conf": {"block_rules": ["."]}}]))}
    ]);
    let envoy = bootstrap(
        port,
        json!([{"name": "v", "domains": ["*"], "routes": routes}]),
        json!([cluster("e", "ROUND_ROBIN", &[(echo.port, 1)])]),
    );
    let config_plugins = "plugins:\n  - request-id\n  - uri-blocker\n  - fixture-trace\n";
    let config = format!(
        "{}{config_plugins}",
        config_yaml(port, "").replace(
            "config_provider: yaml",
            "config_provider: envoy\n    envoy_file: conf/envoy.yaml"
        )
    );
    let _gw = Gateway::start_with_files(
        &config,
        port,
        "",
        &[
            ("conf/envoy.yaml", &envoy),
            ("lua/plugins/fixture-trace.lua", TRACE),
        ],
    );
    let r = get(port, "/traced", &[]);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        r.header("x-trace"),
        Some("t:rewrite,t:access,t:before_proxy,t:header_filter")
    );
    // request-id (12015) ran before fixture-trace (3000) in rewrite, and answered its header.
    let id = r.json()["headers"]["x-request-id"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert_eq!(id.len(), 36);
    assert_eq!(r.header("x-request-id"), Some(id.as_str()));
    // uri-blocker (2900, rewrite) answers; the header filter still runs for the answer.
    let r = get(port, "/traced/forbidden", &[]);
    assert_eq!(r.status, 403);
    assert_eq!(r.header("x-trace"), Some("t:rewrite,t:header_filter"));
    // LuaPerRoute `disabled: true` turns the route's plugins off.
    assert_eq!(get(port, "/off/x", &[]).status, 200);
}

#[test]
fn a_plugin_conf_its_schema_refuses_names_the_yaml_path() {
    let port = free_port();
    let routes = json!([{
        "name": "guarded", "match": {"prefix": "/"}, "route": {"cluster": "e"},
        "metadata": {"filter_metadata": {"envoy.filters.http.lua": {"plugins": [
            {"name": "ip-restriction", "conf": {"whitelist": ["not-an-ip"]}}
        ]}}}
    }]);
    let envoy = bootstrap(
        port,
        json!([{"name": "v", "domains": ["*"], "routes": routes}]),
        json!([cluster("e", "ROUND_ROBIN", &[(1, 1)])]),
    );
    let (ok, out) = check(&envoy);
    assert!(!ok, "{out}");
    assert!(
        out.contains("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].metadata.filter_metadata[\"envoy.filters.http.lua\"].plugins[name=ip-restriction]: invalid ip address: not-an-ip"),
        "{out}"
    );
    let unknown = envoy.replace("ip-restriction", "no-such-plugin");
    let (ok, out) = check(&unknown);
    assert!(
        !ok && out.contains("unknown plugin [no-such-plugin]"),
        "{out}"
    );
}

#[test]
fn ignored_paths_warn_once_each_and_broken_structure_refuses_the_file() {
    let good = "static_resources:\n  listeners:\n  - name: l\n    per_connection_buffer_limit_bytes: 32768\n    address:\n      socket_address: {address: 127.0.0.1, port_value: 8000}\n    filter_chains:\n    - filters:\n      - name: envoy.http_connection_manager\n        typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n          stat_prefix: s\n          use_remote_address: true\n          route_config:\n            virtual_hosts:\n            - name: v\n              domains: [\"*\"]\n              routes:\n              - match: {prefix: /}\n                route: {cluster: web}\n                decorator: {operation: x}\n          http_filters:\n          - name: entry.lua\n            typed_config:\n              \"@type\": type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua\n              inline_code: \"function envoy_on_request(h) end\"\n          - name: envoy.filters.http.cors\n          - name: envoy.router\n  clusters:\n  - name: web\n    connect_timeout: 0.25s\n    type: strict_dns\n    lb_policy: round_robin\n    dns_lookup_family: V4_ONLY\n    load_assignment:\n      cluster_name: web\n      endpoints:\n      - lb_endpoints:\n        - endpoint:\n            address:\n              socket_address: {address: localhost, port_value: 80}\nadmin:\n  address:\n    socket_address: {address: 127.0.0.1, port_value: 8001}\nnode: {id: x}\n";
    let (ok, out) = check(good);
    assert!(ok, "{out}");
    let hcm = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config";
    for path in [
        "static_resources.listeners[0].per_connection_buffer_limit_bytes: ignored".to_string(),
        format!("{hcm}.use_remote_address: ignored"),
        format!("{hcm}.route_config.virtual_hosts[0].routes[0].decorator: ignored"),
        format!(
            "{hcm}.http_filters[0].typed_config.inline_code: ignored (Envoy Lua code is not run"
        ),
        format!("{hcm}.http_filters[1]: ignored (HTTP filter \"envoy.filters.http.cors\""),
        "static_resources.clusters[0].dns_lookup_family: ignored".to_string(),
        "envoy.yaml: admin: ignored".to_string(),
        "envoy.yaml: node: ignored".to_string(),
    ] {
        assert_eq!(out.matches(path.as_str()).count(), 1, "{path}\n{out}");
    }

    let broken = [
        (
            "port_value: 8000",
            "port_value: lots",
            "static_resources.listeners[0].address.socket_address.port_value: expected an unsigned integer",
        ),
        (
            "cluster: web}",
            "cluster: nowhere}",
            "routes[0].route.cluster: unknown cluster \"nowhere\"",
        ),
        (
            "lb_policy: round_robin",
            "lb_policy: MAGIC",
            "static_resources.clusters[0].lb_policy: lb_policy MAGIC is not supported",
        ),
        (
            "connect_timeout: 0.25s",
            "connect_timeout: soon",
            "static_resources.clusters[0].connect_timeout: expected a duration",
        ),
        (
            "match: {prefix: /}",
            "match: {prefix: /, grpc: {}}",
            "routes[0].match.grpc: this match condition is not supported",
        ),
        (
            "type: strict_dns",
            "type: static",
            "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address: \"localhost\" is not an IP address",
        ),
        (
            "domains: [\"*\"]",
            "domains: [\"a.*.b\"]",
            "virtual_hosts[0].domains[0]: invalid domain \"a.*.b\"",
        ),
        (
            "route: {cluster: web}",
            "route: {cluster: web}\n                redirect: {path_redirect: /x}",
            "routes[0]: a route needs exactly one of route, direct_response, redirect (found route, redirect)",
        ),
    ];
    for (from, to, needle) in broken {
        let text = good.replace(from, to);
        assert_ne!(text, good, "{from}");
        let (ok, out) = check(&text);
        assert!(!ok, "{to}: {out}");
        assert!(out.contains(needle), "{needle}\n{out}");
    }
}

#[test]
fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_last_good_routes() {
    let port = free_port();
    let file = |body: &str| {
        bootstrap(
            port,
            json!([{"name": "v", "domains": ["*"], "routes": [direct(json!({"prefix": "/"}), 200, body)]}]),
            json!([]),
        )
    };
    let gw = start(port, &file("one"), &[]);
    assert_eq!(get(port, "/", &[]).body, "one");
    rewrite_envoy(&gw, &file("two"));
    wait_until("the new file", Duration::from_secs(5), || {
        get(port, "/", &[]).body == "two"
    });
    rewrite_envoy(
        &gw,
        &file("three").replace("\"status\":200", "\"status\":\"lots\""),
    );
    let needle = "direct_response.status: expected an unsigned integer";
    wait_until("the error", Duration::from_secs(5), || {
        gw.error_log().contains(needle)
    });
    assert_eq!(get(port, "/", &[]).body, "two");
}

/// One `$ curl …` of the README and the answer it documents.
struct Example {
    command: String,
    status_line: String,
    headers: Vec<String>,
    body: Vec<String>,
}

fn readme_examples(readme: &str) -> Vec<Example> {
    let mut out = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "```console" {
            continue;
        }
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        let Some(command) = block.first().and_then(|c| c.strip_prefix("$ ")) else {
            panic!("a console block without a command: {block:?}");
        };
        let mut rest = block[1..].iter();
        let status_line = rest.next().map(|s| s.to_string()).unwrap_or_default();
        let headers: Vec<String> = rest
            .by_ref()
            .take_while(|l| !l.is_empty())
            .map(|s| s.to_string())
            .collect();
        let body = rest.map(|s| s.to_string()).collect();
        out.push(Example {
            command: command.to_string(),
            status_line,
            headers,
            body,
        });
    }
    out
}

/// Stops the demo script (it stops its two services itself).
struct Demo(std::process::Child);

impl Drop for Demo {
    fn drop(&mut self) {
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_demo_answers_every_curl_of_its_readme_without_docker() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let demo = root.join("examples/envoy-compose");
    let readme = std::fs::read_to_string(demo.join("README.md")).unwrap();
    let examples = readme_examples(&readme);
    assert!(examples.len() >= 9, "{} examples", examples.len());
    assert!(
        Command::new("curl")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success()),
        "this test runs the README's curl commands: install curl"
    );
    let (proxy, web) = (free_port(), free_port());
    let work = TempDir::new("envoy-demo");
    let child = Command::new(demo.join("run-local.sh"))
        .env("MOONGATE", BIN)
        .env("PROXY_PORT", proxy.to_string())
        .env("WEB_PORT", web.to_string())
        .env("WORK_DIR", &work.0)
        .stdout(Stdio::null())
        .stderr(Stdio::from(
            std::fs::File::create(work.0.join("demo.log")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let mut demo_proc = Demo(child);
    let log = || std::fs::read_to_string(work.0.join("demo.log")).unwrap_or_default();
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(Some(s)) = demo_proc.0.try_wait() {
            panic!("run-local.sh exited with {s}: {}", log());
        }
        if std::net::TcpStream::connect(("127.0.0.1", proxy)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", web)).is_ok()
        {
            break;
        }
        assert!(Instant::now() < end, "the demo did not start: {}", log());
        std::thread::sleep(Duration::from_millis(50));
    }
    for ex in &examples {
        let command = ex
            .command
            .replace("127.0.0.1:8000", &format!("127.0.0.1:{proxy}"));
        assert_ne!(
            command, ex.command,
            "the README's commands go to 127.0.0.1:8000"
        );
        let out = Command::new("sh").arg("-c").arg(&command).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
        let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
        let mut head_lines = head.lines();
        assert_eq!(
            head_lines.next(),
            Some(ex.status_line.as_str()),
            "{command}\n{text}"
        );
        let got: Vec<String> = head_lines.map(|l| l.to_ascii_lowercase()).collect();
        for h in &ex.headers {
            assert!(
                got.contains(&h.to_ascii_lowercase()),
                "{command}: no {h:?} in\n{text}"
            );
        }
        for b in &ex.body {
            assert!(
                body.contains(b.as_str()),
                "{command}: body lacks {b:?}:\n{body}"
            );
        }
    }
    drop(demo_proc);
}

#[test]
fn each_listener_serves_its_own_routes_on_its_own_port() {
    let (p1, p2) = (free_port(), free_port());
    let vh = |body: &str| json!([{"name": "v", "domains": ["*"], "routes": [direct(json!({"prefix": "/"}), 200, body)]}]);
    let mut doc: Value = serde_json::from_str(&bootstrap(p1, vh("first"), json!([]))).unwrap();
    let second: Value = serde_json::from_str(&bootstrap(p2, vh("second"), json!([]))).unwrap();
    let mut l2 = second["static_resources"]["listeners"][0].clone();
    l2["name"] = json!("other");
    doc["static_resources"]["listeners"]
        .as_array_mut()
        .unwrap()
        .push(l2);
    let _gw = start(p1, &doc.to_string(), &[]);
    wait_until("the second listener", Duration::from_secs(5), || {
        std::net::TcpStream::connect(("127.0.0.1", p2)).is_ok()
    });
    assert_eq!(get(p1, "/", &[]).body, "first");
    assert_eq!(get(p2, "/", &[]).body, "second");
}
