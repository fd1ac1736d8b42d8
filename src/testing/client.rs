//! The test client: requests as Test::Nginx sends them, over raw sockets so framing is never
//! normalised away (pipelined requests on one connection, raw requests byte for byte), and a
//! response reader that frames by `Content-Length`, chunked encoding or connection close.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One response as received.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    pub status: u16,
    /// Header names as sent, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// Every value of a header (case-insensitive name).
    /// The values of header `name`, matched as Test::Nginx's HTTP::Headers matches names: case
    /// aside, `_` and `-` are the same character (it translates underscores on both sides).
    pub fn header(&self, name: &str) -> Vec<&str> {
        let same = |a: &str, b: &str| {
            a.len() == b.len()
                && a.bytes().zip(b.bytes()).all(|(x, y)| {
                    let norm = |c: u8| {
                        if c == b'_' {
                            b'-'
                        } else {
                            c.to_ascii_lowercase()
                        }
                    };
                    norm(x) == norm(y)
                })
        };
        self.headers
            .iter()
            .filter(|(k, _)| same(k, name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to 127.0.0.1:{0}: {1}")]
    Connect(u16, std::io::Error),
    #[error("timed out after {0:?} waiting for the response")]
    Timeout(Duration),
    #[error("connection error: {0}")]
    Io(std::io::Error),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("the server closed the connection before a complete response")]
    Closed,
}

/// A request parsed from a `--- request` section: `METHOD URI [HTTP/x.y]` then the body.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: String,
    pub uri: String,
    pub version: String,
    pub body: Vec<u8>,
}

impl Request {
    pub fn parse(text: &str) -> Result<Request, String> {
        let text = text.trim_start_matches(['\n', ' ']);
        let (first, body) = match text.split_once('\n') {
            Some((f, b)) => (f, b),
            None => (text, ""),
        };
        let mut parts = first.split_whitespace();
        let method = parts.next().ok_or("empty request")?.to_string();
        let uri = parts
            .next()
            .ok_or_else(|| format!("request line {first:?} has no URI"))?
            .to_string();
        let version = parts.next().unwrap_or("HTTP/1.1").to_string();
        // The lines after the request line are the body; `encode` decides how much of it
        // goes out, as Test::Nginx does.
        Ok(Request {
            method,
            uri,
            version,
            body: body.as_bytes().to_vec(),
        })
    }

    /// The bytes on the wire: `Host: localhost` unless `more_headers` names one, and
    /// `Connection: close` on the last request of a connection.
    pub fn encode(&self, more_headers: &[(String, String)], last: bool) -> Vec<u8> {
        let mut out = format!("{} {} {}\r\n", self.method, self.uri, self.version);
        let has = |n: &str| more_headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !has("host") {
            out.push_str("Host: localhost\r\n");
        }
        if !has("connection") && self.version != "HTTP/1.0" {
            out.push_str(if last {
                "Connection: close\r\n"
            } else {
                "Connection: keep-alive\r\n"
            });
        }
        for (k, v) in more_headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        let chunked = more_headers.iter().any(|(k, v)| {
            k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
        });
        // Test::Nginx sends a chunked body, or one with a given Content-Length, byte for byte;
        // otherwise it trims white space at both ends and counts what is left.
        let body: &[u8] = if chunked || has("content-length") {
            &self.body
        } else {
            self.body.trim_ascii()
        };
        if (!body.is_empty() || matches!(self.method.as_str(), "POST" | "PUT" | "PATCH"))
            && !has("content-length")
            && !has("transfer-encoding")
        {
            out.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        out.push_str("\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(body);
        bytes
    }
}

/// `Name: value` lines of a `--- more_headers` section.
pub fn parse_headers(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim_end_matches('\r');
            let (k, v) = l.split_once(':')?;
            let k = k.trim();
            (!k.is_empty()).then(|| (k.to_string(), v.trim().to_string()))
        })
        .collect()
}

/// A connection with a read buffer, reading responses one after the other.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
    deadline: Instant,
    timeout: Duration,
}

