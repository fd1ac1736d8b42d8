//! A node's own copy of the last good listing of a shared store (etcd), so that a node started
//! while etcd is down serves what it served before instead of nothing.
//!
//! [`LastGoodStore`] wraps the store the data-plane sync reads. Every successful listing, and
//! every watch event after it, updates an in-memory copy that a background thread writes to
//! one JSON file atomically ([`write_atomically`]), at most once per [`WRITE_EVERY`], so a
//! burst of changes costs one write. When the store is unreachable, a listing is answered from
//! that copy (loaded from the file at start); the next watch then forces a fresh listing as
//! soon as the store answers again, so the node catches up with everything it missed, deletes
//! included, whatever the store's revisions did meanwhile (a compaction, a restored cluster).
//!
//! Only the sync reads through it: the Admin API talks to the store itself, so it never shows
//! a saved copy as if it were etcd's answer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Event, Item, Listing, Precondition, Store, StoreError, WatchStream, write_atomically};

/// The shortest time between two writes of the file.
pub const WRITE_EVERY: Duration = Duration::from_secs(1);
const WATCH_QUEUE: usize = 256;

/// The file: which prefix it copies, the revision it is current to, and the items.
#[derive(Serialize, Deserialize)]
struct SavedListing {
    prefix: String,
    revision: i64,
    items: Vec<SavedItem>,
}

#[derive(Serialize, Deserialize)]
struct SavedItem {
    key: String,
    value: String,
    create_revision: i64,
    mod_revision: i64,
}

#[derive(Default)]
struct Copy {
    items: BTreeMap<String, Item>,
    revision: i64,
    /// There is a listing to fall back on (from the file or from the store).
    present: bool,
    /// Changed since the file was last written.
    dirty: bool,
    /// The last listing handed out came from the copy, not from the store.
    stale: bool,
    stop: bool,
}

struct Shared {
    path: PathBuf,
    prefix: String,
    copy: Mutex<Copy>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Copy> {
        self.copy.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn apply(&self, batch: &[Event]) {
        let mut c = self.lock();
        for ev in batch {
            match ev {
                Event::Put(item) => {
                    c.revision = c.revision.max(item.mod_revision);
                    c.items.insert(item.key.clone(), item.clone());
                }
                Event::Delete { key, mod_revision } => {
                    c.revision = c.revision.max(*mod_revision);
                    c.items.remove(key);
                }
            }
        }
        c.dirty = true;
        self.wake.notify_one();
    }

    fn encode(&self, c: &Copy) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&SavedListing {
            prefix: self.prefix.clone(),
            revision: c.revision,
            items: c
                .items
                .values()
                .map(|i| SavedItem {
                    key: i.key.clone(),
                    value: String::from_utf8_lossy(&i.value).into_owned(),
                    create_revision: i.create_revision,
                    mod_revision: i.mod_revision,
                })
                .collect(),
        })
    }

    /// The writer thread: writes the copy when it changed, then rests [`WRITE_EVERY`].
    fn write_loop(&self) {
        loop {
            let mut c = self.lock();
            while !c.dirty && !c.stop {
                c = self.wake.wait(c).unwrap_or_else(|e| e.into_inner());
            }
            if c.dirty {
                c.dirty = false;
                let encoded = self.encode(&c);
                drop(c);
                let result = encoded
                    .map_err(std::io::Error::other)
                    .and_then(|bytes| write_atomically(&self.path, &bytes));
                if let Err(e) = result {
                    log::error!(
                        "cannot save the last good config to {}: {e}",
                        self.path.display()
                    );
                }
                c = self.lock();
            }
            if c.stop {
                // A change applied while the last write ran is still pending: save it first.
                if c.dirty {
                    continue;
                }
                return;
            }
            let until = Instant::now() + WRITE_EVERY;
            while !c.stop {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                c = self
                    .wake
                    .wait_timeout(c, left)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        }
    }
}

