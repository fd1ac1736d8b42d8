//! The `apisix.*` modules beside `apisix.core` that plugins require, through the real binary
//! with our fixture plugin `t/fixtures/shim/shim-modules.lua`: secret references resolved
//! from the environment and from a Vault-shaped HTTP server, a plugin choosing the upstream
//! (the request really reaches the other backend), and the read-only modules.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use support::*;

const MODULES: &str = include_str!("../t/fixtures/shim/shim-modules.lua");

fn config(port: u16) -> String {
    // `null` in config.yaml reads as an absent key (plugin_attr of shim-modules is nil).
    format!(
        "{}plugins:\n  - shim-modules\n",
        plugin_attr(&config_yaml(port, ""), "  shim-modules: null\n")
    )
}

fn start(routes: &str, env: &[(&str, &str)]) -> Gateway {
    let port = free_port();
    Gateway::start_with_files_env(
        &config(port),
        port,
        &format!("{routes}#END\n"),
        &[("lua/plugins/shim-modules.lua", MODULES)],
        env,
    )
}

/// The `X-Echo-Server` name of the backend that answered.
fn served_by(r: &Resp) -> String {
    r.header("x-echo-server").unwrap_or("").to_string()
}

#[test]
fn a_plugin_choosing_an_inline_upstream_sends_the_request_there() {
    let a = Echo::start("a");
    let b = Echo::start("b");
    let routes = format!(
        "routes:\n  - id: r1\n    uri: /inline\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n    plugins:\n      shim-modules: {{case: pick_inline, port: {b}}}\n  - id: r2\n    uri: /plain\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n  - id: r3\n    uri: /byname\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n    plugins:\n      shim-modules: {{case: pick_inline, host: localhost, port: {b}}}\n",
        a = a.port,
        b = b.port
    );
    let gw = start(&routes, &[]);
    // Several requests: the first compiles the conf, the next ones reuse it.
    for _ in 0..3 {
        let r = gw.get("/inline");
        assert_eq!(r.status, 200, "{}", gw.error_log());
        assert_eq!(served_by(&r), "b", "{r:?}");
        // pass_host: node in the chosen conf: the upstream saw its own address as Host.
        assert_eq!(
            r.json()["headers"]["host"],
            format!("127.0.0.1:{}", b.port),
            "{r:?}"
        );
    }
    // The route without the plugin still goes to its own upstream.
    assert_eq!(served_by(&gw.get("/plain")), "a");
    // A node given by name is resolved without blocking, then used.
    let r = gw.get("/byname");
    assert_eq!(
        (r.status, served_by(&r)),
        (200, "b".into()),
        "{}",
        gw.error_log()
    );
}

#[test]
fn ctx_upstream_id_picks_a_configured_upstream_and_a_missing_one_is_502() {
    let a = Echo::start("a");
    let b = Echo::start("b");
    let routes = format!(
        "upstreams:\n  - id: u-b\n    nodes:\n      \"127.0.0.1:{b}\": 1\nroutes:\n  - id: r1\n    uri: /byid\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n    plugins:\n      shim-modules: {{case: pick_id, upstream_id: u-b}}\n  - id: r2\n    uri: /missing\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n    plugins:\n      shim-modules: {{case: pick_id, upstream_id: nope}}\n",
        a = a.port,
        b = b.port
    );
    let gw = start(&routes, &[]);
    let r = gw.get("/byid");
    assert_eq!(
        (r.status, served_by(&r)),
        (200, "b".into()),
        "{}",
        gw.error_log()
    );
    let r = gw.get("/missing");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        gw.error_log()
            .contains("failed to find upstream by id: nope"),
        "{}",
        gw.error_log()
    );
}

