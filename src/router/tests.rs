//! Router behaviour, in APISIX's precedence.

use std::borrow::Cow;
use std::net::IpAddr;

use serde_json::json;

use super::*;

struct Req {
    method: &'static str,
    host: &'static str,
    path: &'static str,
    ip: Option<IpAddr>,
    vars: Vec<(&'static str, &'static str)>,
}

fn get(host: &'static str, path: &'static str) -> Req {
    Req {
        method: "GET",
        host,
        path,
        ip: Some("127.0.0.1".parse().unwrap()),
        vars: vec![],
    }
}

impl RequestVars for Req {
    fn method(&self) -> &str {
        self.method
    }
    fn host(&self) -> &str {
        self.host
    }
    fn path(&self) -> &str {
        self.path
    }
    fn remote_addr(&self) -> Option<IpAddr> {
        self.ip
    }
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        self.vars
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| Cow::Borrowed(*v))
    }
}

fn spec(index: usize, uri: &str) -> RouteSpec {
    RouteSpec {
        index,
        id: index.to_string(),
        uris: vec![uri.to_string()],
        ..Default::default()
    }
}

fn router(specs: Vec<RouteSpec>) -> Router {
    Router::build(specs).unwrap_or_else(|e| panic!("{e:?}"))
}

fn hit(r: &Router, req: &Req) -> Option<usize> {
    r.find(req).map(|m| m.index)
}

#[test]
fn exact_path_beats_prefix_whatever_the_priority() {
    let r = router(vec![
        RouteSpec {
            priority: 100,
            ..spec(0, "/a*")
        },
        spec(1, "/a"),
    ]);
    assert_eq!(hit(&r, &get("x", "/a")), Some(1));
    assert_eq!(hit(&r, &get("x", "/ab")), Some(0));
    assert_eq!(hit(&r, &get("x", "/b")), None);
}

#[test]
fn longer_prefix_beats_shorter_and_star_prefix_includes_itself() {
    let r = router(vec![spec(0, "/*"), spec(1, "/api/*"), spec(2, "/api/v1*")]);
    assert_eq!(hit(&r, &get("x", "/api/v1/users")), Some(2));
    assert_eq!(hit(&r, &get("x", "/api/v1")), Some(2));
    assert_eq!(hit(&r, &get("x", "/api/v2")), Some(1));
    assert_eq!(hit(&r, &get("x", "/other")), Some(0));
}

#[test]
fn priority_orders_routes_on_the_same_path_then_table_order() {
    let r = router(vec![
        spec(0, "/p"),
        RouteSpec {
            priority: 5,
            ..spec(1, "/p")
        },
        spec(2, "/p"),
    ]);
    assert_eq!(hit(&r, &get("x", "/p")), Some(1));
    let r = router(vec![spec(0, "/p"), spec(1, "/p")]);
    assert_eq!(hit(&r, &get("x", "/p")), Some(0));
}

#[test]
fn parameters_are_captured_and_must_match_whole_segments() {
    let r = router(vec![spec(0, "/user/:id"), spec(1, "/user/:id/books/:book")]);
    let m = r.find(&get("x", "/user/42")).unwrap();
    assert_eq!(
        (m.index, m.params),
        (0, vec![("id".to_string(), "42".to_string())])
    );
    let m = r.find(&get("x", "/user/42/books/7")).unwrap();
    assert_eq!(m.index, 1);
    assert_eq!(m.params.len(), 2);
    assert_eq!(hit(&r, &get("x", "/user/")), None);
    assert_eq!(hit(&r, &get("x", "/user/42/other")), None);
}

#[test]
fn host_routes_beat_hostless_routes_even_with_shorter_paths() {
    let r = router(vec![
        spec(0, "/api/long/path"),
        RouteSpec {
            hosts: vec!["example.com".into()],
            ..spec(1, "/*")
        },
    ]);
    assert_eq!(hit(&r, &get("example.com", "/api/long/path")), Some(1));
    assert_eq!(hit(&r, &get("other.com", "/api/long/path")), Some(0));
}

