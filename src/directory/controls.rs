//! Controls that ldap3 does not implement, or not in a way lockbridge can use:
//!
//! - Server Side Sort (RFC 2891): request `1.2.840.113556.1.4.473`, response (sortResult)
//!   `1.2.840.113556.1.4.474`.
//! - Virtual List View (draft-ietf-ldapext-ldapv3-vlv-09): request
//!   `2.16.840.1.113730.3.4.9`, response `2.16.840.1.113730.3.4.10`.
//! - Assertion (RFC 4528) `1.3.6.1.1.12`: ldap3 has one, but it panics on a filter it
//!   cannot parse and is never critical; this builder returns `None` instead.
//!
//! Requests are built from ldap3's `asn1` structures and serialised here (ldap3 itself
//! only serialises into a `bytes::BytesMut`); responses are decoded with the strict,
//! fallible BER reader of the ppolicy control. Pure functions; nothing here panics on
//! malformed input.

use std::fmt;

use ldap3::asn1::{
    ASNTag, Boolean, Integer, OctetString, PL, Sequence, StructureTag, Tag, TagClass,
};
use ldap3::controls::{Control, RawControl};

use super::entries::SortKey;
use super::ppolicy::{tlv, unsigned};

pub const SORT_REQUEST_OID: &str = "1.2.840.113556.1.4.473";
pub const SORT_RESPONSE_OID: &str = "1.2.840.113556.1.4.474";
pub const VLV_REQUEST_OID: &str = "2.16.840.1.113730.3.4.9";
pub const VLV_RESPONSE_OID: &str = "2.16.840.1.113730.3.4.10";
pub const ASSERTION_OID: &str = "1.3.6.1.1.12";

/// LDAP's maxInt (RFC 4511 §4.1.1): the largest INTEGER these controls may carry.
pub const MAX_INT: u32 = i32::MAX as u32;

/// `SortKeyList ::= SEQUENCE OF SEQUENCE { attributeType AttributeDescription,
/// orderingRule [0] MatchingRuleId OPTIONAL, reverseOrder [1] BOOLEAN DEFAULT FALSE }`,
/// critical (so that a server that cannot sort fails instead of answering unsorted).
pub fn sort_request(keys: &[SortKey]) -> RawControl {
    let keys = keys
        .iter()
        .map(|k| {
            let mut inner = vec![Tag::OctetString(OctetString {
                inner: k.attribute.as_bytes().to_vec(),
                ..Default::default()
            })];
            if let Some(rule) = &k.ordering_rule {
                inner.push(Tag::OctetString(OctetString {
                    id: 0,
                    class: TagClass::Context,
                    inner: rule.as_bytes().to_vec(),
                }));
            }
            // DER: a DEFAULT value is left out.
            if k.reverse {
                inner.push(Tag::Boolean(Boolean {
                    id: 1,
                    class: TagClass::Context,
                    inner: true,
                }));
            }
            Tag::Sequence(Sequence {
                inner,
                ..Default::default()
            })
        })
        .collect();
    RawControl {
        ctype: SORT_REQUEST_OID.to_owned(),
        crit: true,
        val: Some(encode(
            Tag::Sequence(Sequence {
                inner: keys,
                ..Default::default()
            })
            .into_structure(),
        )),
    }
}

/// `VirtualListViewRequest ::= SEQUENCE { beforeCount INTEGER, afterCount INTEGER,
/// target CHOICE { byOffset [0] SEQUENCE { offset INTEGER, contentCount INTEGER }, ... },
/// contextID OCTET STRING OPTIONAL }`, by offset and without a context ID, critical.
/// Values above [`MAX_INT`] are sent as [`MAX_INT`].
pub fn vlv_request(
    before_count: u32,
    after_count: u32,
    offset: u32,
    content_count: u32,
) -> RawControl {
    let int = |n: u32| {
        Tag::Integer(Integer {
            inner: i64::from(n.min(MAX_INT)),
            ..Default::default()
        })
    };
    let value = Tag::Sequence(Sequence {
        inner: vec![
            int(before_count),
            int(after_count),
            Tag::Sequence(Sequence {
                id: 0,
                class: TagClass::Context,
                inner: vec![int(offset), int(content_count)],
            }),
        ],
        ..Default::default()
    });
    RawControl {
        ctype: VLV_REQUEST_OID.to_owned(),
        crit: true,
        val: Some(encode(value.into_structure())),
    }
}

