//! `static_resources.clusters[]` as upstreams: one upstream per cluster, with the cluster's
//! name as its id.
//!
//! | Envoy | moongate |
//! |---|---|
//! | `type: STATIC` | nodes must be IP addresses |
//! | `type: STRICT_DNS`, `LOGICAL_DNS` | nodes are host names, resolved when the config loads |
//! | `lb_policy: ROUND_ROBIN` (default), `RANDOM` | `roundrobin` (weighted; `RANDOM` gets the same long-run split) |
//! | `LEAST_REQUEST` | `least_conn` |
//! | `RING_HASH`, `MAGLEV` | `chash` on the client address |
//! | `load_balancing_weight` | node weight (default 1) |
//! | `endpoints[].priority` | node priority (Envoy's 0 is the highest, as moongate's largest) |
//! | `connect_timeout` (default 5s) | the connect timeout |
//!
//! Envoy retries nothing unless a route asks: the upstreams get `retries: 0`.

use serde_json::{Map, Value};

use super::tree::{Report, enum_name, index, join};
use crate::config::resource::{BalancerType, HashOn, Id, Node, Nodes, Timeout, Upstream};

/// Envoy's `connect_timeout` when a cluster sets none.
pub const DEFAULT_CONNECT_TIMEOUT: f64 = 5.0;

/// A cluster, as the routes need it.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub upstream: Upstream,
    pub connect_timeout: f64,
}

/// Reads one cluster at `path`.
pub fn read(r: &mut Report, v: &Value, path: &str) -> Option<Cluster> {
    let m = r.obj(v, path)?;
    r.unknown_keys(
        m,
        path,
        &[
            "name",
            "connect_timeout",
            "type",
            "lb_policy",
            "load_assignment",
            "transport_socket",
        ],
    );
    let name = match m.get("name") {
        Some(n) => r.string(n, &join(path, "name"))?.to_string(),
        None => {
            r.error(&join(path, "name"), "a cluster needs a name");
            return None;
        }
    };
    if m.contains_key("transport_socket") {
        r.error(
            &join(path, "transport_socket"),
            "TLS towards upstreams is not supported by moongate's envoy provider yet",
        );
    }
    let connect_timeout = match m.get("connect_timeout") {
        Some(t) => r.duration(t, &join(path, "connect_timeout"))?,
        None => DEFAULT_CONNECT_TIMEOUT,
    };
    let kind_path = join(path, "type");
    let dns = match m.get("type") {
        None => false,
        Some(t) => match enum_name(r.string(t, &kind_path)?).as_str() {
            "STATIC" => false,
            "STRICT_DNS" | "LOGICAL_DNS" => true,
            other => {
                r.error(
                    &kind_path,
                    format!(
                        "cluster type {other} is not supported (STATIC, STRICT_DNS, LOGICAL_DNS)"
                    ),
                );
                return None;
            }
        },
    };
    let lb_path = join(path, "lb_policy");
    let (kind, hash_on, key) = match m.get("lb_policy") {
        None => (BalancerType::Roundrobin, HashOn::Vars, None),
        Some(p) => match enum_name(r.string(p, &lb_path)?).as_str() {
            "ROUND_ROBIN" | "RANDOM" => (BalancerType::Roundrobin, HashOn::Vars, None),
            "LEAST_REQUEST" => (BalancerType::LeastConn, HashOn::Vars, None),
            "RING_HASH" | "MAGLEV" => (
                BalancerType::Chash,
                HashOn::Vars,
                Some("remote_addr".to_string()),
            ),
            other => {
                r.error(
                    &lb_path,
                    format!(
                        "lb_policy {other} is not supported (ROUND_ROBIN, LEAST_REQUEST, RING_HASH, MAGLEV, RANDOM)"
                    ),
                );
                return None;
            }
        },
    };
    let nodes = match m.get("load_assignment") {
        Some(la) => endpoints(r, la, &join(path, "load_assignment"), dns)?,
        None => Vec::new(),
    };
    Some(Cluster {
        upstream: Upstream {
            id: Some(Id(name.clone())),
            name: Some(name),
            kind,
            nodes: Nodes::List(nodes),
            hash_on,
            key,
            retries: Some(0),
            scheme: "http".into(),
            timeout: Some(Timeout {
                connect: connect_timeout,
                send: super::route::DEFAULT_ROUTE_TIMEOUT,
                read: super::route::DEFAULT_ROUTE_TIMEOUT,
            }),
            ..Upstream::default()
        },
        connect_timeout,
    })
}