#[test]
fn wildcard_hosts_match_subdomains_longest_suffix_first() {
    let r = router(vec![
        RouteSpec {
            hosts: vec!["*.example.com".into()],
            ..spec(0, "/*")
        },
        RouteSpec {
            hosts: vec!["*.api.example.com".into()],
            ..spec(1, "/*")
        },
        RouteSpec {
            hosts: vec!["exact.api.example.com".into()],
            ..spec(2, "/*")
        },
    ]);
    assert_eq!(hit(&r, &get("a.example.com", "/")), Some(0));
    assert_eq!(hit(&r, &get("a.b.example.com", "/")), Some(0));
    assert_eq!(hit(&r, &get("x.api.example.com", "/")), Some(1));
    assert_eq!(hit(&r, &get("exact.api.example.com", "/")), Some(2));
    assert_eq!(hit(&r, &get("example.com", "/")), None);
}

#[test]
fn a_failing_host_route_falls_through_to_a_wider_host_then_to_hostless() {
    let r = router(vec![
        RouteSpec {
            hosts: vec!["a.example.com".into()],
            methods: vec!["POST".into()],
            ..spec(0, "/x")
        },
        RouteSpec {
            hosts: vec!["*.example.com".into()],
            methods: vec!["PUT".into()],
            ..spec(1, "/x")
        },
        spec(2, "/x"),
    ]);
    assert_eq!(
        hit(
            &r,
            &Req {
                method: "POST",
                ..get("a.example.com", "/x")
            }
        ),
        Some(0)
    );
    assert_eq!(
        hit(
            &r,
            &Req {
                method: "PUT",
                ..get("a.example.com", "/x")
            }
        ),
        Some(1)
    );
    assert_eq!(hit(&r, &get("a.example.com", "/x")), Some(2));
}

#[test]
fn filters_fall_through_to_the_next_candidate() {
    let r = router(vec![
        RouteSpec {
            methods: vec!["POST".into()],
            ..spec(0, "/f")
        },
        RouteSpec {
            remote_addrs: vec!["10.0.0.0/8".into()],
            ..spec(1, "/f")
        },
        RouteSpec {
            vars: Some(json!([["arg_k", "==", "v"]])),
            ..spec(2, "/f")
        },
        spec(3, "/f*"),
    ]);
    assert_eq!(
        hit(
            &r,
            &Req {
                method: "POST",
                ..get("x", "/f")
            }
        ),
        Some(0)
    );
    assert_eq!(
        hit(
            &r,
            &Req {
                ip: Some("10.1.1.1".parse().unwrap()),
                ..get("x", "/f")
            }
        ),
        Some(1)
    );
    assert_eq!(
        hit(
            &r,
            &Req {
                vars: vec![("arg_k", "v")],
                ..get("x", "/f")
            }
        ),
        Some(2)
    );
    assert_eq!(hit(&r, &get("x", "/f")), Some(3));
}

#[test]
fn remote_addrs_accept_ipv6_blocks() {
    let r = router(vec![RouteSpec {
        remote_addrs: vec!["2001:db8::/32".into()],
        ..spec(0, "/v6")
    }]);
    assert_eq!(
        hit(
            &r,
            &Req {
                ip: Some("2001:db8::7".parse().unwrap()),
                ..get("x", "/v6")
            }
        ),
        Some(0)
    );
    assert_eq!(
        hit(
            &r,
            &Req {
                ip: Some("2001:db9::7".parse().unwrap()),
                ..get("x", "/v6")
            }
        ),
        None
    );
    assert_eq!(
        hit(
            &r,
            &Req {
                ip: None,
                ..get("x", "/v6")
            }
        ),
        None
    );
}

#[test]
fn several_uris_and_hosts_per_route() {
    let r = router(vec![RouteSpec {
        uris: vec!["/a".into(), "/b*".into()],
        hosts: vec!["one.test".into(), "two.test".into()],
        ..spec(0, "/unused")
    }]);
    assert_eq!(hit(&r, &get("two.test", "/bx")), Some(0));
    assert_eq!(hit(&r, &get("one.test", "/a")), Some(0));
    assert_eq!(hit(&r, &get("three.test", "/a")), None);
}

