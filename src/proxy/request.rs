//! What the proxy knows about the client's request before routing it: strictness checks the
//! HTTP/1 parser (`server::h1::head`) and hyper's HTTP/2 leave to us, the normalised `$uri`, `$host`, and the variables routes can match on.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, Method, StatusCode, Version, header};

use crate::router::RequestVars;
use crate::server::h1::Verdict;

/// Headers nginx refuses to see twice in one request (400 "client sent duplicate header line"):
/// two copies of any of them let a plugin and the upstream disagree about the request.
const UNIQUE_HEADERS: [header::HeaderName; 12] = [
    header::HOST,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
    header::AUTHORIZATION,
    header::PROXY_AUTHORIZATION,
    header::EXPECT,
    header::IF_MODIFIED_SINCE,
    header::IF_UNMODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::IF_RANGE,
    header::CONTENT_RANGE,
];

/// Refuses request shapes nginx refuses, with nginx's status. `Ok` when the request may proceed.
pub fn check(
    method: &Method,
    version: Version,
    headers: &HeaderMap,
    verdict: Verdict,
    max_line: usize,
) -> Result<(), (StatusCode, &'static str)> {
    match verdict {
        Verdict::ContentLengthWithChunked => {
            return Err((
                StatusCode::BAD_REQUEST,
                "client sent \"Content-Length\" and \"Transfer-Encoding\" headers at the same time",
            ));
        }
        Verdict::RequestLineTooLong => {
            return Err((StatusCode::URI_TOO_LONG, "client sent too long URI"));
        }
        Verdict::HeaderLineTooLong => {
            return Err((StatusCode::BAD_REQUEST, "client sent too long header line"));
        }
        Verdict::DuplicateContentLength => {
            return Err((
                StatusCode::BAD_REQUEST,
                "client sent duplicate header line: \"Content-Length\"",
            ));
        }
        Verdict::Ok => {}
    }
    // nginx accepts only upper-case letters, `_` and `-` in methods.
    if !method
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'_' || b == b'-')
    {
        return Err((StatusCode::BAD_REQUEST, "client sent invalid method"));
    }
    if version == Version::HTTP_11 && !headers.contains_key(header::HOST) {
        return Err((
            StatusCode::BAD_REQUEST,
            "client sent HTTP/1.1 request without \"Host\" header",
        ));
    }
    // A map with as many names as values repeats no header: the usual case costs no lookup.
    if headers.keys_len() != headers.len() {
        for name in &UNIQUE_HEADERS {
            let mut values = headers.get_all(name).iter();
            if values.next().is_some() && values.next().is_some() {
                return Err((StatusCode::BAD_REQUEST, "client sent duplicate header line"));
            }
        }
    }
    if let Some(te) = headers.get(header::TRANSFER_ENCODING)
        && !te.as_bytes().eq_ignore_ascii_case(b"chunked")
    {
        return Err((
            StatusCode::NOT_IMPLEMENTED,
            "client sent unknown \"Transfer-Encoding\"",
        ));
    }
    // HTTP/1 parsing trims optional whitespace and judges line lengths (`verdict`); HTTP/2
    // passes whitespace through, and a value wrapped in spaces is a classic way to make two
    // parsers disagree.
    if version != Version::HTTP_2 {
        return Ok(());
    }
    for (name, value) in headers {
        let v = value.as_bytes();
        if v.first().is_some_and(|b| *b == b' ' || *b == b'\t')
            || v.last().is_some_and(|b| *b == b' ' || *b == b'\t')
        {
            return Err((StatusCode::BAD_REQUEST, "client sent invalid header line"));
        }
        if name.as_str().len() + 2 + v.len() > max_line {
            return Err((StatusCode::BAD_REQUEST, "client sent too long header line"));
        }
    }
    Ok(())
}

/// `$uri`: the path percent-decoded, with `.`/`..` segments resolved and repeated slashes merged,
/// as nginx computes it. `None` for a path that climbs above the root or decodes to a NUL (400).
pub fn normalize_path(raw: &str) -> Option<Cow<'_, str>> {
    let b = raw.as_bytes();
    let simple = b.first() == Some(&b'/')
        && !b.contains(&b'%')
        && !b.windows(2).any(|w| w == b"//" || w == b"/.");
    if simple {
        return Some(Cow::Borrowed(raw));
    }
    if b.first() != Some(&b'/') {
        return None;
    }
    let mut decoded = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |c: u8| (c as char).to_digit(16);
            match (
                b.get(i + 1).copied().and_then(hex),
                b.get(i + 2).copied().and_then(hex),
            ) {
                (Some(h), Some(l)) => {
                    let c = (h * 16 + l) as u8;
                    if c == 0 {
                        return None;
                    }
                    decoded.push(c);
                    i += 3;
                    continue;
                }
                _ => return None,
            }
        }
        decoded.push(b[i]);
        i += 1;
    }
    let mut out: Vec<&[u8]> = Vec::new();
    let trailing_slash = decoded.last() == Some(&b'/');
    for seg in decoded.split(|c| *c == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                out.pop()?;
            }
            s => out.push(s),
        }
    }
    let ends_in_dot = decoded.ends_with(b"/.") || decoded.ends_with(b"/..");
    let mut path = Vec::with_capacity(decoded.len());
    for s in &out {
        path.push(b'/');
        path.extend_from_slice(s);
    }
    if path.is_empty() || trailing_slash || ends_in_dot {
        path.push(b'/');
    }
    Some(Cow::Owned(String::from_utf8_lossy(&path).into_owned()))
}

