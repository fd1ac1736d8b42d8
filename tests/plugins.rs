//! APISIX-contract plugins and Lua handlers through the real binary: phases and their order,
//! priorities and `_meta`, early answers, conf identity, failures, body filters, content
//! handlers, the ngx request API, and isolation between interleaved requests.

mod support;

use std::time::{Duration, Instant};

use support::*;

const TRACE: &str = include_str!("../t/fixtures/plugins/fixture-trace.lua");
const GATE: &str = include_str!("../t/fixtures/plugins/fixture-gate.lua");
const UPPER: &str = include_str!("../t/fixtures/plugins/fixture-upper.lua");
const BROKEN: &str = include_str!("../t/fixtures/plugins/fixture-broken.lua");

const FILES: [(&str, &str); 4] = [
    ("lua/plugins/fixture-trace.lua", TRACE),
    ("lua/plugins/fixture-gate.lua", GATE),
    ("lua/plugins/fixture-upper.lua", UPPER),
    ("lua/plugins/fixture-broken.lua", BROKEN),
];

/// A gateway with the fixture plugins, `extra` top-level config, and `routes` (the echo
/// backend is upstream `e`).
fn gateway(echo: &Echo, extra: &str, routes: &str) -> Gateway {
    let port = free_port();
    let config = format!(
        "{}plugins:\n  - request-id\n  - fixture-trace\n  - fixture-gate\n  - fixture-upper\n  - fixture-broken\n{extra}",
        config_yaml(port, "")
    );
    let yaml = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\n{routes}\n#END\n",
        echo.port
    );
    Gateway::start_with_files(&config, port, &yaml, &FILES)
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
fn every_phase_runs_in_order_and_native_and_lua_plugins_share_the_request() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "routes:\n  - id: r1\n    uri: /echo\n    upstream_id: e\n    plugins:\n      request-id: {}\n      fixture-trace: {label: a}\n",
    );
    let r = gw.get("/echo");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    // rewrite, access, before_proxy run before the upstream; header_filter when it answers.
    assert_eq!(
        r.header("x-trace"),
        Some("a:rewrite,a:access,a:before_proxy,a:header_filter")
    );
    assert_eq!(r.header("x-phase"), Some("header_filter"));
    let up = r.json();
    let h = &up["headers"];
    // request-id (native, priority 12015) ran before fixture-trace (Lua, 3000) in rewrite.
    let id = h["x-request-id"].as_str().unwrap_or("");
    assert_eq!(id.len(), 36, "{h}");
    assert_eq!(h["x-seen-request-id"].as_str(), Some(id));
    assert_eq!(r.header("x-request-id"), Some(id));
    assert_eq!(h["x-conf"].as_str(), Some("route|r1|1"));
    // The log phase runs after the response, and sees the body filter's end of body. Phases
    // are called through a local named `phase_func`, as APISIX calls them, and the line names it.
    let log = wait_log(&gw, "trace of /echo");
    assert!(
        log.contains(
            "[lua] fixture-trace.lua:68: phase_func(): trace of /echo: a:rewrite,a:access,a:before_proxy,a:header_filter,a:body_filter_eof,a:log status 200"
        ),
        "{log}"
    );
}

#[test]
fn the_conf_table_is_one_per_config_version_and_has_its_defaults() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "routes:\n  - id: r1\n    uri: /echo\n    upstream_id: e\n    plugins:\n      fixture-trace: {}\n",
    );
    let uses: Vec<String> = (0..3)
        .map(|_| gw.get("/echo").header("x-uses").unwrap_or("").to_string())
        .collect();
    assert_eq!(uses, ["1", "2", "3"]);
    // check_schema's default label reached the table the phases get.
    assert!(
        gw.get("/echo")
            .header("x-trace")
            .unwrap_or("")
            .starts_with("t:rewrite")
    );
    // A new config version gets new conf tables.
    gw.write_routes(&format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\nroutes:\n  - id: r1\n    uri: /echo\n    upstream_id: e\n    plugins:\n      fixture-trace: {{label: b}}\n#END\n",
        echo.port
    ));
    wait_until("reload", Duration::from_secs(5), || {
        gw.get("/echo")
            .header("x-trace")
            .is_some_and(|t| t.starts_with("b:"))
    });
    let r = gw.get("/echo");
    assert_eq!(
        r.header("x-uses"),
        Some("2"),
        "the reload made a fresh table"
    );
}

