//! The resources the Admin API serves: their URL names, the words APISIX uses for them in
//! errors, which methods they take, how a body is validated, and which other resources must
//! not lose them.
//!
//! Validation runs on a copy and never changes what is stored: the shape is checked with the
//! same per-item parsing the data plane uses ([`Resources::add_item`]), then every plugin conf
//! with the plugin's own `check_schema`, so nothing is accepted that the data plane would
//! refuse — and schema defaults are never written back.

use std::sync::Arc;

use serde_json::Value;

use super::index::Entry;
use crate::config::standalone::Resources;
use crate::plugin::Catalog;

/// One resource kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The URL segment and store directory (`routes`).
    pub name: &'static str,
    /// APISIX's word for one of them, in errors (`wrong route id`).
    pub word: &'static str,
    /// `POST` (generated ids) is allowed.
    pub post: bool,
    /// `PATCH` is allowed.
    pub patch: bool,
    /// The id is a field of the body (`username`) or the plugin name, not `id`.
    pub no_id: bool,
}

const fn kind(name: &'static str, word: &'static str, post: bool, patch: bool) -> Kind {
    Kind {
        name,
        word,
        post,
        patch,
        no_id: false,
    }
}

pub const KINDS: &[Kind] = &[
    kind("routes", "route", true, true),
    kind("services", "service", true, true),
    kind("upstreams", "upstream", true, true),
    Kind {
        no_id: true,
        ..kind("consumers", "consumer", false, false)
    },
    kind("credentials", "credential", false, false),
    kind("consumer_groups", "consumer group", false, true),
    kind("ssls", "ssl", true, true),
    kind("global_rules", "global rule", false, true),
    kind("plugin_configs", "plugin config", false, true),
    Kind {
        no_id: true,
        ..kind("plugin_metadata", "plugin_metadata", false, false)
    },
    kind("protos", "proto", true, false),
    kind("secrets", "secret", false, true),
    kind("stream_routes", "stream route", true, true),
    // moongate's: routes that are not listed among `routes` (`moongate test` writes its
    // translation of nginx `location` blocks there, as nginx locations are no APISIX routes).
    kind("moongate_locations", "location", false, false),
];

pub fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// `plugins` confs are checked as route confs, consumer confs or metadata, as
/// `core.schema.TYPE_*` says.
pub const TYPE_CONSUMER: i64 = 1;
pub const TYPE_METADATA: i64 = 2;

/// Turns serde's wording into APISIX's where the two describe the same problem.
fn shape_message(field: &str, message: &str) -> String {
    if field == crate::config::standalone::SSL_CHECK_FIELD {
        return message.to_string();
    }
    if let Some(rest) = message.strip_prefix("unknown field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        return format!("invalid configuration: additional properties forbidden, found {name}");
    }
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some((name, _)) = rest.split_once('`')
    {
        return format!("invalid configuration: property \"{name}\" is required");
    }
    if field == "(item)" || field.is_empty() {
        format!("invalid configuration: {message}")
    } else {
        format!("invalid configuration: property \"{field}\" validation failed: {message}")
    }
}

/// The store directory and value kind a body is parsed as by the data plane.
fn shape_kind(kind: &Kind) -> Option<&'static str> {
    match kind.name {
        "credentials" | "plugin_metadata" | "secrets" => None,
        "moongate_locations" => Some("routes"),
        other => crate::config::standalone::KINDS
            .iter()
            .copied()
            .find(|k| *k == other),
    }
}

/// Lua's name for the type of a JSON value, as APISIX's messages say it.
pub fn lua_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) | Value::Object(_) => "table",
    }
}

/// Every plugin of `conf.plugins` must be enabled and pass its own check (consumers and
/// credentials with the consumer schema; a credential only takes auth plugins).
pub fn check_plugins(kind: &Kind, conf: &Value, catalog: &Catalog) -> Result<(), String> {
    let Some(plugins) = conf.get("plugins") else {
        return Ok(());
    };
    let Some(map) = plugins.as_object() else {
        return Err("invalid configuration: property \"plugins\" validation failed: wrong type: expected object, got ".to_string() + lua_type(plugins));
    };
    let consumer_side = matches!(kind.name, "consumers" | "credentials");
    let schema_type = consumer_side.then_some(TYPE_CONSUMER);
    // APISIX words a consumer's or credential's plugin failure with this prefix.
    let wrap = |e: String| {
        if consumer_side {
            format!("invalid plugins configuration: {e}")
        } else {
            e
        }
    };
    for (name, pconf) in map {
        // APISIX checks the conf is a Lua table before it looks the plugin up.
        if !(pconf.is_object() || pconf.is_array()) {
            return Err(wrap(format!(
                "invalid plugin conf {pconf} for plugin [{name}]"
            )));
        }
        if catalog.get(name).is_none() {
            return Err(wrap(format!("unknown plugin [{name}]")));
        }
        catalog.check(name, pconf, schema_type).map_err(wrap)?;
    }
    if kind.name == "credentials" {
        for name in map.keys() {
            if !catalog.get(name).is_some_and(|p| p.is_auth) {
                return Err("only supports auth type plugins in consumer credential".into());
            }
        }
    }
    Ok(())
}

