//! `virtual_hosts[]` and their `routes[]` as moongate routes, with Envoy's selection order.
//!
//! Envoy picks one virtual host by the request's host (exact domain, then the longest `*.suffix`
//! wildcard, then the longest `prefix.*` wildcard, then `*`) and takes the first of its routes
//! that matches, in file order; when none does, it answers 404 without trying another virtual
//! host. moongate's router orders candidates on one path by `priority`, so every route gets the
//! path `/*` and a priority made of its domain's rank and its position, and its match conditions
//! (path, headers, query, host) become `vars` rules. Each virtual host ends with a catch-all
//! route answering 404, so a request never falls through to a wider virtual host.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use super::cluster::Cluster;
use super::tree::{Report, enum_name, index, join};
use crate::config::resource::{
    FixedAnswer, Id, PluginMap, PrefixRewrite, RedirectAction, Route, RouteAction, Timeout,
};

/// Envoy's route timeout when a route sets none.
pub const DEFAULT_ROUTE_TIMEOUT: f64 = 15.0;
/// A route timeout of 0 disables it; moongate's timeouts are finite, so: a day.
const NO_TIMEOUT: f64 = 86_400.0;
/// Routes per virtual host; the position takes this many priority steps.
const MAX_ROUTES: usize = 9_999;
const STEP: i64 = 10_000;

/// The filter metadata key the plugins sit under.
pub const LUA_FILTER: &str = "envoy.filters.http.lua";

/// Routes made from one route configuration, with the YAML path of each, by route id.
#[derive(Debug, Default)]
pub struct Built {
    pub routes: Vec<Route>,
    pub paths: HashMap<String, String>,
}

/// How a domain selects requests, and its rank in Envoy's precedence (higher first).
enum Domain {
    Exact(Vec<String>),
    ExactWithPort(String),
    Suffix(String),
    Prefix(String),
    Any,
}

impl Domain {
    fn rank(&self) -> i64 {
        match self {
            Domain::Exact(_) | Domain::ExactWithPort(_) => 3_000_000,
            Domain::Suffix(s) => 2_000_000 + s.len() as i64,
            Domain::Prefix(p) => 1_000_000 + p.len() as i64,
            Domain::Any => 0,
        }
    }

    fn rule(&self) -> Option<Value> {
        match self {
            Domain::Exact(names) => Some(json!(["host", "in", names])),
            Domain::ExactWithPort(d) => {
                Some(json!(["http_host", "~*", format!("^{}$", escape(d))]))
            }
            Domain::Suffix(s) => Some(json!(["host", "~*", format!("^.+{}$", escape(s))])),
            Domain::Prefix(p) => Some(json!(["host", "~*", format!("^{}.+$", escape(p))])),
            Domain::Any => None,
        }
    }

    fn label(&self) -> String {
        match self {
            Domain::Exact(n) => n.first().cloned().unwrap_or_default(),
            Domain::ExactWithPort(d) => d.clone(),
            Domain::Suffix(s) => format!("*{s}"),
            Domain::Prefix(p) => format!("{p}*"),
            Domain::Any => "*".into(),
        }
    }
}

