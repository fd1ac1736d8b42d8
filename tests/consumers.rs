//! Consumers through the real binary: an auth plugin finds the consumer (or one of its
//! credentials) with `apisix.consumer`, and the consumer's and its group's plugins merge into
//! the route (consumer > group > route), with APISIX's `ctx.conf_*` and the
//! `rewrite_in_consumer` pass.

mod support;

use support::*;

const KEYAUTH: &str = include_str!("../t/fixtures/consumers/fixture-keyauth.lua");
const TAG: &str = include_str!("../t/fixtures/consumers/fixture-tag.lua");

fn gateway(echo: &Echo, routes: &str) -> Gateway {
    let port = free_port();
    let config = format!(
        "{}plugins:\n  - fixture-keyauth\n  - fixture-tag\n",
        config_yaml(port, "")
    );
    let yaml = format!(
        "upstreams:\n  - id: e\n    nodes:\n      \"127.0.0.1:{}\": 1\n{routes}\n#END\n",
        echo.port
    );
    Gateway::start_with_files(
        &config,
        port,
        &yaml,
        &[
            ("lua/plugins/fixture-keyauth.lua", KEYAUTH),
            ("lua/plugins/fixture-tag.lua", TAG),
        ],
    )
}

const CONSUMERS: &str = r#"
consumers:
  - username: jack
    labels: { custom_id: "cj-1" }
    plugins:
      fixture-keyauth: { key: k-jack }
      fixture-tag: { tag: jack }
  - id: jack/credentials/c2
    plugins:
      fixture-keyauth: { key: k-jack-2 }
  - username: rose
    group_id: g1
    plugins:
      fixture-keyauth: { key: k-rose }
  - username: lonely
    group_id: nope
    plugins:
      fixture-keyauth: { key: k-lonely }
consumer_groups:
  - id: g1
    plugins:
      fixture-tag: { tag: group }
routes:
  - id: plain
    uri: /plain
    upstream_id: e
    plugins:
      fixture-keyauth: {}
  - id: tagged
    uri: /tagged
    upstream_id: e
    plugins:
      fixture-keyauth: {}
      fixture-tag: { tag: route }
"#;

fn seen(r: &Resp, name: &str) -> Option<String> {
    r.json()["headers"][name].as_str().map(str::to_string)
}

#[test]
fn auth_plugins_find_consumers_and_credentials_and_consumer_plugins_merge_into_the_route() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, CONSUMERS);

    let r = request(gw.port, "GET", "/plain", &[], b"");
    assert_eq!(r.status, 401, "{r:?}");
    let r = request(gw.port, "GET", "/plain", &[("apikey", "wrong")], b"");
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["message"], "Invalid API key in request");

    // The consumer's own plugin joins a route that does not have it: rewrite_in_consumer runs
    // its rewrite, then access runs with the merged chain and APISIX's conf_type/conf_id.
    let r = request(gw.port, "GET", "/plain", &[("apikey", "k-jack")], b"");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(seen(&r, "x-consumer-username").as_deref(), Some("jack"));
    assert_eq!(seen(&r, "x-consumer-custom-id").as_deref(), Some("cj-1"));
    assert_eq!(seen(&r, "x-auth-conf").as_deref(), Some("consumer"));
    assert_eq!(seen(&r, "x-rewrite-tag").as_deref(), Some("jack"));
    assert_eq!(seen(&r, "x-access-tag").as_deref(), Some("jack"));
    assert_eq!(
        seen(&r, "x-conf").as_deref(),
        Some("route&consumer|plain&jack")
    );

    // A credential identifies its consumer.
    let r = request(gw.port, "GET", "/plain", &[("apikey", "k-jack-2")], b"");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(seen(&r, "x-consumer-username").as_deref(), Some("jack"));
    assert_eq!(seen(&r, "x-credential-identifier").as_deref(), Some("c2"));

    // Consumer wins over route: the route's rewrite already ran with its own conf, the
    // merged access runs with the consumer's.
    let r = request(gw.port, "GET", "/tagged", &[("apikey", "k-jack")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(seen(&r, "x-rewrite-tag").as_deref(), Some("route"));
    assert_eq!(seen(&r, "x-access-tag").as_deref(), Some("jack"));

    // Group plugins apply to the group's consumers.
    let r = request(gw.port, "GET", "/plain", &[("apikey", "k-rose")], b"");
    assert_eq!(r.status, 200);
    assert_eq!(seen(&r, "x-access-tag").as_deref(), Some("group"));
    assert_eq!(
        seen(&r, "x-conf").as_deref(),
        Some("route&consumer&consumer_group|plain&rose&g1")
    );

    // A consumer whose group does not exist cannot be served: 503, as APISIX answers.
    let r = request(gw.port, "GET", "/plain", &[("apikey", "k-lonely")], b"");
    assert_eq!(r.status, 503);
    assert!(
        gw.error_log()
            .contains("failed to fetch consumer group config by id: nope"),
        "{}",
        gw.error_log()
    );

    // Group wins over route, too.
    let r = request(gw.port, "GET", "/tagged", &[("apikey", "k-rose")], b"");
    assert_eq!(seen(&r, "x-access-tag").as_deref(), Some("group"));
}

#[test]
fn the_consumer_merge_is_logged_as_apisix_logs_it() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, CONSUMERS);
    let r = request(gw.port, "GET", "/plain", &[("apikey", "k-jack")], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let r = request(gw.port, "GET", "/plain", &[("apikey", "k-rose")], b"");
    assert_eq!(r.status, 200, "{r:?}");
    let log = gw.error_log();
    // jack brings a plugin of his own, rose only her group's: both change the route's chain.
    assert!(
        log.contains("[info]") && log.contains("find consumer jack, config changed: true"),
        "{log}"
    );
    assert!(
        log.contains("find consumer rose, config changed: true"),
        "{log}"
    );
}

/// Consumers whose credentials are `$env://` references: cargo gives the test binary (and so
/// the gateway it starts) `CARGO_PKG_NAME`; the other variable is set nowhere.
const REF_CONSUMERS: &str = r#"
consumers:
  - username: envy
    plugins:
      fixture-keyauth: { key: "$env://CARGO_PKG_NAME" }
  - username: ghost
    plugins:
      fixture-keyauth: { key: "$env://MOONGATE_TEST_NEVER_SET_VARIABLE" }
routes:
  - id: plain
    uri: /plain
    upstream_id: e
    plugins:
      fixture-keyauth: {}
"#;

#[test]
fn consumer_credentials_match_on_resolved_references_and_unresolved_ones_fail_closed() {
    let echo = Echo::start("e");
    let gw = gateway(&echo, REF_CONSUMERS);
    let pkg = env!("CARGO_PKG_NAME");

    let r = request(gw.port, "GET", "/plain", &[("apikey", pkg)], b"");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(seen(&r, "x-consumer-username").as_deref(), Some("envy"));

    // Neither reference text is ever a credential.
    for literal in [
        "$env://CARGO_PKG_NAME",
        "$env://MOONGATE_TEST_NEVER_SET_VARIABLE",
    ] {
        let r = request(gw.port, "GET", "/plain", &[("apikey", literal)], b"");
        assert_eq!(r.status, 401, "{literal}: {r:?}");
    }
    let log = gw.error_log();
    assert!(
        log.contains(
            "failed to resolve secret reference in consumer auth credential, skipping consumer: ghost"
        ),
        "{log}"
    );
    assert!(!log.contains("skipping consumer: envy"), "{log}");
}
