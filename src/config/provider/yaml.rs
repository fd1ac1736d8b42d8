//! The standalone YAML provider: `conf/apisix.yaml`, loaded at start and reloaded within a
//! second of any change (or at once on SIGHUP). The watcher is shared with the other
//! file-based providers through [`Source`].
//!
//! The watcher polls the file's size, modification time and content hash on its own thread, so
//! it needs no runtime and no inotify. A new version is parsed and compiled off the request
//! path, then published with one atomic swap; a bad version is logged with every error and the
//! previous snapshot keeps serving.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;

use crate::config::snapshot::{Builder, Item, Snapshot};
use crate::config::standalone::{self, ConfigError, Parsed, Resources};
use crate::upstream::Resolve;

/// How often the file is checked for changes.
const POLL: Duration = Duration::from_millis(200);

/// The result of reading the file once.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one value per file read, never stored
pub enum Loaded {
    Complete(Resources),
    /// The file does not end with `#END` yet.
    Incomplete,
}

/// Reads and parses the file.
pub fn load(path: &Path) -> Result<Loaded, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError::new(
            path.display().to_string(),
            "(file)",
            format!("cannot read: {e}"),
        )]
    })?;
    match standalone::parse(&text)? {
        Parsed::Complete(r) => Ok(Loaded::Complete(r)),
        Parsed::Incomplete => Ok(Loaded::Incomplete),
    }
}

/// A running watcher; stops when [`YamlWatcher::stop`] is called or it is dropped.
pub struct YamlWatcher {
    stop: Arc<AtomicBool>,
    now: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

#[derive(PartialEq, Clone, Copy)]
struct Stamp {
    len: u64,
    mtime: Option<SystemTime>,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        len: m.len(),
        mtime: m.modified().ok(),
    })
}

fn hash(text: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// How a watched file's text becomes resources: the standalone format here, Envoy's in
/// `provider::envoy`.
pub trait Source: Send + 'static {
    /// Parses one version of the file; `Ok(None)` when it is not complete yet.
    fn parse(&mut self, path: &Path, text: &str) -> Result<Option<Resources>, Vec<ConfigError>>;
    /// Restates errors found while compiling the resources in the file's own terms.
    fn locate(&self, errors: Vec<ConfigError>) -> Vec<ConfigError> {
        errors
    }
}

/// APISIX's standalone `apisix.yaml`.
struct Standalone;

impl Source for Standalone {
    fn parse(&mut self, path: &Path, text: &str) -> Result<Option<Resources>, Vec<ConfigError>> {
        match standalone::parse(text)? {
            Parsed::Complete(r) => Ok(Some(r)),
            Parsed::Incomplete => {
                log::warn!(
                    "{} does not end with #END yet; waiting for the rest of the file",
                    path.display()
                );
                Ok(None)
            }
        }
    }
}

/// The standalone format as a [`Source`].
pub fn standalone_source() -> Box<dyn Source> {
    Box::new(Standalone)
}

/// Starts watching `path`, publishing new snapshots into `store`.
pub fn watch(
    path: PathBuf,
    store: Arc<ArcSwap<Snapshot>>,
    resolver: Arc<dyn Resolve + Send + Sync>,
    plugins: Arc<crate::plugin::registry::PluginRegistry>,
    builder: Builder,
) -> YamlWatcher {
    watch_source(
        path,
        Box::new(Standalone),
        store,
        resolver,
        plugins,
        builder,
    )
}

/// Starts watching `path`, read by `source`, publishing new snapshots into `store`.
/// `builder` holds what `store` serves now (see [`Snapshot::build_followed`]): each new
/// version of the file is applied to it as the difference to the previous one.
pub fn watch_source(
    path: PathBuf,
    mut source: Box<dyn Source>,
    store: Arc<ArcSwap<Snapshot>>,
    resolver: Arc<dyn Resolve + Send + Sync>,
    plugins: Arc<crate::plugin::registry::PluginRegistry>,
    mut builder: Builder,
) -> YamlWatcher {
    let stop = Arc::new(AtomicBool::new(false));
    let now = Arc::new(AtomicBool::new(false));
    let (s, n) = (stop.clone(), now.clone());
    let thread = std::thread::Builder::new()
        .name("moongate-config".into())
        .spawn(move || {
            let mut last_stamp = stamp(&path);
            let mut last_hash = std::fs::read_to_string(&path).ok().map(|t| hash(&t));
            while !s.load(Ordering::Relaxed) {
                std::thread::park_timeout(POLL);
                let forced = n.swap(false, Ordering::Relaxed);
                let st = stamp(&path);
                if !forced && st == last_stamp {
                    continue;
                }
                last_stamp = st;
                let Ok(text) = std::fs::read_to_string(&path) else {
                    log::error!("cannot read {}; keeping the current routes", path.display());
                    continue;
                };
                let h = hash(&text);
                if !forced && Some(h) == last_hash {
                    continue;
                }
                last_hash = Some(h);
                apply(
                    &path,
                    &text,
                    source.as_mut(),
                    &store,
                    &mut builder,
                    resolver.as_ref(),
                    &plugins.catalog(),
                );
            }
        })
        .ok();
    YamlWatcher { stop, now, thread }
}

/// Parses `text` and publishes it, or logs why not. The file is all or nothing: when any
/// resource in it cannot be used, the builder is put back as it was and nothing changes.
fn apply(
    path: &Path,
    text: &str,
    source: &mut dyn Source,
    store: &ArcSwap<Snapshot>,
    builder: &mut Builder,
    resolver: &dyn Resolve,
    catalog: &Arc<crate::plugin::Catalog>,
) {
    let resources = match source.parse(path, text) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(errors) => return report(path, &errors),
    };
    let version = store.load().version + 1;
    // Every item carries this version; the builder keeps the revision of items that did not
    // change, so their `conf_version` (and the plugin caches keyed on it) stays.
    let items = Item::all(resources)
        .into_iter()
        .map(|i| (i, version))
        .collect();
    let applied = builder.sync(items, version, resolver, catalog);
    if !applied.errors.is_empty() {
        if applied.full {
            // Chains compiled against another catalog cannot be put back one by one: the
            // next version of the file is compiled from scratch.
            *builder = Builder::new();
        } else {
            builder.apply(applied.undo, version, resolver, catalog);
        }
        let errors: Vec<ConfigError> = applied.errors.into_iter().map(|e| e.error).collect();
        return report(path, &source.locate(errors));
    }
    if applied.changed {
        let s = builder.snapshot(version);
        let n = s.routes.len();
        store.store(Arc::new(s));
        log::info!(target: "notice", "loaded {} (config version {version}, {n} routes; {} compiled)", path.display(), applied.routes_compiled);
    }
}

fn report(path: &Path, errors: &[ConfigError]) {
    let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
    log::error!(
        "invalid {}, keeping the current routes: {}",
        path.display(),
        list.join("; ")
    );
}

impl YamlWatcher {
    /// Re-reads the file now (SIGHUP), even if it looks unchanged.
    /// A handle that forces a reload from any thread (the plugin registry's reload hook).
    pub fn reloader(&self) -> impl Fn() + Send + Sync + 'static {
        let now = self.now.clone();
        let thread = self.thread.as_ref().map(|t| t.thread().clone());
        move || {
            now.store(true, Ordering::Relaxed);
            if let Some(t) = &thread {
                t.unpark();
            }
        }
    }

    pub fn reload_now(&self) {
        self.now.store(true, Ordering::Relaxed);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
    }
}

impl Drop for YamlWatcher {
    fn drop(&mut self) {
        self.halt();
    }
}
