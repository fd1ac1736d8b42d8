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
    Snapshot::build(resources(yaml), 1, &SystemResolver, &Catalog::empty())
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
            "routes[id=c]: methods",
            "routes[id=d]: scheme",
        ]
    );
}

fn catalog() -> Arc<Catalog> {
    Arc::new(Catalog::empty())
}

/// A builder holding `yaml`, each item at revision 1.
fn followed(yaml: &str, catalog: &Arc<Catalog>) -> (Snapshot, Builder) {
    Snapshot::build_followed(resources(yaml), 1, &SystemResolver, catalog)
        .unwrap_or_else(|e| panic!("{e:?}"))
}

/// Applies the new version of the whole file, as the yaml provider does.
fn resync(
    b: &mut Builder,
    yaml: &str,
    version: u64,
    catalog: &Arc<Catalog>,
) -> (Snapshot, Applied) {
    let items = Item::all(resources(yaml))
        .into_iter()
        .map(|i| (i, version))
        .collect();
    let applied = b.sync(items, version, &SystemResolver, catalog);
    assert!(applied.errors.is_empty(), "{:?}", applied.errors);
    (b.snapshot(version), applied)
}

fn route<'a>(s: &'a Snapshot, id: &str) -> &'a Arc<RouteEntry> {
    s.routes
        .iter()
        .find(|r| r.id.0 == id)
        .unwrap_or_else(|| panic!("no route {id}"))
}

fn def_of(r: &RouteEntry) -> &Arc<UpstreamDef> {
    match &r.upstream {
        RouteUpstream::Ready(d) => d,
        other => panic!("{other:?}"),
    }
}

#[test]
fn unchanged_upstreams_keep_their_compiled_definition_across_builds() {
    let c = catalog();
    let text = "upstreams:\n  - id: u1\n    nodes: {\"127.0.0.1:3001\": 1}\n  - id: u2\n    nodes: {\"127.0.0.1:3002\": 1}\nroutes:\n  - id: a\n    uri: /a\n    upstream_id: u1\n";
    let (first, mut b) = followed(text, &c);
    let (second, _) = resync(&mut b, &text.replace("3002", "3003"), 2, &c);
    assert!(Arc::ptr_eq(
        &first.upstreams[&Id("u1".into())],
        &second.upstreams[&Id("u1".into())]
    ));
    assert!(!Arc::ptr_eq(
        &first.upstreams[&Id("u2".into())],
        &second.upstreams[&Id("u2".into())]
    ));
}

#[test]
fn a_change_recompiles_only_what_depends_on_it() {
    let c = catalog();
    let text = "upstreams:\n  - id: u1\n    nodes: {\"127.0.0.1:4001\": 1}\nservices:\n  - id: s1\n    upstream_id: u1\nroutes:\n  - id: a\n    uri: /a\n    upstream_id: u1\n  - id: b\n    uri: /b\n    service_id: s1\n  - id: c\n    uri: /c\n    upstream:\n      nodes: {\"127.0.0.1:4003\": 1}\n";
    let (first, mut b) = followed(text, &c);
    // The upstream both a (directly) and b (through its service) use.
    let (second, applied) = resync(&mut b, &text.replace("4001", "4002"), 2, &c);
    assert_eq!(applied.routes_compiled, 2);
    assert_eq!(def_of(route(&second, "a")).nodes[0].port, 4002);
    assert_eq!(def_of(route(&second, "b")).nodes[0].port, 4002);
    assert!(Arc::ptr_eq(route(&first, "c"), route(&second, "c")));
    assert_eq!(routed(&second, "h", "/b").as_deref(), Some("b"));
    // One route: only it.
    let third_text = text.replace("4001", "4002").replace("uri: /c", "uri: /c2");
    let (third, applied) = resync(&mut b, &third_text, 3, &c);
    assert_eq!(applied.routes_compiled, 1);
    assert_eq!(routed(&third, "h", "/c"), None);
    assert_eq!(routed(&third, "h", "/c2").as_deref(), Some("c"));
    assert_eq!(
        routed(&second, "h", "/c").as_deref(),
        Some("c"),
        "the old snapshot is untouched"
    );
    assert!(Arc::ptr_eq(route(&second, "a"), route(&third, "a")));
    // The same file again: nothing at all.
    let (_, applied) = resync(&mut b, &third_text, 4, &c);
    assert!(!applied.changed);
    assert_eq!(applied.routes_compiled, 0);
}

