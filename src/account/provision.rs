//! Passwords an identity provider pushes (SCIM): the provider already knows the password,
//! so there is nothing to generate, mail or reveal, and a push equal to the current
//! password must change nothing.
//!
//! Okta pushes the user's cleartext password at every sign-in and every reset. Writing it
//! each time would restart the password's age (so it would never expire), fill the
//! history with copies of one password, and reset lockout counters. So the push is first
//! compared with the stored value without binding (a bind would touch `pwdFailureTime` on
//! a mismatch and `pwdLastSuccess` on a match), and only a different password is written.

use super::{AccountError, AccountService};
use crate::types::Secret;

/// What a push did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushOutcome {
    /// The password equals the current one; nothing was written.
    Unchanged,
    /// The password was written.
    Set,
}

impl PushOutcome {
    /// For audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            PushOutcome::Unchanged => "unchanged",
            PushOutcome::Set => "set",
        }
    }
}

impl AccountService {
    /// Checks `password` against lockbridge's own password rules and the breached-password
    /// list (the directory's policy is checked by the directory when the password is
    /// written).
    pub fn check_rules(&self, password: &Secret, user_inputs: &[&str]) -> Result<(), AccountError> {
        self.check_chosen(password, user_inputs)
    }

    /// Whether `password` is `user_dn`'s current password: `Some(true)`/`Some(false)`, or
    /// `None` when the stored value cannot be checked without binding (an unknown hash
    /// scheme). Changes nothing in the directory.
    pub async fn is_current_password(
        &self,
        user_dn: &str,
        password: &Secret,
    ) -> Result<Option<bool>, AccountError> {
        self.directory
            .password_matches(user_dn, password)
            .await
            .map_err(|e| self.directory_error(e))
    }

    /// Sets a pushed password unless it is already the current one. `must_change`: the
    /// user must change it at next sign-in (SCIM clients normally push final passwords).
    /// The caller audits the request this push belongs to.
    pub async fn push_password(
        &self,
        user_dn: &str,
        password: &Secret,
        must_change: bool,
        keep_blocked: bool,
    ) -> Result<PushOutcome, AccountError> {
        if self.is_current_password(user_dn, password).await? == Some(true) {
            return Ok(PushOutcome::Unchanged);
        }
        self.set_pushed_password(user_dn, password, must_change, keep_blocked)
            .await?;
        Ok(PushOutcome::Set)
    }

    /// Writes a pushed password the caller already found to differ from the current one
    /// ([`AccountService::is_current_password`]). `keep_blocked`: the account's sign-in
    /// is blocked and must stay so (see [`AccountService::keep_block`]).
    pub async fn set_pushed_password(
        &self,
        user_dn: &str,
        password: &Secret,
        must_change: bool,
        keep_blocked: bool,
    ) -> Result<(), AccountError> {
        let written = if must_change {
            self.directory.set_password(user_dn, password, true).await
        } else {
            self.directory.set_known_password(user_dn, password).await
        };
        written.map_err(|e| self.directory_error(e))?;
        if keep_blocked {
            self.keep_block(user_dn).await?;
        }
        tracing::info!(user.dn = %user_dn, must_change, "pushed password set");
        Ok(())
    }
}
