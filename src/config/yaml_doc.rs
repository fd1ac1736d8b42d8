//! YAML configuration files as APISIX's loader reads them: `config.yaml` and `apisix.yaml`.
//!
//! Two things set APISIX's reading apart from a plain YAML-to-JSON conversion, and users rely
//! on both:
//! - **Environment variables**: a string value may hold `${{NAME}}` or `${{NAME:=default}}`
//!   (APISIX uses the double braces because nginx takes `$var` and `${var}`). The reference is
//!   replaced by the variable's value, else the default; neither is an error naming the
//!   variable. A value that was changed this way and now reads as a number or `true`/`false`
//!   becomes one (`port: ${{PORT}}` is a number).
//! - **Tags and non-string keys**: YAML 1.1 tags (`!!map`, `!!omap`, `!!set`, `!!str`…) are
//!   read as the value they tag, and keys that are numbers or booleans become their text, as a
//!   Lua table read through JSON would have them.

use serde_json::{Map, Number, Value};
use serde_norway::Value as Yaml;

/// Why a document cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum YamlError {
    #[error("{0}")]
    Syntax(String),
    #[error("failed to handle configuration: can't find environment variable {0}")]
    MissingEnv(String),
}

/// Parses `text` into JSON values, tags dropped and environment references resolved through
/// `env` (`std::env::var` in production).
pub fn parse_with(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, YamlError> {
    let doc: Yaml = serde_norway::from_str(text).map_err(|e| YamlError::Syntax(e.to_string()))?;
    convert(doc, env)
}

/// [`parse_with`] over the process environment.
pub fn parse(text: &str) -> Result<Value, YamlError> {
    parse_with(text, &|name| std::env::var(name).ok())
}

fn convert(v: Yaml, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, YamlError> {
    Ok(match v {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(b),
        Yaml::Number(n) => number(&n),
        Yaml::String(s) => substitute(&s, env)?,
        Yaml::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(|i| convert(i, env))
                .collect::<Result<_, _>>()?,
        ),
        Yaml::Mapping(m) => {
            let mut out = Map::with_capacity(m.len());
            for (k, v) in m {
                out.insert(key_text(k), convert(v, env)?);
            }
            Value::Object(out)
        }
        Yaml::Tagged(t) => convert(t.value, env)?,
    })
}

fn number(n: &serde_norway::Number) -> Value {
    if let Some(i) = n.as_i64() {
        Value::Number(i.into())
    } else if let Some(u) = n.as_u64() {
        Value::Number(u.into())
    } else {
        n.as_f64()
            .and_then(Number::from_f64)
            .map_or(Value::Null, Value::Number)
    }
}

fn key_text(k: Yaml) -> String {
    match k {
        Yaml::String(s) => s,
        Yaml::Bool(b) => b.to_string(),
        Yaml::Number(n) => n.to_string(),
        Yaml::Null => "null".to_string(),
        Yaml::Tagged(t) => key_text(t.value),
        other => serde_norway::to_string(&other)
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    }
}

/// Replaces every `${{NAME}}` / `${{NAME:=default}}` in `s`; a string that held one and now
/// reads as a number or boolean becomes that value.
fn substitute(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Value, YamlError> {
    if !s.contains("${{") {
        return Ok(Value::String(s.to_string()));
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    let mut changed = false;
    while let Some(start) = rest.find("${{") {
        let Some(len) = rest[start + 3..].find("}}") else {
            break;
        };
        let inner = rest[start + 3..start + 3 + len].trim();
        let (name, default) = match inner.split_once(":=") {
            Some((n, d)) => (n.trim(), Some(d.trim())),
            None => (inner, None),
        };
        let valid =
            !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        out.push_str(&rest[..start]);
        if valid {
            let value = env(name)
                .or_else(|| default.map(str::to_string))
                .ok_or_else(|| YamlError::MissingEnv(name.to_string()))?;
            out.push_str(&value);
            changed = true;
        } else {
            // Not a reference (`${{ }}`, `${{a-b}}`): kept as written.
            out.push_str(&rest[start..start + 3 + len + 2]);
        }
        rest = &rest[start + 3 + len + 2..];
    }
    out.push_str(rest);
    if changed {
        if out == "true" || out == "false" {
            return Ok(Value::Bool(out == "true"));
        }
        if let Ok(i) = out.parse::<i64>() {
            return Ok(Value::Number(i.into()));
        }
        if let Some(n) = out
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .and_then(Number::from_f64)
        {
            return Ok(Value::Number(n));
        }
    }
    Ok(Value::String(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(name: &str) -> Option<String> {
        match name {
            "AID" => Some("3".into()),
            "HOST" => Some("example.com".into()),
            "ON" => Some("true".into()),
            _ => None,
        }
    }

    fn read(text: &str) -> Result<Value, YamlError> {
        parse_with(text, &env)
    }

    #[test]
    fn environment_references_are_replaced_and_typed() {
        let v = read(
            "a: ${{ AID }}\nb: http://${{HOST}}:80\nc: ${{ON}}\nd: ${{NOPE:=fallback}}\ne: ${{NOPE := 8}}\nf: '${{ }}'\n",
        );
        assert_eq!(
            v,
            Ok(
                json!({"a": 3, "b": "http://example.com:80", "c": true, "d": "fallback", "e": 8, "f": "${{ }}"})
            )
        );
        assert_eq!(
            read("x: ${{NOPE}}\n"),
            Err(YamlError::MissingEnv("NOPE".into()))
        );
        assert_eq!(
            YamlError::MissingEnv("NOPE".into()).to_string(),
            "failed to handle configuration: can't find environment variable NOPE"
        );
        // Only changed strings are retyped.
        assert_eq!(read("p: '80'\n"), Ok(json!({"p": "80"})));
    }

    #[test]
    fn tags_are_read_as_their_values_and_keys_become_text() {
        let v = read(
            "m: !!map {a: 1}\no: !!omap [ one: 1, two: 2 ]\ns: !!set {x, y}\nt: !!str 12\n1: one\ntrue: yes\n",
        );
        assert_eq!(
            v,
            Ok(json!({
                "m": {"a": 1},
                "o": [{"one": 1}, {"two": 2}],
                "s": {"x": null, "y": null},
                "t": "12",
                "1": "one",
                "true": "yes"
            }))
        );
    }
}
