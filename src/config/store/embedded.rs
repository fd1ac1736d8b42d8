//! The embedded store: the config store of a single node with no etcd.
//!
//! Keys and values live in memory (a sorted map, so listings come out in key order as etcd's
//! do), with an etcd-style revision counter: every put or delete that changes something takes
//! the next revision. Every change is persisted before it is acknowledged, by appending it as
//! one line to a log beside the data file (`store.json.log`) and syncing it: a write costs the
//! size of the change, not of the store, which matters with tens of thousands of routes. When
//! the log holds more entries than the store has items, the whole store is written to a
//! temporary file, synced, renamed over the data file (the directory synced too) and the log
//! emptied. Opening reads the data file, then replays the log entries newer than it. A crash
//! (even `kill -9` mid-write) leaves either the state before the write or the state after it:
//! a torn last log line is dropped, and entries the data file already holds are skipped.
//!
//! A key written with a time to live (`?ttl=` in the Admin API) carries its expiry (unix
//! milliseconds, in the log and the data file): a thread of the store deletes it when it is
//! due, as etcd does when a lease runs out, unless the key was written again without one.
//!
//! Watches are served from a bounded in-memory log of recent events; a watcher asking for a
//! revision older than the log holds gets [`StoreError::Compacted`] and lists again, exactly as
//! it would against a compacted etcd. This module never talks to the network.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Event, Item, Listing, Precondition, Store, StoreError, WatchStream};

/// How many recent events a watcher may catch up on before it must list again.
const EVENT_LOG: usize = 4096;
/// The log is folded into the data file once it holds more entries than this, or than the
/// store has items, whichever is more: amortised, each write costs O(1) file bytes.
const COMPACT_MIN: usize = 1024;
/// Batches queued per watcher; a watcher that falls further behind is dropped (its stream
/// ends) and re-watches from its last revision.
const WATCH_QUEUE: usize = 1024;
/// The expiry thread looks again at least this often (and stops once the store is dropped).
const EXPIRY_TICK: Duration = Duration::from_millis(500);

/// The data file's shape: the store revision and every item, values kept as their exact text.
#[derive(Serialize, Deserialize, Default)]
struct DataFile {
    revision: i64,
    items: Vec<StoredItem>,
}

