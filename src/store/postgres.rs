//! [`PostgresStore`]: the [`Store`] backed by a PostgreSQL database, which several
//! lockbridge instances (on several hosts) may share.
//!
//! Owns the connection settings (TLS, pool, `synchronous_commit = on`) and the SQL text
//! for PostgreSQL. SQL is written out by hand and checked at run time (`sqlx::query`,
//! never the compile-time macros); no statement is built from input. Concurrency is
//! PostgreSQL's own: row locks with `SKIP LOCKED` for mail claims, `ON CONFLICT` for
//! leases and the notice ledger, one advisory lock that queues audit appends from every
//! instance into one chain (`lockbridge_audit_append_encoded`, migration 0006). A
//! transaction that loses a serialization or deadlock check is run again a few times
//! before the caller hears "unavailable".

use std::future::Future;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgSslMode};

mod audit;
mod selfservice;

use self::audit::AuditWriter;
use super::{
    AuditQuery, AuditRecord, AuditSeal, ChainedAuditRecord, FlowRecord, JobItem, JobItemOutcome,
    JobRecord, MAX_AUDIT_PAGE, MAX_PAGE, MAX_REPORT_PAGE, MailClass, NewAuditRecord, NewFlow,
    NewJob, NewOutboxMessage, NewResetRequest, NewSession, NewToken, NewWelcomeLink, OutboxCounts,
    OutboxMessage, OutboxStatus, PendingAudit, RateDecision, RateQuota, ResetRequestRecord,
    SessionRecord, Store, StoreError, StoredAuditSeal, SweepReportLine, SweepRun, TokenRecord,
    WelcomeLinkRecord, sweep_status,
};

pub(super) static MIGRATOR: Migrator = sqlx::migrate!("src/store/migrations/postgres");

/// How many times a transaction that lost a serialization or deadlock check is tried
/// in all before the caller is told the store is unavailable.
const ATTEMPTS: u32 = 5;
/// How long a connection may sit unused before it is pinged ahead of its next use.
/// sqlx pings on every checkout by default: a round trip (a PostgreSQL backend and one
/// of our threads woken) per statement, to find links that died while quiet. Under a
/// steady flow of statements a connection is never quiet that long.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// Report lines stored per row (one JSON array).
const REPORT_BLOCK: usize = 1000;

/// How the connection to the server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostgresTls {
    /// TLS, with the server's certificate checked against the trusted roots and its
    /// name against the host name (`sslmode=verify-full`).
    VerifyFull,
    /// No TLS (only for a server on this host; the configuration checks that).
    Off,
}

/// Where and how to connect. The URL carries no password; it comes separately.
#[derive(Clone)]
pub struct PostgresOptions {
    /// `postgres://USER@HOST:PORT/DATABASE`.
    pub url: String,
    pub password: Option<String>,
    /// A CA certificate (PEM) trusted besides the system's roots.
    pub ca_file: Option<PathBuf>,
    pub tls: PostgresTls,
    pub max_connections: u32,
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for PostgresOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresOptions")
            .field("url", &self.url)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("ca_file", &self.ca_file)
            .field("tls", &self.tls)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The PostgreSQL store. Clones share the pool and the audit writer.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Commits the audit records that queue up in this instance together (group
    /// commit); an advisory lock orders them with other instances' appends.
    audit_writer: AuditWriter,
}

impl PostgresStore {
    /// Connects, brings the schema up to date (sqlx holds an advisory lock while it
    /// migrates, so instances starting together migrate once) and starts the audit
    /// writer. Must be called inside a Tokio runtime.
    pub async fn connect(options: &PostgresOptions) -> Result<PostgresStore, StoreError> {
        let (connect, target) = connect_options(options)?;
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.connect_timeout)
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_CHECK {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(connect)
            .await
            .map_err(|e| {
                StoreError::Unavailable(format!("cannot connect to PostgreSQL at {target}: {e}"))
            })?;
        MIGRATOR.run(&pool).await?;
        let audit_writer = AuditWriter::start(pool.clone());
        Ok(PostgresStore { pool, audit_writer })
    }

    /// For `check-config`: connects once (changing nothing) and says which server
    /// answered and whether the schema is in place.
    pub async fn check(options: &PostgresOptions) -> Result<String, StoreError> {
        let (connect, target) = connect_options(options)?;
        let unreachable = |e: String| {
            StoreError::Unavailable(format!("cannot connect to PostgreSQL at {target}: {e}"))
        };
        let mut conn = tokio::time::timeout(
            options.connect_timeout,
            sqlx::ConnectOptions::connect(&connect),
        )
        .await
        .map_err(|_| unreachable(format!("no answer within {:?}", options.connect_timeout)))?
        .map_err(|e| unreachable(e.to_string()))?;
        let (version, migrated): (String, bool) = sqlx::query_as(
            "SELECT current_setting('server_version'), \
                    to_regclass('_sqlx_migrations') IS NOT NULL",
        )
        .fetch_one(&mut conn)
        .await
        .map_err(err("check"))?;
        let _ = sqlx::Connection::close(conn).await;
        Ok(format!(
            "{target}: PostgreSQL {version} answered{}",
            if migrated {
                ""
            } else {
                "; the schema will be created at first start"
            }
        ))
    }

