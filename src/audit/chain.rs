//! Evidence that nobody quietly edited the audit log: verifying the hash chain the store
//! keeps ([`crate::store::chain`]), signing its head now and then, and exporting the
//! log for a SIEM.
//!
//! The chain alone shows an edit, a removal or a reordering to anyone who recomputes
//! it, but someone with write access to the database could recompute every hash after
//! an edit. A seal is the chain's head signed with a key derived from the master key
//! (HMAC-SHA256), which the database does not hold: a rewritten chain no longer matches
//! the seals made before the rewrite, and removing the newest records leaves a seal
//! that names a record that is gone. Records written after the last seal are covered by
//! the chain only, until the next seal (`audit.seal_interval_secs`, and at shutdown).

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::store::chain::{GENESIS, record_hash};
use crate::store::{AuditSeal, ChainedAuditRecord, Store, StoreError, StoredAuditSeal};

/// Records read per store round trip while verifying or exporting.
const PAGE: u32 = 1000;

/// The key that signs chain heads (derived from the master key, purpose `audit-seal`).
#[derive(Clone)]
pub struct SealKey([u8; 32]);

impl SealKey {
    /// The derivation purpose of this key.
    pub const PURPOSE: &'static str = "audit-seal";

    pub fn new(key: [u8; 32]) -> Self {
        Self(key)
    }

    fn mac(&self, at: DateTime<Utc>, record_id: i64, head_hash: &[u8]) -> Hmac<Sha256> {
        // HMAC accepts keys of any length.
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key size");
        mac.update(b"lockbridge-audit-seal-v1\0");
        mac.update(&at.timestamp_micros().to_be_bytes());
        mac.update(&record_id.to_be_bytes());
        mac.update(head_hash);
        mac
    }

    fn sign(&self, at: DateTime<Utc>, record_id: i64, head_hash: &[u8]) -> Vec<u8> {
        self.mac(at, record_id, head_hash)
            .finalize()
            .into_bytes()
            .to_vec()
    }

    /// Constant-time check of a stored seal.
    fn verifies(&self, seal: &AuditSeal) -> bool {
        self.mac(seal.at, seal.record_id, &seal.head_hash)
            .verify_slice(&seal.mac)
            .is_ok()
    }
}

impl fmt::Debug for SealKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealKey([redacted])")
    }
}

/// Signs the chain's head, unless it is empty or already signed. Returns the new seal.
pub async fn seal(store: &dyn Store, key: &SealKey) -> Result<Option<AuditSeal>, StoreError> {
    let Some((record_id, head_hash)) = store.audit_head().await? else {
        return Ok(None);
    };
    if let Some(last) = store.last_audit_seal().await?
        && last.seal.record_id == record_id
        && last.seal.head_hash == head_hash
    {
        return Ok(None);
    }
    // Microseconds, as stored, so the signed time reads back the same.
    let at = DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).unwrap_or_default();
    let seal = AuditSeal {
        at,
        mac: key.sign(at, record_id, &head_hash),
        record_id,
        head_hash,
    };
    store.append_audit_seal(&seal).await?;
    Ok(Some(seal))
}

/// Seals every `interval` while records are added, and once more at shutdown.
pub async fn seal_periodically(
    store: std::sync::Arc<dyn Store>,
    key: SealKey,
    interval: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            _ = tick.tick() => false,
            () = stop.cancelled() => true,
        };
        match seal(store.as_ref(), &key).await {
            Ok(Some(s)) => tracing::debug!(audit.record_id = s.record_id, "audit chain sealed"),
            Ok(None) => {}
            Err(e) => tracing::error!(error = %e, "cannot seal the audit chain; will retry"),
        }
        if stopping {
            break;
        }
    }
}

