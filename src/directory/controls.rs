//! Controls that ldap3 does not implement, or not in a way lockbridge can use:
//!
//! - Server Side Sort (RFC 2891): request `1.2.840.113556.1.4.473`, response (sortResult)
//!   `1.2.840.113556.1.4.474`.
//! - Virtual List View (draft-ietf-ldapext-ldapv3-vlv-09): request
//!   `2.16.840.1.113730.3.4.9`, response `2.16.840.1.113730.3.4.10`.
//! - Assertion (RFC 4528) `1.3.6.1.1.12`: ldap3 has one, but it panics on a filter it
//!   cannot parse and is never critical; this builder returns `None` instead.
//! - Content Synchronization (RFC 4533): the Sync Request control, the Sync State
//!   control on each entry and the Sync Info message. ldap3's decoders panic on
//!   anything unexpected; these return an error.
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

pub const SYNC_REQUEST_OID: &str = "1.3.6.1.4.1.4203.1.9.1.1";
pub const SYNC_STATE_OID: &str = "1.3.6.1.4.1.4203.1.9.1.2";
pub const SYNC_INFO_OID: &str = "1.3.6.1.4.1.4203.1.9.1.4";

/// `syncRequestValue ::= SEQUENCE { mode ENUMERATED, cookie syncCookie OPTIONAL,
/// reloadHint BOOLEAN DEFAULT FALSE }` in refreshAndPersist mode (3), without a cookie
/// (the whole content first, then every change), critical: a server that cannot follow
/// changes must refuse the search, not answer it once and stop.
pub fn sync_request_refresh_and_persist() -> RawControl {
    sync_request(3)
}

/// The same in refreshOnly mode (1): the whole content, then the search ends, as a
/// follower's refresh would (a preflight that the directory lets the service account
/// follow).
pub fn sync_request_refresh_only() -> RawControl {
    sync_request(1)
}

fn sync_request(mode: i64) -> RawControl {
    let value = Tag::Sequence(Sequence {
        inner: vec![Tag::Enumerated(ldap3::asn1::Enumerated {
            inner: mode,
            ..Default::default()
        })],
        ..Default::default()
    });
    RawControl {
        ctype: SYNC_REQUEST_OID.to_owned(),
        crit: true,
        val: Some(encode(value.into_structure())),
    }
}

/// What happened to an entry, from its Sync State control.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncChange {
    /// Unchanged since the client's cookie (refresh phase).
    Present,
    Add,
    Modify,
    /// Deleted, or no longer in the search's scope or filter.
    Delete,
}

/// `syncStateValue ::= SEQUENCE { state ENUMERATED { present (0), add (1), modify (2),
/// delete (3) }, entryUUID syncUUID, cookie syncCookie OPTIONAL }`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyncState {
    pub change: SyncChange,
    /// The entry's `entryUUID`, 16 bytes.
    pub uuid: [u8; 16],
}

/// The Sync State control among `ctrls`, decoded; `None` when the entry carries none.
pub fn find_sync_state(ctrls: &[Control]) -> Option<Result<SyncState, DecodeError>> {
    ctrls
        .iter()
        .find(|c| c.1.ctype == SYNC_STATE_OID)
        .map(|c| decode_sync_state(c.1.val.as_deref().unwrap_or(&[])))
}

pub fn decode_sync_state(val: &[u8]) -> Result<SyncState, DecodeError> {
    let err = |reason| DecodeError {
        control: "sync state",
        reason,
    };
    let mut input = outer_sequence(val).map_err(err)?;
    let state = take(&mut input, 0x0a, "expected the state ENUMERATED").map_err(err)?;
    let change = match unsigned(state).map_err(|e| err(e.reason()))? {
        0 => SyncChange::Present,
        1 => SyncChange::Add,
        2 => SyncChange::Modify,
        3 => SyncChange::Delete,
        _ => return Err(err("unknown state")),
    };
    let uuid = take(&mut input, 0x04, "expected the entryUUID")
        .map_err(err)?
        .try_into()
        .map_err(|_| err("the entryUUID is not 16 bytes"))?;
    if !input.is_empty() {
        take(&mut input, 0x04, "expected the cookie").map_err(err)?;
    }
    if !input.is_empty() {
        return Err(err("trailing elements"));
    }
    Ok(SyncState { change, uuid })
}

/// A Sync Info message (an intermediate response during content synchronisation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncInfo {
    /// A new cookie, nothing else.
    NewCookie,
    /// The end of a refresh phase (`refreshDelete` or `refreshPresent`); `done` when the
    /// refresh is complete and changes follow as they happen.
    RefreshPhase { done: bool },
    /// `syncIdSet`: these entries are deleted (`deletes`) or present.
    IdSet { deletes: bool, uuids: Vec<[u8; 16]> },
}

/// The Sync Info message in an intermediate response (`[0] responseName`,
/// `[1] responseValue`); `None` when it is some other intermediate response.
pub fn find_sync_info(response: &StructureTag) -> Option<Result<SyncInfo, DecodeError>> {
    let PL::C(parts) = &response.payload else {
        return None;
    };
    let name = parts
        .iter()
        .find(|t| t.id == 0)
        .and_then(|t| match &t.payload {
            PL::P(bytes) => Some(bytes.as_slice()),
            PL::C(_) => None,
        })?;
    if name != SYNC_INFO_OID.as_bytes() {
        return None;
    }
    let value = parts.iter().find(|t| t.id == 1).map(|t| match &t.payload {
        PL::P(bytes) => bytes.as_slice(),
        PL::C(_) => &[],
    });
    Some(decode_sync_info(value.unwrap_or(&[])))
}