    /// Closes every connection, after the audit records already queued.
    pub async fn close(&self) {
        self.audit_writer.close().await;
        self.pool.close().await;
    }
}

/// The driver's connection settings, and `host:port/database` for messages (never
/// the password).
pub(super) fn connect_options(
    options: &PostgresOptions,
) -> Result<(PgConnectOptions, String), StoreError> {
    let mut connect = PgConnectOptions::from_str(&options.url)
        .map_err(|e| StoreError::Unavailable(format!("the PostgreSQL URL is not usable: {e}")))?;
    if let Some(password) = &options.password {
        connect = connect.password(password);
    }
    connect = match options.tls {
        PostgresTls::VerifyFull => connect.ssl_mode(PgSslMode::VerifyFull),
        PostgresTls::Off => connect.ssl_mode(PgSslMode::Disable),
    };
    if let Some(ca) = &options.ca_file {
        connect = connect.ssl_root_cert(ca);
    }
    // Whatever the server's default, a commit is on the server's disk before lockbridge
    // answers (the audit log and the notice ledger depend on it), and each statement sees
    // what committed before it (the audit append reads the log's tail after its lock).
    connect = connect.application_name("lockbridge").options([
        ("synchronous_commit", "on"),
        ("timezone", "UTC"),
        ("default_transaction_isolation", "read committed"),
    ]);
    let target = format!(
        "{}:{}/{}",
        connect.get_host(),
        connect.get_port(),
        connect.get_database().unwrap_or("(default database)")
    );
    Ok((connect, target))
}

/// Maps a driver error. `unique` names the rule a unique violation breaks for the
/// statement at hand. A serialization failure or deadlock is left as it is, for
/// [`retrying`] to see (and to map once it gives up).
pub(super) fn classify(e: sqlx::Error, unique: &'static str) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                "23505" => StoreError::Conflict(unique),
                c if transient_code(c) => StoreError::Other(e),
                // Connection exceptions, insufficient resources, operator intervention
                // (shutdown, recovery, "cannot connect now"), a read-only standby.
                c if c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57P")
                    || c == "25006" =>
                {
                    StoreError::Unavailable(format!(
                        "the PostgreSQL server refused: {}",
                        db.message()
                    ))
                }
                _ => StoreError::Other(e),
            }
        }
        sqlx::Error::Io(io) => {
            StoreError::Unavailable(format!("lost the connection to PostgreSQL: {io}"))
        }
        sqlx::Error::Tls(tls) => {
            StoreError::Unavailable(format!("TLS with the PostgreSQL server failed: {tls}"))
        }
        sqlx::Error::PoolTimedOut => StoreError::Unavailable(
            "timed out waiting for a PostgreSQL connection (is the server reachable? is \
             store.max_connections large enough?)"
                .into(),
        ),
        sqlx::Error::PoolClosed => StoreError::Unavailable("the store is closed".into()),
        sqlx::Error::Protocol(p) => {
            StoreError::Unavailable(format!("the PostgreSQL connection broke: {p}"))
        }
        _ => StoreError::Other(e),
    }
}

/// Serialization failure, deadlock: the transaction did nothing and may be run again.
fn transient_code(code: &str) -> bool {
    code == "40001" || code == "40P01"
}

fn is_transient(e: &StoreError) -> bool {
    match e {
        StoreError::Other(sqlx::Error::Database(db)) => {
            db.code().is_some_and(|c| transient_code(c.as_ref()))
        }
        _ => false,
    }
}

fn err(unique: &'static str) -> impl Fn(sqlx::Error) -> StoreError {
    move |e| classify(e, unique)
}

/// Runs `attempt` (one whole transaction) until it does not lose a serialization or
/// deadlock check, at most [`ATTEMPTS`] times.
async fn retrying<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut tries = 0;
    loop {
        tries += 1;
        match attempt().await {
            Err(e) if is_transient(&e) => pause_to_retry(what, tries).await?,
            other => return other,
        }
    }
}

/// After attempt number `tries` lost a serialization or deadlock check: a short, growing
/// pause that lets the other transaction finish, or, after [`ATTEMPTS`], the error.
async fn pause_to_retry(what: &str, tries: u32) -> Result<(), StoreError> {
    if tries >= ATTEMPTS {
        return Err(StoreError::Unavailable(format!(
            "{what}: gave up after {ATTEMPTS} attempts clashing with concurrent \
             transactions; try again"
        )));
    }
    tokio::time::sleep(Duration::from_millis(5 << tries)).await;
    Ok(())
}

/// Fixed-width UTC text with microseconds: the audit chain's form of a time (and the
/// SQLite backend's stored form).
pub(super) fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// `t` cut to the microseconds PostgreSQL keeps, so what is hashed is what is read back.
fn micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

fn decode_error(what: String) -> StoreError {
    StoreError::Other(sqlx::Error::Decode(what.into()))
}

fn to_json_text(value: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Other(sqlx::Error::Encode(e.into())))
}

fn from_json<T: serde::de::DeserializeOwned>(what: &str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| decode_error(format!("{what} is not valid JSON: {e}")))
}

