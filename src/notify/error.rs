//! [`NotifyError`]: what went wrong while queueing, rendering or delivering a message.
//!
//! The one distinction the outbox worker needs is [`NotifyError::is_permanent`]:
//! a permanent failure (5xx reply, unusable address, broken template, undecryptable
//! secret) is dead-lettered at once; anything else is retried with backoff.

use lettre::transport::smtp;

use crate::store::StoreError;

/// An error from the notify service.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// A recipient address that is not `someone@example.org`-shaped.
    #[error("`{0}` is not a valid email address (expected something like someone@example.org)")]
    InvalidAddress(String),
    /// A template variable set that cannot be used (not an object, or it tries to carry
    /// a secret in clear).
    #[error("invalid message context: {0}")]
    InvalidContext(String),
    /// Bad mail settings, written for the operator: which setting and what to do.
    #[error("{0}")]
    Config(String),
    /// No template set with this name.
    #[error("no message template named `{0}`")]
    UnknownTemplate(String),
    /// A template failed to load, compile or render (syntax error, undefined variable).
    #[error("template `{name}`: {source}")]
    Template {
        name: String,
        #[source]
        source: minijinja::Error,
    },
    /// A sealed secret could not be opened: wrong key (the master key changed) or
    /// damaged data.
    #[error(
        "a queued secret cannot be decrypted (was security.master_key changed since it was queued?)"
    )]
    Unseal,
    /// The message could not be built (bad header value).
    #[error("cannot build the message: {0}")]
    Message(#[from] lettre::error::Error),
    /// Delivery failed in a way that may pass: relay unreachable, timeout, TLS trouble,
    /// a 4xx reply, or a relay authentication problem.
    #[error("mail delivery failed, will retry: {0}")]
    Transient(#[source] smtp::Error),
    /// The relay refused for good (5xx reply): retrying cannot help.
    #[error("mail delivery refused: {0}")]
    Permanent(#[source] smtp::Error),
    /// The relay could not be reached, or the TLS handshake with it failed.
    #[error("mail delivery failed, will retry: {0}")]
    Connect(String),
    /// One delivery took longer than its whole time budget.
    #[error("mail delivery did not finish within {} s", .0.as_secs())]
    Timeout(std::time::Duration),
    /// The relay accepted the connection but does not answer commands.
    #[error("the mail relay does not answer commands")]
    RelayNotResponding,
    /// The outbox could not be read or written.
    #[error("outbox: {0}")]
    Store(#[from] StoreError),
}

impl NotifyError {
    /// True when sending the same message again cannot succeed, so the worker should
    /// dead-letter it now instead of retrying.
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            NotifyError::InvalidAddress(_)
                | NotifyError::InvalidContext(_)
                | NotifyError::UnknownTemplate(_)
                | NotifyError::Template { .. }
                | NotifyError::Unseal
                | NotifyError::Message(_)
                | NotifyError::Permanent(_)
        )
    }

    /// Sorts an SMTP error into transient and permanent.
    ///
    /// A 5xx reply is permanent (RFC 5321 §4.2.1), except the authentication replies
    /// 530, 534, 535 and 538: they mean the relay settings are wrong, which the operator
    /// can fix, so dead-lettering every queued message (and erasing its secret) over
    /// them would lose mail.
    pub(crate) fn from_smtp(e: smtp::Error) -> NotifyError {
        let auth_problem = e.status().is_some_and(|code| {
            let code = code.to_string();
            matches!(code.as_str(), "530" | "534" | "535" | "538")
        });
        if e.is_permanent() && !auth_problem {
            NotifyError::Permanent(e)
        } else {
            NotifyError::Transient(e)
        }
    }
}
