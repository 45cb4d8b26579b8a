//! The outbox: queueing messages ([`Notifier`]) and delivering them ([`OutboxWorker`]).
//!
//! A message is written to the store first and delivered afterwards, so a relay outage
//! or a restart loses nothing: delivery is at-least-once, with exponential backoff, a
//! stable Message-ID per row, and a dead-letter state for messages that cannot be
//! delivered. A secret travelling with a message (a temporary password) is kept sealed
//! in the store, opened only in memory at send time, and erased from the row as soon as
//! the message is sent or dead.
//!
//! It must not log recipient addresses at info level or above, nor any secret or body,
//! and it must not change anything but outbox rows.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize;

use super::{Mailer, NotifyError, Sealer, Templates};
use crate::store::{NewOutboxMessage, OutboxMessage, Store};
use crate::types::Secret;

/// The template variable a sealed secret is given as at send time.
pub const SECRET_VARIABLE: &str = "password";

/// Wakes the outbox worker so a new message goes out at once instead of at the next
/// poll. Clones share one signal; a wake while the worker is busy is remembered.
#[derive(Clone, Default)]
pub struct OutboxWaker(Arc<Notify>);

impl OutboxWaker {
    pub fn new() -> OutboxWaker {
        OutboxWaker::default()
    }

    /// Asks the worker to look for due messages now.
    pub fn wake(&self) {
        self.0.notify_one();
    }

    async fn woken(&self) {
        self.0.notified().await;
    }
}

impl std::fmt::Debug for OutboxWaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OutboxWaker")
    }
}

/// Queues messages for delivery. Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    waker: OutboxWaker,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").finish_non_exhaustive()
    }
}

impl Notifier {
    /// A notifier with a new waker; hand [`Notifier::waker`] to the [`OutboxWorker`].
    pub fn new(store: Arc<dyn Store>, sealer: Arc<Sealer>) -> Notifier {
        Notifier {
            store,
            sealer,
            waker: OutboxWaker::new(),
        }
    }

    /// The signal this notifier raises after each enqueue.
    pub fn waker(&self) -> OutboxWaker {
        self.waker.clone()
    }

    /// Queues message kind `template` for `to` and wakes the worker. `context` holds
    /// the non-secret template variables (a JSON object, or null for none); `secret`,
    /// when given, is sealed and reaches the template as `password` at send time only.
    ///
    /// Fails with [`NotifyError::InvalidAddress`] when `to` is not an email address, and
    /// with [`NotifyError::InvalidContext`] when `context` is not an object or already
    /// has a `password` entry (a secret must never be stored in clear).
    pub async fn enqueue(
        &self,
        template: &str,
        to: &str,
        context: serde_json::Value,
        secret: Option<&Secret>,
    ) -> Result<i64, NotifyError> {
        let to = to.trim();
        if to.parse::<lettre::Address>().is_err() {
            return Err(NotifyError::InvalidAddress(
                to.chars().take(254).collect::<String>(),
            ));
        }
        if template.is_empty()
            || !template
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(NotifyError::UnknownTemplate(template.to_string()));
        }
        let context = match context {
            serde_json::Value::Null => serde_json::Value::Object(serde_json::Map::new()),
            serde_json::Value::Object(map) if map.contains_key(SECRET_VARIABLE) => {
                return Err(NotifyError::InvalidContext(format!(
                    "`{SECRET_VARIABLE}` must be passed as the secret, not as a template \
                     variable, so it is never stored in clear"
                )));
            }
            serde_json::Value::Object(map) => serde_json::Value::Object(map),
            _ => {
                return Err(NotifyError::InvalidContext(
                    "template variables must be a JSON object".into(),
                ));
            }
        };
        let id = self
            .store
            .enqueue_mail(&NewOutboxMessage {
                template: template.to_string(),
                recipient: to.to_string(),
                context,
                sealed_secret: secret.map(|s| self.sealer.seal(s)),
                created_at: Utc::now(),
            })
            .await?;
        tracing::debug!(outbox.id = id, template, "mail queued");
        self.waker.wake();
        Ok(id)
    }
}