/// Escapes a literal for a PCRE pattern.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if "\\^$.|?*+()[]{}/".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Groups a virtual host's domains by how they select: exact names together, each wildcard
/// on its own.
fn domains(
    r: &mut Report,
    list: &[Value],
    path: &str,
    seen: &mut HashMap<String, String>,
) -> Vec<Domain> {
    let mut exact = Vec::new();
    let mut out = Vec::new();
    for (i, d) in list.iter().enumerate() {
        let dpath = index(path, i);
        let Some(d) = r.string(d, &dpath) else {
            continue;
        };
        let d = d.to_ascii_lowercase();
        if let Some(first) = seen.insert(d.clone(), dpath.clone()) {
            r.error(
                &dpath,
                format!("only unique values for domains are permitted: {d:?} is also at {first}"),
            );
            continue;
        }
        let stars = d.matches('*').count();
        let domain = if d == "*" {
            Domain::Any
        } else if stars == 0 {
            if (d.contains(':') && !d.starts_with('[')) || d.contains("]:") {
                Domain::ExactWithPort(d)
            } else {
                exact.push(d);
                continue;
            }
        } else if stars == 1 && d.len() > 1 && d.starts_with('*') {
            Domain::Suffix(d[1..].to_string())
        } else if stars == 1 && d.len() > 1 && d.ends_with('*') {
            Domain::Prefix(d[..d.len() - 1].to_string())
        } else {
            r.error(
                &dpath,
                format!("invalid domain {d:?}: a wildcard is only allowed as the first or the last character"),
            );
            continue;
        };
        out.push(domain);
    }
    if !exact.is_empty() {
        out.insert(0, Domain::Exact(exact));
    }
    out
}

/// The parts of one Envoy route, before they are copied per domain.
struct Parsed {
    name: Option<String>,
    rules: Vec<Value>,
    /// The literal the path must start with (`prefix`, `path`), for rewrites.
    literal_prefix: Option<String>,
    plugins: PluginMap,
    target: Target,
    path: String,
}

enum Target {
    Cluster {
        upstream_id: String,
        retries: Option<u32>,
        timeout: Timeout,
        prefix_rewrite: Option<String>,
        host_rewrite: Option<String>,
    },
    Answer(FixedAnswer),
}

/// Reads the virtual hosts of one route configuration.
pub fn virtual_hosts(
    r: &mut Report,
    list: &[Value],
    path: &str,
    clusters: &HashMap<String, Cluster>,
    listener_port: Option<u16>,
    built: &mut Built,
) {
    let mut seen_domains = HashMap::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    for (vi, vh) in list.iter().enumerate() {
        let vpath = index(path, vi);
        let Some(vm) = r.obj(vh, &vpath) else {
            continue;
        };
        r.unknown_keys(
            vm,
            &vpath,
            &["name", "domains", "routes", "typed_per_filter_config"],
        );
        let vname = match vm.get("name") {
            Some(n) => r.string(n, &join(&vpath, "name")).unwrap_or("").to_string(),
            None => {
                r.error(&join(&vpath, "name"), "a virtual host needs a name");
                continue;
            }
        };
        *names.entry(vname.clone()).or_default() += 1;
        if names[&vname] > 1 {
            r.error(
                &join(&vpath, "name"),
                format!("duplicate virtual host name {vname:?}"),
            );
        }
        let vh_lua_off = match vm.get("typed_per_filter_config") {
            Some(t) => per_filter_config(r, t, &join(&vpath, "typed_per_filter_config")),
            None => false,
        };
        let dpath = join(&vpath, "domains");
        let dlist = r.list(vm.get("domains"), &dpath);
        if dlist.is_empty() {
            r.error(&dpath, "a virtual host needs at least one domain");
            continue;
        }
        let doms = domains(r, dlist, &dpath, &mut seen_domains);
        let rpath = join(&vpath, "routes");
        let rlist = r.list(vm.get("routes"), &rpath);
        if rlist.len() > MAX_ROUTES {
            r.error(
                &rpath,
                format!("at most {MAX_ROUTES} routes per virtual host"),
            );
            continue;
        }
        let mut parsed = Vec::new();
        for (ri, rv) in rlist.iter().enumerate() {
            if let Some(p) = route(r, rv, &index(&rpath, ri), clusters, vh_lua_off) {
                parsed.push(p);
            }
        }
        let many = doms.len() > 1;
        for d in &doms {
            let mut common = Vec::new();
            if let Some(port) = listener_port {
                common.push(json!(["server_port", "==", port.to_string()]));
            }
            if let Some(rule) = d.rule() {
                common.push(rule);
            }
            let mut suffix = if many {
                format!("@{}", d.label())
            } else {
                String::new()
            };
            // Route ids are unique across listeners too (the snapshot keys routes by id).
            if let Some(port) = listener_port {
                suffix.push_str(&format!(":{port}"));
            }
            for (i, p) in parsed.iter().enumerate() {
                let base = p.name.clone().unwrap_or_else(|| format!("{vname}#{i}"));
                let id = format!("{base}{suffix}");
                let mut vars = common.clone();
                vars.extend(p.rules.iter().cloned());
                let priority = d.rank() * STEP + (MAX_ROUTES - i) as i64;
                built.paths.insert(id.clone(), p.path.clone());
                built.routes.push(to_route(id, p, vars, priority, clusters));
            }
            // Nothing in this virtual host matched: Envoy answers 404 here.
            let id = format!("{vname}#no-route{suffix}");
            built.paths.insert(id.clone(), vpath.clone());
            built.routes.push(Route {
                id: Some(Id(id)),
                uris: vec!["/*".into()],
                vars: (!common.is_empty()).then(|| Value::Array(common.clone())),
                priority: d.rank() * STEP + (MAX_ROUTES - parsed.len()) as i64,
                status: 1,
                action: RouteAction {
                    answer: Some(FixedAnswer::Direct {
                        status: 404,
                        body: String::new(),
                    }),
                    ..RouteAction::default()
                },
                ..Route::default()
            });
        }
    }
}

