//! The one place where lockbridge changes a password.
//!
//! Every feature (admin API now; SCIM and self-service later) goes through
//! [`AccountService`], so the order of steps is the same everywhere:
//! check the input and the password rules → find the user → check the caller may act
//! on that user → write to the directory → queue the emails → record the outcome.
//! Everything that can be refused is refused before the directory is touched.

pub mod access;
pub mod expiry;
pub mod protection;
pub mod provision;
pub mod self_service;
pub mod sign_in;

use std::sync::Arc;

use serde_json::json;

pub use access::{Actor, Authority, RoleGroups, Scope, ScopedRole, SignedIn};
pub use protection::{Protection, ProtectionSettings};
pub use self_service::{SelfServiceAccounts, SelfServiceChange, SelfServiceUser};
pub use sign_in::{ProvisionedState, SignInChange};

use crate::audit::{Action, AuditEvent, AuditLog, Detail, Outcome, TimedEvent};
use crate::auth::AccountAction;
use crate::directory::{Directory, DirectoryError, PolicyRejection, UserEntry, same_dn};
use crate::notify::Notifier;
use crate::policy::{BreachedIndex, PasswordRules, Violation};
use crate::types::Secret;

/// Users chosen by a rule rather than by name ([`AccountService::user_names`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Population<'a> {
    /// Every user lockbridge serves.
    Everyone,
    /// The direct members of the group with this DN.
    GroupMembers(&'a str),
    /// The users that also match this LDAP filter (RFC 4515), checked here.
    Matching(&'a str),
}

impl<'a> Population<'a> {
    /// From a request that names a group, a filter, or neither (everyone).
    pub fn of(group: Option<&'a str>, filter: Option<&'a str>) -> Self {
        match (group, filter) {
            (Some(group), _) => Population::GroupMembers(group),
            (None, Some(filter)) => Population::Matching(filter),
            (None, None) => Population::Everyone,
        }
    }
}

/// Template used for the "your temporary password" message.
pub const TEMPORARY_PASSWORD_TEMPLATE: &str = "temporary-password";

/// At most this many addresses per reset, so one request cannot turn into a mail flood.
pub const MAX_RECIPIENTS: usize = 10;

#[derive(Debug)]
pub enum PasswordChoice {
    /// Generate a temporary password from the organisation's rules.
    Generate,
    /// The administrator chose one; it is checked against the rules first.
    Chosen(Secret),
    /// Generated beforehand ([`AccountService::generate_password`]) by a caller that
    /// must keep it before the directory is asked (a bulk job, to resume without
    /// resetting anyone twice).
    Generated(Secret),
}

#[derive(Debug)]
pub struct ResetRequest {
    pub choice: PasswordChoice,
    pub require_change: bool,
    pub send_to: Vec<String>,
    /// Also mail it to the user's alternate address (refused, before any change, for a
    /// user without one when the password would otherwise be lost).
    pub send_to_alternate: bool,
    pub show_password: bool,
    /// Queue each mail once under this key (and its recipient) in the notice ledger: a
    /// bulk job's item redone after a crash mails no second copy.
    pub mail_key: Option<String>,
}

/// A password found in force ([`AccountService::password_in_force`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InForce {
    /// The user must change it at next sign-in.
    pub must_change: bool,
}