/// How the worker paces itself (the `[outbox]` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxSettings {
    /// How often to look for due messages when nobody wakes the worker.
    pub poll_interval: Duration,
    /// Delay before the first retry; doubles with each further failure.
    pub initial_backoff: Duration,
    /// Upper bound for the delay between retries.
    pub max_backoff: Duration,
    /// Attempts after which a message is dead-lettered (at least 1).
    pub max_attempts: u32,
}

/// Delivers queued messages until shut down.
///
/// Metrics: counters `lockbridge_mail_sent_total`, `lockbridge_mail_failed_total`
/// (every failed attempt, including the last one of a dead message) and
/// `lockbridge_mail_dead_total`, each labelled with `template`; gauges
/// `lockbridge_outbox_pending` and `lockbridge_outbox_dead`.
pub struct OutboxWorker {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    mailer: Mailer,
    templates: Templates,
    settings: OutboxSettings,
    waker: OutboxWaker,
}

impl std::fmt::Debug for OutboxWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxWorker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// Extra lease time beyond the longest a delivery may take, so a slow but live worker
/// does not lose its message to another.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

impl OutboxWorker {
    /// A worker that listens to `waker` (from [`Notifier::waker`]).
    pub fn new(
        store: Arc<dyn Store>,
        sealer: Arc<Sealer>,
        mailer: Mailer,
        templates: Templates,
        settings: OutboxSettings,
        waker: OutboxWaker,
    ) -> OutboxWorker {
        OutboxWorker {
            store,
            sealer,
            mailer,
            templates,
            settings,
            waker,
        }
    }

    /// The signal that wakes this worker.
    pub fn waker(&self) -> OutboxWaker {
        self.waker.clone()
    }

