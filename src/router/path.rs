//! The path index: exact paths in a hash map, prefixes in a radix tree that yields every stored
//! prefix of a request path, deepest first, without allocating.
//!
//! Parameter paths (`/user/:id`, `/files/*rest`) are stored under their literal prefix (the part
//! before the first `:` or `*`), so they take part in the longest-prefix order by that prefix, as
//! lua-resty-radixtree stores them, and then must match the whole path.
//!
//! Both halves are persistent: a clone shares everything, and inserting or removing one route
//! copies only the nodes on that route's paths ([`PMap`] for exact paths, `Arc` nodes with
//! path copying for the tree). A config change therefore updates the router of a new snapshot
//! in time proportional to the route's paths, not to the number of routes, while requests keep
//! matching against the previous snapshot's router untouched.

use std::cmp::Ordering;
use std::sync::Arc;

use super::Filters;
use crate::pmap::PMap;

/// One way a path can be matched by a route.
#[derive(Debug, Clone)]
pub struct Cand {
    /// The route's filters (and its slot in the route table).
    pub filters: Arc<Filters>,
    pub priority: i64,
    /// Length of the uri as configured: among equal priorities the longer uri is tried first, as
    /// lua-resty-radixtree orders a node's routes (`/user/:id/books/:book` before `/user/:id`).
    pub uri_len: usize,
    /// The route's position in the config (load order), the last tie-breaker.
    pub order: usize,
    /// Which of the route's `uris` this candidate is (APISIX's `curr_req_matched._path`).
    pub uri_pos: u16,
    /// Segments to check for parameter paths.
    pub pattern: Option<Arc<Pattern>>,
}

impl Cand {
    /// Candidates of one path are tried by priority (high first), then configured uri length
    /// (long first), then config order.
    fn precedence(&self, b: &Cand) -> Ordering {
        b.priority
            .cmp(&self.priority)
            .then(b.uri_len.cmp(&self.uri_len))
            .then(self.order.cmp(&b.order))
    }

    fn same_route(&self, filters: &Arc<Filters>) -> bool {
        Arc::ptr_eq(&self.filters, filters)
    }
}

/// Inserts `c` after every candidate that goes before or ties with it.
fn insert_sorted(list: &mut Vec<Cand>, c: Cand) {
    let at = list.partition_point(|x| x.precedence(&c) != Ordering::Greater);
    list.insert(at, c);
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

#[derive(Debug, Clone, Default)]
struct Node {
    label: Box<[u8]>,
    /// First byte of each child's label, sorted, parallel to `children`.
    first: Vec<u8>,
    children: Vec<Arc<Node>>,
    cands: Vec<Cand>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.cands.is_empty() && self.children.is_empty()
    }
}

/// Exact paths and a prefix radix tree.
#[derive(Debug, Clone, Default)]
pub struct PathIndex {
    exact: PMap<Box<str>, Vec<Cand>>,
    root: Arc<Node>,
}

