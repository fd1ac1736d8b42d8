//! The resource methods: `GET` one and list, `PUT`, `POST`, `PATCH` (whole and sub-path) and
//! `DELETE`, over a [`Store`], each answering as APISIX's Admin API does.
//!
//! Lists, pages and the checks a `DELETE` makes are answered from the Admin API's mirror of
//! the store ([`Index`]) while it follows the store, else from a read of the store.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};

use super::envelope::{self, Answer};
use super::index::{Entry, Index};
use super::resources::{self, Kind};
use crate::config::store::{Item, Precondition, Store, StoreError};
use crate::lua::plugin::Seal;
use crate::plugin::Catalog;

/// What a resource URL names: the kind, its id (if any) and the rest of the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: &'static Kind,
    /// `1`; `vault/1` for secrets; the plugin name for plugin metadata; for credentials
    /// the credential's own id (`c1`).
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
    /// The mirror, when this node keeps one; `store` then tells it about every write.
    pub index: Option<&'a Index>,
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

    /// A stored item's value as an answer shows it: private keys taken out, encrypted fields
    /// decrypted.
    fn shown(&self, kind: &str, item: &Item) -> Value {
        let mut v = envelope::value_of(item);
        hide_keys(kind, &mut v);
        let id = match kind {
            "plugin_metadata" => item.key.rsplit('/').next().unwrap_or_default().to_string(),
            _ => v.get("id").and_then(resources::id_text).unwrap_or_default(),
        };
        self.seal_plugins(kind, &id, &mut v, Seal::Decrypt);
        v
    }

    /// One list entry as JSON text. The stored bytes are copied as they are unless something
    /// must change in them (private keys, encrypted plugin fields).
    fn node_text(&self, e: &Entry) -> String {
        if e.json && e.kind != "ssls" && e.kind != "plugin_metadata" && !e.facts.has_plugins {
            let value = String::from_utf8_lossy(&e.value);
            return format!(
                "{{\"key\":{},\"value\":{},\"createdIndex\":{},\"modifiedIndex\":{}}}",
                Value::String(e.key.clone()),
                value,
                e.create_revision,
                e.mod_revision
            );
        }
        let item = e.item();
        envelope::node(&item, self.shown(e.kind, &item)).to_string()
    }

    fn list_answer(&self, total: usize, entries: &[Arc<Entry>]) -> Answer {
        let mut body = String::with_capacity(64 + entries.len() * 256);
        body.push_str("{\"total\":");
        body.push_str(&total.to_string());
        body.push_str(",\"list\":[");
        for (i, e) in entries.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            body.push_str(&self.node_text(e));
        }
        body.push_str("]}\n");
        Answer::text(200, body)
    }
}

/// The query string's arguments, decoded as `ngx.req.get_uri_args` decodes them.
pub fn query_args(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|s| !s.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            let dec = |s: &str| {
                String::from_utf8_lossy(&crate::uri::unescape(s.replace('+', " ").as_bytes()))
                    .into_owned()
            };
            (dec(k), dec(v))
        })
        .collect()
}

fn arg<'q>(args: &'q [(String, String)], name: &str) -> Option<&'q str> {
    // As `get_uri_args`, the last of repeated arguments wins.
    args.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Deep merge, as APISIX's `core.table.merge`: objects merge key by key, an array on either
/// side replaces, anything else replaces; a JSON `null` removes the key.
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

/// Replaces the field at `path` (`a/b/c`) with `v`, as `core.table.patch`: missing objects on
/// the way are created; a path through something that is not an object or array is refused.
fn patch_path(root: &mut Value, path: &str, v: Value) -> Result<(), String> {
    let parts: Vec<&str> = path.split('/').collect();
    let mut cur = root;
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if last && p.is_empty() {
            *cur = v;
            return Ok(());
        }
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
                // APISIX's paths count from 1, as Lua arrays do.
                let slot = p
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| i.checked_sub(1))
                    .and_then(|i| a.get_mut(i));
                let Some(slot) = slot else {
                    return Err(format!("invalid sub-path: /{}", parts[..=i].join("/")));
                };
                if last {
                    *slot = v;
                    return Ok(());
                }
                cur = slot;
            }
            _ => return Err(format!("invalid sub-path: /{}", parts[..i].join("/"))),
        }
        if !cur.is_object() && !cur.is_array() {
            return Err(format!("invalid sub-path: /{}", parts[..=i].join("/")));
        }
    }
    Err(format!("invalid sub-path: /{path}"))
}

