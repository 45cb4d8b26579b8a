//! The audit writer: one thread with its own SQLite connection, appending the records
//! that requests queue and answering each with its id once its commit is synced.
//!
//! Why a thread of its own: every password push waits for its record to be on disk, and
//! going through the async pool cost more than the write itself (a task to wake, a hop
//! to sqlx's connection thread and back, arguments copied per statement). Here a record
//! costs one hand-over to this thread and one prepared statement. Group commit comes for
//! free: what queues while one commit syncs goes into the next one, and when requests
//! have announced records still to come ([`PendingAudit`]) the writer waits
//! [`GATHER_WAIT`] for them first.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, ToSql, TransactionBehavior};
use tokio::sync::{mpsc, oneshot};

use super::{BUSY_TIMEOUT, ts};
use crate::store::chain::{self, GENESIS};
use crate::store::{GATHER_WAIT, NewAuditRecord, PendingAudit, StoreError};

/// Most audit records committed together.
const AUDIT_BATCH: usize = 256;
/// Audit appends that may wait for the writer.
const AUDIT_QUEUE: usize = 4096;

/// What the writer thread is asked to do.
enum Job {
    /// Append a record and send back its id.
    Append(NewAuditRecord, oneshot::Sender<Result<i64, StoreError>>),
    /// Append records in one commit (as far as [`AUDIT_BATCH`] allows) and send back
    /// the first error, if any.
    AppendMany(Vec<NewAuditRecord>, oneshot::Sender<Result<(), StoreError>>),
    /// Close the connection (checkpointing the WAL if it is the last one) and stop.
    Close(oneshot::Sender<()>),
}

/// The handle requests use; clones share the one thread.
#[derive(Debug, Clone)]
pub(super) struct AuditWriter {
    jobs: mpsc::Sender<Job>,
    /// Writes announced as under way: their records are worth waiting for.
    pending: PendingAudit,
    /// Commits made, for the tests (operators see `lockbridge_audit_commits_total`).
    #[cfg_attr(not(test), expect(dead_code, reason = "read by the tests"))]
    commits: Arc<AtomicU64>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Job::Append(..) => "Append",
            Job::AppendMany(..) => "AppendMany",
            Job::Close(_) => "Close",
        })
    }
}

impl AuditWriter {
    /// Opens the writer's connection to the database at `path` (already created and
    /// migrated) and starts its thread.
    pub(super) fn start(path: &Path) -> Result<AuditWriter, StoreError> {
        Self::start_gathering(path, GATHER_WAIT)
    }

