//! The path index: exact paths in a hash map, prefixes in a radix tree that yields every stored
//! prefix of a request path, deepest first, without allocating.
//!
//! Parameter paths (`/user/:id`, `/files/*rest`) are stored under their literal prefix (the part
//! before the first `:` or `*`), so they take part in the longest-prefix order by that prefix, as
//! lua-resty-radixtree stores them, and then must match the whole path.

use std::collections::HashMap;

/// One way a path can be matched by a route.
#[derive(Debug, Clone)]
pub struct Cand {
    /// Slot of the route in the router's table.
    pub route: u32,
    pub priority: i64,
    /// Length of the uri as configured: among equal priorities the longer uri is tried first, as
    /// lua-resty-radixtree orders a node's routes (`/user/:id/books/:book` before `/user/:id`).
    pub uri_len: usize,
    /// Route-table position, the last tie-breaker.
    pub order: usize,
    /// Which of the route's `uris` this candidate is (APISIX's `curr_req_matched._path`).
    pub uri_pos: u16,
    /// Segments to check for parameter paths.
    pub pattern: Option<Box<Pattern>>,
}

/// A path with `:name` segments and/or a trailing `*name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pattern {
    segs: Vec<Seg>,
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Param(String),
    /// The rest of the path (possibly empty); `None` for a bare `*`.
    Rest(Option<String>),
}

/// How a configured uri is stored.
#[derive(Debug, Clone, PartialEq)]
pub enum UriKind {
    Exact(String),
    Prefix(String),
    Param { prefix: String, pattern: Pattern },
}

/// Classifies a configured uri; `Err` says what is wrong with it.
///
/// The split follows lua-resty-radixtree, so that configs written for APISIX keep their meaning:
/// the literal part of a uri ends at its first `:` or, when it has none, at its first `*`. A uri
/// with neither is exact; `/foo*` (and the catch-all `*`) is a plain prefix. Otherwise the segments
/// that start with `:` or `*` are parameters and the whole path must match them; when no segment
/// starts with one (`/v1/model:predict`, `/a*b`), radixtree checks nothing beyond the literal part,
/// so neither do we: the route is a plain prefix up to that character.
pub fn classify(uri: &str) -> Result<UriKind, String> {
    if uri == "*" {
        return Ok(UriKind::Prefix(String::new()));
    }
    if !uri.starts_with('/') {
        return Err(format!(
            "uri {uri:?} must start with \"/\" (a request path always does, so it could never match)"
        ));
    }
    let Some(cut) = uri.find(':').or_else(|| uri.find('*')) else {
        return Ok(UriKind::Exact(uri.to_string()));
    };
    let prefix = uri[..cut].to_string();
    if cut + 1 == uri.len() && uri.ends_with('*') {
        return Ok(UriKind::Prefix(prefix));
    }
    let mut segs = Vec::new();
    let parts: Vec<&str> = uri[1..].split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        let last = i + 1 == parts.len();
        if let Some(name) = p.strip_prefix(':') {
            if name.is_empty() {
                return Err(format!("uri {uri:?}: empty parameter name after `:`"));
            }
            segs.push(Seg::Param(name.to_string()));
        } else if let Some(name) = p.strip_prefix('*') {
            if !last {
                return Err(format!(
                    "uri {uri:?}: `*{name}` must be the last segment (it takes the rest of the path)"
                ));
            }
            segs.push(Seg::Rest((!name.is_empty()).then(|| name.to_string())));
        } else {
            segs.push(Seg::Lit(p.to_string()));
        }
    }
    if segs.iter().all(|s| matches!(s, Seg::Lit(_))) {
        return Ok(UriKind::Prefix(prefix));
    }
    Ok(UriKind::Param {
        prefix,
        pattern: Pattern { segs },
    })
}

