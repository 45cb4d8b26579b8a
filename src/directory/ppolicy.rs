//! The LDAP Password Policy control (draft-behera-ldap-password-policy-10, implemented by
//! OpenLDAP's ppolicy overlay), OID `1.3.6.1.4.1.42.2.27.8.5.1`.
//!
//! ldap3 has no implementation of this control and its `ControlParser` trait cannot fail,
//! so this module builds the request by hand and decodes the response value with a small,
//! strict, fallible BER reader. Nothing here panics on malformed input.

use std::fmt;

use ldap3::controls::{Control, RawControl};

/// OID of the request and response control.
pub const PPOLICY_OID: &str = "1.3.6.1.4.1.42.2.27.8.5.1";

/// The request control: no value, not critical (a server without ppolicy then simply
/// ignores it instead of failing the operation).
pub fn request() -> RawControl {
    RawControl {
        ctype: PPOLICY_OID.to_owned(),
        crit: false,
        val: None,
    }
}

/// Decoded `PasswordPolicyResponseValue`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PolicyResponse {
    pub warning: Option<PolicyWarning>,
    pub error: Option<PolicyError>,
}

/// `warning [0] CHOICE { timeBeforeExpiration [0] INTEGER, graceAuthNsRemaining [1] INTEGER }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyWarning {
    /// Seconds until the password expires.
    TimeBeforeExpiration(u32),
    /// Grace binds left after expiry.
    GraceAuthNsRemaining(u32),
}

/// `error [1] ENUMERATED { ... }`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PolicyError {
    PasswordExpired,
    AccountLocked,
    ChangeAfterReset,
    PasswordModNotAllowed,
    MustSupplyOldPassword,
    InsufficientPasswordQuality,
    PasswordTooShort,
    PasswordTooYoung,
    PasswordInHistory,
    PasswordTooLong,
    /// A value this draft does not define (kept so that nothing is silently dropped).
    Unknown(u32),
}

impl PolicyError {
    fn from_code(code: u32) -> Self {
        match code {
            0 => Self::PasswordExpired,
            1 => Self::AccountLocked,
            2 => Self::ChangeAfterReset,
            3 => Self::PasswordModNotAllowed,
            4 => Self::MustSupplyOldPassword,
            5 => Self::InsufficientPasswordQuality,
            6 => Self::PasswordTooShort,
            7 => Self::PasswordTooYoung,
            8 => Self::PasswordInHistory,
            9 => Self::PasswordTooLong,
            other => Self::Unknown(other),
        }
    }
}

/// Why a response value could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError(&'static str);

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed password policy response control: {}", self.0)
    }
}

impl std::error::Error for DecodeError {}

impl DecodeError {
    /// What was wrong, without naming the control (for the other controls' decoders).
    pub(super) fn reason(&self) -> &'static str {
        self.0
    }
}

/// The ppolicy response among `ctrls`, decoded; `None` when the server sent none.
pub fn find(ctrls: &[Control]) -> Option<Result<PolicyResponse, DecodeError>> {
    ctrls
        .iter()
        .find(|c| c.1.ctype == PPOLICY_OID)
        .map(|c| decode(c.1.val.as_deref().unwrap_or(&[])))
}

/// Decode a response control value. An absent or empty value decodes to "no warning, no error".
pub fn decode(val: &[u8]) -> Result<PolicyResponse, DecodeError> {
    if val.is_empty() {
        return Ok(PolicyResponse::default());
    }
    let (tag, body, rest) = tlv(val)?;
    if tag != 0x30 {
        return Err(DecodeError("expected a SEQUENCE"));
    }
    if !rest.is_empty() {
        return Err(DecodeError("trailing bytes after the SEQUENCE"));
    }
    let mut out = PolicyResponse::default();
    let mut input = body;
    while !input.is_empty() {
        let (tag, content, rest) = tlv(input)?;
        input = rest;
        match tag {
            // warning [0], constructed (CHOICE is always explicitly tagged)
            0xa0 if out.warning.is_none() && out.error.is_none() => {
                let (inner_tag, value, trailing) = tlv(content)?;
                if !trailing.is_empty() {
                    return Err(DecodeError("trailing bytes in the warning"));
                }
                let n = unsigned(value)?;
                out.warning = Some(match inner_tag {
                    0x80 => PolicyWarning::TimeBeforeExpiration(n),
                    0x81 => PolicyWarning::GraceAuthNsRemaining(n),
                    _ => return Err(DecodeError("unknown warning choice")),
                });
            }
            // error [1], primitive ENUMERATED
            0x81 if out.error.is_none() => {
                out.error = Some(PolicyError::from_code(unsigned(content)?));
            }
            _ => return Err(DecodeError("unexpected or repeated element")),
        }
    }
    Ok(out)
}

