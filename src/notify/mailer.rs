//! SMTP delivery through the operator's relay (lettre, tokio, rustls).
//!
//! Owns [`MailSettings`], [`SmtpSecurity`] and [`Mailer`]: building one
//! multipart/alternative message (plain text + HTML), wrapped in multipart/mixed with
//! the attachment when there is one, with a given Message-ID, and handing it to the
//! relay over a pooled (reused), verified-TLS connection. It sorts failures
//! into transient and permanent ([`NotifyError::is_permanent`]).
//!
//! It must not queue, retry or render (the outbox worker does), must not log
//! recipients or bodies, and never turns TLS verification off.

use std::path::PathBuf;
use std::time::Duration;

use lettre::message::header::{ContentType, Header, HeaderName, HeaderValue};
use lettre::message::{Attachment, Mailbox, MultiPart};
use std::sync::Arc;

use lettre::Message;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, TlsParameters};

use super::relay::{Protection, RelayPool, RelayTarget, wrapper_connector};
use super::{NotifyError, RenderedMail};
use crate::types::Secret;

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host.
    None,
}

/// The `[mail]` settings the mailer needs.
#[derive(Debug, Clone)]
pub struct MailSettings {
    /// Relay host name (also the name its certificate must carry).
    pub relay: String,
    pub port: u16,
    pub security: SmtpSecurity,
    /// PEM file with the CA that signed the relay's certificate, trusted in addition to
    /// the system trust store.
    pub ca_file: Option<PathBuf>,
    /// SMTP AUTH user name; set together with `password` or not at all.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Sender of every message: `Name <address@example.org>` or a bare address.
    pub from: String,
    /// Time allowed for connecting and for each SMTP command.
    pub timeout: Duration,
}

