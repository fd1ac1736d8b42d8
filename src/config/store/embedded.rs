//! The embedded store: the config store of a single node with no etcd.
//!
//! Keys and values live in memory (a sorted map, so listings come out in key order as etcd's
//! do), with an etcd-style revision counter: every put or delete that changes something takes
//! the next revision.
//!
//! Every change is on disk before it is acknowledged. A change is one line appended to a
//! journal beside the data file (`store.json.journal`) and synced: the cost of a write does not
//! grow with the number of items stored. When the journal has grown past the size of the data
//! file (at least 1 MiB), the whole store is written to a temporary file, synced and renamed
//! over the data file (the directory synced too), and the journal starts again. Opening reads
//! the data file, then replays the journal's changes that are newer than it. A crash (even
//! `kill -9` mid-write) leaves either the state before the write or the state after it: a torn
//! last journal line is not a complete change and is dropped when the store is opened again.
//!
//! A key written with a time to live (`?ttl=` in the Admin API) carries its expiry (unix
//! milliseconds, kept on disk); a thread of the store deletes it when it is due, as etcd
//! does when a lease runs out, unless the key was written again without one.
//!
//! Watches are served from a bounded in-memory log of recent events; a watcher asking for a
//! revision older than the log holds gets [`StoreError::Compacted`] and lists again, exactly as
//! it would against a compacted etcd. This module never talks to the network.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::io::{BufRead, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::{Event, Item, Listing, Precondition, Store, StoreError, WatchStream};

/// How many recent events a watcher may catch up on before it must list again.
const EVENT_LOG: usize = 4096;
/// Batches queued per watcher; a watcher that falls further behind is dropped (its stream
/// ends) and re-watches from its last revision.
const WATCH_QUEUE: usize = 1024;
/// The journal is folded into the data file once it is larger than the data file and this.
const JOURNAL_MIN: u64 = 1 << 20;
/// The expiry thread looks again at least this often (and when the store is dropped, stops).
const EXPIRY_TICK: Duration = Duration::from_millis(500);

/// The data file's shape: the store revision and every item, values kept as their exact text.
#[derive(Serialize, Deserialize, Default)]
struct DataFile {
    revision: i64,
    items: Vec<StoredItem>,
}

#[derive(Serialize, Deserialize)]
struct StoredItem {
    key: String,
    value: String,
    create_revision: i64,
    mod_revision: i64,
    /// Unix milliseconds after which the key is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at: Option<u64>,
}

/// One journal line: a change at `revision`.
#[derive(Serialize, Deserialize)]
struct Change {
    revision: i64,
    key: String,
    /// The new item; `None` for a delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    put: Option<StoredItem>,
}

struct Entry {
    item: Item,
    expires_at: Option<u64>,
}

struct State {
    items: BTreeMap<String, Entry>,
    revision: i64,
    /// Recent events, oldest first, each with its revision.
    log: VecDeque<(i64, Event)>,
    /// Every event with a revision above this is in `log`.
    log_floor: i64,
    watchers: Vec<mpsc::Sender<Result<Vec<Event>, StoreError>>>,
    /// The open journal, and its length and the data file's (to know when to fold).
    journal: Option<File>,
    journal_len: u64,
    data_len: u64,
}

struct Shared {
    prefix: String,
    path: PathBuf,
    state: Mutex<State>,
    expiry: Arc<Alarm>,
}

/// Wakes the expiry thread: when a key gets an expiry, and when the store is dropped.
#[derive(Default)]
struct Alarm {
    stopped: Mutex<bool>,
    ring: Condvar,
}

impl Alarm {
    fn notify(&self) {
        self.ring.notify_all();
    }

    fn stop(&self) {
        if let Ok(mut s) = self.stopped.lock() {
            *s = true;
        }
        self.ring.notify_all();
    }
}

/// The embedded store, persisted to a data file and its journal.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.shared.expiry.stop();
    }
}

