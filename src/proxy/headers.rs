//! Header rules between client, gateway and upstream (RFC 9110 hop-by-hop handling, and the
//! forwarding headers APISIX sends).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
];

/// The place of `name` in [`HOP_BY_HOP`]: one switch on the text (its length first), where
/// comparing with each of the eight names cost eight comparisons per field.
fn hop_index(name: &str) -> Option<usize> {
    match name {
        "connection" => Some(0),
        "keep-alive" => Some(1),
        "proxy-connection" => Some(2),
        "te" => Some(3),
        "trailer" => Some(4),
        "transfer-encoding" => Some(5),
        "upgrade" => Some(6),
        "proxy-authenticate" => Some(7),
        _ => None,
    }
}

/// Removes hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    // One pass over the names finds which of them are there (most messages carry none, an
    // upstream's answer usually only `Connection`): only those are hashed and removed.
    let mut present = [false; 8];
    let mut any = false;
    for k in h.keys() {
        if let Some(i) = hop_index(k.as_str()) {
            present[i] = true;
            any = true;
        }
    }
    if !any {
        return;
    }
    if present[0] {
        // Every `Connection` line counts: a second one must not smuggle a header past us.
        let named: Vec<HeaderName> = h
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("").split(','))
            .map(str::trim)
            // The hop-by-hop names themselves (an upstream's `keep-alive`) go below, once:
            // told apart on the bytes, before the cost of parsing a header name.
            .filter(|t| {
                !HOP_BY_HOP
                    .iter()
                    .any(|n| n.as_str().eq_ignore_ascii_case(t))
            })
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            h.remove(n);
        }
    }
    for (n, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        h.remove(n);
    }
}

/// What APISIX's template does to a request's forwarding headers before any plugin runs: the
/// client's `X-Forwarded-Proto`/`-Host`/`-Port` are replaced by what this hop saw, and
/// `Forwarded` is dropped (a client cannot spoof them), unless the peer is inside
/// `apisix.trusted_addresses` and sent them, in which case its own values stay. Plugins may
/// change the headers afterwards (proxy-rewrite), and they go upstream as they then stand.
pub fn neutralize_forwarded(
    h: &mut HeaderMap,
    scheme: &'static str,
    fwd_host: Option<HeaderValue>,
    fwd_port: HeaderValue,
    peer_trusted: bool,
) {
    let sent = |h: &HeaderMap, name: &HeaderName| {
        peer_trusted && h.get_all(name).iter().any(|v| !v.is_empty())
    };
    let observed = [
        (X_FORWARDED_PROTO, Some(HeaderValue::from_static(scheme))),
        (X_FORWARDED_HOST, fwd_host),
        (X_FORWARDED_PORT, Some(fwd_port)),
    ];
    for (name, value) in observed {
        if sent(h, &name) {
            // Several lines read as one value, as `$http_x_forwarded_proto` joins them.
            if h.get_all(&name).iter().count() > 1 {
                let joined: Vec<&[u8]> = h.get_all(&name).iter().map(|v| v.as_bytes()).collect();
                if let Ok(v) = HeaderValue::from_bytes(&joined.join(&b", "[..])) {
                    h.insert(name, v);
                }
            }
            continue;
        }
        match value {
            Some(v) => {
                h.insert(name, v);
            }
            None => {
                h.remove(name);
            }
        }
    }
    if !sent(h, &header::FORWARDED) {
        h.remove(header::FORWARDED);
    }
}

/// Sets the headers APISIX's template sets when proxying: `X-Real-IP` is the peer and
/// `X-Forwarded-For` appends the peer to what the request carries. `X-Forwarded-Proto`/`-Host`/
/// `-Port` were set when the request arrived ([`neutralize_forwarded`]) and are left as the
/// plugins left them.
pub fn set_forwarding(h: &mut HeaderMap, client_ip: &HeaderValue) {
    let xff = match h.get(X_FORWARDED_FOR).map(|v| v.as_bytes()) {
        Some(prev) if !prev.is_empty() => {
            let mut v = Vec::with_capacity(prev.len() + 2 + client_ip.len());
            v.extend_from_slice(prev);
            v.extend_from_slice(b", ");
            v.extend_from_slice(client_ip.as_bytes());
            HeaderValue::from_bytes(&v).unwrap_or_else(|_| client_ip.clone())
        }
        _ => client_ip.clone(),
    };
    h.insert(X_FORWARDED_FOR, xff);
    h.insert(HeaderName::from_static("x-real-ip"), client_ip.clone());
}

