//! One bulk job run: open items in batches → per item the account gate → outcomes.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::account::{
    AccountError, AccountService, Actor, Authority, PasswordChoice, ResetRequest,
};
use crate::audit::TimedEvent;
use crate::auth::Role;
use crate::notify::Sealer;
use crate::store::{JobItem, JobItemOutcome, JobRecord, Store, StoreError};
use crate::types::Secret;

/// Items taken from the store per batch (two synced commits each: "writing", outcomes;
/// one directory search for the batch's users).
const BATCH: u32 = 256;
/// Accounts worked on side by side: more than the directory pool's connections, so that
/// while some wait for the audit log's commit the others keep the directory busy.
const IN_FLIGHT: usize = 16;
/// How long a job's lease lasts without renewal: another instance resumes a job whose
/// runner died once this has passed (and its next minute's check comes). Renewed every
/// quarter of it while the job runs.
pub const JOB_LEASE: Duration = Duration::from_secs(30);
/// Runs in which one account's password write went unanswered (sent, then the
/// directory timed out or the link dropped) before the account is reported failed
/// instead of tried again: a job must end even when one entry always hangs the directory.
pub const MAX_UNANSWERED_WRITES: u32 = 5;

/// How one item of a batch ended.
#[derive(Debug)]
enum ItemEnd {
    /// Done, refused or failed: stored, not tried again.
    Settled(JobItemOutcome),
    /// Left open for the next run (the job stops); `unanswered`: because this account's
    /// own write went unanswered, which counts towards [`MAX_UNANSWERED_WRITES`].
    Open { seq: u64, unanswered: bool },
}

/// What a job does to each account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum JobKind {
    /// Reset the password: generated per user, or the one chosen (sealed in the job).
    #[serde(rename = "password-reset", rename_all = "camelCase")]
    PasswordReset {
        generated: bool,
        require_change: bool,
        /// Mail each user's new password to their alternate address.
        deliver_to_alternate: bool,
        /// Keep the new passwords (sealed) for one download by the caller.
        report: bool,
    },
    /// Require (or stop requiring) a password change at next sign-in.
    #[serde(rename = "require-change")]
    RequireChange { required: bool },
}

impl JobKind {
    pub fn name(self) -> &'static str {
        match self {
            JobKind::PasswordReset { .. } => "password-reset",
            JobKind::RequireChange { .. } => "require-change",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    #[error("no job `{0}`")]
    NoSuchJob(String),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Account(#[from] AccountError),
    #[error("the job's parameters cannot be read: {0}")]
    Corrupt(String),
    #[error(
        "this instance lost the job's lease (the store did not answer, or another instance took the job over); the job carries on where it stopped"
    )]
    LeaseLost,
}

#[derive(Clone)]
pub struct BulkDeps {
    pub account: Arc<AccountService>,
    pub store: Arc<dyn Store>,
    pub sealer: Arc<Sealer>,
    /// Jobs this process is running now (a second runner of the same job waits out).
    pub running: Arc<Mutex<HashSet<String>>>,
    /// This process's name in the store's leases: one instance at a time runs a job.
    pub instance: String,
}

/// The store lease that makes one instance at a time run job `id`.
fn lease_name(id: &str) -> String {
    format!("bulk-job:{id}")
}

/// Holds a job's lease: renews it in the background, and gives it up when dropped.
/// `lost` turns true when a renewal failed (the store did not answer in time, or another
/// instance took the job over): the runner stops before its next batch.
struct JobLease {
    lost: Arc<AtomicBool>,
    renewer: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
    name: String,
    holder: String,
}