/// `syncInfoValue ::= CHOICE { newcookie [0] syncCookie, refreshDelete [1] SEQUENCE {
/// cookie syncCookie OPTIONAL, refreshDone BOOLEAN DEFAULT TRUE }, refreshPresent [2]
/// (the same), syncIdSet [3] SEQUENCE { cookie syncCookie OPTIONAL, refreshDeletes BOOLEAN
/// DEFAULT FALSE, syncUUIDs SET OF syncUUID } }`.
pub fn decode_sync_info(val: &[u8]) -> Result<SyncInfo, DecodeError> {
    decode_sync_info_value(val).map_err(|reason| DecodeError {
        control: "sync info",
        reason,
    })
}

fn decode_sync_info_value(val: &[u8]) -> Result<SyncInfo, &'static str> {
    let (tag, mut body, rest) = tlv(val).map_err(|e| e.reason())?;
    if !rest.is_empty() {
        return Err("trailing bytes after the value");
    }
    // An optional cookie, then an optional BOOLEAN, each in order.
    let skip_cookie = |body: &mut &[u8]| -> Result<(), &'static str> {
        if body.first() == Some(&0x04) {
            take(body, 0x04, "expected the cookie")?;
        }
        Ok(())
    };
    let boolean = |body: &mut &[u8], default: bool| -> Result<bool, &'static str> {
        if body.first() != Some(&0x01) {
            return Ok(default);
        }
        match take(body, 0x01, "expected a BOOLEAN")? {
            [b] => Ok(*b != 0),
            _ => Err("a BOOLEAN is not one byte"),
        }
    };
    match tag {
        0x80 => Ok(SyncInfo::NewCookie),
        0xa1 | 0xa2 => {
            skip_cookie(&mut body)?;
            let done = boolean(&mut body, true)?;
            if !body.is_empty() {
                return Err("trailing elements");
            }
            Ok(SyncInfo::RefreshPhase { done })
        }
        0xa3 => {
            skip_cookie(&mut body)?;
            let deletes = boolean(&mut body, false)?;
            let mut set = take(&mut body, 0x31, "expected the SET of syncUUIDs")?;
            if !body.is_empty() {
                return Err("trailing elements");
            }
            let mut uuids = Vec::new();
            while !set.is_empty() {
                let uuid = take(&mut set, 0x04, "expected a syncUUID")?;
                uuids.push(uuid.try_into().map_err(|_| "a syncUUID is not 16 bytes")?);
            }
            Ok(SyncInfo::IdSet { deletes, uuids })
        }
        _ => Err("unknown choice"),
    }
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

    #[test]
    fn sync_request_asks_for_refresh_and_persist_critically() {
        let c = sync_request_refresh_and_persist();
        assert_eq!(c.ctype, SYNC_REQUEST_OID);
        assert!(c.crit);
        assert_eq!(c.val.unwrap(), [0x30, 0x03, 0x0a, 0x01, 0x03]);
    }

    #[test]
    fn sync_state_decodes_each_change_and_refuses_what_is_not_one() {
        let uuid: Vec<u8> = (1..=16).collect();
        let state = |s: u8, cookie: &[u8]| {
            let mut body = vec![0x0a, 0x01, s, 0x04, 0x10];
            body.extend(&uuid);
            if !cookie.is_empty() {
                body.extend([0x04, cookie.len() as u8]);
                body.extend(cookie);
            }
            let mut v = vec![0x30, body.len() as u8];
            v.extend(body);
            v
        };
        for (s, change) in [
            (0, SyncChange::Present),
            (1, SyncChange::Add),
            (2, SyncChange::Modify),
            (3, SyncChange::Delete),
        ] {
            let got = decode_sync_state(&state(s, b"rid=000,csn=x")).expect("decodes");
            assert_eq!(got.change, change);
            assert_eq!(got.uuid.to_vec(), uuid);
            assert_eq!(
                decode_sync_state(&state(s, b"")).expect("decodes").change,
                change
            );
        }
        assert!(decode_sync_state(&state(4, b"")).is_err(), "no state 4");
        let mut short = state(1, b"");
        short[4] = 0x0f;
        assert!(decode_sync_state(&short).is_err(), "a 15-byte uuid");
        assert!(decode_sync_state(&[]).is_err());
        assert!(decode_sync_state(&[0x30, 0x05, 0x0a, 0x01]).is_err());
    }

    #[test]
    fn sync_info_tells_the_end_of_the_refresh_and_id_sets() {
        // refreshPresent with no cookie and refreshDone left at its default (TRUE).
        assert_eq!(
            decode_sync_info(&[0xa2, 0x00]),
            Ok(SyncInfo::RefreshPhase { done: true })
        );
        // refreshDelete with a cookie and refreshDone FALSE.
        assert_eq!(
            decode_sync_info(&[0xa1, 0x07, 0x04, 0x02, b'c', b'k', 0x01, 0x01, 0x00]),
            Ok(SyncInfo::RefreshPhase { done: false })
        );
        assert_eq!(
            decode_sync_info(&[0x80, 0x01, b'c']),
            Ok(SyncInfo::NewCookie)
        );
        let mut set = vec![0xa3, 0x17, 0x01, 0x01, 0xff, 0x31, 0x12, 0x04, 0x10];
        set.extend([7u8; 16]);
        assert_eq!(
            decode_sync_info(&set),
            Ok(SyncInfo::IdSet {
                deletes: true,
                uuids: vec![[7u8; 16]]
            })
        );
        assert!(decode_sync_info(&[0xa4, 0x00]).is_err());
        assert!(decode_sync_info(&[0xa2, 0x03, 0x01, 0x01]).is_err());
    }

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
