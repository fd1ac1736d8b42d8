//! A `moongate run` child process for the runner: one prefix directory with its own
//! `conf/config.yaml`, `conf/apisix.yaml` and `logs/`, started on fixed ports and killed on drop.
//! Route files change without a restart; the runner knows a new file is live when the probe
//! route it carries answers with the file's generation number.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::client::{Conn, Request};
use super::translate::{LOCATION_PRIORITY, lua_str};

pub const PROBE_URI: &str = "/__moongate_test_generation";

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("port {0} is already in use by another process; the runner needs it free")]
    PortBusy(u16),
    #[error("cannot start {bin}: {err}")]
    Spawn { bin: String, err: std::io::Error },
    #[error("the {role} exited during start-up ({status}):\n{stderr}")]
    Exited {
        role: String,
        status: String,
        stderr: String,
    },
    #[error("the {role} did not open port {port} within {secs} s:\n{stderr}")]
    NoPort {
        role: String,
        port: u16,
        secs: u64,
        stderr: String,
    },
    #[error("the {role} did not load the new route file within {secs} s (rejected?):\n{log}")]
    NotReloaded {
        role: String,
        secs: u64,
        log: String,
    },
    #[error("cannot write {0}: {1}")]
    Write(PathBuf, std::io::Error),
}

/// The probe route that proves which route file is live.
pub fn probe_route(generation: u64) -> serde_json::Value {
    json!({
        "id": "moongate-test-generation",
        "uri": PROBE_URI,
        "priority": LOCATION_PRIORITY + 1,
        "lua_handlers": {"content_by_lua": format!("ngx.print({})", lua_str(&generation.to_string()))},
    })
}

/// Where the block's `extra_init_worker_by_lua` code is served, to be run before the block.
pub const INIT_WORKER_URI: &str = "/__moongate_test_init_worker";
/// Where the block's `extra_init_by_lua` code is served, to be run once per gateway process.
pub const INIT_URI: &str = "/__moongate_test_init";

/// What a block asks to run in the gateway before its requests: `extra_init_by_lua`
/// (nginx's `init_by_lua`, once per start of nginx) or `extra_init_worker_by_lua`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum InitHook {
    Init,
    InitWorker,
}

impl InitHook {
    pub fn section(self) -> &'static str {
        match self {
            InitHook::Init => "extra_init_by_lua",
            InitHook::InitWorker => "extra_init_worker_by_lua",
        }
    }

    fn uri(self) -> &'static str {
        match self {
            InitHook::Init => INIT_URI,
            InitHook::InitWorker => INIT_WORKER_URI,
        }
    }

    /// A route whose content handler is the hook's code.
    pub fn route(self, code: &str) -> serde_json::Value {
        json!({
            "id": format!("moongate-test-{}", self.section().replace('_', "-")),
            "uri": self.uri(),
            "priority": LOCATION_PRIORITY + 1,
            "lua_handlers": {"content_by_lua": code},
        })
    }

    /// Runs the hook's code in the gateway (its one worker, as the runner starts it unless
    /// `workers()` asks for more) and reports a failure of it.
    pub fn run(self, port: u16) -> Result<(), String> {
        call_hidden(port, self.uri(), self.section())
    }
}

/// Where the runner empties the gateway's shared dictionaries between blocks.
pub const FLUSH_SHARED_URI: &str = "/__moongate_test_flush_shared";

/// A route that empties every `ngx.shared` dictionary, as the nginx restart Test::Nginx does
/// before each block empties them.
pub fn flush_shared_route() -> serde_json::Value {
    json!({
        "id": "moongate-test-flush-shared",
        "uri": FLUSH_SHARED_URI,
        "priority": LOCATION_PRIORITY + 1,
        "lua_handlers": {"content_by_lua": "for _, dict in pairs(ngx.shared) do dict:flush_all() end"},
    })
}

