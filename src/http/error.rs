//! The one mapping from every error type to an HTTP response.
//!
//! Every refusal carries a stable machine `code`, a `detail` saying what was wrong and a
//! `hint` saying what to do. Internal causes are logged here, once, inside the request's
//! span (which carries the request id); the client gets no internal text.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::account::{AccountError, rejection_code};
use crate::admin::AdminError;
use crate::auth::AuthError;
use crate::bulk::routes::BulkApiError;
use crate::directory::PolicyRejection;
use crate::policy::Violation;
use crate::scim::error::ScimError;
use crate::sweep::routes::SweepApiError;
use crate::types::RevealedPassword;

/// The body of every error response of the admin API.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    #[serde(skip)]
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `password_policy`.
    pub code: &'static str,
    /// What was wrong.
    pub detail: String,
    /// What to do about it.
    pub hint: String,
    /// For `password_policy`: each rule the password breaks.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<ViolationView>,
    /// A reset that failed part-way: the new password, which may be in force, when the
    /// caller asked to see it (or it could not be mailed).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<RevealedPassword>,
    /// A reset that failed part-way: where the new password was mailed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sent_to: Option<Vec<String>>,
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
    #[serde(skip)]
    pub www_authenticate: Option<&'static str>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ViolationView {
    pub code: &'static str,
    pub message: String,
}

impl ErrorBody {
    pub fn new(
        status: StatusCode,
        code: &'static str,
        detail: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            hint: hint.into(),
            violations: Vec::new(),
            password: None,
            sent_to: None,
            retry_after_secs: None,
            www_authenticate: None,
        }
    }

    /// A 500 whose cause is logged, not shown.
    pub fn internal(cause: &str) -> Self {
        tracing::error!(cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
            "see the server log for the request id in this response's X-Request-Id header",
        )
    }
}

impl IntoResponse for ErrorBody {
    fn into_response(self) -> Response {
        let status = self.status;
        let retry_after = self.retry_after_secs;
        let www = self.www_authenticate;
        let mut response = (status, Json(self)).into_response();
        if let Some(secs) = retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if let Some(w) = www {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(w));
        }
        response
    }
}

impl From<&AuthError> for ErrorBody {
    fn from(e: &AuthError) -> Self {
        match e {
            AuthError::MissingToken => ErrorBody {
                www_authenticate: Some("Bearer"),
                ..ErrorBody::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthenticated",
                    e.to_string(),
                    "send `Authorization: Bearer <token>`; an operator creates tokens with `lockbridge token create`",
                )
            },
            AuthError::InvalidToken => ErrorBody {
                www_authenticate: Some("Bearer error=\"invalid_token\""),
                ..ErrorBody::new(
                    StatusCode::UNAUTHORIZED,
                    "invalid_token",
                    e.to_string(),
                    "check the token was copied whole; ask an operator for a new one if it was revoked",
                )
            },
            AuthError::Forbidden { .. } => ErrorBody::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                e.to_string(),
                "use a token whose role grants this, or ask a global admin",
            ),
            AuthError::Store(cause) => store_unavailable(&cause.to_string()),
        }
    }
}

fn store_unavailable(cause: &str) -> ErrorBody {
    tracing::error!(cause, "store unavailable");
    ErrorBody {
        retry_after_secs: Some(5),
        ..ErrorBody::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            "lockbridge's own database is unavailable; nothing was changed",
            "retry later; operators: check the state folder's disk and permissions",
        )
    }
}

/// Code, explanation and advice for a password the directory's own policy refused.
pub fn rejection_text(r: &PolicyRejection) -> (&'static str, String, &'static str) {
    let (detail, hint) = match r {
        PolicyRejection::TooShort => (
            "the directory's password policy says the password is too short".into(),
            "choose a longer password",
        ),
        PolicyRejection::InsufficientQuality => (
            "the directory's password policy says the password is not of sufficient quality".into(),
            "choose a longer password that mixes letters, digits and symbols",
        ),
        PolicyRejection::QualityRule(rule) => (
            format!(
                "the directory's password policy says the password is not of sufficient quality: {rule}"
            ),
            "choose a different password that meets the rule",
        ),
        PolicyRejection::InHistory => (
            "the directory's password policy says this password was used recently".into(),
            "choose a password the user has not used before",
        ),
        PolicyRejection::TooYoung => (
            "the directory's password policy says the password was changed too recently".into(),
            "wait until the minimum password age has passed",
        ),
        PolicyRejection::TooLong => (
            "the directory's password policy says the password is too long".into(),
            "choose a shorter password",
        ),
        PolicyRejection::ModNotAllowed => (
            "the directory's password policy does not allow this password change".into(),
            "check the user's password policy (pwdAllowUserChange) in the directory",
        ),
        PolicyRejection::MustSupplyOldPassword => (
            "the directory requires the old password for this change".into(),
            "check the password policy's pwdSafeModify setting",
        ),
        PolicyRejection::Other(text) => (
            format!("the directory refused the password: {text}"),
            "choose a different password, or see the directory's password policy",
        ),
    };
    (rejection_code(r), detail, hint)
}

