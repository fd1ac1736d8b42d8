//! Who may call the Admin API: the client address against `allow_admin`, then the
//! `X-API-KEY` header against `deployment.admin.admin_key`, compared in constant time.
//!
//! The key is read from the `X-API-KEY` header only (`X_API_KEY` too, as nginx matches it); APISIX's `?api_key=` query and
//! `x_api_key` cookie forms leak keys into access logs, so moongate accepts them only when
//! `deployment.admin.allow_key_in_query` is set.

use std::net::IpAddr;

use crate::router::ip::Cidr;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Every method.
    Admin,
    /// `GET` only.
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "admin" => Some(Role::Admin),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// One `admin_key` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminKey {
    pub name: String,
    pub key: String,
    pub role: Role,
}

/// The access policy of one Admin API listener.
#[derive(Debug, Clone)]
pub struct Access {
    /// `None` (or empty): every address may connect.
    pub allow: Option<Vec<Cidr>>,
    /// Empty when no key is required (`admin_key_required: false`, or the test-harness mode).
    pub keys: Vec<AdminKey>,
    /// Accept `?api_key=` and the `x_api_key` cookie besides the header.
    pub key_in_query: bool,
}

/// Why a request was refused: (status, JSON body), in APISIX's words.
pub type Refusal = (u16, String);

/// Equal-length comparison whose time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare against the candidate's own length so the time does not reveal the key's.
    let mut diff = (a.len() != b.len()) as u8;
    for (i, x) in a.iter().enumerate() {
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// A fresh random key: 32 hexadecimal characters.
pub fn generate_key() -> String {
    let mut out = String::with_capacity(32);
    for _ in 0..32 {
        let d = fastrand::u8(0..16);
        out.push(char::from_digit(d as u32, 16).unwrap_or('0'));
    }
    out
}

impl Access {
    /// True when `ip` may reach the Admin API at all.
    pub fn address_allowed(&self, ip: IpAddr) -> bool {
        match &self.allow {
            None => true,
            Some(list) if list.is_empty() => true,
            Some(list) => list.iter().any(|c| c.contains(ip)),
        }
    }

    /// Checks the request's key; `Ok` with the role it grants.
    pub fn check(
        &self,
        method: &http::Method,
        headers: &http::HeaderMap,
        query: &str,
    ) -> Result<Role, Refusal> {
        if self.keys.is_empty() {
            return Ok(Role::Admin);
        }
        // As nginx's `$http_x_api_key`: the header name compares with `-` and `_` alike.
        let mut given = headers
            .iter()
            .find(|(name, _)| name.as_str().replace('_', "-") == "x-api-key")
            .and_then(|(_, v)| v.to_str().ok())
            .map(str::to_string);
        if given.is_none() && self.key_in_query {
            given = query_arg(query, "api_key").or_else(|| cookie(headers, "x_api_key"));
        }
        let Some(given) = given.filter(|g| !g.is_empty()) else {
            return Err(refusal("missing apikey"));
        };
        let mut role = None;
        // Every key is compared, so the time taken does not tell which one matched.
        for k in &self.keys {
            if constant_time_eq(given.as_bytes(), k.key.as_bytes()) && role.is_none() {
                role = Some(k.role);
            }
        }
        match role {
            None => Err(refusal("wrong apikey")),
            Some(Role::Viewer) if method != http::Method::GET => {
                Err(refusal("invalid method for role viewer"))
            }
            Some(r) => Ok(r),
        }
    }
}

fn refusal(description: &str) -> Refusal {
    (
        401,
        serde_json::json!({"error_msg": "failed to check token", "description": description})
            .to_string(),
    )
}

/// The first `name=value` in a query string, percent-decoding left to the key itself
/// (generated keys are hexadecimal).
pub fn query_arg(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('=').or(Some((kv, ""))))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn cookie(headers: &http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access() -> Access {
        Access {
            allow: Some(vec![Cidr::parse("127.0.0.0/24").unwrap()]),
            keys: vec![
                AdminKey {
                    name: "admin".into(),
                    key: "secret-admin".into(),
                    role: Role::Admin,
                },
                AdminKey {
                    name: "viewer".into(),
                    key: "secret-viewer".into(),
                    role: Role::Viewer,
                },
            ],
            key_in_query: false,
        }
    }

    #[test]
    fn keys_and_roles_are_enforced() {
        let a = access();
        let mut h = http::HeaderMap::new();
        let get = http::Method::GET;
        let put = http::Method::PUT;
        assert!(
            a.check(&get, &h, "")
                .unwrap_err()
                .1
                .contains("missing apikey")
        );
        h.insert("x-api-key", "nope".parse().unwrap());
        assert!(
            a.check(&get, &h, "")
                .unwrap_err()
                .1
                .contains("wrong apikey")
        );
        h.insert("x-api-key", "secret-viewer".parse().unwrap());
        assert_eq!(a.check(&get, &h, ""), Ok(Role::Viewer));
        assert_eq!(a.check(&put, &h, "").unwrap_err().0, 401);
        h.insert("x-api-key", "secret-admin".parse().unwrap());
        assert_eq!(a.check(&put, &h, ""), Ok(Role::Admin));
        let h = http::HeaderMap::new();
        assert!(
            a.check(&get, &h, "api_key=secret-admin").is_err(),
            "query form off by default"
        );
    }

    #[test]
    fn addresses_outside_allow_admin_are_refused() {
        let a = access();
        assert!(a.address_allowed("127.0.0.1".parse().unwrap()));
        assert!(!a.address_allowed("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn comparison_checks_every_byte_and_the_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abcd", b"abc"));
        assert_eq!(generate_key().len(), 32);
    }
}