/// A route's `vars` must compile (lua-resty-expr's rules, which the router shares).
pub fn check_vars(kind: &Kind, conf: &Value) -> Result<(), String> {
    if kind.name != "routes" {
        return Ok(());
    }
    match conf.get("vars") {
        Some(vars) if !vars.is_null() => crate::router::expr::Expr::compile(vars)
            .map(|_| ())
            .map_err(|e| format!("failed to validate the 'vars' expression: {e}")),
        _ => Ok(()),
    }
}

/// The data plane must be able to serve what is stored: the same per-item parsing it applies
/// to stored items. `Err` is the message.
pub fn servable(kind: &Kind, conf: &Value) -> Result<(), String> {
    let Some(shape) = shape_kind(kind) else {
        return Ok(());
    };
    let mut copy = conf.clone();
    // A POST body has no id until one is generated.
    if let Some(o) = copy.as_object_mut()
        && kind.name != "consumers"
    {
        o.entry("id").or_insert_with(|| Value::String("0".into()));
    }
    let mut scratch = Resources::default();
    scratch
        .add_item(shape, 0, &copy)
        .map_err(|e| shape_message(&e.field, &e.message))
}

/// Checks a `plugin_metadata/{plugin}` body with the plugin's metadata schema. A native
/// plugin has no Lua module to hold one: anything goes.
pub fn validate_metadata(plugin: &str, conf: &Value, catalog: &Catalog) -> Result<(), String> {
    match catalog.check_resource("plugin_metadata", "shape", plugin, conf) {
        Err(e) if e == "invalid plugin name" => match catalog.get(plugin).map(|p| &p.imp) {
            Some(crate::plugin::Impl::Native(_)) => Ok(()),
            _ => Err(e),
        },
        other => other,
    }
}

/// `create_time`/`update_time` are the server's to set on `PUT`/`POST`.
pub fn forbidden_times(conf: &Value) -> Option<String> {
    let fields = ["create_time", "update_time"];
    let at = |v: Option<&Value>, prefix: &str| -> Option<String> {
        let o = v?.as_object()?;
        fields
            .iter()
            .find(|f| o.contains_key(**f))
            .map(|f| format!("the property is forbidden:  {prefix}{f}"))
    };
    at(Some(conf), "")
        .or_else(|| at(conf.get("upstream"), "upstream."))
        .or_else(|| at(conf.get("plugins"), "plugins."))
}

/// The ids a resource names elsewhere, which must exist when it is written:
/// (path of the field, kind of the target, APISIX's words for the target).
pub fn references(kind: &Kind) -> &'static [(&'static str, &'static str, &'static str)] {
    match kind.name {
        "routes" => &[
            ("upstream.tls.client_cert_id", "ssls", "ssl"),
            ("upstream_id", "upstreams", "upstream"),
            ("service_id", "services", "service"),
            ("plugin_config_id", "plugin_configs", "plugin config"),
        ],
        "services" | "stream_routes" => &[
            ("upstream.tls.client_cert_id", "ssls", "ssl"),
            ("upstream_id", "upstreams", "upstream"),
        ],
        "upstreams" => &[("tls.client_cert_id", "ssls", "ssl")],
        "consumers" => &[("group_id", "consumer_groups", "consumer group")],
        _ => &[],
    }
}

/// The fields `?filter=` may test, per kind (APISIX's `list_filter_fields`).
pub fn list_filter_fields(kind: &Kind) -> &'static [&'static str] {
    match kind.name {
        "routes" => &["service_id", "upstream_id"],
        _ => &[],
    }
}

/// The text of an id value, as APISIX's `tostring`.
pub fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Kinds whose delete is refused while something uses them.
pub fn guarded(kind: &Kind) -> bool {
    matches!(
        kind.name,
        "upstreams" | "services" | "plugin_configs" | "consumer_groups" | "protos"
    )
}