fn endpoints(r: &mut Report, v: &Value, path: &str, dns: bool) -> Option<Vec<Node>> {
    let m = r.obj(v, path)?;
    r.unknown_keys(m, path, &["cluster_name", "endpoints"]);
    let mut nodes = Vec::new();
    let eps_path = join(path, "endpoints");
    for (i, group) in r.list(m.get("endpoints"), &eps_path).iter().enumerate() {
        let gpath = index(&eps_path, i);
        let Some(g) = r.obj(group, &gpath) else {
            continue;
        };
        r.unknown_keys(g, &gpath, &["lb_endpoints", "priority"]);
        let priority = match g.get("priority") {
            Some(p) => r.uint(p, &join(&gpath, "priority"), 128)? as i32,
            None => 0,
        };
        let lb_path = join(&gpath, "lb_endpoints");
        for (j, ep) in r.list(g.get("lb_endpoints"), &lb_path).iter().enumerate() {
            let epath = index(&lb_path, j);
            if let Some(n) = endpoint(r, ep, &epath, dns) {
                nodes.push(Node {
                    priority: -priority,
                    ..n
                });
            }
        }
    }
    Some(nodes)
}

fn endpoint(r: &mut Report, v: &Value, path: &str, dns: bool) -> Option<Node> {
    let m = r.obj(v, path)?;
    r.unknown_keys(m, path, &["endpoint", "load_balancing_weight"]);
    let weight = match m.get("load_balancing_weight") {
        Some(w) => {
            let wpath = join(path, "load_balancing_weight");
            let w = r.uint(w, &wpath, u32::MAX as u64)? as u32;
            if w == 0 {
                r.error(&wpath, "a weight must be at least 1");
                return None;
            }
            w
        }
        None => 1,
    };
    let epath = join(path, "endpoint");
    let Some(e) = m.get("endpoint") else {
        r.error(&epath, "an lb_endpoint needs an endpoint");
        return None;
    };
    let e = r.obj(e, &epath)?;
    r.unknown_keys(e, &epath, &["address"]);
    let (host, port) = socket_address(r, e.get("address"), &join(&epath, "address"))?;
    if !dns && host.parse::<std::net::IpAddr>().is_err() {
        r.error(
            &join(&epath, "address.socket_address.address"),
            format!("{host:?} is not an IP address; a STATIC cluster needs IP addresses (use STRICT_DNS for names)"),
        );
        return None;
    }
    Some(Node {
        host,
        port: Some(port),
        weight,
        priority: 0,
        metadata: None,
    })
}

/// `address.socket_address: {address, port_value}`.
pub fn socket_address(r: &mut Report, v: Option<&Value>, path: &str) -> Option<(String, u16)> {
    let Some(v) = v else {
        r.error(path, "an address is required");
        return None;
    };
    let m: &Map<String, Value> = r.obj(v, path)?;
    r.unknown_keys(m, path, &["socket_address"]);
    let spath = join(path, "socket_address");
    let Some(sa) = m.get("socket_address") else {
        r.error(&spath, "only socket_address addresses are supported");
        return None;
    };
    let sa = r.obj(sa, &spath)?;
    r.unknown_keys(sa, &spath, &["address", "port_value", "protocol"]);
    if let Some(p) = sa.get("protocol")
        && r.string(p, &join(&spath, "protocol"))
            .map(enum_name)
            .as_deref()
            != Some("TCP")
    {
        r.error(&join(&spath, "protocol"), "only TCP is supported");
        return None;
    }
    let host = match sa.get("address") {
        Some(a) => r.string(a, &join(&spath, "address"))?.to_string(),
        None => {
            r.error(&join(&spath, "address"), "an address is required");
            return None;
        }
    };
    let port = match sa.get("port_value") {
        Some(p) => r.uint(p, &join(&spath, "port_value"), u16::MAX as u64)? as u16,
        None => {
            r.error(&join(&spath, "port_value"), "a port_value is required");
            return None;
        }
    };
    Some((host, port))
}
