//! The outbox: queueing messages ([`Notifier`]) and delivering them ([`OutboxWorker`]).
//!
//! A message is written to the store first and delivered afterwards, so a relay outage
//! or a restart loses nothing: delivery is at-least-once, with exponential backoff, a
//! stable Message-ID per row, and a dead-letter state for messages that cannot be
//! delivered. A secret travelling with a message (a temporary password) is kept sealed
//! in the store, opened only in memory at send time, and erased from the row as soon as
//! the message is sent or dead.
//!
//! Messages have a class ([`MailClass`]): transactional mail (temporary passwords) goes
//! out as soon as it can; bulk mail (expiry notices, digests) waits behind it and is
//! paced by [`OutboxSettings::max_bulk_per_minute`] and
//! [`OutboxSettings::max_bulk_per_day`], counted from the store so that the limits hold
//! across restarts and instances. A message may carry a stale time after which it is
//! dropped unsent instead of arriving out of date.
//!
//! It must not log recipient addresses at info level or above, nor any secret or body,
//! and it must not change anything but outbox rows (and, through
//! [`Notifier::record_notice`], the notice ledger that goes with them).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use rand::Rng;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use zeroize::Zeroize;

use super::{EXPIRY_DIGEST, Mailer, NotifyError, Sealer, Templates};
use crate::store::{MAX_REPORT_PAGE, MailClass, NewOutboxMessage, OutboxMessage, Store};
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
    /// Messages given up on (dead letters), newest first, for operators to inspect.
    pub async fn dead_letters(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<crate::store::OutboxMessage>, crate::store::StoreError> {
        self.store.list_dead_mail(before_id, limit).await
    }

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
        let mut message = checked(template, to, context, MailClass::Transactional)?;
        message.sealed_secret = secret.map(|s| self.sealer.seal(s));
        self.enqueue_message(&message).await
    }

    /// [`Notifier::enqueue`] once per `ledger_key`: the key goes into the notice ledger
    /// in the transaction that queues the message, so asking again (a bulk job's item
    /// redone after a crash) queues nothing. True when it was queued now.
    pub async fn enqueue_once(
        &self,
        ledger_key: &str,
        template: &str,
        to: &str,
        context: serde_json::Value,
        secret: Option<&Secret>,
    ) -> Result<bool, NotifyError> {
        let mut message = checked(template, to, context, MailClass::Transactional)?;
        message.sealed_secret = secret.map(|s| self.sealer.seal(s));
        self.record_notice(ledger_key, None, &message).await
    }

    /// [`Notifier::enqueue`] for a message worthless after `stale_after` (a security
    /// code): never sent later than that, dead-lettered instead.
    pub async fn enqueue_until(
        &self,
        template: &str,
        to: &str,
        context: serde_json::Value,
        secret: Option<&Secret>,
        stale_after: chrono::DateTime<chrono::Utc>,
    ) -> Result<i64, NotifyError> {
        let mut message = checked(template, to, context, MailClass::Transactional)?;
        message.sealed_secret = secret.map(|s| self.sealer.seal(s));
        message.stale_after = Some(stale_after);
        self.enqueue_message(&message).await
    }

    /// Checks a message of kind `template` for `to` and returns it ready for
    /// [`Notifier::record_notice`] (or [`Store::record_notice`]); queues nothing. Unlike
    /// [`Notifier::enqueue`], `template` must be one of lockbridge's own message kinds
    /// ([`Templates::kinds`]), so a typo cannot consume a ledger entry with a message that
    /// can never be sent. The message carries no secret; set
    /// [`NewOutboxMessage::stale_after`] on it for a notice that must not arrive late.
    ///
    /// Errors as for [`Notifier::enqueue`], plus [`NotifyError::UnknownTemplate`] for a
    /// kind lockbridge does not send.
    pub fn prepare(
        &self,
        template: &str,
        to: &str,
        context: serde_json::Value,
        class: MailClass,
    ) -> Result<NewOutboxMessage, NotifyError> {
        if !Templates::kinds().any(|kind| kind == template) {
            return Err(NotifyError::UnknownTemplate(template.to_string()));
        }
        checked(template, to, context, class)
    }

    /// Queues bulk mail (a digest, say): [`Notifier::prepare`] with [`MailClass::Bulk`],
    /// then queued and the worker woken. Returns the outbox id.
    pub async fn enqueue_bulk(
        &self,
        template: &str,
        to: &str,
        context: serde_json::Value,
    ) -> Result<i64, NotifyError> {
        let message = self.prepare(template, to, context, MailClass::Bulk)?;
        self.enqueue_message(&message).await
    }

    /// Records `ledger_key` and queues `message` in one transaction
    /// ([`Store::record_notice`]), waking the worker when it was queued. False, with
    /// nothing queued, when the key was recorded before.
    /// [`Notifier::record_notice`] for a batch, in one transaction; wakes the worker once.
    pub async fn record_notices(
        &self,
        sweep_id: Option<&str>,
        notices: &[(String, NewOutboxMessage)],
    ) -> Result<Vec<bool>, NotifyError> {
        let queued = self.store.record_notices(sweep_id, notices).await?;
        if queued.iter().any(|q| *q) {
            self.waker.wake();
        }
        Ok(queued)
    }

    pub async fn record_notice(
        &self,
        ledger_key: &str,
        sweep_id: Option<&str>,
        message: &NewOutboxMessage,
    ) -> Result<bool, NotifyError> {
        let queued = self
            .store
            .record_notice(ledger_key, sweep_id, message)
            .await?;
        if queued {
            tracing::debug!(
                template = message.template.as_str(),
                "notice recorded and queued"
            );
            self.waker.wake();
        }
        Ok(queued)
    }

    async fn enqueue_message(&self, message: &NewOutboxMessage) -> Result<i64, NotifyError> {
        let id = self.store.enqueue_mail(message).await?;
        tracing::debug!(
            outbox.id = id,
            template = message.template.as_str(),
            class = message.class.as_str(),
            "mail queued"
        );
        self.waker.wake();
        Ok(id)
    }
}