/// The size of the request head as an HTTP/1.1 client sends it (request line, header lines,
/// the blank line), which nginx's `$request_length` counts besides the body. HTTP/2 heads
/// are compressed on the wire; they are counted as their HTTP/1.1 form.
pub fn head_length(method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> u64 {
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len());
    // "METHOD TARGET HTTP/1.1\r\n" and the final "\r\n"
    let mut n = method.as_str().len() + 1 + target + 1 + 8 + 2 + 2;
    for (name, value) in headers {
        n += name.as_str().len() + 2 + value.len() + 2;
    }
    n as u64
}

/// `$host`: from an absolute-form request target when present (it wins over `Host`, as in nginx),
/// else from the `Host` header; lower case, without the port.
pub fn host_of<'a>(uri: &'a http::Uri, headers: &'a HeaderMap) -> Cow<'a, str> {
    let raw = match uri.host() {
        Some(h) => h,
        None => headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .map(strip_port)
            .unwrap_or(""),
    };
    if raw.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(raw.to_ascii_lowercase())
    } else {
        Cow::Borrowed(raw)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        };
    }
    match last_index_of(host, b':') {
        Some(i) if host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
        _ => host,
    }
}

/// The last `byte` in `s`. Host values are a few bytes long: a plain loop is cheaper than the
/// `memrchr` that `str::rfind` calls (about 100 instructions a call, three calls a request).
fn last_index_of(s: &str, byte: u8) -> Option<usize> {
    s.bytes().rposition(|b| b == byte)
}

/// The port in a `Host` header value, if any.
pub fn port_of_host(host: &str) -> Option<&str> {
    let after = match last_index_of(host, b']') {
        Some(i) => &host[i + 1..],
        None => host,
    };
    let p = &after[last_index_of(after, b':')? + 1..];
    (!p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())).then_some(p)
}

/// The request as routes and balancers see it.
pub struct View<'a> {
    pub method: &'a str,
    pub host: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub request_uri: &'a str,
    pub remote: SocketAddr,
    pub server_port: u16,
    pub headers: &'a HeaderMap,
    /// The connection's handshake, on TLS listeners.
    pub tls: Option<&'a crate::server::tls::TlsInfo>,
}

impl RequestVars for View<'_> {
    fn method(&self) -> &str {
        self.method
    }

    fn host(&self) -> &str {
        self.host
    }

    fn path(&self) -> &str {
        self.path
    }

    fn remote_addr(&self) -> Option<IpAddr> {
        Some(self.remote.ip())
    }

    fn var(&self, name: &str) -> Option<Cow<'_, str>> {
        if let Some(h) = name.strip_prefix("http_") {
            let wanted = h.replace('_', "-");
            return self
                .headers
                .get(wanted.as_str())
                .map(|v| String::from_utf8_lossy(v.as_bytes()));
        }
        if let Some(arg) = name.strip_prefix("arg_") {
            return query_arg(self.query, arg);
        }
        if let Some(c) = name.strip_prefix("cookie_") {
            return cookie(self.headers, c);
        }
        Some(match name {
            "uri" => Cow::Borrowed(self.path),
            "host" => Cow::Borrowed(self.host),
            "remote_addr" => Cow::Owned(self.remote.ip().to_string()),
            "remote_port" => Cow::Owned(self.remote.port().to_string()),
            "request_method" | "method" => Cow::Borrowed(self.method),
            "request_uri" => Cow::Borrowed(self.request_uri),
            "args" | "query_string" => Cow::Borrowed(self.query),
            "is_args" => Cow::Borrowed(if self.query.is_empty() { "" } else { "?" }),
            "server_port" => Cow::Owned(self.server_port.to_string()),
            "scheme" => Cow::Borrowed(if self.tls.is_some() { "https" } else { "http" }),
            "https" => Cow::Borrowed(if self.tls.is_some() { "on" } else { "" }),
            n if n.starts_with("ssl_") => Cow::Owned(self.tls?.var(n)?),
            _ => return None,
        })
    }
}

/// The first value of query argument `name`, percent-decoded (`+` as space), as APISIX's
/// `ctx.var.arg_*` reads it.
pub fn query_arg<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode_component(k) == name {
            return Some(decode_component(v));
        }
    }
    None
}