impl Pattern {
    /// Matches the whole path; captured parameters go to `out` (nothing is left there on failure).
    pub fn matches(&self, path: &str, out: &mut Vec<(String, String)>) -> bool {
        let Some(mut rest) = path.strip_prefix('/') else {
            return false;
        };
        let start = out.len();
        // Set once the last path segment has been consumed.
        let mut exhausted = false;
        for seg in &self.segs {
            if exhausted {
                // Every pattern segment, `*` included, stands after a `/` the path no longer has:
                // `/user/:id/*` needs `/user/1/`, not `/user/1` (as radixtree's regex does).
                out.truncate(start);
                return false;
            }
            if let Seg::Rest(name) = seg {
                if let Some(n) = name {
                    out.push((n.clone(), rest.to_string()));
                }
                return true;
            }
            let (head, tail) = match rest.find('/') {
                Some(j) => (&rest[..j], Some(&rest[j + 1..])),
                None => (rest, None),
            };
            let ok = match seg {
                Seg::Lit(l) => head == l,
                Seg::Param(n) if !head.is_empty() => {
                    out.push((n.clone(), head.to_string()));
                    true
                }
                _ => false,
            };
            if !ok {
                out.truncate(start);
                return false;
            }
            match tail {
                Some(t) => rest = t,
                None => exhausted = true,
            }
        }
        if !exhausted {
            out.truncate(start);
        }
        exhausted
    }
}

#[derive(Debug, Default)]
struct Node {
    label: Vec<u8>,
    /// First byte of each child's label, sorted, parallel to `children`.
    first: Vec<u8>,
    children: Vec<u32>,
    cands: Vec<Cand>,
}

/// Exact paths and a prefix radix tree.
#[derive(Debug)]
pub struct PathIndex {
    exact: HashMap<Box<str>, Vec<Cand>>,
    nodes: Vec<Node>,
}

impl Default for PathIndex {
    fn default() -> Self {
        PathIndex {
            exact: HashMap::new(),
            nodes: vec![Node::default()],
        }
    }
}

impl PathIndex {
    pub fn insert_exact(&mut self, path: &str, c: Cand) {
        self.exact.entry(path.into()).or_default().push(c);
    }

    pub fn insert_prefix(&mut self, key: &[u8], c: Cand) {
        let mut n = 0usize;
        let mut rest = key;
        loop {
            if rest.is_empty() {
                self.nodes[n].cands.push(c);
                return;
            }
            let slot = self.nodes[n].first.binary_search(&rest[0]);
            match slot {
                Err(pos) => {
                    let id = self.nodes.len() as u32;
                    self.nodes.push(Node {
                        label: rest.to_vec(),
                        cands: vec![c],
                        ..Node::default()
                    });
                    self.nodes[n].first.insert(pos, rest[0]);
                    self.nodes[n].children.insert(pos, id);
                    return;
                }
                Ok(pos) => {
                    let child = self.nodes[n].children[pos] as usize;
                    let label = &self.nodes[child].label;
                    let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
                    if common == label.len() {
                        n = child;
                        rest = &rest[common..];
                        continue;
                    }
                    // Split the child's edge at `common`.
                    let mid = self.nodes.len() as u32;
                    let tail = self.nodes[child].label.split_off(common);
                    let head = std::mem::replace(&mut self.nodes[child].label, tail);
                    let child_first = self.nodes[child].label[0];
                    self.nodes.push(Node {
                        label: head,
                        first: vec![child_first],
                        children: vec![child as u32],
                        cands: Vec::new(),
                    });
                    self.nodes[n].children[pos] = mid;
                    n = mid as usize;
                    rest = &rest[common..];
                }
            }
        }
    }

    /// Orders every candidate list by priority (high first), then configured uri length (long
    /// first), then route-table order.
    pub fn finish(&mut self) {
        let order = |a: &Cand, b: &Cand| {
            b.priority
                .cmp(&a.priority)
                .then(b.uri_len.cmp(&a.uri_len))
                .then(a.order.cmp(&b.order))
        };
        for v in self.exact.values_mut() {
            v.sort_by(order);
        }
        for n in &mut self.nodes {
            n.cands.sort_by(order);
        }
    }

    pub fn exact(&self, path: &str) -> Option<&[Cand]> {
        self.exact.get(path).map(Vec::as_slice)
    }