fn to_route(
    id: String,
    p: &Parsed,
    vars: Vec<Value>,
    priority: i64,
    clusters: &HashMap<String, Cluster>,
) -> Route {
    let mut route = Route {
        id: Some(Id(id)),
        name: p.name.clone(),
        uris: vec!["/*".into()],
        vars: (!vars.is_empty()).then_some(Value::Array(vars)),
        priority,
        status: 1,
        plugins: p.plugins.clone(),
        ..Route::default()
    };
    match &p.target {
        Target::Cluster {
            upstream_id,
            retries,
            timeout,
            prefix_rewrite,
            host_rewrite,
        } => {
            // A retry policy is per route in Envoy and per upstream in moongate: such a route
            // gets its own copy of the cluster (and its own balancer state).
            match (retries, clusters.get(upstream_id)) {
                (Some(n), Some(c)) => {
                    let mut up = c.upstream.clone();
                    up.id = None;
                    up.retries = Some(*n);
                    route.upstream = Some(up);
                }
                _ => route.upstream_id = Some(Id(upstream_id.clone())),
            }
            route.timeout = Some(*timeout);
            route.action = RouteAction {
                prefix_rewrite: prefix_rewrite.as_ref().map(|rep| PrefixRewrite {
                    prefix: p.literal_prefix.clone().unwrap_or_default(),
                    replacement: rep.clone(),
                }),
                host_rewrite: host_rewrite.clone(),
                answer: None,
            };
        }
        Target::Answer(a) => route.action.answer = Some(a.clone()),
    }
    route
}

/// `typed_per_filter_config`: the Lua filter's `LuaPerRoute` is accepted; `disabled: true`
/// turns the route's plugins off. Returns whether it did.
fn per_filter_config(r: &mut Report, v: &Value, path: &str) -> bool {
    let Some(m) = r.obj(v, path) else {
        return false;
    };
    let mut off = false;
    for (k, cfg) in m {
        let kpath = join(path, k);
        if k != LUA_FILTER && !k.ends_with(".lua") {
            r.ignored(&kpath, "only the Lua filter's per-route config is read");
            continue;
        }
        let Some(c) = r.obj(cfg, &kpath) else {
            continue;
        };
        r.unknown_keys(c, &kpath, &["@type", "name", "disabled", "source_code"]);
        if c.contains_key("source_code") {
            r.ignored(
                &join(&kpath, "source_code"),
                "Envoy Lua code is not run; moongate runs the plugins named in the route metadata",
            );
        }
        if let Some(d) = c.get("disabled") {
            off = r.boolean(d, &join(&kpath, "disabled")).unwrap_or(false);
        }
    }
    off
}

