//! One expiry sweep: stream the directory, work out each user's expiry from the user's
//! effective policy, and queue each due notice once.
//!
//! "Once" is the store's doing: each notice is recorded in the notice ledger under
//! (user, password-changed time, threshold) in the same transaction that queues its
//! message, so a rerun, a crash and restart, or two instances cannot queue it twice. A
//! lease keeps a second instance from sweeping at the same time; a sweep that finds a
//! run left `running` marks it interrupted (its instance died) and simply does the work
//! again, skipping what the ledger already holds.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::account::expiry::{ExpiryService, FactsResolver, action_name};
use crate::account::{AccountError, Actor};
use crate::directory::{Directory, PasswordStateEntry};
use crate::notify::Notifier;
use crate::policy::{Evaluation, ExpiryAction, ExpiryPolicy, Notice, evaluate, ledger_key};
use crate::store::{MailClass, Store, StoreError, SweepReportLine, SweepRun};

/// The sweep's name as an actor in the audit log.
pub const SYSTEM_ACTOR: &str = "expiry-sweep";
/// The lease's name in the store.
pub const LEASE: &str = "expiry-sweep";
/// How often (in entries, or in time) progress is saved and the lease renewed. Each save
/// is a store write that waits for the notices' commit in flight: at every 500 entries
/// they were 200 waits per 100,000 accounts.
const PROGRESS_EVERY: u64 = 5000;
const PROGRESS_INTERVAL: Duration = Duration::from_secs(2);
/// Notices recorded per store transaction (one synced commit each: on a first sweep that
/// queues tens of thousands, the commits were most of the cost at 200).
const BATCH: usize = 1000;
/// Report lines held before they are written to the store, in one transaction.
const LINES: usize = 5000;
/// How long a sweep's report is kept (the digest is built from it when sent).
const REPORT_RETENTION_DAYS: i64 = 60;

/// A due notice waiting for the next batch. Its message is prepared only once the
/// ledger says it was not sent yet: on a steady-state sweep almost none are.
struct Pending {
    key: String,
    row: usize,
    expired: bool,
    template: &'static str,
    mail: String,
    context: Value,
    /// A notice held back by the daily cap past the expiry would be wrong: dropped then.
    stale_after: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct SweepSettings {
    pub time_zone: Tz,
    pub admin_recipients: Vec<String>,
    pub change_password_url: String,
    pub page_size: u32,
    /// This process, as lease holder.
    pub instance: String,
    /// How long the lease lasts without renewal (an instance that dies frees it then).
    pub lease: Duration,
    /// Passwords expired longer ago than this are left alone (no notice, no action).
    pub expired_within: chrono::Duration,
    /// The outbox's `max_bulk_per_day` (0 = none), to say how many notices wait.
    pub max_bulk_per_day: u32,
}

#[derive(Clone)]
pub struct SweepDeps {
    pub expiry: Arc<ExpiryService>,
    pub directory: Directory,
    pub store: Arc<dyn Store>,
    pub notifier: Notifier,
    pub settings: SweepSettings,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    Api,
    Cli,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Api => "api",
            Trigger::Cli => "cli",
        }
    }
}

#[derive(Debug, Clone)]
pub struct SweepRequest {
    pub id: String,
    /// The sweep's notion of now.
    pub at: DateTime<Utc>,
    pub dry_run: bool,
    pub trigger: Trigger,
    /// Its run is in the history already ([`record_run`]), `running`.
    pub recorded: bool,
}

impl SweepRequest {
    pub fn new(at: DateTime<Utc>, dry_run: bool, trigger: Trigger) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            at,
            dry_run,
            trigger,
            recorded: false,
        }
    }

    /// Its history entry as it starts.
    fn run(&self) -> SweepRun {
        SweepRun {
            id: self.id.clone(),
            started_at: Utc::now(),
            finished_at: None,
            status: "running".into(),
            dry_run: self.dry_run,
            trigger: self.trigger.as_str().into(),
            at: self.at,
            scanned: 0,
            notified: 0,
            already_notified: 0,
            no_mail: 0,
            expired: 0,
            failed: 0,
            error: None,
            summary: None,
        }
    }
}

