//! Mounts every feature's router and wraps them in the shared middleware.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use super::error::ErrorBody;
use super::health::{HealthState, healthz, readiness_details, readyz};
use super::limits::{
    ApiGuard, Exceeded, FailureLimiter, RateLimit, Refusals, TrustedProxies, api_guard,
};
use super::middleware::{REQUEST_ID, record_metrics, sanitize_request_id};
use super::openapi::ApiDoc;
use crate::admin::{self, AdminState};
use crate::auth::{AuthError, Authenticator};
use crate::scim::error::ScimError;
use crate::scim::routes::{self as scim_routes, ScimState};
use crate::selfservice::{ClientIp, SelfServiceState};
use crate::store::Store;
use crate::sweep::routes::{self as sweep_routes, SweepState};

/// Request bodies larger than this are refused with 413 (no endpoint needs more).
const BODY_LIMIT_BYTES: usize = 64 * 1024;

use crate::bulk::routes::BulkState;

pub struct RouterParts {
    pub admin: AdminState,
    /// `None`: SCIM is disabled.
    pub scim: Option<ScimState>,
    pub sweep: SweepState,
    pub bulk: BulkState,
    pub health: HealthState,
    /// `None`: the self-service pages are off.
    pub selfservice: Option<SelfServiceState>,
    pub auth: Authenticator,
    /// Where the instances share their rate limits.
    pub store: Arc<dyn Store>,
    pub metrics: PrometheusHandle,
    pub request_timeout: Duration,
    /// Per admin-API token.
    pub rate_limit: Option<RateLimit>,
    /// Per SCIM token: identity providers send bursts of hundreds of requests.
    pub scim_rate_limit: Option<RateLimit>,
    /// A SCIM token's requests under way at once in this instance (0 = no cap).
    pub scim_in_flight: u32,
    /// Failed authentications per client address and minute, and the burst.
    pub auth_failures: (u32, u32),
    pub trusted_proxies: TrustedProxies,
}

fn admin_rate_limited(wait: u64, exceeded: Exceeded) -> Response {
    let detail = match exceeded {
        Exceeded::TokenRate => "too many requests with this token".to_owned(),
        Exceeded::AuthFailures => {
            "too many requests without a valid token from this address".to_owned()
        }
        Exceeded::TokenInFlight(limit) => {
            format!("too many requests with this token under way at once (at most {limit})")
        }
    };
    ErrorBody {
        retry_after_secs: Some(wait),
        ..ErrorBody::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            detail,
            "wait for the number of seconds in Retry-After, then retry",
        )
    }
    .into_response()
}

/// RFC 7644 §3.12 lists no 429, but RFC 6585's status with a SCIM error body is what
/// Entra ID and Okta back off on.
fn scim_rate_limited(wait: u64, exceeded: Exceeded) -> Response {
    match exceeded {
        Exceeded::TokenInFlight(limit) => ScimError::TooManyAtOnce { limit },
        Exceeded::TokenRate | Exceeded::AuthFailures => ScimError::TooManyRequests {
            retry_after_secs: wait,
        },
    }
    .into_response()
}

fn admin_unauthenticated(e: AuthError) -> Response {
    e.into_response()
}

fn scim_unauthenticated(e: AuthError) -> Response {
    scim_routes::auth_error(e).into_response()
}

