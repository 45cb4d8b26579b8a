//! One bulk job run: open items in batches → per item the account gate → outcomes.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

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
        "this instance could not renew its lease on the job in time; the instance that takes it over carries on"
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
    /// This process, as the holder of a job's lease in the store: another instance on
    /// the same store runs a job only once this one has stopped renewing it.
    pub instance: String,
    /// How long a job's lease lasts without renewal.
    pub lease: std::time::Duration,
    /// Wakes the loop that resumes jobs ([`resume_running`]): a job was created.
    pub wake: Arc<tokio::sync::Notify>,
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

/// Takes (or renews) the lease `name` for this instance.
async fn take_lease(deps: &BulkDeps, name: &str) -> Result<bool, StoreError> {
    let now = Utc::now();
    let until =
        now + chrono::Duration::from_std(deps.lease).unwrap_or(chrono::Duration::minutes(2));
    deps.store
        .acquire_lease(name, &deps.instance, now, until)
        .await
}

/// Renews the lease `name` every third of its length; returns when it is lost (taken
/// by another instance, or not renewed in time because the store did not answer).
async fn keep_lease(deps: &BulkDeps, name: &str) {
    let mut renewed = std::time::Instant::now();
    loop {
        tokio::time::sleep(deps.lease / 3).await;
        match take_lease(deps, name).await {
            Ok(true) => renewed = std::time::Instant::now(),
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(error = %e, lease = name, "cannot renew a bulk job's lease");
                if renewed.elapsed() >= deps.lease {
                    return;
                }
            }
        }
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
    // Instances sharing a store take turns through the job's lease: two runners of one
    // job would each draw a password for the same account.
    let lease = format!("bulk-job|{id}");
    if !take_lease(deps, &lease).await? {
        return Ok(None);
    }
    // Losing the lease stops the run at once, as a crash would: the instance taking
    // over finds by a bind which of the items left `writing` are done.
    let result = tokio::select! {
        result = run_leased(deps, id) => result,
        () = keep_lease(deps, &lease) => Err(BulkError::LeaseLost),
    };
    if let Err(e) = deps.store.release_lease(&lease, &deps.instance).await {
        tracing::warn!(error = %e, job.id = id, "could not release a bulk job's lease; it expires by itself");
    }
    result
}

async fn run_leased(deps: &BulkDeps, id: &str) -> Result<Option<JobRecord>, BulkError> {
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
    // Should this run stop (the directory, the store), the resume loop takes it up.
    deps.wake.notify_one();
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
    done: Vec<(Option<JobItemOutcome>, Option<TimedEvent>)>,
) -> Result<(), BulkError> {
    let (outcomes, events): (Vec<_>, Vec<_>) = done.into_iter().unzip();
    deps.account
        .record_events(events.into_iter().flatten().collect())
        .await?;
    settle_batch(deps, id, outcomes).await
}

/// Stores a batch's outcomes; stops the job (to resume later) when an item could not be
/// settled because the directory or the audit log stopped answering.
async fn settle_batch(
    deps: &BulkDeps,
    id: &str,
    outcomes: Vec<Option<JobItemOutcome>>,
) -> Result<(), BulkError> {
    let stop = outcomes.iter().any(|o| o.is_none());
    let finished: Vec<JobItemOutcome> = outcomes.into_iter().flatten().collect();
    let started = std::time::Instant::now();
    deps.store.finish_job_items(id, &finished).await?;
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
        }));
    }
    Ok(())
}

/// Runs every job left `running` (by a process that stopped, or stopped by the
/// directory) that this process is not running already. True when a job is still
/// unfinished (running here or on another instance, or paused): worth looking again
/// soon, to carry on once the directory is back or take it over should that instance
/// stop.
pub async fn resume_running(deps: &BulkDeps) -> bool {
    let jobs = match deps.store.running_jobs().await {
        Ok(jobs) => jobs,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list unfinished bulk jobs");
            return false;
        }
    };
    let mut busy = false;
    for job in jobs {
        match run_job(deps, &job.id).await {
            Ok(Some(job)) => busy |= job.status == "running",
            Ok(None) => busy = true,
            Err(e) => {
                busy = true;
                tracing::warn!(job.id = %job.id, error = %e, "bulk job paused; it resumes later")
            }
        }
    }
    busy
}

/// How an item's error counts: refused (nothing changed, the caller may fix it), failed
/// (tried and failed), or `None`: stop the job and try again later.
fn settle(e: &AccountError) -> Option<&'static str> {
    match e {
        AccountError::DirectoryUnavailable { .. }
        | AccountError::OutcomeUnknown { .. }
        | AccountError::AuditUnavailable(_) => None,
        AccountError::Misconfigured(_)
        | AccountError::Directory(_)
        | AccountError::DirectoryAccessDenied
        | AccountError::FlagNotApplied
        | AccountError::PasswordMayBeInForce { .. } => Some("failed"),
        _ => Some("refused"),
    }
}

async fn require_change(
    deps: &BulkDeps,
    actor: &Actor,
    items: Vec<JobItem>,
    required: bool,
) -> Vec<Option<JobItemOutcome>> {
    futures::stream::iter(items)
        .map(|item| async move {
            // Idempotent: an item left open by a stop is simply done again.
            let result = deps
                .account
                .require_password_change(actor, &item.user_name, required)
                .await;
            match result {
                Ok(change) => Some(JobItemOutcome {
                    seq: item.seq,
                    status: "done",
                    code: None,
                    changed: change.changed,
                    sealed_password: None,
                }),
                Err(e) => settle(&e).map(|status| JobItemOutcome {
                    seq: item.seq,
                    status,
                    code: Some(e.code().to_owned()),
                    changed: false,
                    sealed_password: None,
                }),
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
    async fn process(&self, work: Vec<Work>) -> Vec<(Option<JobItemOutcome>, Option<TimedEvent>)> {
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
    ) -> (Option<JobItemOutcome>, Option<TimedEvent>) {
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
                        let outcome = settle(&e).map(|status| JobItemOutcome {
                            seq: item.seq,
                            status,
                            code: Some(e.code().to_owned()),
                            changed: true,
                            sealed_password: kept,
                        });
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
                                let outcome = settle(&e).map(|status| JobItemOutcome {
                                    seq: item.seq,
                                    status,
                                    code: Some(e.code().to_owned()),
                                    changed: true,
                                    sealed_password: kept,
                                });
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
                    return (Some(outcome), Some(event));
                }
                Ok(None) => {}
                Err(e) => {
                    let outcome = settle(&e).map(|status| JobItemOutcome {
                        seq: item.seq,
                        status,
                        code: Some(e.code().to_owned()),
                        changed: false,
                        sealed_password: None,
                    });
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
            Ok(_) => Some(JobItemOutcome {
                seq: item.seq,
                status: "done",
                code: None,
                changed: true,
                sealed_password: kept,
            }),
            Err(e) => settle(&e).map(|status| JobItemOutcome {
                seq: item.seq,
                status,
                code: Some(e.code().to_owned()),
                changed: false,
                // A password that may be in force is kept for the report.
                sealed_password: matches!(e, AccountError::PasswordMayBeInForce { .. })
                    .then_some(kept)
                    .flatten(),
            }),
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
}
