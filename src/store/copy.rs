//! Copies a SQLite store into an empty PostgreSQL store (`lockbridge store copy`), so an
//! installation moving to several instances keeps its API tokens, audit chain, notice
//! ledger, outbox, jobs, sessions and self-service state.
//!
//! Which tables move is written out here ([`COPIED`], [`NOT_COPIED`]); their columns and
//! types are read from both live schemas. A table or column the plan does not account
//! for stops the copy before anything is written, so a future migration cannot be
//! skipped silently. The target is written in ONE PostgreSQL transaction (its schema
//! included): everything is copied, or nothing. The source is opened read-only and read
//! in one read transaction (a consistent snapshot).
//!
//! No value is ever printed or logged: errors name a table, a column and a row number.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use sha2::{Digest, Sha256};
use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection, Row};

use super::{PostgresOptions, StoreError, postgres, sqlite};

/// The tables copied, in an order that satisfies the foreign keys (outbox before the
/// notice ledger, jobs before their items).
pub const COPIED: &[&str] = &[
    "api_tokens",
    "audit_log",
    "audit_seals",
    "outbox",
    "notice_ledger",
    "leases",
    "sweep_runs",
    "sweep_report",
    "settings",
    "sessions",
    "jobs",
    "job_items",
    "selfservice_flows",
    "reset_requests",
    "welcome_links",
    "rate_buckets",
    "revocations",
];

/// Tables of either schema that are deliberately not copied, and why. (SQLite's own
/// `sqlite_*` tables are not lockbridge's; `sqlite_sequence` is read to advance the
/// target's id sequences.)
pub const NOT_COPIED: &[(&str, &str)] = &[
    (
        "_sqlx_migrations",
        "each store's own migration history; the target's is written when its schema is \
         created",
    ),
    (
        "audit_chain_head",
        "PostgreSQL only: set from the copied audit log (its last id and hash)",
    ),
];

/// Tables the PostgreSQL migrations fill with one row, and when such a row means data
/// (the copy replaces the row).
const SEEDED: &[(&str, &str)] = &[("revocations", "counter <> 0")];

/// Tables read back after the copy and compared with the source, field by field: the
/// audit chain's hashes cover the exact time text, so it must survive the move exactly.
const VERIFIED: &[&str] = &["audit_log", "audit_seals"];

/// Rows sent per INSERT (one bound array per column).
const BATCH: usize = 1000;

/// How long the copy waits for a lock on the target before giving up: a running
/// instance holds them.
const LOCK_TIMEOUT: &str = "10s";

/// How many rows of each table were copied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyReport {
    /// In copy order.
    pub tables: Vec<(String, u64)>,
    /// The last audit record's id on the target (the chain's head), if any.
    pub audit_last_id: Option<i64>,
}

impl CopyReport {
    pub fn rows(&self, table: &str) -> Option<u64> {
        self.tables
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, n)| *n)
    }
}

/// Why the copy did not happen. In every case nothing was written to the target.
#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("the SQLite store {0} does not exist")]
    NoSource(PathBuf),
    #[error("cannot read the SQLite store {path}: {source}")]
    Source { path: PathBuf, source: StoreError },
    /// The source's schema is not the one this lockbridge has.
    #[error("the SQLite store {path} {problem}")]
    SourceSchema { path: PathBuf, problem: String },
    /// Signs that an instance is at work on the source.
    #[error(
        "the SQLite store seems to be in use: {0}. Stop every lockbridge instance using it \
         and copy again (the copy takes the state as it is when it starts)"
    )]
    SourceInUse(String),
    #[error("PostgreSQL: {0}")]
    Target(StoreError),
    #[error(
        "the target database is in use (a lock was not granted within {LOCK_TIMEOUT}): stop \
         the instances using it and copy again"
    )]
    TargetBusy,
    #[error(
        "the target database already holds lockbridge data ({0}). The copy only goes into an \
         empty store: name a new database in the target configuration, or drop and create \
         this one again if its data is not wanted"
    )]
    TargetNotEmpty(String),
    /// The two schemas disagree in a way the copy does not know how to handle.
    #[error("the SQLite and PostgreSQL schemas differ in a way this copy does not handle: {0}")]
    SchemaDrift(String),
    /// A value the target cannot take (it names no value, only where it is).
    #[error("{table}.{column}, row {row}: {reason}")]
    BadValue {
        table: String,
        column: String,
        row: u64,
        reason: String,
    },
    /// The audit chain's hashes cover a time's exact text, which PostgreSQL would not
    /// give back as stored.
    #[error(
        "{table}, row {row}: the time {at:?} is not in lockbridge's fixed format \
         (microseconds, UTC), so PostgreSQL could not give back the text its hash covers"
    )]
    AuditTime { table: String, row: u64, at: String },
    /// A check after the copy failed (the transaction was rolled back).
    #[error("the copy does not match the source: {0}")]
    Mismatch(String),
}

