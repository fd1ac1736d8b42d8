//! APISIX's standalone resource file (`conf/apisix.yaml`): top-level arrays of routes, services,
//! upstreams and the other resources, and a last line `#END`.
//!
//! APISIX only loads the file once its last line is `#END`, so that a file caught half-written is
//! never applied; moongate does the same ([`Parsed::Incomplete`]). Each item is checked on its
//! own, and every bad item is reported with its kind, id (or position) and field.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::resource::{Id, OpaqueResource, Route, Service, Upstream};

/// Everything one config source holds, parsed but not compiled.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    pub routes: Vec<Route>,
    pub services: Vec<Service>,
    pub upstreams: Vec<Upstream>,
    pub others: OtherResources,
}

/// Resources whose features land in later issues, carried as JSON objects with their ids.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OtherResources {
    pub consumers: Vec<OpaqueResource>,
    pub consumer_groups: Vec<OpaqueResource>,
    pub global_rules: Vec<OpaqueResource>,
    pub plugin_configs: Vec<OpaqueResource>,
    pub plugin_metadata: Vec<OpaqueResource>,
    pub ssls: Vec<OpaqueResource>,
    pub protos: Vec<OpaqueResource>,
    pub secrets: Vec<OpaqueResource>,
    pub stream_routes: Vec<OpaqueResource>,
}

/// The outcome of reading the file.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one value per file read, never stored
pub enum Parsed {
    Complete(Resources),
    /// No `#END` last line yet: the file is still being written.
    Incomplete,
}

/// A resource that cannot be used, named as `routes[id=3]` (or `routes[2]` without id) and field.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{resource}: {field}: {message}")]
pub struct ConfigError {
    pub resource: String,
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(
        resource: impl Into<String>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ConfigError {
            resource: resource.into(),
            field: field.into(),
            message: message.into(),
        }
    }
}

/// The resource kinds, as top-level keys of the file and directories of the store.
pub const KINDS: &[&str] = &[
    "routes",
    "services",
    "upstreams",
    "consumers",
    "consumer_groups",
    "global_rules",
    "plugin_configs",
    "plugin_metadata",
    "ssls",
    "protos",
    "secrets",
    "stream_routes",
];

impl Resources {
    /// Parses one item of `kind` (a [`KINDS`] name) and adds it. `position` names the item
    /// in errors when it has no id. The same check serves the YAML file and store items.
    pub fn add_item(
        &mut self,
        kind: &str,
        position: usize,
        item: &Value,
    ) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let l = label(kind, position, item);
        match kind {
            "routes" => {
                if let Some(r) = typed::<Route>(kind, position, item, &mut errors) {
                    if r.id.is_none() {
                        errors.push(ConfigError::new(l, "id", "missing `id`"));
                    } else {
                        self.routes.push(r);
                    }
                }
            }
            "services" => {
                if let Some(s) = typed::<Service>(kind, position, item, &mut errors) {
                    if s.id.is_none() {
                        errors.push(ConfigError::new(l, "id", "missing `id`"));
                    } else {
                        self.services.push(s);
                    }
                }
            }
            "upstreams" => {
                if let Some(u) = typed::<Upstream>(kind, position, item, &mut errors) {
                    if u.id.is_none() {
                        errors.push(ConfigError::new(l, "id", "missing `id`"));
                    } else {
                        self.upstreams.push(u);
                    }
                }
            }
            other => {
                let Some(list) = self.others.list_mut(other) else {
                    return Err(ConfigError::new(
                        l,
                        "(item)",
                        format!("unknown resource kind {other:?}"),
                    ));
                };
                if let Some(o) = opaque(other, position, item, &mut errors) {
                    list.push(o);
                }
            }
        }
        match errors.pop() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

impl OtherResources {
    /// The list holding `kind`, `None` for a kind that is not one of these.
    pub fn list_mut(&mut self, kind: &str) -> Option<&mut Vec<OpaqueResource>> {
        Some(match kind {
            "consumers" => &mut self.consumers,
            "consumer_groups" => &mut self.consumer_groups,
            "global_rules" => &mut self.global_rules,
            "plugin_configs" => &mut self.plugin_configs,
            "plugin_metadata" => &mut self.plugin_metadata,
            "ssls" => &mut self.ssls,
            "protos" => &mut self.protos,
            "secrets" => &mut self.secrets,
            "stream_routes" => &mut self.stream_routes,
            _ => return None,
        })
    }
}

/// True when the last non-blank line is `#END`.
pub fn has_end_marker(text: &str) -> bool {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .is_some_and(|l| l.trim() == "#END")
}

fn label(kind: &str, i: usize, item: &Value) -> String {
    let id = item
        .get("id")
        .or_else(|| {
            if kind == "consumers" {
                item.get("username")
            } else {
                None
            }
        })
        .and_then(|v| match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        });
    match id {
        Some(id) => format!("{kind}[id={id}]"),
        None => format!("{kind}[{i}]"),
    }
}

fn typed<T: DeserializeOwned>(
    kind: &str,
    i: usize,
    item: &Value,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(item) {
        Ok(v) => Some(v),
        Err(e) => {
            let path = e.path().to_string();
            let field = if path == "." {
                "(item)".to_string()
            } else {
                path
            };
            errors.push(ConfigError::new(
                label(kind, i, item),
                field,
                e.into_inner().to_string(),
            ));
            None
        }
    }
}

