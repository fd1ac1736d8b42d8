//! The balancer phase of Lua plugins through the real binary: it runs after access and before
//! before_proxy for the first try and again for every retry, sees the picked node on `ctx`,
//! and steers the try with `ngx.balancer` (peer, more tries, timeouts), or answers.

mod support;

use support::*;

const BALANCER: &str = include_str!("../t/fixtures/plugins/fixture-balancer.lua");
const TRACE: &str = include_str!("../t/fixtures/plugins/fixture-trace.lua");

fn gateway(routes: &str) -> Gateway {
    let port = free_port();
    let config = format!(
        "{}plugins:\n  - fixture-balancer\n  - fixture-trace\n",
        config_yaml(port, "")
    );
    Gateway::start_with_files(
        &config,
        port,
        &format!("{routes}\n#END\n"),
        &[
            ("lua/plugins/fixture-balancer.lua", BALANCER),
            ("lua/plugins/fixture-trace.lua", TRACE),
        ],
    )
}

fn route(id: &str, nodes: &[u16], retries: Option<u32>, balancer_conf: &str) -> String {
    let nodes: String = nodes
        .iter()
        .map(|p| format!("        \"127.0.0.1:{p}\": 1\n"))
        .collect();
    let retries = retries.map_or(String::new(), |r| format!("      retries: {r}\n"));
    format!(
        "  - id: {id}\n    uri: /{id}\n    plugins:\n      fixture-trace: {{}}\n      fixture-balancer: {balancer_conf}\n    upstream:\n      type: roundrobin\n{retries}      nodes:\n{nodes}"
    )
}

#[test]
fn the_balancer_phase_runs_between_access_and_before_proxy_with_the_picked_node() {
    let echo = Echo::start("e");
    let gw = gateway(&format!(
        "routes:\n{}",
        route("plain", &[echo.port], None, "{}")
    ));
    let r = gw.get("/plain");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(
        r.header("x-trace"),
        Some("t:rewrite,t:access,b:balancer,t:before_proxy,t:header_filter")
    );
    assert_eq!(
        r.header("x-balancer"),
        Some(format!("1 127.0.0.1:{} -/- balancer true", echo.port).as_str())
    );
    // In access, ngx.balancer answers as lua-resty-core does outside balancer_by_lua.
    assert_eq!(
        r.header("x-outside"),
        Some("- API disabled in the current context")
    );
}

#[test]
fn set_current_peer_sends_the_try_to_another_address() {
    let echo = Echo::start("elsewhere");
    let dead = free_port();
    let gw = gateway(&format!(
        "routes:\n{}",
        route(
            "moved",
            &[dead],
            None,
            &format!("{{peer_port: {}}}", echo.port)
        )
    ));
    let r = gw.get("/moved");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(r.json()["server"].as_str(), Some("elsewhere"), "{}", r.body);
    // The phase saw the node the upstream configures; the try went to the peer it set.
    assert_eq!(
        r.header("x-balancer"),
        Some(format!("1 127.0.0.1:{dead} -/- balancer true").as_str())
    );
}

#[test]
fn each_retry_runs_the_balancer_phase_again_with_the_last_failure() {
    let echo = Echo::start("second");
    let dead = free_port();
    // One node, no retries configured: set_more_tries(1) allows a second try, where the
    // plugin picks the live peer.
    let gw = gateway(&format!(
        "routes:\n{}",
        route(
            "retry",
            &[dead],
            Some(0),
            &format!(
                "{{more_tries: 1, peer_port: {}, peer_on_try: 2}}",
                echo.port
            )
        )
    ));
    let r = gw.get("/retry");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.error_log());
    assert_eq!(r.json()["server"].as_str(), Some("second"));
    assert_eq!(
        r.header("x-balancer"),
        Some(
            format!(
                "1 127.0.0.1:{dead} -/- balancer true;2 127.0.0.1:{dead} failed/502 balancer true"
            )
            .as_str()
        )
    );
    // Without the extra try the dead node is the answer.
    let gw2 = gateway(&format!(
        "routes:\n{}",
        route("once", &[dead], Some(0), "{}")
    ));
    assert_eq!(gw2.get("/once").status, 502);
}

#[test]
fn an_answer_from_the_balancer_phase_ends_the_request_before_the_upstream() {
    let rec = Recorder::start();
    let gw = gateway(&format!(
        "routes:\n{}",
        route("refused", &[rec.port], None, "{answer_on_try: 1}")
    ));
    let r = gw.get("/refused");
    assert_eq!(r.status, 503);
    assert_eq!(r.body, "{\"message\":\"no peer for try 1\"}\n");
    // The answer still passes header_filter; before_proxy never ran.
    assert_eq!(
        r.header("x-trace"),
        Some("t:rewrite,t:access,b:balancer,t:header_filter")
    );
    assert_eq!(rec.text(), "", "the upstream was not called");
}

#[test]
fn set_timeouts_bounds_the_try() {
    let silent = silent_backend();
    let gw = gateway(&format!(
        "routes:\n{}",
        route("slow", &[silent], Some(0), "{read_timeout: 0.2}")
    ));
    let r = gw.get("/slow");
    assert_eq!(r.status, 504, "{r:?}");
}

#[test]
fn unsupported_ngx_balancer_functions_fail_naming_themselves() {
    let echo = Echo::start("e");
    let gw = gateway(&format!(
        "routes:\n{}",
        route("odd", &[echo.port], None, "{unsupported: recreate_request}")
    ));
    let r = gw.get("/odd");
    assert_eq!(r.status, 500);
    let log = gw.error_log();
    assert!(
        log.contains("ngx.balancer.recreate_request is not supported by moongate"),
        "{log}"
    );
    assert!(log.contains("phase: balancer"), "{log}");
}
