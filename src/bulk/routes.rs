//! `/api/v1/password-resets`, `/api/v1/password-change-requirements` and
//! `/api/v1/jobs/{id}`: start a bulk job, follow it, read one outcome per account, and
//! download its report once.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::engine::{BulkDeps, BulkError, JobKind, create_job, run_job, take_report_csv};
use crate::account::{AccountError, Actor, Population};
use crate::auth::{AccountAction, Authenticator, Permission, Principal};
use crate::store::{JobRecord, StoreError};
use crate::types::Secret;

/// Accounts an interactive caller may name in one request (Microsoft 365's bulk reset
/// takes 40 at a time); a caller with the `Bulk` permission has no cap.
pub const INTERACTIVE_CAP: usize = 40;

#[derive(Clone)]
pub struct BulkState {
    pub deps: BulkDeps,
    pub auth: Authenticator,
}

impl FromRef<BulkState> for Authenticator {
    fn from_ref(state: &BulkState) -> Self {
        state.auth.clone()
    }
}

/// Errors of the bulk API (rendered in `http::error`).
#[derive(Debug, thiserror::Error)]
pub enum BulkApiError {
    #[error("no job with id `{0}`")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    TooMany(String),
    #[error("{0}")]
    Account(#[from] AccountError),
    #[error(
        "the report of job `{0}` was downloaded already (its passwords are erased) or the job is still running"
    )]
    ReportGone(String),
    #[error("the store is unavailable: {0}")]
    Store(#[from] StoreError),
}

pub fn routes(state: BulkState) -> Router {
    Router::new()
        .route("/password-resets", post(start_password_resets))
        .route(
            "/password-change-requirements",
            post(start_change_requirements),
        )
        .route("/jobs/{id}", get(get_job))
        .route("/jobs/{id}/outcomes", get(job_outcomes))
        .route("/jobs/{id}/report", get(job_report))
        .with_state(state)
}

/// Which accounts: exactly one of `users`, `group`, `filter`, `all`.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    /// Sign-in names.
    #[serde(default)]
    pub users: Option<Vec<String>>,
    /// The direct members of this group (its DN).
    #[serde(default)]
    pub group: Option<String>,
    /// The users that also match this LDAP filter (RFC 4515, e.g.
    /// `(departmentNumber=Sales)`), never the caller.
    #[serde(default)]
    pub filter: Option<String>,
    /// Every user but the caller.
    #[serde(default)]
    pub all: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkResetBody {
    #[serde(flatten)]
    pub selection: Selection,
    /// `auto` (a password generated per user, the default) or `manual` (`password` for all).
    #[serde(default = "auto")]
    pub mode: String,
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<Secret>,
    /// Default true.
    #[serde(default = "yes")]
    pub require_change_at_next_sign_in: bool,
    /// Mail each user's new password to their alternate address.
    #[serde(default)]
    pub deliver_to_alternate_email: bool,
    /// Keep the new passwords for one download (`GET /api/v1/jobs/{id}/report`).
    #[serde(default)]
    pub report: bool,
}

