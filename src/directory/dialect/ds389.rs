//! 389 Directory Server (and Red Hat Directory Server).
//!
//! - Password: RFC 3062 Password Modify as the service account with the ppolicy request
//!   control. Not a modify of `userPassword`: 389-ds sends a modify's result before it
//!   writes the password's own state (`passwordExpirationTime`, `pwdUpdateTime`, the
//!   history), so a write that follows at once can be overwritten; Password Modify
//!   answers once all of it is written, and it is what 389-ds counts as a reset by
//!   someone else (`passwordMustChange`). Syntax and history failures are `Constraint
//!   violation` with the control's error (5, 8); Password Modify's text does not say
//!   which syntax check failed, so a refused password is tried once more as a modify,
//!   whose refusal does (and which changes nothing when refused).
//! - Must change: `passwordExpirationTime: 19700101000000Z`, the value 389-ds itself
//!   writes after a reset by someone else when the policy has `passwordMustChange: on`.
//!   Clearing it gives the password the expiry its policy gives a fresh one, as a change
//!   would (no value when the policy does not expire passwords). (389-ds also sets
//!   `pwdReset: TRUE` then, which no client may write or clear and which the bind does
//!   not consult: it is not read.) A password its owner knows (an identity provider's
//!   push) is therefore written with the flag cleared after it.
//! - When the password changed: `pwdUpdateTime`, kept when `passwordTrackUpdateTime` is
//!   on (docs/directories/389ds.md); the expiry itself is `passwordExpirationTime`.
//! - Policies: the global policy's attributes in `cn=config`, or a `passwordPolicy`
//!   entry a user's `pwdpolicysubentry` points at (with `nsslapd-pwpolicy-local: on`);
//!   `passwordExp` off or `passwordMaxAge` 0 means passwords never expire.
//! - Block: `nsAccountLock: TRUE` (account inactivation); a bind then fails with 53
//!   "Account inactivated". A lockout after failed binds is `accountUnlockTime` (with
//!   `passwordRetryCount`); unlocking deletes the one and zeroes the other.
//! - Versions: `entryusn` (the USN plugin); ids: `entryUUID` (the entryuuid plugin).

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use ldap3::{Ldap, Mod};

use super::{
    AttrLookup, Attrs, Dialect, DirectoryKind, EntryFacts, Lockout, PasswordState, StateTest,
    read_base,
};
use crate::directory::error::{DirectoryError, Failure, PolicyRejection};
use crate::directory::gentime;
use crate::directory::ppolicy::{PolicyError, PolicyResponse};
use crate::types::Secret;

const USER_PASSWORD: &str = "userPassword";
const EXPIRATION_TIME: &str = "passwordExpirationTime";
const UPDATE_TIME: &str = "pwdUpdateTime";
const ACCOUNT_LOCK: &str = "nsAccountLock";
const UNLOCK_TIME: &str = "accountUnlockTime";
const RETRY_COUNT: &str = "passwordRetryCount";
const POLICY_SUBENTRY: &str = "pwdpolicysubentry";
const MAX_AGE: &str = "passwordMaxAge";
const EXPIRES: &str = "passwordExp";
const ENTRY_UUID: &str = "entryUUID";
const ENTRY_USN: &str = "entryusn";
const CREATE_TIMESTAMP: &str = "createTimestamp";
/// The global policy lives in the server's configuration entry.
const GLOBAL_POLICY: &str = "cn=config";
/// The object class of a fine-grained (subtree or user) policy entry.
const POLICY_CLASS: &str = "passwordPolicy";
/// `passwordExpirationTime` for "must change at the next bind".
const MUST_CHANGE_TIME: &str = "19700101000000Z";
const NO_SUCH_ATTRIBUTE: u32 = 16;
const CONSTRAINT_VIOLATION: u32 = 19;
/// How 389-ds's refusals by a syntax check begin; the rule follows.
const SYNTAX_REFUSAL: &str = "invalid password syntax - ";

