use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRef, Path, Query, State};
use axum::http::HeaderMap;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AdminError;
use crate::account::expiry::ExpiryService;
use crate::account::sign_in::SignInChange;
use crate::account::{AccountService, Actor, PasswordChoice, ResetRequest};
use crate::audit::AuditLog;
use crate::auth::{
    Authenticator, ManageExpiry, Principal, ReadAudit, ReadUsers, Require, SessionService,
};
use crate::directory::UserEntry;
use crate::notify::Notifier;
use crate::store::{AuditQuery, AuditRecord, ResetRequestRecord};
use crate::types::Secret;

/// A user search never holds more than this many entries in memory.
pub const MAX_SEARCH_RESULTS: usize = 1000;

#[derive(Clone)]
pub struct AdminState {
    pub account: Arc<AccountService>,
    pub expiry: Arc<ExpiryService>,
    pub notifier: Notifier,
    pub audit: AuditLog,
    pub auth: Authenticator,
    pub sessions: SessionService,
}

impl FromRef<AdminState> for Authenticator {
    fn from_ref(state: &AdminState) -> Self {
        state.auth.clone()
    }
}

/// The admin API, to be nested under `/api/v1`.
pub fn routes(state: AdminState) -> Router {
    Router::new()
        .route("/users", get(list_users))
        .route("/users/{user_name}", get(get_user))
        .route("/users/{user_name}/password-reset", post(reset_password))
        .route("/audit", get(list_audit))
        .route("/mail/dead-letters", get(list_dead_letters))
        .route(
            "/policy/expiration",
            get(get_expiration_policy).put(put_expiration_policy),
        )
        .route(
            "/users/{user_name}/password-never-expires",
            axum::routing::put(put_never_expires),
        )
        .route(
            "/users/{user_name}/require-password-change",
            axum::routing::put(put_require_password_change),
        )
        .route("/sessions", post(sign_in))
        .route("/sessions/current", axum::routing::delete(sign_out))
        .route("/reset-requests", get(list_reset_requests))
        .route("/reset-requests/{id}/dismiss", post(dismiss_reset_request))
        .route("/users/{user_name}/unlock", post(unlock))
        .route("/users/{user_name}/block", post(block))
        .route("/users/{user_name}/unblock", post(unblock))
        .with_state(state)
}

/// The caller as the account gate sees it.
fn actor_of(caller: &Principal, headers: &HeaderMap) -> Actor {
    Actor::caller(caller, request_id(headers))
}

fn request_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// A user as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub user_name: String,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    pub alternate_email: Option<String>,
    pub mobile_phone: Option<String>,
    /// The user must choose a new password at next sign-in.
    pub must_change_password: bool,
    /// When the password was last set, if the directory records it.
    pub password_last_changed: Option<DateTime<Utc>>,
    /// The directory has locked the account (too many failed sign-ins, or blocked).
    pub locked: bool,
    /// An administrator blocked sign-in (unblock to lift it; unlock does not).
    pub sign_in_blocked: bool,
    /// The password never expires (the user's policy is the no-expiry one).
    pub password_never_expires: bool,
    pub dn: String,
}

