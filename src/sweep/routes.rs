//! `/api/v1/sweeps`: start a sweep as a job, follow its progress, read the history.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::engine::{LEASE, SweepDeps, SweepError, SweepRequest, Trigger, record_run, run_once};
use crate::auth::{Authenticator, Require, RunSweeps};
use crate::store::{StoreError, SweepRun};

#[derive(Clone)]
pub struct SweepState {
    pub deps: SweepDeps,
    pub auth: Authenticator,
}

impl FromRef<SweepState> for Authenticator {
    fn from_ref(state: &SweepState) -> Self {
        state.auth.clone()
    }
}

/// Errors of the sweep API (rendered in `http::error`).
#[derive(Debug, thiserror::Error)]
pub enum SweepApiError {
    #[error("no sweep with id `{0}`")]
    NotFound(String),
    #[error("a sweep is already running (id {0}); wait for it to finish")]
    AlreadyRunning(String),
    #[error(
        "another instance is running a sweep (it holds the sweep lease); wait for it to finish"
    )]
    LeaseHeld,
    #[error("{0}")]
    BadRequest(String),
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
}

pub fn routes(state: SweepState) -> Router {
    Router::new()
        .route("/sweeps", get(list_sweeps).post(start_sweep))
        .route("/sweeps/{id}", get(get_sweep))
        .with_state(state)
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StartSweep {
    /// Report what would be sent, send nothing (default false).
    #[serde(default)]
    pub dry_run: bool,
    /// The sweep's notion of now (RFC 3339); default: now. For planning ahead.
    pub at: Option<DateTime<Utc>>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SweepStarted {
    pub id: String,
    /// Where to follow its progress.
    pub location: String,
}

/// Start an expiry sweep; it runs in the background.
#[utoipa::path(post, path = "/api/v1/sweeps", request_body = StartSweep,
    responses((status = 202, body = SweepStarted), (status = 409, description = "a sweep is running")),
    security(("bearer" = [])), tag = "sweeps")]
pub async fn start_sweep(
    State(state): State<SweepState>,
    Require(caller, _): Require<RunSweeps>,
    body: Result<Json<StartSweep>, JsonRejection>,
) -> Result<(StatusCode, Json<SweepStarted>), SweepApiError> {
    let Json(body) =
        body.map_err(|e| SweepApiError::BadRequest(crate::types::json_body_problem(&e)))?;
    if !body.dry_run
        && let Some(running) = state
            .deps
            .store
            .list_sweep_runs(5)
            .await?
            .into_iter()
            .find(|r| r.status == "running" && !r.dry_run)
    {
        return Err(SweepApiError::AlreadyRunning(running.id));
    }
    if !body.dry_run {
        // Taken here, not only in the background: a caller told 202 must find its run
        // (another instance may have taken the lease since the check above). The run
        // renews it as its holder.
        let settings = &state.deps.settings;
        let now = Utc::now();
        let until = now
            + chrono::Duration::from_std(settings.lease).unwrap_or(chrono::Duration::minutes(2));
        if !state
            .deps
            .store
            .acquire_lease(LEASE, &settings.instance, now, until)
            .await?
        {
            return Err(SweepApiError::LeaseHeld);
        }
    }
    let mut request =
        SweepRequest::new(body.at.unwrap_or_else(Utc::now), body.dry_run, Trigger::Api);
    if !body.dry_run {
        record_run(&state.deps, &mut request).await?;
    }
    let id = request.id.clone();
    let deps = state.deps.clone();
    tracing::info!(sweep.id = %id, actor = %caller.name, dry_run = body.dry_run, "sweep started over the API");
    tokio::spawn(async move {
        match run_once(&deps, request, &|_| {}).await {
            Ok(_) => {}
            Err(SweepError::AlreadyRunning) => {
                tracing::info!("sweep not started: another is running")
            }
            Err(e) => tracing::error!(error = %e, "sweep failed"),
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(SweepStarted {
            location: format!("/api/v1/sweeps/{id}"),
            id,
        }),
    ))
}

/// One sweep: progress while it runs, its summary when done.
#[utoipa::path(get, path = "/api/v1/sweeps/{id}", params(("id" = String, Path)),
    responses((status = 200, description = "the sweep run"), (status = 404)),
    security(("bearer" = [])), tag = "sweeps")]
pub async fn get_sweep(
    State(state): State<SweepState>,
    _caller: Require<RunSweeps>,
    Path(id): Path<String>,
) -> Result<Json<SweepRun>, SweepApiError> {
    state
        .deps
        .store
        .get_sweep_run(&id)
        .await?
        .map(Json)
        .ok_or(SweepApiError::NotFound(id))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SweepListParams {
    /// How many of the latest sweeps, 1 to 100 (default 20).
    limit: Option<u32>,
}

/// The latest sweeps, newest first.
#[utoipa::path(get, path = "/api/v1/sweeps", params(SweepListParams),
    responses((status = 200, description = "sweep runs, newest first")),
    security(("bearer" = [])), tag = "sweeps")]
pub async fn list_sweeps(
    State(state): State<SweepState>,
    _caller: Require<RunSweeps>,
    params: Result<Query<SweepListParams>, QueryRejection>,
) -> Result<Json<Vec<SweepRun>>, SweepApiError> {
    let Query(params) =
        params.map_err(|e| SweepApiError::BadRequest(crate::types::query_problem(&e)))?;
    let limit = params.limit.unwrap_or(20);
    if !(1..=100).contains(&limit) {
        return Err(SweepApiError::BadRequest(format!(
            "limit is {limit}; use a value from 1 to 100"
        )));
    }
    Ok(Json(state.deps.store.list_sweep_runs(limit).await?))
}
