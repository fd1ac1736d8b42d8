//! `uri-blocker`: refuses requests whose `$request_uri` (path and query, as the client sent
//! them) matches any of the `block_rules` regexes, as APISIX's plugin of that name does
//! (priority 2900, rewrite phase). The rules are joined into one alternation, prefixed with
//! `(?i)` when `case_insensitive` is set; the answer is `rejected_code` (403), with
//! `{"error_msg": rejected_msg}` as body when a message is configured.

use std::sync::Arc;

use pcre2::bytes::Regex;
use serde_json::{Value, json};

use super::{Answer, NativePlugin, Prepared, phases, prepared, regex, schema};
use crate::plugin::{Phase, PhaseSet, RequestCtx};

pub struct UriBlocker;

struct Conf {
    rules: Regex,
    rejected_code: u16,
    body: Option<Value>,
}

impl NativePlugin for UriBlocker {
    fn name(&self) -> &'static str {
        "uri-blocker"
    }

    fn priority(&self) -> i64 {
        2900
    }

    fn phases(&self) -> PhaseSet {
        phases(&[Phase::Rewrite])
    }

    fn prepare(&self, v: &Value) -> Result<Prepared, String> {
        let o = schema::object(v)?;
        let rules = schema::Items {
            min_items: 0,
            unique: true,
            min_len: 1,
            max_len: Some(4096),
            check: &|_| Ok(()),
        };
        let block_rules = schema::strings(o, "block_rules", &rules)?;
        let rejected_code = schema::integer(o, "rejected_code", Some(200), None)?.unwrap_or(403);
        let rejected_msg = schema::string(o, "rejected_msg", 1, None)?;
        let case_insensitive = schema::boolean(o, "case_insensitive")?.unwrap_or(false);
        let Some(block_rules) = block_rules else {
            return Err(schema::required("block_rules"));
        };
        if rejected_code > 999 {
            return Err(format!(
                "property \"rejected_code\" validation failed: {rejected_code} is not an HTTP status moongate can send"
            ));
        }
        // Each rule must compile on its own, as APISIX checks them one by one.
        for rule in &block_rules {
            regex::compile(rule, false)?;
        }
        // An empty list blocks nothing: the empty alternation would match everything.
        let joined = if block_rules.is_empty() {
            "(*FAIL)".to_string()
        } else {
            block_rules.join("|")
        };
        Ok(Arc::new(Conf {
            rules: regex::compile(&joined, case_insensitive)?,
            rejected_code: rejected_code as u16,
            body: rejected_msg.map(|m| json!({ "error_msg": m })),
        }))
    }

    fn run(
        &self,
        _phase: Phase,
        conf: &Prepared,
        req: &mut RequestCtx,
    ) -> Result<Option<Answer>, String> {
        let c: &Conf = prepared(conf, self.name())?;
        let hit = c
            .rules
            .is_match(req.request_uri.as_bytes())
            .map_err(|e| format!("block_rules: {e}"))?;
        Ok(hit.then(|| Answer {
            status: c.rejected_code,
            body: c.body.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conf_is_checked_with_apisix_wording() {
        let p = UriBlocker;
        let err = |v: Value| p.check_conf(&v).err().unwrap_or_default();
        assert_eq!(err(json!({})), "property \"block_rules\" is required");
        assert_eq!(
            err(json!({"block_rules": ["a", "a"]})),
            "property \"block_rules\" validation failed: expected unique items but items 1 and 2 are equal"
        );
        assert_eq!(
            err(json!({"block_rules": ["a"], "rejected_code": 100})),
            "property \"rejected_code\" validation failed: expected 100 to be at least 200"
        );
        assert!(err(json!({"block_rules": ["(a"]})).starts_with("pcre_compile() failed"));
        assert!(
            p.check_conf(&json!({"block_rules": ["\\.php$"], "rejected_msg": "no"}))
                .is_ok()
        );
    }
}