/// The forwarding fields a plugin-less request carries to its upstream when the client sent
/// none of them: written after the request's own fields by the upstream writer instead of
/// being inserted into its header map (each insert of one of these names hashes it; five per
/// request). Same values and order as [`neutralize_forwarded`] then [`set_forwarding`] give.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// `X-Forwarded-Proto`/`-Host`/`-Port`; `None` when they are among the request's own fields
    /// (a route with plugins gets them on arrival, where the plugins read them).
    pub observed: Option<Observed>,
    /// `X-Forwarded-For` and `X-Real-IP`: the client's address.
    pub client_ip: HeaderValue,
}

/// The `X-Forwarded-Proto`/`-Host`/`-Port` values of a [`Forwarding`].
#[derive(Debug, Clone)]
pub struct Observed {
    pub proto: HeaderValue,
    pub host: Option<HeaderValue>,
    pub port: HeaderValue,
}

impl Observed {
    /// Adds the fields to `h`, which holds none of them, as [`neutralize_forwarded`] sets them.
    pub fn insert_into(self, h: &mut HeaderMap) {
        h.insert(X_FORWARDED_PROTO, self.proto);
        if let Some(host) = self.host {
            h.insert(X_FORWARDED_HOST, host);
        }
        h.insert(X_FORWARDED_PORT, self.port);
    }

    /// The value of field `name` (lower case) when it is one of these: `Some(None)` for an
    /// `X-Forwarded-Host` this hop had no value for.
    pub fn field(&self, name: &str) -> Option<Option<&HeaderValue>> {
        match name.len() {
            16 if name.eq_ignore_ascii_case("x-forwarded-host") => Some(self.host.as_ref()),
            16 if name.eq_ignore_ascii_case("x-forwarded-port") => Some(Some(&self.port)),
            17 if name.eq_ignore_ascii_case("x-forwarded-proto") => Some(Some(&self.proto)),
            _ => None,
        }
    }

    /// The fields in the order they are added, with their names.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &HeaderValue)> {
        [
            ("x-forwarded-proto", Some(&self.proto)),
            ("x-forwarded-host", self.host.as_ref()),
            ("x-forwarded-port", Some(&self.port)),
        ]
        .into_iter()
        .filter_map(|(n, v)| v.map(|v| (n, v)))
    }
}

impl Forwarding {
    /// The fields as header lines. The names are spelt out here, in `Observed::fields`' order,
    /// rather than read from it: the iterator cost 250 instructions per proxied request.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let mut line = |name: &[u8], value: &HeaderValue| {
            buf.extend_from_slice(name);
            buf.extend_from_slice(value.as_bytes());
            buf.extend_from_slice(b"\r\n");
        };
        if let Some(o) = &self.observed {
            line(b"x-forwarded-proto: ", &o.proto);
            if let Some(h) = &o.host {
                line(b"x-forwarded-host: ", h);
            }
            line(b"x-forwarded-port: ", &o.port);
        }
        line(b"x-forwarded-for: ", &self.client_ip);
        line(b"x-real-ip: ", &self.client_ip);
    }
}

/// Whether the client sent any field this hop sets or rewrites (`X-Forwarded-*`, `Forwarded`,
/// `X-Real-IP`). One pass on the names' lengths and bytes, no hashing.
pub fn any_forwarding(h: &HeaderMap) -> bool {
    h.keys().any(|k| {
        let n = k.as_str();
        match n.len() {
            9 => n == "forwarded" || n == "x-real-ip",
            15..=17 => n.starts_with("x-forwarded-"),
            _ => false,
        }
    })
}

