//! A real `redis-server` for the tests that need one: started on a free loopback port with no
//! persistence, killed when the value drops. Tests fail (never skip) when `redis-server` is not
//! installed: `scripts/lib/deps.sh` installs it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{TempDir, free_port};

pub struct RedisServer {
    child: Child,
    pub port: u16,
    _dir: TempDir,
}

impl RedisServer {
    /// A server with no password.
    pub fn start() -> RedisServer {
        RedisServer::start_with(&[])
    }

    /// A server with extra command-line settings, e.g. `["--requirepass", "pw"]` or
    /// `["--user", "alice", "on", ">secret", "~*", "&*", "+@all"]`.
    pub fn start_with(args: &[&str]) -> RedisServer {
        RedisServer::start_on(free_port(), args)
    }

    /// A server on `port`.
    pub fn start_on(port: u16, args: &[&str]) -> RedisServer {
        let dir = TempDir::new("redis");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&dir.0)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
                "redis-server is not installed, and this test needs a real Redis: install it \
                 with `apt-get install redis-server` (scripts/lib/deps.sh does)"
            ),
            Err(e) => panic!("cannot start redis-server: {e}"),
        };
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis-server exited during start-up: {status}");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > end {
                panic!("redis-server did not open port {port} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// Runs one command (RESP array of bulk strings) on a fresh connection and returns the raw
    /// reply, for tests that check what the gateway wrote to Redis. `auth` logs in first.
    pub fn command(&self, auth: Option<&[&str]>, args: &[&str]) -> String {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut send = |args: &[&str]| {
            let mut req = format!("*{}\r\n", args.len());
            for a in args {
                req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
            }
            c.write_all(req.as_bytes()).unwrap();
        };
        let mut wanted = 1;
        if let Some(a) = auth {
            let mut full = vec!["AUTH"];
            full.extend_from_slice(a);
            send(&full);
            wanted += 1;
        }
        send(args);
        // Read until the reply of the last command is complete enough for the tests: every
        // reply they ask for is one line or one short bulk string.
        let mut buf = Vec::new();
        let mut tmp = [0u8; 4096];
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            let text = String::from_utf8_lossy(&buf);
            if complete_replies(&text) >= wanted {
                break;
            }
            match c.read(&mut tmp) {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let text = String::from_utf8_lossy(&buf).into_owned();
        // Drop the AUTH reply.
        match auth {
            Some(_) => text
                .split_once("\r\n")
                .map(|(_, r)| r.to_string())
                .unwrap_or(text),
            None => text,
        }
    }
}

impl RedisServer {
    /// A Redis Sentinel watching the master on `master_port` as `mymaster`; `extra` lines go into
    /// its config file (e.g. an `aclfile`). Sentinels need a writable config file of their own.
    pub fn sentinel(master_port: u16, extra: &str) -> RedisServer {
        let dir = TempDir::new("sentinel");
        let port = free_port();
        let conf = dir.0.join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {master_port} 1\nsentinel down-after-milliseconds mymaster 10000\n{extra}",
                dir.0.display()
            ),
        )
        .unwrap();
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server --sentinel (install redis-server): {e}")
            });
        let mut server = RedisServer {
            child,
            port,
            _dir: dir,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!("redis sentinel exited during start-up: {status}");
            }
            assert!(
                Instant::now() < end,
                "redis sentinel did not open port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }
}

/// How many top-level replies of simple shape (`+`, `-`, `:`, `$n`) `text` holds in full.
fn complete_replies(text: &str) -> usize {
    let mut n = 0;
    let mut rest = text;
    while let Some((line, after)) = rest.split_once("\r\n") {
        if let Some(len) = line.strip_prefix('$').and_then(|l| l.parse::<i64>().ok()) {
            if len < 0 {
                rest = after;
            } else {
                let len = len as usize;
                if after.len() < len + 2 {
                    return n;
                }
                rest = &after[len + 2..];
            }
        } else {
            rest = after;
        }
        n += 1;
    }
    n
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A Redis Cluster of `n` masters (no replicas) on free loopback ports, made with
/// `redis-cli --cluster create`; every node is killed when the value drops.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

/// A port whose cluster bus port (port + 10000) is free too.
fn cluster_port() -> u16 {
    loop {
        let p = free_port();
        if p < 55000 && std::net::TcpListener::bind(("127.0.0.1", p + 10000)).is_ok() {
            return p;
        }
    }
}

impl RedisCluster {
    pub fn start(n: usize) -> RedisCluster {
        let mut nodes = Vec::new();
        for _ in 0..n {
            let port = cluster_port();
            nodes.push(RedisServer::start_on(
                port,
                &["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"],
            ));
        }
        let addrs: Vec<String> = nodes
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        let out = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run redis-cli (installed with redis-server): {e}"));
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let cluster = RedisCluster { nodes };
        cluster.wait_ok();
        cluster
    }

    /// Waits until every node says `cluster_state:ok`.
    pub fn wait_ok(&self) {
        let end = Instant::now() + Duration::from_secs(20);
        for node in &self.nodes {
            while !node
                .command(None, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                assert!(Instant::now() < end, "the cluster did not become ok");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// Runs `redis-cli --cluster ARGS…` against the first node.
    pub fn cli(&self, args: &[&str]) -> String {
        let first = format!("127.0.0.1:{}", self.nodes[0].port);
        let mut cmd = Command::new("redis-cli");
        cmd.arg("--cluster")
            .arg(args[0])
            .arg(&first)
            .args(&args[1..]);
        let out = cmd.output().expect("redis-cli");
        assert!(
            out.status.success(),
            "redis-cli --cluster {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The node id of node `i`.
    pub fn node_id(&self, i: usize) -> String {
        let reply = self.nodes[i].command(None, &["CLUSTER", "MYID"]);
        reply
            .lines()
            .nth(1)
            .map(str::trim)
            .unwrap_or_default()
            .to_string()
    }
}
