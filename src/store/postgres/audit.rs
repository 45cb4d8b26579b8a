//! The audit writer on PostgreSQL: one task per store that commits the records queued
//! meanwhile in one transaction (group commit), chained after the chain's head. When
//! requests have announced records still to come ([`PendingAudit`]), it waits
//! [`GATHER_WAIT`] for them first, as the SQLite writer does.
//!
//! Instances on other hosts append too, so the head is read inside the transaction, after
//! taking the chain's advisory lock (`lockbridge_audit_append_encoded`, migration 0006):
//! appends from every instance queue on that lock, each sees the one before it committed,
//! and the chain stays one line with ids growing in chain order.
//!
//! The writer keeps a connection of its own, outside the pool: a pooled connection costs
//! two more round trips per append (sqlx pings it when it is taken and again when it is
//! given back), each waking a PostgreSQL backend and one of our threads, for every
//! password push. Its own connection is pinged only after [`IDLE_CHECK`] unused, so a link
//! that died while quiet is found before an append rather than by one.

use std::time::Instant;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, oneshot};

use super::{IDLE_CHECK, err, is_transient, micros, pause_to_retry, ts};
use crate::store::chain;
use crate::store::{GATHER_WAIT, NewAuditRecord, PendingAudit, StoreError};

/// Most audit records committed together.
const AUDIT_BATCH: usize = 256;
/// Audit appends that may wait for the writer.
const AUDIT_QUEUE: usize = 4096;

type Reply = oneshot::Sender<Result<i64, StoreError>>;
type ManyReply = oneshot::Sender<Result<(), StoreError>>;

enum Job {
    /// Append a record and send back its id.
    Append(Box<NewAuditRecord>, Reply),
    /// Append records in order and send back the first error, if any.
    AppendMany(Vec<NewAuditRecord>, ManyReply),
    /// Stop once the jobs queued before are done.
    Close(oneshot::Sender<()>),
}

/// The handle requests use; clones share the one task.
#[derive(Debug, Clone)]
pub(super) struct AuditWriter {
    jobs: mpsc::Sender<Job>,
    /// Writes announced as under way: their records are worth waiting for.
    pending: PendingAudit,
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the audit writer has stopped".into())
}

impl AuditWriter {
    /// Starts the writer's task (inside a Tokio runtime).
    pub(super) fn start(pool: PgPool) -> AuditWriter {
        let (jobs, queue) = mpsc::channel(AUDIT_QUEUE);
        let pending = PendingAudit::default();
        tokio::spawn(run(pool, queue, pending.clone()));
        AuditWriter { jobs, pending }
    }

    /// Where requests announce a record still to come.
    pub(super) fn pending(&self) -> PendingAudit {
        self.pending.clone()
    }

    /// Appends `record`; returns its id once its commit is durable.
    pub(super) async fn append(&self, record: &NewAuditRecord) -> Result<i64, StoreError> {
        let (reply, id) = oneshot::channel();
        self.jobs
            .send(Job::Append(Box::new(record.clone()), reply))
            .await
            .map_err(|_| stopped())?;
        id.await.map_err(|_| stopped())?
    }

    /// Appends `records` in order, in as few commits as the batch size allows.
    pub(super) async fn append_many(&self, records: Vec<NewAuditRecord>) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let (reply, done) = oneshot::channel();
        self.jobs
            .send(Job::AppendMany(records, reply))
            .await
            .map_err(|_| stopped())?;
        done.await.map_err(|_| stopped())?
    }

    /// Waits for the records queued so far, then stops the task.
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.jobs.send(Job::Close(done)).await.is_ok() {
            let _ = closed.await;
        }
    }
}

/// What one commit answers: a single append's id, or a part of an `AppendMany`.
enum Waiter {
    One(Reply),
    /// Index into the batch's list of `AppendMany` replies.
    Many(usize),
}

/// The writer's own connection, taken from the pool and detached from it, so the pool
/// neither pings it per use nor counts it (`store.max_connections` plus this one).
struct Link {
    pool: PgPool,
    /// The connection and when it last answered; `None` after any error, so the next
    /// append opens a new one.
    conn: Option<(PgConnection, Instant)>,
}

impl Link {
    /// The connection, opened again if it broke or, after [`IDLE_CHECK`] unused, does
    /// not answer a ping within the pool's acquire timeout (`store.connect_timeout_secs`,
    /// the bound the pool puts on its own pings).
    async fn connection(&mut self) -> Result<&mut PgConnection, StoreError> {
        let patience = self.pool.options().get_acquire_timeout();
        if let Some((conn, last_used)) = &mut self.conn
            && last_used.elapsed() >= IDLE_CHECK
            && !matches!(
                tokio::time::timeout(patience, conn.ping()).await,
                Ok(Ok(()))
            )
        {
            self.conn = None;
        }
        let open = match self.conn.take() {
            Some(open) => open,
            None => {
                let conn = self.pool.acquire().await.map_err(err("audit record"))?;
                (conn.detach(), Instant::now())
            }
        };
        Ok(&mut self.conn.insert(open).0)
    }

    /// Says goodbye to the server, so that it logs a client that left, not a lost one.
    async fn close(&mut self) {
        if let Some((conn, _)) = self.conn.take() {
            let _ = conn.close().await;
        }
    }