/// `?ttl=N`: seconds, when given.
pub fn ttl_of(args: &[(String, String)]) -> Result<Option<Duration>, Answer> {
    let Some(t) = arg(args, "ttl") else {
        return Ok(None);
    };
    match t.trim().parse::<f64>() {
        Ok(s) if s.is_finite() && s > 0.0 => Ok(Some(Duration::from_secs_f64(s.ceil()))),
        Ok(_) => Err(Answer::error(
            400,
            "invalid argument ttl: should be a positive number",
        )),
        Err(_) => Err(Answer::error(
            400,
            "invalid argument ttl: should be a number",
        )),
    }
}

/// `ssls` answers never carry private keys.
fn hide_keys(kind: &str, v: &mut Value) {
    if kind == "ssls"
        && let Some(o) = v.as_object_mut()
    {
        o.remove("key");
        o.remove("keys");
    }
}

/// The filters of a list request (`name`, `label`, `uri`, `filter`), as APISIX's v3 adapter
/// applies them.
struct Filters {
    name: Option<pcre2::bytes::Regex>,
    /// A name pattern that does not compile matches nothing (as `ngx.re.find` failing).
    name_broken: bool,
    label: Option<String>,
    uri: Option<pcre2::bytes::Regex>,
    uri_broken: bool,
    /// `filter=service_id%3D1`: (field, value) pairs of the fields the kind allows.
    fields: Vec<(String, String)>,
}

fn regex(p: &str) -> Option<pcre2::bytes::Regex> {
    pcre2::bytes::RegexBuilder::new().utf(true).build(p).ok()
}

impl Filters {
    fn new(kind: &Kind, args: &[(String, String)]) -> Filters {
        let name = arg(args, "name");
        let uri = arg(args, "uri");
        let mut fields = Vec::new();
        if let Some(f) = arg(args, "filter") {
            for (k, v) in query_args(f) {
                if resources::list_filter_fields(kind).contains(&k.as_str()) {
                    fields.retain(|(x, _): &(String, String)| *x != k);
                    fields.push((k, v));
                } else {
                    log::warn!(
                        "filter field '{k}' is not supported by resource: {}",
                        kind.name
                    );
                }
            }
        }
        Filters {
            name: name.and_then(regex),
            name_broken: name.is_some_and(|n| regex(n).is_none()),
            label: arg(args, "label").map(str::to_string),
            uri: uri.and_then(regex),
            uri_broken: uri.is_some_and(|u| regex(u).is_none()),
            fields,
        }
    }

    fn none(&self) -> bool {
        self.name.is_none()
            && !self.name_broken
            && self.label.is_none()
            && self.uri.is_none()
            && !self.uri_broken
            && self.fields.is_empty()
    }

    fn keeps(&self, e: &Entry) -> bool {
        let f = &e.facts;
        if self.name_broken || self.uri_broken {
            return false;
        }
        if let Some(re) = &self.name
            && !f
                .name
                .as_deref()
                .is_some_and(|n| re.is_match(n.as_bytes()).unwrap_or(false))
        {
            return false;
        }
        if let Some(l) = &self.label
            && !f.label_keys.iter().any(|k| k == l)
        {
            return false;
        }
        if let Some(re) = &self.uri
            && !f
                .uris
                .iter()
                .any(|u| re.is_match(u.as_bytes()).unwrap_or(false))
        {
            return false;
        }
        self.fields
            .iter()
            .all(|(k, v)| f.scalars.iter().any(|(sk, sv)| sk == k && sv == v))
    }
}

/// `?page=&page_size=`: `Some((page, size))` when both are numbers.
fn paging(args: &[(String, String)]) -> Result<Option<(usize, usize)>, Answer> {
    let num = |n: &str| arg(args, n).and_then(|v| v.trim().parse::<f64>().ok());
    let (Some(page), Some(size)) = (num("page"), num("page_size")) else {
        return Ok(None);
    };
    if !(10.0..=500.0).contains(&size) {
        return Err(Answer::text(400, "page_size must be between 10 and 500"));
    }
    let page = if page < 1.0 { 1 } else { page as usize };
    Ok(Some((page, size as usize)))
}

