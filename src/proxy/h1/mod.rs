//! HTTP/1.1 to upstreams, run inside the request's own task: the request is written, the
//! response head read and parsed, and the response body read by the client side's polling,
//! with no connection task and no channel in between (hyper's client spent about 13,700
//! instructions per request on those). The client side has its own codec too (`server::h1`).
//!
//! One module per step: [`stream`] (the socket), [`request`] (writing), [`response`] (the head
//! and the body's framing), [`chunked`] (decoding), [`body`] (the response body).

pub mod body;
pub mod chunked;
pub mod request;
pub mod response;
pub mod stream;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};

use http::{HeaderValue, Method, Uri};

pub use body::{ConnSlot, ResponseBody};
pub use request::{RequestHead, SendError, send};
pub use response::{HeadError, ResponseHead, read_head};
pub use stream::Stream;

/// How a response body is delimited.
#[derive(Debug)]
pub enum Framing {
    /// `Content-Length` (0 also for HEAD, 204 and 304): bytes left.
    Length(u64),
    Chunked(chunked::Decoder),
    /// Neither: the body runs until the upstream closes (the connection is not reused).
    Close,
}

/// What an upstream error line names after its message, as nginx's context suffix does:
/// `client: …, server: …, request: "…", upstream: "…", host: "…"`.
pub struct UpstreamContext {
    pub client: IpAddr,
    pub server: SocketAddr,
    pub method: Method,
    pub uri: Uri,
    pub scheme: &'static str,
    pub addr: SocketAddr,
    pub host: Option<HeaderValue>,
}

impl fmt::Display for UpstreamContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client: {}, server: {}, request: \"{} {}\", upstream: \"{}://{}{}\", host: \"{}\"",
            self.client,
            self.server,
            self.method,
            self.uri,
            self.scheme,
            self.addr,
            self.uri,
            self.host
                .as_ref()
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
        )
    }
}

/// An I/O error as nginx words it in its log: `104: Connection reset by peer` (the error
/// number first), or the error's text when it has no number.
pub fn errno_text(e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => {
            let text = e.to_string();
            let suffix = format!(" (os error {code})");
            format!("{code}: {}", text.strip_suffix(&suffix).unwrap_or(&text))
        }
        None => e.to_string(),
    }
}
