//! Test harness: the real `moongate` binary on loopback ports, real backends, raw sockets.
//!
//! Every wait is bounded; every process started here is killed on drop.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod redis;

pub const BIN: &str = env!("CARGO_BIN_EXE_moongate");

/// A port nothing listens on right now, and never handed out before in this test process: the
/// kernel may give a port just released to the next `bind(0)`, so two tests running in parallel
/// could otherwise be handed the same port before either listens on it.
pub fn free_port() -> u16 {
    static HANDED: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed = HANDED.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        if !handed.contains(&port) {
            handed.push(port);
            return port;
        }
    }
}

/// A fresh scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "moongate-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("conf")).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.0.as_os_str().is_empty() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().unwrap(),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// A running gateway.
pub struct Gateway {
    pub child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
}

/// `config.yaml` with the given port and one worker, plus `extra` YAML merged under the
/// top-level keys it names (`nginx_config:` lines go under nginx_config, etc.).
pub fn config_yaml(port: u16, http: &str) -> String {
    format!(
        "apisix:\n  node_listen:\n    - ip: 127.0.0.1\n      port: {port}\n  enable_ipv6: false\n  enable_control: false\n  ssl:\n    enable: false\nnginx_config:\n  worker_processes: 1\n  worker_shutdown_timeout: 5s\n  error_log_level: info\n  http:\n    access_log: logs/access.log\n{http}deployment:\n  role: data_plane\n  role_data_plane:\n    config_provider: yaml\n{NO_EXPORT}"
    )
}

/// The prometheus export listener (127.0.0.1:9091 by default, opened whenever the plugin is
/// enabled, as in APISIX) is off in the test configs, as the control API is: tests run in
/// parallel and a fixed port would collide. Tests that want it set it in [`plugin_attr`].
pub const NO_EXPORT: &str = "plugin_attr:\n  prometheus:\n    enable_export_server: false\n";

/// `config` (made by the helpers above, which end with a `plugin_attr:` section) with `lines`
/// (indented by two spaces) added under `plugin_attr:`.
pub fn plugin_attr(config: &str, lines: &str) -> String {
    config.replacen("plugin_attr:\n", &format!("plugin_attr:\n{lines}"), 1)
}

/// `config.yaml` for a `traditional` node on the embedded store, its Admin API on
/// `admin_port` with one admin key `ADMIN_KEY` and one viewer key `VIEWER_KEY`.
pub fn embedded_config_yaml(port: u16, admin_port: u16, extra_admin: &str) -> String {
    format!(
        "apisix:\n  node_listen:\n    - ip: 127.0.0.1\n      port: {port}\n  enable_ipv6: false\n  enable_control: false\n  ssl:\n    enable: false\nnginx_config:\n  worker_processes: 1\n  worker_shutdown_timeout: 5s\n  error_log_level: info\n  http:\n    access_log: logs/access.log\ndeployment:\n  role: traditional\n  role_traditional:\n    config_provider: embedded\n  admin:\n    admin_listen:\n      ip: 127.0.0.1\n      port: {admin_port}\n    admin_key:\n      - name: admin\n        key: {ADMIN_KEY}\n        role: admin\n      - name: viewer\n        key: {VIEWER_KEY}\n        role: viewer\n{extra_admin}{NO_EXPORT}"
    )
}

/// `config.yaml` for a node on etcd; see [`Gateway::start_etcd`].
pub fn etcd_config_yaml(
    port: u16,
    admin_port: u16,
    role: &str,
    hosts: &[String],
    etcd_extra: &str,
    top_extra: &str,
) -> String {
    let hosts: String = hosts.iter().map(|h| format!("      - \"{h}\"\n")).collect();
    // An `apisix:` section in `top_extra` joins the one written here (YAML keeps one of two).
    let (apisix_extra, top_extra) = match top_extra.strip_prefix("apisix:\n") {
        Some(rest) => {
            let end = rest
                .find(|c: char| c != ' ')
                .and(rest.lines().position(|l| !l.starts_with(' ')))
                .map_or(rest.len(), |n| {
                    rest.lines().take(n).map(|l| l.len() + 1).sum::<usize>()
                });
            (&rest[..end], &rest[end..])
        }
        None => ("", top_extra),
    };
    // TLS listeners are off in tests; an `ssl:` section in `apisix_extra` joins this one.
    let ssl = format!(
        "  ssl:\n    enable: false\n{}",
        apisix_extra
            .strip_prefix("  ssl:\n")
            .unwrap_or(apisix_extra)
    );
    let admin = if role == "data_plane" {
        String::new()
    } else {
        format!(
            "  admin:\n    admin_listen:\n      ip: 127.0.0.1\n      port: {admin_port}\n    admin_key:\n      - name: admin\n        key: {ADMIN_KEY}\n        role: admin\n"
        )
    };
    format!(
        "apisix:\n  node_listen:\n    - ip: 127.0.0.1\n      port: {port}\n  enable_ipv6: false\n  enable_control: false\n{ssl}nginx_config:\n  worker_processes: 1\n  worker_shutdown_timeout: 5s\n  error_log_level: info\n  http:\n    access_log: logs/access.log\n{top_extra}deployment:\n  role: {role}\n  role_{role}:\n    config_provider: etcd\n{admin}  etcd:\n    host:\n{hosts}    timeout: 5\n{etcd_extra}{NO_EXPORT}"
    )
}

