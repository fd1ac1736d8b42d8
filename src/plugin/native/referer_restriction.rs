//! `referer-restriction`: lets through, or turns away, requests by the host of their `Referer`,
//! as APISIX's plugin of that name does (priority 2990, access phase). Patterns are exact hosts
//! or `*.suffix` (a leading `*` matches any prefix, so `*.example.com` takes `a.example.com` but
//! not `example.com`; `*` alone takes any host). A request without a usable `Referer` is refused
//! unless `bypass_missing` is set. The answer is always `403 {"message": …}`.

use std::collections::HashSet;
use std::sync::Arc;

use serde_json::{Value, json};

use super::{Answer, NativePlugin, Prepared, phases, prepared, schema};
use crate::plugin::{Phase, PhaseSet, RequestCtx};

pub struct RefererRestriction;

/// Hosts to compare the Referer's host with.
struct Hosts {
    exact: HashSet<String>,
    /// What a `*`-pattern's host must end with (the pattern without its `*`).
    suffixes: Vec<String>,
}

impl Hosts {
    fn new(patterns: &[String]) -> Hosts {
        let mut exact = HashSet::new();
        let mut suffixes = Vec::new();
        for p in patterns {
            match p.strip_prefix('*') {
                Some(s) => suffixes.push(s.to_string()),
                None => {
                    exact.insert(p.clone());
                }
            }
        }
        Hosts { exact, suffixes }
    }

    fn matches(&self, host: &str) -> bool {
        self.exact.contains(host) || self.suffixes.iter().any(|s| host.ends_with(s.as_str()))
    }
}

enum List {
    Allow(Hosts),
    Deny(Hosts),
}

struct Conf {
    list: List,
    bypass_missing: bool,
    body: Value,
}

/// The host part of a Referer as lua-resty-http's `parse_uri` finds it: an optional `http:` or
/// `https:`, then `//`, then a bracketed IPv6 literal or a name up to `:`, `/`, `?`. Anything
/// else counts as no Referer.
pub fn referer_host(referer: &str) -> Option<&str> {
    let rest = referer
        .strip_prefix("https:")
        .or_else(|| referer.strip_prefix("http:"))
        .unwrap_or(referer);
    let rest = rest.strip_prefix("//")?;
    if rest.starts_with('[') {
        // `\[.+\]` is greedy: up to the last `]` that is followed by what may follow a host.
        let end = rest.rfind(']')?;
        return (end > 1).then(|| &rest[..=end]);
    }
    let end = rest.find(['[', ']', ':', '/', '?']).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

fn hosts(o: &serde_json::Map<String, Value>, name: &str) -> Result<Option<Hosts>, String> {
    let rules = schema::Items {
        min_items: 1,
        unique: false,
        min_len: 0,
        max_len: None,
        check: &schema::host_def,
    };
    Ok(schema::strings(o, name, &rules)?.map(|l| Hosts::new(&l)))
}

impl NativePlugin for RefererRestriction {
    fn name(&self) -> &'static str {
        "referer-restriction"
    }

    fn priority(&self) -> i64 {
        2990
    }

    fn phases(&self) -> PhaseSet {
        phases(&[Phase::Access])
    }

    fn prepare(&self, v: &Value) -> Result<Prepared, String> {
        let o = schema::object(v)?;
        let bypass_missing = schema::boolean(o, "bypass_missing")?.unwrap_or(false);
        let message = schema::string(o, "message", 1, Some(1024))?
            .unwrap_or("Your referer host is not allowed");
        let whitelist = hosts(o, "whitelist")?;
        let blacklist = hosts(o, "blacklist")?;
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
            bypass_missing,
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
        let referer = req
            .header(http::header::REFERER.as_str())
            .and_then(|v| v.to_str().ok());
        let blocked = match referer.and_then(referer_host) {
            None => !c.bypass_missing,
            Some(host) => match &c.list {
                List::Allow(h) => !h.matches(host),
                List::Deny(h) => h.matches(host),
            },
        };
        Ok(blocked.then(|| Answer {
            status: 403,
            body: Some(c.body.clone()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_referer_host_is_found_as_resty_http_finds_it() {
        assert_eq!(
            referer_host("http://a.example.com/x?y"),
            Some("a.example.com")
        );
        assert_eq!(referer_host("https://b.test:8443/"), Some("b.test"));
        assert_eq!(referer_host("//c.test"), Some("c.test"));
        assert_eq!(referer_host("http://[::1]:80/"), Some("[::1]"));
        assert_eq!(referer_host("ftp://d.test/"), None);
        assert_eq!(referer_host("not a url"), None);
        assert_eq!(referer_host("http:///path"), None);
    }

    #[test]
    fn wildcards_match_suffixes_only() {
        let h = Hosts::new(&["*.example.com".into(), "exact.test".into()]);
        assert!(h.matches("a.example.com"));
        assert!(!h.matches("example.com"));
        assert!(h.matches("exact.test"));
        assert!(!h.matches("sub.exact.test"));
    }

    #[test]
    fn bad_host_patterns_are_refused() {
        let e = RefererRestriction
            .check_conf(&json!({"whitelist": ["a b"]}))
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("property \"whitelist\" validation failed: failed to validate item 1: failed to match pattern"), "{e}");
    }
}
