//! `/healthz` (the process answers) and `/readyz` (the directory and the store answer).

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::audit::AuditLog;
use crate::directory::Directory;

#[derive(Clone)]
pub struct HealthState {
    pub directory: Directory,
    pub audit: AuditLog,
}

pub async fn healthz() -> &'static str {
    "ok\n"
}

pub async fn readyz(State(state): State<HealthState>) -> (StatusCode, Json<Value>) {
    let limit = Duration::from_secs(5);
    let directory = match tokio::time::timeout(limit, state.directory.ping()).await {
        Ok(Ok(_)) => "ok".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 5 s".to_string(),
    };
    let store = match tokio::time::timeout(limit, state.audit.ping()).await {
        Ok(Ok(())) => "ok".to_string(),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 5 s".to_string(),
    };
    let ready = directory == "ok" && store == "ok";
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "status": if ready { "ready" } else { "not ready" },
            "directory": directory,
            "store": store,
        })),
    )
}