/// Reads the saved copy at `path` when it is one of `prefix`; anything else is reported and
/// ignored (the node then starts empty, as with no file).
fn load(path: &Path, prefix: &str) -> Option<(BTreeMap<String, Item>, i64)> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::error!("cannot read the last good config {}: {e}", path.display());
            return None;
        }
    };
    let saved: SavedListing = match serde_json::from_slice(&bytes) {
        Ok(s) => s,
        Err(e) => {
            log::error!(
                "the last good config {} is unreadable ({e}); ignored",
                path.display()
            );
            return None;
        }
    };
    if saved.prefix != prefix {
        log::warn!(
            "the last good config {} copies prefix {}, not {prefix}; ignored",
            path.display(),
            saved.prefix
        );
        return None;
    }
    let items = saved
        .items
        .into_iter()
        .map(|s| {
            (
                s.key.clone(),
                Item {
                    key: s.key,
                    value: s.value.into_bytes(),
                    create_revision: s.create_revision,
                    mod_revision: s.mod_revision,
                },
            )
        })
        .collect();
    Some((items, saved.revision))
}

/// A store whose listings survive the store being away; see the module documentation.
pub struct LastGoodStore {
    inner: Arc<dyn Store>,
    shared: Arc<Shared>,
    writer: Option<JoinHandle<()>>,
}

