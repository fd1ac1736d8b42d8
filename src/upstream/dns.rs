//! Node names resolved while the gateway runs, as APISIX resolves them.
//!
//! APISIX resolves a node's domain when a request needs the upstream, through a cache whose
//! entries live `apisix.dns_resolver_valid` seconds; a name that does not resolve fails the
//! requests that pick it, not the configuration. moongate does the same: a snapshot keeps node
//! names (with the address found when it was built, if any), and the proxy asks [`resolve`] for
//! the current address of a named node on each try. Hits are a read lock and a hash lookup;
//! misses and expired entries go to the system resolver (`getaddrinfo` on tokio's blocking pool),
//! off the worker thread.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, RwLock};
use std::time::{Duration, Instant};

use rustc_hash::FxHashMap;

/// How long a resolved name is used before it is resolved again, in seconds
/// (`apisix.dns_resolver_valid`; APISIX follows the records' TTL when it is not set, which
/// `getaddrinfo` does not report, so moongate uses 30 s then).
static VALID_SECS: AtomicU64 = AtomicU64::new(DEFAULT_VALID_SECS);

pub const DEFAULT_VALID_SECS: u64 = 30;

/// A lookup that takes longer than this fails the try (nginx's `resolver_timeout` is 30 s;
/// APISIX's resolver gives up after its retries well before).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

struct Entry {
    ip: IpAddr,
    until: Instant,
}

static CACHE: LazyLock<RwLock<FxHashMap<Box<str>, Entry>>> =
    LazyLock::new(|| RwLock::new(FxHashMap::default()));

/// Sets how long resolved names are kept (from `apisix.dns_resolver_valid`).
pub fn set_valid(secs: u64) {
    VALID_SECS.store(secs, Ordering::Relaxed);
}

/// Records an address found for `name` (when a snapshot is built), so the first requests do not
/// resolve it again.
pub fn seed(name: &str, ip: IpAddr) {
    let until = Instant::now() + Duration::from_secs(VALID_SECS.load(Ordering::Relaxed));
    if let Ok(mut map) = CACHE.write() {
        map.insert(name.into(), Entry { ip, until });
    }
}

/// The address of `name` now: from the cache while its entry is valid, else resolved again.
/// When resolving fails and an address was known before (an expired entry), that one is used
/// and the failure returned beside it so the caller can log it.
pub async fn resolve(name: &str, port: u16) -> Resolved {
    let now = Instant::now();
    let stale = match CACHE.read() {
        Ok(map) => match map.get(name) {
            Some(e) if e.until > now => return Resolved::Fresh(e.ip),
            Some(e) => Some(e.ip),
            None => None,
        },
        Err(_) => None,
    };
    let looked = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, port))).await;
    let err = match looked {
        Ok(Ok(mut addrs)) => match addrs.next() {
            Some(a) => {
                seed(name, a.ip());
                return Resolved::Fresh(a.ip());
            }
            None => "no address".to_string(),
        },
        Ok(Err(e)) => e.to_string(),
        Err(_) => "timed out".to_string(),
    };
    match stale {
        Some(ip) => Resolved::Stale(ip, err),
        None => Resolved::Failed(err),
    }
}

/// What [`resolve`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Resolved {
    /// A valid address.
    Fresh(IpAddr),
    /// Resolving failed (the reason); the address known before is still used.
    Stale(IpAddr, String),
    /// Resolving failed and no address was ever known.
    Failed(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolve_and_unknown_names_fail() {
        match resolve("localhost", 80).await {
            Resolved::Fresh(ip) => assert!(ip.is_loopback(), "{ip}"),
            other => panic!("localhost: {other:?}"),
        }
        // `.invalid` never resolves (RFC 6761).
        match resolve("moongate-test.invalid", 80).await {
            Resolved::Failed(e) => assert!(!e.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn an_expired_entry_is_used_when_resolving_fails() {
        let name = "stale-test.invalid";
        let ip: IpAddr = "192.0.2.7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]));
        if let Ok(mut map) = CACHE.write() {
            map.insert(
                name.into(),
                Entry {
                    ip,
                    until: Instant::now(),
                },
            );
        }
        match resolve(name, 80).await {
            Resolved::Stale(got, _) => assert_eq!(got, ip),
            other => panic!("{other:?}"),
        }
        seed(name, ip);
        assert_eq!(resolve(name, 80).await, Resolved::Fresh(ip));
    }
}
