//! The resource methods: `GET` one and list, `PUT`, `POST`, `PATCH` (whole and sub-path) and
//! `DELETE`, over a [`Store`], each answering as APISIX's Admin API does.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::envelope::{self, Answer};
use super::resources::{self, Kind};
use crate::config::provider::store::key_ref;
use crate::config::store::{Item, Precondition, Store, StoreError};
use crate::lua::plugin::Seal;
use crate::plugin::Catalog;

/// What a resource URL names: the kind, its id (if any) and the rest of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: &'static Kind,
    /// `1`; `vault/1` for secrets; the plugin name for plugin metadata; for credentials
    /// `jack/credentials/c1` (or `jack/credentials/` in a list).
    pub id: Option<String>,
    /// For credentials: the consumer name.
    pub parent: Option<String>,
    /// A `PATCH` sub-path inside the value (`methods`, `upstream/nodes`).
    pub sub_path: String,
}

/// Parses the path after `/apisix/admin/`.
pub fn target(rest: &str) -> Result<Target, Answer> {
    let segs: Vec<&str> = rest.split('/').collect();
    let name = segs.first().copied().unwrap_or("");
    if name == "consumers" && segs.get(2) == Some(&"credentials") {
        let consumer = segs[1].to_string();
        let id = segs.get(3).filter(|s| !s.is_empty()).map(|s| s.to_string());
        return Ok(Target {
            kind: resources::find("credentials")
                .ok_or_else(|| Answer::error(500, "no credentials kind"))?,
            id,
            parent: Some(consumer),
            sub_path: segs.get(4..).map(|s| s.join("/")).unwrap_or_default(),
        });
    }
    let Some(kind) = resources::find(name).filter(|k| k.name != "credentials") else {
        return Err(Answer::error(
            404,
            format!("Unsupported resource type: {name}"),
        ));
    };
    let at = |i: usize| segs.get(i).filter(|s| !s.is_empty()).map(|s| s.to_string());
    if kind.name == "secrets" {
        // secrets/{manager}/{id}
        let id = match (at(1), at(2)) {
            (Some(m), Some(i)) => Some(format!("{m}/{i}")),
            (Some(m), None) => Some(format!("{m}/")),
            _ => None,
        };
        return Ok(Target {
            kind,
            id,
            parent: None,
            sub_path: segs.get(3..).map(|s| s.join("/")).unwrap_or_default(),
        });
    }
    Ok(Target {
        kind,
        id: at(1),
        parent: None,
        sub_path: segs.get(2..).map(|s| s.join("/")).unwrap_or_default(),
    })
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The Admin API's view of a store.
pub struct Handlers<'a> {
    pub store: &'a dyn Store,
    pub catalog: &'a Catalog,
}

impl Handlers<'_> {
    /// Encrypts (before a write) or decrypts (for display, and before a PATCH merges into
    /// it) the plugins' `encrypt_fields` in a resource, as APISIX's `data_encryption` does:
    /// consumer and credential plugins by their consumer schema, `plugin_metadata` by the
    /// metadata schema, the `plugins` of routes, services, global rules, plugin configs and
    /// consumer groups by the plugin schema. A plugin that cannot be transformed is left as
    /// it is, with a warning.
    fn seal_plugins(&self, kind: &str, id: &str, conf: &mut Value, seal: Seal) {
        let schema_type = match kind {
            "consumers" | "credentials" => Some(resources::TYPE_CONSUMER),
            "routes" | "services" | "global_rules" | "plugin_configs" | "consumer_groups" => None,
            "plugin_metadata" => {
                match self
                    .catalog
                    .seal(id, conf, Some(resources::TYPE_METADATA), seal)
                {
                    Ok(Some(v)) => *conf = v,
                    Ok(None) => {}
                    Err(e) => log::warn!("cannot {seal:?} the metadata of plugin {id}: {e}"),
                }
                return;
            }
            _ => return,
        };
        let Some(plugins) = conf.get_mut("plugins").and_then(Value::as_object_mut) else {
            return;
        };
        for (name, pconf) in plugins.iter_mut() {
            match self.catalog.seal(name, pconf, schema_type, seal) {
                Ok(Some(v)) => *pconf = v,
                Ok(None) => {}
                Err(e) => log::warn!("cannot {seal:?} the conf of plugin {name}: {e}"),
            }
        }
    }
}