impl JobLease {
    /// The lease, or `None` when another instance holds it.
    async fn take(
        store: &Arc<dyn Store>,
        instance: &str,
        id: &str,
    ) -> Result<Option<JobLease>, StoreError> {
        let name = lease_name(id);
        let now = Utc::now();
        if !store
            .acquire_lease(&name, instance, now, now + lease_span())
            .await?
        {
            return Ok(None);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renewer = tokio::spawn({
            let (store, name, holder, lost) = (
                store.clone(),
                name.clone(),
                instance.to_owned(),
                lost.clone(),
            );
            async move {
                let mut tick = tokio::time::interval(JOB_LEASE / 4);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    let now = Utc::now();
                    match store
                        .acquire_lease(&name, &holder, now, now + lease_span())
                        .await
                    {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::warn!(lease = %name, "another instance took this bulk job over; stopping here");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                        Err(e) => {
                            // Not renewed: stop before the lease can lapse under us.
                            tracing::warn!(lease = %name, error = %e, "cannot renew the bulk job's lease; pausing the job");
                            lost.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                }
            }
        });
        Ok(Some(JobLease {
            lost,
            renewer,
            store: store.clone(),
            name,
            holder: instance.to_owned(),
        }))
    }

    /// Errs when the lease was lost: the job must not go on here.
    fn check(&self) -> Result<(), BulkError> {
        if self.lost.load(Ordering::SeqCst) {
            Err(BulkError::LeaseLost)
        } else {
            Ok(())
        }
    }
}

impl Drop for JobLease {
    fn drop(&mut self) {
        self.renewer.abort();
        let (store, name, holder) = (self.store.clone(), self.name.clone(), self.holder.clone());
        // Give the job up at once rather than let the lease lapse; best effort (a
        // lapsed lease frees it all the same).
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                if let Err(e) = store.release_lease(&name, &holder).await {
                    tracing::debug!(lease = %name, error = %e, "bulk job lease not released; it lapses");
                }
            });
        }
    }
}

fn lease_span() -> chrono::Duration {
    chrono::Duration::from_std(JOB_LEASE).unwrap_or(chrono::Duration::minutes(2))
}

/// The job's caller, as it was when the job was created.
fn actor_of(job: &JobRecord) -> Actor {
    Actor {
        name: job.actor.clone(),
        dn: job.actor_dn.clone(),
        authority: match job.roles.as_slice() {
            [only] if only == "system" => Authority::System,
            roles => Authority::Roles(
                roles
                    .iter()
                    .filter_map(|r| r.parse::<Role>().ok())
                    .collect(),
            ),
        },
        request_id: Some(format!("job-{}", job.id)),
    }
}

struct Running<'a> {
    deps: &'a BulkDeps,
    id: String,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut running = self.deps.running.lock().unwrap_or_else(|e| e.into_inner());
        running.remove(&self.id);
    }
}