impl LastGoodStore {
    /// Wraps `inner`, keeping its last good listing in `path` (read now when present).
    pub fn new(inner: Arc<dyn Store>, path: &Path) -> std::io::Result<LastGoodStore> {
        let prefix = inner.prefix().to_string();
        let mut copy = Copy::default();
        if let Some((items, revision)) = load(path, &prefix) {
            copy.items = items;
            copy.revision = revision;
            copy.present = true;
        }
        let shared = Arc::new(Shared {
            path: path.to_path_buf(),
            prefix,
            copy: Mutex::new(copy),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let writer = std::thread::Builder::new()
            .name("moongate-last-good".into())
            .spawn(move || s.write_loop())?;
        Ok(LastGoodStore {
            inner,
            shared,
            writer: Some(writer),
        })
    }

    /// Where the copy is kept.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Drop for LastGoodStore {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        // The writer saves what is pending first, so a clean stop loses nothing.
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

#[async_trait]
impl Store for LastGoodStore {
    fn prefix(&self) -> &str {
        self.inner.prefix()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        match self.inner.list().await {
            Ok(listing) => {
                let mut c = self.shared.lock();
                if c.stale || !c.present || c.revision != listing.revision {
                    c.items = listing
                        .items
                        .iter()
                        .map(|i| (i.key.clone(), i.clone()))
                        .collect();
                    c.revision = listing.revision;
                    c.present = true;
                    c.dirty = true;
                    self.shared.wake.notify_one();
                }
                c.stale = false;
                Ok(listing)
            }
            Err(StoreError::Unavailable(why)) => {
                let mut c = self.shared.lock();
                if !c.present {
                    return Err(StoreError::Unavailable(why));
                }
                if !c.stale {
                    log::warn!(
                        "{} cannot be listed ({why}); serving the last good config saved in {} (revision {}, {} keys) until it answers",
                        self.inner.describe(),
                        self.shared.path.display(),
                        c.revision,
                        c.items.len()
                    );
                }
                c.stale = true;
                Ok(Listing {
                    items: c.items.values().cloned().collect(),
                    revision: c.revision,
                })
            }
            Err(e) => Err(e),
        }
    }

    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, pre: Precondition) -> Result<Item, StoreError> {
        self.inner.put(key, value, pre).await
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<Option<Item>, StoreError> {
        self.inner.delete(key, pre).await
    }

    async fn watch(&self, after: i64) -> Result<WatchStream, StoreError> {
        let mut upstream = self.inner.watch(after).await?;
        if self.shared.lock().stale {
            // The store answers again, but what was served came from the saved copy: have the
            // reader list afresh (as after a compaction) rather than trust the saved revision.
            return Err(StoreError::Compacted(after));
        }
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let shared = self.shared.clone();
        tokio::spawn(async move {
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    n = upstream.recv() => n,
                };
                match next {
                    None => return,
                    Some(Ok(batch)) => {
                        shared.apply(&batch);
                        if tx.send(Ok(batch)).await.is_err() {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::store::embedded::EmbeddedStore;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// An embedded store that can be switched off, as an etcd that went away.
    struct Switch {
        inner: EmbeddedStore,
        down: AtomicBool,
    }

    impl Switch {
        fn check(&self) -> Result<(), StoreError> {
            if self.down.load(Ordering::SeqCst) {
                Err(StoreError::Unavailable("switched off".into()))
            } else {
                Ok(())
            }
        }
    }

    #[async_trait]
    impl Store for Switch {
        fn prefix(&self) -> &str {
            self.inner.prefix()
        }
        fn describe(&self) -> String {
            "switch".into()
        }
        async fn list(&self) -> Result<Listing, StoreError> {
            self.check()?;
            self.inner.list().await
        }
        async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
            self.check()?;
            self.inner.get(key).await
        }
        async fn put(
            &self,
            key: &str,
            value: Vec<u8>,
            pre: Precondition,
        ) -> Result<Item, StoreError> {
            self.check()?;
            self.inner.put(key, value, pre).await
        }
        async fn delete(&self, key: &str, pre: Precondition) -> Result<Option<Item>, StoreError> {
            self.check()?;
            self.inner.delete(key, pre).await
        }
        async fn watch(&self, after: i64) -> Result<WatchStream, StoreError> {
            self.check()?;
            self.inner.watch(after).await
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn keys(l: &Listing) -> Vec<&str> {
        l.items.iter().map(|i| i.key.as_str()).collect()
    }

    #[test]
    fn a_listing_and_the_watched_changes_are_saved_and_served_when_the_store_is_away() {
        let dir = std::env::temp_dir().join(format!("moongate-last-good-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let saved = dir.join("data/last-good.json");
        let switch = Arc::new(Switch {
            inner: EmbeddedStore::open("/apisix", &dir.join("store.json")).unwrap(),
            down: AtomicBool::new(false),
        });
        rt().block_on(async {
            switch
                .put("/apisix/routes/1", b"{}".to_vec(), Precondition::None)
                .await
                .unwrap();
            let store = LastGoodStore::new(switch.clone(), &saved).unwrap();
            let l = store.list().await.unwrap();
            let mut w = store.watch(l.revision).await.unwrap();
            switch
                .put("/apisix/routes/2", b"{}".to_vec(), Precondition::None)
                .await
                .unwrap();
            switch
                .delete("/apisix/routes/1", Precondition::None)
                .await
                .unwrap();
            w.recv().await.unwrap().unwrap();
            w.recv().await.unwrap().unwrap();
            drop(w);
            // Dropping the store writes what is pending.
            drop(store);
        });
        assert!(saved.is_file());

        switch.down.store(true, Ordering::SeqCst);
        rt().block_on(async {
            let store = LastGoodStore::new(switch.clone(), &saved).unwrap();
            let l = store.list().await.unwrap();
            assert_eq!(keys(&l), vec!["/apisix/routes/2"], "the saved copy");
            assert_eq!(l.revision, 3);
            assert!(matches!(
                store.watch(l.revision).await,
                Err(StoreError::Unavailable(_))
            ));
            // Back: the first watch sends the reader to list afresh, then all is live.
            switch.down.store(false, Ordering::SeqCst);
            switch
                .put("/apisix/routes/3", b"{}".to_vec(), Precondition::None)
                .await
                .unwrap();
            assert_eq!(
                store.watch(l.revision).await.err(),
                Some(StoreError::Compacted(3))
            );
            let l = store.list().await.unwrap();
            assert_eq!(keys(&l), vec!["/apisix/routes/2", "/apisix/routes/3"]);
            assert!(store.watch(l.revision).await.is_ok());
        });

        // A copy of another prefix is not served.
        let other = Arc::new(Switch {
            inner: EmbeddedStore::open("/other", &dir.join("other.json")).unwrap(),
            down: AtomicBool::new(true),
        });
        rt().block_on(async {
            let store = LastGoodStore::new(other, &saved).unwrap();
            assert!(matches!(
                store.list().await,
                Err(StoreError::Unavailable(_))
            ));
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
}