/// One line of the log: a put (`value` set) or a delete, at revision `rev`.
#[derive(Serialize, Deserialize)]
struct LogEntry {
    rev: i64,
    key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    value: Option<String>,
    #[serde(default)]
    create_revision: i64,
    /// Unix milliseconds after which the key is deleted (a put with a ttl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

#[derive(Serialize, Deserialize)]
struct StoredItem {
    key: String,
    value: String,
    create_revision: i64,
    mod_revision: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

struct State {
    items: BTreeMap<String, Item>,
    revision: i64,
    /// Recent events, oldest first, each with its revision.
    log: VecDeque<(i64, Event)>,
    /// Every event with a revision above this is in `log`.
    log_floor: i64,
    watchers: Vec<mpsc::Sender<Result<Vec<Event>, StoreError>>>,
    /// The log, opened on the first write.
    wal: Option<std::fs::File>,
    /// Entries and bytes in the log.
    wal_entries: usize,
    wal_len: u64,
    /// key → unix milliseconds at which it is deleted.
    expiry: BTreeMap<String, u64>,
}

/// What the store and its expiry thread share.
struct Core {
    prefix: String,
    path: PathBuf,
    state: Mutex<State>,
}

/// Wakes the expiry thread: when a key gets an expiry, and when the store is dropped.
#[derive(Default)]
struct Alarm {
    stopped: Mutex<bool>,
    ring: Condvar,
}

/// The embedded store, persisted to one JSON file and its log.
pub struct EmbeddedStore {
    core: Arc<Core>,
    alarm: Arc<Alarm>,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        if let Ok(mut s) = self.alarm.stopped.lock() {
            *s = true;
        }
        self.alarm.ring.notify_all();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The expiry thread: deletes keys as their time comes, until the store is dropped. It holds
/// the store only while it looks, never while it waits.
fn expire_loop(core: Weak<Core>, alarm: Arc<Alarm>) {
    loop {
        let next = match core.upgrade() {
            Some(c) => c.expire(),
            None => return,
        };
        let wait = match next {
            Some(t) => Duration::from_millis(t.saturating_sub(now_ms())).min(EXPIRY_TICK),
            None => EXPIRY_TICK,
        };
        let Ok(stopped) = alarm.stopped.lock() else {
            return;
        };
        if *stopped {
            return;
        }
        match alarm.ring.wait_timeout(stopped, wait) {
            Ok((s, _)) if !*s => {}
            _ => return,
        }
    }
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("{what} {}: {e}", path.display()))
}

impl EmbeddedStore {
    /// Opens (or creates, when absent) the store persisted at `path`, holding keys under
    /// `prefix` (`/apisix`). A leftover temporary file from a crash is ignored: the data file
    /// is the last complete state.
    pub fn open(prefix: &str, path: &Path) -> Result<EmbeddedStore, StoreError> {
        let data: DataFile = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| failed("cannot parse the store file", path, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => DataFile::default(),
            Err(e) => return Err(failed("cannot read the store file", path, e)),
        };
        let mut items = BTreeMap::new();
        let mut expiry = BTreeMap::new();
        for s in data.items {
            if let Some(t) = s.expires_at {
                expiry.insert(s.key.clone(), t);
            }
            items.insert(
                s.key.clone(),
                Item {
                    key: s.key,
                    value: s.value.into_bytes(),
                    create_revision: s.create_revision,
                    mod_revision: s.mod_revision,
                },
            );
        }
        let mut revision = data.revision;
        let (wal_entries, wal_len) =
            replay(&log_path(path), &mut items, &mut expiry, &mut revision)?;
        let core = Arc::new(Core {
            prefix: prefix.trim_end_matches('/').to_string(),
            path: path.to_path_buf(),
            state: Mutex::new(State {
                items,
                revision,
                log: VecDeque::new(),
                log_floor: revision,
                watchers: Vec::new(),
                wal: None,
                wal_entries,
                wal_len,
                expiry,
            }),
        });
        let alarm = Arc::new(Alarm::default());
        let (weak, a) = (Arc::downgrade(&core), alarm.clone());
        std::thread::Builder::new()
            .name("moongate-store-ttl".into())
            .spawn(move || expire_loop(weak, a))
            .map_err(|e| failed("cannot start the expiry thread of", path, e))?;
        Ok(EmbeddedStore { core, alarm })
    }

    /// Writes many items at once (seeding a new store): one revision each, one file write.
    pub fn put_many(&self, items: Vec<(String, Vec<u8>)>) -> Result<usize, StoreError> {
        self.core.put_many(items)
    }

    /// True when the store exists: its data file or its log (a store that was never written
    /// has neither).
    pub fn file_exists(path: &Path) -> bool {
        path.is_file() || log_path(path).is_file()
    }

    pub fn path(&self) -> &Path {
        &self.core.path
    }
}

impl Core {
    fn put_many(&self, items: Vec<(String, Vec<u8>)>) -> Result<usize, StoreError> {
        let mut state = self.lock()?;
        let n = items.len();
        for (key, value) in items {
            if std::str::from_utf8(&value).is_err() {
                return Err(StoreError::Failed(format!(
                    "value of {key} is not UTF-8 text; the embedded store keeps JSON text"
                )));
            }
            let rev = state.revision + 1;
            let create_revision = state.items.get(&key).map_or(rev, |i| i.create_revision);
            let item = Item {
                key: key.clone(),
                value,
                create_revision,
                mod_revision: rev,
            };
            state.expiry.remove(&key);
            state.items.insert(key, item.clone());
            state.revision = rev;
            Self::publish(&mut state, Event::Put(item));
        }
        self.compact(&mut state)?;
        Ok(n)
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Failed("the embedded store lock is poisoned".into()))
    }

    /// Writes `state` to the data file atomically (temp file, fsync, rename, fsync dir).
    fn persist(&self, state: &State) -> Result<(), StoreError> {
        let data = DataFile {
            revision: state.revision,
            items: state
                .items
                .values()
                .map(|i| StoredItem {
                    key: i.key.clone(),
                    value: String::from_utf8_lossy(&i.value).into_owned(),
                    create_revision: i.create_revision,
                    mod_revision: i.mod_revision,
                    expires_at: state.expiry.get(&i.key).copied(),
                })
                .collect(),
        };
        let bytes = serde_json::to_vec(&data)
            .map_err(|e| failed("cannot encode the store for", &self.path, e))?;
        super::write_atomically(&self.path, &bytes)
            .map_err(|e| failed("cannot write", &self.path, e))
    }

