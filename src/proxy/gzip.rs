//! gzip of a response body, switched on per request by `resty.apisix.response.set_gzip` (the
//! gzip plugin): nginx's gzip filter, with its conditions. It runs after the Lua body filters,
//! as nginx's gzip filter runs after lua-nginx-module's, and compresses as the body streams.

use std::io::Write;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};

use super::body::{BodyFilter, FilterFuture};

/// nginx's `gzip_min_length` default: shorter bodies (by Content-Length) are sent as they are.
const MIN_LENGTH: u64 = 20;

/// Whether nginx would gzip this response: a 200/403/404 with a body, not already encoded, not
/// shorter than [`MIN_LENGTH`], to a client whose `Accept-Encoding` takes gzip.
pub fn applies(
    method: &Method,
    req_headers: &HeaderMap,
    status: StatusCode,
    resp_headers: &HeaderMap,
) -> bool {
    if !matches!(status.as_u16(), 200 | 403 | 404) || method == Method::HEAD {
        return false;
    }
    if resp_headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.is_empty())
    {
        return false;
    }
    let length = resp_headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if length.is_some_and(|n| n < MIN_LENGTH) {
        return false;
    }
    accepts_gzip(req_headers)
}

/// `Accept-Encoding` names `gzip` (or `*`) without `q=0`.
fn accepts_gzip(h: &HeaderMap) -> bool {
    h.get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim();
            if !coding.eq_ignore_ascii_case("gzip") && coding != "*" {
                return false;
            }
            !parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q == 0.0)
            })
        })
}

/// The response head of a gzipped body: `Content-Encoding: gzip`, no length, no ranges, and a
/// strong ETag made weak (the bytes differ now), as nginx does.
pub fn prepare_headers(h: &mut HeaderMap) {
    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    h.remove(header::CONTENT_LENGTH);
    h.remove(header::ACCEPT_RANGES);
    if let Some(etag) = h.get(header::ETAG).cloned()
        && etag.as_bytes().first() == Some(&b'"')
    {
        let mut weak = b"W/".to_vec();
        weak.extend_from_slice(etag.as_bytes());
        if let Ok(v) = HeaderValue::from_bytes(&weak) {
            h.insert(header::ETAG, v);
        }
    }
}

/// Compresses the body chunk by chunk; the gzip trailer goes out with the end of the body.
pub struct GzipFilter {
    enc: Option<GzEncoder<Vec<u8>>>,
}

impl GzipFilter {
    pub fn new(level: u32) -> GzipFilter {
        GzipFilter {
            enc: Some(GzEncoder::new(
                Vec::new(),
                Compression::new(level.clamp(1, 9)),
            )),
        }
    }

    fn step(&mut self, chunk: &[u8], eof: bool) -> Bytes {
        let Some(enc) = self.enc.as_mut() else {
            return Bytes::new();
        };
        // Writing into a Vec cannot fail.
        let _ = enc.write_all(chunk);
        if eof {
            return match self.enc.take().map(GzEncoder::finish) {
                Some(Ok(v)) => Bytes::from(v),
                _ => Bytes::new(),
            };
        }
        Bytes::from(std::mem::take(enc.get_mut()))
    }
}

impl BodyFilter for GzipFilter {
    fn filter(&mut self, chunk: Bytes, eof: bool) -> FilterFuture {
        let out = self.step(&chunk, eof);
        Box::pin(async move { (out, false) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn streamed_chunks_make_one_valid_gzip_stream() {
        let mut f = GzipFilter::new(6);
        let mut out = Vec::new();
        for piece in ["hello ", "gzip ", "world"] {
            out.extend_from_slice(&f.step(piece.as_bytes(), false));
        }
        out.extend_from_slice(&f.step(b"", true));
        let mut text = String::new();
        flate2::read::GzDecoder::new(&out[..])
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello gzip world");
    }

    #[test]
    fn nginx_conditions_decide() {
        let gz = h(&[("accept-encoding", "deflate, gzip;q=0.8")]);
        let get = Method::GET;
        assert!(applies(&get, &gz, StatusCode::OK, &h(&[])));
        assert!(applies(&get, &gz, StatusCode::NOT_FOUND, &h(&[])));
        assert!(!applies(&get, &gz, StatusCode::CREATED, &h(&[])));
        assert!(!applies(&Method::HEAD, &gz, StatusCode::OK, &h(&[])));
        assert!(!applies(&get, &h(&[]), StatusCode::OK, &h(&[])));
        assert!(!applies(
            &get,
            &h(&[("accept-encoding", "gzip;q=0")]),
            StatusCode::OK,
            &h(&[])
        ));
        assert!(!applies(
            &get,
            &gz,
            StatusCode::OK,
            &h(&[("content-encoding", "br")])
        ));
        assert!(!applies(
            &get,
            &gz,
            StatusCode::OK,
            &h(&[("content-length", "19")])
        ));
        assert!(applies(
            &get,
            &gz,
            StatusCode::OK,
            &h(&[("content-length", "20")])
        ));
    }

    #[test]
    fn headers_say_gzip_and_drop_length_ranges_and_strong_etags() {
        let mut m = h(&[
            ("content-length", "100"),
            ("accept-ranges", "bytes"),
            ("etag", "\"abc\""),
        ]);
        prepare_headers(&mut m);
        assert_eq!(m["content-encoding"], "gzip");
        assert!(!m.contains_key("content-length"));
        assert!(!m.contains_key("accept-ranges"));
        assert_eq!(m["etag"], "W/\"abc\"");
    }
}
