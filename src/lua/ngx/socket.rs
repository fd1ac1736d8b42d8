//! Cosockets: `ngx.socket.tcp()` and `ngx.socket.connect`, the non-blocking I/O that resty.http,
//! resty.redis and the logger plugins sit on.
//!
//! Every wait suspends only the calling request (the socket's operations are async functions on
//! the worker's runtime). Results and errors follow lua-nginx-module: `1` or `nil, err` with
//! `"timeout"`, `"closed"`, `"connection refused"`; `receive` also returns the partial data. Idle
//! connections kept with `setkeepalive` wait in a per-worker pool keyed as OpenResty keys it
//! (`host:port`, or the `pool` option), and `getreusedtimes` counts reuses. Default timeouts are
//! lua-nginx-module's 60 s. `sslhandshake` runs rustls over the connection (see [`tls`]); a
//! pooled connection keeps its TLS session. `unix:/path` addresses connect unix domain sockets.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::rc::Rc;
use std::time::Duration;

use mlua::{IntoLuaMulti, Lua, LuaString, Table, UserData, UserDataMethods, Value};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use tls::Stream;
pub use tls::{TlsConfigError, server_verifier, set_trusted_certificate};

mod tls;

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

struct Pooled {
    stream: Stream,
    buf: Vec<u8>,
    reused: u64,
    expires: Option<Instant>,
}

thread_local! {
    static POOL: RefCell<HashMap<String, Vec<Pooled>>> = RefCell::new(HashMap::new());
}

#[derive(Default)]
struct State {
    stream: Option<Stream>,
    /// Bytes read from the peer and not yet handed to Lua.
    buf: Vec<u8>,
    connect_timeout: Option<Duration>,
    send_timeout: Option<Duration>,
    read_timeout: Option<Duration>,
    reused: u64,
    pool_key: Option<String>,
}

#[derive(Clone, Default)]
struct Tcp(Rc<RefCell<State>>);

fn io_err(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".into(),
        io::ErrorKind::TimedOut => "timeout".into(),
        io::ErrorKind::ConnectionReset => "connection reset by peer".into(),
        io::ErrorKind::UnexpectedEof | io::ErrorKind::BrokenPipe => "closed".into(),
        _ => e.to_string(),
    }
}

fn ms(v: Option<f64>) -> Option<Duration> {
    v.filter(|m| *m > 0.0)
        .map(|m| Duration::from_secs_f64(m / 1000.0))
}

/// Flattens `send`'s argument: a string, a number, or a (nested) array of them.
fn flatten(v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match v {
        Value::String(s) => out.extend_from_slice(&s.as_bytes()),
        Value::Integer(_) | Value::Number(_) => {
            out.extend_from_slice(v.to_string().unwrap_or_default().as_bytes())
        }
        Value::Boolean(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Table(t) => {
            for item in t.sequence_values::<Value>() {
                flatten(&item.map_err(|e| e.to_string())?, out)?;
            }
        }
        other => {
            return Err(format!(
                "bad argument #1 to 'send' (bad data type {} found)",
                other.type_name()
            ));
        }
    }
    Ok(())
}

async fn with_timeout<T>(
    d: Option<Duration>,
    f: impl std::future::Future<Output = io::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(d.unwrap_or(DEFAULT_TIMEOUT), f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(io_err(&e)),
        Err(_) => Err("timeout".into()),
    }
}

/// Reads more bytes into `buf`; `Ok(false)` at end of stream.
async fn fill(
    stream: &mut Stream,
    buf: &mut Vec<u8>,
    timeout: Option<Duration>,
) -> Result<bool, String> {
    let mut chunk = [0u8; 16 * 1024];
    let n = with_timeout(timeout, stream.read(&mut chunk))
        .await
        .inspect_err(|e| {
            // lua-nginx-module's `lua_socket_log_errors` (on by default) line.
            if e == "timeout" {
                log::error!("lua tcp socket read timed out");
            }
        })?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n > 0)
}

impl Tcp {
    fn take(&self) -> Option<(Stream, Vec<u8>, Option<Duration>)> {
        let mut st = self.0.borrow_mut();
        let stream = st.stream.take()?;
        Some((stream, std::mem::take(&mut st.buf), st.read_timeout))
    }

    fn put_back(&self, stream: Stream, buf: Vec<u8>) {
        let mut st = self.0.borrow_mut();
        st.stream = Some(stream);
        st.buf = buf;
    }
}

/// `receive`'s patterns.
enum Pattern {
    Line,
    All,
    Bytes(usize),
}