#[test]
fn early_answers_keep_apisix_bodies_and_still_pass_header_filter_and_log() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "routes:
  - id: table
    uri: /table
    upstream_id: e
    plugins:
      fixture-trace: {}
      fixture-gate: {mode: table}
  - id: string
    uri: /string
    upstream_id: e
    plugins:
      fixture-gate: {mode: string, phase: access}
  - id: exit
    uri: /exit
    upstream_id: e
    plugins:
      fixture-trace: {}
      fixture-gate: {mode: exit}
  - id: say
    uri: /say
    upstream_id: e
    plugins:
      fixture-gate: {mode: say}
  - id: custom
    uri: /custom
    upstream_id: e
    plugins:
      fixture-gate:
        mode: table
        _meta:
          error_response: {message: \"go away\"}
  - id: pcall
    uri: /pcall
    upstream_id: e
    plugins:
      fixture-gate: {mode: pcall-exit}
  - id: co
    uri: /co
    upstream_id: e
    plugins:
      fixture-gate: {mode: coroutine-sleep}",
    );
    let r = gw.get("/table?x=1");
    assert_eq!(r.status, 401);
    assert_eq!(r.body, "{\"message\":\"no entry to /table\"}\n");
    // fixture-trace (3000) ran rewrite before the gate (2000) answered; no access phase ran.
    assert_eq!(r.header("x-trace"), Some("t:rewrite,t:header_filter"));
    let log = wait_log(&gw, "trace of /table");
    assert!(
        log.contains("fixture-gate exits with http status code 401"),
        "{log}"
    );
    assert!(log.contains("status 401"), "{log}");

    let r = gw.get("/string");
    assert_eq!((r.status, r.body.as_str()), (403, "forbidden here"));

    let r = gw.get("/exit");
    assert_eq!(r.status, 403);
    assert!(r.body.contains("403 Forbidden"), "{}", r.body);
    assert_eq!(r.header("x-gate"), Some("closed"));
    assert_eq!(r.header("x-trace"), Some("t:rewrite,t:header_filter"));

    let r = gw.get("/say");
    assert_eq!((r.status, r.body.as_str()), (418, "short and stout\n"));

    let r = gw.get("/custom");
    assert_eq!(
        (r.status, r.body.as_str()),
        (401, "{\"message\":\"go away\"}\n")
    );

    let r = gw.get("/pcall");
    assert_eq!(r.status, 402);
    assert_eq!(r.header("x-after-exit"), None);

    let r = gw.get("/co");
    assert_eq!((r.status, r.body.as_str()), (200, "from the coroutine"));

    // The gate lets requests with the header through to the upstream.
    let r = request(gw.port, "GET", "/table", &[("X-Pass", "yes")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["uri"], "/table");
}

#[test]
fn meta_disable_filter_and_priority_change_what_runs() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "routes:
  - id: off
    uri: /off
    upstream_id: e
    plugins:
      fixture-gate: {_meta: {disable: true}}
  - id: filtered
    uri: /filtered
    upstream_id: e
    plugins:
      fixture-gate:
        _meta:
          filter: [[\"arg_lock\", \"==\", \"1\"]]
  - id: reordered
    uri: /reordered
    upstream_id: e
    plugins:
      fixture-trace: {_meta: {priority: 100}}
      fixture-gate: {}",
    );
    assert_eq!(gw.get("/off").status, 200);
    assert_eq!(gw.get("/filtered").status, 200);
    assert_eq!(gw.get("/filtered?lock=1").status, 401);
    // fixture-trace now runs after the gate in rewrite, so it never saw rewrite.
    let r = gw.get("/reordered");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-trace"), Some("t:header_filter"));
}

#[test]
fn a_lua_error_fails_closed_with_one_error_line_and_the_worker_goes_on() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "routes:\n  - id: bad\n    uri: /bad\n    upstream_id: e\n    plugins:\n      fixture-gate: {mode: error, phase: access}\n  - id: good\n    uri: /good\n    upstream_id: e\n",
    );
    for _ in 0..3 {
        let r = gw.get("/bad");
        assert_eq!(r.status, 500);
        assert!(r.body.contains("500 Internal Server Error"));
    }
    assert_eq!(gw.get("/good").status, 200);
    let log = gw.error_log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("[error]") && l.contains("the gate broke"))
        .collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(
        lines[0].contains("lua entry thread aborted: runtime error: ")
            && lines[0].contains("fixture-gate.lua:"),
        "{log}"
    );
    assert!(log.contains("plugin: fixture-gate, phase: access"), "{log}");
    // The traceback of the failed entry follows the message: from `error` up through the
    // plugin's phase function, called as APISIX calls it (`phase_func`).
    let at = log.find("the gate broke").unwrap_or(0);
    let tail = &log[at..];
    let trace = &tail[..tail.find("plugin: fixture-gate").unwrap_or(tail.len())];
    assert!(
        trace.contains("stack traceback:")
            && trace.contains("in function 'error'")
            && trace.contains("fixture-gate.lua:41: in function 'phase_func'"),
        "{log}"
    );
}