/// Why `kind` may not be deleted while `users` (the items naming it, in key order) exist, in
/// APISIX's words and order of checks.
pub fn delete_refusal(kind: &Kind, users: &[Arc<Entry>]) -> Option<String> {
    let of = |k: &'static str| users.iter().filter(move |e| e.kind == k);
    let names = |e: &Entry, in_plugin: bool| {
        e.facts
            .refs
            .iter()
            .any(|r| r.kind == kind.name && r.in_plugin == in_plugin)
    };
    match kind.name {
        "upstreams" => {
            // Routes and services by field or by plugin; the others by plugin only.
            let order: [(&'static str, &str, bool); 6] = [
                ("routes", "route", true),
                ("services", "service", true),
                ("plugin_configs", "plugin_config", false),
                ("consumers", "consumer", false),
                ("consumer_groups", "consumer_group", false),
                ("global_rules", "global_rules", false),
            ];
            for (k, word, by_field) in order {
                for e in of(k) {
                    if names(e, true) {
                        return Some(format!(
                            "can not delete this upstream, plugin in {word} [{}] is still using it now",
                            e.facts.id
                        ));
                    }
                    if by_field && names(e, false) {
                        return Some(format!(
                            "can not delete this upstream, {word} [{}] is still using it now",
                            e.facts.id
                        ));
                    }
                }
            }
            None
        }
        "services" => [("routes", "route"), ("stream_routes", "stream_route")]
            .into_iter()
            .find_map(|(k, word)| {
                of(k).find(|e| names(e, false)).map(|e| {
                    format!(
                        "can not delete this service directly, {word} [{}] is still using it now",
                        e.facts.id
                    )
                })
            }),
        "plugin_configs" => of("routes").find(|e| names(e, false)).map(|e| {
            format!(
                "can not delete this plugin config, route [{}] is still using it now",
                e.facts.id
            )
        }),
        "consumer_groups" => of("consumers").find(|e| names(e, false)).map(|e| {
            format!(
                "can not delete this consumer group, consumer [{}] is still using it now",
                e.key_id
            )
        }),
        "protos" => [("routes", "route"), ("services", "service")]
            .into_iter()
            .find_map(|(k, word)| {
                of(k).find(|e| names(e, true)).map(|e| {
                    format!(
                        "can not delete this proto, {word} [{}] is still using it now",
                        e.facts.id
                    )
                })
            }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::store::Item;
    use serde_json::json;

    fn entry(key: &str, v: Value) -> Arc<Entry> {
        Arc::new(
            crate::admin::handlers::entry_of(
                "/apisix",
                Item {
                    key: key.into(),
                    value: v.to_string().into_bytes(),
                    create_revision: 1,
                    mod_revision: 1,
                },
            )
            .unwrap(),
        )
    }

    #[test]
    fn the_data_plane_parse_speaks_apisix_words() {
        let routes = find("routes").unwrap();
        assert!(servable(routes, &json!({"uri":"/a","upstream_id":"u"})).is_ok());
        assert_eq!(
            servable(routes, &json!({"id":"1","uri":"/a","bogus":1})).unwrap_err(),
            "invalid configuration: additional properties forbidden, found bogus"
        );
        assert_eq!(
            forbidden_times(&json!({"uri":"/a","create_time":1})).unwrap(),
            "the property is forbidden:  create_time"
        );
        assert_eq!(
            check_plugins(routes, &json!({"plugins":{"nope":5}}), &Catalog::empty()).unwrap_err(),
            "invalid plugin conf 5 for plugin [nope]"
        );
        assert_eq!(
            check_plugins(
                find("consumers").unwrap(),
                &json!({"plugins":{"nope":{}}}),
                &Catalog::empty()
            )
            .unwrap_err(),
            "invalid plugins configuration: unknown plugin [nope]"
        );
        assert_eq!(
            check_vars(routes, &json!({"vars":[["arg_a","=","1"]]})).unwrap_err(),
            "failed to validate the 'vars' expression: invalid operator '='"
        );
    }

    #[test]
    fn referenced_resources_cannot_be_deleted() {
        let up = find("upstreams").unwrap();
        let by_field = entry(
            "/apisix/routes/1",
            json!({"id":"1","uri":"/a","upstream_id":"u1","service_id":"s1"}),
        );
        let by_plugin = entry(
            "/apisix/routes/2",
            json!({"id":"2","uri":"/b","plugins":{"traffic-split":{"rules":[{"weighted_upstreams":[{"upstream_id":"u2"}]}]}}}),
        );
        assert_eq!(
            delete_refusal(up, std::slice::from_ref(&by_field)).unwrap(),
            "can not delete this upstream, route [1] is still using it now"
        );
        assert_eq!(
            delete_refusal(up, std::slice::from_ref(&by_plugin)).unwrap(),
            "can not delete this upstream, plugin in route [2] is still using it now"
        );
        assert!(delete_refusal(up, &[]).is_none());
        assert_eq!(
            delete_refusal(find("services").unwrap(), &[by_field]).unwrap(),
            "can not delete this service directly, route [1] is still using it now"
        );
        let gr = entry(
            "/apisix/global_rules/1",
            json!({"id":"1","plugins":{"traffic-split":{"rules":[{"weighted_upstreams":[{"upstream_id":"u2"}]}]}}}),
        );
        assert_eq!(
            delete_refusal(up, &[gr]).unwrap(),
            "can not delete this upstream, plugin in global_rules [1] is still using it now"
        );
    }
}