/// Records `request`'s run as `running` before it starts (for the lease holder): should
/// the process die before the sweep gets going, the restarted instance finds the run
/// and resumes it, as it would a run cut short.
pub async fn record_run(deps: &SweepDeps, request: &mut SweepRequest) -> Result<(), StoreError> {
    deps.store.insert_sweep_run(&request.run()).await?;
    request.recorded = true;
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("another sweep is running (lease `{LEASE}` is held); try again when it has finished")]
    AlreadyRunning,
    #[error("{0}")]
    Account(#[from] AccountError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("queueing a notice: {0}")]
    Notify(String),
    #[error("the sweep's store writer stopped: {0}")]
    Writer(String),
}

/// What a sweep did (or, dry, would do). The accounts themselves are in the sweep's
/// report in the store ([`Store::sweep_report_page`] with the run's id), written as the
/// sweep goes, so that nothing here grows with the directory.
#[derive(Debug, Clone)]
pub struct SweepOutcome {
    pub run: SweepRun,
    /// Accounts with an "expires in N days" notice due.
    pub expiring: u64,
    /// Accounts that could not be notified (no mail address, cannot mail, errors).
    pub not_notified: u64,
    pub no_change_time: u64,
    /// Expired passwords beyond `sweep.expired_within_days`: left alone.
    pub expired_beyond_horizon: u64,
    /// What the outbox's daily cap leaves for later, when there is one.
    pub daily_cap: Option<DailyCap>,
    /// Report lines not written yet, and the next line's number.
    lines: Vec<SweepReportLine>,
    next_seq: u64,
}

impl SweepOutcome {
    /// Adds a report line (numbered here) and returns its place in the buffer.
    fn push_line(&mut self, mut line: SweepReportLine) -> usize {
        line.seq = self.next_seq;
        self.next_seq += 1;
        self.lines.push(line);
        self.lines.len() - 1
    }

    /// A line for an account that could not be handled or notified.
    fn not_notified_line(&mut self, user_name: &str, reason: String, at: DateTime<Utc>) {
        self.not_notified += 1;
        self.push_line(SweepReportLine {
            seq: 0,
            user_name: user_name.to_owned(),
            display_name: None,
            mail: None,
            notice: String::new(),
            expires_at: at,
            expires_at_local: String::new(),
            days_left: 0,
            status: "failed".into(),
            reason: Some(reason),
        });
    }
}

/// The outbox's bulk mail against its daily cap, right after the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DailyCap {
    /// `outbox.max_bulk_per_day`.
    pub limit: u32,
    /// Bulk messages sent in the last 24 hours.
    pub sent_last_day: u64,
    /// Bulk messages waiting (this sweep's included; a dry run counts what it would add).
    pub waiting: u64,
    /// How many of those the cap keeps for later days.
    pub beyond_today: u64,
}

fn local(at: DateTime<Utc>, tz: Tz) -> String {
    at.with_timezone(&tz)
        .format("%A %-d %B %Y, %H:%M %Z")
        .to_string()
}