/// A counter as PostgreSQL's bigint.
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn found(rows_affected: u64) -> Result<(), StoreError> {
    if rows_affected == 0 {
        Err(StoreError::NotFound)
    } else {
        Ok(())
    }
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

/// A fresh Message-ID, time-ordered (UUIDv7) so new ids land at the end of the index.
fn new_message_id() -> String {
    format!("<{}@lockbridge>", uuid::Uuid::now_v7())
}

fn lease_end(now: DateTime<Utc>, lease: Duration) -> DateTime<Utc> {
    let lease = chrono::Duration::from_std(lease).unwrap_or(chrono::Duration::hours(1));
    now.checked_add_signed(lease).unwrap_or(now)
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
struct ChainRow {
    #[sqlx(flatten)]
    record: AuditRow,
    prev_hash: Option<Vec<u8>>,
    hash: Option<Vec<u8>>,
}

impl From<ChainRow> for ChainedAuditRecord {
    fn from(r: ChainRow) -> Self {
        ChainedAuditRecord {
            at_text: ts(r.record.at),
            record: r.record.into(),
            prev_hash: r.prev_hash,
            hash: r.hash,
        }
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

/// The outbox columns, in `OutboxRow` order (a macro so statements stay `&'static str`).
macro_rules! outbox_columns {
    () => {
        "id, template, recipient, context::text AS context, sealed_secret, status, attempts, \
         next_attempt_at, last_error, created_at, sent_at, message_id, class, stale_after"
    };
}

/// The conditions that make an outbox row claimable at `$2`.
macro_rules! claimable {
    () => {
        "status = 'pending' AND next_attempt_at <= $2 \
         AND (lease_until IS NULL OR lease_until <= $2)"
    };
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    id: i64,
    template: String,
    recipient: String,
    context: String,
    sealed_secret: Option<Vec<u8>>,
    status: String,
    attempts: i32,
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
        let context = from_json(&format!("outbox {} context", r.id), &r.context)?;
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

macro_rules! sweep_columns {
    () => {
        "id, started_at, finished_at, status, dry_run, triggered_by, sweep_at, scanned, \
         notified, already_notified, no_mail, expired, failed, error, summary::text AS summary"
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
            .as_deref()
            .map(|s| from_json(&format!("sweep run {} summary", r.id), s))
            .transpose()?;
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

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds a run's fields as $1..$15, in `sweep_columns!()` order.
fn bind_run<'q>(query: PgQuery<'q>, run: &'q SweepRun) -> Result<PgQuery<'q>, StoreError> {
    Ok(query
        .bind(&run.id)
        .bind(run.started_at)
        .bind(run.finished_at)
        .bind(&run.status)
        .bind(run.dry_run)
        .bind(&run.trigger)
        .bind(run.at)
        .bind(int(run.scanned))
        .bind(int(run.notified))
        .bind(int(run.already_notified))
        .bind(int(run.no_mail))
        .bind(int(run.expired))
        .bind(int(run.failed))
        .bind(&run.error)
        .bind(run.summary.as_ref().map(to_json_text).transpose()?))
}

macro_rules! job_columns {
    () => {
        "j.id, j.kind, j.actor, j.actor_dn, j.roles::text AS roles, j.params::text AS params, \
         j.sealed_secret, j.status, j.total, j.created_at, j.finished_at, j.error, \
         j.report_taken_at, j.done, j.refused, j.failed, \
         j.total - j.done - j.refused - j.failed AS open \
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
    created_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
    error: Option<String>,
    report_taken_at: Option<DateTime<Utc>>,
    done: i64,
    refused: i64,
    failed: i64,
    open: i64,
}

impl TryFrom<JobRow> for JobRecord {
    type Error = StoreError;

    fn try_from(r: JobRow) -> Result<Self, StoreError> {
        Ok(JobRecord {
            roles: from_json(&format!("job {} roles", r.id), &r.roles)?,
            params: from_json(&format!("job {} params", r.id), &r.params)?,
            created_at: r.created_at,
            finished_at: r.finished_at,
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
            seq: count(r.seq),
            user_name: r.user_name,
            status: r.status,
            code: r.code,
            changed: r.changed,
            sealed_password: r.sealed_password,
            unanswered: u32::try_from(r.unanswered).unwrap_or(u32::MAX),
        }
    }
}

/// Messages as column arrays, for `unnest` (one statement whatever their number).
struct OutboxColumns {
    message_ids: Vec<String>,
    templates: Vec<String>,
    recipients: Vec<String>,
    contexts: Vec<String>,
    secrets: Vec<Option<Vec<u8>>>,
    created: Vec<DateTime<Utc>>,
    classes: Vec<&'static str>,
    stale: Vec<Option<DateTime<Utc>>>,
}

impl OutboxColumns {
    fn of<'a>(
        messages: impl ExactSizeIterator<Item = &'a NewOutboxMessage>,
    ) -> Result<OutboxColumns, StoreError> {
        let n = messages.len();
        let mut c = OutboxColumns {
            message_ids: Vec::with_capacity(n),
            templates: Vec::with_capacity(n),
            recipients: Vec::with_capacity(n),
            contexts: Vec::with_capacity(n),
            secrets: Vec::with_capacity(n),
            created: Vec::with_capacity(n),
            classes: Vec::with_capacity(n),
            stale: Vec::with_capacity(n),
        };
        for m in messages {
            c.message_ids.push(new_message_id());
            c.templates.push(m.template.clone());
            c.recipients.push(m.recipient.clone());
            c.contexts.push(to_json_text(&m.context)?);
            c.secrets.push(m.sealed_secret.clone());
            c.created.push(m.created_at);
            c.classes.push(m.class.as_str());
            c.stale.push(m.stale_after);
        }
        Ok(c)
    }
}

/// Inserts the messages of `c` (due at once) in order and returns their ids, in order.
const INSERT_OUTBOX: &str = "INSERT INTO outbox (message_id, template, recipient, context, \
         sealed_secret, status, attempts, next_attempt_at, created_at, class, stale_after) \
     SELECT m, t, r, c::jsonb, s, 'pending', 0, at, at, k, st \
     FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bytea[], \
                 $6::timestamptz[], $7::text[], $8::timestamptz[]) \
          WITH ORDINALITY AS x (m, t, r, c, s, at, k, st, n) \
     ORDER BY n \
     RETURNING id";

impl PostgresStore {
    async fn try_record_notices(
        &self,
        sweep_id: Option<&str>,
        notices: &[(String, NewOutboxMessage)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("notice ledger"))?;
        let keys: Vec<&str> = notices.iter().map(|(k, _)| k.as_str()).collect();
        let created: Vec<DateTime<Utc>> = notices.iter().map(|(_, m)| m.created_at).collect();
        // Keys in sorted order, so that two instances with overlapping batches lock
        // them in the same order (no deadlock). A key held by another transaction that
        // has not committed waits for it; one already recorded is skipped.
        let inserted: Vec<String> = sqlx::query_scalar(
            "INSERT INTO notice_ledger (key, sweep_id, created_at) \
             SELECT k, $2, at FROM unnest($1::text[], $3::timestamptz[]) \
                 WITH ORDINALITY AS x (k, at, n) \
             ORDER BY k, n \
             ON CONFLICT (key) DO NOTHING \
             RETURNING key",
        )
        .bind(&keys)
        .bind(sweep_id)
        .bind(&created)
        .fetch_all(&mut *tx)
        .await
        .map_err(err("notice ledger key"))?;
        let mut fresh: std::collections::HashSet<&str> =
            inserted.iter().map(String::as_str).collect();
        // The first occurrence of each new key is the one queued.
        let queued: Vec<bool> = keys.iter().map(|k| fresh.remove(k)).collect();
        let to_queue: Vec<&(String, NewOutboxMessage)> = notices
            .iter()
            .zip(&queued)
            .filter(|(_, q)| **q)
            .map(|(n, _)| n)
            .collect();
        if !to_queue.is_empty() {
            let c = OutboxColumns::of(to_queue.iter().map(|(_, m)| m))?;
            let ids: Vec<i64> = sqlx::query_scalar(INSERT_OUTBOX)
                .bind(&c.message_ids)
                .bind(&c.templates)
                .bind(&c.recipients)
                .bind(&c.contexts)
                .bind(&c.secrets)
                .bind(&c.created)
                .bind(&c.classes)
                .bind(&c.stale)
                .fetch_all(&mut *tx)
                .await
                .map_err(err("outbox message id"))?;
            let queued_keys: Vec<&str> = to_queue.iter().map(|(k, _)| k.as_str()).collect();
            sqlx::query(
                "UPDATE notice_ledger l SET outbox_id = x.id \
                 FROM unnest($1::text[], $2::bigint[]) AS x (key, id) WHERE l.key = x.key",
            )
            .bind(&queued_keys)
            .bind(&ids)
            .execute(&mut *tx)
            .await
            .map_err(err("notice ledger"))?;
        }
        tx.commit().await.map_err(err("notice ledger"))?;
        Ok(queued)
    }

    async fn try_insert_job(&self, job: &NewJob, user_names: &[String]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("job"))?;
        sqlx::query(
            "INSERT INTO jobs (id, kind, actor, actor_dn, roles, params, sealed_secret, status, \
                               total, created_at) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb, $7, 'running', $8, $9)",
        )
        .bind(&job.id)
        .bind(&job.kind)
        .bind(&job.actor)
        .bind(&job.actor_dn)
        .bind(to_json_text(&job.roles)?)
        .bind(to_json_text(&job.params)?)
        .bind(&job.sealed_secret)
        .bind(int(user_names.len() as u64))
        .bind(job.created_at)
        .execute(&mut *tx)
        .await
        .map_err(err("job id"))?;
        sqlx::query(
            "INSERT INTO job_items (job_id, seq, user_name, status) \
             SELECT $1, n - 1, u, 'pending' FROM unnest($2::text[]) WITH ORDINALITY AS x (u, n)",
        )
        .bind(&job.id)
        .bind(user_names)
        .execute(&mut *tx)
        .await
        .map_err(err("job item"))?;
        tx.commit().await.map_err(err("job"))?;
        Ok(())
    }

    async fn try_finish_job_items(
        &self,
        id: &str,
        items: &[JobItemOutcome],
    ) -> Result<(), StoreError> {
        let seqs: Vec<i64> = items.iter().map(|o| int(o.seq)).collect();
        let statuses: Vec<&str> = items.iter().map(|o| o.status).collect();
        let codes: Vec<Option<&str>> = items.iter().map(|o| o.code.as_deref()).collect();
        let changed: Vec<bool> = items.iter().map(|o| o.changed).collect();
        let sealed: Vec<Option<&[u8]>> =
            items.iter().map(|o| o.sealed_password.as_deref()).collect();
        let mut tx = self.pool.begin().await.map_err(err("job item"))?;
        sqlx::query(
            "UPDATE job_items SET status = x.status, code = x.code, changed = x.changed, \
                 sealed_password = x.sealed \
             FROM unnest($2::bigint[], $3::text[], $4::text[], $5::boolean[], $6::bytea[]) \
                 AS x (seq, status, code, changed, sealed) \
             WHERE job_items.job_id = $1 AND job_items.seq = x.seq",
        )
        .bind(id)
        .bind(&seqs)
        .bind(&statuses)
        .bind(&codes)
        .bind(&changed)
        .bind(&sealed)
        .execute(&mut *tx)
        .await
        .map_err(err("job item"))?;
        // Recounted once per batch, so that reading a job's progress counts nothing.
        sqlx::query(
            "UPDATE jobs SET done = c.done, refused = c.refused, failed = c.failed \
             FROM (SELECT count(*) FILTER (WHERE status = 'done') AS done, \
                          count(*) FILTER (WHERE status = 'refused') AS refused, \
                          count(*) FILTER (WHERE status = 'failed') AS failed \
                   FROM job_items WHERE job_id = $1) AS c \
             WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(err("job"))?;
        tx.commit().await.map_err(err("job item"))?;
        Ok(())
    }

    async fn try_take_job_report(
        &self,
        id: &str,
        at: DateTime<Utc>,
    ) -> Result<Option<Vec<JobItem>>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("job report"))?;
        let taken = sqlx::query(
            "UPDATE jobs SET report_taken_at = $2 WHERE id = $1 AND report_taken_at IS NULL \
             AND status <> 'running'",
        )
        .bind(id)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(err("job report"))?;
        if taken.rows_affected() == 0 {
            return Ok(None);
        }
        let rows: Vec<JobItemRow> = sqlx::query_as(
            "SELECT seq, user_name, status, code, changed, sealed_password, unanswered \
             FROM job_items \
             WHERE job_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&mut *tx)
        .await
        .map_err(err("job report"))?;
        sqlx::query("UPDATE job_items SET sealed_password = NULL WHERE job_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(err("job report"))?;
        tx.commit().await.map_err(err("job report"))?;
        Ok(Some(rows.into_iter().map(JobItem::from).collect()))
    }

    async fn try_insert_session(&self, s: &NewSession) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("session"))?;
        // Sessions that ended a day ago are no use to anyone (the audit log keeps who
        // signed in when).
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(s.created_at - chrono::Duration::days(1))
            .execute(&mut *tx)
            .await
            .map_err(err("session"))?;
        sqlx::query(
            "INSERT INTO sessions (id, hash, user_dn, user_name, roles, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7)",
        )
        .bind(&s.id)
        .bind(&s.hash)
        .bind(&s.user_dn)
        .bind(&s.user_name)
        .bind(to_json_text(&s.roles)?)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(err("session id or hash"))?;
        tx.commit().await.map_err(err("session"))?;
        Ok(())
    }

    async fn try_append_sweep_report(
        &self,
        sweep_id: &str,
        lines: &[SweepReportLine],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(err("sweep report"))?;
        for block in lines.chunks(REPORT_BLOCK) {
            let (Some(first), Some(last)) = (block.first(), block.last()) else {
                continue;
            };
            sqlx::query(
                "INSERT INTO sweep_report (sweep_id, first_seq, last_seq, lines) \
                 VALUES ($1, $2, $3, $4::jsonb)",
            )
            .bind(sweep_id)
            .bind(int(first.seq))
            .bind(int(last.seq))
            .bind(to_json_text(&block)?)
            .execute(&mut *tx)
            .await
            .map_err(err("sweep report block"))?;
        }
        tx.commit().await.map_err(err("sweep report"))?;
        Ok(())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(err("ping"))?;
        Ok(())
    }

    async fn insert_token(&self, t: &NewToken) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_tokens (id, name, role, hash, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(&t.role)
        .bind(&t.hash)
        .bind(t.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| {
            // An id or hash clash is a caller bug, not "name taken".
            let label = match &e {
                sqlx::Error::Database(db) if db.constraint() != Some("api_tokens_active_name") => {
                    "token id or hash"
                }
                _ => "token name",
            };
            classify(e, label)
        })?;
        Ok(())
    }

    async fn find_token_by_hash(&self, hash: &[u8]) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(
            "SELECT id, name, role, created_at, revoked_at FROM api_tokens \
             WHERE hash = $1 AND revoked_at IS NULL",
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
        // The revocation mark moves in the same statement, so no instance can see the
        // revocation without the mark having moved.
        let revoked: i64 = sqlx::query_scalar(
            "WITH revoked AS ( \
               UPDATE api_tokens SET revoked_at = $1 WHERE name = $2 AND revoked_at IS NULL \
               RETURNING 1), \
             marked AS ( \
               UPDATE revocations SET counter = counter + 1 \
               WHERE id = 1 AND EXISTS (SELECT 1 FROM revoked) RETURNING 1) \
             SELECT count(*) FROM revoked",
        )
        .bind(Utc::now())
        .bind(name)
        .fetch_one(&self.pool)
        .await
        .map_err(err("token"))?;
        Ok(revoked > 0)
    }

    async fn insert_session(&self, s: &NewSession) -> Result<(), StoreError> {
        retrying("session", || self.try_insert_session(s)).await
    }

    async fn find_session_by_hash(
        &self,
        hash: &[u8],
        now: DateTime<Utc>,
    ) -> Result<Option<SessionRecord>, StoreError> {
        let row: Option<(String, String, String, String, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, user_dn, user_name, roles::text, expires_at FROM sessions \
             WHERE hash = $1 AND revoked_at IS NULL AND expires_at > $2",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(err("session"))?;
        let Some((id, user_dn, user_name, roles, expires_at)) = row else {
            return Ok(None);
        };
        Ok(Some(SessionRecord {
            roles: from_json(&format!("session {id} roles"), &roles)?,
            id,
            user_dn,
            user_name,
            expires_at,
        }))
    }

    async fn revoke_session(&self, id: &str, at: DateTime<Utc>) -> Result<bool, StoreError> {
        let ended: i64 = sqlx::query_scalar(
            "WITH ended AS ( \
               UPDATE sessions SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL \
               AND expires_at > $1 RETURNING 1), \
             marked AS ( \
               UPDATE revocations SET counter = counter + 1 \
               WHERE id = 1 AND EXISTS (SELECT 1 FROM ended) RETURNING 1) \
             SELECT count(*) FROM ended",
        )
        .bind(at)
        .bind(id)
        .fetch_one(&self.pool)
        .await
        .map_err(err("session"))?;
        Ok(ended > 0)
    }

    async fn insert_job(&self, job: &NewJob, user_names: &[String]) -> Result<(), StoreError> {
        retrying("job", || self.try_insert_job(job, user_names)).await
    }

    async fn get_job(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row: Option<JobRow> =
            sqlx::query_as(concat!("SELECT ", job_columns!(), " WHERE j.id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await
                .map_err(err("job"))?;
        row.map(JobRecord::try_from).transpose()
    }

    async fn running_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows: Vec<JobRow> = sqlx::query_as(concat!(
            "SELECT ",
            job_columns!(),
            " WHERE j.status = 'running' ORDER BY j.created_at, j.id"
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
             WHERE job_id = $1 AND status IN ('pending', 'writing') AND seq > $3 \
             ORDER BY seq LIMIT $2",
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
            "SELECT seq, user_name, status, code, changed, NULL::bytea AS sealed_password, \
             unanswered FROM job_items WHERE job_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
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
        let seqs: Vec<i64> = items.iter().map(|(s, _)| int(*s)).collect();
        let sealed: Vec<&[u8]> = items.iter().map(|(_, p)| p.as_slice()).collect();
        // One statement is one transaction: all items or none.
        retrying("job item", || async {
            sqlx::query(
                "UPDATE job_items SET status = 'writing', sealed_password = x.sealed \
                 FROM unnest($2::bigint[], $3::bytea[]) AS x (seq, sealed) \
                 WHERE job_items.job_id = $1 AND job_items.seq = x.seq \
                   AND job_items.status = 'pending'",
            )
            .bind(id)
            .bind(&seqs)
            .bind(&sealed)
            .execute(&self.pool)
            .await
            .map_err(err("job item"))?;
            Ok(())
        })
        .await
    }

    async fn count_unanswered_job_items(&self, id: &str, seqs: &[u64]) -> Result<(), StoreError> {
        if seqs.is_empty() {
            return Ok(());
        }
        let seqs: Vec<i64> = seqs.iter().map(|s| int(*s)).collect();
        retrying("job item", || async {
            sqlx::query(
                "UPDATE job_items SET unanswered = unanswered + 1 \
                 WHERE job_id = $1 AND status IN ('pending', 'writing') AND seq = ANY($2)",
            )
            .bind(id)
            .bind(&seqs)
            .execute(&self.pool)
            .await
            .map_err(err("job item"))?;
            Ok(())
        })
        .await
    }

    async fn finish_job_items(&self, id: &str, items: &[JobItemOutcome]) -> Result<(), StoreError> {
        if items.is_empty() {
            return Ok(());
        }
        retrying("job item", || self.try_finish_job_items(id, items)).await
    }

    async fn finish_job(
        &self,
        id: &str,
        status: &str,
        error: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET status = $2, error = $3, finished_at = $4, sealed_secret = NULL \
             WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(error)
        .bind(at)
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
        retrying("job report", || self.try_take_job_report(id, at)).await
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
             FROM audit_log WHERE id > $1 AND ($2::timestamptz IS NULL OR at >= $2) \
             ORDER BY id LIMIT $3",
        )
        .bind(after_id)
        .bind(since)
        .bind(i64::from(limit.min(MAX_AUDIT_PAGE)))
        .fetch_all(&self.pool)
        .await
        .map_err(err("audit record"))?;
        Ok(rows.into_iter().map(ChainedAuditRecord::from).collect())
    }

    async fn audit_head(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError> {
        // As the SQLite backend: the newest record, and no head when it has no hash.
        let head: Option<(i64, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT id, hash FROM audit_log ORDER BY id DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await
                .map_err(err("audit record"))?;
        Ok(head.and_then(|(id, hash)| hash.map(|h| (id, h))))
    }

    async fn append_audit_seal(&self, s: &AuditSeal) -> Result<i64, StoreError> {
        sqlx::query_scalar(
            "INSERT INTO audit_seals (at, record_id, head_hash, mac) VALUES ($1, $2, $3, $4) \
             RETURNING id",
        )
        .bind(s.at)
        .bind(s.record_id)
        .bind(&s.head_hash)
        .bind(&s.mac)
        .fetch_one(&self.pool)
        .await
        .map_err(err("audit seal"))
    }

    async fn audit_seals_page(
        &self,
        after_id: i64,
        limit: u32,
    ) -> Result<Vec<StoredAuditSeal>, StoreError> {
        let rows: Vec<SealRow> = sqlx::query_as(
            "SELECT id, at, record_id, head_hash, mac FROM audit_seals WHERE id > $1 \
             ORDER BY id LIMIT $2",
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

    async fn enqueue_mail(&self, m: &NewOutboxMessage) -> Result<i64, StoreError> {
        let c = OutboxColumns::of(std::iter::once(m))?;
        let ids: Vec<i64> = sqlx::query_scalar(INSERT_OUTBOX)
            .bind(&c.message_ids)
            .bind(&c.templates)
            .bind(&c.recipients)
            .bind(&c.contexts)
            .bind(&c.secrets)
            .bind(&c.created)
            .bind(&c.classes)
            .bind(&c.stale)
            .fetch_all(&self.pool)
            .await
            .map_err(err("outbox message id"))?;
        ids.first()
            .copied()
            .ok_or_else(|| decode_error("the outbox insert returned no id".into()))
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
        // One statement: due rows of each class, read through the class's index, are
        // locked as they are read; rows another instance is claiming right now are
        // skipped (not waited for), and the lease is set on the chosen ones before the
        // locks go. Transactional first, then oldest due.
        let rows: Vec<OutboxRow> = sqlx::query_as(concat!(
            "WITH t AS ( \
                 SELECT id, next_attempt_at FROM outbox \
                 WHERE class = 'transactional' AND ",
            claimable!(),
            "    ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED), \
             b AS ( \
                 SELECT id, next_attempt_at FROM outbox \
                 WHERE class = 'bulk' AND ",
            claimable!(),
            "    ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED), \
             pick AS ( \
                 SELECT id AS pick_id FROM (SELECT id, 0 AS rank, next_attempt_at FROM t \
                                 UNION ALL SELECT id, 1, next_attempt_at FROM b) AS due \
                 ORDER BY rank, next_attempt_at, id LIMIT $3) \
             UPDATE outbox SET lease_until = $1 FROM pick WHERE outbox.id = pick.pick_id \
             RETURNING ",
            outbox_columns!()
        ))
        .bind(lease_end(now, lease))
        .bind(now)
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
        let done = sqlx::query(
            "UPDATE outbox SET lease_until = $1 \
             WHERE id = ANY($2) AND status = 'pending' AND lease_until > $3",
        )
        .bind(until)
        .bind(ids)
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(err("outbox"))?;
        Ok(done.rows_affected())
    }

    async fn mark_mail_sent(&self, id: i64, at: DateTime<Utc>) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'sent', sealed_secret = NULL, sent_at = $1, \
                 attempts = attempts + 1, lease_until = NULL, last_error = NULL \
             WHERE id = $2",
        )
        .bind(at)
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
            "UPDATE outbox SET attempts = attempts + 1, last_error = $1, next_attempt_at = $2, \
                 lease_until = NULL \
             WHERE id = $3",
        )
        .bind(clip(error))
        .bind(next_attempt_at)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err("outbox"))?;
        found(done.rows_affected())
    }

    async fn mark_mail_dead(&self, id: i64, error: &str) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'dead', sealed_secret = NULL, attempts = attempts + 1, \
                 last_error = $1, lease_until = NULL \
             WHERE id = $2",
        )
        .bind(clip(error))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(err("outbox"))?;
        found(done.rows_affected())
    }

    async fn outbox_counts(&self) -> Result<OutboxCounts, StoreError> {
        let (pending, sent, dead, pending_bulk, retrying_transactional, retrying_bulk): (
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
        ) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE status = 'pending'), \
                    count(*) FILTER (WHERE status = 'sent'), \
                    count(*) FILTER (WHERE status = 'dead'), \
                    count(*) FILTER (WHERE status = 'pending' AND class = 'bulk'), \
                    count(*) FILTER (WHERE status = 'pending' AND class = 'transactional' \
                                     AND attempts > 0), \
                    count(*) FILTER (WHERE status = 'pending' AND class = 'bulk' \
                                     AND attempts > 0) \
             FROM outbox",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(err("outbox"))?;
        Ok(OutboxCounts {
            pending: count(pending),
            sent: count(sent),
            dead: count(dead),
            pending_bulk: count(pending_bulk),
            retrying_transactional: count(retrying_transactional),
            retrying_bulk: count(retrying_bulk),
        })
    }

    async fn get_mail(&self, id: i64) -> Result<Option<OutboxMessage>, StoreError> {
        let row: Option<OutboxRow> = sqlx::query_as(concat!(
            "SELECT ",
            outbox_columns!(),
            " FROM outbox WHERE id = $1"
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
            "WITH pick AS ( \
                 SELECT id AS pick_id FROM outbox WHERE class = $4 AND ",
            claimable!(),
            "    ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED) \
             UPDATE outbox SET lease_until = $1 FROM pick WHERE outbox.id = pick.pick_id \
             RETURNING ",
            outbox_columns!()
        ))
        .bind(lease_end(now, lease))
        .bind(now)
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
            "SELECT count(*) FROM outbox WHERE status = 'sent' AND class = $1 AND sent_at >= $2",
        )
        .bind(class.as_str())
        .bind(since)
        .fetch_one(&self.pool)
        .await
        .map_err(err("outbox"))?;
        Ok(count(n))
    }

    async fn mark_due_mail_held(
        &self,
        class: MailClass,
        now: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let done = sqlx::query(concat!(
            "UPDATE outbox SET held_at = $2 \
             WHERE class = $1 AND held_at IS NULL AND ",
            claimable!()
        ))
        .bind(class.as_str())
        .bind(now)
        .execute(&self.pool)
        .await
        .map_err(err("outbox"))?;
        Ok(done.rows_affected())
    }

    async fn dead_letter_stale_mail(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE outbox SET status = 'dead', sealed_secret = NULL, lease_until = NULL, \
                 last_error = 'not sent by ' \
                     || to_char(stale_after AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
                     || ', after which it would be out of date; dropped unsent' \
             WHERE status = 'pending' AND stale_after IS NOT NULL AND stale_after <= $1 \
               AND (lease_until IS NULL OR lease_until <= $1)",
        )
        .bind(now)
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
            " FROM outbox WHERE status = 'dead' AND ($1::bigint IS NULL OR id < $1) \
              ORDER BY id DESC LIMIT $2"
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
        let notices = [(ledger_key.to_owned(), message.clone())];
        let queued = self.record_notices(sweep_id, &notices).await?;
        Ok(queued.first().copied().unwrap_or(false))
    }

    async fn record_notices(
        &self,
        sweep_id: Option<&str>,
        notices: &[(String, NewOutboxMessage)],
    ) -> Result<Vec<bool>, StoreError> {
        if notices.is_empty() {
            return Ok(Vec::new());
        }
        // One transaction for the batch: ledger rows (ON CONFLICT DO NOTHING on the
        // key), outbox rows for the keys that were new, then the links between them.
        retrying("notice ledger", || {
            self.try_record_notices(sweep_id, notices)
        })
        .await
    }

    async fn notices_recorded(&self, ledger_keys: &[String]) -> Result<Vec<bool>, StoreError> {
        if ledger_keys.is_empty() {
            return Ok(Vec::new());
        }
        let present: Vec<bool> = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM notice_ledger l WHERE l.key = x.k) \
             FROM unnest($1::text[]) WITH ORDINALITY AS x (k, n) ORDER BY n",
        )
        .bind(ledger_keys)
        .fetch_all(&self.pool)
        .await
        .map_err(err("notice ledger"))?;
        Ok(present)
    }

    async fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // One statement: insert, or take over only when the lease is ours or has run
        // out. A refused upsert changes no row. Concurrent takers of a free lease queue
        // on the key; the later ones then see the winner's row and its condition.
        let done = sqlx::query(
            "INSERT INTO leases (name, holder, held_until) VALUES ($1, $2, $4) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                                              held_until = excluded.held_until \
             WHERE leases.holder = excluded.holder OR leases.held_until <= $3",
        )
        .bind(name)
        .bind(holder)
        .bind(now)
        .bind(until)
        .execute(&self.pool)
        .await
        .map_err(err("lease"))?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
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
        retrying("sweep report", || {
            self.try_append_sweep_report(sweep_id, lines)
        })
        .await
    }

    async fn sweep_report_page(
        &self,
        sweep_id: &str,
        after_seq: Option<u64>,
        limit: u32,
    ) -> Result<Vec<SweepReportLine>, StoreError> {
        use futures::TryStreamExt;
        let limit = limit.min(MAX_REPORT_PAGE) as usize;
        let after = after_seq.map_or(-1, int);
        let mut page = Vec::with_capacity(limit.min(REPORT_BLOCK));
        if limit == 0 {
            return Ok(page);
        }
        let mut blocks = sqlx::query_scalar::<_, String>(
            "SELECT lines::text FROM sweep_report WHERE sweep_id = $1 AND last_seq > $2 \
             ORDER BY first_seq",
        )
        .bind(sweep_id)
        .bind(after)
        .fetch(&self.pool);
        while let Some(block) = blocks.try_next().await.map_err(err("sweep report"))? {
            let lines: Vec<SweepReportLine> = from_json("sweep report block", &block)?;
            for line in lines {
                if int(line.seq) > after {
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
        let removed: Option<i64> = sqlx::query_scalar(
            "WITH gone AS ( \
                 DELETE FROM sweep_report WHERE sweep_id IN \
                     (SELECT id FROM sweep_runs WHERE started_at < $1) \
                 RETURNING last_seq - first_seq + 1 AS n) \
             SELECT sum(n)::bigint FROM gone",
        )
        .bind(before)
        .fetch_one(&self.pool)
        .await
        .map_err(err("sweep report"))?;
        Ok(count(removed.unwrap_or(0)))
    }

    async fn insert_sweep_run(&self, run: &SweepRun) -> Result<(), StoreError> {
        let query = sqlx::query(
            "INSERT INTO sweep_runs (id, started_at, finished_at, status, dry_run, triggered_by, \
                 sweep_at, scanned, notified, already_notified, no_mail, expired, failed, error, \
                 summary) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15::jsonb)",
        );
        bind_run(query, run)?
            .execute(&self.pool)
            .await
            .map_err(err("sweep run id"))?;
        Ok(())
    }

    async fn update_sweep_run(&self, run: &SweepRun) -> Result<(), StoreError> {
        let query = sqlx::query(
            "UPDATE sweep_runs SET started_at = $2, finished_at = $3, status = $4, \
                 dry_run = $5, triggered_by = $6, sweep_at = $7, scanned = $8, notified = $9, \
                 already_notified = $10, no_mail = $11, expired = $12, failed = $13, \
                 error = $14, summary = $15::jsonb \
             WHERE id = $1",
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
            " FROM sweep_runs WHERE id = $1"
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
            " FROM sweep_runs ORDER BY started_at DESC, id DESC LIMIT $1"
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
            "UPDATE sweep_runs SET status = $1, finished_at = $2, error = $3 \
             WHERE status = $4 AND ($5::text IS NULL OR id <> $5)",
        )
        .bind(sweep_status::INTERRUPTED)
        .bind(at)
        .bind(clip(error))
        .bind(sweep_status::RUNNING)
        .bind(except_id)
        .execute(&self.pool)
        .await
        .map_err(err("sweep run"))?;
        Ok(done.rows_affected())
    }

    async fn get_setting(&self, key: &str) -> Result<Option<serde_json::Value>, StoreError> {
        let text: Option<String> =
            sqlx::query_scalar("SELECT value::text FROM settings WHERE key = $1")
                .bind(key)
                .fetch_optional(&self.pool)
                .await
                .map_err(err("setting"))?;
        text.map(|t| from_json(&format!("setting {key}"), &t))
            .transpose()
    }

    async fn put_setting(&self, key: &str, value: &serde_json::Value) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO settings (key, value, updated_at) VALUES ($1, $2::jsonb, $3) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, \
                                             updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(to_json_text(value)?)
        .bind(Utc::now())
        .execute(&self.pool)
        .await
        .map_err(err("setting"))?;
        Ok(())
    }

    async fn insert_flow(&self, f: &NewFlow, now: DateTime<Utc>) -> Result<(), StoreError> {
        retrying("flow", || self.flow_insert(f, now)).await
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
        retrying("welcome link", || self.welcome_insert(w)).await
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

    async fn take_rate(
        &self,
        key: &str,
        quota: RateQuota,
        want: u32,
        now: DateTime<Utc>,
    ) -> Result<RateDecision, StoreError> {
        let now = now.timestamp_micros();
        let (tat, granted) = retrying("rate bucket", || async {
            let mut tx = self.pool.begin().await.map_err(err("rate bucket"))?;
            // A bucket whose TAT has passed is full, the same as no row: removing it
            // changes no decision. A few at a time, skipping rows another instance is
            // using, so pruning never makes a request wait.
            sqlx::query(
                "DELETE FROM rate_buckets WHERE key IN ( \
                   SELECT key FROM rate_buckets WHERE tat < $1 \
                   LIMIT 64 FOR UPDATE SKIP LOCKED)",
            )
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(err("rate bucket"))?;
            // The SET expressions see the row as it was, so `granted` and `tat` are
            // computed from the same old TAT (src/store/rate.rs has the rule).
            let row: (i64, i64) = sqlx::query_as(
                "INSERT INTO rate_buckets AS b (key, tat, granted) \
                 VALUES ($1, $2 + LEAST($4, $5) * $3, LEAST($4, $5)) \
                 ON CONFLICT (key) DO UPDATE SET \
                   granted = LEAST($4, GREATEST($5 * $3 - (GREATEST(b.tat, $2) - $2), 0) / $3), \
                   tat = GREATEST(b.tat, $2) \
                       + LEAST($4, GREATEST($5 * $3 - (GREATEST(b.tat, $2) - $2), 0) / $3) * $3 \
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
            Ok(row)
        })
        .await?;
        let granted = u32::try_from(granted)
            .map_err(|_| decode_error(format!("rate bucket granted {granted}")))?;
        Ok(RateDecision::after(quota, granted, tat, now))
    }

    async fn revocation_mark(&self) -> Result<i64, StoreError> {
        sqlx::query_scalar("SELECT counter FROM revocations WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(err("revocation mark"))
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// A server error with SQLSTATE `code`, as sqlx hands it over.
    #[derive(Debug)]
    struct ServerError(&'static str);

    impl std::fmt::Display for ServerError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "SQLSTATE {}", self.0)
        }
    }

    impl std::error::Error for ServerError {}

    impl sqlx::error::DatabaseError for ServerError {
        fn message(&self) -> &str {
            "server error"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(Cow::Borrowed(self.0))
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    fn server_error(code: &'static str) -> StoreError {
        StoreError::Other(sqlx::Error::Database(Box::new(ServerError(code))))
    }

    /// Runs `retrying` over an attempt that fails with `code` the first `failures` times.
    async fn attempts_until(code: &'static str, failures: u32) -> (Result<u32, StoreError>, u32) {
        let tries = AtomicU32::new(0);
        let result = retrying("test", || async {
            let n = tries.fetch_add(1, Ordering::SeqCst) + 1;
            if n <= failures {
                Err(server_error(code))
            } else {
                Ok(n)
            }
        })
        .await;
        (result, tries.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn serialization_failures_and_deadlocks_are_run_again_other_errors_are_not() {
        for code in ["40001", "40P01"] {
            let (result, tries) = attempts_until(code, ATTEMPTS - 1).await;
            assert_eq!(
                result.ok(),
                Some(ATTEMPTS),
                "{code}: the last attempt succeeds"
            );
            assert_eq!(tries, ATTEMPTS);

            let (result, tries) = attempts_until(code, ATTEMPTS).await;
            assert_eq!(tries, ATTEMPTS, "{code}: no attempt beyond the limit");
            match result {
                Err(StoreError::Unavailable(m)) => assert!(m.contains("try again"), "{m}"),
                other => panic!("{code}: {other:?}"),
            }
        }
        // A unique violation is an answer, not a clash: no second attempt.
        let (result, tries) = attempts_until("23505", 1).await;
        assert_eq!(tries, 1);
        assert!(matches!(result, Err(StoreError::Other(_))), "{result:?}");
    }
}
