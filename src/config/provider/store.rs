//! The data-plane sync: turns the items of a config [`Store`] (embedded or etcd) into
//! snapshots and keeps them current.
//!
//! It lists every key once, compiles a snapshot and publishes it; then it follows the store's
//! watch from the listing's revision, on its own thread — never on a worker. Each batch of
//! events (with whatever else arrived meanwhile) is applied incrementally by a snapshot
//! [`Builder`]: only the resources it touched and what depends on them are compiled again, and
//! the next snapshot shares everything else with the current one, so a change costs the same
//! with 50 routes or 50,000. A compacted watch lists again, and the new listing is applied as
//! the difference to what is held (a re-list rebuilds nothing that did not change). Any other
//! store error is retried with backoff while the last good snapshot keeps serving, and is
//! logged once per outage, not once per retry.
//!
//! Each item is checked on its own, with the same per-item parsing as `conf/apisix.yaml`: an
//! invalid item is skipped with one error naming its key, and every other item still applies.
//! A route whose plugins are unknown or fail their schema is refused as a whole (fail closed:
//! it is never served without its plugins).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use arc_swap::ArcSwap;
use serde_json::Value;

use crate::config::resource::{Id, OpaqueResource};
use crate::config::snapshot::{Builder, Change, Item as BuiltItem, Snapshot};
use crate::config::standalone::KINDS;
use crate::config::store::{Event, Item, Store, StoreError};
use crate::plugin::registry::PluginRegistry;
use crate::upstream::Resolve;

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// What a store key holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRef {
    /// One of [`KINDS`], or `credentials` for `consumers/{name}/credentials/{id}`.
    pub kind: &'static str,
    /// The id as the resource knows it: `1`, `vault/1` for secrets,
    /// `jack/credentials/c1` for credentials (APISIX's standalone form).
    pub id: String,
}

/// `{prefix}/moongate_locations/{id}`: routes kept out of the Admin API's `routes` (see
/// [`key_ref`]).
pub const LOCATIONS_DIR: &str = "moongate_locations/";

/// Maps `{prefix}/routes/1` to (routes, 1). Keys of no resource (`{prefix}/gen_id`,
/// `{prefix}/plugins`) and APISIX's old directory markers (`{prefix}/routes`) give `None`.
pub fn key_ref(prefix: &str, key: &str) -> Option<KeyRef> {
    let rest = key.strip_prefix(prefix)?.strip_prefix('/')?;
    // moongate's own directory of routes the Admin API lists apart (`moongate test` keeps
    // its translation of nginx `location` blocks there): routes to the data plane.
    if let Some(id) = rest.strip_prefix(LOCATIONS_DIR)
        && !id.is_empty()
        && !id.contains('/')
    {
        return Some(KeyRef {
            kind: "routes",
            id: id.to_string(),
        });
    }
    let (kind, id) = rest.split_once('/')?;
    let kind = *KINDS.iter().find(|k| **k == kind)?;
    if id.is_empty() || id.ends_with('/') {
        return None;
    }
    match kind {
        "consumers" => match id.split('/').collect::<Vec<_>>().as_slice() {
            [_] => Some(KeyRef {
                kind,
                id: id.to_string(),
            }),
            [name, "credentials", cid] if !name.is_empty() && !cid.is_empty() => Some(KeyRef {
                kind: "credentials",
                id: id.to_string(),
            }),
            _ => None,
        },
        "secrets" => {
            let (manager, sid) = id.split_once('/')?;
            (!manager.is_empty() && !sid.is_empty() && !sid.contains('/')).then(|| KeyRef {
                kind,
                id: id.to_string(),
            })
        }
        _ if id.contains('/') => None,
        _ => Some(KeyRef {
            kind,
            id: id.to_string(),
        }),
    }
}

/// The id field a kind's value carries.
fn id_field(kind: &str) -> &'static str {
    if kind == "consumers" {
        "username"
    } else {
        "id"
    }
}

/// Turns store items into snapshots, incrementally: it keeps the items as last seen and a
/// snapshot [`Builder`], so each watch batch recompiles only what it touched. Bad items are
/// reported once per revision, not once per batch.
pub struct Compiler {
    prefix: String,
    resolver: Arc<dyn Resolve + Send + Sync>,
    plugins: Arc<PluginRegistry>,
    builder: Builder,
    /// The items as last seen, by key.
    items: BTreeMap<String, Item>,
    /// key → mod_revision of the version already reported as invalid.
    reported: HashMap<String, i64>,
}