/// Copies the SQLite store at `source` into the PostgreSQL store `target`, which must
/// be empty (its schema is created when missing). One transaction on the target.
pub async fn sqlite_to_postgres(
    source: &Path,
    target: &PostgresOptions,
) -> Result<CopyReport, CopyError> {
    if !source.is_file() {
        return Err(CopyError::NoSource(source.to_path_buf()));
    }
    let source_err = |e: sqlx::Error| CopyError::Source {
        path: source.to_path_buf(),
        source: StoreError::classify(e, "copy"),
    };
    let mut source_conn = SqliteConnectOptions::new()
        .filename(source)
        .read_only(true)
        .create_if_missing(false)
        .connect()
        .await
        .map_err(source_err)?;
    // One read transaction: every table is read from the same snapshot.
    let mut src = source_conn.begin().await.map_err(source_err)?;
    check_source_migrations(&mut src, source).await?;
    check_source_idle(&mut src).await.map_err(|e| match e {
        Fault::Sql(e) => source_err(e),
        Fault::Copy(e) => e,
    })?;
    let sqlite_tables = sqlite_schema(&mut src).await.map_err(source_err)?;

    let target_err = |e: sqlx::Error| {
        // lock_not_available: lock_timeout ran out behind someone else's lock.
        let busy = matches!(&e, sqlx::Error::Database(db) if db.code().as_deref() == Some("55P03"));
        if busy {
            CopyError::TargetBusy
        } else {
            CopyError::Target(postgres::classify(e, "copy"))
        }
    };
    let (connect, _) = postgres::connect_options(target).map_err(CopyError::Target)?;
    let mut target_conn = tokio::time::timeout(target.connect_timeout, connect.connect())
        .await
        .map_err(|_| {
            CopyError::Target(StoreError::Unavailable(format!(
                "no answer within {:?}",
                target.connect_timeout
            )))
        })?
        .map_err(target_err)?;
    let mut tx = target_conn.begin().await.map_err(target_err)?;
    sqlx::query(AssertSqlSafe(format!(
        "SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"
    )))
    .execute(&mut *tx)
    .await
    .map_err(target_err)?;
    // The schema is created inside the copy's transaction: a failed copy leaves the
    // database as it found it.
    postgres::MIGRATOR
        .run(&mut *tx)
        .await
        .map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e)
            | sqlx::migrate::MigrateError::ExecuteMigration(e, _) => target_err(e),
            e => CopyError::Target(e.into()),
        })?;
    let pg_tables = postgres_schema(&mut tx).await.map_err(target_err)?;
    let plan = plan(&sqlite_tables, &pg_tables)?;

    // Writers wait (or time out) until the copy commits; readers are let through.
    let mut locked: Vec<String> = plan.iter().map(|t| quoted(&t.name)).collect();
    locked.push(quoted("audit_chain_head"));
    sqlx::query(AssertSqlSafe(format!(
        "LOCK TABLE {} IN EXCLUSIVE MODE",
        locked.join(", ")
    )))
    .execute(&mut *tx)
    .await
    .map_err(target_err)?;
    check_target_empty(&mut tx, &plan).await?;

    let mut report = CopyReport::default();
    let mut digests = BTreeMap::new();
    for table in &plan {
        let copied = copy_table(&mut src, &mut tx, table)
            .await
            .map_err(|e| match e {
                Side::Source(e) => source_err(e),
                Side::Target(e) => target_err(e),
                Side::Copy(e) => e,
            })?;
        if let Some(digest) = copied.digest {
            digests.insert(table.name.clone(), digest);
        }
        report.tables.push((table.name.clone(), copied.rows));
    }
    advance_sequences(&mut src, &mut tx, &plan)
        .await
        .map_err(|e| match e {
            Side::Source(e) => source_err(e),
            Side::Target(e) => target_err(e),
            Side::Copy(e) => e,
        })?;
    report.audit_last_id = set_chain_head(&mut tx).await.map_err(target_err)?;
    check_copy(&mut tx, &plan, &report, &digests)
        .await
        .map_err(|e| match e {
            Fault::Sql(e) => target_err(e),
            Fault::Copy(e) => e,
        })?;
    tx.commit().await.map_err(target_err)?;
    let _ = target_conn.close().await;
    // Nothing was written to the source; ending its read transaction releases the snapshot.
    let _ = src.rollback().await;
    let _ = source_conn.close().await;
    Ok(report)
}

