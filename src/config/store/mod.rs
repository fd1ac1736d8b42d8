//! The config store: where the Admin API writes resources and where the data plane reads them.
//!
//! The store is a flat key space in APISIX's etcd layout — `{prefix}/routes/1`,
//! `{prefix}/upstreams/abc`, `{prefix}/consumers/jack/credentials/c1` — holding the JSON bytes
//! APISIX itself would write, each key with etcd's create and modification revisions. Two
//! implementations stand behind one trait: the embedded store (the default on one machine,
//! persisted under the prefix directory) and etcd (shared by every node). The Admin API only
//! ever talks to a [`Store`]; the data-plane sync lists once, then follows [`Store::watch`],
//! so both providers behave the same to everything above them.

pub mod embedded;
pub mod etcd;
pub mod last_good;

use std::io::Write;
use std::path::Path;

use async_trait::async_trait;
use tokio::sync::mpsc;

/// One stored key with its value and revisions (etcd's `create_revision`/`mod_revision`,
/// which the Admin API reports as `createdIndex`/`modifiedIndex`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The full key, prefix included (`/apisix/routes/1`).
    pub key: String,
    /// The stored bytes: JSON for every APISIX resource.
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
}

/// One change seen by a watch, in revision order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Put(Item),
    Delete { key: String, mod_revision: i64 },
}

/// A consistent read of every key under the prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    pub items: Vec<Item>,
    /// The store revision the listing was read at; a watch continues from `revision + 1`.
    pub revision: i64,
}

/// What a write may require of the key's current state (etcd transactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    None,
    /// The key must not exist (create-only, as `POST` ids and `PUT` on a new id).
    Absent,
    /// The key's `mod_revision` must still be this (read-modify-write for `PATCH`).
    ModRevision(i64),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The backing store cannot be reached; the Admin API answers 503 with this message.
    #[error("config store unavailable: {0}")]
    Unavailable(String),
    /// A watch asked for a revision the store has compacted away: list again.
    #[error("revision {0} has been compacted")]
    Compacted(i64),
    /// A [`Precondition`] did not hold.
    #[error("key {0} changed concurrently or already exists")]
    Conflict(String),
    /// The store refused or failed the operation for another reason (I/O, permissions).
    #[error("config store error: {0}")]
    Failed(String),
}

/// A stream of watch batches. Each batch holds the events of one store revision range, in
/// order; the stream ends (or yields an error) when the watch breaks, and the reader then
/// lists again or re-watches from its last revision.
pub type WatchStream = mpsc::Receiver<Result<Vec<Event>, StoreError>>;

#[async_trait]
pub trait Store: Send + Sync {
    /// The key prefix, `/apisix` by default (`deployment.etcd.prefix`).
    fn prefix(&self) -> &str;

    /// Human-readable description for the start-up line (`etcd http://127.0.0.1:2379`).
    fn describe(&self) -> String;

    /// Every key under the prefix, read at one revision (paged underneath where needed).
    async fn list(&self) -> Result<Listing, StoreError>;

    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError>;

    /// Writes `value` at `key` if `pre` holds; returns the item as stored.
    async fn put(&self, key: &str, value: Vec<u8>, pre: Precondition) -> Result<Item, StoreError>;

    /// Writes like [`Store::put`], and the store deletes the key `ttl` later unless it is
    /// written again meanwhile (etcd: a lease; APISIX's `?ttl=`).
    async fn put_with_ttl(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
        ttl: std::time::Duration,
    ) -> Result<Item, StoreError> {
        let _ = (key, value, pre, ttl);
        Err(StoreError::Failed(format!(
            "the {} store cannot expire keys (ttl)",
            self.describe()
        )))
    }

    /// Deletes `key` if `pre` holds; returns the deleted item, `None` when there was none.
    async fn delete(&self, key: &str, pre: Precondition) -> Result<Option<Item>, StoreError>;

    /// Changes after revision `after` (exclusive). A compacted start revision yields
    /// `Err(StoreError::Compacted)` either here or as the stream's first item.
    async fn watch(&self, after: i64) -> Result<WatchStream, StoreError>;
}

/// Writes `bytes` to `path` so that a crash at any point leaves either the old file or the new
/// one, never a mix: a temporary file beside it (`NAME.tmp`), synced, renamed over `path`, and
/// the directory synced so the rename itself is durable.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The config store of this process, for code that cannot be handed one: Lua's
/// `apisix.core.etcd` (APISIX's tests and a few plugins read and write etcd directly).
pub mod shared {
    use std::sync::{Arc, RwLock};

    use super::Store;

    /// The store, and whether this node may write to it (a `data_plane` node may not).
    #[derive(Clone)]
    pub struct Shared {
        pub store: Arc<dyn Store>,
        pub writable: bool,
    }

    static SHARED: RwLock<Option<Shared>> = RwLock::new(None);

    /// Makes `store` the process's store (the config plane calls this when it starts).
    pub fn set(store: Arc<dyn Store>, writable: bool) {
        if let Ok(mut s) = SHARED.write() {
            *s = Some(Shared { store, writable });
        }
    }

    /// The process's store; `None` for a node whose config is a file (the yaml provider).
    pub fn get() -> Option<Shared> {
        SHARED.read().ok().and_then(|s| s.clone())
    }
}