    /// Appends `entry` to the log and syncs it; folds the log into the data file when it grew
    /// past the store. On failure nothing of the entry is left in the log.
    fn append(&self, state: &mut State, entry: &LogEntry) -> Result<(), StoreError> {
        let log = log_path(&self.path);
        if state.wal.is_none() {
            let dir = self.path.parent().unwrap_or(Path::new("."));
            std::fs::create_dir_all(dir).map_err(|e| failed("cannot create", dir, e))?;
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .map_err(|e| failed("cannot open", &log, e))?;
            state.wal = Some(f);
        }
        let mut line = serde_json::to_vec(entry).map_err(|e| failed("cannot encode", &log, e))?;
        line.push(b'\n');
        let before = state.wal_len;
        let Some(f) = state.wal.as_mut() else {
            return Err(failed("cannot open", &log, "no file"));
        };
        if let Err(e) = f.write_all(&line).and_then(|_| f.sync_data()) {
            // A partial line would hide every later entry from the replay: cut it off.
            let _ = f.set_len(before);
            return Err(failed("cannot write", &log, e));
        }
        state.wal_len += line.len() as u64;
        state.wal_entries += 1;
        if state.wal_entries > state.items.len().max(COMPACT_MIN)
            && let Err(e) = self.compact(state)
        {
            // The entry is durable in the log; folding it in can wait for the next write.
            log::warn!("{e}; the store log keeps growing until this succeeds");
        }
        Ok(())
    }

    /// Writes the whole store to the data file, then empties the log.
    fn compact(&self, state: &mut State) -> Result<(), StoreError> {
        self.persist(state)?;
        let log = log_path(&self.path);
        match &state.wal {
            Some(f) => f.set_len(0).and_then(|_| f.sync_data()),
            // The log may exist from before this process: entries at or below the data
            // file's revision are skipped on replay, but an empty log is tidier.
            None => match std::fs::OpenOptions::new().write(true).open(&log) {
                Ok(f) => f.set_len(0).and_then(|_| f.sync_data()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            },
        }
        .map_err(|e| failed("cannot empty", &log, e))?;
        state.wal_entries = 0;
        state.wal_len = 0;
        Ok(())
    }

    /// Records `event` at the current revision and hands it to every watcher.
    fn publish(state: &mut State, event: Event) {
        let rev = state.revision;
        state.log.push_back((rev, event.clone()));
        while state.log.len() > EVENT_LOG {
            if let Some((r, _)) = state.log.pop_front() {
                state.log_floor = r;
            }
        }
        // A watcher whose queue is full is dropped: its stream ends and it re-watches from
        // its last revision (or lists again when the log no longer reaches back that far).
        state
            .watchers
            .retain(|w| w.try_send(Ok(vec![event.clone()])).is_ok());
    }
}

/// The log beside the data file.
fn log_path(data: &Path) -> PathBuf {
    data.with_extension("json.log")
}

/// Applies the log's entries newer than `revision` to `items`. A last line cut short by a
/// crash is dropped (and cut off the file, so later appends follow a whole line). Returns the
/// entries and bytes left in the log.
fn replay(
    log: &Path,
    items: &mut BTreeMap<String, Item>,
    expiry: &mut BTreeMap<String, u64>,
    revision: &mut i64,
) -> Result<(usize, u64), StoreError> {
    let bytes = match std::fs::read(log) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
        Err(e) => return Err(failed("cannot read", log, e)),
    };
    let mut good = 0usize;
    let mut entries = 0usize;
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        let Some(body) = line.strip_suffix(b"\n") else {
            break;
        };
        let Ok(e) = serde_json::from_slice::<LogEntry>(body) else {
            break;
        };
        good += line.len();
        entries += 1;
        if e.rev <= *revision {
            continue;
        }
        *revision = e.rev;
        match e.expires_at {
            Some(t) if e.value.is_some() => expiry.insert(e.key.clone(), t),
            _ => expiry.remove(&e.key),
        };
        match e.value {
            Some(v) => {
                items.insert(
                    e.key.clone(),
                    Item {
                        key: e.key,
                        value: v.into_bytes(),
                        create_revision: e.create_revision,
                        mod_revision: e.rev,
                    },
                );
            }
            None => {
                items.remove(&e.key);
            }
        }
    }
    if good < bytes.len() {
        log::warn!(
            "{}: dropping {} byte(s) of a write cut short (the state before it is kept)",
            log.display(),
            bytes.len() - good
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(log)
            .and_then(|f| f.set_len(good as u64).and_then(|_| f.sync_data()))
            .map_err(|e| failed("cannot repair", log, e))?;
    }
    Ok((entries, good as u64))
}

fn check(pre: Precondition, key: &str, current: Option<&Item>) -> Result<(), StoreError> {
    let ok = match pre {
        Precondition::None => true,
        Precondition::Absent => current.is_none(),
        Precondition::ModRevision(r) => current.is_some_and(|i| i.mod_revision == r),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::Conflict(key.to_string()))
    }
}

