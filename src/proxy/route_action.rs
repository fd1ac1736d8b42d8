//! Route actions besides proxying ([`RouteAction`]): the path and `Host` rewrites applied just
//! before the upstream request, and the fixed answers (a direct response, a redirect) given
//! after the plugins ran instead of proxying. Providers whose format has these on the route
//! (Envoy's) set them; APISIX routes never do.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::Body;
use crate::config::resource::{FixedAnswer, PrefixRewrite, RedirectAction, RouteAction};
use crate::plugin::RequestCtx;

/// `prefix` replaced by `replacement` at the start of `path`; `None` when it does not start so.
fn replace_prefix(rw: &PrefixRewrite, path: &str) -> Option<String> {
    let rest = path.strip_prefix(rw.prefix.as_str())?;
    let mut out = String::with_capacity(rw.replacement.len() + rest.len());
    out.push_str(&rw.replacement);
    out.push_str(rest);
    Some(out)
}

/// Applies the path rewrite to the request as the plugins left it.
pub fn rewrite_path(action: &RouteAction, req: &mut RequestCtx) {
    if let Some(rw) = &action.prefix_rewrite
        && let Some(new) = replace_prefix(rw, &req.uri)
    {
        req.uri = if new.is_empty() { "/".into() } else { new };
        req.uri_changed = true;
    }
}

/// The upstream `Host` the route asks for, when it asks.
pub fn host_rewrite(action: &RouteAction) -> Option<HeaderValue> {
    action
        .host_rewrite
        .as_deref()
        .and_then(|h| HeaderValue::from_str(h).ok())
}

/// The answer a route gives itself.
pub fn fixed(answer: &FixedAnswer, req: &RequestCtx) -> Response<Body> {
    match answer {
        FixedAnswer::Direct { status, body } => {
            let mut resp = Response::new(Body::full(body.clone()));
            *resp.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            if !body.is_empty() {
                resp.headers_mut()
                    .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            }
            resp
        }
        FixedAnswer::RouteNotFound => super::error_page::route_not_found(),
        FixedAnswer::Redirect(r) => {
            let location = location(r, req);
            let mut resp = Response::new(Body::empty());
            *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::FOUND);
            match HeaderValue::from_str(&location) {
                Ok(v) => {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                Err(_) => {
                    log::error!("redirect: {location:?} is not a valid Location header");
                    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                }
            }
            resp
        }
    }
}

/// The redirect target: the request's own URL with the configured parts replaced.
pub fn location(r: &RedirectAction, req: &RequestCtx) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(req.scheme);
    let authority = r.host.clone().unwrap_or_else(|| {
        req.header(header::HOST.as_str())
            .and_then(|h| h.to_str().ok())
            .unwrap_or(&req.host)
            .to_string()
    });
    // The host without a port; a bracketed IPv6 literal keeps its brackets.
    let host_only = match authority.rfind(':') {
        Some(i) if !authority[i..].contains(']') => &authority[..i],
        _ => authority.as_str(),
    };
    let scheme_changed = scheme != req.scheme;
    let authority = match r.port {
        Some(p) => format!("{host_only}:{p}"),
        // A new scheme drops the old port, which belonged to the old scheme.
        None if scheme_changed => host_only.to_string(),
        None => authority.clone(),
    };
    let (raw_path, raw_query) = req
        .request_uri
        .split_once('?')
        .unwrap_or((req.request_uri.as_str(), ""));
    let (path, query) = match &r.path {
        // A path with its own query replaces the request's query too.
        Some(p) => match p.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (p.clone(), raw_query.to_string()),
        },
        None => {
            let p = r
                .prefix_rewrite
                .as_ref()
                .and_then(|rw| replace_prefix(rw, raw_path))
                .unwrap_or_else(|| raw_path.to_string());
            (p, raw_query.to_string())
        }
    };
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    if r.strip_query || query.is_empty() {
        format!("{scheme}://{authority}{path}")
    } else {
        format!("{scheme}://{authority}{path}?{query}")
    }
}
