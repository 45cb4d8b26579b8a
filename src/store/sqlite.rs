//! [`SqliteStore`]: the [`Store`] backed by one SQLite file (WAL mode).
//!
//! Owns the connection settings (WAL, busy timeout, foreign keys, secure delete) and
//! the SQL text for SQLite. SQL is written out by hand and checked at run time
//! (`sqlx::query`, never the compile-time macros); no statement is built from input.
//! It must not decide anything beyond storage: the outbox worker decides when to
//! retry, the caller decides what is secret.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};

mod audit_writer;
mod selfservice;

use self::audit_writer::AuditWriter;
use super::chain::{self, GENESIS};
use super::{
    AuditQuery, AuditRecord, AuditSeal, ChainedAuditRecord, FlowRecord, JobItem, JobItemOutcome,
    JobRecord, MAX_AUDIT_PAGE, MAX_PAGE, MAX_REPORT_PAGE, MailClass, NewAuditRecord, NewFlow,
    NewJob, NewOutboxMessage, NewResetRequest, NewSession, NewToken, NewWelcomeLink, OutboxCounts,
    OutboxMessage, OutboxStatus, PendingAudit, RateDecision, RateQuota, ResetRequestRecord,
    SessionRecord, Store, StoreError, StoredAuditSeal, SweepReportLine, SweepRun, TokenRecord,
    WelcomeLinkRecord, sweep_status,
};

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/sqlite");

/// How long a statement waits for another connection's write lock before giving up
/// with [`StoreError::Unavailable`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_CONNECTIONS: u32 = 4;
/// The setting that records when the audit chain began (so existing records are
/// chained once, at the upgrade, and never again).
const CHAIN_STARTED: &str = "audit.chain_started";
/// Ledger keys looked up per statement (one bound JSON array).
const LEDGER_LOOKUP: usize = 2000;
/// Notices written per pair of statements (one bound JSON array).
const NOTICE_CHUNK: usize = 1000;
/// Job items inserted per statement (one bound JSON array).
const JOB_ITEM_CHUNK: usize = 5000;
/// Report lines stored per row (one JSON array).
const REPORT_BLOCK: usize = 1000;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// One connection whose commits are synced to disk (`synchronous = FULL`), for what
    /// must survive a power loss: the audit log and the notice ledger. (The other
    /// connections use NORMAL: in WAL mode a crash loses nothing committed, a power cut
    /// may lose the last commits.)
    durable: SqlitePool,
    /// The audit writer's thread, which commits whatever has queued up in one
    /// transaction (group commit): one sync per batch instead of one per record.
    audit_writer: AuditWriter,
    /// The folder of a temporary store, removed with its last clone.
    #[cfg(test)]
    _temporary: Option<std::sync::Arc<tempfile::TempDir>>,
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file (mode 600) and its parent folder
    /// (mode 700) when missing, and brings the schema up to date. Running it on an
    /// up-to-date database changes nothing.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        prepare_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            // Overwrite deleted content (erased secrets) instead of leaving it in free pages.
            .pragma("secure_delete", "ON");
        // No ping before each use: a connection to a local file does not go stale the
        // way a network one does, and the ping is one more round trip to the
        // connection's thread in front of every statement (an audit record's included).
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options.clone())
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        MIGRATOR.run(&pool).await?;
        let durable = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .test_before_acquire(false)
            .connect_with(options.synchronous(SqliteSynchronous::Full))
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
        Self::start(path, pool, durable).await
    }

    /// A private database in a temporary folder, for tests. The folder goes with the
    /// store's last clone.
    #[cfg(test)]
    pub async fn open_temporary() -> Result<SqliteStore, StoreError> {
        let dir = tempfile::tempdir()
            .map_err(|e| StoreError::Unavailable(format!("temporary folder: {e}")))?;
        let mut store = SqliteStore::open(&dir.path().join("lockbridge.db")).await?;
        store._temporary = Some(std::sync::Arc::new(dir));
        Ok(store)
    }

    /// Chains the audit records written before the chain existed (once, the first time
    /// a store with the chain opens the database), and starts the audit writer. Must be
    /// called inside a Tokio runtime.
    async fn start(
        path: &Path,
        pool: SqlitePool,
        durable: SqlitePool,
    ) -> Result<SqliteStore, StoreError> {
        let mut tx = durable
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("audit record"))?;
        let started: Option<String> =
            sqlx::query_scalar("SELECT value FROM settings WHERE key = ?1")
                .bind(CHAIN_STARTED)
                .fetch_optional(&mut *tx)
                .await
                .map_err(err("audit record"))?;
        // Only once: a record that has no hash later was not written by lockbridge, and
        // chaining it then would launder it.
        if started.is_none() {
            let chained = chain_existing_records(&mut tx).await?;
            sqlx::query("INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)")
                .bind(CHAIN_STARTED)
                .bind(serde_json::json!({ "existingRecords": chained }).to_string())
                .bind(ts(Utc::now()))
                .execute(&mut *tx)
                .await
                .map_err(err("audit record"))?;
        }
        tx.commit().await.map_err(err("audit record"))?;
        let audit_writer = AuditWriter::start(path)?;
        Ok(SqliteStore {
            pool,
            durable,
            audit_writer,
            #[cfg(test)]
            _temporary: None,
        })
    }

    /// Closes every connection (checkpointing the WAL into the main file).
    pub async fn close(&self) {
        self.audit_writer.close().await;
        self.durable.close().await;
        self.pool.close().await;
    }

    /// The underlying pool, for tests that inspect raw rows.
    #[cfg(test)]
    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Creates the parent folder and an empty file with owner-only permissions, so the
/// database is never readable by others, not even between creation and first chmod.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    let unavailable =
        |what: &str, e: std::io::Error| StoreError::Unavailable(format!("{what}: {e}"));
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.is_dir()
    {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(parent)
            .map_err(|e| unavailable(&format!("cannot create {}", parent.display()), e))?;
    }
    if !path.exists() {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options
            .open(path)
            .map_err(|e| unavailable(&format!("cannot create {}", path.display()), e))?;
    }
    Ok(())
}

/// Times are stored in one fixed-width UTC format so that text comparison in SQL is
/// time comparison.
fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn err(unique: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| StoreError::classify(e, unique)
}

fn decode_error(what: String) -> StoreError {
    StoreError::Other(sqlx::Error::Decode(what.into()))
}

/// Chains the records written before the chain existed, in id order, and returns how
/// many there were.
async fn chain_existing_records(conn: &mut SqliteConnection) -> Result<usize, StoreError> {
    let rows: Vec<ChainRow> = sqlx::query_as(
        "SELECT id, at, request_id, actor, action, target, outcome, detail, prev_hash, hash \
         FROM audit_log WHERE hash IS NULL ORDER BY id",
    )
    .fetch_all(&mut *conn)
    .await
    .map_err(err("audit record"))?;
    let mut prev = GENESIS.to_vec();
    let count = rows.len();
    for row in rows {
        let record = row.into_record()?;
        let hash = chain::record_hash(&prev, &record.chain_fields());
        sqlx::query("UPDATE audit_log SET prev_hash = ?1, hash = ?2 WHERE id = ?3")
            .bind(&prev)
            .bind(&hash)
            .bind(record.record.id)
            .execute(&mut *conn)
            .await
            .map_err(err("audit record"))?;
        prev = hash;
    }
    if count > 0 {
        tracing::info!(
            records = count,
            "audit log: chained the records written before the chain existed"
        );
    }
    Ok(count)
}

#[derive(sqlx::FromRow)]
struct ChainRow {
    id: i64,
    at: String,
    request_id: Option<String>,
    actor: String,
    action: String,
    target: Option<String>,
    outcome: String,
    detail: Option<String>,
    prev_hash: Option<Vec<u8>>,
    hash: Option<Vec<u8>>,
}

impl ChainRow {
    fn into_record(self) -> Result<ChainedAuditRecord, StoreError> {
        let at = DateTime::parse_from_rfc3339(&self.at)
            .map_err(|e| {
                decode_error(format!("audit record {}: time {:?}: {e}", self.id, self.at))
            })?
            .with_timezone(&Utc);
        Ok(ChainedAuditRecord {
            record: AuditRecord {
                id: self.id,
                at,
                request_id: self.request_id,
                actor: self.actor,
                action: self.action,
                target: self.target,
                outcome: self.outcome,
                detail: self.detail,
            },
            at_text: self.at,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SealRow {
    id: i64,
    at: DateTime<Utc>,
    record_id: i64,
    head_hash: Vec<u8>,
    mac: Vec<u8>,
}

impl From<SealRow> for StoredAuditSeal {
    fn from(r: SealRow) -> Self {
        StoredAuditSeal {
            id: r.id,
            seal: AuditSeal {
                at: r.at,
                record_id: r.record_id,
                head_hash: r.head_hash,
                mac: r.mac,
            },
        }
    }
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    name: String,
    role: String,
    created_at: DateTime<Utc>,
    revoked_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for TokenRecord {
    fn from(r: TokenRow) -> Self {
        TokenRecord {
            id: r.id,
            name: r.name,
            role: r.role,
            created_at: r.created_at,
            revoked_at: r.revoked_at,
        }
    }
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: DateTime<Utc>,
    request_id: Option<String>,
    actor: String,
    action: String,
    target: Option<String>,
    outcome: String,
    detail: Option<String>,
}

impl From<AuditRow> for AuditRecord {
    fn from(r: AuditRow) -> Self {
        AuditRecord {
            id: r.id,
            at: r.at,
            request_id: r.request_id,
            actor: r.actor,
            action: r.action,
            target: r.target,
            outcome: r.outcome,
            detail: r.detail,
        }
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    template: String,
    recipient: String,
    context: String,
    sealed_secret: Option<Vec<u8>>,
    status: String,
    attempts: i64,
    next_attempt_at: DateTime<Utc>,
    last_error: Option<String>,
    created_at: DateTime<Utc>,
    sent_at: Option<DateTime<Utc>>,
    message_id: String,
    class: String,
    stale_after: Option<DateTime<Utc>>,
}

impl TryFrom<OutboxRow> for OutboxMessage {
    type Error = StoreError;

    fn try_from(r: OutboxRow) -> Result<Self, StoreError> {
        let context = serde_json::from_str(&r.context)
            .map_err(|e| decode_error(format!("outbox {}: context is not JSON: {e}", r.id)))?;
        let status = OutboxStatus::from_str(&r.status)
            .map_err(|e| decode_error(format!("outbox {}: {e}", r.id)))?;
        let class = MailClass::from_str(&r.class)
            .map_err(|e| decode_error(format!("outbox {}: {e}", r.id)))?;
        Ok(OutboxMessage {
            id: r.id,
            template: r.template,
            recipient: r.recipient,
            context,
            sealed_secret: r.sealed_secret,
            status,
            attempts: u32::try_from(r.attempts.max(0)).unwrap_or(u32::MAX),
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            created_at: r.created_at,
            sent_at: r.sent_at,
            message_id: r.message_id,
            class,
            stale_after: r.stale_after,
        })
    }
}

/// The outbox columns, in `OutboxRow` order (a macro so statements stay `&'static str`).
macro_rules! outbox_columns {
    () => {
        "id, template, recipient, context, sealed_secret, status, attempts, \
         next_attempt_at, last_error, created_at, sent_at, message_id, class, stale_after"
    };
}

/// The conditions that make an outbox row claimable at `?2` (a macro for the same
/// reason as `outbox_columns`).
macro_rules! claimable {
    () => {
        "status = 'pending' AND next_attempt_at <= ?2 \
         AND (lease_until IS NULL OR lease_until <= ?2)"
    };
}

#[derive(sqlx::FromRow)]
struct SweepRow {
    id: String,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    status: String,
    dry_run: bool,
    triggered_by: String,
    sweep_at: DateTime<Utc>,
    scanned: i64,
    notified: i64,
    already_notified: i64,
    no_mail: i64,
    expired: i64,
    failed: i64,
    error: Option<String>,
    summary: Option<String>,
}

impl TryFrom<SweepRow> for SweepRun {
    type Error = StoreError;

    fn try_from(r: SweepRow) -> Result<Self, StoreError> {
        let summary = r
            .summary
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| decode_error(format!("sweep run {}: summary is not JSON: {e}", r.id)))?;
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(SweepRun {
            started_at: r.started_at,
            finished_at: r.finished_at,
            status: r.status,
            dry_run: r.dry_run,
            trigger: r.triggered_by,
            at: r.sweep_at,
            scanned: count(r.scanned),
            notified: count(r.notified),
            already_notified: count(r.already_notified),
            no_mail: count(r.no_mail),
            expired: count(r.expired),
            failed: count(r.failed),
            error: r.error,
            summary,
            id: r.id,
        })
    }
}

macro_rules! sweep_columns {
    () => {
        "id, started_at, finished_at, status, dry_run, triggered_by, sweep_at, scanned, \
         notified, already_notified, no_mail, expired, failed, error, summary"
    };
}

/// A counter as SQLite's signed integer.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn to_json_text(value: &serde_json::Value) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(sqlx::Error::Encode(e.into())))
}

/// Inserts one outbox row (due at once, fresh Message-ID) on `conn`, which may be inside
/// a transaction, and returns its id.
async fn insert_outbox(
    conn: &mut SqliteConnection,
    m: &NewOutboxMessage,
) -> Result<i64, StoreError> {
    let message_id = new_message_id();
    let created = ts(m.created_at);
    let done = sqlx::query(
        "INSERT INTO outbox (message_id, template, recipient, context, sealed_secret, \
                             status, attempts, next_attempt_at, created_at, class, stale_after) \
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?6, ?7, ?8)",
    )
    .bind(message_id)
    .bind(&m.template)
    .bind(&m.recipient)
    .bind(to_json_text(&m.context)?)
    .bind(&m.sealed_secret)
    .bind(created)
    .bind(m.class.as_str())
    .bind(m.stale_after.map(ts))
    .execute(conn)
    .await
    .map_err(err("outbox message id"))?;
    Ok(done.last_insert_rowid())
}

/// A fresh Message-ID. Time-ordered (UUIDv7): new ids land at the end of the outbox's
/// unique index instead of on a random page of it, which on a sweep that queues tens of
/// thousands of notices is many fewer pages written per commit.
fn new_message_id() -> String {
    format!("<{}@lockbridge>", uuid::Uuid::now_v7())
}

/// The positions in `keys` of the keys the notice ledger holds. The keys go in as one
/// bound JSON array and the answer comes back as one row (the positions, comma-separated):
/// sqlx hands every result row from its SQLite thread to the caller separately, and at
/// a row per key that hand-off was most of a steady-state sweep's look-up time.
async fn ledger_positions_present<'c>(
    executor: impl sqlx::SqliteExecutor<'c>,
    keys: &[&str],
) -> Result<std::collections::HashSet<usize>, StoreError> {
    let keys = serde_json::to_string(keys)
        .map_err(|e| StoreError::Other(sqlx::Error::Encode(e.into())))?;
    let positions: Option<String> = sqlx::query_scalar(
        "SELECT group_concat(j.key) FROM json_each(?1) AS j \
         WHERE EXISTS (SELECT 1 FROM notice_ledger AS l WHERE l.key = j.value)",
    )
    .bind(keys)
    .fetch_one(executor)
    .await
    .map_err(err("notice ledger"))?;
    positions
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<usize>().map_err(|_| {
                StoreError::Unavailable("the ledger look-up returned a bad position".into())
            })
        })
        .collect()
}

/// Queues `notices` (ledger key, message) on `conn`, inside the caller's transaction:
/// their outbox rows (due at once, fresh Message-IDs), then their ledger rows pointing at
/// them. Two statements whatever the number, each reading one bound JSON array (one
/// array per notice), and no row comes back.
async fn insert_notices(
    conn: &mut SqliteConnection,
    sweep_id: Option<&str>,
    notices: &[(&str, &NewOutboxMessage)],
) -> Result<(), StoreError> {
    let mut rows = Vec::with_capacity(notices.len());
    for (key, m) in notices {
        rows.push(serde_json::json!([
            key,
            new_message_id(),
            m.template,
            m.recipient,
            to_json_text(&m.context)?,
            m.sealed_secret.as_deref().map(hex::encode),
            ts(m.created_at),
            m.class.as_str(),
            m.stale_after.map(ts),
        ]));
    }
    let rows = to_json_text(&serde_json::Value::Array(rows))?;
    sqlx::query(
        "INSERT INTO outbox (message_id, template, recipient, context, sealed_secret, \
                             status, attempts, next_attempt_at, created_at, class, stale_after) \
         SELECT value ->> 1, value ->> 2, value ->> 3, value ->> 4, unhex(value ->> 5), \
                'pending', 0, value ->> 6, value ->> 6, value ->> 7, value ->> 8 \
         FROM json_each(?1) ORDER BY key",
    )
    .bind(&rows)
    .execute(&mut *conn)
    .await
    .map_err(err("outbox message id"))?;
    // Each ledger row finds its outbox row by Message-ID (a unique index).
    sqlx::query(
        "INSERT INTO notice_ledger (key, sweep_id, created_at, outbox_id) \
         SELECT value ->> 0, ?2, value ->> 6, \
                (SELECT id FROM outbox WHERE message_id = value ->> 1) \
         FROM json_each(?1)",
    )
    .bind(&rows)
    .bind(sweep_id)
    .execute(&mut *conn)
    .await
    .map_err(err("notice ledger key"))?;
    Ok(())
}

macro_rules! job_columns {
    () => {
        "j.id, j.kind, j.actor, j.actor_dn, j.roles, j.params, j.sealed_secret, j.status, \
         j.total, j.created_at, j.finished_at, j.error, j.report_taken_at, \
         j.done, j.refused, j.failed, j.total - j.done - j.refused - j.failed AS open \
         FROM jobs j"
    };
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: String,
    kind: String,
    actor: String,
    actor_dn: Option<String>,
    roles: String,
    params: String,
    sealed_secret: Option<Vec<u8>>,
    status: String,
    total: i64,
    created_at: String,
    finished_at: Option<String>,
    error: Option<String>,
    report_taken_at: Option<String>,
    done: i64,
    refused: i64,
    failed: i64,
    open: i64,
}

fn parse_time(what: &str, text: &str) -> Result<DateTime<Utc>, StoreError> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| decode_error(format!("{what} {text:?}: {e}")))
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        let count = |n: i64| u64::try_from(n).unwrap_or(0);
        Ok(JobRecord {
            roles: serde_json::from_str(&r.roles)
                .map_err(|e| decode_error(format!("job {} roles: {e}", r.id)))?,
            params: serde_json::from_str(&r.params)
                .map_err(|e| decode_error(format!("job {} params: {e}", r.id)))?,
            created_at: parse_time("job created", &r.created_at)?,
            finished_at: r
                .finished_at
                .as_deref()
                .map(|t| parse_time("job finished", t))
                .transpose()?,
            id: r.id,
            kind: r.kind,
            actor: r.actor,
            actor_dn: r.actor_dn,
            sealed_secret: r.sealed_secret,
            status: r.status,
            total: count(r.total),
            done: count(r.done),
            refused: count(r.refused),
            failed: count(r.failed),
            open: count(r.open),
            error: r.error,
            report_taken: r.report_taken_at.is_some(),
        })
    }
}