/// An error that is either the driver's or already the copy's own.
enum Fault {
    Sql(sqlx::Error),
    Copy(CopyError),
}

impl From<sqlx::Error> for Fault {
    fn from(e: sqlx::Error) -> Self {
        Fault::Sql(e)
    }
}

/// Which connection a driver error came from.
enum Side {
    Source(sqlx::Error),
    Target(sqlx::Error),
    Copy(CopyError),
}

/// The source must have exactly this version's migrations: an older store is brought
/// up to date by starting this version once; a newer one is not understood.
async fn check_source_migrations(src: &mut SqliteConnection, path: &Path) -> Result<(), CopyError> {
    let schema_err = |problem: String| CopyError::SourceSchema {
        path: path.to_path_buf(),
        problem,
    };
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *src)
            .await
            .map_err(|_| {
                schema_err("is not a lockbridge store (it has no migration history)".into())
            })?;
    let known: Vec<i64> = sqlite::MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    if let Some(newer) = applied.iter().find(|v| !known.contains(v)) {
        return Err(schema_err(format!(
            "was migrated by a newer lockbridge (migration {newer}); copy it with that version"
        )));
    }
    if let Some(missing) = known.iter().find(|v| !applied.contains(v)) {
        return Err(schema_err(format!(
            "lacks migration {missing}: start this version of lockbridge on it once (or run \
             `lockbridge audit verify` with its configuration), stop it, and copy again"
        )));
    }
    Ok(())
}

/// A lease held now (a sweep or a bulk job at work) or mail claimed now means an instance
/// is running: what it writes after the snapshot would be lost.
async fn check_source_idle(src: &mut SqliteConnection) -> Result<(), Fault> {
    let now = postgres::ts(Utc::now());
    let leases: Vec<(String, String)> =
        sqlx::query_as("SELECT name, held_until FROM leases WHERE held_until > ?1 ORDER BY name")
            .bind(&now)
            .fetch_all(&mut *src)
            .await?;
    let claimed: (i64, Option<String>) = sqlx::query_as(
        "SELECT count(*), max(lease_until) FROM outbox \
         WHERE status = 'pending' AND lease_until > ?1",
    )
    .bind(&now)
    .fetch_one(&mut *src)
    .await?;
    let mut signs: Vec<String> = leases
        .into_iter()
        .map(|(name, until)| format!("lease `{name}` is held until {until}"))
        .collect();
    if let (n @ 1.., Some(until)) = claimed {
        signs.push(format!(
            "{n} outbox message(s) are being sent (claimed until {until})"
        ));
    }
    if signs.is_empty() {
        Ok(())
    } else {
        Err(Fault::Copy(CopyError::SourceInUse(signs.join("; "))))
    }
}

/// A column of the target's schema.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PgColumn {
    name: String,
    data_type: String,
    identity: bool,
}

/// How a column's values are read from SQLite and bound for PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    /// `jsonb`, sent as text and cast.
    Json,
    /// `bigint` or `integer`.
    Int,
    /// `boolean`: SQLite's 0 or 1.
    Bool,
    /// `timestamptz`: SQLite's fixed-width RFC 3339 text.
    Time,
    Bytes,
}

impl Kind {
    fn of(data_type: &str) -> Option<Kind> {
        Some(match data_type {
            "text" => Kind::Text,
            "jsonb" => Kind::Json,
            "bigint" | "integer" => Kind::Int,
            "boolean" => Kind::Bool,
            "timestamp with time zone" => Kind::Time,
            "bytea" => Kind::Bytes,
            _ => return None,
        })
    }

    fn array_type(self) -> &'static str {
        match self {
            Kind::Text | Kind::Json => "text[]",
            Kind::Int => "bigint[]",
            Kind::Bool => "boolean[]",
            Kind::Time => "timestamptz[]",
            Kind::Bytes => "bytea[]",
        }
    }
}

#[derive(Debug, Clone)]
struct Column {
    name: String,
    kind: Kind,
    identity: bool,
}

/// One table to copy, its columns in the target's order.
#[derive(Debug, Clone)]
struct Table {
    name: String,
    columns: Vec<Column>,
}

