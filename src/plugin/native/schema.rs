//! Conf checks for native plugins, worded as APISIX's JSON-schema validator (jsonschema via
//! `core.schema.check`) words them, because users and tests match on those strings.
//!
//! Each helper reads one property of a conf object and either returns it typed or the message
//! APISIX would give. Unknown properties are accepted, as APISIX's plugin schemas accept them.

use serde_json::{Map, Value};

/// The JSON type name the validator uses in "wrong type" messages.
pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn failed(name: &str, why: impl std::fmt::Display) -> String {
    format!("property \"{name}\" validation failed: {why}")
}

/// The conf must be an object.
pub fn object(conf: &Value) -> Result<&Map<String, Value>, String> {
    conf.as_object()
        .ok_or_else(|| format!("wrong type: expected object, got {}", type_name(conf)))
}

/// `property "NAME" is required`.
pub fn required(name: &str) -> String {
    format!("property \"{name}\" is required")
}

/// An optional boolean.
pub fn boolean(o: &Map<String, Value>, name: &str) -> Result<Option<bool>, String> {
    match o.get(name) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(failed(
            name,
            format!("wrong type: expected boolean, got {}", type_name(v)),
        )),
    }
}

/// An optional integer within `[min, max]`.
pub fn integer(
    o: &Map<String, Value>,
    name: &str,
    min: Option<i64>,
    max: Option<i64>,
) -> Result<Option<i64>, String> {
    let Some(v) = o.get(name) else {
        return Ok(None);
    };
    // The validator takes 403.0 as an integer, as Lua has one number type.
    let n = match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        _ => None,
    };
    let Some(n) = n else {
        return Err(failed(
            name,
            format!("wrong type: expected integer, got {}", type_name(v)),
        ));
    };
    if let Some(m) = min
        && n < m
    {
        return Err(failed(name, format!("expected {n} to be at least {m}")));
    }
    if let Some(m) = max
        && n > m
    {
        return Err(failed(name, format!("expected {n} to be at most {m}")));
    }
    Ok(Some(n))
}

/// Checks a string's length, as `minLength`/`maxLength` (counted in bytes, as the Lua
/// validator counts them).
fn length(s: &str, min: usize, max: Option<usize>) -> Result<(), String> {
    if s.len() < min {
        return Err(format!(
            "string too short, expected at least {min}, got {}",
            s.len()
        ));
    }
    if let Some(m) = max
        && s.len() > m
    {
        return Err(format!(
            "string too long, expected at most {m}, got {}",
            s.len()
        ));
    }
    Ok(())
}

/// An optional string with `minLength`/`maxLength`.
pub fn string<'a>(
    o: &'a Map<String, Value>,
    name: &str,
    min: usize,
    max: Option<usize>,
) -> Result<Option<&'a str>, String> {
    match o.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => {
            length(s, min, max).map_err(|e| failed(name, e))?;
            Ok(Some(s))
        }
        Some(v) => Err(failed(
            name,
            format!("wrong type: expected string, got {}", type_name(v)),
        )),
    }
}

/// What each item of a string array must satisfy.
pub struct Items<'a> {
    pub min_items: usize,
    pub unique: bool,
    pub min_len: usize,
    pub max_len: Option<usize>,
    /// An extra check per item, returning the validator's message.
    pub check: &'a dyn Fn(&str) -> Result<(), String>,
}

/// An optional array of strings.
pub fn strings(
    o: &Map<String, Value>,
    name: &str,
    rules: &Items<'_>,
) -> Result<Option<Vec<String>>, String> {
    let Some(v) = o.get(name) else {
        return Ok(None);
    };
    // An empty Lua table encodes as `{}`: the validator accepts it as an empty array.
    let items: &[Value] = match v {
        Value::Array(a) => a,
        Value::Object(m) if m.is_empty() => &[],
        _ => {
            return Err(failed(
                name,
                format!("wrong type: expected array, got {}", type_name(v)),
            ));
        }
    };
    if items.len() < rules.min_items {
        return Err(failed(
            name,
            format!("expect array to have at least {} items", rules.min_items),
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::String(s) = item else {
            return Err(failed(
                name,
                format!(
                    "failed to validate item {}: wrong type: expected string, got {}",
                    i + 1,
                    type_name(item)
                ),
            ));
        };
        length(s, rules.min_len, rules.max_len)
            .and_then(|()| (rules.check)(s))
            .map_err(|e| failed(name, format!("failed to validate item {}: {e}", i + 1)))?;
        if rules.unique
            && let Some(j) = out.iter().position(|x| x == s)
        {
            return Err(failed(
                name,
                format!(
                    "expected unique items but items {} and {} are equal",
                    j + 1,
                    i + 1
                ),
            ));
        }
        out.push(s.clone());
    }
    Ok(Some(out))
}

/// `oneOf: [{required: [a]}, {required: [b]}, …]` over the present keys.
pub fn one_of_required(o: &Map<String, Value>, names: &[&str]) -> Result<(), String> {
    let present: Vec<usize> = names
        .iter()
        .enumerate()
        .filter(|(_, n)| o.contains_key(**n))
        .map(|(i, _)| i + 1)
        .collect();
    match present.as_slice() {
        [_] => Ok(()),
        [] => Err("value should match only one schema, but matches none".into()),
        [a, b, ..] => Err(format!(
            "value should match only one schema, but matches both schemas {a} and {b}"
        )),
    }
}

/// APISIX's `host_def` pattern: `*` alone, or an optional leading `*` then letters, digits
/// and `-._[]:`.
pub fn host_def(h: &str) -> Result<(), String> {
    let body = if h == "*" {
        "x"
    } else {
        h.strip_prefix('*').unwrap_or(h)
    };
    let ok = !body.is_empty()
        && body
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "failed to match pattern \"^\\\\*$|^\\\\*?[0-9a-zA-Z-._\\\\[\\\\]:]+$\" with \"{h}\""
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn messages_use_the_validators_words() {
        let o = obj(json!({"code": 100, "flag": "yes", "msg": "", "list": ["a", "a"]}));
        assert_eq!(
            integer(&o, "code", Some(200), None).unwrap_err(),
            "property \"code\" validation failed: expected 100 to be at least 200"
        );
        assert_eq!(
            boolean(&o, "flag").unwrap_err(),
            "property \"flag\" validation failed: wrong type: expected boolean, got string"
        );
        assert_eq!(
            string(&o, "msg", 1, None).unwrap_err(),
            "property \"msg\" validation failed: string too short, expected at least 1, got 0"
        );
        let rules = Items {
            min_items: 1,
            unique: true,
            min_len: 1,
            max_len: None,
            check: &|_| Ok(()),
        };
        assert_eq!(
            strings(&o, "list", &rules).unwrap_err(),
            "property \"list\" validation failed: expected unique items but items 1 and 2 are equal"
        );
        assert_eq!(
            one_of_required(&o, &["whitelist", "blacklist"]).unwrap_err(),
            "value should match only one schema, but matches none"
        );
        assert!(host_def("*.example.com").is_ok());
        assert!(host_def("*").is_ok());
        assert!(host_def("bad host").is_err());
    }
}