impl UserView {
    fn new(u: UserEntry, expiry: &ExpiryService) -> Self {
        Self {
            password_never_expires: expiry
                .is_never_expires(u.policy_dn.as_deref(), u.never_expires),
            user_name: u.user_name,
            display_name: u.display_name,
            mail: u.mail,
            alternate_email: u.alternate_mail,
            mobile_phone: u.mobile,
            must_change_password: u.must_change,
            password_last_changed: u.password_changed_at,
            locked: u.locked,
            sign_in_blocked: u.blocked,
            dn: u.dn,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct UserSearchParams {
    /// Part of a user name, display name or mail address; empty lists everyone.
    #[serde(default)]
    search: String,
    /// Page size, 1 to 200 (default 50).
    limit: Option<usize>,
    /// Number of matches to skip (default 0).
    offset: Option<usize>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserPage {
    pub users: Vec<UserView>,
    /// Matches found (at most 1000).
    pub total: usize,
    pub offset: usize,
    pub limit: usize,
    /// More than 1000 users matched: refine the search to see the rest.
    pub truncated: bool,
}

/// Search users by name or mail, sorted by user name.
#[utoipa::path(get, path = "/api/v1/users", params(UserSearchParams),
    responses((status = 200, body = UserPage), (status = 401), (status = 403), (status = 503)),
    security(("bearer" = [])), tag = "users")]
pub async fn list_users(
    State(state): State<AdminState>,
    _caller: Require<ReadUsers>,
    params: Result<Query<UserSearchParams>, QueryRejection>,
) -> Result<Json<UserPage>, AdminError> {
    let Query(params) =
        params.map_err(|e| AdminError::BadRequest(crate::types::query_problem(&e)))?;
    let limit = params.limit.unwrap_or(50);
    if !(1..=200).contains(&limit) {
        return Err(AdminError::BadRequest(format!(
            "limit is {limit}; use a value from 1 to 200"
        )));
    }
    let offset = params.offset.unwrap_or(0);
    let found = state
        .account
        .directory()
        .search_users(params.search.trim(), MAX_SEARCH_RESULTS)
        .await
        .map_err(|e| state.account.directory_error(e))?;
    let total = found.users.len();
    let users = found
        .users
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|u| UserView::new(u, &state.expiry))
        .collect();
    Ok(Json(UserPage {
        users,
        total,
        offset,
        limit,
        truncated: found.truncated,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SignInBody {
    pub user_name: String,
    #[schema(value_type = String, format = Password)]
    pub password: Secret,
}

/// A session opened: send `token` as the bearer token until `expiresAt`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub user_name: String,
    pub roles: Vec<String>,
}

/// An administrator signs in as themselves (their directory password; roles from the
/// groups in `[roles]`) and gets a short-lived session token. Every attempt counts
/// against the client address's allowance of failed authentications.
#[utoipa::path(post, path = "/api/v1/sessions", request_body = SignInBody,
    responses((status = 201, body = SessionView),
        (status = 400), (status = 401, description = "wrong user name or password, locked, or no administrator role (one answer for all)"),
        (status = 403, description = "the password must be changed first"),
        (status = 429), (status = 503)),
    tag = "sessions")]
pub async fn sign_in(
    State(state): State<AdminState>,
    headers: HeaderMap,
    body: Result<Json<SignInBody>, JsonRejection>,
) -> Result<(axum::http::StatusCode, HeaderMap, Json<SessionView>), AdminError> {
    let Json(body) =
        body.map_err(|e| AdminError::BadRequest(crate::types::json_body_problem(&e)))?;
    let user_name = body.user_name.trim();
    if user_name.is_empty() || body.password.expose().is_empty() {
        return Err(AdminError::BadRequest(
            "userName and password are both required".into(),
        ));
    }
    let signed_in = state
        .account
        .sign_in_administrator(user_name, &body.password, request_id(&headers))
        .await?;
    let session = state
        .sessions
        .open(
            &signed_in.user.dn,
            &signed_in.user.user_name,
            &signed_in.roles,
        )
        .await
        .map_err(|e| AdminError::from(crate::account::AccountError::AuditUnavailable(e)))?;
    let mut response_headers = HeaderMap::new();
    response_headers.insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    Ok((
        axum::http::StatusCode::CREATED,
        response_headers,
        Json(SessionView {
            token: session.token.expose().to_owned(),
            expires_at: session.expires_at,
            user_name: signed_in.user.user_name,
            roles: signed_in
                .roles
                .iter()
                .map(|r| r.as_str().to_owned())
                .collect(),
        }),
    ))
}

/// End the session the request is made with (sign out).
#[utoipa::path(delete, path = "/api/v1/sessions/current",
    responses((status = 204), (status = 400, description = "an API token, not a session"), (status = 401)),
    security(("bearer" = [])), tag = "sessions")]
