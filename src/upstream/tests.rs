//! Upstream compilation and balancer behaviour.

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::json;

use super::*;

struct FakeDns;

impl Resolve for FakeDns {
    fn resolve(&self, host: &str, _port: u16) -> Result<Vec<IpAddr>, String> {
        match host {
            "backend.test" => Ok(vec![
                "10.0.0.5".parse().unwrap(),
                "10.0.0.6".parse().unwrap(),
            ]),
            _ => Err("no such host".into()),
        }
    }
}

fn up(v: serde_json::Value) -> resource::Upstream {
    serde_json::from_value(v).unwrap()
}

fn def(v: serde_json::Value) -> UpstreamDef {
    UpstreamDef::compile(&up(v), &FakeDns).unwrap()
}

struct Vars(Vec<(&'static str, &'static str)>);

impl RequestVars for Vars {
    fn method(&self) -> &str {
        "GET"
    }
    fn host(&self) -> &str {
        "x"
    }
    fn path(&self) -> &str {
        "/"
    }
    fn remote_addr(&self) -> Option<IpAddr> {
        None
    }
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        self.0
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| Cow::Borrowed(*v))
    }
}

#[test]
fn both_node_forms_compile_with_default_ports_ipv6_and_names() {
    let d = def(json!({"nodes": {"127.0.0.1:1980": 1, "[::1]:8080": 2, "backend.test": 3}}));
    let mut got: Vec<(String, u16, String, u32)> = d
        .nodes
        .iter()
        .map(|n| (n.host.clone(), n.port, n.addr.to_string(), n.weight))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("127.0.0.1".into(), 1980, "127.0.0.1:1980".into(), 1),
            ("::1".into(), 8080, "[::1]:8080".into(), 2),
            ("backend.test".into(), 80, "10.0.0.5:80".into(), 3),
        ]
    );
    let d = def(json!({"nodes": [{"host": "127.0.0.1", "port": 81, "weight": 5, "priority": -1}]}));
    assert_eq!(
        (d.nodes[0].port, d.nodes[0].weight, d.nodes[0].priority),
        (81, 5, -1)
    );
    assert_eq!(d.retries, 0);
    let d = def(json!({"nodes": {"127.0.0.1:1": 1, "127.0.0.1:2": 1, "127.0.0.1:3": 1}}));
    assert_eq!(d.retries, 2, "default retries: one per other node");
}

#[test]
fn unsupported_fields_are_refused_by_name() {
    let field = |v| UpstreamDef::compile(&up(v), &FakeDns).unwrap_err().field;
    assert_eq!(
        field(json!({"nodes": {"a:1": 1}, "scheme": "https"})),
        "scheme"
    );
    assert_eq!(
        field(json!({"nodes": {"127.0.0.1:1": 1}, "checks": {"active": {}}})),
        "checks"
    );
    assert_eq!(
        field(json!({"service_name": "x", "discovery_type": "dns"})),
        "discovery_type"
    );
    assert_eq!(
        field(json!({"nodes": {"127.0.0.1:1": 1}, "pass_host": "rewrite"})),
        "upstream_host"
    );
    assert_eq!(
        field(json!({"type": "chash", "key": "bogus", "nodes": {"127.0.0.1:1": 1}})),
        "key"
    );
}

#[test]
fn a_name_that_does_not_resolve_is_kept_for_request_time() {
    let d = def(json!({"nodes": {"nowhere.test:81": 1, "backend.test:82": 1}}));
    let named = |name: &str| d.nodes.iter().find(|n| n.host == name).cloned();
    let n = named("nowhere.test").expect("the unresolved node is kept");
    assert_eq!(n.domain.as_deref(), Some("nowhere.test"));
    assert!(n.addr.ip().is_unspecified(), "{}", n.addr);
    assert_eq!(n.port, 81);
    let b = named("backend.test").expect("the resolved node");
    assert_eq!(b.domain.as_deref(), Some("backend.test"));
    assert_eq!(
        b.addr.to_string(),
        "10.0.0.5:82",
        "the first address found at load"
    );
    let ip = def(json!({"nodes": {"127.0.0.1:1": 1}}));
    assert_eq!(ip.nodes[0].domain, None, "IP literals are never resolved");
}

fn three(kind: &str, extra: serde_json::Value) -> UpstreamDef {
    let mut v =
        json!({"type": kind, "nodes": {"127.0.0.1:1": 5, "127.0.0.1:2": 1, "127.0.0.1:3": 1}});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    def(v)
}

fn port(d: &UpstreamDef, i: usize) -> u16 {
    d.nodes[i].port
}

#[test]
fn roundrobin_is_smooth_and_exactly_proportional() {
    let d = three("roundrobin", json!({}));
    let mut p = Picker::new(&d);
    let seq: Vec<u16> = (0..7)
        .map(|_| port(&d, p.pick(&d, None, &[]).unwrap()))
        .collect();
    assert_eq!(
        seq,
        vec![1, 1, 2, 1, 3, 1, 1],
        "nginx's smooth interleaving for 5:1:1"
    );
    let mut counts = HashMap::new();
    for _ in 0..700 {
        *counts
            .entry(port(&d, p.pick(&d, None, &[]).unwrap()))
            .or_insert(0) += 1;
    }
    assert_eq!((counts[&1], counts[&2], counts[&3]), (500, 100, 100));
}

