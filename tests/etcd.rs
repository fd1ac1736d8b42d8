//! The etcd provider through the real binary and a real etcd (Debian's `etcd-server`), each
//! test with its own etcd on free loopback ports: nodes sharing one etcd, etcd going away and
//! coming back, compaction, the saved last good config, paged listings, bad items, fail-closed
//! plugins and APISIX's value shapes both ways.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const WAIT: Duration = Duration::from_secs(20);

fn route_to(echo: &Echo, uri: &str) -> Value {
    json!({"uri": uri, "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", echo.port): 1}}})
}

fn status(port: u16, path: &str) -> u16 {
    request(port, "GET", path, &[], b"").status
}

fn wait_status(gw: &Gateway, path: &str, want: u16) {
    wait_until(&format!("{path} answering {want}"), WAIT, || {
        status(gw.port, path) == want
    });
}

fn count(text: &str, needle: &str) -> usize {
    text.lines().filter(|l| l.contains(needle)).count()
}

#[test]
fn a_write_on_one_node_is_served_by_the_others_on_the_same_etcd() {
    let etcd = Etcd::start();
    let echo = Echo::start("e");
    let hosts = [etcd.url()];
    let (a, a_admin) = Gateway::start_etcd("traditional", &hosts, "", "", &[]);
    // B lists a dead endpoint first: it fails over to the live one.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let (b, _) = Gateway::start_etcd("data_plane", &[dead.clone(), etcd.url()], "", "", &[]);
    let (c, c_admin) = Gateway::start_etcd("control_plane", &hosts, "", "", &[]);

    // Every node says where its config comes from.
    for (gw, admin) in [(&a, Some(a_admin)), (&b, None), (&c, Some(c_admin))] {
        // The start-up line may land just after the port opens.
        wait_until("the start-up line", Duration::from_secs(10), || {
            gw.stderr().contains("etcd provider")
        });
        let banner = gw.stderr();
        assert!(banner.contains("etcd provider"), "{banner}");
        assert!(banner.contains(&etcd.url()), "{banner}");
        match admin {
            Some(p) => assert!(
                banner.contains(&format!("Admin API on http://127.0.0.1:{p}/apisix/admin")),
                "{banner}"
            ),
            None => assert!(banner.contains("no Admin API"), "{banner}"),
        }
    }
    assert!(b.stderr().contains(&dead), "both endpoints are named");
    assert!(c.stderr().contains("no data-plane listener"));

    let r = admin_call(
        a_admin,
        "PUT",
        "/apisix/admin/routes/1",
        Some(&route_to(&echo, "/from-a")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_status(&b, "/from-a", 200);
    wait_status(&a, "/from-a", 200);
    assert_eq!(
        request(b.port, "GET", "/from-a", &[], b"").json()["server"],
        "e"
    );

    // The control plane writes too; both data planes serve it.
    let r = admin_call(
        c_admin,
        "POST",
        "/apisix/admin/routes",
        Some(&route_to(&echo, "/from-c")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_status(&a, "/from-c", 200);
    wait_status(&b, "/from-c", 200);

    let r = admin_call(a_admin, "DELETE", "/apisix/admin/routes/1", None);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_status(&b, "/from-a", 404);
    assert!(
        b.error_log().contains("failed") && b.error_log().contains("now using"),
        "the failover is logged: {}",
        b.error_log()
    );
}

#[test]
fn etcd_killed_under_load_fails_no_request_refuses_writes_then_a_new_write_propagates() {
    let mut etcd = Etcd::start();
    let echo = Echo::start("e");
    let hosts = [etcd.url()];
    let (a, a_admin) = Gateway::start_etcd("traditional", &hosts, "", "", &[]);
    let (b, _) = Gateway::start_etcd("data_plane", &hosts, "", "", &[]);
    let r = admin_call(
        a_admin,
        "PUT",
        "/apisix/admin/routes/load",
        Some(&route_to(&echo, "/load")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_status(&a, "/load", 200);
    wait_status(&b, "/load", 200);

    // A client sends requests to both nodes for the whole test (bounded in time).
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(Mutex::new(Vec::new()));
    let client = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        let ports = [a.port, b.port];
        std::thread::spawn(move || {
            let end = std::time::Instant::now() + Duration::from_secs(90);
            let mut i = 0usize;
            while !stop.load(Ordering::Relaxed) && std::time::Instant::now() < end {
                let port = ports[i % 2];
                i += 1;
                let r = request(port, "GET", "/load", &[], b"");
                sent.fetch_add(1, Ordering::Relaxed);
                if r.status != 200 {
                    failed.lock().unwrap().push((port, r.status, r.body));
                }
            }
        })
    };
    wait_until("some load", WAIT, || sent.load(Ordering::Relaxed) > 50);

    etcd.kill();
    let before = sent.load(Ordering::Relaxed);
    // Writes are refused while etcd is away, each with a message that says why.
    for i in 0..10 {
        let r = admin_call(
            a_admin,
            "PUT",
            &format!("/apisix/admin/routes/w{i}"),
            Some(&route_to(&echo, "/while-down")),
        );
        assert_eq!(r.status, 503, "{}", r.body);
        assert!(
            r.json()["error_msg"]
                .as_str()
                .unwrap()
                .contains("etcd is unreachable"),
            "{}",
            r.body
        );
    }
    // Let the syncs retry a few times (backoff) while traffic goes on.
    std::thread::sleep(Duration::from_secs(3));
    wait_until("load while etcd is down", WAIT, || {
        sent.load(Ordering::Relaxed) > before + 100
    });
    for gw in [&a, &b] {
        let log = gw.error_log();
        assert_eq!(
            count(&log, "[warn]"),
            1,
            "one warning for the whole outage, not one per request or retry: {log}"
        );
        assert_eq!(count(&log, "etcd is unreachable"), 1, "{log}");
    }

    etcd.restart();
    let r = admin_call(
        a_admin,
        "PUT",
        "/apisix/admin/routes/after",
        Some(&route_to(&echo, "/after")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_status(&b, "/after", 200);
    wait_status(&a, "/after", 200);

    stop.store(true, Ordering::Relaxed);
    client.join().unwrap();
    let failed = failed.lock().unwrap();
    assert!(
        failed.is_empty(),
        "{} of {} requests failed: {:?}",
        failed.len(),
        sent.load(Ordering::Relaxed),
        &failed[..failed.len().min(5)]
    );
    assert!(a.error_log().contains("reachable again"));
}

#[test]
fn compaction_while_a_node_watches_forces_a_relist_that_loses_no_change_or_delete() {
    let mut etcd = Etcd::start();
    let echo = Echo::start("e");
    let hosts = [etcd.url()];
    let (gw, admin) = Gateway::start_etcd("traditional", &hosts, "", "", &[]);
    for (id, uri) in [("keep", "/keep"), ("gone", "/gone"), ("old", "/v1")] {
        let r = admin_call(
            admin,
            "PUT",
            &format!("/apisix/admin/routes/{id}"),
            Some(&route_to(&echo, uri)),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    wait_status(&gw, "/v1", 200);
    wait_status(&gw, "/gone", 200);

    // The node is frozen while etcd restarts and changes, then compacts its history: its
    // watch cannot resume where it was and must list again.
    gw.signal(libc::SIGSTOP);
    etcd.restart();
    let v2 = json!({"id": "old", "uri": "/v2", "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", echo.port): 1}}});
    etcd.ctl(&["put", "/apisix/routes/old", &v2.to_string()]);
    etcd.ctl(&["del", "/apisix/routes/gone"]);
    let v = json!({"id": "new", "uri": "/new", "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", echo.port): 1}}});
    etcd.ctl(&["put", "/apisix/routes/new", &v.to_string()]);
    let rev = etcd.revision();
    etcd.ctl(&["compact", &rev.to_string()]);
    gw.signal(libc::SIGCONT);

    // Traffic on an unchanged route never fails while the node lists again.
    let mut checks = 0;
    wait_until("the changes after compaction", WAIT, || {
        checks += 1;
        assert_eq!(
            status(gw.port, "/keep"),
            200,
            "an unchanged route kept serving"
        );
        status(gw.port, "/new") == 200
            && status(gw.port, "/v2") == 200
            && status(gw.port, "/v1") == 404
            && status(gw.port, "/gone") == 404
    });
    assert!(checks > 0);
    let log = gw.error_log();
    assert!(log.contains("compacted"), "the re-list is logged: {log}");
}

#[test]
fn a_node_started_while_etcd_is_down_serves_its_saved_config_then_catches_up() {
    let mut etcd = Etcd::start();
    let echo = Echo::start("e");
    let hosts = [etcd.url()];
    let (gw, admin) = Gateway::start_etcd("traditional", &hosts, "", "", &[]);
    for (id, uri) in [("a", "/a"), ("b", "/b")] {
        let r = admin_call(
            admin,
            "PUT",
            &format!("/apisix/admin/routes/{id}"),
            Some(&route_to(&echo, uri)),
        );
        assert_eq!(r.status, 201, "{}", r.body);
    }
    wait_status(&gw, "/b", 200);
    let saved = gw.dir.0.join("data/etcd-last-good.json");
    wait_until("the saved config", WAIT, || {
        std::fs::read_to_string(&saved).is_ok_and(|s| s.contains("/apisix/routes/b"))
    });

    etcd.kill();
    let gw = gw.restart();
    assert_eq!(status(gw.port, "/a"), 200, "{}", gw.error_log());
    assert_eq!(status(gw.port, "/b"), 200);
    assert!(
        gw.error_log()
            .contains("serving the last good config saved in"),
        "{}",
        gw.error_log()
    );

    // etcd comes back having changed while this node was away.
    etcd.restart();
    etcd.ctl(&["del", "/apisix/routes/a"]);
    let c = json!({"id": "c", "uri": "/c", "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", echo.port): 1}}});
    etcd.ctl(&["put", "/apisix/routes/c", &c.to_string()]);
    wait_status(&gw, "/c", 200);
    wait_status(&gw, "/a", 404);
    assert_eq!(status(gw.port, "/b"), 200);
    wait_until("the saved config to follow", WAIT, || {
        std::fs::read_to_string(&saved)
            .is_ok_and(|s| s.contains("/apisix/routes/c") && !s.contains("/apisix/routes/a\""))
    });
}