/// One tag-length-value: (tag byte, contents, remaining input). Only low tag numbers and
/// definite lengths (as BER from every known server) are accepted.
pub(super) fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), DecodeError> {
    let (&tag, rest) = input.split_first().ok_or(DecodeError("truncated tag"))?;
    if tag & 0x1f == 0x1f {
        return Err(DecodeError("high tag numbers are not used by this control"));
    }
    let (&first, mut rest) = rest.split_first().ok_or(DecodeError("truncated length"))?;
    let len = if first < 0x80 {
        first as usize
    } else if first == 0x80 {
        return Err(DecodeError("indefinite length"));
    } else {
        let n = (first & 0x7f) as usize;
        if n > 4 || rest.len() < n {
            return Err(DecodeError("bad long-form length"));
        }
        let mut len = 0usize;
        for &b in &rest[..n] {
            len = (len << 8) | b as usize;
        }
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return Err(DecodeError("length runs past the end"));
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

/// A non-negative INTEGER/ENUMERATED content that fits in u32.
pub(super) fn unsigned(content: &[u8]) -> Result<u32, DecodeError> {
    if content.is_empty() || content.len() > 5 {
        return Err(DecodeError("bad integer length"));
    }
    if content[0] & 0x80 != 0 {
        return Err(DecodeError("negative integer"));
    }
    let mut n: u64 = 0;
    for &b in content {
        n = (n << 8) | b as u64;
    }
    u32::try_from(n).map_err(|_| DecodeError("integer out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(code: u8) -> Vec<u8> {
        vec![0x30, 0x03, 0x81, 0x01, code]
    }

    #[test]
    fn decodes_every_error_code() {
        let cases = [
            (0, PolicyError::PasswordExpired),
            (1, PolicyError::AccountLocked),
            (2, PolicyError::ChangeAfterReset),
            (3, PolicyError::PasswordModNotAllowed),
            (4, PolicyError::MustSupplyOldPassword),
            (5, PolicyError::InsufficientPasswordQuality),
            (6, PolicyError::PasswordTooShort),
            (7, PolicyError::PasswordTooYoung),
            (8, PolicyError::PasswordInHistory),
            (9, PolicyError::PasswordTooLong),
            (42, PolicyError::Unknown(42)),
        ];
        for (code, expected) in cases {
            assert_eq!(
                decode(&err(code)),
                Ok(PolicyResponse {
                    warning: None,
                    error: Some(expected)
                }),
                "code {code}"
            );
        }
    }

    #[test]
    fn decodes_warnings() {
        // timeBeforeExpiration = 3600 (0x0e10)
        let v = [0x30, 0x06, 0xa0, 0x04, 0x80, 0x02, 0x0e, 0x10];
        assert_eq!(
            decode(&v).unwrap().warning,
            Some(PolicyWarning::TimeBeforeExpiration(3600))
        );
        // graceAuthNsRemaining = 2, with error passwordExpired
        let v = [0x30, 0x08, 0xa0, 0x03, 0x81, 0x01, 0x02, 0x81, 0x01, 0x00];
        assert_eq!(
            decode(&v).unwrap(),
            PolicyResponse {
                warning: Some(PolicyWarning::GraceAuthNsRemaining(2)),
                error: Some(PolicyError::PasswordExpired)
            }
        );
        // a value needing the leading zero octet: 200 = 0x00c8
        let v = [0x30, 0x06, 0xa0, 0x04, 0x80, 0x02, 0x00, 0xc8];
        assert_eq!(
            decode(&v).unwrap().warning,
            Some(PolicyWarning::TimeBeforeExpiration(200))
        );
    }

    #[test]
    fn empty_means_no_warning_no_error() {
        assert_eq!(decode(&[]), Ok(PolicyResponse::default()));
        assert_eq!(decode(&[0x30, 0x00]), Ok(PolicyResponse::default()));
    }

    #[test]
    fn long_form_length_is_accepted() {
        assert_eq!(
            decode(&[0x30, 0x81, 0x03, 0x81, 0x01, 0x06]).unwrap().error,
            Some(PolicyError::PasswordTooShort)
        );
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        let bad: &[&[u8]] = &[
            &[0x30],                                                       // truncated length
            &[0x30, 0x05, 0x81, 0x01, 0x06],                               // length past the end
            &[0x31, 0x03, 0x81, 0x01, 0x06], // SET instead of SEQUENCE
            &[0x30, 0x03, 0x81, 0x01, 0x06, 0x00], // trailing bytes
            &[0x30, 0x80, 0x81, 0x01, 0x06, 0x00, 0x00], // indefinite length
            &[0x30, 0x02, 0x81, 0x00],       // empty enumerated
            &[0x30, 0x03, 0x81, 0x01, 0xff], // negative enumerated
            &[0x30, 0x03, 0x82, 0x01, 0x06], // unknown element
            &[0x30, 0x06, 0x81, 0x01, 0x06, 0x81, 0x01, 0x06], // repeated error
            &[0x30, 0x05, 0xa0, 0x03, 0x82, 0x01, 0x01], // unknown warning choice
            &[0x30, 0x08, 0x81, 0x01, 0x06, 0xa0, 0x03, 0x80, 0x01, 0x01], // wrong order
            &[
                0x30, 0x09, 0xa0, 0x07, 0x80, 0x05, 0x01, 0x00, 0x00, 0x00, 0x00,
            ], // > u32
            &[0x30, 0x85, 0x00, 0x00, 0x00, 0x00, 0x03], // 5-byte length
            &[0x3f, 0x01, 0x00],             // high tag number
        ];
        for b in bad {
            assert!(decode(b).is_err(), "{b:02x?} should not decode");
        }
    }

    #[test]
    fn request_has_no_value_and_is_not_critical() {
        let r = request();
        assert_eq!(r.ctype, PPOLICY_OID);
        assert!(!r.crit);
        assert!(r.val.is_none());
    }

    #[test]
    fn find_picks_the_policy_control() {
        let ctrls = vec![
            Control(
                None,
                RawControl {
                    ctype: "1.2.3".into(),
                    crit: false,
                    val: Some(vec![1, 2]),
                },
            ),
            Control(
                None,
                RawControl {
                    ctype: PPOLICY_OID.into(),
                    crit: false,
                    val: Some(err(8)),
                },
            ),
        ];
        assert_eq!(
            find(&ctrls).unwrap().unwrap().error,
            Some(PolicyError::PasswordInHistory)
        );
        assert!(find(&ctrls[..1]).is_none());
    }
}