/// Runs one sweep to the end. `progress` is called with the run every few hundred
/// entries and at the end.
pub async fn run_once(
    deps: &SweepDeps,
    request: SweepRequest,
    progress: &(dyn Fn(&SweepRun) + Send + Sync),
) -> Result<SweepOutcome, SweepError> {
    let s = &deps.settings;
    let holds_lease = !request.dry_run;
    if holds_lease {
        let now = Utc::now();
        let until =
            now + chrono::Duration::from_std(s.lease).unwrap_or(chrono::Duration::minutes(10));
        if !deps
            .store
            .acquire_lease(LEASE, &s.instance, now, until)
            .await?
        {
            return Err(SweepError::AlreadyRunning);
        }
        // A run still marked running belongs to an instance that stopped mid-sweep.
        let interrupted = deps
            .store
            .interrupt_sweep_runs(
                Some(&request.id),
                now,
                "the instance running it stopped before it finished",
            )
            .await?;
        if interrupted > 0 {
            tracing::warn!(interrupted, "resuming after an interrupted sweep");
        }
    }
    let mut run = request.run();
    if !request.recorded {
        deps.store.insert_sweep_run(&run).await?;
    }
    let result = sweep(deps, &request, &mut run, progress).await;
    run.finished_at = Some(Utc::now());
    let outcome = match result {
        Ok(mut outcome) => {
            run.status = "completed".into();
            run.summary = Some(json!({
                "noChangeTime": outcome.no_change_time,
                "expiring": outcome.expiring,
                "notNotified": outcome.not_notified,
                "expiredBeyondHorizon": outcome.expired_beyond_horizon,
                "dailyCap": outcome.daily_cap,
            }));
            outcome.run = run.clone();
            Ok(outcome)
        }
        Err(e) => {
            run.status = "failed".into();
            run.error = Some(e.to_string());
            Err(e)
        }
    };
    if let Err(e) = deps.store.update_sweep_run(&run).await {
        tracing::error!(error = %e, sweep.id = %run.id, "could not save the sweep's outcome");
    }
    if holds_lease && let Err(e) = deps.store.release_lease(LEASE, &s.instance).await {
        tracing::warn!(error = %e, "could not release the sweep lease; it expires by itself");
    }
    progress(&run);
    metrics::gauge!("lockbridge_sweep_last_run_timestamp_seconds")
        .set(run.started_at.timestamp() as f64);
    metrics::gauge!("lockbridge_sweep_last_scanned").set(run.scanned as f64);
    metrics::gauge!("lockbridge_sweep_last_notified").set(run.notified as f64);
    metrics::gauge!("lockbridge_sweep_last_failed").set(run.failed as f64);
    if let Some(finished) = run.finished_at {
        let secs = (finished - run.started_at).num_milliseconds() as f64 / 1000.0;
        metrics::gauge!("lockbridge_sweep_last_duration_seconds").set(secs);
    }
    tracing::info!(
        sweep.id = %run.id, status = %run.status, dry_run = run.dry_run, scanned = run.scanned,
        notified = run.notified, already = run.already_notified, no_mail = run.no_mail,
        expired = run.expired, failed = run.failed, "sweep finished"
    );
    outcome
}

async fn sweep(
    deps: &SweepDeps,
    request: &SweepRequest,
    run: &mut SweepRun,
    progress: &(dyn Fn(&SweepRun) + Send + Sync),
) -> Result<SweepOutcome, SweepError> {
    let s = &deps.settings;
    let policy = deps.expiry.policy().await?;
    let mut resolver = FactsResolver::new(&deps.expiry);
    let mut outcome = SweepOutcome {
        run: run.clone(),
        expiring: 0,
        not_notified: 0,
        no_change_time: 0,
        expired_beyond_horizon: 0,
        daily_cap: None,
        lines: Vec::new(),
        next_seq: 0,
    };
    if !request.dry_run {
        let before = request.at - chrono::Duration::days(REPORT_RETENTION_DAYS);
        let pruned = deps.store.prune_sweep_reports(before).await?;
        if pruned > 0 {
            tracing::info!(lines = pruned, "removed the reports of old sweeps");
        }
    }
    let stream = deps.directory.stream_password_states(s.page_size);
    futures::pin_mut!(stream);
    let mut renewed = std::time::Instant::now();
    let mut batch: Vec<Pending> = Vec::with_capacity(BATCH);
    let mut behind = Behind::default();
    while let Some(item) = stream.next().await {
        let entry = item.map_err(|e| deps.expiry.directory_error(e))?;
        run.scanned += 1;
        if let Err(e) = handle_entry(
            deps,
            request,
            &policy,
            &mut resolver,
            &entry,
            run,
            &mut outcome,
            &mut batch,
        )
        .await
        {
            run.failed += 1;
            tracing::warn!(error = %e, user.dn = %entry.dn, "sweep could not handle an account");
            outcome.not_notified_line(&entry.user_name, format!("error: {e}"), request.at);
        }
        // Renew well before the lease lapses, however slow the directory is.
        if run.scanned.is_multiple_of(PROGRESS_EVERY)
            || renewed.elapsed() > PROGRESS_INTERVAL.min(s.lease / 4)
        {
            renewed = std::time::Instant::now();
            if !request.dry_run {
                let now = Utc::now();
                let until = now
                    + chrono::Duration::from_std(s.lease).unwrap_or(chrono::Duration::minutes(10));
                if !deps
                    .store
                    .acquire_lease(LEASE, &s.instance, now, until)
                    .await?
                {
                    return Err(SweepError::AlreadyRunning);
                }
            }
            deps.store.update_sweep_run(run).await?;
            progress(run);
        }
        if batch.len() >= BATCH || outcome.lines.len() >= LINES {
            behind
                .hand_over(deps, request, run, &mut outcome, &mut batch, false)
                .await?;
        }
    }
    behind
        .hand_over(deps, request, run, &mut outcome, &mut batch, true)
        .await?;
    if !request.dry_run {
        queue_digest(deps, request, run, &outcome).await?;
    }
    outcome.daily_cap = daily_cap(deps, request, run).await?;
    Ok(outcome)
}