#[derive(sqlx::FromRow)]
struct JobItemRow {
    seq: i64,
    user_name: String,
    status: String,
    code: Option<String>,
    changed: bool,
    sealed_password: Option<Vec<u8>>,
    unanswered: i32,
}

impl From<JobItemRow> for JobItem {
    fn from(r: JobItemRow) -> Self {
        JobItem {
            seq: u64::try_from(r.seq).unwrap_or(0),
            user_name: r.user_name,
            status: r.status,
            code: r.code,
            changed: r.changed,
            sealed_password: r.sealed_password,
            unanswered: u32::try_from(r.unanswered).unwrap_or(u32::MAX),
        }
    }
}

/// Claimed rows in claiming order: transactional first, then oldest due.
fn claimed(rows: Vec<OutboxRow>) -> Result<Vec<OutboxMessage>, StoreError> {
    let mut messages = rows
        .into_iter()
        .map(OutboxMessage::try_from)
        .collect::<Result<Vec<_>, _>>()?;
    // RETURNING gives no order guarantee.
    messages.sort_by_key(|m| (m.class == MailClass::Bulk, m.next_attempt_at, m.id));
    Ok(messages)
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::hours(1));
    now.checked_add_signed(lease).unwrap_or(now)
}

/// Long error texts from a relay are cut, so one bad reply cannot bloat the table.
fn clip(error: &str) -> &str {
    const MAX: usize = 2000;
    if error.len() <= MAX {
        return error;
    }
    let mut end = MAX;
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    &error[..end]
}