fn decode_component(s: &str) -> Cow<'_, str> {
    match crate::uri::unescape(s.as_bytes()) {
        Cow::Borrowed(_) => Cow::Borrowed(s),
        Cow::Owned(b) => Cow::Owned(String::from_utf8_lossy(&b).into_owned()),
    }
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<Cow<'a, str>> {
    for value in headers.get_all(header::COOKIE) {
        let Ok(s) = value.to_str() else { continue };
        for part in s.split(';') {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            if k.trim() == name {
                return Some(Cow::Borrowed(v.trim()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_path_resolves_like_nginx() {
        let n = |p: &str| normalize_path(p).map(|c| c.into_owned());
        assert_eq!(n("/a/b").as_deref(), Some("/a/b"));
        assert_eq!(n("//a///b").as_deref(), Some("/a/b"));
        assert_eq!(n("/a/./b/../c").as_deref(), Some("/a/c"));
        assert_eq!(n("/%69nternal").as_deref(), Some("/internal"));
        assert_eq!(n("/a/b/").as_deref(), Some("/a/b/"));
        assert_eq!(n("/a/..").as_deref(), Some("/"));
        assert_eq!(n("/a/%2e%2e/b").as_deref(), Some("/b"));
        assert_eq!(n("/../etc"), None);
        assert_eq!(n("/a%00"), None);
        assert_eq!(n("/a%zz"), None);
    }

    #[test]
    fn host_prefers_absolute_form_and_drops_port() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "Example.COM:8080".parse().unwrap());
        let rel: http::Uri = "/p".parse().unwrap();
        assert_eq!(host_of(&rel, &h), "example.com");
        let abs: http::Uri = "http://a.example/p".parse().unwrap();
        assert_eq!(host_of(&abs, &h), "a.example");
        h.insert(header::HOST, "[::1]:80".parse().unwrap());
        assert_eq!(host_of(&rel, &h), "[::1]");
        assert_eq!(port_of_host("[::1]:80"), Some("80"));
        assert_eq!(port_of_host("example.com"), None);
    }

    #[test]
    fn strictness_matches_nginx_answers() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "x".parse().unwrap());
        let ok = |m: &Method, h: &HeaderMap| check(m, Version::HTTP_11, h, Verdict::Ok, 8192);
        assert!(ok(&Method::GET, &h).is_ok());
        assert_eq!(
            ok(&Method::from_bytes(b"get").unwrap(), &h).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        let mut dup = h.clone();
        dup.append(header::HOST, "y".parse().unwrap());
        assert_eq!(
            ok(&Method::GET, &dup).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        let mut te = h.clone();
        te.insert(header::TRANSFER_ENCODING, ",chunked".parse().unwrap());
        assert_eq!(
            ok(&Method::POST, &te).unwrap_err().0,
            StatusCode::NOT_IMPLEMENTED
        );
        assert_eq!(
            ok(&Method::GET, &HeaderMap::new()).unwrap_err().0,
            StatusCode::BAD_REQUEST
        );
        assert!(
            check(
                &Method::GET,
                Version::HTTP_10,
                &HeaderMap::new(),
                Verdict::Ok,
                8192
            )
            .is_ok()
        );
        assert_eq!(
            check(
                &Method::GET,
                Version::HTTP_11,
                &h,
                Verdict::ContentLengthWithChunked,
                8192
            )
            .unwrap_err()
            .0,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn http_2_values_wrapped_in_whitespace_are_refused() {
        let mut h = HeaderMap::new();
        h.insert("x-a", " v".parse().unwrap());
        let status = check(&Method::GET, Version::HTTP_2, &h, Verdict::Ok, 8192)
            .unwrap_err()
            .0;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn vars_read_args_headers_and_cookies() {
        let mut h = HeaderMap::new();
        h.insert("x-user", "alice".parse().unwrap());
        h.insert(header::COOKIE, "a=1; session=s%20x".parse().unwrap());
        let v = View {
            method: "GET",
            host: "example.com",
            path: "/p",
            query: "k=v+1&name=a%20b&k=2",
            request_uri: "/p?k=v+1&name=a%20b&k=2",
            remote: "10.0.0.1:4000".parse().unwrap(),
            server_port: 9080,
            tls: None,
            headers: &h,
        };
        assert_eq!(v.var("arg_k").as_deref(), Some("v 1"));
        assert_eq!(v.var("arg_name").as_deref(), Some("a b"));
        assert_eq!(v.var("arg_none"), None);
        assert_eq!(v.var("http_x_user").as_deref(), Some("alice"));
        assert_eq!(v.var("cookie_session").as_deref(), Some("s%20x"));
        assert_eq!(v.var("remote_addr").as_deref(), Some("10.0.0.1"));
        assert_eq!(v.var("uri").as_deref(), Some("/p"));
    }
}
