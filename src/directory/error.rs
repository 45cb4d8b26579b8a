//! `DirectoryError` and the one function that turns what the directory (or the connection
//! to it) said into it.
//!
//! Texts here may reach logs and error bodies: they never contain a password, and name
//! servers, settings and DNs only.

use std::fmt;
use std::io;

use ldap3::LdapError;

use super::ppolicy::{self, PolicyError, PolicyResponse};

/// RFC 4511 noSuchObject.
const NO_SUCH_OBJECT: u32 = 32;
/// RFC 4511 entryAlreadyExists.
const ENTRY_ALREADY_EXISTS: u32 = 68;

/// What went wrong talking to the directory, in the directory's own terms.
#[derive(Clone, Debug, thiserror::Error)]
pub enum DirectoryError {
    /// A setting is wrong or the directory disagrees with one (unknown service account
    /// credentials, untrusted certificate, missing base DN). One sentence naming the setting.
    #[error("directory configuration: {0}")]
    Config(String),
    /// The directory cannot be reached or said it is unavailable. Short cause, no secrets.
    #[error("directory unavailable: {0}")]
    Unavailable(String),
    /// A password write kept clashing with other writes to the same entry (ppolicy's
    /// history upkeep racing another password change), however often it was sent again:
    /// nothing was changed, and trying again in a moment will most likely work.
    #[error("other writes to the same entry kept clashing with this one: {0}")]
    Busy(String),
    /// An operation took longer than `operation_timeout`.
    #[error("the directory did not answer in time")]
    Timeout,
    #[error("no such user in the directory")]
    NoSuchUser,
    /// An entry other than a user (e.g. a password policy) that the operation names does
    /// not exist, or the service account cannot see it. Holds the DN.
    #[error("directory entry {0} does not exist or the service account cannot read it")]
    NoSuchEntry(String),
    /// The directory data does not allow a unique answer (e.g. two entries share a sign-in name).
    #[error("ambiguous directory data: {0}")]
    Ambiguous(String),
    #[error("the service account lacks the directory rights for this operation")]
    InsufficientAccess,
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("the account is locked in the directory")]
    AccountLocked,
    #[error("the directory rejected the password: {0}")]
    PasswordRejected(PolicyRejection),
    /// The password was set, but the must-change flag could not be written (after one retry).
    /// `directory_unavailable`: because the directory stopped answering (worth trying
    /// again later), not because it refused the write.
    #[error("the password was set, but the must-change-at-next-sign-in flag could not be written")]
    FlagNotApplied { directory_unavailable: bool },
    /// The directory answered something we did not expect (result code and its text).
    #[error("unexpected directory response: {0}")]
    Protocol(String),
    /// A write (a password, or an entry write) was sent but no answer came (connection lost
    /// or timed out), so it may or may not have been applied. Never retried automatically:
    /// a repeated password change could hit the password history, a repeated add would
    /// find its own entry.
    #[error("the directory stopped answering after the change was sent: {0}")]
    WriteOutcomeUnknown(String),
    /// An entry to be added (or the new name of a renamed one) exists already. Holds the DN.
    #[error("directory entry {0} already exists")]
    AlreadyExists(String),
    /// The Assertion control's filter no longer matched the entry, so the write was not
    /// applied (RFC 4528, result code 122): the entry changed since it was read.
    #[error("the directory entry changed since it was read; nothing was written")]
    AssertionFailed,
    /// A search matched more entries than the caller allowed (or than the directory's own
    /// size limit let through). Holds that limit.
    #[error("the search matched more than {0} entries")]
    SizeLimit(usize),
    /// An unsorted window would have to walk more entries than the caller allows one
    /// request to walk ([`crate::directory::WindowQuery::scan_limit`]). Holds that limit.
    #[error("more than {0} entries match; an unsorted listing walks at most that many")]
    ScanLimit(u64),
    /// The directory lacks a feature the operation needs (e.g. Server Side Sort and Virtual
    /// List View, or the Assertion control): a short cause.
    #[error("the directory does not support this operation: {0}")]
    Unsupported(String),
    /// The directory refused a write (other than a password's) because of the data in
    /// it: noSuchAttribute (16), undefinedAttributeType (17), inappropriateMatching (18),
    /// constraintViolation (19), attributeOrValueExists (20), invalidAttributeSyntax (21),
    /// invalidDNSyntax (34), namingViolation (64), objectClassViolation (65),
    /// notAllowedOnNonLeaf (66), notAllowedOnRDN (67), objectClassModsProhibited (69).
    /// The result code and the server's text (or the code's name when it sent none).
    #[error("the directory refused the change ({}): {message}", rc_name(*rc))]
    Rejected { rc: u32, message: String },
}

