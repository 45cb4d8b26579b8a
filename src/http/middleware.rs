//! Per-request middleware that is ours (the rest comes from tower-http).

use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// The request-id header, set or propagated for every request.
pub const REQUEST_ID: &str = "x-request-id";

/// Longest client-supplied request id that is kept.
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Counts and times requests. Every label value comes from a closed set, so no request
/// can add series: the method is one of the standard ones or `other`, the route is the
/// matched route template (never the raw path, which holds user names) or `unmatched`.
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = method_label(req.method());
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("method", method.to_string()),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!("lockbridge_http_requests_total", &labels).increment(1);
    metrics::histogram!("lockbridge_http_request_seconds", &labels[..2])
        .record(start.elapsed().as_secs_f64());
    response
}

/// The metric label of an HTTP method.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Drops a client-supplied `X-Request-Id` unless it is at most
/// [`MAX_REQUEST_ID_LEN`] characters of `[A-Za-z0-9._-]`; the request-id layer then
/// generates one. The id is logged and stored in audit records, so it must not carry
/// arbitrary text (log injection, oversized records).
pub fn sanitize_request_id(mut req: Request<Body>) -> Request<Body> {
    let mut values = req.headers().get_all(REQUEST_ID).iter();
    let acceptable = matches!(
        (values.next(), values.next()),
        (Some(v), None) if is_acceptable_request_id(v.as_bytes())
    );
    if !acceptable {
        req.headers_mut().remove(REQUEST_ID);
    }
    req
}

pub fn is_acceptable_request_id(id: &[u8]) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_label() {
        for m in ["M1", "FOO", "PROPFIND", "BREW"] {
            let method = Method::from_bytes(m.as_bytes()).expect("method");
            assert_eq!(method_label(&method), "other");
        }
        assert_eq!(method_label(&Method::PATCH), "PATCH");
    }

    #[test]
    fn request_ids_are_short_and_plain() {
        assert!(is_acceptable_request_id(b"3f2a-11.b_c"));
        assert!(is_acceptable_request_id(&[b'a'; 64]));
        assert!(!is_acceptable_request_id(&[b'a'; 65]));
        assert!(!is_acceptable_request_id(b""));
        assert!(!is_acceptable_request_id(b"abc def"));
        assert!(!is_acceptable_request_id(b"abc\"}"));
        assert!(!is_acceptable_request_id("caf\u{e9}".as_bytes()));

        let req = Request::builder()
            .header(REQUEST_ID, "x".repeat(65))
            .body(Body::empty())
            .expect("request");
        assert!(sanitize_request_id(req).headers().get(REQUEST_ID).is_none());
        let req = Request::builder()
            .header(REQUEST_ID, "abc-123")
            .body(Body::empty())
            .expect("request");
        assert_eq!(
            sanitize_request_id(req)
                .headers()
                .get(REQUEST_ID)
                .map(|v| v.as_bytes()),
            Some(&b"abc-123"[..])
        );
    }
}