/// The Assertion control (RFC 4528) for an RFC 4515 `filter`, critical (a server that
/// does not support it must refuse the operation rather than apply it unconditionally).
/// `None` when the filter does not parse.
pub fn assertion(filter: &str) -> Option<RawControl> {
    if !filter.starts_with('(') {
        return None;
    }
    let tag = ldap3::parse_filter(filter).ok()?;
    Some(RawControl {
        ctype: ASSERTION_OID.to_owned(),
        crit: true,
        val: Some(encode(tag.into_structure())),
    })
}

/// DER/BER serialisation of an ldap3 structure (definite lengths).
pub fn encode(tag: StructureTag) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, tag);
    out
}

fn encode_into(out: &mut Vec<u8>, tag: StructureTag) {
    let (constructed, content) = match tag.payload {
        PL::P(bytes) => (false, bytes),
        PL::C(children) => {
            let mut buf = Vec::new();
            for child in children {
                encode_into(&mut buf, child);
            }
            (true, buf)
        }
    };
    let first = ((tag.class as u8) << 6) | if constructed { 0x20 } else { 0 };
    if tag.id < 31 {
        out.push(first | tag.id as u8);
    } else {
        out.push(first | 0x1f);
        let mut groups = Vec::new();
        let mut id = tag.id;
        loop {
            groups.push((id & 0x7f) as u8);
            id >>= 7;
            if id == 0 {
                break;
            }
        }
        while let Some(g) = groups.pop() {
            out.push(if groups.is_empty() { g } else { g | 0x80 });
        }
    }
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend(content);
}

/// Why a response control could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecodeError {
    control: &'static str,
    reason: &'static str,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "malformed {} response control: {}",
            self.control, self.reason
        )
    }
}

impl std::error::Error for DecodeError {}

/// `SortResult ::= SEQUENCE { sortResult ENUMERATED, attributeType [0]
/// AttributeDescription OPTIONAL }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SortResult {
    /// An LDAP result code; 0 = sorted.
    pub code: u32,
    /// The sort key attribute the problem is about, when the server said.
    pub attribute: Option<String>,
}

/// `VirtualListViewResponse ::= SEQUENCE { targetPosition INTEGER, contentCount INTEGER,
/// virtualListViewResult ENUMERATED, contextID OCTET STRING OPTIONAL }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VlvResponse {
    /// 1-based position of the target entry in the sorted list.
    pub target_position: u32,
    /// The server's count of the entries in the whole list.
    pub content_count: u32,
    /// 0 = success; otherwise an LDAP result code (see [`vlv_result_name`]).
    pub result: u32,
    pub context_id: Option<Vec<u8>>,
}

/// The sort response among `ctrls`, decoded; `None` when the server sent none.
pub fn find_sort_result(ctrls: &[Control]) -> Option<Result<SortResult, DecodeError>> {
    ctrls
        .iter()
        .find(|c| c.1.ctype == SORT_RESPONSE_OID)
        .map(|c| decode_sort_result(c.1.val.as_deref().unwrap_or(&[])))
}

/// The VLV response among `ctrls`, decoded; `None` when the server sent none.
pub fn find_vlv_response(ctrls: &[Control]) -> Option<Result<VlvResponse, DecodeError>> {
    ctrls
        .iter()
        .find(|c| c.1.ctype == VLV_RESPONSE_OID)
        .map(|c| decode_vlv_response(c.1.val.as_deref().unwrap_or(&[])))
}

pub fn decode_sort_result(val: &[u8]) -> Result<SortResult, DecodeError> {
    let err = |reason| DecodeError {
        control: "sort",
        reason,
    };
    let body = outer_sequence(val).map_err(err)?;
    let (tag, content, mut rest) = tlv(body).map_err(|e| err(e.reason()))?;
    if tag != 0x0a {
        return Err(err("expected the sortResult ENUMERATED"));
    }
    let code = unsigned(content).map_err(|e| err(e.reason()))?;
    let mut attribute = None;
    if !rest.is_empty() {
        let (tag, content, after) = tlv(rest).map_err(|e| err(e.reason()))?;
        if tag != 0x80 {
            return Err(err("unexpected element after sortResult"));
        }
        attribute = Some(
            std::str::from_utf8(content)
                .map_err(|_| err("attributeType is not UTF-8"))?
                .to_owned(),
        );
        rest = after;
    }
    if !rest.is_empty() {
        return Err(err("trailing elements"));
    }
    Ok(SortResult { code, attribute })
}

