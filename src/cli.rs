//! The commands behind `moongate run`, `check` and `echo`: process setup at the edge, where
//! errors become a message and an exit code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use arc_swap::ArcSwap;

use crate::config::node::{NodeConfig, Provider};
use crate::config::provider::{envoy, yaml};
use crate::config::snapshot::{Builder, Snapshot};
use crate::lua::ngx::shared::SharedDicts;
use crate::lua::vm::VmOptions;
use crate::observability::access::{Escape, Format};
use crate::observability::errlog::{self, NginxLevel};
use crate::plugin::Catalog;
use crate::plugin::registry::PluginRegistry;
use crate::proxy::{LuaSettings, Settings, Shared};
use crate::server::timed_io::ClientTimeouts;
use crate::server::{ListenSpec, Server, Serves};
use crate::upstream::SystemResolver;

/// Loads `config.yaml`, printing every error when it is invalid. The warnings (keys moongate
/// does not read) are returned, to be logged once the error log is open.
fn load_node(prefix: &Path, config: &Path) -> anyhow::Result<(NodeConfig, Vec<String>)> {
    let file = prefix.join(config);
    match NodeConfig::load(prefix, &file) {
        Ok(loaded) => Ok(loaded),
        Err(errors) => {
            for e in &errors {
                eprintln!("moongate: {}: {e}", file.display());
            }
            bail!("{} error(s) in {}", errors.len(), file.display())
        }
    }
}

fn settings(node: &NodeConfig) -> anyhow::Result<Settings> {
    let access_log = match &node.access_log {
        Some(path) => {
            let escape = Escape::parse(&node.access_log_format_escape).with_context(|| {
                format!(
                    "nginx_config.http.access_log_format_escape: unknown value {:?} (default, json, none)",
                    node.access_log_format_escape
                )
            })?;
            let format = Format::compile(&node.access_log_format, escape)?;
            Some((path.clone(), format))
        }
        None => None,
    };
    Ok(Settings {
        timeouts: ClientTimeouts {
            first_byte: node.connection_idle_timeout,
            header: node.client_header_timeout,
            body: node.client_body_timeout,
            send: node.send_timeout,
            keepalive: node.keepalive_timeout,
            http2_idle: node.http2_idle_timeout,
        },
        client_max_body_size: node.client_max_body_size,
        max_line: node.large_client_header_buffers.1,
        keepalive_requests: node.keepalive_requests,
        prometheus_export_uri: node.prometheus_export_uri.clone(),
        prometheus_prefix: node.prometheus_prefix.clone(),
        access_log,
        real_ip: crate::proxy::realip::RealIp::new(
            &node.real_ip_header,
            node.real_ip_recursive,
            &node.real_ip_from,
        )
        .map_err(|e| anyhow::anyhow!("nginx_config.http.real_ip_from: {e}"))?,
        trusted_addresses: if node.trusted_addresses.is_empty() {
            None
        } else {
            Some(
                crate::router::ip::IpSet::parse(&node.trusted_addresses)
                    .map_err(|e| anyhow::anyhow!("apisix.trusted_addresses: {e}"))?,
            )
        },
    })
}

/// The VM settings every worker (and the plugin checker) uses.
fn vm_options(prefix: &Path, node: &NodeConfig) -> VmOptions {
    let mut o = VmOptions::for_prefix(prefix);
    o.extra_lua_path = node.extra_lua_path.clone();
    o.memory_limit = (node.lua_memory_limit > 0).then_some(node.lua_memory_limit as usize);
    o.worker_count = node.worker_processes;
    o.shared_dicts = SharedDicts::new(&node.shared_dicts);
    o.node_config_json = std::sync::Arc::from(node.raw.to_string());
    o
}

/// Loads the enabled plugins, reporting the ones that fail as APISIX does (and going on).
fn load_catalog(opts: &VmOptions, node: &NodeConfig, quiet: bool) -> anyhow::Result<Catalog> {
    let (catalog, errors) =
        Catalog::load(opts, node.plugins.as_deref()).context("cannot start the plugin loader")?;
    for e in &errors {
        log::error!("{e}");
        if !quiet {
            eprintln!("moongate: {e}");
        }
    }
    Ok(catalog)
}