    /// Calls `f` with the candidate lists of every stored prefix of `path`, longest first, until
    /// `f` returns `Some`.
    pub fn prefixes<T>(&self, path: &str, mut f: impl FnMut(&[Cand]) -> Option<T>) -> Option<T> {
        let p = path.as_bytes();
        // Paths deeper than this many stored prefixes are rare; the fallback allocates.
        let mut stack = [0u32; 32];
        let mut depth = 0usize;
        let mut spill: Vec<u32> = Vec::new();
        let mut push = |id: u32, depth: &mut usize| {
            if *depth < stack.len() {
                stack[*depth] = id;
            } else {
                spill.push(id);
            }
            *depth += 1;
        };
        if !self.nodes[0].cands.is_empty() {
            push(0, &mut depth);
        }
        let mut n = 0usize;
        let mut pos = 0usize;
        while pos < p.len() {
            let node = &self.nodes[n];
            let Ok(i) = node.first.binary_search(&p[pos]) else {
                break;
            };
            let child = node.children[i] as usize;
            let label = &self.nodes[child].label;
            if p.len() - pos < label.len() || &p[pos..pos + label.len()] != label.as_slice() {
                break;
            }
            pos += label.len();
            n = child;
            if !self.nodes[n].cands.is_empty() {
                push(n as u32, &mut depth);
            }
        }
        for k in (0..depth).rev() {
            let id = if k < stack.len() {
                stack[k]
            } else {
                spill[k - stack.len()]
            };
            if let Some(t) = f(&self.nodes[id as usize].cands) {
                return Some(t);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(route: u32) -> Cand {
        Cand {
            route,
            priority: 0,
            uri_len: 0,
            order: route as usize,
            uri_pos: 0,
            pattern: None,
        }
    }

    #[test]
    fn prefixes_come_longest_first() {
        let mut idx = PathIndex::default();
        for (i, k) in ["/", "/a", "/ab", "/abc/d", "/b"].iter().enumerate() {
            idx.insert_prefix(k.as_bytes(), cand(i as u32));
        }
        idx.finish();
        let mut seen = Vec::new();
        let _: Option<()> = idx.prefixes("/abc/def", |c| {
            seen.push(c[0].route);
            None
        });
        assert_eq!(seen, vec![3, 2, 1, 0]);
        seen.clear();
        let _: Option<()> = idx.prefixes("/x", |c| {
            seen.push(c[0].route);
            None
        });
        assert_eq!(seen, vec![0]);
    }

    #[test]
    fn classify_tells_exact_prefix_and_param_paths_apart() {
        assert_eq!(classify("/a").unwrap(), UriKind::Exact("/a".into()));
        assert_eq!(classify("/a*").unwrap(), UriKind::Prefix("/a".into()));
        assert_eq!(classify("/*").unwrap(), UriKind::Prefix("/".into()));
        assert!(
            matches!(classify("/u/:id").unwrap(), UriKind::Param { prefix, .. } if prefix == "/u/")
        );
        assert_eq!(classify("*").unwrap(), UriKind::Prefix(String::new()));
        assert!(classify("a").is_err());
        assert!(classify("/a/*rest/b").is_err());
        assert!(classify("/a/:/b").is_err());
    }

    #[test]
    fn colons_and_stars_inside_a_segment_cut_a_plain_prefix_like_radixtree() {
        assert_eq!(
            classify("/v1/models/gemini:generate").unwrap(),
            UriKind::Prefix("/v1/models/gemini".into())
        );
        assert_eq!(classify("/a*/b").unwrap(), UriKind::Prefix("/a".into()));
        assert!(matches!(
            classify("/v1/:model/x:y").unwrap(),
            UriKind::Param { prefix, .. } if prefix == "/v1/"
        ));
    }

    #[test]
    fn a_trailing_star_after_a_parameter_needs_the_slash_before_it() {
        let UriKind::Param { pattern, .. } = classify("/user/:id/*").unwrap() else {
            panic!()
        };
        let mut out = Vec::new();
        assert!(!pattern.matches("/user/1", &mut out));
        assert!(out.is_empty());
        assert!(pattern.matches("/user/1/", &mut out));
        assert!(pattern.matches("/user/1/a/b", &mut out));
        assert_eq!(
            out,
            vec![
                ("id".to_string(), "1".to_string()),
                ("id".to_string(), "1".to_string())
            ]
        );
    }

    #[test]
    fn param_patterns_match_whole_segments() {
        let UriKind::Param { pattern, .. } = classify("/user/:id/books/:book").unwrap() else {
            panic!()
        };
        let mut out = Vec::new();
        assert!(pattern.matches("/user/7/books/x", &mut out));
        assert_eq!(
            out,
            vec![("id".into(), "7".into()), ("book".into(), "x".into())]
        );
        out.clear();
        assert!(!pattern.matches("/user/7/books", &mut out));
        assert!(!pattern.matches("/user//books/x", &mut out));
        assert!(!pattern.matches("/user/7/books/x/y", &mut out));
        assert!(out.is_empty());
        let UriKind::Param { pattern, .. } = classify("/files/*path").unwrap() else {
            panic!()
        };
        assert!(pattern.matches("/files/a/b/c", &mut out));
        assert_eq!(out, vec![("path".into(), "a/b/c".into())]);
    }
}