impl DirectoryError {
    /// Unavailable or Timeout: worth answering 503 with Retry-After.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            Self::Unavailable(_) | Self::Busy(_) | Self::Timeout | Self::WriteOutcomeUnknown(_)
        )
    }

    /// Stable snake_case name, used as the `kind` label of `lockbridge_ldap_errors_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Config(_) => "config",
            Self::Unavailable(_) => "unavailable",
            Self::Busy(_) => "busy",
            Self::Timeout => "timeout",
            Self::NoSuchUser => "no_such_user",
            Self::NoSuchEntry(_) => "no_such_entry",
            Self::Ambiguous(_) => "ambiguous",
            Self::InsufficientAccess => "insufficient_access",
            Self::InvalidCredentials => "invalid_credentials",
            Self::AccountLocked => "account_locked",
            Self::PasswordRejected(_) => "password_rejected",
            Self::FlagNotApplied { .. } => "flag_not_applied",
            Self::Protocol(_) => "protocol",
            Self::WriteOutcomeUnknown(_) => "write_outcome_unknown",
            Self::AlreadyExists(_) => "already_exists",
            Self::AssertionFailed => "assertion_failed",
            Self::SizeLimit(_) => "size_limit",
            Self::ScanLimit(_) => "scan_limit",
            Self::Unsupported(_) => "unsupported",
            Self::Rejected { .. } => "rejected",
        }
    }
}

/// Why the directory refused a new password (ppolicy error, or the server's text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicyRejection {
    TooShort,
    InsufficientQuality,
    /// A quality rule the server named in its text (389-ds: "password based off of user
    /// entry", "must contain at least 2 digit characters", ...).
    QualityRule(String),
    InHistory,
    TooYoung,
    TooLong,
    ModNotAllowed,
    MustSupplyOldPassword,
    /// No ppolicy detail: the server's diagnostic text.
    Other(String),
}

impl fmt::Display for PolicyRejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooShort => f.write_str("the password is shorter than the directory's minimum"),
            Self::InsufficientQuality => {
                f.write_str("the password does not meet the directory's quality rules")
            }
            Self::QualityRule(rule) => write!(
                f,
                "the password does not meet the directory's quality rules ({rule})"
            ),
            Self::InHistory => f.write_str("the password was used recently"),
            Self::TooYoung => f.write_str("the password was changed too recently to change again"),
            Self::TooLong => f.write_str("the password is longer than the directory allows"),
            Self::ModNotAllowed => f.write_str("the directory does not allow this password change"),
            Self::MustSupplyOldPassword => f.write_str("the directory requires the old password"),
            Self::Other(text) if text.is_empty() => f.write_str("no reason given"),
            Self::Other(text) => f.write_str(text),
        }
    }
}

/// What kind of operation failed; the same result code means different things for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Searches, WhoAmI.
    Read,
    /// A user's or the service account's bind.
    Bind,
    /// Setting a password (Password Modify, or a password attribute write).
    PasswordWrite,
    /// Other modifications (flags).
    Write,
}

