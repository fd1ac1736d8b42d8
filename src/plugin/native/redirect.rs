//! `redirect`: answers with a redirect instead of proxying, as APISIX's plugin of that name does
//! (priority 900, rewrite phase).
//!
//! - `uri`: the `Location`, with `$name` and `${name}` replaced by request variables (`$uri`,
//!   `$host`, `$request_uri`, `$arg_x` …; an unset variable becomes nothing) and `\$name` kept
//!   as written;
//! - `regex_uri: [regex, template]`: `$uri` rewritten by the regex (`$1`, `${1}` in the
//!   template); when it does not match, the request goes on unredirected;
//! - `http_to_https`: a request whose scheme (or `X-Forwarded-Proto`) is not `https` goes to
//!   `https://$host$request_uri`, with 301 for GET and HEAD and 308 otherwise;
//! - `ret_code` (302), `encode_uri` (escape the path of the new URI as nginx's
//!   `ngx_escape_uri` does), `append_query_string` (add the client's query string).

use std::sync::Arc;

use http::HeaderValue;
use pcre2::bytes::Regex;
use serde_json::Value;

use super::regex::{self, Template};
use super::{Answer, NativePlugin, Prepared, phases, prepared, schema};
use crate::plugin::{Phase, PhaseSet, RequestCtx};

pub struct Redirect {
    /// The ports `http_to_https` sends clients to, one picked at random per request:
    /// `plugin_attr.redirect.https_port`, else the ports of `apisix.ssl.listen` when TLS is on
    /// (APISIX's default 9443 when the section is absent). Empty, or 443: no port in the URL.
    https_ports: Vec<u16>,
}

impl Redirect {
    /// `attr` is `plugin_attr.redirect`, `ssl` the node config's `apisix.ssl` as written
    /// (`Value::Null` when absent).
    pub fn new(attr: &Value, ssl: &Value) -> Redirect {
        let port = |v: &Value| v.as_u64().and_then(|p| u16::try_from(p).ok());
        let https_ports = if let Some(p) = port(&attr["https_port"]) {
            vec![p]
        } else {
            // A written `enable: null` turns TLS off for the plugin, as APISIX's merge drops
            // the default; no `enable` key at all keeps the default (on).
            let enabled = match ssl.get("enable") {
                None => true,
                Some(v) => v.as_bool().unwrap_or(false),
            };
            match ssl.get("listen") {
                _ if !enabled => Vec::new(),
                None | Some(Value::Null) => vec![9443],
                Some(Value::Array(items)) => items
                    .iter()
                    .filter_map(|i| match i {
                        Value::Object(o) => o.get("port").map_or(Some(9443), port),
                        other => port(other),
                    })
                    .collect(),
                Some(_) => Vec::new(),
            }
        };
        Redirect {
            https_ports: https_ports.into_iter().filter(|p| *p != 0).collect(),
        }
    }

    fn https_port(&self) -> Option<u16> {
        let n = self.https_ports.len();
        let p = match n {
            0 => return None,
            1 => self.https_ports[0],
            _ => self.https_ports[fastrand::usize(..n)],
        };
        (p != 443).then_some(p)
    }
}

/// One piece of a `uri` template.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String),
    Var(String),
}

enum Target {
    Uri(Vec<Seg>),
    Regex(Regex, Template),
    /// `http_to_https` only.
    None,
}

struct Conf {
    target: Target,
    ret_code: u16,
    http_to_https: bool,
    encode_uri: bool,
    append_query_string: bool,
}

fn var_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Splits a `uri` template as APISIX's pattern does: `\$name` (kept with its backslash),
/// `${name}`, `$name`, a lone `$`, and runs of other characters. A backslash that starts none
/// of these is dropped, as APISIX's matcher skips it.
fn parse_uri_template(t: &str) -> Vec<Seg> {
    let b = t.as_bytes();
    let name_len = |from: usize| t[from..].chars().take_while(|c| var_char(*c)).count();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => {
                if b.get(i + 1) == Some(&b'$') {
                    let n = name_len(i + 2);
                    if n > 0 {
                        out.push(Seg::Lit(t[i..i + 2 + n].to_string()));
                        i += 2 + n;
                        continue;
                    }
                }
                i += 1;
            }
            b'$' => {
                if b.get(i + 1) == Some(&b'{') {
                    let n = name_len(i + 2);
                    if n > 0 && b.get(i + 2 + n) == Some(&b'}') {
                        out.push(Seg::Var(t[i + 2..i + 2 + n].to_string()));
                        i += 3 + n;
                        continue;
                    }
                }
                let n = name_len(i + 1);
                if n > 0 {
                    out.push(Seg::Var(t[i + 1..i + 1 + n].to_string()));
                    i += 1 + n;
                } else {
                    out.push(Seg::Lit("$".into()));
                    i += 1;
                }
            }
            _ => {
                let end = t[i..].find(['$', '\\']).map(|e| i + e).unwrap_or(b.len());
                out.push(Seg::Lit(t[i..end].to_string()));
                i = end;
            }
        }
    }
    out
}

fn render(segs: &[Seg], req: &RequestCtx) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Lit(l) => s.push_str(l),
            Seg::Var(v) => {
                if let Some(val) = req.var(v) {
                    s.push_str(&val);
                }
            }
        }
    }
    s
}