/// lockbridge's tables on SQLite and their columns.
async fn sqlite_schema(
    src: &mut SqliteConnection,
) -> Result<BTreeMap<String, Vec<String>>, sqlx::Error> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' \
         AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY name",
    )
    .fetch_all(&mut *src)
    .await?;
    let mut tables = BTreeMap::new();
    for name in names {
        let columns: Vec<String> =
            sqlx::query_scalar("SELECT name FROM pragma_table_info(?1) ORDER BY cid")
                .bind(&name)
                .fetch_all(&mut *src)
                .await?;
        tables.insert(name, columns);
    }
    Ok(tables)
}

/// The tables of the target's schema and their columns.
async fn postgres_schema(
    dst: &mut PgConnection,
) -> Result<BTreeMap<String, Vec<PgColumn>>, sqlx::Error> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&mut *dst)
    .await?;
    let columns: Vec<(String, String, String, bool)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, is_identity::text = 'YES' \
         FROM information_schema.columns WHERE table_schema = current_schema() \
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut *dst)
    .await?;
    let mut schema: BTreeMap<String, Vec<PgColumn>> =
        tables.into_iter().map(|t| (t, Vec::new())).collect();
    for (table, name, data_type, identity) in columns {
        if let Some(cols) = schema.get_mut(&table) {
            cols.push(PgColumn {
                name,
                data_type,
                identity,
            });
        }
    }
    Ok(schema)
}

/// Matches the two schemas against [`COPIED`] and [`NOT_COPIED`]: every table of either
/// side must be one or the other, and a copied table must have the same columns on both
/// sides, of types the copy converts. Lists every problem at once.
fn plan(
    sqlite: &BTreeMap<String, Vec<String>>,
    pg: &BTreeMap<String, Vec<PgColumn>>,
) -> Result<Vec<Table>, CopyError> {
    let mut problems = Vec::new();
    let all: BTreeSet<&String> = sqlite.keys().chain(pg.keys()).collect();
    for name in all {
        let known =
            COPIED.contains(&name.as_str()) || NOT_COPIED.iter().any(|(t, _)| *t == name.as_str());
        if !known {
            let side = match (sqlite.contains_key(name), pg.contains_key(name)) {
                (true, true) => "in both schemas",
                (true, false) => "only in SQLite",
                _ => "only in PostgreSQL",
            };
            problems.push(format!(
                "table `{name}` ({side}) is neither copied nor listed as not copied \
                 (src/store/copy.rs)"
            ));
        }
    }
    let mut tables = Vec::new();
    for &name in COPIED {
        let (Some(lite), Some(post)) = (sqlite.get(name), pg.get(name)) else {
            problems.push(format!(
                "table `{name}` is to be copied but {} has no such table",
                if sqlite.contains_key(name) {
                    "PostgreSQL"
                } else {
                    "SQLite"
                }
            ));
            continue;
        };
        let mut columns = Vec::new();
        for column in post {
            if !lite.contains(&column.name) {
                problems.push(format!(
                    "column `{name}.{}` is only in PostgreSQL",
                    column.name
                ));
            }
            match Kind::of(&column.data_type) {
                Some(kind) if plain(&column.name) => columns.push(Column {
                    name: column.name.clone(),
                    kind,
                    identity: column.identity,
                }),
                Some(_) => problems.push(format!(
                    "column `{name}.{}` has a name the copy does not quote",
                    column.name
                )),
                None => problems.push(format!(
                    "column `{name}.{}` is of type `{}`, which the copy does not convert",
                    column.name, column.data_type
                )),
            }
        }
        for column in lite {
            if !post.iter().any(|c| &c.name == column) {
                problems.push(format!("column `{name}.{column}` is only in SQLite"));
            }
        }
        tables.push(Table {
            name: name.to_string(),
            columns,
        });
    }
    if problems.is_empty() {
        Ok(tables)
    } else {
        Err(CopyError::SchemaDrift(problems.join("; ")))
    }
}