/// A failed operation as it came back: a non-zero result with its controls already
/// read, or an error from ldap3 (transport, timeout, ...).
#[derive(Debug)]
pub(crate) enum Failure {
    Result {
        rc: u32,
        text: String,
        policy: Option<Result<PolicyResponse, ppolicy::DecodeError>>,
    },
    Ldap(LdapError),
    /// Already classified by the caller.
    Mapped(DirectoryError),
}

impl Failure {
    /// A non-zero `LdapResult`, with its ppolicy response control decoded.
    pub(crate) fn from_result(res: &ldap3::LdapResult) -> Self {
        Failure::Result {
            rc: res.rc,
            text: res.text.clone(),
            policy: ppolicy::find(&res.ctrls),
        }
    }

    /// "No such object" (rc 32), for a read that found nothing where an entry must be.
    pub(crate) fn no_such_object() -> Self {
        Failure::Result {
            rc: NO_SUCH_OBJECT,
            text: String::new(),
            policy: None,
        }
    }

    /// For operations on an entry that is not a user: "no such object" names `dn`
    /// ([`DirectoryError::NoSuchEntry`]) instead of meaning `NoSuchUser`.
    pub(crate) fn naming_missing_entry(self, dn: &str) -> Self {
        match self {
            Failure::Result {
                rc: NO_SUCH_OBJECT, ..
            } => Failure::Mapped(DirectoryError::NoSuchEntry(dn.to_owned())),
            other => other,
        }
    }

    /// For entry operations (add, modify, rename, delete): "no such object" names `dn`
    /// ([`DirectoryError::NoSuchEntry`]) and "entry already exists" names `target` (the
    /// added entry, or the new name of a renamed one).
    pub(crate) fn naming_entry(self, dn: &str, target: &str) -> Self {
        match self {
            Failure::Result {
                rc: NO_SUCH_OBJECT, ..
            } => Failure::Mapped(DirectoryError::NoSuchEntry(dn.to_owned())),
            Failure::Result {
                rc: ENTRY_ALREADY_EXISTS,
                ..
            } => Failure::Mapped(DirectoryError::AlreadyExists(target.to_owned())),
            other => other,
        }
    }

    /// What this failure says about the connection it happened on.
    pub(crate) fn connection_fate(&self) -> ConnFate {
        match self {
            Failure::Ldap(e) => match e {
                // The request never left: the driver was already gone.
                LdapError::OpSend { .. } => ConnFate::DeadBeforeSend,
                LdapError::ResultRecv { .. }
                | LdapError::EndOfStream
                | LdapError::IdScrubSend { .. }
                | LdapError::MiscSend { .. }
                | LdapError::Io { .. } => ConnFate::DeadAfterSend,
                // ldap3 keeps the connection after a timeout, but a silent server is a reason
                // to start over with a fresh one.
                LdapError::Timeout { .. } => ConnFate::Suspect,
                _ => ConnFate::Healthy,
            },
            Failure::Result { rc, .. } => match rc {
                // busy / unavailable / other: let the next request use a fresh connection.
                51 | 52 | 80 => ConnFate::Suspect,
                _ => ConnFate::Healthy,
            },
            Failure::Mapped(e) if e.is_unavailable() => ConnFate::Suspect,
            Failure::Mapped(_) => ConnFate::Healthy,
        }
    }
}

impl Failure {
    /// A password write refused because another write to the same entry changed it
    /// between the server's read and its update: OpenLDAP's ppolicy maintains
    /// `pwdHistory`, `pwdChangedTime` and `pwdReset` itself, and two writes racing on
    /// one entry can see noSuchAttribute (16, deleting a value the other one removed) or
    /// attributeOrValueExists (20, adding one it added). The server answered, so nothing
    /// was applied and the whole write can be sent again.
    pub(crate) fn is_write_clash(&self, kind: OpKind) -> bool {
        kind == OpKind::PasswordWrite
            && matches!(
                self,
                Failure::Result { rc: 16 | 20, policy, .. }
                    if !matches!(policy, Some(Ok(p)) if p.error.is_some())
            )
    }
}

