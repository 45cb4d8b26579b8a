//! Who may act on whom. Every change to an account, whoever asks, passes
//! [`AccountService::authorize`]: the caller ([`Actor`]) against the target's kind
//! ([`Target`]: the caller's own account, the service account, or a user ranked by the
//! most powerful administrator role it holds) through the one table, `Role::may`.

use super::{AccountError, AccountService};
use crate::auth::{AccountAction, Role, Target};
use crate::directory::{UserEntry, dn_key, is_at_or_below, same_dn};

/// On whose authority an action is taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authority {
    /// A person (signed in) or an API token, holding these roles.
    Roles(Vec<Role>),
    /// lockbridge itself (the expiry sweep applying the organisation's policy): may act
    /// on every account but the service account.
    System,
    /// An identity provider's provisioning token (SCIM): provisioning's own rules
    /// ([`AccountService::check_provisioning_target`]), not the role table.
    Provisioning,
}

/// Who is acting, as far as account rules care.
#[derive(Debug, Clone)]
pub struct Actor {
    /// Shown in the audit log: the person's sign-in name, the API token's name, or the
    /// system task.
    pub name: String,
    /// The person's directory entry, so that their own account is recognised; `None`
    /// for API tokens and the system.
    pub dn: Option<String>,
    pub authority: Authority,
    pub request_id: Option<String>,
}

impl Actor {
    /// An authenticated caller (a signed-in person or an API token) with its roles.
    pub fn caller(principal: &crate::auth::Principal, request_id: Option<String>) -> Actor {
        Actor {
            name: principal.name.clone(),
            dn: principal.dn.clone(),
            authority: Authority::Roles(principal.roles.clone()),
            request_id,
        }
    }

    /// lockbridge itself, named `name` in the audit log.
    pub fn system(name: &str) -> Actor {
        Actor {
            name: name.to_owned(),
            dn: None,
            authority: Authority::System,
            request_id: None,
        }
    }

    /// For provisioning, only the part the target's kind decides (administrators are
    /// [`AccountService::authorize`]'s to check against the configuration).
    pub fn may(&self, action: AccountAction, target: Target) -> bool {
        match &self.authority {
            Authority::System | Authority::Provisioning => target != Target::ServiceAccount,
            Authority::Roles(roles) => roles.iter().any(|r| r.may(action, target)),
        }
    }

    /// Whether any target at all is within reach for `action` (checked before the
    /// target is looked up, so a caller without the right learns nothing about it).
    pub fn may_ever(&self, action: AccountAction) -> bool {
        match &self.authority {
            Authority::System | Authority::Provisioning => true,
            Authority::Roles(roles) => roles.iter().any(|r| r.allows(action.permission())),
        }
    }

    fn describe(&self) -> String {
        match &self.authority {
            Authority::System => "lockbridge".into(),
            Authority::Provisioning => "provisioning".into(),
            Authority::Roles(roles) if roles.is_empty() => "a caller without a role".into(),
            Authority::Roles(roles) => roles
                .iter()
                .map(|r| r.as_str())
                .collect::<Vec<_>>()
                .join(" and "),
        }
    }
}

/// The directory groups that give their members each administrator role.
#[derive(Debug, Clone, Default)]
pub struct RoleGroups {
    /// (role, group DNs) for every role people hold over the whole directory.
    pub groups: Vec<(Role, Vec<String>)>,
    /// Roles held over part of the directory only.
    pub scoped: Vec<ScopedRole>,
}

/// A role whose holders (the members of `groups`) act only on the users in `scope`, as
/// with Entra's administrative units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopedRole {
    pub role: Role,
    pub groups: Vec<String>,
    pub scope: Scope,
}

/// The users a scoped role reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The users at or below this DN.
    Subtree(String),
    /// The direct members of this group.
    GroupMembers(String),
}

impl Scope {
    fn describe(&self) -> String {
        match self {
            Scope::Subtree(dn) => format!("the users below {dn}"),
            Scope::GroupMembers(dn) => format!("the members of {dn}"),
        }
    }
}

impl RoleGroups {
    /// The most powerful role among the groups (as [`dn_key`]s) a user is in; a group
    /// that maps to no role (an administrator group outside `[roles]`) counts as
    /// global-admin: an administrator of unknown rank is ranked highest.
    fn highest(&self, member_of: &[String]) -> Option<Role> {
        if member_of.is_empty() {
            return None;
        }
        let mut best: Option<Role> = None;
        for group in member_of {
            let role = self
                .assignments()
                .find(|(_, dns, _)| dns.iter().any(|dn| dn_key(dn) == *group))
                .map(|(role, _, _)| role)
                .unwrap_or(Role::GlobalAdmin);
            if best.is_none_or(|b| role.rank() < b.rank()) {
                best = Some(role);
            }
        }
        best
    }