impl NativePlugin for Redirect {
    fn name(&self) -> &'static str {
        "redirect"
    }

    fn priority(&self) -> i64 {
        900
    }

    fn phases(&self) -> PhaseSet {
        phases(&[Phase::Rewrite])
    }

    fn prepare(&self, v: &Value) -> Result<Prepared, String> {
        let o = schema::object(v)?;
        let ret_code = schema::integer(o, "ret_code", Some(200), None)?.unwrap_or(302);
        let uri = schema::string(o, "uri", 2, None)?;
        let rules = schema::Items {
            min_items: 2,
            unique: false,
            min_len: 0,
            max_len: None,
            check: &|_| Ok(()),
        };
        let regex_uri = schema::strings(o, "regex_uri", &rules)?;
        if regex_uri.as_ref().is_some_and(|r| r.len() > 2) {
            return Err(
                "property \"regex_uri\" validation failed: expect array to have at most 2 items"
                    .into(),
            );
        }
        let http_to_https = schema::boolean(o, "http_to_https")?.unwrap_or(false);
        let encode_uri = schema::boolean(o, "encode_uri")?.unwrap_or(false);
        let append_query_string = schema::boolean(o, "append_query_string")?.unwrap_or(false);
        schema::one_of_required(o, &["uri", "regex_uri", "http_to_https"])?;
        if ret_code > 999 {
            return Err(format!(
                "property \"ret_code\" validation failed: {ret_code} is not an HTTP status moongate can send"
            ));
        }
        let target = match (uri, regex_uri) {
            (Some(u), _) => Target::Uri(parse_uri_template(u)),
            (None, Some(r)) => {
                let invalid =
                    |e: String| format!("invalid regex_uri ({}, {}), err:{e}", r[0], r[1]);
                let re = regex::compile(&r[0], false).map_err(invalid)?;
                let t = Template::parse(&r[1]).map_err(invalid)?;
                Target::Regex(re, t)
            }
            (None, None) => Target::None,
        };
        if http_to_https && append_query_string {
            return Err(
                "only one of `http_to_https` and `append_query_string` can be configured.".into(),
            );
        }
        Ok(Arc::new(Conf {
            target,
            ret_code: ret_code as u16,
            http_to_https,
            encode_uri,
            append_query_string,
        }))
    }

    fn run(
        &self,
        _phase: Phase,
        conf: &Prepared,
        req: &mut RequestCtx,
    ) -> Result<Option<Answer>, String> {
        let c: &Conf = prepared(conf, self.name())?;
        let mut ret_code = c.ret_code;
        let scheme = req
            .header("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .unwrap_or(req.scheme);
        let mut location = if c.http_to_https && scheme != "https" {
            ret_code = if matches!(req.method, http::Method::GET | http::Method::HEAD) {
                301
            } else {
                308
            };
            Some(match self.https_port() {
                Some(port) => format!("https://{}:{port}{}", req.host, req.request_uri),
                None => format!("https://{}{}", req.host, req.request_uri),
            })
        } else {
            match &c.target {
                Target::Uri(segs) => Some(render(segs, req)),
                Target::Regex(re, t) => t.sub_first(re, &req.uri).map_err(|e| {
                    format!(
                        "failed to substitute the uri:{} with the regex_uri: {e}",
                        req.uri
                    )
                })?,
                Target::None => None,
            }
        };
        let Some(mut new_uri) = location.take() else {
            return Ok(None);
        };
        let query_at = new_uri.find('?');
        if c.encode_uri {
            let (path, rest) = new_uri.split_at(query_at.unwrap_or(new_uri.len()));
            let path = crate::lua::ngx::codec::escape_uri(path.as_bytes(), 0);
            new_uri = format!("{}{rest}", String::from_utf8_lossy(&path));
        }
        if c.append_query_string && !req.args.is_empty() {
            new_uri.push(if query_at.is_some() { '&' } else { '?' });
            new_uri.push_str(&req.args);
        }
        let value = HeaderValue::from_str(&new_uri)
            .map_err(|_| format!("the new uri {new_uri:?} is not a valid header value"))?;
        req.resp_headers.insert(http::header::LOCATION, value);
        Ok(Some(Answer {
            status: ret_code,
            body: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uri_templates_split_as_apisix_splits_them() {
        use Seg::*;
        assert_eq!(
            parse_uri_template("/x/$uri?h=${host}&p=\\$keep$"),
            vec![
                Lit("/x/".into()),
                Var("uri".into()),
                Lit("?h=".into()),
                Var("host".into()),
                Lit("&p=".into()),
                Lit("\\$keep".into()),
                Lit("$".into()),
            ]
        );
    }

    #[test]
    fn conf_errors_are_worded_as_apisix_words_them() {
        let p = Redirect::new(&Value::Null, &serde_json::json!({"enable": false}));
        let err = |v: Value| p.check_conf(&v).err().unwrap_or_default();
        assert_eq!(
            err(serde_json::json!({})),
            "value should match only one schema, but matches none"
        );
        assert_eq!(
            err(serde_json::json!({"http_to_https": true, "append_query_string": true})),
            "only one of `http_to_https` and `append_query_string` can be configured."
        );
        assert!(
            err(serde_json::json!({"regex_uri": ["(", "/x"]}))
                .starts_with("invalid regex_uri ((, /x), err:")
        );
        assert_eq!(
            err(serde_json::json!({"uri": "/a", "ret_code": 100})),
            "property \"ret_code\" validation failed: expected 100 to be at least 200"
        );
    }
}
