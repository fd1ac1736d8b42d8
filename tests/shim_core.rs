//! The `apisix.core` shim through the real binary: a fixture plugin (`t/fixtures/shim/`) calls
//! core.* from its phases and answers with what it saw. Checks what APISIX's own tests check:
//! JSON bytes, `ctx.var` lookup order and caching, lrucache keys and conf identity,
//! `core.response.exit` bodies and headers, `hold_body_chunk`, the request helpers, log lines.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;

const PROBE: &str = include_str!("../t/fixtures/shim/shim-probe.lua");
const COPY: &str = include_str!("../t/fixtures/shim/shim-copy.lua");

/// A gateway running `shim-probe` on route `r1` (`/probe*`, conf `{case = CASE}`) in front
/// of the echo backend.
fn gateway(echo: &Echo, case: &str) -> Gateway {
    gateway_with(echo, case, echo.port)
}

/// As `gateway`, with route `r2` (`/chunks`, shim-probe then shim-copy) proxying to
/// `chunks_port`.
fn gateway_with(echo: &Echo, case: &str, chunks_port: u16) -> Gateway {
    let port = free_port();
    let config = format!(
        "{}plugins:\n  - shim-probe\n  - shim-copy\n",
        plugin_attr(
            &config_yaml(port, ""),
            "  shim-probe:\n    greeting: hello\n"
        )
    );
    let routes = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\nroutes:\n  - id: r1\n    name: probe-route\n    uris: [\"/probe\", \"/probe/*\"]\n    upstream_id: e\n    plugins:\n      shim-probe: {{case: {case}}}\n  - id: r2\n    uri: /chunks\n    upstream:\n      nodes:\n        \"127.0.0.1:{chunks_port}\": 1\n    plugins:\n      shim-probe: {{case: {case}}}\n      shim-copy: {{}}\n#END\n",
        echo.port
    );
    Gateway::start_with_files(
        &config,
        port,
        &routes,
        &[
            ("lua/plugins/shim-probe.lua", PROBE),
            ("lua/plugins/shim-copy.lua", COPY),
        ],
    )
}