pub async fn sign_out(
    State(state): State<AdminState>,
    caller: Principal,
    headers: HeaderMap,
) -> Result<axum::http::StatusCode, AdminError> {
    let Some(id) = caller.session_id.as_deref() else {
        return Err(AdminError::BadRequest(
            "this request carries an API token, not a session; revoke tokens with \
             `lockbridge token revoke NAME`"
                .into(),
        ));
    };
    state
        .sessions
        .end(id)
        .await
        .map_err(|e| AdminError::from(crate::account::AccountError::AuditUnavailable(e)))?;
    state.auth.forget_session(id);
    let _ = state
        .audit
        .record(crate::audit::AuditEvent {
            actor: caller.name.clone(),
            action: crate::audit::Action::SignedOut,
            target: Some(caller.name.clone()),
            outcome: crate::audit::Outcome::Success,
            detail: None,
            request_id: request_id(&headers),
        })
        .await;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// One user and their password state.
#[utoipa::path(get, path = "/api/v1/users/{userName}",
    params(("userName" = String, Path, description = "sign-in name")),
    responses((status = 200, body = UserView), (status = 404), (status = 401), (status = 403), (status = 503)),
    security(("bearer" = [])), tag = "users")]
pub async fn get_user(
    State(state): State<AdminState>,
    _caller: Require<ReadUsers>,
    Path(user_name): Path<String>,
) -> Result<Json<UserView>, AdminError> {
    let user = state.account.find_user(&user_name).await?;
    Ok(Json(UserView::new(user, &state.expiry)))
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ResetMode {
    /// lockbridge generates a strong temporary password.
    Auto,
    /// The administrator gives the password in `password`.
    Manual,
}

/// Reset a user's password, as in the Microsoft 365 admin center.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetBody {
    pub mode: ResetMode,
    /// Required with mode "manual", refused with mode "auto".
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<Secret>,
    /// Require the user to change the password when they first sign in (default true).
    #[serde(default = "default_true")]
    pub require_change_at_next_sign_in: bool,
    /// Email the new password to these addresses (at most 10).
    #[serde(default)]
    pub send_to: Vec<String>,
    /// Include the new password in the response (default false).
    #[serde(default)]
    pub show_password: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetResponse {
    pub user_name: String,
    pub mode: ResetMode,
    pub require_change_at_next_sign_in: bool,
    /// Addresses the password email was queued for; delivery is retried until it succeeds.
    pub sent_to: Vec<String>,
    /// Present only when showPassword was true (or the email could not be queued).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Reset a user's password (auto-generated or chosen), optionally requiring a change at
/// next sign-in and emailing the new password.
#[utoipa::path(post, path = "/api/v1/users/{userName}/password-reset",
    params(("userName" = String, Path, description = "sign-in name")),
    request_body = ResetBody,
    responses((status = 200, body = ResetResponse), (status = 400), (status = 401), (status = 403),
        (status = 404), (status = 422, description = "the password breaks a rule; the body says which"),
        (status = 429, description = "too many requests; retry after Retry-After seconds"),
        (status = 502, description = "the password was set but the must-change flag was not; `password` (when showPassword) and `sentTo` say where the new password went"),
        (status = 503, description = "the directory is unavailable (nothing changed), or stopped answering after the change was sent (the new password may be in force: see `password` and `sentTo`); retry after Retry-After seconds")),
    security(("bearer" = [])), tag = "passwords")]