fn route(
    r: &mut Report,
    v: &Value,
    path: &str,
    clusters: &HashMap<String, Cluster>,
    lua_off: bool,
) -> Option<Parsed> {
    let m = r.obj(v, path)?;
    r.unknown_keys(
        m,
        path,
        &[
            "name",
            "match",
            "route",
            "direct_response",
            "redirect",
            "metadata",
            "typed_per_filter_config",
        ],
    );
    let name = match m.get("name") {
        Some(n) => Some(r.string(n, &join(path, "name"))?.to_string()),
        None => None,
    };
    let mpath = join(path, "match");
    let Some(mv) = m.get("match") else {
        r.error(&mpath, "a route needs a match");
        return None;
    };
    let (rules, literal_prefix, is_regex) = route_match(r, mv, &mpath)?;
    let actions: Vec<&str> = ["route", "direct_response", "redirect"]
        .into_iter()
        .filter(|k| m.contains_key(*k))
        .collect();
    if actions.len() != 1 {
        r.error(
            path,
            format!(
                "a route needs exactly one of route, direct_response, redirect (found {})",
                if actions.is_empty() {
                    "none".to_string()
                } else {
                    actions.join(", ")
                }
            ),
        );
        return None;
    }
    let target = match actions[0] {
        "route" => cluster_action(r, &m["route"], &join(path, "route"), clusters, is_regex)?,
        "direct_response" => {
            direct_response(r, &m["direct_response"], &join(path, "direct_response"))?
        }
        _ => redirect(
            r,
            &m["redirect"],
            &join(path, "redirect"),
            literal_prefix.as_deref(),
            is_regex,
        )?,
    };
    let mut off = lua_off;
    if let Some(t) = m.get("typed_per_filter_config") {
        off = per_filter_config(r, t, &join(path, "typed_per_filter_config")) || off;
    }
    let plugins = match m.get("metadata") {
        Some(md) => metadata(r, md, &join(path, "metadata"))?,
        None => PluginMap::new(),
    };
    Some(Parsed {
        name,
        rules,
        literal_prefix,
        plugins: if off { PluginMap::new() } else { plugins },
        target,
        path: path.to_string(),
    })
}

/// `match`: the path condition and the header and query conditions, as `vars` rules. Also the
/// literal prefix (for rewrites) and whether the path is a regex.
fn route_match(
    r: &mut Report,
    v: &Value,
    path: &str,
) -> Option<(Vec<Value>, Option<String>, bool)> {
    let m = r.obj(v, path)?;
    const PATHS: [&str; 4] = ["prefix", "path", "safe_regex", "path_separated_prefix"];
    for k in m.keys() {
        if !PATHS.contains(&k.as_str())
            && !["headers", "query_parameters", "case_sensitive"].contains(&k.as_str())
        {
            r.error(
                &join(path, k),
                "this match condition is not supported; ignoring it would send requests to a route they do not match",
            );
        }
    }
    let case_sensitive = match m.get("case_sensitive") {
        Some(c) => r.boolean(c, &join(path, "case_sensitive"))?,
        None => true,
    };
    let op = if case_sensitive { "~~" } else { "~*" };
    let given: Vec<&str> = PATHS.into_iter().filter(|k| m.contains_key(*k)).collect();
    if given.len() != 1 {
        r.error(
            path,
            "a match needs exactly one of prefix, path, safe_regex, path_separated_prefix",
        );
        return None;
    }
    let key = given[0];
    let kpath = join(path, key);
    let mut rules = Vec::new();
    let mut literal = None;
    let mut is_regex = false;
    match key {
        "prefix" => {
            let p = r.string(&m[key], &kpath)?;
            if !p.is_empty() && p != "/" || !case_sensitive {
                rules.push(json!(["uri", op, format!("^{}", escape(p))]));
            }
            literal = Some(p.to_string());
        }
        "path_separated_prefix" => {
            let p = r.string(&m[key], &kpath)?;
            if !p.starts_with('/') || p.ends_with('/') || p.contains(['?', '#']) {
                r.error(
                    &kpath,
                    "must start with / and not end with / nor hold ? or #",
                );
                return None;
            }
            rules.push(json!(["uri", op, format!("^{}(?:/|$)", escape(p))]));
            literal = Some(p.to_string());
        }
        "path" => {
            let p = r.string(&m[key], &kpath)?;
            if case_sensitive {
                rules.push(json!(["uri", "==", p]));
            } else {
                rules.push(json!(["uri", "~*", format!("^{}$", escape(p))]));
            }
            literal = Some(p.to_string());
        }
        _ => {
            let re = regex_of(r, &m[key], &kpath)?;
            rules.push(json!(["uri", op, format!("^(?:{re})$")]));
            is_regex = true;
        }
    }
    let hpath = join(path, "headers");
    for (i, h) in r.list(m.get("headers"), &hpath).iter().enumerate() {
        rules.push(header_rule(r, h, &index(&hpath, i), false)?);
    }
    let qpath = join(path, "query_parameters");
    for (i, q) in r.list(m.get("query_parameters"), &qpath).iter().enumerate() {
        rules.push(header_rule(r, q, &index(&qpath, i), true)?);
    }
    Some((rules, literal, is_regex))
}