impl Core {
    /// Writes `value` at `key` (with an expiry when given) if `pre` holds.
    fn put_at(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
        expires_at: Option<u64>,
    ) -> Result<Item, StoreError> {
        if std::str::from_utf8(&value).is_err() {
            return Err(StoreError::Failed(format!(
                "value of {key} is not UTF-8 text; the embedded store keeps JSON text"
            )));
        }
        let mut state = self.lock()?;
        check(pre, key, state.items.get(key))?;
        let rev = state.revision + 1;
        let create_revision = state.items.get(key).map_or(rev, |i| i.create_revision);
        let item = Item {
            key: key.to_string(),
            value,
            create_revision,
            mod_revision: rev,
        };
        let previous = state.items.insert(key.to_string(), item.clone());
        let previous_expiry = match expires_at {
            Some(t) => state.expiry.insert(key.to_string(), t),
            None => state.expiry.remove(key),
        };
        state.revision = rev;
        let entry = LogEntry {
            rev,
            key: key.to_string(),
            value: Some(String::from_utf8_lossy(&item.value).into_owned()),
            create_revision,
            expires_at,
        };
        if let Err(e) = self.append(&mut state, &entry) {
            // Not durable, so not done: undo the change in memory too.
            match previous {
                Some(p) => state.items.insert(key.to_string(), p),
                None => state.items.remove(key),
            };
            match previous_expiry {
                Some(t) => state.expiry.insert(key.to_string(), t),
                None => state.expiry.remove(key),
            };
            state.revision = rev - 1;
            return Err(e);
        }
        Self::publish(&mut state, Event::Put(item.clone()));
        Ok(item)
    }

    fn delete_locked(
        &self,
        state: &mut State,
        key: &str,
        pre: Precondition,
    ) -> Result<Option<Item>, StoreError> {
        check(pre, key, state.items.get(key))?;
        let Some(previous) = state.items.remove(key) else {
            return Ok(None);
        };
        let previous_expiry = state.expiry.remove(key);
        let rev = state.revision + 1;
        state.revision = rev;
        let entry = LogEntry {
            rev,
            key: key.to_string(),
            value: None,
            create_revision: 0,
            expires_at: None,
        };
        if let Err(e) = self.append(state, &entry) {
            state.items.insert(key.to_string(), previous);
            if let Some(t) = previous_expiry {
                state.expiry.insert(key.to_string(), t);
            }
            state.revision = rev - 1;
            return Err(e);
        }
        Self::publish(
            state,
            Event::Delete {
                key: key.to_string(),
                mod_revision: rev,
            },
        );
        Ok(Some(previous))
    }