/// What a reset did.
#[derive(Debug)]
pub struct ResetReceipt {
    pub user: UserEntry,
    pub generated: bool,
    pub require_change: bool,
    /// Addresses a message was queued for.
    pub sent_to: Vec<String>,
    /// The new password, when the caller asked to see it (or when it could not be
    /// queued for delivery and would otherwise be lost).
    pub password: Option<Secret>,
    /// True when the password was set but its email could not be queued.
    pub delivery_failed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("no user named `{0}` in the directory")]
    UnknownUser(String),
    /// The caller's roles do not reach this account (`docs/roles.md`).
    #[error("{message}")]
    NotPermitted { message: String },
    /// Signing in failed; deliberately one answer for every reason.
    #[error(
        "the user name or password is wrong, the account is locked, or it holds no administrator role"
    )]
    SignInRefused,
    #[error("the password must be changed before signing in here")]
    PasswordChangeFirst,
    #[error("`{target}` {}", why.explanation())]
    ProtectedTarget { target: String, why: Protection },
    #[error("{0}")]
    InvalidRequest(String),
    #[error("the password does not meet the password rules")]
    PolicyViolation(Vec<Violation>),
    #[error("the directory refused the password: {0}")]
    DirectoryRefused(PolicyRejection),
    #[error("the directory is unavailable: {cause}")]
    DirectoryUnavailable {
        cause: String,
        retry_after_secs: u64,
        /// The directory answered, but other writes to the same entry kept clashing
        /// with this one: the account is busy, not the directory down.
        busy: bool,
    },
    #[error("the directory stopped answering while the password was being changed")]
    OutcomeUnknown {
        cause: String,
        retry_after_secs: u64,
    },
    #[error(
        "the password was changed, but the directory did not accept the \"must change at next sign-in\" setting"
    )]
    FlagNotApplied {
        /// The directory stopped answering (try again later) rather than refused it.
        directory_unavailable: bool,
    },
    #[error("the directory denied lockbridge's service account the right to do this")]
    DirectoryAccessDenied,
    #[error("the user's account is locked in the directory")]
    AccountLocked,
    #[error("{0}")]
    Misconfigured(String),
    #[error("directory error: {0}")]
    Directory(DirectoryError),
    #[error("the audit log cannot be written, so nothing was changed: {0}")]
    AuditUnavailable(crate::store::StoreError),
    /// The reset failed part-way (`error`: the must-change flag was not written, or the
    /// directory stopped answering) after a password that may now be in force was
    /// chosen: it is handed over anyway, so it is never lost.
    #[error("{error}")]
    PasswordMayBeInForce {
        error: Box<AccountError>,
        handover: Handover,
    },
}

/// What a caller is told when the directory could not take a change: `busy`, other writes
/// to the same account kept clashing with it; otherwise, the directory did not answer.
pub fn unavailable_detail(busy: bool) -> &'static str {
    if busy {
        "other changes to this account were being written at the same moment and kept \
         clashing with this one; nothing was changed"
    } else {
        "the directory is not reachable right now; nothing was changed"
    }
}

/// Where a password that may be in force went after a reset failed part-way.
#[derive(Debug, Default)]
pub struct Handover {
    /// Shown to the caller: asked for, or not queued for anyone.
    pub password: Option<Secret>,
    /// Addresses a message with it was queued for.
    pub sent_to: Vec<String>,
}

impl AccountError {
    /// Stable machine code, also used in audit records.
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::UnknownUser(_) => "user_not_found",
            AccountError::NotPermitted { .. } => "forbidden_target",
            AccountError::SignInRefused => "sign_in_refused",
            AccountError::PasswordChangeFirst => "password_change_required",
            AccountError::ProtectedTarget { .. } => "protected_target",
            AccountError::InvalidRequest(_) => "invalid_request",
            AccountError::PolicyViolation(_) => "password_policy",
            AccountError::DirectoryRefused(r) => rejection_code(r),
            AccountError::DirectoryUnavailable { .. } => "directory_unavailable",
            AccountError::OutcomeUnknown { .. } => "outcome_unknown",
            AccountError::FlagNotApplied { .. } => "must_change_flag_not_applied",
            AccountError::DirectoryAccessDenied => "directory_access_denied",
            AccountError::AccountLocked => "account_locked",
            AccountError::Misconfigured(_) => "misconfigured",
            AccountError::Directory(_) => "directory_error",
            AccountError::AuditUnavailable(_) => "store_unavailable",
            AccountError::PasswordMayBeInForce { error, .. } => error.code(),
        }
    }
}

pub struct AccountService {
    directory: Directory,
    protection: ProtectionSettings,
    role_groups: RoleGroups,
    rules: PasswordRules,
    /// The breached-password list, when one is configured.
    breached: Option<Arc<BreachedIndex>>,
    notifier: Notifier,
    audit: AuditLog,
    public_url: String,
    retry_after_secs: u64,
    /// `None`: self-service is off (no reset requests).
    self_service: Option<SelfServiceAccounts>,
}

