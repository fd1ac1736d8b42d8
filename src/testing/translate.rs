//! Config translation: a block's nginx snippets and YAML sections become moongate files.
//!
//! `--- config` locations become gateway routes that run their `*_by_lua_block` code through
//! moongate's `lua_handlers` (priority above every user route, so they win as nginx locations
//! win over APISIX's `location /`); `--- http_config` `server {}` blocks become listeners of the
//! test upstream process with routes bound to their port; `yaml_config`/`extra_yaml_config`
//! merge into `config.yaml`. A directive with no moongate meaning is an [`Unsupported`] reason,
//! which skips the block: a test is never run against a config it did not ask for.

use serde_json::{Map, Value as Json, json};

use super::nginx::{self, Directive};

/// Why a block cannot be run as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

fn unsupported<T>(msg: impl Into<String>) -> Result<T, Unsupported> {
    Err(Unsupported(msg.into()))
}

/// Routes from nginx locations sort before any APISIX route on the same path.
pub const LOCATION_PRIORITY: i64 = 1 << 40;

const PHASES: [(&str, &str); 6] = [
    ("rewrite_by_lua", "rewrite_by_lua"),
    ("access_by_lua", "access_by_lua"),
    ("content_by_lua", "content_by_lua"),
    ("header_filter_by_lua", "header_filter_by_lua"),
    ("body_filter_by_lua", "body_filter_by_lua"),
    ("log_by_lua", "log_by_lua"),
];

/// A Lua string literal holding `s` (long brackets need no escaping rules).
pub fn lua_str(s: &str) -> String {
    let mut level = 0;
    while s.contains(&format!("]{}]", "=".repeat(level))) {
        level += 1;
    }
    let eq = "=".repeat(level);
    // A long string drops a first newline; a leading one is kept by doubling it.
    let lead = if s.starts_with('\n') { "\n" } else { "" };
    format!("[{eq}[{lead}{s}]{eq}]")
}

/// An nginx string with `$var` / `${var}` as a Lua expression reading `ngx.var`.
fn nginx_value_to_lua(s: &str) -> String {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            let (name, next) = if b.get(i + 1) == Some(&b'{') {
                match s[i + 2..].find('}') {
                    Some(end) => (&s[i + 2..i + 2 + end], i + 3 + end),
                    None => ("", i + 1),
                }
            } else {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                (&s[i + 1..j], j)
            };
            if !name.is_empty() {
                if !lit.is_empty() {
                    parts.push(lua_str(&std::mem::take(&mut lit)));
                }
                parts.push(format!("(ngx.var[ {} ] or \"\")", lua_str(name)));
                i = next;
                continue;
            }
        }
        lit.push(b[i] as char);
        i += 1;
    }
    if !lit.is_empty() || parts.is_empty() {
        parts.push(lua_str(&lit));
    }
    parts.join(" .. ")
}

