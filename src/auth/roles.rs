//! Roles and what each may do, in one place: [`Role::allows`] (which requests a role may
//! make at all) and [`Role::may`] (which accounts it may act on). `docs/roles.md` is the
//! same table for operators; the tests below hold the two together.
//!
//! Modelled on Microsoft Entra ID's built-in roles ("use roles with the fewest
//! permissions"): a Password administrator resets the passwords of plain users and of
//! other Password administrators; a Helpdesk administrator also those of Helpdesk
//! administrators and auditors; a User administrator also blocks sign-in and manages User
//! administrators; a Privileged authentication administrator and a Global administrator
//! act on everyone. Nobody acts on their own account through the admin API (Microsoft
//! 365: "ask another global admin to reset your password"), and nobody on lockbridge's
//! service account. Provisioning (SCIM) is a role of its own, like an enterprise
//! application's token: it may provision and nothing else, and no admin may provision.

use std::fmt;
use std::str::FromStr;

/// A role held by an API token, or by a person through a directory group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    GlobalAdmin,
    PrivilegedAuthenticationAdmin,
    UserAdmin,
    HelpdeskAdmin,
    PasswordAdmin,
    /// Reads users and the audit log; changes nothing.
    Auditor,
    /// An identity provider's provisioning token (Entra ID, Okta): the SCIM API only.
    Scim,
}

/// A request a caller may be allowed to make (checked before the request is read).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Look up users and their password state.
    ReadUsers,
    /// Reset passwords, require a change at next sign-in, unlock after a lockout (for
    /// which users: [`Role::may`]).
    ResetPasswords,
    /// Block and unblock sign-in.
    BlockSignIn,
    /// Set "password never expires" on a user.
    SetNeverExpires,
    /// Read the audit log and the mail that could not be delivered.
    ReadAudit,
    /// Change the organisation's expiration policy.
    ManageExpiry,
    /// Start expiry sweeps and read their results.
    RunSweeps,
    /// Provision users and groups and push passwords over SCIM.
    Provision,
    /// Name more than 40 accounts in one bulk request.
    Bulk,
}

/// Something done to one account, checked against the target by [`Role::may`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AccountAction {
    ResetPassword,
    /// Require (or stop requiring) a password change at the next sign-in.
    RequireChange,
    /// Unlock an account locked by failed sign-ins.
    Unlock,
    /// Block or unblock sign-in.
    BlockSignIn,
    SetNeverExpires,
}

/// Whom an action is for, as the rules see it: a target ranks by the most powerful role
/// it holds ([`Role::rank`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// A user with no administrator role.
    User,
    /// A person holding this role (their most powerful).
    Admin(Role),
    /// The caller's own account.
    Caller,
    /// lockbridge's service account (or another account configured as protected).
    ServiceAccount,
}

impl Role {
    pub const ALL: [Role; 7] = [
        Role::GlobalAdmin,
        Role::PrivilegedAuthenticationAdmin,
        Role::UserAdmin,
        Role::HelpdeskAdmin,
        Role::PasswordAdmin,
        Role::Auditor,
        Role::Scim,
    ];

    /// The roles people hold through directory groups, most powerful first.
    pub const ADMIN_ROLES: [Role; 6] = [
        Role::GlobalAdmin,
        Role::PrivilegedAuthenticationAdmin,
        Role::UserAdmin,
        Role::HelpdeskAdmin,
        Role::PasswordAdmin,
        Role::Auditor,
    ];

    /// The requests each role may make. Keep it a single match so a review sees every grant.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::GlobalAdmin => !matches!(permission, Provision),
            Role::PrivilegedAuthenticationAdmin => {
                matches!(
                    permission,
                    ReadUsers | ResetPasswords | BlockSignIn | SetNeverExpires
                )
            }
            Role::UserAdmin => matches!(
                permission,
                ReadUsers | ResetPasswords | BlockSignIn | SetNeverExpires
            ),
            Role::HelpdeskAdmin | Role::PasswordAdmin => {
                matches!(permission, ReadUsers | ResetPasswords)
            }
            Role::Auditor => matches!(permission, ReadUsers | ReadAudit),
            Role::Scim => matches!(permission, Provision),
        }
    }

    /// Whether this role may do `action` to `target`: the request must be allowed
    /// ([`Role::allows`]) and the target within the role's reach. The one table of who
    /// may act on whom; `docs/roles.md` prints it.
    pub fn may(self, action: AccountAction, target: Target) -> bool {
        let permission = match action {
            AccountAction::ResetPassword | AccountAction::RequireChange | AccountAction::Unlock => {
                Permission::ResetPasswords
            }
            AccountAction::BlockSignIn => Permission::BlockSignIn,
            AccountAction::SetNeverExpires => Permission::SetNeverExpires,
        };
        if !self.allows(permission) {
            return false;
        }
        match target {
            Target::Caller | Target::ServiceAccount => false,
            Target::User => true,
            Target::Admin(held) => self.reaches(held),
        }
    }

    /// The administrators a role's actions reach (Entra's "who can reset passwords").
    fn reaches(self, held: Role) -> bool {
        use Role::*;
        match self {
            GlobalAdmin | PrivilegedAuthenticationAdmin => true,
            UserAdmin => matches!(held, UserAdmin | HelpdeskAdmin | PasswordAdmin | Auditor),
            HelpdeskAdmin => matches!(held, HelpdeskAdmin | PasswordAdmin | Auditor),
            PasswordAdmin => matches!(held, PasswordAdmin),
            Auditor | Scim => false,
        }
    }

    /// 0 for the most powerful; a target ranks by the lowest rank among its roles.
    pub fn rank(self) -> usize {
        Role::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or(usize::MAX)
    }

    /// The roles that may do `action` to `target`, for error messages ("ask a ...").
    pub fn who_may(action: AccountAction, target: Target) -> Vec<Role> {
        Role::ALL
            .into_iter()
            .filter(|r| r.may(action, target))
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::GlobalAdmin => "global-admin",
            Role::PrivilegedAuthenticationAdmin => "privileged-authentication-admin",
            Role::UserAdmin => "user-admin",
            Role::HelpdeskAdmin => "helpdesk-admin",
            Role::PasswordAdmin => "password-admin",
            Role::Auditor => "auditor",
            Role::Scim => "scim",
        }
    }
}