/// Whether the request carries `X-Forwarded-For` or `X-Real-IP` (from the client or a
/// plugin): then [`set_forwarding`] must combine with them. One pass on the names, no hashing.
pub fn has_client_forwarding(h: &HeaderMap) -> bool {
    h.keys().any(|k| {
        let n = k.as_str();
        (n.len() == 15 && n == "x-forwarded-for") || (n.len() == 9 && n == "x-real-ip")
    })
}

const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarding_fields_are_found_by_name_and_written_in_apisix_order() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "x".parse().unwrap());
        h.insert("x-forwarded", "not one of them".parse().unwrap());
        assert!(!any_forwarding(&h));
        for name in [
            "forwarded",
            "x-real-ip",
            "x-forwarded-for",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-forwarded-proto",
        ] {
            let mut with = h.clone();
            with.insert(HeaderName::from_static(name), "v".parse().unwrap());
            assert!(any_forwarding(&with), "{name}");
        }
        let mut f = Forwarding {
            observed: Some(Observed {
                proto: HeaderValue::from_static("http"),
                host: Some(HeaderValue::from_static("example.com:8080")),
                port: HeaderValue::from_static("8080"),
            }),
            client_ip: HeaderValue::from_static("10.0.0.1"),
        };
        let mut buf = Vec::new();
        f.encode(&mut buf);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "x-forwarded-proto: http\r\nx-forwarded-host: example.com:8080\r\nx-forwarded-port: 8080\r\nx-forwarded-for: 10.0.0.1\r\nx-real-ip: 10.0.0.1\r\n"
        );
        // A route with plugins: the observed fields are in the request's map already.
        f.observed = None;
        let mut buf = Vec::new();
        f.encode(&mut buf);
        assert_eq!(
            String::from_utf8(buf).unwrap(),
            "x-forwarded-for: 10.0.0.1\r\nx-real-ip: 10.0.0.1\r\n"
        );
        assert!(!has_client_forwarding(&h));
        for name in ["x-forwarded-for", "x-real-ip"] {
            let mut with = h.clone();
            with.insert(HeaderName::from_static(name), "v".parse().unwrap());
            assert!(has_client_forwarding(&with), "{name}");
        }
    }

    #[test]
    fn every_hop_by_hop_name_is_found_at_its_place() {
        for (i, n) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_index(n.as_str()), Some(i), "{n}");
        }
        assert_eq!(hop_index("host"), None);
        assert_eq!(hop_index("x-connection"), None);
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert("x-kept", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn forwarding_headers_are_replaced_on_arrival_unless_a_trusted_peer_sent_them() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.append("x-forwarded-host", "a.example".parse().unwrap());
        h.insert(header::FORWARDED, "for=evil".parse().unwrap());
        let mut trusted = h.clone();
        neutralize_forwarded(
            &mut h,
            "http",
            Some(HeaderValue::from_static("example.com:9080")),
            HeaderValue::from_static("9080"),
            false,
        );
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "example.com:9080");
        assert_eq!(h["x-forwarded-port"], "9080");
        assert!(!h.contains_key(header::FORWARDED));

        trusted.append("x-forwarded-proto", "grpc".parse().unwrap());
        neutralize_forwarded(
            &mut trusted,
            "http",
            None,
            HeaderValue::from_static("9080"),
            true,
        );
        assert_eq!(trusted["x-forwarded-proto"], "https, grpc");
        assert_eq!(trusted["x-forwarded-host"], "a.example");
        assert_eq!(trusted["x-forwarded-port"], "9080");
        assert_eq!(trusted[header::FORWARDED], "for=evil");
    }

    #[test]
    fn forwarding_headers_append_the_peer_and_keep_what_plugins_set() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        h.insert("x-forwarded-port", "10080".parse().unwrap());
        set_forwarding(&mut h, &HeaderValue::from_static("10.0.0.9"));
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        assert_eq!(h["x-forwarded-port"], "10080");
    }
}
