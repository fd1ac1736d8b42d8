//! What the request path knows about a TLS connection: nginx's `$ssl_*` variables, worked
//! out once after the handshake and shared by every request of the connection.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate, X509Name};

use super::entry::SslEntry;
use super::settings;

/// One finished handshake.
#[derive(Debug, Default)]
pub struct TlsInfo {
    /// `$ssl_server_name`: the SNI the client sent (lower-case), if any.
    pub server_name: Option<String>,
    /// `$ssl_protocol`: `TLSv1.2`, `TLSv1.3`.
    pub protocol: &'static str,
    /// `$ssl_cipher`, OpenSSL's name.
    pub cipher: &'static str,
    /// The ALPN protocol agreed on (`h2`, `http/1.1`).
    pub alpn: Option<Vec<u8>>,
    /// The session was resumed (`$ssl_session_reused`).
    pub resumed: bool,
    /// The client certificate, when the entry asked for one and the client sent it (already
    /// verified by the handshake).
    pub client: Option<ClientCert>,
    /// The `ssls` item that served the handshake.
    pub entry: Option<Arc<SslEntry>>,
}

/// A verified client certificate, as nginx's variables show it.
#[derive(Debug, Clone)]
pub struct ClientCert {
    /// `$ssl_client_s_dn` (RFC 2253, as nginx prints it).
    pub subject: String,
    /// `$ssl_client_i_dn`.
    pub issuer: String,
    /// `$ssl_client_serial`: upper-case hex.
    pub serial: String,
    /// `$ssl_client_raw_cert`: PEM.
    pub pem: String,
    /// `$ssl_client_fingerprint`: SHA-1, lower-case hex.
    pub fingerprint: String,
}

impl ClientCert {
    /// The fields of `der`; `None` if it does not parse (the handshake verified it, so this
    /// does not happen in practice).
    pub fn parse(der: &CertificateDer<'_>) -> Option<ClientCert> {
        use base64::Engine;
        use sha1::Digest;
        let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
        let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
        for line in b64.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END CERTIFICATE-----\n");
        let serial: String = cert
            .raw_serial()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        let fingerprint: String = sha1::Sha1::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Some(ClientCert {
            subject: rfc2253(cert.subject()),
            issuer: rfc2253(cert.issuer()),
            serial,
            pem,
            fingerprint,
        })
    }
}

/// A name as OpenSSL's RFC 2253 printer writes it: last RDN first, `,` between them.
fn rfc2253(name: &X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let mut parts: Vec<String> = Vec::new();
    for rdn in name.iter_rdn() {
        let attrs: Vec<String> = rdn
            .iter()
            .map(|a| {
                let key = x509_parser::objects::oid2abbrev(a.attr_type(), registry)
                    .map(str::to_string)
                    .unwrap_or_else(|_| a.attr_type().to_id_string());
                let value = a.as_str().unwrap_or("");
                format!("{key}={}", escape_dn(value))
            })
            .collect();
        parts.push(attrs.join("+"));
    }
    parts.reverse();
    parts.join(",")
}

fn escape_dn(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let edge = i == 0 && (c == ' ' || c == '#') || i + 1 == v.chars().count() && c == ' ';
        if edge || matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

impl TlsInfo {
    /// What a finished server connection tells.
    pub fn of(conn: &rustls::ServerConnection, entry: Option<Arc<SslEntry>>) -> TlsInfo {
        TlsInfo {
            server_name: conn.server_name().map(crate::config::ssl::normalize_sni),
            protocol: conn
                .protocol_version()
                .map(settings::protocol_name)
                .unwrap_or(""),
            cipher: conn
                .negotiated_cipher_suite()
                .map(settings::openssl_name)
                .unwrap_or(""),
            alpn: conn.alpn_protocol().map(<[u8]>::to_vec),
            resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
            client: conn
                .peer_certificates()
                .and_then(|c| c.first())
                .and_then(ClientCert::parse),
            entry,
        }
    }

    /// The value of nginx's `$NAME` for the `ssl_*` names; `None` for other names and for
    /// variables nginx leaves empty here.
    pub fn var(&self, name: &str) -> Option<String> {
        let client = self.client.as_ref();
        Some(match name {
            "ssl_server_name" => self.server_name.clone()?,
            "ssl_protocol" => self.protocol.to_string(),
            "ssl_cipher" => self.cipher.to_string(),
            "ssl_alpn_protocol" => String::from_utf8_lossy(self.alpn.as_deref()?).into_owned(),
            "ssl_session_reused" => if self.resumed { "r" } else { "." }.to_string(),
            "ssl_client_verify" => {
                if client.is_some() {
                    "SUCCESS".into()
                } else {
                    "NONE".into()
                }
            }
            "ssl_client_s_dn" => client?.subject.clone(),
            "ssl_client_i_dn" => client?.issuer.clone(),
            "ssl_client_serial" => client?.serial.clone(),
            "ssl_client_raw_cert" => client?.pem.clone(),
            "ssl_client_escaped_cert" => percent_escape(&client?.pem),
            "ssl_client_fingerprint" => client?.fingerprint.clone(),
            _ => return None,
        })
    }
}

/// nginx's `$ssl_client_escaped_cert`: the PEM, URL-encoded.
fn percent_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
