//! The Admin API and the embedded store through the real binary: every resource and method,
//! envelopes, ids, validation wording, keys and roles, delete refusals, propagation to the
//! data plane, restarts and crashes mid-write.

mod support;

use std::time::Duration;

use serde_json::{Value, json};
use support::*;

fn call(port: u16, method: &str, path: &str, key: Option<&str>, body: Option<Value>) -> Resp {
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(k) = key {
        headers.push(("X-API-KEY", k));
    }
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    request(port, method, path, &headers, bytes.as_bytes())
}

fn admin(port: u16, method: &str, path: &str, body: Option<Value>) -> Resp {
    call(port, method, path, Some(ADMIN_KEY), body)
}

fn route_to(port: u16, uri: &str) -> Value {
    json!({"uri": uri, "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{port}"): 1}}})
}

#[test]
fn routes_put_get_patch_delete_with_apisix_envelopes() {
    let (gw, ap) = Gateway::start_embedded("", None);
    let r = admin(
        ap,
        "PUT",
        "/apisix/admin/routes/1",
        Some(route_to(1980, "/a")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("x-api-version"), Some("v3"));
    assert!(
        r.header("content-type")
            .unwrap()
            .contains("application/json")
    );
    let v = r.json();
    assert_eq!(v["key"], "/apisix/routes/1");
    assert_eq!(v["value"]["id"], "1");
    assert_eq!(v["value"]["uri"], "/a");
    let created = v["value"]["create_time"].as_i64().unwrap();
    assert!(v["value"]["update_time"].as_i64().unwrap() >= created);
    assert!(
        v["value"].get("priority").is_none(),
        "defaults are not stored"
    );

    let r = admin(
        ap,
        "PUT",
        "/apisix/admin/routes/1",
        Some(route_to(1980, "/b")),
    );
    assert_eq!(r.status, 200, "replacing answers 200: {}", r.body);
    assert_eq!(r.json()["value"]["create_time"].as_i64(), Some(created));

    let r = admin(ap, "GET", "/apisix/admin/routes/1", None);
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["value"]["uri"], "/b");
    let ci = v["createdIndex"].as_i64().unwrap();
    let mi = v["modifiedIndex"].as_i64().unwrap();
    assert!(mi > ci, "{v}");

    let r = admin(
        ap,
        "PATCH",
        "/apisix/admin/routes/1",
        Some(json!({"desc": "patched"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["value"]["desc"], "patched");
    assert_eq!(r.json()["value"]["uri"], "/b");
    let r = admin(
        ap,
        "PATCH",
        "/apisix/admin/routes/1/methods",
        Some(json!(["GET", "POST"])),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["value"]["methods"], json!(["GET", "POST"]));

    let r = admin(ap, "GET", "/apisix/admin/routes", None);
    assert_eq!(r.json()["total"], 1);
    assert_eq!(r.json()["list"][0]["key"], "/apisix/routes/1");

    let r = admin(ap, "DELETE", "/apisix/admin/routes/1", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"deleted": "1", "key": "/apisix/routes/1"}));
    let r = admin(ap, "GET", "/apisix/admin/routes/1", None);
    assert_eq!(
        (r.status, r.json()),
        (404, json!({"message": "Key not found"}))
    );
    assert_eq!(
        admin(ap, "DELETE", "/apisix/admin/routes/1", None).status,
        404
    );
    let r = admin(ap, "GET", "/apisix/admin/routes", None);
    assert_eq!(r.json(), json!({"total": 0, "list": []}));
    drop(gw);
}

#[test]
fn post_generates_twenty_digit_ids_and_refuses_a_given_id() {
    let (_gw, ap) = Gateway::start_embedded("", None);
    let up = json!({"nodes": {"127.0.0.1:1980": 1}, "type": "roundrobin"});
    let a = admin(ap, "POST", "/apisix/admin/upstreams", Some(up.clone()));
    let b = admin(ap, "POST", "/apisix/admin/upstreams", Some(up.clone()));
    assert_eq!((a.status, b.status), (201, 201), "{} {}", a.body, b.body);
    let (ida, idb) = (
        a.json()["value"]["id"].as_str().unwrap().to_string(),
        b.json()["value"]["id"].as_str().unwrap().to_string(),
    );
    for id in [&ida, &idb] {
        assert_eq!(id.len(), 20, "{id}");
        assert!(id.chars().all(|c| c.is_ascii_digit()));
    }
    assert!(idb > ida);
    assert_eq!(a.json()["key"], format!("/apisix/upstreams/{ida}"));
    let mut with_id = up.clone();
    with_id["id"] = json!("x");
    let r = admin(ap, "POST", "/apisix/admin/upstreams", Some(with_id));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error_msg"], "wrong upstream id, do not need it");
    let r = admin(
        ap,
        "POST",
        "/apisix/admin/global_rules",
        Some(json!({"plugins": {}})),
    );
    assert_eq!(r.status, 405);
}

#[test]
fn every_resource_kind_is_stored_listed_and_deleted() {
    let (_gw, ap) = Gateway::start_embedded("", None);
    let certs = EtcdCerts::generate();
    let cases: Vec<(&str, &str, Value)> = vec![
        (
            "/apisix/admin/services/s1",
            "/apisix/services/s1",
            json!({"upstream": {"nodes": {"127.0.0.1:1980": 1}}}),
        ),
        (
            "/apisix/admin/upstreams/u1",
            "/apisix/upstreams/u1",
            json!({"nodes": {"127.0.0.1:1980": 1}}),
        ),
        (
            "/apisix/admin/consumers",
            "/apisix/consumers/jack",
            json!({"username": "jack"}),
        ),
        (
            "/apisix/admin/consumers/jack/credentials/c1",
            "/apisix/consumers/jack/credentials/c1",
            json!({"plugins": {}}),
        ),
        (
            "/apisix/admin/consumer_groups/g1",
            "/apisix/consumer_groups/g1",
            json!({"plugins": {}}),
        ),
        (
            "/apisix/admin/ssls/t1",
            "/apisix/ssls/t1",
            json!({"cert": certs.server, "key": certs.server_key, "snis": ["a.test"]}),
        ),
        (
            "/apisix/admin/global_rules/1",
            "/apisix/global_rules/1",
            json!({"plugins": {}}),
        ),
        (
            "/apisix/admin/plugin_configs/p1",
            "/apisix/plugin_configs/p1",
            json!({"plugins": {}}),
        ),
        (
            "/apisix/admin/plugin_metadata/request-id",
            "/apisix/plugin_metadata/request-id",
            json!({}),
        ),
        (
            "/apisix/admin/protos/1",
            "/apisix/protos/1",
            json!({"content": "syntax = \"proto3\";"}),
        ),
    ];
    for (url, key, body) in &cases {
        let r = admin(ap, "PUT", url, Some(body.clone()));
        assert_eq!(r.status, 201, "{url}: {}", r.body);
        assert_eq!(r.json()["key"], *key, "{url}");
        let get_url = if *url == "/apisix/admin/consumers" {
            "/apisix/admin/consumers/jack"
        } else {
            url
        };
        let g = admin(ap, "GET", get_url, None);
        assert_eq!(g.status, 200, "{get_url}: {}", g.body);
        assert_eq!(g.json()["key"], *key);
    }
    let ssl = admin(ap, "GET", "/apisix/admin/ssls/t1", None).json();
    assert!(
        ssl["value"].get("key").is_none(),
        "private keys are never shown: {ssl}"
    );
    assert_eq!(ssl["value"]["cert"], certs.server);
    // A certificate cut short is refused, in APISIX's words.
    let cut = certs.server[..certs.server.len() / 2].to_string() + "\n-----END CERTIFICATE-----\n";
    let r = admin(
        ap,
        "PUT",
        "/apisix/admin/ssls/t2",
        Some(json!({"cert": cut, "key": certs.server_key, "snis": ["b.test"]})),
    );
    assert_eq!(
        (r.status, r.json()["error_msg"].as_str()),
        (
            400,
            Some("failed to parse cert: PEM_read_bio_X509_AUX() failed")
        )
    );
    let consumers = admin(ap, "GET", "/apisix/admin/consumers", None).json();
    assert_eq!(
        consumers["total"], 1,
        "credentials are not consumers: {consumers}"
    );
    let creds = admin(ap, "GET", "/apisix/admin/consumers/jack/credentials", None).json();
    assert_eq!(creds["total"], 1, "{creds}");
    assert_eq!(creds["list"][0]["value"]["id"], "c1");
    // A secret is checked by its manager's module (`apisix.secret.<manager>`).
    let r = admin(
        ap,
        "PUT",
        "/apisix/admin/secrets/nope/1",
        Some(json!({"uri": "http://127.0.0.1:8200"})),
    );
    assert_eq!(
        (r.status, r.json()["error_msg"].as_str()),
        (400, Some("invalid secret manager: nope"))
    );
    let r = admin(
        ap,
        "PUT",
        "/apisix/admin/consumers/nobody/credentials/c",
        Some(json!({"plugins": {}})),
    );
    assert_eq!(
        (r.status, r.json()["error_msg"].as_str()),
        (404, Some("consumer not found"))
    );
    let r = admin(ap, "PUT", "/apisix/admin/stream_routes/1", Some(json!({})));
    assert_eq!(
        r.json()["error_msg"],
        "stream mode is disabled, can not add stream routes"
    );
    let r = admin(ap, "GET", "/apisix/admin/nothing", None);
    assert_eq!(
        (r.status, r.json()["error_msg"].as_str()),
        (404, Some("Unsupported resource type: nothing"))
    );

    // Deleting the consumer takes its credentials with it.
    assert_eq!(
        admin(ap, "DELETE", "/apisix/admin/consumers/jack", None).status,
        200
    );
    assert_eq!(
        admin(
            ap,
            "GET",
            "/apisix/admin/consumers/jack/credentials/c1",
            None
        )
        .status,
        404
    );
    for (url, _, _) in cases.iter().filter(|(u, _, _)| !u.contains("consumers")) {
        assert_eq!(admin(ap, "DELETE", url, None).status, 200, "{url}");
        assert_eq!(admin(ap, "GET", url, None).status, 404, "{url}");
    }
    let r = admin(ap, "GET", "/apisix/admin/plugins/list", None);
    assert!(
        r.json()
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p == "request-id"),
        "{}",
        r.body
    );
    let r = admin(ap, "PUT", "/apisix/admin/plugins/reload", None);
    assert_eq!((r.status, r.body.as_str()), (200, "done"));
    let r = admin(ap, "GET", "/apisix/admin/plugins/reload", None);
    assert_eq!(r.status, 405);
}

