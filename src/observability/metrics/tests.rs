use std::sync::Arc;
use std::time::Duration;

use super::store::{FamilyDef, Kind, MetricError, Registry};
use super::text::render;

fn def(name: &str, kind: Kind, labels: &[&str], buckets: &[f64]) -> FamilyDef {
    FamilyDef {
        name: name.into(),
        help: format!("help of {name}"),
        kind,
        labels: labels.iter().map(|s| s.to_string()).collect(),
        buckets: buckets.to_vec(),
        exptime: None,
    }
}

#[test]
fn threads_adding_to_one_series_sum_to_one_total() {
    let reg = Arc::new(Registry::default());
    let ns = reg.namespace("m", 1 << 20);
    let fam = ns
        .register(def("hits_total", Kind::Counter, &["route"], &[]))
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let reg = reg.clone();
            std::thread::spawn(move || {
                // Each thread registers the family again, as each worker does.
                let ns = reg.namespace("m", 1 << 20);
                let f = ns
                    .register(def("hits_total", Kind::Counter, &["route"], &[]))
                    .unwrap();
                let s = f.series(&["1"]).unwrap();
                for _ in 0..10_000 {
                    assert!(s.add(1.0));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(fam.series(&["1"]).unwrap().value(), 40_000.0);
    assert!(render(&ns).contains("hits_total{route=\"1\"} 40000\n"));
}

#[test]
fn histogram_buckets_are_cumulative_with_inf_sum_and_count() {
    let ns = Registry::default().namespace("m", 1 << 20);
    let f = ns
        .register(def("lat", Kind::Histogram, &["type"], &[1.0, 5.0, 10.0]))
        .unwrap();
    let s = f.series(&["request"]).unwrap();
    for v in [0.5, 1.0, 3.0, 7.0, 100.0] {
        s.observe(v);
    }
    let text = render(&ns);
    let want = "# HELP lat help of lat\n# TYPE lat histogram\n\
lat_bucket{type=\"request\",le=\"1\"} 2\n\
lat_bucket{type=\"request\",le=\"5\"} 3\n\
lat_bucket{type=\"request\",le=\"10\"} 4\n\
lat_bucket{type=\"request\",le=\"+Inf\"} 5\n\
lat_sum{type=\"request\"} 111.5\n\
lat_count{type=\"request\"} 5\n";
    assert_eq!(text, want);
}

#[test]
fn label_values_are_escaped_and_control_characters_dropped() {
    let ns = Registry::default().namespace("m", 1 << 20);
    let f = ns
        .register(def("g", Kind::Gauge, &["a", "b"], &[]))
        .unwrap();
    f.series(&["say \"hi\" \\o/", "line\nbreak\u{1}"])
        .unwrap()
        .set(0.25);
    assert!(
        render(&ns).contains("g{a=\"say \\\"hi\\\" \\\\o/\",b=\"linebreak\"} 0.25\n"),
        "{}",
        render(&ns)
    );
}

#[test]
fn a_deleted_series_refuses_writes_so_holders_look_it_up_again() {
    let ns = Registry::default().namespace("m", 1 << 20);
    let f = ns.register(def("c", Kind::Counter, &["x"], &[])).unwrap();
    let held = f.series(&["1"]).unwrap();
    assert!(held.add(2.0));
    assert!(f.del(&["1"]).unwrap());
    assert!(!held.add(1.0));
    let fresh = f.series(&["1"]).unwrap();
    assert!(fresh.add(1.0));
    assert_eq!(fresh.value(), 1.0);
    f.reset();
    assert!(!fresh.add(1.0));
    assert_eq!(render(&ns), "");
}

#[test]
fn registering_a_name_again_with_other_labels_is_refused() {
    let ns = Registry::default().namespace("m", 1 << 20);
    ns.register(def("c", Kind::Counter, &["x"], &[])).unwrap();
    assert!(ns.register(def("c", Kind::Counter, &["x"], &[])).is_ok());
    assert_eq!(
        ns.register(def("c", Kind::Counter, &["y"], &[]))
            .unwrap_err(),
        MetricError::Conflict("c".into())
    );
    assert!(matches!(
        ns.register(def("c", Kind::Gauge, &["x"], &[])),
        Err(MetricError::Conflict(_))
    ));
    assert!(matches!(
        ns.register(def("1bad", Kind::Gauge, &[], &[])),
        Err(MetricError::InvalidName(_))
    ));
    assert!(matches!(
        ns.register(def("h", Kind::Histogram, &["le"], &[1.0])),
        Err(MetricError::ReservedLe(_))
    ));
    assert!(matches!(
        ns.register(def("h", Kind::Histogram, &[], &[2.0, 1.0])),
        Err(MetricError::InvalidBuckets(_))
    ));
    let f = ns.family("c").unwrap();
    assert!(matches!(
        f.series(&["a", "b"]),
        Err(MetricError::LabelCount {
            expected: 1,
            got: 2,
            ..
        })
    ));
}

#[test]
fn a_full_namespace_refuses_new_series_and_keeps_old_ones() {
    let ns = Registry::default().namespace("small", 600);
    let f = ns.register(def("c", Kind::Counter, &["id"], &[])).unwrap();
    let mut made = 0;
    let mut refused = None;
    for i in 0..100 {
        match f.series(&[i.to_string()]) {
            Ok(s) => {
                s.add(1.0);
                made += 1;
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(made >= 2, "{made}");
    assert!(matches!(refused, Some(MetricError::Full { .. })));
    // What was recorded before is still there, and deleting one makes room again.
    assert_eq!(f.series(&["0"]).unwrap().value(), 1.0);
    f.del(&["0"]).unwrap();
    assert!(f.series(&["new"]).is_ok());
}

#[test]
fn series_not_written_within_the_expiry_disappear() {
    let ns = Registry::default().namespace("m", 1 << 20);
    let mut d = def("c", Kind::Counter, &["x"], &[]);
    d.exptime = Some(Duration::from_millis(50));
    let f = ns.register(d).unwrap();
    let old = f.series(&["old"]).unwrap();
    old.add(1.0);
    std::thread::sleep(Duration::from_millis(80));
    f.series(&["new"]).unwrap().add(1.0);
    let text = render(&ns);
    assert!(text.contains("c{x=\"new\"} 1"), "{text}");
    assert!(!text.contains("old"), "{text}");
    assert!(!old.add(1.0));
}

#[test]
fn numbers_are_written_as_prometheus_reads_them() {
    let mut s = String::new();
    for v in [1.0, 0.005, -3.0, f64::INFINITY, 1e20, 2.5e-7] {
        super::text::push_number(&mut s, v);
        s.push(' ');
    }
    assert_eq!(s, "1 0.005 -3 +Inf 1e20 2.5e-7 ");
}
