//! The audit log: who did what to whom, with what outcome, under which request.
//!
//! Records are built from typed values only ([`AuditEvent`]): there is no field that
//! takes free text from a request, so a password, code or token cannot end up here.
//! The store chains every record to the one before it; [`chain`] verifies the chain,
//! signs its head and exports the log.

pub mod chain;

use std::sync::Arc;

use serde::Serialize;

use crate::store::{
    AnnouncedRecord, AuditQuery, AuditRecord, NewAuditRecord, PendingAudit, Store, StoreError,
};

/// What was done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    PasswordReset,
    TokenCreated,
    TokenRevoked,
    ExpirationPolicyChanged,
    PasswordNeverExpiresSet,
    SweepRun,
    ScimCreate,
    ScimReplace,
    ScimPatch,
    ScimDelete,
    PasswordChangeRequired,
    PasswordChangeRequirementCleared,
    AccountUnlocked,
    SignInBlocked,
    SignInUnblocked,
    SignedIn,
    SignedOut,
    SelfServiceReset,
    PasswordChanged,
    ResetRequested,
    ResetRequestDismissed,
    SelfServiceVerificationFailed,
    SecurityInfoChanged,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::PasswordReset => "password.reset",
            Action::TokenCreated => "token.created",
            Action::TokenRevoked => "token.revoked",
            Action::ExpirationPolicyChanged => "policy.expiration.changed",
            Action::PasswordNeverExpiresSet => "password.never_expires.set",
            Action::SweepRun => "sweep.run",
            Action::ScimCreate => "scim.create",
            Action::ScimReplace => "scim.replace",
            Action::ScimPatch => "scim.patch",
            Action::ScimDelete => "scim.delete",
            Action::PasswordChangeRequired => "password.change_required",
            Action::PasswordChangeRequirementCleared => "password.change_required.cleared",
            Action::AccountUnlocked => "account.unlocked",
            Action::SignInBlocked => "sign_in.blocked",
            Action::SignInUnblocked => "sign_in.unblocked",
            Action::SignedIn => "session.signed_in",
            Action::SignedOut => "session.signed_out",
            Action::SelfServiceReset => "password.self_service.reset",
            Action::PasswordChanged => "password.changed",
            Action::ResetRequested => "reset_request.opened",
            Action::ResetRequestDismissed => "reset_request.dismissed",
            Action::SelfServiceVerificationFailed => "self_service.verification.failed",
            Action::SecurityInfoChanged => "security_info.changed",
        }
    }
}