/// Runs the job to its end (or until the directory or the store fails: the job stays
/// `running` and a later [`resume_running`] carries on). `None` when this process, or
/// another instance on the same store, is running it already.
pub async fn run_job(deps: &BulkDeps, id: &str) -> Result<Option<JobRecord>, BulkError> {
    {
        let mut running = deps.running.lock().unwrap_or_else(|e| e.into_inner());
        if !running.insert(id.to_owned()) {
            return Ok(None);
        }
    }
    let _guard = Running {
        deps,
        id: id.to_owned(),
    };
    // Two instances working on one job would each give the same user a password.
    let Some(lease) = JobLease::take(&deps.store, &deps.instance, id).await? else {
        return Ok(None);
    };
    let job = deps
        .store
        .get_job(id)
        .await?
        .ok_or_else(|| BulkError::NoSuchJob(id.to_owned()))?;
    if job.status != "running" {
        return Ok(Some(job));
    }
    let kind: JobKind = serde_json::from_value(job.params.clone())
        .map_err(|e| BulkError::Corrupt(e.to_string()))?;
    let chosen = job
        .sealed_secret
        .as_deref()
        .map(|s| deps.sealer.open(s))
        .transpose()
        .map_err(|e| BulkError::Corrupt(e.to_string()))?;
    let actor = actor_of(&job);
    match kind {
        JobKind::PasswordReset {
            generated,
            require_change,
            deliver_to_alternate,
            report,
        } => {
            let reset = ResetBatch {
                deps,
                job_id: id,
                actor: &actor,
                chosen: if generated { None } else { chosen.as_ref() },
                require_change,
                deliver_to_alternate,
                report,
            };
            // While one batch is written to the directory, the next is made ready
            // (passwords sealed and stored, users read) and the one before is settled
            // (its audit records and outcomes stored), so the directory never waits on
            // lockbridge's own disk writes.
            let mut ready = reset.prepare(id, None).await?;
            let mut unsettled = None;
            while let Some(last) = ready.last().map(|w| w.item.seq) {
                if let Err(e) = lease.check() {
                    // What was prepared stays `writing` (the resumed run checks it by a
                    // bind); what was done is recorded first.
                    if let Some(done) = unsettled {
                        settle_resets(deps, id, done).await?;
                    }
                    return Err(e);
                }
                let previous = unsettled.take();
                let (done, next, settled) = tokio::join!(
                    reset.process(std::mem::take(&mut ready)),
                    reset.prepare(id, Some(last)),
                    async {
                        match previous {
                            Some(done) => settle_resets(deps, id, done).await,
                            None => Ok(()),
                        }
                    }
                );
                // A stop leaves this batch's items `writing`: a resumed run finds by a
                // bind which were done, and records them.
                settled?;
                unsettled = Some(done);
                ready = next?;
            }
            if let Some(done) = unsettled {
                settle_resets(deps, id, done).await?;
            }
        }
        JobKind::RequireChange { required } => {
            let mut after = None;
            loop {
                lease.check()?;
                let items = deps.store.open_job_items(id, after, BATCH).await?;
                let Some(last) = items.last().map(|i| i.seq) else {
                    break;
                };
                after = Some(last);
                settle_batch(
                    deps,
                    id,
                    require_change(deps, &actor, items, required).await,
                )
                .await?;
            }
        }
    }
    deps.store
        .finish_job(id, "completed", None, Utc::now())
        .await?;
    tracing::info!(job.id = id, kind = kind.name(), "bulk job finished");
    Ok(deps.store.get_job(id).await?)
}

/// Saves a new job over `names` (in that order) and returns its id; the caller runs it.
pub async fn create_job(
    deps: &BulkDeps,
    actor: &Actor,
    kind: JobKind,
    sealed_secret: Option<Vec<u8>>,
    names: &[String],
) -> Result<String, BulkError> {
    let roles = match &actor.authority {
        Authority::System | Authority::Provisioning => vec!["system".to_owned()],
        Authority::Roles(roles) => roles.iter().map(|r| r.as_str().to_owned()).collect(),
    };
    let job = crate::store::NewJob {
        id: uuid::Uuid::new_v4().to_string(),
        kind: kind.name().to_owned(),
        actor: actor.name.clone(),
        actor_dn: actor.dn.clone(),
        roles,
        params: serde_json::to_value(kind).map_err(|e| BulkError::Corrupt(e.to_string()))?,
        sealed_secret,
        created_at: Utc::now(),
    };
    deps.store.insert_job(&job, names).await?;
    Ok(job.id)
}

/// The job's report as CSV (`userName,status,code,password`), once: the passwords are
/// erased as it is read. `None` when it was taken before (or the job still runs).
pub async fn take_report_csv(deps: &BulkDeps, id: &str) -> Result<Option<String>, BulkError> {
    let Some(items) = deps.store.take_job_report(id, Utc::now()).await? else {
        return Ok(None);
    };
    let mut csv = String::from("userName,status,code,password\r\n");
    for item in items {
        let password = match item.sealed_password.as_deref() {
            Some(sealed) => deps
                .sealer
                .open(sealed)
                .map(|p| p.expose().to_owned())
                .unwrap_or_default(),
            None => String::new(),
        };
        csv.push_str(&format!(
            "{},{},{},{}\r\n",
            csv_field(&item.user_name),
            item.status,
            csv_field(item.code.as_deref().unwrap_or("")),
            csv_quoted(&password)
        ));
    }
    Ok(Some(csv))
}

/// RFC 4180 quoting, and a leading `=+-@` neutralised (spreadsheets run formulas).
fn csv_field(value: &str) -> String {
    if value.starts_with(['=', '+', '-', '@']) {
        csv_quoted(&format!("'{value}"))
    } else {
        csv_quoted(value)
    }
}

