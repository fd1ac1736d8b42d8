//! The per-file and per-block driver: which processes a block needs, what files they get,
//! what is sent, what is checked, and when a block is skipped (a section the runner cannot
//! honour is named in the skip reason, never silently passed).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use super::block::{Block, File};
use super::check;
use super::client::{self, Conn, Request, Response};
use super::gateway::{self, InitHook, Process};
use super::perl;
use super::report::{FileReport, Outcome, Summary};
use super::translate::{self, Unsupported};

/// The ports APISIX's harness serves `t/lib/server.lua` on.
pub const UPSTREAM_PORTS: [u16; 3] = [1980, 1981, 1982];

/// The port it serves `t/lib/server.lua` over TLS on, with `t/certs/apisix.crt` whatever the SNI.
pub const UPSTREAM_TLS_PORT: u16 = 1983;

#[derive(Debug, Clone)]
pub struct Options {
    pub paths: Vec<PathBuf>,
    pub apisix_root: Option<PathBuf>,
    /// Lua roots (like moongate's `lua/`): `?.lua` modules and `plugins/`.
    pub lua_paths: Vec<PathBuf>,
    /// The test upstream's Lua file; default `<test root>/lib/server.lua`.
    pub server_lua: Option<PathBuf>,
    /// Run only this block: (file name or path suffix, block number).
    pub only: Option<(String, usize)>,
    pub jobs: usize,
    pub keep_logs: bool,
    pub port: u16,
    /// The moongate binary to run the gateway with.
    pub binary: PathBuf,
}

/// Sections the runner honours; any other section skips its block, naming it.
const KNOWN: &[&str] = &[
    "config",
    "http_config",
    "upstream_server_config",
    "request",
    "pipelined_requests",
    "raw_request",
    "more_headers",
    "timeout",
    "abort",
    "error_code",
    "error_code_like",
    "response_body",
    "response_body_like",
    "response_body_unlike",
    "response_headers",
    "response_headers_like",
    "error_log",
    "no_error_log",
    "extra_init_by_lua",
    "extra_init_worker_by_lua",
    "access_log",
    "grep_error_log",
    "grep_error_log_out",
    "wait",
    "yaml_config",
    "extra_yaml_config",
    "apisix_yaml",
    "apisix_json",
    "exec",
    "stdin",
    "main_config",
    "max_size",
    "log_level",
    "ignore_error_log",
    "ignore_response",
    "wait_etcd_sync",
    // Not a Test::Nginx section: Test::Nginx ignores it (some APISIX files carry it, with
    // patterns that could never match), so the runner does too.
    "error_log_like",
    "no_check_leak",
    "ONLY",
    "SKIP",
    "LAST",
];

/// Every section Test::Nginx (Socket, Socket::Lua, Util) or APISIX's `t/APISIX.pm` acts on.
/// One of these the runner does not honour ([`KNOWN`]) skips the block; a name outside this
/// list is inert under the real harness and is ignored here as well.
const HARNESS_SECTIONS: &[&str] = &[
    // Test::Nginx
    "SKIP",
    "ONLY",
    "LAST",
    "abort",
    "access_log",
    "charset",
    "config",
    "curl",
    "curl_error",
    "curl_options",
    "curl_protocol",
    "error_code",
    "error_code_like",
    "error_log",
    "error_log_file",
    "grep_error_log",
    "grep_error_log_out",
    "http09",
    "http2",
    "http3",
    "http_config",
    "ignore_response",
    "init",
    "log_level",
    "log_stream_response",
    "main_config",
    "more_headers",
    "must_die",
    "no_access_log",
    "no_check_leak",
    "no_error_log",
    "no_http2",
    "no_http3",
    "no_mockeagain",
    "no_shutdown_error_log",
    "pipelined_requests",
    "post_main_config",
    "post_setup_server_root",
    "quic_max_idle_timeout",
    "raw_request",
    "raw_request_middle_delay",
    "raw_response_headers_like",
    "raw_response_headers_unlike",
    "reload_fails",
    "req_headers",
    "request",
    "request_eval",
    "resp_title",
    "response_body",
    "response_body_eval",
    "response_body_filters",
    "response_body_json_sort",
    "response_body_like",
    "response_body_unlike",
    "response_headers",
    "response_headers_like",
    "server_addr_for_client",
    "server_name",
    "shutdown",
    "shutdown_error_log",
    "skip_eval",
    "skip_nginx",
    "skip_nginx2",
    "skip_openssl",
    "skip_slave",
    "stap",
    "stap_out",
    "stap_out_like",
    "stap_out_unlike",
    "steam_listen_option",
    "steam_listen_option2",
    "steam_listen_option3",
    "stream_config",
    "stream_request",
    "stream_request2",
    "stream_request3",
    "stream_response",
    "stream_response_like",
    "stream_server_config",
    "stream_server_config2",
    "stream_server_config3",
    "suppress_stderr",
    "tcp_listen",
    "tcp_no_close",
    "tcp_query",
    "tcp_query_auto_timeout",
    "tcp_query_len",
    "tcp_reply",
    "tcp_reply_delay",
    "tcp_shutdown",
    "tcp_shutdown_delay",
    "test_nginx_enabled_http2",
    "test_nginx_enabled_http3",
    "timeout",
    "todo",
    "todo_nginx",
    "udp_listen",
    "udp_query",
    "udp_reply",
    "udp_reply_delay",
    "user_files",
    "wait",
    "write_resp_body_file",
    // APISIX's t/APISIX.pm
    "apisix_json",
    "apisix_yaml",
    "custom_trusted_cert",
    "debug_config",
    "exec",
    "extra_init_by_lua",
    "extra_init_by_lua_start",
    "extra_init_worker_by_lua",
    "extra_stream_config",
    "extra_yaml_config",
    "ignore_error_log",
    "init_by_lua_block",
    "listen_ipv6",
    "lua_deps_path",
    "max_size",
    "stdin",
    "stream_conf_enable",
    "stream_enable",
    "stream_extra_init_by_lua",
    "stream_extra_init_by_lua_start",
    "stream_extra_init_worker_by_lua",
    "stream_init_by_lua_block",
    "stream_session_reuse",
    "stream_sni",
    "stream_tls_request",
    "stream_upstream_code",
    "upstream_server_config",
    "wait_etcd_sync",
    "yaml_config",
];