impl AccountService {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        directory: Directory,
        protection: ProtectionSettings,
        role_groups: RoleGroups,
        rules: PasswordRules,
        breached: Option<Arc<BreachedIndex>>,
        notifier: Notifier,
        audit: AuditLog,
        public_url: String,
        retry_after_secs: u64,
        self_service: Option<SelfServiceAccounts>,
    ) -> Arc<Self> {
        Arc::new(Self {
            directory,
            protection,
            role_groups,
            rules,
            breached,
            notifier,
            audit,
            public_url,
            retry_after_secs,
            self_service,
        })
    }

    /// The organisation's password rules (the self-service pages show them).
    pub fn password_rules(&self) -> &PasswordRules {
        &self.rules
    }

    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    /// Maps a directory failure into this layer's vocabulary.
    pub fn directory_error(&self, e: DirectoryError) -> AccountError {
        match e {
            DirectoryError::WriteOutcomeUnknown(cause) => AccountError::OutcomeUnknown {
                cause,
                retry_after_secs: self.retry_after_secs,
            },
            DirectoryError::Busy(cause) => AccountError::DirectoryUnavailable {
                cause,
                retry_after_secs: 1,
                busy: true,
            },
            e if e.is_unavailable() => AccountError::DirectoryUnavailable {
                cause: e.to_string(),
                retry_after_secs: self.retry_after_secs,
                busy: false,
            },
            DirectoryError::PasswordRejected(r) => AccountError::DirectoryRefused(r),
            DirectoryError::FlagNotApplied {
                directory_unavailable,
            } => AccountError::FlagNotApplied {
                directory_unavailable,
            },
            DirectoryError::InsufficientAccess => AccountError::DirectoryAccessDenied,
            DirectoryError::AccountLocked => AccountError::AccountLocked,
            DirectoryError::NoSuchEntry(dn) => AccountError::Misconfigured(format!(
                "the directory has no entry `{dn}`; operators: check expiry.default_policy_dn and \
                 expiry.never_expires_policy_dn"
            )),
            DirectoryError::Config(text) => AccountError::Misconfigured(text),
            other => AccountError::Directory(other),
        }
    }

    /// Checks a password an administrator chose for several users against the rules
    /// (without any one user's words: each reset checks those again).
    pub fn check_chosen_password(&self, password: &Secret) -> Result<(), AccountError> {
        self.check_chosen(password, &[])
    }

    /// The one check of a password someone chose (an administrator, an identity
    /// provider, later the user): the rules, then the breached-password list. Generated
    /// passwords skip it: they are drawn at random and appear in no list.
    fn check_chosen(&self, password: &Secret, user_inputs: &[&str]) -> Result<(), AccountError> {
        let mut violations = self
            .rules
            .check(password, user_inputs)
            .err()
            .unwrap_or_default();
        if self
            .breached
            .as_ref()
            .is_some_and(|index| index.contains(password))
        {
            violations.push(Violation::Breached);
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(AccountError::PolicyViolation(violations))
        }
    }

    /// Several users by sign-in name in one directory search, keyed by the name in lower
    /// case; a name found nowhere (or twice) is missing from the map.
    pub async fn find_users(
        &self,
        user_names: &[&str],
    ) -> Result<std::collections::HashMap<String, UserEntry>, AccountError> {
        self.directory
            .find_users(user_names)
            .await
            .map_err(|e| self.directory_error(e))
    }

    /// A new temporary password from the organisation's rules.
    pub fn generate_password(&self) -> Secret {
        self.rules.generate()
    }

    /// Whether `password` is `user_name`'s password now (a bind as them succeeds), and
    /// if so whether a change is required at next sign-in: how a resumed bulk job tells a
    /// reset that happened (perhaps only its first half) from one that did not.
    pub async fn password_in_force(
        &self,
        user_name: &str,
        password: &Secret,
    ) -> Result<Option<InForce>, AccountError> {
        let user = match self.find_user(user_name).await {
            Ok(user) => user,
            Err(AccountError::UnknownUser(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let check = self
            .directory
            .check_user_password(&user.dn, password)
            .await
            .map_err(|e| self.directory_error(e))?;
        Ok(check.ok.then_some(InForce {
            must_change: check.must_change || user.must_change,
        }))
    }

    /// The sign-in names of the users in `population`, except `except_dn` (the caller:
    /// "everyone but yourself") and the service account, in directory order.
    pub async fn user_names(
        &self,
        population: Population<'_>,
        except_dn: Option<&str>,
    ) -> Result<Vec<String>, AccountError> {
        use futures::StreamExt;
        let mut narrow = None;
        let members: Option<std::collections::HashSet<String>> = match population {
            Population::Everyone => None,
            Population::Matching(filter) => {
                let filter = filter.trim();
                if !crate::directory::escape::is_valid_filter(filter) {
                    return Err(AccountError::InvalidRequest(
                        "the filter is not an LDAP filter (RFC 4515); write one in \
                         parentheses, e.g. (departmentNumber=Sales) or \
                         (&(l=Paris)(title=*engineer*))"
                            .into(),
                    ));
                }
                narrow = Some(filter.to_owned());
                None
            }
            Population::GroupMembers(group) => {
                let entry = self
                    .directory
                    .read_entry(group, &["member"])
                    .await
                    .map_err(|e| self.directory_error(e))?
                    .ok_or_else(|| {
                        AccountError::InvalidRequest(format!(
                            "there is no group `{group}` in the directory"
                        ))
                    })?;
                Some(
                    entry
                        .attrs
                        .get("member")
                        .into_iter()
                        .flatten()
                        .map(|dn| crate::directory::dn_key(dn))
                        .collect(),
                )
            }
        };
        let except = except_dn.map(crate::directory::dn_key);
        let mut names = Vec::new();
        let stream = self.directory.stream_password_states_matching(0, narrow);
        futures::pin_mut!(stream);
        while let Some(entry) = stream.next().await {
            let entry = entry.map_err(|e| self.directory_error(e))?;
            let key = crate::directory::dn_key(&entry.dn);
            if except.as_deref() == Some(key.as_str())
                || same_dn(&entry.dn, &self.protection.service_dn)
                || members.as_ref().is_some_and(|m| !m.contains(&key))
            {
                continue;
            }
            names.push(entry.user_name);
        }
        Ok(names)
    }

    /// Blocks `dn`'s sign-in again after its password was written: a directory may lift
    /// an administrator's block on a password change (OpenLDAP's ppolicy deletes its
    /// lock attribute), and neither a reset nor a pushed password may do that.
    async fn keep_block(&self, dn: &str) -> Result<(), AccountError> {
        self.directory.block_sign_in(dn).await.map_err(|e| {
            tracing::error!(user.dn = %dn, error = %e, "the password was set but sign-in could not be blocked again");
            AccountError::Misconfigured(format!(
                "the password was set, but sign-in could not be blocked again afterwards \
                 ({e}); block it again (POST /api/v1/users/{{user}}/block)"
            ))
        })
    }

    /// Looks a user up by sign-in name.
    pub async fn find_user(&self, user_name: &str) -> Result<UserEntry, AccountError> {
        self.directory
            .find_user(user_name)
            .await
            .map_err(|e| match e {
                DirectoryError::NoSuchUser => AccountError::UnknownUser(user_name.to_string()),
                e => self.directory_error(e),
            })
    }

    /// An administrator resets `user_name`'s password (Microsoft 365 "Reset password").
    ///
    /// The audit record says what actually happened to the password: whether it is in
    /// force (`yes`, `no`, or `unknown` when the directory stopped answering), where it
    /// was mailed and whether it was shown.
    pub async fn reset_password(
        &self,
        actor: &Actor,
        user_name: &str,
        req: ResetRequest,
    ) -> Result<ResetReceipt, AccountError> {
        self.reset_password_of(actor, user_name, None, req).await
    }

    /// [`AccountService::reset_password`] for a user the caller already read (a bulk
    /// job reads its batch in one search); `None`: looked up here.
    pub async fn reset_password_of(
        &self,
        actor: &Actor,
        user_name: &str,
        known: Option<UserEntry>,
        req: ResetRequest,
    ) -> Result<ResetReceipt, AccountError> {
        let (result, event) = self
            .reset_password_unrecorded(actor, user_name, known, req)
            .await;
        if let Some(timed) = event {
            // The change is already made; a failed audit write is logged by AuditLog and
            // must not turn a completed reset into an error the admin would retry.
            let _ = self.audit.record(timed.event).await;
        }
        result
    }

    /// [`AccountService::reset_password_of`], with the audit record handed back instead
    /// of written: a caller resetting many accounts (a bulk job) records a batch of them
    /// in one commit, and owes them (after a crash, it records what it finds was done).
    pub async fn reset_password_unrecorded(
        &self,
        actor: &Actor,
        user_name: &str,
        known: Option<UserEntry>,
        req: ResetRequest,
    ) -> (Result<ResetReceipt, AccountError>, Option<TimedEvent>) {
        let mode = match req.choice {
            PasswordChoice::Generate | PasswordChoice::Generated(_) => "auto",
            PasswordChoice::Chosen(_) => "manual",
        };
        let require_change = req.require_change;
        let result = self.try_reset(actor, user_name, known, req).await;
        let (outcome, sent_to, password_shown, password_in_force) = match &result {
            Ok(r) => (
                Outcome::Success,
                r.sent_to.clone(),
                r.password.is_some(),
                "yes",
            ),
            Err(AccountError::AuditUnavailable(_)) => return (result, None),
            Err(AccountError::PasswordMayBeInForce { error, handover }) => (
                Outcome::Failed(error.code()),
                handover.sent_to.clone(),
                handover.password.is_some(),
                if matches!(**error, AccountError::FlagNotApplied { .. }) {
                    "yes"
                } else {
                    "unknown"
                },
            ),
            Err(
                e @ (AccountError::DirectoryUnavailable { .. }
                | AccountError::OutcomeUnknown { .. }
                | AccountError::FlagNotApplied { .. }
                | AccountError::Misconfigured(_)
                | AccountError::Directory(_)),
            ) => (Outcome::Failed(e.code()), Vec::new(), false, "no"),
            Err(e) => (Outcome::Refused(e.code()), Vec::new(), false, "no"),
        };
        let event = AuditEvent {
            actor: actor.name.clone(),
            action: Action::PasswordReset,
            target: Some(user_name.to_string()),
            outcome,
            detail: Some(Detail::PasswordReset {
                mode,
                require_change_at_next_sign_in: require_change,
                sent_to,
                password_shown,
                password_in_force,
                found_after_restart: false,
            }),
            request_id: actor.request_id.clone(),
        };
        (result, Some(event.now()))
    }

    /// Queues the temporary-password mail for each of `send_to` (once per `mail_key`
    /// and address, when given): the addresses it was queued for, and whether any
    /// could not be.
    async fn queue_password_mail(
        &self,
        actor: &Actor,
        user: &UserEntry,
        send_to: &[String],
        password: &Secret,
        require_change: bool,
        mail_key: Option<&str>,
    ) -> (Vec<String>, bool) {
        let mut sent_to = Vec::new();
        let mut delivery_failed = false;
        for address in send_to {
            let context = json!({
                "display_name": user.display_name.clone().unwrap_or_else(|| user.user_name.clone()),
                "user_name": user.user_name,
                "require_change": require_change,
                "reset_by": actor.name,
                "public_url": self.public_url,
            });
            let queued = match mail_key {
                Some(key) => self
                    .notifier
                    .enqueue_once(
                        &format!("{key}|{address}"),
                        TEMPORARY_PASSWORD_TEMPLATE,
                        address,
                        context,
                        Some(password),
                    )
                    .await
                    .map(|_| ()),
                None => self
                    .notifier
                    .enqueue(
                        TEMPORARY_PASSWORD_TEMPLATE,
                        address,
                        context,
                        Some(password),
                    )
                    .await
                    .map(|_| ()),
            };
            match queued {
                Ok(()) => sent_to.push(address.clone()),
                Err(e) => {
                    tracing::error!(error = %e, user.dn = %user.dn, "could not queue the temporary password email");
                    delivery_failed = true;
                }
            }
        }
        (sent_to, delivery_failed)
    }

    /// Mails a password a bulk job found in force after a restart to the user's
    /// alternate address, under the item's `mail_key`: the run that set it may have
    /// died before queueing the mail, or just after (then nothing is queued again).
    /// The addresses it is queued for.
    pub async fn mail_found_reset(
        &self,
        actor: &Actor,
        user_name: &str,
        password: &Secret,
        require_change: bool,
        mail_key: &str,
    ) -> Result<Vec<String>, AccountError> {
        let user = self.find_user(user_name).await?;
        let Some(address) = user
            .alternate_mail
            .as_deref()
            .map(str::trim)
            .filter(|a| a.parse::<lettre::Address>().is_ok())
            .map(str::to_owned)
        else {
            return Ok(Vec::new());
        };
        let (sent_to, failed) = self
            .queue_password_mail(
                actor,
                &user,
                &[address],
                password,
                require_change,
                Some(mail_key),
            )
            .await;
        if failed {
            // The outbox is in the store: the job stops and this item is redone later.
            return Err(AccountError::AuditUnavailable(
                crate::store::StoreError::Unavailable(
                    "the temporary password could not be queued for email".into(),
                ),
            ));
        }
        Ok(sent_to)
    }

    /// The record of a reset a bulk job finds in force after a restart (the run that
    /// made it stopped before recording its batch, or just after).
    pub fn reset_found_after_restart(
        &self,
        actor: &Actor,
        user_name: &str,
        generated: bool,
        require_change: bool,
        password_shown: bool,
        sent_to: Vec<String>,
    ) -> TimedEvent {
        AuditEvent {
            actor: actor.name.clone(),
            action: Action::PasswordReset,
            target: Some(user_name.to_owned()),
            outcome: Outcome::Success,
            detail: Some(Detail::PasswordReset {
                mode: if generated { "auto" } else { "manual" },
                require_change_at_next_sign_in: require_change,
                sent_to,
                password_shown,
                password_in_force: "yes",
                found_after_restart: true,
            }),
            request_id: actor.request_id.clone(),
        }
        .now()
    }

    /// Writes records handed back by [`AccountService::reset_password_unrecorded`], in
    /// shared commits.
    pub async fn record_events(&self, events: Vec<TimedEvent>) -> Result<(), AccountError> {
        self.audit
            .record_many(events)
            .await
            .map_err(AccountError::AuditUnavailable)
    }

    async fn try_reset(
        &self,
        actor: &Actor,
        user_name: &str,
        known: Option<UserEntry>,
        req: ResetRequest,
    ) -> Result<ResetReceipt, AccountError> {
        self.authorize_action(actor, AccountAction::ResetPassword, user_name)?;
        let mut send_to = validate_recipients(&req.send_to)?;
        if matches!(req.choice, PasswordChoice::Generate)
            && !req.show_password
            && send_to.is_empty()
            && !req.send_to_alternate
        {
            return Err(AccountError::InvalidRequest(
                "an auto-generated password would be lost: set showPassword to true, or give \
                 sendTo addresses to email it to"
                    .into(),
            ));
        }

        let user = match known {
            Some(user) => user,
            None => self.find_user(user_name).await?,
        };
        self.authorize(actor, AccountAction::ResetPassword, user_name, &user)
            .await?;
        if req.send_to_alternate {
            match user.alternate_mail.as_deref().map(str::trim) {
                Some(address) if address.parse::<lettre::Address>().is_ok() => {
                    if !send_to.iter().any(|a| a.eq_ignore_ascii_case(address)) {
                        send_to.push(address.to_owned());
                    }
                }
                _ if req.show_password || !send_to.is_empty() => {}
                _ => {
                    return Err(AccountError::InvalidRequest(format!(
                        "`{user_name}` has no alternate email address to send the new \
                         password to; nothing was changed"
                    )));
                }
            }
        }

        let (password, generated) = match req.choice {
            PasswordChoice::Generate => (self.rules.generate(), true),
            PasswordChoice::Generated(p) => (p, true),
            PasswordChoice::Chosen(p) => {
                self.check_chosen(&p, &user_inputs(&user))?;
                (p, false)
            }
        };

        // Refuse before changing anything if we could not record what we did.
        self.audit
            .ping()
            .await
            .map_err(AccountError::AuditUnavailable)?;

        // From here on the new password may be in force, so it is handed over (mailed,
        // or shown) whatever else fails: a lost temporary password locks the user out.
        let mut partial = match self
            .directory
            .set_password(&user.dn, &password, req.require_change)
            .await
        {
            Ok(()) => None,
            Err(
                e
                @ (DirectoryError::FlagNotApplied { .. } | DirectoryError::WriteOutcomeUnknown(_)),
            ) => Some(self.directory_error(e)),
            Err(e) => return Err(self.directory_error(e)),
        };
        // A reset does not lift a block (as in Microsoft 365), whatever the directory
        // does to it on a password change.
        if user.blocked
            && partial.is_none()
            && let Err(e) = self.keep_block(&user.dn).await
        {
            partial = Some(e);
        }
        tracing::info!(
            user.dn = %user.dn,
            actor = %actor.name,
            generated,
            require_change = req.require_change,
            complete = partial.is_none(),
            "password reset"
        );

        let (sent_to, delivery_failed) = self
            .queue_password_mail(
                actor,
                &user,
                &send_to,
                &password,
                req.require_change,
                req.mail_key.as_deref(),
            )
            .await;
        if partial.is_none() {
            self.close_reset_request(&user.dn, &actor.name).await;
        }
        // Shown when asked for, and when it was not queued: never lose a password that
        // may be in force.
        let shown = (req.show_password || delivery_failed).then_some(password);
        if let Some(error) = partial {
            return Err(AccountError::PasswordMayBeInForce {
                error: Box::new(error),
                handover: Handover {
                    password: shown,
                    sent_to,
                },
            });
        }
        Ok(ResetReceipt {
            require_change: req.require_change,
            generated,
            sent_to,
            password: shown,
            delivery_failed,
            user,
        })
    }
}

/// Stable code for a password the directory's own policy refused.
pub fn rejection_code(r: &PolicyRejection) -> &'static str {
    match r {
        PolicyRejection::TooShort => "password_too_short",
        PolicyRejection::InsufficientQuality | PolicyRejection::QualityRule(_) => {
            "password_quality"
        }
        PolicyRejection::InHistory => "password_in_history",
        PolicyRejection::TooYoung => "password_too_young",
        PolicyRejection::TooLong => "password_too_long",
        PolicyRejection::ModNotAllowed => "password_change_not_allowed",
        PolicyRejection::MustSupplyOldPassword => "old_password_required",
        PolicyRejection::Other(_) => "password_rejected",
    }
}

/// Words specific to the user that a chosen password must not contain.
fn user_inputs(user: &UserEntry) -> Vec<&str> {
    let mut words = vec![user.user_name.as_str()];
    if let Some(name) = &user.display_name {
        words.extend(name.split_whitespace());
    }
    if let Some(local) = user.mail.as_deref().and_then(|m| m.split('@').next()) {
        words.push(local);
    }
    words
}

fn validate_recipients(addresses: &[String]) -> Result<Vec<String>, AccountError> {
    if addresses.len() > MAX_RECIPIENTS {
        return Err(AccountError::InvalidRequest(format!(
            "sendTo has {} addresses; at most {MAX_RECIPIENTS} are allowed",
            addresses.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(addresses.len());
    for raw in addresses {
        let address = raw.trim();
        if address.parse::<lettre::Address>().is_err() {
            return Err(AccountError::InvalidRequest(format!(
                "sendTo contains `{}`, which is not an email address such as someone@example.org",
                address.chars().take(100).collect::<String>()
            )));
        }
        if !out.iter().any(|a| a.eq_ignore_ascii_case(address)) {
            out.push(address.to_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_are_checked_and_deduplicated() {
        let ok = validate_recipients(&["a@example.org".into(), " A@example.org ".into()])
            .expect("valid");
        assert_eq!(ok, vec!["a@example.org".to_string()]);
        let err = validate_recipients(&["not-an-address".into()]).expect_err("invalid");
        assert!(err.to_string().contains("not-an-address"));
        let many: Vec<String> = (0..11).map(|i| format!("u{i}@example.org")).collect();
        assert!(validate_recipients(&many).is_err());
    }
}