    /// Delivers due messages until `shutdown` is cancelled. A message being sent when
    /// shutdown comes is finished (and marked) before this returns; the rest stay
    /// safely queued for the next start.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(
            poll_interval_ms =
                u64::try_from(self.settings.poll_interval.as_millis()).unwrap_or(u64::MAX),
            max_attempts = self.settings.max_attempts,
            "outbox worker started"
        );
        loop {
            if let Err(e) = self.drain(&shutdown).await {
                tracing::warn!(error = %e, "outbox: cannot read due messages; will try again");
            }
            self.publish_counts().await;
            if shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.waker.woken() => {},
                () = tokio::time::sleep(self.settings.poll_interval) => {},
            }
        }
        tracing::info!("outbox worker stopped");
    }

    /// Delivers every message due now, one at a time, and returns how many were tried.
    /// For tests and one-shot commands; the daemon uses [`OutboxWorker::run`].
    pub async fn deliver_due(&self) -> Result<usize, NotifyError> {
        let tried = self.drain(&CancellationToken::new()).await?;
        self.publish_counts().await;
        Ok(tried)
    }

    /// Claims one message at a time, so that at shutdown no claimed message is left
    /// waiting for its lease to run out.
    async fn drain(&self, shutdown: &CancellationToken) -> Result<usize, NotifyError> {
        let mut tried = 0;
        while !shutdown.is_cancelled() {
            let claimed = self
                .store
                .claim_due_mail(Utc::now(), 1, self.send_budget() + LEASE_MARGIN)
                .await?;
            let Some(message) = claimed.into_iter().next() else {
                break;
            };
            self.deliver(message).await;
            tried += 1;
        }
        Ok(tried)
    }

    /// The longest one delivery may take: connect, TLS, EHLO, AUTH, MAIL, RCPT, DATA,
    /// each bounded by the mail timeout.
    fn send_budget(&self) -> Duration {
        self.mailer.timeout().saturating_mul(8)
    }

    async fn deliver(&self, message: OutboxMessage) {
        let attempt = message.attempts.saturating_add(1);
        let template = message.template.as_str();
        let label = message.template.clone();
        let started = std::time::Instant::now();
        let result =
            match tokio::time::timeout(self.send_budget(), self.try_deliver(&message)).await {
                Ok(result) => result,
                Err(_) => Err(NotifyError::Timeout(self.send_budget())),
            };
        let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let outcome = match result {
            Ok(()) => {
                metrics::counter!("lockbridge_mail_sent_total", "template" => label.clone())
                    .increment(1);
                tracing::info!(
                    outbox.id = message.id,
                    template,
                    attempt,
                    duration_ms,
                    "mail delivered"
                );
                self.store.mark_mail_sent(message.id, Utc::now()).await
            }
            Err(e) => {
                metrics::counter!("lockbridge_mail_failed_total", "template" => label.clone())
                    .increment(1);
                let error = e.to_string();
                // The relay's reply may quote the address: keep it out of the log.
                let logged = redact(&error, &message.recipient);
                if e.is_permanent() || attempt >= self.settings.max_attempts {
                    metrics::counter!("lockbridge_mail_dead_total", "template" => label.clone())
                        .increment(1);
                    tracing::warn!(
                        outbox.id = message.id,
                        template,
                        attempt,
                        permanent = e.is_permanent(),
                        error = %logged,
                        "mail cannot be delivered; dead-lettered and its secret erased"
                    );
                    self.store.mark_mail_dead(message.id, &error).await
                } else {
                    let delay = self.backoff(attempt);
                    let next = Utc::now()
                        + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(1));
                    tracing::warn!(
                        outbox.id = message.id,
                        template,
                        attempt,
                        retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                        error = %logged,
                        "mail delivery failed; will retry"
                    );
                    self.store.mark_mail_failed(message.id, &error, next).await
                }
            }
        };
        if let Err(e) = outcome {
            // The lease runs out and the message is tried again: at-least-once.
            tracing::error!(
                outbox.id = message.id,
                error = %e,
                "outbox: cannot record a delivery outcome"
            );
        }
    }

    async fn try_deliver(&self, message: &OutboxMessage) -> Result<(), NotifyError> {
        let mut context = message.context.clone();
        if let Some(sealed) = &message.sealed_secret {
            let secret = self.sealer.open(sealed)?;
            let map = context.as_object_mut().ok_or_else(|| {
                NotifyError::InvalidContext("stored template variables are not an object".into())
            })?;
            map.insert(
                SECRET_VARIABLE.to_string(),
                serde_json::Value::String(secret.expose().to_string()),
            );
        }
        let rendered = self.templates.render(&message.template, &context);
        if let Some(serde_json::Value::String(mut copy)) = context
            .as_object_mut()
            .and_then(|m| m.remove(SECRET_VARIABLE))
        {
            copy.zeroize();
        }
        let mail = rendered?;
        self.mailer
            .send(&message.recipient, &message.message_id, &mail)
            .await
    }

    /// Delay after failed attempt number `attempt` (1-based): `initial * 2^(attempt-1)`,
    /// capped at `max_backoff`, plus up to 10 % jitter so retries of many messages
    /// spread out (still never above `max_backoff`).
    fn backoff(&self, attempt: u32) -> Duration {
        let exponent = attempt.saturating_sub(1).min(30);
        let base = self
            .settings
            .initial_backoff
            .saturating_mul(1u32 << exponent)
            .min(self.settings.max_backoff);
        let jitter_ms = u64::try_from(base.as_millis() / 10).unwrap_or(0);
        let jitter = Duration::from_millis(rand::thread_rng().gen_range(0..=jitter_ms));
        (base + jitter).min(self.settings.max_backoff.max(base))
    }

    async fn publish_counts(&self) {
        match self.store.outbox_counts().await {
            Ok(counts) => {
                metrics::gauge!("lockbridge_outbox_pending").set(counts.pending as f64);
                metrics::gauge!("lockbridge_outbox_dead").set(counts.dead as f64);
            }
            Err(e) => tracing::debug!(error = %e, "outbox: cannot count messages"),
        }
    }
}