/// `safe_regex: {regex}` (the `google_re2` engine marker is accepted).
fn regex_of(r: &mut Report, v: &Value, path: &str) -> Option<String> {
    let m = r.obj(v, path)?;
    r.unknown_keys(m, path, &["regex", "google_re2"]);
    let Some(re) = m.get("regex") else {
        r.error(&join(path, "regex"), "a safe_regex needs a regex");
        return None;
    };
    let re = r.string(re, &join(path, "regex"))?;
    if let Err(e) = pcre2::bytes::RegexBuilder::new().build(re) {
        r.error(&join(path, "regex"), format!("invalid regex: {e}"));
        return None;
    }
    Some(re.to_string())
}

/// One `headers[]` or `query_parameters[]` entry as a `vars` rule.
fn header_rule(r: &mut Report, v: &Value, path: &str, query: bool) -> Option<Value> {
    let m = r.obj(v, path)?;
    let header_keys = [
        "name",
        "exact_match",
        "string_match",
        "present_match",
        "invert_match",
        "prefix_match",
        "suffix_match",
        "contains_match",
        "safe_regex_match",
    ];
    let query_keys = ["name", "string_match", "present_match"];
    let known: &[&str] = if query { &query_keys } else { &header_keys };
    for k in m.keys() {
        if !known.contains(&k.as_str()) {
            r.error(
                &join(path, k),
                "this match condition is not supported; ignoring it would send requests to a route they do not match",
            );
        }
    }
    let Some(name) = m.get("name") else {
        r.error(&join(path, "name"), "a name is required");
        return None;
    };
    let name = r.string(name, &join(path, "name"))?.to_string();
    let var = if query {
        format!("arg_{name}")
    } else {
        match name.to_ascii_lowercase().as_str() {
            ":method" => "request_method".to_string(),
            ":authority" | "host" => "http_host".to_string(),
            ":path" => "request_uri".to_string(),
            ":scheme" => "scheme".to_string(),
            n => format!("http_{}", n.replace('-', "_")),
        }
    };
    let lit = |s: &str| escape(s);
    let (op, pattern): (&str, String) = if let Some(x) = m.get("exact_match") {
        ("==", r.string(x, &join(path, "exact_match"))?.to_string())
    } else if let Some(x) = m.get("prefix_match") {
        (
            "~~",
            format!("^{}", lit(r.string(x, &join(path, "prefix_match"))?)),
        )
    } else if let Some(x) = m.get("suffix_match") {
        (
            "~~",
            format!("{}$", lit(r.string(x, &join(path, "suffix_match"))?)),
        )
    } else if let Some(x) = m.get("contains_match") {
        ("~~", lit(r.string(x, &join(path, "contains_match"))?))
    } else if let Some(x) = m.get("safe_regex_match") {
        (
            "~~",
            format!("^(?:{})$", regex_of(r, x, &join(path, "safe_regex_match"))?),
        )
    } else if let Some(x) = m.get("string_match") {
        string_match(r, x, &join(path, "string_match"))?
    } else if let Some(x) = m.get("present_match") {
        let present = r.boolean(x, &join(path, "present_match"))?;
        let rule = if present {
            json!([var, "~~", ""])
        } else {
            json!([var, "!", "~~", ""])
        };
        return Some(invert(r, m, path, rule));
    } else {
        // No matcher: the header must be present.
        ("~~", String::new())
    };
    Some(invert(r, m, path, json!([var, op, pattern])))
}

