//! The Admin API's own mirror of the store, so that listing a collection, paging through it
//! and checking what still uses a resource before deleting it cost a lookup, not a read of
//! every key (at 50,000 routes a full read of etcd is about 120 ms and 9 MiB).
//!
//! The mirror lists the store once, then follows its watch, as the data-plane sync does; it
//! keeps each item's bytes (answers are built from them without parsing) and a few facts
//! parsed once per change: the fields the list filters read and the ids the item refers to,
//! from which a reverse map answers "who uses upstream 1?".
//!
//! Read-your-writes: every write the Admin API makes is applied here as soon as the store
//! acknowledges it, before the answer goes out, so a client that writes and then lists sees
//! its write. Events are applied by revision (a key's older version never replaces a newer
//! one, a deleted version never comes back), so the watch delivering the same change later is
//! harmless. Writes by other nodes arrive through the watch, within its latency.
//!
//! While the mirror is not following the store (before the first listing, after the watch
//! broke, while listing again after a compaction) it is not *ready*, and the Admin API reads
//! the store directly as it did before the mirror existed (and, with etcd away, answers 503).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::Value;

use super::resources::id_text;
use crate::config::provider::store::{KeyRef, LOCATIONS_DIR, key_ref};
use crate::config::store::{Event, Item, Listing, Store, StoreError};

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Own writes remembered until the watch has passed them (so a re-listing cannot lose them).
const RECENT_MAX: usize = 4096;

/// An id an item refers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The kind of the target (`upstreams`).
    pub kind: &'static str,
    pub id: String,
    /// Named inside a plugin's conf (traffic-split's `upstream_id`, grpc-transcode's
    /// `proto_id`) rather than by a field of the resource itself.
    pub in_plugin: bool,
}

/// What the list filters and the reference checks read, parsed once per version of an item.
#[derive(Debug, Default, Clone)]
pub struct Facts {
    /// The value's own `id` as text (what APISIX's messages name), else the key's id.
    pub id: String,
    pub name: Option<String>,
    pub label_keys: Vec<String>,
    pub uris: Vec<String>,
    /// Top-level string/number fields the `filter` argument may test (`service_id`).
    pub scalars: Vec<(String, String)>,
    pub refs: Vec<Ref>,
    /// A consumer's or credential's auth plugins' unique keys: (plugin, value).
    pub auth_keys: Vec<(String, String)>,
    /// The value has `plugins` (whose encrypted fields an answer shows decrypted).
    pub has_plugins: bool,
}

/// The field of each auth plugin that must be unique across consumers and credentials.
pub const AUTH_KEY_FIELDS: &[(&str, &str)] = &[
    ("key-auth", "key"),
    ("basic-auth", "username"),
    ("jwt-auth", "key"),
    ("hmac-auth", "key_id"),
    ("ldap-auth", "user_dn"),
    ("ldap-auth-advanced", "user_dn"),
];

/// The unique keys of the auth plugins in `plugins`; secret references (`$secret://`,
/// `$env://`) are not known before they are resolved and are left out.
pub fn auth_keys(plugins: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (plugin, field) in AUTH_KEY_FIELDS {
        if let Some(v) = plugins
            .get(*plugin)
            .and_then(|c| c.get(*field))
            .and_then(Value::as_str)
        {
            let upper = v.to_ascii_uppercase();
            if !v.starts_with("$secret://") && !upper.starts_with("$ENV://") {
                out.push((plugin.to_string(), v.to_string()));
            }
        }
    }
    out
}

/// One stored item as the mirror keeps it.
#[derive(Debug)]
pub struct Entry {
    pub key: String,
    /// The kind (`credentials` for a consumer's credentials) and the key's id part.
    pub kind: &'static str,
    pub key_id: String,
    pub value: Vec<u8>,
    /// The value is JSON (it can be copied into an answer as it is).
    pub json: bool,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub facts: Facts,
}

