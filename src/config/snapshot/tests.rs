//! Snapshot building: service merge, references, reuse, refusals.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

use super::*;
use crate::config::standalone::{Parsed, parse};
use crate::router::RequestVars;
use crate::upstream::SystemResolver;

fn resources(yaml: &str) -> Resources {
    match parse(&format!("{yaml}\n#END\n")) {
        Ok(Parsed::Complete(r)) => r,
        other => panic!("{other:?}"),
    }
}

fn build(yaml: &str) -> Result<Snapshot, Vec<ConfigError>> {
    Snapshot::build(resources(yaml), 1, None, &SystemResolver, &Catalog::empty())
}

struct Get(&'static str, &'static str);

impl RequestVars for Get {
    fn method(&self) -> &str {
        "GET"
    }
    fn host(&self) -> &str {
        self.0
    }
    fn path(&self) -> &str {
        self.1
    }
    fn remote_addr(&self) -> Option<IpAddr> {
        None
    }
    fn var(&self, _: &str) -> Option<Cow<'_, str>> {
        None
    }
}

fn routed(s: &Snapshot, host: &'static str, path: &'static str) -> Option<String> {
    s.router
        .find(&Get(host, path))
        .map(|m| s.routes[m.index].id.0.clone())
}

#[test]
fn a_route_inherits_its_services_upstream_and_hosts_and_route_fields_win() {
    let s = build(
        "services:\n  - id: s1\n    hosts: [svc.test]\n    upstream:\n      nodes: {\"127.0.0.1:1001\": 1}\n      timeout: {connect: 1, send: 2, read: 3}\nroutes:\n  - id: r1\n    uri: /a\n    service_id: s1\n  - id: r2\n    uri: /b\n    service_id: s1\n    hosts: [own.test]\n    upstream:\n      nodes: {\"127.0.0.1:1002\": 1}\n",
    )
    .unwrap();
    assert_eq!(routed(&s, "svc.test", "/a").as_deref(), Some("r1"));
    assert_eq!(routed(&s, "other.test", "/a"), None);
    assert_eq!(routed(&s, "own.test", "/b").as_deref(), Some("r2"));
    assert_eq!(routed(&s, "svc.test", "/b"), None);
    let port = |i: usize| match &s.routes[i].upstream {
        RouteUpstream::Ready(d) => d.nodes[0].port,
        _ => 0,
    };
    assert_eq!((port(0), port(1)), (1001, 1002));
    assert_eq!(s.routes[0].timeout.map(|t| t.read), Some(3.0));
}

#[test]
fn upstream_precedence_is_inline_then_upstream_id_then_service() {
    let s = build(
        "upstreams:\n  - id: u1\n    nodes: {\"127.0.0.1:2001\": 1}\nservices:\n  - id: s1\n    upstream_id: u1\nroutes:\n  - id: a\n    uri: /a\n    service_id: s1\n  - id: b\n    uri: /b\n    upstream_id: u1\n    upstream:\n      nodes: {\"127.0.0.1:2002\": 1}\n",
    )
    .unwrap();
    let port = |i: usize| match &s.routes[i].upstream {
        RouteUpstream::Ready(d) => d.nodes[0].port,
        _ => 0,
    };
    assert_eq!((port(0), port(1)), (2001, 2002));
}

#[test]
fn missing_references_are_served_as_apisix_answers_not_refused() {
    let s = build("routes:\n  - id: a\n    uri: /a\n    service_id: nope\n  - id: b\n    uri: /b\n    upstream_id: nope\n  - id: c\n    uri: /c\n").unwrap();
    assert!(matches!(
        s.routes[0].upstream,
        RouteUpstream::MissingService(_)
    ));
    assert!(matches!(
        s.routes[1].upstream,
        RouteUpstream::MissingUpstream(_)
    ));
    assert!(matches!(s.routes[2].upstream, RouteUpstream::NoUpstream));
}

#[test]
fn disabled_routes_are_left_out() {
    let s = build("routes:\n  - id: a\n    uri: /a\n    status: 0\n    upstream_id: x\n  - id: b\n    uri: /a\n    upstream_id: x\n").unwrap();
    assert_eq!(routed(&s, "h", "/a").as_deref(), Some("b"));
}

#[test]
fn plugins_filter_func_and_bad_fields_are_refused_with_every_error() {
    let errs = build(
        "routes:\n  - id: a\n    uri: /a\n    plugins:\n      key-auth: {}\n  - id: b\n    uri: /b\n    filter_func: \"function() return true end\"\n  - id: c\n    uri: /c\n    methods: [FETCH]\n  - id: d\n    uri: /d\n    upstream:\n      scheme: grpc\n      nodes: {\"127.0.0.1:1\": 1}\n",
    )
    .err()
    .unwrap();
    let got: Vec<String> = errs
        .iter()
        .map(|e| format!("{}: {}", e.resource, e.field))
        .collect();
    assert_eq!(
        got,
        vec![
            "routes[id=a]: plugins.key-auth",
            "routes[id=b]: filter_func",
            "routes[id=d]: scheme",
            "routes[id=c]: methods",
        ]
    );
}

#[test]
fn unchanged_upstreams_keep_their_compiled_definition_across_builds() {
    let text = "upstreams:\n  - id: u1\n    nodes: {\"127.0.0.1:3001\": 1}\n  - id: u2\n    nodes: {\"127.0.0.1:3002\": 1}\nroutes:\n  - id: a\n    uri: /a\n    upstream_id: u1\n";
    let first = build(text).unwrap();
    let changed = text.replace("3002", "3003");
    let second = Snapshot::build(
        resources(&changed),
        2,
        Some(&first),
        &SystemResolver,
        &Catalog::empty(),
    )
    .unwrap();
    assert!(Arc::ptr_eq(
        &first.upstreams[&Id("u1".into())],
        &second.upstreams[&Id("u1".into())]
    ));
    assert!(!Arc::ptr_eq(
        &first.upstreams[&Id("u2".into())],
        &second.upstreams[&Id("u2".into())]
    ));
}
