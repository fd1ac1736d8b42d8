//! Responses the gateway makes itself: error pages in nginx's shape and APISIX's route-miss JSON.

use http::{HeaderValue, Response, StatusCode, header};

use super::body::Body;

/// APISIX's answer when no route matches.
pub const ROUTE_NOT_FOUND: &str = "{\"error_msg\":\"404 Route Not Found\"}\n";

/// The title nginx's built-in page gives `code`: nginx keeps older wording for some codes
/// (clients and APISIX's tests match on it), the standard reason phrase otherwise.
fn nginx_reason(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "Authorization Required",
        405 => "Not Allowed",
        408 => "Request Time-out",
        413 => "Request Entity Too Large",
        414 => "Request-URI Too Large",
        416 => "Requested Range Not Satisfiable",
        503 => "Service Temporarily Unavailable",
        504 => "Gateway Time-out",
        _ => status.canonical_reason().unwrap_or(""),
    }
}

/// An HTML error page like nginx's default one for `status`.
pub fn page(status: StatusCode) -> Response<Body> {
    let reason = nginx_reason(status);
    let code = status.as_u16();
    let html = format!(
        "<html>\r\n<head><title>{code} {reason}</title></head>\r\n<body>\r\n<center><h1>{code} {reason}</h1></center>\r\n<hr><center>moongate</center>\r\n</body>\r\n</html>\r\n"
    );
    with_type(status, "text/html", html)
}

/// `404 {"error_msg":"404 Route Not Found"}` as APISIX answers.
pub fn route_not_found() -> Response<Body> {
    with_type(
        StatusCode::NOT_FOUND,
        "application/json",
        ROUTE_NOT_FOUND.to_string(),
    )
}

fn with_type(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut resp = Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}
