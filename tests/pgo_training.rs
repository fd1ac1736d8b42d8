//! The profile-guided build's training run (bench/pgo_train.py, run by scripts/build-pgo.sh)
//! against the binary under test, briefly: every workload must still answer as it means to (all
//! 2xx, or all refused), over HTTP/1.1, TLS and HTTP/2. A route, plugin or configuration change
//! that breaks a workload fails here instead of silently training the wrong path.

mod support;

use std::process::Command;

#[test]
fn the_training_workloads_answer_as_they_mean_to() {
    let root = env!("CARGO_MANIFEST_DIR");
    // The backend is Debian's nginx (bench/bench.py finds it on PATH or in /usr/sbin).
    assert!(
        std::path::Path::new("/usr/sbin/nginx").exists(),
        "nginx is missing: scripts/lib/deps.sh installs it"
    );
    for tool in ["python3", "wrk", "h2load", "openssl"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        assert!(
            found,
            "{tool} is missing: scripts/lib/deps.sh installs it (h2load: nghttp2-client)"
        );
    }
    let out = Command::new("python3")
        .arg(format!("{root}/bench/pgo_train.py"))
        .args([
            "--moongate",
            support::BIN,
            "--seconds",
            "1",
            "--h2-requests",
            "500",
        ])
        .output()
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "training run failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Every workload ran: ten per scheme over HTTP/1.1 and TLS, four over HTTP/2.
    assert_eq!(stdout.matches("  wrk ").count(), 20, "{stdout}");
    assert_eq!(stdout.matches("  h2load ").count(), 4, "{stdout}");
    assert_eq!(stdout.matches("500 of 500 2xx").count(), 4, "{stdout}");
}