/// The first thing wrong with the audit log, in record order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A record has no hash: it was not written by lockbridge.
    Unchained { id: i64 },
    /// A record's content does not match its hash.
    Changed { id: i64 },
    /// Records `from..=to` are missing.
    Removed { from: i64, to: i64 },
    /// A record does not follow the one before it in the chain: records were removed,
    /// inserted or put in another order just before it.
    OutOfPlace { id: i64, after: Option<i64> },
    /// A seal was not made with this installation's key (forged, or the master key
    /// changed since).
    ForgedSeal { seal_id: i64, record_id: i64 },
    /// The chain was rewritten at or before `record_id` after it was sealed at `sealed_at`
    /// (records after `since` were changed and their hashes recomputed).
    Rewritten {
        record_id: i64,
        since: i64,
        sealed_at: DateTime<Utc>,
    },
    /// The newest records were removed: a seal names `record_id`, the log ends at `last`.
    Truncated {
        last: Option<i64>,
        record_id: i64,
        sealed_at: DateTime<Utc>,
    },
}

impl Problem {
    /// The record the problem is found at (the first bad one).
    pub fn record_id(&self) -> i64 {
        match self {
            Problem::Unchained { id }
            | Problem::Changed { id }
            | Problem::OutOfPlace { id, .. } => *id,
            Problem::Removed { from, .. } => *from,
            Problem::ForgedSeal { record_id, .. } | Problem::Rewritten { record_id, .. } => {
                *record_id
            }
            Problem::Truncated { last, .. } => last.unwrap_or(0) + 1,
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unchained { id } => write!(
                f,
                "record {id} has no chain hash: it was not written by lockbridge"
            ),
            Problem::Changed { id } => write!(
                f,
                "record {id} was changed: its content does not match its hash (edited, or \
                 moved here from another position)"
            ),
            Problem::Removed { from, to } if from == to => {
                write!(f, "record {from} was removed")
            }
            Problem::Removed { from, to } => write!(f, "records {from} to {to} were removed"),
            Problem::OutOfPlace {
                id,
                after: Some(after),
            } => write!(
                f,
                "record {id} does not follow record {after} in the chain: records were \
                 removed, inserted or reordered between them"
            ),
            Problem::OutOfPlace { id, after: None } => write!(
                f,
                "record {id} is the first record but does not start the chain: records \
                 before it were removed"
            ),
            Problem::ForgedSeal { seal_id, record_id } => write!(
                f,
                "seal {seal_id} (of record {record_id}) was not made with this \
                 installation's key: forged, or security.master_key changed since"
            ),
            Problem::Rewritten {
                record_id,
                since,
                sealed_at,
            } => write!(
                f,
                "record {record_id} no longer matches the seal made at {}: records {since} to \
                 {record_id} were changed and the chain recomputed",
                sealed_at.to_rfc3339()
            ),
            Problem::Truncated {
                last,
                record_id,
                sealed_at,
            } => write!(
                f,
                "records {} to {record_id} were removed: a seal made at {} names record \
                 {record_id}, but the log ends at {}",
                last.unwrap_or(0) + 1,
                sealed_at.to_rfc3339(),
                last.map_or_else(|| "no record".to_string(), |l| format!("record {l}"))
            ),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verification {
    /// Records checked (up to the first problem).
    pub records: u64,
    pub last_id: Option<i64>,
    /// Seals checked.
    pub seals: u64,
    /// The newest record covered by a seal, and when it was sealed.
    pub last_sealed: Option<(i64, DateTime<Utc>)>,
    /// Records after the newest seal (protected by the chain only, until the next seal).
    pub unsealed: u64,
    pub problem: Option<Problem>,
}

/// Walks the whole log in id order (a page at a time) and checks each record's hash,
/// its link to the record before it, that no id is skipped, and every seal. Stops at
/// the first problem.
pub async fn verify(store: &dyn Store, key: &SealKey) -> Result<Verification, StoreError> {
    let mut seals: BTreeMap<i64, Vec<StoredAuditSeal>> = BTreeMap::new();
    let mut after = 0;
    loop {
        let page = store.audit_seals_page(after, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.id;
        for s in page {
            seals.entry(s.seal.record_id).or_default().push(s);
        }
    }
    let mut v = Verification::default();
    let mut prev: Option<ChainedAuditRecord> = None;
    // The newest seal passed so far that matched, for the range a rewrite names.
    let mut last_good_seal_record: i64 = 0;
    let mut after = 0;
    'walk: loop {
        let page = store.audit_chain_page(after, None, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.record.id;
        for r in page {
            if let Some(problem) = check_record(&r, prev.as_ref()) {
                v.problem = Some(problem);
                break 'walk;
            }
            for s in seals.get(&r.record.id).into_iter().flatten() {
                v.seals += 1;
                if !key.verifies(&s.seal) {
                    v.problem = Some(Problem::ForgedSeal {
                        seal_id: s.id,
                        record_id: s.seal.record_id,
                    });
                    break 'walk;
                }
                if r.hash.as_deref() != Some(s.seal.head_hash.as_slice()) {
                    v.problem = Some(Problem::Rewritten {
                        record_id: r.record.id,
                        since: last_good_seal_record + 1,
                        sealed_at: s.seal.at,
                    });
                    break 'walk;
                }
                last_good_seal_record = r.record.id;
                v.last_sealed = Some((r.record.id, s.seal.at));
            }
            v.records += 1;
            v.last_id = Some(r.record.id);
            prev = Some(r);
        }
    }
    if v.problem.is_none()
        && let Some((&record_id, later)) = seals.range(v.last_id.unwrap_or(0) + 1..).next()
    {
        let s = &later[0];
        v.seals += 1;
        v.problem = Some(if key.verifies(&s.seal) {
            Problem::Truncated {
                last: v.last_id,
                record_id,
                sealed_at: s.seal.at,
            }
        } else {
            Problem::ForgedSeal {
                seal_id: s.id,
                record_id,
            }
        });
    }
    v.unsealed = match (v.last_id, v.last_sealed) {
        (Some(last), Some((sealed, _))) => u64::try_from(last - sealed).unwrap_or(0),
        (Some(_), None) => v.records,
        _ => 0,
    };
    Ok(v)
}

/// The first problem with `r`, given the record before it.
fn check_record(r: &ChainedAuditRecord, prev: Option<&ChainedAuditRecord>) -> Option<Problem> {
    let id = r.record.id;
    let (Some(prev_hash), Some(hash)) = (r.prev_hash.as_deref(), r.hash.as_deref()) else {
        return Some(Problem::Unchained { id });
    };
    if record_hash(prev_hash, &r.chain_fields()) != hash {
        return Some(Problem::Changed { id });
    }
    let (expected_prev, prev_id) = match prev {
        Some(p) => (p.hash.as_deref().unwrap_or(&GENESIS), p.record.id),
        None => (&GENESIS[..], 0),
    };
    // Ids are handed out one after the other and never reused: a gap is a removal.
    if id > prev_id + 1 {
        return Some(Problem::Removed {
            from: prev_id + 1,
            to: id - 1,
        });
    }
    if prev_hash != expected_prev {
        return Some(Problem::OutOfPlace {
            id,
            after: prev.map(|p| p.record.id),
        });
    }
    None
}

/// Writes the records at or after `since` as JSON lines (oldest first, with their chain
/// hashes in hex) and returns how many.
pub async fn export(
    store: &dyn Store,
    since: Option<DateTime<Utc>>,
    out: &mut dyn std::io::Write,
) -> Result<u64, ExportError> {
    let mut after = 0;
    let mut count = 0;
    loop {
        let page = store.audit_chain_page(after, since, PAGE).await?;
        let Some(last) = page.last() else { break };
        after = last.record.id;
        for r in page {
            let line = serde_json::json!({
                "id": r.record.id,
                "at": r.at_text,
                "requestId": r.record.request_id,
                "actor": r.record.actor,
                "action": r.record.action,
                "target": r.record.target,
                "outcome": r.record.outcome,
                "detail": r.record.detail.as_deref().and_then(|d| serde_json::from_str::<serde_json::Value>(d).ok()),
                "prevHash": r.prev_hash.as_deref().map(hex::encode),
                "hash": r.hash.as_deref().map(hex::encode),
            });
            writeln!(out, "{line}")?;
            count += 1;
        }
    }
    out.flush()?;
    Ok(count)
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write the export: {0}")]
    Write(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{NewAuditRecord, SqliteStore};

    async fn log_of(n: usize) -> SqliteStore {
        let store = SqliteStore::open_temporary().await.expect("store");
        for i in 0..n {
            store
                .append_audit(&NewAuditRecord {
                    at: Utc::now(),
                    request_id: Some(format!("r{i}")),
                    actor: "helpdesk".into(),
                    action: "password.reset".into(),
                    target: Some(format!("user{i}")),
                    outcome: "success".into(),
                    detail: Some("{\"mode\":\"auto\"}".into()),
                })
                .await
                .expect("append");
        }
        store
    }

    #[tokio::test]
    async fn an_untouched_log_verifies_and_seals_cover_it() {
        let store = log_of(5).await;
        let key = SealKey::new([3; 32]);
        let v = verify(&store, &key).await.expect("verify");
        assert_eq!(
            (v.records, v.last_id, v.problem.clone()),
            (5, Some(5), None)
        );
        assert_eq!(v.unsealed, 5);
        let s = seal(&store, &key).await.expect("seal").expect("sealed");
        assert_eq!(s.record_id, 5);
        assert!(
            seal(&store, &key).await.expect("seal").is_none(),
            "nothing new"
        );
        let v = verify(&store, &key).await.expect("verify");
        assert_eq!((v.seals, v.unsealed, v.problem), (1, 0, None));
        assert_eq!(v.last_sealed.map(|(id, _)| id), Some(5));

        // Another key does not accept the seal.
        let v = verify(&store, &SealKey::new([4; 32]))
            .await
            .expect("verify");
        assert!(
            matches!(v.problem, Some(Problem::ForgedSeal { record_id: 5, .. })),
            "{v:?}"
        );
    }

    #[tokio::test]
    async fn concurrent_appends_form_one_chain() {
        let store = std::sync::Arc::new(log_of(0).await);
        let mut tasks = Vec::new();
        for i in 0..200 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .append_audit(&NewAuditRecord {
                        at: Utc::now(),
                        request_id: None,
                        actor: format!("a{i}"),
                        action: "scim.patch".into(),
                        target: None,
                        outcome: "success".into(),
                        detail: None,
                    })
                    .await
                    .expect("append")
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.push(t.await.expect("task"));
        }
        ids.sort_unstable();
        assert_eq!(ids, (1..=200).collect::<Vec<_>>(), "every id once");
        let v = verify(store.as_ref(), &SealKey::new([1; 32]))
            .await
            .expect("verify");
        assert_eq!((v.records, v.problem), (200, None));
    }

    #[tokio::test]
    async fn export_writes_json_lines_since_a_time() {
        let store = log_of(3).await;
        let mut out = Vec::new();
        assert_eq!(export(&store, None, &mut out).await.expect("export"), 3);
        let text = String::from_utf8(out).expect("utf-8");
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["id"], 1);
        assert_eq!(lines[0]["detail"]["mode"], "auto");
        assert_eq!(lines[1]["prevHash"], lines[0]["hash"]);
        let mut out = Vec::new();
        let future = Utc::now() + chrono::Duration::hours(1);
        assert_eq!(
            export(&store, Some(future), &mut out)
                .await
                .expect("export"),
            0
        );
    }

    #[test]
    fn problems_name_the_record() {
        let at = Utc::now();
        for (p, id, words) in [
            (Problem::Changed { id: 4 }, 4, "record 4 was changed"),
            (
                Problem::Removed { from: 3, to: 3 },
                3,
                "record 3 was removed",
            ),
            (
                Problem::OutOfPlace {
                    id: 6,
                    after: Some(5),
                },
                6,
                "does not follow record 5",
            ),
            (
                Problem::Truncated {
                    last: Some(9),
                    record_id: 12,
                    sealed_at: at,
                },
                10,
                "records 10 to 12 were removed",
            ),
        ] {
            assert_eq!(p.record_id(), id);
            assert!(p.to_string().contains(words), "{p}");
        }
    }
}