    /// The roles of someone in these groups (as [`dn_key`]s), most powerful first.
    pub fn roles_of(&self, member_of: &[String]) -> Vec<Role> {
        let mut roles: Vec<Role> = self
            .assignments()
            .filter(|(_, dns, _)| dns.iter().any(|dn| member_of.contains(&dn_key(dn))))
            .map(|(role, _, _)| role)
            .collect();
        roles.sort_by_key(|r| r.rank());
        roles.dedup();
        roles
    }

    /// Every (role, group DNs, scope) assignment; `None`: the whole directory.
    fn assignments(&self) -> impl Iterator<Item = (Role, &[String], Option<&Scope>)> {
        self.groups
            .iter()
            .map(|(role, dns)| (*role, dns.as_slice(), None))
            .chain(
                self.scoped
                    .iter()
                    .map(|s| (s.role, s.groups.as_slice(), Some(&s.scope))),
            )
    }

    /// Where someone in these groups (as [`dn_key`]s) holds `role`: `None` in the list
    /// means the whole directory.
    fn scopes_of(&self, member_of: &[String], role: Role) -> Vec<Option<&Scope>> {
        self.assignments()
            .filter(|(r, dns, _)| {
                *r == role && dns.iter().any(|dn| member_of.contains(&dn_key(dn)))
            })
            .map(|(_, _, scope)| scope)
            .collect()
    }
}

impl AccountService {
    /// Refuses an action the caller's roles never allow, before the target is looked up
    /// (no answer about whether it exists).
    pub fn authorize_action(
        &self,
        actor: &Actor,
        action: AccountAction,
        user_name: &str,
    ) -> Result<(), AccountError> {
        if actor.may_ever(action) {
            return Ok(());
        }
        let who: Vec<&str> = Role::ALL
            .into_iter()
            .filter(|r| r.allows(action.permission()))
            .map(Role::as_str)
            .collect();
        Err(AccountError::NotPermitted {
            message: format!(
                "{} may not {} `{user_name}` or anyone; ask someone with one of these roles: {}",
                actor.describe(),
                action.as_str(),
                who.join(", ")
            ),
        })
    }

    /// What `user` is to `actor`: their own account, the service account, an
    /// administrator (by their most powerful role), or a user.
    pub async fn target_of(&self, actor: &Actor, user: &UserEntry) -> Result<Target, AccountError> {
        if same_dn(&user.dn, &self.protection.service_dn) {
            return Ok(Target::ServiceAccount);
        }
        if actor.dn.as_deref().is_some_and(|dn| same_dn(dn, &user.dn)) {
            return Ok(Target::Caller);
        }
        let groups = self
            .directory
            .admin_groups_of(&user.dn)
            .await
            .map_err(|e| self.directory_error(e))?;
        Ok(match self.role_groups.highest(&groups) {
            Some(role) => Target::Admin(role),
            None => Target::User,
        })
    }

    /// Refuses, before anything changes, an action the caller may not take on `user`
    /// (named `user_name` in the message). The refusal names the roles that may.
    pub async fn authorize(
        &self,
        actor: &Actor,
        action: AccountAction,
        user_name: &str,
        user: &UserEntry,
    ) -> Result<(), AccountError> {
        if actor.authority == Authority::Provisioning {
            return self.check_provisioning_target(user_name, &user.dn).await;
        }
        let target = self.target_of(actor, user).await?;
        if actor.may(action, target) {
            return self
                .check_scope(actor, action, target, user_name, user)
                .await;
        }
        tracing::warn!(
            actor = %actor.name, user.dn = %user.dn, ?action, ?target,
            "refused an action outside the caller's roles"
        );
        Err(AccountError::NotPermitted {
            message: refusal(actor, action, user_name, target),
        })
    }