/// How it ended. Codes are the stable error codes of the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// Refused before anything changed (bad input, policy, permission).
    Refused(&'static str),
    /// Tried and failed (directory down, ...). Nothing changed unless the code says so.
    Failed(&'static str),
}

impl Outcome {
    fn parts(self) -> (String, Option<&'static str>) {
        match self {
            Outcome::Success => ("success".into(), None),
            Outcome::Refused(code) => ("refused".into(), Some(code)),
            Outcome::Failed(code) => ("failed".into(), Some(code)),
        }
    }
}

/// Non-secret facts about an action, serialised into the record's `detail`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Detail {
    #[serde(rename_all = "camelCase")]
    PasswordReset {
        mode: &'static str,
        require_change_at_next_sign_in: bool,
        /// Where a message with the new password was queued (addresses, not the password).
        sent_to: Vec<String>,
        /// The new password was shown to the caller.
        password_shown: bool,
        /// Whether the new password is in force: `yes`, `no`, or `unknown` (the directory
        /// stopped answering after the change was sent).
        password_in_force: &'static str,
        /// Recorded by a bulk job that found, after a restart, this reset done by the run
        /// that stopped (whose record may or may not have been written).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        found_after_restart: bool,
    },
    #[serde(rename_all = "camelCase")]
    Token { role: &'static str },
    #[serde(rename_all = "camelCase")]
    ExpirationPolicy {
        max_age_days: Option<u32>,
        notify_days: Vec<u32>,
        on_expiry: &'static str,
    },
    #[serde(rename_all = "camelCase")]
    NeverExpires { never_expires: bool },
    /// Sign-in state: whether anything was written (false: already in that state).
    #[serde(rename_all = "camelCase")]
    SignIn { changed: bool },
    /// A SCIM write: which resource, which LDAP attributes changed (names only) and what
    /// happened to the password (`set`, `unchanged`: equal to the current one, or `none`).
    #[serde(rename_all = "camelCase")]
    Scim {
        resource_type: &'static str,
        id: Option<String>,
        attributes: Vec<String>,
        password: &'static str,
        active: Option<bool>,
    },
    /// A self-service change: the methods the user proved themselves with (`email`,
    /// `sms`, `password`), never a code.
    #[serde(rename_all = "camelCase")]
    SelfService { verified_with: Vec<&'static str> },
    #[serde(rename_all = "camelCase")]
    ResetRequest { id: String },
    /// Which piece of security info changed (never its value).
    #[serde(rename_all = "camelCase")]
    SecurityInfo { changed: &'static str },
    #[serde(rename_all = "camelCase")]
    Sweep {
        sweep_id: String,
        dry_run: bool,
        scanned: u64,
        notified: u64,
        failed: u64,
    },
}

/// One thing to record.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub actor: String,
    pub action: Action,
    pub target: Option<String>,
    pub outcome: Outcome,
    pub detail: Option<Detail>,
    pub request_id: Option<String>,
}

/// An event with the time it happened, for [`AuditLog::record_many`] (written later).
#[derive(Debug, Clone)]
pub struct TimedEvent {
    pub at: chrono::DateTime<chrono::Utc>,
    pub event: AuditEvent,
}

impl AuditEvent {
    /// This event, happening now, to be recorded later with others.
    pub fn now(self) -> TimedEvent {
        TimedEvent {
            at: chrono::Utc::now(),
            event: self,
        }
    }
}

/// A successful [`AuditLog::ping`] (or record) is trusted this long, so that writes in a
/// burst (an identity provider's provisioning run) do not each pay a store round trip
/// before they start.
const PING_TTL: std::time::Duration = std::time::Duration::from_secs(1);

#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn Store>,
    /// When the store last answered.
    last_ok: Arc<std::sync::Mutex<Option<std::time::Instant>>>,
    /// Writes under way whose record will follow (see [`AuditLog::announce`]).
    pending: PendingAudit,
}

impl AuditLog {
    pub fn new(store: Arc<dyn Store>) -> Self {
        let pending = store.pending_audit();
        Self {
            store,
            last_ok: Arc::new(std::sync::Mutex::new(None)),
            pending,
        }
    }

    /// Announces a write whose record [`AuditLog::record`] will append once the write
    /// is done, so that records of concurrent writes share one synced commit. Drop the
    /// guard just before recording.
    pub fn announce(&self) -> AnnouncedRecord {
        self.pending.announce()
    }

    fn mark_ok(&self, ok: bool) {
        let mut last = self.last_ok.lock().unwrap_or_else(|e| e.into_inner());
        *last = ok.then(std::time::Instant::now);
    }

    pub async fn record(&self, event: AuditEvent) -> Result<i64, StoreError> {
        let record = Self::new_record(chrono::Utc::now(), event);
        let id = self.store.append_audit(&record).await;
        self.mark_ok(id.is_ok());
        if let Err(e) = &id {
            tracing::error!(error = %e, action = record.action, "could not write an audit record");
        }
        id
    }

    /// Records `events` (each with the time it happened) in order, in shared commits: for
    /// a caller acting on many accounts, which owes these records (see `bulk`).
    pub async fn record_many(&self, events: Vec<TimedEvent>) -> Result<(), StoreError> {
        let count = events.len();
        let records: Vec<NewAuditRecord> = events
            .into_iter()
            .map(|e| Self::new_record(e.at, e.event))
            .collect();
        let done = self.store.append_audit_many(records).await;
        self.mark_ok(done.is_ok());
        if let Err(e) = &done {
            tracing::error!(error = %e, count, "could not write a batch of audit records");
        }
        done
    }

    fn new_record(at: chrono::DateTime<chrono::Utc>, event: AuditEvent) -> NewAuditRecord {
        let (outcome, code) = event.outcome.parts();
        let mut detail = event
            .detail
            .as_ref()
            .and_then(|d| serde_json::to_value(d).ok())
            .unwrap_or(serde_json::Value::Null);
        if let Some(code) = code {
            if !detail.is_object() {
                detail = serde_json::json!({});
            }
            detail["code"] = serde_json::Value::from(code);
        }
        NewAuditRecord {
            at,
            request_id: event.request_id,
            actor: event.actor,
            action: event.action.as_str().to_string(),
            target: event.target,
            outcome,
            detail: (!detail.is_null()).then(|| detail.to_string()),
        }
    }

    pub async fn query(&self, q: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        self.store.list_audit(q).await
    }

    /// Whether records can be written now: asked of the store, unless it answered within
    /// the last second (a failure is never remembered).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let recent = self
            .last_ok
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < PING_TTL);
        if recent {
            return Ok(());
        }
        let result = self.store.ping().await;
        self.mark_ok(result.is_ok());
        result
    }
}