#[test]
fn an_upstream_moongate_cannot_use_fails_the_request_instead_of_using_the_route_s() {
    let a = Echo::start("a");
    let routes = format!(
        "routes:\n  - id: r1\n    uri: /bad\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n    plugins:\n      shim-modules: {{case: pick_bad}}\n",
        a = a.port
    );
    let gw = start(&routes, &[]);
    let r = gw.get("/bad");
    assert_eq!(r.status, 500, "{r:?}");
    assert_ne!(served_by(&r), "a");
    let log = gw.error_log();
    assert!(
        log.contains("apisix.upstream.set: cannot send the request to upstream shim#bad"),
        "{log}"
    );
}

/// A server shaped like Vault's KV API: `GET /v1/kv/apisix/jack` with the right token
/// answers `{"data":{"password":"from-vault"}}`; anything else 403 `{"errors":[]}`.
fn vault() -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = String::from_utf8_lossy(&buf).to_string();
            s.lock().unwrap().push(head.clone());
            let line = head.lines().next().unwrap_or("").to_string();
            let token_ok = head
                .lines()
                .any(|l| l.eq_ignore_ascii_case("x-vault-token: root-token"));
            let (status, body) = if line.starts_with("GET /v1/kv/apisix/jack ") && token_ok {
                ("200 OK", r#"{"data":{"password":"from-vault"}}"#)
            } else {
                ("403 Forbidden", r#"{"errors":[]}"#)
            };
            let _ = c.write_all(
                format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
                .as_bytes(),
            );
        }
    });
    (port, seen)
}

