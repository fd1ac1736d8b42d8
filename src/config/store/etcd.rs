//! The etcd store: the config of every node sharing one etcd cluster, in APISIX's layout.
//!
//! Keys are exactly the ones APISIX writes under `deployment.etcd.prefix` (`/apisix/routes/1`,
//! `/apisix/consumers/jack/credentials/c1`), values the JSON documents, and `createdIndex` /
//! `modifiedIndex` are etcd's `create_revision` / `mod_revision`, so APISIX nodes, `etcdctl`
//! and moongate nodes can share one cluster.
//!
//! - [`Store::list`] reads the prefix in pages of about 1 MiB pinned to the revision of the
//!   first page, so a configuration larger than one gRPC message (4 MiB) loads, consistently.
//! - Writes with a [`Precondition`] are etcd transactions (compare, then put or delete); a
//!   write with a time to live puts the key with a lease of that length, as APISIX does.
//! - [`Store::watch`] follows the prefix from a revision; a compacted start revision is
//!   reported as [`StoreError::Compacted`] so the reader lists again.
//! - Endpoints, failover, TLS and outage reporting live in `connection`.
//!
//! All etcd I/O runs on this store's own small runtime, so callers on any runtime (the Admin
//! API's, the sync's) share the same connections.

mod connection;

use std::future::Future;
use std::sync::Arc;

use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, EventType, GetOptions, KeyValue, PutOptions, Txn,
    TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::mpsc;

use super::{Event, Item, Listing, Precondition, Store, StoreError, WatchStream};
use crate::config::node::EtcdConfig;
use connection::{Endpoints, Failure, classify};

/// Keys asked for in the first page of a listing.
const FIRST_PAGE: i64 = 512;
/// The size each later page aims at: the key count follows the sizes seen so far, so small
/// routes come in few round trips and large ones stay far below one gRPC message (4 MiB).
/// A page that is still too large is asked for again at half the count.
const PAGE_BYTES: usize = 1 << 20;
const MAX_PAGE: i64 = 8192;
/// Watch batches can hold many events of one revision (a transaction): accept large ones.
const WATCH_MESSAGE_MAX: usize = 64 << 20;
/// Batches queued for the reader of a watch before etcd's stream is paused.
const WATCH_QUEUE: usize = 256;

struct Inner {
    prefix: String,
    endpoints: Endpoints,
}

/// A config [`Store`] on an etcd cluster.
pub struct EtcdStore {
    inner: Arc<Inner>,
    /// Dropped with `shutdown_background`, so the store may be dropped on any thread.
    rt: Option<tokio::runtime::Runtime>,
    description: String,
}

/// What a listing read: for the start-up log and the benchmarks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListStats {
    pub keys: usize,
    pub bytes: usize,
    pub pages: usize,
}

impl EtcdStore {
    /// A store on the cluster `cfg` describes. Nothing is connected yet: an unreachable etcd
    /// shows at the first call, never here. Errors are configuration errors (a bad URL, an
    /// unreadable certificate).
    pub fn new(cfg: &EtcdConfig) -> Result<EtcdStore, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("moongate-etcd")
            .enable_all()
            .build()
            .map_err(|e| StoreError::Failed(format!("cannot start the etcd client: {e}")))?;
        let endpoints = {
            // The channels spawn their connection tasks on the current runtime: this one.
            let _entered = rt.enter();
            Endpoints::new(cfg).map_err(StoreError::Failed)?
        };
        let description = format!(
            "etcd {} (prefix {})",
            endpoints.urls().join(", "),
            cfg.prefix
        );
        Ok(EtcdStore {
            inner: Arc::new(Inner {
                prefix: cfg.prefix.clone(),
                endpoints,
            }),
            rt: Some(rt),
            description,
        })
    }

    /// Runs `f` on the store's runtime and waits for it from whichever runtime calls.
    async fn run<T, Fut>(&self, f: impl FnOnce(Arc<Inner>) -> Fut) -> Result<T, StoreError>
    where
        T: Send + 'static,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let Some(rt) = &self.rt else {
            return Err(StoreError::Failed("the etcd client has stopped".into()));
        };
        rt.spawn(f(self.inner.clone()))
            .await
            .map_err(|e| StoreError::Failed(format!("etcd client task failed: {e}")))?
    }

    /// [`Store::list`] with what it took: keys, bytes and pages.
    pub async fn list_with_stats(&self) -> Result<(Listing, ListStats), StoreError> {
        self.run(|inner| async move { inner.list().await }).await
    }
}