/// A plain lower-case SQL identifier (what lockbridge's migrations use).
fn plain(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

/// Refuses a target that holds anything: a copy on top of data would mix two histories
/// (two audit chains, two notice ledgers).
async fn check_target_empty(dst: &mut PgConnection, plan: &[Table]) -> Result<(), CopyError> {
    let mut found = Vec::new();
    for table in plan {
        let condition = SEEDED
            .iter()
            .find(|(t, _)| *t == table.name)
            .map(|(_, c)| format!(" WHERE {c}"))
            .unwrap_or_default();
        let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}{condition}",
            quoted(&table.name)
        )))
        .fetch_one(&mut *dst)
        .await
        .map_err(|e| CopyError::Target(postgres::classify(e, "copy")))?;
        if rows > 0 {
            found.push(format!("{}: {rows} rows", table.name));
        }
    }
    let head: bool = sqlx::query_scalar(
        "SELECT last_id <> 0 OR last_hash IS NOT NULL FROM audit_chain_head WHERE singleton",
    )
    .fetch_optional(&mut *dst)
    .await
    .map_err(|e| CopyError::Target(postgres::classify(e, "copy")))?
    .unwrap_or(false);
    if head {
        found.push("audit_chain_head: an audit chain was started".into());
    }
    if found.is_empty() {
        Ok(())
    } else {
        Err(CopyError::TargetNotEmpty(found.join(", ")))
    }
}

/// One value read from SQLite, converted for PostgreSQL.
#[derive(Debug)]
enum Value {
    Null,
    Text(String),
    Int(i64),
    Bool(bool),
    Time(DateTime<Utc>),
    Bytes(Vec<u8>),
}

/// A batch of one column's values, bound as one array.
enum Values {
    Text(Vec<Option<String>>),
    Int(Vec<Option<i64>>),
    Bool(Vec<Option<bool>>),
    Time(Vec<Option<DateTime<Utc>>>),
    Bytes(Vec<Option<Vec<u8>>>),
}

impl Values {
    fn for_kind(kind: Kind) -> Values {
        match kind {
            Kind::Text | Kind::Json => Values::Text(Vec::new()),
            Kind::Int => Values::Int(Vec::new()),
            Kind::Bool => Values::Bool(Vec::new()),
            Kind::Time => Values::Time(Vec::new()),
            Kind::Bytes => Values::Bytes(Vec::new()),
        }
    }

    /// Adds `value`; the kinds always match ([`read_value`] makes values of the column's
    /// kind).
    fn push(&mut self, value: Value) {
        match (self, value) {
            (Values::Text(v), Value::Text(x)) => v.push(Some(x)),
            (Values::Text(v), _) => v.push(None),
            (Values::Int(v), Value::Int(x)) => v.push(Some(x)),
            (Values::Int(v), _) => v.push(None),
            (Values::Bool(v), Value::Bool(x)) => v.push(Some(x)),
            (Values::Bool(v), _) => v.push(None),
            (Values::Time(v), Value::Time(x)) => v.push(Some(x)),
            (Values::Time(v), _) => v.push(None),
            (Values::Bytes(v), Value::Bytes(x)) => v.push(Some(x)),
            (Values::Bytes(v), _) => v.push(None),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn len(&self) -> usize {
        match self {
            Values::Text(v) => v.len(),
            Values::Int(v) => v.len(),
            Values::Bool(v) => v.len(),
            Values::Time(v) => v.len(),
            Values::Bytes(v) => v.len(),
        }
    }
}

/// What copying one table did.
struct Copied {
    rows: u64,
    /// For [`VERIFIED`] tables: the digest of the values sent.
    digest: Option<Vec<u8>>,
}

async fn copy_table(
    src: &mut SqliteConnection,
    dst: &mut PgConnection,
    table: &Table,
) -> Result<Copied, Side> {
    if SEEDED.iter().any(|(t, _)| *t == table.name) {
        // The migration's row is replaced by the source's.
        sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM {}",
            quoted(&table.name)
        )))
        .execute(&mut *dst)
        .await
        .map_err(Side::Target)?;
    }
    let verified = VERIFIED.contains(&table.name.as_str());
    // A record's hash covers its time as text (a seal's MAC only its microseconds).
    let exact_time = table.name == "audit_log";
    let names: Vec<String> = table.columns.iter().map(|c| quoted(&c.name)).collect();
    let order = if table.columns.iter().any(|c| c.name == "id") {
        " ORDER BY \"id\""
    } else {
        ""
    };
    let select = format!(
        "SELECT {} FROM {}{order}",
        names.join(", "),
        quoted(&table.name)
    );
    let insert = insert_statement(table);
    let mut digest = verified.then(Sha256::new);
    let mut batch: Vec<Values> = table
        .columns
        .iter()
        .map(|c| Values::for_kind(c.kind))
        .collect();
    let mut rows = 0u64;
    let mut stream = sqlx::query(AssertSqlSafe(select)).fetch(&mut *src);
    while let Some(row) = stream.try_next().await.map_err(Side::Source)? {
        rows += 1;
        for (i, column) in table.columns.iter().enumerate() {
            let value =
                read_value(&row, i, column, &table.name, rows, exact_time).map_err(Side::Copy)?;
            if let Some(d) = digest.as_mut() {
                feed(d, &value);
            }
            batch[i].push(value);
        }
        if batch.first().is_some_and(|b| b.len() >= BATCH) {
            send_batch(dst, &insert, &mut batch, &table.columns)
                .await
                .map_err(Side::Target)?;
        }
    }
    drop(stream);
    if batch.first().is_some_and(|b| !b.is_empty()) {
        send_batch(dst, &insert, &mut batch, &table.columns)
            .await
            .map_err(Side::Target)?;
    }
    Ok(Copied {
        rows,
        digest: digest.map(|d| d.finalize().to_vec()),
    })
}