/// A message without secret, after checking what [`Notifier::enqueue`] promises: an
/// email address, a template name of safe characters, an object context (null for none)
/// without a `password` entry.
fn checked(
    template: &str,
    to: &str,
    context: serde_json::Value,
    class: MailClass,
) -> Result<NewOutboxMessage, NotifyError> {
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
    Ok(NewOutboxMessage::new(
        template,
        to,
        context,
        class,
        Utc::now(),
    ))
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
    /// Failed attempts after which a message is dead-lettered; 0 = no limit (only
    /// `retry_window` decides).
    pub max_attempts: u32,
    /// A message that keeps failing is retried until it is this old, then dead-lettered.
    pub retry_window: Duration,
    /// Bulk messages sent in any 60 seconds, at most; attempts are also spaced at least
    /// `60 s / max_bulk_per_minute` apart. 0 = unlimited.
    pub max_bulk_per_minute: u32,
    /// Bulk messages sent in any 24 hours, at most. 0 = unlimited.
    pub max_bulk_per_day: u32,
}

impl Default for OutboxSettings {
    /// The `[outbox]` defaults: poll every second, retry after 5 s doubling up to 15 min,
    /// give up 72 hours after queueing, at most 120 bulk messages a minute and 5000 a day.
    fn default() -> Self {
        OutboxSettings {
            poll_interval: Duration::from_secs(1),
            initial_backoff: Duration::from_secs(5),
            max_backoff: Duration::from_secs(900),
            max_attempts: 0,
            retry_window: Duration::from_secs(72 * 3600),
            max_bulk_per_minute: 120,
            max_bulk_per_day: 5000,
        }
    }
}

/// Whether bulk mail may be claimed now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BulkGate {
    /// Bulk mail may go: at most this many messages now.
    Open(usize),
    /// Too soon after the last bulk attempt; open again in this long.
    Spacing(Duration),
    /// A bulk limit is reached (its metric label).
    Limit(&'static str),
}