/// RFC 4180 quoting only: a password must reach the reader exactly as it is.
fn csv_quoted(value: &str) -> String {
    if value.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// Records a reset batch's audit records in one commit (one per reset would be one disk
/// sync each, competing with the directory's own), then stores its outcomes. Records
/// first: after a crash between the two, a resumed run records what it finds done
/// again, marked so, rather than leave it unrecorded.
async fn settle_resets(
    deps: &BulkDeps,
    id: &str,
    done: Vec<(ItemEnd, Option<TimedEvent>)>,
) -> Result<(), BulkError> {
    let (outcomes, events): (Vec<_>, Vec<_>) = done.into_iter().unzip();
    deps.account
        .record_events(events.into_iter().flatten().collect())
        .await?;
    settle_batch(deps, id, outcomes).await
}

/// Stores a batch's outcomes; stops the job (to resume later) when an item could not be
/// settled because the directory or the audit log stopped answering.
async fn settle_batch(deps: &BulkDeps, id: &str, outcomes: Vec<ItemEnd>) -> Result<(), BulkError> {
    let mut finished = Vec::with_capacity(outcomes.len());
    let mut unanswered = Vec::new();
    let mut stop = false;
    for end in outcomes {
        match end {
            ItemEnd::Settled(outcome) => finished.push(outcome),
            ItemEnd::Open { seq, unanswered: u } => {
                stop = true;
                if u {
                    unanswered.push(seq);
                }
            }
        }
    }
    let started = std::time::Instant::now();
    deps.store.finish_job_items(id, &finished).await?;
    deps.store
        .count_unanswered_job_items(id, &unanswered)
        .await?;
    tracing::debug!(
        job.id = id,
        items = finished.len(),
        ms = started.elapsed().as_millis() as u64,
        "batch outcomes stored"
    );
    if stop {
        // What was not settled stays open for the next run.
        return Err(BulkError::Account(AccountError::DirectoryUnavailable {
            cause: "the directory stopped answering during a bulk job".into(),
            retry_after_secs: 30,
            busy: false,
        }));
    }
    Ok(())
}

/// Runs every job left `running` (by a process that stopped, or stopped by the
/// directory) that this process is not running already.
pub async fn resume_running(deps: &BulkDeps) {
    let jobs = match deps.store.running_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list unfinished bulk jobs");
            return;
        }
    };
    for job in jobs {
        match run_job(deps, &job.id).await {
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(job.id = %job.id, error = %e, "bulk job paused; it resumes later")
            }
        }
    }
}

/// How an item's error counts: refused (nothing changed, the caller may fix it), failed
/// (tried and failed), or `None`: stop the job and try again later.
///
/// A password that may be in force because the directory stopped answering midway stays
/// open too: the item keeps its password, and the next run finds it in force (and
/// finishes the flag and the mail) or writes it then, so nobody is reset twice or
/// reported failed for a cut link.
fn settle(e: &AccountError) -> Option<&'static str> {
    match e {
        AccountError::DirectoryUnavailable { .. }
        | AccountError::OutcomeUnknown { .. }
        | AccountError::AuditUnavailable(_)
        | AccountError::FlagNotApplied {
            directory_unavailable: true,
        } => None,
        AccountError::PasswordMayBeInForce { error, .. } => settle(error).map(|_| "failed"),
        AccountError::Misconfigured(_)
        | AccountError::Directory(_)
        | AccountError::DirectoryAccessDenied
        | AccountError::FlagNotApplied { .. } => Some("failed"),
        _ => Some("refused"),
    }
}

/// This account's own write was sent and went unanswered (as opposed to the directory
/// being unreachable before anything was sent, or the audit log being down).
fn unanswered(e: &AccountError) -> bool {
    match e {
        AccountError::OutcomeUnknown { .. } => true,
        AccountError::PasswordMayBeInForce { error, .. } => unanswered(error),
        _ => false,
    }
}

