//! `ip-restriction`: lets through, or turns away, clients by address, as APISIX's plugin of that
//! name does (priority 3000, access phase). `whitelist` answers every client outside the listed
//! addresses and blocks; `blacklist` answers the clients inside them. IPv4 and IPv6, with CIDR
//! blocks; an IPv4-mapped IPv6 client address counts as the IPv4 address it carries.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{Answer, NativePlugin, Prepared, phases, prepared, schema};
use crate::plugin::{Phase, PhaseSet, RequestCtx};
use crate::router::ip::{Cidr, IpSet};

pub struct IpRestriction;

enum List {
    Allow(IpSet),
    Deny(IpSet),
}

struct Conf {
    list: List,
    response_code: u16,
    /// The answer body, made once: `{"message": …}`.
    body: Value,
}

fn addresses(o: &serde_json::Map<String, Value>, name: &str) -> Result<Option<IpSet>, String> {
    let rules = schema::Items {
        min_items: 1,
        unique: false,
        min_len: 0,
        max_len: None,
        check: &|_| Ok(()),
    };
    let Some(list) = schema::strings(o, name, &rules)? else {
        return Ok(None);
    };
    for item in &list {
        // APISIX checks the schema first, then core.ip.validate_cidr_or_ip with this message.
        Cidr::parse(item).map_err(|_| format!("invalid ip address: {item}"))?;
    }
    IpSet::parse(&list).map(Some)
}

impl NativePlugin for IpRestriction {
    fn name(&self) -> &'static str {
        "ip-restriction"
    }

    fn priority(&self) -> i64 {
        3000
    }

    fn phases(&self) -> PhaseSet {
        phases(&[Phase::Access])
    }

    fn prepare(&self, v: &Value) -> Result<Prepared, String> {
        let o = schema::object(v)?;
        let message = schema::string(o, "message", 1, Some(1024))?
            .unwrap_or("Your IP address is not allowed");
        let response_code =
            schema::integer(o, "response_code", Some(403), Some(404))?.unwrap_or(403);
        let whitelist = addresses(o, "whitelist")?;
        let blacklist = addresses(o, "blacklist")?;
        schema::one_of_required(o, &["whitelist", "blacklist"])?;
        let list = match (whitelist, blacklist) {
            (Some(w), _) => List::Allow(w),
            (None, Some(b)) => List::Deny(b),
            (None, None) => {
                return Err("value should match only one schema, but matches none".into());
            }
        };
        Ok(Arc::new(Conf {
            list,
            response_code: response_code as u16,
            body: json!({ "message": message }),
        }))
    }

    fn run(
        &self,
        _phase: Phase,
        conf: &Prepared,
        req: &mut RequestCtx,
    ) -> Result<Option<Answer>, String> {
        let c: &Conf = prepared(conf, self.name())?;
        let ip = req.remote.ip();
        let blocked = match &c.list {
            List::Allow(set) => !set.contains(ip),
            List::Deny(set) => set.contains(ip),
        };
        Ok(blocked.then(|| Answer {
            status: c.response_code,
            body: Some(c.body.clone()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_errors_are_worded_as_apisix_words_them() {
        let p = IpRestriction;
        let err = |v: Value| p.check_conf(&v).err().unwrap_or_default();
        assert_eq!(
            err(json!({})),
            "value should match only one schema, but matches none"
        );
        assert_eq!(
            err(json!({"whitelist": ["1.2.3.4"], "blacklist": ["5.6.7.8"]})),
            "value should match only one schema, but matches both schemas 1 and 2"
        );
        assert_eq!(
            err(json!({"whitelist": ["10.0.0.256"]})),
            "invalid ip address: 10.0.0.256"
        );
        assert_eq!(
            err(json!({"whitelist": []})),
            "property \"whitelist\" validation failed: expect array to have at least 1 items"
        );
        assert_eq!(
            err(json!({"blacklist": ["::1"], "response_code": 401})),
            "property \"response_code\" validation failed: expected 401 to be at least 403"
        );
        assert!(
            p.check_conf(&json!({"whitelist": ["10.0.0.0/8", "2001:db8::/32"]}))
                .is_ok()
        );
    }
}
