//! The etcd provider's figures on this machine, with a real etcd (Debian's `etcd-server`):
//!
//! - how long `EtcdStore::list` takes for 10,000 and 50,000 routes and for a 6 MiB set
//!   (paged reads pinned to one revision), the median of 5 listings each;
//! - propagation: node A's Admin API write → node B (same etcd) serving the route, p50/p99
//!   over a few hundred writes, with no other route loaded and with 10,000 routes loaded.
//!
//! Run with `cargo bench --bench etcd` (release-like build). Under `cargo test` it does
//! nothing but say so, since figures are never asserted.

#[path = "../tests/support/mod.rs"]
#[allow(unused_imports)]
mod support;

use std::time::{Duration, Instant};

use moongate::config::node::{EtcdConfig, EtcdTls};
use moongate::config::store::etcd::EtcdStore;
use serde_json::json;
use support::*;

fn route(i: usize, prefix: &str) -> (String, String) {
    let v = json!({
        "id": i.to_string(),
        "uri": format!("/bench/{i}/*"),
        "methods": ["GET"],
        "upstream": {"type": "roundrobin", "nodes": {"127.0.0.1:1980": 1}},
        "create_time": 1_700_000_000,
        "update_time": 1_700_000_000,
    });
    (format!("{prefix}/routes/{i}"), v.to_string())
}

fn big_route(i: usize, prefix: &str) -> (String, String) {
    let uris: Vec<String> = (0..20)
        .map(|j| format!("/r{i}/{j}/{}", "x".repeat(90)))
        .collect();
    let v = json!({"id": i.to_string(), "uris": uris, "upstream": {"type": "roundrobin", "nodes": {"127.0.0.1:1980": 1}}});
    (format!("{prefix}/routes/{i}"), v.to_string())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn measure_list(etcd: &Etcd, prefix: &str, label: &str) {
    let cfg = EtcdConfig {
        hosts: vec![etcd.url()],
        prefix: prefix.to_string(),
        timeout: Duration::from_secs(30),
        user: None,
        tls: EtcdTls {
            cert: None,
            key: None,
            verify: true,
            sni: None,
        },
        trusted_ca: None,
    };
    let store = EtcdStore::new(&cfg).expect("etcd store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut times = Vec::new();
    let mut stats = None;
    for _ in 0..5 {
        let t = Instant::now();
        let (_, s) = rt.block_on(store.list_with_stats()).expect("listing");
        times.push(t.elapsed());
        stats = Some(s);
    }
    let s = stats.unwrap();
    println!(
        "list {label}: {} keys, {:.1} MiB in {} pages: median {} (min {}, max {})",
        s.keys,
        s.bytes as f64 / (1 << 20) as f64,
        s.pages,
        ms(median(times.clone())),
        ms(*times.iter().min().unwrap()),
        ms(*times.iter().max().unwrap()),
    );
}

fn measure_propagation(etcd: &Etcd, prefix: &str, loaded: usize, writes: usize) {
    let hosts = [etcd.url()];
    let echo = Echo::start("e");
    let extra = format!("    prefix: {prefix}\n");
    let (a, a_admin) = Gateway::start_etcd("traditional", &hosts, &extra, "", &[]);
    let (b, _) = Gateway::start_etcd("data_plane", &hosts, &extra, "", &[]);
    if loaded > 0 {
        let kvs: Vec<_> = (0..loaded).map(|i| route(i, prefix)).collect();
        etcd.put_many(&kvs);
        let last = format!("/bench/{}/x", loaded - 1);
        wait_until("the loaded routes on B", Duration::from_secs(120), || {
            request(b.port, "GET", &last, &[], b"").status != 404
        });
    }
    let mut lat = Vec::with_capacity(writes);
    let mut put = Vec::with_capacity(writes);
    for i in 0..writes {
        let uri = format!("/prop/{i}");
        let body = json!({"uri": uri, "upstream": {"type": "roundrobin", "nodes": {format!("127.0.0.1:{}", echo.port): 1}}});
        let t = Instant::now();
        let r = admin_call(
            a_admin,
            "PUT",
            &format!("/apisix/admin/routes/p{i}"),
            Some(&body),
        );
        assert_eq!(r.status, 201, "{}", r.body);
        put.push(t.elapsed());
        let end = t + Duration::from_secs(30);
        loop {
            if request(b.port, "GET", &uri, &[], b"").status == 200 {
                break;
            }
            assert!(Instant::now() < end, "route {i} never reached B");
            std::thread::sleep(Duration::from_micros(200));
        }
        lat.push(t.elapsed());
    }
    lat.sort();
    put.sort();
    println!(
        "propagation A write -> B serving, {loaded} routes loaded, {writes} writes: p50 {}, p99 {}, max {} (Admin PUT alone: p50 {}, p99 {})",
        ms(percentile(&lat, 0.5)),
        ms(percentile(&lat, 0.99)),
        ms(*lat.last().unwrap()),
        ms(percentile(&put, 0.5)),
        ms(percentile(&put, 0.99)),
    );
    drop(a);
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("etcd bench: not run under cargo test; run `cargo bench --bench etcd`");
        return;
    }
    let etcd = Etcd::start();
    let kvs: Vec<_> = (0..10_000).map(|i| route(i, "/b10k")).collect();
    etcd.put_many(&kvs);
    measure_list(&etcd, "/b10k", "10,000 routes");
    let kvs: Vec<_> = (0..50_000).map(|i| route(i, "/b50k")).collect();
    etcd.put_many(&kvs);
    measure_list(&etcd, "/b50k", "50,000 routes");
    let kvs: Vec<_> = (0..3_000).map(|i| big_route(i, "/b6m")).collect();
    etcd.put_many(&kvs);
    measure_list(&etcd, "/b6m", "6 MiB set (3,000 routes of 2 KiB)");

    measure_propagation(&etcd, "/p0", 0, 300);
    measure_propagation(&etcd, "/p10k", 10_000, 300);
}