/// Loads and compiles the route file once.
fn initial_snapshot(
    path: &Path,
    resolver: &SystemResolver,
    catalog: &Arc<Catalog>,
) -> anyhow::Result<(Snapshot, Builder)> {
    let resources = match yaml::load(path) {
        Ok(yaml::Loaded::Complete(r)) => r,
        Ok(yaml::Loaded::Incomplete) => {
            log::warn!(
                "{} does not end with the #END marker yet; starting with no routes until it does",
                path.display()
            );
            Default::default()
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("moongate: {}: {e}", path.display());
            }
            bail!("{} error(s) in {}", errors.len(), path.display())
        }
    };
    match Snapshot::build_followed(resources, 1, resolver, catalog) {
        Ok(s) => Ok(s),
        Err(errors) => {
            for e in &errors {
                eprintln!("moongate: {}: {e}", path.display());
            }
            bail!("{} error(s) in {}", errors.len(), path.display())
        }
    }
}

/// Where the running node's config comes from.
enum ConfigSource {
    /// The standalone file or an Envoy file, watched.
    File(yaml::YamlWatcher, &'static str),
    Store(crate::admin::start::ConfigPlane),
}

/// Loads and compiles an Envoy file once; its warnings go to the error log and stderr.
fn initial_envoy(
    path: &Path,
    resolver: &SystemResolver,
    catalog: &Arc<Catalog>,
    quiet: bool,
) -> anyhow::Result<(Snapshot, Builder, envoy::EnvoyConfig)> {
    let fail = |errors: &[crate::config::standalone::ConfigError]| {
        for e in errors {
            eprintln!("moongate: {}: {e}", path.display());
        }
        anyhow::anyhow!("{} error(s) in {}", errors.len(), path.display())
    };
    let cfg = envoy::load(path).map_err(|e| fail(&e))?;
    for w in &cfg.warnings {
        log::warn!("{w}");
        if !quiet {
            eprintln!("moongate: warning: {w}");
        }
    }
    let resources = cfg.resources.clone();
    let (snapshot, builder) = Snapshot::build_followed(resources, 1, resolver, catalog)
        .map_err(|e| fail(&envoy::locate(e, &cfg.located())))?;
    Ok((snapshot, builder, cfg))
}

/// Where routes come from: the node config's provider, or `--envoy FILE`.
fn provider_of(node: &NodeConfig, envoy_file: Option<&Path>) -> Provider {
    match envoy_file {
        Some(p) => Provider::Envoy {
            path: p.to_path_buf(),
        },
        None => node.provider.clone(),
    }
}

/// `moongate run`; `envoy_file` (`--envoy FILE`) reads routes and listeners from an Envoy file.
pub fn run(prefix: &Path, config: &Path, envoy_file: Option<&Path>) -> anyhow::Result<()> {
    errlog::install();
    let signals = Signals::register()?;
    let (node, warnings) = load_node(prefix, config)?;
    crate::upstream::dns::set_valid(node.dns_resolver_valid);
    let level = NginxLevel::parse(&node.error_log_level).with_context(|| {
        format!(
            "nginx_config.error_log_level: unknown level {:?}",
            node.error_log_level
        )
    })?;
    errlog::configure(&node.error_log, level)
        .with_context(|| format!("cannot open the error log {}", node.error_log.display()))?;
    for w in &warnings {
        log::warn!("{w}");
        eprintln!("moongate: warning: {w}");
    }

    let resolver = Arc::new(SystemResolver);
    if let Some(ca) = &node.ssl_trusted_certificate {
        crate::lua::ngx::socket::set_trusted_certificate(ca).with_context(|| {
            format!(
                "apisix.ssl.ssl_trusted_certificate: cannot use {}",
                ca.display()
            )
        })?;
    }
    let vm = vm_options(prefix, &node);
    let catalog = load_catalog(&vm, &node, false)?;
    let registry = Arc::new(PluginRegistry::new(catalog, vm, node.plugins.clone()));
    let node_specs: Vec<ListenSpec> = node
        .listen
        .iter()
        .map(|l| ListenSpec {
            addr: SocketAddr::new(l.ip, l.port),
            http2: l.http2,
            serves: Serves::Proxy,
        })
        .collect();
    let provider = provider_of(&node, envoy_file);
    let routes = match &provider {
        Provider::Yaml { path } | Provider::Envoy { path } => path.clone(),
        Provider::Embedded { seed, .. } => seed.clone(),
        Provider::Etcd { .. } => PathBuf::new(),
    };
    let (store, config_source, specs) = match &provider {
        Provider::Yaml { path } => {
            let (snapshot, builder) = initial_snapshot(path, &resolver, &registry.catalog())?;
            let store = Arc::new(ArcSwap::from_pointee(snapshot));
            let watcher = yaml::watch_source(
                path.clone(),
                yaml::standalone_source(),
                store.clone(),
                resolver,
                registry.clone(),
                builder,
            );
            // A plugin reload recompiles the routes against the new catalog.
            registry.on_reload(Box::new(watcher.reloader()));
            (store, ConfigSource::File(watcher, "yaml"), node_specs)
        }
        Provider::Envoy { path } => {
            let (snapshot, builder, cfg) =
                initial_envoy(path, &resolver, &registry.catalog(), false)?;
            // The Envoy file's listeners are where its routes are served: they replace
            // apisix.node_listen.
            let specs = cfg
                .listeners
                .iter()
                .map(|l| ListenSpec {
                    addr: l.addr,
                    http2: l.http2,
                    serves: Serves::Proxy,
                })
                .collect();
            let store = Arc::new(ArcSwap::from_pointee(snapshot));
            let watcher = yaml::watch_source(
                path.clone(),
                Box::new(envoy::EnvoySource::new(&cfg)),
                store.clone(),
                resolver,
                registry.clone(),
                builder,
            );
            registry.on_reload(Box::new(watcher.reloader()));
            (store, ConfigSource::File(watcher, "envoy"), specs)
        }
        Provider::Embedded { data_file, seed } => {
            let published = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
            let plane = crate::admin::start::embedded(
                data_file,
                seed,
                node.admin.as_ref(),
                prefix,
                published.clone(),
                resolver,
                registry.clone(),
            )
            .context("cannot start the config plane")?;
            (published, ConfigSource::Store(plane), node_specs)
        }
        Provider::Etcd { etcd, last_good } => {
            let published = Arc::new(ArcSwap::from_pointee(Snapshot::empty()));
            let plane = crate::admin::start::etcd(
                etcd,
                node.role,
                last_good,
                node.admin.as_ref(),
                prefix,
                published.clone(),
                resolver,
                registry.clone(),
            )
            .context("cannot start the config plane")?;
            // A control_plane node serves the Admin API only.
            let specs = if node.role.serves_data() {
                node_specs
            } else {
                Vec::new()
            };
            (published, ConfigSource::Store(plane), specs)
        }
    };

    let specs = with_control_listener(specs, &node)?;
    let specs = with_prometheus_export(specs, &node, &registry.catalog())?;
    let shared = Arc::new(Shared {
        admin: match &config_source {
            ConfigSource::Store(p) if p.serve_on_data_port => {
                p.admin.as_ref().map(|a| a.handle.clone())
            }
            _ => None,
        },
        control_on_data_port: node.control.serve_on_data_port,
        store,
        settings: settings(&node)?,
        lua: Some(LuaSettings {
            registry: registry.clone(),
            phase_timeout: node.lua_phase_timeout,
        }),
    });
    // A control_plane node has no proxy listener; it still serves the control API when on.
    let server = if specs.is_empty() {
        None
    } else {
        Some(Server::start(
            &specs,
            node.worker_processes,
            shared,
            node.worker_shutdown_timeout,
        )?)
    };
    let addrs: Vec<String> = specs
        .iter()
        .filter(|s| s.serves == Serves::Proxy)
        .map(|s| s.addr.to_string())
        .collect();
    let mut control = match node.control.listen {
        Some(a) => format!(", control API on http://{a}/v1"),
        None => String::new(),
    };
    if let Some(s) = specs.iter().find(|s| s.serves == Serves::PrometheusExport) {
        control.push_str(&format!(
            ", prometheus metrics on http://{}{}",
            s.addr, node.prometheus_export_uri
        ));
    }
    let source = match &config_source {
        ConfigSource::File(_, kind) => {
            format!("routes from {} ({kind} provider)", routes.display())
        }
        ConfigSource::Store(p) => p.describe(),
    };
    let listening = if addrs.is_empty() {
        "no data-plane listener".to_string()
    } else {
        format!(
            "{} worker(s), listening on {}",
            node.worker_processes,
            addrs.join(", ")
        )
    };
    let banner = format!(
        "moongate {} started ({}, {} provider): {listening}, {source}{control}",
        env!("CARGO_PKG_VERSION"),
        node.role.name(),
        provider.name(),
    );
    log::info!(target: "notice", "{banner}");
    eprintln!("{banner}");

    let watcher = match &config_source {
        ConfigSource::File(w, _) => Some(w),
        ConfigSource::Store(_) => None,
    };
    signals.wait(watcher, &registry);
    log::info!(target: "notice", "shutting down: draining connections");
    if let Some(server) = server {
        server.shutdown();
    }
    match config_source {
        ConfigSource::File(w, _) => w.stop(),
        ConfigSource::Store(p) => p.stop(),
    }
    log::info!(target: "notice", "exited");
    Ok(())
}

/// Adds the control API's listener (`apisix.control`) to the proxy's, refusing a port another
/// listener of this node already has, as APISIX refuses it.
fn with_control_listener(
    mut specs: Vec<ListenSpec>,
    node: &NodeConfig,
) -> anyhow::Result<Vec<ListenSpec>> {
    let Some(addr) = node.control.listen else {
        return Ok(specs);
    };
    if specs.iter().any(|s| s.addr.port() == addr.port()) {
        bail!(
            "apisix.control: control port {} conflicts with node_listen",
            addr.port()
        );
    }
    if let Some(a) = &node.admin
        && a.listen.port() == addr.port()
    {
        bail!(
            "apisix.control: control port {} conflicts with the Admin API's port",
            addr.port()
        );
    }
    specs.push(ListenSpec {
        addr,
        http2: false,
        serves: Serves::Control,
    });
    Ok(specs)
}

/// Adds the prometheus plugin's export listener (`plugin_attr.prometheus.export_addr`) when
/// the plugin is loaded and this node proxies, refusing a port another listener has.
fn with_prometheus_export(
    mut specs: Vec<ListenSpec>,
    node: &NodeConfig,
    catalog: &crate::plugin::Catalog,
) -> anyhow::Result<Vec<ListenSpec>> {
    let Some(addr) = node.prometheus_export else {
        return Ok(specs);
    };
    // APISIX's Lua plugin or the native one: either serves the metrics.
    let loaded = catalog.get("prometheus").is_some();
    if !loaded || !specs.iter().any(|s| s.serves == Serves::Proxy) {
        return Ok(specs);
    }
    if let Some(s) = specs.iter().find(|s| s.addr.port() == addr.port()) {
        bail!(
            "plugin_attr.prometheus.export_addr: prometheus port {} conflicts with {}",
            addr.port(),
            if s.serves == Serves::Control {
                "the control API's port"
            } else {
                "node_listen"
            }
        );
    }
    if let Some(a) = &node.admin
        && a.listen.port() == addr.port()
    {
        bail!(
            "plugin_attr.prometheus.export_addr: prometheus port {} conflicts with the Admin API's port",
            addr.port()
        );
    }
    specs.push(ListenSpec {
        addr,
        http2: false,
        serves: Serves::PrometheusExport,
    });
    Ok(specs)
}

/// The process signals moongate acts on, registered before any listener opens: a signal that
/// arrives before its handler exists would take nginx's default action (SIGHUP would kill).
struct Signals {
    rt: tokio::runtime::Runtime,
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn register() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _guard = rt.enter();
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
            hup: signal(SignalKind::hangup())?,
            rt,
        })
    }

    /// Blocks until a stop signal; SIGHUP reloads the plugins (and the route file).
    fn wait(mut self, watcher: Option<&yaml::YamlWatcher>, registry: &PluginRegistry) {
        let Signals {
            rt,
            term,
            int,
            quit,
            hup,
        } = &mut self;
        rt.block_on(async {
            loop {
                tokio::select! {
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    _ = quit.recv() => break,
                    _ = hup.recv() => {
                        log::info!(target: "notice", "SIGHUP: reloading the plugins and the routes");
                        match registry.reload() {
                            Ok(errors) => {
                                for e in errors {
                                    log::error!("{e}");
                                }
                            }
                            Err(e) => log::error!("cannot reload the plugins: {e}"),
                        }
                        if let Some(w) = watcher {
                            w.reload_now();
                        }
                    }
                }
            }
        });
    }
}