impl Drop for EtcdStore {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

fn error_of(f: Failure, compacted_at: i64) -> StoreError {
    match f {
        Failure::Down(why) => StoreError::Unavailable(format!("etcd is unreachable ({why})")),
        Failure::Compacted => StoreError::Compacted(compacted_at),
        Failure::TooLarge => {
            StoreError::Failed("etcd's answer is larger than one message allows".into())
        }
        Failure::Refused(why) => StoreError::Failed(format!("etcd refused the request: {why}")),
    }
}

fn item_of(kv: KeyValue) -> Item {
    let (create_revision, mod_revision) = (kv.create_revision(), kv.mod_revision());
    let (key, value) = kv.into_key_value();
    Item {
        key: String::from_utf8_lossy(&key).into_owned(),
        value,
        create_revision,
        mod_revision,
    }
}

/// The end of the key range of every key starting with `start` (etcd's prefix range).
fn range_end(start: &[u8]) -> Vec<u8> {
    let mut end = start.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: to the end of the key space.
    vec![0]
}

/// The compares a precondition puts in front of a write.
fn compares(key: &str, pre: Precondition) -> Vec<Compare> {
    match pre {
        Precondition::None => Vec::new(),
        Precondition::Absent => vec![Compare::create_revision(key, CompareOp::Equal, 0)],
        Precondition::ModRevision(r) => vec![Compare::mod_revision(key, CompareOp::Equal, r)],
    }
}

impl Inner {
    fn dir(&self) -> Vec<u8> {
        format!("{}/", self.prefix).into_bytes()
    }

    async fn list(&self) -> Result<(Listing, ListStats), StoreError> {
        let start = self.dir();
        let end = range_end(&start);
        // A revision compacted between two pages means starting over; a few times at most.
        'attempt: for _ in 0..5 {
            let mut items = Vec::new();
            let mut stats = ListStats {
                keys: 0,
                bytes: 0,
                pages: 0,
            };
            let mut from = start.clone();
            let mut revision = 0;
            let mut limit = FIRST_PAGE;
            loop {
                let answer = self
                    .endpoints
                    .call(|mut c: Client| {
                        let (from, end) = (from.clone(), end.clone());
                        async move {
                            let mut opts = GetOptions::new().with_range(end).with_limit(limit);
                            if revision > 0 {
                                opts = opts.with_revision(revision);
                            }
                            c.get(from, Some(opts)).await
                        }
                    })
                    .await;
                let mut page = match answer {
                    Ok(p) => p,
                    Err(Failure::TooLarge) if limit > 1 => {
                        limit = (limit / 2).max(1);
                        continue;
                    }
                    Err(Failure::Compacted) => continue 'attempt,
                    Err(f) => return Err(error_of(f, revision)),
                };
                if revision == 0 {
                    revision = page.header().map_or(0, |h| h.revision());
                }
                stats.pages += 1;
                let more = page.more();
                let kvs = page.take_kvs();
                let next = kvs.last().map(|kv| {
                    let mut k = kv.key().to_vec();
                    k.push(0);
                    k
                });
                for kv in kvs {
                    stats.bytes += kv.key().len() + kv.value().len();
                    items.push(item_of(kv));
                }
                match next {
                    Some(k) if more => from = k,
                    _ => break,
                }
                let average = (stats.bytes / items.len().max(1)).max(1);
                limit = ((PAGE_BYTES / average) as i64).clamp(16, MAX_PAGE);
            }
            stats.keys = items.len();
            log::info!(
                "etcd listing of {}/: {} keys, {} bytes in {} page(s) at revision {revision}",
                self.prefix,
                stats.keys,
                stats.bytes,
                stats.pages
            );
            return Ok((Listing { items, revision }, stats));
        }
        Err(StoreError::Failed(
            "etcd compacted the listing's revision five times in a row".into(),
        ))
    }

    async fn get(&self, key: String) -> Result<Option<Item>, StoreError> {
        let mut answer = self
            .endpoints
            .call(|mut c: Client| {
                let key = key.clone();
                async move { c.get(key, None).await }
            })
            .await
            .map_err(|f| error_of(f, 0))?;
        Ok(answer.take_kvs().into_iter().next().map(item_of))
    }

    /// A lease of `ttl`: keys put with it are deleted by etcd when it runs out.
    async fn lease(&self, ttl: std::time::Duration) -> Result<i64, StoreError> {
        let secs = ttl.as_secs().max(1) as i64;
        let answer = self
            .endpoints
            .call(|mut c: Client| async move { c.lease_grant(secs, None).await })
            .await
            .map_err(|f| error_of(f, 0))?;
        Ok(answer.id())
    }

