//! Reading an Envoy YAML tree with its paths: every value is fetched with the dotted path it
//! sits at (`static_resources.clusters[0].lb_policy`), so a wrong value is an error naming that
//! path and a key the provider does not read is one warning naming it.

use serde_json::{Map, Value};

use crate::config::standalone::ConfigError;

/// What reading found: warnings for ignored paths, errors for broken structure.
#[derive(Debug, Default)]
pub struct Report {
    pub warnings: Vec<String>,
    pub errors: Vec<ConfigError>,
}

impl Report {
    pub fn error(&mut self, path: &str, message: impl Into<String>) {
        self.errors
            .push(ConfigError::new("envoy.yaml", path.to_string(), message));
    }

    pub fn ignored(&mut self, path: &str, why: &str) {
        self.warnings
            .push(format!("envoy.yaml: {path}: ignored ({why})"));
    }

    /// One warning per key of `m` that is not in `known`.
    pub fn unknown_keys(&mut self, m: &Map<String, Value>, path: &str, known: &[&str]) {
        for k in m.keys() {
            if !known.contains(&k.as_str()) {
                self.ignored(&join(path, k), "not supported by moongate's envoy provider");
            }
        }
    }

    pub fn obj<'a>(&mut self, v: &'a Value, path: &str) -> Option<&'a Map<String, Value>> {
        match v {
            Value::Object(m) => Some(m),
            other => {
                self.error(path, format!("expected a mapping, got {}", kind(other)));
                None
            }
        }
    }

    /// A list; a missing or null value is the empty list.
    pub fn list<'a>(&mut self, v: Option<&'a Value>, path: &str) -> &'a [Value] {
        match v {
            None | Some(Value::Null) => &[],
            Some(Value::Array(a)) => a,
            Some(other) => {
                self.error(path, format!("expected a list, got {}", kind(other)));
                &[]
            }
        }
    }

    pub fn string<'a>(&mut self, v: &'a Value, path: &str) -> Option<&'a str> {
        match v {
            Value::String(s) => Some(s),
            other => {
                self.error(path, format!("expected a string, got {}", kind(other)));
                None
            }
        }
    }

    /// An unsigned integer; proto JSON also writes them as strings of digits.
    pub fn uint(&mut self, v: &Value, path: &str, max: u64) -> Option<u64> {
        let n = match v {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        };
        match n {
            Some(n) if n <= max => Some(n),
            Some(n) => {
                self.error(path, format!("{n} is out of range (at most {max})"));
                None
            }
            None => {
                self.error(
                    path,
                    format!("expected an unsigned integer, got {}", kind(v)),
                );
                None
            }
        }
    }

    pub fn boolean(&mut self, v: &Value, path: &str) -> Option<bool> {
        match v {
            Value::Bool(b) => Some(*b),
            other => {
                self.error(path, format!("expected true or false, got {}", kind(other)));
                None
            }
        }
    }

    /// A protobuf `Duration`: `"0.25s"`, `"5s"`, or `{seconds, nanos}`. In seconds.
    pub fn duration(&mut self, v: &Value, path: &str) -> Option<f64> {
        let secs = match v {
            Value::String(s) => s
                .strip_suffix('s')
                .and_then(|n| n.parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n >= 0.0),
            Value::Object(m) => {
                let part = |k: &str| m.get(k).map_or(Some(0.0), |x| x.as_f64());
                match (part("seconds"), part("nanos")) {
                    (Some(s), Some(n)) if s >= 0.0 && n >= 0.0 => Some(s + n / 1e9),
                    _ => None,
                }
            }
            _ => None,
        };
        if secs.is_none() {
            self.error(
                path,
                format!("expected a duration such as \"0.25s\", got {}", show(v)),
            );
        }
        secs
    }
}

/// `a.b` + `c` = `a.b.c`.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// `a.b` + 3 = `a.b[3]`.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => kind(other).to_string(),
    }
}

/// An enum value as Envoy's YAML writes it; proto enum names are matched without regard to
/// case, since Envoy files in the wild write `strict_dns` as well as `STRICT_DNS`.
pub fn enum_name(v: &str) -> String {
    v.to_ascii_uppercase()
}