#[test]
fn invalid_routes_are_all_reported_with_id_and_field() {
    let errs = Router::build(vec![
        RouteSpec {
            methods: vec!["FETCH".into()],
            ..spec(0, "/a")
        },
        RouteSpec {
            remote_addrs: vec!["1.2.3.4/40".into()],
            ..spec(1, "/a")
        },
        RouteSpec {
            vars: Some(json!([["a", "=~", "b"]])),
            ..spec(2, "/a")
        },
        RouteSpec {
            hosts: vec!["bad host".into()],
            ..spec(3, "no-slash")
        },
        RouteSpec {
            uris: vec![],
            ..spec(4, "/")
        },
    ])
    .unwrap_err();
    let got: Vec<(String, &str)> = errs.iter().map(|e| (e.id.clone(), e.field)).collect();
    assert_eq!(
        got,
        vec![
            ("0".into(), "methods"),
            ("1".into(), "remote_addrs"),
            ("2".into(), "vars"),
            ("3".into(), "uri"),
            ("3".into(), "hosts"),
            ("4".into(), "uri"),
        ]
    );
    assert!(
        errs[2].to_string().contains("invalid operator '=~'"),
        "{}",
        errs[2]
    );
}

fn with_hosts(index: usize, uri: &str, hosts: &[&str]) -> RouteSpec {
    RouteSpec {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        ..spec(index, uri)
    }
}

#[test]
fn equal_priorities_on_one_prefix_try_the_longer_configured_uri_first() {
    // Both sit under the literal prefix `/user/`; radixtree orders them by uri length.
    let r = router(vec![spec(0, "/user/:id"), spec(1, "/user/*rest")]);
    let m = r.find(&get("x", "/user/42")).unwrap();
    assert_eq!(
        (m.index, m.params),
        (1, vec![("rest".to_string(), "42".to_string())])
    );
    let r = router(vec![
        RouteSpec {
            priority: 1,
            ..spec(0, "/user/:id")
        },
        spec(1, "/user/*rest"),
    ]);
    assert_eq!(hit(&r, &get("x", "/user/42")), Some(0));
}

#[test]
fn a_param_route_ranks_by_its_literal_prefix_and_falls_through_when_its_segments_miss() {
    let r = router(vec![
        spec(0, "/user/4*"),
        spec(1, "/user/:id"),
        spec(2, "/us*"),
    ]);
    // `/user/4` is longer than the param route's `/user/`.
    assert_eq!(hit(&r, &get("x", "/user/42")), Some(0));
    assert_eq!(hit(&r, &get("x", "/user/7")), Some(1));
    // `/user/7/x` has a segment too many for `:id`: the shorter prefix takes it.
    assert_eq!(hit(&r, &get("x", "/user/7/x")), Some(2));
}

#[test]
fn named_rest_captures_the_remainder_and_bare_star_captures_nothing() {
    let r = router(vec![spec(0, "/files/*path"), spec(1, "/user/:id/*")]);
    let m = r.find(&get("x", "/files/a/b.txt")).unwrap();
    assert_eq!(m.params, vec![("path".to_string(), "a/b.txt".to_string())]);
    let m = r.find(&get("x", "/user/9/anything/else")).unwrap();
    assert_eq!(
        (m.index, m.params),
        (1, vec![("id".to_string(), "9".to_string())])
    );
    assert_eq!(hit(&r, &get("x", "/user/9")), None);
    let r = router(vec![spec(0, "/plain*")]);
    assert!(r.find(&get("x", "/plainly")).unwrap().params.is_empty());
}

#[test]
fn a_colon_inside_a_segment_is_a_plain_prefix_as_in_apisix() {
    let r = router(vec![spec(0, "/v1/models/gemini:generateContent")]);
    assert_eq!(
        hit(&r, &get("x", "/v1/models/gemini:generateContent")),
        Some(0)
    );
    assert_eq!(hit(&r, &get("x", "/v1/models/gemini-pro:stream")), Some(0));
    assert_eq!(hit(&r, &get("x", "/v1/models/other")), None);
}

#[test]
fn catch_all_uri_star_matches_every_path_after_longer_prefixes() {
    let r = router(vec![spec(0, "*"), spec(1, "/a*")]);
    assert_eq!(hit(&r, &get("x", "/zzz")), Some(0));
    assert_eq!(hit(&r, &get("x", "/ab")), Some(1));
}

#[test]
fn host_star_takes_any_host_after_narrower_wildcards_and_before_hostless_routes() {
    let r = router(vec![
        spec(0, "/*"),
        with_hosts(1, "/*", &["*"]),
        with_hosts(2, "/*", &["*.example.com"]),
    ]);
    assert_eq!(hit(&r, &get("a.example.com", "/")), Some(2));
    assert_eq!(hit(&r, &get("other.org", "/")), Some(1));
}