fn probe(gw: &Gateway, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (Resp, Value) {
    let method = if body.is_empty() { "GET" } else { "POST" };
    let r = request(gw.port, method, path, headers, body);
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let v: Value = serde_json::from_str(&r.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", r.body, gw.error_log()));
    (r, v)
}

#[test]
fn json_bytes_match_apisix_cjson_settings() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "json");
    let (_, v) = probe(&gw, "/probe", &[], b"");
    // "/" is not escaped, empty tables are objects, array_mt tables and decoded arrays stay
    // arrays, null round-trips, numbers are %.14g.
    assert_eq!(v["slash"], r#"{"path":"/a/b"}"#);
    assert_eq!(v["empty"], "{}");
    assert_eq!(v["array"], "[]");
    assert_eq!(v["null"], "[null]");
    assert_eq!(v["escape"], "\"q\\\"\\\\\\n\\t\\u0001é\"");
    assert_eq!(v["number"], "[1,0.1,1e+20,3.1415926535898]");
    assert_eq!(v["redecoded_list"], "[]");
    assert_eq!(v["redecoded_obj"], "{}");
    assert_eq!(v["null_is_null"], true);
    assert_eq!(v["null_as_nil"], true);
    // Sorted keys, whatever the insertion order.
    assert_eq!(v["stable"], r#"{"a":1,"b":{"c":[1,2],"d":"x"}}"#);
    assert_eq!(v["canonical"], r#"{"y":[],"z":{}}"#);
    assert_eq!(v["delayed"], r#"{"k":"v"}"#);
    assert_eq!(v["forced"], true);
    assert_eq!(
        v["unforced"],
        "Cannot serialise function: type not supported"
    );
}

#[test]
fn ctx_var_follows_apisix_lookup_order_and_writes_reach_the_proxy() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "var");
    let r = request(
        gw.port,
        "GET",
        "/probe/x?a=1&a=2&b",
        &[("X-Foo", "bar"), ("Cookie", "c=v; d=w"), ("X-Multi", "one")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let var: Value = serde_json::from_str(r.header("x-var").unwrap_or("null")).unwrap();
    assert_eq!(
        var["arg_a"], "1",
        "first value of a repeated argument: {var}"
    );
    assert_eq!(
        var["arg_b"], true,
        "a bare argument is true, as get_uri_args gives it"
    );
    assert_eq!(var["arg_missing"], true);
    assert_eq!(var["http_x_foo"], "bar");
    assert_eq!(var["cookie_c"], "v");
    assert_eq!(var["route_id"], "r1");
    assert_eq!(var["route_name"], "probe-route");
    assert_eq!(var["method"], "GET");
    assert_eq!(var["uri"], "/probe/x");
    assert_eq!(var["host"], "localhost");
    assert_eq!(var["remote_addr"], "127.0.0.1");
    assert_eq!(var["custom"], "custom:r1");
    // The first read was cached: a change behind core.request's back is not seen...
    assert_eq!(var["cached_http_x_foo"], "bar");
    // ...but core.request.set_header drops the cached value.
    assert_eq!(var["after_set_header"], "changed");
    assert_eq!(var["multi"], serde_json::json!(["one", "two"]));
    assert_eq!(var["conf_type"], "route");
    assert_eq!(var["conf_id"], "r1");
    assert!(
        var["conf_version"].as_str().is_some_and(|s| !s.is_empty()),
        "{var}"
    );
    assert_eq!(var["matched_route_id"], "r1");
    assert_eq!(var["matched_route_has_conf"], true);
    assert_eq!(var["plugins_flat"], true);
    assert_eq!(var["ngx_ctx_api_ctx"], true);
    // `ctx.var.upstream_uri = ...` changed what the upstream was asked for.
    let up = r.json();
    assert_eq!(up["uri"], "/rewritten?by=shim", "{up}");
    assert_eq!(up["headers"]["x-foo"], "changed");
    assert_eq!(r.header("x-upstream-status"), Some("200"));
    assert_eq!(r.header("x-source"), Some("upstream"));
}

#[test]
fn post_arg_variables_read_form_bodies_only() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "form");
    let (_, v) = probe(
        &gw,
        "/probe",
        &[("Content-Type", "application/x-www-form-urlencoded")],
        b"p=1&p=2&q=x",
    );
    assert_eq!(v["post"]["q"], "x");
    assert_eq!(v["post"]["p"], serde_json::json!(["1", "2"]));
    assert_eq!(v["var_p"], "1");
    let (_, v) = probe(&gw, "/probe", &[("Content-Type", "text/plain")], b"p=1");
    assert!(v.get("var_p").is_none(), "not a form body: {v}");
}

#[test]
fn request_helpers_read_headers_args_and_bounded_bodies() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "request");
    let (_, v) = probe(
        &gw,
        "/probe?x=1&x=2&y",
        &[
            ("X-Rep", "first"),
            ("X-Rep", "second"),
            ("x_lit", "literal"),
            ("Content-Type", "application/json"),
        ],
        br#"{"x":"json"}"#,
    );
    assert_eq!(
        v["too_big"],
        "request size 12 is greater than the maximum size 4 allowed"
    );
    assert_eq!(v["too_big_body"], true);
    assert_eq!(v["body"], r#"{"x":"json"}"#);
    assert_eq!(v["json_x"], "json");
    assert_eq!(v["header"], "first");
    assert_eq!(v["header_missing"], true);
    assert_eq!(v["header_underscored"], "first");
    assert_eq!(v["header_upper"], "first");
    assert_eq!(v["header_literal"], "literal");
    assert_eq!(v["header_after_table"], "first");
    assert_eq!(v["header_after_set"], "replaced");
    assert_eq!(v["uri_args"]["x"], serde_json::json!(["1", "2"]));
    assert_eq!(v["uri_args"]["y"], true);
    assert_eq!(v["cached_args"], true);
    assert_eq!(v["method"], "POST");
    assert_eq!(v["scheme"], "http");
    assert_eq!(v["host"], "localhost");
    assert_eq!(v["port"], gw.port);
    assert_eq!(v["ip"], "127.0.0.1");
    assert_eq!(v["client_port_is_number"], true);
    assert_eq!(v["http_version"], 1.1);
    // A body that is not JSON: the error APISIX's helper gives, as {message = ...}.
    let (_, v) = probe(
        &gw,
        "/probe",
        &[("Content-Type", "application/json")],
        b"{bad",
    );
    let msg = v["json_err"].as_str().unwrap_or("");
    assert!(
        msg.starts_with("could not parse JSON request body: "),
        "{v}"
    );
}

#[test]
fn lrucache_keys_on_conf_identity_and_conf_owner_version() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "lrucache");
    let (_, first) = probe(&gw, "/probe", &[], b"");
    let (_, second) = probe(&gw, "/probe", &[], b"");
    assert_eq!(first["same_conf"], true);
    // The conf table is the same for every request, so the object is made once.
    assert_eq!(first["created_conf"], 1);
    assert_eq!(second["created_conf"], 1, "{second}");
    assert_eq!(second["created_global"], 1);
    assert_eq!(second["created_ctx"], 1);
    assert_eq!(second["ctx_obj"], 1);
    let id = first["id"].as_str().unwrap_or("");
    let plain = first["id_plain"].as_str().unwrap_or("");
    let version = plain
        .strip_prefix("route#r1#")
        .unwrap_or_else(|| panic!("{first}"));
    assert_eq!(id, format!("route#r1#extra#{version}"));
    assert_eq!(first["versioned"], "one,two");
    // A new config version makes new conf tables and a new ctx key: both are recreated.
    gw.write_routes(&format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\nroutes:\n  - id: r1\n    uri: /probe\n    upstream_id: e\n    plugins:\n      shim-probe: {{case: lrucache}}\n#END\n",
        echo.port
    ));
    let mut third = Value::Null;
    wait_until("new config version", Duration::from_secs(10), || {
        third = probe(&gw, "/probe", &[], b"").1;
        third["id_plain"] != first["id_plain"]
    });
    assert_eq!(third["created_conf"], 2, "{third}");
    assert_eq!(third["created_ctx"], 2, "{third}");
    assert_eq!(third["created_global"], 1, "{third}");
}