pub async fn reset_password(
    State(state): State<AdminState>,
    // The account gate checks the right (and audits a refusal), not the extractor.
    caller: Principal,
    headers: HeaderMap,
    Path(user_name): Path<String>,
    body: Result<Json<ResetBody>, JsonRejection>,
) -> Result<Json<ResetResponse>, AdminError> {
    let Json(body) =
        body.map_err(|e| AdminError::BadRequest(crate::types::json_body_problem(&e)))?;
    let choice = match (body.mode, body.password) {
        (ResetMode::Auto, None) => PasswordChoice::Generate,
        (ResetMode::Manual, Some(p)) => PasswordChoice::Chosen(p),
        (ResetMode::Auto, Some(_)) => {
            return Err(AdminError::BadRequest(
                "mode \"auto\" generates the password: remove `password`, or use mode \"manual\""
                    .into(),
            ));
        }
        (ResetMode::Manual, None) => {
            return Err(AdminError::BadRequest(
                "mode \"manual\" needs the new password in `password`".into(),
            ));
        }
    };
    let actor = actor_of(&caller, &headers);
    let receipt = state
        .account
        .reset_password(
            &actor,
            &user_name,
            ResetRequest {
                choice,
                require_change: body.require_change_at_next_sign_in,
                send_to: body.send_to,
                send_to_alternate: false,
                show_password: body.show_password,
                mail_key: None,
            },
        )
        .await?;
    let mut warnings = Vec::new();
    if receipt.delivery_failed {
        warnings.push(
            "the password was set but could not be queued for email; it is shown here instead: \
             pass it to the user securely"
                .to_string(),
        );
    }
    Ok(Json(ResetResponse {
        user_name: receipt.user.user_name,
        mode: body.mode,
        require_change_at_next_sign_in: receipt.require_change,
        sent_to: receipt.sent_to,
        password: receipt.password.map(|p| p.expose().to_string()),
        warnings,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Only records by this actor (token name).
    actor: Option<String>,
    /// Only records about this target (user name).
    target: Option<String>,
    /// Only this action, e.g. `password.reset`.
    action: Option<String>,
    /// Only records older than this id (the `next` value of the previous page).
    before: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecordView {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    #[schema(value_type = Option<Object>)]
    pub detail: Option<serde_json::Value>,
}

impl From<AuditRecord> for AuditRecordView {
    fn from(r: AuditRecord) -> Self {
        Self {
            id: r.id,
            at: r.at,
            request_id: r.request_id,
            actor: r.actor,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            detail: r.detail.and_then(|d| serde_json::from_str(&d).ok()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub records: Vec<AuditRecordView>,
    /// Pass as `before` to get the next (older) page; absent on the last page.
    pub next: Option<i64>,
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/v1/audit", params(AuditParams),
    responses((status = 200, body = AuditPage), (status = 401), (status = 403)),
    security(("bearer" = [])), tag = "audit")]
pub async fn list_audit(
    State(state): State<AdminState>,
    _caller: Require<ReadAudit>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<AuditPage>, AdminError> {
    let Query(params) =
        params.map_err(|e| AdminError::BadRequest(crate::types::query_problem(&e)))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AdminError::BadRequest(format!(
            "limit is {limit}; use a value from 1 to 500"
        )));
    }
    let records = state
        .audit
        .query(&AuditQuery {
            actor: params.actor,
            target: params.target,
            action: params.action,
            before_id: params.before,
            limit,
        })
        .await?;
    let next = (records.len() == limit as usize)
        .then(|| records.last().map(|r| r.id))
        .flatten();
    Ok(Json(AuditPage {
        records: records.into_iter().map(AuditRecordView::from).collect(),
        next,
    }))
}

/// The organisation's password expiration policy.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExpirationPolicyView {
    /// Days until a password expires; null = passwords never expire.
    pub max_age_days: Option<u32>,
    /// Days before expiry on which users are notified (e.g. [14, 7, 3, 1]).
    pub notify_days: Vec<u32>,
    /// "nothing", "require-change" or "lock".
    pub on_expiry: String,
    /// Where the maximum age is kept: "directory" or "lockbridge" (read-only).
    #[serde(default, skip_deserializing)]
    pub source: String,
}

fn policy_view(state: &AdminState, p: crate::policy::ExpiryPolicy) -> ExpirationPolicyView {
    use crate::account::expiry::{MaxAgeSource, action_name};
    ExpirationPolicyView {
        max_age_days: p.max_age_days,
        notify_days: p.thresholds_days,
        on_expiry: action_name(p.on_expiry).to_string(),
        source: match state.expiry.settings().source {
            MaxAgeSource::Directory { .. } => "directory".into(),
            MaxAgeSource::Lockbridge => "lockbridge".into(),
        },
    }
}

/// The password expiration policy in force.
#[utoipa::path(get, path = "/api/v1/policy/expiration",
    responses((status = 200, body = ExpirationPolicyView), (status = 503)),
    security(("bearer" = [])), tag = "policy")]
pub async fn get_expiration_policy(
    State(state): State<AdminState>,
    _caller: Require<ReadUsers>,
) -> Result<Json<ExpirationPolicyView>, AdminError> {
    let policy = state.expiry.policy().await?;
    Ok(Json(policy_view(&state, policy)))
}

/// Change the password expiration policy (with the directory as source, the maximum age is
/// written to the default ppolicy entry).
#[utoipa::path(put, path = "/api/v1/policy/expiration", request_body = ExpirationPolicyView,
    responses((status = 200, body = ExpirationPolicyView), (status = 400), (status = 403), (status = 503)),
    security(("bearer" = [])), tag = "policy")]
