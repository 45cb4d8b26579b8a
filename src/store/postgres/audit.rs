//! The audit writer on PostgreSQL: one task per store that commits the records queued
//! meanwhile in one transaction (group commit), chained after the chain's head.
//!
//! Instances on other hosts append too, so the head is read inside the transaction,
//! after locking the one row of `audit_chain_head`: appends from every instance queue on
//! that lock, each sees the one before it committed, and the chain stays one line with
//! ids growing in chain order. The id is part of a record's hash, so it is chosen here
//! (from `audit_chain_head.last_id`, updated in the same transaction) rather than by a
//! sequence, which would leave a gap for every rolled-back append.

use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::{err, micros, retrying, ts};
use crate::store::chain::{self, GENESIS};
use crate::store::{NewAuditRecord, StoreError};

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
}

fn stopped() -> StoreError {
    StoreError::Unavailable("the audit writer has stopped".into())
}

impl AuditWriter {
    /// Starts the writer's task (inside a Tokio runtime).
    pub(super) fn start(pool: PgPool) -> AuditWriter {
        let (jobs, queue) = mpsc::channel(AUDIT_QUEUE);
        tokio::spawn(run(pool, queue));
        AuditWriter { jobs }
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

async fn run(pool: PgPool, mut queue: mpsc::Receiver<Job>) {
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
        // What queued while the last commit ran goes into this one.
        while closing.is_none() && records.len() < AUDIT_BATCH {
            match queue.try_recv() {
                Ok(job) => closing = take(job, &mut records),
                Err(_) => break,
            }
        }
        let mut rest = records;
        while !rest.is_empty() {
            let tail = rest.split_off(rest.len().min(AUDIT_BATCH));
            let batch = std::mem::replace(&mut rest, tail);
            let refs: Vec<&NewAuditRecord> = batch.iter().map(|(r, _)| r).collect();
            let outcome = retrying("audit record", || append(&pool, &refs)).await;
            match outcome {
                Ok(ids) => {
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
            let _ = done.send(());
            return;
        }
    }
}

/// Appends `records` after the chain's head in one transaction and returns their ids.
async fn append(pool: &PgPool, records: &[&NewAuditRecord]) -> Result<Vec<i64>, StoreError> {
    let mut tx = pool.begin().await.map_err(err("audit record"))?;
    // Waits for any other instance's append in progress, then reads the head row as
    // that append committed it (a row locked after a wait is read again, whatever the
    // statement's snapshot): the last record's id and hash. The largest id in the log
    // (from the snapshot: enough for rows written around lockbridge before this
    // statement, which `audit verify` reports) keeps ids from being reused.
    let (last_id, last_hash, newest): (i64, Option<Vec<u8>>, Option<i64>) = sqlx::query_as(
        "SELECT last_id, last_hash, (SELECT max(id) FROM audit_log) \
         FROM audit_chain_head WHERE singleton FOR UPDATE",
    )
    .fetch_one(&mut *tx)
    .await
    .map_err(err("audit record"))?;
    let after = last_id.max(newest.unwrap_or(0));
    let mut prev = match last_hash {
        Some(hash) => hash,
        // No head hash with records in the log (rows written around lockbridge only):
        // build on the newest chained record, if any, as `audit verify` expects.
        None if after > 0 => sqlx::query_scalar::<_, Vec<u8>>(
            "SELECT hash FROM audit_log WHERE hash IS NOT NULL ORDER BY id DESC LIMIT 1",
        )
        .fetch_optional(&mut *tx)
        .await
        .map_err(err("audit record"))?
        .unwrap_or_else(|| GENESIS.to_vec()),
        None => GENESIS.to_vec(),
    };

    let n = records.len();
    let mut ids = Vec::with_capacity(n);
    let mut ats = Vec::with_capacity(n);
    let mut prevs = Vec::with_capacity(n);
    let mut hashes = Vec::with_capacity(n);
    for (i, r) in records.iter().enumerate() {
        let id = after + 1 + i as i64;
        // What is hashed is the time as PostgreSQL keeps it (microseconds), so the text
        // rebuilt from the stored value on reading is the text hashed here.
        let at = micros(r.at);
        let hash = chain::record_hash(&prev, &r.chain_fields(id, &ts(at)));
        ids.push(id);
        ats.push(at);
        prevs.push(std::mem::replace(&mut prev, hash.clone()));
        hashes.push(hash);
    }
    let request_ids: Vec<Option<&str>> = records.iter().map(|r| r.request_id.as_deref()).collect();
    let actors: Vec<&str> = records.iter().map(|r| r.actor.as_str()).collect();
    let actions: Vec<&str> = records.iter().map(|r| r.action.as_str()).collect();
    let targets: Vec<Option<&str>> = records.iter().map(|r| r.target.as_deref()).collect();
    let outcomes: Vec<&str> = records.iter().map(|r| r.outcome.as_str()).collect();
    let details: Vec<Option<&str>> = records.iter().map(|r| r.detail.as_deref()).collect();
    let (Some(last), Some(last_hash)) = (ids.last().copied(), hashes.last().cloned()) else {
        return Ok(ids);
    };
    // The records and the new head in one statement.
    sqlx::query(
        "WITH appended AS ( \
             INSERT INTO audit_log (id, at, request_id, actor, action, target, outcome, \
                                    detail, prev_hash, hash) \
             SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], \
                                  $5::text[], $6::text[], $7::text[], $8::text[], \
                                  $9::bytea[], $10::bytea[])) \
         UPDATE audit_chain_head SET last_id = $11, last_hash = $12 WHERE singleton",
    )
    .bind(&ids)
    .bind(&ats)
    .bind(&request_ids)
    .bind(&actors)
    .bind(&actions)
    .bind(&targets)
    .bind(&outcomes)
    .bind(&details)
    .bind(&prevs)
    .bind(&hashes)
    .bind(last)
    .bind(&last_hash)
    .execute(&mut *tx)
    .await
    .map_err(err("audit record id"))?;
    // synchronous_commit is on for every connection: durable once this returns.
    tx.commit().await.map_err(err("audit record"))?;
    Ok(ids)
}