#[test]
fn a_six_mib_route_set_loads_through_paged_reads() {
    let etcd = Etcd::start();
    let echo = Echo::start("e");
    // 3,000 routes of about 2 KiB each (twenty long URIs apiece): over 6 MiB, more than one
    // gRPC message (4 MiB) can carry.
    let mut kvs = Vec::new();
    let mut total = 0;
    for i in 0..3000 {
        let uris: Vec<String> = (0..20)
            .map(|j| format!("/r{i}/{j}/{}", "x".repeat(90)))
            .collect();
        let v = json!({"id": i.to_string(), "uris": uris, "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", echo.port): 1}}})
            .to_string();
        total += v.len();
        kvs.push((format!("/apisix/routes/{i}"), v));
    }
    assert!(total > 6 << 20, "{total} bytes");
    etcd.put_many(&kvs);

    let (gw, _) = Gateway::start_etcd("data_plane", &[etcd.url()], "", "", &[]);
    let x = "x".repeat(90);
    for i in [0, 1500, 2999] {
        wait_status(&gw, &format!("/r{i}/19/{x}"), 200);
    }
    let log = gw.error_log();
    let line = log
        .lines()
        .find(|l| l.contains("etcd listing of /apisix/: 3000 keys"))
        .unwrap_or_else(|| panic!("{log}"));
    let pages: usize = line
        .split(" page(s)")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(pages > 1, "{line}");
}