impl Conn {
    pub fn open(port: u16, timeout: Duration) -> Result<Conn, ClientError> {
        let stream =
            TcpStream::connect(("127.0.0.1", port)).map_err(|e| ClientError::Connect(port, e))?;
        let _ = stream.set_nodelay(true);
        Ok(Conn {
            stream,
            buf: Vec::new(),
            eof: false,
            deadline: Instant::now() + timeout,
            timeout,
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes).map_err(ClientError::Io)
    }

    fn fill(&mut self) -> Result<(), ClientError> {
        if self.eof {
            return Err(ClientError::Closed);
        }
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(ClientError::Timeout(self.timeout));
        }
        self.stream
            .set_read_timeout(Some(left))
            .map_err(ClientError::Io)?;
        let mut chunk = [0u8; 16384];
        match self.stream.read(&mut chunk) {
            Ok(0) => {
                self.eof = true;
                Ok(())
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                Err(ClientError::Timeout(self.timeout))
            }
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                self.eof = true;
                Ok(())
            }
            Err(e) => Err(ClientError::Io(e)),
        }
    }

    /// Reads everything until the peer closes (for raw requests whose framing is the test).
    pub fn read_to_close(&mut self) -> Result<Vec<u8>, ClientError> {
        while !self.eof {
            self.fill()?;
        }
        Ok(std::mem::take(&mut self.buf))
    }

    /// Reads one response; `head_only` for answers to HEAD.
    pub fn read_response(&mut self, head_only: bool) -> Result<Response, ClientError> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            if self.eof {
                return Err(ClientError::Closed);
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
        self.buf.drain(..head_end + 4);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| ClientError::Malformed(format!("status line {status_line:?}")))?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| {
                let (k, v) = l.split_once(':')?;
                Some((k.trim().to_string(), v.trim().to_string()))
            })
            .collect();
        let mut resp = Response {
            status,
            headers,
            body: Vec::new(),
        };
        if head_only || status == 204 || status == 304 || (100..200).contains(&status) {
            return Ok(resp);
        }
        let chunked = resp
            .header("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            resp.body = self.read_chunked()?;
        } else if let Some(len) = resp.header("content-length").first() {
            let len: usize = len
                .parse()
                .map_err(|_| ClientError::Malformed(format!("Content-Length {len:?}")))?;
            while self.buf.len() < len {
                if self.eof {
                    return Err(ClientError::Closed);
                }
                self.fill()?;
            }
            resp.body = self.buf.drain(..len).collect();
        } else {
            while !self.eof {
                self.fill()?;
            }
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    fn read_chunked(&mut self) -> Result<Vec<u8>, ClientError> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                if self.eof {
                    return Err(ClientError::Closed);
                }
                self.fill()?;
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            self.buf.drain(..line_end + 2);
            let size_hex = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_hex, 16)
                .map_err(|_| ClientError::Malformed(format!("chunk size {line:?}")))?;
            if size == 0 {
                // Trailers end at an empty line.
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        let empty = i == 0;
                        self.buf.drain(..i + 2);
                        if empty {
                            return Ok(body);
                        }
                        continue;
                    }
                    if self.eof {
                        return Ok(body);
                    }
                    self.fill()?;
                }
            }
            while self.buf.len() < size + 2 {
                if self.eof {
                    return Err(ClientError::Closed);
                }
                self.fill()?;
            }
            body.extend_from_slice(&self.buf[..size]);
            self.buf.drain(..size + 2);
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_section_is_a_line_then_a_body_trimmed_as_test_nginx_does() {
        let r = Request::parse("POST /t\n {\"a\":1}\n").unwrap();
        assert_eq!((r.method.as_str(), r.uri.as_str()), ("POST", "/t"));
        let wire = String::from_utf8(r.encode(&[], true)).unwrap();
        assert!(wire.contains("Host: localhost\r\n"));
        assert!(wire.contains("Content-Length: 7\r\n"));
        assert!(wire.contains("Connection: close\r\n"));
        assert!(wire.ends_with("\r\n\r\n{\"a\":1}"), "{wire:?}");
    }

    #[test]
    fn a_chunked_body_goes_out_byte_for_byte() {
        let r = Request::parse("POST /t\n6\r\nHello \r\n0\r\n\r\n").unwrap();
        let h = parse_headers("Transfer-Encoding: chunked");
        let wire = String::from_utf8(r.encode(&h, true)).unwrap();
        assert!(!wire.contains("Content-Length"), "{wire:?}");
        assert!(
            wire.ends_with("\r\n\r\n6\r\nHello \r\n0\r\n\r\n"),
            "{wire:?}"
        );
    }

    #[test]
    fn more_headers_override_the_defaults() {
        let h = parse_headers("Host: foo.com\nX-A: 1\n\n");
        let wire = String::from_utf8(Request::parse("GET /").unwrap().encode(&h, true)).unwrap();
        assert!(!wire.contains("localhost"), "{wire}");
        assert!(wire.contains("Host: foo.com\r\nX-A: 1\r\n"), "{wire}");
    }
}