/// Raises the revocation mark in the revoking transaction, so no instance can see the
/// revocation without the mark having moved.
async fn raise_revocation_mark(conn: &mut SqliteConnection) -> Result<(), StoreError> {
    sqlx::query("UPDATE revocations SET counter = counter + 1 WHERE id = 1")
        .execute(&mut *conn)
        .await
        .map_err(err("revocation mark"))?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(err("ping"))?;
        Ok(())
    }

    async fn insert_token(&self, t: &NewToken) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(ts(t.created_at))
        .execute(&self.pool)
        .await
        .map_err(|e| {
            // SQLite names the column in the message: "UNIQUE constraint failed:
            // api_tokens.name". An id or hash clash is a caller bug, not "name taken".
            let label = match &e {
                sqlx::Error::Database(db) if !db.message().contains("api_tokens.name") => {
                    "token id or hash"
                }
                _ => "token name",
            };
            StoreError::classify(e, label)
        })?;
        Ok(())
    }

    async fn insert_session(&self, s: &NewSession) -> Result<(), StoreError> {
        let roles = serde_json::to_string(&s.roles)
            .map_err(|e| StoreError::Other(sqlx::Error::Encode(e.into())))?;
        let mut tx = self.pool.begin().await.map_err(err("session"))?;
        // Sessions that ended a day ago are no use to anyone (the audit log keeps who
        // signed in when).
        sqlx::query("DELETE FROM sessions WHERE expires_at < ?1")
            .bind(ts(s.created_at - chrono::Duration::days(1)))
            .execute(&mut *tx)
            .await
            .map_err(err("session"))?;
        sqlx::query(
            "INSERT INTO sessions (id, hash, user_dn, user_name, roles, created_at, expires_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )
        .bind(&s.id)
        .bind(&s.hash)
        .bind(&s.user_dn)
        .bind(&s.user_name)
        .bind(roles)
        .bind(ts(s.created_at))
        .bind(ts(s.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| StoreError::classify(e, "session id or hash"))?;
        tx.commit().await.map_err(err("session"))?;
        Ok(())
    }

    async fn find_session_by_hash(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row: Option<(String, String, String, String, String)> = sqlx::query_as(
            "SELECT id, user_dn, user_name, roles, expires_at FROM sessions \
             WHERE hash = ?1 AND revoked_at IS NULL AND expires_at > ?2",
        )
        .bind(hash)
        .bind(ts(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(err("session"))?;
        let Some((id, user_dn, user_name, roles, expires_at)) = row else {
            return Ok(None);
        };
        Ok(Some(SessionRecord {
            id,
            user_dn,
            user_name,
            roles: serde_json::from_str(&roles)
                .map_err(|e| StoreError::Other(sqlx::Error::Decode(e.into())))?,
            expires_at: DateTime::parse_from_rfc3339(&expires_at)
                .map_err(|e| decode_error(format!("session expiry {expires_at:?}: {e}")))?
                .with_timezone(&Utc),
        }))
    }

    async fn revoke_session(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("session"))?;
        let done = sqlx::query(
            "UPDATE sessions SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL \
             AND expires_at > ?1",
        )
        .bind(ts(at))
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(err("session"))?;
        let ended = done.rows_affected() > 0;
        if ended {
            raise_revocation_mark(&mut tx).await?;
        }
        tx.commit().await.map_err(err("session"))?;
        Ok(ended)
    }

    async fn insert_job(&self, job: &NewJob, user_names: &[String]) -> Result<(), StoreError> {
        let mut tx = self
            .durable
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("job"))?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, actor, actor_dn, roles, params, sealed_secret, status, \
                               total, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'running', ?8, ?9)",
        )
        .bind(&job.id)
        .bind(&job.kind)
        .bind(&job.actor)
        .bind(&job.actor_dn)
        .bind(to_json_text(&serde_json::json!(job.roles))?)
        .bind(to_json_text(&job.params)?)
        .bind(&job.sealed_secret)
        .bind(int(user_names.len() as u64))
        .bind(ts(job.created_at))
        .execute(&mut *tx)
        .await
        .map_err(err("job id"))?;
        for (chunk_number, chunk) in user_names.chunks(JOB_ITEM_CHUNK).enumerate() {
            let first = chunk_number * JOB_ITEM_CHUNK;
            // One bound JSON array per chunk: [user name, ...], numbered from `first`.
            sqlx::query(
                "INSERT INTO job_items (job_id, seq, user_name, status) \
                 SELECT ?1, ?2 + key, value, 'pending' FROM json_each(?3)",
            )
            .bind(&job.id)
            .bind(int(first as u64))
            .bind(to_json_text(&serde_json::json!(chunk))?)
            .execute(&mut *tx)
            .await
            .map_err(err("job item"))?;
        }
        tx.commit().await.map_err(err("job"))?;
        Ok(())
    }

    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let rows: Vec<JobRow> =
            sqlx::query_as(concat!("SELECT ", job_columns!(), " WHERE j.id = ?1"))
                .bind(id)
                .fetch_all(&self.pool)
                .await
                .map_err(err("job"))?;
        rows.into_iter().next().map(JobRecord::try_from).transpose()
    }

    async fn running_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " WHERE j.status = 'running' ORDER BY j.created_at"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(err("job"))?;
        rows.into_iter().map(JobRecord::try_from).collect()
    }

    async fn open_job_items(
        &self,
        id: &str,
        after: Option<u64>,
        limit: u32,
    ) -> Result<Vec<JobItem>, StoreError> {
        let rows: Vec<JobItemRow> = sqlx::query_as(
            "SELECT seq, user_name, status, code, changed, sealed_password, unanswered \
             FROM job_items \
             WHERE job_id = ?1 AND status IN ('pending', 'writing') AND seq > ?3 \
             ORDER BY seq LIMIT ?2",
        )
        .bind(id)
        .bind(i64::from(limit))
        .bind(after.map_or(-1, int))
        .fetch_all(&self.pool)
        .await
        .map_err(err("job item"))?;
        Ok(rows.into_iter().map(JobItem::from).collect())
    }

    async fn job_items_page(
        &self,
        id: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<JobItem>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<JobItemRow> = sqlx::query_as(
            "SELECT seq, user_name, status, code, changed, NULL AS sealed_password, unanswered \
             FROM job_items \
             WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
        )
        .bind(id)
        .bind(after_seq.map_or(-1, int))
        .bind(i64::from(limit.min(MAX_PAGE)))
        .fetch_all(&self.pool)
        .await
        .map_err(err("job item"))?;
        Ok(rows.into_iter().map(JobItem::from).collect())
    }

    async fn mark_job_items_writing(
        &self,
        id: &str,
        items: &[(u64, Vec<u8>)],
    ) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = items
            .iter()
            .map(|(seq, sealed)| serde_json::json!([seq, hex::encode(sealed)]))
            .collect();
        let mut tx = self
            .durable
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("job item"))?;
        // The array is read once into a table, then each item found by its key: a join
        // straight on json_each re-read the JSON for every row it compared.
        sqlx::query(
            "WITH j (seq, sealed) AS MATERIALIZED ( \
                 SELECT CAST(value ->> 0 AS INTEGER), unhex(value ->> 1) FROM json_each(?2)) \
             UPDATE job_items SET status = 'writing', sealed_password = j.sealed \
             FROM j WHERE job_items.job_id = ?1 AND job_items.seq = j.seq \
               AND job_items.status = 'pending'",
        )
        .bind(id)
        .bind(to_json_text(&serde_json::Value::Array(rows))?)
        .execute(&mut *tx)
        .await
        .map_err(err("job item"))?;
        tx.commit().await.map_err(err("job item"))?;
        Ok(())
    }

    async fn count_unanswered_job_items(&self, id: &str, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = seqs.iter().map(|s| int(*s)).collect();
        sqlx::query(
            "UPDATE job_items SET unanswered = unanswered + 1 \
             WHERE job_id = ?1 AND status IN ('pending', 'writing') \
               AND seq IN (SELECT value FROM json_each(?2))",
        )
        .bind(id)
        .bind(to_json_text(&serde_json::json!(seqs))?)
        .execute(&self.durable)
        .await
        .map_err(err("job item"))?;
        Ok(())
    }

    async fn finish_job_items(&self, id: &str, items: &[JobItemOutcome]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        let rows: Vec<serde_json::Value> = items
            .iter()
            .map(|o| {
                serde_json::json!([
                    o.seq,
                    o.status,
                    o.code,
                    o.changed,
                    o.sealed_password.as_deref().map(hex::encode)
                ])
            })
            .collect();
        let mut tx = self
            .durable
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("job item"))?;
        sqlx::query(
            "WITH j (seq, status, code, changed, sealed) AS MATERIALIZED ( \
                 SELECT CAST(value ->> 0 AS INTEGER), value ->> 1, value ->> 2, value ->> 3, \
                        unhex(value ->> 4) FROM json_each(?2)) \
             UPDATE job_items SET status = j.status, code = j.code, changed = j.changed, \
                 sealed_password = j.sealed \
             FROM j WHERE job_items.job_id = ?1 AND job_items.seq = j.seq",
        )
        .bind(id)
        .bind(to_json_text(&serde_json::Value::Array(rows))?)
        .execute(&mut *tx)
        .await
        .map_err(err("job item"))?;
        // Recounted once per batch, so that reading a job's progress counts nothing.
        sqlx::query(
            "UPDATE jobs SET \
                 done = (SELECT count(*) FROM job_items WHERE job_id = ?1 AND status = 'done'), \
                 refused = (SELECT count(*) FROM job_items WHERE job_id = ?1 AND status = 'refused'), \
                 failed = (SELECT count(*) FROM job_items WHERE job_id = ?1 AND status = 'failed') \
             WHERE id = ?1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(err("job"))?;
        tx.commit().await.map_err(err("job item"))?;
        Ok(())
    }

    async fn finish_job(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET status = ?2, error = ?3, finished_at = ?4, sealed_secret = NULL \
             WHERE id = ?1",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(ts(at))
        .execute(&self.pool)
        .await
        .map_err(err("job"))?;
        Ok(())
    }

    async fn take_job_report(
        &self,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Vec<JobItem>>, StoreError> {
        let mut tx = self
            .durable
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("job report"))?;
        let taken = sqlx::query(
            "UPDATE jobs SET report_taken_at = ?2 WHERE id = ?1 AND report_taken_at IS NULL \
             AND status != 'running'",
        )
        .bind(id)
        .bind(ts(at))
        .execute(&mut *tx)
        .await
        .map_err(err("job report"))?;
        if taken.rows_affected() == 0 {
            return Ok(None);
        }
        let rows: Vec<JobItemRow> = sqlx::query_as(
            "SELECT seq, user_name, status, code, changed, sealed_password, unanswered \
             FROM job_items \
             WHERE job_id = ?1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(err("job report"))?;
        sqlx::query("UPDATE job_items SET sealed_password = NULL WHERE job_id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err("job report"))?;
        tx.commit().await.map_err(err("job report"))?;
        Ok(Some(rows.into_iter().map(JobItem::from).collect()))
    }

    async fn find_token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at, revoked_at FROM api_tokens \
             WHERE hash = ?1 AND revoked_at IS NULL",
        )
        .bind(hash)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("token"))?;
        Ok(row.map(TokenRecord::from))
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at, revoked_at FROM api_tokens \
             ORDER BY created_at, name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err("token"))?;
        Ok(rows.into_iter().map(TokenRecord::from).collect())
    }

    async fn revoke_token(&self, name: &str) -> Result<bool, StoreError> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("token"))?;
        let done = sqlx::query(
            "UPDATE api_tokens SET revoked_at = ?1 WHERE name = ?2 AND revoked_at IS NULL",
        )
        .bind(ts(Utc::now()))
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(err("token"))?;
        let revoked = done.rows_affected() > 0;
        if revoked {
            raise_revocation_mark(&mut tx).await?;
        }
        tx.commit().await.map_err(err("token"))?;
        Ok(revoked)
    }

    async fn append_audit(&self, r: &NewAuditRecord) -> Result<i64, StoreError> {
        self.audit_writer.append(r).await
    }

    async fn append_audit_many(&self, records: Vec<NewAuditRecord>) -> Result<(), StoreError> {
        self.audit_writer.append_many(records).await
    }

    fn pending_audit(&self) -> PendingAudit {
        self.audit_writer.pending()
    }

    async fn audit_chain_page(
        &self,
        after_id: i64,
        since: Option<DateTime<Utc>>,
        limit: u32,
    ) -> Result<Vec<ChainedAuditRecord>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<ChainRow> = sqlx::query_as(
            "SELECT id, at, request_id, actor, action, target, outcome, detail, prev_hash, hash \
             FROM audit_log WHERE id > ?1 AND (?2 IS NULL OR at >= ?2) ORDER BY id LIMIT ?3",
        )
        .bind(after_id)
        .bind(since.map(ts))
        .bind(i64::from(limit.min(MAX_AUDIT_PAGE)))
        .fetch_all(&self.pool)
        .await
        .map_err(err("audit record"))?;
        rows.into_iter().map(ChainRow::into_record).collect()
    }

    async fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        let head: Option<(i64, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(err("audit record"))?;
        Ok(head.and_then(|(id, hash)| hash.map(|h| (id, h))))
    }

    async fn append_audit_seal(&self, s: &AuditSeal) -> Result<i64, StoreError> {
        let done = sqlx::query(
            "INSERT INTO audit_seals (at, record_id, head_hash, mac) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(ts(s.at))
        .bind(s.record_id)
        .bind(&s.head_hash)
        .bind(&s.mac)
        .execute(&self.durable)
        .await
        .map_err(err("audit seal"))?;
        Ok(done.last_insert_rowid())
    }

    async fn audit_seals_page(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<StoredAuditSeal>, StoreError> {
        let rows: Vec<SealRow> = sqlx::query_as(
            "SELECT id, at, record_id, head_hash, mac FROM audit_seals WHERE id > ?1 \
             ORDER BY id LIMIT ?2",
        )
        .bind(after_id)
        .bind(i64::from(limit.min(MAX_PAGE)))
        .fetch_all(&self.pool)
        .await
        .map_err(err("audit seal"))?;
        Ok(rows.into_iter().map(StoredAuditSeal::from).collect())
    }

    async fn last_audit_seal(&self) -> Result<Option<StoredAuditSeal>, StoreError> {
        let row: Option<SealRow> = sqlx::query_as(
            "SELECT id, at, record_id, head_hash, mac FROM audit_seals ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await
        .map_err(err("audit seal"))?;
        Ok(row.map(StoredAuditSeal::from))
    }

    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        if q.limit == 0 {
            return Ok(Vec::new());
        }
        let mut page = q.page_sql();
        let rows: Vec<AuditRow> = page
            .build_query_as()
            .fetch_all(&self.pool)
            .await
            .map_err(err("audit record"))?;
        Ok(rows.into_iter().map(AuditRecord::from).collect())
    }

    async fn enqueue_mail(&self, m: &NewOutboxMessage) -> Result<i64, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(err("outbox"))?;
        insert_outbox(&mut conn, m).await
    }

    async fn claim_due_mail(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        // One UPDATE statement is one SQLite write transaction: the rows it selects
        // cannot be leased by anyone else between the SELECT and the SET. Each class is
        // read through its own index, at most `limit` rows each, then ranked.
        let rows: Vec<OutboxRow> = sqlx::query_as(concat!(
            "UPDATE outbox SET lease_until = ?1 WHERE id IN ( \
                 SELECT id FROM ( \
                     SELECT id, 0 AS rank, next_attempt_at AS due FROM ( \
                         SELECT id, next_attempt_at FROM outbox \
                         WHERE class = 'transactional' AND ",
            claimable!(),
            "           ORDER BY next_attempt_at, id LIMIT ?3) \
                     UNION ALL \
                     SELECT id, 1 AS rank, next_attempt_at AS due FROM ( \
                         SELECT id, next_attempt_at FROM outbox \
                         WHERE class = 'bulk' AND ",
            claimable!(),
            "           ORDER BY next_attempt_at, id LIMIT ?3)) \
                 ORDER BY rank, due, id LIMIT ?3) \
             RETURNING ",
            outbox_columns!()
        ))
        .bind(ts(lease_end(now, lease)))
        .bind(ts(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(err("outbox"))?;
        claimed(rows)
    }

    async fn extend_mail_leases(
        &self,
        ids: &[i64],
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        // The ids travel as one JSON array (SQLite has no array parameter).
        let ids = format!(
            "[{}]",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        );
        let done = sqlx::query(
            "UPDATE outbox SET lease_until = ?1 \
             WHERE id IN (SELECT value FROM json_each(?2)) \
               AND status = 'pending' AND lease_until > ?3",
        )
        .bind(ts(until))
        .bind(ids)
        .bind(ts(now))
        .execute(&self.pool)
        .await
        .map_err(err("outbox"))?;
        Ok(done.rows_affected())
    }

    async fn mark_mail_sent(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'sent', sealed_secret = NULL, sent_at = ?1, \
                 attempts = attempts + 1, lease_until = NULL, last_error = NULL \
             WHERE id = ?2",
        )
        .bind(ts(at))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err("outbox"))?;
        found(done.rows_affected())
    }

    async fn mark_mail_failed(
        &self,
        id: i64,
        error: &str,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?1, next_attempt_at = ?2, \
                 lease_until = NULL \
             WHERE id = ?3",
        )
        .bind(clip(error))
        .bind(ts(next_attempt_at))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err("outbox"))?;
        found(done.rows_affected())
    }

    async fn mark_mail_dead(&self, id: i64, error: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'dead', sealed_secret = NULL, attempts = attempts + 1, \
                 last_error = ?1, lease_until = NULL \
             WHERE id = ?2",
        )
        .bind(clip(error))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err("outbox"))?;
        found(done.rows_affected())
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT status, COUNT(*) FROM outbox GROUP BY status")
                .fetch_all(&self.pool)
                .await
                .map_err(err("outbox"))?;
        let pending: Vec<(String, bool, i64)> = sqlx::query_as(
            "SELECT class, attempts > 0, COUNT(*) FROM outbox WHERE status = 'pending' \
             GROUP BY 1, 2",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(err("outbox"))?;
        let mut counts = OutboxCounts::default();
        for (class, retrying, n) in pending {
            let n = u64::try_from(n).unwrap_or(0);
            match (class.as_str(), retrying) {
                ("bulk", false) => counts.pending_bulk += n,
                ("bulk", true) => {
                    counts.pending_bulk += n;
                    counts.retrying_bulk += n;
                }
                (_, true) => counts.retrying_transactional += n,
                _ => {}
            }
        }
        for (status, n) in rows {
            let n = u64::try_from(n).unwrap_or(0);
            match OutboxStatus::from_str(&status) {
                Ok(OutboxStatus::Pending) => counts.pending = n,
                Ok(OutboxStatus::Sent) => counts.sent = n,
                Ok(OutboxStatus::Dead) => counts.dead = n,
                Err(e) => return Err(decode_error(e)),
            }
        }
        Ok(counts)
    }

    async fn get_mail(&self, id: i64) -> Result<Option<OutboxMessage>, StoreError> {
        let row: Option<OutboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("outbox"))?;
        row.map(OutboxMessage::try_from).transpose()
    }

    async fn claim_due_mail_of_class(
        &self,
        class: MailClass,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<OutboxRow> = sqlx::query_as(concat!(
            "UPDATE outbox SET lease_until = ?1 WHERE id IN ( \
                 SELECT id FROM outbox WHERE class = ?4 AND ",
            claimable!(),
            "    ORDER BY next_attempt_at, id LIMIT ?3) \
             RETURNING ",
            outbox_columns!()
        ))
        .bind(ts(lease_end(now, lease)))
        .bind(ts(now))
        .bind(i64::from(limit))
        .bind(class.as_str())
        .fetch_all(&self.pool)
        .await
        .map_err(err("outbox"))?;
        claimed(rows)
    }

    async fn count_sent_since(
        &self,
        class: MailClass,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM outbox WHERE status = 'sent' AND class = ?1 AND sent_at >= ?2",
        )
        .bind(class.as_str())
        .bind(ts(since))
        .fetch_one(&self.pool)
        .await
        .map_err(err("outbox"))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn mark_due_mail_held(
        &self,
        class: MailClass,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE outbox SET held_at = ?2 \
             WHERE class = ?1 AND held_at IS NULL AND ",
            claimable!()
        ))
        .bind(class.as_str())
        .bind(ts(now))
        .execute(&self.pool)
        .await
        .map_err(err("outbox"))?;
        Ok(done.rows_affected())
    }

    async fn dead_letter_stale_mail(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'dead', sealed_secret = NULL, lease_until = NULL, \
                 last_error = 'not sent by ' || stale_after || ', after which it would be out \
                               of date; dropped unsent' \
             WHERE status = 'pending' AND stale_after IS NOT NULL AND stale_after <= ?1 \
               AND (lease_until IS NULL OR lease_until <= ?1)",
        )
        .bind(ts(now))
        .execute(&self.pool)
        .await
        .map_err(err("outbox"))?;
        Ok(done.rows_affected())
    }

    async fn list_dead_mail(
        &self,
        before_id: Option<i64>,
        limit: u32,
    ) -> Result<Vec<OutboxMessage>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<OutboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox WHERE status = 'dead' AND (?1 IS NULL OR id < ?1) \
              ORDER BY id DESC LIMIT ?2"
        ))
        .bind(before_id)
        .bind(i64::from(limit.min(MAX_PAGE)))
        .fetch_all(&self.pool)
        .await
        .map_err(err("outbox"))?;
        rows.into_iter().map(OutboxMessage::try_from).collect()
    }

    async fn record_notice(
        &self,
        ledger_key: &str,
        sweep_id: Option<&str>,
        message: &NewOutboxMessage,
    ) -> Result<bool, StoreError> {
        // IMMEDIATE takes the write lock at BEGIN, so concurrent recorders queue up on
        // the busy timeout instead of failing to upgrade a read snapshot. The ledger is
        // what keeps a notice from going out twice: its commit is synced (durable).
        let mut tx = self
            .durable
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("notice ledger"))?;
        let inserted = sqlx::query(
            "INSERT INTO notice_ledger (key, sweep_id, created_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key) DO NOTHING",
        )
        .bind(ledger_key)
        .bind(sweep_id)
        .bind(ts(message.created_at))
        .execute(&mut *tx)
        .await
        .map_err(err("notice ledger key"))?
        .rows_affected();
        if inserted == 0 {
            tx.rollback().await.map_err(err("notice ledger"))?;
            return Ok(false);
        }
        let outbox_id = insert_outbox(&mut tx, message).await?;
        sqlx::query("UPDATE notice_ledger SET outbox_id = ?1 WHERE key = ?2")
            .bind(outbox_id)
            .bind(ledger_key)
            .execute(&mut *tx)
            .await
            .map_err(err("notice ledger"))?;
        tx.commit().await.map_err(err("notice ledger"))?;
        Ok(true)
    }

    async fn record_notices(
        &self,
        sweep_id: Option<&str>,
        notices: &[(String, NewOutboxMessage)],
    ) -> Result<Vec<bool>, StoreError> {
        // One write transaction for the whole batch, synced as in record_notice, and
        // three statements per chunk of notices rather than three per notice: which keys
        // are new, their outbox rows, their ledger rows. IMMEDIATE holds the write lock
        // from the start, so no other writer adds a key between the look-up and the
        // inserts.
        let mut tx = self
            .durable
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("notice ledger"))?;
        let mut queued = vec![false; notices.len()];
        let mut seen = std::collections::HashSet::new();
        for (chunk_number, chunk) in notices.chunks(NOTICE_CHUNK).enumerate() {
            let keys: Vec<&str> = chunk.iter().map(|(key, _)| key.as_str()).collect();
            let present = ledger_positions_present(&mut *tx, &keys).await?;
            let mut fresh = Vec::with_capacity(chunk.len());
            for (i, (key, message)) in chunk.iter().enumerate() {
                if !present.contains(&i) && seen.insert(key.as_str()) {
                    fresh.push((key.as_str(), message));
                    queued[chunk_number * NOTICE_CHUNK + i] = true;
                }
            }
            if !fresh.is_empty() {
                insert_notices(&mut tx, sweep_id, &fresh).await?;
            }
        }
        tx.commit().await.map_err(err("notice ledger"))?;
        Ok(queued)
    }

    async fn notices_recorded(&self, ledger_keys: &[String]) -> Result<Vec<bool>, StoreError> {
        let mut recorded = vec![false; ledger_keys.len()];
        for (chunk_number, chunk) in ledger_keys.chunks(LEDGER_LOOKUP).enumerate() {
            let keys: Vec<&str> = chunk.iter().map(String::as_str).collect();
            for position in ledger_positions_present(&self.pool, &keys).await? {
                if let Some(flag) = recorded.get_mut(chunk_number * LEDGER_LOOKUP + position) {
                    *flag = true;
                }
            }
        }
        Ok(recorded)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // One statement: insert, or take over only when the lease is ours or has run out.
        // A refused upsert changes no row.
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, held_until) VALUES (?1, ?2, ?4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                                              held_until = excluded.held_until \
             WHERE leases.holder = excluded.holder OR leases.held_until <= ?3",
        )
        .bind(name)
        .bind(holder)
        .bind(ts(now))
        .bind(ts(until))
        .execute(&self.pool)
        .await
        .map_err(err("lease"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = ?1 AND holder = ?2")
            .bind(name)
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(err("lease"))?;
        Ok(())
    }

    async fn append_sweep_report(
        &self,
        sweep_id: &str,
        lines: &[SweepReportLine],
    ) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await.map_err(err("sweep report"))?;
        for block in lines.chunks(REPORT_BLOCK) {
            let (Some(first), Some(last)) = (block.first(), block.last()) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO sweep_report (sweep_id, first_seq, last_seq, lines) \
                 VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(sweep_id)
            .bind(i64::try_from(first.seq).unwrap_or(i64::MAX))
            .bind(i64::try_from(last.seq).unwrap_or(i64::MAX))
            .bind(
                serde_json::to_string(block)
                    .map_err(|e| StoreError::Other(sqlx::Error::Encode(e.into())))?,
            )
            .execute(&mut *tx)
            .await
            .map_err(err("sweep report block"))?;
        }
        tx.commit().await.map_err(err("sweep report"))?;
        Ok(())
    }

    async fn sweep_report_page(
        &self,
        sweep_id: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<SweepReportLine>, StoreError> {
        use futures::TryStreamExt;
        let limit = limit.min(MAX_REPORT_PAGE) as usize;
        let after = after_seq.map_or(-1, |s| i64::try_from(s).unwrap_or(i64::MAX));
        let mut page = Vec::with_capacity(limit.min(REPORT_BLOCK));
        if limit == 0 {
            return Ok(page);
        }
        let mut blocks = sqlx::query_scalar::<_, String>(
            "SELECT lines FROM sweep_report WHERE sweep_id = ?1 AND last_seq > ?2 \
             ORDER BY first_seq",
        )
        .bind(sweep_id)
        .bind(after)
        .fetch(&self.pool);
        while let Some(block) = blocks.try_next().await.map_err(err("sweep report"))? {
            let lines: Vec<SweepReportLine> = serde_json::from_str(&block)
                .map_err(|e| decode_error(format!("sweep report block: {e}")))?;
            for line in lines {
                if i64::try_from(line.seq).unwrap_or(i64::MAX) > after {
                    page.push(line);
                    if page.len() == limit {
                        return Ok(page);
                    }
                }
            }
        }
        Ok(page)
    }

    async fn prune_sweep_reports(&self, before: DateTime<Utc>) -> Result<u64, StoreError> {
        let removed: Vec<i64> = sqlx::query_scalar(
            "DELETE FROM sweep_report WHERE sweep_id IN \
             (SELECT id FROM sweep_runs WHERE started_at < ?1) \
             RETURNING last_seq - first_seq + 1",
        )
        .bind(ts(before))
        .fetch_all(&self.pool)
        .await
        .map_err(err("sweep report"))?;
        Ok(removed
            .into_iter()
            .map(|n| u64::try_from(n).unwrap_or(0))
            .sum())
    }

    async fn insert_sweep_run(&self, run: &SweepRun) -> Result<(), StoreError> {
        let query = sqlx::query(concat!(
            "INSERT INTO sweep_runs (",
            sweep_columns!(),
            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ));
        bind_run(query, run)?
            .execute(&self.pool)
            .await
            .map_err(err("sweep run id"))?;
        Ok(())
    }

    async fn update_sweep_run(&self, run: &SweepRun) -> Result<(), StoreError> {
        let query = sqlx::query(
            "UPDATE sweep_runs SET started_at = ?2, finished_at = ?3, status = ?4, \
                 dry_run = ?5, triggered_by = ?6, sweep_at = ?7, scanned = ?8, notified = ?9, \
                 already_notified = ?10, no_mail = ?11, expired = ?12, failed = ?13, \
                 error = ?14, summary = ?15 \
             WHERE id = ?1",
        );
        let done = bind_run(query, run)?
            .execute(&self.pool)
            .await
            .map_err(err("sweep run"))?;
        found(done.rows_affected())
    }

    async fn get_sweep_run(&self, id: &str) -> Result<Option<SweepRun>, StoreError> {
        let row: Option<SweepRow> = sqlx::query_as(concat!(
            "SELECT ",
            sweep_columns!(),
            " FROM sweep_runs WHERE id = ?1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("sweep run"))?;
        row.map(SweepRun::try_from).transpose()
    }

    async fn list_sweep_runs(&self, limit: u32) -> Result<Vec<SweepRun>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<SweepRow> = sqlx::query_as(concat!(
            "SELECT ",
            sweep_columns!(),
            " FROM sweep_runs ORDER BY started_at DESC, id DESC LIMIT ?1"
        ))
        .bind(i64::from(limit.min(MAX_PAGE)))
        .fetch_all(&self.pool)
        .await
        .map_err(err("sweep run"))?;
        rows.into_iter().map(SweepRun::try_from).collect()
    }

    async fn interrupt_sweep_runs(
        &self,
        except_id: Option<&str>,
        at: DateTime<Utc>,
        error: &str,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE sweep_runs SET status = ?1, finished_at = ?2, error = ?3 \
             WHERE status = ?4 AND (?5 IS NULL OR id <> ?5)",
        )
        .bind(sweep_status::INTERRUPTED)
        .bind(ts(at))
        .bind(clip(error))
        .bind(sweep_status::RUNNING)
        .bind(except_id)
        .execute(&self.pool)
        .await
        .map_err(err("sweep run"))?;
        Ok(done.rows_affected())
    }

    async fn get_setting(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = ?1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(err("setting"))?;
        text.map(|t| {
            serde_json::from_str(&t)
                .map_err(|e| decode_error(format!("setting {key}: value is not JSON: {e}")))
        })
        .transpose()
    }

    async fn put_setting(&self, key: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                                             updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(to_json_text(value)?)
        .bind(ts(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(err("setting"))?;
        Ok(())
    }

    async fn insert_flow(&self, f: &NewFlow, now: DateTime<Utc>) -> Result<(), StoreError> {
        self.flow_insert(f, now).await
    }

    async fn find_flow(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<FlowRecord>, StoreError> {
        self.flow_find(hash, now).await
    }

    async fn update_flow(
        &self,
        id: &str,
        version: i64,
        state: &serde_json::Value,
        expires_at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.flow_update(id, version, state, expires_at).await
    }

    async fn delete_flow(&self, id: &str) -> Result<bool, StoreError> {
        self.flow_delete(id).await
    }

    async fn open_reset_request(
        &self,
        r: &NewResetRequest,
    ) -> Result<(ResetRequestRecord, bool), StoreError> {
        self.request_open(r).await
    }

    async fn list_reset_requests(
        &self,
        status: Option<&str>,
        before: Option<&str>,
        limit: u32,
    ) -> Result<Vec<ResetRequestRecord>, StoreError> {
        self.request_list(status, before, limit).await
    }

    async fn get_reset_request(&self, id: &str) -> Result<Option<ResetRequestRecord>, StoreError> {
        self.request_get(id).await
    }

    async fn close_reset_requests(
        &self,
        user_dn: &str,
        by: &str,
        at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.request_close(user_dn, by, at).await
    }

    async fn dismiss_reset_request(
        &self,
        id: &str,
        by: &str,
        reason: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.request_dismiss(id, by, reason, at).await
    }

    async fn insert_welcome_link(&self, w: &NewWelcomeLink) -> Result<(), StoreError> {
        self.welcome_insert(w).await
    }

    async fn find_welcome_link(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<WelcomeLinkRecord>, StoreError> {
        self.welcome_find(hash, now).await
    }

    async fn use_welcome_link(&self, hash: &[u8], at: DateTime<Utc>) -> Result<bool, StoreError> {
        self.welcome_use(hash, at).await
    }

    // PostgreSQL, the same two statements in one transaction ($1 key, $2 now, $3
    // interval, $4 want, $5 burst, all bigint):
    //   DELETE FROM rate_buckets WHERE tat < $2;
    //   INSERT INTO rate_buckets AS b (key, tat, granted)
    //   VALUES ($1, $2 + LEAST($4, $5) * $3, LEAST($4, $5))
    //   ON CONFLICT (key) DO UPDATE SET
    //     granted = LEAST($4, GREATEST($5 * $3 - (GREATEST(b.tat, $2) - $2), 0) / $3),
    //     tat = GREATEST(b.tat, $2)
    //         + LEAST($4, GREATEST($5 * $3 - (GREATEST(b.tat, $2) - $2), 0) / $3) * $3
    //   RETURNING tat, granted;
    // (SET expressions see the row as it was, in both databases, so `granted` and `tat`
    // are computed from the same old TAT.)
    async fn take_rate(
        &self,
        key: &str,
        quota: RateQuota,
        want: u32,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, StoreError> {
        let now = now.timestamp_micros();
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(err("rate bucket"))?;
        // A bucket whose TAT has passed is full, the same as no row: deleting it changes
        // no decision, and keeps the table as small as the set of recent keys. The index
        // on `tat` makes this a scan of the expired rows only.
        sqlx::query("DELETE FROM rate_buckets WHERE tat < ?1")
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(err("rate bucket"))?;
        let (tat, granted): (i64, i64) = sqlx::query_as(
            "INSERT INTO rate_buckets (key, tat, granted) \
             VALUES (?1, ?2 + min(?4, ?5) * ?3, min(?4, ?5)) \
             ON CONFLICT (key) DO UPDATE SET \
               granted = min(?4, max(?5 * ?3 - (max(tat, ?2) - ?2), 0) / ?3), \
               tat = max(tat, ?2) + min(?4, max(?5 * ?3 - (max(tat, ?2) - ?2), 0) / ?3) * ?3 \
             RETURNING tat, granted",
        )
        .bind(key)
        .bind(now)
        .bind(quota.interval_micros())
        .bind(i64::from(want))
        .bind(i64::from(quota.burst()))
        .fetch_one(&mut *tx)
        .await
        .map_err(err("rate bucket"))?;
        tx.commit().await.map_err(err("rate bucket"))?;
        let granted = u32::try_from(granted)
            .map_err(|_| decode_error(format!("rate bucket granted {granted}")))?;
        Ok(RateDecision::after(quota, granted, tat, now))
    }

    // PostgreSQL: the same SELECT; the raise is `UPDATE revocations SET counter =
    // counter + 1 WHERE id = 1` in the revoking transaction.
    async fn revocation_mark(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT counter FROM revocations WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(err("revocation mark"))
    }
}

fn found(rows_affected: u64) -> Result<(), StoreError> {
    if rows_affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
}

type SqliteQuery<'q> =
    sqlx::query::Query<'q, sqlx::Sqlite, <sqlx::Sqlite as sqlx::Database>::Arguments>;

/// Binds a run's fields as ?1..?15, in `sweep_columns!()` order (insert and update share it).
fn bind_run<'q>(query: SqliteQuery<'q>, run: &'q SweepRun) -> Result<SqliteQuery<'q>, StoreError> {
    Ok(query
        .bind(&run.id)
        .bind(ts(run.started_at))
        .bind(run.finished_at.map(ts))
        .bind(&run.status)
        .bind(run.dry_run)
        .bind(&run.trigger)
        .bind(ts(run.at))
        .bind(int(run.scanned))
        .bind(int(run.notified))
        .bind(int(run.already_notified))
        .bind(int(run.no_mail))
        .bind(int(run.expired))
        .bind(int(run.failed))
        .bind(&run.error)
        .bind(run.summary.as_ref().map(to_json_text).transpose()?))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use chrono::TimeZone;

    use super::*;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2030, 1, 2, 3, 4, 5)
            .single()
            .expect("valid time")
    }

    fn token(name: &str, hash: &[u8]) -> NewToken {
        NewToken {
            id: uuid::Uuid::new_v4().to_string(),
            name: name.to_string(),
            role: "global-admin".to_string(),
            hash: hash.to_vec(),
            created_at: t0(),
        }
    }

    fn mail(n: usize, secret: Option<&[u8]>) -> NewOutboxMessage {
        NewOutboxMessage {
            sealed_secret: secret.map(<[u8]>::to_vec),
            ..NewOutboxMessage::new(
                "temporary-password",
                format!("user{n}@example.org"),
                serde_json::json!({ "user_name": format!("user{n}") }),
                MailClass::Transactional,
                t0(),
            )
        }
    }

    fn audit(actor: &str, action: &str, target: &str) -> NewAuditRecord {
        NewAuditRecord {
            at: t0(),
            request_id: Some("req-1".into()),
            actor: actor.into(),
            action: action.into(),
            target: Some(target.into()),
            outcome: "success".into(),
            detail: Some(r#"{"mode":"auto"}"#.into()),
        }
    }

    async fn temp_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SqliteStore::open(&dir.path().join("lockbridge.db"))
            .await
            .expect("open store");
        (dir, store)
    }

    /// A database from before the chain (records without hashes, no start marker) is
    /// chained once when opened; a record that turns up without a hash later is not.
    #[tokio::test]
    async fn records_from_before_the_chain_are_chained_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lockbridge.db");
        let store = SqliteStore::open(&path).await.expect("open");
        for stmt in [
            "DELETE FROM settings WHERE key = 'audit.chain_started'",
            "INSERT INTO audit_log (at, actor, action, outcome) \
             VALUES ('2025-01-01T00:00:00.000000Z', 'cli:ops', 'token.created', 'success')",
            "INSERT INTO audit_log (at, actor, action, outcome) \
             VALUES ('2025-01-02T00:00:00.000000Z', 'cli:ops', 'token.revoked', 'success')",
        ] {
            sqlx::query(stmt).execute(store.pool()).await.expect(stmt);
        }
        store.close().await;

        let store = SqliteStore::open(&path).await.expect("reopen");
        let id = store
            .append_audit(&NewAuditRecord {
                at: Utc::now(),
                request_id: None,
                actor: "cli:ops".into(),
                action: "token.created".into(),
                target: None,
                outcome: "success".into(),
                detail: None,
            })
            .await
            .expect("append");
        assert_eq!(id, 3);
        let page = store.audit_chain_page(0, None, 10).await.expect("page");
        assert_eq!(page.len(), 3);
        assert_eq!(page[0].prev_hash.as_deref(), Some(&GENESIS[..]));
        for pair in page.windows(2) {
            assert_eq!(pair[1].prev_hash, pair[0].hash, "one chain");
        }

        // Written behind lockbridge's back after the chain began: left unchained.
        sqlx::query("DROP TRIGGER audit_log_no_update")
            .execute(store.pool())
            .await
            .expect("drop trigger");
        sqlx::query(
            "INSERT INTO audit_log (at, actor, action, outcome) \
             VALUES ('2025-01-03T00:00:00.000000Z', 'cli:root', 'token.created', 'success')",
        )
        .execute(store.pool())
        .await
        .expect("insert");
        store.close().await;
        let store = SqliteStore::open(&path).await.expect("reopen");
        let page = store.audit_chain_page(3, None, 10).await.expect("page");
        assert_eq!(page[0].hash, None, "not laundered into the chain");
    }

    async fn raw_secret(store: &SqliteStore, id: i64) -> Option<Vec<u8>> {
        sqlx::query_scalar("SELECT sealed_secret FROM outbox WHERE id = ?1")
            .bind(id)
            .fetch_one(store.pool())
            .await
            .expect("raw row")
    }

    #[tokio::test]
    async fn open_twice_runs_migrations_once_and_keeps_data() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir
            .path()
            .join("state")
            .join("nested")
            .join("lockbridge.db");
        let store = SqliteStore::open(&path).await.expect("first open");
        store
            .insert_token(&token("ci", b"h1"))
            .await
            .expect("insert");
        store.close().await;

        let store = SqliteStore::open(&path).await.expect("second open");
        assert_eq!(store.list_tokens().await.expect("list").len(), 1);
        let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
            .fetch_one(store.pool())
            .await
            .expect("migrations table");
        assert_eq!(
            applied,
            i64::try_from(MIGRATOR.iter().count()).expect("count")
        );
        assert!(applied >= 2, "0001 and 0002 applied");
        let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(store.pool())
            .await
            .expect("journal mode");
        assert_eq!(mode, "wal");
        let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(store.pool())
            .await
            .expect("foreign keys");
        assert_eq!(fk, 1);
        let secure_delete: i64 = sqlx::query_scalar("PRAGMA secure_delete")
            .fetch_one(store.pool())
            .await
            .expect("secure delete");
        assert_eq!(secure_delete, 1);

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "database file must be owner-only");
        }
    }

    #[tokio::test]
    async fn unusable_path_is_unavailable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("a-file");
        std::fs::write(&file, b"x").expect("write");
        let err = SqliteStore::open(&file.join("db.sqlite"))
            .await
            .expect_err("a file is not a folder");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn full_rate_buckets_are_pruned_by_the_next_take() {
        let store = SqliteStore::open_temporary().await.expect("open");
        let q = RateQuota::new(Duration::from_secs(1), 5).expect("quota");
        let t = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
        for key in ["a", "b", "c"] {
            store.take_rate(key, q, 2, t).await.expect("take");
        }
        let rows = || async {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM rate_buckets")
                .fetch_one(store.pool())
                .await
                .expect("count")
        };
        assert_eq!(rows().await, 3);
        // Two seconds later all three are full again: the next take leaves only its own.
        store
            .take_rate("d", q, 1, t + chrono::Duration::seconds(3))
            .await
            .expect("take");
        assert_eq!(rows().await, 1);
    }

    #[tokio::test]
    async fn tokens_insert_find_duplicate_revoke() {
        let (_dir, store) = temp_store().await;
        store
            .insert_token(&token("ci", b"hash-1"))
            .await
            .expect("insert");

        let found = store
            .find_token_by_hash(b"hash-1")
            .await
            .expect("find")
            .expect("present");
        assert_eq!(found.name, "ci");
        assert_eq!(found.role, "global-admin");
        assert_eq!(found.created_at, t0());
        assert!(found.revoked_at.is_none());
        assert!(
            store
                .find_token_by_hash(b"other")
                .await
                .expect("find")
                .is_none()
        );

        let dup = store.insert_token(&token("ci", b"hash-2")).await;
        assert!(
            matches!(dup, Err(StoreError::Conflict("token name"))),
            "{dup:?}"
        );

        assert!(store.revoke_token("ci").await.expect("revoke"));
        assert!(!store.revoke_token("ci").await.expect("revoke twice"));
        assert!(!store.revoke_token("nobody").await.expect("revoke unknown"));
        assert!(
            store
                .find_token_by_hash(b"hash-1")
                .await
                .expect("find")
                .is_none()
        );

        // A revoked token's name can be used again; the list keeps both.
        store
            .insert_token(&token("ci", b"hash-3"))
            .await
            .expect("reuse name");
        let list = store.list_tokens().await.expect("list");
        assert_eq!(list.len(), 2);
        assert_eq!(list.iter().filter(|t| t.revoked_at.is_some()).count(), 1);

        // Debug of a new token never shows the hash (as bytes or hex; a lone "171" may
        // be part of a timestamp).
        let debug = format!("{:?}", token("x", &[0xAB; 4]));
        assert!(
            debug.contains("[redacted]")
                && !debug.contains("171, 171")
                && !debug.to_ascii_lowercase().contains("abab"),
            "{debug}"
        );
    }

    /// An audit search by user, actor or action reads its index, not the whole log.
    #[tokio::test]
    async fn audit_searches_use_their_index() {
        let (_dir, store) = temp_store().await;
        for (field, index) in [
            ("actor", "audit_log_actor"),
            ("target", "audit_log_target"),
            ("action", "audit_log_action"),
        ] {
            let mut q = AuditQuery {
                limit: 50,
                before_id: Some(1_000),
                ..AuditQuery::default()
            };
            let value = Some("someone".to_owned());
            match field {
                "actor" => q.actor = value,
                "target" => q.target = value,
                _ => q.action = value,
            }
            let page = q.page_sql::<sqlx::Sqlite>();
            let plan: Vec<(i64, i64, i64, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "EXPLAIN QUERY PLAN {}",
                page.sql().as_str()
            )))
            .bind("someone")
            .bind(1_000_i64)
            .bind(50_i64)
            .fetch_all(&store.pool)
            .await
            .expect("plan");
            let steps: Vec<&str> = plan.iter().map(|(.., step)| step.as_str()).collect();
            assert!(
                steps.iter().any(|s| s.contains(index))
                    && !steps.iter().any(|s| s.contains("TEMP B-TREE")),
                "a search by {field} should walk {index} in id order, planned {steps:?}"
            );
        }
    }

    #[tokio::test]
    async fn audit_append_filters_and_keyset_paging() {
        let (_dir, store) = temp_store().await;
        let mut ids = Vec::new();
        for i in 0..7 {
            let actor = if i % 2 == 0 { "alice" } else { "bob" };
            let action = if i < 5 {
                "password.reset"
            } else {
                "token.created"
            };
            ids.push(
                store
                    .append_audit(&audit(actor, action, &format!("user{}", i % 3)))
                    .await
                    .expect("append"),
            );
        }
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");

        let all = store
            .list_audit(&AuditQuery {
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(all.iter().map(|r| r.id).collect::<Vec<_>>(), {
            let mut v = ids.clone();
            v.reverse();
            v
        });
        assert_eq!(all[0].request_id.as_deref(), Some("req-1"));
        assert_eq!(all[0].at, t0());

        let alice = store
            .list_audit(&AuditQuery {
                actor: Some("alice".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("by actor");
        assert_eq!(alice.len(), 4);
        assert!(alice.iter().all(|r| r.actor == "alice"));

        let combined = store
            .list_audit(&AuditQuery {
                actor: Some("alice".into()),
                action: Some("password.reset".into()),
                target: Some("user0".into()),
                limit: 100,
                ..Default::default()
            })
            .await
            .expect("combined");
        assert_eq!(
            combined.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[0]]
        );

        // Pages of 3: newest first, no overlap, nothing skipped.
        let mut seen = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .list_audit(&AuditQuery {
                    before_id: before,
                    limit: 3,
                    ..Default::default()
                })
                .await
                .expect("page");
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= 3);
            before = page.last().map(|r| r.id);
            seen.extend(page.into_iter().map(|r| r.id));
        }
        assert_eq!(seen, all.iter().map(|r| r.id).collect::<Vec<_>>());

        let zero = store
            .list_audit(&AuditQuery {
                limit: 0,
                ..Default::default()
            })
            .await
            .expect("limit 0");
        assert!(zero.is_empty());

        // The record is camelCase JSON for the API.
        let json = serde_json::to_value(&all[0]).expect("serialize");
        assert!(json.get("requestId").is_some());
    }

    #[tokio::test]
    async fn audit_log_is_append_only() {
        let (_dir, store) = temp_store().await;
        let id = store
            .append_audit(&audit("a", "x", "t"))
            .await
            .expect("append");
        let update = sqlx::query("UPDATE audit_log SET actor = 'mallory' WHERE id = ?1")
            .bind(id)
            .execute(store.pool())
            .await;
        assert!(update.is_err());
        let delete = sqlx::query("DELETE FROM audit_log")
            .execute(store.pool())
            .await;
        assert!(delete.is_err());
    }

    /// Every record of the store, in id order, checked to be one chain from genesis
    /// with ids one apart.
    async fn assert_one_chain(store: &SqliteStore) -> Vec<ChainedAuditRecord> {
        let page = store.audit_chain_page(0, None, 10_000).await.expect("page");
        assert_eq!(page[0].prev_hash.as_deref(), Some(&GENESIS[..]));
        for pair in page.windows(2) {
            assert_eq!(pair[1].record.id, pair[0].record.id + 1, "no gap");
            assert_eq!(pair[1].prev_hash, pair[0].hash, "one chain");
        }
        page
    }

    /// The one-statement append writes a whole batch after a head that is still the
    /// head, and nothing after one that is not.
    #[tokio::test]
    async fn appending_after_a_known_head_writes_all_or_nothing() {
        let (dir, store) = temp_store().await;
        let conn = audit_writer::open(&dir.path().join("lockbridge.db")).expect("connection");
        store
            .append_audit(&audit("a", "x", "t"))
            .await
            .expect("append");
        let (id, hash) = store.audit_head().await.expect("head").expect("a head");
        let head = audit_writer::ChainHead { id, hash };
        let records = [
            audit("b", "x", "t"),
            audit("c", "x", "t"),
            audit("d", "x", "t"),
        ];
        let refs: Vec<&NewAuditRecord> = records.iter().collect();

        let stale = audit_writer::ChainHead {
            id: head.id,
            hash: vec![0; 32],
        };
        assert_eq!(
            audit_writer::append_after(&conn, &stale, &refs).expect("ran"),
            None
        );
        let gone = audit_writer::ChainHead {
            id: head.id + 5,
            hash: head.hash.clone(),
        };
        assert_eq!(
            audit_writer::append_after(&conn, &gone, &refs).expect("ran"),
            None
        );
        assert_eq!(assert_one_chain(&store).await.len(), 1, "nothing written");

        let (ids, new_head) = audit_writer::append_after(&conn, &head, &refs)
            .expect("ran")
            .expect("appended");
        assert_eq!(ids, vec![2, 3, 4]);
        let page = assert_one_chain(&store).await;
        assert_eq!(page.len(), 4);
        assert_eq!(page[3].record.actor, "d");
        assert_eq!(Some(new_head.hash), page[3].hash.clone());
        assert_eq!(new_head.id, 4);
    }

    /// Closing the store stops the audit writer after what was queued before it: those
    /// records are in, a later append is refused as unavailable, and the WAL is folded
    /// into the main file (no connection is left open).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closing_stops_the_audit_writer_after_queued_records() {
        let (dir, store) = temp_store().await;
        let queued = (0..10).map(|n| {
            let store = store.clone();
            async move { store.append_audit(&audit(&format!("a{n}"), "x", "t")).await }
        });
        let ids: Vec<i64> = futures::future::join_all(queued)
            .await
            .into_iter()
            .map(|id| id.expect("append before close"))
            .collect();
        assert_eq!(ids.len(), 10);
        store.close().await;
        assert!(matches!(
            store.append_audit(&audit("late", "x", "t")).await,
            Err(StoreError::Unavailable(_))
        ));
        let wal = dir.path().join("lockbridge.db-wal");
        assert!(
            !wal.exists(),
            "the last connection checkpointed and removed the WAL"
        );
        let store = SqliteStore::open(&dir.path().join("lockbridge.db"))
            .await
            .expect("reopen");
        assert_eq!(assert_one_chain(&store).await.len(), 10);
    }

    /// The record of a write announced as under way joins the commit of the record the
    /// writer holds: the writer waits for it (here up to 2 s) instead of syncing each
    /// record alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_announced_record_shares_the_commit_it_was_awaited_for() {
        let (dir, _store) = temp_store().await;
        let path = dir.path().join("lockbridge.db");
        let writer = AuditWriter::start_gathering(&path, Duration::from_secs(2)).expect("writer");
        let announced = writer.pending().announce();
        let append = |actor: &'static str| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.append(&audit(actor, "x", "t")).await })
        };
        let first = append("first");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let second = append("second");
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(announced);
        let first = first.await.expect("joined").expect("first appended");
        let second = second.await.expect("joined").expect("second appended");
        assert_eq!(second, first + 1);
        assert_eq!(writer.commits(), 1, "both records in one commit");
    }

    /// Nothing announced, nothing awaited: a lone record is committed at once, and a
    /// write announced and never recorded (a stalled directory) delays the records
    /// of others by one wait, not for as long as it lasts.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_writer_waits_only_for_announced_records_and_only_once() {
        let (dir, _store) = temp_store().await;
        let path = dir.path().join("lockbridge.db");
        let writer = AuditWriter::start_gathering(&path, Duration::from_secs(2)).expect("writer");
        let started = std::time::Instant::now();
        writer
            .append(&audit("alone", "x", "t"))
            .await
            .expect("appended");
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "a lone record waited {:?}",
            started.elapsed()
        );

        let stalled = writer.pending().announce();
        for n in 0..2 {
            let started = std::time::Instant::now();
            writer
                .append(&audit(&format!("beside{n}"), "x", "t"))
                .await
                .expect("appended");
            let waited = started.elapsed();
            assert!(
                waited >= Duration::from_millis(1900) && waited < Duration::from_secs(10),
                "waited once for the announced record: {waited:?}"
            );
        }
        drop(stalled);
        assert_eq!(writer.commits(), 3);
    }

    /// A batch (longer than one commit holds) goes in whole and in order, between
    /// single appends, as one unbroken chain.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_of_records_is_appended_in_order_in_the_chain() {
        let (_dir, store) = temp_store().await;
        store
            .append_audit(&audit("first", "x", "t"))
            .await
            .expect("one");
        let batch: Vec<NewAuditRecord> = (0..300)
            .map(|n| audit(&format!("b{n:03}"), "x", "t"))
            .collect();
        let beside = audit("beside", "x", "t");
        let single = store.append_audit(&beside);
        let (many, single) = tokio::join!(store.append_audit_many(batch), single);
        many.expect("batch");
        single.expect("single");
        store
            .append_audit_many(Vec::new())
            .await
            .expect("nothing to do");
        let chain = assert_one_chain(&store).await;
        assert_eq!(chain.len(), 302);
        let batch_actors: Vec<&str> = chain
            .iter()
            .map(|r| r.record.actor.as_str())
            .filter(|a| a.starts_with('b') && *a != "beside")
            .collect();
        let expected: Vec<String> = (0..300).map(|n| format!("b{n:03}")).collect();
        assert_eq!(batch_actors, expected, "in order");
    }

    /// The writer builds on the head it left while it is still the head, and reads the
    /// head afresh when another process (a second store on the same file) appended.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_writer_follows_appends_from_another_process() {
        let (dir, first) = temp_store().await;
        let second = SqliteStore::open(&dir.path().join("lockbridge.db"))
            .await
            .expect("second store");
        for round in 0..3 {
            let appends = (0..20).map(|n| {
                let store = if n % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                async move {
                    store
                        .append_audit(&audit(&format!("r{round}n{n}"), "x", "t"))
                        .await
                        .expect("append")
                }
            });
            futures::future::join_all(appends).await;
            first
                .append_audit(&audit("first", "x", "t"))
                .await
                .expect("append");
            second
                .append_audit(&audit("second", "x", "t"))
                .await
                .expect("append");
        }
        let page = assert_one_chain(&first).await;
        assert_eq!(page.len(), 3 * 22);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn two_concurrent_claimers_never_get_the_same_message() {
        let (dir, first) = temp_store().await;
        // A second store on the same file stands in for a second daemon process.
        let second = SqliteStore::open(&dir.path().join("lockbridge.db"))
            .await
            .expect("second store");
        let mut all = HashSet::new();
        for n in 0..60 {
            all.insert(
                first
                    .enqueue_mail(&mail(n, Some(b"sealed")))
                    .await
                    .expect("enqueue"),
            );
        }
        let claimer = |store: SqliteStore| async move {
            let mut got = Vec::new();
            loop {
                let batch = store
                    .claim_due_mail(t0(), 4, Duration::from_secs(300))
                    .await
                    .expect("claim");
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|m| m.id));
                tokio::task::yield_now().await;
            }
        };
        let handles: Vec<_> = [first.clone(), second.clone(), first.clone(), second.clone()]
            .into_iter()
            .map(|s| tokio::spawn(claimer(s)))
            .collect();
        let mut claimed = Vec::new();
        for h in handles {
            claimed.extend(h.await.expect("claimer task"));
        }
        let unique: HashSet<_> = claimed.iter().copied().collect();
        assert_eq!(unique.len(), claimed.len(), "a message was claimed twice");
        assert_eq!(unique, all, "every message was claimed");
    }

    #[tokio::test]
    async fn expired_lease_is_claimed_again_and_failure_reschedules() {
        let (_dir, store) = temp_store().await;
        let id = store
            .enqueue_mail(&mail(1, Some(b"sealed")))
            .await
            .expect("enqueue");
        let lease = Duration::from_secs(60);

        let first = store.claim_due_mail(t0(), 10, lease).await.expect("claim");
        assert_eq!(first.len(), 1);
        assert_eq!(first[0].id, id);
        assert_eq!(first[0].status, OutboxStatus::Pending);
        assert_eq!(first[0].attempts, 0);
        assert!(
            first[0].message_id.starts_with('<') && first[0].message_id.ends_with("@lockbridge>")
        );
        assert_eq!(first[0].context["user_name"], "user1");

        let during = t0() + chrono::Duration::seconds(30);
        assert!(
            store
                .claim_due_mail(during, 10, lease)
                .await
                .expect("claim")
                .is_empty()
        );

        let after = t0() + chrono::Duration::seconds(61);
        let again = store.claim_due_mail(after, 10, lease).await.expect("claim");
        assert_eq!(again.len(), 1);
        assert_eq!(
            again[0].message_id, first[0].message_id,
            "Message-ID is stable"
        );

        // A failed attempt releases the lease and waits for next_attempt_at.
        let retry_at = after + chrono::Duration::seconds(10);
        store
            .mark_mail_failed(id, "421 try later", retry_at)
            .await
            .expect("failed");
        assert!(
            store
                .claim_due_mail(after, 10, lease)
                .await
                .expect("claim")
                .is_empty()
        );
        let retried = store
            .claim_due_mail(retry_at, 10, lease)
            .await
            .expect("claim");
        assert_eq!(retried.len(), 1);
        assert_eq!(retried[0].attempts, 1);
        assert_eq!(retried[0].last_error.as_deref(), Some("421 try later"));
        assert_eq!(retried[0].next_attempt_at, retry_at);
    }

    #[tokio::test]
    async fn not_due_messages_are_left_alone() {
        let (_dir, store) = temp_store().await;
        store.enqueue_mail(&mail(1, None)).await.expect("enqueue");
        let before = t0() - chrono::Duration::seconds(1);
        assert!(
            store
                .claim_due_mail(before, 10, Duration::from_secs(5))
                .await
                .expect("claim")
                .is_empty()
        );
        assert!(
            store
                .claim_due_mail(t0(), 0, Duration::from_secs(5))
                .await
                .expect("claim")
                .is_empty()
        );
        assert_eq!(
            store
                .claim_due_mail(t0(), 10, Duration::from_secs(5))
                .await
                .expect("claim")
                .len(),
            1
        );
    }

    #[tokio::test]
    async fn mark_sent_erases_the_sealed_secret() {
        let (_dir, store) = temp_store().await;
        let id = store
            .enqueue_mail(&mail(1, Some(b"sealed-bytes")))
            .await
            .expect("enqueue");
        assert_eq!(
            raw_secret(&store, id).await.as_deref(),
            Some(&b"sealed-bytes"[..])
        );
        store
            .claim_due_mail(t0(), 1, Duration::from_secs(60))
            .await
            .expect("claim");

        let at = t0() + chrono::Duration::seconds(2);
        store.mark_mail_sent(id, at).await.expect("sent");
        assert_eq!(raw_secret(&store, id).await, None);
        let m = store.get_mail(id).await.expect("get").expect("present");
        assert_eq!(m.status, OutboxStatus::Sent);
        assert_eq!(m.sent_at, Some(at));
        assert_eq!(m.attempts, 1);
        assert!(m.sealed_secret.is_none());
        // Sent mail is never claimed again, even after any lease would have expired.
        let later = t0() + chrono::Duration::days(1);
        assert!(
            store
                .claim_due_mail(later, 10, Duration::from_secs(60))
                .await
                .expect("claim")
                .is_empty()
        );
        assert_eq!(
            store.outbox_counts().await.expect("counts"),
            OutboxCounts {
                pending: 0,
                sent: 1,
                dead: 0,
                pending_bulk: 0,
                ..OutboxCounts::default()
            }
        );
    }

    #[tokio::test]
    async fn dead_letter_erases_the_sealed_secret() {
        let (_dir, store) = temp_store().await;
        let id = store
            .enqueue_mail(&mail(1, Some(b"sealed-bytes")))
            .await
            .expect("enqueue");
        store
            .enqueue_mail(&mail(2, None))
            .await
            .expect("enqueue other");
        store
            .mark_mail_dead(id, "550 no such user")
            .await
            .expect("dead");
        assert_eq!(raw_secret(&store, id).await, None);
        let m = store.get_mail(id).await.expect("get").expect("present");
        assert_eq!(m.status, OutboxStatus::Dead);
        assert_eq!(m.last_error.as_deref(), Some("550 no such user"));
        let due = store
            .claim_due_mail(t0(), 10, Duration::from_secs(60))
            .await
            .expect("claim");
        assert!(due.iter().all(|m| m.id != id), "dead mail is not claimed");
        assert_eq!(
            store.outbox_counts().await.expect("counts"),
            OutboxCounts {
                pending: 1,
                sent: 0,
                dead: 1,
                pending_bulk: 0,
                ..OutboxCounts::default()
            }
        );
    }

    #[tokio::test]
    async fn a_finished_row_cannot_keep_a_secret() {
        let (_dir, store) = temp_store().await;
        let id = store
            .enqueue_mail(&mail(1, Some(b"sealed")))
            .await
            .expect("enqueue");
        let sneaky = sqlx::query("UPDATE outbox SET status = 'sent' WHERE id = ?1")
            .bind(id)
            .execute(store.pool())
            .await;
        assert!(
            sneaky.is_err(),
            "CHECK constraint must refuse a sent row with a secret"
        );
    }

    #[tokio::test]
    async fn erased_secret_bytes_leave_the_database_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lockbridge.db");
        let store = SqliteStore::open(&path).await.expect("open");
        let marker = b"ERASE-ME-0123456789-ERASE-ME-0123456789-ERASE-ME-0123456789";
        store
            .enqueue_mail(&mail(0, Some(b"neighbour")))
            .await
            .expect("enqueue");
        let id = store
            .enqueue_mail(&mail(1, Some(marker)))
            .await
            .expect("enqueue");
        store
            .enqueue_mail(&mail(2, Some(b"neighbour")))
            .await
            .expect("enqueue");
        // Move the row into the main file first, as a long-running daemon would.
        sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(store.pool())
            .await
            .expect("checkpoint");
        let contains = |bytes: &[u8]| bytes.windows(marker.len()).any(|w| w == marker);
        assert!(
            contains(&std::fs::read(&path).expect("read db")),
            "test premise"
        );

        store.mark_mail_sent(id, t0()).await.expect("sent");
        store.close().await;
        for entry in std::fs::read_dir(dir.path()).expect("dir").flatten() {
            let bytes = std::fs::read(entry.path()).expect("read");
            assert!(
                !contains(&bytes),
                "{} still holds the secret",
                entry.path().display()
            );
        }
    }

    #[tokio::test]
    async fn unknown_ids_are_not_found() {
        let store = SqliteStore::open_temporary()
            .await
            .expect("temporary store");
        assert!(matches!(
            store.mark_mail_sent(42, t0()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.mark_mail_failed(42, "x", t0()).await,
            Err(StoreError::NotFound)
        ));
        assert!(matches!(
            store.mark_mail_dead(42, "x").await,
            Err(StoreError::NotFound)
        ));
        assert!(store.get_mail(42).await.expect("get").is_none());
        store.ping().await.expect("ping");
    }

    fn bulk(n: usize) -> NewOutboxMessage {
        NewOutboxMessage::new(
            "password-expiring",
            format!("user{n}@example.org"),
            serde_json::json!({ "user_name": format!("user{n}") }),
            MailClass::Bulk,
            t0(),
        )
    }

    fn secs(n: i64) -> chrono::Duration {
        chrono::Duration::seconds(n)
    }

    #[tokio::test]
    async fn a_notice_is_recorded_and_queued_once() {
        let (_dir, store) = temp_store().await;
        assert!(
            !store
                .notice_recorded("expiry:ada:1:7")
                .await
                .expect("recorded?")
        );
        assert!(
            store
                .record_notice("expiry:ada:1:7", Some("sweep-1"), &bulk(1))
                .await
                .expect("record")
        );
        assert!(
            store
                .notice_recorded("expiry:ada:1:7")
                .await
                .expect("recorded?")
        );
        // Again, from another sweep and with another message: nothing more is queued.
        assert!(
            !store
                .record_notice("expiry:ada:1:7", Some("sweep-2"), &bulk(2))
                .await
                .expect("record again")
        );
        // Another threshold is another notice.
        assert!(
            store
                .record_notice("expiry:ada:1:3", None, &bulk(1))
                .await
                .expect("record other")
        );

        let rows: Vec<(String, Option<String>, Option<i64>)> =
            sqlx::query_as("SELECT key, sweep_id, outbox_id FROM notice_ledger ORDER BY key DESC")
                .fetch_all(store.pool())
                .await
                .expect("ledger");
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].0, "expiry:ada:1:7");
        assert_eq!(rows[0].1.as_deref(), Some("sweep-1"));
        let id = rows[0].2.expect("linked to its outbox row");
        let m = store.get_mail(id).await.expect("get").expect("row");
        assert_eq!(m.recipient, "user1@example.org");
        assert_eq!(m.class, MailClass::Bulk);
        assert_eq!(m.template, "password-expiring");
        assert_eq!(rows[1].1, None);
        let counts = store.outbox_counts().await.expect("counts");
        assert_eq!((counts.pending, counts.pending_bulk), (2, 2));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_recorders_queue_a_notice_exactly_once() {
        let (dir, first) = temp_store().await;
        // A second store on the same file stands in for a second instance.
        let second = SqliteStore::open(&dir.path().join("lockbridge.db"))
            .await
            .expect("second store");
        for round in 0..5 {
            let key = format!("expiry:user:{round}:7");
            let barrier = Arc::new(tokio::sync::Barrier::new(8));
            let handles: Vec<_> = (0..8)
                .map(|n| {
                    let store = if n % 2 == 0 {
                        first.clone()
                    } else {
                        second.clone()
                    };
                    let (key, barrier) = (key.clone(), barrier.clone());
                    tokio::spawn(async move {
                        barrier.wait().await;
                        store
                            .record_notice(&key, Some(&format!("sweep-{n}")), &bulk(n))
                            .await
                            .expect("record")
                    })
                })
                .collect();
            let mut queued = 0;
            for h in handles {
                queued += usize::from(h.await.expect("task"));
            }
            assert_eq!(queued, 1, "round {round}: exactly one recorder queues");
        }
        let counts = first.outbox_counts().await.expect("counts");
        assert_eq!(counts.pending, 5, "one outbox row per key");
        let ledger: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM notice_ledger")
            .fetch_one(first.pool())
            .await
            .expect("count");
        assert_eq!(ledger, 5);
    }

    #[tokio::test]
    async fn a_failed_enqueue_records_no_notice() {
        let (_dir, store) = temp_store().await;
        // Make the outbox insert fail inside the transaction.
        sqlx::query(
            "CREATE TRIGGER refuse BEFORE INSERT ON outbox BEGIN SELECT RAISE(ABORT, 'no'); END",
        )
        .execute(store.pool())
        .await
        .expect("trigger");
        assert!(store.record_notice("k", None, &bulk(1)).await.is_err());
        assert!(
            !store.notice_recorded("k").await.expect("recorded?"),
            "rolled back"
        );
        sqlx::query("DROP TRIGGER refuse")
            .execute(store.pool())
            .await
            .expect("drop");
        assert!(
            store
                .record_notice("k", None, &bulk(1))
                .await
                .expect("record")
        );
    }

    #[tokio::test]
    async fn leases_are_exclusive_renewable_and_expire() {
        let (_dir, store) = temp_store().await;
        let now = t0();
        let until = now + secs(60);
        assert!(
            store
                .acquire_lease("sweep", "a", now, until)
                .await
                .expect("a")
        );
        assert!(
            !store
                .acquire_lease("sweep", "b", now + secs(1), until)
                .await
                .expect("b")
        );
        // Other names are other leases.
        assert!(
            store
                .acquire_lease("other", "b", now, until)
                .await
                .expect("other")
        );
        // The holder renews, moving the end.
        assert!(
            store
                .acquire_lease("sweep", "a", now + secs(50), now + secs(120))
                .await
                .expect("renew")
        );
        assert!(
            !store
                .acquire_lease("sweep", "b", now + secs(90), now + secs(150))
                .await
                .expect("still renewed")
        );
        // Run out: someone else takes it, and the old holder cannot renew.
        assert!(
            store
                .acquire_lease("sweep", "b", now + secs(120), now + secs(180))
                .await
                .expect("expired")
        );
        assert!(
            !store
                .acquire_lease("sweep", "a", now + secs(121), now + secs(181))
                .await
                .expect("lost")
        );
        // Only the holder releases.
        store
            .release_lease("sweep", "a")
            .await
            .expect("release by other");
        assert!(
            !store
                .acquire_lease("sweep", "a", now + secs(122), now + secs(182))
                .await
                .expect("still b's")
        );
        store.release_lease("sweep", "b").await.expect("release");
        assert!(
            store
                .acquire_lease("sweep", "a", now + secs(123), now + secs(183))
                .await
                .expect("free")
        );
        store
            .release_lease("nothing", "a")
            .await
            .expect("unknown lease");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_of_many_concurrent_lease_takers_wins() {
        let (dir, first) = temp_store().await;
        let second = SqliteStore::open(&dir.path().join("lockbridge.db"))
            .await
            .expect("second store");
        let handles: Vec<_> = (0..8)
            .map(|n| {
                let store = if n % 2 == 0 {
                    first.clone()
                } else {
                    second.clone()
                };
                tokio::spawn(async move {
                    store
                        .acquire_lease("sweep", &format!("holder-{n}"), t0(), t0() + secs(60))
                        .await
                        .expect("acquire")
                })
            })
            .collect();
        let mut winners = 0;
        for h in handles {
            winners += usize::from(h.await.expect("task"));
        }
        assert_eq!(winners, 1);
    }

    fn run(id: &str, started: DateTime<Utc>) -> SweepRun {
        SweepRun {
            id: id.into(),
            started_at: started,
            finished_at: None,
            status: sweep_status::RUNNING.into(),
            dry_run: false,
            trigger: "api".into(),
            at: started,
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

    fn report_line(seq: u64, user: &str) -> SweepReportLine {
        SweepReportLine {
            seq,
            user_name: user.into(),
            display_name: Some(format!("User {user}")),
            mail: seq.is_multiple_of(2).then(|| format!("{user}@example.org")),
            notice: if seq.is_multiple_of(3) {
                "expired".into()
            } else {
                "t7".into()
            },
            expires_at: t0(),
            expires_at_local: "Monday 3 March 2025, 14:00 CET".into(),
            days_left: 7,
            status: "queued".into(),
            reason: (seq % 2 == 1).then(|| "no mail address".to_string()),
        }
    }

    /// A sweep's report is written in batches and read back in order, page by page;
    /// reports of old sweeps are pruned, others kept.
    #[tokio::test]
    async fn sweep_reports_page_in_order_and_old_ones_are_pruned() {
        let (_dir, store) = temp_store().await;
        store
            .insert_sweep_run(&run("old", t0() - secs(90 * 86_400)))
            .await
            .expect("old run");
        store
            .insert_sweep_run(&run("new", t0()))
            .await
            .expect("new run");
        let lines: Vec<SweepReportLine> = (0..1_234)
            .map(|n| report_line(n, &format!("u{n}")))
            .collect();
        for batch in lines.chunks(300) {
            store
                .append_sweep_report("new", batch)
                .await
                .expect("append");
        }
        store
            .append_sweep_report("old", &lines[..10])
            .await
            .expect("append old");

        let mut read = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .sweep_report_page("new", after, 500)
                .await
                .expect("page");
            let full = page.len() == 500;
            after = page.last().map(|l| l.seq);
            read.extend(page);
            if !full {
                break;
            }
        }
        assert_eq!(read, lines);

        let pruned = store
            .prune_sweep_reports(t0() - secs(60 * 86_400))
            .await
            .expect("prune");
        assert_eq!(pruned, 10);
        assert!(
            store
                .sweep_report_page("old", None, 10)
                .await
                .expect("page")
                .is_empty()
        );
        assert_eq!(
            store
                .sweep_report_page("new", None, 10)
                .await
                .expect("page")
                .len(),
            10
        );
    }

    /// A batch of notices larger than one statement's chunk queues each new key once
    /// (a key already in the ledger, or twice in the batch, is not queued again), and
    /// each ledger entry points at its own message.
    #[tokio::test]
    async fn recording_a_large_batch_queues_each_new_notice_once() {
        let (_dir, store) = temp_store().await;
        assert!(
            store
                .record_notice("k0007", Some("s0"), &bulk(7))
                .await
                .expect("earlier notice")
        );
        let mut notices: Vec<(String, NewOutboxMessage)> =
            (0..1_203).map(|n| (format!("k{n:04}"), bulk(n))).collect();
        notices.push(("k0042".into(), bulk(42)));
        let queued = store
            .record_notices(Some("s1"), &notices)
            .await
            .expect("record");
        assert_eq!(queued.len(), 1_204);
        assert!(!queued[7], "already in the ledger");
        assert!(!queued[1_203], "twice in one batch");
        assert_eq!(queued.iter().filter(|q| **q).count(), 1_202);

        let linked: Vec<(String, String)> = sqlx::query_as(
            "SELECT l.key, o.recipient FROM notice_ledger l JOIN outbox o ON o.id = l.outbox_id \
             WHERE l.sweep_id = 's1'",
        )
        .fetch_all(store.pool())
        .await
        .expect("ledger");
        assert_eq!(linked.len(), 1_202);
        for (key, recipient) in linked {
            let n: usize = key[1..].parse().expect("number");
            assert_eq!(
                recipient,
                bulk(n).recipient,
                "{key} points at its own message"
            );
        }
        assert_eq!(store.outbox_counts().await.expect("counts").pending, 1_203);
    }

    /// What a batch queues reads back as it was given: the context's text (quotes,
    /// newlines, non-ASCII), a sealed secret's bytes, the class and the stale time,
    /// queued in the batch's order.
    #[tokio::test]
    async fn a_batch_queues_each_message_as_given() {
        let (_dir, store) = temp_store().await;
        let mut odd = NewOutboxMessage::new(
            "password-reset",
            "zoë@example.org",
            serde_json::json!({"name": "Zoë \"Z\" O'Brien\n\u{1F511}", "n": 1.5, "list": [1, null]}),
            MailClass::Transactional,
            t0(),
        );
        odd.sealed_secret = Some(vec![0, 1, 2, 0xfe, 0xff, b'"']);
        odd.stale_after = Some(t0() + secs(3600));
        let notices = vec![
            ("a".to_string(), bulk(1)),
            ("b".to_string(), odd.clone()),
            ("c".to_string(), bulk(3)),
        ];
        let queued = store.record_notices(None, &notices).await.expect("record");
        assert_eq!(queued, vec![true, true, true]);
        let claimed = store
            .claim_due_mail_of_class(MailClass::Bulk, t0() + secs(1), 10, Duration::from_secs(60))
            .await
            .expect("claim bulk");
        let recipients: Vec<&str> = claimed.iter().map(|m| m.recipient.as_str()).collect();
        assert_eq!(
            recipients,
            ["user1@example.org", "user3@example.org"],
            "batch order"
        );
        let claimed = store
            .claim_due_mail_of_class(
                MailClass::Transactional,
                t0() + secs(1),
                10,
                Duration::from_secs(60),
            )
            .await
            .expect("claim transactional");
        let [message] = claimed.as_slice() else {
            panic!("one transactional message, got {}", claimed.len());
        };
        assert_eq!(message.template, odd.template);
        assert_eq!(message.recipient, odd.recipient);
        assert_eq!(message.context, odd.context);
        assert_eq!(message.sealed_secret, odd.sealed_secret);
        assert_eq!(message.stale_after, odd.stale_after);
        assert_eq!(message.created_at, odd.created_at);
        assert_eq!(message.next_attempt_at, odd.created_at);
        assert_eq!(
            store
                .notices_recorded(&["b".into(), "x".into(), "c".into()])
                .await
                .expect("look-up"),
            vec![true, false, true]
        );
    }

    /// A job's items are numbered in order, marked writing with their sealed passwords,
    /// settled, counted; the report is given out once and its passwords erased.
    #[tokio::test]
    async fn a_job_goes_from_pending_to_a_report_taken_once() {
        let (_dir, store) = temp_store().await;
        let job = NewJob {
            id: "job-1".into(),
            kind: "password-reset".into(),
            actor: "alice".into(),
            actor_dn: Some("uid=alice,dc=x".into()),
            roles: vec!["global-admin".into()],
            params: serde_json::json!({"kind": "password-reset", "report": true}),
            sealed_secret: Some(vec![1, 2, 3]),
            created_at: t0(),
        };
        let names: Vec<String> = (0..5).map(|n| format!("u{n}")).collect();
        store.insert_job(&job, &names).await.expect("insert");
        let got = store.get_job("job-1").await.expect("get").expect("there");
        assert_eq!((got.total, got.open, got.done), (5, 5, 0));
        assert_eq!(got.roles, ["global-admin"]);
        assert_eq!(got.sealed_secret, Some(vec![1, 2, 3]));
        assert_eq!(store.running_jobs().await.expect("running").len(), 1);

        let open = store.open_job_items("job-1", None, 3).await.expect("open");
        assert_eq!(open.iter().map(|i| i.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(open[1].user_name, "u1");
        store
            .mark_job_items_writing("job-1", &[(0, vec![9, 9]), (1, vec![8])])
            .await
            .expect("writing");
        let open = store.open_job_items("job-1", None, 10).await.expect("open");
        assert_eq!(open[0].status, "writing");
        assert_eq!(open[0].sealed_password, Some(vec![9, 9]));
        assert_eq!(open[2].status, "pending");
        store
            .finish_job_items(
                "job-1",
                &[
                    JobItemOutcome {
                        seq: 0,
                        status: "done",
                        code: None,
                        changed: true,
                        sealed_password: Some(vec![7]),
                    },
                    JobItemOutcome {
                        seq: 1,
                        status: "refused",
                        code: Some("forbidden_target".into()),
                        changed: false,
                        sealed_password: None,
                    },
                ],
            )
            .await
            .expect("finish items");
        let got = store.get_job("job-1").await.expect("get").expect("there");
        assert_eq!((got.done, got.refused, got.failed, got.open), (1, 1, 0, 3));
        let page = store
            .job_items_page("job-1", Some(0), 2)
            .await
            .expect("page");
        assert_eq!(page[0].seq, 1);
        assert_eq!(page[0].code.as_deref(), Some("forbidden_target"));
        assert_eq!(page[0].sealed_password, None, "pages never carry secrets");

        assert_eq!(
            store.take_job_report("job-1", t0()).await.expect("take"),
            None,
            "running"
        );
        store
            .finish_job("job-1", "completed", None, t0())
            .await
            .expect("finish");
        assert!(store.running_jobs().await.expect("running").is_empty());
        let got = store.get_job("job-1").await.expect("get").expect("there");
        assert_eq!(got.sealed_secret, None, "the chosen password is erased");
        let report = store
            .take_job_report("job-1", t0())
            .await
            .expect("take")
            .expect("once");
        assert_eq!(report.len(), 5);
        assert_eq!(report[0].sealed_password, Some(vec![7]));
        assert_eq!(
            store.take_job_report("job-1", t0()).await.expect("take"),
            None,
            "once only"
        );
        let left: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT sealed_password FROM job_items WHERE seq = 0")
                .fetch_one(store.pool())
                .await
                .expect("row");
        assert_eq!(left, None, "erased with the report");
    }

    #[tokio::test]
    async fn sweep_runs_round_trip_and_list_newest_first() {
        let (_dir, store) = temp_store().await;
        let mut a = run("run-a", t0());
        store.insert_sweep_run(&a).await.expect("insert");
        assert_eq!(
            store.get_sweep_run("run-a").await.expect("get"),
            Some(a.clone())
        );
        assert!(matches!(
            store.insert_sweep_run(&a).await,
            Err(StoreError::Conflict("sweep run id"))
        ));

        a.scanned = 10_000;
        a.notified = 42;
        a.already_notified = 7;
        a.no_mail = 3;
        a.expired = 2;
        a.failed = 1;
        a.status = sweep_status::COMPLETED.into();
        a.finished_at = Some(t0() + secs(95));
        a.dry_run = true;
        a.summary = Some(serde_json::json!({"thresholds": [14, 7, 3, 1], "note": "ok"}));
        store.update_sweep_run(&a).await.expect("update");
        assert_eq!(
            store.get_sweep_run("run-a").await.expect("get"),
            Some(a.clone())
        );

        let mut b = run("run-b", t0() + secs(3600));
        b.trigger = "schedule".into();
        store.insert_sweep_run(&b).await.expect("insert b");
        store
            .insert_sweep_run(&run("run-c", t0() - secs(3600)))
            .await
            .expect("insert c");
        let ids = |runs: Vec<SweepRun>| runs.into_iter().map(|r| r.id).collect::<Vec<_>>();
        assert_eq!(
            ids(store.list_sweep_runs(10).await.expect("list")),
            ["run-b", "run-a", "run-c"]
        );
        assert_eq!(
            ids(store.list_sweep_runs(1).await.expect("list")),
            ["run-b"]
        );
        assert!(store.list_sweep_runs(0).await.expect("list").is_empty());

        // A run left running by a stopped instance is marked interrupted; ours is not.
        let n = store
            .interrupt_sweep_runs(Some("run-b"), t0() + secs(7200), "instance stopped")
            .await
            .expect("interrupt");
        assert_eq!(n, 1, "only run-c was still running besides run-b");
        let c = store.get_sweep_run("run-c").await.expect("get").expect("c");
        assert_eq!(c.status, sweep_status::INTERRUPTED);
        assert_eq!(c.finished_at, Some(t0() + secs(7200)));
        assert_eq!(c.error.as_deref(), Some("instance stopped"));
        let b_now = store.get_sweep_run("run-b").await.expect("get").expect("b");
        assert_eq!(b_now, b);
        assert_eq!(
            store
                .get_sweep_run("run-a")
                .await
                .expect("get")
                .expect("a")
                .status,
            sweep_status::COMPLETED,
            "finished runs are left alone"
        );

        assert!(matches!(
            store.update_sweep_run(&run("nope", t0())).await,
            Err(StoreError::NotFound)
        ));
        assert!(store.get_sweep_run("nope").await.expect("get").is_none());
        let mut bad = run("run-d", t0());
        bad.status = "exploded".into();
        assert!(
            store.insert_sweep_run(&bad).await.is_err(),
            "unknown status refused"
        );

        let json = serde_json::to_value(&a).expect("serialize");
        assert_eq!(json["alreadyNotified"], 7);
        assert_eq!(json["dryRun"], true);
        assert_eq!(json["trigger"], "api");
        assert!(json.get("startedAt").is_some() && json.get("finishedAt").is_some());
    }

    #[tokio::test]
    async fn settings_round_trip() {
        let (dir, store) = temp_store().await;
        assert_eq!(store.get_setting("expiry.policy").await.expect("get"), None);
        let policy =
            serde_json::json!({"maxAgeDays": 90, "notifyDays": [14, 7, 1], "onExpiry": null});
        store
            .put_setting("expiry.policy", &policy)
            .await
            .expect("put");
        assert_eq!(
            store.get_setting("expiry.policy").await.expect("get"),
            Some(policy)
        );
        let replaced = serde_json::json!({"maxAgeDays": 0});
        store
            .put_setting("expiry.policy", &replaced)
            .await
            .expect("replace");
        store
            .put_setting("other", &serde_json::json!("text"))
            .await
            .expect("put");
        store.close().await;
        let store = SqliteStore::open(&dir.path().join("lockbridge.db"))
            .await
            .expect("reopen");
        assert_eq!(
            store.get_setting("expiry.policy").await.expect("get"),
            Some(replaced)
        );
        assert_eq!(
            store.get_setting("other").await.expect("get"),
            Some(serde_json::json!("text"))
        );
    }

    #[tokio::test]
    async fn dead_letters_are_listed_newest_first_in_pages() {
        let (_dir, store) = temp_store().await;
        let mut dead = Vec::new();
        for n in 0..5 {
            let id = store
                .enqueue_mail(&mail(n, Some(b"sealed")))
                .await
                .expect("enqueue");
            store.enqueue_mail(&bulk(n)).await.expect("enqueue alive");
            store
                .mark_mail_dead(id, &format!("550 refused {n}"))
                .await
                .expect("dead");
            dead.push(id);
        }
        dead.reverse();
        let page = store.list_dead_mail(None, 3).await.expect("page");
        assert_eq!(page.iter().map(|m| m.id).collect::<Vec<_>>(), dead[..3]);
        assert!(
            page.iter()
                .all(|m| m.status == OutboxStatus::Dead && m.sealed_secret.is_none())
        );
        assert_eq!(page[0].last_error.as_deref(), Some("550 refused 4"));
        let rest = store
            .list_dead_mail(page.last().map(|m| m.id), 10)
            .await
            .expect("page 2");
        assert_eq!(rest.iter().map(|m| m.id).collect::<Vec<_>>(), dead[3..]);
        assert!(
            store
                .list_dead_mail(None, 0)
                .await
                .expect("zero")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn transactional_mail_is_claimed_before_older_bulk_mail() {
        let (_dir, store) = temp_store().await;
        let lease = Duration::from_secs(60);
        let b1 = store.enqueue_mail(&bulk(1)).await.expect("b1");
        let b2 = store.enqueue_mail(&bulk(2)).await.expect("b2");
        let later = NewOutboxMessage {
            created_at: t0() + secs(10),
            ..mail(3, None)
        };
        let t = store.enqueue_mail(&later).await.expect("t");
        let now = t0() + secs(20);

        let all = store.claim_due_mail(now, 10, lease).await.expect("claim");
        assert_eq!(all.iter().map(|m| m.id).collect::<Vec<_>>(), [t, b1, b2]);
        let first = store
            .claim_due_mail(now + secs(61), 1, lease)
            .await
            .expect("claim one");
        assert_eq!(first[0].id, t);
        assert_eq!(first[0].class, MailClass::Transactional);

        let later_still = now + secs(200);
        let only_bulk = store
            .claim_due_mail_of_class(MailClass::Bulk, later_still, 10, lease)
            .await
            .expect("claim bulk");
        assert_eq!(only_bulk.iter().map(|m| m.id).collect::<Vec<_>>(), [b1, b2]);
        let only_t = store
            .claim_due_mail_of_class(MailClass::Transactional, later_still, 10, lease)
            .await
            .expect("claim transactional");
        assert_eq!(only_t.iter().map(|m| m.id).collect::<Vec<_>>(), [t]);
        assert!(
            store
                .claim_due_mail_of_class(MailClass::Bulk, later_still, 10, lease)
                .await
                .expect("leased")
                .is_empty()
        );
        assert!(
            store
                .claim_due_mail_of_class(MailClass::Bulk, later_still, 0, lease)
                .await
                .expect("zero")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn sent_mail_is_counted_by_class_and_time() {
        let (_dir, store) = temp_store().await;
        for (n, minutes_ago) in [(1, 30), (2, 2), (3, 0)] {
            let id = store.enqueue_mail(&bulk(n)).await.expect("enqueue");
            store
                .mark_mail_sent(id, t0() - chrono::Duration::minutes(minutes_ago))
                .await
                .expect("sent");
        }
        let t = store.enqueue_mail(&mail(9, None)).await.expect("enqueue");
        store.mark_mail_sent(t, t0()).await.expect("sent");
        store.enqueue_mail(&bulk(4)).await.expect("pending bulk");

        let count = |class, minutes| {
            let store = store.clone();
            async move {
                store
                    .count_sent_since(class, t0() - chrono::Duration::minutes(minutes))
                    .await
                    .expect("count")
            }
        };
        assert_eq!(count(MailClass::Bulk, 1).await, 1);
        assert_eq!(count(MailClass::Bulk, 2).await, 2, "the bound is inclusive");
        assert_eq!(count(MailClass::Bulk, 60).await, 3);
        assert_eq!(count(MailClass::Transactional, 60).await, 1);
    }

    #[tokio::test]
    async fn held_mail_is_counted_once() {
        let (_dir, store) = temp_store().await;
        store.enqueue_mail(&bulk(1)).await.expect("b1");
        store.enqueue_mail(&bulk(2)).await.expect("b2");
        store.enqueue_mail(&mail(3, None)).await.expect("t");
        let now = t0() + secs(1);
        assert_eq!(
            store
                .mark_due_mail_held(MailClass::Bulk, now)
                .await
                .expect("held"),
            2
        );
        assert_eq!(
            store
                .mark_due_mail_held(MailClass::Bulk, now)
                .await
                .expect("again"),
            0
        );
        store.enqueue_mail(&bulk(4)).await.expect("b4");
        assert_eq!(
            store
                .mark_due_mail_held(MailClass::Bulk, now)
                .await
                .expect("new"),
            1
        );
        // Not yet due: not held.
        let future = NewOutboxMessage {
            created_at: t0() + secs(3600),
            ..bulk(5)
        };
        store.enqueue_mail(&future).await.expect("b5");
        assert_eq!(
            store
                .mark_due_mail_held(MailClass::Bulk, now)
                .await
                .expect("none"),
            0
        );
    }

    #[tokio::test]
    async fn stale_mail_is_dead_lettered_unsent() {
        let (_dir, store) = temp_store().await;
        let stale = store
            .enqueue_mail(&NewOutboxMessage {
                stale_after: Some(t0() + secs(10)),
                sealed_secret: Some(b"sealed".to_vec()),
                ..bulk(1)
            })
            .await
            .expect("stale");
        let fresh = store
            .enqueue_mail(&NewOutboxMessage {
                stale_after: Some(t0() + secs(100)),
                ..bulk(2)
            })
            .await
            .expect("fresh");
        let never = store.enqueue_mail(&bulk(3)).await.expect("never stale");
        assert_eq!(
            store
                .dead_letter_stale_mail(t0() + secs(5))
                .await
                .expect("none"),
            0
        );

        let leased = store
            .claim_due_mail_of_class(MailClass::Bulk, t0() + secs(11), 1, Duration::from_secs(60))
            .await
            .expect("lease the stale one");
        assert_eq!(leased[0].id, stale);
        assert_eq!(leased[0].stale_after, Some(t0() + secs(10)));
        assert_eq!(
            store
                .dead_letter_stale_mail(t0() + secs(12))
                .await
                .expect("leased"),
            0,
            "a message being sent is left to its sender"
        );

        assert_eq!(
            store
                .dead_letter_stale_mail(t0() + secs(80))
                .await
                .expect("stale"),
            1
        );
        let m = store.get_mail(stale).await.expect("get").expect("row");
        assert_eq!(m.status, OutboxStatus::Dead);
        assert_eq!(m.attempts, 0, "never tried");
        assert!(m.sealed_secret.is_none());
        let error = m.last_error.expect("reason");
        assert!(error.contains("not sent by 2030-01-02T03:04:15"), "{error}");
        for id in [fresh, never] {
            let m = store.get_mail(id).await.expect("get").expect("row");
            assert_eq!(m.status, OutboxStatus::Pending);
        }
    }

    #[tokio::test]
    async fn a_database_from_before_0002_is_upgraded_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("lockbridge.db");
        // A deployed database: only 0001 applied, with a queued message.
        let old = tempfile::tempdir().expect("migrations");
        std::fs::copy(
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/src/store/migrations/sqlite/0001_init.sql"
            ),
            old.path().join("0001_init.sql"),
        )
        .expect("copy 0001");
        {
            let pool = SqlitePool::connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true),
            )
            .await
            .expect("pool");
            Migrator::new(old.path())
                .await
                .expect("0001 only")
                .run(&pool)
                .await
                .expect("migrate to 0001");
            sqlx::query(
                "INSERT INTO outbox (message_id, template, recipient, context, sealed_secret, \
                                     next_attempt_at, created_at) \
                 VALUES ('<old@lockbridge>', 'temporary-password', 'old@example.org', '{}', \
                         x'01', '2030-01-02T03:04:05.000000Z', '2030-01-02T03:04:05.000000Z')",
            )
            .execute(&pool)
            .await
            .expect("old row");
            pool.close().await;
        }
        let store = SqliteStore::open(&path).await.expect("upgrade");
        let m = store.get_mail(1).await.expect("get").expect("old row kept");
        assert_eq!(m.class, MailClass::Transactional);
        assert_eq!(m.stale_after, None);
        assert_eq!(m.sealed_secret.as_deref(), Some(&[1u8][..]));
        assert!(
            store
                .record_notice("k", None, &bulk(1))
                .await
                .expect("ledger works")
        );
    }

    #[tokio::test]
    async fn store_is_usable_as_a_trait_object() {
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open_temporary().await.expect("open"));
        let id = store.enqueue_mail(&mail(1, None)).await.expect("enqueue");
        let m = store.get_mail(id).await.expect("get").expect("present");
        let debug = format!("{m:?}");
        assert!(
            !debug.contains("user1@example.org"),
            "Debug hides the recipient"
        );
        assert_eq!(store.outbox_counts().await.expect("counts").pending, 1);
    }
}