#[test]
fn invalid_bodies_are_refused_in_apisix_words_and_nothing_is_stored() {
    let (_gw, ap) = Gateway::start_embedded("", None);
    let err = |r: Resp| -> (u16, String) {
        (
            r.status,
            r.json()["error_msg"].as_str().unwrap_or("").to_string(),
        )
    };
    let put = |path: &str, body: Value| err(admin(ap, "PUT", path, Some(body)));
    assert_eq!(
        put("/apisix/admin/routes/1", json!({"upstream_id": "u"})),
        (
            400,
            "invalid configuration: allOf 1 failed: value should match only one schema, but matches none".into()
        )
    );
    assert_eq!(
        put(
            "/apisix/admin/routes/1",
            json!({"uri": "/a", "bogus": 1, "upstream_id": "u"})
        ),
        (
            400,
            "invalid configuration: additional properties forbidden, found bogus".into()
        )
    );
    assert_eq!(
        put(
            "/apisix/admin/routes/1",
            json!({"uri": "/a", "plugins": {"no-such-plugin": {}}})
        ),
        (400, "unknown plugin [no-such-plugin]".into())
    );
    let (status, msg) = put(
        "/apisix/admin/routes/1",
        json!({"uri": "/a", "plugins": {"request-id": {"header_name": 5}}}),
    );
    assert_eq!(status, 400);
    assert!(msg.contains("header_name"), "{msg}");
    assert_eq!(
        put(
            "/apisix/admin/routes/1",
            json!({"uri": "/a", "upstream_id": "nope"})
        ),
        (
            400,
            "failed to fetch upstream info by upstream id [nope], response code: 404".into()
        )
    );
    assert_eq!(
        put(
            "/apisix/admin/routes/1",
            json!({"id": "2", "uri": "/a", "upstream_id": "u"})
        ),
        (400, "wrong route id".into())
    );
    assert_eq!(
        put(
            "/apisix/admin/routes/1",
            json!({"uri": "/a", "create_time": 1})
        ),
        (400, "the property is forbidden:  create_time".into())
    );
    let r = request(
        ap,
        "PUT",
        "/apisix/admin/routes/1",
        &[("X-API-KEY", ADMIN_KEY)],
        b"{not json",
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error_msg"]
            .as_str()
            .unwrap()
            .starts_with("invalid request body")
    );
    let r = admin(ap, "GET", "/apisix/admin/routes?page=1&page_size=5", None);
    assert_eq!(
        (r.status, r.body.as_str()),
        (400, "page_size must be between 10 and 500")
    );
    assert_eq!(
        admin(ap, "GET", "/apisix/admin/routes", None).json()["total"],
        0
    );
}

