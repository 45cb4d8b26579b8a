//! Persistent state: API token hashes, the audit log and the mail outbox.
//!
//! Owns the [`Store`] trait, its records, the SQL schema (`migrations/<backend>/`) and
//! the backends ([`SqliteStore`] today; a PostgreSQL backend can be added behind the
//! same trait). It stores what it is given and knows no business rules: it never sees
//! a cleartext token, password or code (tokens arrive as keyed hashes, mail secrets
//! sealed), never logs record contents, and imports nothing but `types`.

mod error;
mod sqlite;

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

pub use error::StoreError;
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

    /// Appends an audit record and returns its id. Records are never changed or removed.
    async fn append_audit(&self, r: &NewAuditRecord) -> Result<i64, StoreError>;
    /// Audit records matching `q`, newest first (keyset paging by id).
    async fn list_audit(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError>;

    /// Queues a message for delivery, due at once, with a fresh Message-ID. Returns its id.
    async fn enqueue_mail(&self, m: &NewOutboxMessage) -> Result<i64, StoreError>;
    /// Leases up to `limit` due messages (pending, `next_attempt_at <= now`, no lease or
    /// an expired one) until `now + lease`, oldest due first. The lease is taken in one
    /// atomic statement, so two workers never hold the same message at once.
    async fn claim_due_mail(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        lease: Duration,
    ) -> Result<Vec<OutboxMessage>, StoreError>;
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
            .finish_non_exhaustive()
    }
}

/// Outbox message counts by status.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OutboxCounts {
    pub pending: u64,
    pub sent: u64,
    pub dead: u64,
}
