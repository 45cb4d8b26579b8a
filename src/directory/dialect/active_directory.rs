//! Active Directory (Windows Server, and Samba's AD domain controller).
//!
//! - Password: `replace: unicodePwd` with the password in double quotes, UTF-16LE, over
//!   an encrypted connection (AD refuses it otherwise). There is no Password Modify and
//!   no Password Policy control: refusals are result 19 with a diagnostic text
//!   (`0000052D: Constraint violation - check_password_restrictions: ...`) that
//!   [`refusal`] reads.
//! - Must change: `pwdLastSet: 0`; cleared with `pwdLastSet: -1` (which AD turns into
//!   "now", so it is written only when the flag is set, never to an ordinary password).
//!   An administrator's reset sets `pwdLastSet` to now: a reset that requires a change
//!   is one modify with both.
//! - When the password changed: `pwdLastSet` (a FILETIME: 100 ns ticks since 1601).
//! - Block: `userAccountControl` ACCOUNTDISABLE (0x2), read, changed and written back.
//!   Lockout: `msDS-User-Account-Control-Computed` LOCKOUT (0x10), or a non-zero
//!   `lockoutTime`; unlocking writes `lockoutTime: 0`.
//! - Never expires: `userAccountControl` DONT_EXPIRE_PASSWORD (0x10000), a flag on the
//!   account rather than a policy.
//! - Policies: the domain object's `maxPwdAge` (negative ticks) or a fine-grained
//!   password settings object's `msDS-MaximumPasswordAge` (a user's
//!   `msDS-ResultantPSO`).
//! - Versions: `uSNChanged`; ids: `objectGUID`; no Assertion control.

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ldap3::{Ldap, Mod};

use super::{
    AttrLookup, Attrs, BindRefusal, Dialect, DirectoryKind, EntryFacts, Lockout, PasswordState,
    StateTest, read_base,
};
use crate::directory::error::{DirectoryError, Failure, PolicyRejection};
use crate::directory::gentime;
use crate::types::Secret;

const UNICODE_PWD: &str = "unicodePwd";
const PWD_LAST_SET: &str = "pwdLastSet";
const ACCOUNT_CONTROL: &str = "userAccountControl";
const COMPUTED_CONTROL: &str = "msDS-User-Account-Control-Computed";
const LOCKOUT_TIME: &str = "lockoutTime";
const RESULTANT_PSO: &str = "msDS-ResultantPSO";
const MAX_PWD_AGE: &str = "maxPwdAge";
const PSO_MAX_AGE: &str = "msDS-MaximumPasswordAge";
const OBJECT_GUID: &str = "objectGUID";
const WHEN_CREATED: &str = "whenCreated";
const USN_CHANGED: &str = "uSNChanged";

/// userAccountControl bits.
const ACCOUNTDISABLE: u64 = 0x2;
const LOCKOUT: u64 = 0x10;
const DONT_EXPIRE_PASSWORD: u64 = 0x10000;
/// The matching rule for "all these bits are set" (LDAP_MATCHING_RULE_BIT_AND).
const BIT_AND: &str = "1.2.840.113556.1.4.803";
/// FILETIME ticks (100 ns) between 1601-01-01 and 1970-01-01.
const UNIX_EPOCH_TICKS: i64 = 116_444_736_000_000_000;
const TICKS_PER_SECOND: i64 = 10_000_000;

#[derive(Debug)]
pub(crate) struct ActiveDirectory;

/// A FILETIME as a time; `None` for 0 (never set, or must change) and out-of-range values.
pub(crate) fn filetime(value: &str) -> Option<DateTime<Utc>> {
    let ticks: i64 = value.trim().parse().ok()?;
    if ticks <= 0 || ticks == i64::MAX {
        return None;
    }
    let since_epoch = ticks.checked_sub(UNIX_EPOCH_TICKS)?;
    DateTime::from_timestamp(
        since_epoch.div_euclid(TICKS_PER_SECOND),
        (since_epoch.rem_euclid(TICKS_PER_SECOND) * 100) as u32,
    )
}