impl UserData for Tcp {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_async_method(
            "connect",
            |lua, this, (host, port, opts): (String, Option<u16>, Option<Table>)| async move {
                let this = this.clone();
                if this.0.borrow().stream.is_some() {
                    this.0.borrow_mut().stream = None;
                }
                let unix_path = host.strip_prefix("unix:").map(str::to_owned);
                if unix_path.is_none() && port.is_none() {
                    return (Value::Nil, "no port specified").into_lua_multi(&lua);
                }
                let key = match opts
                    .as_ref()
                    .and_then(|o| o.get::<Option<String>>("pool").ok().flatten())
                {
                    Some(k) => k,
                    // OpenResty keys a unix socket by the whole `unix:/path` string.
                    None => match port {
                        Some(port) if unix_path.is_none() => format!("{host}:{port}"),
                        _ => host.clone(),
                    },
                };
                // A kept-alive connection for the same key first.
                let pooled = POOL.with(|p| {
                    let mut p = p.borrow_mut();
                    let list = p.get_mut(&key)?;
                    let now = Instant::now();
                    while let Some(c) = list.pop() {
                        if c.expires.is_none_or(|e| e > now) {
                            return Some(c);
                        }
                    }
                    None
                });
                if let Some(c) = pooled {
                    let mut st = this.0.borrow_mut();
                    st.stream = Some(c.stream);
                    st.buf = c.buf;
                    st.reused = c.reused + 1;
                    st.pool_key = Some(key);
                    return 1.into_lua_multi(&lua);
                }
                let timeout = this.0.borrow().connect_timeout;
                let connect = async {
                    match (&unix_path, port) {
                        (Some(path), _) => tokio::net::UnixStream::connect(path)
                            .await
                            .map(Stream::Unix),
                        (None, Some(port)) => {
                            let s = TcpStream::connect((host.as_str(), port)).await?;
                            let _ = s.set_nodelay(true);
                            Ok(Stream::Tcp(s))
                        }
                        (None, None) => Err(io::Error::other("no port specified")),
                    }
                };
                match with_timeout(timeout, connect).await {
                    Ok(stream) => {
                        let mut st = this.0.borrow_mut();
                        st.stream = Some(stream);
                        st.buf.clear();
                        st.reused = 0;
                        st.pool_key = Some(key);
                        1.into_lua_multi(&lua)
                    }
                    Err(e) => {
                        if e == "timeout" {
                            let target = match port {
                                Some(port) if unix_path.is_none() => format!("{host}:{port}"),
                                _ => host.clone(),
                            };
                            log::error!(
                                "lua tcp socket connect timed out, when connecting to: {target}"
                            );
                        }
                        (Value::Nil, e).into_lua_multi(&lua)
                    }
                }
            },
        );
        m.add_async_method("send", |lua, this, data: Value| async move {
            let mut bytes = Vec::new();
            if let Err(e) = flatten(&data, &mut bytes) {
                return Err(mlua::Error::runtime(e));
            }
            let this = this.clone();
            let Some((mut stream, buf, _)) = this.take() else {
                return (Value::Nil, "closed").into_lua_multi(&lua);
            };
            let timeout = this.0.borrow().send_timeout;
            match with_timeout(timeout, stream.write_all(&bytes)).await {
                Ok(()) => {
                    this.put_back(stream, buf);
                    bytes.len().into_lua_multi(&lua)
                }
                // A failed socket is closed, as lua-nginx-module closes it.
                Err(e) => {
                    if e == "timeout" {
                        log::error!("lua tcp socket write timed out");
                    }
                    (Value::Nil, e).into_lua_multi(&lua)
                }
            }
        });
        m.add_async_method("receive", |lua, this, pat: Option<Value>| async move {
            let pattern = match pat {
                None => Pattern::Line,
                Some(Value::String(s))
                    if s.as_bytes().as_ref() == b"*l" || s.as_bytes().as_ref() == b"*L" =>
                {
                    Pattern::Line
                }
                Some(Value::String(s)) if s.as_bytes().as_ref() == b"*a" => Pattern::All,
                Some(Value::Integer(n)) if n >= 0 => Pattern::Bytes(n as usize),
                Some(Value::Number(n)) if n >= 0.0 => Pattern::Bytes(n as usize),
                Some(other) => {
                    return Err(mlua::Error::runtime(format!(
                        "bad argument #1 to 'receive' (bad pattern argument: {})",
                        other.to_string().unwrap_or_default()
                    )));
                }
            };
            let this = this.clone();
            let Some((mut stream, mut buf, timeout)) = this.take() else {
                return (Value::Nil, "closed").into_lua_multi(&lua);
            };
            let result: Result<Vec<u8>, String> = loop {
                match pattern {
                    Pattern::Line => {
                        if let Some(i) = buf.iter().position(|b| *b == b'\n') {
                            let mut line: Vec<u8> = buf.drain(..=i).collect();
                            line.pop();
                            line.retain(|b| *b != b'\r');
                            break Ok(line);
                        }
                    }
                    Pattern::Bytes(n) if buf.len() >= n => break Ok(buf.drain(..n).collect()),
                    _ => {}
                }
                match fill(&mut stream, &mut buf, timeout).await {
                    Ok(true) => {}
                    Ok(false) if matches!(pattern, Pattern::All) => {
                        break Ok(std::mem::take(&mut buf));
                    }
                    Ok(false) => break Err("closed".into()),
                    Err(e) => break Err(e),
                }
            };
            match result {
                Ok(data) => {
                    this.put_back(stream, buf);
                    lua.create_string(data)?.into_lua_multi(&lua)
                }
                Err(e) => {
                    let partial = lua.create_string(&buf)?;
                    if e == "timeout" {
                        // A read timeout keeps the connection, as in OpenResty.
                        this.put_back(stream, Vec::new());
                    }
                    (Value::Nil, e, partial).into_lua_multi(&lua)
                }
            }
        });
        m.add_async_method("receiveany", |lua, this, max: usize| async move {
            let this = this.clone();
            let Some((mut stream, mut buf, timeout)) = this.take() else {
                return (Value::Nil, "closed").into_lua_multi(&lua);
            };
            if buf.is_empty() {
                match fill(&mut stream, &mut buf, timeout).await {
                    Ok(true) => {}
                    Ok(false) => return (Value::Nil, "closed").into_lua_multi(&lua),
                    Err(e) => {
                        if e == "timeout" {
                            this.put_back(stream, buf);
                        }
                        return (Value::Nil, e).into_lua_multi(&lua);
                    }
                }
            }
            let n = max.min(buf.len());
            let data: Vec<u8> = buf.drain(..n).collect();
            this.put_back(stream, buf);
            lua.create_string(data)?.into_lua_multi(&lua)
        });
        m.add_method(
            "receiveuntil",
            |lua, this, (pattern, opts): (LuaString, Option<Table>)| {
                let pat = pattern.as_bytes().to_vec();
                if pat.is_empty() {
                    return (Value::Nil, "pattern is empty").into_lua_multi(lua);
                }
                let inclusive = opts
                    .and_then(|o| o.get::<Option<bool>>("inclusive").ok().flatten())
                    .unwrap_or(false);
                let sock = this.clone();
                let iter = lua.create_async_function(move |lua, _size: Option<usize>| {
                    let sock = sock.clone();
                    let pat = pat.clone();
                    async move {
                        let Some((mut stream, mut buf, timeout)) = sock.take() else {
                            return (Value::Nil, "closed").into_lua_multi(&lua);
                        };
                        loop {
                            if let Some(i) =
                                buf.windows(pat.len()).position(|w| w == pat.as_slice())
                            {
                                let end = if inclusive { i + pat.len() } else { i };
                                let data: Vec<u8> = buf[..end].to_vec();
                                buf.drain(..i + pat.len());
                                sock.put_back(stream, buf);
                                return lua.create_string(data)?.into_lua_multi(&lua);
                            }
                            match fill(&mut stream, &mut buf, timeout).await {
                                Ok(true) => {}
                                Ok(false) => {
                                    return (Value::Nil, "closed", lua.create_string(&buf)?)
                                        .into_lua_multi(&lua);
                                }
                                Err(e) => {
                                    let partial = lua.create_string(&buf)?;
                                    if e == "timeout" {
                                        // A read timeout keeps the connection; what was read
                                        // so far is handed back as the partial result.
                                        sock.put_back(stream, Vec::new());
                                    }
                                    return (Value::Nil, e, partial).into_lua_multi(&lua);
                                }
                            }
                        }
                    }
                })?;
                iter.into_lua_multi(lua)
            },
        );
        m.add_method("settimeout", |_, this, t: Option<f64>| {
            let d = ms(t);
            let mut st = this.0.borrow_mut();
            st.connect_timeout = d;
            st.send_timeout = d;
            st.read_timeout = d;
            Ok(())
        });
        m.add_method(
            "settimeouts",
            |_, this, (c, s, r): (Option<f64>, Option<f64>, Option<f64>)| {
                let mut st = this.0.borrow_mut();
                st.connect_timeout = ms(c);
                st.send_timeout = ms(s);
                st.read_timeout = ms(r);
                Ok(())
            },
        );
        m.add_method(
            "setkeepalive",
            |lua, this, (timeout, size): (Option<f64>, Option<usize>)| {
                let mut st = this.0.borrow_mut();
                let Some(stream) = st.stream.take() else {
                    return (Value::Nil, "closed").into_lua_multi(lua);
                };
                if !st.buf.is_empty() {
                    // Unread data means the exchange is not finished: such a connection is not reusable.
                    st.buf.clear();
                    return (Value::Nil, "unread data in buffer").into_lua_multi(lua);
                }
                let key = st.pool_key.clone().unwrap_or_default();
                let size = size.unwrap_or(30).max(1);
                // No timeout: lua_socket_keepalive_timeout's default; 0: kept with no limit.
                let expires = match timeout {
                    Some(0.0) => None,
                    t => Some(Instant::now() + ms(t).unwrap_or(DEFAULT_TIMEOUT)),
                };
                let reused = st.reused;
                POOL.with(|p| {
                    let mut p = p.borrow_mut();
                    let list = p.entry(key).or_default();
                    if list.len() >= size {
                        list.remove(0);
                    }
                    list.push(Pooled {
                        stream,
                        buf: Vec::new(),
                        reused,
                        expires,
                    });
                });
                1.into_lua_multi(lua)
            },
        );
        m.add_method("getreusedtimes", |_, this, ()| Ok(this.0.borrow().reused));
        m.add_method("close", |lua, this, ()| {
            let mut st = this.0.borrow_mut();
            match st.stream.take() {
                Some(_) => 1.into_lua_multi(lua),
                None => (Value::Nil, "closed").into_lua_multi(lua),
            }
        });
        m.add_method("setoption", |_, _, (_name, _value): (String, Value)| {
            Ok(true)
        });
        m.add_async_method(
            "sslhandshake",
            |lua,
             this,
             (reused, name, verify, status_req): (
                Value,
                Option<String>,
                Option<bool>,
                Option<bool>,
            )| async move {
                if status_req == Some(true) {
                    return (
                        Value::Nil,
                        "send_status_req (OCSP status request) is not supported",
                    )
                        .into_lua_multi(&lua);
                }
                // `false` asks for no session object back; anything else gets one.
                let want_session = !matches!(reused, Value::Boolean(false));
                let this = this.clone();
                let Some((stream, buf, _)) = this.take() else {
                    return (Value::Nil, "closed").into_lua_multi(&lua);
                };
                let timeout = {
                    let st = this.0.borrow();
                    st.connect_timeout.or(st.read_timeout)
                };
                let result = if stream.is_tls() {
                    // A connection taken from the pool is already TLS, as in OpenResty: the
                    // handshake is not redone.
                    Ok(stream)
                } else {
                    match tokio::time::timeout(
                        timeout.unwrap_or(DEFAULT_TIMEOUT),
                        tls::handshake(stream, name.as_deref(), verify.unwrap_or(false)),
                    )
                    .await
                    {
                        Ok(r) => r,
                        Err(_) => Err("timeout".into()),
                    }
                };
                match result {
                    Ok(stream) => {
                        this.put_back(stream, buf);
                        if want_session {
                            lua.create_userdata(tls::Session)?.into_lua_multi(&lua)
                        } else {
                            true.into_lua_multi(&lua)
                        }
                    }
                    // A failed handshake leaves no usable connection, as in lua-nginx-module.
                    Err(e) => (Value::Nil, e).into_lua_multi(&lua),
                }
            },
        );
    }
}