/// The id of a stored item: its value's `id`, else the last segment of its key (the plugin
/// name of a `plugin_metadata` item).
fn item_id(item: &Item, value: &Value) -> String {
    value
        .get("id")
        .and_then(resources::id_text)
        .unwrap_or_else(|| item.key.rsplit('/').next().unwrap_or_default().to_string())
}

fn query_args(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k.to_string(), v.replace('+', " "))
        })
        .collect()
}

fn arg<'q>(args: &'q [(String, String)], name: &str) -> Option<&'q str> {
    args.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Deep merge, as `core.table.merge`: objects merge key by key, anything else replaces;
/// a JSON `null` removes the key (JSON merge patch).
fn merge(old: &mut Value, patch: Value) {
    match (old, patch) {
        (Value::Object(o), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    o.remove(&k);
                } else if let Some(slot) = o.get_mut(&k)
                    && slot.is_object()
                    && v.is_object()
                {
                    merge(slot, v);
                } else {
                    o.insert(k, v);
                }
            }
        }
        (slot, p) => *slot = p,
    }
}

/// Replaces the field at `path` (`a/b/c`) with `v`, as `core.table.patch`.
fn patch_path(root: &mut Value, path: &str, v: Value) -> Result<(), String> {
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let mut cur = root;
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        match cur {
            Value::Object(o) => {
                if last {
                    o.insert(p.to_string(), v);
                    return Ok(());
                }
                cur = o
                    .entry(p.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
            }
            Value::Array(a) => {
                let idx: usize = p.parse().map_err(|_| format!("invalid sub path: {path}"))?;
                // APISIX paths count from 1, as Lua arrays do.
                let Some(slot) = idx.checked_sub(1).and_then(|i| a.get_mut(i)) else {
                    return Err(format!("invalid sub path: {path}"));
                };
                if last {
                    *slot = v;
                    return Ok(());
                }
                cur = slot;
            }
            _ => return Err(format!("invalid sub path: {path}")),
        }
    }
    Err("invalid sub path: (empty)".into())
}