#[derive(Debug)]
pub(crate) struct Ds389;

/// Whether a policy's `passwordExp` says passwords expire (`on`, any case).
fn is_on(value: Option<&str>) -> bool {
    value.is_some_and(|v| v.trim().eq_ignore_ascii_case("on"))
}

#[async_trait::async_trait]
impl Dialect for Ds389 {
    fn kind(&self) -> DirectoryKind {
        DirectoryKind::Ds389
    }

    fn state_attributes(&self) -> &'static [&'static str] {
        &[
            EXPIRATION_TIME,
            UPDATE_TIME,
            ACCOUNT_LOCK,
            UNLOCK_TIME,
            POLICY_SUBENTRY,
        ]
    }

    fn password_state(&self, dn: &str, attrs: &dyn AttrLookup) -> PasswordState {
        let changed_at = attrs.first_value(UPDATE_TIME).and_then(|v| {
            let t = gentime::parse(v);
            if t.is_none() {
                tracing::warn!(user.dn = dn, value = v, "unreadable pwdUpdateTime ignored");
            }
            t
        });
        let blocked = attrs
            .first_value(ACCOUNT_LOCK)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"));
        // A lockout lasts until accountUnlockTime (19700101000000Z: until an
        // administrator unlocks, when passwordUnlock is off).
        let locked_out = attrs.first_value(UNLOCK_TIME).is_some_and(|v| {
            v == MUST_CHANGE_TIME || gentime::parse(v).is_none_or(|until| until > Utc::now())
        });
        PasswordState {
            must_change: attrs.first_value(EXPIRATION_TIME) == Some(MUST_CHANGE_TIME),
            changed_at,
            locked: blocked || locked_out,
            blocked,
            policy_dn: attrs
                .first_value(POLICY_SUBENTRY)
                .filter(|v| !v.trim().is_empty())
                .map(str::to_owned),
            // A policy with no expiry (`policy_dn`) says it on this kind.
            never_expires: false,
        }
    }

    fn state_filter(&self, test: StateTest) -> String {
        let must_change = format!("({EXPIRATION_TIME}={MUST_CHANGE_TIME})");
        match test {
            StateTest::Blocked(true) => format!("({ACCOUNT_LOCK}=true)"),
            StateTest::Blocked(false) => format!("(!({ACCOUNT_LOCK}=true))"),
            StateTest::MustChange(true) => must_change,
            StateTest::MustChange(false) => format!("(!{must_change})"),
        }
    }

    fn changed_at_attribute(&self) -> &'static str {
        UPDATE_TIME
    }

    fn version_attribute(&self) -> &'static str {
        ENTRY_USN
    }

    fn supports_assertions(&self) -> bool {
        // 389-ds 2.3 does not list 1.3.6.1.1.12 and refuses it as critical (rc 12).
        false
    }

    fn entry_attributes(&self) -> &'static [&'static str] {
        &[ENTRY_UUID, CREATE_TIMESTAMP]
    }

    fn entry_facts(&self, _dn: &str, attrs: &Attrs) -> EntryFacts {
        EntryFacts {
            uuid: attrs.first(ENTRY_UUID).map(str::to_owned),
            created_at: attrs.first(CREATE_TIMESTAMP).and_then(gentime::parse),
        }
    }

    fn max_policy_age_limit(&self) -> u64 {
        // passwordMaxAge is kept in a signed 32-bit integer of seconds as well.
        i32::MAX as u64
    }

    async fn policy_max_age(
        &self,
        ldap: &mut Ldap,
        policy_dn: &str,
        timeout: Duration,
    ) -> Result<Option<u64>, Failure> {
        let attrs = read_base(ldap, policy_dn, &[MAX_AGE, EXPIRES, "objectClass"], timeout).await?;
        let global = policy_dn.trim().eq_ignore_ascii_case(GLOBAL_POLICY);
        if !global
            && !attrs
                .all("objectClass")
                .iter()
                .any(|c| c.eq_ignore_ascii_case(POLICY_CLASS))
        {
            return Err(Failure::Mapped(DirectoryError::Config(format!(
                "{policy_dn} is not a password policy entry (it has no objectClass \
                 {POLICY_CLASS}, and it is not {GLOBAL_POLICY})"
            ))));
        }
        if !is_on(attrs.first(EXPIRES)) {
            return Ok(None);
        }
        match attrs.first(MAX_AGE).map(|v| v.trim().parse::<i64>()) {
            None => Ok(None),
            Some(Ok(n)) if n <= 0 => Ok(None),
            Some(Ok(n)) => Ok(Some(n as u64)),
            Some(Err(_)) => Err(Failure::Mapped(DirectoryError::Protocol(format!(
                "{MAX_AGE} of {policy_dn} is not a number of seconds"
            )))),
        }
    }

    async fn set_policy_max_age(
        &self,
        ldap: &mut Ldap,
        policy_dn: &str,
        max_age_secs: Option<u64>,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let changes = match max_age_secs {
            Some(secs) => vec![
                Mod::Replace(EXPIRES.to_owned(), HashSet::from(["on".to_owned()])),
                Mod::Replace(MAX_AGE.to_owned(), HashSet::from([secs.to_string()])),
            ],
            None => vec![Mod::Replace(
                EXPIRES.to_owned(),
                HashSet::from(["off".to_owned()]),
            )],
        };
        modify(ldap, policy_dn, changes, timeout, false).await
    }

    async fn set_user_policy(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        policy_dn: Option<&str>,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let change = match policy_dn {
            Some(p) => Mod::Replace(POLICY_SUBENTRY.to_owned(), HashSet::from([p.to_owned()])),
            None => Mod::Delete(POLICY_SUBENTRY.to_owned(), HashSet::new()),
        };
        modify(ldap, dn, vec![change], timeout, policy_dn.is_none()).await
    }

    async fn set_blocked(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        blocked: bool,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let change = if blocked {
            Mod::Replace(ACCOUNT_LOCK.to_owned(), HashSet::from(["true".to_owned()]))
        } else {
            Mod::Delete(ACCOUNT_LOCK.to_owned(), HashSet::new())
        };
        modify(ldap, dn, vec![change], timeout, !blocked).await
    }

    async fn clear_lockout(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        timeout: Duration,
    ) -> Result<Lockout, Failure> {
        let attrs = read_base(ldap, dn, &[ACCOUNT_LOCK, UNLOCK_TIME], timeout).await?;
        let state = self.password_state(dn, &attrs);
        if state.blocked {
            return Ok(Lockout::Blocked);
        }
        let Some(at) = attrs.first(UNLOCK_TIME).map(str::to_owned) else {
            return Ok(Lockout::None);
        };
        let locked = state.locked;
        // The value read goes (a lockout begun since is another value, and stays), and
        // the failure count starts again.
        let changes = vec![
            Mod::Delete(UNLOCK_TIME.to_owned(), HashSet::from([at])),
            Mod::Replace(RETRY_COUNT.to_owned(), HashSet::from(["0".to_owned()])),
        ];
        match modify(ldap, dn, changes, timeout, false).await {
            Ok(()) if locked => Ok(Lockout::Cleared),
            Ok(()) => Ok(Lockout::None),
            Err(Failure::Result { rc, .. }) if rc == NO_SUCH_ATTRIBUTE => Ok(Lockout::None),
            Err(e) => Err(e),
        }
    }

    async fn set_password_and_must_change(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure> {
        // Never one modify here: 389-ds writes its own passwordExpirationTime after the
        // modify's result (see `set_password`), over the one sent with it.
        self.set_password(ldap, dn, password, timeout).await?;
        self.set_must_change(ldap, dn, true, timeout).await
    }

    async fn stored_password_is_hashed(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        timeout: Duration,
    ) -> Result<Option<bool>, Failure> {
        super::stored_password_is_hashed(ldap, dn, timeout).await
    }

    async fn set_password(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure> {
        match super::password_modify(ldap, dn, None, password, timeout).await {
            Err(Failure::Result {
                rc: CONSTRAINT_VIOLATION,
                policy:
                    Some(Ok(PolicyResponse {
                        error: Some(PolicyError::InsufficientPasswordQuality),
                        ..
                    })),
                ..
            }) => explain_refusal(ldap, dn, password, timeout).await,
            other => other,
        }
    }

    async fn set_known_password(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure> {
        self.set_password(ldap, dn, password, timeout).await?;
        self.set_must_change(ldap, dn, false, timeout).await
    }

    async fn set_must_change(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        must_change: bool,
        timeout: Duration,
    ) -> Result<(), Failure> {
        if must_change {
            let change = Mod::Replace(
                EXPIRATION_TIME.to_owned(),
                HashSet::from([MUST_CHANGE_TIME.to_owned()]),
            );
            return modify(ldap, dn, vec![change], timeout, false).await;
        }
        let attrs = read_base(ldap, dn, &[EXPIRATION_TIME, POLICY_SUBENTRY], timeout).await?;
        if attrs.first(EXPIRATION_TIME) != Some(MUST_CHANGE_TIME) {
            return Ok(());
        }
        // The expiry a fresh password gets under the user's policy.
        let policy = attrs
            .first(POLICY_SUBENTRY)
            .filter(|p| !p.trim().is_empty())
            .unwrap_or(GLOBAL_POLICY)
            .to_owned();
        let change = match self.policy_max_age(ldap, &policy, timeout).await? {
            Some(secs) => {
                let at = Utc::now() + chrono::Duration::seconds(secs.min(i64::MAX as u64) as i64);
                Mod::Replace(
                    EXPIRATION_TIME.to_owned(),
                    HashSet::from([at.format("%Y%m%d%H%M%SZ").to_string()]),
                )
            }
            None => Mod::Delete(EXPIRATION_TIME.to_owned(), HashSet::new()),
        };
        modify(ldap, dn, vec![change], timeout, true).await
    }
}

/// Why Password Modify refused `password` as too weak, which it does not say ("Failed
/// to update password" whatever the check): the same change as a modify, which the
/// same checks refuse with the check's own text, and which changes nothing when it is
/// refused. (Should the policy have changed in between and the modify pass, the password
/// is set, as asked.)
async fn explain_refusal(
    ldap: &mut Ldap,
    dn: &str,
    password: &Secret,
    timeout: Duration,
) -> Result<(), Failure> {
    let result = ldap
        .with_controls(crate::directory::ppolicy::request())
        .with_timeout(timeout)
        .modify(
            dn,
            vec![Mod::Replace(
                USER_PASSWORD,
                HashSet::from([password.expose()]),
            )],
        )
        .await?;
    if result.rc != 0 {
        return Err(refine(Failure::from_result(&result)));
    }
    Ok(())
}

/// A password refusal told more precisely than the control does: 389-ds answers every
/// syntax check with "insufficient quality" and says in the text which one failed
/// ("invalid password syntax - password must be at least 10 characters long").
fn refine(failure: Failure) -> Failure {
    let rule = match &failure {
        Failure::Result { text, .. } => text
            .strip_prefix(SYNTAX_REFUSAL)
            .map(|rule| rule.trim().to_owned()),
        _ => None,
    };
    match rule {
        Some(rule) if rule.contains("must be at least") && rule.ends_with("characters long") => {
            Failure::Mapped(DirectoryError::PasswordRejected(PolicyRejection::TooShort))
        }
        Some(rule) if !rule.is_empty() => Failure::Mapped(DirectoryError::PasswordRejected(
            PolicyRejection::QualityRule(rule),
        )),
        _ => failure,
    }
}

/// One modify; `absent_is_done`: a delete of a value that is not there succeeded.
async fn modify(
    ldap: &mut Ldap,
    dn: &str,
    changes: Vec<Mod<String>>,
    timeout: Duration,
    absent_is_done: bool,
) -> Result<(), Failure> {
    let result = ldap.with_timeout(timeout).modify(dn, changes).await?;
    match result.rc {
        0 => Ok(()),
        NO_SUCH_ATTRIBUTE if absent_is_done => Ok(()),
        _ => Err(Failure::from_result(&result)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::tests::attrs;

    #[test]
    fn reads_password_state() {
        let s = Ds389.password_state(
            "uid=a",
            &attrs(&[
                ("passwordExpirationTime", "19700101000000Z"),
                ("pwdUpdateTime", "20240101000000Z"),
            ]),
        );
        assert!(s.must_change && !s.locked && !s.blocked);
        assert_eq!(
            s.changed_at.unwrap().to_rfc3339(),
            "2024-01-01T00:00:00+00:00"
        );
        let s = Ds389.password_state(
            "uid=a",
            &attrs(&[
                ("passwordExpirationTime", "20991231000000Z"),
                ("nsAccountLock", "TRUE"),
            ]),
        );
        assert!(!s.must_change && s.locked && s.blocked);
        // pwdReset stays TRUE after the flag was cleared: the expiration time decides.
        let s = Ds389.password_state(
            "uid=a",
            &attrs(&[
                ("pwdReset", "TRUE"),
                ("passwordExpirationTime", "20991231000000Z"),
            ]),
        );
        assert!(!s.must_change);
        // A lockout that ran out is over; one until 2099, or for good, is not.
        let s = Ds389.password_state("uid=a", &attrs(&[("accountUnlockTime", "20000101000000Z")]));
        assert!(!s.locked);
        for until in ["20990101000000Z", "19700101000000Z"] {
            let s = Ds389.password_state("uid=a", &attrs(&[("accountUnlockTime", until)]));
            assert!(s.locked && !s.blocked, "{until}");
        }
        let s = Ds389.password_state(
            "uid=a",
            &attrs(&[(
                "pwdpolicysubentry",
                "cn=never,ou=policies,dc=example,dc=org",
            )]),
        );
        assert_eq!(
            s.policy_dn.as_deref(),
            Some("cn=never,ou=policies,dc=example,dc=org")
        );
    }

    #[test]
    fn refusals_say_which_rule() {
        let refused = |text: &str| Failure::Result {
            rc: 19,
            text: text.into(),
            policy: None,
        };
        let rejection = |f: Failure| match f {
            Failure::Mapped(DirectoryError::PasswordRejected(r)) => Some(r),
            _ => None,
        };
        assert_eq!(
            rejection(refine(refused(
                "invalid password syntax - password must be at least 10 characters long"
            ))),
            Some(PolicyRejection::TooShort)
        );
        assert_eq!(
            rejection(refine(refused(
                "invalid password syntax - password based off of user entry"
            ))),
            Some(PolicyRejection::QualityRule(
                "password based off of user entry".into()
            ))
        );
        // Anything else is left to the control and the result code.
        assert_eq!(rejection(refine(refused("password in history"))), None);
        assert_eq!(
            rejection(refine(refused("invalid password syntax - "))),
            None
        );
    }

    #[test]
    fn filters_name_the_servers_attributes() {
        assert_eq!(
            Ds389.state_filter(StateTest::Blocked(true)),
            "(nsAccountLock=true)"
        );
        assert_eq!(
            Ds389.state_filter(StateTest::MustChange(false)),
            "(!(passwordExpirationTime=19700101000000Z))"
        );
        assert_eq!(Ds389.changed_at_attribute(), "pwdUpdateTime");
        assert_eq!(Ds389.version_attribute(), "entryusn");
    }
}
