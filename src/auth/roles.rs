//! Roles and what each may do, in one table (`Role::allows`).
//!
//! Modelled on Microsoft 365: a Password administrator resets passwords of
//! non-administrators only; a Global administrator may do everything in the admin API.
//! Provisioning (SCIM) is a scope of its own, like an enterprise application's token in
//! Entra ID: a `scim` token may provision and nothing else, and no admin token may provision.

use std::fmt;
use std::str::FromStr;

/// A role held by an API token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    GlobalAdmin,
    PasswordAdmin,
    /// An identity provider's provisioning token (Entra ID, Okta): the SCIM API only.
    Scim,
}

/// Something a caller may be allowed to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Look up users and their password state.
    ReadUsers,
    /// Reset the password of a user who is not an administrator.
    ResetPasswords,
    /// Reset the password of a member of an administrator group.
    ResetAdminPasswords,
    /// Read the audit log.
    ReadAudit,
    /// Change the expiration policy and "password never expires".
    ManageExpiry,
    /// Start expiry sweeps and read their results.
    RunSweeps,
    /// Provision users and groups and push passwords over SCIM.
    Provision,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::GlobalAdmin, Role::PasswordAdmin, Role::Scim];

    /// The whole role model. Keep it a single match so a review sees every grant.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::GlobalAdmin => !matches!(permission, Provision),
            Role::PasswordAdmin => matches!(permission, ReadUsers | ResetPasswords),
            Role::Scim => matches!(permission, Provision),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::GlobalAdmin => "global-admin",
            Role::PasswordAdmin => "password-admin",
            Role::Scim => "scim",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                let known: Vec<_> = Role::ALL.iter().map(|r| r.as_str()).collect();
                format!("unknown role `{s}`; known roles: {}", known.join(", "))
            })
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Permission::ReadUsers => "read users",
            Permission::ResetPasswords => "reset passwords",
            Permission::ResetAdminPasswords => "reset administrators' passwords",
            Permission::ReadAudit => "read the audit log",
            Permission::ManageExpiry => "change password expiration settings",
            Permission::RunSweeps => "run expiry sweeps",
            Permission::Provision => "provision users over SCIM",
        })
    }
}

/// Type-level permission, so handlers can name what they need in their signature.
pub trait PermissionMarker: Send + Sync + 'static {
    const PERMISSION: Permission;
}

macro_rules! marker {
    ($name:ident) => {
        #[doc = concat!("Marker for [`Permission::", stringify!($name), "`].")]
        #[derive(Debug)]
        pub struct $name;
        impl PermissionMarker for $name {
            const PERMISSION: Permission = Permission::$name;
        }
    };
}

marker!(ReadUsers);
marker!(ResetPasswords);
marker!(ReadAudit);
marker!(ManageExpiry);
marker!(RunSweeps);
marker!(Provision);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_matrix() {
        use Permission::*;
        let admin_api = [
            ReadUsers,
            ResetPasswords,
            ResetAdminPasswords,
            ReadAudit,
            ManageExpiry,
            RunSweeps,
        ];
        for p in admin_api {
            assert!(Role::GlobalAdmin.allows(p));
            assert!(!Role::Scim.allows(p), "scim tokens are provisioning-only");
        }
        assert!(Role::Scim.allows(Provision));
        assert!(!Role::GlobalAdmin.allows(Provision));
        assert!(!Role::PasswordAdmin.allows(Provision));
        assert!(Role::PasswordAdmin.allows(ReadUsers));
        assert!(Role::PasswordAdmin.allows(ResetPasswords));
        assert!(!Role::PasswordAdmin.allows(ResetAdminPasswords));
        assert!(!Role::PasswordAdmin.allows(ReadAudit));
        assert!(!Role::PasswordAdmin.allows(ManageExpiry));
        assert!(!Role::PasswordAdmin.allows(RunSweeps));
    }

    #[test]
    fn roles_round_trip_and_unknown_is_explained() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        let err = "root".parse::<Role>().expect_err("unknown");
        assert!(
            err.contains("global-admin") && err.contains("password-admin") && err.contains("scim")
        );
    }
}