fn invert(r: &mut Report, m: &Map<String, Value>, path: &str, rule: Value) -> Value {
    let inverted = m
        .get("invert_match")
        .and_then(|v| r.boolean(v, &join(path, "invert_match")))
        .unwrap_or(false);
    if !inverted {
        return rule;
    }
    match rule.as_array().map(|a| a.as_slice()) {
        Some([var, neg, op, val]) if neg == "!" => json!([var, op, val]),
        Some([var, op, val]) => json!([var, "!", op, val]),
        _ => rule,
    }
}

/// `string_match: {exact | prefix | suffix | contains | safe_regex, ignore_case}`.
fn string_match(r: &mut Report, v: &Value, path: &str) -> Option<(&'static str, String)> {
    let m = r.obj(v, path)?;
    let kinds = ["exact", "prefix", "suffix", "contains", "safe_regex"];
    for k in m.keys() {
        if !kinds.contains(&k.as_str()) && k != "ignore_case" {
            r.error(&join(path, k), "this string matcher is not supported");
            return None;
        }
    }
    let ignore_case = match m.get("ignore_case") {
        Some(b) => r.boolean(b, &join(path, "ignore_case"))?,
        None => false,
    };
    let given: Vec<&str> = kinds.into_iter().filter(|k| m.contains_key(*k)).collect();
    if given.len() != 1 {
        r.error(
            path,
            "a string_match needs exactly one of exact, prefix, suffix, contains, safe_regex",
        );
        return None;
    }
    let k = given[0];
    let kpath = join(path, k);
    let op = if ignore_case { "~*" } else { "~~" };
    if k == "safe_regex" {
        // Envoy ignores ignore_case for regexes.
        return Some(("~~", format!("^(?:{})$", regex_of(r, &m[k], &kpath)?)));
    }
    let s = escape(r.string(&m[k], &kpath)?);
    Some(match k {
        "exact" if !ignore_case => ("==", m[k].as_str().unwrap_or("").to_string()),
        "exact" => (op, format!("^{s}$")),
        "prefix" => (op, format!("^{s}")),
        "suffix" => (op, format!("{s}$")),
        _ => (op, s),
    })
}