#[test]
fn errors_from_native_functions_after_a_wait_and_in_later_plugins_name_their_plugin() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "routes:\n  - id: native\n    uri: /native\n    upstream_id: e\n    plugins:\n      fixture-gate: {mode: native-error, phase: rewrite}\n  - id: late\n    uri: /late\n    upstream_id: e\n    plugins:\n      fixture-gate: {mode: late-error, phase: access}\n  - id: late-native\n    uri: /late-native\n    upstream_id: e\n    plugins:\n      fixture-gate: {mode: late-native-error, phase: access}\n  - id: second\n    uri: /second\n    upstream_id: e\n    plugins:\n      fixture-trace: {}\n      fixture-gate: {mode: error, phase: access}\n",
    );
    assert_eq!(gw.get("/native").status, 500);
    let log = wait_log(&gw, "unsupported HTTP method");
    // The plain message a `pcall` would give, not the native error object's own text.
    let line = log
        .lines()
        .find(|l| l.contains("unsupported HTTP method"))
        .unwrap_or("");
    assert!(
        line.contains("lua entry thread aborted: runtime error: unsupported HTTP method: 12345"),
        "{log}"
    );
    assert!(!log.contains("caused by"), "{log}");
    assert!(
        log.contains("plugin: fixture-gate, phase: rewrite"),
        "{log}"
    );

    // After a wait, the entry runs as an async thread: the same line.
    assert_eq!(gw.get("/late").status, 500);
    let log = wait_log(&gw, "the gate broke late");
    assert!(
        log.contains("lua entry thread aborted: runtime error: ")
            && log.matches("plugin: fixture-gate, phase: access").count() == 1,
        "{log}"
    );

    // A native function's error after a wait: the same plain message.
    assert_eq!(gw.get("/late-native").status, 500);
    let log = wait_log(&gw, "unsupported HTTP method: 54321");
    let line = log.lines().find(|l| l.contains("54321")).unwrap_or("");
    assert!(
        line.contains("lua entry thread aborted: runtime error: unsupported HTTP method: 54321"),
        "{log}"
    );
    assert!(!log.contains("caused by"), "{log}");

    // fixture-trace (priority 3000) runs first in access, then fixture-gate fails: the line
    // names fixture-gate, and the worker goes on with the next request.
    for _ in 0..2 {
        assert_eq!(gw.get("/second").status, 500);
    }
    let log = gw.error_log();
    assert_eq!(
        log.matches("plugin: fixture-gate, phase: access").count(),
        4,
        "{log}"
    );
    assert!(!log.contains("plugin: fixture-trace"), "{log}");
}

#[test]
fn plugins_that_break_the_contract_are_refused_by_name_and_unknown_plugins_reject_the_route() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "routes:\n  - id: ok\n    uri: /ok\n    upstream_id: e\n",
    );
    assert!(
        gw.stderr()
            .contains("invalid plugin [fixture-broken], missing field: priority"),
        "{}",
        gw.stderr()
    );
    assert_eq!(gw.get("/ok").status, 200);
    // A route naming a plugin that is not enabled never replaces the good snapshot.
    gw.write_routes("routes:\n  - id: ok\n    uri: /ok\n    upstream_id: e\n    plugins:\n      nope: {}\n#END\n");
    let log = wait_log(&gw, "unknown plugin [nope]");
    assert!(log.contains("routes[id=ok]: plugins.nope"), "{log}");
    assert_eq!(gw.get("/ok").status, 200);
}

#[test]
fn body_filters_rewrite_streamed_chunks_and_see_the_end() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "routes:\n  - id: up\n    uri: /hello\n    upstream_id: e\n    plugins:\n      fixture-upper: {trailer: \"-- the end\"}\n",
    );
    let r = gw.get("/hello");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "HELLO WORLD\n-- the end\n");
    assert_eq!(r.header("x-upper"), Some("1"));
    assert_eq!(r.header("content-length"), None);
}

