//! Sign-in state an administrator (or the organisation's policy) changes: require a
//! password change at the next sign-in, unlock after a lockout, block and unblock
//! sign-in. Each goes find → authorize → audit ready → directory → audit record, like a
//! reset; a refusal changes nothing and is audited too.

use super::{AccountError, AccountService, Actor};
use crate::audit::{Action, AuditEvent, Detail, Outcome};
use crate::auth::AccountAction;
use crate::directory::{Lockout, PasswordState, PasswordStateEntry, UserEntry};
use crate::policy::ExpiryAction;

/// What changing sign-in state did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignInChange {
    /// The account as it was read, before the change.
    pub user: UserEntry,
    /// False when the account already was in the asked-for state (nothing written).
    pub changed: bool,
    /// The state after the change: must change at next sign-in, locked (a block or a
    /// lockout), blocked by an administrator.
    pub must_change: bool,
    pub locked: bool,
    pub blocked: bool,
}

/// The sign-in state provisioning asks for (SCIM `active: false` is `blocked`);
/// `None` leaves that part as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProvisionedState {
    pub blocked: Option<bool>,
    pub must_change: Option<bool>,
}

impl ProvisionedState {
    /// Nothing asked.
    pub fn is_empty(&self) -> bool {
        self.blocked.is_none() && self.must_change.is_none()
    }

    /// The request that takes these changes back.
    pub fn undo(self) -> ProvisionedState {
        ProvisionedState {
            blocked: self.blocked.map(|b| !b),
            must_change: self.must_change.map(|m| !m),
        }
    }
}

/// One sign-in change, as the audit log names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SignInEdit {
    MustChange(bool),
    Unlock,
    Block(bool),
}

impl SignInEdit {
    fn account_action(self) -> AccountAction {
        match self {
            SignInEdit::MustChange(_) => AccountAction::RequireChange,
            SignInEdit::Unlock => AccountAction::Unlock,
            SignInEdit::Block(_) => AccountAction::BlockSignIn,
        }
    }

    fn audit_action(self) -> Action {
        match self {
            SignInEdit::MustChange(true) => Action::PasswordChangeRequired,
            SignInEdit::MustChange(false) => Action::PasswordChangeRequirementCleared,
            SignInEdit::Unlock => Action::AccountUnlocked,
            SignInEdit::Block(true) => Action::SignInBlocked,
            SignInEdit::Block(false) => Action::SignInUnblocked,
        }
    }
}

impl AccountService {
    /// Require (`true`) or stop requiring a password change at the user's next sign-in.
    pub async fn require_password_change(
        &self,
        actor: &Actor,
        user_name: &str,
        required: bool,
    ) -> Result<SignInChange, AccountError> {
        self.change_sign_in(actor, user_name, SignInEdit::MustChange(required))
            .await
    }

    /// End a lockout after failed sign-ins. An account blocked by an administrator is
    /// refused with a hint to unblock it (a separate right).
    pub async fn unlock(
        &self,
        actor: &Actor,
        user_name: &str,
    ) -> Result<SignInChange, AccountError> {
        self.change_sign_in(actor, user_name, SignInEdit::Unlock)
            .await
    }

    /// Block (`true`) or unblock sign-in.
    pub async fn block_sign_in(
        &self,
        actor: &Actor,
        user_name: &str,
        blocked: bool,
    ) -> Result<SignInChange, AccountError> {
        self.change_sign_in(actor, user_name, SignInEdit::Block(blocked))
            .await
    }

    /// Block sign-in of an entry provisioning is deleting in `deactivate` mode (SCIM
    /// DELETE), found by the caller (`dn`, named `user_name`).
    pub async fn deactivate_provisioned(
        &self,
        actor: &Actor,
        user_name: &str,
        dn: &str,
    ) -> Result<(), AccountError> {
        // Only the DN and the name matter to a block (which is idempotent): the state is
        // taken as "not blocked" so that the block is written whatever it was.
        let want = ProvisionedState {
            blocked: Some(true),
            must_change: None,
        };
        self.set_provisioned_state(actor, user_name, dn, &PasswordState::default(), want)
            .await
            .map(|_| ())
    }