impl From<&AccountError> for ErrorBody {
    fn from(e: &AccountError) -> Self {
        let code = e.code();
        match e {
            AccountError::UnknownUser(_) => ErrorBody::new(
                StatusCode::NOT_FOUND,
                code,
                e.to_string(),
                "check the user name (GET /api/v1/users?search= finds users)",
            ),
            AccountError::SignInRefused => ErrorBody::new(
                StatusCode::UNAUTHORIZED,
                code,
                e.to_string(),
                "check the user name and password; administrators are members of a group in [roles]",
            ),
            AccountError::PasswordChangeFirst => ErrorBody::new(
                StatusCode::FORBIDDEN,
                code,
                e.to_string(),
                "change your password first (self-service, or ask another administrator), then sign in again",
            ),
            AccountError::NotPermitted { .. } => ErrorBody::new(
                StatusCode::FORBIDDEN,
                code,
                e.to_string(),
                "nothing was changed; docs/roles.md lists which role may act on whom",
            ),
            AccountError::ProtectedTarget { .. } => ErrorBody::new(
                StatusCode::FORBIDDEN,
                code,
                e.to_string(),
                "nothing was changed; change this account in the directory itself",
            ),
            AccountError::PasswordMayBeInForce { error, handover } => {
                let mut body = ErrorBody::from(error.as_ref());
                body.hint = match (&handover.password, handover.sent_to.is_empty()) {
                    (Some(_), _) => format!(
                        "the new password (in `password`) may be in force: pass it to the user \
                         securely; {}",
                        body.hint
                    ),
                    (None, false) => format!(
                        "the new password may be in force and was mailed to the addresses in \
                         `sentTo`; {}",
                        body.hint
                    ),
                    (None, true) => {
                        format!("the password you chose may be in force; {}", body.hint)
                    }
                };
                body.password = handover.password.clone().map(RevealedPassword::new);
                body.sent_to = Some(handover.sent_to.clone());
                body
            }
            AccountError::InvalidRequest(detail) => ErrorBody::new(
                StatusCode::BAD_REQUEST,
                code,
                detail.clone(),
                "fix the request and send it again; nothing was changed",
            ),
            // Only a breached password: nothing about its form to fix, so say why at once.
            AccountError::PolicyViolation(violations)
                if matches!(violations.as_slice(), [Violation::Breached]) =>
            {
                ErrorBody {
                    violations: vec![ViolationView {
                        code: Violation::Breached.code(),
                        message: format!("the password {}", Violation::Breached),
                    }],
                    ..ErrorBody::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        code,
                        format!("the password {}", Violation::Breached),
                        "choose a password of your own, e.g. several unrelated words, not a \
                         variation of a common one; the old password still works",
                    )
                }
            }
            AccountError::PolicyViolation(violations) => ErrorBody {
                violations: violations
                    .iter()
                    .map(|v| ViolationView {
                        code: v.code(),
                        message: format!("the password {v}"),
                    })
                    .collect(),
                ..ErrorBody::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    code,
                    format!(
                        "the password breaks {} rule(s): {}",
                        violations.len(),
                        violations
                            .iter()
                            .map(|v| v.code())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    "choose a password that meets every rule listed in `violations`; the old password still works",
                )
            },
            AccountError::DirectoryRefused(r) => {
                let (code, detail, hint) = rejection_text(r);
                ErrorBody::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    code,
                    detail,
                    format!("{hint}; the old password still works"),
                )
            }
            AccountError::DirectoryUnavailable {
                cause,
                retry_after_secs,
                busy,
            } => {
                tracing::warn!(cause = %cause, busy, "directory unavailable");
                ErrorBody {
                    retry_after_secs: Some(*retry_after_secs),
                    ..ErrorBody::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        code,
                        crate::account::unavailable_detail(*busy),
                        "retry after the number of seconds in Retry-After",
                    )
                }
            }
            AccountError::OutcomeUnknown {
                cause,
                retry_after_secs,
            } => {
                tracing::warn!(cause = %cause, "password write outcome unknown");
                ErrorBody {
                    retry_after_secs: Some(*retry_after_secs),
                    ..ErrorBody::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        code,
                        "the directory stopped answering after the password change was sent; \
                         the password may or may not have been changed",
                        "reset the password again once the directory answers (mode \"auto\" \
                         replaces whichever password is in force)",
                    )
                }
            }
            AccountError::FlagNotApplied {
                directory_unavailable: true,
            } => ErrorBody {
                retry_after_secs: Some(30),
                ..ErrorBody::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    code,
                    e.to_string(),
                    "the new password is in force; the directory stopped answering before the \
                     \"must change\" setting was written: reset again once it is back",
                )
            },
            AccountError::FlagNotApplied { .. } => ErrorBody::new(
                StatusCode::BAD_GATEWAY,
                code,
                e.to_string(),
                "the new password is in force; reset again to apply the setting, or check the \
                 service account's write access to the attribute that holds \"must change\" \
                 (docs/directories/ for your directory)",
            ),
            AccountError::DirectoryAccessDenied => {
                tracing::error!("the directory denied the service account access");
                ErrorBody::new(
                    StatusCode::BAD_GATEWAY,
                    code,
                    e.to_string(),
                    "operators: give the service account the rights listed for your directory in \
                     docs/directories/ (OpenLDAP: write, not manage, on userPassword and \
                     pwdReset); nothing was changed",
                )
            }
            AccountError::AccountLocked => ErrorBody::new(
                StatusCode::CONFLICT,
                code,
                e.to_string(),
                "unlock the account in the directory first",
            ),
            AccountError::Misconfigured(detail) => {
                tracing::error!(detail = %detail, "configuration problem");
                ErrorBody::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    code,
                    detail.clone(),
                    "this is a server configuration problem; nothing was changed by this request",
                )
            }
            AccountError::Directory(cause) => {
                tracing::error!(cause = %cause, "directory error");
                ErrorBody::new(
                    StatusCode::BAD_GATEWAY,
                    code,
                    "the directory answered with an unexpected error",
                    "see the server log for the request id in this response's X-Request-Id header",
                )
            }
            AccountError::AuditUnavailable(cause) => store_unavailable(&cause.to_string()),
        }
    }
}