#[test]
fn a_content_handler_answers_from_lua_with_the_request_api() {
    let gw = Gateway::start(
        "",
        &routes_file(
            r#"routes:
  - id: c
    uri: /c/*
    lua_handlers:
      content_by_lua: |
        local args = ngx.req.get_uri_args()
        ngx.req.read_body()
        local h = ngx.req.get_headers()
        ngx.header["X-Multi"] = {"a", "b"}
        ngx.header.content_type = "application/x-test"
        ngx.status = 202
        ngx.say(ngx.req.get_method(), " ", ngx.var.uri, " ", ngx.var.args, " ", ngx.var.arg_b)
        ngx.say(type(args.a), " ", args.a[1], args.a[2], " ", tostring(args.flag))
        ngx.say(h["X-Custom"], " ", h.x_custom, " ", ngx.var.http_x_custom)
        ngx.say(ngx.req.get_body_data() or "no body")
        ngx.say(ngx.var.remote_addr, " ", ngx.var.server_port == tostring(ngx.var.server_port), " ", ngx.var.request_uri)
        ngx.say(ngx.get_phase(), " ", ngx.req.http_version())
  - id: stream
    uri: /stream
    lua_handlers:
      content_by_lua: |
        ngx.say("first")
        ngx.flush(true)
        ngx.sleep(0.05)
        ngx.print("second")
  - id: notfound
    uri: /gone
    lua_handlers:
      content_by_lua: |
        ngx.exit(404)
  - id: redirect
    uri: /moved
    lua_handlers:
      content_by_lua: |
        return ngx.redirect("/elsewhere", 301)
"#,
        ),
    );
    let r = request(
        gw.port,
        "POST",
        "/c/x?a=1&a=2&flag&b=%20z",
        &[("X-Custom", "v")],
        b"posted",
    );
    assert_eq!(r.status, 202, "{r:?}\n{}", gw.error_log());
    assert_eq!(r.header("content-type"), Some("application/x-test"));
    let multi: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("x-multi"))
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(multi, ["a", "b"]);
    assert_eq!(
        r.body,
        "POST /c/x a=1&a=2&flag&b=%20z %20z\ntable 12 true\nv v v\nposted\n127.0.0.1 true /c/x?a=1&a=2&flag&b=%20z\ncontent 1.1\n"
    );

    let r = gw.get("/stream");
    assert_eq!((r.status, r.body.as_str()), (200, "first\nsecond"));
    assert_eq!(r.header("transfer-encoding"), Some("chunked"));

    let r = gw.get("/gone");
    assert_eq!(r.status, 404);
    let r = gw.get("/moved");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/elsewhere"));
}

#[test]
fn plugins_change_the_request_the_upstream_gets() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        r#"routes:
  - id: rw
    uri: /rw
    upstream_id: e
    lua_handlers:
      rewrite_by_lua: |
        ngx.req.set_header("X-Added", {"1", "2"})
        ngx.req.clear_header("X-Drop")
        ngx.req.set_uri_args({k = "v w"})
        ngx.req.set_method(ngx.HTTP_PUT)
        ngx.req.read_body()
        ngx.req.set_body_data("new body")
  - id: uri
    uri: /uri
    upstream_id: e
    lua_handlers:
      access_by_lua: |
        -- APISIX's nginx.conf sets these for every request: "" and the Host header.
        ngx.req.set_header("X-Before", "[" .. ngx.var.upstream_uri .. "] ["
          .. ngx.var.upstream_host .. "] [" .. ngx.var.upstream_mirror_host .. "]")
        ngx.var.upstream_uri = "/target?z=1"
        ngx.var.upstream_host = "backend.example"
  - id: seturi
    uri: /seturi
    upstream_id: e
    lua_handlers:
      access_by_lua: |
        ngx.req.set_uri("/new path")"#,
    );
    let r = request(
        gw.port,
        "POST",
        "/rw?old=1",
        &[("X-Drop", "x")],
        b"old body",
    );
    assert_eq!(r.status, 200, "{}", gw.error_log());
    let j = r.json();
    assert_eq!(j["method"], "PUT");
    assert_eq!(j["uri"], "/rw?k=v%20w");
    assert_eq!(j["headers"]["x-added"], serde_json::json!(["1", "2"]));
    assert!(j["headers"].get("x-drop").is_none());
    assert_eq!(j["body"], "new body");

    let j = request(gw.port, "GET", "/uri", &[("Host", "site.test")], b"").json();
    assert_eq!(j["uri"], "/target?z=1");
    assert_eq!(j["headers"]["host"], "backend.example");
    assert_eq!(j["headers"]["x-before"], "[] [site.test] []");

    let j = gw.get("/seturi?q=1").json();
    assert_eq!(j["uri"], "/new%20path?q=1");
}

#[test]
fn interleaved_requests_each_see_only_their_own_var_and_ctx() {
    let gw = Gateway::start(
        "",
        &routes_file(
            r#"routes:
  - id: iso
    uri: /iso
    lua_handlers:
      access_by_lua: |
        ngx.ctx.id = ngx.var.arg_id
      content_by_lua: |
        local id = ngx.var.arg_id
        for i = 1, 5 do
          local co = coroutine.wrap(function()
            ngx.sleep(math.random() * 0.01)
            return ngx.var.arg_id
          end)
          local seen = co()
          local t = ngx.thread.spawn(function() ngx.sleep(0.001) return ngx.ctx.id end)
          local _, in_thread = ngx.thread.wait(t)
          if seen ~= id or ngx.ctx.id ~= id or in_thread ~= id then
            ngx.say("mixed up: ", id, " saw ", tostring(seen), " ", tostring(ngx.ctx.id), " ", tostring(in_thread))
            return
          end
        end
        ngx.say("ok ", id)
"#,
        ),
    );
    let paths = (0..24).map(|i| format!("/iso?id={i}")).collect();
    for (i, r) in get_concurrently(gw.port, paths).into_iter().enumerate() {
        assert_eq!((r.status, r.body), (200, format!("ok {i}\n")));
    }
}

#[test]
fn a_finished_requests_ctx_and_ngx_ctx_are_never_seen_by_a_later_one() {
    // Each request's Lua state (APISIX `ctx`, `ngx.ctx`) is recycled for a later request once
    // it is over: nothing it set may show through.
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        r#"routes:
  - id: left
    uri: /left
    upstream_id: e
    plugins:
      fixture-trace: {label: a}
    lua_handlers:
      access_by_lua: |
        local actx = ngx.ctx.api_ctx
        ngx.header["X-Left"] = tostring(ngx.ctx.left) .. "/" .. tostring(actx.left)
          .. "/" .. tostring(actx.var.left)
        ngx.ctx.left = ngx.var.arg_id
        actx.left = ngx.var.arg_id
        actx.var.left = ngx.var.arg_id
        if ngx.var.arg_wait then
          ngx.sleep(0.3)
        end"#,
    );
    let check = |r: &Resp, i: usize| {
        assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
        assert_eq!(
            r.header("x-left"),
            Some("nil/nil/nil"),
            "request {i}: {r:?}"
        );
        assert_eq!(
            r.header("x-trace"),
            Some("a:rewrite,a:access,a:before_proxy,a:header_filter"),
            "request {i}"
        );
    };
    for i in 0..40 {
        check(&gw.get(&format!("/left?id={i}")), i);
    }
    // A burst of requests that overlap (each waits in access): more states than the worker
    // keeps held once they are over, so the requests after it also empty the oldest.
    let paths = (0..100).map(|i| format!("/left?id={i}&wait=1")).collect();
    for (i, r) in get_concurrently(gw.port, paths).iter().enumerate() {
        check(r, i);
    }
    for i in 0..60 {
        check(&gw.get(&format!("/left?id={i}")), i);
    }
    let log = gw.error_log();
    assert!(!log.contains("runtime error"), "{log}");
}

#[test]
fn timers_have_no_request_and_waits_are_cut_by_the_phase_timeout() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "moongate:\n  lua_phase_timeout: 1s\n",
        r#"routes:
  - id: timer
    uri: /timer
    lua_handlers:
      content_by_lua: |
        ngx.timer.at(0, function(premature)
          local ok, err = pcall(function() return ngx.var.uri end)
          ngx.log(ngx.ERR, "in timer: ", tostring(ok), " ", err)
        end)
        ngx.say("started")
  - id: slow
    uri: /slow
    upstream_id: e
    plugins:
      fixture-gate: {mode: wait}"#,
    );
    assert_eq!(gw.get("/timer").body, "started\n");
    let log = wait_log(&gw, "in timer: ");
    assert!(
        log.contains("in timer: false") && log.contains("API disabled in the context of ngx.timer"),
        "{log}"
    );
    let t = Instant::now();
    let r = gw.get("/slow");
    assert_eq!(r.status, 500);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert!(gw.error_log().contains("did not finish within 1s"));
}

#[test]
fn a_plugin_that_allocates_without_bound_fails_its_own_request_only() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "moongate:\n  lua_memory_limit: 64m\n",
        "routes:\n  - id: hog\n    uri: /hog\n    upstream_id: e\n    plugins:\n      fixture-gate: {mode: hog}\n  - id: ok\n    uri: /ok\n    upstream_id: e\n    plugins:\n      fixture-trace: {}\n",
    );
    assert_eq!(gw.get("/hog").status, 500);
    assert!(
        gw.error_log().contains("not enough memory"),
        "{}",
        gw.error_log()
    );
    let r = gw.get("/ok");
    assert_eq!(r.status, 200, "{}", gw.error_log());
    assert!(r.header("x-trace").is_some());
}

#[test]
fn global_rules_run_before_the_route_plugins() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "global_rules:\n  - id: g1\n    plugins:\n      fixture-trace: {label: g}\nroutes:\n  - id: r\n    uri: /echo\n    upstream_id: e\n    plugins:\n      fixture-gate: {}\n",
    );
    let r = gw.get("/echo");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-trace"), Some("g:rewrite,g:header_filter"));
    // A route with no plugins still gets the global rules.
    gw.write_routes(&format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\nglobal_rules:\n  - id: g1\n    plugins:\n      fixture-trace: {{label: g}}\nroutes:\n  - id: r\n    uri: /echo\n    upstream_id: e\n#END\n",
        echo.port
    ));
    wait_until("reload", Duration::from_secs(5), || {
        gw.get("/echo").status == 200
    });
    let r = gw.get("/echo");
    // The reload changed the route, not the global rule: its conf_version is still the
    // file version it last changed in (per resource, as APISIX's modifiedIndex).
    assert_eq!(r.json()["headers"]["x-conf"], "global_rule|g1|1");
}

#[test]
fn cosockets_work_in_header_filter_body_filter_and_log_where_openresty_refuses_them() {
    let echo = Echo::start("e");
    let fetch = format!(
        r#"local sock = ngx.socket.tcp()
        sock:settimeout(2000)
        assert(sock:connect("127.0.0.1", {}))
        assert(sock:send("GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"))
        local line = assert(sock:receive("*l"))
        sock:close()"#,
        echo.port
    );
    let routes = format!(
        "routes:\n  - id: c\n    uri: /hello\n    upstream_id: e\n    lua_handlers:\n      header_filter_by_lua: |\n        {h}\n        ngx.header[\"X-Fetched\"] = line\n      body_filter_by_lua: |\n        if ngx.arg[2] then\n          {h}\n          ngx.arg[1] = \"body filter saw: \" .. line .. \"\\n\"\n        end\n      log_by_lua: |\n        {h}\n        ngx.log(ngx.WARN, \"log phase saw: \", line)\n",
        h = fetch.replace('\n', "\n        ")
    );
    let gw = gateway(&echo, "", &routes);
    let r = gw.get("/hello");
    assert_eq!(r.status, 200, "{}", gw.error_log());
    assert_eq!(r.header("x-fetched"), Some("HTTP/1.1 200 OK"));
    assert_eq!(r.body, "hello world\nbody filter saw: HTTP/1.1 200 OK\n");
    wait_log(&gw, "log phase saw: HTTP/1.1 200 OK");
}

#[test]
fn ngx_eof_ends_the_response_while_the_handler_goes_on() {
    let gw = Gateway::start(
        "",
        &routes_file(
            r#"routes:
  - id: eof
    uri: /eof
    lua_handlers:
      content_by_lua: |
        ngx.say("done")
        ngx.eof()
        local ok, err = ngx.say("late")
        ngx.sleep(2)
        ngx.log(ngx.WARN, "after eof: ", tostring(ok), " ", err)
"#,
        ),
    );
    let r = gw.get("/eof");
    assert_eq!((r.status, r.body.as_str()), (200, "done\n"), "{r:?}");
    // The whole response arrived while the handler still sleeps.
    assert!(!gw.error_log().contains("after eof"), "{}", gw.error_log());
    let log = wait_log(&gw, "after eof");
    assert!(log.contains("after eof: nil seen eof"), "{log}");
}

#[test]
fn light_threads_belong_to_their_request() {
    let gw = Gateway::start(
        "",
        &routes_file(
            r#"routes:
  - id: exit-in-thread
    uri: /exit-in-thread
    lua_handlers:
      content_by_lua: |
        local t = ngx.thread.spawn(function()
            ngx.sleep(0.05)
            ngx.say("from thread")
            ngx.exit(200)
        end)
        ngx.thread.wait(t)
        ngx.say("parent must not go on")
  - id: joined
    uri: /joined
    lua_handlers:
      content_by_lua: |
        ngx.thread.spawn(function()
            ngx.sleep(0.1)
            ngx.say("late thread")
        end)
        ngx.say("parent done")
"#,
        ),
    );
    // ngx.exit in a light thread ends the whole request at once; the waiting parent stops.
    let r = gw.get("/exit-in-thread");
    assert_eq!((r.status, r.body.as_str()), (200, "from thread\n"), "{r:?}");
    // A phase that returns still waits for its light threads, whose output is part of the
    // response.
    let r = gw.get("/joined");
    assert_eq!(
        (r.status, r.body.as_str()),
        (200, "parent done\nlate thread\n"),
        "{r:?}"
    );
    let log = gw.error_log();
    assert!(!log.contains("runtime error"), "{log}");
}

fn versioned_plugin(v: u32) -> String {
    format!(
        r#"-- A fixture plugin whose version shows in a response header; logs init and destroy.
local _M = {{ version = 0.1, priority = 100, name = "fixture-version", schema = {{ type = "object" }} }}
function _M.init() ngx.log(ngx.WARN, "fixture-version init {v}") end
function _M.destroy() ngx.log(ngx.WARN, "fixture-version destroy {v}") end
function _M.header_filter(conf, ctx) ngx.header["X-Plugin-Version"] = "{v}" end
return _M
"#
    )
}

#[test]
fn sighup_reloads_changed_plugin_files_with_destroy_and_init() {
    let echo = Echo::start("e");
    let port = free_port();
    let config = format!("{}plugins:\n  - fixture-version\n", config_yaml(port, ""));
    let yaml = format!(
        "routes:\n  - id: v\n    uri: /v\n    plugins:\n      fixture-version: {{}}\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
        echo.port
    );
    let v1 = versioned_plugin(1);
    let gw = Gateway::start_with_files(
        &config,
        port,
        &yaml,
        &[("lua/plugins/fixture-version.lua", v1.as_str())],
    );
    assert_eq!(gw.get("/v").header("x-plugin-version"), Some("1"));
    std::fs::write(
        gw.dir.0.join("lua/plugins/fixture-version.lua"),
        versioned_plugin(2),
    )
    .unwrap();
    // Nothing changes until the reload is asked for.
    assert_eq!(gw.get("/v").header("x-plugin-version"), Some("1"));
    gw.signal(libc::SIGHUP);
    wait_until("the new plugin version", Duration::from_secs(10), || {
        gw.get("/v").header("x-plugin-version") == Some("2")
    });
    let log = wait_log(&gw, "fixture-version destroy 1");
    assert!(log.contains("fixture-version init 2"), "{log}");
    assert!(log.contains("plugins reloaded"), "{log}");
}

#[test]
fn a_reload_whose_configuration_does_not_build_keeps_routes_on_their_plugins() {
    let echo = Echo::start("e");
    let port = free_port();
    let config = format!("{}plugins:\n  - fixture-version\n", config_yaml(port, ""));
    let yaml = format!(
        "routes:\n  - id: v\n    uri: /v\n    plugins:\n      fixture-version: {{}}\n    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
        echo.port
    );
    let v1 = versioned_plugin(1);
    let gw = Gateway::start_with_files(
        &config,
        port,
        &yaml,
        &[("lua/plugins/fixture-version.lua", v1.as_str())],
    );
    assert_eq!(gw.get("/v").header("x-plugin-version"), Some("1"));
    // The plugin file breaks: the reloaded plugins lack it, so the route file no longer builds
    // and the running configuration stays. Its route still runs on the plugin it was checked
    // against, never on a VM without it.
    let file = gw.dir.0.join("lua/plugins/fixture-version.lua");
    std::fs::write(&file, "return {").unwrap();
    gw.signal(libc::SIGHUP);
    wait_log(&gw, "failed to load plugin [fixture-version]");
    wait_log(&gw, "has not been rebuilt with the reloaded plugins");
    for _ in 0..5 {
        let r = gw.get("/v");
        assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
        assert_eq!(r.header("x-plugin-version"), Some("1"));
    }
    assert!(!gw.error_log().contains("is not loaded on this worker"));
    // Fixed and reloaded again: the configuration builds, the new plugin runs and the old
    // load's plugins are destroyed.
    std::fs::write(&file, versioned_plugin(2)).unwrap();
    gw.signal(libc::SIGHUP);
    wait_until("the new plugin version", Duration::from_secs(10), || {
        gw.get("/v").header("x-plugin-version") == Some("2")
    });
    wait_log(&gw, "fixture-version destroy 1");
}

#[test]
fn a_streaming_content_handler_runs_with_header_and_body_filters() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        r#"routes:
  - id: s
    uri: /s
    plugins:
      fixture-upper: { trailer: "end" }
    lua_handlers:
      header_filter_by_lua: |
        ngx.header["X-Filtered"] = "yes"
      content_by_lua: |
        ngx.say("one")
        ngx.flush(true)
        ngx.sleep(0.05)
        local ok, err = ngx.print("two")
        ngx.say(" ", tostring(ok), " ", tostring(err))
"#,
    );
    let r = gw.get("/s");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    // The header filter ran before the head went out, and the body filter saw every chunk
    // the handler printed after its first flush.
    assert_eq!(r.header("x-filtered"), Some("yes"), "{r:?}");
    assert_eq!(r.header("x-upper"), Some("1"));
    assert_eq!(r.body, "ONE\nTWO 1 NIL\nend\n", "{}", gw.error_log());
    let log = gw.error_log();
    assert!(
        !log.contains("API disabled") && !log.contains("attempt to set"),
        "{log}"
    );
}

#[test]
fn a_handler_that_does_not_compile_fails_under_its_own_directive_name() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        r#"routes:
  - id: half
    uri: /half
    lua_handlers:
      content_by_lua: |
        ngx.say("body from content")
      header_filter_by_lua: |
        this is not lua
"#,
    );
    let r = gw.get("/half");
    // The content handler compiled and ran; the header filter's chunk failed on its own.
    assert_eq!(r.status, 500, "{r:?}");
    let log = wait_log(&gw, "failed to load header_filter_by_lua of route half");
    assert!(
        !log.contains("failed to load content_by_lua"),
        "the content handler is not blamed: {log}"
    );
}

#[test]
fn routes_with_lua_plugins_send_apisix_forwarding_fields() {
    let echo = Echo::start("e");
    let gw = gateway(
        &echo,
        "",
        "routes:\n  - id: traced\n    uri: /traced\n    upstream_id: e\n    plugins:\n      fixture-trace: {}",
    );
    // Nothing of the client's to combine with: the fields are written after the request's own.
    let r = request(
        gw.port,
        "GET",
        "/traced",
        &[("Host", "site.test:8080")],
        b"",
    );
    assert_eq!(r.status, 200, "{}", gw.error_log());
    let h = &r.json()["headers"];
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "site.test:8080");
    assert_eq!(h["x-forwarded-port"], "8080");
    // The client's X-Forwarded-For gets the client appended; this config trusts 127.0.0.1's
    // X-Real-IP (as APISIX's test configuration does), so the client is 6.6.6.6.
    let r = request(
        gw.port,
        "GET",
        "/traced",
        &[("X-Forwarded-For", "1.2.3.4"), ("X-Real-IP", "6.6.6.6")],
        b"",
    );
    let h = &r.json()["headers"];
    assert_eq!(h["x-forwarded-for"], "1.2.3.4, 6.6.6.6");
    assert_eq!(h["x-real-ip"], "6.6.6.6");
    let r = request(
        gw.port,
        "GET",
        "/traced",
        &[("X-Forwarded-For", "1.2.3.4")],
        b"",
    );
    assert_eq!(r.json()["headers"]["x-forwarded-for"], "1.2.3.4, 127.0.0.1");
    assert_eq!(r.json()["headers"]["x-real-ip"], "127.0.0.1");
}

#[test]
fn plugins_read_and_change_the_forwarding_fields_set_on_arrival() {
    // The client sends no forwarding field: the fields APISIX sets on arrival are held apart
    // from the request's headers until something changes them; every reader sees them all the
    // same, and a change goes upstream as made.
    const FORWARDED: &str = include_str!("../t/fixtures/plugins/fixture-forwarded.lua");
    let echo = Echo::start("e");
    let port = free_port();
    let config = format!("{}plugins:\n  - fixture-forwarded\n", config_yaml(port, ""));
    let route = |id: &str, action: &str| {
        format!(
            "  - id: {id}\n    uri: /{id}\n    upstream_id: e\n    plugins:\n      fixture-forwarded:\n        action: {action}\n"
        )
    };
    let yaml = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\nroutes:\n{}{}{}{}#END\n",
        echo.port,
        route("answer", "answer"),
        route("pass", "pass"),
        route("add", "add"),
        route("change", "change"),
    );
    let gw = Gateway::start_with_files(
        &config,
        port,
        &yaml,
        &[("lua/plugins/fixture-forwarded.lua", FORWARDED)],
    );
    // The JSON a route answers with: the plugin's readings, or the echo of the upstream request.
    let answer = |path: &str| {
        let r = request(gw.port, "GET", path, &[("Host", "site.test:8080")], b"");
        assert_eq!(r.status, 200, "{}", gw.error_log());
        r.json()
    };

    let read = answer("/answer");
    assert_eq!(read["get_headers"]["proto"], "http", "{read}");
    assert_eq!(read["get_headers"]["host"], "site.test:8080");
    assert_eq!(read["get_headers"]["port"], "8080");
    assert_eq!(read["raw_names"]["proto"], "http");
    assert_eq!(read["raw_names"]["port"], "8080");
    assert_eq!(read["var"]["proto"], "http");
    assert_eq!(read["var"]["host"], "site.test:8080");
    assert_eq!(read["core_header"], "8080");
    // `get_headers(2)`: the client's Host, then the first field set on arrival.
    assert_eq!(read["limited"], 2);

    let h = &answer("/pass")["headers"];
    assert_eq!(h["x-forwarded-proto"], "http", "{h}");
    assert_eq!(h["x-forwarded-host"], "site.test:8080");
    assert_eq!(h["x-forwarded-port"], "8080");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");

    // Another field added or cleared leaves them as they were.
    let h = &answer("/add")["headers"];
    assert_eq!(h["x-added"], "1", "{h}");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "site.test:8080");
    assert_eq!(h["x-forwarded-port"], "8080");

    let h = &answer("/change")["headers"];
    assert_eq!(h["x-forwarded-proto"], "https", "{h}");
    assert!(h.get("x-forwarded-host").is_none(), "{h}");
    assert_eq!(h["x-forwarded-port"], "8080");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
}

/// A plugin `fixture-many-N` (priority 10000 - N): its header_filter appends N to `X-Order`, its
/// rewrite fails when `?fail=N`.
fn numbered_plugin(n: usize) -> String {
    format!(
        "local p = {{ version = 0.1, priority = {}, name = \"fixture-many-{n}\", schema = {{ type = \"object\" }} }}\n\
         function p.rewrite(conf, ctx)\n    if ngx.var.arg_fail == \"{n}\" then error(\"plugin {n} broke\") end\nend\n\
         function p.header_filter(conf, ctx)\n    ngx.header[\"X-Order\"] = (ngx.header[\"X-Order\"] or \"\") .. \"{n},\"\nend\n\
         return p\n",
        10000 - n
    )
}

#[test]
fn a_chain_longer_than_the_bit_mask_runs_every_plugin_in_order_and_names_the_one_that_fails() {
    // Runs of plugins are passed to the runner as a bit mask of 52 places; a longer chain goes
    // by the list of its indices.
    const N: usize = 60;
    let echo = Echo::start("e");
    let port = free_port();
    let names: Vec<String> = (1..=N).map(|n| format!("fixture-many-{n}")).collect();
    let sources: Vec<String> = (1..=N).map(numbered_plugin).collect();
    let paths: Vec<String> = names
        .iter()
        .map(|n| format!("lua/plugins/{n}.lua"))
        .collect();
    let files: Vec<(&str, &str)> = paths
        .iter()
        .zip(&sources)
        .map(|(p, s)| (p.as_str(), s.as_str()))
        .collect();
    let config = format!(
        "{}plugins:\n{}",
        config_yaml(port, ""),
        names
            .iter()
            .map(|n| format!("  - {n}\n"))
            .collect::<String>()
    );
    let yaml = format!(
        "routes:\n  - id: m\n    uri: /m\n    plugins:\n{}    upstream:\n      nodes:\n        \"127.0.0.1:{}\": 1\n#END\n",
        names
            .iter()
            .map(|n| format!("      {n}: {{}}\n"))
            .collect::<String>(),
        echo.port
    );
    let gw = Gateway::start_with_files(&config, port, &yaml, &files);
    let r = gw.get("/m");
    assert_eq!(r.status, 200, "{}", gw.error_log());
    let expected: String = (1..=N).map(|n| format!("{n},")).collect();
    assert_eq!(r.header("x-order"), Some(expected.as_str()));
    let r = gw.get("/m?fail=57");
    assert_eq!(r.status, 500);
    let log = wait_log(&gw, "plugin 57 broke");
    assert!(
        log.contains("plugin: fixture-many-57, phase: rewrite"),
        "{log}"
    );
    assert_eq!(gw.get("/m").status, 200);
}