fn expand(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut inner: Vec<PathBuf> = std::fs::read_dir(p)
                .map(|rd| rd.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            inner.sort();
            let (dirs, files): (Vec<_>, Vec<_>) = inner.into_iter().partition(|p| p.is_dir());
            out.extend(
                files
                    .into_iter()
                    .filter(|f| f.extension().is_some_and(|e| e == "t")),
            );
            out.extend(expand(&dirs));
        } else {
            out.push(p.clone());
        }
    }
    out
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    })
}

/// Runs every file and prints to stdout as it goes; the summary says what happened.
pub fn run(opts: &Options) -> anyhow::Result<Summary> {
    let scratch = std::env::temp_dir().join(format!("moongate-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch)?;
    let inc = scratch.join("perl");
    perl::install(&inc)?;
    let files = expand(&opts.paths);
    if files.is_empty() {
        anyhow::bail!("no .t files in {:?}", opts.paths);
    }
    let mut total = Summary::default();
    let slots = opts.jobs.max(1).min(files.len());
    if slots > 1 {
        println!(
            "# --jobs {slots}: files run one at a time all the same, since every file binds the fixed test ports ({} and {:?})",
            opts.port, UPSTREAM_PORTS
        );
    }
    for (i, file) in files.iter().enumerate() {
        let dir = scratch.join(format!("file-{i}"));
        let report = run_file(opts, file, &inc, &dir);
        print!("{}", report.text);
        total.add(report.summary);
        if !opts.keep_logs {
            let _ = std::fs::remove_dir_all(&dir);
        } else {
            println!("# logs of {} kept in {}", file.display(), dir.display());
        }
    }
    if !opts.keep_logs {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    println!("{}", total.closing_line());
    Ok(total)
}

/// Where a file's helpers live: APISIX's `t/`, or the nearest ancestor directory named `t`.
fn test_root(opts: &Options, file: &Path) -> PathBuf {
    if let Some(root) = &opts.apisix_root {
        return absolute(root).join("t");
    }
    let file = absolute(file);
    let mut dir = file.parent();
    while let Some(d) = dir {
        if d.file_name().is_some_and(|n| n == "t") {
            return d.to_path_buf();
        }
        dir = d.parent();
    }
    file.parent().map(Path::to_path_buf).unwrap_or_default()
}

struct FileCtx<'a> {
    opts: &'a Options,
    dir: PathBuf,
    cwd: PathBuf,
    test_root: PathBuf,
    lua_roots: Vec<PathBuf>,
    server_lua: Option<PathBuf>,
    file: File,
    gateway: Option<Process>,
    upstream: Option<Process>,
    generation: u64,
    /// Empty the shared dictionaries of a gateway kept from the previous block (set per block).
    flush_on_reuse: bool,
    /// Which repetition of the block (`repeat_each`) runs: Test::Nginx restarts nginx before
    /// the first only.
    round: u32,
    /// Variables the file's Perl prologue set or changed, given to the gateway as nginx would
    /// have inherited them.
    prologue_env: Vec<(String, String)>,
    /// The running block gives its routes as `apisix_yaml`/`apisix_json`: t::APISIX runs such
    /// a block on a yaml data plane, without the Admin API.
    block_standalone: bool,
}

fn run_file(opts: &Options, path: &Path, inc: &Path, dir: &Path) -> FileReport {
    let mut report = FileReport::default();
    let name = path.display().to_string();
    let test_root = test_root(opts, path);
    let cwd = match &opts.apisix_root {
        Some(r) => absolute(r),
        None => test_root
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| test_root.clone()),
    };
    if let Err(e) = std::fs::create_dir_all(dir.join("html")) {
        report.file_error(&name, &format!("cannot create {}: {e}", dir.display()));
        return report;
    }
    let env = vec![
        ("TEST_NGINX_SERVER_PORT".to_string(), opts.port.to_string()),
        (
            "TEST_NGINX_HTML_DIR".to_string(),
            dir.join("html").display().to_string(),
        ),
        (
            "MOONGATE_TEST_SERVROOT".to_string(),
            dir.join("gateway").display().to_string(),
        ),
        ("APISIX_HOME".to_string(), cwd.display().to_string()),
    ];
    let file = match perl::load(&absolute(path), inc, &cwd, dir, &env) {
        Ok(f) => f,
        Err(e) => {
            report.file_error(&name, &e.to_string());
            return report;
        }
    };
    if let Some(reason) = &file.settings.skip_all {
        report.note(&format!("{name}: skipped by plan(skip_all): {reason}"));
        return report;
    }
    let server_lua = opts
        .server_lua
        .clone()
        .unwrap_or_else(|| test_root.join("lib/server.lua"));
    let server_lua = server_lua.is_file().then(|| absolute(&server_lua));
    if server_lua.is_none() {
        report.note(&format!(
            "no test upstream: {} not found, so nothing serves ports {UPSTREAM_PORTS:?}",
            test_root.join("lib/server.lua").display()
        ));
    }
    // APISIX's test helpers (`lib.test_admin`) need `t/toolkit`, a git submodule that release
    // archives leave empty: say so once rather than let every block fail obscurely.
    if opts.apisix_root.is_some()
        && let Some(msg) = toolkit_note(&test_root)
    {
        report.note(&msg);
    }
    let mut lua_roots: Vec<PathBuf> = opts.lua_paths.iter().map(|p| absolute(p)).collect();
    if lua_roots.is_empty() && Path::new("lua").is_dir() {
        lua_roots.push(absolute(Path::new("lua")));
    }
    let prologue_env: Vec<(String, String)> = file
        .env
        .iter()
        .filter(|(k, v)| {
            !k.starts_with("MOONGATE_")
                && k.as_str() != "TEST_NGINX_BINARY"
                && !env.iter().any(|(ek, _)| ek == *k)
                && std::env::var(k.as_str()).ok().as_deref() != Some(v.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let mut ctx = FileCtx {
        opts,
        dir: dir.to_path_buf(),
        cwd,
        test_root,
        lua_roots,
        server_lua,
        file,
        gateway: None,
        upstream: None,
        generation: 0,
        flush_on_reuse: false,
        round: 1,
        prologue_env,
        block_standalone: false,
    };
    let selected: Vec<Block> = ctx.file.selected().into_iter().cloned().collect();
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for block in &selected {
        if let Some((f, n)) = &opts.only {
            let matches_file = name.ends_with(f.as_str()) || file_name == *f;
            if !matches_file || *n != block.seq {
                continue;
            }
        }
        let repeat = ctx.file.settings.repeat_each.max(1);
        let mut outcome = Outcome::Pass;
        for round in 1..=repeat {
            ctx.round = round;
            let o = run_block(&mut ctx, block);
            match o {
                Outcome::Pass => continue,
                Outcome::Fail(mut r) if repeat > 1 => {
                    r.insert(0, format!("(repetition {round} of {repeat})"));
                    outcome = Outcome::Fail(r);
                    break;
                }
                other => {
                    outcome = other;
                    break;
                }
            }
        }
        report.block(&name, block.seq, &block.name, &outcome);
    }
    report
}

fn toolkit_note(test_root: &Path) -> Option<String> {
    let dir = test_root.join("toolkit");
    let empty = std::fs::read_dir(&dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true);
    empty.then(|| {
        format!(
            "{} is empty or missing (a git submodule of APISIX): lib.test_admin's require(\"toolkit.json\") will fail unless a --lua-path provides it",
            dir.display()
        )
    })
}

fn yaml_of(json: &Json) -> serde_norway::Value {
    serde_norway::to_value(json).unwrap_or(serde_norway::Value::Null)
}

fn ymap() -> serde_norway::Value {
    serde_norway::Value::Mapping(Default::default())
}

fn set_path(root: &mut serde_norway::Value, path: &[&str], value: serde_norway::Value) {
    let mut cur = root;
    for (i, key) in path.iter().enumerate() {
        if !cur.is_mapping() {
            *cur = ymap();
        }
        let serde_norway::Value::Mapping(m) = cur else {
            return;
        };
        let k = serde_norway::Value::String(key.to_string());
        if i + 1 == path.len() {
            m.insert(k, value);
            return;
        }
        if !m.contains_key(&k) {
            m.insert(k.clone(), ymap());
        }
        let Some(next) = m.get_mut(&k) else {
            return;
        };
        cur = next;
    }
}

fn get_path<'v>(root: &'v serde_norway::Value, path: &[&str]) -> Option<&'v serde_norway::Value> {
    let mut cur = root;
    for key in path {
        cur = cur.get(*key)?;
    }
    Some(cur)
}

impl FileCtx<'_> {
    fn lua_path(&self) -> String {
        let mut parts = vec![
            format!("{}/?.lua", self.test_root.display()),
            format!("{}/?/init.lua", self.test_root.display()),
        ];
        // APISIX's harness also has the checkout root on the path, so test code can write
        // `require("t.toolkit.json")`. The root itself would shadow moongate's `apisix.*`
        // with APISIX's own, so only the test root is reachable from there, through a
        // directory that holds nothing but a link to it under its own name.
        if let Some(alias) = self.test_root_alias() {
            parts.push(format!("{}/?.lua", alias.display()));
            parts.push(format!("{}/?/init.lua", alias.display()));
        }
        for r in &self.lua_roots {
            parts.push(format!("{}/?.lua", r.display()));
            parts.push(format!("{}/?/init.lua", r.display()));
        }
        parts.join(";")
    }

    fn log_level(&self, block: &Block) -> String {
        block
            .text("log_level")
            .map(|l| l.trim().trim_matches('\'').to_string())
            .or_else(|| self.file.settings.log_level.clone())
            .unwrap_or_else(|| "debug".to_string())
    }

    /// The gateway's `config.yaml`: the block's `yaml_config` (or the test default) with
    /// `extra_yaml_config` merged in, then what the runner needs (port, logs, Lua path).
    fn gateway_config(
        &self,
        block: &Block,
        real_ip: &[(&'static str, Json)],
    ) -> Result<String, String> {
        let mut cfg = match block.text("yaml_config") {
            Some(t) => serde_norway::from_str(t).map_err(|e| format!("yaml_config: {e}"))?,
            None => ymap(),
        };
        if !cfg.is_mapping() {
            cfg = ymap();
        }
        if let Some(extra) = block.text("extra_yaml_config") {
            let extra =
                serde_norway::from_str(extra).map_err(|e| format!("extra_yaml_config: {e}"))?;
            translate::merge_yaml(&mut cfg, extra);
        }
        if get_path(&cfg, &["apisix", "node_listen"]).is_none() {
            set_path(
                &mut cfg,
                &["apisix", "node_listen"],
                serde_norway::Value::from(self.opts.port),
            );
        }
        // t::APISIX's nginx serves TLS on 1994 (the test port + 10) with the `ssls` of the
        // config, while plugins read the ports of `apisix.ssl.listen` (9443 by default):
        // `moongate.tls_listen` binds the first and leaves the second as the block says.
        if get_path(&cfg, &["moongate", "tls_listen"]).is_none() {
            set_path(
                &mut cfg,
                &["moongate", "tls_listen"],
                serde_norway::to_value(
                    serde_json::json!([{"ip": "127.0.0.1", "port": self.opts.port + 10}]),
                )
                .unwrap_or(serde_norway::Value::Null),
            );
        }
        let mut lua_path = self.lua_path();
        if let Some(serde_norway::Value::String(user)) =
            get_path(&cfg, &["apisix", "extra_lua_path"])
        {
            lua_path = format!("{lua_path};{user}");
        }
        set_path(&mut cfg, &["apisix", "extra_lua_path"], lua_path.into());
        let admin = get_path(&cfg, &["deployment", "admin"]).cloned();
        // t::APISIX puts `deployment: {admin: {admin_key: null}}` in front of a config that
        // has no `deployment` of its own: no key is needed then. A block that writes its own
        // `deployment` gets APISIX's defaults (one admin key, generated when empty).
        let own_deployment = get_path(&cfg, &["deployment"]).is_some();
        set_path(&mut cfg, &["deployment"], ymap());
        if self.admin_mode() {
            // APISIX's suites drive routes through the Admin API on the test port (with etcd
            // behind it); here the embedded store stands in for etcd, and the runner writes
            // its own location routes through the same Admin API.
            set_path(&mut cfg, &["deployment", "role"], "traditional".into());
            set_path(
                &mut cfg,
                &["deployment", "role_traditional", "config_provider"],
                "embedded".into(),
            );
            if let Some(a) = admin {
                set_path(&mut cfg, &["deployment", "admin"], a);
            }
            set_path(
                &mut cfg,
                &["deployment", "admin", "serve_on_data_port"],
                true.into(),
            );
            if !own_deployment {
                set_path(
                    &mut cfg,
                    &["deployment", "admin", "admin_key"],
                    serde_norway::Value::Null,
                );
            }
            set_path(
                &mut cfg,
                &["deployment", "admin", "admin_listen"],
                serde_norway::to_value(
                    serde_json::json!({"ip": "127.0.0.1", "port": self.opts.port + 7000}),
                )
                .unwrap_or(serde_norway::Value::Null),
            );
        } else {
            // The runner serves the routes from the route file it writes: a yaml data plane
            // whatever the block says.
            set_path(&mut cfg, &["deployment", "role"], "data_plane".into());
            set_path(
                &mut cfg,
                &["deployment", "role_data_plane", "config_provider"],
                "yaml".into(),
            );
            if let Some(a) = admin {
                set_path(&mut cfg, &["deployment", "admin"], a);
            }
        }
        // APISIX's harness serves the control API under /v1/ on the test port; its own
        // listener (127.0.0.1:9090) opens only when the block asks for it, so test runs do not
        // hold that fixed port.
        set_path(
            &mut cfg,
            &["apisix", "control", "serve_on_data_port"],
            true.into(),
        );
        // As t::APISIX's default config: the prometheus metrics are reached through
        // public-api on the test port, and no run holds the fixed export port 9091.
        if get_path(&cfg, &["plugin_attr", "prometheus", "enable_export_server"]).is_none() {
            set_path(
                &mut cfg,
                &["plugin_attr", "prometheus", "enable_export_server"],
                false.into(),
            );
        }
        if get_path(&cfg, &["apisix", "enable_control"]).is_none() {
            set_path(&mut cfg, &["apisix", "enable_control"], false.into());
        }
        set_path(
            &mut cfg,
            &["nginx_config", "error_log"],
            "logs/error.log".into(),
        );
        set_path(
            &mut cfg,
            &["nginx_config", "error_log_level"],
            self.log_level(block).into(),
        );
        if get_path(&cfg, &["nginx_config", "worker_processes"]).is_none() {
            set_path(
                &mut cfg,
                &["nginx_config", "worker_processes"],
                serde_norway::Value::from(self.file.settings.workers.max(1)),
            );
        }
        // `--- http_config` realip directives sit in APISIX's http block, in front of its
        // server: the gateway's config.yaml says the same.
        for (key, value) in real_ip {
            set_path(&mut cfg, &["nginx_config", "http", key], yaml_of(value));
        }
        serde_norway::to_string(&cfg).map_err(|e| e.to_string())
    }

    /// APISIX suites (`--apisix-root`) run against the Admin API and the embedded store, but
    /// for blocks that bring their own `apisix_yaml` (a yaml data plane, as t::APISIX runs them).
    fn admin_mode(&self) -> bool {
        self.opts.apisix_root.is_some() && !self.block_standalone
    }

    /// The test upstream's `config.yaml`: `ports` in plain HTTP, `tls_port` over TLS (with the
    /// `ssls` item its routes file carries; the name a client sends does not matter).
    fn upstream_config(
        &self,
        block: &Block,
        ports: &[u16],
        tls_port: Option<u16>,
        dicts: &[(String, String)],
    ) -> String {
        let mut cfg = ymap();
        set_path(
            &mut cfg,
            &["apisix", "node_listen"],
            serde_norway::to_value(ports).unwrap_or(serde_norway::Value::Null),
        );
        set_path(&mut cfg, &["apisix", "enable_ipv6"], false.into());
        set_path(&mut cfg, &["apisix", "enable_control"], false.into());
        match tls_port {
            Some(port) => {
                set_path(
                    &mut cfg,
                    &["moongate", "tls_listen"],
                    serde_norway::to_value(serde_json::json!([{"ip": "127.0.0.1", "port": port}]))
                        .unwrap_or(serde_norway::Value::Null),
                );
                set_path(
                    &mut cfg,
                    &["apisix", "ssl", "fallback_sni"],
                    "localhost".into(),
                );
            }
            None => set_path(&mut cfg, &["apisix", "ssl", "enable"], false.into()),
        }
        set_path(
            &mut cfg,
            &["apisix", "extra_lua_path"],
            self.lua_path().into(),
        );
        set_path(
            &mut cfg,
            &["plugins"],
            serde_norway::Value::Sequence(vec![]),
        );
        set_path(
            &mut cfg,
            &["nginx_config", "error_log"],
            "logs/error.log".into(),
        );
        set_path(
            &mut cfg,
            &["nginx_config", "error_log_level"],
            self.log_level(block).into(),
        );
        set_path(
            &mut cfg,
            &["nginx_config", "worker_processes"],
            serde_norway::Value::from(1),
        );
        for (name, size) in dicts {
            set_path(
                &mut cfg,
                &["nginx_config", "http", "custom_lua_shared_dict", name],
                size.clone().into(),
            );
        }
        serde_norway::to_string(&cfg).unwrap_or_default()
    }

    /// `<scratch>/test-root-alias`, holding only a link named as the test root (`t`) to it.
    fn test_root_alias(&self) -> Option<PathBuf> {
        let name = self.test_root.file_name()?;
        let alias = self.dir.join("test-root-alias");
        let link = alias.join(name);
        if !link.exists() {
            std::fs::create_dir_all(&alias).ok()?;
            std::os::unix::fs::symlink(&self.test_root, &link).ok()?;
        }
        Some(alias)
    }

    /// A prefix whose `lua/plugins/` links every plugin of every Lua root (first root wins).
    fn prepare_prefix(&self, prefix: &Path) -> std::io::Result<()> {
        let plugins = prefix.join("lua/plugins");
        std::fs::create_dir_all(&plugins)?;
        for root in &self.lua_roots {
            let Ok(rd) = std::fs::read_dir(root.join("plugins")) else {
                continue;
            };
            for e in rd.flatten() {
                let link = plugins.join(e.file_name());
                if !link.exists() {
                    std::os::unix::fs::symlink(e.path(), &link)?;
                }
            }
        }
        Ok(())
    }

    fn routes_file(&mut self, mut user: serde_norway::Value, routes: Vec<Json>) -> (String, u64) {
        self.generation += 1;
        if !user.is_mapping() {
            user = ymap();
        }
        let mut list = match get_path(&user, &["routes"]) {
            Some(serde_norway::Value::Sequence(s)) => s.clone(),
            _ => Vec::new(),
        };
        list.extend(routes.iter().map(yaml_of));
        list.push(yaml_of(&gateway::probe_route(self.generation)));
        set_path(&mut user, &["routes"], serde_norway::Value::Sequence(list));
        let text = serde_norway::to_string(&user).unwrap_or_default();
        (format!("{text}#END\n"), self.generation)
    }

    /// Starts or reuses the process `slot` for this config and loads its routes.
    fn ensure(
        &mut self,
        upstream: bool,
        config: String,
        env: Vec<(String, String)>,
        ports: Vec<u16>,
        user_routes: serde_norway::Value,
        routes: Vec<Json>,
    ) -> Result<(), String> {
        let (text, generation) = self.routes_file(user_routes, routes);
        let slot_alive = {
            let slot = if upstream {
                &mut self.upstream
            } else {
                &mut self.gateway
            };
            let reuse = match slot.as_mut() {
                Some(p) => p.config == config && p.env == env && p.alive(),
                None => false,
            };
            if !reuse {
                *slot = None;
            }
            reuse
        };
        if slot_alive {
            let fresh = !upstream && self.admin_mode();
            let slot = if upstream {
                &mut self.upstream
            } else {
                &mut self.gateway
            };
            if let Some(p) = slot.as_mut() {
                // A restart also empties shared memory (a HUP reload does not): emptied
                // before the fresh VMs below run their plugins' `init()`.
                if !upstream && self.flush_on_reuse {
                    gateway::flush_shared(self.opts.port)?;
                }
                // Test::Nginx starts nginx again (or reloads it) for every block, so each
                // block's requests meet fresh workers: plugins' `init()` run again, conf tables
                // and module state start over. The same process is kept (its store outlives
                // blocks as etcd does), with fresh plugin VMs.
                if fresh {
                    p.fresh_workers().map_err(|e| e.to_string())?;
                }
                return p.load_routes(&text, generation).map_err(|e| e.to_string());
            }
        }
        let role = if upstream { "test upstream" } else { "gateway" };
        let prefix = self.dir.join(if upstream { "upstream" } else { "gateway" });
        // The config store (`data/`) outlives a restart within the file, as etcd does.
        let data = self.dir.join("gateway-data");
        let _ = std::fs::rename(prefix.join("data"), &data);
        let _ = std::fs::remove_dir_all(&prefix);
        if !upstream && data.exists() {
            let _ = std::fs::create_dir_all(&prefix);
            let _ = std::fs::rename(&data, prefix.join("data"));
        }
        self.prepare_prefix(&prefix)
            .map_err(|e| format!("cannot prepare {}: {e}", prefix.display()))?;
        // With the Admin API, routes go in through it: the route file stays empty so the new
        // embedded store is not seeded with them (where the Admin API would list them).
        let admin = !upstream && self.admin_mode();
        let mut p = Process::start(
            role,
            &self.opts.binary,
            &prefix,
            &self.cwd,
            gateway::Setup { config, env },
            if admin { "#END\n" } else { &text },
            ports,
        )
        .map_err(|e| e.to_string())?;
        if admin {
            p.use_admin_api();
        }
        p.load_routes(&text, generation)
            .map_err(|e| e.to_string())?;
        if upstream {
            self.upstream = Some(p);
        } else {
            self.gateway = Some(p);
        }
        Ok(())
    }
}

fn parse_secs(text: &str) -> Option<Duration> {
    let t = text.trim();
    if let Some(ms) = t.strip_suffix("ms") {
        return ms
            .trim()
            .parse::<f64>()
            .ok()
            .map(|v| Duration::from_secs_f64(v / 1000.0));
    }
    t.trim_end_matches('s')
        .parse::<f64>()
        .ok()
        .map(Duration::from_secs_f64)
}

fn skip_reason(block: &Block) -> Option<String> {
    if block.has("SKIP") {
        return Some(match block.text("SKIP").map(str::trim) {
            Some(why) if !why.is_empty() => why.to_string(),
            _ => "--- SKIP".into(),
        });
    }
    for (name, value) in &block.sections {
        // A section neither Test::Nginx nor APISIX's harness reads (a misspelt or retired
        // one, such as key-auth.t's `--- response_args`) has no effect there: ignore it too.
        if !KNOWN.contains(&name.as_str()) && HARNESS_SECTIONS.contains(&name.as_str()) {
            return Some(format!(
                "section --- {name} is not supported by moongate's runner"
            ));
        }
        if let Some(what) = value.is_unsupported() {
            return Some(format!(
                "section --- {name} holds {what}, which the runner cannot use"
            ));
        }
    }
    None
}

/// One exchange's result: a response, or why there is none.
type Exchange = Result<Response, String>;

fn send_requests(ctx: &FileCtx, block: &Block, timeout: Duration) -> Result<Vec<Exchange>, String> {
    let port = ctx.opts.port;
    let headers = block
        .text("more_headers")
        .map(client::parse_headers)
        .unwrap_or_default();
    let mut out = Vec::new();
    if let Some(raw) = block.get("raw_request") {
        for item in raw.items() {
            let bytes = item.text().ok_or("raw_request: not text")?;
            let r = Conn::open(port, timeout).and_then(|mut c| {
                c.send(bytes.as_bytes())?;
                c.read_response(false)
            });
            out.push(r.map_err(|e| e.to_string()));
        }
        return Ok(out);
    }
    if let Some(p) = block.get("pipelined_requests") {
        let reqs: Vec<Request> = p
            .items()
            .iter()
            .map(|v| {
                v.text()
                    .ok_or_else(|| "pipelined_requests: not text".to_string())
                    .and_then(Request::parse)
            })
            .collect::<Result<_, _>>()?;
        let mut conn = Conn::open(port, timeout).map_err(|e| e.to_string())?;
        let mut wire = Vec::new();
        for (i, r) in reqs.iter().enumerate() {
            wire.extend(r.encode(&headers, i + 1 == reqs.len()));
        }
        conn.send(&wire).map_err(|e| e.to_string())?;
        for r in &reqs {
            out.push(
                conn.read_response(r.method == "HEAD")
                    .map_err(|e| e.to_string()),
            );
        }
        return Ok(out);
    }
    let Some(req) = block.get("request") else {
        return Err(
            "the block has no --- request (nor pipelined_requests, raw_request, exec)".into(),
        );
    };
    for item in req.items() {
        let text = item.text().ok_or("request: not text")?;
        let r = Request::parse(text)?;
        let res = Conn::open(port, timeout).and_then(|mut c| {
            c.send(&r.encode(&headers, true))?;
            c.read_response(r.method == "HEAD")
        });
        out.push(res.map_err(|e| e.to_string()));
    }
    Ok(out)
}

/// `--- exec`: the command's standard output is the response body.
fn run_exec(ctx: &FileCtx, block: &Block, timeout: Duration) -> Exchange {
    use std::io::Write;
    let cmd = block.text("exec").unwrap_or_default();
    let mut child = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .current_dir(&ctx.cwd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| format!("exec: cannot run sh: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(block.text("stdin").unwrap_or_default().as_bytes());
    }
    let end = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() > end => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("exec: timed out after {timeout:?}"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("exec: {e}")),
        }
    }
    let out = child.wait_with_output().map_err(|e| format!("exec: {e}"))?;
    Ok(Response {
        status: 200,
        headers: Vec::new(),
        body: out.stdout,
    })
}

fn run_block(ctx: &mut FileCtx, block: &Block) -> Outcome {
    if let Some(reason) = skip_reason(block) {
        return Outcome::Skip(reason);
    }
    // Translate first: an unsupported snippet skips the block before anything starts.
    let locations = match block.text("config").map(translate::config_locations) {
        Some(Ok(r)) => r,
        Some(Err(Unsupported(u))) => return Outcome::Skip(u),
        None if block.has("config") => return Outcome::Skip("--- config is not text".into()),
        None => Vec::new(),
    };
    let mut locations = locations;
    let init = block.text("extra_init_by_lua");
    if let Some(code) = init {
        locations.push(InitHook::Init.route(code));
    }
    let init_worker = block.text("extra_init_worker_by_lua");
    if let Some(code) = init_worker {
        locations.push(InitHook::InitWorker.route(code));
    }
    // Test::Nginx restarts nginx before each block (unless the file uses HUP reloads), which
    // empties the shared dictionaries; `ensure` empties those of a gateway kept from the
    // previous block. Module-level Lua state is the fresh VMs' business.
    let flush_shared = !ctx.file.settings.use_hup;
    if flush_shared {
        locations.push(gateway::flush_shared_route());
    }
    let mut main_env = ctx.prologue_env.clone();
    match block.text("main_config").map(translate::main_config) {
        Some(Ok(e)) => main_env.extend(e),
        Some(Err(Unsupported(u))) => return Outcome::Skip(u),
        None => {}
    };
    let mut mock = match block.text("http_config").map(translate::http_config) {
        Some(Ok(h)) => h,
        Some(Err(Unsupported(u))) => return Outcome::Skip(u),
        None => Default::default(),
    };
    if let Some(extra) = block.text("upstream_server_config") {
        let wrapped = format!("server {{ listen {}; {extra} }}", UPSTREAM_PORTS[0]);
        match translate::http_config(&wrapped) {
            Ok(h) => {
                for mut r in h.routes {
                    r["vars"] = serde_json::json!([[
                        "server_port",
                        "in",
                        UPSTREAM_PORTS
                            .iter()
                            .map(|p| p.to_string())
                            .collect::<Vec<_>>()
                    ]]);
                    mock.routes.push(r);
                }
            }
            Err(Unsupported(u)) => return Outcome::Skip(format!("upstream_server_config: {u}")),
        }
    }
    if mock.ports.contains(&ctx.opts.port) {
        return Outcome::Skip(format!(
            "http_config: a mock server on the test port {}",
            ctx.opts.port
        ));
    }

    ctx.block_standalone = block.has("apisix_yaml") || block.has("apisix_json");
    let user_routes = if let Some(y) = block.text("apisix_yaml") {
        match serde_norway::from_str::<serde_norway::Value>(y) {
            Ok(v) => v,
            Err(e) => return Outcome::Fail(vec![format!("apisix_yaml is not YAML: {e}")]),
        }
    } else if let Some(j) = block.text("apisix_json") {
        match serde_json::from_str::<Json>(j) {
            Ok(v) => yaml_of(&v),
            Err(e) => return Outcome::Fail(vec![format!("apisix_json is not JSON: {e}")]),
        }
    } else {
        ymap()
    };
    // realip directives inside the block's locations become the gateway's; those of mock
    // servers' locations have nothing to configure (the test upstream keeps the peer).
    let location_real_ip = translate::take_location_real_ip(&mut locations);
    let _ = translate::take_location_real_ip(&mut mock.routes);
    mock.real_ip.extend(location_real_ip);
    let gw_config = match ctx.gateway_config(block, &mock.real_ip) {
        Ok(c) => c,
        Err(e) => return Outcome::Fail(vec![e]),
    };

    // The test upstream: server.lua on the APISIX ports, plus the block's mock servers.
    let mut up_routes = mock.routes.clone();
    let mut up_ports = Vec::new();
    let mut up_resources = ymap();
    let mut up_tls = None;
    if let Some(server) = &ctx.server_lua {
        up_ports.extend(UPSTREAM_PORTS);
        let certs = ctx.test_root.join("certs");
        if let (Ok(cert), Ok(key)) = (
            std::fs::read_to_string(certs.join("apisix.crt")),
            std::fs::read_to_string(certs.join("apisix.key")),
        ) {
            up_tls = Some(UPSTREAM_TLS_PORT);
            set_path(
                &mut up_resources,
                &["ssls"],
                yaml_of(&serde_json::json!([{
                    "id": "moongate-test-upstream-tls",
                    "cert": cert,
                    "key": key,
                    "snis": ["*"],
                }])),
            );
        }
        // `s.go()` as a plain call, as APISIX's harness calls it: a tail call would drop the
        // name (`go(): `) nginx puts before the lines that server.lua's handlers log.
        let code = format!(
            "local s = package.loaded['moongate.test_server']\nif not s then s = dofile({}) package.loaded['moongate.test_server'] = s end\ns.go()",
            translate::lua_str(&server.display().to_string())
        );
        up_routes.push(serde_json::json!({
            "id": "moongate-test-server-lua",
            "uri": "/*",
            "vars": [["server_port", "in", UPSTREAM_PORTS.iter().chain([&UPSTREAM_TLS_PORT]).map(|p| p.to_string()).collect::<Vec<_>>()]],
            "lua_handlers": {"content_by_lua": code},
        }));
    }
    for p in &mock.ports {
        if !up_ports.contains(p) {
            up_ports.push(*p);
        }
    }
    if !up_ports.is_empty() {
        let cfg = ctx.upstream_config(block, &up_ports, up_tls, &mock.shared_dicts);
        if let Err(e) = ctx.ensure(true, cfg, Vec::new(), up_ports, up_resources, up_routes) {
            return Outcome::Fail(vec![e]);
        }
    } else {
        ctx.upstream = None;
    }
    let port = ctx.opts.port;
    // What init_by_lua did lives in the VM: a block whose `extra_init_by_lua` is not the one
    // the running gateway ran (or that has none, after one that had) gets a fresh gateway,
    // as nginx restarts between blocks. (APISIX files get fresh VMs before every block, which
    // forgets the code run, so it runs again there.)
    if ctx
        .gateway
        .as_ref()
        .is_some_and(|p| p.init_ran.as_deref() != init)
    {
        ctx.gateway = None;
    }
    ctx.flush_on_reuse = flush_shared && ctx.round == 1;
    if let Err(e) = ctx.ensure(
        false,
        gw_config,
        main_env,
        vec![port],
        user_routes,
        locations,
    ) {
        return Outcome::Fail(vec![e]);
    }
    // nginx runs init_by_lua when it starts (t::APISIX puts `extra_init_by_lua` there, after
    // APISIX's own init): once per gateway process here. init_worker_by_lua runs again at
    // every reload, i.e. before each block under TEST_NGINX_USE_HUP (APISIX's suites use it
    // to flush Redis between blocks). Their lines land before the block's part of the log,
    // as there.
    let fresh = ctx.gateway.as_ref().is_some_and(|p| p.init_ran.is_none());
    let hooks = [
        (InitHook::Init, init.filter(|_| fresh)),
        (InitHook::InitWorker, init_worker),
    ];
    for (hook, code) in hooks {
        let Some(code) = code else { continue };
        let before = (
            ctx.gateway.as_ref().map(|p| p.log_offset()).unwrap_or(0),
            ctx.upstream.as_ref().map(|p| p.log_offset()).unwrap_or(0),
        );
        if let Err(e) = hook.run(port) {
            return Outcome::Fail(vec![e, log_tail(ctx, before)]);
        }
        if hook == InitHook::Init
            && let Some(p) = ctx.gateway.as_mut()
        {
            p.init_ran = Some(code.to_string());
        }
    }

    let offsets = (
        ctx.gateway.as_ref().map(|p| p.log_offset()).unwrap_or(0),
        ctx.upstream.as_ref().map(|p| p.log_offset()).unwrap_or(0),
    );
    let access_offset = ctx
        .gateway
        .as_ref()
        .map(|p| p.access_log_offset())
        .unwrap_or(0);
    let timeout = block
        .text("timeout")
        .and_then(parse_secs)
        .unwrap_or(Duration::from_secs(3));
    let exchanges = if block.has("exec") {
        vec![run_exec(ctx, block, timeout)]
    } else {
        match send_requests(ctx, block, timeout) {
            Ok(x) => x,
            Err(e) => return Outcome::Fail(vec![e]),
        }
    };
    if let Some(w) = block.text("wait").and_then(parse_secs) {
        std::thread::sleep(w);
    }

    let mut fails = Vec::new();
    let abort = block.has("abort");
    if !block.has("ignore_response") {
        for (i, ex) in exchanges.iter().enumerate() {
            let resp = match ex {
                Ok(r) => r,
                Err(e) if abort && e.contains("timed out") => continue,
                Err(e) => {
                    fails.push(format!("request {}: {e}", i + 1));
                    continue;
                }
            };
            fails.extend(check_response(block, i, resp).into_iter().map(|f| {
                if exchanges.len() > 1 {
                    format!("request {}: {f}", i + 1)
                } else {
                    f
                }
            }));
        }
    }
    fails.extend(check_logs(ctx, block, offsets));
    if let Some(want) = block.get("access_log") {
        fails.extend(check_access_log(ctx, want, access_offset));
    }
    if fails.is_empty() {
        Outcome::Pass
    } else {
        fails.push(log_tail(ctx, offsets));
        Outcome::Fail(fails)
    }
}

fn check_response(block: &Block, i: usize, resp: &Response) -> Vec<String> {
    let mut fails = Vec::new();
    let body = String::from_utf8_lossy(&resp.body).into_owned();
    let like = block.get("error_code_like").and_then(|v| check::nth(v, i));
    match block.get("error_code").and_then(|v| check::nth(v, i)) {
        _ if like.is_some() => {
            if let Some(Err(e)) = like.map(|w| check::status_like(w, resp)) {
                fails.push(e);
            }
        }
        Some(want) => {
            if let Err(e) = check::status(want, resp) {
                fails.push(e);
            }
        }
        // Test::Nginx expects 200 when the block names no status.
        None if resp.status != 200 => fails.push(format!(
            "status {} (the block expects 200 by default)",
            resp.status
        )),
        None => {}
    }
    let expect = |name: &str| block.get(name).and_then(|v| check::nth(v, i));
    let body_checks = [
        expect("response_body").map(|w| check::body(w, &body)),
        expect("response_body_like").map(|w| check::like_value(w, &body, true)),
        expect("response_body_unlike").map(|w| check::like_value(w, &body, false)),
    ];
    fails.extend(body_checks.into_iter().flatten().filter_map(Result::err));
    if let Some(want) = block
        .get("response_headers")
        .and_then(|v| check::nth(v, i))
        .and_then(|v| v.text())
    {
        fails.extend(check::headers(want, resp));
    }
    if let Some(want) = block
        .get("response_headers_like")
        .and_then(|v| check::nth(v, i))
        .and_then(|v| v.text())
    {
        fails.extend(check::headers_like(want, resp));
    }
    fails
}

fn check_logs(ctx: &FileCtx, block: &Block, offsets: (u64, u64)) -> Vec<String> {
    let read = || {
        let mut log = ctx
            .gateway
            .as_ref()
            .map(|p| p.log_since(offsets.0))
            .unwrap_or_default();
        if let Some(u) = &ctx.upstream {
            log.push_str(&u.log_since(offsets.1));
        }
        log
    };
    // Lines from the log phase and timers may land just after the response: positive
    // expectations are re-read for a moment; negative ones wait a little first.
    let end = Instant::now() + Duration::from_secs(2);
    let mut fails;
    loop {
        let log = read();
        fails = Vec::new();
        if let Some(v) = block.get("error_log") {
            fails.extend(check::missing_from_log(v, &log));
        }
        if let (Some(p), Some(out)) = (block.get("grep_error_log"), block.get("grep_error_log_out"))
            && let Err(e) = check::grep_log(p, out, &log)
        {
            fails.push(e);
        }
        if fails.is_empty() || Instant::now() > end {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(v) = block.get("no_error_log") {
        if !block.has("wait") {
            std::thread::sleep(Duration::from_millis(100));
        }
        fails.extend(check::present_in_log(v, &read()));
    }
    fails
}

/// `--- access_log`: each line (or `eval` item) appears in the gateway's access log; the line
/// is written after the response, so it is re-read for a moment.
fn check_access_log(ctx: &FileCtx, want: &super::block::Value, offset: u64) -> Vec<String> {
    let end = Instant::now() + Duration::from_secs(2);
    loop {
        let log = ctx
            .gateway
            .as_ref()
            .map(|p| p.access_log_since(offset))
            .unwrap_or_default();
        let missing: Vec<String> = check::missing_from_log(want, &log)
            .into_iter()
            .map(|m| {
                format!(
                    "{} (access log: {log:?})",
                    m.replacen("error_log:", "access_log:", 1)
                        .replace("the error log", "the access log")
                )
            })
            .collect();
        if missing.is_empty() || Instant::now() > end {
            return missing;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last lines the block wrote to the error logs, shown under a failure.
fn log_tail(ctx: &FileCtx, offsets: (u64, u64)) -> String {
    let mut log = ctx
        .gateway
        .as_ref()
        .map(|p| p.log_since(offsets.0))
        .unwrap_or_default();
    if let Some(u) = &ctx.upstream {
        log.push_str(&u.log_since(offsets.1));
    }
    let mut shown: Vec<&str> = log.lines().rev().take(15).collect();
    shown.reverse();
    if shown.is_empty() {
        shown.push("(empty)");
    }
    format!(
        "error log of this block (last lines):\n  {}",
        shown.join("\n  ")
    )
}
