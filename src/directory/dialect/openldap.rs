//! OpenLDAP with the ppolicy overlay.
//!
//! - Password: RFC 3062 Password Modify as the service account, with the ppolicy request
//!   control, so quality, length and history rejections come back as ppolicy errors. The
//!   server hashes the password (`ppolicy_hash_cleartext` / `olcPasswordHash`). We always
//!   send `newPasswd`, so the response value is never parsed (ldap3's parser panics when the
//!   server generated nothing).
//! - Must change: `pwdReset: TRUE`, written after the password. What ppolicy does to
//!   pwdReset on a password change depends on the writer (slapo-ppolicy, ITS#7084): a writer
//!   with `manage` on userPassword gets pwdReset set to TRUE when `pwdMustChange` is on (and
//!   also skips every quality and history check); any other writer, like lockbridge's
//!   service account, gets pwdReset *deleted*. Setting it explicitly when wanted and
//!   deleting it (tolerating noSuchAttribute) when not is right in both cases.
//! - State: `pwdReset`, `pwdChangedTime`, `pwdAccountLockedTime`, `pwdPolicySubentry`
//!   (operational; asked for by name), plus `entryUUID` and `createTimestamp` for reports.
//! - Policies: a policy is an entry with objectClass `pwdPolicy`; its `pwdMaxAge` (seconds,
//!   0 or absent = never expires) is what lockbridge reads and writes. ppolicy keeps it in
//!   a C `int` and ignores a policy whose value does not fit, so larger values are refused
//!   before they are written. A user's `pwdPolicySubentry` names the policy that applies
//!   instead of `ppolicy_default`; "never expires" is a pointer to a policy with
//!   `pwdMaxAge: 0`.
//! - Lock: `pwdAccountLockedTime: 000001010000Z`, which ppolicy reads as "locked until an
//!   administrator unlocks" (whatever `pwdLockoutDuration` says); unlocking deletes it, and
//!   ppolicy then also clears `pwdFailureTime`.

use std::collections::HashSet;
use std::time::Duration;

use ldap3::{Ldap, Mod, Scope, SearchEntry, SearchResult};

use super::{
    AttrLookup, Attrs, Dialect, DirectoryKind, EntryFacts, Lockout, PasswordState, StateTest,
};
use crate::directory::error::{DirectoryError, Failure};
use crate::directory::{gentime, ppolicy};
use crate::types::Secret;

const PWD_RESET: &str = "pwdReset";
const USER_PASSWORD: &str = "userPassword";
const PWD_CHANGED_TIME: &str = "pwdChangedTime";
const PWD_ACCOUNT_LOCKED_TIME: &str = "pwdAccountLockedTime";
const PWD_POLICY_SUBENTRY: &str = "pwdPolicySubentry";
const PWD_MAX_AGE: &str = "pwdMaxAge";
/// The objectClass of a password policy entry.
const PWD_POLICY: &str = "pwdPolicy";
const ENTRY_UUID: &str = "entryUUID";
/// Changes with every write (a replication change sequence number).
const ENTRY_CSN: &str = "entryCSN";
const CREATE_TIMESTAMP: &str = "createTimestamp";
/// `pwdAccountLockedTime` value for "locked until an administrator unlocks" (ppolicy).
const LOCKED_BY_ADMIN: &str = "000001010000Z";
/// RFC 4511 noSuchAttribute: deleting a pwdReset that is not there.
const NO_SUCH_ATTRIBUTE: u32 = 16;

#[derive(Debug)]
pub(crate) struct OpenLdap;

#[async_trait::async_trait]
impl Dialect for OpenLdap {
    fn kind(&self) -> DirectoryKind {
        DirectoryKind::OpenLdap
    }