/// `moongate check`: every error in both files, non-zero when there is any.
pub fn check(prefix: &Path, config: &Path, envoy_file: Option<&Path>) -> anyhow::Result<()> {
    let (node, warnings) = load_node(prefix, config)?;
    for w in &warnings {
        println!("warning: {w}");
    }
    settings(&node)?;
    let vm = vm_options(prefix, &node);
    let catalog = Arc::new(load_catalog(&vm, &node, true)?);
    let routes = match provider_of(&node, envoy_file) {
        Provider::Yaml { path } => {
            initial_snapshot(&path, &SystemResolver, &catalog)?;
            path
        }
        Provider::Envoy { path } => {
            let (_, _, cfg) = initial_envoy(&path, &SystemResolver, &catalog, true)?;
            for w in &cfg.warnings {
                println!("warning: {w}");
            }
            path
        }
        Provider::Embedded { seed, .. } => {
            if seed.is_file() {
                initial_snapshot(&seed, &SystemResolver, &catalog)?;
            }
            seed
        }
        Provider::Etcd { etcd, .. } => {
            // Certificates and URLs are checked; etcd itself is only reached by `run`.
            let store = crate::config::store::etcd::EtcdStore::new(&etcd)
                .map_err(|e| anyhow::anyhow!("deployment.etcd: {e}"))?;
            println!(
                "configuration {} is valid; routes are read from {} when running",
                prefix.join(config).display(),
                crate::config::store::Store::describe(&store)
            );
            return Ok(());
        }
    };
    println!(
        "configuration {} and routes {} are valid",
        prefix.join(config).display(),
        routes.display()
    );
    Ok(())
}