/// How an item whose work ended in `e` ends: settled, or left open for the next run
/// unless its writes went unanswered in [`MAX_UNANSWERED_WRITES`] runs, counting this one
/// (then failed, with the password that may be in force kept for the report).
fn ended(
    item: &JobItem,
    e: &AccountError,
    changed: bool,
    sealed_password: Option<Vec<u8>>,
) -> ItemEnd {
    let status = match settle(e) {
        Some(status) => status,
        None if unanswered(e) && item.unanswered + 1 >= MAX_UNANSWERED_WRITES => {
            tracing::warn!(
                item.seq,
                runs = MAX_UNANSWERED_WRITES,
                "a bulk item's password write went unanswered in every run; reported failed"
            );
            "failed"
        }
        None => {
            return ItemEnd::Open {
                seq: item.seq,
                unanswered: unanswered(e),
            };
        }
    };
    ItemEnd::Settled(JobItemOutcome {
        seq: item.seq,
        status,
        code: Some(e.code().to_owned()),
        changed,
        sealed_password,
    })
}

async fn require_change(
    deps: &BulkDeps,
    actor: &Actor,
    items: Vec<JobItem>,
    required: bool,
) -> Vec<ItemEnd> {
    futures::stream::iter(items)
        .map(|item| async move {
            // Idempotent: an item left open by a stop is simply done again.
            let result = deps
                .account
                .require_password_change(actor, &item.user_name, required)
                .await;
            match result {
                Ok(change) => ItemEnd::Settled(JobItemOutcome {
                    seq: item.seq,
                    status: "done",
                    code: None,
                    changed: change.changed,
                    sealed_password: None,
                }),
                Err(e) => ended(&item, &e, false, None),
            }
        })
        .buffered(IN_FLIGHT)
        .collect()
        .await
}

struct ResetBatch<'a> {
    deps: &'a BulkDeps,
    job_id: &'a str,
    actor: &'a Actor,
    chosen: Option<&'a Secret>,
    require_change: bool,
    deliver_to_alternate: bool,
    report: bool,
}

/// One account of a reset batch, ready to be written.
struct Work {
    item: JobItem,
    password: Secret,
    /// Left `writing` by an earlier run: check first whether it is in force.
    resumed: bool,
    user: Option<crate::directory::UserEntry>,
}