/// A maximum password age as AD keeps it (negative ticks) in seconds; `None` when
/// passwords never expire (0, or the most negative value).
pub(crate) fn max_age_seconds(value: &str) -> Result<Option<u64>, String> {
    let ticks: i64 = value
        .trim()
        .parse()
        .map_err(|_| format!("is not a number of 100 ns ticks ({value:?})"))?;
    if ticks == 0 || ticks == i64::MIN {
        return Ok(None);
    }
    Ok(Some(ticks.unsigned_abs() / TICKS_PER_SECOND as u64))
}

/// The password as `unicodePwd` takes it: in double quotes, UTF-16LE.
pub(crate) fn unicode_pwd(password: &str) -> Vec<u8> {
    format!("\"{password}\"")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect()
}

/// The reason a password write was refused, from AD's diagnostic text: `0000052D` (the
/// password restrictions: too short, complexity, history) with Samba's or Windows'
/// wording after it.
pub(crate) fn refusal(text: &str) -> Option<PolicyRejection> {
    let lower = text.to_ascii_lowercase();
    if !lower.starts_with("0000052d") {
        return None;
    }
    Some(if lower.contains("too short") {
        PolicyRejection::TooShort
    } else if lower.contains("history") || lower.contains("previous password") {
        PolicyRejection::InHistory
    } else if lower.contains("too young") || lower.contains("minimum password age") {
        PolicyRejection::TooYoung
    } else if lower.contains("complexity") || lower.contains("too simple") {
        PolicyRejection::QualityRule("the domain's complexity rules".into())
    } else {
        PolicyRejection::InsufficientQuality
    })
}

fn number(attrs: &dyn AttrLookup, name: &str) -> u64 {
    attrs
        .first_value(name)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map_or(0, |v| v as u64)
}

#[async_trait::async_trait]
impl Dialect for ActiveDirectory {
    fn kind(&self) -> DirectoryKind {
        DirectoryKind::ActiveDirectory
    }