#[test]
fn a_missing_service_created_later_fixes_the_routes_that_named_it() {
    let c = catalog();
    let text = "routes:\n  - id: a\n    uri: /a\n    service_id: s1\n";
    let (first, mut b) = followed(text, &c);
    assert!(matches!(
        route(&first, "a").upstream,
        RouteUpstream::MissingService(_)
    ));
    let more = format!(
        "{text}services:\n  - id: s1\n    upstream:\n      nodes: {{\"127.0.0.1:5001\": 1}}\n"
    );
    let (second, _) = resync(&mut b, &more, 2, &c);
    assert_eq!(def_of(route(&second, "a")).nodes[0].port, 5001);
    // And deleting it again is seen too.
    let (third, applied) = resync(&mut b, text, 3, &c);
    assert_eq!(applied.routes_compiled, 1);
    assert!(matches!(
        route(&third, "a").upstream,
        RouteUpstream::MissingService(_)
    ));
}

#[test]
fn conf_version_is_the_route_revision_and_survives_changes_to_others() {
    let c = catalog();
    let mut b = Builder::new();
    let put = |id: &str, uri: &str, rev: u64| {
        let r: crate::config::resource::Route = serde_json::from_value(serde_json::json!({
            "id": id, "uri": uri, "upstream": {"nodes": {"127.0.0.1:1": 1}}
        }))
        .unwrap();
        Change::Put(Item::Route(r), rev)
    };
    b.apply(
        vec![put("1", "/a", 10), put("2", "/b", 11)],
        11,
        &SystemResolver,
        &c,
    );
    b.apply(vec![put("2", "/b2", 12)], 12, &SystemResolver, &c);
    let s = b.snapshot(12);
    assert_eq!(route(&s, "1").id.0, "1");
    // Identical but for update_time: nothing changes.
    let mut same: crate::config::resource::Route = serde_json::from_value(serde_json::json!({
        "id": "1", "uri": "/a", "upstream": {"nodes": {"127.0.0.1:1": 1}}
    }))
    .unwrap();
    same.update_time = Some(1_700_000_000);
    let applied = b.apply(
        vec![Change::Put(Item::Route(same), 13)],
        13,
        &SystemResolver,
        &c,
    );
    assert!(!applied.changed);
    let applied = b.apply(
        vec![Change::Delete("routes", Id("2".into()))],
        14,
        &SystemResolver,
        &c,
    );
    assert!(applied.changed);
    let s = b.snapshot(14);
    assert_eq!(s.routes.len(), 1);
    assert_eq!(routed(&s, "h", "/b2"), None);
}

#[test]
fn consumers_follow_their_group_and_credentials_are_not_consumers() {
    let c = catalog();
    let text = "consumers:\n  - username: jack\n    group_id: g\n  - id: jack/credentials/c1\n    plugins: {}\n";
    let (first, mut b) = followed(text, &c);
    let keys: Vec<&String> = first.consumers.keys().collect();
    assert_eq!(keys, vec!["jack"]);
    assert_eq!(first.consumers["jack"].missing_group.as_deref(), Some("g"));
    let with_group = format!("{text}consumer_groups:\n  - id: g\n    plugins: {{}}\n");
    let (second, _) = resync(&mut b, &with_group, 2, &c);
    assert_eq!(second.consumers["jack"].missing_group, None);
    assert_eq!(second.consumers["jack"].group_version.as_deref(), Some("2"));
    assert_eq!(second.lua_view_version, 2);
    // A plugin reload (another catalog) compiles everything again, credentials still apart.
    let (third, applied) = resync(&mut b, &with_group, 3, &catalog());
    assert!(applied.full);
    assert_eq!(third.consumers.len(), 1);
    assert_eq!(third.lua_view_version, 2, "nothing Lua reads changed");
}