impl Handlers<'_> {
    fn key(&self, t: &Target, id: &str) -> String {
        let prefix = self.store.prefix();
        match t.kind.name {
            "credentials" => format!("{prefix}/consumers/{id}"),
            other => format!("{prefix}/{other}/{id}"),
        }
    }

    /// The directory a list of `t` reads: `{prefix}/routes/`, a consumer's credentials, one
    /// secret manager's secrets.
    fn list_dir(&self, t: &Target) -> String {
        let prefix = self.store.prefix();
        match (&t.parent, t.kind.name, &t.id) {
            (Some(p), _, _) => format!("{prefix}/consumers/{p}/credentials/"),
            (None, "secrets", Some(m)) => format!("{prefix}/secrets/{m}"),
            (None, k, _) => format!("{prefix}/{k}/"),
        }
    }

    /// Every stored item under `dir` that is a `kind`, from the mirror or else the store, in
    /// key order.
    async fn entries(&self, kind: &str, dir: &str) -> Result<Vec<Arc<Entry>>, StoreError> {
        let keep = |e: &Entry| e.kind == kind;
        if let Some(list) = self.index.and_then(|ix| ix.under(dir)) {
            return Ok(list.into_iter().filter(|e| keep(e)).collect());
        }
        let listing = self.store.list().await?;
        let prefix = self.store.prefix().to_string();
        Ok(listing
            .items
            .into_iter()
            .filter(|i| i.key.starts_with(dir))
            .filter_map(|i| {
                let r = super::index::kind_of(&prefix, &i.key)?;
                let parsed: Option<Value> = serde_json::from_slice(&i.value).ok();
                let facts = parsed
                    .as_ref()
                    .map(|v| super::index::facts(r.kind, &r.id, v))
                    .unwrap_or_default();
                Some(Arc::new(Entry {
                    key: i.key,
                    kind: r.kind,
                    key_id: r.id,
                    json: parsed.is_some(),
                    value: i.value,
                    create_revision: i.create_revision,
                    mod_revision: i.mod_revision,
                    facts,
                }))
            })
            .filter(|e| keep(e))
            .collect())
    }

    pub async fn get(&self, t: &Target, query: &str) -> Answer {
        let list_wanted = match &t.id {
            None => true,
            Some(id) => t.kind.name == "secrets" && id.ends_with('/'),
        };
        if !list_wanted {
            let id = t.id.clone().unwrap_or_default();
            let full = match &t.parent {
                Some(p) => format!("{p}/credentials/{id}"),
                None => id,
            };
            return match self.store.get(&self.key(t, &full)).await {
                Ok(Some(item)) => {
                    let v = self.shown(t.kind.name, &item);
                    Answer::json(200, envelope::node(&item, v))
                }
                Ok(None) => Answer::not_found(),
                Err(e) => Answer::store(&e),
            };
        }
        let args = query_args(query);
        let filters = Filters::new(t.kind, &args);
        let paging = match paging(&args) {
            Ok(p) => p,
            Err(a) => return a,
        };
        let dir = self.list_dir(t);
        // The common case at scale: one page of a whole kind, straight from the mirror's
        // creation order.
        if let (Some((page, size)), Some(ix)) = (paging, self.index)
            && t.parent.is_none()
            && t.kind.name != "secrets"
            && let Some((total, list)) = {
                let keep = |e: &Entry| filters.keeps(e);
                let keep: Option<&dyn Fn(&Entry) -> bool> = (!filters.none()).then_some(&keep);
                ix.page(t.kind.name, keep, (page - 1) * size, size)
            }
        {
            return self.list_answer(total, &list);
        }
        let mut list = match self.entries(t.kind.name, &dir).await {
            Ok(l) => l,
            Err(e) => return Answer::store(&e),
        };
        if !filters.none() {
            list.retain(|e| filters.keeps(e));
        }
        let total = list.len();
        if let Some((page, size)) = paging {
            list.sort_by_key(|e| e.create_revision);
            list = list
                .into_iter()
                .skip((page - 1) * size)
                .take(size)
                .collect();
        }
        self.list_answer(total, &list)
    }

    /// Checks the ids `conf` names (`upstream_id` …) exist.
    async fn check_references(&self, kind: &Kind, conf: &Value) -> Result<(), Answer> {
        for (path, target, word) in resources::references(kind) {
            let mut at = Some(conf);
            for p in path.split('.') {
                at = at.and_then(|v| v.get(p));
            }
            let Some(id) = at.and_then(resources::id_text) else {
                continue;
            };
            let key = format!("{}/{target}/{id}", self.store.prefix());
            match self.store.get(&key).await {
                Ok(Some(item)) => {
                    if *target == "ssls"
                        && envelope::value_of(&item)
                            .get("type")
                            .and_then(Value::as_str)
                            != Some("client")
                    {
                        return Err(Answer::error(
                            400,
                            format!("failed to fetch ssl info by ssl id [{id}], wrong ssl type"),
                        ));
                    }
                }
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

    /// The global rules other than `id` that already run one of `conf`'s plugins.
    async fn global_rule_conflict(&self, id: &str, conf: &Value) -> Result<(), Answer> {
        let Some(plugins) = conf.get("plugins").and_then(Value::as_object) else {
            return Ok(());
        };
        let dir = format!("{}/global_rules/", self.store.prefix());
        let rules = self
            .entries("global_rules", &dir)
            .await
            .map_err(|e| Answer::store(&e))?;
        for rule in rules {
            if rule.facts.id == id {
                continue;
            }
            let v = envelope::value_of(&rule.item());
            let Some(theirs) = v.get("plugins").and_then(Value::as_object) else {
                continue;
            };
            if let Some(name) = plugins.keys().find(|n| theirs.contains_key(*n)) {
                return Err(Answer::error(
                    400,
                    format!(
                        "plugin '{name}' already exists in global rule with id '{}'",
                        rule.facts.id
                    ),
                ));
            }
        }
        Ok(())
    }

    /// A consumer's or credential's auth key must not be another consumer's (or another
    /// credential's). `consumer` and `credential` name the item being written.
    async fn duplicate_key(
        &self,
        conf: &Value,
        consumer: &str,
        credential: Option<&str>,
    ) -> Result<(), Answer> {
        let Some(plugins) = conf.get("plugins") else {
            return Ok(());
        };
        // Stored keys may be encrypted (`encrypt_fields`); the encryption is deterministic, so
        // the key is looked for in clear and as it would be stored.
        let mut sealed = conf.clone();
        self.seal_plugins(
            if credential.is_some() {
                "credentials"
            } else {
                "consumers"
            },
            consumer,
            &mut sealed,
            Seal::Encrypt,
        );
        let mut keys = super::index::auth_keys(plugins);
        if let Some(p) = sealed.get("plugins") {
            for k in super::index::auth_keys(p) {
                if !keys.contains(&k) {
                    keys.push(k);
                }
            }
        }
        for (plugin, value) in keys {
            let owners = match self.index.and_then(|ix| ix.owners(&plugin, &value)) {
                Some(o) => o,
                None => {
                    let dir = format!("{}/consumers/", self.store.prefix());
                    let mut all = self
                        .entries("consumers", &dir)
                        .await
                        .map_err(|e| Answer::store(&e))?;
                    all.extend(
                        self.entries("credentials", &dir)
                            .await
                            .map_err(|e| Answer::store(&e))?,
                    );
                    all.retain(|e| {
                        e.facts
                            .auth_keys
                            .iter()
                            .any(|(p, v)| *p == plugin && *v == value)
                    });
                    all
                }
            };
            for owner in owners {
                // consumers/{name} or consumers/{name}/credentials/{id}
                let (name, cred) = match owner.key_id.split_once("/credentials/") {
                    Some((n, c)) => (n.to_string(), Some(c.to_string())),
                    None => (owner.key_id.clone(), None),
                };
                let own = match credential {
                    Some(c) => name == consumer && cred.as_deref() == Some(c),
                    None => name == consumer,
                };
                if own {
                    continue;
                }
                let field = super::index::AUTH_KEY_FIELDS
                    .iter()
                    .find(|(p, _)| *p == plugin)
                    .map_or("key", |(_, f)| *f);
                let whose = match cred {
                    Some(c) => format!("credential: {c} of consumer: {name}"),
                    None => format!("consumer: {name}"),
                };
                return Err(Answer::error(
                    400,
                    format!("duplicate {field} of plugin {plugin} found with {whose}"),
                ));
            }
        }
        Ok(())
    }

    /// `POST /apisix/admin/configs/validate`: every item of a whole standalone config (the
    /// `conf/apisix.yaml` shape, JSON or YAML) checked as its Admin API write would be, but
    /// for what needs the store (references, conflicts with stored items). Nothing is
    /// stored. `200 {}`, or `400` with every error found.
    pub async fn validate_configs(&self, body: &[u8], yaml: bool) -> Answer {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Answer::error(400, "invalid request body: empty request body");
        }
        let doc: Result<Value, String> = if yaml {
            serde_norway::from_slice(body).map_err(|_| "invalid yaml request body".to_string())
        } else {
            serde_json::from_slice(body).map_err(|e| e.to_string())
        };
        let doc = match doc {
            Ok(d) if d.is_object() => d,
            Ok(_) => return Answer::error(400, "invalid request body: not an object"),
            Err(e) => return Answer::error(400, format!("invalid request body: {e}")),
        };
        let mut errors = Vec::new();
        for kind in resources::KINDS {
            let name = kind.name;
            if matches!(name, "credentials" | "moongate_locations") {
                continue;
            }
            let version_key = format!("{name}_conf_version");
            if let Some(v) = doc.get(&version_key)
                && !v.is_number()
            {
                errors.push(json!({
                    "resource_type": name,
                    "error": format!("{version_key} must be a number, got {}", resources::lua_type(v)),
                }));
            }
            let Some(items) = doc.get(name).and_then(Value::as_array) else {
                continue;
            };
            let mut seen = std::collections::HashSet::new();
            for (index, item) in items.iter().enumerate() {
                let id_v = item.get("id").or(if name == "consumers" {
                    item.get("username")
                } else {
                    None
                });
                let id = id_v.and_then(resources::id_text).unwrap_or_default();
                let fail = |e: String| json!({"resource_type": name, "resource_id": id, "index": index, "error": e});
                if !id.is_empty() && !seen.insert(id.clone()) {
                    let what = match (name, item.get("id").is_some()) {
                        ("consumers", true) => "credential id",
                        ("consumers", false) => "username",
                        _ => "id",
                    };
                    errors.push(fail(format!("found duplicate {what} {id} in {name}")));
                    continue;
                }
                let (t, check_id) = if name == "consumers" && id.contains("/credentials/") {
                    let (consumer, cred) = id.split_once("/credentials/").unwrap_or(("", ""));
                    let kind = resources::find("credentials").unwrap_or(kind);
                    let t = Target {
                        kind,
                        id: Some(cred.to_string()),
                        parent: Some(consumer.to_string()),
                        sub_path: String::new(),
                    };
                    (t, id.clone())
                } else {
                    let t = Target {
                        kind,
                        id: Some(id.clone()),
                        parent: None,
                        sub_path: String::new(),
                    };
                    (t, id.clone())
                };
                if name == "secrets" && !id.contains('/') {
                    errors.push(fail(format!("invalid secret id: {id}")));
                    continue;
                }
                if let Err(a) = self.check_item(&t, &check_id, item, false).await {
                    let msg = serde_json::from_str::<Value>(&a.body)
                        .ok()
                        .and_then(|v| v["error_msg"].as_str().map(str::to_string))
                        .unwrap_or(a.body);
                    errors.push(fail(msg));
                }
            }
        }
        if errors.is_empty() {
            Answer::json(200, json!({}))
        } else {
            Answer::json(
                400,
                json!({"error_msg": "Configuration validation failed", "errors": errors}),
            )
        }
    }

    /// Every check a body passes before it is stored, in APISIX's order.
    async fn check(&self, t: &Target, id: &str, conf: &Value) -> Result<(), Answer> {
        self.check_item(t, id, conf, true).await
    }

    /// [`Handlers::check`]; `with_store`: also the checks that read the store (references,
    /// duplicate auth keys, global rule conflicts).
    async fn check_item(
        &self,
        t: &Target,
        id: &str,
        conf: &Value,
        with_store: bool,
    ) -> Result<(), Answer> {
        let bad = |e: String| Answer::error(400, e);
        match t.kind.name {
            "plugin_metadata" => {
                return resources::validate_metadata(id, conf, self.catalog).map_err(bad);
            }
            "secrets" => {
                return self
                    .catalog
                    .check_resource("secrets", "shape", id, conf)
                    .map_err(bad);
            }
            _ => {}
        }
        self.catalog
            .check_resource(t.kind.name, "shape", id, conf)
            .map_err(bad)?;
        if t.kind.name == "ssls" {
            // Certificates and keys must be readable (keys decrypted with the keyring) and
            // belong together, as APISIX's check_ssl_conf has it: the data plane's own check.
            crate::config::ssl::check(conf)
                .map_err(|e| e.to_string())
                .map_err(bad)?;
        }
        let consumer_side = matches!(t.kind.name, "consumers" | "credentials");
        if !consumer_side && with_store {
            self.check_references(t.kind, conf).await?;
        }
        resources::check_plugins(t.kind, conf, self.catalog).map_err(bad)?;
        if with_store {
            match (t.kind.name, &t.parent) {
                ("consumers", _) => self.duplicate_key(conf, id, None).await?,
                ("credentials", Some(consumer)) => {
                    let own = id.rsplit('/').next().unwrap_or(id);
                    self.duplicate_key(conf, consumer, Some(own)).await?
                }
                _ => {}
            }
        }
        if consumer_side && with_store {
            self.check_references(t.kind, conf).await?;
        }
        resources::check_vars(t.kind, conf).map_err(bad)?;
        self.catalog
            .check_resource(t.kind.name, "code", id, conf)
            .map_err(bad)?;
        if t.kind.name == "global_rules" && with_store {
            self.global_rule_conflict(id, conf).await?;
        }
        resources::servable(t.kind, conf).map_err(bad)
    }

    /// Writes `conf` at the key of `id`, keeping `create_time` from the version replaced.
    /// `created_only`: the key must be new (POST).
    async fn write(
        &self,
        t: &Target,
        id: &str,
        mut conf: Value,
        created_only: bool,
        ttl: Option<Duration>,
    ) -> Answer {
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
            let stored = match ttl {
                Some(ttl) => self.store.put_with_ttl(&key, bytes, pre, ttl).await,
                None => self.store.put(&key, bytes, pre).await,
            };
            match stored {
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

    /// The id a `PUT` writes, and `conf` with its `id` set as APISIX sets it.
    fn put_id(&self, t: &Target, conf: &mut Value) -> Result<String, Answer> {
        let word = t.kind.word;
        match t.kind.name {
            "consumers" => {
                let username = conf.get("username").and_then(resources::id_text);
                // A URL name must be the body's.
                if let (Some(url), Some(u)) = (&t.id, &username)
                    && url != u
                {
                    return Err(Answer::error(400, "wrong username"));
                }
                Ok(username.or_else(|| t.id.clone()).unwrap_or_default())
            }
            "plugin_metadata" => {
                t.id.clone()
                    .ok_or_else(|| Answer::error(400, "missing plugin name"))
            }
            "credentials" => {
                let (Some(p), Some(i)) = (&t.parent, &t.id) else {
                    return Err(Answer::error(400, format!("missing {word} id")));
                };
                if let Some(body_id) = conf.get("id").and_then(resources::id_text)
                    && body_id != *i
                {
                    return Err(Answer::error(400, format!("wrong {word} id")));
                }
                if let Some(o) = conf.as_object_mut() {
                    o.insert("id".into(), json!(i));
                }
                Ok(format!("{p}/credentials/{i}"))
            }
            "secrets" => {
                let Some(full) = t.id.clone().filter(|i| !i.ends_with('/')) else {
                    return Err(Answer::error(400, format!("missing {word} id")));
                };
                let own = full.split_once('/').map_or(full.as_str(), |(_, i)| i);
                if let Some(body_id) = conf.get("id").and_then(resources::id_text)
                    && body_id != own
                    && body_id != full
                {
                    return Err(Answer::error(400, format!("wrong {word} id")));
                }
                if let Some(o) = conf.as_object_mut() {
                    o.insert("id".into(), json!(full));
                }
                Ok(full)
            }
            _ => {
                let body_id = conf.get("id").cloned();
                let id = match (&t.id, &body_id) {
                    (Some(url), _) => url.clone(),
                    (None, Some(b)) => match resources::id_text(b) {
                        Some(i) => i,
                        None => return Err(Answer::error(400, format!("missing {word} id"))),
                    },
                    (None, None) => return Err(Answer::error(400, format!("missing {word} id"))),
                };
                if let Some(b) = body_id.as_ref().and_then(resources::id_text)
                    && b != id
                {
                    return Err(Answer::error(400, format!("wrong {word} id")));
                }
                // The URL's id is stored as text; an id given only in the body keeps its type.
                if let Some(o) = conf.as_object_mut()
                    && t.id.is_some()
                {
                    o.insert("id".into(), json!(id));
                }
                Ok(id)
            }
        }
    }

    pub async fn put(&self, t: &Target, body: Option<Value>, query: &str) -> Answer {
        let Some(mut conf) = body else {
            return Answer::error(400, "missing configurations");
        };
        let ttl = match ttl_of(&query_args(query)) {
            Ok(t) => t,
            Err(a) => return a,
        };
        if !conf.is_object() {
            return Answer::error(
                400,
                format!(
                    "invalid configuration: wrong type: expected object, got {}",
                    resources::lua_type(&conf)
                ),
            );
        }
        let id = match self.put_id(t, &mut conf) {
            Ok(i) => i,
            Err(a) => return a,
        };
        if let Some(e) = resources::forbidden_times(&conf) {
            return Answer::error(400, e);
        }
        if let Err(a) = self.check(t, &id, &conf).await {
            return a;
        }
        if t.kind.name == "plugin_metadata"
            && let Some(o) = conf.as_object_mut()
        {
            o.insert("id".into(), json!(id));
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
        self.write(t, &id, conf, false, ttl).await
    }

    pub async fn post(&self, t: &Target, body: Option<Value>, query: &str) -> Answer {
        if !t.kind.post {
            return Answer::error(
                405,
                format!("not supported `POST` method for {}", t.kind.word),
            );
        }
        let Some(mut conf) = body else {
            return Answer::error(400, "missing configurations");
        };
        let ttl = match ttl_of(&query_args(query)) {
            Ok(t) => t,
            Err(a) => return a,
        };
        if !conf.is_object() {
            return Answer::error(
                400,
                format!(
                    "invalid configuration: wrong type: expected object, got {}",
                    resources::lua_type(&conf)
                ),
            );
        }
        if t.id.is_some() || conf.get("id").is_some() {
            return Answer::error(400, format!("wrong {} id, do not need it", t.kind.word));
        }
        if let Some(e) = resources::forbidden_times(&conf) {
            return Answer::error(400, e);
        }
        if let Err(a) = self.check(t, "", &conf).await {
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
        self.write(t, &id, conf, true, ttl).await
    }

    pub async fn patch(&self, t: &Target, body: Option<Value>, query: &str) -> Answer {
        if !t.kind.patch {
            return Answer::error(
                405,
                format!("not supported `PATCH` method for {}", t.kind.word),
            );
        }
        let ttl = match ttl_of(&query_args(query)) {
            Ok(t) => t,
            Err(a) => return a,
        };
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
        if let Some(o) = conf.as_object_mut() {
            if !o.contains_key("create_time") {
                o.insert("create_time".into(), json!(now()));
            }
            if !keep_update_time || !o.contains_key("update_time") {
                o.insert("update_time".into(), json!(now()));
            }
            // As APISIX: the URL's id is the resource's id, as text.
            if !matches!(t.kind.name, "plugin_metadata") {
                o.insert("id".into(), json!(id));
            }
        }
        if let Err(a) = self.check(t, &id, &conf).await {
            return a;
        }
        self.seal_plugins(t.kind.name, &id, &mut conf, Seal::Encrypt);
        let bytes = match serde_json::to_vec(&conf) {
            Ok(b) => b,
            Err(e) => return Answer::error(500, e.to_string()),
        };
        let pre = Precondition::ModRevision(old.mod_revision);
        let stored = match ttl {
            Some(ttl) => self.store.put_with_ttl(&key, bytes, pre, ttl).await,
            None => self.store.put(&key, bytes, pre).await,
        };
        match stored {
            Ok(item) => Answer::json(200, envelope::written(&item, conf)),
            Err(e) => Answer::store(&e),
        }
    }

    /// Why `t`/`id` may not be deleted, from the mirror when it follows the store.
    async fn delete_refusal(&self, t: &Target, id: &str) -> Result<Option<String>, Answer> {
        if !resources::guarded(t.kind) {
            return Ok(None);
        }
        if let Some(ix) = self.index
            && let Some(users) = ix.referrers((t.kind.name, id))
        {
            return Ok(resources::delete_refusal(t.kind, &users));
        }
        let listing = self.store.list().await.map_err(|e| Answer::store(&e))?;
        let prefix = self.store.prefix().to_string();
        let users: Vec<Arc<Entry>> = listing
            .items
            .into_iter()
            .filter_map(|i| {
                let r = super::index::kind_of(&prefix, &i.key)?;
                let v: Value = serde_json::from_slice(&i.value).ok()?;
                let facts = super::index::facts(r.kind, &r.id, &v);
                facts
                    .refs
                    .iter()
                    .any(|x| x.kind == t.kind.name && x.id == id)
                    .then(|| {
                        Arc::new(Entry {
                            key: i.key,
                            kind: r.kind,
                            key_id: r.id,
                            json: true,
                            value: i.value,
                            create_revision: i.create_revision,
                            mod_revision: i.mod_revision,
                            facts,
                        })
                    })
            })
            .collect();
        Ok(resources::delete_refusal(t.kind, &users))
    }

    pub async fn delete(&self, t: &Target, query: &str) -> Answer {
        let id = match (&t.id, &t.parent) {
            (Some(i), Some(p)) => format!("{p}/credentials/{i}"),
            (Some(i), None) if !i.ends_with('/') => i.clone(),
            _ => return Answer::error(400, format!("missing {} id", t.kind.word)),
        };
        let args = query_args(query);
        if arg(&args, "force") != Some("true") {
            match self.delete_refusal(t, &id).await {
                Ok(Some(msg)) => return Answer::error(400, msg),
                Ok(None) => {}
                Err(a) => return a,
            }
        }
        let key = self.key(t, &id);
        if t.kind.name == "consumers" {
            // A consumer's credentials go with it.
            let dir = format!("{key}/credentials/");
            let creds = match self.entries("credentials", &dir).await {
                Ok(c) => c,
                Err(e) => return Answer::store(&e),
            };
            for c in creds {
                if let Err(e) = self.store.delete(&c.key, Precondition::None).await {
                    return Answer::store(&e);
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

/// An [`Item`] as its list entry, for callers outside this module (tests).
pub fn entry_of(prefix: &str, item: Item) -> Option<Entry> {
    let r = super::index::kind_of(prefix, &item.key)?;
    let parsed: Option<Value> = serde_json::from_slice(&item.value).ok();
    Some(Entry {
        facts: parsed
            .as_ref()
            .map(|v| super::index::facts(r.kind, &r.id, v))
            .unwrap_or_default(),
        kind: r.kind,
        key_id: r.id,
        json: parsed.is_some(),
        key: item.key,
        value: item.value,
        create_revision: item.create_revision,
        mod_revision: item.mod_revision,
    })
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
        let mut v = json!({"desc": "x"});
        assert_eq!(
            patch_path(&mut v, "desc/a", json!(1)).unwrap_err(),
            "invalid sub-path: /desc"
        );
    }

    #[test]
    fn ttl_and_paging_arguments_are_checked() {
        assert_eq!(
            ttl_of(&query_args("ttl=abc")).unwrap_err().body,
            "{\"error_msg\":\"invalid argument ttl: should be a number\"}\n"
        );
        assert_eq!(
            ttl_of(&query_args("ttl=2")).unwrap(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            paging(&query_args("page=0&page_size=10")).unwrap(),
            Some((1, 10))
        );
        assert_eq!(
            paging(&query_args("page=2&page_size=5"))
                .unwrap_err()
                .status,
            400
        );
        assert_eq!(paging(&query_args("page=2")).unwrap(), None);
    }
}
