//! The example plugins shipped in `lua/plugins/` (ours, documented in docs/plugins.md), run
//! through the real binary exactly as a user would drop them in: they must keep working as the
//! contract they demonstrate.

mod support;

use support::*;

const GREETING: &str = include_str!("../lua/plugins/example-greeting.lua");
const KEY_CHECK: &str = include_str!("../lua/plugins/example-key-check.lua");
const BODY_STATS: &str = include_str!("../lua/plugins/example-body-stats.lua");

fn gateway(echo: &Echo, routes: &str) -> Gateway {
    let port = free_port();
    // No `plugins:` list: every file in lua/plugins/ is enabled, as for a user.
    let config = config_yaml(port, "");
    let yaml = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\n{routes}\n#END\n",
        echo.port
    );
    Gateway::start_with_files(
        &config,
        port,
        &yaml,
        &[
            ("lua/plugins/example-greeting.lua", GREETING),
            ("lua/plugins/example-key-check.lua", KEY_CHECK),
            ("lua/plugins/example-body-stats.lua", BODY_STATS),
        ],
    )
}

const ROUTES: &str = r#"
consumers:
  - username: jack
    plugins:
      example-key-check: { key: "jack-key-0001" }
      example-greeting: { greeting: "welcome back" }
routes:
  - id: tag
    uri: /tag
    upstream_id: e
    plugins:
      example-greeting: {}
  - id: answer
    uri: /answer
    upstream_id: e
    plugins:
      example-greeting: { greeting: "hi", answer: true }
  - id: keyed
    uri: /keyed
    upstream_id: e
    plugins:
      example-key-check: {}
  - id: stats
    uri: /stats
    upstream_id: e
    plugins:
      example-body-stats: { footer: "-- end\n" }
"#;

#[test]
fn the_example_plugins_run_as_documented() {
    let echo = Echo::start("ex");
    let gw = gateway(&echo, ROUTES);

    // example-greeting: defaults filled by core.schema, the request tagged for the upstream.
    let r = request(gw.port, "GET", "/tag", &[("x-name", "ann")], b"");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(r.json()["headers"]["x-greeting"], "hello, ann");
    assert_eq!(r.header("x-greeted"), Some("yes"));
    // ... or answering itself, with a JSON body.
    let r = request(gw.port, "GET", "/answer", &[("x-name", "bob")], b"");
    assert_eq!(r.status, 200);
    assert!(
        r.body.ends_with("}\n"),
        "a table body is JSON and a newline: {}",
        r.body
    );
    assert_eq!(
        r.json(),
        serde_json::json!({"greeting": "hi, bob", "route": "answer"})
    );

    // example-key-check: 401 without or with a wrong key, the consumer found with the right
    // one, the key hidden from the upstream, and the consumer's own plugin merged in.
    let r = request(gw.port, "GET", "/keyed", &[], b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Key realm=\"example\""));
    let r = request(gw.port, "GET", "/keyed", &[("x-key", "nope")], b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["message"], "Invalid key");
    let r = request(
        gw.port,
        "GET",
        "/keyed",
        &[("x-key", "jack-key-0001"), ("x-name", "jack")],
        b"",
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    let seen = &r.json()["headers"];
    assert_eq!(seen["x-consumer-username"], "jack");
    assert!(seen.get("x-key").is_none(), "hide_credentials: {seen}");
    assert_eq!(seen["x-greeting"], "welcome back, jack");

    // example-body-stats: the body held whole, a footer appended, the length header dropped,
    // and one log line with the counts.
    let r = request(gw.port, "GET", "/stats", &[], b"");
    assert_eq!(r.status, 200);
    assert!(r.body.ends_with("}-- end\n"), "{}", r.body);
    wait_until(
        "the log phase line",
        std::time::Duration::from_secs(5),
        || gw.error_log().contains("example-body-stats: {"),
    );
    let log = gw.error_log();
    assert!(log.contains("\"uri\":\"/stats\""), "{log}");
    assert!(log.contains("\"status\":200"), "{log}");
}

#[test]
fn a_bad_example_conf_is_refused_in_apisix_words() {
    let (_gw, ap) = Gateway::start_embedded_with_files(
        "",
        None,
        &[("lua/plugins/example-greeting.lua", GREETING)],
    );
    let body = r#"{"uri":"/bad","upstream":{"type":"roundrobin","nodes":{"127.0.0.1:1980":1}},"plugins":{"example-greeting":{"greeting":""}}}"#;
    let r = request(
        ap,
        "PUT",
        "/apisix/admin/routes/bad",
        &[
            ("X-API-KEY", ADMIN_KEY),
            ("Content-Type", "application/json"),
        ],
        body.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.json()["error_msg"],
        "failed to check the configuration of plugin example-greeting err: property \"greeting\" validation failed: string too short, expected at least 1, got 0"
    );
}
