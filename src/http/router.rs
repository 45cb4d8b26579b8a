//! Mounts every feature's router and wraps them in the shared middleware.

use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_governor::GovernorError;
use tower_governor::GovernorLayer;
use tower_governor::governor::GovernorConfigBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use super::error::ErrorBody;
use super::health::{HealthState, healthz, readyz};
use super::middleware::record_metrics;
use super::openapi::ApiDoc;
use crate::admin::{self, AdminState};
use crate::scim::error::ScimError;
use crate::scim::routes::{self as scim_routes, ScimState};
use crate::sweep::routes::{self as sweep_routes, SweepState};

/// Request bodies larger than this are refused with 413 (no endpoint needs more).
const BODY_LIMIT_BYTES: usize = 64 * 1024;

pub struct RouterParts {
    pub admin: AdminState,
    /// `None`: SCIM is disabled.
    pub scim: Option<ScimState>,
    pub sweep: SweepState,
    pub health: HealthState,
    pub metrics: PrometheusHandle,
    pub request_timeout: Duration,
    pub rate_limit: Option<RateLimit>,
    /// The SCIM API's own limit: identity providers send bursts of hundreds of requests.
    pub scim_rate_limit: Option<RateLimit>,
}

/// Per-client-address limit on API requests: a sustained rate plus a burst.
#[derive(Debug, Clone, Copy)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

/// Wraps the API in a per-peer-address token bucket; excess requests get 429 with
/// Retry-After. Needs the server to provide `ConnectInfo<SocketAddr>`.
fn rate_limited(
    api: Router,
    limit: RateLimit,
    refusal: fn(u64) -> axum::response::Response,
) -> Router {
    let period = Duration::from_nanos(1_000_000_000 / u64::from(limit.per_second.max(1)));
    let Some(config) = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(limit.burst.max(1))
        .finish()
    else {
        tracing::error!("invalid rate limit settings; API requests are not rate limited");
        return api;
    };
    let limiter = config.limiter().clone();
    // Forget idle clients now and then so the table stays small.
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limiter.retain_recent();
        }
    });
    api.layer(GovernorLayer::new(config).error_handler(move |e| {
        let wait = match e {
            GovernorError::TooManyRequests { wait_time, .. } => wait_time.max(1),
            _ => 1,
        };
        metrics::counter!("lockbridge_rate_limited_total").increment(1);
        refusal(wait)
    }))
}

fn admin_rate_limited(wait: u64) -> axum::response::Response {
    ErrorBody {
        retry_after_secs: Some(wait),
        ..ErrorBody::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this address",
            "wait for the number of seconds in Retry-After, then retry",
        )
    }
    .into_response()
}

/// RFC 7644 §3.12 lists no 429, but RFC 6585's status with a SCIM error body is what
/// Entra ID and Okta back off on.
fn scim_rate_limited(wait: u64) -> axum::response::Response {
    ScimError::TooManyRequests {
        retry_after_secs: wait,
    }
    .into_response()
}

pub fn router(parts: RouterParts) -> Router {
    let request_id = HeaderName::from_static("x-request-id");
    let metrics = parts.metrics;
    let mut api = admin::routes(parts.admin)
        .merge(sweep_routes::routes(parts.sweep))
        .route(
            "/openapi.json",
            get(|| async { axum::Json(ApiDoc::openapi()) }),
        );
    if let Some(limit) = parts.rate_limit {
        api = rate_limited(api, limit, admin_rate_limited);
    }
    let scim = parts.scim.map(|state| {
        let scim = scim_routes::routes(state);
        match parts.scim_rate_limit {
            Some(limit) => rate_limited(scim, limit, scim_rate_limited),
            None => scim,
        }
    });
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(parts.health)
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        m.render(),
                    )
                }
            }),
        );

    let mut app = Router::new().nest("/api/v1", api);
    if let Some(scim) = scim {
        app = app.nest("/scim/v2", scim);
    }
    app.merge(ops)
        .fallback(not_found)
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let id = req
                            .headers()
                            .get("x-request-id")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        // The path only: query strings may hold search terms (mail addresses).
                        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %req.uri().path())
                    }),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(CatchPanicLayer::custom(|_| {
                    ErrorBody::internal("the request handler crashed").into_response()
                }))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::SERVICE_UNAVAILABLE,
                    parts.request_timeout,
                )),
        )
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT_BYTES))
}

async fn not_found() -> impl IntoResponse {
    ErrorBody::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
        "see /api/v1/openapi.json for the API",
    )
}