pub async fn put_expiration_policy(
    State(state): State<AdminState>,
    Require(caller, _): Require<ManageExpiry>,
    headers: HeaderMap,
    body: Result<Json<ExpirationPolicyView>, JsonRejection>,
) -> Result<Json<ExpirationPolicyView>, AdminError> {
    let Json(body) =
        body.map_err(|e| AdminError::BadRequest(crate::types::json_body_problem(&e)))?;
    let on_expiry = crate::account::expiry::parse_action(&body.on_expiry).ok_or_else(|| {
        AdminError::BadRequest(format!(
            "onExpiry is `{}`; use \"nothing\", \"require-change\" or \"lock\"",
            body.on_expiry
        ))
    })?;
    let actor = actor_of(&caller, &headers);
    let policy = state
        .expiry
        .set_policy(
            &actor,
            crate::policy::ExpiryPolicy {
                max_age_days: body.max_age_days,
                thresholds_days: body.notify_days,
                on_expiry,
            },
        )
        .await?;
    Ok(Json(policy_view(&state, policy)))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NeverExpiresBody {
    pub never_expires: bool,
}

/// Set whether one user's password never expires.
#[utoipa::path(put, path = "/api/v1/users/{userName}/password-never-expires",
    params(("userName" = String, Path, description = "sign-in name")),
    request_body = NeverExpiresBody,
    responses((status = 200, body = NeverExpiresBody), (status = 400), (status = 403), (status = 404), (status = 503)),
    security(("bearer" = [])), tag = "policy")]
pub async fn put_never_expires(
    State(state): State<AdminState>,
    // The account gate checks the right (and audits a refusal), not the extractor.
    caller: Principal,
    headers: HeaderMap,
    Path(user_name): Path<String>,
    body: Result<Json<NeverExpiresBody>, JsonRejection>,
) -> Result<Json<NeverExpiresBody>, AdminError> {
    let Json(body) =
        body.map_err(|e| AdminError::BadRequest(crate::types::json_body_problem(&e)))?;
    let actor = actor_of(&caller, &headers);
    let never_expires = state
        .expiry
        .set_never_expires(&actor, &user_name, body.never_expires)
        .await?;
    Ok(Json(NeverExpiresBody { never_expires }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequirePasswordChangeBody {
    /// True: the user must choose a new password at the next sign-in; false: no longer.
    pub required: bool,
}

/// What a sign-in change did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignInChangeView {
    pub user_name: String,
    /// False when the account already was in that state (nothing was written).
    pub changed: bool,
    pub must_change_password: bool,
    pub locked: bool,
    pub sign_in_blocked: bool,
}

impl From<SignInChange> for SignInChangeView {
    fn from(c: SignInChange) -> Self {
        Self {
            user_name: c.user.user_name,
            changed: c.changed,
            must_change_password: c.must_change,
            locked: c.locked,
            sign_in_blocked: c.blocked,
        }
    }
}

/// Require (or stop requiring) a password change at the user's next sign-in
/// (Microsoft 365: "Require this user to change their password when they first sign in").
#[utoipa::path(put, path = "/api/v1/users/{userName}/require-password-change",
    params(("userName" = String, Path, description = "sign-in name")),
    request_body = RequirePasswordChangeBody,
    responses((status = 200, body = SignInChangeView), (status = 400), (status = 401), (status = 403), (status = 404), (status = 503)),
    security(("bearer" = [])), tag = "passwords")]
