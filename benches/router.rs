//! Route matching and router building with 10,000 and 50,000 routes (mixed exact, prefix,
//! parameter, exact-host, wildcard-host and `vars` routes), and what one config change costs:
//! the router's remove + insert of one route, and the whole incremental snapshot step (one
//! route changed through the snapshot builder, the new snapshot made). Run with
//! `cargo bench --bench router`.

use std::borrow::Cow;
use std::hint::black_box;
use std::net::IpAddr;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use moongate::config::snapshot::{Builder, Change, Item};
use moongate::router::{RequestVars, RouteRule, RouteSpec, Router};

struct Req {
    host: String,
    path: String,
}

impl RequestVars for Req {
    fn method(&self) -> &str {
        "GET"
    }
    fn host(&self) -> &str {
        &self.host
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn remote_addr(&self) -> Option<IpAddr> {
        Some(IpAddr::from([127, 0, 0, 1]))
    }
    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        (name == "arg_v").then_some(Cow::Borrowed("3"))
    }
}

/// Route `i` is one of six shapes; `probe(i)` is a request it matches.
fn spec(i: usize) -> RouteSpec {
    let mut vars = None;
    let (uri, hosts) = match i % 6 {
        0 => (format!("/api/v1/svc{i}/items"), vec![]),
        1 => (format!("/static/app{i}/*"), vec![]),
        2 => (format!("/users{i}/:id/profile"), vec![]),
        3 => (format!("/host{i}/*"), vec![format!("h{i}.example.com")]),
        4 => ("/svc/*".to_string(), vec![format!("*.w{i}.example.com")]),
        _ => {
            vars = Some(serde_json::json!([["arg_v", ">=", 2]]));
            (format!("/canary{i}"), vec![])
        }
    };
    RouteSpec {
        index: i,
        id: i.to_string(),
        uris: vec![uri],
        hosts,
        methods: vec!["GET".into()],
        vars,
        ..Default::default()
    }
}

fn probe(i: usize) -> Req {
    let (host, path) = match i % 6 {
        0 => ("any.test".to_string(), format!("/api/v1/svc{i}/items")),
        1 => ("any.test".to_string(), format!("/static/app{i}/js/main.js")),
        2 => ("any.test".to_string(), format!("/users{i}/42/profile")),
        3 => (format!("h{i}.example.com"), format!("/host{i}/x")),
        4 => (format!("a.b.w{i}.example.com"), "/svc/orders/7".to_string()),
        _ => ("any.test".to_string(), format!("/canary{i}")),
    };
    Req { host, path }
}

fn bench(c: &mut Criterion) {
    for n in [10_000usize, 50_000] {
        let specs: Vec<RouteSpec> = (0..n).map(spec).collect();
        c.bench_with_input(BenchmarkId::new("build", n), &specs, |b, specs| {
            b.iter(|| Router::build(black_box(specs.clone())).expect("valid routes"))
        });
        let router = Router::build(specs).expect("valid routes");
        // Probes spread over the table, cycling through the six shapes: `stride` is a multiple of
        // six, so probe `k` has shape `k % 6`.
        let stride = n / 1002 / 6 * 6;
        let probes: Vec<Req> = (0..1002).map(|k| probe(k * stride + k % 6)).collect();
        for p in &probes {
            assert!(router.find(p).is_some(), "{} {}", p.host, p.path);
        }
        let mut k = 0;
        c.bench_function(&format!("find/{n}"), |b| {
            b.iter(|| {
                k = (k + 1) % probes.len();
                black_box(router.find(black_box(&probes[k])))
            })
        });
        let miss = Req {
            host: "none.test".into(),
            path: "/nothing/here".into(),
        };
        c.bench_function(&format!("miss/{n}"), |b| {
            b.iter(|| black_box(router.find(black_box(&miss))))
        });

        // One change on a router other snapshots still hold: remove a route, insert its new
        // version (a new uri), on a clone, as the snapshot builder does.
        let rules: Vec<RouteRule> = (0..n)
            .map(|i| RouteRule::compile(&spec(i), i).expect("valid"))
            .collect();
        let changed: Vec<RouteRule> = (0..n)
            .map(|i| {
                let mut s = spec(i);
                s.uris = vec![format!("/changed/{i}")];
                RouteRule::compile(&s, i).expect("valid")
            })
            .collect();
        let mut k = 0;
        c.bench_function(&format!("change/{n}"), |b| {
            b.iter(|| {
                k = (k + 7919) % n;
                let mut next = router.clone();
                next.remove(&rules[k]);
                next.insert(&changed[k]);
                black_box(next)
            })
        });

        // The whole incremental step: one route (with its own upstream) changed through the
        // snapshot builder holding n routes, and the next snapshot made.
        let route = |i: usize, v: usize| {
            Item::parse(
                "routes",
                &serde_json::json!({
                    "id": format!("r{i}"),
                    "uri": format!("/r/{i}/{v}"),
                    "upstream": {"nodes": {"127.0.0.1:1980": 1}},
                }),
            )
            .expect("valid route")
        };
        let catalog = std::sync::Arc::new(moongate::plugin::Catalog::empty());
        let resolver = moongate::upstream::SystemResolver;
        let mut builder = Builder::new();
        let all = (0..n).map(|i| Change::Put(route(i, 0), 1)).collect();
        builder.apply(all, 1, &resolver, &catalog);
        let mut version = 1u64;
        c.bench_function(&format!("snapshot_change/{n}"), |b| {
            b.iter(|| {
                version += 1;
                let i = (version as usize * 7919) % n;
                let applied = builder.apply(
                    vec![Change::Put(route(i, version as usize), version)],
                    version,
                    &resolver,
                    &catalog,
                );
                assert_eq!(applied.routes_compiled, 1);
                black_box(builder.snapshot(version))
            })
        });
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
