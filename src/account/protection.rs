//! Accounts a caller may not change, whatever its role grants: the accounts that run
//! lockbridge.
//!
//! - lockbridge's own service account (`directory.bind_dn`) is changed through nobody;
//! - the members of `directory.admin_group_dns` are out of reach of provisioning (an
//!   identity provider's token) unless the operator opts in, and of password admins;
//! - `scim.protected_dns` lists further entries provisioning never writes;
//! - provisioning never edits an administrator group, and never creates (or renames an
//!   entry to) a DN an administrator group lists: a stale membership must not turn a
//!   new account into an administrator.
//!
//! Membership is direct membership (`member`), asked of the directory at the time of
//! the request, never cached.

use std::fmt;

use super::{AccountError, AccountService};
use crate::directory::same_dn;

/// Why an entry is out of reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protection {
    /// lockbridge's own service account.
    ServiceAccount,
    /// A member of an administrator group.
    Administrator,
    /// Listed in `scim.protected_dns`.
    Listed,
    /// One of the administrator groups itself.
    AdministratorGroup,
}

impl Protection {
    /// What to tell the caller, after the entry's name.
    pub fn explanation(self) -> &'static str {
        match self {
            Protection::ServiceAccount => {
                "is lockbridge's own service account (directory.bind_dn); it cannot be changed \
                 through lockbridge"
            }
            Protection::Administrator => {
                "is a member of an administrator group (directory.admin_group_dns); an identity \
                 provider's token may not change administrators: manage them in the directory, \
                 or (operators) set scim.allow_writes_to_administrators = true"
            }
            Protection::Listed => {
                "is listed in scim.protected_dns; an identity provider's token may not change it"
            }
            Protection::AdministratorGroup => {
                "is an administrator group (directory.admin_group_dns); its membership is \
                 managed in the directory, not over SCIM"
            }
        }
    }
}

impl fmt::Display for Protection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Protection::ServiceAccount => "service account",
            Protection::Administrator => "administrator",
            Protection::Listed => "protected entry",
            Protection::AdministratorGroup => "administrator group",
        })
    }
}

/// Which entries are protected (from `[directory]` and `[scim]`).
#[derive(Debug, Clone, Default)]
pub struct ProtectionSettings {
    /// `directory.bind_dn`.
    pub service_dn: String,
    /// `directory.admin_group_dns`.
    pub admin_group_dns: Vec<String>,
    /// `scim.protected_dns`.
    pub provisioning_protected_dns: Vec<String>,
    /// `scim.allow_writes_to_administrators`.
    pub provisioning_may_write_administrators: bool,
}

impl ProtectionSettings {
    /// The protection that needs no directory look-up: the service account, a listed
    /// entry, an administrator group.
    pub fn static_protection(&self, dn: &str) -> Option<Protection> {
        if same_dn(dn, &self.service_dn) {
            Some(Protection::ServiceAccount)
        } else if self.admin_group_dns.iter().any(|g| same_dn(g, dn)) {
            Some(Protection::AdministratorGroup)
        } else if self
            .provisioning_protected_dns
            .iter()
            .any(|p| same_dn(p, dn))
        {
            Some(Protection::Listed)
        } else {
            None
        }
    }
}

impl AccountService {
    fn protected(&self, target: &str, dn: &str, why: Protection) -> AccountError {
        tracing::warn!(entry.dn = %dn, protection = %why, "refused a write to a protected entry");
        AccountError::ProtectedTarget {
            target: target.to_owned(),
            why,
        }
    }

    /// May provisioning (SCIM) write the existing entry `dn` (named `target` in messages
    /// and the audit log)? Refused for the service account, listed entries,
    /// administrator groups, and administrators unless the operator opted in.
    pub async fn check_provisioning_target(
        &self,
        target: &str,
        dn: &str,
    ) -> Result<(), AccountError> {
        if let Some(why) = self.protection.static_protection(dn) {
            return Err(self.protected(target, dn, why));
        }
        if !self.protection.provisioning_may_write_administrators
            && self.is_administrator(dn).await?
        {
            return Err(self.protected(target, dn, Protection::Administrator));
        }
        Ok(())
    }

    /// May provisioning create an entry at `dn`, or rename one to it? Refused for every
    /// protected DN, and for a DN an administrator group lists (a left-over membership),
    /// whatever `allow_writes_to_administrators` says.
    pub async fn check_provisioning_new_dn(
        &self,
        target: &str,
        dn: &str,
    ) -> Result<(), AccountError> {
        if let Some(why) = self.protection.static_protection(dn) {
            return Err(self.protected(target, dn, why));
        }
        if self.is_administrator(dn).await? {
            return Err(self.protected(target, dn, Protection::Administrator));
        }
        Ok(())
    }

    /// Whether provisioning must leave the group `dn` alone (an administrator group, or
    /// a listed entry).
    pub fn is_protected_group(&self, dn: &str) -> bool {
        self.protection.static_protection(dn).is_some()
    }

    /// Whether `dn` is a direct member of an administrator group.
    pub async fn is_administrator(&self, dn: &str) -> Result<bool, AccountError> {
        self.directory
            .is_admin(dn)
            .await
            .map_err(|e| self.directory_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_protection_matches_dns_loosely() {
        let s = ProtectionSettings {
            service_dn: "cn=lockbridge,ou=services,dc=example,dc=org".into(),
            admin_group_dns: vec!["cn=admins,ou=groups,dc=example,dc=org".into()],
            provisioning_protected_dns: vec!["uid=breakglass,ou=people,dc=example,dc=org".into()],
            provisioning_may_write_administrators: true,
        };
        assert_eq!(
            s.static_protection("CN=Lockbridge, OU=services,dc=example,dc=org"),
            Some(Protection::ServiceAccount)
        );
        assert_eq!(
            s.static_protection("uid=BreakGlass,ou=people,dc=example,dc=org"),
            Some(Protection::Listed)
        );
        assert_eq!(
            s.static_protection("cn=admins,ou=groups,dc=example,dc=org"),
            Some(Protection::AdministratorGroup)
        );
        assert_eq!(
            s.static_protection("uid=bob,ou=people,dc=example,dc=org"),
            None
        );
        for p in [
            Protection::ServiceAccount,
            Protection::Administrator,
            Protection::Listed,
            Protection::AdministratorGroup,
        ] {
            assert!(!p.explanation().is_empty());
        }
    }
}
