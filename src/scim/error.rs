//! The SCIM error vocabulary (RFC 7644 §3.12): what went wrong, in SCIM's own terms.
//!
//! Each variant knows its HTTP status and its `scimType` (where RFC 7644 table 9 defines
//! one). `Display` is the sentence meant for the error's `detail`: it says what was wrong
//! and what the client can do about it. No message ever contains a password: the code
//! that builds these errors names the password attribute, never its value.
//!
//! Turning a `ScimError` into an HTTP response (the SCIM error body, `Retry-After`, logging
//! of internal causes) is `http/error.rs`'s job, not this module's.

use super::filter::{ParseError, TranslateError};

/// A SCIM error (RFC 7644 §3.12). The `String`s are details that complete the sentence
/// each variant prints; see the variant's documentation for what they should say.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScimError {
    /// 400 `invalidFilter`: the filter does not parse, names an unknown attribute, or cannot
    /// be evaluated. The detail says where and why.
    #[error(
        "invalid filter: {0}; correct the filter (RFC 7644 §3.4.2.2 syntax, with the attributes \
         listed at /Schemas)"
    )]
    InvalidFilter(String),
    /// 400 `invalidPath`: a PATCH `path` that does not parse or cannot be used.
    #[error(
        "invalid PATCH path: {0}; use an attribute path such as name.givenName, \
         urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department or \
         emails[type eq \"work\"].value"
    )]
    InvalidPath(String),
    /// 400 `noTarget`: a PATCH operation's path selects nothing where something is needed.
    #[error("the PATCH operation has no target: {0}")]
    NoTarget(String),
    /// 400 `invalidSyntax`: the request body is not the JSON structure the operation needs.
    #[error("invalid request: {0}; send a JSON body as RFC 7644 describes for this operation")]
    InvalidSyntax(String),
    /// 400 `invalidValue`: a value of the wrong type, a missing required value, or a
    /// query parameter that is not valid. The detail says which and what is expected.
    #[error("invalid value: {0}; correct the request and send it again")]
    InvalidValue(String),
    /// 400 `mutability`: an attempt to change a read-only or immutable attribute.
    #[error(
        "{0}; leave read-only attributes (id, meta, groups and the computed password facts) \
         out of the request or send their current value"
    )]
    Mutability(String),
    /// 400 `tooMany`: more results than the service provider will return or process. The
    /// detail says how many and what to do (paging does not always help).
    #[error("too many results: {0}")]
    TooMany(String),
    /// 409 `uniqueness`: a value that must be unique (e.g. `userName`) is already taken.
    #[error("{0}; choose another value, or update the existing resource instead")]
    Uniqueness(String),
    /// 404: the resource does not exist. The detail is a whole sentence: what is missing
    /// and where to look instead (each site knows which hint fits).
    #[error("{0}")]
    NotFound(String),
    /// 412: `If-Match` named a version that is no longer current. The detail is a whole
    /// sentence (what changed, and to read the resource again).
    #[error("{0}")]
    PreconditionFailed(String),
    /// 304: `If-None-Match` named the current version.
    #[error("the resource has not changed since the version given in If-None-Match")]
    NotModified,
    /// 403 `sensitive`: sensitive data (a password) in the request URI, where it would be
    /// logged (RFC 7644 §7.5.2).
    #[error("{0}; never put passwords in a URL, and send queries with POST /.search")]
    Sensitive(String),
    /// 501: a part of SCIM lockbridge does not implement (bulk, …).
    #[error("{0} is not supported by lockbridge; see /ServiceProviderConfig for what is")]
    NotImplemented(String),
    /// 429: this client sent more requests than the configured rate allows.
    #[error(
        "too many requests; wait {retry_after_secs} seconds (Retry-After) and send fewer \
         requests at a time"
    )]
    TooManyRequests {
        /// How long the client should wait (`Retry-After`).
        retry_after_secs: u64,
    },
    /// 429: this client already has as many requests under way as one token may
    /// (`scim.max_requests_in_flight_per_token`).
    #[error(
        "too many requests with this token under way at once (at most {limit}); wait for \
         answers before sending more, and retry this one after 1 second (Retry-After)"
    )]
    TooManyAtOnce { limit: u32 },
    /// 409 (`invalidValue`): a Bulk operation refers to a `bulkId` that no successful
    /// operation of the request created (RFC 7644 §3.7.1).
    #[error("{0}")]
    UnresolvedBulkId(String),
    /// 405: the endpoint exists but does not take this HTTP method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 413: the request body (or a Bulk request's operation count) is larger than the
    /// limit.
    #[error(
        "the request is too large; a body may hold at most 1048576 bytes and a Bulk request \
         at most 1000 operations (see /ServiceProviderConfig): send it in parts"
    )]
    PayloadTooLarge,
    /// 403: authenticated, but not allowed to do this.
    #[error("forbidden: {0}; ask an administrator for a token with the needed role")]
    Forbidden(String),
    /// 403: the target is one of the accounts that run lockbridge (an administrator, the
    /// service account, an administrator group, a `scim.protected_dns` entry).
    #[error("{0}")]
    Protected(String),
    /// 401: no valid credentials.
    #[error("unauthorized: {0}; send a valid API token as \"Authorization: Bearer <token>\"")]
    Unauthorized(String),
    /// 503: the directory (or another dependency) cannot be reached; nothing was changed.
    #[error("the directory is unavailable ({detail}); retry in {retry_after_secs} seconds")]
    Unavailable {
        /// What failed.
        detail: String,
        /// How long the client should wait (`Retry-After`).
        retry_after_secs: u64,
    },
    /// 503: a write was sent but its outcome is unknown (the connection died before the
    /// answer); it may or may not have been applied.
    #[error(
        "the outcome of the change is unknown ({detail}); read the resource to see whether it \
         was applied before retrying (in {retry_after_secs} seconds or later)"
    )]
    OutcomeUnknown {
        /// What failed.
        detail: String,
        /// How long the client should wait (`Retry-After`).
        retry_after_secs: u64,
    },
    /// 500: a fault of lockbridge or its configuration, not the client's.
    #[error("internal error: {0}; the server log has the details")]
    Internal(String),
}

