//! `resty.http` (moongate's own, in `lua/resty/http.lua`) driven from `content_by_lua` routes of
//! the real binary against real local servers: the Echo backend, raw TCP servers that answer
//! with canned bytes, the gateway's own streaming routes, and a local rustls HTTPS server.

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::*;

/// Indents Lua source under a YAML block scalar.
fn block(lua: &str) -> String {
    lua.lines()
        .map(|l| format!("        {l}\n"))
        .collect::<String>()
}

/// A gateway whose route `/t` runs `lua` as `content_by_lua`, plus `extra` routes (YAML list
/// items). Each `(NAME, value)` in `vars` replaces `NAME` in the Lua and the extra routes.
fn gateway(lua: &str, extra: &str, vars: &[(&str, String)]) -> Gateway {
    let port = free_port();
    let mut routes = format!(
        "routes:\n  - id: t\n    uri: /t\n    lua_handlers:\n      content_by_lua: |\n{}{extra}",
        block(lua)
    );
    routes = routes.replace("$GW_PORT", &port.to_string());
    // Placeholders are `$NAME`, so a name inside the Lua code (`X-ECHO-SERVER`) stays as is.
    for (name, value) in vars {
        routes = routes.replace(&format!("${name}"), value);
    }
    Gateway::start_with_config(&config_yaml(port, ""), port, &routes_file(&routes))
}

/// A TCP server answering every request it reads (a head up to the blank line, plus a
/// `Content-Length` body) with `reply`, closing after each reply when `close`. Counts the
/// connections it accepted.
fn canned_server(reply: &'static [u8], close: bool) -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match c.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    let body_len = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + body_len {
                        match c.read(&mut tmp) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&tmp[..n]),
                        }
                    }
                    buf.drain(..end + 4 + body_len);
                    if c.write_all(reply).is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (port, accepted)
}

#[test]
fn request_uri_gets_and_posts_through_the_echo_backend() {
    let echo = Echo::start("e1");
    let gw = gateway(
        r#"local cjson = require("cjson")
local http = require("resty.http")
local httpc = http.new()
local res, err = httpc:request_uri("http://127.0.0.1:$ECHO/x?a=1", {
    query = {b = "two words"},
    headers = {["X-One"] = "1"},
})
if not res then ngx.say("error: ", err) return end
local doc = cjson.decode(res.body)
ngx.say(res.status, " ", res.reason, " ", res.headers["content-type"], " ", res.headers["X-ECHO-SERVER"])
ngx.say(doc.method, " ", doc.uri, " ", doc.headers["x-one"], " ", doc.headers["host"])
ngx.say(doc.headers["user-agent"]:sub(1, 15))
res, err = httpc:request_uri("http://127.0.0.1:$ECHO/status/201", {
    method = "POST",
    body = {"a=", "1", "&b=2"},
    headers = {["Content-Type"] = "application/x-www-form-urlencoded"},
    keepalive = false,
})
doc = cjson.decode(res.body)
ngx.say(res.status, " ", doc.method, " ", doc.body, " ", doc.headers["content-length"])
"#,
        "",
        &[("ECHO", echo.port.to_string())],
    );
    let r = gw.get("/t");
    assert_eq!(
        r.body,
        format!(
            "200 OK application/json e1\nGET /x?b=two%20words 1 127.0.0.1:{}\nlua-resty-http/\n201 POST a=1&b=2 7\n",
            echo.port
        ),
        "{}",
        gw.error_log()
    );
}

#[test]
fn kept_alive_connections_are_reused_and_counted() {
    let (port, accepted) = canned_server(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false);
    let gw = gateway(
        r#"local http = require("resty.http")
local first = http.new()
local res = assert(first:request_uri("http://127.0.0.1:$CANNED/one"))
ngx.say(res.body, " ", first:get_reused_times())
local second = http.new()
assert(second:connect({scheme = "http", host = "127.0.0.1", port = $CANNED}))
ngx.say("reused ", second:get_reused_times())
res = assert(second:request({path = "/two"}))
ngx.say(res:read_body(), " ", res.has_body)
ngx.say(second:set_keepalive(10000, 10))
local third = http.new()
res = assert(third:request_uri("http://127.0.0.1:$CANNED/three"))
ngx.say(res.body)
"#,
        "",
        &[("CANNED", port.to_string())],
    );
    let r = gw.get("/t");
    assert_eq!(
        r.body,
        "ok 0\nreused 1\nok true\n1\nok\n",
        "{}",
        gw.error_log()
    );
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "three requests, one connection"
    );
}