#[test]
fn wildcard_without_a_dot_also_takes_the_bare_suffix_as_apisix_does() {
    let r = router(vec![with_hosts(0, "/*", &["*example.com"])]);
    assert_eq!(hit(&r, &get("example.com", "/")), Some(0));
    assert_eq!(hit(&r, &get("myexample.com", "/")), Some(0));
    assert_eq!(hit(&r, &get("example.org", "/")), None);
}

#[test]
fn config_hosts_match_case_insensitively() {
    let r = router(vec![with_hosts(0, "/", &["API.Example.COM", "*.Test.IO"])]);
    assert_eq!(hit(&r, &get("api.example.com", "/")), Some(0));
    assert_eq!(hit(&r, &get("x.test.io", "/")), Some(0));
}

#[test]
fn exact_host_is_tried_before_a_wildcard_of_the_same_name() {
    let r = router(vec![
        with_hosts(0, "/*", &["*.example.com"]),
        with_hosts(1, "/*", &["www.example.com"]),
    ]);
    assert_eq!(hit(&r, &get("www.example.com", "/")), Some(1));
}

#[test]
fn a_host_route_with_a_shorter_path_beats_a_hostless_exact_path_and_higher_priority() {
    let r = router(vec![
        RouteSpec {
            priority: 100,
            ..spec(0, "/exact")
        },
        with_hosts(1, "/*", &["h.test"]),
    ]);
    assert_eq!(hit(&r, &get("h.test", "/exact")), Some(1));
}

#[test]
fn a_method_outside_apisix_list_fails_routes_that_name_methods() {
    let r = router(vec![
        RouteSpec {
            methods: vec!["GET".into(), "POST".into()],
            ..spec(0, "/m")
        },
        spec(1, "/m*"),
    ]);
    let req = |method| Req {
        method,
        ..get("x", "/m")
    };
    assert_eq!(hit(&r, &req("POST")), Some(0));
    assert_eq!(hit(&r, &req("PROPFIND")), Some(1));
    assert_eq!(hit(&r, &req("get")), Some(1));
}

#[test]
fn vars_read_request_variables_and_fall_through_when_they_fail() {
    let r = router(vec![
        RouteSpec {
            vars: Some(json!([
                "OR",
                ["http_x_canary", "==", "1"],
                ["arg_v", ">=", 2]
            ])),
            ..spec(0, "/api")
        },
        spec(1, "/api"),
    ]);
    let req = |vars| Req {
        vars,
        ..get("x", "/api")
    };
    assert_eq!(hit(&r, &req(vec![("http_x_canary", "1")])), Some(0));
    assert_eq!(hit(&r, &req(vec![("arg_v", "3")])), Some(0));
    assert_eq!(hit(&r, &req(vec![("arg_v", "1")])), Some(1));
    assert_eq!(hit(&r, &req(vec![])), Some(1));
}

#[test]
fn routes_without_params_return_no_params() {
    let r = router(vec![spec(0, "/a"), spec(1, "/b*")]);
    assert!(r.find(&get("x", "/a")).unwrap().params.is_empty());
    assert!(r.find(&get("x", "/bc")).unwrap().params.is_empty());
}

#[test]
fn valid_edge_forms_are_accepted() {
    let ok = Router::build(vec![
        with_hosts(0, "*", &["*"]),
        with_hosts(1, "/a", &["[::1]", "host_1.example-x.com:8080"]),
        RouteSpec {
            remote_addrs: vec!["::1".into(), "fe80::/10".into(), "0.0.0.0/0".into()],
            methods: vec!["PURGE".into(), "CONNECT".into()],
            vars: Some(json!([])),
            ..spec(2, "/b")
        },
    ]);
    assert!(ok.is_ok(), "{:?}", ok.err());
}

#[test]
fn every_bad_field_of_every_route_is_reported() {
    let errs = Router::build(vec![
        RouteSpec {
            uris: vec!["/ok".into(), "relative".into(), "/a/*rest/b".into()],
            hosts: vec!["*".into(), "**.x.com".into(), "".into()],
            methods: vec!["get".into()],
            remote_addrs: vec!["2001:db8::/129".into()],
            vars: Some(json!([["arg_a", "~~", "(unclosed"]])),
            ..spec(0, "/")
        },
        spec(1, "/fine"),
        RouteSpec {
            vars: Some(json!({"arg_a": "1"})),
            ..spec(2, "/x")
        },
    ])
    .unwrap_err();
    let got: Vec<(String, &str)> = errs.iter().map(|e| (e.id.clone(), e.field)).collect();
    assert_eq!(
        got,
        vec![
            ("0".into(), "methods"),
            ("0".into(), "remote_addrs"),
            ("0".into(), "vars"),
            ("0".into(), "uri"),
            ("0".into(), "uri"),
            ("0".into(), "hosts"),
            ("0".into(), "hosts"),
            ("2".into(), "vars"),
        ]
    );
    let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
    assert!(text[0].starts_with("route 0: methods: "), "{}", text[0]);
    assert!(text[2].contains("failed to compile regex"), "{}", text[2]);
    assert!(text[3].contains("\"relative\""), "{}", text[3]);
    assert!(text[4].contains("last segment"), "{}", text[4]);
}