#[test]
fn keys_roles_and_allowed_addresses_are_enforced() {
    let (_gw, ap) = Gateway::start_embedded("", None);
    let r = call(ap, "GET", "/apisix/admin/routes", None, None);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"error_msg": "failed to check token", "description": "missing apikey"})
    );
    let r = call(ap, "GET", "/apisix/admin/routes", Some("wrong"), None);
    assert_eq!(
        (r.status, r.json()["description"].as_str()),
        (401, Some("wrong apikey"))
    );
    let r = call(ap, "GET", "/apisix/admin/routes", Some(VIEWER_KEY), None);
    assert_eq!(r.status, 200);
    let r = call(
        ap,
        "PUT",
        "/apisix/admin/routes/1",
        Some(VIEWER_KEY),
        Some(route_to(1980, "/a")),
    );
    assert_eq!(r.status, 401, "a viewer cannot write: {}", r.body);
    assert_eq!(admin(ap, "GET", "/apisix/admin/routes/1", None).status, 404);
    let r = request(
        ap,
        "GET",
        "/apisix/admin/routes?api_key=edd1c9f034335f136f87ad84b625c8f1",
        &[],
        b"",
    );
    assert_eq!(r.status, 401, "the query form is off unless enabled");

    let (_gw2, ap2) = Gateway::start_embedded("    allow_admin:\n      - 10.0.0.0/8\n", None);
    assert_eq!(admin(ap2, "GET", "/apisix/admin/routes", None).status, 403);
}

