//! The response-control decoders that read BER from the directory: Password Policy
//! (ppolicy), Server Side Sort and Virtual List View (they share ppolicy's BER reader).
//!
//! - Any bytes: no panic; whatever decodes, encoded again as DER, decodes to the same value.
//! - The bytes as fields and encoding choices: a value encoded with any of the length and
//!   INTEGER forms BER allows (long-form lengths, leading zero octets) decodes back to the
//!   fields it was built from.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use lockbridge::directory::fuzzing::{
    PolicyError, PolicyResponse, PolicyWarning, SortResult, VlvResponse, decode_policy_response,
    decode_sort_result, decode_vlv_response,
};

fuzz_target!(|data: &[u8]| {
    decoded_values_round_trip(data);
    let _ = encoded_values_decode(&mut Unstructured::new(data));
});

fn decoded_values_round_trip(data: &[u8]) {
    // An exhausted Unstructured picks the shortest forms: DER.
    let der = &mut Unstructured::new(&[]);
    if let Ok(p) = decode_policy_response(data) {
        if let Some(PolicyError::Unknown(code)) = p.error {
            assert!(code > 9, "code {code} is a defined error, not Unknown");
        }
        let again = policy(&p, der).expect("DER needs no choices");
        assert_eq!(decode_policy_response(&again), Ok(p), "{again:02x?}");
    }
    if let Ok(s) = decode_sort_result(data) {
        let again = sort(&s, der).expect("DER needs no choices");
        assert_eq!(decode_sort_result(&again), Ok(s), "{again:02x?}");
    }
    if let Ok(v) = decode_vlv_response(data) {
        let again = vlv(&v, der).expect("DER needs no choices");
        assert_eq!(decode_vlv_response(&again), Ok(v), "{again:02x?}");
    }
}

fn encoded_values_decode(u: &mut Unstructured) -> Result<()> {
    let warning = match u.int_in_range(0..=2)? {
        0 => None,
        1 => Some(PolicyWarning::TimeBeforeExpiration(u.arbitrary()?)),
        _ => Some(PolicyWarning::GraceAuthNsRemaining(u.arbitrary()?)),
    };
    // Small codes (the defined ones) most of the time.
    let code: Option<u32> = match u.int_in_range(0..=3)? {
        0 => None,
        1 => Some(u.arbitrary()?),
        _ => Some(u.int_in_range(0..=12)?),
    };
    let p = PolicyResponse {
        warning,
        error: code.map(PolicyError::Unknown),
    };
    let bytes = policy(&p, u)?;
    let got = decode_policy_response(&bytes).unwrap_or_else(|e| panic!("{e}: {bytes:02x?}"));
    assert_eq!(got.warning, warning, "{bytes:02x?}");
    assert_eq!(got.error.map(error_code), code, "{bytes:02x?}");

    let s = SortResult {
        code: u.arbitrary()?,
        attribute: if u.arbitrary()? {
            Some(u.arbitrary()?)
        } else {
            None
        },
    };
    let bytes = sort(&s, u)?;
    assert_eq!(decode_sort_result(&bytes), Ok(s), "{bytes:02x?}");

    let v = VlvResponse {
        target_position: u.arbitrary()?,
        content_count: u.arbitrary()?,
        result: u.arbitrary()?,
        context_id: if u.arbitrary()? {
            Some(u.arbitrary()?)
        } else {
            None
        },
    };
    let bytes = vlv(&v, u)?;
    assert_eq!(decode_vlv_response(&bytes), Ok(v), "{bytes:02x?}");
    Ok(())
}

/// The draft's ENUMERATED value of an error (`Unknown` carries its own).
fn error_code(e: PolicyError) -> u32 {
    match e {
        PolicyError::PasswordExpired => 0,
        PolicyError::AccountLocked => 1,
        PolicyError::ChangeAfterReset => 2,
        PolicyError::PasswordModNotAllowed => 3,
        PolicyError::MustSupplyOldPassword => 4,
        PolicyError::InsufficientPasswordQuality => 5,
        PolicyError::PasswordTooShort => 6,
        PolicyError::PasswordTooYoung => 7,
        PolicyError::PasswordInHistory => 8,
        PolicyError::PasswordTooLong => 9,
        PolicyError::Unknown(n) => n,
    }
}

/// `PasswordPolicyResponseValue ::= SEQUENCE { warning [0] CHOICE {
/// timeBeforeExpiration [0] INTEGER, graceAuthNsRemaining [1] INTEGER } OPTIONAL,
/// error [1] ENUMERATED OPTIONAL }`.
fn policy(p: &PolicyResponse, u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    if let Some(w) = p.warning {
        let (tag, n) = match w {
            PolicyWarning::TimeBeforeExpiration(n) => (0x80, n),
            PolicyWarning::GraceAuthNsRemaining(n) => (0x81, n),
        };
        let mut choice = Vec::new();
        tlv(&mut choice, tag, &integer(n, u)?, u)?;
        tlv(&mut body, 0xa0, &choice, u)?;
    }
    if let Some(e) = p.error {
        tlv(&mut body, 0x81, &integer(error_code(e), u)?, u)?;
    }
    sequence(&body, u)
}

/// `SortResult ::= SEQUENCE { sortResult ENUMERATED, attributeType [0] OCTET STRING OPTIONAL }`.
fn sort(s: &SortResult, u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    tlv(&mut body, 0x0a, &integer(s.code, u)?, u)?;
    if let Some(a) = &s.attribute {
        tlv(&mut body, 0x80, a.as_bytes(), u)?;
    }
    sequence(&body, u)
}

/// `VirtualListViewResponse ::= SEQUENCE { targetPosition INTEGER, contentCount INTEGER,
/// virtualListViewResult ENUMERATED, contextID OCTET STRING OPTIONAL }`.
fn vlv(v: &VlvResponse, u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    tlv(&mut body, 0x02, &integer(v.target_position, u)?, u)?;
    tlv(&mut body, 0x02, &integer(v.content_count, u)?, u)?;
    tlv(&mut body, 0x0a, &integer(v.result, u)?, u)?;
    if let Some(c) = &v.context_id {
        tlv(&mut body, 0x04, c, u)?;
    }
    sequence(&body, u)
}

fn sequence(body: &[u8], u: &mut Unstructured) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    tlv(&mut out, 0x30, body, u)?;
    Ok(out)
}

fn tlv(out: &mut Vec<u8>, tag: u8, content: &[u8], u: &mut Unstructured) -> Result<()> {
    out.push(tag);
    let n = content.len();
    let minimal = if n < 0x80 {
        0
    } else {
        (usize::BITS - n.leading_zeros()).div_ceil(8) as usize
    };
    // The short form when it fits, or the long form with up to 4 length octets (all
    // that any server needs, and all the reader takes).
    let octets = match u.int_in_range(0..=4)? {
        0 => minimal,
        k => k.max(minimal),
    };
    if octets == 0 {
        out.push(n as u8);
    } else {
        out.push(0x80 | octets as u8);
        out.extend((0..octets).rev().map(|i| (n >> (8 * i)) as u8));
    }
    out.extend_from_slice(content);
    Ok(())
}

/// A non-negative INTEGER's contents: two's complement, big-endian, padded with zero
/// octets up to the reader's 5.
fn integer(n: u32, u: &mut Unstructured) -> Result<Vec<u8>> {
    let bytes = n.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(3);
    let mut out = bytes[skip..].to_vec();
    if out[0] & 0x80 != 0 {
        out.insert(0, 0);
    }
    let mut padded = vec![0; u.int_in_range(0..=5 - out.len())?];
    padded.extend(out);
    Ok(padded)
}