/// `moongate echo`.
pub fn echo(listen: SocketAddr, name: String) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("bind() to {listen} failed"))?;
        eprintln!("moongate echo backend {name:?} listening on {listen}");
        crate::echo::serve(listener, name).await?;
        Ok::<(), anyhow::Error>(())
    })?;
    Ok(())
}

/// The options of `moongate test`.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// `.t` files or directories of them, run in order.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// An APISIX checkout: its `t/` joins the Lua path and its `t/lib/server.lua` serves the
    /// test upstreams; files run with the checkout as working directory.
    #[arg(long = "apisix-root")]
    pub apisix_root: Option<PathBuf>,
    /// A Lua root like moongate's `lua/` (modules, and plugins under `plugins/`); repeatable.
    /// Default: `./lua` when it exists.
    #[arg(long = "lua-path")]
    pub lua_path: Vec<PathBuf>,
    /// The test upstream's Lua module (default: `<test root>/lib/server.lua`).
    #[arg(long = "server-lua")]
    pub server_lua: Option<PathBuf>,
    /// Run one block only: `FILE:N` (a file name or path suffix and its block number).
    #[arg(long = "only")]
    pub only: Option<String>,
    /// Files to run at once (the fixed test ports make this 1 in practice; see docs/testing.md).
    #[arg(long = "jobs", default_value_t = 1)]
    pub jobs: usize,
    /// Keep each file's gateway prefix (config, routes, logs) and print where.
    #[arg(long = "keep-logs")]
    pub keep_logs: bool,
    /// The gateway's port (`$TEST_NGINX_SERVER_PORT`).
    #[arg(long = "port", default_value_t = 1984)]
    pub port: u16,
}

/// `moongate test`: true when no block failed.
pub fn test(args: TestArgs) -> anyhow::Result<bool> {
    let only = match &args.only {
        Some(spec) => {
            let (file, n) = spec
                .rsplit_once(':')
                .with_context(|| format!("--only {spec}: expected FILE:BLOCK"))?;
            let n: usize = n
                .parse()
                .with_context(|| format!("--only {spec}: {n:?} is not a block number"))?;
            Some((file.to_string(), n))
        }
        None => None,
    };
    let opts = crate::testing::Options {
        paths: args.paths,
        apisix_root: args.apisix_root,
        lua_paths: args.lua_path,
        server_lua: args.server_lua,
        only,
        jobs: args.jobs,
        keep_logs: args.keep_logs,
        port: args.port,
        binary: std::env::current_exe().context("cannot find the moongate binary")?,
    };
    let summary = crate::testing::run(&opts)?;
    Ok(summary.failed == 0)
}