#[test]
fn secret_references_resolve_from_the_environment_and_a_vault_secret_config() {
    let a = Echo::start("a");
    let (vport, seen) = vault();
    let routes = format!(
        "secrets:\n  - id: vault/v1\n    uri: http://127.0.0.1:{vport}\n    prefix: kv\n    token: $env://SHIM_VAULT_TOKEN\nroutes:\n  - id: r1\n    uri: /secret\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n    plugins:\n      shim-modules:\n        case: secret\n        token: $env://SHIM_SECRET\n        nested:\n          deep: $secret://vault/v1/apisix/jack/password\n          plain: text\n",
        a = a.port
    );
    let gw = start(
        &routes,
        &[
            ("SHIM_SECRET", "s3cr3t"),
            ("SHIM_JSON", r#"{"field":"from-json"}"#),
            ("SHIM_VAULT_TOKEN", "root-token"),
        ],
    );
    let r = gw.get("/secret");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let v = r.json();
    // The runner gave the phase a conf with the references replaced.
    assert_eq!(v["token"], "s3cr3t");
    assert_eq!(v["nested"], json!({"deep": "from-vault", "plain": "text"}));
    // fetch_secrets: a copy, references resolved, an unresolvable one kept as written.
    assert_eq!(
        v["resolved"],
        json!({"a": "s3cr3t", "b": {"c": "from-json"}, "d": "plain", "e": "$env://SHIM_NOT_SET"})
    );
    assert_eq!(v["original_untouched"], "$env://SHIM_SECRET");
    assert_eq!(v["is_ref"], json!([true, true, false, false]));
    assert_eq!(v["has_ref"], true);
    assert_eq!(v["vault"], json!(["from-vault"]));
    assert_eq!(
        v["missing"],
        json!([
            null,
            "no secret conf, secret_uri: $secret://vault/none/kv/x"
        ])
    );
    assert_eq!(v["bad"], json!([null, "error format: no secret manager"]));
    let log = gw.error_log();
    assert!(
        log.contains("failed to resolve secret reference: $env://SHIM_NOT_SET"),
        "{log}"
    );
    // The token reached Vault resolved from its own $env:// reference.
    assert!(
        seen.lock()
            .unwrap()
            .iter()
            .any(|h| h.to_ascii_lowercase().contains("x-vault-token: root-token")),
        "{:?}",
        seen.lock().unwrap()
    );
}

#[test]
fn read_only_modules_see_the_running_config() {
    let a = Echo::start("a");
    let routes = format!(
        "upstreams:\n  - id: u-b\n    nodes:\n      \"127.0.0.1:{a}\": 1\nservices:\n  - id: s1\n    name: billing\n    upstream_id: u-b\nglobal_rules:\n  - id: g1\n    plugins: {{}}\nplugin_metadata:\n  - id: shim-modules\n    color: blue\nroutes:\n  - id: r1\n    uri: /modules/:name\n    upstream_id: u-b\n    plugins:\n      shim-modules: {{case: modules}}\n  - id: r2\n    uri: /other\n    service_id: s1\n",
        a = a.port
    );
    let gw = start(&routes, &[]);
    let r = gw.get("/modules/jack");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let v: Value = r.json();
    assert_eq!(
        v["upstream_b_nodes"],
        json!({ format!("127.0.0.1:{}", a.port): 1 })
    );
    assert_eq!(v["upstream_missing"], true);
    assert_eq!(v["upstream_count"], 1);
    assert_eq!(v["version_is_number"], true);
    assert_eq!(v["check_ok"], true);
    assert_eq!(
        v["check_v6"],
        json!([false, "IPv6 address must be enclosed with '[' and ']'"])
    );
    assert_eq!(
        v["matched"],
        json!({"_path": "/modules/:name", "name": "jack"})
    );
    assert_eq!(v["param"], "jack");
    assert_eq!(v["service"], "billing");
    assert_eq!(v["services"], 1);
    assert_eq!(v["global_rules"], 1);
    assert_eq!(v["routes"], 2);
    assert_eq!(v["first_route_uri"], "/modules/:name");
    assert_eq!(v["router_http"][0], false);
    assert!(
        v["router_http"][1]
            .as_str()
            .unwrap_or("")
            .contains("apisix.router.router_http is not supported by moongate"),
        "{v}"
    );
    assert_eq!(v["redis_default_port"], 6379);
    assert_eq!(v["conn_key_ttl"], 3600);
    // Metadata checked with the plugin's metadata schema: its default is filled in.
    assert_eq!(
        v["metadata"],
        json!({"id": "shim-modules", "color": "blue", "greeting": "hi"})
    );
    assert_eq!(v["no_metadata"], true);
    assert_eq!(v["attr_is_nil"], true);
}

#[test]
fn empty_header_values_remove_and_ctx_knows_the_node_and_the_original_uri() {
    let a = Echo::start("a");
    let routes = format!(
        "routes:\n  - id: r1\n    uri: /misc/*\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n    plugins:\n      shim-modules: {{case: misc}}\n  - id: r2\n    uri: /skip\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n    plugins:\n      shim-modules: {{case: skip}}\n  - id: r3\n    uri: /length\n    lua_handlers:\n      content_by_lua: |\n        ngx.header[\"Content-Length\"] = 4\n        ngx.say(\"hello\")\n        ngx.say(\"world\")\n",
        a = a.port
    );
    let gw = start(&routes, &[]);
    let r = request(
        gw.port,
        "GET",
        "/misc/a%2Fb?x=1",
        &[("X-Drop", "1"), ("X-Keep", "2")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let seen = r.json();
    assert_eq!(seen["headers"].get("x-drop"), None, "{seen}");
    assert_eq!(seen["headers"]["x-keep"], "2");
    assert_eq!(
        seen["headers"]["x-sub-err"],
        "failed to compile the replacement template"
    );
    assert!(
        gw.error_log()
            .contains("invalid capturing variable name found in \"/$`1\""),
        "{}",
        gw.error_log()
    );
    assert_eq!(r.header("x-echo-server"), None, "{r:?}");
    assert_eq!(
        r.header("x-balancer"),
        Some(format!("127.0.0.1:{}", a.port).as_str())
    );
    assert_eq!(r.header("x-real-uri"), Some("/misc/a%2Fb?x=1"));

    let r = gw.get("/skip");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-not-skipped"), None, "{r:?}");

    // A Content-Length that is not the printed body's length is corrected, not sent broken.
    let r = gw.get("/length");
    assert_eq!((r.status, r.body.as_str()), (200, "hello\nworld\n"));
    assert_eq!(r.header("content-length"), Some("12"));
}

#[test]
fn content_decode_gunzips_and_has_no_brotli() {
    let a = Echo::start("a");
    let routes = format!(
        "routes:\n  - id: r1\n    uri: /decode\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n    plugins:\n      shim-modules: {{case: decode}}\n",
        a = a.port
    );
    let gw = start(&routes, &[]);
    let r = gw.get("/decode");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let v = r.json();
    assert_eq!(v["text"], "hello from gzip");
    assert_eq!(v["bad"][0], Value::Null);
    assert!(
        v["bad"][1]
            .as_str()
            .unwrap_or("")
            .starts_with("inflate gzip err: "),
        "{v}"
    );
    assert_eq!(v["br"], true);
}

/// A backend answering every request with `body`, compressed with gzip and labelled so.
fn gzip_backend(body: &'static [u8]) -> u16 {
    use flate2::Compression;
    use flate2::write::GzEncoder;
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(body).unwrap();
    let gz = e.finish().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                match c.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                gz.len()
            );
            let _ = c.write_all(head.as_bytes());
            let _ = c.write_all(&gz);
        }
    });
    port
}