impl ResetBatch<'_> {
    /// The next batch after `after`: each new password sealed and stored (`writing`,
    /// synced) before anything is sent, and the batch's users read in one search (a name
    /// not found there is looked up alone by the reset, which then says why).
    async fn prepare(&self, id: &str, after: Option<u64>) -> Result<Vec<Work>, BulkError> {
        let items = self.deps.store.open_job_items(id, after, BATCH).await?;
        // Drawing passwords (each checked by zxcvbn) and sealing them is a few tens of
        // milliseconds of CPU per batch: off the async workers, so that the batch being
        // written meanwhile is not held up.
        let account = self.deps.account.clone();
        let sealer = self.deps.sealer.clone();
        let chosen = self.chosen.cloned();
        let (work, fresh) = tokio::task::spawn_blocking(move || {
            let mut work = Vec::with_capacity(items.len());
            let mut fresh = Vec::new();
            for item in items {
                match item.sealed_password.as_deref() {
                    Some(sealed) if item.status == "writing" => {
                        let password = sealer
                            .open(sealed)
                            .map_err(|e| BulkError::Corrupt(e.to_string()))?;
                        work.push(Work {
                            item,
                            password,
                            resumed: true,
                            user: None,
                        });
                    }
                    _ => {
                        let password = match &chosen {
                            Some(p) => p.clone(),
                            None => account.generate_password(),
                        };
                        fresh.push((item.seq, sealer.seal(&password)));
                        work.push(Work {
                            item,
                            password,
                            resumed: false,
                            user: None,
                        });
                    }
                }
            }
            Ok::<_, BulkError>((work, fresh))
        })
        .await
        .map_err(|e| BulkError::Corrupt(format!("preparing a batch failed: {e}")))??;
        let mut work = work;
        if work.is_empty() {
            return Ok(work);
        }
        let started = std::time::Instant::now();
        self.deps.store.mark_job_items_writing(id, &fresh).await?;
        let stored = started.elapsed().as_millis() as u64;
        let names: Vec<&str> = work.iter().map(|w| w.item.user_name.as_str()).collect();
        let mut users = self.deps.account.find_users(&names).await?;
        for w in &mut work {
            w.user = users.remove(&w.item.user_name.to_lowercase());
        }
        tracing::debug!(
            job.id = id,
            items = work.len(),
            store_ms = stored,
            total_ms = started.elapsed().as_millis() as u64,
            "batch prepared"
        );
        Ok(work)
    }

    /// Each account's outcome (`None`: stop the job) and the audit record it owes.
    async fn process(&self, work: Vec<Work>) -> Vec<(ItemEnd, Option<TimedEvent>)> {
        futures::stream::iter(work)
            .map(|w| self.one(w.item, w.password, w.resumed, w.user))
            // Unordered: a slow account does not hold a slot it no longer uses (each
            // outcome names its item).
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await
    }

    async fn one(
        &self,
        item: JobItem,
        password: Secret,
        resumed: bool,
        user: Option<crate::directory::UserEntry>,
    ) -> (ItemEnd, Option<TimedEvent>) {
        let kept = self.report.then(|| self.deps.sealer.seal(&password));
        // Each item's mail is queued once, whichever run gets to it.
        let mail_key = format!("bulk|{}|{}", self.job_id, item.seq);
        if resumed {
            // Left `writing` by a run that stopped: was this password set?
            match self
                .deps
                .account
                .password_in_force(&item.user_name, &password)
                .await
            {
                Ok(Some(in_force)) => {
                    // The run may have died between the password and the flag.
                    if self.require_change
                        && !in_force.must_change
                        && let Err(e) = self
                            .deps
                            .account
                            .require_password_change(self.actor, &item.user_name, true)
                            .await
                    {
                        let outcome = ended(&item, &e, true, kept);
                        return (outcome, None);
                    }
                    // The run may have died before queueing the mail, too.
                    let mut sent_to = Vec::new();
                    if self.deliver_to_alternate {
                        match self
                            .deps
                            .account
                            .mail_found_reset(
                                self.actor,
                                &item.user_name,
                                &password,
                                self.require_change,
                                &mail_key,
                            )
                            .await
                        {
                            Ok(to) => sent_to = to,
                            Err(e) => {
                                let outcome = ended(&item, &e, true, kept);
                                return (outcome, None);
                            }
                        }
                    }
                    let event = self.deps.account.reset_found_after_restart(
                        self.actor,
                        &item.user_name,
                        self.chosen.is_none(),
                        self.require_change,
                        self.report,
                        sent_to,
                    );
                    let outcome = JobItemOutcome {
                        seq: item.seq,
                        status: "done",
                        code: Some("resumed".into()),
                        changed: true,
                        sealed_password: kept,
                    };
                    return (ItemEnd::Settled(outcome), Some(event));
                }
                Ok(None) => {}
                Err(e) => {
                    let outcome = ended(&item, &e, false, None);
                    return (outcome, None);
                }
            }
        }
        let choice = match self.chosen {
            Some(_) => PasswordChoice::Chosen(password),
            None => PasswordChoice::Generated(password),
        };
        let (result, event) = self
            .deps
            .account
            .reset_password_unrecorded(
                self.actor,
                &item.user_name,
                user,
                ResetRequest {
                    choice,
                    require_change: self.require_change,
                    send_to: Vec::new(),
                    send_to_alternate: self.deliver_to_alternate,
                    show_password: self.report,
                    mail_key: Some(mail_key),
                },
            )
            .await;
        let outcome = match result {
            Ok(_) => ItemEnd::Settled(JobItemOutcome {
                seq: item.seq,
                status: "done",
                code: None,
                changed: true,
                sealed_password: kept,
            }),
            Err(e) => {
                // A password that may be in force is kept for the report.
                let may_be_in_force = matches!(e, AccountError::PasswordMayBeInForce { .. });
                ended(&item, &e, false, may_be_in_force.then_some(kept).flatten())
            }
        };
        (outcome, event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("bob"), "bob");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("=cmd()"), "'=cmd()");
        assert_eq!(
            csv_quoted("-Secret,1"),
            "\"-Secret,1\"",
            "a password is never altered"
        );
    }

    #[test]
    fn a_cut_link_leaves_an_item_open_and_a_refusal_settles_it() {
        let cut = AccountError::OutcomeUnknown {
            cause: "connection reset".into(),
            retry_after_secs: 30,
        };
        let may_be_in_force = |error: AccountError| AccountError::PasswordMayBeInForce {
            error: Box::new(error),
            handover: Default::default(),
        };
        assert_eq!(settle(&may_be_in_force(cut)), None, "resumed, not failed");
        let flag_cut = AccountError::FlagNotApplied {
            directory_unavailable: true,
        };
        assert_eq!(settle(&flag_cut), None);
        assert_eq!(settle(&may_be_in_force(flag_cut)), None);
        let flag_refused = AccountError::FlagNotApplied {
            directory_unavailable: false,
        };
        assert_eq!(settle(&may_be_in_force(flag_refused)), Some("failed"));
        assert_eq!(
            settle(&may_be_in_force(AccountError::DirectoryAccessDenied)),
            Some("failed")
        );
    }

    #[test]
    fn an_item_whose_writes_go_unanswered_run_after_run_fails_in_the_end() {
        let item = |unanswered| JobItem {
            seq: 7,
            user_name: "bob".into(),
            status: "writing".into(),
            code: None,
            changed: false,
            sealed_password: None,
            unanswered,
        };
        let timed_out = AccountError::PasswordMayBeInForce {
            error: Box::new(AccountError::OutcomeUnknown {
                cause: "timed out".into(),
                retry_after_secs: 30,
            }),
            handover: Default::default(),
        };
        for before in 0..MAX_UNANSWERED_WRITES - 1 {
            assert!(
                matches!(
                    ended(&item(before), &timed_out, false, Some(vec![1])),
                    ItemEnd::Open {
                        seq: 7,
                        unanswered: true
                    }
                ),
                "run {} leaves it open",
                before + 1
            );
        }
        match ended(
            &item(MAX_UNANSWERED_WRITES - 1),
            &timed_out,
            false,
            Some(vec![1]),
        ) {
            ItemEnd::Settled(o) => {
                assert_eq!(
                    (o.status, o.code.as_deref()),
                    ("failed", Some("outcome_unknown"))
                );
                assert_eq!(o.sealed_password, Some(vec![1]), "kept for the report");
            }
            open => panic!("still open after {MAX_UNANSWERED_WRITES} runs: {open:?}"),
        }
        // A directory that is down counts for nothing: the job waits for it.
        let down = AccountError::DirectoryUnavailable {
            cause: "connection refused".into(),
            retry_after_secs: 30,
            busy: false,
        };
        assert!(matches!(
            ended(&item(100), &down, false, None),
            ItemEnd::Open {
                unanswered: false,
                ..
            }
        ));
    }

    use crate::store::SqliteStore;

    #[tokio::test]
    async fn one_instance_at_a_time_holds_a_job_and_a_restarted_one_gets_it_back() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_temporary().await.expect("store"));
        let a = JobLease::take(&store, "host-a@127.0.0.1:8080", "job-1")
            .await
            .expect("store answers")
            .expect("a free job is taken");
        assert!(
            JobLease::take(&store, "host-b@127.0.0.1:8080", "job-1")
                .await
                .expect("store answers")
                .is_none(),
            "a second instance must not run a job another holds"
        );
        // The same instance, restarted (same name), resumes at once.
        let again = JobLease::take(&store, "host-a@127.0.0.1:8080", "job-1")
            .await
            .expect("store answers");
        assert!(
            again.is_some(),
            "a restarted instance gets its own job back"
        );
        assert!(a.check().is_ok());
        drop(again);
        drop(a);
        // Released when dropped (in the background): the other instance may take it.
        let mut taken = None;
        for _ in 0..50 {
            taken = JobLease::take(&store, "host-b@127.0.0.1:8080", "job-1")
                .await
                .expect("store answers");
            if taken.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            taken.is_some(),
            "a released job is free for another instance"
        );
    }
}