fn auto() -> String {
    "auto".into()
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeRequirementBody {
    #[serde(flatten)]
    pub selection: Selection,
    /// True: must change at next sign-in; false: undo that.
    pub required: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobStarted {
    pub id: String,
    pub total: u64,
    /// Where to follow its progress.
    pub location: String,
}

/// A job and its progress.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    pub kind: String,
    pub actor: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    pub total: u64,
    pub done: u64,
    pub refused: u64,
    pub failed: u64,
    /// Accounts not handled yet.
    pub remaining: u64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// A report with the new passwords waits for one download.
    pub report_available: bool,
}

impl JobView {
    fn new(job: JobRecord) -> Self {
        let report = job.params["report"].as_bool().unwrap_or(false);
        Self {
            report_available: report && !job.report_taken && job.status != "running",
            id: job.id,
            kind: job.kind,
            actor: job.actor,
            status: job.status,
            total: job.total,
            done: job.done,
            refused: job.refused,
            failed: job.failed,
            remaining: job.open,
            created_at: job.created_at,
            finished_at: job.finished_at,
        }
    }
}

fn actor_of(caller: &Principal, headers: &HeaderMap) -> Actor {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Actor::caller(caller, request_id)
}

/// The accounts of a request, checked against the caller's cap.
async fn select(
    state: &BulkState,
    caller: &Principal,
    selection: &Selection,
) -> Result<Vec<String>, BulkApiError> {
    let given = usize::from(selection.users.is_some())
        + usize::from(selection.group.is_some())
        + usize::from(selection.filter.is_some())
        + usize::from(selection.all);
    if given != 1 {
        return Err(BulkApiError::BadRequest(
            "say which accounts with exactly one of `users` (sign-in names), `group` (a group \
             DN), `filter` (an LDAP filter) or `all: true` (everyone but you)"
                .into(),
        ));
    }
    let population = Population::of(selection.group.as_deref(), selection.filter.as_deref());
    let names = match &selection.users {
        Some(users) => {
            let mut names: Vec<String> = Vec::with_capacity(users.len());
            for u in users {
                let u = u.trim();
                if u.is_empty() {
                    return Err(BulkApiError::BadRequest(
                        "`users` holds an empty name".into(),
                    ));
                }
                if !names.iter().any(|n| n.eq_ignore_ascii_case(u)) {
                    names.push(u.to_owned());
                }
            }
            names
        }
        // A group's members, the users a filter matches, or (`all`) everyone; never
        // the caller.
        None => {
            state
                .deps
                .account
                .user_names(population, caller.dn.as_deref())
                .await?
        }
    };
    if names.is_empty() {
        return Err(BulkApiError::BadRequest(
            "the selection holds no account; nothing was started".into(),
        ));
    }
    if names.len() > INTERACTIVE_CAP && !caller.can(Permission::Bulk) {
        return Err(BulkApiError::TooMany(format!(
            "{} accounts selected; {} may act on at most {INTERACTIVE_CAP} per request \
             (a global admin, or an API token of that role, has no cap)",
            names.len(),
            caller.roles_text()
        )));
    }
    Ok(names)
}

async fn start(
    state: &BulkState,
    caller: &Principal,
    kind: JobKind,
    sealed_secret: Option<Vec<u8>>,
    names: Vec<String>,
) -> Result<(StatusCode, Json<JobStarted>), BulkApiError> {
    let actor = Actor::caller(caller, None);
    let id = match create_job(&state.deps, &actor, kind, sealed_secret, &names).await {
        Ok(id) => id,
        Err(BulkError::Store(e)) => return Err(BulkApiError::Store(e)),
        Err(e) => return Err(BulkApiError::BadRequest(e.to_string())),
    };
    let deps = state.deps.clone();
    tracing::info!(job.id = %id, actor = %caller.name, kind = kind.name(), total = names.len(), "bulk job started");
    let run_id = id.clone();
    tokio::spawn(async move {
        if let Err(e) = run_job(&deps, &run_id).await {
            tracing::warn!(job.id = %run_id, error = %e, "bulk job paused; it resumes later");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(JobStarted {
            location: format!("/api/v1/jobs/{id}"),
            total: names.len() as u64,
            id,
        }),
    ))
}

/// Reset the passwords of several users, a group's members, or everyone but yourself,
/// as a job (Microsoft 365: "Reset password" with several users selected).
#[utoipa::path(post, path = "/api/v1/password-resets", request_body = BulkResetBody,
    responses((status = 202, body = JobStarted), (status = 400), (status = 401), (status = 403),
        (status = 413, description = "more accounts than the caller may name at once")),
    security(("bearer" = [])), tag = "passwords")]
pub async fn start_password_resets(
    State(state): State<BulkState>,
    caller: Principal,
    headers: HeaderMap,
    body: Result<Json<BulkResetBody>, JsonRejection>,
) -> Result<(StatusCode, Json<JobStarted>), BulkApiError> {
    let Json(body) =
        body.map_err(|e| BulkApiError::BadRequest(crate::types::json_body_problem(&e)))?;
    let actor = actor_of(&caller, &headers);
    state
        .deps
        .account
        .authorize_action(&actor, AccountAction::ResetPassword, "these users")?;
    let (generated, sealed) = match (body.mode.as_str(), &body.password) {
        ("auto", None) => (true, None),
        ("manual", Some(p)) => {
            state.deps.account.check_chosen_password(p)?;
            (false, Some(state.deps.sealer.seal(p)))
        }
        ("auto", Some(_)) => {
            return Err(BulkApiError::BadRequest(
                "mode \"auto\" generates the passwords: remove `password`, or use mode \"manual\""
                    .into(),
            ));
        }
        ("manual", None) => {
            return Err(BulkApiError::BadRequest(
                "mode \"manual\" needs the new password in `password`".into(),
            ));
        }
        (other, _) => {
            return Err(BulkApiError::BadRequest(format!(
                "mode is `{other}`; use \"auto\" or \"manual\""
            )));
        }
    };
    if generated && !body.report && !body.deliver_to_alternate_email {
        return Err(BulkApiError::BadRequest(
            "the generated passwords would be lost: set `report: true` (download them once), \
             `deliverToAlternateEmail: true`, or both"
                .into(),
        ));
    }
    let names = select(&state, &caller, &body.selection).await?;
    let kind = JobKind::PasswordReset {
        generated,
        require_change: body.require_change_at_next_sign_in,
        deliver_to_alternate: body.deliver_to_alternate_email,
        report: body.report,
    };
    start(&state, &caller, kind, sealed, names).await
}