    /// Refuses an action the caller's roles allow on `target` when the caller, a person,
    /// no longer holds those roles (a session keeps the roles it started with; group
    /// membership is read again, at most a second old, so someone removed from a role
    /// group loses the role at once) or holds them only over a part of the directory
    /// (`[[roles.scoped]]`) that does not hold `user`.
    async fn check_scope(
        &self,
        actor: &Actor,
        action: AccountAction,
        target: Target,
        user_name: &str,
        user: &UserEntry,
    ) -> Result<(), AccountError> {
        let (Authority::Roles(roles), Some(actor_dn)) = (&actor.authority, &actor.dn) else {
            // API tokens hold their role over the whole directory until revoked.
            return Ok(());
        };
        let member_of = self
            .directory
            .admin_groups_of(actor_dn)
            .await
            .map_err(|e| self.directory_error(e))?;
        let mut outside = Vec::new();
        let mut held = false;
        for role in roles.iter().filter(|r| r.may(action, target)) {
            for scope in self.role_groups.scopes_of(&member_of, *role) {
                held = true;
                match scope {
                    None => return Ok(()),
                    Some(scope) if self.in_scope(scope, user).await? => return Ok(()),
                    Some(scope) => {
                        outside.push(format!("{} over {}", role.as_str(), scope.describe()))
                    }
                }
            }
        }
        if !held {
            tracing::warn!(actor = %actor.name, ?action, "refused: the caller's role groups changed since sign-in");
            return Err(AccountError::NotPermitted {
                message: format!(
                    "you no longer hold a role that may {} `{user_name}` (your group \
                     memberships changed since you signed in); sign in again",
                    action.as_str()
                ),
            });
        }
        tracing::warn!(actor = %actor.name, user.dn = %user.dn, ?action, "refused an action outside the caller's scope");
        Err(AccountError::NotPermitted {
            message: format!(
                "`{user_name}` is outside the part of the directory your roles cover ({}); \
                 ask an administrator whose role covers it",
                outside.join("; ")
            ),
        })
    }

    async fn in_scope(&self, scope: &Scope, user: &UserEntry) -> Result<bool, AccountError> {
        match scope {
            Scope::Subtree(base) => Ok(is_at_or_below(&user.dn, base)),
            Scope::GroupMembers(group) => self
                .directory
                .watched_group_has_member(group, &user.dn)
                .await
                .map_err(|e| self.directory_error(e)),
        }
    }

    /// The roles a person holds through the groups in `[roles]`.
    pub async fn roles_of(&self, user_dn: &str) -> Result<Vec<Role>, AccountError> {
        let groups = self
            .directory
            .admin_groups_of(user_dn)
            .await
            .map_err(|e| self.directory_error(e))?;
        Ok(self.role_groups.roles_of(&groups))
    }
}