fn failed(what: &str, path: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Failed(format!("{what} {}: {e}", path.display()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn journal_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".journal");
    PathBuf::from(p)
}

fn stored(e: &Entry) -> StoredItem {
    StoredItem {
        key: e.item.key.clone(),
        value: String::from_utf8_lossy(&e.item.value).into_owned(),
        create_revision: e.item.create_revision,
        mod_revision: e.item.mod_revision,
        expires_at: e.expires_at,
    }
}

fn entry_of(s: StoredItem) -> Entry {
    Entry {
        item: Item {
            key: s.key,
            value: s.value.into_bytes(),
            create_revision: s.create_revision,
            mod_revision: s.mod_revision,
        },
        expires_at: s.expires_at,
    }
}

/// Replays the journal at `jpath` onto `items` from above `revision`. Returns the revision
/// reached and the length of the journal's complete lines (a torn last line is not counted).
fn replay(
    jpath: &Path,
    items: &mut BTreeMap<String, Entry>,
    mut revision: i64,
) -> Result<(i64, u64), StoreError> {
    let file = match File::open(jpath) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((revision, 0)),
        Err(e) => return Err(failed("cannot read the store journal", jpath, e)),
    };
    let mut reader = std::io::BufReader::new(file);
    let mut good = 0u64;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| failed("cannot read the store journal", jpath, e))?;
        if n == 0 || line.last() != Some(&b'\n') {
            break;
        }
        let Ok(change) = serde_json::from_slice::<Change>(&line) else {
            break;
        };
        good += n as u64;
        if change.revision <= revision {
            continue;
        }
        revision = change.revision;
        match change.put {
            Some(item) => {
                items.insert(change.key, entry_of(item));
            }
            None => {
                items.remove(&change.key);
            }
        }
    }
    Ok((revision, good))
}

impl EmbeddedStore {
    /// Opens (or creates, when absent) the store persisted at `path`, holding keys under
    /// `prefix` (`/apisix`). A leftover temporary file from a crash is ignored: the data file
    /// and the journal's complete lines are the last complete state.
    pub fn open(prefix: &str, path: &Path) -> Result<EmbeddedStore, StoreError> {
        let (data, data_len): (DataFile, u64) = match std::fs::read(path) {
            Ok(bytes) => (
                serde_json::from_slice(&bytes)
                    .map_err(|e| failed("cannot parse the store file", path, e))?,
                bytes.len() as u64,
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (DataFile::default(), 0),
            Err(e) => return Err(failed("cannot read the store file", path, e)),
        };
        let mut items = BTreeMap::new();
        for s in data.items {
            items.insert(s.key.clone(), entry_of(s));
        }
        let jpath = journal_path(path);
        let (revision, journal_len) = replay(&jpath, &mut items, data.revision)?;
        // Cut a torn tail off, so the next change starts on a line of its own.
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&jpath)
            && f.metadata().map(|m| m.len()).unwrap_or(0) > journal_len
        {
            f.set_len(journal_len)
                .and_then(|_| f.sync_all())
                .map_err(|e| failed("cannot repair the store journal", &jpath, e))?;
        }
        let has_expiry = items.values().any(|e| e.expires_at.is_some());
        let shared = Arc::new(Shared {
            prefix: prefix.trim_end_matches('/').to_string(),
            path: path.to_path_buf(),
            state: Mutex::new(State {
                items,
                revision,
                log: VecDeque::new(),
                log_floor: revision,
                watchers: Vec::new(),
                journal: None,
                journal_len,
                data_len,
            }),
            expiry: Arc::new(Alarm::default()),
        });
        let weak = Arc::downgrade(&shared);
        let alarm = shared.expiry.clone();
        std::thread::Builder::new()
            .name("moongate-store-ttl".into())
            .spawn(move || expire_loop(weak, alarm))
            .map_err(|e| failed("cannot start the expiry thread of", path, e))?;
        if has_expiry {
            shared.expiry.notify();
        }
        Ok(EmbeddedStore { shared })
    }

    /// True when the store was ever written (its data file or journal exists).
    pub fn file_exists(path: &Path) -> bool {
        path.is_file() || journal_path(path).is_file()
    }

    pub fn path(&self) -> &Path {
        &self.shared.path
    }
}

