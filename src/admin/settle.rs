//! Read-your-writes for the Admin API of a node: a write is answered once this node's own data
//! plane has taken it in, so a client that writes a route and then calls it (as APISIX's test
//! suites do within one block) is served by the new config, not the previous one.
//!
//! [`Tracked`] wraps the store the Admin API writes to and remembers the revision of its last
//! write; the data-plane sync publishes the highest revision it applied (`StoreSync::applied`).
//! [`Settle::wait`] waits, bounded, until the second reaches the first. Other nodes of a cluster
//! still see the write when their own sync does.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use crate::config::store::{Item, Listing, Precondition, Store, StoreError, WatchStream};

/// Longest wait for the data plane; past it the write is answered anyway (the sync may be
/// rebuilding a large config, or the store may be away).
const MAX_WAIT: Duration = Duration::from_secs(2);
const POLL: Duration = Duration::from_millis(2);

/// The Admin API's view of the store: every operation goes through, and the revision a write
/// produced is kept.
pub struct Tracked {
    inner: Arc<dyn Store>,
    last_write: AtomicI64,
    /// A delete's revision is found by listing the store (cheap for the local embedded store);
    /// otherwise the deleted item's revision + 1, a lower bound, is waited for.
    exact_deletes: bool,
}

impl Tracked {
    pub fn new(inner: Arc<dyn Store>, exact_deletes: bool) -> Tracked {
        Tracked {
            inner,
            last_write: AtomicI64::new(0),
            exact_deletes,
        }
    }

    /// The revision of the newest write made through this store.
    pub fn last_write(&self) -> i64 {
        self.last_write.load(Ordering::Acquire)
    }

    fn wrote(&self, revision: i64) {
        self.last_write.fetch_max(revision, Ordering::AcqRel);
    }
}

#[async_trait]
impl Store for Tracked {
    fn prefix(&self) -> &str {
        self.inner.prefix()
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        self.inner.list().await
    }

    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        self.inner.get(key).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, pre: Precondition) -> Result<Item, StoreError> {
        let item = self.inner.put(key, value, pre).await?;
        self.wrote(item.mod_revision);
        Ok(item)
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<Option<Item>, StoreError> {
        let gone = self.inner.delete(key, pre).await?;
        if let Some(item) = &gone {
            // The store does not say at which revision the delete landed: the store's current
            // revision is at least that, and the deleted item's next one at most.
            let listed = if self.exact_deletes {
                self.inner.list().await.ok().map(|l| l.revision)
            } else {
                None
            };
            self.wrote(listed.unwrap_or(item.mod_revision + 1));
        }
        Ok(gone)
    }

    async fn watch(&self, after: i64) -> Result<WatchStream, StoreError> {
        self.inner.watch(after).await
    }
}

/// What the Admin API waits on: its own writes and the sync's progress.
pub struct Settle {
    pub store: Arc<Tracked>,
    pub applied: Arc<AtomicI64>,
}

impl Settle {
    /// Waits until the data plane applied every write made so far (at most [`MAX_WAIT`]).
    pub async fn wait(&self) {
        let target = self.store.last_write();
        let deadline = tokio::time::Instant::now() + MAX_WAIT;
        while self.applied.load(Ordering::Acquire) < target {
            if tokio::time::Instant::now() >= deadline {
                log::warn!(
                    "the data plane has not applied config revision {target} after {MAX_WAIT:?}; answering the Admin API request anyway"
                );
                return;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