pub fn router(parts: RouterParts) -> Router {
    let request_id = HeaderName::from_static(REQUEST_ID);
    let metrics = parts.metrics;
    let proxies = Arc::new(parts.trusted_proxies);
    let failures = FailureLimiter::new(
        parts.store.clone(),
        parts.auth_failures.0,
        parts.auth_failures.1,
    );
    let admin_guard = ApiGuard::new(
        parts.auth.clone(),
        proxies.clone(),
        parts.store.clone(),
        ("api", parts.rate_limit, 0),
        failures.clone(),
        Refusals {
            unauthenticated: admin_unauthenticated,
            rate_limited: admin_rate_limited,
        },
    );
    let api = admin::routes(parts.admin)
        .merge(sweep_routes::routes(parts.sweep))
        .merge(crate::bulk::routes::routes(parts.bulk))
        .route(
            "/readiness",
            get(readiness_details).with_state(parts.health.clone()),
        )
        .route(
            "/openapi.json",
            get(|| async { axum::Json(ApiDoc::openapi()) }),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(admin_guard, api_guard));
    let scim = parts.scim.map(|state| {
        let guard = ApiGuard::new(
            parts.auth.clone(),
            proxies.clone(),
            parts.store.clone(),
            ("scim", parts.scim_rate_limit, parts.scim_in_flight),
            failures.clone(),
            Refusals {
                unauthenticated: scim_unauthenticated,
                rate_limited: scim_rate_limited,
            },
        );
        scim_routes::routes(state).layer(axum::middleware::from_fn_with_state(guard, api_guard))
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
    if let Some(state) = parts.selfservice {
        let proxies = proxies.clone();
        app = app.merge(
            crate::selfservice::routes(state).layer(axum::middleware::from_fn(
                move |mut req: Request<axum::body::Body>, next: axum::middleware::Next| {
                    let proxies = proxies.clone();
                    async move {
                        let client = req
                            .extensions()
                            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                            .map(|c| proxies.client_address(c.0.ip(), req.headers()));
                        if let Some(ip) = client {
                            req.extensions_mut().insert(ClientIp(ip));
                        }
                        next.run(req).await
                    }
                },
            )),
        );
    }
    app.merge(ops)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(
            ServiceBuilder::new()
                .layer(SetSensitiveRequestHeadersLayer::new([header::AUTHORIZATION]))
                .map_request(sanitize_request_id)
                .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
                        let id = req
                            .headers()
                            .get(REQUEST_ID)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-");
                        // The path only: query strings may hold search terms (mail addresses).
                        // A first-password link's path is its secret.
                        let path = req.uri().path();
                        let path = if path.starts_with("/welcome/") { "/welcome/…" } else { path };
                        tracing::info_span!("request", request_id = %id, method = %req.method(), path = %path)
                    }),
                )
                .layer(PropagateRequestIdLayer::new(request_id))
                .layer(CatchPanicLayer::custom(|_| {
                    ErrorBody::internal("the request handler crashed").into_response()
                }))
                .layer(axum::middleware::from_fn_with_state(
                    parts.request_timeout,
                    answer_in_time,
                )),
        )
        .layer(axum::extract::DefaultBodyLimit::max(BODY_LIMIT_BYTES))
}

/// `server.request_timeout_secs`: a request still running then is abandoned and answered
/// with a 503 that says so in the edge's own error format (a bare 503 would say
/// nothing). What it was changing may or may not have been applied.
async fn answer_in_time(
    axum::extract::State(limit): axum::extract::State<Duration>,
    req: Request<axum::body::Body>,
    next: axum::middleware::Next,
) -> Response {
    let scim = req.uri().path().starts_with("/scim/");
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            let detail = format!(
                "the request took longer than {} s (server.request_timeout_secs) and was abandoned",
                limit.as_secs()
            );
            tracing::warn!(
                timeout_secs = limit.as_secs(),
                "request abandoned at its time limit"
            );
            if scim {
                ScimError::OutcomeUnknown {
                    detail,
                    retry_after_secs: 5,
                }
                .into_response()
            } else {
                let mut body = ErrorBody::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "timeout",
                    detail,
                    "a change it was making may or may not have been applied: read the result \
                     (GET) before sending it again",
                );
                body.retry_after_secs = Some(5);
                body.into_response()
            }
        }
    }
}

/// An endpoint asked with a method it does not take (axum adds the `Allow` header).
async fn method_not_allowed() -> impl IntoResponse {
    ErrorBody::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this HTTP method",
        "the Allow header lists the methods it takes (the admin API's are in /api/v1/openapi.json)",
    )
}

async fn not_found() -> impl IntoResponse {
    ErrorBody::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
        "see /api/v1/openapi.json for the API",
    )
}