pub async fn put_require_password_change(
    State(state): State<AdminState>,
    // The account gate checks the right (and audits a refusal), not the extractor.
    caller: Principal,
    headers: HeaderMap,
    Path(user_name): Path<String>,
    body: Result<Json<RequirePasswordChangeBody>, JsonRejection>,
) -> Result<Json<SignInChangeView>, AdminError> {
    let Json(body) =
        body.map_err(|e| AdminError::BadRequest(crate::types::json_body_problem(&e)))?;
    let change = state
        .account
        .require_password_change(&actor_of(&caller, &headers), &user_name, body.required)
        .await?;
    Ok(Json(change.into()))
}

/// Unlock an account the directory locked after too many failed sign-ins (a block by an
/// administrator is lifted with `unblock`).
#[utoipa::path(post, path = "/api/v1/users/{userName}/unlock",
    params(("userName" = String, Path, description = "sign-in name")),
    responses((status = 200, body = SignInChangeView), (status = 400), (status = 401), (status = 403), (status = 404), (status = 503)),
    security(("bearer" = [])), tag = "passwords")]
pub async fn unlock(
    State(state): State<AdminState>,
    // The account gate checks the right (and audits a refusal), not the extractor.
    caller: Principal,
    headers: HeaderMap,
    Path(user_name): Path<String>,
) -> Result<Json<SignInChangeView>, AdminError> {
    let change = state
        .account
        .unlock(&actor_of(&caller, &headers), &user_name)
        .await?;
    Ok(Json(change.into()))
}

/// Block sign-in (Microsoft 365: "Block sign-in") until an administrator unblocks it.
#[utoipa::path(post, path = "/api/v1/users/{userName}/block",
    params(("userName" = String, Path, description = "sign-in name")),
    responses((status = 200, body = SignInChangeView), (status = 401), (status = 403), (status = 404), (status = 503)),
    security(("bearer" = [])), tag = "passwords")]
pub async fn block(
    State(state): State<AdminState>,
    // The account gate checks the right (and audits a refusal), not the extractor.
    caller: Principal,
    headers: HeaderMap,
    Path(user_name): Path<String>,
) -> Result<Json<SignInChangeView>, AdminError> {
    let change = state
        .account
        .block_sign_in(&actor_of(&caller, &headers), &user_name, true)
        .await?;
    Ok(Json(change.into()))
}

/// Lift an administrator's block on sign-in.
#[utoipa::path(post, path = "/api/v1/users/{userName}/unblock",
    params(("userName" = String, Path, description = "sign-in name")),
    responses((status = 200, body = SignInChangeView), (status = 401), (status = 403), (status = 404), (status = 503)),
    security(("bearer" = [])), tag = "passwords")]
pub async fn unblock(
    State(state): State<AdminState>,
    // The account gate checks the right (and audits a refusal), not the extractor.
    caller: Principal,
    headers: HeaderMap,
    Path(user_name): Path<String>,
) -> Result<Json<SignInChangeView>, AdminError> {
    let change = state
        .account
        .block_sign_in(&actor_of(&caller, &headers), &user_name, false)
        .await?;
    Ok(Json(change.into()))
}

/// A message lockbridge gave up delivering.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterView {
    pub id: i64,
    /// Message kind, e.g. `temporary-password`, `password-expiring`.
    pub template: String,
    pub recipient: String,
    pub attempts: u32,
    /// The relay's last answer (or why it was dropped, e.g. stale).
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeadLetterParams {
    /// Only messages older than this id (the `next` value of the previous page).
    before: Option<i64>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterPage {
    pub messages: Vec<DeadLetterView>,
    pub next: Option<i64>,
}

/// Messages that kept failing and were given up (their secrets are already erased).
#[utoipa::path(get, path = "/api/v1/mail/dead-letters", params(DeadLetterParams),
    responses((status = 200, body = DeadLetterPage), (status = 401), (status = 403)),
    security(("bearer" = [])), tag = "audit")]