/// One Admin API call with the admin key.
pub fn admin_call(port: u16, method: &str, path: &str, body: Option<&serde_json::Value>) -> Resp {
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    request(
        port,
        method,
        path,
        &[
            ("Content-Type", "application/json"),
            ("X-API-KEY", ADMIN_KEY),
        ],
        bytes.as_bytes(),
    )
}

/// A real etcd server (Debian's `etcd-server`) on free loopback ports with its own data
/// directory, killed on drop. Its data survives [`Etcd::kill`] and [`Etcd::restart`].
pub struct Etcd {
    child: Option<Child>,
    pub port: u16,
    peer_port: u16,
    pub dir: TempDir,
    /// Set by [`Etcd::start_tls`]: the certificates etcd and its clients use.
    pub certs: Option<EtcdCerts>,
    /// `user:password` for etcdctl once authentication is enabled.
    user: Option<String>,
}

/// PEM texts for a TLS etcd: a CA, etcd's certificate (for the name `etcd.test` only, so a
/// client must send that name) and a client certificate.
pub struct EtcdCerts {
    pub ca: String,
    pub server: String,
    pub server_key: String,
    pub client: String,
    pub client_key: String,
}

impl EtcdCerts {
    pub fn generate() -> EtcdCerts {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair,
        };
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "moongate etcd test CA");
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
        let leaf = |name: &str, usage: ExtendedKeyUsagePurpose| {
            let mut p = CertificateParams::new(vec![name.to_string()]).unwrap();
            p.distinguished_name.push(DnType::CommonName, name);
            p.extended_key_usages = vec![usage];
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &ca).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let (server, server_key) = leaf("etcd.test", ExtendedKeyUsagePurpose::ServerAuth);
        let (client, client_key) = leaf("moongate", ExtendedKeyUsagePurpose::ClientAuth);
        EtcdCerts {
            ca: ca.pem(),
            server,
            server_key,
            client,
            client_key,
        }
    }
}

/// Fails the test (never skips it) when a binary the etcd tests need is missing.
fn need_binary(name: &str, package: &str) {
    match Command::new(name)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(_) => {}
        Err(e) => panic!(
            "the etcd tests need the `{name}` binary ({e}): install Debian's {package} package (scripts/lib/deps.sh installs it)"
        ),
    }
}

impl Etcd {
    /// Starts etcd and waits until it answers.
    pub fn start() -> Etcd {
        Etcd::launch(None)
    }

    /// Starts etcd on `https://` with [`EtcdCerts`], requiring client certificates, with
    /// etcd's authentication on and one user `root` whose password is `password`.
    pub fn start_tls(password: &str) -> Etcd {
        let mut e = Etcd::launch(Some(EtcdCerts::generate()));
        e.ctl(&["user", "add", &format!("root:{password}")]);
        e.ctl(&["auth", "enable"]);
        e.user = Some(format!("root:{password}"));
        e
    }

    fn launch(certs: Option<EtcdCerts>) -> Etcd {
        need_binary("etcd", "etcd-server");
        need_binary("etcdctl", "etcd-client");
        let mut e = Etcd {
            child: None,
            port: free_port(),
            peer_port: free_port(),
            dir: TempDir::new("etcd"),
            certs,
            user: None,
        };
        if let Some(c) = &e.certs {
            for (name, text) in [
                ("ca.pem", &c.ca),
                ("server.pem", &c.server),
                ("server-key.pem", &c.server_key),
                ("client.pem", &c.client),
                ("client-key.pem", &c.client_key),
            ] {
                std::fs::write(e.dir.0.join(name), text).unwrap();
            }
        }
        e.spawn();
        e
    }