/// Routes drawn from a small pool of paths and hosts, so that they share exact paths, tree
/// nodes and host indexes, and with methods so that candidates of one path fall through.
fn pooled_spec(rng: &mut fastrand::Rng, index: usize) -> RouteSpec {
    const URIS: &[&str] = &[
        "/a", "/a/b", "/a*", "/a/b*", "/ab*", "/abc/:id", "/*", "/x/:p/y", "/x/*rest", "/a/b/c",
    ];
    const HOSTS: &[&str] = &["h1.test", "h2.test", "*.test", "*.h1.test", "*"];
    let mut uris = vec![URIS[rng.usize(..URIS.len())].to_string()];
    if rng.u8(..4) == 0 {
        uris.push(URIS[rng.usize(..URIS.len())].to_string());
    }
    let hosts = match rng.u8(..3) {
        0 => vec![],
        1 => vec![HOSTS[rng.usize(..HOSTS.len())].to_string()],
        _ => vec![
            HOSTS[rng.usize(..HOSTS.len())].to_string(),
            HOSTS[rng.usize(..HOSTS.len())].to_string(),
        ],
    };
    RouteSpec {
        index,
        id: index.to_string(),
        uris,
        hosts,
        methods: if rng.bool() {
            vec!["POST".into()]
        } else {
            vec![]
        },
        priority: rng.i64(0..3),
        ..Default::default()
    }
}

#[test]
fn inserting_and_removing_routes_matches_like_a_fresh_build() {
    let probes: Vec<Req> = [
        ("h1.test", "/a"),
        ("h1.test", "/a/b"),
        ("h1.test", "/abc/7"),
        ("x.h1.test", "/a/b/c"),
        ("h2.test", "/x/1/y"),
        ("other.test", "/x/q/r"),
        ("none", "/ab/z"),
        ("none", "/q"),
        ("h2.test", "/a/b/c/d"),
    ]
    .iter()
    .flat_map(|(h, p)| {
        ["GET", "POST"].into_iter().map(|m| Req {
            method: m,
            ..get(h, p)
        })
    })
    .collect();
    let mut rng = fastrand::Rng::with_seed(11);
    let mut live: Vec<(RouteSpec, RouteRule)> = Vec::new();
    let mut r = Router::default();
    let mut kept: Vec<(Router, Vec<Option<usize>>)> = Vec::new();
    for step in 0..1_500 {
        if !live.is_empty() && rng.u8(..3) == 0 {
            let (_, rule) = live.remove(rng.usize(..live.len()));
            r.remove(&rule);
        } else {
            let spec = pooled_spec(&mut rng, step);
            let rule = RouteRule::compile(&spec, spec.index).unwrap();
            r.insert(&rule);
            live.push((spec, rule));
        }
        let fresh = router(live.iter().map(|(s, _)| s.clone()).collect());
        let want: Vec<Option<usize>> = probes.iter().map(|p| hit(&fresh, p)).collect();
        let got: Vec<Option<usize>> = probes.iter().map(|p| hit(&r, p)).collect();
        assert_eq!(got, want, "step {step}");
        if step % 100 == 0 {
            kept.push((r.clone(), want));
        }
    }
    // Routers cloned earlier still answer as they did: later changes copied what they touched.
    for (old, want) in &kept {
        let got: Vec<Option<usize>> = probes.iter().map(|p| hit(old, p)).collect();
        assert_eq!(&got, want);
    }
    for (_, rule) in live.drain(..) {
        r.remove(&rule);
    }
    assert!(r.any_host.is_empty() && r.by_host.is_empty() && r.by_wildcard.is_empty());
    assert!(r.wildcard_lens.is_empty());
}