    /// Bring an entry provisioning found (`dn`, named `user_name`, in state `now`) to
    /// the sign-in state it asks for (SCIM `active`, `mustChange`). Each change is
    /// authorized, written and audited like an administrator's; when the second fails,
    /// the first is undone. Returns what was changed, for [`ProvisionedState::undo`].
    pub async fn set_provisioned_state(
        &self,
        actor: &Actor,
        user_name: &str,
        dn: &str,
        now: &PasswordState,
        want: ProvisionedState,
    ) -> Result<ProvisionedState, AccountError> {
        let mut user = UserEntry {
            dn: dn.to_owned(),
            user_name: user_name.to_owned(),
            ..UserEntry::from(&PasswordStateEntry::default())
        };
        user.must_change = now.must_change;
        user.locked = now.locked;
        user.blocked = now.blocked;
        let mut done = ProvisionedState::default();
        let edits = [
            want.blocked
                .filter(|b| *b != now.blocked)
                .map(SignInEdit::Block),
            want.must_change
                .filter(|m| *m != now.must_change)
                .map(SignInEdit::MustChange),
        ];
        for change in edits.into_iter().flatten() {
            let result = self.apply_change(actor, user_name, &user, change).await;
            self.record_change(actor, user_name, change, &result).await;
            match result {
                Ok(after) => {
                    match change {
                        SignInEdit::Block(b) => done.blocked = Some(b),
                        SignInEdit::MustChange(m) => done.must_change = Some(m),
                        SignInEdit::Unlock => {}
                    }
                    user.must_change = after.must_change;
                    user.locked = after.locked;
                    user.blocked = after.blocked;
                }
                Err(e) => {
                    self.undo_provisioned_state(actor, user_name, dn, done)
                        .await;
                    return Err(e);
                }
            }
        }
        Ok(done)
    }

    /// Take back what [`Self::set_provisioned_state`] changed (`done`), because the
    /// rest of the provisioning request failed. Failures are logged: the request's own
    /// error is what the caller reports.
    pub async fn undo_provisioned_state(
        &self,
        actor: &Actor,
        user_name: &str,
        dn: &str,
        done: ProvisionedState,
    ) {
        if done.is_empty() {
            return;
        }
        let now = PasswordState {
            must_change: done.must_change.unwrap_or(false),
            blocked: done.blocked.unwrap_or(false),
            locked: done.blocked.unwrap_or(false),
            ..PasswordState::default()
        };
        if let Err(e) =
            Box::pin(self.set_provisioned_state(actor, user_name, dn, &now, done.undo())).await
        {
            tracing::error!(user.dn = %dn, error = %e, "could not undo a sign-in state change after a failed provisioning request");
        }
    }

    /// The organisation's action on an expired password (the sweep, as the system),
    /// unless the account already is in that state. Audited like an administrator's.
    pub async fn apply_expiry_action(
        &self,
        actor: &Actor,
        action: ExpiryAction,
        entry: &PasswordStateEntry,
    ) -> Result<(), AccountError> {
        let change = match action {
            ExpiryAction::Nothing => return Ok(()),
            ExpiryAction::RequireChange if entry.must_change => return Ok(()),
            ExpiryAction::Lock if entry.blocked => return Ok(()),
            ExpiryAction::RequireChange => SignInEdit::MustChange(true),
            ExpiryAction::Lock => SignInEdit::Block(true),
        };
        // The sweep read the entry already: no second look-up per expired account.
        let user = UserEntry::from(entry);
        let result = self
            .apply_change(actor, &entry.user_name, &user, change)
            .await;
        self.record_change(actor, &entry.user_name, change, &result)
            .await;
        result.map(|_| ())
    }