    /// Deletes the keys whose time has come; returns when the next one is due.
    fn expire(&self) -> Option<u64> {
        let mut state = self.lock().ok()?;
        let now = now_ms();
        let due: Vec<String> = state
            .expiry
            .iter()
            .filter(|(_, t)| **t <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Err(e) = self.delete_locked(&mut state, &key, Precondition::None) {
                log::warn!("cannot delete {key} whose ttl ran out: {e}");
                // Retried at the next look.
                break;
            }
        }
        state.expiry.values().min().copied()
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn prefix(&self) -> &str {
        &self.core.prefix
    }

    fn describe(&self) -> String {
        format!("embedded {}", self.core.path.display())
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let state = self.core.lock()?;
        let p = format!("{}/", self.core.prefix);
        Ok(Listing {
            items: state
                .items
                .range(p.clone()..)
                .take_while(|(k, _)| k.starts_with(&p))
                .map(|(_, i)| i.clone())
                .collect(),
            revision: state.revision,
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        Ok(self.core.lock()?.items.get(key).cloned())
    }

    async fn put(&self, key: &str, value: Vec<u8>, pre: Precondition) -> Result<Item, StoreError> {
        self.core.put_at(key, value, pre, None)
    }

    async fn put_with_ttl(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
        ttl: Duration,
    ) -> Result<Item, StoreError> {
        let at = now_ms().saturating_add(ttl.as_millis() as u64);
        let item = self.core.put_at(key, value, pre, Some(at))?;
        self.alarm.ring.notify_all();
        Ok(item)
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<Option<Item>, StoreError> {
        let mut state = self.core.lock()?;
        self.core.delete_locked(&mut state, key, pre)
    }

    async fn watch(&self, after: i64) -> Result<WatchStream, StoreError> {
        let mut state = self.core.lock()?;
        if after < state.log_floor {
            return Err(StoreError::Compacted(after));
        }
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        let backlog: Vec<Event> = state
            .log
            .iter()
            .filter(|(r, _)| *r > after)
            .map(|(_, e)| e.clone())
            .collect();
        if !backlog.is_empty() && tx.try_send(Ok(backlog)).is_err() {
            return Err(StoreError::Failed("cannot queue the watch backlog".into()));
        }
        state.watchers.push(tx);
        Ok(rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("moongate-embedded-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d.join("data/store.json")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn writes_take_revisions_and_survive_reopening() {
        let path = temp("reopen");
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let a = s
                .put(
                    "/apisix/routes/1",
                    b"{\"a\":1}".to_vec(),
                    Precondition::None,
                )
                .await
                .unwrap();
            assert_eq!((a.create_revision, a.mod_revision), (1, 1));
            let b = s
                .put(
                    "/apisix/routes/1",
                    b"{\"a\":2}".to_vec(),
                    Precondition::None,
                )
                .await
                .unwrap();
            assert_eq!((b.create_revision, b.mod_revision), (1, 2));
            s.put("/apisix/upstreams/u", b"{}".to_vec(), Precondition::None)
                .await
                .unwrap();
            s.put("/other/x", b"{}".to_vec(), Precondition::None)
                .await
                .unwrap();
            assert!(
                s.delete("/apisix/upstreams/u", Precondition::None)
                    .await
                    .unwrap()
                    .is_some()
            );
            assert!(
                s.delete("/apisix/upstreams/u", Precondition::None)
                    .await
                    .unwrap()
                    .is_none()
            );
            drop(s);
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let l = s.list().await.unwrap();
            assert_eq!(l.revision, 5);
            assert_eq!(l.items.len(), 1, "only keys under the prefix: {l:?}");
            assert_eq!(l.items[0].value, b"{\"a\":2}");
            assert_eq!(l.items[0].mod_revision, 2);
        });
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn preconditions_are_honoured() {
        let path = temp("pre");
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let a = s
                .put("/apisix/routes/1", b"1".to_vec(), Precondition::Absent)
                .await
                .unwrap();
            assert_eq!(
                s.put("/apisix/routes/1", b"2".to_vec(), Precondition::Absent)
                    .await,
                Err(StoreError::Conflict("/apisix/routes/1".into()))
            );
            assert!(
                s.put(
                    "/apisix/routes/1",
                    b"3".to_vec(),
                    Precondition::ModRevision(a.mod_revision + 7)
                )
                .await
                .is_err()
            );
            s.put(
                "/apisix/routes/1",
                b"4".to_vec(),
                Precondition::ModRevision(a.mod_revision),
            )
            .await
            .unwrap();
            assert!(
                s.delete("/apisix/routes/1", Precondition::ModRevision(1))
                    .await
                    .is_err()
            );
            assert_eq!(
                s.get("/apisix/routes/1").await.unwrap().unwrap().value,
                b"4"
            );
        });
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn watch_replays_the_log_then_follows_and_old_revisions_are_compacted() {
        let path = temp("watch");
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            s.put("/apisix/routes/1", b"1".to_vec(), Precondition::None)
                .await
                .unwrap();
            s.put("/apisix/routes/2", b"2".to_vec(), Precondition::None)
                .await
                .unwrap();
            let mut w = s.watch(1).await.unwrap();
            let first = w.recv().await.unwrap().unwrap();
            assert!(matches!(&first[..], [Event::Put(i)] if i.key == "/apisix/routes/2"));
            s.delete("/apisix/routes/1", Precondition::None)
                .await
                .unwrap();
            let next = w.recv().await.unwrap().unwrap();
            assert_eq!(
                next,
                vec![Event::Delete {
                    key: "/apisix/routes/1".into(),
                    mod_revision: 3
                }]
            );
            drop(s);
            // A reopened store has no log: only the current revision can be watched.
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            assert_eq!(s.watch(1).await.err(), Some(StoreError::Compacted(1)));
            assert!(s.watch(3).await.is_ok());
        });
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_leftover_temp_file_does_not_change_the_state() {
        let path = temp("tmp");
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            s.put("/apisix/routes/1", b"{}".to_vec(), Precondition::None)
                .await
                .unwrap();
        });
        std::fs::write(path.with_extension("json.tmp"), b"{\"revision\": 9, \"ite").unwrap();
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            assert_eq!(s.list().await.unwrap().revision, 1);
        });
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn the_log_replays_drops_a_torn_line_and_folds_into_the_data_file() {
        let path = temp("wal");
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            s.put_many(vec![("/apisix/routes/0".into(), b"{}".to_vec())])
                .unwrap();
            for i in 1..=3 {
                s.put(
                    &format!("/apisix/routes/{i}"),
                    format!("{{\"n\":{i}}}").into_bytes(),
                    Precondition::None,
                )
                .await
                .unwrap();
            }
            s.delete("/apisix/routes/2", Precondition::None)
                .await
                .unwrap();
        });
        // A write cut short by a crash: half a line at the end of the log.
        let log = log_path(&path);
        let mut text = std::fs::read(&log).unwrap();
        let whole = text.len();
        text.extend_from_slice(b"{\"rev\":6,\"key\":\"/apisix/ro");
        std::fs::write(&log, &text).unwrap();
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let l = s.list().await.unwrap();
            assert_eq!(l.revision, 5);
            let keys: Vec<&str> = l.items.iter().map(|i| i.key.as_str()).collect();
            assert_eq!(
                keys,
                ["/apisix/routes/0", "/apisix/routes/1", "/apisix/routes/3"]
            );
            assert_eq!(std::fs::metadata(&log).unwrap().len() as usize, whole);
            // Writes after the repair are replayed too; enough of them fold the log in.
            for i in 0..(COMPACT_MIN + 1) {
                s.put(
                    "/apisix/routes/9",
                    format!("{i}").into_bytes(),
                    Precondition::None,
                )
                .await
                .unwrap();
            }
            assert!(std::fs::metadata(&log).unwrap().len() < whole as u64 * 4);
        });
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let l = s.list().await.unwrap();
            assert_eq!(l.revision, 5 + COMPACT_MIN as i64 + 1);
            assert_eq!(l.items.len(), 4);
            let nine = s.get("/apisix/routes/9").await.unwrap().unwrap();
            assert_eq!(nine.value, format!("{COMPACT_MIN}").into_bytes());
        });
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_key_with_a_ttl_is_deleted_when_it_runs_out_even_across_a_restart() {
        let path = temp("ttl");
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let mut w = s.watch(0).await.unwrap();
            s.put_with_ttl(
                "/apisix/routes/t",
                b"{}".to_vec(),
                Precondition::None,
                Duration::from_millis(200),
            )
            .await
            .unwrap();
            // Written again without a ttl: it stays.
            s.put_with_ttl(
                "/apisix/routes/keep",
                b"{}".to_vec(),
                Precondition::None,
                Duration::from_millis(200),
            )
            .await
            .unwrap();
            s.put("/apisix/routes/keep", b"{}".to_vec(), Precondition::None)
                .await
                .unwrap();
            let mut deleted = Vec::new();
            while deleted.is_empty() {
                for ev in w.recv().await.unwrap().unwrap() {
                    if let Event::Delete { key, .. } = ev {
                        deleted.push(key);
                    }
                }
            }
            assert_eq!(deleted, ["/apisix/routes/t"]);
            assert!(s.get("/apisix/routes/keep").await.unwrap().is_some());
            s.put_with_ttl(
                "/apisix/routes/later",
                b"{}".to_vec(),
                Precondition::None,
                Duration::from_millis(400),
            )
            .await
            .unwrap();
        });
        // Reopened before it ran out: the expiry was kept in the log.
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let rev = s.list().await.unwrap().revision;
            let mut w = s.watch(rev).await.unwrap();
            let batch = w.recv().await.unwrap().unwrap();
            assert!(
                matches!(&batch[..], [Event::Delete { key, .. }] if key == "/apisix/routes/later")
            );
        });
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }
}
