//! The access log: one line per request in an nginx `log_format`, written after the response.
//!
//! The format is compiled once into segments (literal text and variables); unknown variables are
//! refused at start, as nginx refuses them. Each worker owns a buffered writer flushed every
//! [`FLUSH_INTERVAL`] or when full, so logging costs one formatted line in memory per request and
//! no syscall on the request path. Lines from different workers never interleave: each flush writes
//! whole lines with one `write` on an `O_APPEND` file.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use http::HeaderMap;

use super::clock;

/// How often each worker flushes its buffered access-log lines.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);
const BUFFER_LIMIT: usize = 64 * 1024;

/// APISIX's default `access_log_format`.
pub const DEFAULT_FORMAT: &str = "$remote_addr - $remote_user [$time_local] $http_host \"$request\" $status $body_bytes_sent $request_time \"$http_referer\" \"$http_user_agent\" $upstream_addr $upstream_status $upstream_response_time \"$upstream_scheme://$upstream_host$upstream_uri\"";

/// How variable values are escaped, as nginx's `log_format … escape=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `"`, `\` and bytes < 0x20 or ≥ 0x7f as `\xHH`.
    Default,
    /// JSON string escaping.
    Json,
    None,
}

impl Escape {
    pub fn parse(s: &str) -> Option<Escape> {
        match s {
            "default" => Some(Escape::Default),
            "json" => Some(Escape::Json),
            "none" => Some(Escape::None),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Var {
    RemoteAddr,
    RemotePort,
    RemoteUser,
    TimeLocal,
    TimeIso8601,
    Msec,
    Request,
    RequestMethod,
    RequestUri,
    Uri,
    Args,
    ServerProtocol,
    Host,
    ServerPort,
    Status,
    BodyBytesSent,
    BytesSent,
    RequestLength,
    RequestTime,
    UpstreamAddr,
    UpstreamStatus,
    UpstreamResponseTime,
    UpstreamConnectTime,
    UpstreamHeaderTime,
    UpstreamScheme,
    UpstreamHost,
    UpstreamUri,
    RouteId,
    /// `$http_NAME`: index into the captured request headers.
    Header(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Text(String),
    Var(Var),
}

/// A compiled `log_format`.
#[derive(Debug, Clone)]
pub struct Format {
    segments: Vec<Segment>,
    /// Header names referenced as `$http_*`, in header-map form (`user-agent`).
    headers: Vec<http::HeaderName>,
    escape: Escape,
}

/// An unknown variable or a malformed format.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("access_log_format: {0}")]
pub struct FormatError(String);

impl Format {
    pub fn compile(src: &str, escape: Escape) -> Result<Format, FormatError> {
        let mut segments = Vec::new();
        let mut headers: Vec<http::HeaderName> = Vec::new();
        let mut text = String::new();
        let bytes = src.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'$' {
                let start = i;
                while i < bytes.len() && bytes[i] != b'$' {
                    i += 1;
                }
                text.push_str(&src[start..i]);
                continue;
            }
            // `$name` or `${name}`
            i += 1;
            let braced = bytes.get(i) == Some(&b'{');
            if braced {
                i += 1;
            }
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
                i += 1;
            }
            let name = &src[start..i];
            if braced {
                if bytes.get(i) != Some(&b'}') {
                    return Err(FormatError(format!("unclosed ${{ at byte {}", start - 2)));
                }
                i += 1;
            }
            if name.is_empty() {
                return Err(FormatError(format!(
                    "empty variable name at byte {}",
                    start - 1
                )));
            }
            if !text.is_empty() {
                segments.push(Segment::Text(std::mem::take(&mut text)));
            }
            let var = match name {
                "remote_addr" => Var::RemoteAddr,
                "remote_port" => Var::RemotePort,
                "remote_user" => Var::RemoteUser,
                "time_local" => Var::TimeLocal,
                "time_iso8601" => Var::TimeIso8601,
                "msec" => Var::Msec,
                "request" => Var::Request,
                "request_method" => Var::RequestMethod,
                "request_uri" => Var::RequestUri,
                "uri" | "document_uri" => Var::Uri,
                "args" | "query_string" => Var::Args,
                "server_protocol" => Var::ServerProtocol,
                "host" => Var::Host,
                "server_port" => Var::ServerPort,
                "status" => Var::Status,
                "body_bytes_sent" => Var::BodyBytesSent,
                "bytes_sent" => Var::BytesSent,
                "request_length" => Var::RequestLength,
                "request_time" => Var::RequestTime,
                "upstream_addr" => Var::UpstreamAddr,
                "upstream_status" => Var::UpstreamStatus,
                "upstream_response_time" => Var::UpstreamResponseTime,
                "upstream_connect_time" => Var::UpstreamConnectTime,
                "upstream_header_time" => Var::UpstreamHeaderTime,
                "upstream_scheme" => Var::UpstreamScheme,
                "upstream_host" => Var::UpstreamHost,
                "upstream_uri" => Var::UpstreamUri,
                "route_id" => Var::RouteId,
                other => match other.strip_prefix("http_") {
                    Some(h) if !h.is_empty() => {
                        let hname = http::HeaderName::from_bytes(h.replace('_', "-").as_bytes())
                            .map_err(|_| FormatError(format!("bad header variable ${other}")))?;
                        let idx = match headers.iter().position(|x| *x == hname) {
                            Some(idx) => idx,
                            None => {
                                headers.push(hname);
                                headers.len() - 1
                            }
                        };
                        Var::Header(idx)
                    }
                    _ => return Err(FormatError(format!("unknown variable ${other}"))),
                },
            };
            segments.push(Segment::Var(var));
        }
        if !text.is_empty() {
            segments.push(Segment::Text(text));
        }
        Ok(Format {
            segments,
            headers,
            escape,
        })
    }

    /// Takes the request-header values the format needs, before the request is forwarded.
    pub fn capture(&self, headers: &HeaderMap) -> Vec<Option<String>> {
        self.headers
            .iter()
            .map(|name| {
                let mut values = headers.get_all(name).iter();
                let first = values.next()?;
                let mut s = String::from_utf8_lossy(first.as_bytes()).into_owned();
                // nginx joins repeated headers (cookies with "; ", others with ", ") in $http_*.
                for v in values {
                    s.push_str(if name == http::header::COOKIE {
                        "; "
                    } else {
                        ", "
                    });
                    s.push_str(&String::from_utf8_lossy(v.as_bytes()));
                }
                Some(s)
            })
            .collect()
    }

    /// Formats one line (with its trailing newline) into `out`.
    pub fn write_line(&self, r: &Record<'_>, out: &mut String) {
        for seg in &self.segments {
            match seg {
                Segment::Text(t) => out.push_str(t),
                Segment::Var(v) => self.write_var(v, r, out),
            }
        }
        out.push('\n');
    }

    fn write_var(&self, v: &Var, r: &Record<'_>, out: &mut String) {
        let esc = self.escape;
        match v {
            Var::RemoteAddr => {
                let _ = write!(out, "{}", r.remote.ip());
            }
            Var::RemotePort => {
                let _ = write!(out, "{}", r.remote.port());
            }
            Var::RemoteUser => push_missing(out, esc),
            Var::TimeLocal => clock::push_time_local(out),
            Var::TimeIso8601 => clock::push_time_iso8601(out),
            Var::Msec => {
                let (s, ms) = clock::now_unix();
                let _ = write!(out, "{s}.{ms:03}");
            }
            Var::Request => {
                let mut line = String::with_capacity(r.method.len() + r.request_uri.len() + 10);
                line.push_str(r.method);
                line.push(' ');
                line.push_str(r.request_uri);
                line.push(' ');
                line.push_str(r.protocol);
                push_escaped(out, &line, esc);
            }
            Var::RequestMethod => push_escaped(out, r.method, esc),
            Var::RequestUri => push_escaped(out, r.request_uri, esc),
            Var::Uri => push_escaped(out, r.uri, esc),
            Var::Args => push_escaped(out, r.args, esc),
            Var::ServerProtocol => out.push_str(r.protocol),
            Var::Host => push_escaped(out, r.host, esc),
            Var::ServerPort => {
                let _ = write!(out, "{}", r.server_port);
            }
            Var::Status => {
                let _ = write!(out, "{}", r.status);
            }
            Var::BodyBytesSent => {
                let _ = write!(out, "{}", r.body_bytes_sent);
            }
            Var::BytesSent => {
                let _ = write!(out, "{}", r.bytes_sent);
            }
            Var::RequestLength => {
                let _ = write!(out, "{}", r.request_length);
            }
            Var::RequestTime => {
                let _ = write!(out, "{:.3}", r.start.elapsed().as_secs_f64());
            }
            Var::UpstreamAddr => match &r.upstream {
                Some(u) => {
                    let _ = write!(out, "{}", u.addr);
                }
                None => push_missing(out, esc),
            },
            Var::UpstreamStatus => match r.upstream.as_ref().and_then(|u| u.status) {
                Some(s) => {
                    let _ = write!(out, "{s}");
                }
                None => push_missing(out, esc),
            },
            Var::UpstreamResponseTime => {
                push_secs(out, r.upstream.as_ref().and_then(|u| u.response_time), esc)
            }
            Var::UpstreamConnectTime => {
                push_secs(out, r.upstream.as_ref().and_then(|u| u.connect_time), esc)
            }
            Var::UpstreamHeaderTime => {
                push_secs(out, r.upstream.as_ref().and_then(|u| u.header_time), esc)
            }
            Var::UpstreamScheme => out.push_str(r.upstream.map_or("", |u| u.scheme)),
            Var::UpstreamHost => {
                if let Some(u) = &r.upstream {
                    push_escaped(out, &u.host, esc)
                }
            }
            Var::UpstreamUri => {
                if let Some(u) = &r.upstream {
                    push_escaped(out, &u.uri, esc)
                }
            }
            Var::RouteId => match r.route_id {
                Some(id) => push_escaped(out, id, esc),
                None => push_missing(out, esc),
            },
            Var::Header(i) => match r.headers.get(*i).and_then(|v| v.as_deref()) {
                Some(v) => push_escaped(out, v, esc),
                None => push_missing(out, esc),
            },
        }
    }
}

/// nginx writes `-` for an unset variable (an empty string in JSON escaping).
fn push_missing(out: &mut String, esc: Escape) {
    if esc != Escape::Json {
        out.push('-');
    }
}

fn push_secs(out: &mut String, d: Option<Duration>, esc: Escape) {
    match d {
        Some(d) => {
            let _ = write!(out, "{:.3}", d.as_secs_f64());
        }
        None => push_missing(out, esc),
    }
}

fn push_escaped(out: &mut String, s: &str, esc: Escape) {
    match esc {
        Escape::None => out.push_str(s),
        Escape::Default => {
            for b in s.bytes() {
                if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
                    let _ = write!(out, "\\x{b:02X}");
                } else {
                    out.push(b as char);
                }
            }
        }
        Escape::Json => {
            for c in s.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\t' => out.push_str("\\t"),
                    c if (c as u32) < 0x20 => {
                        let _ = write!(out, "\\u{:04x}", c as u32);
                    }
                    c => out.push(c),
                }
            }
        }
    }
}

