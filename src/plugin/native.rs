//! Native Rust plugins: the same names, priorities, schemas and phases as APISIX's Lua plugins,
//! for the hot path. A native plugin and Lua plugins interleave in one chain by priority and act
//! on the same [`RequestCtx`].

use std::sync::Arc;

use serde_json::Value;

use super::{Phase, PhaseSet, RequestCtx};

/// An answer a plugin gives instead of letting the request go on: `return code, body`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// A string body is sent as-is; an object or array as JSON plus a newline.
    pub body: Option<Value>,
}

/// What a native plugin implements.
pub trait NativePlugin: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn priority(&self) -> i64;
    /// The phases it implements.
    fn phases(&self) -> PhaseSet;
    /// Validates a conf, in APISIX's words.
    fn check_conf(&self, conf: &Value) -> Result<(), String>;
    /// Runs one phase. `Ok(Some(answer))` from a phase that may answer ends the request.
    fn run(
        &self,
        phase: Phase,
        conf: &Value,
        req: &mut RequestCtx,
    ) -> Result<Option<Answer>, String>;
}

/// Every native plugin moongate has.
pub fn all() -> Vec<Arc<dyn NativePlugin>> {
    vec![Arc::new(request_id::RequestId)]
}

/// `request-id`: gives each request an id header (generated unless the client sent one) and
/// echoes it in the response, as APISIX's plugin of that name does.
pub mod request_id {
    use super::*;

    pub struct RequestId;

    struct Conf<'a> {
        header_name: &'a str,
        include_in_response: bool,
    }

    fn conf(v: &Value) -> Conf<'_> {
        Conf {
            header_name: v
                .get("header_name")
                .and_then(Value::as_str)
                .unwrap_or("X-Request-Id"),
            include_in_response: v
                .get("include_in_response")
                .and_then(Value::as_bool)
                .unwrap_or(true),
        }
    }

    /// A random (version 4) UUID.
    pub fn uuid4() -> String {
        let mut b: [u8; 16] = fastrand::u128(..).to_le_bytes();
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    }

    impl NativePlugin for RequestId {
        fn name(&self) -> &'static str {
            "request-id"
        }

        fn priority(&self) -> i64 {
            12015
        }

        fn phases(&self) -> PhaseSet {
            let mut s = PhaseSet::default();
            s.insert(Phase::Rewrite);
            s.insert(Phase::HeaderFilter);
            s
        }

        fn check_conf(&self, v: &Value) -> Result<(), String> {
            let Some(o) = v.as_object() else {
                return Err("wrong type: expected object".into());
            };
            for (k, val) in o {
                match k.as_str() {
                    "header_name" if !val.is_string() => {
                        return Err(format!(
                            "property \"header_name\" validation failed: wrong type: expected string, got {}",
                            json_type(val)
                        ));
                    }
                    "include_in_response" if !val.is_boolean() => {
                        return Err(format!(
                            "property \"include_in_response\" validation failed: wrong type: expected boolean, got {}",
                            json_type(val)
                        ));
                    }
                    "algorithm" => match val.as_str() {
                        Some("uuid") => {}
                        Some(other @ ("nanoid" | "range_id")) => {
                            return Err(format!(
                                "algorithm {other:?} is not supported by moongate's request-id yet"
                            ));
                        }
                        _ => {
                            return Err(
                                "property \"algorithm\" validation failed: matches none of the enum values".into(),
                            );
                        }
                    },
                    "range_id" | "_meta" => {}
                    _ => {}
                }
            }
            Ok(())
        }

        fn run(
            &self,
            phase: Phase,
            v: &Value,
            req: &mut RequestCtx,
        ) -> Result<Option<Answer>, String> {
            let c = conf(v);
            let name = http::HeaderName::from_bytes(c.header_name.as_bytes())
                .map_err(|e| e.to_string())?;
            match phase {
                Phase::Rewrite => {
                    if !req.headers.contains_key(&name)
                        && let Ok(hv) = http::HeaderValue::from_str(&uuid4())
                    {
                        req.headers.insert(name, hv);
                    }
                }
                Phase::HeaderFilter if c.include_in_response => {
                    if !req.resp_headers.contains_key(&name)
                        && let Some(hv) = req.headers.get(&name).cloned()
                    {
                        req.resp_headers.insert(name, hv);
                    }
                }
                _ => {}
            }
            Ok(None)
        }
    }

    fn json_type(v: &Value) -> &'static str {
        match v {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        }
    }
}