impl Compiler {
    pub fn new(
        prefix: &str,
        resolver: Arc<dyn Resolve + Send + Sync>,
        plugins: Arc<PluginRegistry>,
    ) -> Compiler {
        Compiler {
            prefix: prefix.to_string(),
            resolver,
            plugins,
            builder: Builder::new(),
            items: BTreeMap::new(),
            reported: HashMap::new(),
        }
    }

    fn report(&mut self, key: &str, message: &str) {
        let revision = self.items.get(key).map(|i| i.mod_revision).unwrap_or(0);
        if self.reported.get(key) != Some(&revision) {
            self.reported.insert(key.to_string(), revision);
            log::error!(
                "config store item {key} (revision {revision}) is invalid and is not served: {message}"
            );
        }
    }

    /// The builder change for a stored item: the parsed resource, or its removal when the
    /// value cannot be used (so an invalid new version is never served half-understood).
    /// `None` for keys of no resource.
    fn change_of(&mut self, item: &Item) -> Option<Change> {
        let r = key_ref(&self.prefix, &item.key)?;
        let kind = builder_kind(r.kind);
        let removal = Change::Delete(kind, Id(r.id.clone()));
        let mut value: Value = match serde_json::from_slice(&item.value) {
            Ok(v) => v,
            // APISIX's old layout marks each directory with an `init_dir` value.
            Err(_) if item.value == b"init_dir" || item.value == b"\"init_dir\"" => return None,
            Err(e) => {
                self.report(&item.key, &format!("not JSON: {e}"));
                return Some(removal);
            }
        };
        let Some(obj) = value.as_object_mut() else {
            if value.as_str() == Some("init_dir") {
                return None;
            }
            self.report(&item.key, "expected a JSON object");
            return Some(removal);
        };
        let revision = item.mod_revision.max(0) as u64;
        if r.kind == "credentials" {
            let o = OpaqueResource {
                id: Id(r.id.clone()),
                value,
            };
            return Some(Change::Put(BuiltItem::Other("consumers", o), revision));
        }
        let field = id_field(r.kind);
        if !obj.contains_key(field) {
            obj.insert(field.to_string(), Value::String(r.id.clone()));
        }
        match BuiltItem::parse(r.kind, &value) {
            Ok(parsed) => Some(Change::Put(parsed, revision)),
            Err(e) => {
                self.report(&item.key, &e.to_string());
                Some(removal)
            }
        }
    }

    /// Applies one batch of store events; the new snapshot when anything served changed.
    pub fn apply(&mut self, events: Vec<Event>, version: u64) -> Option<Snapshot> {
        let mut changes = Vec::with_capacity(events.len());
        for ev in events {
            match ev {
                Event::Put(item) => {
                    // A re-PUT of identical bytes changes nothing that is served.
                    if self.items.get(&item.key).map(|i| &i.value) == Some(&item.value) {
                        continue;
                    }
                    self.items.insert(item.key.clone(), item.clone());
                    changes.extend(self.change_of(&item));
                }
                Event::Delete { key, .. } => {
                    if self.items.remove(&key).is_none() {
                        continue;
                    }
                    self.reported.remove(&key);
                    if let Some(r) = key_ref(&self.prefix, &key) {
                        changes.push(Change::Delete(builder_kind(r.kind), Id(r.id)));
                    }
                }
            }
        }
        self.build(changes, version)
    }

    /// Makes the held items exactly `listing` (a first listing, or one after a compaction):
    /// only what differs from what is held is applied.
    pub fn relist(&mut self, listing: Vec<Item>, version: u64) -> Option<Snapshot> {
        let fresh: BTreeMap<String, Item> =
            listing.into_iter().map(|i| (i.key.clone(), i)).collect();
        let mut events: Vec<Event> = self
            .items
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .map(|k| Event::Delete {
                key: k.clone(),
                mod_revision: 0,
            })
            .collect();
        events.extend(fresh.into_values().map(Event::Put));
        self.apply(events, version)
    }

    /// Compiles everything again against the current plugin catalog (after a plugin reload).
    pub fn recompile(&mut self, version: u64) -> Option<Snapshot> {
        self.build(Vec::new(), version)
    }