/// Empties the gateway's shared dictionaries (see [`flush_shared_route`]).
pub fn flush_shared(port: u16) -> Result<(), String> {
    call_hidden(port, FLUSH_SHARED_URI, "emptying the shared dictionaries")
}

/// Requests one of the runner's own routes and reports anything but a 200.
fn call_hidden(port: u16, uri: &str, what: &str) -> Result<(), String> {
    let fail = |e: String| format!("{what}: {e}");
    let mut c = Conn::open(port, Duration::from_secs(10)).map_err(|e| fail(e.to_string()))?;
    let req = Request::parse(&format!("GET {uri}")).map_err(fail)?;
    c.send(&req.encode(&[], true))
        .map_err(|e| fail(e.to_string()))?;
    let r = c.read_response(false).map_err(|e| fail(e.to_string()))?;
    if r.status != 200 {
        return Err(fail(format!(
            "the code failed (status {}): {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        )));
    }
    Ok(())
}

pub struct Process {
    /// `gateway` or `test upstream`, for messages.
    role: String,
    child: Child,
    pub prefix: PathBuf,
    /// The port the probe is asked on.
    port: u16,
    /// The config.yaml text this process was started with.
    pub config: String,
    /// Environment variables set for it (`--- main_config` `env NAME=VALUE;`).
    pub env: Vec<(String, String)>,
    pub ports: Vec<u16>,
    /// Routes go in through the Admin API on the data port (the embedded store), not the
    /// route file; the ids written so far, to delete the ones a later block drops.
    admin: Option<std::collections::BTreeSet<String>>,
    /// The `extra_init_by_lua` code this process ran, if any: nginx runs `init_by_lua` once
    /// per start, so the runner runs a block's code only when it differs from this.
    pub init_ran: Option<String>,
}

fn port_busy(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_err()
}

fn tail(path: &Path, max: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_string()
}

/// What a process is started with: its `config.yaml` text and extra environment variables.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Setup {
    pub config: String,
    pub env: Vec<(String, String)>,
}

impl Process {
    /// Writes the files and starts `bin run -p prefix` in `cwd`, waiting until every port
    /// accepts connections.
    pub fn start(
        role: &str,
        bin: &Path,
        prefix: &Path,
        cwd: &Path,
        setup: Setup,
        routes: &str,
        ports: Vec<u16>,
    ) -> Result<Process, GatewayError> {
        let Setup { config, env } = setup;
        for &p in &ports {
            // The previous process of this runner may still be releasing the port.
            let end = Instant::now() + Duration::from_secs(3);
            while port_busy(p) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(50));
            }
            if port_busy(p) {
                return Err(GatewayError::PortBusy(p));
            }
        }
        for dir in ["conf", "logs"] {
            let d = prefix.join(dir);
            std::fs::create_dir_all(&d).map_err(|e| GatewayError::Write(d.clone(), e))?;
        }
        write(&prefix.join("conf/config.yaml"), &config)?;
        write(&prefix.join("conf/apisix.yaml"), routes)?;
        let stderr_path = prefix.join("logs/stderr.log");
        let stderr = std::fs::File::create(&stderr_path)
            .map_err(|e| GatewayError::Write(stderr_path.clone(), e))?;
        let child = Command::new(bin)
            .arg("run")
            .arg("-p")
            .arg(prefix)
            .current_dir(cwd)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|err| GatewayError::Spawn {
                bin: bin.display().to_string(),
                err,
            })?;
        let mut p = Process {
            role: role.to_string(),
            child,
            prefix: prefix.to_path_buf(),
            port: ports.first().copied().unwrap_or(0),
            config,
            env,
            ports,
            admin: None,
            init_ran: None,
        };
        let secs = 20;
        let end = Instant::now() + Duration::from_secs(secs);
        for &port in &p.ports.clone() {
            loop {
                if let Ok(Some(status)) = p.child.try_wait() {
                    return Err(GatewayError::Exited {
                        role: p.role.clone(),
                        status: status.to_string(),
                        stderr: tail(&stderr_path, 4000),
                    });
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    break;
                }
                if Instant::now() > end {
                    return Err(GatewayError::NoPort {
                        role: p.role.clone(),
                        port,
                        secs,
                        stderr: tail(&stderr_path, 4000),
                    });
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        }
        Ok(p)
    }

    pub fn error_log_path(&self) -> PathBuf {
        self.prefix.join("logs/error.log")
    }

    /// The error log's current length: a block reads only what comes after it.
    pub fn log_offset(&self) -> u64 {
        std::fs::metadata(self.error_log_path())
            .map(|m| m.len())
            .unwrap_or(0)
    }

    pub fn log_since(&self, offset: u64) -> String {
        let bytes = std::fs::read(self.error_log_path()).unwrap_or_default();
        let start = (offset as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// The access log (at its default place, `logs/access.log`) from `offset` on.
    pub fn access_log_offset(&self) -> u64 {
        std::fs::metadata(self.prefix.join("logs/access.log"))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    pub fn access_log_since(&self, offset: u64) -> String {
        let bytes = std::fs::read(self.prefix.join("logs/access.log")).unwrap_or_default();
        let start = (offset as usize).min(bytes.len());
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }

    /// From now on routes are written through the Admin API.
    pub fn use_admin_api(&mut self) {
        self.admin = Some(Default::default());
    }

    /// `PUT /apisix/admin/routes/{id}` of every route in `routes` (a route file's text), then
    /// `DELETE` of the runner's routes that are gone. Routes a test wrote itself are left alone.
    fn push_routes(&mut self, routes: &str) -> Result<(), GatewayError> {
        let failed = |msg: String| {
            GatewayError::Write(self.prefix.join("(admin api)"), std::io::Error::other(msg))
        };
        let mut doc: serde_json::Value = serde_norway::from_str(routes.trim_end_matches("#END\n"))
            .map_err(|e| failed(e.to_string()))?;
        // Unnamed items are `arr_N` in the file the gateway was seeded from: the same here.
        crate::config::standalone::name_unnamed_items(&mut doc);
        let mut now = std::collections::BTreeSet::new();
        for kind in [
            "upstreams",
            "services",
            "routes",
            "consumers",
            "global_rules",
            "plugin_configs",
        ] {
            let Some(items) = doc.get(kind).and_then(|v| v.as_array()) else {
                continue;
            };
            for item in items {
                let id = match item.get(if kind == "consumers" {
                    "username"
                } else {
                    "id"
                }) {
                    Some(serde_json::Value::String(s)) => s.clone(),
                    Some(v) => v.to_string(),
                    None => continue,
                };
                // The runner's routes are nginx locations, not APISIX routes: they are kept
                // where the Admin API does not list them among `routes`.
                let dir = if kind == "routes" {
                    "moongate_locations"
                } else {
                    kind
                };
                let path = format!("/apisix/admin/{dir}/{id}");
                let status = self
                    .admin_call("PUT", &path, &item.to_string())
                    .map_err(failed)?;
                if !(200..300).contains(&status) {
                    return Err(failed(format!("PUT {path} answered {status}")));
                }
                now.insert(path);
            }
        }
        let before = self.admin.replace(now.clone()).unwrap_or_default();
        for gone in before.difference(&now) {
            let _ = self.admin_call("DELETE", gone, "");
        }
        Ok(())
    }

    /// The key the runner writes its routes with: the first `admin` key of the gateway's
    /// config, read from where the gateway keeps it when it was generated; `None` when the
    /// config asks for no key.
    fn admin_key(&self) -> Option<String> {
        let cfg: serde_json::Value = serde_norway::from_str(&self.config).ok()?;
        let admin = cfg.get("deployment")?.get("admin")?;
        if admin.get("admin_key_required") == Some(&serde_json::Value::Bool(false)) {
            return None;
        }
        let fallback = serde_json::json!([{"name": "admin", "key": "", "role": "admin"}]);
        let keys = match admin.get("admin_key") {
            Some(serde_json::Value::Null) => return None,
            Some(k) => k,
            None => &fallback,
        };
        let entry = keys.as_array()?.iter().find(|k| {
            k.get("role")
                .and_then(|r| r.as_str())
                .is_none_or(|r| r == "admin")
        })?;
        match entry.get("key") {
            Some(serde_json::Value::String(k)) if !k.is_empty() => Some(k.clone()),
            Some(serde_json::Value::Number(n)) => Some(n.to_string()),
            _ => {
                let name = entry
                    .get("name")
                    .and_then(|n| n.as_str())
                    .unwrap_or("admin");
                std::fs::read_to_string(self.prefix.join(format!("conf/admin_key.{name}")))
                    .ok()
                    .map(|k| k.trim().to_string())
            }
        }
    }

    /// Gives the gateway's workers fresh plugin VMs (`PUT /apisix/admin/plugins/reload`): what
    /// a restart of nginx between two blocks gives their Lua code. Shared dictionaries are
    /// process-wide and stay, as over a HUP reload.
    pub fn fresh_workers(&mut self) -> Result<(), GatewayError> {
        // What `extra_init_by_lua` did lived in the old VMs: it runs again in the new ones.
        self.init_ran = None;
        let failed = |msg: String| {
            GatewayError::Write(self.prefix.join("(admin api)"), std::io::Error::other(msg))
        };
        let status = self
            .admin_call("PUT", "/apisix/admin/plugins/reload", "")
            .map_err(failed)?;
        if status != 200 {
            return Err(failed(format!(
                "PUT /apisix/admin/plugins/reload answered {status}"
            )));
        }
        Ok(())
    }

    fn admin_call(&self, method: &str, path: &str, body: &str) -> Result<u16, String> {
        let mut c = Conn::open(self.port, Duration::from_secs(5)).map_err(|e| e.to_string())?;
        let key = self
            .admin_key()
            .map(|k| format!("X-API-KEY: {k}\r\n"))
            .unwrap_or_default();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{key}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body.as_bytes());
        c.send(&bytes).map_err(|e| e.to_string())?;
        let r = c.read_response(false).map_err(|e| e.to_string())?;
        Ok(r.status)
    }

    /// Replaces the route file (or, with the Admin API, the runner's routes) and waits until
    /// the probe answers `generation`.
    pub fn load_routes(&mut self, routes: &str, generation: u64) -> Result<(), GatewayError> {
        let offset = self.log_offset();
        if self.admin.is_some() {
            self.push_routes(routes)?;
        } else {
            write(&self.prefix.join("conf/apisix.yaml"), routes)?;
        }
        let secs = 10;
        let end = Instant::now() + Duration::from_secs(secs);
        let want = generation.to_string();
        while Instant::now() < end {
            if self.probe().as_deref() == Some(want.as_str()) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(GatewayError::NotReloaded {
            role: self.role.clone(),
            secs,
            log: self.log_since(offset),
        })
    }

    fn probe(&self) -> Option<String> {
        let mut c = Conn::open(self.port, Duration::from_secs(2)).ok()?;
        let req = Request::parse(&format!("GET {PROBE_URI}")).ok()?;
        c.send(&req.encode(&[], true)).ok()?;
        let r = c.read_response(false).ok()?;
        (r.status == 200).then(|| String::from_utf8_lossy(&r.body).into_owned())
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

fn write(path: &Path, text: &str) -> Result<(), GatewayError> {
    // Write-then-rename, so the watcher never sees half a file.
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).map_err(|e| GatewayError::Write(tmp.clone(), e))?;
    std::fs::rename(&tmp, path).map_err(|e| GatewayError::Write(path.to_path_buf(), e))
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