#[test]
fn a_bad_item_between_good_ones_does_not_block_them() {
    let etcd = Etcd::start();
    let echo = Echo::start("e");
    let good = |id: &str| {
        json!({"id": id, "uri": format!("/{id}"), "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", echo.port): 1}}}).to_string()
    };
    etcd.ctl(&["put", "/apisix/routes/r1", &good("r1")]);
    etcd.ctl(&["put", "/apisix/routes/r2", "{not json"]);
    etcd.ctl(&["put", "/apisix/routes/r3", r#"{"id":"r3","uri":7}"#]);
    etcd.ctl(&["put", "/apisix/routes/r4", &good("r4")]);
    let (gw, _) = Gateway::start_etcd("data_plane", &[etcd.url()], "", "", &[]);
    wait_status(&gw, "/r1", 200);
    wait_status(&gw, "/r4", 200);
    let log = gw.error_log();
    assert!(log.contains("/apisix/routes/r2"), "{log}");
    assert!(log.contains("/apisix/routes/r3"), "{log}");

    // The bad items stay; every other item keeps updating.
    etcd.ctl(&["put", "/apisix/routes/r5", &good("r5")]);
    wait_status(&gw, "/r5", 200);
    etcd.ctl(&["del", "/apisix/routes/r1"]);
    wait_status(&gw, "/r1", 404);
    // A bad item fixed in etcd is served.
    etcd.ctl(&["put", "/apisix/routes/r2", &good("r2")]);
    wait_status(&gw, "/r2", 200);
    assert_eq!(status(gw.port, "/r4"), 200);
}

/// An auth plugin for these tests: a request passes with `x-key: <conf.key>` only.
const AUTH: &str = r#"
local core_schema = require("apisix.core.schema")
local _M = {
    version = 0.1,
    priority = 2510,
    type = "auth",
    name = "NAME",
    schema = {
        type = "object",
        properties = { key = { type = "string", minLength = 1 } },
        required = { "key" },
    },
}
function _M.check_schema(conf)
    return core_schema.check(_M.schema, conf)
end
function _M.rewrite(conf, ctx)
    if ngx.req.get_headers()["x-key"] ~= conf.key then
        return 401, { message = "missing or wrong x-key" }
    end
end
return _M
"#;

#[test]
fn a_route_with_an_unknown_disabled_or_invalid_auth_plugin_is_refused_not_served_open() {
    let etcd = Etcd::start();
    let echo = Echo::start("e");
    let on = AUTH.replace("NAME", "etcd-auth");
    let off = AUTH.replace("NAME", "etcd-auth-off");
    let (gw, admin) = Gateway::start_etcd(
        "traditional",
        &[etcd.url()],
        "",
        "plugins:\n  - etcd-auth\n",
        &[
            ("lua/plugins/etcd-auth.lua", &on),
            ("lua/plugins/etcd-auth-off.lua", &off),
        ],
    );
    let route = |id: &str, plugins: Value| {
        json!({"id": id, "uri": format!("/{id}"), "plugins": plugins, "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", echo.port): 1}}}).to_string()
    };
    etcd.ctl(&[
        "put",
        "/apisix/routes/unknown",
        &route("unknown", json!({"no-such-auth": {"key": "k"}})),
    ]);
    etcd.ctl(&[
        "put",
        "/apisix/routes/disabled",
        &route("disabled", json!({"etcd-auth-off": {"key": "k"}})),
    ]);
    etcd.ctl(&[
        "put",
        "/apisix/routes/invalid",
        &route("invalid", json!({"etcd-auth": {"key": 7}})),
    ]);
    etcd.ctl(&[
        "put",
        "/apisix/routes/guarded",
        &route("guarded", json!({"etcd-auth": {"key": "s3"}})),
    ]);
    wait_status(&gw, "/guarded", 401);
    let pass = request(gw.port, "GET", "/guarded", &[("x-key", "s3")], b"");
    assert_eq!(pass.status, 200, "{}", pass.body);
    for id in ["unknown", "disabled", "invalid"] {
        assert_eq!(
            status(gw.port, &format!("/{id}")),
            404,
            "route {id} refused"
        );
        let with_key = request(gw.port, "GET", &format!("/{id}"), &[("x-key", "k")], b"");
        assert_eq!(with_key.status, 404);
    }
    let log = gw.error_log();
    for id in ["unknown", "disabled", "invalid"] {
        assert!(
            log.lines()
                .any(|l| l.contains("[error]") && l.contains(&format!("/apisix/routes/{id} "))),
            "route {id} is named in an error: {log}"
        );
    }

    // A guarded route changed to a conf its plugin refuses is withdrawn, not served open.
    etcd.ctl(&[
        "put",
        "/apisix/routes/guarded",
        &route("guarded", json!({"etcd-auth": {"key": ""}})),
    ]);
    wait_status(&gw, "/guarded", 404);

    // The Admin API refuses the same confs outright.
    let r = admin_call(
        admin,
        "PUT",
        "/apisix/admin/routes/x",
        Some(
            &json!({"uri": "/x", "plugins": {"etcd-auth-off": {"key": "k"}}, "upstream": {"nodes": {"127.0.0.1:1980": 1}}}),
        ),
    );
    assert_eq!(r.status, 400, "{}", r.body);
}