pub fn decode_vlv_response(val: &[u8]) -> Result<VlvResponse, DecodeError> {
    decode_vlv(val).map_err(|reason| DecodeError {
        control: "virtual list view",
        reason,
    })
}

fn decode_vlv(val: &[u8]) -> Result<VlvResponse, &'static str> {
    let mut input = outer_sequence(val)?;
    let int = |c: &[u8]| unsigned(c).map_err(|e| e.reason());
    let target_position = int(take(&mut input, 0x02, "expected targetPosition")?)?;
    let content_count = int(take(&mut input, 0x02, "expected contentCount")?)?;
    let result = int(take(&mut input, 0x0a, "expected virtualListViewResult")?)?;
    let context_id = if input.is_empty() {
        None
    } else {
        Some(take(&mut input, 0x04, "expected contextID")?.to_vec())
    };
    if !input.is_empty() {
        return Err("trailing elements");
    }
    Ok(VlvResponse {
        target_position,
        content_count,
        result,
        context_id,
    })
}

/// The contents of the next element of `input`, which must have tag `want`.
fn take<'a>(input: &mut &'a [u8], want: u8, what: &'static str) -> Result<&'a [u8], &'static str> {
    let (tag, content, rest) = tlv(input).map_err(|e| e.reason())?;
    if tag != want {
        return Err(what);
    }
    *input = rest;
    Ok(content)
}

/// The contents of the one SEQUENCE that makes up a response value.
fn outer_sequence(val: &[u8]) -> Result<&[u8], &'static str> {
    let (tag, body, rest) = tlv(val).map_err(|e| e.reason())?;
    if tag != 0x30 {
        return Err("expected a SEQUENCE");
    }
    if !rest.is_empty() {
        return Err("trailing bytes after the SEQUENCE");
    }
    Ok(body)
}

/// Name of a `virtualListViewResult` value, for messages. OpenLDAP answers
/// sortControlMissing and offsetRangeError with its own codes 76 and 77 (the draft says 60
/// and 61).
pub fn vlv_result_name(code: u32) -> &'static str {
    match code {
        0 => "success",
        1 => "operationsError",
        3 => "timeLimitExceeded",
        11 => "adminLimitExceeded",
        18 => "inappropriateMatching",
        50 => "insufficientAccessRights",
        53 => "unwillingToPerform",
        60 | 76 => "sortControlMissing",
        61 | 77 => "offsetRangeError",
        80 => "other",
        _ => "unknown",
    }
}