#[test]
fn a_connection_close_response_is_not_pooled_and_set_keepalive_says_so() {
    let (port, accepted) = canned_server(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye",
        true,
    );
    let gw = gateway(
        r#"local http = require("resty.http")
local httpc = http.new()
assert(httpc:connect("127.0.0.1", $CANNED))
local res = assert(httpc:request({path = "/"}))
ngx.say(res:read_body())
ngx.say(httpc:set_keepalive())
local again = http.new()
res = assert(again:request_uri("http://127.0.0.1:$CANNED/"))
ngx.say(res.body, " ", again:get_reused_times())
"#,
        "",
        &[("CANNED", port.to_string())],
    );
    let r = gw.get("/t");
    assert_eq!(
        r.body,
        "bye\n2connection must be closed\nbye 0\n",
        "{}",
        gw.error_log()
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
}

#[test]
fn chunked_responses_stream_through_the_body_reader_with_trailers() {
    let (port, _) = canned_server(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n4;ext=1\r\nhell\r\n3\r\no w\r\n5\r\norld\n\r\n0\r\nX-Sum: 42\r\n\r\n",
        false,
    );
    let gw = gateway(
        r#"local http = require("resty.http")
local httpc = http.new()
assert(httpc:connect({host = "127.0.0.1", port = $CANNED}))
local res = assert(httpc:request({path = "/c"}))
local pieces = {}
repeat
    local chunk, err = res.body_reader(2)
    if err then ngx.say("err ", err) end
    if chunk then pieces[#pieces + 1] = chunk end
until not chunk
ngx.say(table.concat(pieces, "|"))
ngx.say(tostring(res.headers["X-Sum"]))
res:read_trailers()
ngx.say(res.headers["x-sum"])
-- The trailers were consumed, so the connection is clean for a second exchange on it.
res = assert(httpc:request({path = "/c2"}))
ngx.say(res:read_body())
-- The gateway's own streamed route answers chunked.
local own = http.new()
res = assert(own:request_uri("http://127.0.0.1:$GW_PORT/stream"))
ngx.say(res.headers["Transfer-Encoding"], " ", res.body)
"#,
        r#"  - id: stream
    uri: /stream
    lua_handlers:
      content_by_lua: |
        ngx.print("hell")
        ngx.flush(true)
        ngx.print("o w")
        ngx.flush(true)
        ngx.print("orld\n")
"#,
        &[("CANNED", port.to_string())],
    );
    let r = gw.get("/t");
    assert_eq!(
        r.body,
        "he|ll|o |w|or|ld|\n\nnil\n42\nhello world\n\nchunked hello world\n\n",
        "{}",
        gw.error_log()
    );
}

#[test]
fn bodies_without_length_are_read_until_the_server_closes() {
    let (port, _) = canned_server(
        b"HTTP/1.0 200 OK\r\nX-A: 1\r\nX-A: 2\r\n\r\nall of it",
        true,
    );
    let gw = gateway(
        r#"local http = require("resty.http")
local httpc = http.new()
local res = assert(httpc:request_uri("http://127.0.0.1:$CANNED/"))
ngx.say(res.body, " ", table.concat(res.headers["x-a"], ","))
local streamed = http.new()
assert(streamed:connect("127.0.0.1", $CANNED))
res = assert(streamed:request({}))
local parts = {}
repeat
    local chunk = res.body_reader(4)
    parts[#parts + 1] = chunk
until not chunk
ngx.say(table.concat(parts, "|"))
"#,
        "",
        &[("CANNED", port.to_string())],
    );
    let r = gw.get("/t");
    assert_eq!(r.body, "all of it 1,2\nall |of i|t\n", "{}", gw.error_log());
}

#[test]
fn request_bodies_go_as_iterators_in_chunks_and_head_has_no_body() {
    let echo = Echo::start("e2");
    let gw = gateway(
        r#"local cjson = require("cjson")
local http = require("resty.http")
local httpc = http.new()
assert(httpc:connect({host = "127.0.0.1", port = $ECHO}))
local parts = {"one ", "two ", "three"}
local i = 0
local res = assert(httpc:request({
    method = "PUT",
    path = "/body",
    body = function() i = i + 1 return parts[i] end,
}))
local doc = cjson.decode(res:read_body())
ngx.say(doc.method, " ", doc.body, " ", doc.headers["transfer-encoding"])
res = assert(httpc:request({method = "HEAD", path = "/hello"}))
ngx.say(res.status, " ", tostring(res.has_body), " ", tostring(res.body_reader()))
ngx.say(httpc:get_reused_times())
"#,
        "",
        &[("ECHO", echo.port.to_string())],
    );
    let r = gw.get("/t");
    assert_eq!(
        r.body,
        "PUT one two three chunked\n200 false nil\n0\n",
        "{}",
        gw.error_log()
    );
}

#[test]
fn timeouts_and_refused_connections_come_back_as_errors() {
    let echo = Echo::start("e3");
    let closed = free_port();
    let gw = gateway(
        r#"local http = require("resty.http")
local httpc = http.new()
httpc:set_timeout(100)
local t0 = ngx.now()
local res, err = httpc:request_uri("http://127.0.0.1:$ECHO/delay/2000")
ngx.say(tostring(res), " ", err, " ", ngx.now() - t0 < 1.5)
httpc = http.new()
httpc:set_timeouts(1000, 1000, 100)
assert(httpc:connect("127.0.0.1", $ECHO))
res, err = httpc:request({path = "/delay/2000"})
ngx.say(tostring(res), " ", err)
res, err = http.new():request_uri("http://127.0.0.1:$CLOSED/")
ngx.say(tostring(res), " ", err)
"#,
        "",
        &[
            ("ECHO", echo.port.to_string()),
            ("CLOSED", closed.to_string()),
        ],
    );
    let r = gw.get("/t");
    assert_eq!(
        r.body,
        "nil timeout true\nnil timeout\nnil connection refused\n",
        "{}",
        gw.error_log()
    );
}

#[test]
fn pipelined_responses_are_read_lazily_and_a_timed_out_one_has_no_status() {
    let echo = Echo::start("e4");
    let gw = gateway(
        r#"local http = require("resty.http")
local httpc = http.new()
httpc:set_timeouts(1000, 1000, 300)
assert(httpc:connect("127.0.0.1", $ECHO))
local responses = assert(httpc:request_pipeline({
    {path = "/first"}, {path = "/delay/3000"}, {path = "/third"},
}))
ngx.say(#responses, " ", responses[1].status, " ", responses[1].body:find("/first", 1, true) ~= nil)
ngx.say(tostring(responses[2].status), " ", tostring(responses[3].status))
"#,
        "",
        &[("ECHO", echo.port.to_string())],
    );
    let r = gw.get("/t");
    assert_eq!(r.body, "3 200 true\nnil nil\n", "{}", gw.error_log());
    let log = gw.error_log();
    assert!(
        log.contains("[error]") && log.contains("lua tcp socket read timed out"),
        "{log}"
    );
}

#[test]
fn parse_uri_splits_uris_as_lua_resty_http_does() {
    let gw = gateway(
        r#"local http = require("resty.http")
local function show(uri, qip)
    local p, err = http.new():parse_uri(uri, qip)
    if not p then ngx.say(err) return end
    ngx.say(table.concat({p[1], p[2], tostring(p[3]), p[4], p[5]}, " "))
end
show("http://example.com/a/b?x=1")
show("https://example.com:8443?x=1", false)
show("HTTP://[::1]:81/v6")
show("https://user:pw@host.test")
show("//other.test/p")
show("ftp://example.com/")
show("nonsense")
"#,
        "",
        &[],
    );
    let r = gw.get("/t");
    assert_eq!(
        r.body,
        "http example.com 80 /a/b?x=1 \n\
         https example.com 8443 / x=1\n\
         http [::1] 81 /v6 \n\
         https host.test 443 / \n\
         http other.test 80 /p \n\
         bad uri: ftp://example.com/\n\
         bad uri: nonsense\n",
        "{}",
        gw.error_log()
    );
}

#[test]
fn proxy_request_and_proxy_response_forward_the_client_exchange() {
    let echo = Echo::start("e4");
    let gw = gateway(
        r#"local http = require("resty.http")
local httpc = http.new()
assert(httpc:connect("127.0.0.1", $ECHO))
local res, err = httpc:proxy_request()
if not res then ngx.say(err) return end
httpc:proxy_response(res)
httpc:set_keepalive()
"#,
        "",
        &[("ECHO", echo.port.to_string())],
    );
    let r = request(gw.port, "POST", "/t?q=1", &[("X-In", "yes")], b"payload");
    assert_eq!(r.status, 200, "{}", gw.error_log());
    assert_eq!(r.header("x-echo-server"), Some("e4"));
    let doc = r.json();
    assert_eq!(doc["method"], "POST");
    assert_eq!(doc["uri"], "/t?q=1");
    assert_eq!(doc["body"], "payload");
    assert_eq!(doc["headers"]["x-in"], "yes");
    assert!(doc["headers"].get("connection").is_none(), "{doc}");
}

/// An HTTPS server (rustls, self-signed for `localhost`) answering every request with the SNI
/// it saw.
fn https_server() -> u16 {
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "moongate resty.http test");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let der_key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], der_key)
        .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for tcp in l.incoming().flatten() {
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let mut tls = rustls::StreamOwned::new(conn, tcp);
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
                let sni = tls.conn.server_name().unwrap_or("-").to_string();
                let body = format!("tls sni={sni}");
                let reply = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(reply.as_bytes());
                let _ = tls.flush();
                tls.conn.send_close_notify();
                let _ = tls.flush();
            });
        }
    });
    port
}

#[test]
fn https_requests_handshake_with_sni_and_verify_when_asked() {
    let port = https_server();
    let gw = gateway(
        r#"local http = require("resty.http")
local res, err = http.new():request_uri("https://127.0.0.1:$TLS/", {ssl_verify = false})
ngx.say(res and res.body or err)
res, err = http.new():request_uri("https://127.0.0.1:$TLS/", {ssl_verify = false, ssl_server_name = "localhost"})
ngx.say(res and res.body or err)
res, err = http.new():request_uri("https://127.0.0.1:$TLS/", {ssl_server_name = "localhost"})
ngx.say(tostring(res), " ", err)
"#,
        "",
        &[("TLS", port.to_string())],
    );
    let r = gw.get("/t");
    assert_eq!(
        r.body,
        "tls sni=-\ntls sni=localhost\nnil 20: unable to get local issuer certificate\n",
        "{}",
        gw.error_log()
    );
}
