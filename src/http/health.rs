//! `/healthz` (the process answers), `/readyz` (the directory and the store answer) and
//! `/api/v1/readiness` (why not, for an administrator).
//!
//! `/readyz` is public (load balancers and orchestrators poll it), so it says only
//! ready or not: error texts name bind DNs, bases, hosts and paths. The check itself is
//! shared: at most one runs at a time and its result serves every caller for
//! [`READINESS_TTL`], so polling cannot tie up pooled directory connections. Changes of
//! readiness are logged with their reasons.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{FromRef, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::audit::AuditLog;
use crate::auth::{Authenticator, ReadAudit, Require};
use crate::directory::Directory;

/// How long one readiness check answers for.
pub const READINESS_TTL: Duration = Duration::from_secs(1);

/// How long each component may take to answer.
const CHECK_LIMIT: Duration = Duration::from_secs(5);

#[derive(Clone)]
pub struct HealthState {
    pub directory: Directory,
    pub audit: AuditLog,
    pub auth: Authenticator,
    last: Arc<tokio::sync::Mutex<Option<(Instant, Readiness)>>>,
}

impl HealthState {
    pub fn new(directory: Directory, audit: AuditLog, auth: Authenticator) -> Self {
        Self {
            directory,
            audit,
            auth,
            last: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// The latest readiness, checked anew when older than [`READINESS_TTL`]. Callers
    /// arriving during a check wait for it and share its result.
    pub async fn readiness(&self) -> Readiness {
        let mut last = self.last.lock().await;
        if let Some((at, readiness)) = last.as_ref()
            && at.elapsed() < READINESS_TTL
        {
            return readiness.clone();
        }
        let fresh = self.check().await;
        let previous = last.as_ref().map(|(_, r)| r);
        if previous.is_none_or(|p| p.ready != fresh.ready || p.reasons() != fresh.reasons()) {
            if fresh.ready {
                tracing::info!("ready: the directory and the store answer");
            } else {
                tracing::warn!(
                    directory = fresh.directory.as_deref().unwrap_or("ok"),
                    store = fresh.store.as_deref().unwrap_or("ok"),
                    "not ready"
                );
            }
        }
        *last = Some((Instant::now(), fresh.clone()));
        fresh
    }

    async fn check(&self) -> Readiness {
        let directory = match tokio::time::timeout(CHECK_LIMIT, self.directory.ping()).await {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", CHECK_LIMIT.as_secs())),
        };
        let store = match tokio::time::timeout(CHECK_LIMIT, self.audit.ping()).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some(format!("no answer within {} s", CHECK_LIMIT.as_secs())),
        };
        Readiness {
            ready: directory.is_none() && store.is_none(),
            directory,
            store,
            checked_at: Utc::now(),
        }
    }
}

impl FromRef<HealthState> for Authenticator {
    fn from_ref(state: &HealthState) -> Authenticator {
        state.auth.clone()
    }
}

/// One readiness check: `None` for a component that answered, else why not.
#[derive(Debug, Clone)]
pub struct Readiness {
    pub ready: bool,
    pub directory: Option<String>,
    pub store: Option<String>,
    pub checked_at: DateTime<Utc>,
}

impl Readiness {
    fn reasons(&self) -> (Option<&str>, Option<&str>) {
        (self.directory.as_deref(), self.store.as_deref())
    }
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

fn status_code(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// Public: ready or not, nothing else.
pub async fn readyz(State(state): State<HealthState>) -> (StatusCode, Json<Value>) {
    let r = state.readiness().await;
    (
        status_code(r.ready),
        Json(json!({ "status": if r.ready { "ready" } else { "not ready" } })),
    )
}

/// What `/api/v1/readiness` shows an administrator.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReadinessView {
    /// "ready" or "not ready".
    pub status: &'static str,
    /// "ok", or why the directory did not answer.
    pub directory: String,
    /// "ok", or why lockbridge's own database did not answer.
    pub store: String,
    pub checked_at: DateTime<Utc>,
}

/// Readiness with the reasons (directory and store errors), for a global admin.
#[utoipa::path(get, path = "/api/v1/readiness",
    responses((status = 200, body = ReadinessView, description = "ready"),
        (status = 503, body = ReadinessView, description = "not ready; the body says why"),
        (status = 401), (status = 403), (status = 429)),
    security(("bearer" = [])), tag = "operations")]
pub async fn readiness_details(
    State(state): State<HealthState>,
    _caller: Require<ReadAudit>,
) -> (StatusCode, Json<ReadinessView>) {
    let r = state.readiness().await;
    (
        status_code(r.ready),
        Json(ReadinessView {
            status: if r.ready { "ready" } else { "not ready" },
            directory: r.directory.unwrap_or_else(|| "ok".into()),
            store: r.store.unwrap_or_else(|| "ok".into()),
            checked_at: r.checked_at,
        }),
    )
}
