//! Config changes through the Admin API reach the data plane incrementally, through the real
//! binary on the embedded store: a change recompiles only what depends on it (other routes keep
//! their plugin conf tables and `conf_version`), an identical re-PUT rebuilds nothing, a change
//! to a shared upstream is served by every route using it, deletes are never missed, and route
//! churn under load fails no request. Correctness only: how fast is measured by
//! `bench/propagation.py`.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const TRACE: &str = include_str!("../t/fixtures/plugins/fixture-trace.lua");

fn admin(port: u16, method: &str, path: &str, body: Option<Value>) -> Resp {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    request(
        port,
        method,
        path,
        &[
            ("Content-Type", "application/json"),
            ("X-API-KEY", ADMIN_KEY),
        ],
        bytes.as_bytes(),
    )
}

fn put(ap: u16, path: &str, body: Value) {
    let r = admin(ap, "PUT", path, Some(body));
    assert!(
        r.status == 200 || r.status == 201,
        "PUT {path}: {} {}",
        r.status,
        r.body
    );
}

fn traced(uri: &str, label: &str, echo: u16) -> Value {
    json!({
        "uri": uri,
        "plugins": {"fixture-trace": {"label": label}},
        "upstream": {"nodes": {format!("127.0.0.1:{echo}"): 1}},
    })
}

fn modified_index(ap: u16, path: &str) -> i64 {
    admin(ap, "GET", path, None).json()["modifiedIndex"]
        .as_i64()
        .unwrap_or_else(|| panic!("no modifiedIndex for {path}"))
}

/// What the fixture plugin saw: how many requests used this conf table, and the `ctx.conf_*`
/// it ran with (`type|id|version`).
fn uses_and_conf(gw: &Gateway, path: &str) -> (String, String) {
    let r = gw.get(path);
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    let uses = r.header("x-uses").unwrap_or("").to_string();
    let conf = r.json()["headers"]["x-conf"]
        .as_str()
        .unwrap_or("")
        .to_string();
    (uses, conf)
}

fn trace_of(gw: &Gateway, path: &str) -> String {
    gw.get(path).header("x-trace").unwrap_or("").to_string()
}

#[test]
fn a_change_to_one_route_leaves_the_conf_tables_and_versions_of_the_others_alone() {
    let echo = Echo::start("e");
    let (gw, ap) =
        Gateway::start_embedded_with_files("", None, &[("lua/plugins/fixture-trace.lua", TRACE)]);
    put(ap, "/apisix/admin/routes/a", traced("/a", "a", echo.port));
    put(ap, "/apisix/admin/routes/b", traced("/b", "b", echo.port));
    wait_until("both routes served", Duration::from_secs(5), || {
        gw.get("/a").status == 200 && gw.get("/b").status == 200
    });
    let version_a = modified_index(ap, "/apisix/admin/routes/a");
    let (uses, conf) = uses_and_conf(&gw, "/a");
    let first: u64 = uses.parse().unwrap();
    assert_eq!(conf, format!("route|a|{version_a}"));

    // Another route changes: route a runs with the very same conf table and conf_version.
    put(ap, "/apisix/admin/routes/b", traced("/b", "b2", echo.port));
    wait_until("route b's change", Duration::from_secs(5), || {
        trace_of(&gw, "/b").starts_with("b2:")
    });
    let (uses, conf) = uses_and_conf(&gw, "/a");
    assert_eq!(
        uses,
        (first + 1).to_string(),
        "the conf table of route a was kept"
    );
    assert_eq!(conf, format!("route|a|{version_a}"));

    // An identical re-PUT of route a (the store bumps its revision and update_time) rebuilds
    // nothing. Writes apply in order, so once the next change to b is served, a's is applied.
    put(ap, "/apisix/admin/routes/a", traced("/a", "a", echo.port));
    assert!(modified_index(ap, "/apisix/admin/routes/a") > version_a);
    put(ap, "/apisix/admin/routes/b", traced("/b", "b3", echo.port));
    wait_until("route b's second change", Duration::from_secs(5), || {
        trace_of(&gw, "/b").starts_with("b3:")
    });
    let (uses, conf) = uses_and_conf(&gw, "/a");
    assert_eq!(
        uses,
        (first + 2).to_string(),
        "an identical re-PUT kept the conf table"
    );
    assert_eq!(conf, format!("route|a|{version_a}"));

    // A real change to route a: a new conf table and its new revision as conf_version.
    put(ap, "/apisix/admin/routes/a", traced("/a", "a2", echo.port));
    wait_until("route a's change", Duration::from_secs(5), || {
        trace_of(&gw, "/a").starts_with("a2:")
    });
    let new_version = modified_index(ap, "/apisix/admin/routes/a");
    let (uses, conf) = uses_and_conf(&gw, "/a");
    assert_eq!(
        uses, "2",
        "a fresh conf table (the wait above used it once)"
    );
    assert_eq!(conf, format!("route|a|{new_version}"));
}