/// The last `shim-log: JSON` line of the error log, decoded.
fn last_log_entry(gw: &Gateway, after: usize) -> Value {
    let mut found = None;
    wait_until("the log line", Duration::from_secs(5), || {
        let log = gw.error_log();
        found = log
            .get(after..)
            .unwrap_or("")
            .lines()
            .rev()
            .find_map(|l| l.split_once("shim-log: ").map(|(_, j)| j.to_string()));
        found.is_some()
    });
    // The JSON is followed by the request tail nginx adds to a log line (`, client: …`).
    let text = found.unwrap_or_default();
    serde_json::Deserializer::from_str(&text)
        .into_iter::<Value>()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no JSON entry in {text:?}"))
}

#[test]
fn log_util_builds_apisix_shaped_entries() {
    let up = gzip_backend(b"compressed answer");
    let routes = format!(
        "routes:\n  - id: r1\n    uri: /full\n    upstream:\n      nodes:\n        \"127.0.0.1:{up}\": 1\n    plugins:\n      shim-modules: {{case: log, include_req_body: true, include_resp_body: true}}\n  - id: r2\n    uri: /custom\n    upstream:\n      nodes:\n        \"127.0.0.1:{up}\": 1\n    plugins:\n      shim-modules:\n        case: log\n        include_req_body: true\n        log_format:\n          host: $host\n          client: $remote_addr\n          body: $request_body\n          fixed: 7\n          nested:\n            uri: $uri\n"
    );
    let gw = start(&routes, &[]);
    let r = request(
        gw.port,
        "POST",
        "/full?a=1",
        &[("x-who", "me")],
        b"the request body",
    );
    assert_eq!(r.status, 200, "{r:?}");
    let e = last_log_entry(&gw, 0);
    assert_eq!(e["customized"], false);
    assert_eq!(e["request"]["method"], "POST");
    assert_eq!(e["request"]["uri"], "/full?a=1");
    assert_eq!(
        e["request"]["url"],
        format!("http://localhost:{}/full?a=1", gw.port)
    );
    assert_eq!(e["request"]["headers"]["x-who"], "me");
    assert_eq!(e["request"]["querystring"], json!({"a": "1"}));
    assert_eq!(e["request"]["body"], "the request body");
    assert_eq!(e["response"]["status"], 200);
    // The upstream's gzip body, decoded for the log.
    assert_eq!(e["response"]["body"], "compressed answer");
    assert_eq!(e["route_id"], "r1");
    assert_eq!(e["service_id"], "");
    assert_eq!(e["client_ip"], "127.0.0.1");
    assert_eq!(e["upstream"], format!("127.0.0.1:{up}"));
    assert!(e["server"]["version"].as_str().is_some(), "{e}");
    for k in ["latency", "apisix_latency", "start_time"] {
        assert!(e[k].as_f64().is_some_and(|v| v >= 0.0), "{k}: {e}");
    }

    let before = gw.error_log().len();
    let r = request(gw.port, "POST", "/custom", &[], b"posted");
    assert_eq!(r.status, 200, "{r:?}");
    let e = last_log_entry(&gw, before);
    assert_eq!(
        e,
        json!({
            "host": "localhost",
            "client": "127.0.0.1",
            "body": "posted",
            "fixed": 7,
            "nested": {"uri": "/custom"},
            "route_id": "r2",
            "customized": true
        })
    );
}