    /// [`AuditWriter::start`], waiting `gather_wait` for announced records.
    pub(super) fn start_gathering(
        path: &Path,
        gather_wait: Duration,
    ) -> Result<AuditWriter, StoreError> {
        let conn = open(path).map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot open {} for the audit log: {e}",
                path.display()
            ))
        })?;
        let (jobs, queue) = mpsc::channel(AUDIT_QUEUE);
        let pending = PendingAudit::default();
        let commits = Arc::new(AtomicU64::new(0));
        let writer = Writer {
            conn,
            head: None,
            pending: pending.clone(),
            gather_wait,
            commits: commits.clone(),
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the audit writer: {e}")))?;
        Ok(AuditWriter {
            jobs,
            pending,
            commits,
        })
    }

    /// How many commits this writer has made.
    #[cfg(test)]
    pub(super) fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Where requests announce a record still to come.
    pub(super) fn pending(&self) -> PendingAudit {
        self.pending.clone()
    }

    /// Appends `record` to the chain; returns its id once the commit is synced.
    pub(super) async fn append(&self, record: &NewAuditRecord) -> Result<i64, StoreError> {
        let stopped = || StoreError::Unavailable("the audit writer has stopped".into());
        let (reply, id) = oneshot::channel();
        self.jobs
            .send(Job::Append(record.clone(), reply))
            .await
            .map_err(|_| stopped())?;
        id.await.map_err(|_| stopped())?
    }

    /// Appends `records` in order, in as few commits as the batch size allows (a caller
    /// that acts on many accounts at once); returns once they are synced.
    pub(super) async fn append_many(&self, records: Vec<NewAuditRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let stopped = || StoreError::Unavailable("the audit writer has stopped".into());
        let (reply, done) = oneshot::channel();
        self.jobs
            .send(Job::AppendMany(records, reply))
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Stops the thread after what is queued before this call, and closes its connection.
    /// Appends after that fail as "stopped".
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// The writer's connection: commits synced to disk (`synchronous = FULL`), since a
/// record must survive a power cut once its request was answered.
pub(super) fn open(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.pragma_update(None, "secure_delete", "ON")?;
    Ok(conn)
}

/// The writer thread's state.
struct Writer {
    conn: Connection,
    /// The chain's head as this writer left it: lets the next batch go in as one
    /// statement (see `append_after`) instead of a transaction that reads it first.
    head: Option<ChainHead>,
    pending: PendingAudit,
    gather_wait: Duration,
    commits: Arc<AtomicU64>,
}

impl Writer {
    fn run(mut self, mut queue: mpsc::Receiver<Job>) {
        while let Some(job) = queue.blocking_recv() {
            let mut batch = Vec::new();
            let mut many = Vec::new();
            let mut closing = None;
            let mut take = |job: Job, batch: &mut Vec<(NewAuditRecord, Reply)>| match job {
                Job::Append(record, reply) => {
                    batch.push((record, reply));
                    None
                }
                Job::AppendMany(records, reply) => {
                    // Each record gets a reply of its own; the caller hears the first error.
                    let mut replies = Vec::with_capacity(records.len());
                    for record in records {
                        let (one, answer) = oneshot::channel();
                        batch.push((record, one));
                        replies.push(answer);
                    }
                    many.push((replies, reply));
                    None
                }
                Job::Close(done) => Some(done),
            };
            closing = closing.or(take(job, &mut batch));
            let mut waited = false;
            loop {
                while closing.is_none() && batch.len() < AUDIT_BATCH {
                    match queue.try_recv() {
                        Ok(job) => closing = take(job, &mut batch),
                        Err(_) => break,
                    }
                }
                // Records announced and not queued yet would each sync a commit of their
                // own a moment later: wait for them once, then commit what came. Once
                // only, so a write that stalls (a hung directory) delays others by no
                // more than the wait.
                if waited || closing.is_some() || batch.len() >= AUDIT_BATCH || !self.pending.any()
                {
                    break;
                }
                std::thread::sleep(self.gather_wait);
                waited = true;
            }
            // A long AppendMany is committed in batches of AUDIT_BATCH, in order.
            while batch.len() > AUDIT_BATCH {
                let rest = batch.split_off(AUDIT_BATCH);
                self.commit(batch);
                batch = rest;
            }
            if !batch.is_empty() {
                self.commit(batch);
            }
            for (replies, reply) in many {
                let mut first_error = Ok(());
                for answer in replies {
                    match answer.blocking_recv() {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            first_error = Err(e);
                            break;
                        }
                        Err(_) => {
                            first_error = Err(StoreError::Unavailable(
                                "the audit writer lost a record".into(),
                            ));
                            break;
                        }
                    }
                }
                let _ = reply.send(first_error);
            }
            if let Some(done) = closing {
                if let Err((_, e)) = self.conn.close() {
                    tracing::warn!(error = %e, "the audit writer's connection did not close cleanly");
                }
                let _ = done.send(());
                return;
            }
        }
    }

    /// Commits `batch` and answers every request in it.
    fn commit(&mut self, batch: Vec<(NewAuditRecord, Reply)>) {
        let records: Vec<&NewAuditRecord> = batch.iter().map(|(r, _)| r).collect();
        let conn = &mut self.conn;
        let appended = match self.head.as_ref() {
            Some(known) => match append_after(conn, known, &records) {
                Ok(Some(appended)) => Ok(appended),
                // The head moved (another process appended) or the statement failed: the
                // transaction reads the head afresh and reports a real failure.
                Ok(None) | Err(_) => append_chained(conn, &records),
            },
            None => append_chained(conn, &records),
        };
        self.commits.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("lockbridge_audit_commits_total").increment(1);
        match appended {
            Ok((ids, new_head)) => {
                self.head = Some(new_head);
                metrics::counter!("lockbridge_audit_records_total").increment(ids.len() as u64);
                for ((_, reply), id) in batch.into_iter().zip(ids) {
                    let _ = reply.send(Ok(id));
                }
            }
            Err(e) => {
                self.head = None;
                tracing::error!(error = %e, records = batch.len(), "could not append audit records");
                let cause = e.to_string();
                for (_, reply) in batch {
                    let _ = reply.send(Err(StoreError::Unavailable(cause.clone())));
                }
            }
        }
    }
}

type Reply = oneshot::Sender<Result<i64, StoreError>>;

/// The newest chained record: its id (also AUTOINCREMENT's counter) and hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ChainHead {
    pub(super) id: i64,
    pub(super) hash: Vec<u8>,
}

/// One record ready to insert: its id, time text, and the hashes around it.
struct ChainedRow<'a> {
    id: i64,
    at: String,
    prev: Vec<u8>,
    hash: Vec<u8>,
    record: &'a NewAuditRecord,
}

const INSERT_COLUMNS: &str = "INSERT INTO audit_log (id, at, request_id, actor, action, target, outcome, detail, prev_hash, hash)";