impl Entry {
    pub fn item(&self) -> Item {
        Item {
            key: self.key.clone(),
            value: self.value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

/// What a store key holds, as the Admin API names it: [`key_ref`], except that moongate's
/// locations are their own kind here (the data plane serves them as routes).
pub fn kind_of(prefix: &str, key: &str) -> Option<KeyRef> {
    let mut r = key_ref(prefix, key)?;
    if key[prefix.len()..].starts_with(&format!("/{LOCATIONS_DIR}")) {
        r.kind = "moongate_locations";
    }
    Some(r)
}

fn text_of(v: &Value) -> Option<String> {
    id_text(v)
}

/// The upstream ids traffic-split's rules name.
fn split_upstreams(plugins: &Value, out: &mut Vec<Ref>) {
    let rules = plugins
        .get("traffic-split")
        .and_then(|t| t.get("rules"))
        .and_then(Value::as_array);
    for rule in rules.into_iter().flatten() {
        let weighted = rule.get("weighted_upstreams").and_then(Value::as_array);
        for w in weighted.into_iter().flatten() {
            if let Some(id) = w.get("upstream_id").and_then(text_of) {
                out.push(Ref {
                    kind: "upstreams",
                    id,
                    in_plugin: true,
                });
            }
        }
    }
}

/// The facts of a `kind` value.
pub fn facts(kind: &str, key_id: &str, v: &Value) -> Facts {
    let mut f = Facts {
        id: v
            .get("id")
            .and_then(text_of)
            .unwrap_or_else(|| key_id.to_string()),
        name: v.get("name").and_then(Value::as_str).map(str::to_string),
        ..Facts::default()
    };
    if let Some(labels) = v.get("labels").and_then(Value::as_object) {
        f.label_keys = labels.keys().cloned().collect();
    }
    if let Some(u) = v.get("uri").and_then(Value::as_str) {
        f.uris.push(u.to_string());
    }
    if let Some(list) = v.get("uris").and_then(Value::as_array) {
        f.uris
            .extend(list.iter().filter_map(Value::as_str).map(str::to_string));
    }
    if let Some(o) = v.as_object() {
        for (k, x) in o {
            if let Some(t) = match x {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            } {
                f.scalars.push((k.clone(), t));
            }
        }
    }
    let field = |name: &str, target: &'static str, out: &mut Vec<Ref>| {
        if let Some(id) = v.get(name).and_then(text_of) {
            out.push(Ref {
                kind: target,
                id,
                in_plugin: false,
            });
        }
    };
    let mut refs = Vec::new();
    match kind {
        "routes" => {
            field("upstream_id", "upstreams", &mut refs);
            field("service_id", "services", &mut refs);
            field("plugin_config_id", "plugin_configs", &mut refs);
        }
        "services" => field("upstream_id", "upstreams", &mut refs),
        "stream_routes" => {
            field("upstream_id", "upstreams", &mut refs);
            field("service_id", "services", &mut refs);
        }
        "consumers" => field("group_id", "consumer_groups", &mut refs),
        _ => {}
    }
    if let Some(plugins) = v.get("plugins") {
        f.has_plugins = true;
        if matches!(kind, "consumers" | "credentials") {
            f.auth_keys = auth_keys(plugins);
        }
        split_upstreams(plugins, &mut refs);
        if matches!(kind, "routes" | "services")
            && let Some(id) = plugins
                .get("grpc-transcode")
                .and_then(|g| g.get("proto_id"))
                .and_then(text_of)
        {
            refs.push(Ref {
                kind: "protos",
                id,
                in_plugin: true,
            });
        }
    }
    f.refs = refs;
    f
}

#[derive(Debug, Clone)]
enum Note {
    Put(Item),
    /// A key deleted while its version `mod_revision` was current.
    Delete {
        key: String,
        mod_revision: i64,
    },
}

#[derive(Default)]
struct State {
    items: BTreeMap<String, Arc<Entry>>,
    /// Per kind, (create_revision, key): the order paged lists are sorted in.
    by_create: HashMap<&'static str, BTreeSet<(i64, String)>>,
    /// (kind, id) → keys of the items referring to it.
    referrers: HashMap<(&'static str, String), BTreeSet<String>>,
    /// (auth plugin, unique key) → keys of the consumers and credentials carrying it.
    owners: HashMap<(String, String), BTreeSet<String>>,
    /// key → the revision it was last seen deleted at; an older put of it is stale.
    tombstones: HashMap<String, i64>,
    /// The highest revision the listing or the watch has delivered.
    watched: i64,
    /// Own writes not yet seen on the watch, oldest first.
    recent: VecDeque<(i64, Note)>,
    ready: bool,
}

impl State {
    fn unlink(&mut self, e: &Entry) {
        if let Some(set) = self.by_create.get_mut(e.kind) {
            set.remove(&(e.create_revision, e.key.clone()));
        }
        for r in &e.facts.refs {
            if let Some(set) = self.referrers.get_mut(&(r.kind, r.id.clone())) {
                set.remove(&e.key);
                if set.is_empty() {
                    self.referrers.remove(&(r.kind, r.id.clone()));
                }
            }
        }
        for k in &e.facts.auth_keys {
            if let Some(set) = self.owners.get_mut(k) {
                set.remove(&e.key);
                if set.is_empty() {
                    self.owners.remove(k);
                }
            }
        }
    }

    fn link(&mut self, e: &Entry) {
        self.by_create
            .entry(e.kind)
            .or_default()
            .insert((e.create_revision, e.key.clone()));
        for r in &e.facts.refs {
            self.referrers
                .entry((r.kind, r.id.clone()))
                .or_default()
                .insert(e.key.clone());
        }
        for k in &e.facts.auth_keys {
            self.owners
                .entry(k.clone())
                .or_default()
                .insert(e.key.clone());
        }
    }

    fn put(&mut self, prefix: &str, item: &Item) {
        if let Some(current) = self.items.get(&item.key)
            && current.mod_revision >= item.mod_revision
        {
            return;
        }
        if self
            .tombstones
            .get(&item.key)
            .is_some_and(|d| *d >= item.mod_revision)
        {
            return;
        }
        let Some(r) = kind_of(prefix, &item.key) else {
            return;
        };
        let parsed: Option<Value> = serde_json::from_slice(&item.value).ok();
        let facts = parsed
            .as_ref()
            .map(|v| facts(r.kind, &r.id, v))
            .unwrap_or_else(|| Facts {
                id: r.id.clone(),
                ..Facts::default()
            });
        let entry = Arc::new(Entry {
            key: item.key.clone(),
            kind: r.kind,
            key_id: r.id,
            value: item.value.clone(),
            json: parsed.is_some(),
            create_revision: item.create_revision,
            mod_revision: item.mod_revision,
            facts,
        });
        if let Some(old) = self.items.insert(item.key.clone(), entry.clone()) {
            self.unlink(&old);
        }
        self.link(&entry);
    }

    /// Removes `key` if the version there is not newer than `revision`.
    fn delete(&mut self, key: &str, revision: i64) {
        let t = self.tombstones.entry(key.to_string()).or_insert(revision);
        *t = (*t).max(revision);
        if self
            .items
            .get(key)
            .is_some_and(|e| e.mod_revision <= revision)
            && let Some(old) = self.items.remove(key)
        {
            self.unlink(&old);
        }
    }

    fn apply(&mut self, prefix: &str, note: &Note) {
        match note {
            Note::Put(item) => self.put(prefix, item),
            Note::Delete { key, mod_revision } => self.delete(key, *mod_revision),
        }
    }

    /// The watch has delivered everything up to `revision`: what is older is settled.
    fn passed(&mut self, revision: i64) {
        self.watched = self.watched.max(revision);
        let w = self.watched;
        while self.recent.front().is_some_and(|(r, _)| *r <= w) {
            self.recent.pop_front();
        }
        self.tombstones.retain(|_, d| *d > w);
    }

    fn load(&mut self, prefix: &str, listing: Listing) {
        let recent = std::mem::take(&mut self.recent);
        *self = State::default();
        for item in &listing.items {
            self.put(prefix, item);
        }
        self.passed(listing.revision);
        // Own writes the listing may not include yet are applied again.
        for (rev, note) in recent {
            if rev > listing.revision {
                self.apply(prefix, &note);
                self.recent.push_back((rev, note));
            }
        }
    }
}

/// The mirror; see the module documentation.
pub struct Index {
    prefix: String,
    state: Mutex<State>,
}

/// The (kind, id) pair a delete check asks about.
pub type Target<'a> = (&'static str, &'a str);

impl Index {
    pub fn new(prefix: &str) -> Arc<Index> {
        Arc::new(Index {
            prefix: prefix.to_string(),
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data, consistent after every statement: a panic elsewhere
        // cannot leave it half-changed.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists the store, then follows its watch until the task is dropped. Runs on the Admin
    /// API's runtime.
    pub async fn follow(self: Arc<Self>, store: Arc<dyn Store>) {
        let mut backoff = BACKOFF_MIN;
        let mut need_list = true;
        loop {
            if need_list {
                match store.list().await {
                    Ok(listing) => {
                        self.lock().load(&self.prefix, listing);
                        need_list = false;
                        backoff = BACKOFF_MIN;
                    }
                    Err(e) => {
                        self.lock().ready = false;
                        log::debug!("Admin API index: listing failed ({e}); retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        continue;
                    }
                }
            }
            let after = self.lock().watched;
            let mut stream = match store.watch(after).await {
                Ok(s) => s,
                Err(StoreError::Compacted(_)) => {
                    self.lock().ready = false;
                    need_list = true;
                    continue;
                }
                Err(e) => {
                    self.lock().ready = false;
                    log::debug!("Admin API index: watch failed ({e}); retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            };
            self.lock().ready = true;
            backoff = BACKOFF_MIN;
            while let Some(batch) = stream.recv().await {
                match batch {
                    Ok(events) => self.apply_events(&events),
                    Err(StoreError::Compacted(_)) => {
                        need_list = true;
                        break;
                    }
                    Err(e) => {
                        log::debug!("Admin API index: watch ended ({e})");
                        break;
                    }
                }
            }
            self.lock().ready = false;
        }
    }

    fn apply_events(&self, events: &[Event]) {
        let mut s = self.lock();
        let mut top = 0;
        for ev in events {
            match ev {
                Event::Put(item) => {
                    top = top.max(item.mod_revision);
                    s.put(&self.prefix, item);
                }
                Event::Delete { key, mod_revision } => {
                    top = top.max(*mod_revision);
                    s.delete(key, *mod_revision);
                }
            }
        }
        s.passed(top);
    }

    /// An Admin API write the store acknowledged.
    pub fn wrote(&self, item: &Item) {
        let mut s = self.lock();
        let note = Note::Put(item.clone());
        s.apply(&self.prefix, &note);
        if s.recent.len() < RECENT_MAX {
            s.recent.push_back((item.mod_revision, note));
        }
    }

    /// An Admin API delete the store acknowledged; `previous` is the version it removed.
    pub fn deleted(&self, previous: &Item) {
        let mut s = self.lock();
        let note = Note::Delete {
            key: previous.key.clone(),
            mod_revision: previous.mod_revision,
        };
        s.apply(&self.prefix, &note);
        if s.recent.len() < RECENT_MAX {
            s.recent.push_back((previous.mod_revision, note));
        }
    }

    /// True while the mirror follows the store.
    pub fn ready(&self) -> bool {
        self.lock().ready
    }

    /// The entries whose key starts with `key_prefix`, in key order; `None` when not ready.
    pub fn under(&self, key_prefix: &str) -> Option<Vec<Arc<Entry>>> {
        let s = self.lock();
        if !s.ready {
            return None;
        }
        Some(
            s.items
                .range(key_prefix.to_string()..)
                .take_while(|(k, _)| k.starts_with(key_prefix))
                .map(|(_, e)| e.clone())
                .collect(),
        )
    }

    /// The entries of `kind` in creation order (the order paged lists use), each kept when
    /// `keep` says so (all when `None`), and how many were kept; only entries
    /// `skip`..`skip + take` of the kept ones are returned. `None` when not ready.
    pub fn page(
        &self,
        kind: &'static str,
        keep: Option<&dyn Fn(&Entry) -> bool>,
        skip: usize,
        take: usize,
    ) -> Option<(usize, Vec<Arc<Entry>>)> {
        let unfiltered = keep.is_none();
        let keep = keep.unwrap_or(&|_| true);
        let s = self.lock();
        if !s.ready {
            return None;
        }
        let order = s.by_create.get(kind);
        if unfiltered {
            // The total is the set's size: only the page itself is looked at.
            let total = order.map_or(0, BTreeSet::len);
            let out = order
                .into_iter()
                .flatten()
                .skip(skip)
                .take(take)
                .filter_map(|(_, key)| s.items.get(key).cloned())
                .collect();
            return Some((total, out));
        }
        let mut total = 0;
        let mut out = Vec::new();
        for (_, key) in order.into_iter().flatten() {
            let Some(e) = s.items.get(key) else { continue };
            if !keep(e) {
                continue;
            }
            if total >= skip && out.len() < take {
                out.push(e.clone());
            }
            total += 1;
        }
        Some((total, out))
    }

    /// The consumers and credentials whose `plugin` has the unique key `value`, in key order;
    /// `None` when not ready.
    pub fn owners(&self, plugin: &str, value: &str) -> Option<Vec<Arc<Entry>>> {
        let s = self.lock();
        if !s.ready {
            return None;
        }
        let Some(keys) = s.owners.get(&(plugin.to_string(), value.to_string())) else {
            return Some(Vec::new());
        };
        Some(
            keys.iter()
                .filter_map(|k| s.items.get(k).cloned())
                .collect(),
        )
    }

    /// The first item (in key order) of each store directory that refers to `target`: what
    /// a delete check needs, however many items refer to it. `None` when not ready.
    pub fn referrers(&self, target: Target<'_>) -> Option<Vec<Arc<Entry>>> {
        use std::ops::Bound;
        let s = self.lock();
        if !s.ready {
            return None;
        }
        let Some(keys) = s.referrers.get(&(target.0, target.1.to_string())) else {
            return Some(Vec::new());
        };
        let mut out = Vec::new();
        let mut from = Bound::Unbounded;
        while let Some(key) = keys.range::<String, _>((from, Bound::Unbounded)).next() {
            if let Some(e) = s.items.get(key) {
                out.push(e.clone());
            }
            // Past every key of this directory: `{prefix}/routes/` → `{prefix}/routes0`.
            let rest = key[self.prefix.len()..].trim_start_matches('/');
            let dir_end = match rest.split_once('/') {
                Some((dir, _)) => format!("{}/{dir}0", self.prefix),
                None => format!("{key}\0"),
            };
            from = Bound::Included(dir_end);
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(key: &str, value: &str, c: i64, m: i64) -> Item {
        Item {
            key: key.into(),
            value: value.as_bytes().to_vec(),
            create_revision: c,
            mod_revision: m,
        }
    }

    fn ready_index() -> Arc<Index> {
        let ix = Index::new("/apisix");
        ix.lock().load(
            "/apisix",
            Listing {
                items: vec![
                    item("/apisix/upstreams/u1", r#"{"id":"u1"}"#, 2, 2),
                    item(
                        "/apisix/routes/1",
                        r#"{"id":"1","uri":"/a","upstream_id":"u1"}"#,
                        3,
                        3,
                    ),
                ],
                revision: 3,
            },
        );
        ix.lock().ready = true;
        ix
    }

    #[test]
    fn referrers_follow_puts_and_deletes() {
        let ix = ready_index();
        let r = ix.referrers(("upstreams", "u1")).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].facts.id, "1");
        ix.wrote(&item("/apisix/routes/1", r#"{"id":"1","uri":"/a"}"#, 3, 4));
        assert!(ix.referrers(("upstreams", "u1")).unwrap().is_empty());
        ix.wrote(&item(
            "/apisix/routes/2",
            r#"{"id":"2","uri":"/b","plugins":{"traffic-split":{"rules":[{"weighted_upstreams":[{"upstream_id":"u1"}]}]}}}"#,
            5,
            5,
        ));
        let r = ix.referrers(("upstreams", "u1")).unwrap();
        assert!(r[0].facts.refs[0].in_plugin);
    }

    #[test]
    fn stale_events_never_undo_newer_ones() {
        let ix = ready_index();
        // Our own write at 5, then the watch delivers the older version at 4.
        ix.wrote(&item(
            "/apisix/routes/9",
            r#"{"id":"9","uri":"/new"}"#,
            4,
            5,
        ));
        ix.apply_events(&[Event::Put(item(
            "/apisix/routes/9",
            r#"{"id":"9","uri":"/old"}"#,
            4,
            4,
        ))]);
        let e = ix.under("/apisix/routes/9").unwrap();
        assert_eq!(e[0].mod_revision, 5);
        // Deleted at version 5: a late put of version 5 does not bring it back.
        let gone = item("/apisix/routes/9", "", 4, 5);
        ix.deleted(&gone);
        ix.apply_events(&[Event::Put(item(
            "/apisix/routes/9",
            r#"{"id":"9","uri":"/new"}"#,
            4,
            5,
        ))]);
        assert!(ix.under("/apisix/routes/9").unwrap().is_empty());
        // A new version after the delete does.
        ix.apply_events(&[
            Event::Delete {
                key: "/apisix/routes/9".into(),
                mod_revision: 6,
            },
            Event::Put(item("/apisix/routes/9", r#"{"id":"9","uri":"/x"}"#, 7, 7)),
        ]);
        assert_eq!(ix.under("/apisix/routes/9").unwrap().len(), 1);
    }

    #[test]
    fn pages_come_in_creation_order() {
        let ix = ready_index();
        for (i, c) in [(10, 30), (11, 20), (12, 25)] {
            ix.wrote(&item(
                &format!("/apisix/routes/{i}"),
                &format!(r#"{{"id":"{i}","uri":"/{i}"}}"#),
                c,
                c,
            ));
        }
        let (total, page) = ix.page("routes", None, 1, 2).unwrap();
        let not_11 = |e: &Entry| e.key_id != "11";
        let (kept_total, kept) = ix.page("routes", Some(&not_11), 0, 10).unwrap();
        assert_eq!((kept_total, kept.len()), (3, 3));
        assert_eq!(total, 4);
        let ids: Vec<&str> = page.iter().map(|e| e.key_id.as_str()).collect();
        assert_eq!(ids, ["11", "12"]);
    }
}