    /// Appends `records` (one statement; see [`append`]), retrying a lost serialization
    /// check as `retrying` does. A connection that failed is dropped, not reused: after an
    /// error its state is unknown, and opening another costs nothing next to the error.
    async fn append(&mut self, records: &[&NewAuditRecord]) -> Result<Vec<i64>, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let outcome = match self.connection().await {
                Ok(conn) => append(conn, records).await,
                Err(e) => Err(e),
            };
            match &mut self.conn {
                Some((_, last_used)) if outcome.is_ok() => *last_used = Instant::now(),
                _ => self.conn = None,
            }
            match outcome {
                Err(e) if is_transient(&e) => pause_to_retry("audit record", tries).await?,
                other => return other,
            }
        }
    }
}

async fn run(pool: PgPool, mut queue: mpsc::Receiver<Job>, pending: PendingAudit) {
    let mut link = Link { pool, conn: None };
    while let Some(job) = queue.recv().await {
        let mut records: Vec<(NewAuditRecord, Waiter)> = Vec::new();
        // Each AppendMany's reply and its first error.
        let mut many: Vec<(ManyReply, Result<(), StoreError>)> = Vec::new();
        let mut closing = None;
        let mut take = |job: Job, records: &mut Vec<(NewAuditRecord, Waiter)>| match job {
            Job::Append(record, reply) => {
                records.push((*record, Waiter::One(reply)));
                None
            }
            Job::AppendMany(batch, reply) => {
                let index = many.len();
                many.push((reply, Ok(())));
                records.extend(batch.into_iter().map(|r| (r, Waiter::Many(index))));
                None
            }
            Job::Close(done) => Some(done),
        };
        closing = closing.or(take(job, &mut records));
        // What queued while the last commit ran goes into this one, and, once, what
        // requests announced and have not queued yet.
        let mut waited = false;
        loop {
            while closing.is_none() && records.len() < AUDIT_BATCH {
                match queue.try_recv() {
                    Ok(job) => closing = take(job, &mut records),
                    Err(_) => break,
                }
            }
            if waited || closing.is_some() || records.len() >= AUDIT_BATCH || !pending.any() {
                break;
            }
            tokio::time::sleep(GATHER_WAIT).await;
            waited = true;
        }
        let mut rest = records;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(AUDIT_BATCH));
            let batch = std::mem::replace(&mut rest, tail);
            let refs: Vec<&NewAuditRecord> = batch.iter().map(|(r, _)| r).collect();
            let outcome = link.append(&refs).await;
            metrics::counter!("lockbridge_audit_commits_total").increment(1);
            match outcome {
                Ok(ids) => {
                    metrics::counter!("lockbridge_audit_records_total").increment(ids.len() as u64);
                    for ((_, waiter), id) in batch.into_iter().zip(ids) {
                        if let Waiter::One(reply) = waiter {
                            let _ = reply.send(Ok(id));
                        }
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, records = batch.len(), "could not append audit records");
                    let cause = e.to_string();
                    for (_, waiter) in batch {
                        match waiter {
                            Waiter::One(reply) => {
                                let _ = reply.send(Err(StoreError::Unavailable(cause.clone())));
                            }
                            Waiter::Many(index) => {
                                if let Some((_, first)) = many.get_mut(index)
                                    && first.is_ok()
                                {
                                    *first = Err(StoreError::Unavailable(cause.clone()));
                                }
                            }
                        }
                    }
                }
            }
        }
        for (reply, outcome) in many {
            let _ = reply.send(outcome);
        }
        if let Some(done) = closing {
            link.close().await;
            let _ = done.send(());
            return;
        }
    }
    link.close().await;
}

/// Appends `records` after the chain's head and returns their ids: one call of
/// `lockbridge_audit_append_encoded` (migration 0006), which takes the chain's advisory
/// lock, reads the log's tail, and chains and inserts the records: one round trip and one
/// implicit transaction. Appends from every instance queue on that lock, each seeing the
/// one before it committed; the id is part of a record's hash, so it follows the tail
/// (not a sequence, which would leave a gap for every rolled-back append). What the hash
/// covers after the id is encoded here (`chain::encoded_after_id`); PostgreSQL hashes it
/// behind the tail's hash and the id.
async fn append(
    conn: &mut PgConnection,
    records: &[&NewAuditRecord],
) -> Result<Vec<i64>, StoreError> {
    // What is hashed is the time as PostgreSQL keeps it (microseconds), so the text
    // rebuilt from the stored value on reading is the text hashed.
    let ats: Vec<_> = records.iter().map(|r| micros(r.at)).collect();
    let encoded: Vec<Vec<u8>> = records
        .iter()
        .zip(&ats)
        // The id is not encoded (any will do): SQL puts it in front.
        .map(|(r, at)| chain::encoded_after_id(&r.chain_fields(0, &ts(*at))))
        .collect();
    let request_ids: Vec<Option<&str>> = records.iter().map(|r| r.request_id.as_deref()).collect();
    let actors: Vec<&str> = records.iter().map(|r| r.actor.as_str()).collect();
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    let targets: Vec<Option<&str>> = records.iter().map(|r| r.target.as_deref()).collect();
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
    let details: Vec<Option<&str>> = records.iter().map(|r| r.detail.as_deref()).collect();
    // synchronous_commit is on for every connection: durable once this returns.
    let after: i64 = sqlx::query_scalar(
        "SELECT lockbridge_audit_append_encoded($1::timestamptz[], $2::bytea[], $3::text[], \
                $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])",
    )
    .bind(&ats)
    .bind(&encoded)
    .bind(&request_ids)
    .bind(&actors)
    .bind(&actions)
    .bind(&targets)
    .bind(&outcomes)
    .bind(&details)
    .fetch_one(conn)
    .await
    .map_err(err("audit record"))?;
    Ok((1..=records.len() as i64).map(|i| after + i).collect())
}