impl From<LdapError> for Failure {
    fn from(e: LdapError) -> Self {
        match e {
            LdapError::LdapResult { result } => Failure::from_result(&result),
            other => Failure::Ldap(other),
        }
    }
}

impl From<DirectoryError> for Failure {
    fn from(e: DirectoryError) -> Self {
        Failure::Mapped(e)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ConnFate {
    Healthy,
    /// Closed before the request was sent: safe to retry anything.
    DeadBeforeSend,
    /// Closed with the request possibly sent: retry only idempotent operations.
    DeadAfterSend,
    /// Alive as far as we know, but not to be reused.
    Suspect,
}

/// The one mapping from a failed operation to `DirectoryError`.
///
/// Result codes (RFC 4511 Appendix A) and the ppolicy response control are read together:
/// a ppolicy password error wins over the bare result code (OpenLDAP sends 19, 50 or 53
/// with it depending on the check).
pub(crate) fn map_failure(kind: OpKind, failure: &Failure) -> DirectoryError {
    match failure {
        Failure::Mapped(e) => e.clone(),
        Failure::Ldap(e) => map_transport(e),
        Failure::Result { rc, text, policy } => {
            let policy = match policy {
                Some(Ok(p)) => Some(*p),
                Some(Err(e)) => {
                    tracing::warn!(ldap.rc = rc, error = %e, "ignoring an undecodable password policy control");
                    None
                }
                None => None,
            };
            map_result(kind, *rc, text, policy.as_ref())
        }
    }
}

fn map_result(
    kind: OpKind,
    rc: u32,
    text: &str,
    policy: Option<&PolicyResponse>,
) -> DirectoryError {
    let policy_error = policy.and_then(|p| p.error);
    if let Some(rejection) = policy_error.and_then(rejection_for) {
        return DirectoryError::PasswordRejected(rejection);
    }
    let password_write = kind == OpKind::PasswordWrite;
    match rc {
        3 => DirectoryError::Timeout,
        19 | 53 if password_write => {
            DirectoryError::PasswordRejected(PolicyRejection::Other(text.to_owned()))
        }
        32 => DirectoryError::NoSuchUser,
        49 if policy_error == Some(PolicyError::AccountLocked) => DirectoryError::AccountLocked,
        49 => DirectoryError::InvalidCredentials,
        50 => DirectoryError::InsufficientAccess,
        51 | 52 | 80 => DirectoryError::Unavailable(describe(rc, text)),
        12 => DirectoryError::Unsupported(describe(rc, text)),
        122 => DirectoryError::AssertionFailed,
        // (19 on a password write is a password rejection, above.)
        16 | 17 | 18 | 19 | 20 | 21 | 34 | 64 | 65 | 66 | 67 | 69
            if matches!(kind, OpKind::Write | OpKind::PasswordWrite) =>
        {
            DirectoryError::Rejected {
                rc,
                message: if text.is_empty() {
                    rc_name(rc).to_owned()
                } else {
                    text.to_owned()
                },
            }
        }
        _ => DirectoryError::Protocol(describe(rc, text)),
    }
}

fn rejection_for(e: PolicyError) -> Option<PolicyRejection> {
    Some(match e {
        PolicyError::PasswordTooShort => PolicyRejection::TooShort,
        PolicyError::InsufficientPasswordQuality => PolicyRejection::InsufficientQuality,
        PolicyError::PasswordInHistory => PolicyRejection::InHistory,
        PolicyError::PasswordTooYoung => PolicyRejection::TooYoung,
        PolicyError::PasswordTooLong => PolicyRejection::TooLong,
        PolicyError::PasswordModNotAllowed => PolicyRejection::ModNotAllowed,
        PolicyError::MustSupplyOldPassword => PolicyRejection::MustSupplyOldPassword,
        // Not about the new password: left to the result code.
        PolicyError::PasswordExpired
        | PolicyError::AccountLocked
        | PolicyError::ChangeAfterReset
        | PolicyError::Unknown(_) => return None,
    })
}

/// "rc=19 (constraintViolation): text".
pub(crate) fn describe(rc: u32, text: &str) -> String {
    let name = rc_name(rc);
    if text.is_empty() {
        format!("rc={rc} ({name})")
    } else {
        format!("rc={rc} ({name}): {text}")
    }
}

/// The RFC 4511 name of a result code ("constraintViolation"), or "unknown".
pub(crate) fn rc_name(rc: u32) -> &'static str {
    match rc {
        1 => "operationsError",
        2 => "protocolError",
        3 => "timeLimitExceeded",
        4 => "sizeLimitExceeded",
        7 => "authMethodNotSupported",
        8 => "strongerAuthRequired",
        11 => "adminLimitExceeded",
        12 => "unavailableCriticalExtension",
        13 => "confidentialityRequired",
        16 => "noSuchAttribute",
        17 => "undefinedAttributeType",
        18 => "inappropriateMatching",
        19 => "constraintViolation",
        20 => "attributeOrValueExists",
        21 => "invalidAttributeSyntax",
        32 => "noSuchObject",
        34 => "invalidDNSyntax",
        48 => "inappropriateAuthentication",
        49 => "invalidCredentials",
        50 => "insufficientAccessRights",
        51 => "busy",
        52 => "unavailable",
        53 => "unwillingToPerform",
        54 => "loopDetect",
        64 => "namingViolation",
        65 => "objectClassViolation",
        66 => "notAllowedOnNonLeaf",
        67 => "notAllowedOnRDN",
        68 => "entryAlreadyExists",
        69 => "objectClassModsProhibited",
        71 => "affectsMultipleDSAs",
        76 => "virtualListViewError",
        80 => "other",
        122 => "assertionFailed",
        _ => "unknown",
    }
}

/// ldap3 errors that are not an LDAP result: transport, TLS, timeouts, local misuse.
fn map_transport(e: &LdapError) -> DirectoryError {
    match e {
        LdapError::Timeout { .. } => DirectoryError::Timeout,
        LdapError::Io { source } => io_error(source),
        LdapError::OpSend { .. }
        | LdapError::ResultRecv { .. }
        | LdapError::IdScrubSend { .. }
        | LdapError::MiscSend { .. }
        | LdapError::EndOfStream => {
            DirectoryError::Unavailable("the connection to the directory was closed".into())
        }
        LdapError::Rustls { source } => tls_error(source),
        LdapError::LdapResult { result } => {
            map_failure(OpKind::Read, &Failure::from_result(result))
        }
        LdapError::UrlParsing { .. }
        | LdapError::UnknownScheme(_)
        | LdapError::EmptyUnixPath
        | LdapError::PortInUnixPath
        | LdapError::DNSName { .. } => {
            DirectoryError::Config(format!("the directory url is not usable: {e}"))
        }
        other => DirectoryError::Protocol(other.to_string()),
    }
}

/// An I/O error while connecting or talking: TLS failures arrive wrapped in io::Error.
pub(crate) fn io_error(e: &io::Error) -> DirectoryError {
    if let Some(tls) = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return tls_error(tls);
    }
    let cause = match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::ConnectionAborted => "connection aborted".to_owned(),
        io::ErrorKind::BrokenPipe => "connection closed".to_owned(),
        io::ErrorKind::UnexpectedEof => "connection closed by the directory".to_owned(),
        io::ErrorKind::TimedOut => "connection timed out".to_owned(),
        io::ErrorKind::NotFound => format!("not found ({e})"),
        _ => format!("i/o error: {e}"),
    };
    DirectoryError::Unavailable(cause)
}

