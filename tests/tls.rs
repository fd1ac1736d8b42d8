//! TLS through the real binary and real sockets: certificates chosen by SNI (exact, wildcard,
//! `fallback_sni`, none), an unknown name refused, keys encrypted with the keyring, HTTP/2 by
//! ALPN, a certificate changed through the Admin API served without a restart, client
//! certificates, and upstream TLS (SNI, verification, mutual TLS) against a rustls server
//! running in the test. Certificates are generated here (rcgen); the encrypted key is made by
//! the `openssl` CLI, independently of moongate.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::json;
use support::*;

/// Accepts any server certificate and remembers the one it saw.
#[derive(Debug)]
struct CertRecorder {
    seen: Mutex<Option<Vec<u8>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for CertRecorder {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.seen.lock().unwrap() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            m,
            c,
            d,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// What one TLS exchange showed.
struct Seen {
    cert: Vec<u8>,
    alpn: Option<Vec<u8>>,
    resp: Option<Resp>,
}

fn der_of(pem: &str) -> Vec<u8> {
    CertificateDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .to_vec()
}

fn client_config(
    alpn: &[&[u8]],
    client: Option<(&str, &str)>,
) -> (rustls::ClientConfig, Arc<CertRecorder>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let rec = Arc::new(CertRecorder {
        seen: Mutex::new(None),
        provider: provider.clone(),
    });
    let b = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(rec.clone());
    let mut cfg = match client {
        Some((cert, key)) => b
            .with_client_auth_cert(
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap(),
                PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => b.with_no_client_auth(),
    };
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    (cfg, rec)
}

/// A TLS connection to `port` sending `sni` (none when `None`), then `GET path` over HTTP/1.1
/// when given. Errors are the handshake's or the read's.
fn exchange(
    port: u16,
    sni: Option<&str>,
    alpn: &[&[u8]],
    client: Option<(&str, &str)>,
    path: Option<&str>,
) -> Result<Seen, String> {
    let (cfg, rec) = client_config(alpn, client);
    exchange_with(Arc::new(cfg), &rec, port, sni, path)
}

/// [`exchange`] with a given client configuration (its session cache resumes sessions).
fn exchange_with(
    cfg: Arc<rustls::ClientConfig>,
    rec: &CertRecorder,
    port: u16,
    sni: Option<&str>,
    path: Option<&str>,
) -> Result<Seen, String> {
    let name = match sni {
        Some(n) => ServerName::try_from(n.to_string()).unwrap(),
        // An IP address: rustls sends no SNI.
        None => ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()),
    };
    let mut conn = rustls::ClientConnection::new(cfg, name).unwrap();
    // Not listening yet is an error to wait on, not a panic (see `wait_for_cert`).
    let mut sock = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while conn.is_handshaking() {
        conn.complete_io(&mut sock).map_err(|e| e.to_string())?;
    }
    let alpn = conn.alpn_protocol().map(<[u8]>::to_vec);
    let mut resp = None;
    if let Some(p) = path {
        let mut tls = rustls::Stream::new(&mut conn, &mut sock);
        let host = sni.unwrap_or("localhost");
        tls.write_all(
            format!("GET {p} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        let mut buf = [0u8; 16384];
        loop {
            match tls.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !out.is_empty() => {
                    break;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        resp = Some(
            parse_responses(&out)
                .into_iter()
                .next()
                .ok_or_else(|| format!("no response: {:?}", String::from_utf8_lossy(&out)))?,
        );
    }
    let cert = rec.seen.lock().unwrap().clone().unwrap_or_default();
    Ok(Seen { cert, alpn, resp })
}

/// A node on the embedded store with a TLS listener; `ssl_extra` lines go under
/// `apisix.ssl` (4 spaces), `top` is top-level YAML. Returns (gateway, admin port, TLS port).
fn gateway(ssl_extra: &str, top: &str, files: &[(&str, &str)]) -> (Gateway, u16, u16) {
    let port = free_port();
    let admin = free_port();
    let tls = free_port();
    let config = format!(
        "{}{top}",
        embedded_config_yaml(port, admin, "").replace(
            "  ssl:\n    enable: false\n",
            &format!(
                "  ssl:\n    listen:\n      - ip: 127.0.0.1\n        port: {tls}\n{ssl_extra}"
            ),
        )
    );
    assert!(config.contains(&format!("port: {tls}")), "{config}");
    let gw = Gateway::start_in(TempDir::new("tls"), &config, port, None, files);
    wait_until("admin port", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", admin)).is_ok()
    });
    (gw, admin, tls)
}

fn put(admin: u16, path: &str, body: serde_json::Value) {
    let r = admin_call(admin, "PUT", path, Some(&body));
    assert!(
        r.status == 200 || r.status == 201,
        "{path}: {} {}",
        r.status,
        r.body
    );
}

fn self_signed(names: &[&str]) -> (String, String) {
    let ck =
        rcgen::generate_simple_self_signed(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
    (ck.cert.pem(), ck.signing_key.serialize_pem())
}

/// `key` encrypted as APISIX stores it with its default keyring's first entry.
fn apisix_encrypted(key: &str) -> String {
    encrypted_with(key, "qeddd145sfvddff3")
}

/// `key` encrypted with keyring entry `entry`: AES-128-CBC, the entry as key and IV, base64
/// (made by the openssl CLI).
fn encrypted_with(key: &str, entry: &str) -> String {
    let hex: String = entry.bytes().map(|b| format!("{b:02x}")).collect();
    let mut child = Command::new("openssl")
        .args([
            "enc",
            "-aes-128-cbc",
            "-K",
            &hex,
            "-iv",
            &hex,
            "-base64",
            "-A",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the openssl CLI (scripts/lib/deps.sh installs it)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(key.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Waits until a handshake sending `sni` is served `cert`.
fn wait_for_cert(tls: u16, sni: Option<&str>, cert: &str) {
    let want = der_of(cert);
    wait_until(
        &format!("certificate for {sni:?}"),
        Duration::from_secs(10),
        || exchange(tls, sni, &[], None, None).is_ok_and(|s| s.cert == want),
    );
}

#[test]
fn certificates_are_chosen_by_sni_and_follow_admin_api_changes() {
    let (gw, admin, tls) = gateway("    fallback_sni: fallback.test\n", "", &[]);
    let exact = self_signed(&["www.test.com"]);
    let wild = self_signed(&["*.test.com"]);
    let fallback = self_signed(&["fallback.test"]);
    put(
        admin,
        "/apisix/admin/ssls/1",
        json!({"cert": exact.0, "key": exact.1, "snis": ["www.test.com"]}),
    );
    // Stored encrypted, as APISIX keeps keys: decrypted with the default keyring.
    put(
        admin,
        "/apisix/admin/ssls/2",
        json!({"cert": wild.0, "key": apisix_encrypted(&wild.1), "sni": "*.test.com"}),
    );
    put(
        admin,
        "/apisix/admin/ssls/3",
        json!({"cert": fallback.0, "key": fallback.1, "snis": ["fallback.test"]}),
    );
    put(
        admin,
        "/apisix/admin/routes/1",
        json!({"uri": "/vars", "lua_handlers": {"content_by_lua":
            "ngx.say(ngx.var.scheme, ' ', ngx.var.https, ' ', tostring(ngx.var.ssl_server_name), ' ', ngx.var.ssl_protocol, ' ', ngx.var.ssl_client_verify)"}}),
    );
    wait_for_cert(tls, Some("fallback.test"), &fallback.0);
    wait_for_cert(tls, Some("www.test.com"), &exact.0);

    // Exact before wildcard; the wildcard covers deeper names; no SNI gets fallback_sni's.
    let sni = |name: Option<&str>| exchange(tls, name, &[], None, None).map(|s| s.cert);
    assert_eq!(sni(Some("www.test.com")).unwrap(), der_of(&exact.0));
    assert_eq!(sni(Some("api.test.com")).unwrap(), der_of(&wild.0));
    assert_eq!(sni(Some("a.b.test.com")).unwrap(), der_of(&wild.0));
    assert_eq!(sni(Some("WWW.TEST.COM")).unwrap(), der_of(&exact.0));
    assert_eq!(sni(None).unwrap(), der_of(&fallback.0));
    // A name nothing serves: the handshake fails with an alert, logged once.
    let err = sni(Some("unknown.org")).unwrap_err();
    assert!(err.contains("InternalError"), "{err}");
    wait_until("the refusal logged", Duration::from_secs(5), || {
        gw.error_log()
            .contains("failed to find any SSL certificate by SNI: unknown.org")
    });
    assert_eq!(
        gw.error_log()
            .matches("failed to find any SSL certificate by SNI: unknown.org")
            .count(),
        1,
        "{}",
        gw.error_log()
    );

    // Requests over TLS see https and the handshake's variables.
    let s = exchange(tls, Some("api.test.com"), &[], None, Some("/vars")).unwrap();
    let r = s.resp.unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.starts_with("https on api.test.com TLSv1.3 NONE"),
        "{}",
        r.body
    );

    // A second connection with the same client resumes the session.
    put(
        admin,
        "/apisix/admin/routes/2",
        json!({"uri": "/reused", "lua_handlers": {"content_by_lua": "ngx.say(ngx.var.ssl_session_reused)"}}),
    );
    wait_until("route 2", Duration::from_secs(10), || {
        exchange(tls, Some("api.test.com"), &[], None, Some("/reused"))
            .is_ok_and(|s| s.resp.is_some_and(|r| r.status == 200))
    });
    let (cfg, rec) = client_config(&[], None);
    let cfg = Arc::new(cfg);
    let reused = |cfg: &Arc<rustls::ClientConfig>| {
        exchange_with(
            cfg.clone(),
            &rec,
            tls,
            Some("api.test.com"),
            Some("/reused"),
        )
        .unwrap()
        .resp
        .unwrap()
        .body
    };
    assert_eq!(reused(&cfg).trim(), ".");
    assert_eq!(reused(&cfg).trim(), "r");

    // A changed certificate is served without a restart; a deleted one is gone.
    let renewed = self_signed(&["www.test.com"]);
    put(
        admin,
        "/apisix/admin/ssls/1",
        json!({"cert": renewed.0, "key": renewed.1, "snis": ["www.test.com"]}),
    );
    wait_for_cert(tls, Some("www.test.com"), &renewed.0);
    let r = admin_call(admin, "DELETE", "/apisix/admin/ssls/2", None);
    assert_eq!(r.status, 200, "{}", r.body);
    wait_until("ssls/2 gone", Duration::from_secs(10), || {
        sni(Some("api.test.com")).is_err()
    });
}

#[test]
fn alpn_selects_http2_and_http1_stays_the_default() {
    let (_gw, admin, tls) = gateway("", "", &[]);
    let (cert, key) = self_signed(&["h2.test"]);
    put(
        admin,
        "/apisix/admin/ssls/1",
        json!({"cert": cert, "key": key, "snis": ["h2.test"]}),
    );
    put(
        admin,
        "/apisix/admin/routes/1",
        json!({"uri": "/proto", "lua_handlers": {"content_by_lua":
            "ngx.say(ngx.req.http_version(), ' ', ngx.var.ssl_alpn_protocol)"}}),
    );
    wait_for_cert(tls, Some("h2.test"), &cert);
    // Plain HTTP on the TLS port: nginx's 400 page, then the connection closes.
    let plain = parse_responses(&raw(
        tls,
        b"GET /proto HTTP/1.1\r\nHost: h2.test\r\n\r\n",
        Duration::from_secs(5),
    ));
    assert_eq!(plain[0].status, 400);
    assert!(
        plain[0]
            .body
            .contains("The plain HTTP request was sent to HTTPS port"),
        "{}",
        plain[0].body
    );
    let s = exchange(tls, Some("h2.test"), &[b"http/1.1"], None, Some("/proto")).unwrap();
    assert_eq!(s.alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(s.resp.unwrap().body.trim(), "1.1 http/1.1");

    // h2 by ALPN, then a real HTTP/2 request on it.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (status, body) = rt.block_on(async {
        use http_body_util::BodyExt;
        let (cfg, _) = client_config(&[b"h2", b"http/1.1"], None);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", tls))
            .await
            .unwrap();
        let stream = tokio_rustls::TlsConnector::from(Arc::new(cfg))
            .connect(ServerName::try_from("h2.test").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(stream),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let req = http::Request::get("https://h2.test/proto")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(body.trim(), "2 h2");
}

#[test]
fn client_certificates_are_required_and_shown() {
    let certs = EtcdCerts::generate();
    let (_gw, admin, tls) = gateway("", "", &[]);
    let (cert, key) = self_signed(&["mtls.test"]);
    put(
        admin,
        "/apisix/admin/ssls/1",
        json!({"cert": cert, "key": key, "snis": ["mtls.test"], "client": {"ca": certs.ca}}),
    );
    put(
        admin,
        "/apisix/admin/routes/1",
        json!({"uri": "/who", "lua_handlers": {"content_by_lua":
            "ngx.say(ngx.var.ssl_client_verify, ' ', ngx.var.ssl_client_s_dn)"}}),
    );
    let client = Some((certs.client.as_str(), certs.client_key.as_str()));
    wait_until("the mTLS item", Duration::from_secs(10), || {
        exchange(tls, Some("mtls.test"), &[], client, Some("/who")).is_ok()
    });
    let s = exchange(tls, Some("mtls.test"), &[], client, Some("/who")).unwrap();
    assert_eq!(s.resp.unwrap().body.trim(), "SUCCESS CN=moongate");
    // Without a certificate the handshake fails (TLS 1.3 reports it on the first read).
    let err = exchange(tls, Some("mtls.test"), &[], None, Some("/who"))
        .err()
        .unwrap_or_default();
    assert!(
        err.contains("CertificateRequired") || err.contains("alert"),
        "{err:?}"
    );
    // A certificate from another CA is refused too.
    let (other, other_key) = self_signed(&["intruder"]);
    assert!(
        exchange(
            tls,
            Some("mtls.test"),
            &[],
            Some((&other, &other_key)),
            Some("/who")
        )
        .is_err()
    );
}

/// A TLS server answering every request with `sni=NAME client=CN` (CN of a verified client
/// certificate, or `-`), one thread per connection. Client certificates are asked for with
/// `client_ca` but not required.
/// A TLS backend answering `sni=… client=…`; the counter counts the connections it accepted.
fn tls_backend(
    cert: &str,
    key: &str,
    client_ca: Option<&str>,
) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let b = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let b = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots
                .add(CertificateDer::from_pem_slice(ca.as_bytes()).unwrap())
                .unwrap();
            b.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .allow_unauthenticated()
                .build()
                .unwrap(),
            )
        }
        None => b.with_no_client_auth(),
    };
    let cfg = Arc::new(
        b.with_single_cert(
            CertificateDer::pem_slice_iter(cert.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap(),
        )
        .unwrap(),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepts.clone();
    std::thread::spawn(move || {
        for sock in listener.incoming() {
            let Ok(mut sock) = sock else { continue };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let cfg = cfg.clone();
            std::thread::spawn(move || {
                let _ = sock.set_read_timeout(Some(Duration::from_secs(30)));
                let mut conn = rustls::ServerConnection::new(cfg).unwrap();
                let mut tls = rustls::Stream::new(&mut conn, &mut sock);
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tls.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    let sni = tls.conn.server_name().unwrap_or("-").to_string();
                    let cn = tls
                        .conn
                        .peer_certificates()
                        .and_then(|c| c.first())
                        .map(|_| "yes")
                        .unwrap_or("-");
                    let body = format!("sni={sni} client={cn}");
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if tls.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, accepts)
}

#[test]
fn upstream_tls_sends_the_upstream_host_verifies_on_request_and_presents_client_certificates() {
    let certs = EtcdCerts::generate();
    // The backend's certificate names etcd.test and chains to the test CA.
    let (backend, accepts) = tls_backend(&certs.server, &certs.server_key, Some(&certs.ca));
    let (gw, admin, _) = gateway(
        "    ssl_trusted_certificate: conf/ca.pem\n",
        "",
        &[("conf/ca.pem", &certs.ca)],
    );
    let node = format!("127.0.0.1:{backend}");
    let route = |id: &str, uri: &str, upstream: serde_json::Value| {
        put(
            admin,
            &format!("/apisix/admin/routes/{id}"),
            json!({"uri": uri, "upstream": upstream}),
        );
    };
    // Default: no verification; the SNI is the host sent upstream (here the client's).
    route(
        "1",
        "/plain",
        json!({"scheme": "https", "nodes": {&node: 1}}),
    );
    // Verification against ssl_trusted_certificate, with the name the certificate has.
    route(
        "2",
        "/verified",
        json!({"scheme": "https", "nodes": {&node: 1}, "pass_host": "rewrite",
               "upstream_host": "etcd.test", "tls": {"verify": true}}),
    );
    // ...and with a name it does not have.
    route(
        "3",
        "/wrong-name",
        json!({"scheme": "https", "nodes": {&node: 1}, "pass_host": "rewrite",
               "upstream_host": "other.test", "tls": {"verify": true}, "retries": 0}),
    );
    // Mutual TLS, inline and by client_cert_id (its key stored encrypted).
    route(
        "4",
        "/mtls-inline",
        json!({"scheme": "https", "nodes": {&node: 1},
               "tls": {"client_cert": certs.client, "client_key": certs.client_key}}),
    );
    put(
        admin,
        "/apisix/admin/ssls/c1",
        json!({"type": "client", "cert": certs.client, "key": apisix_encrypted(&certs.client_key)}),
    );
    route(
        "5",
        "/mtls-by-id",
        json!({"scheme": "https", "nodes": {&node: 1}, "tls": {"client_cert_id": "c1"}}),
    );
    wait_until("routes", Duration::from_secs(10), || {
        request(gw.port, "GET", "/mtls-by-id", &[], b"").status == 200
    });
    let get = |path: &str, host: &str| request(gw.port, "GET", path, &[("Host", host)], b"");

    let r = get("/plain", "api.example.com:9080");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "sni=api.example.com client=-");
    let r = get("/verified", "x");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body, "sni=etcd.test client=-");
    let r = get("/wrong-name", "x");
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        gw.error_log().contains("SSL_do_handshake() failed"),
        "{}",
        gw.error_log()
    );
    let r = get("/mtls-inline", "x");
    assert_eq!(r.body, "sni=x client=yes");
    let r = get("/mtls-by-id", "y");
    assert_eq!(r.body, "sni=y client=yes");
    // Pooled connections are not shared between names: a second name makes its own.
    assert_eq!(get("/plain", "one.test").body, "sni=one.test client=-");
    assert_eq!(get("/plain", "two.test").body, "sni=two.test client=-");
    // ...and are reused for the same name.
    let before = accepts.load(std::sync::atomic::Ordering::SeqCst);
    for _ in 0..3 {
        assert_eq!(get("/plain", "two.test").body, "sni=two.test client=-");
    }
    assert_eq!(
        accepts.load(std::sync::atomic::Ordering::SeqCst),
        before,
        "a pooled TLS connection was not reused"
    );
}

#[test]
fn a_standalone_file_serves_its_ssls_with_their_protocols_and_a_custom_keyring() {
    let port = free_port();
    let tls = free_port();
    let config = config_yaml(port, "").replace(
        "  ssl:\n    enable: false\n",
        &format!(
            "  ssl:\n    listen:\n      - ip: 127.0.0.1\n        port: {tls}\n  data_encryption:\n    keyring:\n      - 0123456789abcdef\n"
        ),
    );
    let (cert12, key12) = self_signed(&["old.test"]);
    let (cert, key) = self_signed(&["new.test"]);
    // `key` encrypted with the custom keyring's entry, as APISIX would store it.
    let sealed = encrypted_with(&key, "0123456789abcdef");
    let routes = format!(
        "ssls:\n  - id: old\n    sni: old.test\n    ssl_protocols: [TLSv1.2]\n    cert: {}\n    key: {}\n  - id: new\n    sni: new.test\n    cert: {}\n    key: {}\nroutes:\n  - id: v\n    uri: /v\n    lua_handlers:\n      content_by_lua: ngx.say(ngx.var.ssl_protocol, ' ', ngx.var.ssl_cipher)\n#END\n",
        serde_json::to_string(&cert12).unwrap(),
        serde_json::to_string(&key12).unwrap(),
        serde_json::to_string(&cert).unwrap(),
        serde_json::to_string(sealed.trim()).unwrap(),
    );
    let gw = Gateway::start_with_config(&config, port, &routes);
    wait_for_cert(tls, Some("new.test"), &cert);
    let s = exchange(tls, Some("new.test"), &[], None, Some("/v")).unwrap();
    assert!(
        s.resp.unwrap().body.starts_with("TLSv1.3 TLS_"),
        "{}",
        gw.error_log()
    );
    // The item's own ssl_protocols: TLS 1.2 only, whatever the client offers.
    let s = exchange(tls, Some("old.test"), &[], None, Some("/v")).unwrap();
    assert_eq!(
        s.resp.unwrap().body.trim(),
        "TLSv1.2 ECDHE-ECDSA-AES128-GCM-SHA256"
    );
}