#[test]
fn response_exit_encodes_tables_with_newline_and_keeps_headers() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "exit_table");
    let r = request(gw.port, "GET", "/probe", &[], b"");
    assert_eq!(r.status, 403);
    let body: Value = serde_json::from_str(&r.body).unwrap();
    assert!(r.body.ends_with("}\n"), "{:?}", r.body);
    assert_eq!(body, serde_json::json!({"message": "denied", "path": "/x"}));
    assert!(!r.body.contains("\\/"), "{:?}", r.body);
    assert_eq!(r.header("x-shim"), Some("1"));
    assert_eq!(r.header("x-shim-2"), Some("2"));
    assert_eq!(r.header("x-added"), Some("a"));
    // exit sets no type of its own: nginx's default, as under APISIX.
    assert_eq!(r.header("content-type"), Some("text/plain"));
}

#[test]
fn response_exit_string_bodies_and_body_only_calls() {
    let echo = Echo::start("e");
    for (case, status, body) in [
        ("exit_string", 201, "plain text"),
        ("exit_body_first", 200, "no status here\n"),
        ("exit_mixed", 418, "a{\"b\":1}\nc"),
        (
            "return_table",
            401,
            "{\"message\":\"Missing API key in request\"}\n",
        ),
    ] {
        let gw = gateway(&echo, case);
        let r = request(gw.port, "GET", "/probe", &[], b"");
        assert_eq!(
            (r.status, r.body.as_str()),
            (status, body),
            "{case}\n{}",
            gw.error_log()
        );
    }
}

#[test]
fn hold_body_chunk_hands_the_whole_body_over_once() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "hold");
    let r = request(gw.port, "GET", "/probe/held", &[], b"");
    assert_eq!(r.status, 200, "{}", gw.error_log());
    // The echo body is a JSON document; the plugin saw it whole, and only its summary left.
    assert!(r.body.starts_with("held "), "{:?}", r.body);
    assert!(r.body.ends_with("bytes; first={"), "{:?}", r.body);
    let n: usize = r.body["held ".len()..]
        .split(' ')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    assert!(n > 20, "{:?}", r.body);
    // clear_header_as_body_modified dropped the upstream's length; what is sent matches the body.
    if let Some(cl) = r.header("content-length") {
        assert_eq!(cl, r.body.len().to_string());
    }
}

