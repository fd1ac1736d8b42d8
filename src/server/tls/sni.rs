//! The certificate index a snapshot carries: server names to compiled `ssls` entries.
//!
//! Lookups follow APISIX's router: an exact name first, then the longest wildcard whose
//! suffix the name ends with (`*.example.com` serves `a.example.com` and `a.b.example.com`,
//! not `example.com`), then a bare `*`. Items with `status: 0` are left out; of two items
//! naming the same SNI, the one with the smaller id wins, so the choice does not depend on
//! the order changes arrive in.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::entry::SslEntry;
use crate::config::resource::Id;
use crate::config::ssl::SslType;

/// The immutable index; a new one is built when an `ssls` item changes.
#[derive(Debug, Default)]
pub struct SslIndex {
    /// Exact names.
    exact: HashMap<String, Arc<SslEntry>>,
    /// Wildcards by the suffix after `*` (`.example.com`).
    wildcard: HashMap<String, Arc<SslEntry>>,
    /// A `*` SNI: every name.
    any: Option<Arc<SslEntry>>,
    /// Every compiled item by id, `type: client` ones included (`upstream.tls.client_cert_id`).
    by_id: HashMap<Id, Arc<SslEntry>>,
}

/// What a lookup found.
pub enum Lookup {
    Found(Arc<SslEntry>),
    /// No item serves this name.
    Missing,
}

impl SslIndex {
    /// The index of `entries` (compiled items by id).
    pub fn new(entries: &BTreeMap<Id, Arc<SslEntry>>) -> SslIndex {
        let mut idx = SslIndex::default();
        for (id, e) in entries {
            idx.by_id.insert(id.clone(), e.clone());
            if e.ssl.kind != SslType::Server || !e.ssl.enabled {
                continue;
            }
            for sni in &e.ssl.snis {
                // BTreeMap order: the smaller id is seen first and kept.
                if sni == "*" {
                    idx.any.get_or_insert_with(|| e.clone());
                } else if let Some(suffix) = sni.strip_prefix('*') {
                    idx.wildcard
                        .entry(suffix.to_string())
                        .or_insert_with(|| e.clone());
                } else {
                    idx.exact.entry(sni.clone()).or_insert_with(|| e.clone());
                }
            }
        }
        idx
    }

    /// No item serves any name.
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.is_none()
    }

    /// The entry serving `name` (already lower-case, no trailing dot).
    pub fn lookup(&self, name: &str) -> Lookup {
        if let Some(e) = self.exact.get(name) {
            return Lookup::Found(e.clone());
        }
        // Longest suffix first: walk the dots from the left.
        let mut at = 0;
        while let Some(dot) = name[at..].find('.') {
            let suffix = &name[at + dot..];
            if at + dot > 0
                && let Some(e) = self.wildcard.get(suffix)
            {
                return Lookup::Found(e.clone());
            }
            at += dot + 1;
        }
        match &self.any {
            Some(e) => Lookup::Found(e.clone()),
            None => Lookup::Missing,
        }
    }

    /// The item with `id`, whatever its type (for `client_cert_id`).
    pub fn get(&self, id: &Id) -> Option<&Arc<SslEntry>> {
        self.by_id.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(id: &str, snis: &[&str]) -> (Id, Arc<SslEntry>) {
        let ck = rcgen::generate_simple_self_signed(vec!["x.test".to_string()]).unwrap();
        let ssl = crate::config::ssl::check(&json!({
            "cert": ck.cert.pem(), "key": ck.signing_key.serialize_pem(), "snis": snis,
        }))
        .unwrap();
        let id = Id(id.to_string());
        (id.clone(), Arc::new(SslEntry::compile(id, ssl).unwrap()))
    }

    fn found(idx: &SslIndex, name: &str) -> Option<String> {
        match idx.lookup(name) {
            Lookup::Found(e) => Some(e.id.0.clone()),
            Lookup::Missing => None,
        }
    }

    #[test]
    fn exact_then_longest_wildcard_then_any() {
        let mut m = BTreeMap::new();
        for (id, snis) in [
            ("1", &["www.test.com"][..]),
            ("2", &["*.test.com"][..]),
            ("3", &["*.api.test.com"][..]),
        ] {
            let (k, v) = entry(id, snis);
            m.insert(k, v);
        }
        let idx = SslIndex::new(&m);
        assert_eq!(found(&idx, "www.test.com").as_deref(), Some("1"));
        assert_eq!(found(&idx, "a.test.com").as_deref(), Some("2"));
        assert_eq!(found(&idx, "a.b.test.com").as_deref(), Some("2"));
        assert_eq!(found(&idx, "v1.api.test.com").as_deref(), Some("3"));
        assert_eq!(found(&idx, "test.com"), None);
        assert_eq!(found(&idx, "other.org"), None);
        let (k, v) = entry("4", &["*"]);
        m.insert(k, v);
        let idx = SslIndex::new(&m);
        assert_eq!(found(&idx, "other.org").as_deref(), Some("4"));
    }
}