/// `text` with every occurrence of `address` (ASCII case-insensitive) replaced.
fn redact(text: &str, address: &str) -> String {
    if address.is_empty() {
        return text.to_string();
    }
    let haystack = text.to_ascii_lowercase();
    let needle = address.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (start, _) in haystack.match_indices(&needle) {
        out.push_str(&text[last..start]);
        out.push_str("[recipient]");
        last = start + needle.len();
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::notify::{MailSettings, SmtpSecurity, derive_key};
    use crate::store::{OutboxStatus, SqliteStore};

    fn sealer() -> Arc<Sealer> {
        Arc::new(Sealer::new(derive_key(&[9; 32], "outbox-secrets")))
    }

    async fn store() -> Arc<dyn Store> {
        Arc::new(SqliteStore::open_in_memory().await.expect("store"))
    }

    fn ctx() -> serde_json::Value {
        json!({
            "display_name": "Ada",
            "user_name": "ada",
            "require_change": true,
            "reset_by": "helpdesk",
            "public_url": "https://pw.example.org",
        })
    }

    fn settings(max_attempts: u32) -> OutboxSettings {
        OutboxSettings {
            poll_interval: Duration::from_millis(50),
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(60),
            max_attempts,
        }
    }

    /// A mailer pointed at a port nobody listens on.
    fn dead_relay() -> Mailer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        Mailer::new(&MailSettings {
            relay: "127.0.0.1".into(),
            port,
            security: SmtpSecurity::None,
            ca_file: None,
            username: None,
            password: None,
            from: "no-reply@example.org".into(),
            timeout: Duration::from_secs(2),
        })
        .expect("mailer")
    }

    fn worker(
        store: Arc<dyn Store>,
        sealer: Arc<Sealer>,
        notifier: &Notifier,
        max_attempts: u32,
    ) -> OutboxWorker {
        OutboxWorker::new(
            store,
            sealer,
            dead_relay(),
            Templates::new(None).expect("templates"),
            settings(max_attempts),
            notifier.waker(),
        )
    }

    #[tokio::test]
    async fn enqueue_seals_the_secret_and_wakes_the_worker() {
        let (store, sealer) = (store().await, sealer());
        let notifier = Notifier::new(store.clone(), sealer.clone());
        let waker = notifier.waker();
        let id = notifier
            .enqueue(
                "temporary-password",
                " ada@example.org ",
                ctx(),
                Some(&Secret::new("Tmp-Pass-77")),
            )
            .await
            .expect("enqueue");
        tokio::time::timeout(Duration::from_millis(100), waker.woken())
            .await
            .expect("the worker was woken");

        let row = store.get_mail(id).await.expect("get").expect("row");
        assert_eq!(row.recipient, "ada@example.org");
        assert_eq!(row.status, OutboxStatus::Pending);
        assert!(row.context.get(SECRET_VARIABLE).is_none());
        let sealed = row.sealed_secret.expect("sealed secret");
        assert!(
            !sealed.windows(11).any(|w| w == b"Tmp-Pass-77"),
            "stored sealed, not in clear"
        );
        assert_eq!(sealer.open(&sealed).expect("opens").expose(), "Tmp-Pass-77");

        let id = notifier
            .enqueue(
                "temporary-password",
                "b@example.org",
                serde_json::Value::Null,
                None,
            )
            .await
            .expect("no secret");
        let row = store.get_mail(id).await.expect("get").expect("row");
        assert!(row.sealed_secret.is_none());
        assert_eq!(row.context, json!({}));
    }

    #[tokio::test]
    async fn enqueue_refuses_bad_input_before_storing() {
        let store = store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        let err = notifier
            .enqueue("temporary-password", "not-an-address", ctx(), None)
            .await
            .expect_err("bad address");
        assert!(
            matches!(err, NotifyError::InvalidAddress(ref a) if a == "not-an-address"),
            "{err:?}"
        );
        assert!(err.to_string().contains("someone@example.org"));

        let mut with_password = ctx();
        with_password["password"] = json!("in clear");
        let err = notifier
            .enqueue("temporary-password", "a@example.org", with_password, None)
            .await
            .expect_err("clear secret");
        assert!(matches!(err, NotifyError::InvalidContext(_)), "{err:?}");

        let err = notifier
            .enqueue("temporary-password", "a@example.org", json!("x"), None)
            .await
            .expect_err("not an object");
        assert!(matches!(err, NotifyError::InvalidContext(_)), "{err:?}");

        let err = notifier
            .enqueue("../x", "a@example.org", ctx(), None)
            .await
            .expect_err("bad template");
        assert!(matches!(err, NotifyError::UnknownTemplate(_)), "{err:?}");

        assert_eq!(store.outbox_counts().await.expect("counts").pending, 0);
    }

    #[tokio::test]
    async fn relay_down_reschedules_with_backoff_then_dead_letters() {
        let (store, sealer) = (store().await, sealer());
        let notifier = Notifier::new(store.clone(), sealer.clone());
        let id = notifier
            .enqueue(
                "temporary-password",
                "ada@example.org",
                ctx(),
                Some(&Secret::new("pw")),
            )
            .await
            .expect("enqueue");

        let w = worker(store.clone(), sealer.clone(), &notifier, 2);
        let before = Utc::now();
        assert_eq!(w.deliver_due().await.expect("run"), 1);
        let row = store.get_mail(id).await.expect("get").expect("row");
        assert_eq!(row.status, OutboxStatus::Pending);
        assert_eq!(row.attempts, 1);
        assert!(row.sealed_secret.is_some(), "kept for the retry");
        assert!(
            row.last_error
                .as_deref()
                .is_some_and(|e| e.contains("retry")),
            "{:?}",
            row.last_error
        );
        let wait = row.next_attempt_at - before;
        assert!(
            wait >= chrono::Duration::seconds(10) && wait <= chrono::Duration::seconds(12),
            "{wait}"
        );
        // Not due yet: nothing is tried.
        assert_eq!(w.deliver_due().await.expect("run"), 0);

        // Make it due again; the second failure reaches max_attempts.
        store
            .mark_mail_failed(id, "x", Utc::now())
            .await
            .expect("reschedule");
        assert_eq!(w.deliver_due().await.expect("run"), 1);
        let row = store.get_mail(id).await.expect("get").expect("row");
        assert_eq!(row.status, OutboxStatus::Dead);
        assert_eq!(row.attempts, 3);
        assert!(row.sealed_secret.is_none(), "erased when dead");
    }

    #[tokio::test]
    async fn undecryptable_secret_is_dead_lettered_at_once() {
        let store = store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        let id = notifier
            .enqueue(
                "temporary-password",
                "ada@example.org",
                ctx(),
                Some(&Secret::new("pw")),
            )
            .await
            .expect("enqueue");
        // The master key changed between enqueue and delivery.
        let other = Arc::new(Sealer::new(derive_key(&[10; 32], "outbox-secrets")));
        let w = worker(store.clone(), other, &notifier, 20);
        w.deliver_due().await.expect("run");
        let row = store.get_mail(id).await.expect("get").expect("row");
        assert_eq!(row.status, OutboxStatus::Dead);
        assert_eq!(row.attempts, 1);
        assert!(
            row.last_error
                .as_deref()
                .is_some_and(|e| e.contains("master_key"))
        );
    }

    #[tokio::test]
    async fn unknown_template_is_dead_lettered_at_once() {
        let (store, sealer) = (store().await, sealer());
        let notifier = Notifier::new(store.clone(), sealer.clone());
        let id = notifier
            .enqueue("no-such-kind", "ada@example.org", ctx(), None)
            .await
            .expect("enqueue");
        worker(store.clone(), sealer, &notifier, 20)
            .deliver_due()
            .await
            .expect("run");
        let row = store.get_mail(id).await.expect("get").expect("row");
        assert_eq!(row.status, OutboxStatus::Dead);
    }

    #[tokio::test]
    async fn backoff_doubles_caps_and_jitters_a_little() {
        let store = store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        let w = worker(store, sealer(), &notifier, 20);
        let secs = |attempt| w.backoff(attempt).as_secs_f64();
        assert!((10.0..=11.0).contains(&secs(1)), "{}", secs(1));
        assert!((20.0..=22.0).contains(&secs(2)), "{}", secs(2));
        assert!((40.0..=44.0).contains(&secs(3)), "{}", secs(3));
        assert!((secs(4) - 60.0).abs() < f64::EPSILON, "capped: {}", secs(4));
        assert!((secs(u32::MAX) - 60.0).abs() < f64::EPSILON, "no overflow");
    }

    #[tokio::test]
    async fn run_stops_on_shutdown() {
        let (store, sealer) = (store().await, sealer());
        let notifier = Notifier::new(store.clone(), sealer.clone());
        let stop = CancellationToken::new();
        let task = tokio::spawn(worker(store, sealer, &notifier, 20).run(stop.clone()));
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("stopped in time")
            .expect("no panic");
    }

    #[test]
    fn redact_hides_the_recipient_in_any_case() {
        assert_eq!(
            redact(
                "550 5.1.1 <Ada@Example.org>: unknown; ada@example.org",
                "ada@example.org"
            ),
            "550 5.1.1 <[recipient]>: unknown; [recipient]"
        );
        assert_eq!(
            redact("no address here", "ada@example.org"),
            "no address here"
        );
    }
}