#[test]
fn an_empty_key_is_generated_and_its_file_named() {
    let port = free_port();
    let ap = free_port();
    let config = embedded_config_yaml(port, ap, "").replace(
        &format!("      - name: admin\n        key: {ADMIN_KEY}\n"),
        "      - name: admin\n        key: ''\n",
    );
    let gw = Gateway::start_with_config(&config, port, "routes: []\n#END\n");
    wait_until("admin port", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", ap)).is_ok()
    });
    let file = gw.dir.0.join("conf/admin_key.admin");
    let key = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert_eq!(key.len(), 32);
    assert!(
        gw.stderr().contains(&file.display().to_string()),
        "{}",
        gw.stderr()
    );
    assert!(!gw.stderr().contains(&key), "the key itself is not printed");
    assert_eq!(
        call(ap, "GET", "/apisix/admin/routes", Some(&key), None).status,
        200
    );
}

#[test]
fn referenced_resources_cannot_be_deleted_unless_forced() {
    let (_gw, ap) = Gateway::start_embedded("", None);
    admin(
        ap,
        "PUT",
        "/apisix/admin/upstreams/u1",
        Some(json!({"nodes": {"127.0.0.1:1980": 1}})),
    );
    admin(
        ap,
        "PUT",
        "/apisix/admin/services/s1",
        Some(json!({"upstream_id": "u1"})),
    );
    admin(
        ap,
        "PUT",
        "/apisix/admin/plugin_configs/p1",
        Some(json!({"plugins": {}})),
    );
    let r = admin(
        ap,
        "PUT",
        "/apisix/admin/routes/1",
        Some(json!({"uri": "/a", "service_id": "s1", "plugin_config_id": "p1"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let del = |path: &str| admin(ap, "DELETE", path, None);
    let r = del("/apisix/admin/services/s1");
    assert_eq!(
        (r.status, r.json()["error_msg"].as_str()),
        (
            400,
            Some("can not delete this service directly, route [1] is still using it now")
        )
    );
    let r = del("/apisix/admin/upstreams/u1");
    assert_eq!(
        r.json()["error_msg"],
        "can not delete this upstream, service [s1] is still using it now"
    );
    let r = del("/apisix/admin/plugin_configs/p1");
    assert_eq!(
        r.json()["error_msg"],
        "can not delete this plugin config, route [1] is still using it now"
    );
    assert_eq!(
        del("/apisix/admin/plugin_configs/p1?force=true").status,
        200
    );
    assert_eq!(del("/apisix/admin/routes/1").status, 200);
    assert_eq!(del("/apisix/admin/services/s1").status, 200);
    assert_eq!(del("/apisix/admin/upstreams/u1").status, 200);
}

#[test]
fn a_write_is_answered_once_this_node_serves_it() {
    let echo = Echo::start("one");
    let (gw, ap) = Gateway::start_embedded("", None);
    // No waiting between the answer and the request: the answer came after the data plane
    // applied the write (read-your-writes on the node).
    for i in 0..5 {
        let uri = format!("/ryw{i}");
        let r = admin(
            ap,
            "PUT",
            &format!("/apisix/admin/routes/r{i}"),
            Some(route_to(echo.port, &uri)),
        );
        assert_eq!(r.status, 201);
        assert_eq!(gw.get(&uri).status, 200, "route {i} right after its PUT");
        let r = admin(ap, "DELETE", &format!("/apisix/admin/routes/r{i}"), None);
        assert_eq!(r.status, 200);
        assert_eq!(gw.get(&uri).status, 404, "route {i} right after its DELETE");
    }
}

#[test]
fn writes_are_served_by_the_data_plane_and_survive_a_restart() {
    let echo = Echo::start("one");
    let (gw, ap) = Gateway::start_embedded("", None);
    assert_eq!(gw.get("/svc").status, 404);
    // Read-your-writes: once a write is answered, this node serves it (no waiting here).
    for i in 0..10 {
        let uri = format!("/svc{i}");
        let r = admin(
            ap,
            "PUT",
            &format!("/apisix/admin/routes/{i}"),
            Some(route_to(echo.port, &uri)),
        );
        assert_eq!(r.status, 201);
        assert_eq!(gw.get(&uri).status, 200, "{uri} right after its PUT");
        // A changed route, too.
        let r = admin(
            ap,
            "PUT",
            &format!("/apisix/admin/routes/{i}"),
            Some(route_to(echo.port, &format!("{uri}x"))),
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            gw.get(&format!("{uri}x")).status,
            200,
            "{uri}x right after its PUT"
        );
        assert_eq!(
            gw.get(&uri).status,
            404,
            "{uri} right after it was replaced"
        );
    }
    admin(ap, "DELETE", "/apisix/admin/routes/0", None);
    assert_eq!(gw.get("/svc0x").status, 404, "right after the DELETE");

    let gw = gw.restart();
    wait_until("admin port again", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", ap)).is_ok()
    });
    for i in 1..10 {
        assert_eq!(
            gw.get(&format!("/svc{i}x")).status,
            200,
            "route {i} after restart"
        );
    }
    assert_eq!(gw.get("/svc0x").status, 404);
    assert_eq!(
        admin(ap, "GET", "/apisix/admin/routes", None).json()["total"],
        9
    );
}

#[test]
fn kill_during_writes_leaves_the_previous_or_the_new_state() {
    let (mut gw, ap) = Gateway::start_embedded("", None);
    let writer = std::thread::spawn(move || {
        let mut acked = 0;
        for i in 0..400 {
            let body = route_to(1980, &format!("/k{i}")).to_string();
            let r = std::panic::catch_unwind(|| {
                request(
                    ap,
                    "PUT",
                    &format!("/apisix/admin/routes/{i}"),
                    &[("X-API-KEY", ADMIN_KEY)],
                    body.as_bytes(),
                )
            });
            match r {
                Ok(r) if r.status == 201 => acked = i + 1,
                _ => break,
            }
        }
        acked
    });
    std::thread::sleep(Duration::from_millis(300));
    gw.signal(libc::SIGKILL);
    gw.wait_exit(Duration::from_secs(5));
    let acked = writer.join().unwrap();
    assert!(acked > 0, "some writes were acknowledged before the kill");
    let gw = gw.restart();
    wait_until("admin port again", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", ap)).is_ok()
    });
    let total = admin(ap, "GET", "/apisix/admin/routes", None).json()["total"]
        .as_u64()
        .unwrap() as usize;
    assert!(
        total == acked || total == acked + 1,
        "acknowledged {acked}, stored {total}"
    );
    // On disk: the data file (when the log was ever folded into it) and the log of the writes
    // since, whose last whole line is the newest revision.
    let data_rev = std::fs::read(gw.dir.0.join("data/store.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|d| d["revision"].as_i64())
        .unwrap_or(0);
    let log = std::fs::read_to_string(gw.dir.0.join("data/store.json.log")).unwrap_or_default();
    let log_rev = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| e["rev"].as_i64())
        .max()
        .unwrap_or(0);
    assert!(
        data_rev.max(log_rev) >= acked as i64,
        "{data_rev} {log_rev} {acked}"
    );
}

#[test]
fn a_new_store_is_seeded_from_apisix_yaml_once() {
    let echo = Echo::start("seed");
    let seed = format!(
        "upstreams:\n  - id: echo\n    nodes:\n      \"127.0.0.1:{}\": 1\nroutes:\n  - id: sample\n    uri: /hello\n    upstream_id: echo\n#END\n",
        echo.port
    );
    let (gw, ap) = Gateway::start_embedded("", Some(&seed));
    assert_eq!(gw.get("/hello").status, 200, "{}", gw.stderr());
    assert!(
        gw.stderr().contains("seeded with 2 item(s)"),
        "{}",
        gw.stderr()
    );
    let r = admin(ap, "GET", "/apisix/admin/routes/sample", None);
    assert_eq!(r.json()["value"]["uri"], "/hello");
    admin(ap, "DELETE", "/apisix/admin/routes/sample", None);
    let gw = gw.restart();
    wait_until("admin port again", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", ap)).is_ok()
    });
    assert_eq!(
        gw.get("/hello").status,
        404,
        "the seed applies only to a new store"
    );
}

#[test]
fn a_bad_stored_item_is_refused_alone_and_named() {
    let echo = Echo::start("good");
    let port = free_port();
    let ap = free_port();
    let good = route_to(echo.port, "/good").to_string();
    let mut open = route_to(echo.port, "/open");
    open["plugins"] = json!({"no-such-auth": {}});
    let data = json!({"revision": 3, "items": [
        {"key": "/apisix/routes/1", "value": good, "create_revision": 1, "mod_revision": 1},
        {"key": "/apisix/routes/2", "value": open.to_string(), "create_revision": 2, "mod_revision": 2},
        {"key": "/apisix/routes/3", "value": "{not json", "create_revision": 3, "mod_revision": 3},
    ]});
    let config = embedded_config_yaml(port, ap, "");
    let gw = Gateway::start_with_files(
        &config,
        port,
        "#END\n",
        &[("data/store.json", &data.to_string())],
    );
    assert_eq!(gw.get("/good").status, 200);
    assert_eq!(
        gw.get("/open").status,
        404,
        "never served without its plugin"
    );
    wait_until("errors logged", Duration::from_secs(5), || {
        let log = gw.error_log();
        log.contains("/apisix/routes/2") && log.contains("/apisix/routes/3")
    });
}

#[test]
fn the_data_port_serves_the_admin_api_for_test_harnesses() {
    let echo = Echo::start("dp");
    let (gw, _ap) = Gateway::start_embedded(
        "    serve_on_data_port: true\n    admin_key_required: false\n",
        None,
    );
    let r = call(
        gw.port,
        "PUT",
        "/apisix/admin/routes/1",
        None,
        Some(route_to(echo.port, "/dp")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_until("route served", Duration::from_secs(5), || {
        gw.get("/dp").status == 200
    });
}

#[test]
fn lua_plugins_are_checked_shown_and_served_without_storing_defaults() {
    let gate = include_str!("../t/fixtures/plugins/fixture-gate.lua");
    let echo = Echo::start("lua");
    let (gw, ap) =
        Gateway::start_embedded_with_files("", None, &[("lua/plugins/fixture-gate.lua", gate)]);
    let r = admin(ap, "GET", "/apisix/admin/plugins/fixture-gate", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["properties"]["mode"]["type"], "string");
    // The injected `_meta` schema reads as APISIX's (tools compare its descriptions).
    let meta = &r.json()["properties"]["_meta"]["properties"];
    assert_eq!(
        meta["filter"]["description"],
        "filter determines whether the plugin needs to be executed at runtime"
    );
    assert_eq!(
        meta["priority"]["description"],
        "priority of plugins by customized order"
    );
    let r = admin(ap, "GET", "/apisix/admin/plugins/not-enabled", None);
    assert_eq!(r.status, 404);
    // APISIX's other path to the same schema.
    let r = admin(ap, "GET", "/apisix/admin/schema/plugins/fixture-gate", None);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["properties"]["mode"]["type"], "string");
    // A native plugin's conf error is worded as APISIX wraps a plugin's check_schema error.
    let mut body = route_to(echo.port, "/native");
    body["plugins"] = json!({"redirect": {}});
    let r = admin(ap, "PUT", "/apisix/admin/routes/n", Some(body));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["error_msg"],
        "failed to check the configuration of plugin redirect err: value should match only one schema, but matches none"
    );

    let mut body = route_to(echo.port, "/gated");
    body["plugins"] = json!({"fixture-gate": {"mode": "table"}});
    let r = admin(ap, "PUT", "/apisix/admin/routes/g", Some(body));
    assert_eq!(r.status, 201, "{}", r.body);
    let stored = admin(ap, "GET", "/apisix/admin/routes/g", None).json();
    assert!(
        stored["value"]["plugins"]["fixture-gate"]
            .get("phase")
            .is_none(),
        "check_schema's defaults are not stored: {stored}"
    );
    wait_until("the gated route served", Duration::from_secs(5), || {
        gw.get("/gated").status == 401
    });
    let r = request(gw.port, "GET", "/gated", &[("x-pass", "yes")], b"");
    assert_eq!(r.status, 200);
}

/// APISIX's `data_encryption` format: AES-128-CBC with the keyring entry as key and IV,
/// PKCS#7 padding, standard base64. Written here from the format's description so the test
/// does not trust the gateway's own code.
fn keyring_encrypt(key: &[u8; 16], plain: &[u8]) -> String {
    use aes::cipher::{BlockEncrypt, KeyInit, generic_array::GenericArray};
    use base64::Engine;
    let cipher = aes::Aes128::new(GenericArray::from_slice(key));
    let pad = 16 - plain.len() % 16;
    let mut data = plain.to_vec();
    data.extend(std::iter::repeat_n(pad as u8, pad));
    let mut prev = *key;
    for block in data.chunks_mut(16) {
        for (b, p) in block.iter_mut().zip(prev.iter()) {
            *b ^= p;
        }
        cipher.encrypt_block(GenericArray::from_mut_slice(block));
        prev.copy_from_slice(block);
    }
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[test]
fn encrypt_fields_are_stored_encrypted_shown_in_clear_and_served() {
    // The published vector of APISIX's docs and tests, to pin the helper above.
    assert_eq!(
        keyring_encrypt(b"edd1c9f0985e76a2", b"bar"),
        "77+NmbYqNfN+oLm0aX5akg=="
    );
    let keyauth = include_str!("../t/fixtures/consumers/fixture-keyauth.lua");
    let echo = Echo::start("enc");
    let (gw, ap) = Gateway::start_embedded_with_files(
        "",
        None,
        &[("lua/plugins/fixture-keyauth.lua", keyauth)],
    );
    // The default keyring's first entry encrypts.
    let sealed = keyring_encrypt(b"qeddd145sfvddff3", b"k-secret");

    let r = admin(
        ap,
        "PUT",
        "/apisix/admin/consumers",
        Some(json!({"username": "jack", "plugins": {"fixture-keyauth": {"key": "k-secret"}}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    // What was written (and what PUT answers, as APISIX) holds the encrypted value.
    assert_eq!(
        r.json()["value"]["plugins"]["fixture-keyauth"]["key"],
        sealed
    );
    let shown = admin(ap, "GET", "/apisix/admin/consumers/jack", None).json();
    assert_eq!(
        shown["value"]["plugins"]["fixture-keyauth"]["key"],
        "k-secret"
    );
    let listed = admin(ap, "GET", "/apisix/admin/consumers", None).json();
    assert_eq!(
        listed["list"][0]["value"]["plugins"]["fixture-keyauth"]["key"],
        "k-secret"
    );

    let mut route = route_to(echo.port, "/enc");
    route["plugins"] = json!({"fixture-keyauth": {}});
    assert_eq!(
        admin(ap, "PUT", "/apisix/admin/routes/enc", Some(route)).status,
        201
    );
    let r = request(gw.port, "GET", "/enc", &[("apikey", "k-secret")], b"");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let r = request(gw.port, "GET", "/enc", &[("apikey", sealed.as_str())], b"");
    assert_eq!(r.status, 401, "the stored form is not a credential");

    // A credential is sealed the same way; a PATCH merges into the clear values and seals
    // once (never twice).
    let r = admin(
        ap,
        "PUT",
        "/apisix/admin/consumers/jack/credentials/c1",
        Some(json!({"plugins": {"fixture-keyauth": {"key": "k-cred"}}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.json()["value"]["plugins"]["fixture-keyauth"]["key"],
        keyring_encrypt(b"qeddd145sfvddff3", b"k-cred")
    );
    let r = request(gw.port, "GET", "/enc", &[("apikey", "k-cred")], b"");
    assert_eq!(r.status, 200, "{r:?}");
    // Route-side confs (here a consumer group's) use the plugin's schema and its fields.
    let r = admin(
        ap,
        "PUT",
        "/apisix/admin/consumer_groups/g",
        Some(json!({"plugins": {"fixture-keyauth": {"header": "x-team"}}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let team = keyring_encrypt(b"qeddd145sfvddff3", b"x-team");
    assert_eq!(
        r.json()["value"]["plugins"]["fixture-keyauth"]["header"],
        team
    );
    let r = admin(
        ap,
        "PATCH",
        "/apisix/admin/consumer_groups/g",
        Some(json!({"desc": "patched"})),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json()["value"]["plugins"]["fixture-keyauth"]["header"],
        team
    );
    let shown = admin(ap, "GET", "/apisix/admin/consumer_groups/g", None).json();
    assert_eq!(
        shown["value"]["plugins"]["fixture-keyauth"]["header"],
        "x-team"
    );
    assert_eq!(shown["value"]["desc"], "patched");

    // A route's sealed field reaches the plugin decrypted.
    let mut route = route_to(echo.port, "/team");
    route["plugins"] = json!({"fixture-keyauth": {"header": "x-team"}});
    let r = admin(ap, "PUT", "/apisix/admin/routes/team", Some(route));
    assert_eq!(
        r.json()["value"]["plugins"]["fixture-keyauth"]["header"],
        team
    );
    let r = request(gw.port, "GET", "/team", &[("x-team", "k-secret")], b"");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
}