/// A backend that answers every request with a chunked body `aaa`, `bbb`, `ccc`, sent
/// 50 ms apart so they reach the gateway as separate chunks.
fn chunked_backend() -> u16 {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut c) = conn else { return };
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while !buf.ends_with(b"\r\n\r\n") && c.read(&mut byte).unwrap_or(0) == 1 {
                buf.push(byte[0]);
            }
            let _ = c.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            );
            for part in ["aaa", "bbb", "ccc"] {
                let _ = c.write_all(format!("3\r\n{part}\r\n").as_bytes());
                let _ = c.flush();
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.write_all(b"0\r\n\r\n");
        }
    });
    port
}

#[test]
fn hold_body_chunk_buffers_per_plugin_across_streamed_chunks() {
    let echo = Echo::start("e");
    let gw = gateway_with(&echo, "hold", chunked_backend());
    let r = request(gw.port, "GET", "/chunks", &[], b"");
    assert_eq!(r.status, 200, "{}", gw.error_log());
    // shim-probe (priority 1000) held the three chunks and replaced them with its summary...
    assert_eq!(r.body, "held 9 bytes; first=a", "{}", gw.error_log());
    // ...it ran once per chunk plus once at the end of the body...
    let log = wait_log(&gw, "copy saw: ");
    assert!(log.contains("hold body_filter calls: 4"), "{log}");
    // ...and shim-copy, after it, kept its own buffer: it saw only what reached it.
    assert!(log.contains("copy saw: held 9 bytes; first=a"), "{log}");
}

fn wait_log(gw: &Gateway, needle: &str) -> String {
    let mut log = String::new();
    wait_until(needle, Duration::from_secs(5), || {
        log = gw.error_log();
        log.contains(needle)
    });
    log
}