/// Every field APISIX's route schema allows (`additionalProperties = false`).
const ROUTE_FIELDS: &[&str] = &[
    "id",
    "name",
    "desc",
    "labels",
    "create_time",
    "update_time",
    "uri",
    "uris",
    "methods",
    "host",
    "hosts",
    "remote_addr",
    "remote_addrs",
    "vars",
    "filter_func",
    "priority",
    "plugins",
    "plugin_config_id",
    "service_id",
    "upstream_id",
    "upstream",
    "timeout",
    "enable_websocket",
    "status",
    "script",
    "script_id",
];

#[test]
fn etcdctl_written_apisix_values_are_served_and_moongate_values_read_back_as_apisix_json() {
    let etcd = Etcd::start();
    let echo = Echo::start("e");
    // As APISIX's Admin API stores them, old directory markers included.
    etcd.ctl(&["put", "/apisix/routes", "init_dir"]);
    etcd.ctl(&[
        "put",
        "/apisix/upstreams/u1",
        &json!({"id": "u1", "type": "roundrobin", "nodes": {format!("127.0.0.1:{}", echo.port): 1}, "create_time": 1700000000, "update_time": 1700000000}).to_string(),
    ]);
    etcd.ctl(&[
        "put",
        "/apisix/services/s1",
        &json!({"id": "s1", "upstream_id": "u1", "create_time": 1700000000, "update_time": 1700000000}).to_string(),
    ]);
    etcd.ctl(&[
        "put",
        "/apisix/routes/00000000000000000012",
        &json!({"id": "00000000000000000012", "uri": "/apisix-shaped", "methods": ["GET"], "service_id": "s1", "priority": 0, "status": 1, "create_time": 1700000000, "update_time": 1700000001}).to_string(),
    ]);
    let (gw, admin) = Gateway::start_etcd("traditional", &[etcd.url()], "", "", &[]);
    wait_status(&gw, "/apisix-shaped", 200);
    assert_eq!(
        request(gw.port, "GET", "/apisix-shaped", &[], b"").json()["server"],
        "e"
    );

    // The Admin API shows etcd's revisions as APISIX does.
    let got = admin_call(
        admin,
        "GET",
        "/apisix/admin/routes/00000000000000000012",
        None,
    );
    assert_eq!(got.status, 200, "{}", got.body);
    let kv: Value = serde_json::from_str(&etcd.ctl(&[
        "get",
        "/apisix/routes/00000000000000000012",
        "-w",
        "json",
    ]))
    .unwrap();
    let kv = &kv["kvs"][0];
    assert_eq!(got.json()["createdIndex"], kv["create_revision"]);
    assert_eq!(got.json()["modifiedIndex"], kv["mod_revision"]);
    assert_eq!(got.json()["key"], "/apisix/routes/00000000000000000012");

    // What moongate writes is what APISIX writes: the key layout, the id, the times, and no
    // field APISIX's schema would refuse.
    let r = admin_call(
        admin,
        "PUT",
        "/apisix/admin/routes/m1",
        Some(&json!({"uri": "/m1", "name": "m", "upstream_id": "u1", "plugins": {}})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let r = admin_call(
        admin,
        "POST",
        "/apisix/admin/routes",
        Some(&json!({"uri": "/m2", "service_id": "s1"})),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    let posted_id = r.json()["value"]["id"].as_str().unwrap().to_string();
    assert_eq!(posted_id.len(), 20, "{posted_id}");
    for id in ["m1", posted_id.as_str()] {
        let text = etcd.ctl(&["get", &format!("/apisix/routes/{id}"), "--print-value-only"]);
        let v: Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
        let o = v.as_object().unwrap();
        for k in o.keys() {
            assert!(ROUTE_FIELDS.contains(&k.as_str()), "{k} in {v}");
        }
        assert_eq!(v["id"], id);
        assert!(
            v["create_time"].is_i64() && v["update_time"].is_i64(),
            "{v}"
        );
        assert!(v.get("priority").is_none(), "no defaults are stored: {v}");
    }
    wait_status(&gw, "/m1", 200);
    wait_status(&gw, "/m2", 200);
    // POST ids come from a write to /apisix/gen_id, as APISIX makes them.
    let gen_id: Value =
        serde_json::from_str(&etcd.ctl(&["get", "/apisix/gen_id", "-w", "json"])).unwrap();
    assert_eq!(
        format!("{:020}", gen_id["kvs"][0]["mod_revision"].as_i64().unwrap()),
        posted_id
    );
}

#[test]
fn tls_client_certificates_sni_verification_and_a_user_work_as_apisix_names_them() {
    let etcd = Etcd::start_tls("pw-1");
    let echo = Echo::start("e");
    let certs = etcd.certs.as_ref().unwrap();
    let files = [
        ("conf/etcd-ca.pem", certs.ca.as_str()),
        ("conf/client.pem", certs.client.as_str()),
        ("conf/client-key.pem", certs.client_key.as_str()),
    ];
    let ca = "apisix:\n  ssl:\n    ssl_trusted_certificate: conf/etcd-ca.pem\n";
    let user = |password: &str| {
        format!(
            "    user: root\n    password: {password}\n    tls:\n      cert: conf/client.pem\n      key: conf/client-key.pem\n"
        )
    };
    // etcd's certificate names etcd.test only: the node connects to 127.0.0.1 and sends
    // that name.
    let verified = format!("{}      sni: etcd.test\n", user("pw-1"));
    let (a, a_admin) = Gateway::start_etcd("traditional", &[etcd.url()], &verified, ca, &files);
    let unverified = format!("{}      verify: false\n", user("pw-1"));
    let (b, _) = Gateway::start_etcd("data_plane", &[etcd.url()], &unverified, "", &files);
    let r = admin_call(
        a_admin,
        "PUT",
        "/apisix/admin/routes/1",
        Some(&route_to(&echo, "/tls")),
    );
    assert_eq!(r.status, 201, "{}", r.body);
    wait_status(&a, "/tls", 200);
    wait_status(&b, "/tls", 200);
    assert!(etcd.ctl(&["get", "/apisix/routes/1"]).contains("/tls"));

    // Without the SNI name the certificate does not match; without the CA it is not trusted;
    // with a wrong password etcd refuses. Each says so.
    let cases = [
        (user("pw-1"), ca, "certificate not valid for name"),
        (
            format!("{}      sni: etcd.test\n", user("pw-1")),
            "",
            "UnknownIssuer",
        ),
        (
            format!("{}      sni: etcd.test\n", user("wrong")),
            ca,
            "authentication failed",
        ),
    ];
    for (extra, top, expect) in cases {
        let (gw, admin) = Gateway::start_etcd("traditional", &[etcd.url()], &extra, top, &files);
        let r = admin_call(admin, "GET", "/apisix/admin/routes/1", None);
        assert!(r.status >= 500, "{} {}", r.status, r.body);
        assert!(r.body.contains(expect), "{expect}: {}", r.body);
        assert_eq!(status(gw.port, "/tls"), 404, "nothing is served");
    }
}