/// `INSERT ... SELECT ... FROM unnest($1::type[], ...)`: a batch in one statement.
fn insert_statement(table: &Table) -> String {
    let names: Vec<String> = table.columns.iter().map(|c| quoted(&c.name)).collect();
    let arrays: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}", i + 1, c.kind.array_type()))
        .collect();
    let values: Vec<String> = table
        .columns
        .iter()
        .map(|c| match c.kind {
            Kind::Json => format!("{}::jsonb", quoted(&c.name)),
            _ => quoted(&c.name),
        })
        .collect();
    // Identity columns take the source's ids as they are.
    let overriding = if table.columns.iter().any(|c| c.identity) {
        " OVERRIDING SYSTEM VALUE"
    } else {
        ""
    };
    format!(
        "INSERT INTO {table} ({names}){overriding} SELECT {values} FROM unnest({arrays}) AS src ({names})",
        table = quoted(&table.name),
        names = names.join(", "),
        values = values.join(", "),
        arrays = arrays.join(", "),
    )
}

async fn send_batch(
    dst: &mut PgConnection,
    insert: &str,
    batch: &mut [Values],
    columns: &[Column],
) -> Result<(), sqlx::Error> {
    let mut query = sqlx::query(AssertSqlSafe(insert.to_string()));
    for (values, column) in batch.iter_mut().zip(columns) {
        query = match std::mem::replace(values, Values::for_kind(column.kind)) {
            Values::Text(v) => query.bind(v),
            Values::Int(v) => query.bind(v),
            Values::Bool(v) => query.bind(v),
            Values::Time(v) => query.bind(v),
            Values::Bytes(v) => query.bind(v),
        };
    }
    query.execute(&mut *dst).await?;
    Ok(())
}

/// Reads column `i` of a SQLite row as the target's column wants it.
fn read_value(
    row: &sqlx::sqlite::SqliteRow,
    i: usize,
    column: &Column,
    table: &str,
    row_number: u64,
    exact_time: bool,
) -> Result<Value, CopyError> {
    let bad = |reason: String| CopyError::BadValue {
        table: table.to_string(),
        column: column.name.clone(),
        row: row_number,
        reason,
    };
    // sqlx's decode errors name types, never values.
    let value = match column.kind {
        Kind::Text => row
            .try_get::<Option<String>, _>(i)
            .map_err(|e| bad(e.to_string()))?
            .map(Value::Text),
        Kind::Json => {
            let text = row
                .try_get::<Option<String>, _>(i)
                .map_err(|e| bad(e.to_string()))?;
            if let Some(text) = &text {
                serde_json::from_str::<serde::de::IgnoredAny>(text)
                    .map_err(|_| bad("not valid JSON".into()))?;
            }
            text.map(Value::Text)
        }
        Kind::Int => row
            .try_get::<Option<i64>, _>(i)
            .map_err(|e| bad(e.to_string()))?
            .map(Value::Int),
        Kind::Bool => match row
            .try_get::<Option<i64>, _>(i)
            .map_err(|e| bad(e.to_string()))?
        {
            None => None,
            Some(0) => Some(Value::Bool(false)),
            Some(1) => Some(Value::Bool(true)),
            Some(_) => return Err(bad("a flag other than 0 or 1".into())),
        },
        Kind::Time => match row
            .try_get::<Option<String>, _>(i)
            .map_err(|e| bad(e.to_string()))?
        {
            None => None,
            Some(text) => {
                let at = DateTime::parse_from_rfc3339(&text)
                    .map_err(|e| bad(format!("not an RFC 3339 time: {e}")))?
                    .with_timezone(&Utc);
                if at.timestamp_subsec_nanos() % 1000 != 0 {
                    return Err(bad(
                        "a time finer than the microseconds PostgreSQL keeps".into()
                    ));
                }
                // The chain hashed this exact text; PostgreSQL gives back lockbridge's
                // fixed format, so only that format survives the move.
                if exact_time && postgres::ts(at) != text {
                    return Err(CopyError::AuditTime {
                        table: table.to_string(),
                        row: row_number,
                        at: text,
                    });
                }
                Some(Value::Time(at))
            }
        },
        Kind::Bytes => row
            .try_get::<Option<Vec<u8>>, _>(i)
            .map_err(|e| bad(e.to_string()))?
            .map(Value::Bytes),
    };
    Ok(value.unwrap_or(Value::Null))
}

