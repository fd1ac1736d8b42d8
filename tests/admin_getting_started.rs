//! APISIX's getting-started tutorials (configure routes, load balancing, key authentication,
//! rate limiting) and the Admin API basics they lead to, request for request, against the real
//! binary on both config stores: the embedded store, and a real etcd.
//!
//! The tutorials run APISIX's quickstart (Admin API without a key, on loopback); their
//! upstreams are httpbin.org and mock.api7.ai, here two local echo backends. Their key-auth
//! and limit-count are APISIX plugins; here two fixture plugins of ours with the same names and
//! confs (`t/fixtures/getting-started/`). Every answer is checked as APISIX gives it: status,
//! envelope, and what the data plane then serves. Between a write and the request that should
//! see it, the test waits until the control API (`/v1/route/{id}`) shows the change served,
//! so that counted requests all run on the new config.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const KEY_AUTH: &str = include_str!("../t/fixtures/getting-started/key-auth.lua");
const LIMIT_COUNT: &str = include_str!("../t/fixtures/getting-started/limit-count.lua");

/// The quickstart's node: Admin API on loopback without a key, the control API on the data
/// port (to see what is served), the two fixture plugins. `store` is the `deployment` part.
fn config(port: u16, admin_port: u16, store: &str) -> String {
    format!(
        "apisix:\n  node_listen:\n    - ip: 127.0.0.1\n      port: {port}\n  enable_ipv6: false\n  enable_control: false\n  ssl:\n    enable: false\n  control:\n    serve_on_data_port: true\nnginx_config:\n  worker_processes: 1\n  worker_shutdown_timeout: 5s\n  error_log_level: info\nplugins:\n  - key-auth\n  - limit-count\ndeployment:\n  role: traditional\n{store}  admin:\n    admin_key_required: false\n    allow_admin: [127.0.0.0/24]\n    admin_listen:\n      ip: 127.0.0.1\n      port: {admin_port}\n"
    )
}

fn start(store: &str) -> (Gateway, u16) {
    let port = free_port();
    let admin_port = free_port();
    let gw = Gateway::start_with_files(
        &config(port, admin_port, store),
        port,
        "#END\n",
        &[
            ("lua/plugins/key-auth.lua", KEY_AUTH),
            ("lua/plugins/limit-count.lua", LIMIT_COUNT),
        ],
    );
    wait_until("admin port", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", admin_port)).is_ok()
    });
    (gw, admin_port)
}

/// `curl -i http://127.0.0.1:9180{path} -X {method} -d '{body}'`, no key.
fn curl(admin_port: u16, method: &str, path: &str, body: Option<Value>) -> Resp {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    request(admin_port, method, path, &[], bytes.as_bytes())
}

/// Which echo backend answered.
fn server(r: &Resp) -> String {
    r.json()["server"].as_str().unwrap_or_default().to_string()
}

/// Waits until the data plane serves route `id` with `pred` true of its value.
fn served(gw: &Gateway, id: &str, what: &str, pred: impl Fn(&Value) -> bool) {
    wait_until(what, Duration::from_secs(10), || {
        let r = gw.get(&format!("/v1/route/{id}"));
        r.status == 200 && pred(&r.json()["value"])
    });
}

