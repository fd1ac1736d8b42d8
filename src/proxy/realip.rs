//! The client address behind trusted proxies: nginx's realip module, as APISIX configures it
//! (`nginx_config.http.real_ip_header`, `real_ip_recursive`, `real_ip_from`).
//!
//! When the connection comes from a trusted address, the address in the configured header
//! becomes the request's client address (`$remote_addr`, the access log, route matching on
//! `remote_addrs`, `X-Real-IP`/`X-Forwarded-For` to the upstream); `$realip_remote_addr` keeps
//! the connection's. Never touches anything but the address it computes.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName};

use crate::router::ip::IpSet;

/// The realip settings of a node.
#[derive(Debug, Clone)]
pub struct RealIp {
    header: HeaderName,
    recursive: bool,
    trusted: IpSet,
}

impl RealIp {
    /// `from`: addresses and CIDRs whose header is believed (`unix:` entries are ignored:
    /// moongate has no unix-socket listeners). `None` when nothing is trusted.
    pub fn new(header: &str, recursive: bool, from: &[String]) -> Result<Option<RealIp>, String> {
        let header = HeaderName::from_bytes(header.trim().as_bytes())
            .map_err(|_| format!("invalid header name {header:?}"))?;
        let from: Vec<&str> = from
            .iter()
            .map(|s| s.trim())
            .filter(|s| !s.starts_with("unix:"))
            .collect();
        if from.is_empty() {
            return Ok(None);
        }
        let trusted = IpSet::parse(&from)?;
        Ok(Some(RealIp {
            header,
            recursive,
            trusted,
        }))
    }

    /// The client address of a request arriving from `peer` with `headers`: the header's
    /// address when `peer` is trusted and the header holds one, else `peer`.
    pub fn client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        if !self.trusted.contains(peer.ip()) {
            return peer;
        }
        // Repeated headers are one list, in order.
        let mut elements: Vec<&str> = Vec::new();
        for v in headers.get_all(&self.header) {
            let Ok(s) = v.to_str() else {
                return peer;
            };
            elements.extend(s.split(',').map(str::trim).filter(|e| !e.is_empty()));
        }
        let mut found: Option<(IpAddr, Option<u16>)> = None;
        for e in elements.iter().rev() {
            let Some(addr) = parse_element(e) else {
                // The nearest element is not an address: nothing is believed. Further left, the
                // address found so far stands.
                break;
            };
            found = Some(addr);
            if !(self.recursive && self.trusted.contains(addr.0)) {
                break;
            }
        }
        match found {
            Some((ip, port)) => SocketAddr::new(ip, port.unwrap_or(peer.port())),
            None => peer,
        }
    }
}

/// `1.2.3.4`, `::1`, `[::1]`, `1.2.3.4:80`, `[::1]:80`.
fn parse_element(e: &str) -> Option<(IpAddr, Option<u16>)> {
    if let Ok(ip) = e.parse::<IpAddr>() {
        return Some((ip, None));
    }
    if let Some(rest) = e.strip_prefix('[') {
        let (inner, after) = rest.split_once(']')?;
        let ip: IpAddr = inner.parse().ok()?;
        return match after.strip_prefix(':') {
            None if after.is_empty() => Some((ip, None)),
            Some(p) => Some((ip, Some(p.parse().ok()?))),
            None => None,
        };
    }
    let (host, port) = e.rsplit_once(':')?;
    let ip: std::net::Ipv4Addr = host.parse().ok()?;
    Some((IpAddr::V4(ip), Some(port.parse().ok()?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_trusted_peer_is_replaced_by_the_header_address() {
        let r = RealIp::new("X-Real-IP", false, &["127.0.0.1".into()])
            .unwrap()
            .unwrap();
        let got = r.client(
            peer("127.0.0.1:5000"),
            &headers(&[("x-real-ip", "1.2.3.4")]),
        );
        assert_eq!(got, peer("1.2.3.4:5000"));
        let got = r.client(peer("10.0.0.1:5000"), &headers(&[("x-real-ip", "1.2.3.4")]));
        assert_eq!(
            got,
            peer("10.0.0.1:5000"),
            "an untrusted peer keeps its address"
        );
        let got = r.client(peer("127.0.0.1:5000"), &headers(&[]));
        assert_eq!(got, peer("127.0.0.1:5000"));
        let got = r.client(peer("127.0.0.1:5000"), &headers(&[("x-real-ip", "junk")]));
        assert_eq!(got, peer("127.0.0.1:5000"));
    }

    #[test]
    fn forwarded_lists_take_the_last_address_or_walk_trusted_hops_when_recursive() {
        let xff = headers(&[
            ("x-forwarded-for", "9.9.9.9, 10.0.0.2"),
            ("x-forwarded-for", "10.0.0.3"),
        ]);
        let from = ["127.0.0.1".to_string(), "10.0.0.0/8".to_string()];
        let plain = RealIp::new("X-Forwarded-For", false, &from)
            .unwrap()
            .unwrap();
        assert_eq!(plain.client(peer("127.0.0.1:1"), &xff), peer("10.0.0.3:1"));
        let recursive = RealIp::new("X-Forwarded-For", true, &from)
            .unwrap()
            .unwrap();
        assert_eq!(
            recursive.client(peer("127.0.0.1:1"), &xff),
            peer("9.9.9.9:1")
        );
    }

    #[test]
    fn ports_and_brackets_are_understood_and_unix_entries_ignored() {
        let r = RealIp::new("X-Real-IP", false, &["unix:".into(), "::1".into()])
            .unwrap()
            .unwrap();
        let p = peer("[::1]:7");
        assert_eq!(
            r.client(p, &headers(&[("x-real-ip", "[2001:db8::1]:8080")])),
            peer("[2001:db8::1]:8080")
        );
        assert_eq!(
            r.client(p, &headers(&[("x-real-ip", "1.2.3.4:99")])),
            peer("1.2.3.4:99")
        );
        assert!(
            RealIp::new("X-Real-IP", false, &["unix:".into()])
                .unwrap()
                .is_none()
        );
        assert!(RealIp::new("X-Real-IP", false, &["nope".into()]).is_err());
    }
}