pub async fn list_dead_letters(
    State(state): State<AdminState>,
    _caller: Require<ReadAudit>,
    params: Result<Query<DeadLetterParams>, QueryRejection>,
) -> Result<Json<DeadLetterPage>, AdminError> {
    let Query(params) =
        params.map_err(|e| AdminError::BadRequest(crate::types::query_problem(&e)))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AdminError::BadRequest(format!(
            "limit is {limit}; use a value from 1 to 500"
        )));
    }
    let dead = state.notifier.dead_letters(params.before, limit).await?;
    let next = (dead.len() == limit as usize)
        .then(|| dead.last().map(|m| m.id))
        .flatten();
    Ok(Json(DeadLetterPage {
        messages: dead
            .into_iter()
            .map(|m| DeadLetterView {
                id: m.id,
                template: m.template,
                recipient: m.recipient,
                attempts: m.attempts,
                last_error: m.last_error,
                created_at: m.created_at,
            })
            .collect(),
        next,
    }))
}

/// Which reset requests to list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ResetRequestParams {
    /// `open`, `closed` (the password was reset) or `dismissed`; all when absent.
    status: Option<String>,
    /// Only requests older than this one (the `next` value of the previous page).
    before: Option<String>,
    /// Page size, 1 to 500 (default 100).
    limit: Option<u32>,
}

/// A user's "contact an administrator" request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetRequestView {
    pub id: String,
    pub user_name: String,
    /// `open`, `closed` or `dismissed`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    /// Who reset the password or dismissed the request.
    pub closed_by: Option<String>,
    /// Why it was dismissed.
    pub reason: Option<String>,
}

impl From<ResetRequestRecord> for ResetRequestView {
    fn from(r: ResetRequestRecord) -> Self {
        ResetRequestView {
            id: r.id,
            user_name: r.user_name,
            status: r.status,
            created_at: r.created_at,
            closed_at: r.closed_at,
            closed_by: r.closed_by,
            reason: r.reason,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetRequestPage {
    pub requests: Vec<ResetRequestView>,
    /// Pass as `before` for the next page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Users' "contact an administrator" requests, newest first. A request closes by itself
/// when an administrator resets that user's password.
#[utoipa::path(get, path = "/api/v1/reset-requests", params(ResetRequestParams),
    responses((status = 200, body = ResetRequestPage), (status = 400), (status = 401), (status = 403), (status = 503)),
    security(("bearer" = [])), tag = "passwords")]
pub async fn list_reset_requests(
    State(state): State<AdminState>,
    _caller: Require<ReadUsers>,
    params: Result<Query<ResetRequestParams>, QueryRejection>,
) -> Result<Json<ResetRequestPage>, AdminError> {
    let Query(params) =
        params.map_err(|e| AdminError::BadRequest(crate::types::query_problem(&e)))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(AdminError::BadRequest(format!(
            "limit is {limit}; use a value from 1 to 500"
        )));
    }
    if let Some(status) = params.status.as_deref()
        && !["open", "closed", "dismissed"].contains(&status)
    {
        return Err(AdminError::BadRequest(format!(
            "status is `{status}`; use open, closed or dismissed, or leave it out for all"
        )));
    }
    let requests = state
        .account
        .reset_requests(params.status.as_deref(), params.before.as_deref(), limit)
        .await?;
    let next = (requests.len() == limit as usize)
        .then(|| requests.last().map(|r| r.id.clone()))
        .flatten();
    Ok(Json(ResetRequestPage {
        requests: requests.into_iter().map(ResetRequestView::from).collect(),
        next,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DismissBody {
    /// Why (1 to 500 characters), kept with the request.
    pub reason: String,
}

/// Dismiss an open request without resetting the password (the caller must be allowed
/// to reset that user's password).
#[utoipa::path(post, path = "/api/v1/reset-requests/{id}/dismiss",
    params(("id" = String, Path, description = "request id")),
    request_body = DismissBody,
    responses((status = 200, body = ResetRequestView), (status = 400), (status = 401), (status = 403), (status = 404), (status = 503)),
    security(("bearer" = [])), tag = "passwords")]
pub async fn dismiss_reset_request(
    State(state): State<AdminState>,
    // The account gate checks the right on the request's user.
    caller: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<DismissBody>, JsonRejection>,
) -> Result<Json<ResetRequestView>, AdminError> {
    let Json(body) =
        body.map_err(|e| AdminError::BadRequest(crate::types::json_body_problem(&e)))?;
    let record = state
        .account
        .dismiss_reset_request(&actor_of(&caller, &headers), &id, &body.reason)
        .await?;
    Ok(Json(record.into()))
}