impl ScimError {
    /// The error's body (RFC 7644 §3.12): `schemas`, `status` as a string, `detail`, and
    /// `scimType` where one applies. An internal error's cause stays out of it (it is
    /// logged where the error is answered).
    pub fn body(&self) -> serde_json::Value {
        let detail = match self {
            Self::Internal(_) => "internal error; the server log has the details under this \
                                  response's X-Request-Id"
                .to_owned(),
            other => other.to_string(),
        };
        let mut body = serde_json::json!({
            "schemas": ["urn:ietf:params:scim:api:messages:2.0:Error"],
            "status": self.status().to_string(),
            "detail": detail,
        });
        if let Some(t) = self.scim_type() {
            body["scimType"] = serde_json::Value::from(t);
        }
        body
    }

    /// The HTTP status code (RFC 7644 §3.12).
    pub fn status(&self) -> u16 {
        match self {
            Self::InvalidFilter(_)
            | Self::InvalidPath(_)
            | Self::NoTarget(_)
            | Self::InvalidSyntax(_)
            | Self::InvalidValue(_)
            | Self::Mutability(_)
            | Self::TooMany(_) => 400,
            Self::Uniqueness(_) | Self::UnresolvedBulkId(_) => 409,
            Self::NotFound(_) => 404,
            Self::PreconditionFailed(_) => 412,
            Self::NotModified => 304,
            Self::Sensitive(_) | Self::Forbidden(_) | Self::Protected(_) => 403,
            Self::NotImplemented(_) => 501,
            Self::MethodNotAllowed(_) => 405,
            Self::TooManyRequests { .. } | Self::TooManyAtOnce { .. } => 429,
            Self::PayloadTooLarge => 413,
            Self::Unauthorized(_) => 401,
            Self::Unavailable { .. } | Self::OutcomeUnknown { .. } => 503,
            Self::Internal(_) => 500,
        }
    }

    /// The `scimType` keyword (RFC 7644 §3.12, table 9), for the errors that have one.
    pub fn scim_type(&self) -> Option<&'static str> {
        Some(match self {
            Self::InvalidFilter(_) => "invalidFilter",
            Self::InvalidPath(_) => "invalidPath",
            Self::NoTarget(_) => "noTarget",
            Self::InvalidSyntax(_) => "invalidSyntax",
            Self::InvalidValue(_) | Self::UnresolvedBulkId(_) => "invalidValue",
            Self::Mutability(_) => "mutability",
            Self::TooMany(_) => "tooMany",
            Self::Uniqueness(_) => "uniqueness",
            Self::Sensitive(_) => "sensitive",
            _ => return None,
        })
    }

    /// A stable machine code for audit records and metrics: the `scimType` where there is
    /// one, otherwise a name for the status.
    pub fn code(&self) -> &'static str {
        if let Some(t) = self.scim_type() {
            return t;
        }
        match self {
            Self::NotFound(_) => "notFound",
            Self::PreconditionFailed(_) => "preconditionFailed",
            Self::NotModified => "notModified",
            Self::NotImplemented(_) => "notImplemented",
            Self::MethodNotAllowed(_) => "methodNotAllowed",
            Self::TooManyRequests { .. } | Self::TooManyAtOnce { .. } => "tooManyRequests",
            Self::PayloadTooLarge => "payloadTooLarge",
            Self::Forbidden(_) => "forbidden",
            Self::Protected(_) => "protectedTarget",
            Self::Unauthorized(_) => "unauthorized",
            Self::Unavailable { .. } => "unavailable",
            Self::OutcomeUnknown { .. } => "outcomeUnknown",
            _ => "internal",
        }
    }

    /// Seconds the client should wait before retrying (`Retry-After`), for 503s.
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Self::Unavailable {
                retry_after_secs, ..
            }
            | Self::OutcomeUnknown {
                retry_after_secs, ..
            }
            | Self::TooManyRequests { retry_after_secs } => Some(*retry_after_secs),
            Self::TooManyAtOnce { .. } => Some(1),
            _ => None,
        }
    }
}