const KEYAUTH: &str = include_str!("../t/fixtures/consumers/fixture-keyauth.lua");

#[test]
fn consumer_auth_confs_resolve_references_and_unresolved_ones_never_match() {
    let a = Echo::start("a");
    let port = free_port();
    let config = format!("{}plugins:\n  - fixture-keyauth\n", config_yaml(port, ""));
    let routes = format!(
        "consumers:\n  - username: jack\n    plugins:\n      fixture-keyauth:\n        key: $env://SHIM_KEY\n  - username: ghost\n    plugins:\n      fixture-keyauth:\n        key: $env://SHIM_UNSET_KEY\nroutes:\n  - id: r1\n    uri: /auth\n    upstream:\n      nodes:\n        \"127.0.0.1:{a}\": 1\n    plugins:\n      fixture-keyauth: {{}}\n#END\n",
        a = a.port
    );
    let gw = Gateway::start_with_files_env(
        &config,
        port,
        &routes,
        &[("lua/plugins/fixture-keyauth.lua", KEYAUTH)],
        &[("SHIM_KEY", "the-real-key")],
    );
    let r = request(gw.port, "GET", "/auth", &[("apikey", "the-real-key")], b"");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(r.json()["headers"]["x-consumer-username"], "jack");
    // The reference text itself is no key, resolved or not.
    for literal in ["$env://SHIM_KEY", "$env://SHIM_UNSET_KEY"] {
        let r = request(gw.port, "GET", "/auth", &[("apikey", literal)], b"");
        assert_eq!(r.status, 401, "{literal}: {r:?}");
    }
    let log = gw.error_log();
    assert!(
        log.contains(
            "failed to resolve secret reference in consumer auth credential, skipping consumer: ghost"
        ),
        "{log}"
    );
}

#[test]
fn curr_req_matched_follows_the_uri_and_host_each_request_matched() {
    let a = Echo::start("a");
    let routes = format!(
        "upstreams:\n  - id: u-b\n    nodes:\n      \"127.0.0.1:{a}\": 1\nroutes:\n  - id: r3\n    uris: [/alt/one, /alt/two]\n    hosts: [a.test, \"*.b.test\"]\n    upstream_id: u-b\n    plugins:\n      shim-modules: {{case: modules}}\n  - id: r4\n    uri: /plain\n    upstream_id: u-b\n    plugins:\n      shim-modules: {{case: modules}}\n",
        a = a.port
    );
    let gw = start(&routes, &[]);
    // The same route matching different uris and hosts in turn: each request sees its own.
    for (path, host, want) in [
        (
            "/alt/one",
            "a.test",
            json!({"_path": "/alt/one", "_host": "a.test"}),
        ),
        (
            "/alt/two",
            "x.b.test",
            json!({"_path": "/alt/two", "_host": "*.b.test"}),
        ),
        (
            "/alt/two",
            "a.test",
            json!({"_path": "/alt/two", "_host": "a.test"}),
        ),
        (
            "/alt/one",
            "a.test",
            json!({"_path": "/alt/one", "_host": "a.test"}),
        ),
        ("/plain", "a.test", json!({"_path": "/plain"})),
    ] {
        let r = request(gw.port, "GET", path, &[("Host", host)], b"");
        assert_eq!(r.status, 200, "{path} {host}: {r:?}\n{}", gw.error_log());
        assert_eq!(r.json()["matched"], want, "{path} {host}");
    }
}