    fn state_attributes(&self) -> &'static [&'static str] {
        &[
            PWD_LAST_SET,
            ACCOUNT_CONTROL,
            COMPUTED_CONTROL,
            LOCKOUT_TIME,
            RESULTANT_PSO,
        ]
    }

    fn password_state(&self, _dn: &str, attrs: &dyn AttrLookup) -> PasswordState {
        let control = number(attrs, ACCOUNT_CONTROL);
        let computed = number(attrs, COMPUTED_CONTROL);
        let blocked = control & ACCOUNTDISABLE != 0;
        PasswordState {
            must_change: attrs.first_value(PWD_LAST_SET).map(str::trim) == Some("0"),
            changed_at: attrs.first_value(PWD_LAST_SET).and_then(filetime),
            locked: blocked || computed & LOCKOUT != 0,
            blocked,
            policy_dn: attrs
                .first_value(RESULTANT_PSO)
                .filter(|v| !v.trim().is_empty())
                .map(str::to_owned),
            never_expires: control & DONT_EXPIRE_PASSWORD != 0,
        }
    }

    fn state_filter(&self, test: StateTest) -> String {
        let disabled = format!("({ACCOUNT_CONTROL}:{BIT_AND}:={ACCOUNTDISABLE})");
        match test {
            StateTest::Blocked(true) => disabled,
            StateTest::Blocked(false) => format!("(!{disabled})"),
            StateTest::MustChange(true) => format!("({PWD_LAST_SET}=0)"),
            StateTest::MustChange(false) => format!("(!({PWD_LAST_SET}=0))"),
        }
    }

    fn changed_at_attribute(&self) -> &'static str {
        PWD_LAST_SET
    }

    fn changed_at_is_generalized_time(&self) -> bool {
        false
    }

    fn id_attribute(&self) -> &'static str {
        OBJECT_GUID
    }

    fn dn_attribute(&self) -> &'static str {
        "distinguishedName"
    }

    fn user_naming_attribute(&self) -> Option<&'static str> {
        Some("cn")
    }

    /// `sAMAccountName` holds none of `"/\[]:;|=,+*?<>` (Windows refuses them; Samba
    /// stores them, and Windows clients then cannot sign in); a `userPrincipalName` has
    /// the form name@suffix. (Windows also limits `sAMAccountName` to 20 characters and
    /// Samba does not: that is left to the server, since identity providers' user names
    /// are mostly longer and a Samba domain takes them.)
    fn check_user_name(&self, attribute: &str, value: &str) -> Result<(), String> {
        if attribute.eq_ignore_ascii_case("sAMAccountName")
            && let Some(c) = value.chars().find(|c| "\"/\\[]:;|=,+*?<>".contains(*c))
        {
            return Err(format!(
                "Active Directory's sAMAccountName may not contain `{c}`; send a userName \
                 without any of \" / \\ [ ] : ; | = , + * ? < >"
            ));
        }
        if attribute.eq_ignore_ascii_case("userPrincipalName")
            && !value
                .split_once('@')
                .is_some_and(|(name, suffix)| !name.is_empty() && !suffix.is_empty())
        {
            return Err(
                "the user name goes to userPrincipalName, which has the form name@suffix \
                 (ada@example.org)"
                    .into(),
            );
        }
        Ok(())
    }

    fn groups_may_be_empty(&self) -> bool {
        true
    }

    fn new_entry_state(&self) -> PasswordState {
        // ACCOUNTDISABLE until enabled (userAccountControl 546).
        PasswordState {
            blocked: true,
            locked: true,
            ..PasswordState::default()
        }
    }

    fn version_attribute(&self) -> &'static str {
        USN_CHANGED
    }

    fn supports_assertions(&self) -> bool {
        false
    }

    fn entry_attributes(&self) -> &'static [&'static str] {
        &[OBJECT_GUID, WHEN_CREATED]
    }

    fn entry_facts(&self, _dn: &str, attrs: &Attrs) -> EntryFacts {
        EntryFacts {
            // Rendered as text when the entry was read (see `Attrs::of`).
            uuid: attrs.first(OBJECT_GUID).map(str::to_owned),
            created_at: attrs.first(WHEN_CREATED).and_then(gentime::parse),
        }
    }

    fn max_policy_age_limit(&self) -> u64 {
        // About 10,000 days: AD's own limit for maxPwdAge is 999 days in the tools, but
        // the attribute holds any negative 64-bit count of ticks.
        (i64::MAX / TICKS_PER_SECOND) as u64
    }

    async fn policy_max_age(
        &self,
        ldap: &mut Ldap,
        policy_dn: &str,
        timeout: Duration,
    ) -> Result<Option<u64>, Failure> {
        let attrs = read_base(ldap, policy_dn, &[MAX_PWD_AGE, PSO_MAX_AGE], timeout).await?;
        let Some(value) = attrs
            .first(PSO_MAX_AGE)
            .or_else(|| attrs.first(MAX_PWD_AGE))
        else {
            return Err(Failure::Mapped(DirectoryError::Config(format!(
                "{policy_dn} is neither the domain (maxPwdAge) nor a password settings \
                 object (msDS-MaximumPasswordAge), or the service account cannot read it"
            ))));
        };
        max_age_seconds(value).map_err(|why| {
            Failure::Mapped(DirectoryError::Protocol(format!(
                "the maximum password age of {policy_dn} {why}"
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
        let attrs = read_base(ldap, policy_dn, &[PSO_MAX_AGE], timeout).await?;
        let attribute = if attrs.first(PSO_MAX_AGE).is_some() {
            PSO_MAX_AGE
        } else {
            MAX_PWD_AGE
        };
        let ticks = match max_age_secs {
            // "Never": the most negative value, as the AD tools write it.
            None => i64::MIN,
            Some(secs) => -(secs.min(i64::MAX as u64 / TICKS_PER_SECOND as u64) as i64)
                .saturating_mul(TICKS_PER_SECOND),
        };
        modify(
            ldap,
            policy_dn,
            vec![replace(attribute, ticks.to_string().into_bytes())],
            timeout,
        )
        .await
    }

    async fn set_user_policy(
        &self,
        _ldap: &mut Ldap,
        _dn: &str,
        _policy_dn: Option<&str>,
        _timeout: Duration,
    ) -> Result<(), Failure> {
        // Fine-grained policies apply to groups (msDS-PSOAppliesTo), set by the
        // domain's administrators; "never expires" is a flag here.
        Err(Failure::Mapped(DirectoryError::Unsupported(
            "Active Directory applies password settings objects to groups; lockbridge \
             does not point users at them"
                .into(),
        )))
    }

    fn never_expires_is_a_flag(&self) -> bool {
        true
    }

    fn bind_refusal(&self, rc: u32, text: &str) -> Option<BindRefusal> {
        if rc != 49 {
            return None;
        }
        // "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error,
        // data 773, v3839"
        // The code is the word after the first `data `, up to `,` or a space (not up to a
        // second `data `, which `split("data ")` would also cut at).
        let code = text.split_once("data ")?.1.split([',', ' ']).next()?;
        Some(match code.to_ascii_lowercase().as_str() {
            "773" => BindRefusal::MustChange,
            "532" => BindRefusal::Expired,
            "775" => BindRefusal::Locked,
            "533" | "701" => BindRefusal::Disabled,
            _ => BindRefusal::WrongPassword,
        })
    }

    async fn set_never_expires_flag(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        never: bool,
        timeout: Duration,
    ) -> Result<(), Failure> {
        set_control_bit(ldap, dn, DONT_EXPIRE_PASSWORD, never, timeout).await
    }

    async fn set_blocked(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        blocked: bool,
        timeout: Duration,
    ) -> Result<(), Failure> {
        set_control_bit(ldap, dn, ACCOUNTDISABLE, blocked, timeout).await
    }

    async fn clear_lockout(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        timeout: Duration,
    ) -> Result<Lockout, Failure> {
        let attrs = read_base(
            ldap,
            dn,
            &[ACCOUNT_CONTROL, COMPUTED_CONTROL, LOCKOUT_TIME],
            timeout,
        )
        .await?;
        if number(&attrs, ACCOUNT_CONTROL) & ACCOUNTDISABLE != 0 {
            return Ok(Lockout::Blocked);
        }
        let locked_out = number(&attrs, COMPUTED_CONTROL) & LOCKOUT != 0;
        // A lockout that ran out keeps its lockoutTime until the next good bind.
        if number(&attrs, LOCKOUT_TIME) == 0 {
            return Ok(Lockout::None);
        }
        modify(
            ldap,
            dn,
            vec![replace(LOCKOUT_TIME, b"0".to_vec())],
            timeout,
        )
        .await?;
        Ok(if locked_out {
            Lockout::Cleared
        } else {
            Lockout::None
        })
    }

    async fn set_password_and_must_change(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure> {
        write_password(ldap, dn, password, true, timeout).await
    }

    async fn stored_password_is_hashed(
        &self,
        _ldap: &mut Ldap,
        _dn: &str,
        _timeout: Duration,
    ) -> Result<Option<bool>, Failure> {
        // AD never stores or returns a clear-text unicodePwd.
        Ok(Some(true))
    }

    async fn set_password(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure> {
        write_password(ldap, dn, password, false, timeout).await
    }

    /// A user's own change is `delete: unicodePwd` (the old one) + `add: unicodePwd` (the
    /// new one) in one modify, as the user: AD then applies the domain's or the PSO's
    /// history, age and complexity as to any user. A wrong old password is `00000056`.
    async fn change_own_password(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        old_password: &Secret,
        new_password: &Secret,
        timeout: Duration,
    ) -> Result<(), Failure> {
        let changes = vec![
            Mod::Delete(
                UNICODE_PWD.as_bytes().to_vec(),
                HashSet::from([unicode_pwd(old_password.expose())]),
            ),
            Mod::Add(
                UNICODE_PWD.as_bytes().to_vec(),
                HashSet::from([unicode_pwd(new_password.expose())]),
            ),
        ];
        password_modify(ldap, dn, changes, timeout).await
    }

    async fn set_must_change(
        &self,
        ldap: &mut Ldap,
        dn: &str,
        must_change: bool,
        timeout: Duration,
    ) -> Result<(), Failure> {
        if !must_change {
            // -1 means "now": only a password that must change is given a fresh age.
            let attrs = read_base(ldap, dn, &[PWD_LAST_SET], timeout).await?;
            if attrs.first(PWD_LAST_SET).map(str::trim) != Some("0") {
                return Ok(());
            }
        }
        let value: &[u8] = if must_change { b"0" } else { b"-1" };
        modify(
            ldap,
            dn,
            vec![replace(PWD_LAST_SET, value.to_vec())],
            timeout,
        )
        .await
    }
}

/// `replace: unicodePwd` (and, for a reset that requires a change, `pwdLastSet: 0` in the
/// same modify: an administrator's reset sets pwdLastSet to now).
async fn write_password(
    ldap: &mut Ldap,
    dn: &str,
    password: &Secret,
    must_change: bool,
    timeout: Duration,
) -> Result<(), Failure> {
    let mut changes = vec![replace(UNICODE_PWD, unicode_pwd(password.expose()))];
    if must_change {
        changes.push(replace(PWD_LAST_SET, b"0".to_vec()));
    }
    password_modify(ldap, dn, changes, timeout).await
}

/// A modify that writes `unicodePwd`, with AD's refusals read from its text: `0000052D`
/// and its reason (the password's rules), `00000056` (a wrong old password, on a user's
/// own change).
async fn password_modify(
    ldap: &mut Ldap,
    dn: &str,
    changes: Vec<Mod<Vec<u8>>>,
    timeout: Duration,
) -> Result<(), Failure> {
    let result = ldap.with_timeout(timeout).modify(dn, changes).await?;
    if result.rc == 0 {
        return Ok(());
    }
    match modify_refusal(&result.text) {
        Some(e) => Err(Failure::Mapped(e)),
        None => Err(Failure::from_result(&result)),
    }
}

/// What a refused `unicodePwd` write's diagnostic text says: `00000056` (a wrong old
/// password, on a user's own change) or `0000052D` ([`refusal`]); `None` for anything
/// else, which the common mapping reads from the result code.
pub(crate) fn modify_refusal(text: &str) -> Option<DirectoryError> {
    if text.contains("00000056") {
        return Some(DirectoryError::InvalidCredentials);
    }
    refusal(text).map(DirectoryError::PasswordRejected)
}

/// `replace: <attribute>` with one value.
fn replace(attribute: &str, value: Vec<u8>) -> Mod<Vec<u8>> {
    Mod::Replace(attribute.as_bytes().to_vec(), HashSet::from([value]))
}

/// Reads `userAccountControl`, sets or clears `bit`, and writes it back when it changed.
async fn set_control_bit(
    ldap: &mut Ldap,
    dn: &str,
    bit: u64,
    on: bool,
    timeout: Duration,
) -> Result<(), Failure> {
    let attrs = read_base(ldap, dn, &[ACCOUNT_CONTROL], timeout).await?;
    let Some(current) = attrs
        .first(ACCOUNT_CONTROL)
        .and_then(|v| v.trim().parse::<i64>().ok())
        .map(|v| v as u64)
    else {
        return Err(Failure::Mapped(DirectoryError::Protocol(format!(
            "{dn} has no readable {ACCOUNT_CONTROL}"
        ))));
    };
    let wanted = if on { current | bit } else { current & !bit };
    if wanted == current {
        return Ok(());
    }
    // userAccountControl is a signed 32-bit INTEGER.
    let value = (wanted as u32 as i32).to_string();
    modify(
        ldap,
        dn,
        vec![replace(ACCOUNT_CONTROL, value.into_bytes())],
        timeout,
    )
    .await
}

async fn modify(
    ldap: &mut Ldap,
    dn: &str,
    changes: Vec<Mod<Vec<u8>>>,
    timeout: Duration,
) -> Result<(), Failure> {
    let result = ldap.with_timeout(timeout).modify(dn, changes).await?;
    match result.rc {
        0 => Ok(()),
        _ => Err(Failure::from_result(&result)),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    use super::super::tests::attrs;

    #[test]
    fn user_names_that_active_directory_would_refuse_are_refused_with_the_reason() {
        let ad = ActiveDirectory;
        assert!(ad.check_user_name("sAMAccountName", "ada.lovelace").is_ok());
        assert!(
            ad.check_user_name("sAMAccountName", "ada@example.org")
                .is_ok()
        );
        assert!(
            ad.check_user_name("sAMAccountName", "6f1c2a9e-3b4d-4c5e-8f70-123456789abc")
                .is_ok(),
            "long names are the server's to refuse (Samba takes them)"
        );
        let bad = ad
            .check_user_name("sAMAccountName", "ada[1]")
            .expect_err("forbidden character");
        assert!(bad.contains("`[`"), "{bad}");
        assert!(
            ad.check_user_name("userPrincipalName", "ada@example.org")
                .is_ok()
        );
        assert!(ad.check_user_name("userPrincipalName", "ada").is_err());
        assert!(
            ad.check_user_name("cn", "a very long common name indeed, and more")
                .is_ok()
        );
    }

    #[test]
    fn filetimes() {
        // 2024-01-01T00:00:00Z.
        assert_eq!(
            filetime("133485408000000000").map(|t| t.to_rfc3339()),
            Some("2024-01-01T00:00:00+00:00".into())
        );
        for unset in ["0", "-1", "9223372036854775807", "garbage", ""] {
            assert_eq!(filetime(unset), None, "{unset}");
        }
    }

    #[test]
    fn maximum_ages() {
        // 90 days, as the domain object keeps it.
        assert_eq!(max_age_seconds("-77760000000000"), Ok(Some(7_776_000)));
        assert_eq!(max_age_seconds("0"), Ok(None));
        assert_eq!(max_age_seconds("-9223372036854775808"), Ok(None));
        assert!(max_age_seconds("ninety days").is_err());
    }

    #[test]
    fn unicode_pwd_is_quoted_utf16le() {
        assert_eq!(unicode_pwd("é"), vec![b'"', 0, 0xe9, 0, b'"', 0]);
        // An emoji is a surrogate pair.
        assert_eq!(unicode_pwd("🔑").len(), 2 + 4 + 2);
    }

    #[test]
    fn refusals_read_the_diagnostic() {
        let samba = "0000052D: Constraint violation - check_password_restrictions: the \
                     password is too short. It should be equal or longer than 8 characters!";
        assert_eq!(refusal(samba), Some(PolicyRejection::TooShort));
        assert_eq!(
            refusal(
                "0000052D: Constraint violation - check_password_restrictions: the password \
                 was already used (in history)!"
            ),
            Some(PolicyRejection::InHistory)
        );
        assert_eq!(
            refusal(
                "0000052D: Constraint violation - check_password_restrictions: the password \
                 does not meet the complexity criteria!"
            ),
            Some(PolicyRejection::QualityRule(
                "the domain's complexity rules".into()
            ))
        );
        // Windows says only this much.
        assert_eq!(
            refusal("0000052D: SvcErr: DSID-031A1248, problem 5003 (WILL_NOT_PERFORM), data 0"),
            Some(PolicyRejection::InsufficientQuality)
        );
        assert_eq!(refusal("00002098: insufficient access"), None);
    }

    #[test]
    fn bind_refusals_read_the_code_after_data() {
        let ad = |text: &str| ActiveDirectory.bind_refusal(49, text);
        let text = |code: &str| {
            format!(
                "80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, \
                 data {code}, v3839"
            )
        };
        assert_eq!(ad(&text("773")), Some(BindRefusal::MustChange));
        assert_eq!(ad(&text("532")), Some(BindRefusal::Expired));
        assert_eq!(ad(&text("775")), Some(BindRefusal::Locked));
        assert_eq!(ad(&text("533")), Some(BindRefusal::Disabled));
        assert_eq!(ad(&text("701")), Some(BindRefusal::Disabled));
        assert_eq!(ad(&text("52e")), Some(BindRefusal::WrongPassword));
        assert_eq!(ActiveDirectory.bind_refusal(50, &text("775")), None);
        assert_eq!(ad("80090308: LdapErr: DSID-0C09042A"), None);
        // Found by fuzzing (fuzz/fuzz_targets/ad_errors.rs): the code ends at the separator,
        // not at a second "data " (this one is "775data", which AD does not define).
        assert_eq!(
            ad("80090308: LdapErr: comment: x, data 775data  0d"),
            Some(BindRefusal::WrongPassword)
        );
    }

    #[test]
    fn write_refusals_tell_a_wrong_old_password_from_the_rules() {
        assert!(matches!(
            modify_refusal(
                "00000056: Constraint violation - check_password_restrictions: the old \
                 password specified doesn't match!"
            ),
            Some(DirectoryError::InvalidCredentials)
        ));
        assert!(matches!(
            modify_refusal("0000052d: Constraint violation - the password is too short"),
            Some(DirectoryError::PasswordRejected(PolicyRejection::TooShort))
        ));
        // Anything else is left to the result code.
        assert!(modify_refusal("00002098: SecErr: DSID-03150F94, problem 4003").is_none());
        assert!(modify_refusal("").is_none());
    }

    #[test]
    fn reads_password_state() {
        let s = ActiveDirectory.password_state(
            "CN=a",
            &attrs(&[
                ("pwdLastSet", "0"),
                ("userAccountControl", "66050"),
                ("msDS-User-Account-Control-Computed", "0"),
            ]),
        );
        // 66050 = 0x10202: normal account, disabled, password never expires.
        assert!(s.must_change && s.blocked && s.locked && s.never_expires);
        assert_eq!(s.changed_at, None);
        let s = ActiveDirectory.password_state(
            "CN=a",
            &attrs(&[
                ("pwdLastSet", "133485408000000000"),
                ("userAccountControl", "512"),
                ("msDS-User-Account-Control-Computed", "16"),
            ]),
        );
        assert!(!s.must_change && !s.blocked && s.locked && !s.never_expires);
        assert!(s.changed_at.is_some());
    }

    #[test]
    fn filters_use_the_bit_rule() {
        assert_eq!(
            ActiveDirectory.state_filter(StateTest::Blocked(true)),
            "(userAccountControl:1.2.840.113556.1.4.803:=2)"
        );
        assert_eq!(
            ActiveDirectory.state_filter(StateTest::MustChange(false)),
            "(!(pwdLastSet=0))"
        );
    }

    proptest! {
        /// Any instant since 1970 survives the trip through a FILETIME.
        #[test]
        fn filetime_round_trip(secs in 0i64..4_000_000_000, hundreds in 0i64..10_000_000) {
            let ticks = UNIX_EPOCH_TICKS + secs * TICKS_PER_SECOND + hundreds;
            let t = filetime(&ticks.to_string()).expect("a time");
            prop_assert_eq!(t.timestamp(), secs);
            prop_assert_eq!(i64::from(t.timestamp_subsec_nanos()), hundreds * 100);
        }

        /// The refusal reader never panics, whatever the server says.
        #[test]
        fn refusal_never_panics(text in ".{0,200}") {
            let _ = refusal(&text);
        }
    }
}