/// Delivers queued messages until shut down: transactional mail first, bulk mail while
/// under the bulk limits (the rest stays pending and goes out later, in order).
///
/// Metrics: counters `lockbridge_mail_sent_total`, `lockbridge_mail_failed_total`
/// (every failed attempt, including the last one of a dead message) and
/// `lockbridge_mail_dead_total`, each labelled with `template`;
/// `lockbridge_mail_held_total{limit="per_minute"|"per_day"}` (bulk messages left
/// pending by a bulk limit, each counted once) and `lockbridge_mail_stale_total`
/// (messages dropped unsent because out of date); gauges
/// `lockbridge_outbox_pending{class="transactional"|"bulk"}`,
/// `lockbridge_outbox_retrying{class=...}` (pending messages that failed at least once:
/// alert on the transactional one) and `lockbridge_outbox_dead`.
pub struct OutboxWorker {
    store: Arc<dyn Store>,
    sealer: Arc<Sealer>,
    mailer: Mailer,
    templates: Templates,
    settings: OutboxSettings,
    waker: OutboxWaker,
    /// When this worker last tried a bulk message (for the spacing).
    last_bulk: Mutex<Option<Instant>>,
    /// How long a claim lasts unless renewed ([`MAIL_LEASE`]; renewed every third).
    claim_lease: Duration,
}

impl std::fmt::Debug for OutboxWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutboxWorker")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// How long a claim on a message lasts unless renewed. The worker renews the claims of
/// the batch it is sending every third of it (so one slow or failed renewal does not
/// lose them): a slow relay keeps its messages, while the messages of an instance that
/// died go to another within this time, not after the longest a delivery may take
/// (minutes with the default relay timeout).
pub const MAIL_LEASE: Duration = Duration::from_secs(60);

/// Metric labels of the bulk limits.
const PER_MINUTE: &str = "per_minute";
const PER_DAY: &str = "per_day";