impl PathIndex {
    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.root.is_empty()
    }

    pub fn insert_exact(&mut self, path: &str, c: Cand) {
        match self.exact.get_mut(path) {
            Some(list) => insert_sorted(list, c),
            None => {
                self.exact.insert(path.into(), vec![c]);
            }
        }
    }

    /// Removes the candidates of the route with `filters` stored at `path`.
    pub fn remove_exact(&mut self, path: &str, filters: &Arc<Filters>) {
        let Some(list) = self.exact.get(path) else {
            return;
        };
        if !list.iter().any(|c| c.same_route(filters)) {
            return;
        }
        let left: Vec<Cand> = list
            .iter()
            .filter(|c| !c.same_route(filters))
            .cloned()
            .collect();
        if left.is_empty() {
            self.exact.remove(path);
        } else {
            self.exact.insert(path.into(), left);
        }
    }

    pub fn insert_prefix(&mut self, key: &[u8], c: Cand) {
        insert_prefix(&mut self.root, key, c);
    }

    /// Removes the candidates of the route with `filters` stored at prefix `key`.
    pub fn remove_prefix(&mut self, key: &[u8], filters: &Arc<Filters>) {
        if self.holds_prefix(key, filters) {
            remove_prefix(&mut self.root, key, filters);
        }
    }

    /// The route is stored at exactly `key` (checked before a removal copies any node).
    fn holds_prefix(&self, key: &[u8], filters: &Arc<Filters>) -> bool {
        let mut n: &Node = &self.root;
        let mut rest = key;
        while !rest.is_empty() {
            let Ok(i) = n.first.binary_search(&rest[0]) else {
                return false;
            };
            let child = &n.children[i];
            if !rest.starts_with(&child.label) {
                return false;
            }
            rest = &rest[child.label.len()..];
            n = child;
        }
        n.cands.iter().any(|c| c.same_route(filters))
    }

    pub fn exact(&self, path: &str) -> Option<&[Cand]> {
        self.exact.get(path).map(Vec::as_slice)
    }

    /// Calls `f` with the candidate lists of every stored prefix of `path`, longest first, until
    /// `f` returns `Some`.
    pub fn prefixes<T>(&self, path: &str, mut f: impl FnMut(&[Cand]) -> Option<T>) -> Option<T> {
        let p = path.as_bytes();
        // Paths deeper than this many stored prefixes are rare; the fallback allocates.
        let mut stack: [Option<&Node>; 32] = [None; 32];
        let mut depth = 0usize;
        let mut spill: Vec<&Node> = Vec::new();
        let mut n: &Node = &self.root;
        if !n.cands.is_empty() {
            stack[0] = Some(n);
            depth = 1;
        }
        let mut pos = 0usize;
        while pos < p.len() {
            let Ok(i) = n.first.binary_search(&p[pos]) else {
                break;
            };
            let child: &Node = &n.children[i];
            let label = &child.label;
            if !p[pos..].starts_with(label) {
                break;
            }
            pos += label.len();
            n = child;
            if !n.cands.is_empty() {
                if depth < stack.len() {
                    stack[depth] = Some(n);
                } else {
                    spill.push(n);
                }
                depth += 1;
            }
        }
        for k in (0..depth).rev() {
            let node = if k < stack.len() {
                stack[k]
            } else {
                spill.get(k - stack.len()).copied()
            };
            if let Some(node) = node
                && let Some(t) = f(&node.cands)
            {
                return Some(t);
            }
        }
        None
    }
}

fn insert_prefix(node: &mut Arc<Node>, rest: &[u8], c: Cand) {
    let n = Arc::make_mut(node);
    if rest.is_empty() {
        insert_sorted(&mut n.cands, c);
        return;
    }
    let pos = match n.first.binary_search(&rest[0]) {
        Err(pos) => {
            n.first.insert(pos, rest[0]);
            n.children.insert(
                pos,
                Arc::new(Node {
                    label: rest.into(),
                    cands: vec![c],
                    ..Node::default()
                }),
            );
            return;
        }
        Ok(pos) => pos,
    };
    let label = &n.children[pos].label;
    let common = label.iter().zip(rest).take_while(|(a, b)| a == b).count();
    if common < label.len() {
        // Split the child's edge at `common`: a new node holds the shared part.
        let mut child = n.children[pos].clone();
        let tail: Box<[u8]> = child.label[common..].into();
        let head: Box<[u8]> = child.label[..common].into();
        Arc::make_mut(&mut child).label = tail;
        let child_first = child.label[0];
        n.children[pos] = Arc::new(Node {
            label: head,
            first: vec![child_first],
            children: vec![child],
            cands: Vec::new(),
        });
    }
    insert_prefix(&mut n.children[pos], &rest[common..], c);
}

fn remove_prefix(node: &mut Arc<Node>, rest: &[u8], filters: &Arc<Filters>) {
    let n = Arc::make_mut(node);
    if rest.is_empty() {
        n.cands.retain(|c| !c.same_route(filters));
        return;
    }
    let Ok(pos) = n.first.binary_search(&rest[0]) else {
        return;
    };
    let len = n.children[pos].label.len();
    remove_prefix(&mut n.children[pos], &rest[len..], filters);
    let child = &n.children[pos];
    if child.is_empty() {
        n.first.remove(pos);
        n.children.remove(pos);
    } else if child.cands.is_empty() && child.children.len() == 1 {
        // A node left with no routes and one child merges with it, as a fresh build has it.
        let grand = child.children[0].clone();
        let mut label = child.label.to_vec();
        label.extend_from_slice(&grand.label);
        let mut merged = grand;
        Arc::make_mut(&mut merged).label = label.into();
        n.children[pos] = merged;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(route: u32) -> Cand {
        Cand {
            filters: Arc::new(Filters {
                index: route as usize,
                methods: 0,
                remote_addrs: Default::default(),
                vars: None,
                uris: Box::default(),
            }),
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
        let mut seen = Vec::new();
        let _: Option<()> = idx.prefixes("/abc/def", |c| {
            seen.push(c[0].filters.index);
            None
        });
        assert_eq!(seen, vec![3, 2, 1, 0]);
        seen.clear();
        let _: Option<()> = idx.prefixes("/x", |c| {
            seen.push(c[0].filters.index);
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