/// Whether a `virtualListViewResult` says the requested offset lies beyond the list.
pub fn is_offset_range_error(code: u32) -> bool {
    matches!(code, 61 | 77)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(attribute: &str, rule: Option<&str>, reverse: bool) -> SortKey {
        SortKey {
            attribute: attribute.into(),
            ordering_rule: rule.map(Into::into),
            reverse,
        }
    }

    #[test]
    fn sort_request_encoding() {
        let c = sort_request(&[key("uid", None, false)]);
        assert_eq!(c.ctype, SORT_REQUEST_OID);
        assert!(c.crit);
        assert_eq!(
            c.val.unwrap(),
            [0x30, 0x07, 0x30, 0x05, 0x04, 0x03, b'u', b'i', b'd']
        );

        let c = sort_request(&[key("uid", Some("caseIgnoreOrderingMatch"), true)]);
        let mut want = vec![
            0x30, 0x23, 0x30, 0x21, 0x04, 0x03, b'u', b'i', b'd', 0x80, 0x17,
        ];
        want.extend_from_slice(b"caseIgnoreOrderingMatch");
        want.extend_from_slice(&[0x81, 0x01, 0xff]);
        assert_eq!(c.val.unwrap(), want);

        // Two keys, the second reversed without a rule.
        let c = sort_request(&[key("sn", None, false), key("cn", None, true)]);
        assert_eq!(
            c.val.unwrap(),
            [
                0x30, 0x0f, 0x30, 0x04, 0x04, 0x02, b's', b'n', 0x30, 0x07, 0x04, 0x02, b'c', b'n',
                0x81, 0x01, 0xff
            ]
        );
    }

    #[test]
    fn vlv_request_encoding() {
        let c = vlv_request(0, 36, 1, 0);
        assert_eq!(c.ctype, VLV_REQUEST_OID);
        assert!(c.crit);
        assert_eq!(
            c.val.unwrap(),
            [
                0x30, 0x0e, 0x02, 0x01, 0x00, 0x02, 0x01, 0x24, 0xa0, 0x06, 0x02, 0x01, 0x01, 0x02,
                0x01, 0x00
            ]
        );
        // 200 needs a leading zero octet; values beyond maxInt are clamped.
        let c = vlv_request(0, 200, u32::MAX, 0);
        assert_eq!(
            c.val.unwrap(),
            [
                0x30, 0x12, 0x02, 0x01, 0x00, 0x02, 0x02, 0x00, 0xc8, 0xa0, 0x09, 0x02, 0x04, 0x7f,
                0xff, 0xff, 0xff, 0x02, 0x01, 0x00
            ]
        );
    }

    #[test]
    fn long_lengths_and_high_tags_are_encoded() {
        let long = Tag::OctetString(OctetString {
            inner: vec![b'x'; 300],
            ..Default::default()
        });
        let bytes = encode(long.into_structure());
        assert_eq!(&bytes[..4], &[0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(bytes.len(), 304);
        let high = StructureTag {
            class: TagClass::Context,
            id: 200,
            payload: PL::P(vec![1]),
        };
        assert_eq!(encode(high), [0x9f, 0x81, 0x48, 0x01, 0x01]);
    }

    #[test]
    fn assertion_control() {
        let f = "(entryCSN=20240101120000.123456Z#000000#000#000000)";
        let c = assertion(f).expect("valid filter");
        assert_eq!(c.ctype, ASSERTION_OID);
        assert!(c.crit);
        let v = c.val.unwrap();
        // equalityMatch [3] { attributeDesc, assertionValue }
        assert_eq!(v[0], 0xa3);
        assert_eq!(&v[2..4], &[0x04, 0x08]);
        assert_eq!(&v[4..12], b"entryCSN");
        // The same bytes as ldap3's own (non-critical) Assertion control.
        let theirs: RawControl = ldap3::controls::Assertion::new(f);
        assert_eq!(Some(v), theirs.val);
        for bad in ["", "entryCSN=1", "(entryCSN=1", "(&(a=1)(b=2)", "(a=\\zz)"] {
            assert!(assertion(bad).is_none(), "{bad:?}");
        }
        assert!(assertion("(&(objectClass=*)(entryCSN=x))").is_some());
    }

    fn ctrl(oid: &str, val: &[u8]) -> Control {
        Control(
            None,
            RawControl {
                ctype: oid.into(),
                crit: false,
                val: Some(val.to_vec()),
            },
        )
    }

    #[test]
    fn sort_results() {
        assert_eq!(
            decode_sort_result(&[0x30, 0x03, 0x0a, 0x01, 0x00]),
            Ok(SortResult {
                code: 0,
                attribute: None
            })
        );
        assert_eq!(
            decode_sort_result(&[0x30, 0x08, 0x0a, 0x01, 0x12, 0x80, 0x03, b'u', b'i', b'd']),
            Ok(SortResult {
                code: 18,
                attribute: Some("uid".into())
            })
        );
        let ctrls = [
            ctrl("1.2.3", &[1]),
            ctrl(SORT_RESPONSE_OID, &[0x30, 0x03, 0x0a, 0x01, 0x35]),
        ];
        assert_eq!(find_sort_result(&ctrls).unwrap().unwrap().code, 53);
        assert!(find_sort_result(&ctrls[..1]).is_none());
    }

    #[test]
    fn vlv_responses() {
        // targetPosition 5, contentCount 1000, success, no context
        let v = [
            0x30, 0x0a, 0x02, 0x01, 0x05, 0x02, 0x02, 0x03, 0xe8, 0x0a, 0x01, 0x00,
        ];
        assert_eq!(
            decode_vlv_response(&v),
            Ok(VlvResponse {
                target_position: 5,
                content_count: 1000,
                result: 0,
                context_id: None
            })
        );
        // with an 8-byte context ID (as OpenLDAP sends it)
        let v = [
            0x30, 0x13, 0x02, 0x01, 0x00, 0x02, 0x01, 0x07, 0x0a, 0x01, 0x4d, 0x04, 0x08, 1, 2, 3,
            4, 5, 6, 7, 8,
        ];
        let r = decode_vlv_response(&v).unwrap();
        assert_eq!(r.content_count, 7);
        assert!(is_offset_range_error(r.result));
        assert_eq!(vlv_result_name(r.result), "offsetRangeError");
        assert_eq!(
            r.context_id.as_deref(),
            Some(&[1u8, 2, 3, 4, 5, 6, 7, 8][..])
        );
        let ctrls = [ctrl(VLV_RESPONSE_OID, &v)];
        assert_eq!(find_vlv_response(&ctrls).unwrap().unwrap(), r);
    }

    #[test]
    fn malformed_responses_are_errors_not_panics() {
        let bad: &[&[u8]] = &[
            &[],
            &[0x30],
            &[0x31, 0x03, 0x0a, 0x01, 0x00],
            &[0x30, 0x03, 0x02, 0x01, 0x00],
            &[0x30, 0x03, 0x0a, 0x01, 0x00, 0x00],
            &[0x30, 0x05, 0x0a, 0x01, 0x00, 0x81, 0x00],
            &[0x30, 0x03, 0x0a, 0x01, 0xff],
            &[0x30, 0x07, 0x0a, 0x01, 0x00, 0x80, 0x02, 0xff, 0xfe],
        ];
        for b in bad {
            assert!(decode_sort_result(b).is_err(), "sort {b:02x?}");
        }
        let bad: &[&[u8]] = &[
            &[],
            &[0x30, 0x00],
            &[0x30, 0x06, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00],
            &[
                0x30, 0x09, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00,
            ],
            &[
                0x30, 0x0b, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x0a, 0x01, 0x00, 0x05, 0x00,
            ],
            &[
                0x30, 0x09, 0x02, 0x01, 0xff, 0x02, 0x01, 0x00, 0x0a, 0x01, 0x00,
            ],
            &[
                0x30, 0x0d, 0x02, 0x01, 0x00, 0x02, 0x01, 0x00, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04,
                0x00,
            ],
        ];
        for b in bad {
            let e = decode_vlv_response(b).unwrap_err();
            assert!(e.to_string().contains("virtual list view"), "{e}");
        }
    }

    proptest::proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64)) {
            let _ = decode_sort_result(&bytes);
            let _ = decode_vlv_response(&bytes);
        }

        #[test]
        fn vlv_request_round_trips_through_the_reader(
            before in 0u32..=MAX_INT, after in 0u32..=MAX_INT,
            offset in 0u32..=MAX_INT, count in 0u32..=MAX_INT,
        ) {
            let v = vlv_request(before, after, offset, count).val.unwrap();
            let body = outer_sequence(&v).unwrap();
            let (t1, c1, rest) = tlv(body).unwrap();
            let (t2, c2, rest) = tlv(rest).unwrap();
            let (t3, c3, rest) = tlv(rest).unwrap();
            proptest::prop_assert!(rest.is_empty());
            proptest::prop_assert_eq!((t1, t2, t3), (0x02, 0x02, 0xa0));
            proptest::prop_assert_eq!(unsigned(c1).unwrap(), before);
            proptest::prop_assert_eq!(unsigned(c2).unwrap(), after);
            let (_, o, rest) = tlv(c3).unwrap();
            let (_, n, rest) = tlv(rest).unwrap();
            proptest::prop_assert!(rest.is_empty());
            proptest::prop_assert_eq!(unsigned(o).unwrap(), offset);
            proptest::prop_assert_eq!(unsigned(n).unwrap(), count);
        }
    }
}