/// Sends rendered messages through the relay. Cheap to clone (the connection pool is
/// shared).
#[derive(Clone)]
pub struct Mailer {
    relay: Arc<RelayPool>,
    from: Mailbox,
    timeout: Duration,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("from", &self.from.to_string())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// Most connections open to the relay, which is also how many messages are in flight.
pub const RELAY_CONNECTIONS: usize = 4;

impl Mailer {
    /// Checks the settings and prepares the connection pool. Connects to nothing yet
    /// (see [`Mailer::test_connection`]).
    pub fn new(settings: &MailSettings) -> Result<Mailer, NotifyError> {
        let from: Mailbox = settings.from.trim().parse().map_err(|e| {
            NotifyError::Config(format!(
                "mail.from `{}` is not a sender address ({e}); write it as \
                 `Name <address@example.org>` or `address@example.org`",
                settings.from
            ))
        })?;
        let relay = settings.relay.trim();
        if relay.is_empty() {
            return Err(NotifyError::Config(
                "mail.relay is empty; set the host name of the SMTP relay".into(),
            ));
        }
        let protection = match settings.security {
            SmtpSecurity::None => Protection::None,
            SmtpSecurity::StartTls => Protection::StartTls(tls_parameters(relay, settings)?),
            SmtpSecurity::Tls => {
                let ca = read_ca_file(settings)?;
                let connector = wrapper_connector(ca.as_deref()).map_err(|e| {
                    NotifyError::Config(format!("mail: cannot set up TLS for {relay}: {e}"))
                })?;
                let name =
                    rustls_pki_types::ServerName::try_from(relay.to_string()).map_err(|e| {
                        NotifyError::Config(format!(
                            "mail.relay `{relay}` cannot be checked against a certificate: {e}"
                        ))
                    })?;
                Protection::Wrapper(connector, name)
            }
        };
        let mut credentials = None;
        match (&settings.username, &settings.password) {
            (Some(_), Some(_)) if settings.security == SmtpSecurity::None => {
                return Err(NotifyError::Config(
                    "mail.security is \"none\" but SMTP credentials are set; they would be sent \
                     unencrypted. Use starttls or tls"
                        .into(),
                ));
            }
            (Some(user), Some(password)) => {
                credentials = Some(Credentials::new(
                    user.clone(),
                    password.expose().to_string(),
                ));
            }
            (None, None) => {}
            (Some(_), None) => {
                return Err(NotifyError::Config(
                    "mail.username is set but mail.password is not; set both or neither".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(NotifyError::Config(
                    "mail.password is set but mail.username is not; set both or neither".into(),
                ));
            }
        }
        let target = RelayTarget {
            host: relay.to_string(),
            port: settings.port,
            protection,
            credentials,
            timeout: settings.timeout,
        };
        Ok(Mailer {
            relay: Arc::new(RelayPool::new(target, RELAY_CONNECTIONS)),
            from,
            timeout: settings.timeout,
        })
    }

    /// How many messages may be handed to the relay at the same time.
    pub fn connections(&self) -> usize {
        RELAY_CONNECTIONS
    }

    /// The per-command timeout from the settings.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends `mail` to `to` as multipart/alternative (text, then HTML) with the header
    /// `Message-ID: message_id` (e.g. `<uuid@lockbridge>`), so a resend of the same
    /// outbox row carries the same id. With an attachment, the message is
    /// multipart/mixed: the alternative part, then the file.
    pub async fn send(
        &self,
        to: &str,
        message_id: &str,
        mail: &RenderedMail,
    ) -> Result<(), NotifyError> {
        let to: Mailbox = to
            .trim()
            .parse()
            .map_err(|_| NotifyError::InvalidAddress(to.to_string()))?;
        let body = MultiPart::alternative_plain_html(mail.text.clone(), mail.html.clone());
        let body = match &mail.attachment {
            None => body,
            Some(file) => {
                let content_type = ContentType::parse(&file.content_type).map_err(|e| {
                    NotifyError::InvalidContext(format!(
                        "attachment content type `{}`: {e}",
                        file.content_type
                    ))
                })?;
                MultiPart::mixed().multipart(body).singlepart(
                    Attachment::new(file.file_name.clone())
                        .body(file.content.clone(), content_type),
                )
            }
        };
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject.clone())
            .message_id(Some(message_id.to_string()))
            .date_now()
            .header(AutoSubmitted)
            .header(AutoResponseSuppress)
            .multipart(body)?;
        self.relay
            .send(message.envelope(), &message.formatted())
            .await
    }

    /// Connects to the relay (TLS and authentication included) and checks that it
    /// answers, for `check-config`.
    pub async fn test_connection(&self) -> Result<(), NotifyError> {
        self.relay.test_connection().await
    }
}

/// The PEM text of `mail.ca_file`, checked to hold a certificate.
fn read_ca_file(settings: &MailSettings) -> Result<Option<Vec<u8>>, NotifyError> {
    let Some(path) = &settings.ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path).map_err(|e| {
        NotifyError::Config(format!("mail.ca_file: cannot read {}: {e}", path.display()))
    })?;
    let has_certificate = pem
        .windows(b"-----BEGIN CERTIFICATE-----".len())
        .any(|w| w == b"-----BEGIN CERTIFICATE-----");
    if !has_certificate {
        return Err(NotifyError::Config(format!(
            "mail.ca_file: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        )));
    }
    Ok(Some(pem))
}

fn tls_parameters(relay: &str, settings: &MailSettings) -> Result<TlsParameters, NotifyError> {
    let mut builder = TlsParameters::builder(relay.to_string());
    if let Some(pem) = read_ca_file(settings)? {
        let path = settings
            .ca_file
            .as_deref()
            .unwrap_or(std::path::Path::new(""));
        let certificate = Certificate::from_pem(&pem)
            .map_err(|e| NotifyError::Config(format!("mail.ca_file: {}: {e}", path.display())))?;
        builder = builder.add_root_certificate(certificate);
    }
    builder
        .build_rustls()
        .map_err(|e| NotifyError::Config(format!("mail: cannot set up TLS for {relay}: {e}")))
}

/// A fixed header that keeps auto-responders quiet.
macro_rules! fixed_header {
    ($(#[$doc:meta])* $ty:ident, $name:literal, $value:literal) => {
        $(#[$doc])*
        #[derive(Clone)]
        struct $ty;

        impl Header for $ty {
            fn name() -> HeaderName {
                HeaderName::new_from_ascii_str($name)
            }

            fn parse(_: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
                Ok($ty)
            }

            fn display(&self) -> HeaderValue {
                HeaderValue::new(Self::name(), $value.to_string())
            }
        }
    };
}

fixed_header!(
    /// `Auto-Submitted: auto-generated` (RFC 3834): robots must not answer.
    AutoSubmitted,
    "Auto-Submitted",
    "auto-generated"
);
fixed_header!(
    /// `X-Auto-Response-Suppress: All`: Exchange and Outlook send no out-of-office replies.
    AutoResponseSuppress,
    "X-Auto-Response-Suppress",
    "All"
);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MailSettings {
        MailSettings {
            relay: "127.0.0.1".into(),
            port: 1,
            security: SmtpSecurity::None,
            ca_file: None,
            username: None,
            password: None,
            from: "lockbridge <no-reply@example.org>".into(),
            timeout: Duration::from_secs(2),
        }
    }

    fn mail() -> RenderedMail {
        RenderedMail {
            subject: "s".into(),
            text: "t".into(),
            html: "<p>h</p>".into(),
            attachment: None,
        }
    }

    #[tokio::test]
    async fn settings_are_checked_with_clear_errors() {
        Mailer::new(&settings()).expect("valid settings");
        Mailer::new(&MailSettings {
            from: "no-reply@example.org".into(),
            ..settings()
        })
        .expect("bare address");

        let err = Mailer::new(&MailSettings {
            from: "lockbridge at example".into(),
            ..settings()
        })
        .expect_err("bad from");
        assert!(err.to_string().contains("mail.from"), "{err}");

        let err = Mailer::new(&MailSettings {
            relay: " ".into(),
            ..settings()
        })
        .expect_err("no relay");
        assert!(err.to_string().contains("mail.relay"), "{err}");

        let err = Mailer::new(&MailSettings {
            username: Some("u".into()),
            ..settings()
        })
        .expect_err("half credentials");
        assert!(err.to_string().contains("mail.password"), "{err}");

        let err = Mailer::new(&MailSettings {
            username: Some("u".into()),
            password: Some(Secret::new("p")),
            ..settings()
        })
        .expect_err("credentials in clear");
        assert!(err.to_string().contains("mail.security"), "{err}");
        Mailer::new(&MailSettings {
            username: Some("u".into()),
            password: Some(Secret::new("p")),
            security: SmtpSecurity::Tls,
            ..settings()
        })
        .expect("credentials over TLS");

        let dir = tempfile::tempdir().expect("tempdir");
        let not_pem = dir.path().join("ca.pem");
        std::fs::write(&not_pem, "hello").expect("write");
        let err = Mailer::new(&MailSettings {
            security: SmtpSecurity::StartTls,
            ca_file: Some(not_pem),
            ..settings()
        })
        .expect_err("not a certificate");
        assert!(err.to_string().contains("mail.ca_file"), "{err}");

        let err = Mailer::new(&MailSettings {
            security: SmtpSecurity::Tls,
            ca_file: Some(dir.path().join("missing.pem")),
            ..settings()
        })
        .expect_err("missing file");
        assert!(err.to_string().contains("cannot read"), "{err}");

        Mailer::new(&MailSettings {
            security: SmtpSecurity::StartTls,
            ..settings()
        })
        .expect("system trust store");
    }

    #[tokio::test]
    async fn refused_connection_is_transient_and_bad_address_permanent() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let mailer = Mailer::new(&MailSettings { port, ..settings() }).expect("mailer");

        let err = mailer
            .send("someone@example.org", "<1@lockbridge>", &mail())
            .await
            .expect_err("nobody listens");
        assert!(matches!(err, NotifyError::Connect(_)), "{err:?}");
        assert!(!err.is_permanent());
        assert!(mailer.test_connection().await.is_err());

        let err = mailer
            .send("not an address", "<2@lockbridge>", &mail())
            .await
            .expect_err("bad address");
        assert!(matches!(err, NotifyError::InvalidAddress(_)), "{err:?}");
        assert!(err.is_permanent());
    }
}