    fn state_attributes(&self) -> &'static [&'static str] {
        &[
            PWD_RESET,
            PWD_CHANGED_TIME,
            PWD_ACCOUNT_LOCKED_TIME,
            PWD_POLICY_SUBENTRY,
        ]
    }

    fn password_state(&self, dn: &str, attrs: &dyn AttrLookup) -> PasswordState {
        let changed_at = attrs.first_value(PWD_CHANGED_TIME).and_then(|v| {
            let t = gentime::parse(v);
            if t.is_none() {
                tracing::warn!(user.dn = dn, value = v, "unreadable pwdChangedTime ignored");
            }
            t
        });
        PasswordState {
            must_change: attrs
                .first_value(PWD_RESET)
                .is_some_and(|v| v.eq_ignore_ascii_case("TRUE")),
            changed_at,
            // Present = locked: either until pwdLockoutDuration runs out (the server then
            // removes it on the next bind attempt) or, with 000001010000Z, by an administrator.
            locked: attrs.first_value(PWD_ACCOUNT_LOCKED_TIME).is_some(),
            blocked: attrs.first_value(PWD_ACCOUNT_LOCKED_TIME) == Some(LOCKED_BY_ADMIN),
            policy_dn: attrs
                .first_value(PWD_POLICY_SUBENTRY)
                .filter(|v| !v.trim().is_empty())
                .map(str::to_owned),
            // A policy with no expiry (`policy_dn`) says it on this kind.
            never_expires: false,
        }
    }

    fn state_filter(&self, test: StateTest) -> String {
        match test {
            StateTest::Blocked(true) => format!("({PWD_ACCOUNT_LOCKED_TIME}={LOCKED_BY_ADMIN})"),
            StateTest::Blocked(false) => {
                format!("(!({PWD_ACCOUNT_LOCKED_TIME}={LOCKED_BY_ADMIN}))")
            }
            StateTest::MustChange(true) => format!("({PWD_RESET}=TRUE)"),
            StateTest::MustChange(false) => format!("(!({PWD_RESET}=TRUE))"),
        }
    }

    fn changed_at_attribute(&self) -> &'static str {
        PWD_CHANGED_TIME
    }

    fn version_attribute(&self) -> &'static str {
        ENTRY_CSN
    }

    fn entry_attributes(&self) -> &'static [&'static str] {
        &[ENTRY_UUID, CREATE_TIMESTAMP]
    }

    fn entry_facts(&self, dn: &str, attrs: &Attrs) -> EntryFacts {
        EntryFacts {
            uuid: attrs.first(ENTRY_UUID).map(str::to_owned),
            created_at: attrs.first(CREATE_TIMESTAMP).and_then(|v| {
                let t = gentime::parse(v);
                if t.is_none() {
                    tracing::warn!(
                        user.dn = dn,
                        value = v,
                        "unreadable createTimestamp ignored"
                    );
                }
                t
            }),
        }
    }

    fn max_policy_age_limit(&self) -> u64 {
        i32::MAX as u64
    }

    async fn policy_max_age(
        &self,
        ldap: &mut Ldap,
        policy_dn: &str,
        timeout: Duration,
    ) -> Result<Option<u64>, Failure> {
        let SearchResult(entries, res) = ldap
            .with_timeout(timeout)
            .search(
                policy_dn,
                Scope::Base,
                "(objectClass=*)",
                vec![PWD_MAX_AGE, "objectClass"],
            )
            .await?;
        if res.rc != 0 {
            return Err(Failure::from_result(&res));
        }
        let Some(entry) = entries
            .into_iter()
            .find(|e| !e.is_ref() && !e.is_intermediate())
        else {
            return Err(Failure::no_such_object());
        };
        let attrs = Attrs::new(SearchEntry::construct(entry).attrs);
        if !attrs
            .all("objectClass")
            .iter()
            .any(|c| c.eq_ignore_ascii_case(PWD_POLICY))
        {
            return Err(Failure::Mapped(DirectoryError::Config(format!(
                "{policy_dn} is not a password policy entry (it has no objectClass {PWD_POLICY})"
            ))));
        }
        parse_max_age(attrs.first(PWD_MAX_AGE)).map_err(|why| {
            Failure::Mapped(DirectoryError::Protocol(format!(
                "{PWD_MAX_AGE} of {policy_dn} {why}"
            )))
        })
    }

    async fn set_policy_max_age(
        &self,
        ldap: &mut Ldap,
        policy_dn: &str,
        max_age_secs: Option<u64>,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let value = max_age_secs.unwrap_or(0).to_string();
        let change = Mod::Replace(PWD_MAX_AGE, HashSet::from([value.as_str()]));
        let result = ldap
            .with_timeout(timeout)
            .modify(policy_dn, vec![change])
            .await?;
        if result.rc != 0 {
            return Err(Failure::from_result(&result));
        }
        Ok(())
    }

    async fn set_user_policy(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        policy_dn: Option<&str>,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let change = match policy_dn {
            Some(p) => Mod::Replace(PWD_POLICY_SUBENTRY, HashSet::from([p])),
            None => Mod::Delete(PWD_POLICY_SUBENTRY, HashSet::new()),
        };
        let result = ldap.with_timeout(timeout).modify(dn, vec![change]).await?;
        match result.rc {
            0 => Ok(()),
            NO_SUCH_ATTRIBUTE if policy_dn.is_none() => Ok(()),
            _ => Err(Failure::from_result(&result)),
        }
    }

    async fn set_blocked(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        blocked: bool,
        timeout: Duration,
    ) -> Result<(), Failure> {
        // Unblocking deletes the administrator's value only: a lockout after failed
        // sign-ins (a real time) stays until it runs out or is cleared.
        let change = if blocked {
            Mod::Replace(PWD_ACCOUNT_LOCKED_TIME, HashSet::from([LOCKED_BY_ADMIN]))
        } else {
            Mod::Delete(PWD_ACCOUNT_LOCKED_TIME, HashSet::from([LOCKED_BY_ADMIN]))
        };
        let result = ldap.with_timeout(timeout).modify(dn, vec![change]).await?;
        match result.rc {
            0 => Ok(()),
            NO_SUCH_ATTRIBUTE if !blocked => Ok(()),
            _ => Err(Failure::from_result(&result)),
        }
    }

    async fn clear_lockout(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        timeout: Duration,
    ) -> Result<Lockout, Failure> {
        let SearchResult(entries, result) = ldap
            .with_timeout(timeout)
            .search(
                dn,
                Scope::Base,
                "(objectClass=*)",
                vec![PWD_ACCOUNT_LOCKED_TIME],
            )
            .await?;
        if result.rc != 0 {
            return Err(Failure::from_result(&result));
        }
        let Some(entry) = entries.into_iter().find(|e| !e.is_ref()) else {
            return Err(Failure::no_such_object());
        };
        let attrs = Attrs::new(SearchEntry::construct(entry).attrs);
        let locked_at = attrs.first(PWD_ACCOUNT_LOCKED_TIME).map(str::to_owned);
        if locked_at.as_deref() == Some(LOCKED_BY_ADMIN) {
            return Ok(Lockout::Blocked);
        }
        let Some(at) = locked_at.as_deref() else {
            return Ok(Lockout::None);
        };
        // The value read: if an administrator blocked the account since, this delete
        // fails (no such value) instead of lifting the block. ppolicy forgets the failed
        // sign-ins (pwdFailureTime) with it.
        let change = Mod::Delete(PWD_ACCOUNT_LOCKED_TIME, HashSet::from([at]));
        let result = ldap.with_timeout(timeout).modify(dn, vec![change]).await?;
        match result.rc {
            0 => Ok(Lockout::Cleared),
            // The lockout ran out (or was cleared) in between.
            NO_SUCH_ATTRIBUTE => Ok(Lockout::None),
            _ => Err(Failure::from_result(&result)),
        }
    }

    async fn set_password_and_must_change(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let result = ldap
            .with_controls(ppolicy::request())
            .with_timeout(timeout)
            .modify(
                dn,
                vec![
                    Mod::Replace(USER_PASSWORD, HashSet::from([password.expose()])),
                    Mod::Replace(PWD_RESET, HashSet::from(["TRUE"])),
                ],
            )
            .await?;
        if result.rc != 0 {
            return Err(Failure::from_result(&result));
        }
        Ok(())
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
        super::password_modify(ldap, dn, None, password, timeout).await
    }

    async fn set_must_change(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        must_change: bool,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let change = if must_change {
            Mod::Replace(PWD_RESET, HashSet::from(["TRUE"]))
        } else {
            Mod::Delete(PWD_RESET, HashSet::new())
        };
        let result = ldap.with_timeout(timeout).modify(dn, vec![change]).await?;
        match result.rc {
            0 => Ok(()),
            NO_SUCH_ATTRIBUTE if !must_change => Ok(()),
            _ => Err(Failure::from_result(&result)),
        }
    }
}