/// Feeds one value, unambiguously (a tag, then a length where the length varies).
fn feed(digest: &mut Sha256, value: &Value) {
    let bytes = |digest: &mut Sha256, tag: u8, b: &[u8]| {
        digest.update([tag]);
        digest.update((b.len() as u64).to_be_bytes());
        digest.update(b);
    };
    match value {
        Value::Null => digest.update([0]),
        Value::Text(t) => bytes(digest, 1, t.as_bytes()),
        Value::Int(n) => {
            digest.update([2]);
            digest.update(n.to_be_bytes());
        }
        Value::Bool(b) => digest.update([3, u8::from(*b)]),
        // As the audit chain sees a time: lockbridge's fixed text.
        Value::Time(t) => bytes(digest, 4, postgres::ts(*t).as_bytes()),
        Value::Bytes(b) => bytes(digest, 5, b),
    }
}

/// Moves each identity sequence past the copied ids, and past every id SQLite ever gave
/// out (`sqlite_sequence`: AUTOINCREMENT never reuses an id, even of a purged row).
async fn advance_sequences(
    src: &mut SqliteConnection,
    dst: &mut PgConnection,
    plan: &[Table],
) -> Result<(), Side> {
    let has_sequences: bool = sqlx::query_scalar(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'",
    )
    .fetch_one(&mut *src)
    .await
    .map_err(Side::Source)?;
    for table in plan {
        for column in table.columns.iter().filter(|c| c.identity) {
            let given: Option<i64> = if has_sequences {
                sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = ?1")
                    .bind(&table.name)
                    .fetch_optional(&mut *src)
                    .await
                    .map_err(Side::Source)?
            } else {
                None
            };
            let copied: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT max({}) FROM {}",
                quoted(&column.name),
                quoted(&table.name)
            )))
            .fetch_one(&mut *dst)
            .await
            .map_err(Side::Target)?;
            let last = given.unwrap_or(0).max(copied.unwrap_or(0));
            if last > 0 {
                sqlx::query("SELECT setval(pg_get_serial_sequence($1, $2), $3)")
                    .bind(&table.name)
                    .bind(&column.name)
                    .bind(last)
                    .execute(&mut *dst)
                    .await
                    .map_err(Side::Target)?;
            }
        }
    }
    Ok(())
}

/// Points the chain's head at the copied log's last record (as migration 0003 does for
/// a log written before the head kept its hash); returns its id.
async fn set_chain_head(dst: &mut PgConnection) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query(
        "UPDATE audit_chain_head SET \
             last_id = coalesce((SELECT max(id) FROM audit_log), 0), \
             last_hash = (SELECT hash FROM audit_log WHERE hash IS NOT NULL \
                          ORDER BY id DESC LIMIT 1) \
         WHERE singleton",
    )
    .execute(&mut *dst)
    .await?;
    sqlx::query_scalar("SELECT max(id) FROM audit_log")
        .fetch_one(&mut *dst)
        .await
}