    /// The snapshot of what is held now.
    pub fn snapshot(&self, version: u64) -> Snapshot {
        self.builder.snapshot(version)
    }

    fn build(&mut self, changes: Vec<Change>, version: u64) -> Option<Snapshot> {
        let catalog = self.plugins.catalog();
        let applied = self
            .builder
            .apply(changes, version, self.resolver.as_ref(), &catalog);
        for e in &applied.errors {
            let key = format!("{}/{}/{}", self.prefix, e.kind, e.id);
            self.report(&key, &format!("{}: {}", e.error.field, e.error.message));
        }
        if applied.routes_compiled > 0 {
            log::debug!(
                "config version {version}: {} route(s) compiled",
                applied.routes_compiled
            );
        }
        applied.changed.then(|| self.builder.snapshot(version))
    }
}

/// The builder's kind for a store kind (credentials are consumers to it).
fn builder_kind(kind: &'static str) -> &'static str {
    if kind == "credentials" {
        "consumers"
    } else {
        kind
    }
}

/// A running sync; stops when dropped.
pub struct StoreSync {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    /// The highest store revision the sync has taken in (published, or found to change
    /// nothing served): a writer waits for its write's revision here to read its own writes.
    pub applied: Arc<AtomicI64>,
}

impl StoreSync {
    /// Starts following `store`, publishing into `published`. Returns once the first listing
    /// was compiled and published, or with the store's error when the first listing failed
    /// (the sync keeps retrying in the background then, and the current snapshot serves).
    pub fn start(
        store: Arc<dyn Store>,
        published: Arc<ArcSwap<Snapshot>>,
        resolver: Arc<dyn Resolve + Send + Sync>,
        plugins: Arc<PluginRegistry>,
    ) -> std::io::Result<(StoreSync, Result<(), StoreError>)> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        // A plugin reload recompiles the current items against the new catalog.
        let reload = Arc::new(tokio::sync::Notify::new());
        let r = reload.clone();
        plugins.on_reload(Box::new(move || r.notify_one()));
        let (first_tx, first_rx) = std::sync::mpsc::channel();
        let applied = Arc::new(AtomicI64::new(0));
        let applied_w = applied.clone();
        let thread = std::thread::Builder::new()
            .name("moongate-config-sync".into())
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = first_tx.send(Err(StoreError::Failed(e.to_string())));
                        return;
                    }
                };
                let compiler = Compiler::new(store.prefix(), resolver, plugins);
                let mut sync = Follower {
                    applied: applied_w,
                    reload,
                    store,
                    published,
                    compiler,
                    revision: 0,
                    outage: false,
                    first: Some(first_tx),
                };
                rt.block_on(async move {
                    tokio::select! {
                        _ = sync.run() => {}
                        _ = stop_rx => {}
                    }
                });
            })?;
        let first = first_rx
            .recv()
            .unwrap_or_else(|_| Err(StoreError::Failed("the config sync thread died".into())));
        Ok((
            StoreSync {
                stop: Some(stop_tx),
                thread: Some(thread),
                applied,
            },
            first,
        ))
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for StoreSync {
    fn drop(&mut self) {
        self.halt();
    }
}

struct Follower {
    applied: Arc<AtomicI64>,
    /// Notified by a plugin reload.
    reload: Arc<tokio::sync::Notify>,
    store: Arc<dyn Store>,
    published: Arc<ArcSwap<Snapshot>>,
    compiler: Compiler,
    revision: i64,
    outage: bool,
    first: Option<std::sync::mpsc::Sender<Result<(), StoreError>>>,
}

impl Follower {
    fn failed(&mut self, what: &str, e: &StoreError) {
        if let Some(f) = self.first.take() {
            let _ = f.send(Err(e.clone()));
        }
        if !self.outage {
            self.outage = true;
            // An unreachable store (etcd) warns about its own outages, once each; repeating
            // it here would make two warnings of one outage.
            let level = match e {
                StoreError::Unavailable(_) => log::Level::Info,
                _ => log::Level::Warn,
            };
            log::log!(
                level,
                "{what} from {} failed ({e}); the current config keeps serving, retrying",
                self.store.describe()
            );
        }
    }