fn opaque(
    kind: &str,
    i: usize,
    item: &Value,
    errors: &mut Vec<ConfigError>,
) -> Option<OpaqueResource> {
    if !item.is_object() {
        errors.push(ConfigError::new(
            format!("{kind}[{i}]"),
            "(item)",
            "expected an object",
        ));
        return None;
    }
    // A consumer is keyed by `username`; a credential listed among consumers (APISIX's
    // standalone form) by its `id`, `NAME/credentials/ID`.
    let is_credential = kind == "consumers"
        && item.get("username").is_none()
        && item
            .get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| id.contains("/credentials/"));
    let key = if kind == "consumers" && !is_credential {
        "username"
    } else {
        "id"
    };
    match item.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Some(OpaqueResource {
            id: Id(s.clone()),
            value: item.clone(),
        }),
        Some(Value::Number(n)) => Some(OpaqueResource {
            id: Id(n.to_string()),
            value: item.clone(),
        }),
        _ => {
            errors.push(ConfigError::new(
                label(kind, i, item),
                key,
                format!("missing `{key}`"),
            ));
            None
        }
    }
}

/// Parses the file text. Every problem found is reported.
pub fn parse(text: &str) -> Result<Parsed, Vec<ConfigError>> {
    if !has_end_marker(text) {
        return Ok(Parsed::Incomplete);
    }
    let root: Value = super::yaml_doc::parse(text)
        .map_err(|e| vec![ConfigError::new("apisix.yaml", "(file)", e.to_string())])?;
    let root = match root {
        Value::Null => return Ok(Parsed::Complete(Resources::default())),
        Value::Object(m) => m,
        _ => {
            return Err(vec![ConfigError::new(
                "apisix.yaml",
                "(file)",
                "expected a mapping of resource lists",
            )]);
        }
    };
    let mut errors = Vec::new();
    let mut res = Resources::default();
    for (kind, list) in &root {
        if !KINDS.contains(&kind.as_str()) {
            log::warn!("apisix.yaml: unknown top-level key {kind:?}; ignored");
            continue;
        }
        let items: &[Value] = match list {
            Value::Null => &[],
            Value::Array(a) => a,
            _ => {
                errors.push(ConfigError::new(kind.clone(), "(list)", "expected a list"));
                continue;
            }
        };
        let mut seen: HashSet<String> = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let l = label(kind, i, item);
            if l.contains("[id=") && !seen.insert(l.clone()) {
                errors.push(ConfigError::new(l.clone(), "id", "duplicate id"));
                continue;
            }
            if let Err(e) = res.add_item(kind, i, item) {
                errors.push(e);
            }
        }
    }
    if errors.is_empty() {
        Ok(Parsed::Complete(res))
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_without_end_marker_is_incomplete_not_an_error() {
        assert_eq!(parse("routes: []\n"), Ok(Parsed::Incomplete));
        assert!(parse("routes: [\n#END").is_err());
        assert!(has_end_marker("routes: []\n#END\n\n"));
        assert!(!has_end_marker("routes: []\n#END\nupstreams: []\n"));
    }

    #[test]
    fn every_resource_kind_loads() {
        let text = "routes:\n  - id: 1\n    uri: /a\n    upstream_id: u1\nservices:\n  - id: s1\n    hosts: [a.test]\nupstreams:\n  - id: u1\n    nodes:\n      \"127.0.0.1:1980\": 1\nconsumers:\n  - username: jack\nglobal_rules:\n  - id: g1\n    plugins: {}\nplugin_configs:\n  - id: pc1\n    plugins: {}\nplugin_metadata:\n  - id: http-logger\nssls:\n  - id: c1\n#END\n";
        let Ok(Parsed::Complete(r)) = parse(text) else {
            panic!("{:?}", parse(text))
        };
        assert_eq!(
            (r.routes.len(), r.services.len(), r.upstreams.len()),
            (1, 1, 1)
        );
        assert_eq!(r.routes[0].id, Some(Id("1".into())));
        assert_eq!(r.others.consumers[0].id, Id("jack".into()));
        assert_eq!(r.others.plugin_metadata[0].id, Id("http-logger".into()));
        assert_eq!(r.others.ssls.len(), 1);
    }

    #[test]
    fn errors_name_kind_id_and_field_and_all_are_collected() {
        let text = "routes:\n  - id: 3\n    uri: /a\n    upstream:\n      nodes: 5\n  - id: 4\n    uri: 7\n  - uri: /no-id\n  - id: 3\n    uri: /dup\nupstreams:\n  - id: u\n    type: magic\n#END\n";
        let errs = parse(text).unwrap_err();
        let got: Vec<(String, String)> = errs
            .iter()
            .map(|e| (e.resource.clone(), e.field.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("routes[id=3]".into(), "upstream.nodes".into()),
                ("routes[id=4]".into(), "uri".into()),
                ("routes[2]".into(), "id".into()),
                ("routes[id=3]".into(), "id".into()),
                ("upstreams[id=u]".into(), "type".into()),
            ]
        );
    }
}