/// What one pass over the due messages did.
#[derive(Debug, Default)]
struct Drained {
    /// Messages tried.
    tried: usize,
    /// Bulk mail waits for the spacing and may go in this long.
    bulk_resumes_in: Option<Duration>,
}

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
            last_bulk: Mutex::new(None),
            claim_lease: MAIL_LEASE,
        }
    }

    /// The same worker with claims lasting `lease` (at least a second) instead of
    /// [`MAIL_LEASE`]: for tests that cannot wait a minute.
    pub fn with_claim_lease(mut self, lease: Duration) -> OutboxWorker {
        self.claim_lease = lease.max(Duration::from_secs(1));
        self
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
            retry_window_hours = self.settings.retry_window.as_secs() / 3600,
            max_bulk_per_minute = self.settings.max_bulk_per_minute,
            max_bulk_per_day = self.settings.max_bulk_per_day,
            "outbox worker started"
        );
        loop {
            let mut wait = self.settings.poll_interval;
            match self.drain(&shutdown).await {
                Ok(drained) => {
                    if let Some(resume) = drained.bulk_resumes_in {
                        wait = wait.min(resume);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "outbox: cannot read due messages; will try again");
                }
            }
            self.publish_counts().await;
            if shutdown.is_cancelled() {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.waker.woken() => {},
                () = tokio::time::sleep(wait) => {},
            }
        }
        tracing::info!("outbox worker stopped");
    }

    /// Delivers every message due now, one at a time, and returns how many were tried.
    /// For tests and one-shot commands; the daemon uses [`OutboxWorker::run`].
    /// Bulk mail held back by the bulk limits stays pending (see [`OutboxWorker`]).
    pub async fn deliver_due(&self) -> Result<usize, NotifyError> {
        let drained = self.drain(&CancellationToken::new()).await?;
        self.publish_counts().await;
        Ok(drained.tried)
    }

    /// Claims a few messages at a time (as many as the relay connections carry, twice)
    /// and delivers them side by side, so that one slow answer from the relay does not
    /// hold up the rest; at shutdown the claimed ones are finished, none is left waiting
    /// for its lease to run out. The bulk limits are checked before each claim, and a
    /// spacing between bulk messages makes the claim one message.
    async fn drain(&self, shutdown: &CancellationToken) -> Result<Drained, NotifyError> {
        let mut drained = Drained::default();
        let stale = self.store.dead_letter_stale_mail(Utc::now()).await?;
        if stale > 0 {
            metrics::counter!("lockbridge_mail_stale_total").increment(stale);
            tracing::warn!(
                messages = stale,
                "outbox: mail not sent before its stale time dropped unsent (dead-lettered)"
            );
        }
        let in_flight = self.mailer.connections();
        let batch = in_flight * 2;
        let lease = self.claim_lease;
        while !shutdown.is_cancelled() {
            let now = Utc::now();
            let claimed = match self.bulk_gate(now).await? {
                BulkGate::Open(room) => {
                    let limit = u32::try_from(room.min(batch)).unwrap_or(1);
                    self.store.claim_due_mail(now, limit, lease).await?
                }
                gate => {
                    let claimed = self
                        .store
                        .claim_due_mail_of_class(
                            MailClass::Transactional,
                            now,
                            u32::try_from(batch).unwrap_or(1),
                            lease,
                        )
                        .await?;
                    if claimed.is_empty() {
                        match gate {
                            BulkGate::Spacing(resume) => drained.bulk_resumes_in = Some(resume),
                            BulkGate::Limit(limit) => self.note_held(limit, now).await?,
                            BulkGate::Open(_) => {}
                        }
                    }
                    claimed
                }
            };
            if claimed.is_empty() {
                break;
            }
            if claimed.iter().any(|m| m.class == MailClass::Bulk) {
                *self.last_bulk.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            }
            drained.tried += claimed.len();
            let ids: Vec<i64> = claimed.iter().map(|m| m.id).collect();
            let sending = futures::stream::iter(claimed)
                .for_each_concurrent(in_flight, |message| self.deliver(message));
            tokio::select! {
                () = sending => {}
                never = self.renew_leases(&ids) => match never {},
            }
        }
        Ok(drained)
    }

    /// Renews the claims on `ids` every third of the lease, for as long as it is polled
    /// (beside the deliveries of the batch; those sent or given up are no longer leased
    /// and are left alone). A renewal that fails is logged: if the store stays out of
    /// reach past the lease, another instance may send a message again (at-least-once).
    async fn renew_leases(&self, ids: &[i64]) -> std::convert::Infallible {
        let renewal = self.claim_lease / 3;
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + renewal, renewal);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let now = Utc::now();
            let until = now + chrono::Duration::from_std(self.claim_lease).unwrap_or_default();
            if let Err(e) = self.store.extend_mail_leases(ids, now, until).await {
                tracing::warn!(error = %e, messages = ids.len(), "outbox: cannot renew the claims on the messages being sent");
            }
        }
    }

    /// Whether a bulk message may be tried now: spaced after the last one, and under the
    /// per-minute and per-day limits (sent messages counted in the store, so the limits
    /// hold across restarts and instances).
    async fn bulk_gate(&self, now: DateTime<Utc>) -> Result<BulkGate, NotifyError> {
        let OutboxSettings {
            max_bulk_per_minute: per_minute,
            max_bulk_per_day: per_day,
            ..
        } = self.settings;
        if per_minute > 0 {
            let gap = Duration::from_secs(60) / per_minute;
            let last = *self.last_bulk.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(resume) =
                last.and_then(|t| (t + gap).checked_duration_since(Instant::now()))
                && !resume.is_zero()
            {
                return Ok(BulkGate::Spacing(resume));
            }
            let since = now - chrono::Duration::minutes(1);
            let sent = self.store.count_sent_since(MailClass::Bulk, since).await?;
            if sent >= u64::from(per_minute) {
                return Ok(BulkGate::Limit(PER_MINUTE));
            }
        }
        let mut room = if per_minute > 0 { 1 } else { usize::MAX };
        if per_day > 0 {
            let since = now - chrono::Duration::days(1);
            let sent = self.store.count_sent_since(MailClass::Bulk, since).await?;
            if sent >= u64::from(per_day) {
                return Ok(BulkGate::Limit(PER_DAY));
            }
            let left = usize::try_from(u64::from(per_day) - sent).unwrap_or(usize::MAX);
            room = room.min(left);
        }
        Ok(BulkGate::Open(room))
    }

    /// Counts (once each) the due bulk messages a limit holds back.
    async fn note_held(&self, limit: &'static str, now: DateTime<Utc>) -> Result<(), NotifyError> {
        let newly = self.store.mark_due_mail_held(MailClass::Bulk, now).await?;
        if newly > 0 {
            metrics::counter!("lockbridge_mail_held_total", "limit" => limit).increment(newly);
            tracing::info!(
                messages = newly,
                limit,
                "outbox: bulk mail held back by outbox.max_bulk_{limit}; it goes out later, \
                 in order, as the limit allows"
            );
        }
        Ok(())
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
                let age = (Utc::now() - message.created_at)
                    .to_std()
                    .unwrap_or_default();
                let out_of_attempts =
                    self.settings.max_attempts > 0 && attempt >= self.settings.max_attempts;
                if e.is_permanent() || out_of_attempts || age >= self.settings.retry_window {
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
                    let retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
                    let gives_up_at = message.created_at
                        + chrono::Duration::from_std(self.settings.retry_window)
                            .unwrap_or(chrono::Duration::days(3));
                    if message.class == MailClass::Transactional {
                        // Someone is waiting for this message (a temporary password): an
                        // operator must hear about it while it waits, not when it is lost.
                        tracing::error!(
                            outbox.id = message.id,
                            template,
                            attempt,
                            retry_in_ms,
                            gives_up_at = %gives_up_at.to_rfc3339(),
                            error = %logged,
                            "mail a user is waiting for cannot be delivered yet; retrying \
                             (check the relay: mail.relay)"
                        );
                    } else {
                        tracing::warn!(
                            outbox.id = message.id,
                            template,
                            attempt,
                            retry_in_ms,
                            gives_up_at = %gives_up_at.to_rfc3339(),
                            error = %logged,
                            "mail delivery failed; will retry"
                        );
                    }
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
        if message.template == EXPIRY_DIGEST {
            self.list_sweep_accounts(&mut context).await?;
        }
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

    /// A digest queued by a sweep names the sweep (`sweep_id`) instead of listing its
    /// accounts: they are read now from the sweep's report, page by page, into the
    /// `expiring`, `expired` and `not_notified` lists the templates use. A context that
    /// already has the lists is left as it is.
    async fn list_sweep_accounts(
        &self,
        context: &mut serde_json::Value,
    ) -> Result<(), NotifyError> {
        use serde_json::{Value, json};
        let Some(map) = context.as_object_mut() else {
            return Ok(());
        };
        let Some(sweep_id) = map
            .get("sweep_id")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            return Ok(());
        };
        if map.contains_key("expiring") {
            return Ok(());
        }
        let (mut expiring, mut expired, mut not_notified) = (Vec::new(), Vec::new(), Vec::new());
        let mut after = None;
        loop {
            let page = self
                .store
                .sweep_report_page(&sweep_id, after, MAX_REPORT_PAGE)
                .await?;
            for line in &page {
                if let Some(reason) = &line.reason {
                    not_notified.push(json!({"user_name": line.user_name, "reason": reason}));
                }
                if line.notice.is_empty() {
                    continue;
                }
                let user = json!({
                    "user_name": line.user_name,
                    "display_name": line.display_name.clone().unwrap_or_default(),
                    "mail": line.mail,
                    "expires_at_local": line.expires_at_local,
                    "expired_at_local": line.expires_at_local,
                    "days_left": line.days_left,
                });
                if line.notice == "expired" {
                    expired.push(user);
                } else {
                    expiring.push(user);
                }
            }
            match page.last() {
                Some(last) if page.len() == MAX_REPORT_PAGE as usize => after = Some(last.seq),
                _ => break,
            }
        }
        map.insert("expiring".into(), Value::Array(expiring));
        map.insert("expired".into(), Value::Array(expired));
        map.insert("not_notified".into(), Value::Array(not_notified));
        Ok(())
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
                let transactional = counts.pending.saturating_sub(counts.pending_bulk);
                metrics::gauge!("lockbridge_outbox_pending", "class" => MailClass::Transactional.as_str())
                    .set(transactional as f64);
                metrics::gauge!("lockbridge_outbox_pending", "class" => MailClass::Bulk.as_str())
                    .set(counts.pending_bulk as f64);
                metrics::gauge!("lockbridge_outbox_dead").set(counts.dead as f64);
                metrics::gauge!("lockbridge_outbox_retrying", "class" => MailClass::Transactional.as_str())
                    .set(counts.retrying_transactional as f64);
                metrics::gauge!("lockbridge_outbox_retrying", "class" => MailClass::Bulk.as_str())
                    .set(counts.retrying_bulk as f64);
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
        Arc::new(SqliteStore::open_temporary().await.expect("store"))
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
            retry_window: Duration::from_secs(3600),
            max_bulk_per_minute: 0,
            max_bulk_per_day: 0,
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

    /// A relay outage of hours must not cost a temporary password the API reported as
    /// sent: the message waits through any number of attempts within the window.
    #[tokio::test]
    async fn waiting_mail_is_retried_for_the_whole_window_then_given_up() {
        let sqlite = SqliteStore::open_temporary().await.expect("store");
        let store: Arc<dyn Store> = Arc::new(sqlite.clone());
        let sealer = sealer();
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
        let w = OutboxWorker::new(
            store.clone(),
            sealer,
            dead_relay(),
            Templates::new(None).expect("templates"),
            OutboxSettings {
                retry_window: Duration::from_secs(72 * 3600),
                ..settings(0)
            },
            notifier.waker(),
        );
        // Hours of outage: far more failed attempts than the old limit of 20.
        for _ in 0..30 {
            store
                .mark_mail_failed(id, "relay down", Utc::now())
                .await
                .expect("fail");
        }
        assert_eq!(w.deliver_due().await.expect("run"), 1);
        let row = store.get_mail(id).await.expect("get").expect("row");
        assert_eq!(row.status, OutboxStatus::Pending, "still waiting");
        assert_eq!(row.attempts, 31);
        assert!(row.sealed_secret.is_some(), "the password is kept");
        let counts = store.outbox_counts().await.expect("counts");
        assert_eq!(counts.retrying_transactional, 1);

        // Past the window: given up and erased.
        let old = (Utc::now() - chrono::Duration::hours(73))
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        sqlx::query("UPDATE outbox SET created_at = ?1 WHERE id = ?2")
            .bind(old)
            .bind(id)
            .execute(sqlite.pool())
            .await
            .expect("age the message");
        store
            .mark_mail_failed(id, "relay down", Utc::now())
            .await
            .expect("due");
        assert_eq!(w.deliver_due().await.expect("run"), 1);
        let row = store.get_mail(id).await.expect("get").expect("row");
        assert_eq!(row.status, OutboxStatus::Dead);
        assert!(row.sealed_secret.is_none(), "erased when given up");
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

    fn limited(per_minute: u32, per_day: u32) -> OutboxSettings {
        OutboxSettings {
            max_bulk_per_minute: per_minute,
            max_bulk_per_day: per_day,
            ..settings(20)
        }
    }

    fn limited_worker(
        store: Arc<dyn Store>,
        notifier: &Notifier,
        limits: OutboxSettings,
    ) -> OutboxWorker {
        OutboxWorker::new(
            store,
            sealer(),
            dead_relay(),
            Templates::new(None).expect("templates"),
            limits,
            notifier.waker(),
        )
    }

    fn expiring_ctx() -> serde_json::Value {
        json!({
            "display_name": "Ada",
            "user_name": "ada",
            "expires_at_local": "Monday 3 March 2025, 14:00 CET",
            "days_left": 7,
            "change_password_url": "https://pw.example.org",
        })
    }

    /// `n` bulk messages recorded as sent `ago` before now.
    async fn sent_bulk(store: &Arc<dyn Store>, n: usize, ago: chrono::Duration) {
        for i in 0..n {
            let id = store
                .enqueue_mail(&NewOutboxMessage::new(
                    "password-expiring",
                    format!("sent{i}@example.org"),
                    json!({}),
                    MailClass::Bulk,
                    Utc::now() - ago,
                ))
                .await
                .expect("enqueue");
            store
                .mark_mail_sent(id, Utc::now() - ago)
                .await
                .expect("sent");
        }
    }

    #[tokio::test]
    async fn prepare_checks_without_queueing() {
        let store = store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        let m = notifier
            .prepare(
                crate::notify::PASSWORD_EXPIRING,
                " ada@example.org ",
                expiring_ctx(),
                MailClass::Bulk,
            )
            .expect("prepare");
        assert_eq!(m.recipient, "ada@example.org");
        assert_eq!(m.class, MailClass::Bulk);
        assert_eq!(m.template, "password-expiring");
        assert!(m.sealed_secret.is_none() && m.stale_after.is_none());
        let m = notifier
            .prepare(
                crate::notify::EXPIRY_DIGEST,
                "admins@example.org",
                serde_json::Value::Null,
                MailClass::Transactional,
            )
            .expect("null context");
        assert_eq!(m.context, json!({}));

        let err = notifier
            .prepare("no-such-kind", "a@example.org", json!({}), MailClass::Bulk)
            .expect_err("unknown kind");
        assert!(matches!(err, NotifyError::UnknownTemplate(_)), "{err:?}");
        let err = notifier
            .prepare("password-expiring", "nope", json!({}), MailClass::Bulk)
            .expect_err("bad address");
        assert!(matches!(err, NotifyError::InvalidAddress(_)), "{err:?}");
        let err = notifier
            .prepare(
                "password-expiring",
                "a@example.org",
                json!({"password": "x"}),
                MailClass::Bulk,
            )
            .expect_err("clear secret");
        assert!(matches!(err, NotifyError::InvalidContext(_)), "{err:?}");
        assert_eq!(store.outbox_counts().await.expect("counts").pending, 0);
    }

    #[tokio::test]
    async fn record_notice_queues_once_and_wakes_the_worker() {
        let store = store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        let waker = notifier.waker();
        let m = notifier
            .prepare(
                "password-expiring",
                "ada@example.org",
                expiring_ctx(),
                MailClass::Bulk,
            )
            .expect("prepare");
        assert!(
            notifier
                .record_notice("k1", Some("s1"), &m)
                .await
                .expect("record")
        );
        tokio::time::timeout(Duration::from_millis(100), waker.woken())
            .await
            .expect("the worker was woken");
        assert!(
            !notifier
                .record_notice("k1", Some("s2"), &m)
                .await
                .expect("again")
        );
        assert!(
            tokio::time::timeout(Duration::from_millis(100), waker.woken())
                .await
                .is_err(),
            "nothing queued, nobody woken"
        );
        let id = notifier
            .enqueue_bulk(
                crate::notify::EXPIRY_DIGEST,
                "admins@example.org",
                json!({}),
            )
            .await
            .expect("bulk");
        assert_eq!(
            store.get_mail(id).await.expect("get").expect("row").class,
            MailClass::Bulk
        );
        let counts = store.outbox_counts().await.expect("counts");
        assert_eq!((counts.pending, counts.pending_bulk), (2, 2));
    }

    #[tokio::test]
    async fn the_daily_cap_holds_bulk_mail_but_not_transactional_mail() {
        let store = store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        sent_bulk(&store, 2, chrono::Duration::hours(23)).await;
        let bulk = notifier
            .enqueue_bulk("password-expiring", "ada@example.org", expiring_ctx())
            .await
            .expect("bulk");
        let transactional = notifier
            .enqueue(
                "temporary-password",
                "bob@example.org",
                ctx(),
                Some(&Secret::new("pw")),
            )
            .await
            .expect("transactional");

        let w = limited_worker(store.clone(), &notifier, limited(0, 2));
        assert_eq!(
            w.deliver_due().await.expect("run"),
            1,
            "only the transactional one"
        );
        let t = store
            .get_mail(transactional)
            .await
            .expect("get")
            .expect("row");
        assert_eq!(t.attempts, 1, "tried (the test relay is down)");
        let b = store.get_mail(bulk).await.expect("get").expect("row");
        assert_eq!(
            (b.status, b.attempts),
            (OutboxStatus::Pending, 0),
            "held back"
        );
        assert_eq!(
            store
                .mark_due_mail_held(MailClass::Bulk, Utc::now())
                .await
                .expect("held"),
            0,
            "already counted as held"
        );

        // A higher cap lets it go (in a day's time the old ones leave the window).
        let w = limited_worker(store.clone(), &notifier, limited(0, 3));
        assert_eq!(w.deliver_due().await.expect("run"), 1);
        let b = store.get_mail(bulk).await.expect("get").expect("row");
        assert_eq!(b.attempts, 1, "tried once the cap allows");
    }

    #[tokio::test]
    async fn sent_mail_older_than_a_day_does_not_count() {
        let store = store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        sent_bulk(&store, 2, chrono::Duration::hours(25)).await;
        let bulk = notifier
            .enqueue_bulk("password-expiring", "ada@example.org", expiring_ctx())
            .await
            .expect("bulk");
        let w = limited_worker(store.clone(), &notifier, limited(0, 2));
        assert_eq!(w.deliver_due().await.expect("run"), 1);
        assert_eq!(
            store
                .get_mail(bulk)
                .await
                .expect("get")
                .expect("row")
                .attempts,
            1
        );
    }

    #[tokio::test]
    async fn the_per_minute_limit_counts_the_last_minute() {
        let store = store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        sent_bulk(&store, 2, chrono::Duration::seconds(30)).await;
        let bulk = notifier
            .enqueue_bulk("password-expiring", "ada@example.org", expiring_ctx())
            .await
            .expect("bulk");
        let w = limited_worker(store.clone(), &notifier, limited(2, 0));
        assert_eq!(w.deliver_due().await.expect("run"), 0, "two sent 30 s ago");
        assert_eq!(
            store
                .get_mail(bulk)
                .await
                .expect("get")
                .expect("row")
                .attempts,
            0
        );

        let store = self::store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        sent_bulk(&store, 2, chrono::Duration::seconds(61)).await;
        notifier
            .enqueue_bulk("password-expiring", "ada@example.org", expiring_ctx())
            .await
            .expect("bulk");
        let w = limited_worker(store.clone(), &notifier, limited(2, 0));
        assert_eq!(
            w.deliver_due().await.expect("run"),
            1,
            "the minute has passed"
        );
    }

    #[tokio::test]
    async fn bulk_attempts_are_spaced_and_transactional_mail_is_not() {
        let store = store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        for n in 0..3 {
            notifier
                .enqueue_bulk(
                    "password-expiring",
                    &format!("u{n}@example.org"),
                    expiring_ctx(),
                )
                .await
                .expect("bulk");
        }
        // One a minute: the first goes, the others wait for the spacing.
        let w = limited_worker(store.clone(), &notifier, limited(1, 0));
        assert_eq!(w.deliver_due().await.expect("run"), 1);
        let drained = w.drain(&CancellationToken::new()).await.expect("drain");
        assert_eq!(drained.tried, 0);
        let resume = drained.bulk_resumes_in.expect("a resume hint");
        assert!(
            resume > Duration::from_secs(50) && resume <= Duration::from_secs(60),
            "{resume:?}"
        );

        for n in 0..2 {
            notifier
                .enqueue(
                    "temporary-password",
                    &format!("t{n}@example.org"),
                    ctx(),
                    None,
                )
                .await
                .expect("transactional");
        }
        assert_eq!(w.deliver_due().await.expect("run"), 2, "not spaced");

        // 600 a minute: 100 ms apart.
        let w = limited_worker(store.clone(), &notifier, limited(600, 0));
        let started = Instant::now();
        let mut tried = 0;
        while tried < 2 {
            tried += w.deliver_due().await.expect("run");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn stale_mail_is_dropped_before_it_is_sent() {
        let store = store().await;
        let notifier = Notifier::new(store.clone(), sealer());
        let mut message = notifier
            .prepare(
                "password-expiring",
                "ada@example.org",
                expiring_ctx(),
                MailClass::Bulk,
            )
            .expect("prepare");
        message.stale_after = Some(Utc::now() - chrono::Duration::seconds(1));
        assert!(
            notifier
                .record_notice("k", None, &message)
                .await
                .expect("record")
        );
        let w = worker(store.clone(), sealer(), &notifier, 20);
        assert_eq!(w.deliver_due().await.expect("run"), 0, "not tried");
        let dead = store.list_dead_mail(None, 10).await.expect("dead");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].attempts, 0);
        assert!(
            dead[0]
                .last_error
                .as_deref()
                .is_some_and(|e| e.contains("out of date")),
            "{:?}",
            dead[0].last_error
        );
        assert!(
            store.notice_recorded("k").await.expect("recorded"),
            "still never twice"
        );
    }

    #[test]
    fn default_settings_match_the_documented_defaults() {
        let d = OutboxSettings::default();
        assert_eq!(d.poll_interval, Duration::from_secs(1));
        assert_eq!(
            (d.max_attempts, d.max_bulk_per_minute, d.max_bulk_per_day),
            (0, 120, 5000)
        );
        assert_eq!(d.retry_window, Duration::from_secs(72 * 3600));
        assert!(d.initial_backoff <= d.max_backoff);
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