impl Shared {
    fn lock(&self) -> Result<std::sync::MutexGuard<'_, State>, StoreError> {
        self.state
            .lock()
            .map_err(|_| StoreError::Failed("the embedded store lock is poisoned".into()))
    }

    /// Writes the whole store to the data file atomically (temp file, fsync, rename, fsync
    /// dir) and starts an empty journal.
    fn fold(&self, state: &mut State) -> Result<(), StoreError> {
        let data = DataFile {
            revision: state.revision,
            items: state.items.values().map(stored).collect(),
        };
        let bytes = serde_json::to_vec(&data)
            .map_err(|e| failed("cannot encode the store for", &self.path, e))?;
        super::write_atomically(&self.path, &bytes)
            .map_err(|e| failed("cannot write", &self.path, e))?;
        state.data_len = bytes.len() as u64;
        // The data file now holds every change: the journal's lines are all older than it.
        let jpath = journal_path(&self.path);
        let journal = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&jpath)
            .map_err(|e| failed("cannot start the store journal", &jpath, e))?;
        state.journal = Some(journal);
        state.journal_len = 0;
        Ok(())
    }

    /// Appends `change` to the journal and syncs it; folds the journal into the data file
    /// when it has grown large.
    fn persist(&self, state: &mut State, change: &Change) -> Result<(), StoreError> {
        let jpath = journal_path(&self.path);
        if state.journal.is_none() {
            if let Some(dir) = jpath.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| failed("cannot create the directory of", &jpath, e))?;
            }
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&jpath)
                .map_err(|e| failed("cannot open the store journal", &jpath, e))?;
            state.journal = Some(f);
        }
        let mut line = serde_json::to_vec(change)
            .map_err(|e| failed("cannot encode a change for", &jpath, e))?;
        line.push(b'\n');
        let start = state.journal_len;
        let written = state.journal.as_mut().map(|f| {
            f.seek(std::io::SeekFrom::Start(start))
                .and_then(|_| f.write_all(&line))
                .and_then(|_| f.sync_data())
        });
        if let Some(Err(e)) = written {
            // Leave no partial line behind for the next change to follow.
            if let Some(f) = &state.journal {
                let _ = f.set_len(start);
            }
            return Err(failed("cannot write the store journal", &jpath, e));
        }
        state.journal_len += line.len() as u64;
        if state.journal_len > JOURNAL_MIN.max(state.data_len) {
            // The change is durable already; a failed fold only postpones the next one.
            if let Err(e) = self.fold(state) {
                log::warn!("{e}; the journal keeps growing until the next attempt");
            }
        }
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

    fn put(
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
        check(pre, key, state.items.get(key).map(|e| &e.item))?;
        let rev = state.revision + 1;
        let create_revision = state.items.get(key).map_or(rev, |e| e.item.create_revision);
        let entry = Entry {
            item: Item {
                key: key.to_string(),
                value,
                create_revision,
                mod_revision: rev,
            },
            expires_at,
        };
        let change = Change {
            revision: rev,
            key: key.to_string(),
            put: Some(stored(&entry)),
        };
        let item = entry.item.clone();
        let previous = state.items.insert(key.to_string(), entry);
        state.revision = rev;
        if let Err(e) = self.persist(&mut state, &change) {
            // Not durable, so not done: undo the change in memory too.
            match previous {
                Some(p) => state.items.insert(key.to_string(), p),
                None => state.items.remove(key),
            };
            state.revision = rev - 1;
            return Err(e);
        }
        Self::publish(&mut state, Event::Put(item.clone()));
        drop(state);
        if expires_at.is_some() {
            self.expiry.notify();
        }
        Ok(item)
    }

    fn delete_locked(
        &self,
        state: &mut State,
        key: &str,
        pre: Precondition,
    ) -> Result<Option<Item>, StoreError> {
        check(pre, key, state.items.get(key).map(|e| &e.item))?;
        let Some(previous) = state.items.remove(key) else {
            return Ok(None);
        };
        let rev = state.revision + 1;
        state.revision = rev;
        let change = Change {
            revision: rev,
            key: key.to_string(),
            put: None,
        };
        if let Err(e) = self.persist(state, &change) {
            state.items.insert(key.to_string(), previous);
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
        Ok(Some(previous.item))
    }

    /// Deletes the keys whose time has come; returns when the next one is due.
    fn expire(&self) -> Option<u64> {
        let mut state = self.lock().ok()?;
        let now = now_ms();
        let due: Vec<String> = state
            .items
            .iter()
            .filter(|(_, e)| e.expires_at.is_some_and(|t| t <= now))
            .map(|(k, _)| k.clone())
            .collect();
        for key in due {
            if let Err(e) = self.delete_locked(&mut state, &key, Precondition::None) {
                log::warn!("cannot delete {key} whose ttl ran out: {e}");
            }
        }
        state.items.values().filter_map(|e| e.expires_at).min()
    }
}