/// `route: {cluster, prefix_rewrite, host_rewrite_literal, timeout, retry_policy}`.
fn cluster_action(
    r: &mut Report,
    v: &Value,
    path: &str,
    clusters: &HashMap<String, Cluster>,
    is_regex: bool,
) -> Option<Target> {
    let m = r.obj(v, path)?;
    for k in [
        "weighted_clusters",
        "cluster_header",
        "cluster_specifier_plugin",
        "regex_rewrite",
    ] {
        if m.contains_key(k) {
            r.error(&join(path, k), "not supported by moongate's envoy provider");
            return None;
        }
    }
    r.unknown_keys(
        m,
        path,
        &[
            "cluster",
            "prefix_rewrite",
            "host_rewrite_literal",
            "timeout",
            "retry_policy",
        ],
    );
    let cpath = join(path, "cluster");
    let Some(c) = m.get("cluster") else {
        r.error(&cpath, "a route needs a cluster");
        return None;
    };
    let name = r.string(c, &cpath)?.to_string();
    let Some(cluster) = clusters.get(&name) else {
        r.error(&cpath, format!("unknown cluster {name:?}"));
        return None;
    };
    let prefix_rewrite = match m.get("prefix_rewrite") {
        Some(_) if is_regex => {
            r.error(
                &join(path, "prefix_rewrite"),
                "prefix_rewrite needs a prefix or path match, not safe_regex",
            );
            return None;
        }
        Some(p) => Some(r.string(p, &join(path, "prefix_rewrite"))?.to_string()),
        None => None,
    };
    let host_rewrite = match m.get("host_rewrite_literal") {
        Some(h) => Some(
            r.string(h, &join(path, "host_rewrite_literal"))?
                .to_string(),
        ),
        None => None,
    };
    let t = match m.get("timeout") {
        Some(t) => r.duration(t, &join(path, "timeout"))?,
        None => DEFAULT_ROUTE_TIMEOUT,
    };
    let t = if t == 0.0 { NO_TIMEOUT } else { t };
    let retries = match m.get("retry_policy") {
        Some(rp) => Some(retry_policy(r, rp, &join(path, "retry_policy"))?),
        None => None,
    };
    Some(Target::Cluster {
        upstream_id: name,
        retries,
        timeout: Timeout {
            connect: cluster.connect_timeout,
            send: t,
            read: t,
        },
        prefix_rewrite,
        host_rewrite,
    })
}

/// `retry_policy: {num_retries (default 1), retry_on}`.
fn retry_policy(r: &mut Report, v: &Value, path: &str) -> Option<u32> {
    let m = r.obj(v, path)?;
    r.unknown_keys(m, path, &["num_retries", "retry_on"]);
    if let Some(on) = m.get("retry_on") {
        r.string(on, &join(path, "retry_on"))?;
    }
    match m.get("num_retries") {
        Some(n) => Some(r.uint(n, &join(path, "num_retries"), 100)? as u32),
        None => Some(1),
    }
}

fn direct_response(r: &mut Report, v: &Value, path: &str) -> Option<Target> {
    let m = r.obj(v, path)?;
    r.unknown_keys(m, path, &["status", "body"]);
    let spath = join(path, "status");
    let Some(s) = m.get("status") else {
        r.error(&spath, "a direct_response needs a status");
        return None;
    };
    let status = r.uint(s, &spath, 599)? as u16;
    if status < 200 {
        r.error(&spath, "a status must be between 200 and 599");
        return None;
    }
    let body = match m.get("body") {
        None => String::new(),
        Some(b) => {
            let bpath = join(path, "body");
            let b = r.obj(b, &bpath)?;
            r.unknown_keys(b, &bpath, &["inline_string", "filename"]);
            if let Some(s) = b.get("inline_string") {
                r.string(s, &join(&bpath, "inline_string"))?.to_string()
            } else if let Some(f) = b.get("filename") {
                let fpath = join(&bpath, "filename");
                let f = r.string(f, &fpath)?;
                match std::fs::read_to_string(f) {
                    Ok(t) => t,
                    Err(e) => {
                        r.error(&fpath, format!("cannot read {f}: {e}"));
                        return None;
                    }
                }
            } else {
                String::new()
            }
        }
    };
    Some(Target::Answer(FixedAnswer::Direct { status, body }))
}