impl From<&AdminError> for ErrorBody {
    fn from(e: &AdminError) -> Self {
        match e {
            AdminError::Account(a) => a.into(),
            AdminError::BadRequest(detail) => ErrorBody::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                detail.clone(),
                "fix the request (see /api/v1/openapi.json); nothing was changed",
            ),
            AdminError::Store(cause) => store_unavailable(&cause.to_string()),
        }
    }
}

impl From<&SweepApiError> for ErrorBody {
    fn from(e: &SweepApiError) -> Self {
        match e {
            SweepApiError::NotFound(_) => ErrorBody::new(
                StatusCode::NOT_FOUND,
                "sweep_not_found",
                e.to_string(),
                "GET /api/v1/sweeps lists the latest sweeps",
            ),
            SweepApiError::AlreadyRunning(_) | SweepApiError::LeaseHeld => ErrorBody::new(
                StatusCode::CONFLICT,
                "sweep_running",
                e.to_string(),
                "follow the running sweep at /api/v1/sweeps/{id}, or start a dry run",
            ),
            SweepApiError::BadRequest(detail) => ErrorBody::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                detail.clone(),
                "fix the request (see /api/v1/openapi.json); nothing was started",
            ),
            SweepApiError::Store(cause) => store_unavailable(&cause.to_string()),
        }
    }
}

impl From<&BulkApiError> for ErrorBody {
    fn from(e: &BulkApiError) -> Self {
        match e {
            BulkApiError::NotFound(_) => ErrorBody::new(
                StatusCode::NOT_FOUND,
                "job_not_found",
                e.to_string(),
                "check the id the job was started with (jobs are readable by their creator)",
            ),
            BulkApiError::BadRequest(detail) => ErrorBody::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                detail.clone(),
                "fix the request (see /api/v1/openapi.json); nothing was started",
            ),
            BulkApiError::TooMany(detail) => ErrorBody::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_accounts",
                detail.clone(),
                "split the request, or have a global admin run it; nothing was started",
            ),
            BulkApiError::ReportGone(_) => ErrorBody::new(
                StatusCode::GONE,
                "report_gone",
                e.to_string(),
                "a report is given out once; reset those users again if their passwords are lost",
            ),
            BulkApiError::Account(inner) => ErrorBody::from(inner),
            BulkApiError::Store(cause) => store_unavailable(&cause.to_string()),
        }
    }
}