/// The expiry thread: deletes keys as their time comes, until the store is dropped. It holds
/// the store only while it looks, never while it waits.
fn expire_loop(store: Weak<Shared>, alarm: Arc<Alarm>) {
    loop {
        let next = match store.upgrade() {
            Some(shared) => shared.expire(),
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

#[async_trait]
impl Store for EmbeddedStore {
    fn prefix(&self) -> &str {
        &self.shared.prefix
    }

    fn describe(&self) -> String {
        format!("embedded {}", self.shared.path.display())
    }

    async fn list(&self) -> Result<Listing, StoreError> {
        let state = self.shared.lock()?;
        let p = format!("{}/", self.shared.prefix);
        Ok(Listing {
            items: state
                .items
                .range(p.clone()..)
                .take_while(|(k, _)| k.starts_with(&p))
                .map(|(_, e)| e.item.clone())
                .collect(),
            revision: state.revision,
        })
    }

    async fn get(&self, key: &str) -> Result<Option<Item>, StoreError> {
        Ok(self.shared.lock()?.items.get(key).map(|e| e.item.clone()))
    }

    async fn put(&self, key: &str, value: Vec<u8>, pre: Precondition) -> Result<Item, StoreError> {
        self.shared.put(key, value, pre, None)
    }

    async fn put_with_ttl(
        &self,
        key: &str,
        value: Vec<u8>,
        pre: Precondition,
        ttl: Duration,
    ) -> Result<Item, StoreError> {
        let at = now_ms().saturating_add(ttl.as_millis() as u64);
        self.shared.put(key, value, pre, Some(at))
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<Option<Item>, StoreError> {
        let mut state = self.shared.lock()?;
        self.shared.delete_locked(&mut state, key, pre)
    }

    async fn watch(&self, after: i64) -> Result<WatchStream, StoreError> {
        let mut state = self.shared.lock()?;
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
    fn the_journal_replays_after_the_data_file_and_a_torn_line_is_dropped() {
        let path = temp("journal");
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            for i in 0..5 {
                s.put(
                    &format!("/apisix/routes/{i}"),
                    format!("{{\"n\":{i}}}").into_bytes(),
                    Precondition::None,
                )
                .await
                .unwrap();
            }
            s.delete("/apisix/routes/0", Precondition::None)
                .await
                .unwrap();
        });
        // A crash in the middle of the next line.
        let jpath = journal_path(&path);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&jpath)
            .unwrap();
        f.write_all(b"{\"revision\":7,\"key\":\"/apisix/rou")
            .unwrap();
        drop(f);
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let l = s.list().await.unwrap();
            assert_eq!(l.revision, 6);
            assert_eq!(l.items.len(), 4);
            // The next change lands on a clean line and survives another reopening.
            s.put("/apisix/routes/9", b"{}".to_vec(), Precondition::None)
                .await
                .unwrap();
        });
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let l = s.list().await.unwrap();
            assert_eq!((l.revision, l.items.len()), (7, 5));
        });
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }

    #[test]
    fn a_large_journal_is_folded_into_the_data_file() {
        let path = temp("fold");
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(64 * 1024));
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            for i in 0..20 {
                s.put(
                    &format!("/apisix/routes/{}", i % 3),
                    big.clone().into_bytes(),
                    Precondition::None,
                )
                .await
                .unwrap();
            }
        });
        assert!(path.is_file(), "the data file was written");
        assert!(std::fs::metadata(journal_path(&path)).unwrap().len() < JOURNAL_MIN);
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let l = s.list().await.unwrap();
            assert_eq!((l.revision, l.items.len()), (20, 3));
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
                Duration::from_millis(300),
            )
            .await
            .unwrap();
        });
        // Reopened before it ran out: the expiry was kept on disk.
        rt().block_on(async {
            let s = EmbeddedStore::open("/apisix", &path).unwrap();
            let mut w = s.watch(s.list().await.unwrap().revision).await.unwrap();
            let batch = w.recv().await.unwrap().unwrap();
            assert!(
                matches!(&batch[..], [Event::Delete { key, .. }] if key == "/apisix/routes/later")
            );
        });
        let _ = std::fs::remove_dir_all(path.parent().unwrap().parent().unwrap());
    }
}