fn redirect(
    r: &mut Report,
    v: &Value,
    path: &str,
    literal_prefix: Option<&str>,
    is_regex: bool,
) -> Option<Target> {
    let m = r.obj(v, path)?;
    if m.contains_key("regex_rewrite") {
        r.error(
            &join(path, "regex_rewrite"),
            "not supported by moongate's envoy provider",
        );
        return None;
    }
    r.unknown_keys(
        m,
        path,
        &[
            "scheme_redirect",
            "https_redirect",
            "host_redirect",
            "port_redirect",
            "path_redirect",
            "prefix_rewrite",
            "strip_query",
            "response_code",
        ],
    );
    let text = |r: &mut Report, k: &str| -> Option<Option<String>> {
        match m.get(k) {
            Some(x) => Some(Some(r.string(x, &join(path, k))?.to_string())),
            None => Some(None),
        }
    };
    let mut scheme = text(r, "scheme_redirect")?;
    if let Some(h) = m.get("https_redirect")
        && r.boolean(h, &join(path, "https_redirect"))?
    {
        scheme = Some("https".into());
    }
    let host = text(r, "host_redirect")?;
    let port = match m.get("port_redirect") {
        Some(p) => Some(r.uint(p, &join(path, "port_redirect"), u16::MAX as u64)? as u16),
        None => None,
    };
    let path_redirect = text(r, "path_redirect")?;
    let prefix = text(r, "prefix_rewrite")?;
    if prefix.is_some() && (is_regex || path_redirect.is_some()) {
        r.error(
            &join(path, "prefix_rewrite"),
            "prefix_rewrite needs a prefix or path match and no path_redirect",
        );
        return None;
    }
    let strip_query = match m.get("strip_query") {
        Some(s) => r.boolean(s, &join(path, "strip_query"))?,
        None => false,
    };
    let status = match m.get("response_code") {
        None => 301,
        Some(c) => {
            let cpath = join(path, "response_code");
            match enum_name(r.string(c, &cpath)?).as_str() {
                "MOVED_PERMANENTLY" => 301,
                "FOUND" => 302,
                "SEE_OTHER" => 303,
                "TEMPORARY_REDIRECT" => 307,
                "PERMANENT_REDIRECT" => 308,
                other => {
                    r.error(&cpath, format!("unknown response_code {other}"));
                    return None;
                }
            }
        }
    };
    Some(Target::Answer(FixedAnswer::Redirect(RedirectAction {
        status,
        scheme,
        host,
        port,
        path: path_redirect,
        prefix_rewrite: prefix.map(|replacement| PrefixRewrite {
            prefix: literal_prefix.unwrap_or("").to_string(),
            replacement,
        }),
        strip_query,
    })))
}

/// `metadata.filter_metadata["envoy.filters.http.lua"].plugins: [{name, conf}]`.
fn metadata(r: &mut Report, v: &Value, path: &str) -> Option<PluginMap> {
    let m = r.obj(v, path)?;
    r.unknown_keys(m, path, &["filter_metadata"]);
    let mut plugins = PluginMap::new();
    let Some(fm) = m.get("filter_metadata") else {
        return Some(plugins);
    };
    let fpath = join(path, "filter_metadata");
    let fm = r.obj(fm, &fpath)?;
    for (k, val) in fm {
        let kpath = format!("{fpath}[\"{k}\"]");
        if k != LUA_FILTER {
            r.ignored(&kpath, "only the Lua filter's metadata carries plugins");
            continue;
        }
        let Some(lm) = r.obj(val, &kpath) else {
            continue;
        };
        r.unknown_keys(lm, &kpath, &["plugins"]);
        let ppath = join(&kpath, "plugins");
        for (i, p) in r.list(lm.get("plugins"), &ppath).iter().enumerate() {
            let ipath = index(&ppath, i);
            let Some(pm) = r.obj(p, &ipath) else { continue };
            r.unknown_keys(pm, &ipath, &["name", "conf"]);
            let Some(name) = pm.get("name") else {
                r.error(&join(&ipath, "name"), "a plugin needs a name");
                continue;
            };
            let Some(name) = r.string(name, &join(&ipath, "name")) else {
                continue;
            };
            let conf = match pm.get("conf") {
                None | Some(Value::Null) => json!({}),
                Some(c) => c.clone(),
            };
            if plugins.insert(name.to_string(), conf).is_some() {
                r.error(
                    &join(&ipath, "name"),
                    format!("plugin {name} is listed twice"),
                );
            }
        }
    }
    Some(plugins)
}
