//! IP addresses and CIDR blocks, v4 and v6, for `remote_addrs` and the `ipmatch` operator.

use std::net::IpAddr;

/// One address or CIDR block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cidr {
    V4 { net: u32, mask: u32 },
    V6 { net: u128, mask: u128 },
}

impl Cidr {
    /// Parses `1.2.3.4`, `1.2.3.0/24`, `::1`, `2001:db8::/32`.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (s, None),
        };
        let ip: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("invalid IP address: {s}"))?;
        let len: Option<u32> = match len {
            Some(l) => Some(
                l.parse()
                    .map_err(|_| format!("invalid CIDR prefix length: {s}"))?,
            ),
            None => None,
        };
        match ip {
            IpAddr::V4(v4) => {
                let len = len.unwrap_or(32);
                if len > 32 {
                    return Err(format!("invalid CIDR prefix length: {s}"));
                }
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                Ok(Cidr::V4 {
                    net: u32::from(v4) & mask,
                    mask,
                })
            }
            IpAddr::V6(v6) => {
                let len = len.unwrap_or(128);
                if len > 128 {
                    return Err(format!("invalid CIDR prefix length: {s}"));
                }
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                Ok(Cidr::V6 {
                    net: u128::from(v6) & mask,
                    mask,
                })
            }
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self, canonical(ip)) {
            (Cidr::V4 { net, mask }, IpAddr::V4(v4)) => u32::from(v4) & mask == *net,
            (Cidr::V6 { net, mask }, IpAddr::V6(v6)) => u128::from(v6) & mask == *net,
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:1.2.3.4`) is the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// A set of addresses and blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet(Vec<Cidr>);

impl IpSet {
    pub fn parse<S: AsRef<str>>(items: &[S]) -> Result<IpSet, String> {
        items
            .iter()
            .map(|s| Cidr::parse(s.as_ref()))
            .collect::<Result<_, _>>()
            .map(IpSet)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_and_v6_blocks_match_their_members_only() {
        let set = IpSet::parse(&["10.0.0.0/8", "192.168.1.7", "2001:db8::/32", "::1"]).unwrap();
        for ok in [
            "10.1.2.3",
            "192.168.1.7",
            "2001:db8:1::5",
            "::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(set.contains(ok.parse().unwrap()), "{ok}");
        }
        for no in ["11.0.0.1", "192.168.1.8", "2001:db9::1", "::2"] {
            assert!(!set.contains(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn zero_length_prefix_matches_everything_of_its_family() {
        let set = IpSet::parse(&["0.0.0.0/0"]).unwrap();
        assert!(set.contains("8.8.8.8".parse().unwrap()));
        assert!(!set.contains("::8".parse().unwrap()));
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("not-an-ip").is_err());
        assert!(Cidr::parse("::/129").is_err());
    }
}
