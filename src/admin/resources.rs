//! The resources the Admin API serves: their URL names, the words APISIX uses for them in
//! errors, which methods they take, how a body is validated, and which other resources must
//! not lose them.
//!
//! Validation runs on a copy and never changes what is stored: the shape is checked with the
//! same per-item parsing the data plane uses ([`Resources::add_item`]), then every plugin conf
//! with the plugin's own `check_schema`, so nothing is accepted that the data plane would
//! refuse — and schema defaults are never written back.

use serde_json::Value;

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

/// The store directory and value kind a body is checked as.
fn shape_kind(kind: &Kind) -> &'static str {
    match kind.name {
        "credentials" => "consumers",
        other => crate::config::standalone::KINDS
            .iter()
            .copied()
            .find(|k| *k == other)
            .unwrap_or("routes"),
    }
}

/// Checks `conf` (already carrying its id) as a `kind` resource; `Err` is the `error_msg`.
pub fn validate(kind: &Kind, conf: &Value, catalog: &Catalog) -> Result<(), String> {
    let Some(obj) = conf.as_object() else {
        return Err("invalid configuration: wrong type: expected object".into());
    };
    match kind.name {
        "routes" if !obj.contains_key("uri") && !obj.contains_key("uris") => {
            return Err(
                "invalid configuration: value should match only one schema, but matches none"
                    .into(),
            );
        }
        "consumers" => match obj.get("username") {
            Some(Value::String(u))
                if !u.is_empty()
                    && u.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => {}
            Some(_) => {
                return Err("invalid configuration: property \"username\" validation failed: failed to match pattern \"^[a-zA-Z0-9_\\\\-]+$\"".into());
            }
            None => return Err("invalid configuration: property \"username\" is required".into()),
        },
        "global_rules" | "plugin_configs" | "consumer_groups" if !obj.contains_key("plugins") => {
            return Err("invalid configuration: property \"plugins\" is required".into());
        }
        _ => {}
    }
    if kind.name != "credentials" && kind.name != "plugin_metadata" {
        let mut scratch = Resources::default();
        if let Err(e) = scratch.add_item(shape_kind(kind), 0, conf) {
            return Err(shape_message(&e.field, &e.message));
        }
    }
    if kind.name == "plugin_metadata" {
        return Ok(());
    }
    if let Some(plugins) = obj.get("plugins") {
        let Some(map) = plugins.as_object() else {
            return Err("invalid configuration: property \"plugins\" validation failed: wrong type: expected object".into());
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
            // APISIX checks the conf is a Lua table (a JSON object or array) before it looks
            // the plugin up.
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
    }
    Ok(())
}

/// Checks a `plugin_metadata/{plugin}` body with the plugin's metadata schema.
pub fn validate_metadata(plugin: &str, conf: &Value, catalog: &Catalog) -> Result<(), String> {
    if catalog.get(plugin).is_none() {
        return Err("invalid plugin name".into());
    }
    let mut copy = conf.clone();
    if let Some(o) = copy.as_object_mut() {
        o.remove("id");
    }
    catalog.check(plugin, &copy, Some(TYPE_METADATA))
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
/// (field, kind of the target, APISIX's words for the target).
pub fn references(kind: &Kind) -> &'static [(&'static str, &'static str, &'static str)] {
    match kind.name {
        "routes" => &[
            ("upstream_id", "upstreams", "upstream"),
            ("service_id", "services", "service"),
            ("plugin_config_id", "plugin_configs", "plugin config"),
        ],
        "services" | "stream_routes" => &[("upstream_id", "upstreams", "upstream")],
        "consumers" => &[("group_id", "consumer_groups", "consumer group")],
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

/// True when `v` names upstream `id` in an `upstream_id` field anywhere inside it
/// (traffic-split's weighted upstreams).
fn names_upstream(v: &Value, id: &str) -> bool {
    match v {
        Value::Object(o) => o.iter().any(|(k, x)| {
            (k == "upstream_id" && id_text(x).as_deref() == Some(id)) || names_upstream(x, id)
        }),
        Value::Array(a) => a.iter().any(|x| names_upstream(x, id)),
        _ => false,
    }
}

/// Why `kind`/`id` may not be deleted, in APISIX's words; `all` holds every stored resource
/// as (kind, id, value).
pub fn delete_refusal(
    kind: &Kind,
    id: &str,
    all: &[(&'static str, String, Value)],
) -> Option<String> {
    let of = |k: &'static str| all.iter().filter(move |(kk, _, _)| *kk == k);
    let field_is = |v: &Value, f: &str| v.get(f).and_then(id_text).as_deref() == Some(id);
    let rid =
        |rid: &String, v: &Value| v.get("id").and_then(id_text).unwrap_or_else(|| rid.clone());
    match kind.name {
        "upstreams" => {
            for (k, word) in [("routes", "route"), ("services", "service")] {
                for (rk, v) in of(k).map(|(_, i, v)| (i, v)) {
                    if v.get("plugins").is_some_and(|p| names_upstream(p, id)) {
                        return Some(format!(
                            "can not delete this upstream, plugin in {word} [{}] is still using it now",
                            rid(rk, v)
                        ));
                    }
                    if field_is(v, "upstream_id") {
                        return Some(format!(
                            "can not delete this upstream, {word} [{}] is still using it now",
                            rid(rk, v)
                        ));
                    }
                }
            }
            None
        }
        "services" => {
            for (k, word) in [("routes", "route"), ("stream_routes", "stream_route")] {
                if let Some((_, rk, v)) = of(k).find(|(_, _, v)| field_is(v, "service_id")) {
                    return Some(format!(
                        "can not delete this service directly, {word} [{}] is still using it now",
                        rid(rk, v)
                    ));
                }
            }
            None
        }
        "plugin_configs" => of("routes")
            .find(|(_, _, v)| field_is(v, "plugin_config_id"))
            .map(|(_, rk, v)| {
                format!(
                    "can not delete this plugin config, route [{}] is still using it now",
                    rid(rk, v)
                )
            }),
        "consumer_groups" => of("consumers")
            .find(|(_, _, v)| field_is(v, "group_id"))
            .map(|(_, rk, _)| {
                format!("can not delete this consumer group, consumer [{rk}] is still using it now")
            }),
        "protos" => of("routes")
            .find(|(_, _, v)| {
                v.get("plugins")
                    .and_then(|p| p.get("grpc-transcode"))
                    .is_some_and(|g| field_is(g, "proto_id"))
            })
            .map(|(_, rk, v)| {
                format!(
                    "can not delete this proto, route [{}] is still using it now",
                    rid(rk, v)
                )
            }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_are_checked_in_apisix_words() {
        let c = Catalog::empty();
        let routes = find("routes").unwrap();
        assert!(validate(routes, &json!({"id":"1","uri":"/a","upstream_id":"u"}), &c).is_ok());
        assert_eq!(
            validate(routes, &json!({"id":"1","upstream_id":"u"}), &c).unwrap_err(),
            "invalid configuration: value should match only one schema, but matches none"
        );
        assert_eq!(
            validate(routes, &json!({"id":"1","uri":"/a","bogus":1}), &c).unwrap_err(),
            "invalid configuration: additional properties forbidden, found bogus"
        );
        assert_eq!(
            validate(
                routes,
                &json!({"id":"1","uri":"/a","plugins":{"nope":{}}}),
                &c
            )
            .unwrap_err(),
            "unknown plugin [nope]"
        );
        let consumers = find("consumers").unwrap();
        assert!(validate(consumers, &json!({"username":"jack"}), &c).is_ok());
        assert_eq!(
            validate(
                consumers,
                &json!({"username":"jack","plugins":{"nope":{}}}),
                &c
            )
            .unwrap_err(),
            "invalid plugins configuration: unknown plugin [nope]"
        );
        assert_eq!(
            validate(
                consumers,
                &json!({"username":"jack","plugins":{"key-auth":"blah"}}),
                &c
            )
            .unwrap_err(),
            "invalid plugins configuration: invalid plugin conf \"blah\" for plugin [key-auth]"
        );
        assert_eq!(
            validate(
                find("routes").unwrap(),
                &json!({"id":"1","uri":"/a","plugins":{"nope":5}}),
                &c
            )
            .unwrap_err(),
            "invalid plugin conf 5 for plugin [nope]"
        );
        assert!(validate(consumers, &json!({"username":"ja ck"}), &c).is_err());
        assert_eq!(
            forbidden_times(&json!({"uri":"/a","create_time":1})).unwrap(),
            "the property is forbidden:  create_time"
        );
    }

    #[test]
    fn referenced_resources_cannot_be_deleted() {
        let all = vec![
            (
                "routes",
                "1".to_string(),
                json!({"id":"1","uri":"/a","upstream_id":"u1","service_id":"s1"}),
            ),
            (
                "routes",
                "2".to_string(),
                json!({"id":"2","uri":"/b","plugins":{"traffic-split":{"rules":[{"weighted_upstreams":[{"upstream_id":"u2"}]}]}}}),
            ),
        ];
        let up = find("upstreams").unwrap();
        assert_eq!(
            delete_refusal(up, "u1", &all).unwrap(),
            "can not delete this upstream, route [1] is still using it now"
        );
        assert_eq!(
            delete_refusal(up, "u2", &all).unwrap(),
            "can not delete this upstream, plugin in route [2] is still using it now"
        );
        assert!(delete_refusal(up, "u3", &all).is_none());
        assert_eq!(
            delete_refusal(find("services").unwrap(), "s1", &all).unwrap(),
            "can not delete this service directly, route [1] is still using it now"
        );
    }
}