#[test]
fn table_string_utils_and_small_modules() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "table");
    let (_, t) = probe(&gw, "/probe", &[], b"");
    assert_eq!(t["deep_copied"], true);
    assert_eq!(t["shallow_shared"], true);
    assert_eq!(t["merged"], r#"{"a":{"x":1,"y":3},"l":[9]}"#);
    assert_eq!(t["tail"], "a,b,c");
    assert_eq!(t["tail_n"], 3);
    assert_eq!(t["nkeys"], 3);
    assert_eq!(t["try_read"], "deep");
    assert_eq!(t["try_read_miss"], true);
    assert_eq!(t["find"], 2);
    assert_eq!(t["isarray"], true);
    assert_eq!(t["deep_eq"], true);
    assert_eq!(t["patch_err"], "400 invalid sub-path: /a");
    assert_eq!(t["patched"], r#"{"a":{"b":1,"c":2}}"#);
    assert_eq!(t["pick"], r#"{"a":1,"c":3}"#);
    assert_eq!(t["concat_is_std"], true);
    drop(gw);

    let gw = gateway(&echo, "string_utils");
    let (_, s) = probe(&gw, "/probe?x=ex", &[], b"");
    assert_eq!(s["find"], 2);
    assert_eq!(s["has_prefix"], true);
    assert_eq!(s["has_suffix"], true);
    assert_eq!(s["rfind"], 4);
    assert_eq!(s["compress"], "local a,b = 1,2\nreturn a");
    assert_eq!(s["format"], "00042");
    assert_eq!(s["addr"], "127.0.0.1|8080|[::1]|80|::1|nil|example.com|nil");
    assert_eq!(s["resolved"], "r1-ex-dflt-\\$route_id");
    assert_eq!(s["resolved_n"], 3);
    assert_eq!(s["captures"], "/x/y/");
    assert_eq!(s["encoded"], "/a%20b%3Fc");
    assert_eq!(s["control"], "a%0Ab");
    assert_eq!(s["field_ok"], true);
    assert_eq!(s["value_ok"], true);
    let uuid7 = s["uuid7"].as_str().unwrap_or("");
    assert_eq!(uuid7.len(), 36, "{uuid7}");
    assert_eq!(&uuid7[14..15], "7", "{uuid7}");
    assert!(matches!(&uuid7[19..20], "8" | "9" | "a" | "b"), "{uuid7}");
    assert_eq!(s["hostname_is_string"], true);
    assert_eq!(s["decode_args"]["a"], serde_json::json!(["1", "2"]));
    assert_eq!(s["version"], "3.11.0");
    let id = s["id"].as_str().unwrap_or("");
    assert_eq!(id.len(), 36);
    let stored = std::fs::read_to_string(gw.dir.0.join("conf/apisix.uid")).unwrap_or_default();
    assert_eq!(stored, id, "the node id is kept in conf/apisix.uid");
    assert_eq!(&s["uuid4"].as_str().unwrap_or("")[14..15], "4");
    assert_eq!(s["resolver"], "127.0.0.1");
    assert_eq!(s["ip_literal"], "10.1.2.3");
    assert_eq!(s["local_attr"], "hello", "plugin_attr from config.yaml");
    assert_eq!(s["local_default"], false, "config.yaml wins over defaults");
    assert_eq!(s["config_type"], "yaml");
    assert_eq!(s["time_unit"], 5400);
    assert_eq!(s["env"].as_str(), std::env::var("PATH").ok().as_deref());
    assert_eq!(s["gcd"], 6);
    let etcd = s["etcd"].as_str().unwrap_or("");
    // A node whose config is a file has no store behind core.etcd.
    assert!(
        etcd.contains("keeps its config in a file: there is no etcd to talk to"),
        "{etcd}"
    );
    assert_eq!(s["de_vector"], "77+NmbYqNfN+oLm0aX5akg==");
    assert_eq!(
        s["de_rotated"], "bar",
        "an older keyring entry still decrypts"
    );
    assert_eq!(s["de_wrong_key"], "decrypt ssl key failed");
    assert_eq!(s["de_not_base64"], "base64 decode failed");
    assert_eq!(s["de_aes256"], "long key");
    let cfg_new = s["config_new"].as_str().unwrap_or("");
    assert!(
        cfg_new.contains("core.config.new(/protos) is not supported by moongate"),
        "{cfg_new}"
    );
    assert_eq!(s["tablepool"], true);
    assert_eq!(s["plugin_get"], true);
    assert_eq!(s["plugin_get_missing"], true);
    assert_eq!(s["plugin_attr"], "hello");
    assert_eq!(s["conf_version"], true, "same content, same version");
    assert!(
        s["metadata"].is_null(),
        "no plugin_metadata is configured for shim-probe: {}",
        s["metadata"]
    );
}

#[test]
fn log_lines_carry_level_and_the_plugins_location() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "log");
    let (_, v) = probe(&gw, "/probe", &[], b"");
    // Debug is below the configured `info` level: its delayed function never ran.
    assert_eq!(v["debug_ran"], 0);
    let mut log = String::new();
    wait_until("log lines", Duration::from_secs(5), || {
        log = gw.error_log();
        log.contains("with prefix")
    });
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{log}"))
            .to_string()
    };
    let warn = line("shim warn line");
    assert!(warn.contains("[warn]"), "{warn}");
    // The location is the plugin's line (the level function tail-calls ngx.log).
    assert!(warn.contains("[lua] shim-probe.lua:"), "{warn}");
    assert!(warn.contains(": probe(): shim warn line 42 nil"), "{warn}");
    assert!(warn.contains("shim warn line 42 nil"), "{warn}");
    assert!(line("shim info line").contains("[info]"));
    let err = line("shim error ");
    assert!(
        err.contains("[error]") && err.contains(r#"shim error {"k":"v"}"#),
        "{err}"
    );
    assert!(line("delayed: ").contains("delayed: xy"));
    assert!(line("with prefix").contains("[shim] with prefix"));
    assert!(!log.contains("never z"), "{log}");
}

#[test]
fn every_census_core_member_exists_or_is_refused_by_name() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, "members");
    let (_, v) = probe(&gw, "/probe", &[], b"");
    assert_eq!(v["count"], 110);
    assert_eq!(v["missing"], serde_json::json!([]), "{v}");
    // Only the etcd client's lease and version calls are refused outright.
    assert_eq!(
        v["refused"],
        serde_json::json!(["core.etcd.keepalive", "core.etcd.server_version"]),
        "{v}"
    );
}
