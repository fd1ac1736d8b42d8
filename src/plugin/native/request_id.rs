//! `request-id`: gives each request an id header (generated unless the client sent one) and
//! echoes it in the response, as APISIX's plugin of that name does.

use http::{HeaderName, HeaderValue};
use serde_json::Value;

use super::{Answer, NativePlugin, Prepared, phases, prepared, schema};
use crate::plugin::{Phase, PhaseSet, RequestCtx};

pub struct RequestId;

struct Conf {
    header_name: HeaderName,
    include_in_response: bool,
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
        phases(&[Phase::Rewrite, Phase::HeaderFilter])
    }

    fn prepare(&self, v: &Value) -> Result<Prepared, String> {
        let o = schema::object(v)?;
        let header_name = schema::string(o, "header_name", 0, None)?.unwrap_or("X-Request-Id");
        let include_in_response = schema::boolean(o, "include_in_response")?.unwrap_or(true);
        match o.get("algorithm").map(Value::as_str) {
            None | Some(Some("uuid")) => {}
            Some(Some(other @ ("nanoid" | "range_id"))) => {
                return Err(format!(
                    "algorithm {other:?} is not supported by moongate's request-id yet"
                ));
            }
            Some(_) => {
                return Err(
                    "property \"algorithm\" validation failed: matches none of the enum values"
                        .into(),
                );
            }
        }
        let header_name = HeaderName::from_bytes(header_name.as_bytes())
            .map_err(|e| format!("property \"header_name\" validation failed: {e}"))?;
        Ok(std::sync::Arc::new(Conf {
            header_name,
            include_in_response,
        }))
    }

    fn run(
        &self,
        phase: Phase,
        conf: &Prepared,
        req: &mut RequestCtx,
    ) -> Result<Option<Answer>, String> {
        let c: &Conf = prepared(conf, self.name())?;
        match phase {
            Phase::Rewrite => {
                if !req.headers().contains_key(&c.header_name)
                    && let Ok(hv) = HeaderValue::from_str(&uuid4())
                {
                    req.headers_mut().insert(c.header_name.clone(), hv);
                }
            }
            Phase::HeaderFilter if c.include_in_response => {
                if !req.resp_headers.contains_key(&c.header_name)
                    && let Some(hv) = req.header(c.header_name.as_str()).cloned()
                {
                    req.resp_headers.insert(c.header_name.clone(), hv);
                }
            }
            _ => {}
        }
        Ok(None)
    }
}