/// What the upstream part of a request did.
#[derive(Debug, Clone)]
pub struct UpstreamRecord {
    pub addr: SocketAddr,
    pub status: Option<u16>,
    pub connect_time: Option<Duration>,
    pub header_time: Option<Duration>,
    pub response_time: Option<Duration>,
    pub host: String,
    pub uri: String,
    /// `http` or `https`.
    pub scheme: &'static str,
}

/// Everything one access-log line can show.
pub struct Record<'a> {
    pub remote: SocketAddr,
    pub server_port: u16,
    pub method: &'a str,
    pub request_uri: &'a str,
    pub uri: &'a str,
    pub args: &'a str,
    pub protocol: &'a str,
    pub host: &'a str,
    pub status: u16,
    pub body_bytes_sent: u64,
    pub bytes_sent: u64,
    pub request_length: u64,
    pub start: Instant,
    pub upstream: Option<&'a UpstreamRecord>,
    pub route_id: Option<&'a str>,
    /// Values captured by [`Format::capture`].
    pub headers: &'a [Option<String>],
}

/// One worker's buffered access-log writer.
pub struct Writer {
    file: File,
    path: PathBuf,
    buf: String,
    last_flush: Instant,
}

impl Writer {
    pub fn open(path: &Path) -> std::io::Result<Writer> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Writer {
            file,
            path: path.to_path_buf(),
            buf: String::with_capacity(BUFFER_LIMIT),
            last_flush: Instant::now(),
        })
    }

    /// The buffer lines are appended to; call [`Writer::maybe_flush`] after appending.
    pub fn buffer(&mut self) -> &mut String {
        &mut self.buf
    }

    pub fn maybe_flush(&mut self) {
        if self.buf.len() >= BUFFER_LIMIT || self.last_flush.elapsed() >= FLUSH_INTERVAL {
            self.flush();
        }
    }

    pub fn flush(&mut self) {
        if !self.buf.is_empty() {
            if let Err(e) = self.file.write_all(self.buf.as_bytes()) {
                log::error!("failed to write access log {}: {e}", self.path.display());
            }
            self.buf.clear();
        }
        self.last_flush = Instant::now();
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record<'a>(headers: &'a [Option<String>], up: Option<&'a UpstreamRecord>) -> Record<'a> {
        Record {
            remote: "127.0.0.1:5555".parse().unwrap(),
            server_port: 9080,
            method: "GET",
            request_uri: "/a?b=1",
            uri: "/a",
            args: "b=1",
            protocol: "HTTP/1.1",
            host: "example.com",
            status: 200,
            body_bytes_sent: 12,
            bytes_sent: 100,
            request_length: 80,
            start: Instant::now(),
            upstream: up,
            route_id: Some("1"),
            headers,
        }
    }

    #[test]
    fn default_format_compiles_and_writes_dashes_for_missing() {
        let f = Format::compile(DEFAULT_FORMAT, Escape::Default).unwrap();
        let mut hm = HeaderMap::new();
        hm.insert("host", "example.com".parse().unwrap());
        let cap = f.capture(&hm);
        let mut out = String::new();
        f.write_line(&record(&cap, None), &mut out);
        assert!(out.starts_with("127.0.0.1 - - ["), "{out}");
        assert!(
            out.contains("] example.com \"GET /a?b=1 HTTP/1.1\" 200 12 "),
            "{out}"
        );
        assert!(out.contains("\"-\" \"-\" - - -"), "{out}");
        assert!(out.ends_with("\"://\"\n"), "{out}");
    }

    #[test]
    fn unknown_variable_is_refused() {
        let err = Format::compile("$remote_addr $nope", Escape::Default).unwrap_err();
        assert!(err.to_string().contains("$nope"), "{err}");
    }

    #[test]
    fn json_escape_quotes_and_empty_for_missing() {
        let f = Format::compile(
            "{\"ua\":\"$http_user_agent\",\"u\":\"$upstream_addr\"}",
            Escape::Json,
        )
        .unwrap();
        let mut hm = HeaderMap::new();
        hm.insert("user-agent", "a\"b".parse().unwrap());
        let cap = f.capture(&hm);
        let mut out = String::new();
        f.write_line(&record(&cap, None), &mut out);
        assert_eq!(out, "{\"ua\":\"a\\\"b\",\"u\":\"\"}\n");
    }

    #[test]
    fn default_escape_hex_encodes_quotes() {
        let mut out = String::new();
        push_escaped(&mut out, "a\"b\x01", Escape::Default);
        assert_eq!(out, "a\\x22b\\x01");
    }

    #[test]
    fn upstream_fields_are_written() {
        let f = Format::compile(
            "$upstream_addr $upstream_status $upstream_scheme://$upstream_host$upstream_uri",
            Escape::Default,
        )
        .unwrap();
        let up = UpstreamRecord {
            addr: "127.0.0.1:1980".parse().unwrap(),
            status: Some(200),
            connect_time: None,
            header_time: None,
            response_time: Some(Duration::from_millis(5)),
            host: "example.com".into(),
            uri: "/a?b=1".into(),
            scheme: "http",
        };
        let mut out = String::new();
        f.write_line(&record(&[], Some(&up)), &mut out);
        assert_eq!(out, "127.0.0.1:1980 200 http://example.com/a?b=1\n");
    }
}
