//! Persistent state: API token hashes, the audit log, the mail outbox, and what the
//! password-expiry sweep needs (the notice ledger, leases, sweep history, run-time
//! settings).
//!
//! Owns the [`Store`] trait, its records, the SQL schema (`migrations/<backend>/`) and
//! the backends: [`SqliteStore`] (one file, one instance) and [`PostgresStore`] (a
//! database several instances share). It stores what it is given and knows no business rules: it never sees
//! a cleartext token, password or code (tokens arrive as keyed hashes, mail secrets
//! sealed), never logs record contents, and imports nothing but `types`.

pub mod chain;
pub mod copy;
mod error;
mod pending;
mod postgres;
pub mod rate;
mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use error::StoreError;
pub use pending::{AnnouncedRecord, GATHER_WAIT, PendingAudit};
pub use postgres::{PostgresOptions, PostgresStore, PostgresTls};
pub use rate::{RateDecision, RateQuota};
pub use sqlite::SqliteStore;

/// The persistence interface every backend implements. Object-safe: services hold an
/// `Arc<dyn Store>`.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Saves a new API token. `Conflict("token name")` when a token in force (not
    /// revoked) already has that name.
    async fn insert_token(&self, t: &NewToken) -> Result<(), StoreError>;
    /// The token in force with this keyed hash; revoked tokens are never returned.
    async fn find_token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError>;
    /// Every token, revoked ones included, oldest first.
    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError>;
    /// Revokes the token in force named `name`; false when there is none.
    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError>;

    /// Saves a new administrator's session (its token as a keyed hash only) and
    /// removes sessions that ended more than a day ago.
    async fn insert_session(&self, s: &NewSession) -> Result<(), StoreError>;
    /// The session with this keyed hash, if it is neither revoked nor expired at `now`.
    async fn find_session_by_hash(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, StoreError>;
    /// Ends the session with this id; false when it had already ended.
    async fn revoke_session(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Saves a new bulk job and one `pending` item per user name, in one transaction.
    async fn insert_job(&self, job: &NewJob, user_names: &[String]) -> Result<(), StoreError>;
    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;
    /// Jobs still `running` (an instance stopped mid-way, or one is at work), oldest first.
    async fn running_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
    /// Up to `limit` items still `pending` or `writing` after position `after`, in order.
    async fn open_job_items(
        &self,
        id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<JobItem>, StoreError>;
    /// Items in order after `after_seq`, at most `limit` ([`MAX_PAGE`]).
    async fn job_items_page(
        &self,
        id: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<JobItem>, StoreError>;
    /// Marks items `writing` with their sealed new passwords, in one synced transaction,
    /// before the directory is asked.
    async fn mark_job_items_writing(
        &self,
        id: &str,
        items: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError>;
    /// Gives items their outcome, in one synced transaction. `sealed_password` is kept
    /// only when given (for the job's report).
    async fn finish_job_items(&self, id: &str, items: &[JobItemOutcome]) -> Result<(), StoreError>;
    /// Counts one more unanswered write for each of the open items `seqs`.
    async fn count_unanswered_job_items(&self, id: &str, seqs: &[u64]) -> Result<(), StoreError>;
    /// Ends a job (`completed` or `failed`), erasing its sealed chosen password.
    async fn finish_job(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// The job's items with their sealed passwords, once: the passwords are erased in the
    /// same transaction. `None` while the job still runs (its passwords are still being
    /// written) and when the report was taken before.
    async fn take_job_report(
        &self,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Vec<JobItem>>, StoreError>;

    /// Appends an audit record chained to the newest one (its `prev_hash` is that
    /// record's hash; see [`chain`]) and returns its id. Records are never changed or
    /// removed. The commit is synced to disk before this returns (it survives a power
    /// loss); appends that arrive together share one commit.
    async fn append_audit(&self, r: &NewAuditRecord) -> Result<i64, StoreError>;
    /// Appends records in order like [`Store::append_audit`], sharing commits: for a
    /// caller that acts on many accounts and records them together.
    async fn append_audit_many(&self, records: Vec<NewAuditRecord>) -> Result<(), StoreError>;
    /// Where callers announce an audited write under way (see [`PendingAudit`]), so that
    /// the audit writer can gather its record into the commit of those before it. A
    /// store that does not gather returns a count nobody reads.
    fn pending_audit(&self) -> PendingAudit {
        PendingAudit::default()
    }
    /// Audit records matching `q`, newest first (keyset paging by id).
    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;
    /// Audit records with their chain hashes, oldest first: ids above `after_id`, and
    /// only those at or after `since` when given; at most `limit` (capped at
    /// [`MAX_AUDIT_PAGE`]).
    async fn audit_chain_page(
        &self,
        after_id: i64,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<ChainedAuditRecord>, StoreError>;
    /// The newest audit record's id and hash (the chain's head).
    async fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// Appends a signed chain head. Seals are never changed or removed.
    async fn append_audit_seal(&self, s: &AuditSeal) -> Result<i64, StoreError>;
    /// Seals oldest first: ids above `after_id`, at most `limit` (capped at [`MAX_PAGE`]).
    async fn audit_seals_page(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<StoredAuditSeal>, StoreError>;
    /// The newest seal.
    async fn last_audit_seal(&self) -> Result<Option<StoredAuditSeal>, StoreError>;

    /// Queues a message for delivery, due at once, with a fresh Message-ID. Returns its id.
    async fn enqueue_mail(&self, m: &NewOutboxMessage) -> Result<i64, StoreError>;
    /// Leases up to `limit` due messages (pending, `next_attempt_at <= now`, no lease or
    /// an expired one) until `now + lease`: transactional messages first, then bulk ones,
    /// each oldest due first. The lease is taken in one atomic statement, so two workers
    /// never hold the same message at once.
    async fn claim_due_mail(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError>;
    /// Extends to `until` the leases of those of `ids` still pending and leased past `now`
    /// (a worker still sending them); returns how many. A lease that ran out is not
    /// taken back: another worker may have claimed the message.
    async fn extend_mail_leases(
        &self,
        ids: &[i64],
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Marks a message delivered and erases its sealed secret. `NotFound` for an unknown id.
    async fn mark_mail_sent(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError>;
    /// Records a failed attempt (attempts + 1), releases the lease and sets the next try.
    async fn mark_mail_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError>;
    /// Gives up on a message (attempts + 1): status dead, sealed secret erased.
    async fn mark_mail_dead(&self, id: i64, error: &str) -> Result<(), StoreError>;
    /// How many messages are pending, sent and dead.
    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError>;
    /// One message by id.
    async fn get_mail(&self, id: i64) -> Result<Option<OutboxMessage>, StoreError>;

    /// Like [`Store::claim_due_mail`], but only messages of `class`.
    async fn claim_due_mail_of_class(
        &self,
        class: MailClass,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError>;
    /// How many messages of `class` were sent at or after `since` (the bulk limits).
    async fn count_sent_since(
        &self,
        class: MailClass,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Notes `now` as the time every due, unleased, pending message of `class` was first
    /// held back, and returns how many had not been noted before (so each held message is
    /// counted once).
    async fn mark_due_mail_held(
        &self,
        class: MailClass,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Dead-letters every unleased pending message whose `stale_after` is at or before
    /// `now` (it would arrive out of date), erasing any sealed secret. Returns how many.
    async fn dead_letter_stale_mail(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Dead messages, newest first (keyset paging by id: only ids below `before_id`).
    /// `limit` is capped at [`MAX_PAGE`]. They hold no secret.
    async fn list_dead_mail(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError>;

    /// Records a notice in the ledger and queues its message in ONE transaction (the
    /// message gets a fresh Message-ID, as with [`Store::enqueue_mail`]). Returns false,
    /// and queues nothing, when the ledger already holds `ledger_key`: a notice is queued
    /// at most once, whatever reruns, crashes or concurrent callers there are.
    async fn record_notice(
        &self,
        ledger_key: &str,
        sweep_id: Option<&str>,
        message: &NewOutboxMessage,
    ) -> Result<bool, StoreError>;
    /// [`Store::record_notice`] for many notices in ONE transaction (a sweep's batch):
    /// each element of the result says whether that notice was queued. All or nothing.
    async fn record_notices(
        &self,
        sweep_id: Option<&str>,
        notices: &[(String, NewOutboxMessage)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut queued = Vec::with_capacity(notices.len());
        for (key, message) in notices {
            queued.push(self.record_notice(key, sweep_id, message).await?);
        }
        Ok(queued)
    }
    /// For each key, in order, whether the ledger holds it (one query for a sweep's
    /// batch: a dry run, and a real one before it prepares messages).
    async fn notices_recorded(&self, ledger_keys: &[String]) -> Result<Vec<bool>, StoreError>;
    /// True when the ledger holds `ledger_key`.
    async fn notice_recorded(&self, ledger_key: &str) -> Result<bool, StoreError> {
        let found = self.notices_recorded(&[ledger_key.to_owned()]).await?;
        Ok(found.first().copied().unwrap_or(false))
    }

    /// Takes the lease `name` for `holder` until `until`, atomically. Succeeds when the
    /// lease is free, expired (`held until <= now`) or already `holder`'s (a renewal,
    /// which moves `until`); false when someone else holds it.
    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Gives the lease up if `holder` holds it; does nothing otherwise.
    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError>;

    /// Adds lines to a sweep's report (in one transaction).
    async fn append_sweep_report(
        &self,
        sweep_id: &str,
        lines: &[SweepReportLine],
    ) -> Result<(), StoreError>;
    /// The report's lines after `after_seq` (`None`: from the first), in order, at most
    /// `limit` ([`MAX_REPORT_PAGE`] at most).
    async fn sweep_report_page(
        &self,
        sweep_id: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<SweepReportLine>, StoreError>;
    /// Removes the reports of sweeps started before `before`; returns how many lines.
    async fn prune_sweep_reports(&self, before: DateTime<Utc>) -> Result<u64, StoreError>;
    /// Saves a new sweep run. `Conflict("sweep run id")` when the id is taken.
    async fn insert_sweep_run(&self, run: &SweepRun) -> Result<(), StoreError>;
    /// Overwrites the run with `run.id` (progress, outcome). `NotFound` for an unknown id.
    async fn update_sweep_run(&self, run: &SweepRun) -> Result<(), StoreError>;
    /// One sweep run by id.
    async fn get_sweep_run(&self, id: &str) -> Result<Option<SweepRun>, StoreError>;
    /// The latest sweep runs, newest first (by start time); `limit` is capped at
    /// [`MAX_PAGE`].
    async fn list_sweep_runs(&self, limit: u32) -> Result<Vec<SweepRun>, StoreError>;
    /// Marks every run still `running`, except `except_id`, as `interrupted` at `at` with
    /// `error`, and returns how many. For the lease holder at the start of a sweep: a run
    /// left `running` then belongs to an instance that stopped mid-sweep.
    async fn interrupt_sweep_runs(
        &self,
        except_id: Option<&str>,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<u64, StoreError>;

    /// A run-time setting (JSON), `None` when never set.
    async fn get_setting(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError>;
    /// Creates or replaces a run-time setting.
    async fn put_setting(&self, key: &str, value: &serde_json::Value) -> Result<(), StoreError>;

    /// Saves a new self-service flow and removes flows that expired before `now`.
    async fn insert_flow(&self, f: &NewFlow, now: DateTime<Utc>) -> Result<(), StoreError>;
    /// The flow with this keyed cookie hash, unless it expired at `now`.
    async fn find_flow(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<FlowRecord>, StoreError>;
    /// Replaces a flow's state if its version is still `version` (then it becomes
    /// `version + 1`); false when another request changed or ended it first.
    async fn update_flow(
        &self,
        id: &str,
        version: i64,
        state: &serde_json::Value,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Ends a flow; false when it had already ended.
    async fn delete_flow(&self, id: &str) -> Result<bool, StoreError>;

    /// Opens a "contact an administrator" request, or returns the one already open for
    /// that user (`created` false).
    async fn open_reset_request(
        &self,
        r: &NewResetRequest,
    ) -> Result<(ResetRequestRecord, bool), StoreError>;
    /// Requests newest first, `status` (`open`, `closed`, `dismissed`) or all, after the
    /// request with id `before` (paging), at most `limit` ([`MAX_PAGE`]).
    async fn list_reset_requests(
        &self,
        status: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ResetRequestRecord>, StoreError>;
    async fn get_reset_request(&self, id: &str) -> Result<Option<ResetRequestRecord>, StoreError>;
    /// Closes the user's open request, if any (an administrator reset their password).
    async fn close_reset_requests(
        &self,
        user_dn: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError>;
    /// Dismisses an open request; false when it is not open.
    async fn dismiss_reset_request(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Saves a first-password link (its keyed hash) and removes links that expired
    /// more than a week ago.
    async fn insert_welcome_link(&self, w: &NewWelcomeLink) -> Result<(), StoreError>;
    /// The unused, unexpired link with this hash.
    async fn find_welcome_link(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<WelcomeLinkRecord>, StoreError>;
    /// Marks the link used; false when it was already used or has expired.
    async fn use_welcome_link(&self, hash: &[u8], at: DateTime<Utc>) -> Result<bool, StoreError>;

    /// Shared rate limits (several instances, one bucket per key): takes up to `want`
    /// units from bucket `key` at `now`, by [`rate::gcra`], atomically, and returns how
    /// many it got. `key` names what is counted in plain words or as a keyed hash,
    /// never a secret. Buckets that have filled up again are removed on the way.
    async fn take_rate(
        &self,
        key: &str,
        quota: RateQuota,
        want: u32,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, StoreError>;
    /// A number that grows whenever a token is revoked or a session ended (it is
    /// raised in the same transaction as [`Store::revoke_token`] and
    /// [`Store::revoke_session`]). Instances poll it to drop what they cached.
    async fn revocation_mark(&self) -> Result<i64, StoreError>;
}

#[derive(Debug, Clone)]
pub struct NewWelcomeLink {
    pub hash: Vec<u8>,
    pub user_dn: String,
    pub user_name: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A first-password link still usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WelcomeLinkRecord {
    pub user_dn: String,
    pub user_name: String,
    pub expires_at: DateTime<Utc>,
}

/// A self-service flow to save: the cookie's keyed hash, never the cookie.
#[derive(Debug, Clone)]
pub struct NewFlow {
    pub id: String,
    pub hash: Vec<u8>,
    /// `reset`, `security-info`, ...
    pub purpose: String,
    pub state: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A flow in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRecord {
    pub id: String,
    pub purpose: String,
    pub state: serde_json::Value,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub struct NewResetRequest {
    pub id: String,
    pub user_dn: String,
    pub user_name: String,
    pub created_at: DateTime<Utc>,
}

/// A "contact an administrator" request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ResetRequestRecord {
    pub id: String,
    #[serde(skip)]
    pub user_dn: String,
    pub user_name: String,
    /// `open`, `closed` (the password was reset) or `dismissed`.
    pub status: String,
    pub created_at: DateTime<Utc>,
    pub closed_at: Option<DateTime<Utc>>,
    pub closed_by: Option<String>,
    pub reason: Option<String>,
}

/// A bulk job to save.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: String,
    /// `password-reset` or `require-change`.
    pub kind: String,
    pub actor: String,
    pub actor_dn: Option<String>,
    pub roles: Vec<String>,
    pub params: serde_json::Value,
    /// A chosen password for every account, sealed by the caller.
    pub sealed_secret: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
}

/// A stored bulk job, with its progress.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRecord {
    pub id: String,
    pub kind: String,
    pub actor: String,
    pub actor_dn: Option<String>,
    pub roles: Vec<String>,
    pub params: serde_json::Value,
    pub sealed_secret: Option<Vec<u8>>,
    /// `running`, `completed` or `failed`.
    pub status: String,
    pub total: u64,
    /// Items per status: `done`, `refused`, `failed`, still open (`pending`/`writing`).
    pub done: u64,
    pub refused: u64,
    pub failed: u64,
    pub open: u64,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    pub report_taken: bool,
}

/// One account of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobItem {
    pub seq: u64,
    pub user_name: String,
    /// `pending`, `writing`, `done`, `refused` or `failed`.
    pub status: String,
    pub code: Option<String>,
    /// Something was written (false: the account already was in that state).
    pub changed: bool,
    pub sealed_password: Option<Vec<u8>>,
    /// Runs in which this item's password write was sent and went unanswered.
    pub unanswered: u32,
}

/// How one item ended.
#[derive(Debug, Clone)]
pub struct JobItemOutcome {
    pub seq: u64,
    /// `done`, `refused` or `failed`.
    pub status: &'static str,
    pub code: Option<String>,
    pub changed: bool,
    pub sealed_password: Option<Vec<u8>>,
}

/// An administrator's session to save (the token's keyed hash, never the token).
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: String,
    pub hash: Vec<u8>,
    pub user_dn: String,
    pub user_name: String,
    /// Role names, as `Role::as_str` gives them.
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// A session in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: String,
    pub user_dn: String,
    pub user_name: String,
    pub roles: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// A token to save. Only the keyed hash of the token is stored, never the token.
#[derive(Clone)]
pub struct NewToken {
    /// A UUID.
    pub id: String,
    pub name: String,
    pub role: String,
    /// Keyed hash of the token, computed by the caller.
    pub hash: Vec<u8>,
    pub created_at: DateTime<Utc>,
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("role", &self.role)
            .field("hash", &"[redacted]")
            .field("created_at", &self.created_at)
            .finish()
    }
}

/// A stored token, without its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenRecord {
    pub id: String,
    pub name: String,
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// An audit record to append.
#[derive(Debug, Clone)]
pub struct NewAuditRecord {
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    /// Non-secret facts, usually JSON text.
    pub detail: Option<String>,
}

/// A stored audit record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub outcome: String,
    pub detail: Option<String>,
}

/// A stored audit record with its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainedAuditRecord {
    pub record: AuditRecord,
    /// `at` exactly as stored (the hash covers this text).
    pub at_text: String,
    /// The hash of the record before it ([`chain::GENESIS`] for the first); `None` only
    /// for a record written outside lockbridge.
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
}

impl NewAuditRecord {
    /// The fields its hash will cover, once it has its id and its time as stored.
    pub fn chain_fields<'a>(&'a self, id: i64, at: &'a str) -> chain::ChainFields<'a> {
        chain::ChainFields {
            id,
            at,
            request_id: self.request_id.as_deref(),
            actor: &self.actor,
            action: &self.action,
            target: self.target.as_deref(),
            outcome: &self.outcome,
            detail: self.detail.as_deref(),
        }
    }
}

impl ChainedAuditRecord {
    /// The fields the record's hash covers.
    pub fn chain_fields(&self) -> chain::ChainFields<'_> {
        let r = &self.record;
        chain::ChainFields {
            id: r.id,
            at: &self.at_text,
            request_id: r.request_id.as_deref(),
            actor: &r.actor,
            action: &r.action,
            target: r.target.as_deref(),
            outcome: &r.outcome,
            detail: r.detail.as_deref(),
        }
    }
}

/// A signed chain head: record `record_id` had hash `head_hash` at `at`; `mac` is
/// computed by the audit service over those three.
#[derive(Clone, PartialEq, Eq)]
pub struct AuditSeal {
    pub at: DateTime<Utc>,
    pub record_id: i64,
    pub head_hash: Vec<u8>,
    pub mac: Vec<u8>,
}

impl fmt::Debug for AuditSeal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuditSeal")
            .field("at", &self.at)
            .field("record_id", &self.record_id)
            .finish_non_exhaustive()
    }
}

/// A seal as stored, with its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAuditSeal {
    pub id: i64,
    pub seal: AuditSeal,
}

/// Which audit records to list. Filters combine with AND; `None` means any.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub target: Option<String>,
    pub action: Option<String>,
    /// Only records with a smaller id (the last id of the previous page).
    pub before_id: Option<i64>,
    /// Page size; backends cap it at [`MAX_AUDIT_PAGE`].
    pub limit: u32,
}

/// The largest audit page a backend returns.
pub const MAX_AUDIT_PAGE: u32 = 1000;

impl AuditQuery {
    /// The page's SELECT with only the conditions this query has, newest first. Written
    /// out per query rather than as `(? IS NULL OR actor = ?)`: that form hides from
    /// SQLite's planner, and from PostgreSQL's generic plans, which condition holds, and
    /// both then scan the whole log instead of the `(actor, id)`, `(target, id)` or
    /// `(action, id)` index.
    fn page_sql<DB>(&self) -> sqlx::QueryBuilder<DB>
    where
        DB: sqlx::Database,
        for<'t> String: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
        for<'t> i64: sqlx::Encode<'t, DB> + sqlx::Type<DB>,
    {
        let mut sql = sqlx::QueryBuilder::new(
            "SELECT id, at, request_id, actor, action, target, outcome, detail FROM audit_log \
             WHERE TRUE",
        );
        for (column, value) in [
            ("actor", &self.actor),
            ("target", &self.target),
            ("action", &self.action),
        ] {
            if let Some(value) = value {
                sql.push(format_args!(" AND {column} = "))
                    .push_bind(value.clone());
            }
        }
        if let Some(before) = self.before_id {
            sql.push(" AND id < ").push_bind(before);
        }
        sql.push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(self.limit.min(MAX_AUDIT_PAGE)));
        sql
    }
}

/// The largest page of a sweep's report a backend returns.
pub const MAX_REPORT_PAGE: u32 = 5000;

/// The largest page of dead letters or sweep runs a backend returns.
pub const MAX_PAGE: u32 = 1000;

/// How a message is paced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MailClass {
    /// Mail a user is waiting for (a temporary password): never held back.
    #[default]
    Transactional,
    /// Mail sent in numbers (expiry notices, digests): held back by the bulk limits.
    Bulk,
}

impl MailClass {
    /// Every class.
    pub const ALL: [MailClass; 2] = [MailClass::Transactional, MailClass::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            MailClass::Transactional => "transactional",
            MailClass::Bulk => "bulk",
        }
    }
}

impl fmt::Display for MailClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for MailClass {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "transactional" => Ok(MailClass::Transactional),
            "bulk" => Ok(MailClass::Bulk),
            other => Err(format!("unknown mail class `{other}`")),
        }
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewOutboxMessage {
    /// Template (message kind) name.
    pub template: String,
    pub recipient: String,
    /// Non-secret template variables.
    pub context: serde_json::Value,
    /// A secret for the message, sealed by the caller; erased once the message is
    /// sent or dead.
    pub sealed_secret: Option<Vec<u8>>,
    pub created_at: DateTime<Utc>,
    /// How the message is paced.
    pub class: MailClass,
    /// When set, the message is dead-lettered instead of sent if it is still pending at
    /// this time (it would arrive out of date).
    pub stale_after: Option<DateTime<Utc>>,
}

impl NewOutboxMessage {
    /// A message without a secret and without a stale time.
    pub fn new(
        template: impl Into<String>,
        recipient: impl Into<String>,
        context: serde_json::Value,
        class: MailClass,
        created_at: DateTime<Utc>,
    ) -> NewOutboxMessage {
        NewOutboxMessage {
            template: template.into(),
            recipient: recipient.into(),
            context,
            sealed_secret: None,
            created_at,
            class,
            stale_after: None,
        }
    }
}

/// Where a queued message stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    /// Waiting for (another) delivery attempt.
    Pending,
    /// Accepted by the relay.
    Sent,
    /// Given up on (permanent failure or too many attempts); kept for inspection.
    Dead,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Pending => "pending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Dead => "dead",
        }
    }
}

impl fmt::Display for OutboxStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for OutboxStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pending" => Ok(OutboxStatus::Pending),
            "sent" => Ok(OutboxStatus::Sent),
            "dead" => Ok(OutboxStatus::Dead),
            other => Err(format!("unknown outbox status `{other}`")),
        }
    }
}

/// A queued message.
#[derive(Clone, PartialEq)]
pub struct OutboxMessage {
    pub id: i64,
    pub template: String,
    pub recipient: String,
    pub context: serde_json::Value,
    pub sealed_secret: Option<Vec<u8>>,
    pub status: OutboxStatus,
    /// Delivery attempts made so far (each ending sent, failed or dead).
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    /// Stable RFC 5322 Message-ID (`<uuid@lockbridge>`), fixed at enqueue, so a resend
    /// after a crash can be recognised as the same message.
    pub message_id: String,
    pub class: MailClass,
    pub stale_after: Option<DateTime<Utc>>,
}

impl fmt::Debug for OutboxMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The recipient is personal data and the context may be too: neither is printed.
        f.debug_struct("OutboxMessage")
            .field("id", &self.id)
            .field("template", &self.template)
            .field(
                "sealed_secret",
                &self.sealed_secret.as_ref().map(|_| "[sealed]"),
            )
            .field("status", &self.status)
            .field("attempts", &self.attempts)
            .field("next_attempt_at", &self.next_attempt_at)
            .field("last_error", &self.last_error)
            .field("created_at", &self.created_at)
            .field("sent_at", &self.sent_at)
            .field("message_id", &self.message_id)
            .field("class", &self.class)
            .field("stale_after", &self.stale_after)
            .finish_non_exhaustive()
    }
}

/// Outbox message counts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutboxCounts {
    /// Pending messages of every class.
    pub pending: u64,
    pub sent: u64,
    pub dead: u64,
    /// Of `pending`, how many are [`MailClass::Bulk`].
    pub pending_bulk: u64,
    /// Of `pending`, the transactional messages that failed at least once (waiting for
    /// a retry).
    pub retrying_transactional: u64,
    /// Of `pending`, the bulk messages that failed at least once.
    pub retrying_bulk: u64,
}

/// One run of the password-expiry sweep: its history entry, and its progress while it
/// runs. The store keeps what it is given; the values below are the sweep's vocabulary.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepRun {
    /// A UUID.
    pub id: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `running`, `completed`, `failed` or `interrupted` (the store refuses others).
    pub status: String,
    /// True when nothing was queued, only counted.
    pub dry_run: bool,
    /// What started it: `schedule`, `api` or `cli`.
    pub trigger: String,
    /// The sweep's notion of now (which passwords count as expiring).
    pub at: DateTime<Utc>,
    /// Accounts looked at.
    pub scanned: u64,
    /// Notices queued by this run.
    pub notified: u64,
    /// Notices due but already in the ledger (queued by an earlier run).
    pub already_notified: u64,
    /// Accounts with a notice due but no mail address.
    pub no_mail: u64,
    /// Accounts whose password has expired.
    pub expired: u64,
    /// Accounts that could not be handled (errors).
    pub failed: u64,
    /// Why the run failed or was interrupted.
    pub error: Option<String>,
    /// Anything else worth keeping (JSON).
    pub summary: Option<serde_json::Value>,
}

/// One line of a sweep's report (the digest's CSV, the CLI's table): an account with a
/// notice due, an expired password, or no way to be notified, and what the sweep did.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SweepReportLine {
    /// Order within the sweep, from 0.
    pub seq: u64,
    pub user_name: String,
    pub display_name: Option<String>,
    pub mail: Option<String>,
    /// `t14`, `t7`, ... or `expired`.
    pub notice: String,
    pub expires_at: DateTime<Utc>,
    /// `expires_at` in the sweep's time zone, as the messages show it.
    pub expires_at_local: String,
    pub days_left: u32,
    /// `queued`, `already-sent`, `no-mail`, `would-queue` (dry run), `failed`.
    pub status: String,
    /// Why the account was not notified.
    pub reason: Option<String>,
}

/// [`SweepRun::status`] values.
pub mod sweep_status {
    pub const RUNNING: &str = "running";
    pub const COMPLETED: &str = "completed";
    pub const FAILED: &str = "failed";
    pub const INTERRUPTED: &str = "interrupted";
}