#[derive(Debug, Default, Clone, PartialEq)]
struct Handlers {
    code: Map<String, Json>,
    header_lines: Vec<String>,
    default_type: Option<String>,
    read_body: bool,
    upstream: Option<(String, Option<String>)>,
    /// realip directives of the location (see [`take_location_real_ip`]).
    real_ip: Vec<(&'static str, Json)>,
}

fn add_handler(h: &mut Handlers, phase: &str, code: String) -> Result<(), Unsupported> {
    if h.code.contains_key(phase) {
        return unsupported(format!("two {phase}_block directives in one location"));
    }
    h.code.insert(phase.to_string(), Json::String(code));
    Ok(())
}

/// A realip directive (`set_real_ip_from`, `real_ip_header`, `real_ip_recursive`) as the
/// gateway's `nginx_config.http.real_ip_*` setting; `set_real_ip_from` lines add up.
fn push_real_ip(
    out: &mut Vec<(&'static str, Json)>,
    d: &Directive,
    place: &str,
) -> Result<(), Unsupported> {
    match (d.name.as_str(), d.args.as_slice()) {
        ("set_real_ip_from", [addr]) => match out.iter_mut().find(|(k, _)| *k == "real_ip_from") {
            Some((_, Json::Array(list))) => list.push(json!(addr)),
            _ => out.push(("real_ip_from", json!([addr]))),
        },
        ("real_ip_header", [h]) => out.push(("real_ip_header", json!(h))),
        ("real_ip_recursive", [v]) if v == "on" || v == "off" => {
            out.push(("real_ip_recursive", json!(v)))
        }
        (name, _) => return unsupported(format!("{place}: {name} {}", d.args.join(" "))),
    }
    Ok(())
}

/// The key under which a translated location carries its realip directives to the runner,
/// which makes them the gateway's (see [`take_location_real_ip`]).
const LOCATION_REAL_IP: &str = "_moongate_real_ip";

/// Removes the realip directives translated locations carry and returns them: nginx applies
/// them to that location only, moongate's realip is the gateway's, so a block's locations
/// that use them set it for the block's gateway.
pub fn take_location_real_ip(routes: &mut [Json]) -> Vec<(&'static str, Json)> {
    let mut out: Vec<(&'static str, Json)> = Vec::new();
    for r in routes.iter_mut() {
        let Some(Json::Array(list)) = r.as_object_mut().and_then(|o| o.remove(LOCATION_REAL_IP))
        else {
            continue;
        };
        for pair in list {
            let (Some(k), Some(v)) = (pair.get(0).and_then(Json::as_str), pair.get(1)) else {
                continue;
            };
            let key = match k {
                "real_ip_from" => "real_ip_from",
                "real_ip_header" => "real_ip_header",
                "real_ip_recursive" => "real_ip_recursive",
                _ => continue,
            };
            match (key, out.iter_mut().find(|(x, _)| *x == key)) {
                ("real_ip_from", Some((_, Json::Array(have)))) => {
                    if let Json::Array(more) = v {
                        have.extend(more.iter().cloned());
                    }
                }
                (_, Some((_, have))) => *have = v.clone(),
                (_, None) => out.push((key, v.clone())),
            }
        }
    }
    out
}

/// `location [=|~|~*|^~] PATH` as a route `uri` (+ `vars` for regex locations).
fn location_match(args: &[String]) -> Result<(String, Option<Json>), Unsupported> {
    match args {
        [path] => Ok((format!("{}*", path.trim_end_matches('*')), None)),
        [op, path] if op == "=" => Ok((path.clone(), None)),
        [op, path] if op == "^~" => Ok((format!("{path}*"), None)),
        [op, re] if op == "~" || op == "~*" => {
            let op = if op == "~" { "~~" } else { "~*" };
            Ok(("/*".to_string(), Some(json!([["uri", op, re]]))))
        }
        _ => unsupported(format!("location {}: unsupported form", args.join(" "))),
    }
}

fn location_handlers(children: &[Directive], path: &str) -> Result<Handlers, Unsupported> {
    let mut h = Handlers::default();
    for d in children {
        let name = d.name.as_str();
        if let Some(lua) = &d.lua {
            let phase = name.trim_end_matches("_block");
            if !PHASES.iter().any(|(p, _)| *p == phase) {
                return unsupported(format!("directive {name} is not supported by the runner"));
            }
            add_handler(&mut h, phase, lua.clone())?;
            continue;
        }
        match name {
            "content_by_lua"
            | "access_by_lua"
            | "rewrite_by_lua"
            | "header_filter_by_lua"
            | "body_filter_by_lua"
            | "log_by_lua" => match d.args.as_slice() {
                [code] => add_handler(&mut h, name, code.clone())?,
                _ => return unsupported(format!("{name} needs one argument")),
            },
            "return" => {
                let code = match d.args.first().map(|c| c.parse::<u16>()) {
                    Some(Ok(c)) => c,
                    _ => {
                        return unsupported(format!("return {}: no status code", d.args.join(" ")));
                    }
                };
                let lua = match (code, d.args.get(1)) {
                    (301 | 302 | 303 | 307 | 308, Some(url)) => {
                        format!("return ngx.redirect({}, {code})", nginx_value_to_lua(url))
                    }
                    (_, Some(text)) => format!(
                        "ngx.status = {code}\nngx.print({})\nreturn ngx.exit({code})",
                        nginx_value_to_lua(text)
                    ),
                    (_, None) => format!("return ngx.exit({code})"),
                };
                add_handler(&mut h, "content_by_lua", lua)?;
            }
            "proxy_pass" => {
                let [url] = d.args.as_slice() else {
                    return unsupported("proxy_pass needs one URL");
                };
                if url.contains('$') {
                    return unsupported(format!("proxy_pass {url}: variables in proxy_pass"));
                }
                let Some(rest) = url.strip_prefix("http://") else {
                    return unsupported(format!("proxy_pass {url}: only http:// upstreams"));
                };
                let (host, uri) = match rest.find('/') {
                    Some(i) => (&rest[..i], Some(rest[i..].to_string())),
                    None => (rest, None),
                };
                let host = if host.contains(':') {
                    host.to_string()
                } else {
                    format!("{host}:80")
                };
                h.upstream = Some((host, uri));
            }
            "default_type" => h.default_type = d.args.first().cloned(),
            "more_set_headers" | "add_header" => {
                let pairs: Vec<(String, String)> = if name == "add_header" {
                    match d.args.as_slice() {
                        [k, v] => vec![(k.clone(), v.clone())],
                        [k, v, a] if a == "always" => vec![(k.clone(), v.clone())],
                        _ => return unsupported(format!("add_header {}", d.args.join(" "))),
                    }
                } else {
                    let mut out = Vec::new();
                    for a in &d.args {
                        if a.starts_with('-') {
                            return unsupported(format!("more_set_headers option {a}"));
                        }
                        let Some((k, v)) = a.split_once(':') else {
                            return unsupported(format!("more_set_headers {a:?}: no ':'"));
                        };
                        out.push((k.trim().to_string(), v.trim().to_string()));
                    }
                    out
                };
                for (k, v) in pairs {
                    h.header_lines.push(format!(
                        "ngx.header[ {} ] = {}",
                        lua_str(&k),
                        nginx_value_to_lua(&v)
                    ));
                }
            }
            "more_clear_headers" => {
                for a in &d.args {
                    h.header_lines
                        .push(format!("ngx.header[ {} ] = nil", lua_str(a)));
                }
            }
            "lua_need_request_body" => h.read_body = d.args.first().is_some_and(|a| a == "on"),
            "set_real_ip_from" | "real_ip_header" | "real_ip_recursive" => {
                push_real_ip(&mut h.real_ip, d, &format!("location {path}"))?
            }
            // Directives that change nothing moongate's answer depends on.
            "server_tokens"
            | "access_log"
            | "lua_code_cache"
            | "client_body_buffer_size"
            | "client_max_body_size"
            | "proxy_http_version"
            | "proxy_set_header"
            | "lua_socket_log_errors"
            | "log_subrequest" => {}
            other => {
                return unsupported(format!(
                    "location {path}: nginx directive `{other}` has no moongate translation"
                ));
            }
        }
    }
    Ok(h)
}

/// One nginx `location` as a moongate route.
fn location_route(
    d: &Directive,
    id: String,
    vars_extra: Option<Json>,
) -> Result<Json, Unsupported> {
    let children = d.children.as_deref().unwrap_or_default();
    let (uri, vars) = location_match(&d.args)?;
    let path = d.args.last().cloned().unwrap_or_default();
    let mut h = location_handlers(children, &path)?;
    let mut route = Map::new();
    route.insert("id".into(), json!(id));
    route.insert("uri".into(), json!(uri));
    route.insert("priority".into(), json!(LOCATION_PRIORITY));
    let mut rules: Vec<Json> = Vec::new();
    if let Some(Json::Array(v)) = vars {
        rules.extend(v);
    }
    if let Some(Json::Array(v)) = vars_extra {
        rules.extend(v);
    }
    if !rules.is_empty() {
        route.insert("vars".into(), Json::Array(rules));
    }
    if h.read_body {
        let prev = h
            .code
            .remove("rewrite_by_lua")
            .and_then(|c| c.as_str().map(str::to_string));
        let code = format!("ngx.req.read_body()\n{}", prev.unwrap_or_default());
        h.code.insert("rewrite_by_lua".into(), json!(code));
    }
    if let (Some(t), Some(Json::String(c))) = (&h.default_type, h.code.get_mut("content_by_lua")) {
        *c = format!("ngx.header[\"Content-Type\"] = {}\n{c}", lua_str(t));
    }
    if !h.header_lines.is_empty() {
        let prev = h
            .code
            .remove("header_filter_by_lua")
            .and_then(|c| c.as_str().map(str::to_string))
            .unwrap_or_default();
        let code = format!("{}\n{prev}", h.header_lines.join("\n"));
        h.code.insert("header_filter_by_lua".into(), json!(code));
    }
    match (&h.upstream, h.code.contains_key("content_by_lua")) {
        (Some(_), true) => {
            return unsupported(format!(
                "location {path}: both proxy_pass and a content handler"
            ));
        }
        (Some((host, uri)), false) => {
            route.insert(
                "upstream".into(),
                json!({"type": "roundrobin", "nodes": {host.as_str(): 1}}),
            );
            if let Some(target) = uri {
                // nginx replaces the matched location prefix with the proxy_pass path; a query
                // in proxy_pass comes first, the client's arguments after it.
                let prefix = path.trim_end_matches('*');
                let (target_path, target_args) = match target.split_once('?') {
                    Some((p, a)) => (p.to_string(), Some(a.to_string())),
                    None => (target.to_string(), None),
                };
                let args_code = match target_args {
                    Some(a) => format!(
                        "local a = ngx.var.args\nngx.req.set_uri_args(a and a ~= '' and ({0} .. '&' .. a) or {0})\n",
                        lua_str(&a)
                    ),
                    None => String::new(),
                };
                let code = format!(
                    "local u = ngx.var.uri\nlocal p = {}\nif u:sub(1, #p) == p then ngx.req.set_uri({} .. u:sub(#p + 1)) end\n{args_code}{}",
                    lua_str(prefix),
                    lua_str(&target_path),
                    h.code
                        .remove("rewrite_by_lua")
                        .and_then(|c| c.as_str().map(str::to_string))
                        .unwrap_or_default()
                );
                h.code.insert("rewrite_by_lua".into(), json!(code));
            }
        }
        (None, false)
            if h.code.contains_key("access_by_lua") || h.code.contains_key("rewrite_by_lua") =>
        {
            // nginx's static handler would look for a file under the test's html directory,
            // which holds none: a request the Lua lets through gets its 404.
            h.code.insert(
                "content_by_lua".into(),
                json!("ngx.exit(ngx.HTTP_NOT_FOUND)"),
            );
        }
        (None, false) => {
            return unsupported(format!(
                "location {path}: no content handler and no proxy_pass (nginx would serve files)"
            ));
        }
        (None, true) => {}
    }
    if !h.real_ip.is_empty() {
        route.insert(
            LOCATION_REAL_IP.into(),
            Json::Array(h.real_ip.iter().map(|(k, v)| json!([k, v])).collect()),
        );
    }
    route.insert("lua_handlers".into(), Json::Object(h.code));
    Ok(Json::Object(route))
}

/// `--- config`: the locations added to the gateway's server on the test port.
pub fn config_locations(snippet: &str) -> Result<Vec<Json>, Unsupported> {
    let dirs = nginx::parse(snippet).map_err(|e| Unsupported(format!("--- config: {e}")))?;
    let mut routes = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        match d.name.as_str() {
            "location" => routes.push(location_route(
                d,
                format!("moongate-test-location-{i}"),
                None,
            )?),
            "server_tokens" | "access_log" | "lua_socket_log_errors" => {}
            other => {
                return unsupported(format!(
                    "--- config: server-level directive `{other}` has no moongate translation"
                ));
            }
        }
    }
    Ok(routes)
}

/// `--- http_config`: mock servers, as (ports, routes bound to their port), and shared dicts.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct HttpConfig {
    pub ports: Vec<u16>,
    pub routes: Vec<Json>,
    pub shared_dicts: Vec<(String, String)>,
    /// The realip directives (`set_real_ip_from`, `real_ip_header`, `real_ip_recursive`), as
    /// `nginx_config.http` keys of the gateway's config.yaml (APISIX renders them from there).
    pub real_ip: Vec<(&'static str, Json)>,
}

pub fn http_config(snippet: &str) -> Result<HttpConfig, Unsupported> {
    let dirs = nginx::parse(snippet).map_err(|e| Unsupported(format!("--- http_config: {e}")))?;
    let mut out = HttpConfig::default();
    for (si, d) in dirs.iter().enumerate() {
        match d.name.as_str() {
            "server" => {
                let children = d.children.as_deref().unwrap_or_default();
                let mut ports = Vec::new();
                for c in children.iter().filter(|c| c.name == "listen") {
                    let addr = c.args.first().cloned().unwrap_or_default();
                    if c.args
                        .iter()
                        .skip(1)
                        .any(|a| a == "ssl" || a == "http2" || a == "quic")
                    {
                        return unsupported(format!(
                            "http_config: listen {}: TLS/HTTP2 mock servers",
                            c.args.join(" ")
                        ));
                    }
                    let port = addr.rsplit(':').next().unwrap_or_default();
                    match port.parse::<u16>() {
                        Ok(p) => ports.push(p),
                        Err(_) => return unsupported(format!("http_config: listen {addr}")),
                    }
                }
                if ports.is_empty() {
                    return unsupported("http_config: a server without listen");
                }
                let vars = json!([[
                    "server_port",
                    "in",
                    ports.iter().map(|p| p.to_string()).collect::<Vec<_>>()
                ]]);
                let mut li = 0;
                for c in children {
                    match c.name.as_str() {
                        "listen" | "server_name" | "server_tokens" | "access_log" => {}
                        "location" => {
                            out.routes.push(location_route(
                                c,
                                format!("moongate-test-http-{si}-{li}"),
                                Some(vars.clone()),
                            )?);
                            li += 1;
                        }
                        other => {
                            return unsupported(format!(
                                "http_config server: directive `{other}` has no moongate translation"
                            ));
                        }
                    }
                }
                out.ports.extend(ports);
            }
            "lua_shared_dict" => match d.args.as_slice() {
                [name, size] => out.shared_dicts.push((name.clone(), size.clone())),
                _ => return unsupported("http_config: lua_shared_dict NAME SIZE"),
            },
            "server_tokens" | "lua_socket_log_errors" => {}
            "set_real_ip_from" | "real_ip_header" | "real_ip_recursive" => {
                push_real_ip(&mut out.real_ip, d, "http_config")?
            }
            other => {
                return unsupported(format!(
                    "http_config: directive `{other}` has no moongate translation"
                ));
            }
        }
    }
    Ok(out)
}

/// Deep-merges YAML mappings: `over` wins, mappings merge key by key.
/// `--- main_config`: the environment nginx's `env` directive gives the workers.
/// `env NAME=VALUE;` sets `NAME`; `env NAME;` keeps the runner's own `NAME` (moongate's
/// workers keep the process environment, so that one needs nothing). Any other main-context
/// directive has no moongate meaning.
pub fn main_config(snippet: &str) -> Result<Vec<(String, String)>, Unsupported> {
    let dirs = nginx::parse(snippet).map_err(|e| Unsupported(format!("--- main_config: {e}")))?;
    let mut env = Vec::new();
    for d in &dirs {
        if d.name != "env" || d.children.is_some() || d.args.len() != 1 {
            return unsupported(format!(
                "main_config: nginx directive `{}` has no moongate translation",
                d.name
            ));
        }
        if let Some((name, value)) = d.args[0].split_once('=') {
            env.push((name.to_string(), value.to_string()));
        }
    }
    Ok(env)
}

pub fn merge_yaml(base: &mut serde_norway::Value, over: serde_norway::Value) {
    use serde_norway::Value as Y;
    match (base, over) {
        (Y::Mapping(b), Y::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge_yaml(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_config_env_directives_become_the_gateways_environment() {
        assert_eq!(
            main_config("env test_auth=authone;\nenv HOME;\n").unwrap(),
            vec![("test_auth".to_string(), "authone".to_string())]
        );
        assert_eq!(
            main_config("worker_rlimit_nofile 100;").unwrap_err().0,
            "main_config: nginx directive `worker_rlimit_nofile` has no moongate translation"
        );
    }

    #[test]
    fn a_prefix_location_becomes_a_prefix_route_running_its_lua() {
        let r = config_locations(
            "location /t {\n content_by_lua_block { ngx.say('hi') }\n log_by_lua_block { ngx.log(ngx.WARN, 'x') } }",
        )
        .unwrap();
        assert_eq!(r[0]["uri"], "/t*");
        assert_eq!(r[0]["lua_handlers"]["content_by_lua"], " ngx.say('hi') ");
        assert!(r[0]["lua_handlers"]["log_by_lua"].is_string());
    }

    #[test]
    fn return_with_text_prints_it_with_the_status_and_variables_read_ngx_var() {
        let r = config_locations("location = /r { return 201 \"at $uri\"; }").unwrap();
        assert_eq!(r[0]["uri"], "/r");
        let code = r[0]["lua_handlers"]["content_by_lua"].as_str().unwrap();
        assert!(code.contains("ngx.status = 201"), "{code}");
        assert!(code.contains("ngx.var[ [[uri]] ]"), "{code}");
    }

    #[test]
    fn unknown_directives_make_the_block_unsupported_by_name() {
        let e = config_locations("location /t { echo hello; }").unwrap_err();
        assert!(e.0.contains("`echo`"), "{e}");
        let e = config_locations("set $a 1;").unwrap_err();
        assert!(e.0.contains("`set`"), "{e}");
    }

    #[test]
    fn http_config_servers_bind_their_routes_to_their_port() {
        let h = http_config(
            "server { listen 1970; location /log { content_by_lua_block { ngx.say('ok') } } }",
        )
        .unwrap();
        assert_eq!(h.ports, [1970]);
        assert_eq!(h.routes[0]["vars"][0][2][0], "1970");
    }

    #[test]
    fn realip_directives_become_node_config_keys() {
        let h = http_config(
            "set_real_ip_from 127.0.0.1;\nset_real_ip_from ::1;\nreal_ip_header X-Forwarded-For;\nreal_ip_recursive on;",
        )
        .unwrap();
        assert_eq!(
            h.real_ip,
            vec![
                ("real_ip_from", json!(["127.0.0.1", "::1"])),
                ("real_ip_header", json!("X-Forwarded-For")),
                ("real_ip_recursive", json!("on")),
            ]
        );
    }

    #[test]
    fn yaml_merge_keeps_siblings_and_replaces_leaves() {
        let mut a: serde_norway::Value =
            serde_norway::from_str("apisix: {node_listen: 1984, x: 1}\nplugins: [a]").unwrap();
        let b = serde_norway::from_str("apisix: {x: 2}\nplugins: [b]").unwrap();
        merge_yaml(&mut a, b);
        let s = serde_norway::to_string(&a).unwrap();
        assert!(
            s.contains("node_listen: 1984") && s.contains("x: 2") && s.contains("- b"),
            "{s}"
        );
    }
}
