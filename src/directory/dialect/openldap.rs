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
//! - State: `pwdReset`, `pwdChangedTime`, `pwdAccountLockedTime` (operational; asked for
//!   by name).

use std::collections::HashSet;
use std::time::Duration;

use ldap3::exop::PasswordModify;
use ldap3::{Ldap, Mod};

use super::{Attrs, Dialect, DirectoryKind, PasswordState};
use crate::directory::error::Failure;
use crate::directory::{gentime, ppolicy};
use crate::types::Secret;

const PWD_RESET: &str = "pwdReset";
const PWD_CHANGED_TIME: &str = "pwdChangedTime";
const PWD_ACCOUNT_LOCKED_TIME: &str = "pwdAccountLockedTime";
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
        &[PWD_RESET, PWD_CHANGED_TIME, PWD_ACCOUNT_LOCKED_TIME]
    }

    fn password_state(&self, dn: &str, attrs: &Attrs) -> PasswordState {
        let changed_at = attrs.first(PWD_CHANGED_TIME).and_then(|v| {
            let t = gentime::parse(v);
            if t.is_none() {
                tracing::warn!(user.dn = dn, value = v, "unreadable pwdChangedTime ignored");
            }
            t
        });
        PasswordState {
            must_change: attrs
                .first(PWD_RESET)
                .is_some_and(|v| v.eq_ignore_ascii_case("TRUE")),
            changed_at,
            // Present = locked: either until pwdLockoutDuration runs out (the server then
            // removes it on the next bind attempt) or, with 000001010000Z, by an administrator.
            locked: attrs.first(PWD_ACCOUNT_LOCKED_TIME).is_some(),
        }
    }

    async fn set_password(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let ldap3::result::ExopResult(_value, result) = ldap
            .with_controls(ppolicy::request())
            .with_timeout(timeout)
            .extended(PasswordModify {
                user_id: Some(dn),
                old_pass: None,
                new_pass: Some(password.expose()),
            })
            .await?;
        if result.rc != 0 {
            return Err(Failure::from_result(&result));
        }
        Ok(())
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn attrs(pairs: &[(&str, &str)]) -> Attrs {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for (k, v) in pairs {
            m.entry(k.to_string()).or_default().push(v.to_string());
        }
        Attrs::new(m)
    }

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
    }
}
