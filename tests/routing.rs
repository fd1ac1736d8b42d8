//! Route matching through the real binary, in APISIX's precedence.

mod support;

use support::*;

fn gw_with(echo: &Echo, routes: &str) -> Gateway {
    let yaml = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\n{routes}\n#END\n",
        echo.port
    );
    Gateway::start("", &yaml)
}

fn route_of(r: &Resp) -> String {
    // The echo backend answers; the route id is in the access log, the URI reaches the echo.
    format!("{} {}", r.status, r.header("x-route").unwrap_or(""))
}

#[test]
fn unmatched_requests_get_apisix_404_body() {
    let echo = Echo::start("e");
    let gw = gw_with(
        &echo,
        "routes:\n  - id: 1\n    uri: /only\n    upstream_id: e",
    );
    let r = gw.get("/nothing-here");
    assert_eq!(r.status, 404);
    assert_eq!(r.body, "{\"error_msg\":\"404 Route Not Found\"}\n");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("server").unwrap_or("").starts_with("moongate/"));
    let _ = route_of(&r);
}

#[test]
fn exact_prefix_param_host_and_priority_rules_pick_the_apisix_route() {
    let a = Echo::start("a");
    let b = Echo::start("b");
    let routes = format!(
        "routes:
  - {{id: prefix, uri: /api/*, upstream: {{nodes: {{\"127.0.0.1:{a}\": 1}}}}}}
  - {{id: exact, uri: /api/exact, upstream: {{nodes: {{\"127.0.0.1:{b}\": 1}}}}}}
  - {{id: param, uri: /user/:id, upstream: {{nodes: {{\"127.0.0.1:{b}\": 1}}}}}}
  - {{id: host, uri: /*, hosts: [\"*.example.com\"], upstream: {{nodes: {{\"127.0.0.1:{b}\": 1}}}}}}
  - {{id: low, uri: /prio, priority: 1, upstream: {{nodes: {{\"127.0.0.1:{a}\": 1}}}}}}
  - {{id: high, uri: /prio, priority: 10, upstream: {{nodes: {{\"127.0.0.1:{b}\": 1}}}}}}
  - {{id: get-only, uri: /m, methods: [POST], upstream: {{nodes: {{\"127.0.0.1:{b}\": 1}}}}}}
  - {{id: m-any, uri: /m, upstream: {{nodes: {{\"127.0.0.1:{a}\": 1}}}}}}
  - {{id: vars, uri: /v, vars: [[\"arg_k\", \"==\", \"1\"], [\"http_x_t\", \"~~\", \"^ab\"]], upstream: {{nodes: {{\"127.0.0.1:{b}\": 1}}}}}}
  - {{id: off, uri: /off, status: 0, upstream: {{nodes: {{\"127.0.0.1:{b}\": 1}}}}}}
#END
",
        a = a.port,
        b = b.port
    );
    let gw = Gateway::start("", &routes);
    let server = |r: Resp| r.header("x-echo-server").unwrap_or("none").to_string();
    assert_eq!(server(gw.get("/api/exact")), "b", "exact beats prefix");
    assert_eq!(server(gw.get("/api/other")), "a", "prefix");
    assert_eq!(server(gw.get("/user/42")), "b", "param");
    assert_eq!(
        gw.get("/user/42/x").status,
        404,
        "param matches one segment"
    );
    assert_eq!(
        server(request(
            gw.port,
            "GET",
            "/api/exact",
            &[("Host", "x.example.com")],
            b""
        )),
        "b",
        "host route beats host-less"
    );
    assert_eq!(server(gw.get("/prio")), "b", "higher priority first");
    assert_eq!(server(gw.get("/m")), "a", "method filter falls through");
    assert_eq!(server(request(gw.port, "POST", "/m", &[], b"x")), "b");
    assert_eq!(
        server(request(gw.port, "GET", "/v?k=1", &[("X-T", "abc")], b"")),
        "b"
    );
    assert_eq!(
        request(gw.port, "GET", "/v?k=2", &[("X-T", "abc")], b"").status,
        404
    );
    assert_eq!(gw.get("/off").status, 404, "status 0 disables a route");
}

#[test]
fn remote_addrs_filter_by_client_address() {
    let echo = Echo::start("e");
    let gw = gw_with(
        &echo,
        "routes:\n  - id: local\n    uri: /r\n    remote_addrs: [\"127.0.0.0/8\"]\n    upstream_id: e\n  - id: far\n    uri: /f\n    remote_addrs: [\"10.0.0.0/8\", \"2001:db8::/32\"]\n    upstream_id: e",
    );
    assert_eq!(gw.get("/r").status, 200);
    assert_eq!(gw.get("/f").status, 404);
}

#[test]
fn services_lend_upstream_and_hosts_and_missing_references_answer_like_apisix() {
    let echo = Echo::start("svc");
    let routes = format!(
        "services:
  - id: s1
    hosts: [svc.test]
    upstream:
      nodes: {{\"127.0.0.1:{p}\": 1}}
routes:
  - {{id: r1, uri: /s, service_id: s1}}
  - {{id: r2, uri: /no-service, service_id: ghost}}
  - {{id: r3, uri: /no-upstream, upstream_id: ghost}}
  - {{id: r4, uri: /nothing}}
#END
",
        p = echo.port
    );
    let gw = Gateway::start("", &routes);
    let r = request(gw.port, "GET", "/s", &[("Host", "svc.test")], b"");
    assert_eq!((r.status, r.header("x-echo-server")), (200, Some("svc")));
    assert_eq!(
        request(gw.port, "GET", "/s", &[("Host", "other.test")], b"").status,
        404
    );
    assert_eq!(gw.get("/no-service").status, 404);
    assert_eq!(gw.get("/no-upstream").status, 502);
    assert_eq!(gw.get("/nothing").status, 502);
    wait_until("error log lines", std::time::Duration::from_secs(5), || {
        let log = gw.error_log();
        log.contains("failed to fetch service configuration by id: ghost")
            && log.contains("failed to find upstream by id: ghost")
    });
}

#[test]
fn normalised_path_is_matched_and_raw_target_is_forwarded() {
    let echo = Echo::start("e");
    let gw = gw_with(
        &echo,
        "routes:\n  - id: 1\n    uri: /internal/*\n    upstream_id: e",
    );
    let r = gw.get("/a/../internal//%78?q=1");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/a/../internal//%78?q=1");
    assert_eq!(gw.get("/../etc/passwd").status, 400);
}