/// TLS failures: certificate problems are a configuration matter (retrying will not help).
pub(crate) fn tls_error(e: &rustls::Error) -> DirectoryError {
    match e {
        rustls::Error::InvalidCertificate(cert) => DirectoryError::Config(format!(
            "the directory's TLS certificate was not accepted ({cert:?}): check ca_file and the \
             host name in url"
        )),
        other => DirectoryError::Unavailable(format!("TLS handshake failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::directory::ppolicy::PolicyWarning;

    fn res(rc: u32, text: &str, error: Option<PolicyError>) -> Failure {
        Failure::Result {
            rc,
            text: text.into(),
            policy: error.map(|e| {
                Ok(PolicyResponse {
                    warning: None,
                    error: Some(e),
                })
            }),
        }
    }

    fn map(kind: OpKind, f: Failure) -> DirectoryError {
        map_failure(kind, &f)
    }

    #[test]
    fn ppolicy_errors_become_rejections_whatever_the_rc() {
        use PolicyError as P;
        use PolicyRejection as R;
        let table = [
            (19, P::PasswordTooShort, R::TooShort),
            (19, P::InsufficientPasswordQuality, R::InsufficientQuality),
            (19, P::PasswordInHistory, R::InHistory),
            (19, P::PasswordTooYoung, R::TooYoung),
            (19, P::PasswordTooLong, R::TooLong),
            (50, P::PasswordModNotAllowed, R::ModNotAllowed),
            (53, P::MustSupplyOldPassword, R::MustSupplyOldPassword),
        ];
        for (rc, pe, expected) in table {
            match map(OpKind::PasswordWrite, res(rc, "x", Some(pe))) {
                DirectoryError::PasswordRejected(r) => assert_eq!(r, expected, "{pe:?}"),
                other => panic!("{pe:?} -> {other:?}"),
            }
        }
    }

    #[test]
    fn result_codes_without_control() {
        let pw = OpKind::PasswordWrite;
        assert!(matches!(
            map(pw, res(19, "Password fails quality checking policy", None)),
            DirectoryError::PasswordRejected(PolicyRejection::Other(t)) if t == "Password fails quality checking policy"
        ));
        assert!(matches!(
            map(pw, res(53, "0000052D: Constraint violation", None)),
            DirectoryError::PasswordRejected(PolicyRejection::Other(_))
        ));
        // Outside a password write, 19 and 53 are not password rejections: 19 on a write
        // is the data being refused, on a read it is unexpected.
        assert!(
            matches!(map(OpKind::Write, res(19, "x", None)), DirectoryError::Rejected { rc: 19, message } if message == "x")
        );
        assert!(
            matches!(map(OpKind::Read, res(19, "x", None)), DirectoryError::Protocol(t) if t.contains("constraintViolation"))
        );
        assert!(matches!(
            map(OpKind::Read, res(53, "x", None)),
            DirectoryError::Protocol(_)
        ));
        assert!(matches!(
            map(pw, res(32, "", None)),
            DirectoryError::NoSuchUser
        ));
        assert!(matches!(
            map(OpKind::Bind, res(49, "", None)),
            DirectoryError::InvalidCredentials
        ));
        assert!(matches!(
            map(OpKind::Bind, res(49, "", Some(PolicyError::AccountLocked))),
            DirectoryError::AccountLocked
        ));
        assert!(matches!(
            map(
                OpKind::Bind,
                res(49, "", Some(PolicyError::PasswordExpired))
            ),
            DirectoryError::InvalidCredentials
        ));
        assert!(matches!(
            map(pw, res(50, "", None)),
            DirectoryError::InsufficientAccess
        ));
        for rc in [51, 52, 80] {
            assert!(
                map(OpKind::Read, res(rc, "", None)).is_unavailable(),
                "{rc}"
            );
        }
        assert!(matches!(
            map(OpKind::Read, res(3, "", None)),
            DirectoryError::Timeout
        ));
        assert!(
            matches!(map(OpKind::Read, res(2, "", None)), DirectoryError::Protocol(t) if t == "rc=2 (protocolError)")
        );
        // Only a password error in the control matters; a warning alone changes nothing.
        let f = Failure::Result {
            rc: 50,
            text: String::new(),
            policy: Some(Ok(PolicyResponse {
                warning: Some(PolicyWarning::GraceAuthNsRemaining(1)),
                error: Some(PolicyError::ChangeAfterReset),
            })),
        };
        assert!(matches!(map(pw, f), DirectoryError::InsufficientAccess));
    }

    #[test]
    fn undecodable_control_falls_back_to_the_text() {
        let f = Failure::Result {
            rc: 19,
            text: "Password is in history of old passwords".into(),
            policy: Some(Err(ppolicy::decode(&[0x30]).unwrap_err())),
        };
        assert!(matches!(
            map(OpKind::PasswordWrite, f),
            DirectoryError::PasswordRejected(PolicyRejection::Other(t)) if t.contains("history")
        ));
    }

    #[test]
    fn transport_errors() {
        let refused = LdapError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        assert!(
            matches!(map(OpKind::Read, refused.into()), DirectoryError::Unavailable(t) if t == "connection refused")
        );
        let eof = Failure::Ldap(LdapError::EndOfStream);
        assert_eq!(eof.connection_fate(), ConnFate::DeadAfterSend);
        assert!(map(OpKind::Read, eof).is_unavailable());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        drop(tx);
        let recv = futures::executor::block_on(rx).unwrap_err();
        let closed = Failure::Ldap(LdapError::from(recv));
        assert_eq!(closed.connection_fate(), ConnFate::DeadAfterSend);
        assert!(matches!(
            map(OpKind::Read, closed),
            DirectoryError::Unavailable(_)
        ));
        let bad_cert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
        );
        assert!(matches!(
            map(OpKind::Read, LdapError::from(bad_cert).into()),
            DirectoryError::Config(t) if t.contains("UnknownIssuer") && t.contains("ca_file")
        ));
        assert!(matches!(
            map(OpKind::Read, Failure::Ldap(LdapError::FilterParsing)),
            DirectoryError::Protocol(_)
        ));
    }

    #[tokio::test]
    async fn timeouts() {
        let elapsed = tokio::time::timeout(std::time::Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        let f = Failure::Ldap(LdapError::from(elapsed));
        assert_eq!(f.connection_fate(), ConnFate::Suspect);
        assert!(matches!(map(OpKind::Read, f), DirectoryError::Timeout));
    }

    #[test]
    fn ldap_result_errors_are_read_with_their_controls() {
        let result = ldap3::LdapResult {
            rc: 19,
            matched: String::new(),
            text: "Password fails quality checking policy".into(),
            refs: vec![],
            ctrls: vec![ldap3::controls::Control(
                None,
                ldap3::controls::RawControl {
                    ctype: ppolicy::PPOLICY_OID.into(),
                    crit: false,
                    val: Some(vec![0x30, 0x03, 0x81, 0x01, 0x06]),
                },
            )],
        };
        let f = Failure::from(LdapError::from(result));
        assert!(matches!(
            map(OpKind::PasswordWrite, f),
            DirectoryError::PasswordRejected(PolicyRejection::TooShort)
        ));
    }

    #[test]
    fn unavailable_classification() {
        assert!(DirectoryError::Timeout.is_unavailable());
        assert!(DirectoryError::Unavailable("x".into()).is_unavailable());
        assert!(!DirectoryError::Config("x".into()).is_unavailable());
        let flag = DirectoryError::FlagNotApplied {
            directory_unavailable: true,
        };
        assert!(!flag.is_unavailable(), "the password itself is in force");
        assert_eq!(flag.kind(), "flag_not_applied");
        assert!(!DirectoryError::NoSuchEntry("cn=x".into()).is_unavailable());
    }

    #[test]
    fn entry_write_refusals() {
        for rc in [16, 17, 18, 19, 20, 21, 34, 64, 65, 66, 67, 69] {
            let e = map(OpKind::Write, res(rc, "the server's words", None));
            assert!(
                matches!(&e, DirectoryError::Rejected { rc: r, message } if *r == rc && message == "the server's words"),
                "{rc}: {e:?}"
            );
            assert_eq!(e.kind(), "rejected");
            assert!(!e.is_unavailable());
            assert!(e.to_string().contains(rc_name(rc)), "{e}");
        }
        // A write that also sets a password (an add with userPassword) is refused as data
        // for everything but constraintViolation, which is the password's.
        assert!(matches!(
            map(OpKind::PasswordWrite, res(65, "missing sn", None)),
            DirectoryError::Rejected { rc: 65, .. }
        ));
        assert!(matches!(
            map(OpKind::PasswordWrite, res(19, "too short", None)),
            DirectoryError::PasswordRejected(_)
        ));
        // No text: the result code's name stands in.
        assert!(matches!(
            map(OpKind::Write, res(65, "", None)),
            DirectoryError::Rejected { rc: 65, message } if message == "objectClassViolation"
        ));
        // 50 stays an access problem, whatever the operation.
        assert!(matches!(
            map(OpKind::Write, res(50, "", None)),
            DirectoryError::InsufficientAccess
        ));
        for kind in [OpKind::Read, OpKind::Write, OpKind::PasswordWrite] {
            assert!(matches!(
                map(kind, res(122, "", None)),
                DirectoryError::AssertionFailed
            ));
            assert!(
                matches!(map(kind, res(12, "", None)), DirectoryError::Unsupported(t) if t.contains("unavailableCriticalExtension"))
            );
        }
        // Entry operations name the entry for 32 and 68; everything else passes unchanged.
        let dn = "uid=x,ou=people,dc=example,dc=org";
        let new = "uid=y,ou=people,dc=example,dc=org";
        assert!(matches!(
            map(OpKind::Write, res(68, "", None).naming_entry(dn, new)),
            DirectoryError::AlreadyExists(d) if d == new
        ));
        assert!(matches!(
            map(OpKind::Write, res(32, "", None).naming_entry(dn, new)),
            DirectoryError::NoSuchEntry(d) if d == dn
        ));
        assert!(matches!(
            map(OpKind::Write, res(19, "t", None).naming_entry(dn, new)),
            DirectoryError::Rejected { rc: 19, .. }
        ));
        assert_eq!(
            DirectoryError::AlreadyExists(dn.into()).kind(),
            "already_exists"
        );
        assert_eq!(DirectoryError::AssertionFailed.kind(), "assertion_failed");
        assert_eq!(DirectoryError::SizeLimit(3).kind(), "size_limit");
        assert_eq!(
            DirectoryError::Unsupported("x".into()).kind(),
            "unsupported"
        );
        assert_eq!(
            DirectoryError::SizeLimit(3).to_string(),
            "the search matched more than 3 entries"
        );
    }

    #[test]
    fn missing_entries_other_than_users_name_their_dn() {
        let dn = "cn=nope,ou=policies,dc=example,dc=org";
        let e = map(
            OpKind::Read,
            Failure::no_such_object().naming_missing_entry(dn),
        );
        assert!(
            matches!(&e, DirectoryError::NoSuchEntry(d) if d == dn),
            "{e:?}"
        );
        assert!(e.to_string().contains(dn), "{e}");
        assert_eq!(e.kind(), "no_such_entry");
        // Without the renaming, 32 is a missing user; other failures pass unchanged.
        assert!(matches!(
            map(OpKind::Write, Failure::no_such_object()),
            DirectoryError::NoSuchUser
        ));
        assert!(matches!(
            map(OpKind::Write, res(50, "", None).naming_missing_entry(dn)),
            DirectoryError::InsufficientAccess
        ));
    }
}
