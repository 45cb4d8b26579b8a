//! Per-request middleware that is ours (the rest comes from tower-http).

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;

/// Counts and times requests by route template (never by raw path, which holds user names).
pub async fn record_metrics(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let response = next.run(req).await;
    let status = response.status().as_u16().to_string();
    let labels = [("method", method), ("route", route), ("status", status)];
    metrics::counter!("lockbridge_http_requests_total", &labels).increment(1);
    metrics::histogram!("lockbridge_http_request_seconds", &labels[..2])
        .record(start.elapsed().as_secs_f64());
    response
}