    async fn change_sign_in(
        &self,
        actor: &Actor,
        user_name: &str,
        change: SignInEdit,
    ) -> Result<SignInChange, AccountError> {
        let result = async {
            self.authorize_action(actor, change.account_action(), user_name)?;
            let user = self.find_user(user_name).await?;
            self.apply_change(actor, user_name, &user, change).await
        }
        .await;
        self.record_change(actor, user_name, change, &result).await;
        result
    }

    async fn apply_change(
        &self,
        actor: &Actor,
        user_name: &str,
        user: &UserEntry,
        change: SignInEdit,
    ) -> Result<SignInChange, AccountError> {
        self.authorize(actor, change.account_action(), user_name, user)
            .await?;
        if change == SignInEdit::Unlock && user.blocked {
            return Err(AccountError::InvalidRequest(format!(
                "`{user_name}`'s sign-in is blocked by an administrator, not locked out; \
                 unblock it instead (POST /api/v1/users/{user_name}/unblock)"
            )));
        }
        // Refuse before changing anything if we could not record what we did.
        self.audit
            .ping()
            .await
            .map_err(AccountError::AuditUnavailable)?;
        let directory = &self.directory;
        let changed = match change {
            SignInEdit::MustChange(required) => {
                if user.must_change == required {
                    false
                } else {
                    directory
                        .set_must_change(&user.dn, required)
                        .await
                        .map_err(|e| self.directory_error(e))?;
                    true
                }
            }
            SignInEdit::Block(true) => {
                if user.blocked {
                    false
                } else {
                    directory
                        .block_sign_in(&user.dn)
                        .await
                        .map_err(|e| self.directory_error(e))?;
                    true
                }
            }
            SignInEdit::Block(false) => {
                if user.blocked {
                    directory
                        .unblock_sign_in(&user.dn)
                        .await
                        .map_err(|e| self.directory_error(e))?;
                    true
                } else {
                    false
                }
            }
            SignInEdit::Unlock => match directory
                .clear_lockout(&user.dn)
                .await
                .map_err(|e| self.directory_error(e))?
            {
                Lockout::Cleared => true,
                Lockout::None => false,
                Lockout::Blocked => {
                    return Err(AccountError::InvalidRequest(format!(
                        "`{user_name}`'s sign-in is blocked by an administrator, not locked \
                         out; unblock it instead"
                    )));
                }
            },
        };
        tracing::info!(actor = %actor.name, user.dn = %user.dn, ?change, changed, "sign-in state changed");
        let (must_change, locked, blocked) = match change {
            SignInEdit::MustChange(required) => (required, user.locked, user.blocked),
            SignInEdit::Block(true) => (user.must_change, true, true),
            // A lockout after failed sign-ins is untouched by unblocking.
            SignInEdit::Block(false) => (user.must_change, user.locked && !user.blocked, false),
            SignInEdit::Unlock => (user.must_change, false, false),
        };
        Ok(SignInChange {
            user: user.clone(),
            changed,
            must_change,
            locked,
            blocked,
        })
    }

    async fn record_change(
        &self,
        actor: &Actor,
        user_name: &str,
        change: SignInEdit,
        result: &Result<SignInChange, AccountError>,
    ) {
        let outcome = match result {
            Ok(_) => Outcome::Success,
            Err(AccountError::AuditUnavailable(_)) => return,
            Err(
                e @ (AccountError::DirectoryUnavailable { .. }
                | AccountError::OutcomeUnknown { .. }
                | AccountError::Misconfigured(_)
                | AccountError::DirectoryAccessDenied
                | AccountError::Directory(_)),
            ) => Outcome::Failed(e.code()),
            Err(e) => Outcome::Refused(e.code()),
        };
        let _ = self
            .audit
            .record(AuditEvent {
                actor: actor.name.clone(),
                action: change.audit_action(),
                target: Some(user_name.to_owned()),
                outcome,
                detail: Some(Detail::SignIn {
                    changed: result.as_ref().is_ok_and(|c| c.changed),
                }),
                request_id: actor.request_id.clone(),
            })
            .await;
    }
}
