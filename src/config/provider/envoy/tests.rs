use super::*;
use crate::config::resource::{BalancerType, FixedAnswer, Nodes};

const FILE: &str = r#"
static_resources:
  listeners:
  - name: l
    address: {socket_address: {address: 127.0.0.1, port_value: 8000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          codec_type: HTTP1
          route_config:
            virtual_hosts:
            - name: any
              domains: ["*"]
              routes:
              - match: {prefix: /a}
                route: {cluster: c, timeout: 2s, retry_policy: {num_retries: 3}}
              - name: b
                match: {path: /b}
                direct_response: {status: 204}
            - name: exact
              domains: [api.test, "*.api.test"]
              routes:
              - match: {prefix: /}
                route: {cluster: c, prefix_rewrite: /x}
  clusters:
  - name: c
    connect_timeout: {seconds: 1, nanos: 500000000}
    lb_policy: LEAST_REQUEST
    load_assignment:
      endpoints:
      - priority: 1
        lb_endpoints:
        - endpoint: {address: {socket_address: {address: 10.0.0.1, port_value: 80}}}
          load_balancing_weight: 5
"#;

#[test]
fn the_bootstrap_maps_onto_routes_upstreams_and_listeners() {
    let cfg = parse(FILE).unwrap();
    assert_eq!(
        cfg.listeners,
        vec![Listener {
            addr: "127.0.0.1:8000".parse().unwrap(),
            http2: false
        }]
    );
    assert!(cfg.warnings.is_empty(), "{:?}", cfg.warnings);
    let up = &cfg.resources.upstreams[0];
    assert_eq!(up.kind, BalancerType::LeastConn);
    assert_eq!(up.retries, Some(0));
    assert_eq!(up.timeout.map(|t| t.connect), Some(1.5));
    let Nodes::List(nodes) = &up.nodes else {
        panic!("{:?}", up.nodes)
    };
    assert_eq!((nodes[0].weight, nodes[0].priority), (5, -1));

    let ids: Vec<(&str, i64)> = cfg
        .resources
        .routes
        .iter()
        .map(|r| (r.id.as_ref().map_or("", |i| i.0.as_str()), r.priority))
        .collect();
    let ids_only: Vec<&str> = ids.iter().map(|(i, _)| *i).collect();
    assert_eq!(
        ids_only,
        vec![
            "any#0",
            "b",
            "any#no-route",
            "exact#0@api.test",
            "exact#no-route@api.test",
            "exact#0@*.api.test",
            "exact#no-route@*.api.test",
            "envoy#no-virtual-host"
        ]
    );
    // Exact domains outrank suffix wildcards, which outrank `*`; within a host, file order.
    let p = |id: &str| ids.iter().find(|(i, _)| *i == id).map(|(_, p)| *p).unwrap();
    assert!(p("exact#0@api.test") > p("exact#0@*.api.test"));
    assert!(p("exact#0@*.api.test") > p("any#0"));
    assert!(p("any#0") > p("b") && p("b") > p("any#no-route"));
    assert!(p("any#no-route") > p("envoy#no-virtual-host"));

    let a = &cfg.resources.routes[0];
    // A retry policy gives the route its own copy of the cluster.
    assert_eq!(a.upstream.as_ref().and_then(|u| u.retries), Some(3));
    assert_eq!(a.timeout.map(|t| (t.connect, t.read)), Some((1.5, 2.0)));
    assert_eq!(
        cfg.resources.routes[1].action.answer,
        Some(FixedAnswer::Direct {
            status: 204,
            body: String::new()
        })
    );
    let rewrite = cfg.resources.routes[3]
        .action
        .prefix_rewrite
        .clone()
        .unwrap();
    assert_eq!(
        (rewrite.prefix.as_str(), rewrite.replacement.as_str()),
        ("/", "/x")
    );
    assert_eq!(
        cfg.paths.get("b").map(String::as_str),
        Some(
            "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[1]"
        )
    );
}

#[test]
fn every_structural_error_is_reported_not_just_the_first() {
    let text = FILE.replace("port_value: 8000", "port_value: -1").replace(
        "cluster: c, prefix_rewrite",
        "cluster: gone, prefix_rewrite",
    );
    let errs = parse(&text).unwrap_err();
    let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(fields.len(), 2, "{errs:?}");
    assert!(
        fields[0].ends_with("address.socket_address.port_value"),
        "{fields:?}"
    );
    assert!(
        fields[1].ends_with("virtual_hosts[1].routes[0].route.cluster"),
        "{fields:?}"
    );
}