    async fn put(
        &self,
        key: String,
        value: Vec<u8>,
        pre: Precondition,
        lease: Option<i64>,
    ) -> Result<Item, StoreError> {
        let answer = self
            .endpoints
            .call(|mut c: Client| {
                let mut opts = PutOptions::new().with_prev_key();
                if let Some(id) = lease {
                    opts = opts.with_lease(id);
                }
                let txn = Txn::new().when(compares(&key, pre)).and_then([TxnOp::put(
                    key.clone(),
                    value.clone(),
                    Some(opts),
                )]);
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|f| error_of(f, 0))?;
        if !answer.succeeded() {
            return Err(StoreError::Conflict(key));
        }
        let revision = answer.header().map_or(0, |h| h.revision());
        let create_revision = match answer.op_responses().first() {
            Some(TxnOpResponse::Put(p)) => p.prev_key().map_or(revision, |kv| kv.create_revision()),
            _ => revision,
        };
        Ok(Item {
            key,
            value,
            create_revision,
            mod_revision: revision,
        })
    }

    async fn delete(&self, key: String, pre: Precondition) -> Result<Option<Item>, StoreError> {
        let answer = self
            .endpoints
            .call(|mut c: Client| {
                let txn = Txn::new()
                    .when(compares(&key, pre))
                    .and_then([TxnOp::delete(
                        key.clone(),
                        Some(DeleteOptions::new().with_prev_key()),
                    )]);
                async move { c.txn(txn).await }
            })
            .await
            .map_err(|f| error_of(f, 0))?;
        if !answer.succeeded() {
            return Err(StoreError::Conflict(key));
        }
        Ok(match answer.op_responses().into_iter().next() {
            Some(TxnOpResponse::Delete(d)) => d.prev_kvs().first().cloned().map(item_of),
            _ => None,
        })
    }

    async fn watch(self: Arc<Self>, after: i64) -> Result<WatchStream, StoreError> {
        let start = self.dir();
        let end = range_end(&start);
        let stream = self
            .endpoints
            .call(|c: Client| {
                let (start, end) = (start.clone(), end.clone());
                async move {
                    let mut w = c
                        .watch_client()
                        .max_decoding_message_size(WATCH_MESSAGE_MAX);
                    let opts = WatchOptions::new()
                        .with_range(end)
                        .with_start_revision(after + 1);
                    w.watch(start, Some(opts)).await
                }
            })
            .await
            .map_err(|f| {
                if f == Failure::Compacted {
                    compacted(after, None);
                }
                error_of(f, after)
            })?;
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        tokio::spawn(forward(stream, tx, after));
        Ok(rx)
    }
}

/// Logs that a watch from after `after` cannot be served: the reader lists again.
fn compacted(after: i64, floor: Option<i64>) {
    let floor = floor.map_or(String::new(), |f| {
        format!(" (etcd keeps revisions from {f})")
    });
    log::info!(
        target: "notice",
        "etcd has compacted revision {}{floor}: listing the config again",
        after + 1
    );
}

/// Hands the events of an etcd watch to its reader until either side ends. Every way the watch
/// can end is told to the reader: compaction (list again), cancellation, a broken stream.
async fn forward(
    mut stream: etcd_client::WatchStream,
    tx: mpsc::Sender<Result<Vec<Event>, StoreError>>,
    after: i64,
) {
    loop {
        let message = tokio::select! {
            _ = tx.closed() => return,
            m = stream.message() => m,
        };
        let response = match message {
            Ok(Some(r)) => r,
            // etcd closed the stream: the reader watches again from its revision.
            Ok(None) => return,
            Err(e) => {
                let err = match classify(&e) {
                    Failure::Down(why) => {
                        StoreError::Unavailable(format!("the etcd watch broke ({why})"))
                    }
                    other => error_of(other, 0),
                };
                let _ = tx.send(Err(err)).await;
                return;
            }
        };
        if response.compact_revision() > 0 {
            compacted(after, Some(response.compact_revision()));
            let _ = tx
                .send(Err(StoreError::Compacted(response.compact_revision())))
                .await;
            return;
        }
        if response.canceled() {
            let _ = tx
                .send(Err(StoreError::Failed(format!(
                    "etcd cancelled the watch: {}",
                    response.cancel_reason()
                ))))
                .await;
            return;
        }
        let events: Vec<Event> = response
            .events()
            .iter()
            .filter_map(|ev| {
                let kv = ev.kv()?.clone();
                Some(match ev.event_type() {
                    EventType::Put => Event::Put(item_of(kv)),
                    EventType::Delete => Event::Delete {
                        key: String::from_utf8_lossy(kv.key()).into_owned(),
                        mod_revision: kv.mod_revision(),
                    },
                })
            })
            .collect();
        if !events.is_empty() && tx.send(Ok(events)).await.is_err() {
            return;
        }
    }
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    fn describe(&self) -> String {
        self.description.clone()
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        self.list_with_stats().await.map(|(l, _)| l)
    }

    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        let key = key.to_string();
        self.run(|inner| async move { inner.get(key).await }).await
    }

    async fn put(&self, key: &str, value: Vec<u8>, pre: Precondition) -> Result<Item, StoreError> {
        let key = key.to_string();
        self.run(|inner| async move { inner.put(key, value, pre, None).await })
            .await
    }

    async fn put_with_ttl(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
        ttl: std::time::Duration,
    ) -> Result<Item, StoreError> {
        let key = key.to_string();
        self.run(|inner| async move {
            let lease = inner.lease(ttl).await?;
            inner.put(key, value, pre, Some(lease)).await
        })
        .await
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<Option<Item>, StoreError> {
        let key = key.to_string();
        self.run(|inner| async move { inner.delete(key, pre).await })
            .await
    }

    async fn watch(&self, after: i64) -> Result<WatchStream, StoreError> {
        self.run(|inner| inner.watch(after)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ranges_end_after_every_key_of_the_prefix() {
        assert_eq!(range_end(b"/apisix/"), b"/apisix0".to_vec());
        assert_eq!(range_end(b"a\xff"), b"b".to_vec());
        assert_eq!(range_end(b"\xff\xff"), vec![0]);
    }
}