impl From<ParseError> for ScimError {
    /// A filter that does not parse (a PATCH path that does not parse is an
    /// [`ScimError::InvalidPath`]: map it explicitly there).
    fn from(e: ParseError) -> Self {
        Self::InvalidFilter(e.to_string())
    }
}

impl From<TranslateError> for ScimError {
    /// The client's filter cannot be translated (`invalidFilter`), or the mapping is
    /// broken (a server fault).
    fn from(e: TranslateError) -> Self {
        match e {
            TranslateError::InvalidMapping(_) => Self::Internal(e.to_string()),
            other => Self::InvalidFilter(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scim::filter::parse_filter;
    use rstest::rstest;

    fn s() -> String {
        "x".to_owned()
    }

    #[rstest]
    #[case(ScimError::InvalidFilter(s()), 400, Some("invalidFilter"))]
    #[case(ScimError::InvalidPath(s()), 400, Some("invalidPath"))]
    #[case(ScimError::NoTarget(s()), 400, Some("noTarget"))]
    #[case(ScimError::InvalidSyntax(s()), 400, Some("invalidSyntax"))]
    #[case(ScimError::InvalidValue(s()), 400, Some("invalidValue"))]
    #[case(ScimError::Mutability(s()), 400, Some("mutability"))]
    #[case(ScimError::TooMany("more than 2000 entries match; narrow the filter".into()), 400, Some("tooMany"))]
    #[case(ScimError::Uniqueness(s()), 409, Some("uniqueness"))]
    #[case(ScimError::UnresolvedBulkId("bulkId \"u1\" names no operation that succeeded".into()), 409, Some("invalidValue"))]
    #[case(ScimError::NotFound("no User has the id \"u1\"; check the id, or find the user with a filter".into()), 404, None)]
    #[case(ScimError::PreconditionFailed("the resource changed since the version in If-Match; read it again".into()), 412, None)]
    #[case(ScimError::NotModified, 304, None)]
    #[case(ScimError::Sensitive(s()), 403, Some("sensitive"))]
    #[case(ScimError::NotImplemented(s()), 501, None)]
    #[case(ScimError::PayloadTooLarge, 413, None)]
    #[case(ScimError::Forbidden(s()), 403, None)]
    #[case(ScimError::Protected("`alice` is a member of an administrator group".into()), 403, None)]
    #[case(ScimError::Unauthorized(s()), 401, None)]
    #[case(ScimError::Unavailable { detail: s(), retry_after_secs: 5 }, 503, None)]
    #[case(ScimError::OutcomeUnknown { detail: s(), retry_after_secs: 5 }, 503, None)]
    #[case(ScimError::Internal(s()), 500, None)]
    fn each_error_has_its_status_and_scim_type(
        #[case] e: ScimError,
        #[case] status: u16,
        #[case] scim_type: Option<&str>,
    ) {
        assert_eq!(e.status(), status, "{e:?}");
        assert_eq!(e.scim_type(), scim_type, "{e:?}");
        // every message is a sentence that says what to do, not just a code
        let text = e.to_string();
        assert!(text.len() > 30, "{text}");
    }

    #[test]
    fn retry_after_only_for_unavailable_errors() {
        let e = ScimError::Unavailable {
            detail: "connection refused".into(),
            retry_after_secs: 7,
        };
        assert_eq!(e.retry_after_secs(), Some(7));
        assert!(e.to_string().contains("retry in 7 seconds"), "{e}");
        assert_eq!(ScimError::Internal(s()).retry_after_secs(), None);
    }

    #[test]
    fn parse_errors_become_invalid_filter_with_position() {
        let err = parse_filter("userName equals \"x\"").expect_err("invalid");
        let e = ScimError::from(err);
        assert_eq!(e.scim_type(), Some("invalidFilter"));
        assert!(e.to_string().contains("at character 9"), "{e}");
    }

    #[test]
    fn translate_errors_are_the_clients_except_broken_mappings() {
        let e = ScimError::from(TranslateError::UnknownAttribute("nickName".into()));
        assert_eq!(e.status(), 400);
        assert!(e.to_string().contains("nickName"), "{e}");
        let e = ScimError::from(TranslateError::InvalidMapping("bad".into()));
        assert_eq!(e.status(), 500);
    }
}