#[test]
fn tried_and_zero_weight_nodes_are_never_picked() {
    let d = def(json!({"nodes": {"127.0.0.1:1": 1, "127.0.0.1:2": 0, "127.0.0.1:3": 1}}));
    let mut p = Picker::new(&d);
    let first = p.pick(&d, None, &[]).unwrap();
    for _ in 0..20 {
        let i = p.pick(&d, None, &[first]).unwrap();
        assert_ne!(i, first);
        assert_ne!(port(&d, i), 2);
    }
    let other = p.pick(&d, None, &[first]).unwrap();
    assert_eq!(p.pick(&d, None, &[first, other]), None);
}

#[test]
fn lower_priority_nodes_serve_only_when_higher_ones_were_tried() {
    let d = def(json!({"nodes": [
        {"host": "127.0.0.1", "port": 1, "weight": 1, "priority": 10},
        {"host": "127.0.0.1", "port": 2, "weight": 1, "priority": 10},
        {"host": "127.0.0.1", "port": 3, "weight": 1, "priority": 0}
    ]}));
    let mut p = Picker::new(&d);
    for _ in 0..10 {
        assert_ne!(port(&d, p.pick(&d, None, &[]).unwrap()), 3);
    }
    assert_eq!(port(&d, p.pick(&d, None, &[0, 1]).unwrap()), 3);
}

#[test]
fn chash_is_sticky_follows_weights_and_remaps_only_lost_keys() {
    let d = three("chash", json!({"key": "arg_user"}));
    let mut p = Picker::new(&d);
    let keys: Vec<String> = (0..5000).map(|i| format!("user-{i}")).collect();
    let first: Vec<usize> = keys
        .iter()
        .map(|k| p.pick(&d, Some(k), &[]).unwrap())
        .collect();
    let again: Vec<usize> = keys
        .iter()
        .map(|k| p.pick(&d, Some(k), &[]).unwrap())
        .collect();
    assert_eq!(first, again);
    let heavy = first.iter().filter(|i| port(&d, **i) == 1).count();
    // Weight 5 of 7: expect about 3571 of 5000; the hash is deterministic, so this cannot flake.
    assert!((3000..4100).contains(&heavy), "{heavy}");
    // Remove node 3: keys that were on 1 or 2 stay put.
    let d2 = def(
        json!({"type": "chash", "key": "arg_user", "nodes": {"127.0.0.1:1": 5, "127.0.0.1:2": 1}}),
    );
    let mut p2 = Picker::new(&d2);
    for (k, i) in keys.iter().zip(&first) {
        let before = port(&d, *i);
        let after = port(&d2, p2.pick(&d2, Some(k), &[]).unwrap());
        if before != 3 {
            assert_eq!(before, after, "{k} moved");
        }
    }
    // A tried node is skipped by walking the ring.
    let i = p.pick(&d, Some("user-1"), &[]).unwrap();
    assert_ne!(p.pick(&d, Some("user-1"), &[i]).unwrap(), i);
}

#[test]
fn hash_keys_follow_hash_on_and_fall_back_to_remote_addr() {
    let vars = Vars(vec![
        ("arg_user", "u1"),
        ("http_x_id", "h1"),
        ("cookie_sid", "c1"),
        ("remote_addr", "1.2.3.4"),
        ("uri", "/p"),
    ]);
    let key = |hash_on: &str, key: &str, consumer: Option<&str>| {
        three("chash", json!({"hash_on": hash_on, "key": key})).hash_key(&vars, consumer)
    };
    assert_eq!(key("vars", "arg_user", None).as_deref(), Some("u1"));
    assert_eq!(key("header", "X-Id", None).as_deref(), Some("h1"));
    assert_eq!(key("cookie", "sid", None).as_deref(), Some("c1"));
    assert_eq!(key("consumer", "", Some("jack")).as_deref(), Some("jack"));
    assert_eq!(
        key("vars_combinations", "$uri-${arg_user}", None).as_deref(),
        Some("/p-u1")
    );
    assert_eq!(key("vars", "arg_missing", None).as_deref(), Some("1.2.3.4"));
    assert_eq!(key("consumer", "", None).as_deref(), Some("1.2.3.4"));
}

#[test]
fn ewma_prefers_the_faster_node_after_feedback() {
    let d = def(json!({"type": "ewma", "nodes": {"127.0.0.1:1": 1, "127.0.0.1:2": 1}}));
    let mut p = Picker::new(&d);
    p.on_start(0);
    p.on_finish(0, Duration::from_millis(200), false);
    p.on_start(1);
    p.on_finish(1, Duration::from_millis(5), false);
    for _ in 0..20 {
        assert_eq!(p.pick(&d, None, &[]), Some(1));
    }
    // A failure makes a node look slow.
    p.on_start(1);
    p.on_finish(1, Duration::from_millis(1), true);
    assert_eq!(p.pick(&d, None, &[]), Some(0));
}

#[test]
fn least_conn_prefers_the_node_with_fewer_requests_in_flight() {
    let d = def(json!({"type": "least_conn", "nodes": {"127.0.0.1:1": 1, "127.0.0.1:2": 1}}));
    let mut p = Picker::new(&d);
    p.on_start(0);
    p.on_start(0);
    for _ in 0..5 {
        assert_eq!(p.pick(&d, None, &[]), Some(1));
    }
    p.on_finish(0, Duration::ZERO, false);
    p.on_finish(0, Duration::ZERO, false);
    let picks: Vec<usize> = (0..4).map(|_| p.pick(&d, None, &[]).unwrap()).collect();
    assert!(
        picks.contains(&0) && picks.contains(&1),
        "idle nodes share: {picks:?}"
    );
}