/// Require (or stop requiring) a password change at next sign-in for several users, a
/// group's members, or everyone but yourself, as a job.
#[utoipa::path(post, path = "/api/v1/password-change-requirements", request_body = ChangeRequirementBody,
    responses((status = 202, body = JobStarted), (status = 400), (status = 401), (status = 403), (status = 413)),
    security(("bearer" = [])), tag = "passwords")]
pub async fn start_change_requirements(
    State(state): State<BulkState>,
    caller: Principal,
    headers: HeaderMap,
    body: Result<Json<ChangeRequirementBody>, JsonRejection>,
) -> Result<(StatusCode, Json<JobStarted>), BulkApiError> {
    let Json(body) =
        body.map_err(|e| BulkApiError::BadRequest(crate::types::json_body_problem(&e)))?;
    state.deps.account.authorize_action(
        &actor_of(&caller, &headers),
        AccountAction::RequireChange,
        "these users",
    )?;
    let names = select(&state, &caller, &body.selection).await?;
    start(
        &state,
        &caller,
        JobKind::RequireChange {
            required: body.required,
        },
        None,
        names,
    )
    .await
}

/// A job is its creator's to read (or an auditor's, a global admin's).
async fn job_for(
    state: &BulkState,
    caller: &Principal,
    id: &str,
) -> Result<JobRecord, BulkApiError> {
    let job = state
        .deps
        .store
        .get_job(id)
        .await?
        .filter(|j| {
            (j.actor == caller.name && j.actor_dn == caller.dn) || caller.can(Permission::ReadAudit)
        })
        .ok_or_else(|| BulkApiError::NotFound(id.to_owned()))?;
    Ok(job)
}

/// A job's progress.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", params(("id" = String, Path)),
    responses((status = 200, body = JobView), (status = 401), (status = 404)),
    security(("bearer" = [])), tag = "passwords")]
pub async fn get_job(
    State(state): State<BulkState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<Json<JobView>, BulkApiError> {
    Ok(Json(JobView::new(job_for(&state, &caller, &id).await?)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct OutcomeParams {
    /// Only outcomes after this position (the `next` of the previous page).
    after: Option<u64>,
    /// Page size, 1 to 1000 (default 100).
    limit: Option<u32>,
}

/// One account's outcome.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeView {
    pub position: u64,
    pub user_name: String,
    /// `pending`, `writing`, `done`, `refused` or `failed`.
    pub status: String,
    /// Why it was refused or failed (the API's error codes), or `resumed`.
    pub code: Option<String>,
    pub changed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutcomePage {
    pub outcomes: Vec<OutcomeView>,
    pub next: Option<u64>,
}

/// One outcome per account, in the job's order.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/outcomes", params(("id" = String, Path), OutcomeParams),
    responses((status = 200, body = OutcomePage), (status = 401), (status = 404)),
    security(("bearer" = [])), tag = "passwords")]
pub async fn job_outcomes(
    State(state): State<BulkState>,
    caller: Principal,
    Path(id): Path<String>,
    params: Result<Query<OutcomeParams>, QueryRejection>,
) -> Result<Json<OutcomePage>, BulkApiError> {
    let Query(params) =
        params.map_err(|e| BulkApiError::BadRequest(crate::types::query_problem(&e)))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(BulkApiError::BadRequest(format!(
            "limit is {limit}; use a value from 1 to 1000"
        )));
    }
    job_for(&state, &caller, &id).await?;
    let items = state
        .deps
        .store
        .job_items_page(&id, params.after, limit)
        .await?;
    let next = (items.len() == limit as usize)
        .then(|| items.last().map(|i| i.seq))
        .flatten();
    Ok(Json(OutcomePage {
        outcomes: items
            .into_iter()
            .map(|i| OutcomeView {
                position: i.seq,
                user_name: i.user_name,
                status: i.status,
                code: i.code,
                changed: i.changed,
            })
            .collect(),
        next,
    }))
}

/// The job's report as CSV (user name, status, code, new password), once: the
/// passwords are erased as it is sent. Only the job's creator may take it.
#[utoipa::path(get, path = "/api/v1/jobs/{id}/report", params(("id" = String, Path)),
    responses((status = 200, content_type = "text/csv"), (status = 401), (status = 404), (status = 410)),
    security(("bearer" = [])), tag = "passwords")]
pub async fn job_report(
    State(state): State<BulkState>,
    caller: Principal,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, BulkApiError> {
    let job = job_for(&state, &caller, &id).await?;
    if job.actor != caller.name || job.actor_dn != caller.dn {
        // Auditors may follow a job, not read its passwords.
        return Err(BulkApiError::NotFound(id));
    }
    let csv = match take_report_csv(&state.deps, &id).await {
        Ok(Some(csv)) => csv,
        Ok(None) => return Err(BulkApiError::ReportGone(id.clone())),
        Err(BulkError::Store(e)) => return Err(BulkApiError::Store(e)),
        Err(e) => return Err(BulkApiError::BadRequest(e.to_string())),
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"job-{id}.csv\"")) {
        headers.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok((headers, csv))
}