/// How the outbox's daily cap meets the bulk mail waiting now (`None` without a cap).
async fn daily_cap(
    deps: &SweepDeps,
    request: &SweepRequest,
    run: &SweepRun,
) -> Result<Option<DailyCap>, SweepError> {
    let limit = deps.settings.max_bulk_per_day;
    if limit == 0 {
        return Ok(None);
    }
    let sent_last_day = deps
        .store
        .count_sent_since(MailClass::Bulk, Utc::now() - chrono::Duration::days(1))
        .await?;
    let mut waiting = deps.store.outbox_counts().await?.pending_bulk;
    if request.dry_run {
        waiting += run.notified;
    }
    let room_today = u64::from(limit).saturating_sub(sent_last_day);
    Ok(Some(DailyCap {
        limit,
        sent_last_day,
        waiting,
        beyond_today: waiting.saturating_sub(room_today),
    }))
}

/// What settling one batch changed, for the run's counters, and the report lines it
/// has not written yet (they go with the next batch).
#[derive(Default)]
struct Settled {
    notified: u64,
    already_notified: u64,
    failed: u64,
    not_notified: u64,
    unwritten: Vec<SweepReportLine>,
}

/// The store's side of a sweep, one batch behind the directory stream: while a batch of
/// notices is looked up in the ledger and recorded (a synced commit), the stream reads
/// the next one. Batches are settled strictly in order, one at a time, so the report's
/// lines keep their order and a crash leaves at most the batch in flight unrecorded
/// (its transaction is all or nothing; the rerun queues it).
#[derive(Default)]
struct Behind {
    in_flight: Option<tokio::task::JoinHandle<Result<Settled, SweepError>>>,
    unwritten: Vec<SweepReportLine>,
}

impl Drop for Behind {
    fn drop(&mut self) {
        // A sweep that stops on an error does not leave a batch being written behind it:
        // the aborted transaction rolls back, and the rerun settles that batch.
        if let Some(task) = self.in_flight.take() {
            task.abort();
        }
    }
}

impl Behind {
    /// Waits for the batch in flight and adds what it did to the counters.
    async fn catch_up(
        &mut self,
        run: &mut SweepRun,
        outcome: &mut SweepOutcome,
    ) -> Result<(), SweepError> {
        let Some(task) = self.in_flight.take() else {
            return Ok(());
        };
        let settled = task
            .await
            .map_err(|e| SweepError::Writer(e.to_string()))??;
        run.notified += settled.notified;
        run.already_notified += settled.already_notified;
        run.failed += settled.failed;
        outcome.not_notified += settled.not_notified;
        self.unwritten = settled.unwritten;
        Ok(())
    }

    /// Hands the waiting notices and the report lines pushed since the last hand-over to
    /// the store (after the previous batch is done); at the `last` one, waits for it.
    async fn hand_over(
        &mut self,
        deps: &SweepDeps,
        request: &SweepRequest,
        run: &mut SweepRun,
        outcome: &mut SweepOutcome,
        batch: &mut Vec<Pending>,
        last: bool,
    ) -> Result<(), SweepError> {
        self.catch_up(run, outcome).await?;
        let mut lines = std::mem::take(&mut self.unwritten);
        // Each notice points at its line in `outcome.lines`; they now follow the
        // unwritten lines of earlier batches.
        let offset = lines.len();
        lines.append(&mut outcome.lines);
        let mut notices = std::mem::replace(batch, Vec::with_capacity(BATCH));
        for pending in &mut notices {
            pending.row += offset;
        }
        self.in_flight = Some(tokio::spawn(settle(
            deps.clone(),
            request.clone(),
            notices,
            lines,
            last,
        )));
        if last {
            self.catch_up(run, outcome).await?;
        }
        Ok(())
    }
}