impl Handlers<'_> {
    fn key(&self, t: &Target, id: &str) -> String {
        let prefix = self.store.prefix();
        match t.kind.name {
            "credentials" => format!("{prefix}/consumers/{id}"),
            other => format!("{prefix}/{other}/{id}"),
        }
    }

    /// Every stored resource of `kind` (credentials: of one consumer), in key order.
    async fn all_of(&self, t: &Target) -> Result<Vec<Item>, StoreError> {
        let listing = self.store.list().await?;
        let prefix = self.store.prefix().to_string();
        Ok(listing
            .items
            .into_iter()
            .filter(|i| {
                key_ref(&prefix, &i.key).is_some_and(|r| {
                    r.kind == t.kind.name
                        && match &t.parent {
                            Some(p) => r.id.starts_with(&format!("{p}/credentials/")),
                            None => true,
                        }
                        && match (&t.kind.name, &t.id) {
                            // secrets/{manager}: only that manager's.
                            (&"secrets", Some(m)) if m.ends_with('/') => {
                                r.id.starts_with(m.as_str())
                            }
                            _ => true,
                        }
                })
            })
            .collect())
    }

    pub async fn get(&self, t: &Target, query: &str) -> Answer {
        let list_wanted = match &t.id {
            None => true,
            Some(id) => t.kind.name == "secrets" && id.ends_with('/'),
        };
        let hide_keys = |mut v: Value, kind: &str| {
            if kind == "ssls"
                && let Some(o) = v.as_object_mut()
            {
                o.remove("key");
                o.remove("keys");
            }
            v
        };
        if !list_wanted {
            let id = t.id.clone().unwrap_or_default();
            let full = match &t.parent {
                Some(p) => format!("{p}/credentials/{id}"),
                None => id,
            };
            return match self.store.get(&self.key(t, &full)).await {
                Ok(Some(item)) => {
                    let mut v = hide_keys(envelope::value_of(&item), t.kind.name);
                    self.seal_plugins(t.kind.name, &item_id(&item, &v), &mut v, Seal::Decrypt);
                    Answer::json(200, envelope::node(&item, v))
                }
                Ok(None) => Answer::not_found(),
                Err(e) => Answer::store(&e),
            };
        }
        let mut items = match self.all_of(t).await {
            Ok(i) => i,
            Err(e) => return Answer::store(&e),
        };
        let args = query_args(query);
        let name_re = arg(&args, "name").filter(|s| !s.is_empty());
        let uri_re = arg(&args, "uri").filter(|s| !s.is_empty());
        let label = arg(&args, "label").filter(|s| !s.is_empty());
        let mut list: Vec<(i64, Value)> = Vec::new();
        for item in items.drain(..) {
            let mut v = hide_keys(envelope::value_of(&item), t.kind.name);
            self.seal_plugins(t.kind.name, &item_id(&item, &v), &mut v, Seal::Decrypt);
            if let Some(n) = name_re
                && !v
                    .get("name")
                    .and_then(Value::as_str)
                    .is_some_and(|x| x.contains(n))
            {
                continue;
            }
            if let Some(u) = uri_re {
                let uris: Vec<&str> = v
                    .get("uri")
                    .and_then(Value::as_str)
                    .into_iter()
                    .chain(
                        v.get("uris")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str),
                    )
                    .collect();
                if !uris.iter().any(|x| x.contains(u)) {
                    continue;
                }
            }
            if let Some(l) = label {
                let (lk, lv) = l.split_once(':').unwrap_or((l, ""));
                let ok = v
                    .get("labels")
                    .and_then(|m| m.get(lk))
                    .is_some_and(|x| lv.is_empty() || x.as_str() == Some(lv));
                if !ok {
                    continue;
                }
            }
            list.push((item.create_revision, envelope::node(&item, v)));
        }
        let total = list.len();
        let page = arg(&args, "page").and_then(|p| p.parse::<usize>().ok());
        let page_size = arg(&args, "page_size").and_then(|p| p.parse::<usize>().ok());
        if let (Some(page), Some(size)) = (page, page_size) {
            if !(10..=500).contains(&size) {
                return Answer {
                    status: 400,
                    body: "page_size must be between 10 and 500".into(),
                };
            }
            list.sort_by_key(|(c, _)| *c);
            let page = page.max(1);
            list = list
                .into_iter()
                .skip((page - 1) * size)
                .take(size)
                .collect();
        }
        Answer::json(
            200,
            json!({ "total": total, "list": list.into_iter().map(|(_, v)| v).collect::<Vec<_>>() }),
        )
    }

    /// Checks the ids `conf` names (`upstream_id` …) exist.
    async fn check_references(&self, kind: &Kind, conf: &Value) -> Result<(), Answer> {
        for (field, target, word) in resources::references(kind) {
            let Some(id) = conf.get(*field).and_then(resources::id_text) else {
                continue;
            };
            let key = format!("{}/{target}/{id}", self.store.prefix());
            match self.store.get(&key).await {
                Ok(Some(_)) => {}
                Ok(None) => {
                    return Err(Answer::error(
                        400,
                        format!(
                            "failed to fetch {word} info by {word} id [{id}], response code: 404"
                        ),
                    ));
                }
                Err(e) => {
                    return Err(Answer::error(
                        503,
                        format!("failed to fetch {word} info by {word} id [{id}]: {e}"),
                    ));
                }
            }
        }
        Ok(())
    }

    fn validate(&self, t: &Target, id: &str, conf: &Value) -> Result<(), Answer> {
        let r = if t.kind.name == "plugin_metadata" {
            resources::validate_metadata(id, conf, self.catalog)
        } else {
            resources::validate(t.kind, conf, self.catalog)
        };
        r.map_err(|e| Answer::error(400, e))
    }

    /// Writes `conf` at the key of `id`, keeping `create_time` from the version replaced.
    /// `created_only`: the key must be new (POST).
    async fn write(&self, t: &Target, id: &str, mut conf: Value, created_only: bool) -> Answer {
        let key = self.key(t, id);
        for _ in 0..3 {
            let previous = match self.store.get(&key).await {
                Ok(p) => p,
                Err(e) => return Answer::store(&e),
            };
            if let Some(o) = conf.as_object_mut() {
                let create_time = previous
                    .as_ref()
                    .and_then(|p| envelope::value_of(p).get("create_time").cloned())
                    .unwrap_or_else(|| json!(now()));
                o.insert("create_time".into(), create_time);
                o.insert("update_time".into(), json!(now()));
            }
            let pre = match &previous {
                Some(p) if !created_only => Precondition::ModRevision(p.mod_revision),
                _ => Precondition::Absent,
            };
            let bytes = match serde_json::to_vec(&conf) {
                Ok(b) => b,
                Err(e) => return Answer::error(500, e.to_string()),
            };
            match self.store.put(&key, bytes, pre).await {
                Ok(item) => {
                    let status = if previous.is_some() { 200 } else { 201 };
                    return Answer::json(status, envelope::written(&item, conf));
                }
                // Someone wrote the key between our read and our write: read again.
                Err(StoreError::Conflict(_)) if !created_only => continue,
                Err(e) => return Answer::store(&e),
            }
        }
        Answer::error(409, format!("{key} keeps changing concurrently; try again"))
    }

    pub async fn put(&self, t: &Target, body: Option<Value>) -> Answer {
        let Some(mut conf) = body else {
            return Answer::error(400, "missing configurations");
        };
        let word = t.kind.word;
        // The id: from the URL, else the body (`username` for consumers).
        let id = match t.kind.name {
            "consumers" => match conf.get("username").and_then(resources::id_text) {
                Some(u) => u,
                None => {
                    return Answer::error(
                        400,
                        "invalid configuration: property \"username\" is required",
                    );
                }
            },
            "credentials" => match (&t.parent, &t.id) {
                (Some(p), Some(i)) => format!("{p}/credentials/{i}"),
                _ => return Answer::error(400, format!("missing {word} id")),
            },
            "secrets" => match &t.id {
                Some(i) if !i.ends_with('/') => i.clone(),
                _ => return Answer::error(400, format!("missing {word} id")),
            },
            _ => match t
                .id
                .clone()
                .or_else(|| conf.get("id").and_then(resources::id_text))
            {
                Some(i) => i,
                None => return Answer::error(400, format!("missing {word} id")),
            },
        };
        if !t.kind.no_id && t.kind.name != "credentials" && t.kind.name != "secrets" {
            if let Some(body_id) = conf.get("id").and_then(resources::id_text)
                && body_id != id
            {
                return Answer::error(400, format!("wrong {word} id"));
            }
            if let Some(o) = conf.as_object_mut() {
                o.entry("id").or_insert_with(|| json!(id));
            }
        }
        // A credential's value carries its own id (`c1`), as APISIX stores it; a secret's is
        // `manager/id`.
        let value_id = match (t.kind.name, &t.id) {
            ("credentials", Some(cid)) => Some(cid.clone()),
            ("secrets", _) => Some(id.clone()),
            _ => None,
        };
        if let Some(v) = value_id
            && let Some(o) = conf.as_object_mut()
        {
            o.insert("id".into(), json!(v));
        }
        if t.kind.name == "plugin_metadata"
            && let Some(o) = conf.as_object_mut()
        {
            o.insert("id".into(), json!(id));
        }
        if let Some(e) = resources::forbidden_times(&conf) {
            return Answer::error(400, e);
        }
        if let Err(a) = self.validate(t, &id, &conf) {
            return a;
        }
        if let Err(a) = self.check_references(t.kind, &conf).await {
            return a;
        }
        if t.kind.name == "credentials"
            && let Some(p) = &t.parent
        {
            match self
                .store
                .get(&format!("{}/consumers/{p}", self.store.prefix()))
                .await
            {
                Ok(Some(_)) => {}
                Ok(None) => return Answer::error(404, "consumer not found"),
                Err(e) => return Answer::store(&e),
            }
        }
        self.seal_plugins(t.kind.name, &id, &mut conf, Seal::Encrypt);
        self.write(t, &id, conf, false).await
    }

    pub async fn post(&self, t: &Target, body: Option<Value>) -> Answer {
        if !t.kind.post {
            return Answer::error(
                405,
                format!("not supported `POST` method for {}", t.kind.word),
            );
        }
        let Some(mut conf) = body else {
            return Answer::error(400, "missing configurations");
        };
        if t.id.is_some() || conf.get("id").is_some() {
            return Answer::error(400, format!("wrong {} id, do not need it", t.kind.word));
        }
        if let Some(e) = resources::forbidden_times(&conf) {
            return Answer::error(400, e);
        }
        // Validate with a placeholder id first: nothing is generated for a refused body.
        if let Some(o) = conf.as_object_mut() {
            o.insert("id".into(), json!("0"));
        }
        if let Err(a) = self.validate(t, "0", &conf) {
            return a;
        }
        if let Err(a) = self.check_references(t.kind, &conf).await {
            return a;
        }
        // The id is the revision of a write to `{prefix}/gen_id`, as APISIX makes it.
        let generated = match self
            .store
            .put(
                &format!("{}/gen_id", self.store.prefix()),
                b"1".to_vec(),
                Precondition::None,
            )
            .await
        {
            Ok(i) => i,
            Err(e) => return Answer::store(&e),
        };
        let id = format!("{:020}", generated.mod_revision);
        if let Some(o) = conf.as_object_mut() {
            o.insert("id".into(), json!(id));
        }
        self.seal_plugins(t.kind.name, &id, &mut conf, Seal::Encrypt);
        self.write(t, &id, conf, true).await
    }

    pub async fn patch(&self, t: &Target, body: Option<Value>) -> Answer {
        if !t.kind.patch {
            return Answer::error(
                405,
                format!("not supported `PATCH` method for {}", t.kind.word),
            );
        }
        let id = match &t.id {
            Some(i) if !i.ends_with('/') => i.clone(),
            _ => return Answer::error(400, format!("missing {} id", t.kind.word)),
        };
        let Some(patch) = body else {
            return Answer::error(400, "missing new configuration");
        };
        if t.sub_path.is_empty() && !patch.is_object() {
            return Answer::error(400, "invalid configuration");
        }
        let key = self.key(t, &id);
        let old = match self.store.get(&key).await {
            Ok(Some(i)) => i,
            Ok(None) => return Answer::not_found(),
            Err(e) => return Answer::store(&e),
        };
        let mut conf = envelope::value_of(&old);
        // Merge into the clear values, then encrypt the result again.
        self.seal_plugins(t.kind.name, &id, &mut conf, Seal::Decrypt);
        let keep_update_time = t.sub_path.is_empty() && patch.get("update_time").is_some();
        if t.sub_path.is_empty() {
            merge(&mut conf, patch);
        } else if let Err(e) = patch_path(&mut conf, &t.sub_path, patch) {
            return Answer::error(400, e);
        }
        if !keep_update_time && let Some(o) = conf.as_object_mut() {
            o.insert("update_time".into(), json!(now()));
        }
        if let Some(body_id) = conf.get("id").and_then(resources::id_text)
            && body_id != id
        {
            return Answer::error(400, format!("wrong {} id", t.kind.word));
        }
        if let Err(a) = self.validate(t, &id, &conf) {
            return a;
        }
        if let Err(a) = self.check_references(t.kind, &conf).await {
            return a;
        }
        self.seal_plugins(t.kind.name, &id, &mut conf, Seal::Encrypt);
        let bytes = match serde_json::to_vec(&conf) {
            Ok(b) => b,
            Err(e) => return Answer::error(500, e.to_string()),
        };
        match self
            .store
            .put(&key, bytes, Precondition::ModRevision(old.mod_revision))
            .await
        {
            Ok(item) => Answer::json(200, envelope::written(&item, conf)),
            Err(e) => Answer::store(&e),
        }
    }

    pub async fn delete(&self, t: &Target, query: &str) -> Answer {
        let id = match (&t.id, &t.parent) {
            (Some(i), Some(p)) => format!("{p}/credentials/{i}"),
            (Some(i), None) if !i.ends_with('/') => i.clone(),
            _ => return Answer::error(400, format!("missing {} id", t.kind.word)),
        };
        let args = query_args(query);
        if arg(&args, "force") != Some("true") {
            let listing = match self.store.list().await {
                Ok(l) => l,
                Err(e) => return Answer::store(&e),
            };
            let prefix = self.store.prefix().to_string();
            let all: Vec<(&'static str, String, Value)> = listing
                .items
                .iter()
                .filter_map(|i| {
                    key_ref(&prefix, &i.key).map(|r| (r.kind, r.id, envelope::value_of(i)))
                })
                .collect();
            if let Some(msg) = resources::delete_refusal(t.kind, &id, &all) {
                return Answer::error(400, msg);
            }
        }
        let key = self.key(t, &id);
        if t.kind.name == "consumers" {
            // A consumer's credentials go with it.
            let creds = Target {
                kind: resources::find("credentials").unwrap_or(t.kind),
                id: None,
                parent: Some(id.clone()),
                sub_path: String::new(),
            };
            if let Ok(items) = self.all_of(&creds).await {
                for c in items {
                    if let Err(e) = self.store.delete(&c.key, Precondition::None).await {
                        return Answer::store(&e);
                    }
                }
            }
        }
        match self.store.delete(&key, Precondition::None).await {
            Ok(Some(_)) => Answer::json(200, json!({"deleted": "1", "key": key})),
            Ok(None) => Answer::not_found(),
            Err(e) => Answer::store(&e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_kind_id_and_sub_path() {
        let t = target("routes/1/methods").unwrap();
        assert_eq!(
            (t.kind.name, t.id.as_deref(), t.sub_path.as_str()),
            ("routes", Some("1"), "methods")
        );
        let t = target("consumers/jack/credentials/c1").unwrap();
        assert_eq!(
            (t.kind.name, t.parent.as_deref(), t.id.as_deref()),
            ("credentials", Some("jack"), Some("c1"))
        );
        let t = target("secrets/vault/1").unwrap();
        assert_eq!(t.id.as_deref(), Some("vault/1"));
        assert_eq!(target("nope").unwrap_err().status, 404);
    }

    #[test]
    fn merge_replaces_arrays_merges_objects_and_null_removes() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "l": [1, 2], "x": 1});
        merge(&mut v, json!({"a": {"b": 9}, "l": [3], "x": null}));
        assert_eq!(v, json!({"a": {"b": 9, "c": 2}, "l": [3]}));
        let mut v = json!({"upstream": {"nodes": {"a:1": 1}}});
        patch_path(&mut v, "upstream/nodes", json!({"b:2": 1})).unwrap();
        assert_eq!(v, json!({"upstream": {"nodes": {"b:2": 1}}}));
    }
}