    fn recovered(&mut self) {
        if self.outage {
            self.outage = false;
            log::info!(target: "notice", "{} is reachable again", self.store.describe());
        }
    }

    /// The version of the next snapshot: the store revision, and always above the current.
    fn next_version(&self) -> u64 {
        (self.revision.max(0) as u64).max(self.published.load().version + 1)
    }

    fn publish(&mut self, next: Option<Snapshot>) {
        // The first listing is published even when empty: the caller waits for it.
        let next = match next {
            Some(s) => Some(s),
            None if self.first.is_some() => Some(self.compiler.snapshot(self.next_version())),
            None => None,
        };
        if let Some(s) = next {
            let (version, n) = (s.version, s.routes.len());
            self.published.store(Arc::new(s));
            log::info!(target: "notice", "config store revision {} applied (config version {version}, {n} routes)", self.revision);
        }
        if let Some(f) = self.first.take() {
            let _ = f.send(Ok(()));
        }
    }

    async fn run(&mut self) {
        let mut backoff = BACKOFF_MIN;
        'list: loop {
            let listing = match self.store.list().await {
                Ok(l) => l,
                Err(e) => {
                    self.failed("listing the config", &e);
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            self.recovered();
            backoff = BACKOFF_MIN;
            self.revision = listing.revision;
            let version = self.next_version();
            let next = self.compiler.relist(listing.items, version);
            self.publish(next);
            self.applied.store(self.revision, Ordering::Release);
            loop {
                let mut stream = match self.store.watch(self.revision).await {
                    Ok(s) => s,
                    Err(StoreError::Compacted(_)) => continue 'list,
                    Err(e) => {
                        self.failed("watching the config", &e);
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                };
                loop {
                    let reload = self.reload.clone();
                    let next = tokio::select! {
                        m = stream.recv() => m,
                        _ = reload.notified() => {
                            let next = self.compiler.recompile(self.next_version());
                            self.publish(next);
                            continue;
                        }
                    };
                    match next {
                        // The watch ended (the store dropped a slow watcher, or a connection
                        // closed): watch again from where we are.
                        None => break,
                        Some(Err(StoreError::Compacted(_))) => continue 'list,
                        Some(Err(e)) => {
                            self.failed("watching the config", &e);
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(BACKOFF_MAX);
                            break;
                        }
                        Some(Ok(batch)) => {
                            self.recovered();
                            backoff = BACKOFF_MIN;
                            let mut events = batch;
                            // Take what else of a burst has arrived already, then build once.
                            loop {
                                match stream.try_recv() {
                                    Ok(Ok(b)) => events.extend(b),
                                    Ok(Err(StoreError::Compacted(_))) => continue 'list,
                                    Ok(Err(_)) | Err(_) => break,
                                }
                            }
                            for ev in &events {
                                let rev = match ev {
                                    Event::Put(i) => i.mod_revision,
                                    Event::Delete { mod_revision, .. } => *mod_revision,
                                };
                                self.revision = self.revision.max(rev);
                            }
                            let version = self.next_version();
                            let next = self.compiler.apply(events, version);
                            self.publish(next);
                            self.applied.store(self.revision, Ordering::Release);
                        }
                    }
                }
            }
        }
    }
}

/// Copies the resources of a standalone file (`conf/apisix.yaml` text) into `store`, each at
/// its APISIX key, values as written in the file (no defaults added). Used once, when the
/// embedded store is created, so a node switched to it keeps serving what it served.
/// Returns how many items were written.
pub async fn seed(store: &dyn Store, text: &str) -> Result<usize, String> {
    let items = seed_items(store.prefix(), text)?;
    let n = items.len();
    for (key, bytes) in items {
        store
            .put(&key, bytes, crate::config::store::Precondition::None)
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(n)
}

/// The store keys and values [`seed`] writes, for a store that takes them in one go.
pub fn seed_items(prefix: &str, text: &str) -> Result<Vec<(String, Vec<u8>)>, String> {
    use crate::config::standalone::{Parsed, parse};
    match parse(text) {
        Ok(Parsed::Complete(_)) => {}
        Ok(Parsed::Incomplete) => return Err("the file does not end with #END".into()),
        Err(errors) => {
            let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
            return Err(list.join("; "));
        }
    }
    let root: Value = crate::config::yaml_doc::parse(text).map_err(|e| e.to_string())?;
    let Some(map) = root.as_object() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (kind, list) in map {
        if !KINDS.contains(&kind.as_str()) {
            continue;
        }
        for item in list.as_array().into_iter().flatten() {
            let id = item
                .get(id_field(kind))
                .or_else(|| item.get("id"))
                .and_then(|v| match v {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                });
            let Some(id) = id else { continue };
            let key = format!("{prefix}/{kind}/{id}");
            out.push((key, serde_json::to_vec(item).map_err(|e| e.to_string())?));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_plugins() -> Arc<PluginRegistry> {
        Arc::new(PluginRegistry::new(
            crate::plugin::Catalog::empty(),
            crate::lua::vm::VmOptions::for_prefix(std::path::Path::new("/nonexistent")),
            Some(Vec::new()),
        ))
    }

    #[test]
    fn keys_map_to_kinds_and_ids() {
        let k = |key: &str| key_ref("/apisix", key).map(|r| (r.kind, r.id));
        assert_eq!(k("/apisix/routes/1"), Some(("routes", "1".into())));
        assert_eq!(
            k("/apisix/consumers/jack/credentials/c1"),
            Some(("credentials", "jack/credentials/c1".into()))
        );
        assert_eq!(
            k("/apisix/secrets/vault/1"),
            Some(("secrets", "vault/1".into()))
        );
        assert_eq!(k("/apisix/routes"), None, "APISIX's init_dir marker");
        assert_eq!(k("/apisix/routes/"), None);
        assert_eq!(k("/apisix/gen_id"), None);
        assert_eq!(k("/apisix/plugins"), None);
        assert_eq!(k("/other/routes/1"), None);
        assert_eq!(k("/apisix/routes/1/x"), None);
    }

    fn item(key: &str, value: &str, rev: i64) -> (String, Item) {
        (
            key.to_string(),
            Item {
                key: key.into(),
                value: value.as_bytes().to_vec(),
                create_revision: rev,
                mod_revision: rev,
            },
        )
    }

    #[test]
    fn an_invalid_item_is_skipped_and_the_others_apply() {
        let mut c = Compiler::new(
            "/apisix",
            Arc::new(crate::upstream::SystemResolver),
            no_plugins(),
        );
        let items: Vec<Item> = [
            item(
                "/apisix/routes/1",
                r#"{"uri":"/a","upstream":{"nodes":{"127.0.0.1:1980":1}}}"#,
                1,
            ),
            item("/apisix/routes/2", r#"{"uri":7}"#, 2),
            item("/apisix/routes/3", "not json", 3),
            item(
                "/apisix/routes/4",
                r#"{"uri":"/d","plugins":{"no-such-plugin":{}},"upstream":{"nodes":{"127.0.0.1:1980":1}}}"#,
                4,
            ),
            item("/apisix/routes", "init_dir", 5),
            item("/apisix/gen_id", "1", 6),
        ]
        .into_iter()
        .map(|(_, i)| i)
        .collect();
        let s = c.relist(items, 1).unwrap();
        let ids: Vec<&str> = s.routes.iter().map(|r| r.id.0.as_str()).collect();
        assert_eq!(ids, vec!["1"], "route 4 names an unknown plugin: refused");
        assert_eq!(c.reported.len(), 3);
        // A valid new version of route 2 is served; an invalid new version of route 1 takes
        // the old one out rather than leaving it served.
        let put = |k: &str, v: &str, rev| Event::Put(item(k, v, rev).1);
        let s = c
            .apply(
                vec![
                    put(
                        "/apisix/routes/2",
                        r#"{"uri":"/b","upstream":{"nodes":{"127.0.0.1:1980":1}}}"#,
                        7,
                    ),
                    put("/apisix/routes/1", r#"{"uri":[]}"#, 8),
                ],
                8,
            )
            .unwrap();
        let ids: Vec<&str> = s.routes.iter().map(|r| r.id.0.as_str()).collect();
        assert_eq!(ids, vec!["2"]);
    }

    #[test]
    fn the_sync_follows_writes_and_an_identical_rewrite_rebuilds_nothing() {
        use crate::config::store::Precondition;
        use crate::config::store::embedded::EmbeddedStore;
        let dir = std::env::temp_dir().join(format!("moongate-sync-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store: Arc<dyn Store> =
            Arc::new(EmbeddedStore::open("/apisix", &dir.join("store.json")).unwrap());
        let resolver: Arc<dyn Resolve + Send + Sync> = Arc::new(crate::upstream::SystemResolver);
        let empty = Snapshot::empty();
        let published = Arc::new(ArcSwap::from_pointee(empty));
        let (sync, first) =
            StoreSync::start(store.clone(), published.clone(), resolver, no_plugins()).unwrap();
        first.unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let route = br#"{"uri":"/a","upstream":{"nodes":{"127.0.0.1:1980":1}}}"#.to_vec();
        let wait = |what: &str, f: &dyn Fn(&Snapshot) -> bool| {
            let end = std::time::Instant::now() + Duration::from_secs(5);
            while !f(&published.load()) {
                assert!(
                    std::time::Instant::now() < end,
                    "timed out waiting for {what}"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        };
        rt.block_on(store.put("/apisix/routes/1", route.clone(), Precondition::None))
            .unwrap();
        wait("the route", &|s| s.routes.len() == 1);
        let before = published.load_full();
        rt.block_on(store.put("/apisix/routes/1", route, Precondition::None))
            .unwrap();
        std::thread::sleep(Duration::from_millis(60));
        assert!(
            Arc::ptr_eq(&before, &published.load_full()),
            "identical value: no rebuild"
        );
        rt.block_on(store.delete("/apisix/routes/1", Precondition::None))
            .unwrap();
        wait("the delete", &|s| s.routes.is_empty());
        sync.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A store that can be switched off, as an etcd that went away.
    struct Flaky {
        inner: crate::config::store::embedded::EmbeddedStore,
        down: std::sync::atomic::AtomicBool,
    }

    impl Flaky {
        fn check(&self) -> Result<(), StoreError> {
            if self.down.load(std::sync::atomic::Ordering::SeqCst) {
                Err(StoreError::Unavailable("switched off".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait::async_trait]
    impl Store for Flaky {
        fn prefix(&self) -> &str {
            self.inner.prefix()
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
        async fn list(&self) -> Result<crate::config::store::Listing, StoreError> {
            self.check()?;
            self.inner.list().await
        }
        async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
            self.inner.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            value: Vec<u8>,
            pre: crate::config::store::Precondition,
        ) -> Result<Item, StoreError> {
            self.inner.put(key, value, pre).await
        }
        async fn delete(
            &self,
            key: &str,
            pre: crate::config::store::Precondition,
        ) -> Result<Option<Item>, StoreError> {
            self.inner.delete(key, pre).await
        }
        async fn watch(&self, after: i64) -> Result<crate::config::store::WatchStream, StoreError> {
            self.check()?;
            self.inner.watch(after).await
        }
    }

    #[test]
    fn a_store_away_at_start_keeps_the_current_snapshot_then_is_caught_up() {
        use crate::config::store::Precondition;
        let dir = std::env::temp_dir().join(format!("moongate-flaky-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let flaky = Arc::new(Flaky {
            inner: crate::config::store::embedded::EmbeddedStore::open(
                "/apisix",
                &dir.join("store.json"),
            )
            .unwrap(),
            down: std::sync::atomic::AtomicBool::new(true),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(flaky.put(
            "/apisix/routes/1",
            br#"{"uri":"/a","upstream":{"nodes":{"127.0.0.1:1980":1}}}"#.to_vec(),
            Precondition::None,
        ))
        .unwrap();
        let resolver: Arc<dyn Resolve + Send + Sync> = Arc::new(crate::upstream::SystemResolver);
        let empty = Snapshot::empty();
        let published = Arc::new(ArcSwap::from_pointee(empty));
        let store: Arc<dyn Store> = flaky.clone();
        let (sync, first) =
            StoreSync::start(store, published.clone(), resolver, no_plugins()).unwrap();
        assert!(
            matches!(first, Err(StoreError::Unavailable(_))),
            "{first:?}"
        );
        assert!(
            published.load().routes.is_empty(),
            "the current snapshot keeps serving"
        );
        flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
        let end = std::time::Instant::now() + Duration::from_secs(5);
        while published.load().routes.is_empty() {
            assert!(
                std::time::Instant::now() < end,
                "not caught up after the store came back"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        sync.stop();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