fn statuses(gw: &Gateway, path: &str, headers: &[(&str, &str)], n: usize) -> (usize, usize) {
    let mut ok = 0;
    let mut limited = 0;
    for _ in 0..n {
        match request(gw.port, "GET", path, headers, b"").status {
            200 => ok += 1,
            503 => limited += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    (ok, limited)
}

fn walk(store: &str) {
    let httpbin = Echo::start("httpbin");
    let mock = Echo::start("mock");
    let (gw, ap) = start(store);

    // Configure routes: a route with its id in the body, PUT to the collection.
    let r = curl(
        ap,
        "PUT",
        "/apisix/admin/routes",
        Some(json!({
            "id": "getting-started-ip",
            "uri": "/ip",
            "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", httpbin.port): 1}}
        })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("x-api-version"), Some("v3"));
    let v = r.json();
    assert_eq!(v["key"], "/apisix/routes/getting-started-ip");
    assert_eq!(v["value"]["id"], "getting-started-ip");
    assert_eq!(v["value"]["uri"], "/ip");
    assert!(v["value"]["create_time"].is_i64() && v["value"]["update_time"].is_i64());
    wait_until("/ip served", Duration::from_secs(10), || {
        gw.get("/ip").status == 200
    });
    let r = gw.get("/ip");
    assert_eq!(server(&r), "httpbin");
    assert_eq!(r.json()["uri"], "/ip");

    // Load balancing: two nodes, the node's host passed on.
    let r = curl(
        ap,
        "PUT",
        "/apisix/admin/routes",
        Some(json!({
            "id": "getting-started-headers",
            "uri": "/headers",
            "upstream": {
                "type": "roundrobin",
                "nodes": {
                    format!("127.0.0.1:{}", httpbin.port): 1,
                    format!("127.0.0.1:{}", mock.port): 1
                },
                "pass_host": "node",
                "scheme": "http"
            }
        })),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    served(&gw, "getting-started-headers", "/headers served", |v| {
        v["uri"] == "/headers"
    });
    let mut seen = std::collections::HashMap::new();
    for _ in 0..100 {
        let r = gw.get("/headers");
        assert_eq!(r.status, 200, "{}", r.body);
        let host = r.json()["headers"]["host"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(host.starts_with("127.0.0.1:"), "pass_host node: {host}");
        *seen.entry(server(&r)).or_insert(0) += 1;
    }
    // Equal weights, round robin: the requests alternate.
    assert_eq!(seen.get("httpbin"), Some(&50), "{seen:?}");
    assert_eq!(seen.get("mock"), Some(&50), "{seen:?}");

    // Key authentication: a consumer (PUT to the collection), then the plugin on the route.
    let r = curl(
        ap,
        "PUT",
        "/apisix/admin/consumers",
        Some(json!({"username": "tom", "plugins": {"key-auth": {"key": "secret-key"}}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["key"], "/apisix/consumers/tom");
    let r = curl(
        ap,
        "PATCH",
        "/apisix/admin/routes/getting-started-ip",
        Some(json!({"plugins": {"key-auth": {}}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["value"]["plugins"], json!({"key-auth": {}}));
    assert_eq!(
        v["value"]["upstream"]["nodes"],
        json!({format!("127.0.0.1:{}", httpbin.port): 1}),
        "PATCH merges into the stored route"
    );
    served(&gw, "getting-started-ip", "key-auth served", |v| {
        v["plugins"].get("key-auth").is_some()
    });
    assert_eq!(gw.get("/ip").status, 401, "no key");
    let wrong = request(gw.port, "GET", "/ip", &[("apikey", "wrong-key")], b"");
    assert_eq!(wrong.status, 401, "wrong key");
    let right = request(gw.port, "GET", "/ip", &[("apikey", "secret-key")], b"");
    assert_eq!(right.status, 200, "{}", right.body);
    assert_eq!(server(&right), "httpbin");

    // Disable authentication with `_meta.disable`.
    let r = curl(
        ap,
        "PATCH",
        "/apisix/admin/routes/getting-started-ip",
        Some(json!({"plugins": {"key-auth": {"_meta": {"disable": true}}}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    served(&gw, "getting-started-ip", "key-auth disabled", |v| {
        v["plugins"]["key-auth"]["_meta"]["disable"] == true
    });
    assert_eq!(gw.get("/ip").status, 200, "no key needed any more");

    // Rate limiting: 2 requests per window, the others 503.
    let r = curl(
        ap,
        "PATCH",
        "/apisix/admin/routes/getting-started-ip",
        Some(
            json!({"plugins": {"limit-count": {"count": 2, "time_window": 60, "rejected_code": 503}}}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    served(&gw, "getting-started-ip", "limit-count served", |v| {
        v["plugins"].get("limit-count").is_some()
    });
    assert_eq!(statuses(&gw, "/ip", &[], 100), (2, 98));
    let r = curl(
        ap,
        "PATCH",
        "/apisix/admin/routes/getting-started-ip",
        Some(json!({"plugins": {"limit-count": {"_meta": {"disable": true}}}})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(
        v["value"]["plugins"]["limit-count"],
        json!({"count": 2, "time_window": 60, "rejected_code": 503, "_meta": {"disable": true}})
    );
    served(&gw, "getting-started-ip", "limit-count disabled", |v| {
        v["plugins"]["limit-count"]["_meta"]["disable"] == true
    });
    assert_eq!(statuses(&gw, "/ip", &[], 100), (100, 0));

    // The Admin API reference's basics on what the tutorials made.
    let r = curl(ap, "GET", "/apisix/admin/routes", None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["total"], 2);
    let ids: Vec<&str> = v["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["getting-started-headers", "getting-started-ip"]);
    for item in v["list"].as_array().unwrap() {
        assert!(item["createdIndex"].is_i64() && item["modifiedIndex"].is_i64());
    }
    let r = curl(ap, "GET", "/apisix/admin/routes/getting-started-ip", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["key"], "/apisix/routes/getting-started-ip");
    let r = curl(ap, "GET", "/apisix/admin/consumers", None);
    assert_eq!(r.json()["total"], 1);
    assert_eq!(r.json()["list"][0]["value"]["username"], "tom");

    // POST makes a 20-digit id; DELETE answers APISIX's envelope, then 404.
    let r = curl(
        ap,
        "POST",
        "/apisix/admin/upstreams",
        Some(json!({"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", mock.port): 1}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let up = r.json()["value"]["id"].as_str().unwrap().to_string();
    assert_eq!(up.len(), 20);
    assert!(up.bytes().all(|b| b.is_ascii_digit()));
    let r = curl(
        ap,
        "PUT",
        "/apisix/admin/routes/getting-started-headers",
        Some(json!({"uri": "/headers", "upstream_id": up})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(ap, "DELETE", &format!("/apisix/admin/upstreams/{up}"), None);
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error_msg"],
        "can not delete this upstream, route [getting-started-headers] is still using it now"
    );
    let r = curl(
        ap,
        "DELETE",
        "/apisix/admin/routes/getting-started-headers",
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"deleted": "1", "key": "/apisix/routes/getting-started-headers"})
    );
    let r = curl(ap, "DELETE", &format!("/apisix/admin/upstreams/{up}"), None);
    assert_eq!(r.status, 200, "{}", r.body);
    let r = curl(
        ap,
        "GET",
        "/apisix/admin/routes/getting-started-headers",
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"message": "Key not found"}));
    wait_until("/headers gone", Duration::from_secs(10), || {
        gw.get("/headers").status == 404
    });
}

#[test]
fn the_getting_started_tutorials_on_the_embedded_store() {
    walk("  role_traditional:\n    config_provider: embedded\n");
}

#[test]
fn the_getting_started_tutorials_on_etcd() {
    let etcd = Etcd::start();
    walk(&format!(
        "  role_traditional:\n    config_provider: etcd\n  etcd:\n    host:\n      - \"{}\"\n    timeout: 5\n",
        etcd.url()
    ));
}