impl ChainedRow<'_> {
    /// The row's ten values, in [`INSERT_COLUMNS`] order.
    fn values(&self) -> [&dyn ToSql; 10] {
        let r = self.record;
        [
            &self.id,
            &self.at,
            &r.request_id,
            &r.actor,
            &r.action,
            &r.target,
            &r.outcome,
            &r.detail,
            &self.prev,
            &self.hash,
        ]
    }
}

/// Chains `records` after `prev`, the first taking id `after + 1`.
fn chain_rows<'a>(
    after: i64,
    prev: Vec<u8>,
    records: &[&'a NewAuditRecord],
) -> Vec<ChainedRow<'a>> {
    let mut prev = prev;
    let mut rows = Vec::with_capacity(records.len());
    for (n, r) in records.iter().enumerate() {
        let id = after + 1 + n as i64;
        let at = ts(r.at);
        let hash = chain::record_hash(&prev, &r.chain_fields(id, &at));
        let next_prev = hash.clone();
        rows.push(ChainedRow {
            id,
            at,
            prev: std::mem::replace(&mut prev, next_prev),
            hash,
            record: r,
        });
    }
    rows
}

fn head_of(rows: &[ChainedRow<'_>], fallback: ChainHead) -> ChainHead {
    rows.last().map_or(fallback, |r| ChainHead {
        id: r.id,
        hash: r.hash.clone(),
    })
}

/// Appends `records` after `head` in one autocommitted statement, on condition that
/// `head` is still the chain's head: AUTOINCREMENT's counter is its id and the record
/// with that id still has its hash. `None` when it is not (another process appended,
/// or a record was removed): the caller then takes the transaction. SQLite computes
/// the SELECT (which reads `audit_log`) before inserting, so the condition holds for
/// the whole batch.
pub(super) fn append_after(
    conn: &Connection,
    head: &ChainHead,
    records: &[&NewAuditRecord],
) -> rusqlite::Result<Option<(Vec<i64>, ChainHead)>> {
    let rows = chain_rows(head.id, head.hash.clone(), records);
    let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; rows.len()].join(", ");
    // Built from a fixed fragment repeated per record; every value is bound. Cached:
    // a batch of one (the usual case) is prepared once per connection.
    let sql = format!(
        "{INSERT_COLUMNS} SELECT * FROM (VALUES {values}) \
         WHERE (SELECT seq FROM sqlite_sequence WHERE name = 'audit_log') = ? \
           AND (SELECT hash FROM audit_log WHERE id = ?) = ?"
    );
    let mut statement = conn.prepare_cached(&sql)?;
    let condition: [&dyn ToSql; 3] = [&head.id, &head.id, &head.hash];
    let bound: Vec<&dyn ToSql> = rows
        .iter()
        .flat_map(|row| row.values())
        .chain(condition)
        .collect();
    let written = statement.execute(rusqlite::params_from_iter(bound))?;
    match written {
        0 => Ok(None),
        n if n == rows.len() => {
            let ids = rows.iter().map(|r| r.id).collect();
            Ok(Some((ids, head_of(&rows, head.clone()))))
        }
        // Cannot happen (the condition is one for the whole statement); if it did, the
        // records are in, and the transaction will build on whatever the head is now.
        n => Err(rusqlite::Error::StatementChangedRows(n)),
    }
}

/// Appends `records` after the chain's head in one IMMEDIATE transaction (so another
/// process appending at the same time waits, and the chain stays one line).
pub(super) fn append_chained(
    conn: &mut Connection,
    records: &[&NewAuditRecord],
) -> rusqlite::Result<(Vec<i64>, ChainHead)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // The newest chained record (one without a hash was not written by lockbridge: it
    // is reported by `audit verify`, not built upon), and AUTOINCREMENT's counter, so
    // that ids are never reused even after the newest records were removed (the gap
    // shows the removal). The id is part of the hash, so it is chosen before the insert.
    let (sequence, newest, head): (Option<i64>, Option<i64>, Option<Vec<u8>>) = tx.query_row(
        "SELECT (SELECT seq FROM sqlite_sequence WHERE name = 'audit_log'), \
                (SELECT MAX(id) FROM audit_log), \
                (SELECT hash FROM audit_log WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1)",
        [],
        |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
    )?;
    let prev = head.unwrap_or_else(|| GENESIS.to_vec());
    let after = sequence.unwrap_or(0).max(newest.unwrap_or(0));
    let rows = chain_rows(after, prev.clone(), records);
    {
        let mut insert = tx.prepare_cached(&format!(
            "{INSERT_COLUMNS} VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
        ))?;
        for row in &rows {
            insert.execute(row.values())?;
        }
    }
    tx.commit()?;
    let ids = rows.iter().map(|r| r.id).collect();
    // An empty batch leaves the head where it was; the fast path then checks the
    // record `after` (absent when the chain is empty, so it falls back here).
    let head = head_of(
        &rows,
        ChainHead {
            id: after,
            hash: prev,
        },
    );
    Ok((ids, head))
}