pub fn register(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let socket = lua.create_table()?;
    socket.set(
        "tcp",
        lua.create_function(|lua, ()| lua.create_userdata(Tcp::default()))?,
    )?;
    // `ngx.socket.connect` waits, so it is written in Lua over `tcp():connect()`.
    let connect: mlua::Function = lua
        .load(
            "local socket = ... return function(host, port, opts) \
               local sock = socket.tcp() local ok, err = sock:connect(host, port, opts) \
               if not ok then return nil, err end return sock end",
        )
        .set_name("=ngx.socket.connect")
        .call(socket.clone())?;
    socket.set("connect", connect)?;
    ngx.set("socket", socket)?;
    Ok(())
}

/// `ngx.socket.udp()`: `setpeername`, `send`, `receive`, `settimeout`, `close`.
#[derive(Clone, Default)]
struct Udp(Rc<RefCell<UdpState>>);

#[derive(Default)]
struct UdpState {
    sock: Option<Rc<UdpSock>>,
    timeout: Option<Duration>,
}

impl UserData for Udp {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_async_method(
            "setpeername",
            |lua, this, (host, port): (String, Option<u16>)| async move {
                let this = this.clone();
                let timeout = this.0.borrow().timeout;
                if let Some(path) = host.strip_prefix("unix:") {
                    return match unix_datagram(path) {
                        Ok(sock) => {
                            this.0.borrow_mut().sock = Some(Rc::new(UdpSock::Unix(sock)));
                            1.into_lua_multi(&lua)
                        }
                        Err(e) => (Value::Nil, io_err(&e)).into_lua_multi(&lua),
                    };
                }
                let Some(port) = port else {
                    return (Value::Nil, "no port specified").into_lua_multi(&lua);
                };
                let connect = async {
                    let addr = tokio::net::lookup_host((host.as_str(), port))
                        .await?
                        .next()
                        .ok_or_else(|| {
                            io::Error::new(
                                io::ErrorKind::NotFound,
                                format!("{host} could not be resolved"),
                            )
                        })?;
                    let local: std::net::SocketAddr = if addr.is_ipv6() {
                        "[::]:0".parse().unwrap_or(addr)
                    } else {
                        "0.0.0.0:0".parse().unwrap_or(addr)
                    };
                    let sock = tokio::net::UdpSocket::bind(local).await?;
                    sock.connect(addr).await?;
                    Ok(sock)
                };
                match with_timeout(timeout, connect).await {
                    Ok(sock) => {
                        this.0.borrow_mut().sock = Some(Rc::new(UdpSock::Inet(sock)));
                        1.into_lua_multi(&lua)
                    }
                    Err(e) => (Value::Nil, e).into_lua_multi(&lua),
                }
            },
        );
        m.add_async_method("send", |lua, this, data: Value| async move {
            let mut bytes = Vec::new();
            flatten(&data, &mut bytes).map_err(mlua::Error::runtime)?;
            let (sock, timeout) = {
                let st = this.0.borrow();
                (st.sock.clone(), st.timeout)
            };
            let Some(sock) = sock else {
                return (Value::Nil, "closed").into_lua_multi(&lua);
            };
            match with_timeout(timeout, sock.send(&bytes)).await {
                Ok(_) => 1.into_lua_multi(&lua),
                Err(e) => (Value::Nil, e).into_lua_multi(&lua),
            }
        });
        m.add_async_method("receive", |lua, this, size: Option<usize>| async move {
            let (sock, timeout) = {
                let st = this.0.borrow();
                (st.sock.clone(), st.timeout)
            };
            let Some(sock) = sock else {
                return (Value::Nil, "closed").into_lua_multi(&lua);
            };
            let mut buf = vec![0u8; size.unwrap_or(8192).clamp(1, 65536)];
            match with_timeout(timeout, sock.recv(&mut buf)).await {
                Ok(n) => lua.create_string(&buf[..n])?.into_lua_multi(&lua),
                Err(e) => (Value::Nil, e).into_lua_multi(&lua),
            }
        });
        m.add_method("settimeout", |_, this, t: Option<f64>| {
            this.0.borrow_mut().timeout = ms(t);
            Ok(())
        });
        m.add_method("close", |lua, this, ()| {
            match this.0.borrow_mut().sock.take() {
                Some(_) => 1.into_lua_multi(lua),
                None => (Value::Nil, "closed").into_lua_multi(lua),
            }
        });
    }
}