    pub fn url(&self) -> String {
        let scheme = if self.certs.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// etcdctl's connection flags (TLS files, user) for this etcd.
    fn ctl_command(&self) -> Command {
        let mut c = Command::new("etcdctl");
        c.env("ETCDCTL_API", "3").args(["--endpoints", &self.url()]);
        if self.certs.is_some() {
            let f = |n: &str| self.dir.0.join(n).display().to_string();
            c.args(["--cacert", &f("ca.pem")])
                .args(["--cert", &f("client.pem")])
                .args(["--key", &f("client-key.pem")])
                .arg("--insecure-skip-tls-verify");
        }
        if let Some(u) = &self.user {
            c.args(["--user", u]);
        }
        c
    }

    fn spawn(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join("etcd.log"))
            .unwrap();
        let mut cmd = Command::new("etcd");
        cmd.arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.0.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("test={peer}")]);
        if self.certs.is_some() {
            cmd.arg("--cert-file")
                .arg(self.dir.0.join("server.pem"))
                .arg("--key-file")
                .arg(self.dir.0.join("server-key.pem"))
                .arg("--trusted-ca-file")
                .arg(self.dir.0.join("ca.pem"))
                .arg("--client-cert-auth");
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start etcd: {e}"));
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = self
                .ctl_command()
                .args(["--dial-timeout", "1s", "get", "/moongate-test-ready"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("etcd exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < end, "etcd did not answer: {}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("etcd.log")).unwrap_or_default()
    }

    /// Kills etcd (SIGKILL) and waits for it to be gone.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts etcd again on the same ports and data.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Runs `etcdctl` against this etcd; panics when it fails. Returns its stdout.
    pub fn ctl(&self, args: &[&str]) -> String {
        let out = self
            .ctl_command()
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run etcdctl: {e}"));
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The cluster's current revision.
    pub fn revision(&self) -> i64 {
        let out = self.ctl(&["get", "/moongate-test-revision", "-w", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["header"]["revision"].as_i64().unwrap()
    }

    /// Writes many keys quickly, 100 per transaction, with the etcd client library (etcdctl
    /// would take one process per key).
    pub fn put_many(&self, kvs: &[(String, String)]) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut c = etcd_client::Client::connect([self.url()], None)
                .await
                .unwrap();
            for chunk in kvs.chunks(100) {
                let ops: Vec<etcd_client::TxnOp> = chunk
                    .iter()
                    .map(|(k, v)| etcd_client::TxnOp::put(k.as_str(), v.as_str(), None))
                    .collect();
                c.txn(etcd_client::Txn::new().and_then(ops)).await.unwrap();
            }
        });
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
    }
}

pub const ADMIN_KEY: &str = "edd1c9f034335f136f87ad84b625c8f1";
pub const VIEWER_KEY: &str = "4054f7cf07e344346cd3f287985e76a2";

impl Gateway {
    /// Starts a `traditional` node on the embedded store with its Admin API; `seed` is
    /// written as `conf/apisix.yaml` when given. Returns the gateway and the admin port.
    pub fn start_embedded(extra_admin: &str, seed: Option<&str>) -> (Gateway, u16) {
        Gateway::start_embedded_with_files(extra_admin, seed, &[])
    }

    /// [`Gateway::start_embedded`] with extra files (plugins) written under the prefix first.
    pub fn start_embedded_with_files(
        extra_admin: &str,
        seed: Option<&str>,
        files: &[(&str, &str)],
    ) -> (Gateway, u16) {
        let port = free_port();
        let admin_port = free_port();
        let config = embedded_config_yaml(port, admin_port, extra_admin);
        let gw = Gateway::start_in(TempDir::new("gw"), &config, port, seed, files);
        wait_until("admin port", Duration::from_secs(10), || {
            port_open(admin_port)
        });
        (gw, admin_port)
    }

    /// Starts again in the same prefix (after a stop or a kill).
    pub fn restart(self) -> Gateway {
        let mut me = self;
        if let Some(mut c) = me.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let dir = std::mem::replace(&mut me.dir, TempDir(PathBuf::new()));
        let port = me.port;
        drop(me);
        Gateway::spawn_in(dir, port)
    }

    /// Starts with `config` as `conf/config.yaml` in `dir`, `routes` as `conf/apisix.yaml` and
    /// `files` under the prefix.
    pub fn start_in(
        dir: TempDir,
        config: &str,
        port: u16,
        routes: Option<&str>,
        files: &[(&str, &str)],
    ) -> Gateway {
        for (rel, text) in files {
            let p = dir.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::write(dir.0.join("conf/config.yaml"), config).unwrap();
        if let Some(r) = routes {
            std::fs::write(dir.0.join("conf/apisix.yaml"), r).unwrap();
        }
        Gateway::spawn_in(dir, port)
    }

    /// Starts a node on etcd (`deployment.role` `role`, `config_provider: etcd`) with its
    /// data port, an Admin API port (used by `traditional` and `control_plane`), `hosts` as
    /// `deployment.etcd.host`, `etcd_extra` lines under `deployment.etcd` (indented 4 spaces),
    /// `top_extra` top-level YAML (`plugins:` …; an `apisix:` section first in it is merged
    /// into the node's) and `files` under the prefix. Waits for the
    /// data port, or the Admin API port on a `control_plane` node (it has no data port).
    pub fn start_etcd(
        role: &str,
        hosts: &[String],
        etcd_extra: &str,
        top_extra: &str,
        files: &[(&str, &str)],
    ) -> (Gateway, u16) {
        let port = free_port();
        let admin_port = free_port();
        let config = etcd_config_yaml(port, admin_port, role, hosts, etcd_extra, top_extra);
        let dir = TempDir::new("gw");
        for (rel, text) in files {
            let p = dir.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::write(dir.0.join("conf/config.yaml"), config).unwrap();
        let wait = if role == "control_plane" {
            admin_port
        } else {
            port
        };
        let gw = Gateway::spawn_waiting(dir, port, wait);
        if role != "data_plane" {
            wait_until("admin port", Duration::from_secs(10), || {
                port_open(admin_port)
            });
        }
        (gw, admin_port)
    }

    fn spawn_in(dir: TempDir, port: u16) -> Gateway {
        Gateway::spawn_waiting(dir, port, port)
    }

    /// Spawns the binary in `dir`; the gateway's port is `port`, and start-up is done when
    /// `wait_port` accepts connections.
    fn spawn_waiting(dir: TempDir, port: u16, wait_port: u16) -> Gateway {
        let child = Command::new(BIN)
            .args(["run", "-p"])
            .arg(&dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(dir.0.join("stderr.log"))
                    .unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut gw = Gateway {
            child: Some(child),
            port,
            dir,
        };
        let end = Instant::now() + Duration::from_secs(15);
        while !port_open(wait_port) {
            if let Some(status) = gw.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("moongate exited with {status}: {}", gw.stderr());
            }
            if Instant::now() > end {
                panic!(
                    "moongate did not open port {wait_port}: {}\n{}",
                    gw.stderr(),
                    gw.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        gw
    }

    /// Starts with `http` extra lines under `nginx_config.http` (each indented by 4 spaces).
    pub fn start(http: &str, routes: &str) -> Gateway {
        let port = free_port();
        Gateway::start_with_config(&config_yaml(port, http), port, routes)
    }

    pub fn start_with_config(config: &str, port: u16, routes: &str) -> Gateway {
        Gateway::start_with_files(config, port, routes, &[])
    }

    /// Starts with extra files written under the prefix first, e.g.
    /// `("lua/plugins/x.lua", source)`.
    pub fn start_with_files(
        config: &str,
        port: u16,
        routes: &str,
        files: &[(&str, &str)],
    ) -> Gateway {
        Gateway::start_with_files_env(config, port, routes, files, &[])
    }

    /// [`Gateway::start_with_files`] with extra environment variables for the gateway.
    pub fn start_with_files_env(
        config: &str,
        port: u16,
        routes: &str,
        files: &[(&str, &str)],
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = TempDir::new("gw");
        for (rel, text) in files {
            let p = dir.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        std::fs::write(dir.0.join("conf/config.yaml"), config).unwrap();
        std::fs::write(dir.0.join("conf/apisix.yaml"), routes).unwrap();
        let child = Command::new(BIN)
            .args(["run", "-p"])
            .arg(&dir.0)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.0.join("stderr.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let mut gw = Gateway {
            child: Some(child),
            port,
            dir,
        };
        let end = Instant::now() + Duration::from_secs(15);
        while !port_open(port) {
            if let Some(status) = gw.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("moongate exited with {status}: {}", gw.stderr());
            }
            if Instant::now() > end {
                panic!(
                    "moongate did not open port {port}: {}\n{}",
                    gw.stderr(),
                    gw.error_log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        gw
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("stderr.log")).unwrap_or_default()
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("logs/error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("logs/access.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Replaces the route file atomically (write then rename), as a deploy tool would.
    pub fn write_routes(&self, yaml: &str) {
        let tmp = self.dir.0.join("conf/apisix.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(&tmp, self.dir.0.join("conf/apisix.yaml")).unwrap();
    }

    pub fn get(&self, path: &str) -> Resp {
        request(self.port, "GET", path, &[], b"")
    }

    /// Waits for the process to exit (bounded) and returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let end = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s.code();
            }
            if Instant::now() > end {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A `moongate echo` backend.
pub struct Echo {
    child: Child,
    pub port: u16,
}

impl Echo {
    pub fn start(name: &str) -> Echo {
        let port = free_port();
        let child = Command::new(BIN)
            .args([
                "echo",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--name",
                name,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_until("echo backend", Duration::from_secs(10), || port_open(port));
        Echo { child, port }
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Listens on a free loopback port and hands every connection it accepts to `handle`, on a
/// thread of its own: the skeleton of the tests' raw servers. Returns the port.
pub fn serve_each<F>(handle: F) -> u16
where
    F: Fn(TcpStream) + Send + Sync + 'static,
{
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let handle = Arc::new(handle);
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            let h = handle.clone();
            std::thread::spawn(move || h(c));
        }
    });
    port
}

/// A raw backend that records the bytes of every connection and answers `200 ok` to each read.
pub struct Recorder {
    pub port: u16,
    pub seen: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    pub fn start() -> Recorder {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let port = serve_each(move |mut c| {
            let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = [0u8; 65536];
            while let Ok(n) = c.read(&mut buf) {
                if n == 0 {
                    break;
                }
                s.lock().unwrap().extend_from_slice(&buf[..n]);
                if c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
                {
                    break;
                }
            }
        });
        Recorder { port, seen }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.seen.lock().unwrap()).into_owned()
    }
}

/// A backend that accepts connections and never answers.
pub fn silent_backend() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in l.incoming().flatten() {
            held.push(c);
        }
    });
    port
}

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The echo backend's JSON body.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// One HTTP/1.1 request on a new connection (`Connection: close`).
pub fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str("Host: localhost\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let raw = raw(port, &bytes, Duration::from_secs(10));
    parse_responses(&raw)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&raw)))
}

/// GETs each of `paths` on its own connection and thread, all at once; the answers in the
/// order of `paths`.
pub fn get_concurrently(port: u16, paths: Vec<String>) -> Vec<Resp> {
    let handles: Vec<_> = paths
        .into_iter()
        .map(|p| std::thread::spawn(move || request(port, "GET", &p, &[], b"")))
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

/// Sends raw bytes and reads until the server closes (or `timeout`).
pub fn raw(port: u16, bytes: &[u8], timeout: Duration) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 65536];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    let _ = s.shutdown(Shutdown::Both);
    out
}

/// Splits a byte stream into responses (Content-Length or chunked bodies).
pub fn parse_responses(mut raw: &[u8]) -> Vec<Resp> {
    let mut out = Vec::new();
    while let Some(end) = find(raw, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                l.split_once(':')
                    .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        let mut rest = &raw[end + 4..];
        let cl = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse::<usize>().ok());
        let chunked = headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
        let mut body = Vec::new();
        if chunked {
            while let Some(le) = find(rest, b"\r\n") {
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&rest[..le])
                        .split(';')
                        .next()
                        .unwrap_or("")
                        .trim(),
                    16,
                )
                .unwrap_or(0);
                rest = &rest[le + 2..];
                if size == 0 {
                    rest = rest.get(2..).unwrap_or(&[]);
                    break;
                }
                body.extend_from_slice(&rest[..size.min(rest.len())]);
                rest = rest.get(size + 2..).unwrap_or(&[]);
            }
        } else if let Some(n) = cl {
            body.extend_from_slice(&rest[..n.min(rest.len())]);
            rest = rest.get(n..).unwrap_or(&[]);
        } else {
            body.extend_from_slice(rest);
            rest = &[];
        }
        out.push(Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
        raw = rest;
    }
    out
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

/// A route file with one route `/PATH*`-style entry per line of `routes`, ending with `#END`.
pub fn routes_file(body: &str) -> String {
    format!("{body}\n#END\n")
}

pub fn prefix(p: &Path) -> String {
    p.display().to_string()
}
