//! Outgoing messages: templates, sealing of the secrets they carry, the outbox and its
//! delivery worker, SMTP, and text messages through an SMS gateway ([`sms`]).
//!
//! Owns everything between "this user must get this message" and "the relay accepted
//! it". Callers ([`Notifier::enqueue`]) only queue; the [`OutboxWorker`] renders and
//! sends. It must not decide *whether* a message is sent (that is the caller's
//! business), must not log recipient addresses, bodies or secrets, and imports only
//! `store` and `types`.

mod error;
mod mailer;
mod outbox;
mod relay;
mod seal;
pub mod sms;
mod templates;

pub use error::NotifyError;
pub use mailer::{MailSettings, Mailer, RELAY_CONNECTIONS, SmtpSecurity};
pub use outbox::{
    MAIL_LEASE, Notifier, OutboxSettings, OutboxWaker, OutboxWorker, SECRET_VARIABLE,
};
pub use seal::{Sealer, derive_key};
pub use sms::{SmsError, SmsMessage, SmsSender, SmsSettings};
pub use templates::{
    ATTACHMENT_NAME_VARIABLE, EXPIRY_DIGEST, MailAttachment, PASSWORD_CHANGED, PASSWORD_EXPIRED,
    PASSWORD_EXPIRING, RESET_REQUEST, RenderedMail, SECURITY_CODE, TEMPORARY_PASSWORD, Templates,
    WELCOME, csv_field,
};