/// Settles a batch of notices (one ledger look-up, then, unless dry, the messages of
/// those not sent yet, recorded in one transaction), giving each line its final status,
/// and writes the report lines when there are many, or at the `last` batch.
async fn settle(
    deps: SweepDeps,
    request: SweepRequest,
    batch: Vec<Pending>,
    mut lines: Vec<SweepReportLine>,
    last: bool,
) -> Result<Settled, SweepError> {
    let mut settled = Settled::default();
    record(&deps, &request, batch, &mut lines, &mut settled).await?;
    if last || lines.len() >= LINES {
        deps.store.append_sweep_report(&request.id, &lines).await?;
        lines.clear();
    }
    settled.unwritten = lines;
    Ok(settled)
}

fn set_status(lines: &mut [SweepReportLine], row: usize, status: &str) {
    if let Some(line) = lines.get_mut(row) {
        line.status = status.to_owned();
    }
}

/// Gives every notice of the batch its final status (recorded, already sent, would queue).
async fn record(
    deps: &SweepDeps,
    request: &SweepRequest,
    batch: Vec<Pending>,
    lines: &mut [SweepReportLine],
    settled: &mut Settled,
) -> Result<(), SweepError> {
    if batch.is_empty() {
        return Ok(());
    }
    let keys: Vec<String> = batch.iter().map(|p| p.key.clone()).collect();
    let recorded = deps.store.notices_recorded(&keys).await?;
    let mut fresh = Vec::with_capacity(batch.len());
    for (pending, recorded) in batch.into_iter().zip(recorded) {
        if recorded {
            settled.already_notified += 1;
            set_status(lines, pending.row, "already-sent");
        } else if request.dry_run {
            settled.notified += 1;
            set_status(lines, pending.row, "would-queue");
        } else {
            fresh.push(pending);
        }
    }
    let mut notices = Vec::with_capacity(fresh.len());
    let mut queued_rows = Vec::with_capacity(fresh.len());
    for pending in fresh {
        match deps.notifier.prepare(
            pending.template,
            &pending.mail,
            pending.context,
            MailClass::Bulk,
        ) {
            Ok(mut message) => {
                message.stale_after = pending.stale_after;
                notices.push((pending.key, message));
                queued_rows.push((pending.row, pending.expired));
            }
            Err(e) => {
                settled.failed += 1;
                settled.not_notified += 1;
                if let Some(line) = lines.get_mut(pending.row) {
                    line.status = "failed".into();
                    line.reason = Some(format!("cannot mail: {e}"));
                }
            }
        }
    }
    if notices.is_empty() {
        return Ok(());
    }
    let queued = deps
        .notifier
        .record_notices(Some(&request.id), &notices)
        .await
        .map_err(|e| SweepError::Notify(e.to_string()))?;
    for ((row, expired), queued) in queued_rows.into_iter().zip(queued) {
        if queued {
            settled.notified += 1;
            set_status(lines, row, "queued");
            let kind = if expired { "expired" } else { "expiring" };
            metrics::counter!("lockbridge_sweep_notices_total", "notice" => kind).increment(1);
        } else {
            // Another instance recorded it between the look-up and this transaction.
            settled.already_notified += 1;
            set_status(lines, row, "already-sent");
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn handle_entry(
    deps: &SweepDeps,
    request: &SweepRequest,
    policy: &ExpiryPolicy,
    resolver: &mut FactsResolver<'_>,
    entry: &PasswordStateEntry,
    run: &mut SweepRun,
    outcome: &mut SweepOutcome,
    batch: &mut Vec<Pending>,
) -> Result<(), SweepError> {
    let s = &deps.settings;
    let facts = resolver.facts(entry).await?;
    let evaluation = evaluate(request.at, s.time_zone, policy, &facts);
    let (notice, expires_at, days_left) = match evaluation {
        Evaluation::NoChangeTime => {
            outcome.no_change_time += 1;
            return Ok(());
        }
        Evaluation::NeverExpires | Evaluation::NotDue { .. } => return Ok(()),
        Evaluation::Due {
            expires_at,
            days_left,
            notice,
        } => (notice, expires_at, days_left),
        Evaluation::Expired { expired_at, .. } => {
            if request.at - expired_at > s.expired_within {
                // Long expired (a dormant account): not this sweep's business.
                outcome.expired_beyond_horizon += 1;
                return Ok(());
            }
            run.expired += 1;
            (Notice::Expired, expired_at, 0)
        }
    };
    let Some(changed_at) = facts.changed_at else {
        return Ok(());
    };
    let mut row = SweepReportLine {
        seq: 0,
        user_name: entry.user_name.clone(),
        display_name: entry.display_name.clone(),
        mail: entry.mail.clone(),
        notice: notice.key(),
        expires_at,
        expires_at_local: local(expires_at, s.time_zone),
        days_left,
        status: "queued".into(),
        reason: None,
    };
    if notice != Notice::Expired {
        outcome.expiring += 1;
    }

    if notice == Notice::Expired && !request.dry_run {
        apply_expiry_action(deps, policy.on_expiry, entry).await?;
    }

    let Some(mail) = entry.mail.as_deref().filter(|m| !m.trim().is_empty()) else {
        run.no_mail += 1;
        outcome.not_notified += 1;
        row.status = "no-mail".into();
        row.reason = Some("no mail address".into());
        outcome.push_line(row);
        return Ok(());
    };
    let user_id = entry.entry_uuid.as_deref().unwrap_or(&entry.dn);
    let key = ledger_key(user_id, changed_at, &notice);
    let display_name = entry
        .display_name
        .clone()
        .unwrap_or_else(|| entry.user_name.clone());
    let (template, context) = match notice {
        Notice::Expired => (
            "password-expired",
            json!({
                "display_name": display_name,
                "user_name": entry.user_name,
                "expired_at_local": row.expires_at_local,
                "action": action_name(policy.on_expiry),
                "change_password_url": s.change_password_url,
            }),
        ),
        Notice::Threshold(_) => (
            "password-expiring",
            json!({
                "display_name": display_name,
                "user_name": entry.user_name,
                "expires_at_local": row.expires_at_local,
                "days_left": days_left,
                "change_password_url": s.change_password_url,
            }),
        ),
    };
    batch.push(Pending {
        key,
        row: outcome.lines.len(),
        expired: notice == Notice::Expired,
        template,
        mail: mail.to_owned(),
        context,
        stale_after: (notice != Notice::Expired).then_some(expires_at),
    });
    outcome.push_line(row);
    Ok(())
}

/// Applies the configured action to an expired password, unless the account is already
/// in that state, through the account gate (as the system, audited). Repeated on every
/// sweep while the password stays expired: an admin who unblocks the account without
/// resetting the password sees it blocked again.
async fn apply_expiry_action(
    deps: &SweepDeps,
    action: ExpiryAction,
    entry: &PasswordStateEntry,
) -> Result<(), SweepError> {
    deps.expiry
        .account()
        .apply_expiry_action(&Actor::system(SYSTEM_ACTOR), action, entry)
        .await
        .map_err(SweepError::Account)
}

async fn queue_digest(
    deps: &SweepDeps,
    request: &SweepRequest,
    run: &SweepRun,
    outcome: &SweepOutcome,
) -> Result<(), SweepError> {
    let s = &deps.settings;
    if s.admin_recipients.is_empty() {
        return Ok(());
    }
    // The accounts are not listed here: the outbox reads them from the sweep's report
    // when it sends the digest, so a sweep holds none of them in memory.
    let context = json!({
        "sweep_id": request.id,
        "sweep_at_local": local(request.at, s.time_zone),
        "attachment_name": format!("password-expiry-{}.csv", request.at.with_timezone(&s.time_zone).format("%Y-%m-%d")),
        "counts": {
            "scanned": run.scanned,
            "notified": run.notified,
            "expiring": outcome.expiring,
            "expired": run.expired,
            "not_notified": outcome.not_notified,
        },
    });
    for admin in &s.admin_recipients {
        match deps
            .notifier
            .prepare("expiry-digest", admin, context.clone(), MailClass::Bulk)
        {
            Ok(message) => {
                deps.notifier
                    .record_notice(
                        // Keyed by the sweep's time, not its run: a run resumed after
                        // a crash, or a second instance sweeping the same scheduled
                        // slot after the first finished, must not mail it again.
                        &format!("digest|{}|{admin}", request.at.to_rfc3339()),
                        Some(&request.id),
                        &message,
                    )
                    .await
                    .map_err(|e| SweepError::Notify(e.to_string()))?;
            }
            Err(e) => tracing::error!(error = %e, "could not queue the sweep digest"),
        }
    }
    Ok(())
}
