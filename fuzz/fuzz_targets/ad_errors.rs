//! Active Directory's diagnostic texts: a bind's `data 773/532/775/...` and a refused
//! `unicodePwd` write's `0000052D` (with its reason) and `00000056`.
//!
//! - Any bytes (as a result code and lossy UTF-8 text): no panic; only rc 49 (invalid
//!   credentials) reads a bind refusal; a write's refusal is `00000056` → invalid
//!   credentials, else `0000052D` → a password rejection, else nothing.
//! - Messages built the way AD and Samba write them, around fuzzer-chosen text, read as
//!   the codes and reasons they were built with.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use lockbridge::directory::fuzzing::{
    BindRefusal, DirectoryError, PolicyRejection, active_directory_bind_refusal,
    active_directory_modify_refusal,
};

/// AD's bind `data` codes (hex, as AD prints them) and what each means.
const BIND_CODES: &[(&str, Option<BindRefusal>)] = &[
    ("773", Some(BindRefusal::MustChange)),
    ("532", Some(BindRefusal::Expired)),
    ("775", Some(BindRefusal::Locked)),
    ("533", Some(BindRefusal::Disabled)),
    ("701", Some(BindRefusal::Disabled)),
    ("52e", Some(BindRefusal::WrongPassword)),
    ("525", Some(BindRefusal::WrongPassword)),
    ("530", Some(BindRefusal::WrongPassword)),
];

/// The reasons after `0000052D` (Samba's and Windows' wording) and what each means.
const REASONS: &[(&str, PolicyRejection)] = &[
    ("too short", PolicyRejection::TooShort),
    ("history", PolicyRejection::InHistory),
    ("previous password", PolicyRejection::InHistory),
    ("too young", PolicyRejection::TooYoung),
    ("minimum password age", PolicyRejection::TooYoung),
    ("complexity", PolicyRejection::QualityRule(String::new())),
    ("too simple", PolicyRejection::QualityRule(String::new())),
];

fuzz_target!(|data: &[u8]| {
    any_text(data);
    let _ = bind_messages(&mut Unstructured::new(data));
    let _ = modify_messages(&mut Unstructured::new(data));
});

fn any_text(data: &[u8]) {
    let (rc, text) = match data.split_first_chunk::<4>() {
        Some((rc, rest)) => (u32::from_le_bytes(*rc) % 128, String::from_utf8_lossy(rest)),
        None => (49, String::from_utf8_lossy(data)),
    };
    let bind = active_directory_bind_refusal(rc, &text);
    if rc != 49 {
        assert_eq!(bind, None, "rc {rc}");
    }
    if !text.contains("data ") {
        assert_eq!(bind, None, "{text:?}");
    }
    match active_directory_modify_refusal(&text) {
        Some(DirectoryError::InvalidCredentials) => assert!(text.contains("00000056")),
        Some(DirectoryError::PasswordRejected(_)) => {
            assert!(
                !text.contains("00000056") && starts_with_052d(&text),
                "{text:?}"
            )
        }
        Some(other) => panic!("{text:?} read as {other:?}"),
        None => assert!(!text.contains("00000056") && !starts_with_052d(&text)),
    }
}

fn starts_with_052d(text: &str) -> bool {
    text.get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("0000052d"))
}

/// `80090308: LdapErr: DSID-0C09042A, comment: AcceptSecurityContext error, data 773, v3839`
fn bind_messages(u: &mut Unstructured) -> Result<()> {
    let comment: String = u.arbitrary()?;
    if comment.contains("data ") {
        return Ok(());
    }
    let (code, want) = if u.ratio(3, 4)? {
        let &(code, want) = u.choose(BIND_CODES)?;
        (cased(code, u)?, want)
    } else {
        // Any other code (no separator in it) is a wrong password.
        let code: String = u.arbitrary()?;
        if code.contains([',', ' ']) || BIND_CODES.iter().any(|(c, _)| code.eq_ignore_ascii_case(c))
        {
            return Ok(());
        }
        (code, Some(BindRefusal::WrongPassword))
    };
    let tail: String = u.arbitrary()?;
    let separator = *u.choose(&[", v", " ", ","])?;
    let text = format!(
        "80090308: LdapErr: DSID-0C09042A, comment: {comment}, data {code}{separator}{tail}"
    );
    assert_eq!(active_directory_bind_refusal(49, &text), want, "{text:?}");
    Ok(())
}

/// `0000052D: Constraint violation - check_password_restrictions: the password is too short. ...`
fn modify_messages(u: &mut Unstructured) -> Result<()> {
    let before: String = u.arbitrary()?;
    let after: String = u.arbitrary()?;
    let prefix = cased("0000052d", u)?;
    let (text, want) = if u.arbitrary()? {
        let (reason, want) = u.choose(REASONS)?;
        let reason = cased(reason, u)?;
        (
            format!("{prefix}: Constraint violation - {before}{reason}{after}"),
            want.clone(),
        )
    } else {
        // No reason named: Windows' `0000052D: SvcErr: ... data 0`.
        (
            format!("{prefix}: SvcErr: {before}{after}"),
            PolicyRejection::InsufficientQuality,
        )
    };
    // The fuzzer's text (alone, or joined to the reason) must not name another reason.
    let lower = text.to_ascii_lowercase();
    if lower.contains("00000056")
        || REASONS
            .iter()
            .any(|(r, means)| *means != want && lower.contains(r))
    {
        return Ok(());
    }
    match active_directory_modify_refusal(&text) {
        Some(DirectoryError::PasswordRejected(got)) => match (&got, &want) {
            (PolicyRejection::QualityRule(_), PolicyRejection::QualityRule(_)) => {}
            _ => assert_eq!(got, want, "{text:?}"),
        },
        other => panic!("{text:?} read as {other:?}"),
    }
    let wrong_old = format!("00000056: Constraint violation - {before}{after}");
    assert!(
        matches!(
            active_directory_modify_refusal(&wrong_old),
            Some(DirectoryError::InvalidCredentials)
        ),
        "{wrong_old:?}"
    );
    // Anything else in front is not AD's password refusal.
    let other = format!("00002098: {before}{after}");
    if !other.contains("00000056") {
        assert!(
            active_directory_modify_refusal(&other).is_none(),
            "{other:?}"
        );
    }
    Ok(())
}

/// `s` with each ASCII letter in a fuzzer-chosen case.
fn cased(s: &str, u: &mut Unstructured) -> Result<String> {
    s.chars()
        .map(|c| {
            Ok(if c.is_ascii_alphabetic() && u.arbitrary()? {
                c.to_ascii_uppercase()
            } else {
                c
            })
        })
        .collect()
}