/// A datagram socket: UDP, or a unix domain datagram socket for `unix:/path`.
enum UdpSock {
    Inet(tokio::net::UdpSocket),
    Unix(tokio::net::UnixDatagram),
}

impl UdpSock {
    async fn send(&self, data: &[u8]) -> io::Result<usize> {
        match self {
            UdpSock::Inet(s) => s.send(data).await,
            UdpSock::Unix(s) => s.send(data).await,
        }
    }

    async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            UdpSock::Inet(s) => s.recv(buf).await,
            UdpSock::Unix(s) => s.recv(buf).await,
        }
    }
}

/// A unix datagram socket connected to `path`. It is bound to a unique abstract address first:
/// an unbound socket could send, but the server would have no address to reply to.
fn unix_datagram(path: &str) -> io::Result<tokio::net::UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "moongate-udp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let sock = std::os::unix::net::UnixDatagram::bind_addr(&addr)?;
    sock.connect(path)?;
    sock.set_nonblocking(true)?;
    tokio::net::UnixDatagram::from_std(sock)
}

/// Adds `udp` to `ngx.socket`.
pub fn register_udp(lua: &Lua, ngx: &Table) -> mlua::Result<()> {
    let socket: Table = ngx.get("socket")?;
    socket.set(
        "udp",
        lua.create_function(|lua, ()| lua.create_userdata(Udp::default()))?,
    )?;
    Ok(())
}