/// Before the commit: every table holds as many rows as were read, and the audit
/// tables read back exactly as they were sent (so the chain verifies on PostgreSQL
/// exactly as it did on SQLite).
async fn check_copy(
    dst: &mut PgConnection,
    plan: &[Table],
    report: &CopyReport,
    digests: &BTreeMap<String, Vec<u8>>,
) -> Result<(), Fault> {
    for table in plan {
        let rows: i64 = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT count(*) FROM {}",
            quoted(&table.name)
        )))
        .fetch_one(&mut *dst)
        .await?;
        let expected = report.rows(&table.name).unwrap_or(0);
        if u64::try_from(rows).ok() != Some(expected) {
            return Err(Fault::Copy(CopyError::Mismatch(format!(
                "{} holds {rows} rows, {expected} were copied",
                table.name
            ))));
        }
        let Some(sent) = digests.get(&table.name) else {
            continue;
        };
        let columns: Vec<String> = table
            .columns
            .iter()
            .map(|c| match c.kind {
                Kind::Int => format!("{}::bigint", quoted(&c.name)),
                Kind::Json => format!("{}::text", quoted(&c.name)),
                _ => quoted(&c.name),
            })
            .collect();
        let mut digest = Sha256::new();
        let mut stream = sqlx::query(AssertSqlSafe(format!(
            "SELECT {} FROM {} ORDER BY \"id\"",
            columns.join(", "),
            quoted(&table.name)
        )))
        .fetch(&mut *dst);
        while let Some(row) = stream.try_next().await? {
            for (i, column) in table.columns.iter().enumerate() {
                let value = match column.kind {
                    Kind::Text | Kind::Json => {
                        row.try_get::<Option<String>, _>(i)?.map(Value::Text)
                    }
                    Kind::Int => row.try_get::<Option<i64>, _>(i)?.map(Value::Int),
                    Kind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
                    Kind::Time => row.try_get::<Option<DateTime<Utc>>, _>(i)?.map(Value::Time),
                    Kind::Bytes => row.try_get::<Option<Vec<u8>>, _>(i)?.map(Value::Bytes),
                };
                feed(&mut digest, &value.unwrap_or(Value::Null));
            }
        }
        if digest.finalize().as_slice() != sent.as_slice() {
            return Err(Fault::Copy(CopyError::Mismatch(format!(
                "{} does not read back as it was sent",
                table.name
            ))));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pg(columns: &[(&str, &str)]) -> Vec<PgColumn> {
        columns
            .iter()
            .map(|(name, data_type)| PgColumn {
                name: name.to_string(),
                data_type: data_type.to_string(),
                identity: false,
            })
            .collect()
    }

    /// Both schemas with every copied table holding one `id` column.
    fn schemas() -> (
        BTreeMap<String, Vec<String>>,
        BTreeMap<String, Vec<PgColumn>>,
    ) {
        let lite = COPIED
            .iter()
            .map(|t| (t.to_string(), vec!["id".to_string()]))
            .collect();
        let post = COPIED
            .iter()
            .map(|t| (t.to_string(), pg(&[("id", "bigint")])))
            .collect();
        (lite, post)
    }

    #[test]
    fn matching_schemas_give_a_plan_in_copy_order() {
        let (lite, post) = schemas();
        let plan = plan(&lite, &post).expect("a plan");
        let names: Vec<&str> = plan.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, COPIED);
    }

    #[test]
    fn a_table_nobody_listed_stops_the_copy() {
        let (mut lite, mut post) = schemas();
        lite.insert("surprise".into(), vec!["id".into()]);
        post.insert("novelty".into(), pg(&[("id", "bigint")]));
        let err = plan(&lite, &post).expect_err("drift").to_string();
        assert!(err.contains("`surprise` (only in SQLite)"), "{err}");
        assert!(err.contains("`novelty` (only in PostgreSQL)"), "{err}");
    }

    #[test]
    fn columns_and_types_must_match() {
        let (mut lite, mut post) = schemas();
        lite.insert("outbox".into(), vec!["id".into(), "extra".into()]);
        post.insert("jobs".into(), pg(&[("id", "bigint"), ("shape", "point")]));
        let err = plan(&lite, &post).expect_err("drift").to_string();
        assert!(err.contains("`outbox.extra` is only in SQLite"), "{err}");
        assert!(err.contains("`jobs.shape` is only in PostgreSQL"), "{err}");
        assert!(err.contains("`jobs.shape` is of type `point`"), "{err}");
    }

    #[test]
    fn no_table_is_both_copied_and_not_copied() {
        for (table, _) in NOT_COPIED {
            assert!(!COPIED.contains(table), "{table}");
        }
    }

    #[test]
    fn the_insert_binds_one_array_per_column() {
        let table = Table {
            name: "outbox".into(),
            columns: vec![
                Column {
                    name: "id".into(),
                    kind: Kind::Int,
                    identity: true,
                },
                Column {
                    name: "context".into(),
                    kind: Kind::Json,
                    identity: false,
                },
            ],
        };
        assert_eq!(
            insert_statement(&table),
            "INSERT INTO \"outbox\" (\"id\", \"context\") OVERRIDING SYSTEM VALUE \
             SELECT \"id\", \"context\"::jsonb FROM unnest($1::bigint[], $2::text[]) \
             AS src (\"id\", \"context\")"
        );
    }
}