/// `pwdMaxAge` (INTEGER, seconds) as lockbridge uses it: absent or 0 = never expires.
/// The error completes "pwdMaxAge of <dn> ...".
fn parse_max_age(value: Option<&str>) -> Result<Option<u64>, String> {
    let Some(v) = value else {
        return Ok(None);
    };
    match v.trim().parse::<i64>() {
        Ok(0) => Ok(None),
        Ok(n) if n > 0 => Ok(Some(n as u64)),
        Ok(_) => Err(format!("is negative ({v:?})")),
        Err(_) => Err(format!("is not a number of seconds ({v:?})")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::tests::attrs;

    #[test]
    fn reads_password_state() {
        let s = OpenLdap.password_state(
            "uid=a",
            &attrs(&[
                ("pwdReset", "TRUE"),
                ("pwdChangedTime", "20240101000000Z"),
                ("pwdAccountLockedTime", "000001010000Z"),
            ]),
        );
        assert!(s.must_change && s.locked);
        assert_eq!(
            s.changed_at.unwrap().to_rfc3339(),
            "2024-01-01T00:00:00+00:00"
        );

        let s = OpenLdap.password_state("uid=a", &attrs(&[("PWDRESET", "FALSE")]));
        assert_eq!(s, PasswordState::default());

        let s = OpenLdap.password_state("uid=a", &attrs(&[("pwdChangedTime", "garbage")]));
        assert_eq!(s.changed_at, None);

        let s = OpenLdap.password_state(
            "uid=a",
            &attrs(&[(
                "PwdPolicySubentry",
                "cn=never-expires,ou=policies,dc=example,dc=org",
            )]),
        );
        assert_eq!(
            s.policy_dn.as_deref(),
            Some("cn=never-expires,ou=policies,dc=example,dc=org")
        );
        assert!(OpenLdap.state_attributes().contains(&"pwdPolicySubentry"));
    }

    #[test]
    fn reads_entry_facts() {
        let f = OpenLdap.entry_facts(
            "uid=a",
            &attrs(&[
                ("entryUUID", "8b6a0c2e-6f9e-103f-8a3c-3d1b4f0e2a11"),
                ("createTimestamp", "20240101120000Z"),
            ]),
        );
        assert_eq!(
            f.uuid.as_deref(),
            Some("8b6a0c2e-6f9e-103f-8a3c-3d1b4f0e2a11")
        );
        assert_eq!(
            f.created_at.unwrap().to_rfc3339(),
            "2024-01-01T12:00:00+00:00"
        );
        let f = OpenLdap.entry_facts("uid=a", &attrs(&[("createTimestamp", "yesterday")]));
        assert_eq!(f, EntryFacts::default());
    }

    #[test]
    fn max_ages() {
        assert_eq!(parse_max_age(None), Ok(None));
        assert_eq!(parse_max_age(Some("0")), Ok(None));
        assert_eq!(parse_max_age(Some("7776000")), Ok(Some(7_776_000)));
        assert_eq!(parse_max_age(Some(" 60 ")), Ok(Some(60)));
        assert!(parse_max_age(Some("-1")).unwrap_err().contains("negative"));
        assert!(
            parse_max_age(Some("90d"))
                .unwrap_err()
                .contains("not a number")
        );
        assert!(parse_max_age(Some("")).is_err());
        // What ppolicy can hold (a C int).
        assert_eq!(OpenLdap.max_policy_age_limit(), 2_147_483_647);
    }
}