fn refusal(actor: &Actor, action: AccountAction, user_name: &str, target: Target) -> String {
    match target {
        Target::Caller => format!(
            "you may not {} your own account through the admin API; ask another \
             administrator, or use self-service",
            action.as_str()
        ),
        Target::ServiceAccount => format!(
            "`{user_name}` is lockbridge's service account: nobody may {} it through \
             lockbridge; change it in the directory itself",
            action.as_str()
        ),
        _ => {
            let who: Vec<&str> = Role::who_may(action, target)
                .into_iter()
                .map(Role::as_str)
                .collect();
            format!(
                "{} may not {} `{user_name}` ({}); ask someone with one of these roles: {}",
                actor.describe(),
                action.as_str(),
                target.describe(),
                who.join(", ")
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups() -> RoleGroups {
        RoleGroups {
            groups: vec![
                (Role::GlobalAdmin, vec!["cn=admins,dc=x".into()]),
                (Role::HelpdeskAdmin, vec!["CN=Helpdesk, DC=x".into()]),
                (Role::PasswordAdmin, vec!["cn=pw,dc=x".into()]),
            ],
            scoped: vec![ScopedRole {
                role: Role::UserAdmin,
                groups: vec!["cn=paris-admins,dc=x".into()],
                scope: Scope::Subtree("ou=paris,dc=x".into()),
            }],
        }
    }

    #[test]
    fn a_target_ranks_by_its_most_powerful_role() {
        let g = groups();
        assert_eq!(g.highest(&[]), None);
        assert_eq!(
            g.highest(&[dn_key("cn=pw,dc=x"), dn_key("cn=helpdesk,dc=x")]),
            Some(Role::HelpdeskAdmin)
        );
        assert_eq!(
            g.highest(&[dn_key("cn=unmapped,dc=x")]),
            Some(Role::GlobalAdmin),
            "an administrator group outside [roles] ranks highest"
        );
        assert_eq!(
            g.roles_of(&[dn_key("cn=pw,dc=x"), dn_key("cn=helpdesk,dc=x")]),
            vec![Role::HelpdeskAdmin, Role::PasswordAdmin]
        );
        // A scoped role ranks its holders like the role itself, wherever it reaches.
        let paris = [dn_key("cn=paris-admins,dc=x"), dn_key("cn=pw,dc=x")];
        assert_eq!(g.highest(&paris), Some(Role::UserAdmin));
        assert_eq!(
            g.roles_of(&paris),
            vec![Role::UserAdmin, Role::PasswordAdmin]
        );
        assert_eq!(
            g.scopes_of(&paris, Role::UserAdmin),
            vec![Some(&Scope::Subtree("ou=paris,dc=x".into()))]
        );
        assert_eq!(g.scopes_of(&paris, Role::PasswordAdmin), vec![None]);
    }

    #[test]
    fn a_refusal_says_who_may() {
        let actor = Actor {
            name: "pat".into(),
            dn: None,
            authority: Authority::Roles(vec![Role::PasswordAdmin]),
            request_id: None,
        };
        let text = refusal(
            &actor,
            AccountAction::ResetPassword,
            "hal",
            Target::Admin(Role::HelpdeskAdmin),
        );
        assert!(
            text.contains("password-admin may not reset the password of `hal`"),
            "{text}"
        );
        assert!(
            text.contains(
                "global-admin, privileged-authentication-admin, user-admin, helpdesk-admin"
            ),
            "{text}"
        );
        assert!(
            refusal(&actor, AccountAction::Unlock, "pat", Target::Caller)
                .contains("your own account")
        );
        assert!(
            Actor::system("expiry-sweep")
                .may(AccountAction::BlockSignIn, Target::Admin(Role::GlobalAdmin))
        );
        assert!(
            !Actor::system("expiry-sweep").may(AccountAction::BlockSignIn, Target::ServiceAccount)
        );
    }
}

/// An administrator who proved their password.
#[derive(Debug, Clone)]
pub struct SignedIn {
    pub user: UserEntry,
    pub roles: Vec<Role>,
}

impl AccountService {
    /// An administrator signs in as themselves: their password is checked by binding as
    /// them, and their roles read from the groups in `[roles]`. An unknown name, a wrong
    /// password, a locked account and an account without a role get the same refusal
    /// (no account enumeration), and an unknown name costs a bind as well. Audited,
    /// refusals too.
    pub async fn sign_in_administrator(
        &self,
        user_name: &str,
        password: &crate::types::Secret,
        request_id: Option<String>,
    ) -> Result<SignedIn, AccountError> {
        let result = self.try_sign_in(user_name, password).await;
        let outcome = match &result {
            Ok(_) => crate::audit::Outcome::Success,
            Err(e @ (AccountError::SignInRefused | AccountError::PasswordChangeFirst)) => {
                crate::audit::Outcome::Refused(e.code())
            }
            Err(e) => crate::audit::Outcome::Failed(e.code()),
        };
        let _ = self
            .audit
            .record(crate::audit::AuditEvent {
                actor: user_name.to_owned(),
                action: crate::audit::Action::SignedIn,
                target: Some(user_name.to_owned()),
                outcome,
                detail: None,
                request_id,
            })
            .await;
        result
    }

    async fn try_sign_in(
        &self,
        user_name: &str,
        password: &crate::types::Secret,
    ) -> Result<SignedIn, AccountError> {
        let user = match self.find_user(user_name).await {
            Ok(user) => Some(user),
            Err(AccountError::UnknownUser(_)) => None,
            Err(e) => return Err(e),
        };
        // Bind even for an unknown name (as a name that cannot exist), so that the
        // answer takes as long either way.
        let dn = match &user {
            Some(u) => u.dn.clone(),
            None => format!(
                "uid=lockbridge-no-such-user-{},{}",
                uuid::Uuid::new_v4().simple(),
                self.directory.users_base()
            ),
        };
        let check = self
            .directory
            .check_user_password(&dn, password)
            .await
            .map_err(|e| self.directory_error(e))?;
        let Some(user) = user.filter(|_| check.ok) else {
            return Err(AccountError::SignInRefused);
        };
        if same_dn(&user.dn, &self.protection.service_dn) {
            return Err(AccountError::SignInRefused);
        }
        let roles = self.roles_of(&user.dn).await?;
        if roles.is_empty() {
            return Err(AccountError::SignInRefused);
        }
        if check.must_change || check.expired {
            return Err(AccountError::PasswordChangeFirst);
        }
        Ok(SignedIn { user, roles })
    }
}