impl IntoResponse for BulkApiError {
    fn into_response(self) -> Response {
        ErrorBody::from(&self).into_response()
    }
}

impl IntoResponse for SweepApiError {
    fn into_response(self) -> Response {
        ErrorBody::from(&self).into_response()
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        ErrorBody::from(&self).into_response()
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        ErrorBody::from(&self).into_response()
    }
}

/// SCIM errors (RFC 7644 §3.12): the SCIM error body with `status` as a string and
/// `scimType` where defined, in `application/scim+json`. Internal causes are logged, not
/// shown.
impl IntoResponse for ScimError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status == StatusCode::NOT_MODIFIED {
            return status.into_response();
        }
        match &self {
            ScimError::Internal(cause) => tracing::error!(cause = %cause, "SCIM request failed"),
            other if status.is_server_error() => {
                tracing::warn!(error = %other, "SCIM request failed")
            }
            _ => {}
        }
        let mut response = (status, self.body().to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/scim+json"),
        );
        if let Some(secs) = self.retry_after_secs()
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            headers.insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The rest of the body was never read: the connection cannot carry another
            // request, and a client that reused it would see it cut off.
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{Permission, Role};

    /// Every variant gets the intended status and code (the table a reviewer reads).
    #[test]
    fn status_and_code_table() {
        let cases: Vec<(ErrorBody, StatusCode, &str)> = vec![
            (
                (&AuthError::MissingToken).into(),
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
            ),
            (
                (&AuthError::InvalidToken).into(),
                StatusCode::UNAUTHORIZED,
                "invalid_token",
            ),
            (
                (&AuthError::Forbidden {
                    roles: Role::PasswordAdmin.to_string(),
                    permission: Permission::ReadAudit,
                })
                    .into(),
                StatusCode::FORBIDDEN,
                "forbidden",
            ),
            (
                (&AccountError::UnknownUser("x".into())).into(),
                StatusCode::NOT_FOUND,
                "user_not_found",
            ),
            (
                (&AccountError::NotPermitted {
                    message: "x".into(),
                })
                    .into(),
                StatusCode::FORBIDDEN,
                "forbidden_target",
            ),
            (
                (&AccountError::SignInRefused).into(),
                StatusCode::UNAUTHORIZED,
                "sign_in_refused",
            ),
            (
                (&AccountError::PasswordChangeFirst).into(),
                StatusCode::FORBIDDEN,
                "password_change_required",
            ),
            (
                (&AccountError::InvalidRequest("x".into())).into(),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
            (
                (&AccountError::PolicyViolation(vec![Violation::TooShort { min: 12, actual: 3 }]))
                    .into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "password_policy",
            ),
            (
                (&AccountError::PolicyViolation(vec![Violation::Breached])).into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "password_policy",
            ),
            (
                (&AccountError::DirectoryRefused(PolicyRejection::InHistory)).into(),
                StatusCode::UNPROCESSABLE_ENTITY,
                "password_in_history",
            ),
            (
                (&AccountError::DirectoryUnavailable {
                    cause: "x".into(),
                    retry_after_secs: 7,
                    busy: false,
                })
                    .into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "directory_unavailable",
            ),
            (
                (&AccountError::FlagNotApplied {
                    directory_unavailable: false,
                })
                    .into(),
                StatusCode::BAD_GATEWAY,
                "must_change_flag_not_applied",
            ),
            (
                (&AccountError::FlagNotApplied {
                    directory_unavailable: true,
                })
                    .into(),
                StatusCode::SERVICE_UNAVAILABLE,
                "must_change_flag_not_applied",
            ),
            (
                (&AccountError::AccountLocked).into(),
                StatusCode::CONFLICT,
                "account_locked",
            ),
            (
                (&AdminError::BadRequest("x".into())).into(),
                StatusCode::BAD_REQUEST,
                "invalid_request",
            ),
        ];
        for (body, status, code) in cases {
            assert_eq!(body.status, status, "{code}");
            assert_eq!(body.code, code);
            assert!(!body.hint.is_empty() && !body.detail.is_empty(), "{code}");
        }
    }

    #[test]
    fn unavailable_sets_retry_after() {
        let response = AdminError::Account(AccountError::DirectoryUnavailable {
            cause: "down".into(),
            retry_after_secs: 7,
            busy: false,
        })
        .into_response();
        assert_eq!(response.headers()[header::RETRY_AFTER], "7");
    }

    /// Clashing writes to one account are not reported as the directory being down.
    #[test]
    fn a_busy_account_is_not_called_an_unreachable_directory() {
        let busy: ErrorBody = (&AccountError::DirectoryUnavailable {
            cause: "noSuchAttribute".into(),
            retry_after_secs: 1,
            busy: true,
        })
            .into();
        assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.retry_after_secs, Some(1));
        assert!(busy.detail.contains("kept clashing"), "{}", busy.detail);
        assert!(!busy.detail.contains("not reachable"), "{}", busy.detail);
        assert!(
            !busy.detail.contains("noSuchAttribute"),
            "the cause stays in the log"
        );
    }

    #[test]
    fn missing_token_asks_for_bearer() {
        let response = AuthError::MissingToken.into_response();
        assert_eq!(response.headers()[header::WWW_AUTHENTICATE], "Bearer");
    }

    /// Every SCIM error: status, `scimType`, the RFC 7644 body shape, and no internal
    /// text for 500s.
    #[tokio::test]
    async fn scim_error_table() {
        let cases: Vec<(ScimError, u16, Option<&str>)> = vec![
            (
                ScimError::InvalidFilter("x".into()),
                400,
                Some("invalidFilter"),
            ),
            (ScimError::InvalidPath("x".into()), 400, Some("invalidPath")),
            (ScimError::NoTarget("x".into()), 400, Some("noTarget")),
            (
                ScimError::InvalidSyntax("x".into()),
                400,
                Some("invalidSyntax"),
            ),
            (
                ScimError::InvalidValue("x".into()),
                400,
                Some("invalidValue"),
            ),
            (ScimError::Mutability("x".into()), 400, Some("mutability")),
            (ScimError::TooMany("x".into()), 400, Some("tooMany")),
            (ScimError::Uniqueness("x".into()), 409, Some("uniqueness")),
            (ScimError::NotFound("x".into()), 404, None),
            (ScimError::PreconditionFailed("x".into()), 412, None),
            (ScimError::Sensitive("x".into()), 403, Some("sensitive")),
            (ScimError::Forbidden("x".into()), 403, None),
            (ScimError::Unauthorized("x".into()), 401, None),
            (ScimError::NotImplemented("x".into()), 501, None),
            (ScimError::MethodNotAllowed("x".into()), 405, None),
            (
                ScimError::TooManyRequests {
                    retry_after_secs: 3,
                },
                429,
                None,
            ),
            (
                ScimError::Unavailable {
                    detail: "x".into(),
                    retry_after_secs: 7,
                },
                503,
                None,
            ),
            (ScimError::Internal("secret cause".into()), 500, None),
        ];
        for (error, status, scim_type) in cases {
            let response = error.into_response();
            assert_eq!(response.status().as_u16(), status);
            assert_eq!(
                response.headers()[header::CONTENT_TYPE],
                "application/scim+json"
            );
            let retry = response.headers().get(header::RETRY_AFTER).cloned();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
                .await
                .expect("body");
            let body: serde_json::Value = serde_json::from_slice(&bytes).expect("json");
            assert_eq!(
                body["schemas"],
                serde_json::json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
            );
            assert_eq!(body["status"], serde_json::json!(status.to_string()));
            assert_eq!(body["scimType"].as_str(), scim_type, "{body}");
            assert!(!body["detail"].as_str().unwrap_or("").is_empty());
            assert!(!body.to_string().contains("secret cause"), "{body}");
            if matches!(status, 429 | 503) {
                assert!(retry.is_some(), "Retry-After on {status}");
            }
        }
        let too_large = ScimError::PayloadTooLarge.into_response();
        assert_eq!(too_large.status().as_u16(), 413);
        assert_eq!(too_large.headers()[header::CONNECTION], "close");
        assert_eq!(
            ScimError::NotModified.into_response().status(),
            StatusCode::NOT_MODIFIED
        );
    }
}