#[test]
fn an_upstream_change_is_served_by_every_route_that_uses_it() {
    let one = Echo::start("one");
    let two = Echo::start("two");
    let (gw, ap) = Gateway::start_embedded("", None);
    let nodes = |port: u16| json!({"nodes": {format!("127.0.0.1:{port}"): 1}});
    put(ap, "/apisix/admin/upstreams/u", nodes(one.port));
    put(ap, "/apisix/admin/services/s", json!({"upstream_id": "u"}));
    put(
        ap,
        "/apisix/admin/routes/direct",
        json!({"uri": "/direct", "upstream_id": "u"}),
    );
    put(
        ap,
        "/apisix/admin/routes/via-service",
        json!({"uri": "/via-service", "service_id": "s"}),
    );
    put(
        ap,
        "/apisix/admin/routes/other",
        json!({"uri": "/other", "upstream": nodes(one.port)}),
    );
    let server = |path: &str| {
        let r = gw.get(path);
        if r.status == 200 {
            r.json()["server"].as_str().unwrap_or("").to_string()
        } else {
            format!("status {}", r.status)
        }
    };
    wait_until("the routes", Duration::from_secs(5), || {
        server("/direct") == "one" && server("/via-service") == "one" && server("/other") == "one"
    });
    put(ap, "/apisix/admin/upstreams/u", nodes(two.port));
    wait_until("the upstream change", Duration::from_secs(5), || {
        server("/direct") == "two"
    });
    assert_eq!(
        server("/via-service"),
        "two",
        "the route through the service too"
    );
    assert_eq!(
        server("/other"),
        "one",
        "a route with its own upstream is not touched"
    );
    // Deleting what a route refers to is refused while in use; forced, the route answers as
    // APISIX does when its upstream is missing.
    let r = admin(ap, "DELETE", "/apisix/admin/upstreams/u?force=true", None);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until("the forced delete", Duration::from_secs(5), || {
        gw.get("/direct").status == 502
    });
    assert_eq!(gw.get("/via-service").status, 502);
}

#[test]
fn deletes_in_bursts_of_writes_are_never_missed() {
    let echo = Echo::start("e");
    let (gw, ap) = Gateway::start_embedded("", None);
    let route = |uri: String| json!({"uri": uri, "upstream": {"nodes": {format!("127.0.0.1:{}", echo.port): 1}}});
    for i in 0..60 {
        put(
            ap,
            &format!("/apisix/admin/routes/r{i}"),
            route(format!("/r{i}")),
        );
    }
    // Delete every other route, each right after a write to its neighbour, as fast as the
    // Admin API answers.
    for i in (0..60).step_by(2) {
        put(
            ap,
            &format!("/apisix/admin/routes/r{}", i + 1),
            route(format!("/r{}", i + 1)),
        );
        let r = admin(ap, "DELETE", &format!("/apisix/admin/routes/r{i}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
    }
    put(ap, "/apisix/admin/routes/last", route("/last".into()));
    wait_until("the last write", Duration::from_secs(5), || {
        gw.get("/last").status == 200
    });
    for i in 0..60 {
        let want = if i % 2 == 0 { 404 } else { 200 };
        assert_eq!(gw.get(&format!("/r{i}")).status, want, "route r{i}");
    }
}

#[test]
fn route_churn_under_load_fails_no_request() {
    let one = Echo::start("one");
    let two = Echo::start("two");
    let (gw, ap) = Gateway::start_embedded("", None);
    let up = |port: u16| json!({"nodes": {format!("127.0.0.1:{port}"): 1}});
    for i in 0..20 {
        put(
            ap,
            &format!("/apisix/admin/routes/steady{i}"),
            json!({"uri": format!("/steady/{i}"), "upstream": up(one.port)}),
        );
    }
    put(
        ap,
        "/apisix/admin/routes/churned",
        json!({"uri": "/churned", "upstream": up(one.port)}),
    );
    wait_until("the routes", Duration::from_secs(5), || {
        gw.get("/churned").status == 200 && gw.get("/steady/19").status == 200
    });

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let port = gw.port;
    let clients: Vec<_> = (0..3)
        .map(|c| {
            let (stop, served) = (stop.clone(), served.clone());
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                let mut n = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    // Steady routes, and the route whose upstream keeps changing: each answer
                    // is the old or the new version, never an error.
                    let path = if n.is_multiple_of(3) {
                        "/churned".to_string()
                    } else {
                        format!("/steady/{}", (n + c) % 20)
                    };
                    let r = request(port, "GET", &path, &[], b"");
                    if r.status != 200 {
                        failures.push(format!("{path}: {} {}", r.status, r.body));
                    }
                    n += 1;
                    served.fetch_add(1, Ordering::Relaxed);
                }
                failures
            })
        })
        .collect();
    for i in 0..150 {
        let port = if i % 2 == 0 { two.port } else { one.port };
        put(
            ap,
            "/apisix/admin/routes/churned",
            json!({"uri": "/churned", "upstream": up(port), "desc": format!("change {i}")}),
        );
        // New routes come and go beside the steady ones.
        put(
            ap,
            &format!("/apisix/admin/routes/extra{}", i % 7),
            json!({"uri": format!("/extra/{i}"), "upstream": up(one.port)}),
        );
        if i % 5 == 0 {
            let r = admin(
                ap,
                "DELETE",
                &format!("/apisix/admin/routes/extra{}", (i + 3) % 7),
                None,
            );
            assert!(r.status == 200 || r.status == 404, "{}", r.body);
        }
    }
    put(
        ap,
        "/apisix/admin/routes/final",
        json!({"uri": "/final", "upstream": up(two.port)}),
    );
    wait_until("the last change", Duration::from_secs(5), || {
        gw.get("/final").status == 200
    });
    stop.store(true, Ordering::Relaxed);
    let failures: Vec<String> = clients
        .into_iter()
        .flat_map(|c| c.join().unwrap())
        .collect();
    assert!(served.load(Ordering::Relaxed) > 100, "the load ran");
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(
        gw.get("/churned").json()["server"],
        "one",
        "the last change (i = 149) is served"
    );
}