impl AccountAction {
    pub const ALL: [AccountAction; 5] = [
        AccountAction::ResetPassword,
        AccountAction::RequireChange,
        AccountAction::Unlock,
        AccountAction::BlockSignIn,
        AccountAction::SetNeverExpires,
    ];

    /// The request a role must be allowed to make for this action on anyone.
    pub fn permission(self) -> Permission {
        match self {
            AccountAction::ResetPassword | AccountAction::RequireChange | AccountAction::Unlock => {
                Permission::ResetPasswords
            }
            AccountAction::BlockSignIn => Permission::BlockSignIn,
            AccountAction::SetNeverExpires => Permission::SetNeverExpires,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AccountAction::ResetPassword => "reset the password of",
            AccountAction::RequireChange => "require a password change of",
            AccountAction::Unlock => "unlock",
            AccountAction::BlockSignIn => "block or unblock sign-in of",
            AccountAction::SetNeverExpires => "set \"password never expires\" on",
        }
    }
}

impl Target {
    /// How an error message names the target kind.
    pub fn describe(self) -> String {
        match self {
            Target::User => "a user".into(),
            Target::Admin(role) => format!("a {role}"),
            Target::Caller => "your own account".into(),
            Target::ServiceAccount => "lockbridge's service account".into(),
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
            Permission::BlockSignIn => "block sign-in",
            Permission::SetNeverExpires => "set \"password never expires\"",
            Permission::ReadAudit => "read the audit log",
            Permission::ManageExpiry => "change password expiration settings",
            Permission::RunSweeps => "run expiry sweeps",
            Permission::Provision => "provision users over SCIM",
            Permission::Bulk => "act on more than 40 accounts in one request",
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
marker!(BlockSignIn);
marker!(SetNeverExpires);
marker!(ReadAudit);
marker!(ManageExpiry);
marker!(RunSweeps);
marker!(Provision);

#[cfg(test)]
mod tests {
    use super::*;

    /// `docs/roles.md`'s table of who may act on whom, read back: a changed grant must
    /// change the documentation too.
    #[test]
    fn the_documented_table_is_the_code() {
        let doc = include_str!("../../docs/roles.md");
        let (_, table) = doc
            .split_once("## The whole table")
            .expect("docs/roles.md has a section \"The whole table\"");
        let mut rows = 0;
        for line in table.lines() {
            // | action | target | global-admin | ... |
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            if cells.len() < 10 || !cells[1].starts_with('`') {
                continue;
            }
            let action = AccountAction::ALL
                .into_iter()
                .find(|a| format!("`{a:?}`") == cells[1])
                .unwrap_or_else(|| panic!("unknown action {}", cells[1]));
            let target = match cells[2] {
                "user" => Target::User,
                "self" => Target::Caller,
                "service account" => Target::ServiceAccount,
                role => Target::Admin(role.parse().expect("a role")),
            };
            for (role, cell) in Role::ALL.into_iter().zip(&cells[3..10]) {
                let documented = match *cell {
                    "yes" => true,
                    "no" => false,
                    other => panic!("cell {other:?}: write yes or no"),
                };
                assert_eq!(
                    role.may(action, target),
                    documented,
                    "docs/roles.md says {role} {} {cell} for {action:?} on {target:?}",
                    if documented { "may" } else { "may not" },
                );
            }
            rows += 1;
        }
        let targets = 3 + Role::ADMIN_ROLES.len();
        assert_eq!(
            rows,
            AccountAction::ALL.len() * targets,
            "docs/roles.md lists every action for every kind of target"
        );
    }

    #[test]
    fn nobody_acts_on_themselves_or_the_service_account_and_scim_only_provisions() {
        for role in Role::ALL {
            for action in AccountAction::ALL {
                assert!(!role.may(action, Target::Caller), "{role} on itself");
                assert!(
                    !role.may(action, Target::ServiceAccount),
                    "{role} on service"
                );
            }
        }
        for p in [
            Permission::ReadUsers,
            Permission::ResetPasswords,
            Permission::BlockSignIn,
            Permission::SetNeverExpires,
            Permission::ReadAudit,
            Permission::ManageExpiry,
            Permission::RunSweeps,
            Permission::Bulk,
        ] {
            assert!(!Role::Scim.allows(p), "scim tokens are provisioning-only");
            assert!(Role::GlobalAdmin.allows(p));
        }
        for role in Role::ADMIN_ROLES {
            assert!(!role.allows(Permission::Provision), "{role} provisions");
        }
        assert!(Role::Scim.allows(Permission::Provision));
    }

    #[test]
    fn a_role_never_reaches_a_more_powerful_one_except_the_top_two() {
        for actor in Role::ADMIN_ROLES {
            for held in Role::ADMIN_ROLES {
                let reaches = actor.may(AccountAction::ResetPassword, Target::Admin(held));
                if reaches && held.rank() < actor.rank() {
                    assert!(
                        actor == Role::PrivilegedAuthenticationAdmin && held == Role::GlobalAdmin,
                        "{actor} reaches the more powerful {held}"
                    );
                }
            }
        }
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
