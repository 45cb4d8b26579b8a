//! The audit chain's storage format: how a record's hash is computed from its fields and
//! the hash of the record before it.
//!
//! `hash = SHA-256("lockbridge-audit-v1\0" || prev_hash || id || at || request_id ||
//! actor || action || target || outcome || detail)`, every field length-prefixed (an
//! absent one marked as such), `id` as 8 bytes big-endian, `at` exactly as stored. The
//! first record's `prev_hash` is [`GENESIS`]. Anyone can recompute it (no key): a changed,
//! removed, inserted or reordered record breaks the chain at that record. The chain's
//! head is signed now and then with a key (`audit_seals`), so that rewriting the whole
//! chain after an edit is detected too.

use sha2::{Digest, Sha256};

/// The `prev_hash` of the first record.
pub const GENESIS: [u8; 32] = [0; 32];

const DOMAIN: &[u8] = b"lockbridge-audit-v1\0";

/// The fields of a record that its hash covers, as stored.
#[derive(Debug, Clone, Copy)]
pub struct ChainFields<'a> {
    pub id: i64,
    /// The stored time text (fixed-width UTC, microseconds).
    pub at: &'a str,
    pub request_id: Option<&'a str>,
    pub actor: &'a str,
    pub action: &'a str,
    pub target: Option<&'a str>,
    pub outcome: &'a str,
    pub detail: Option<&'a str>,
}

/// The hash of a record whose predecessor has hash `prev`.
pub fn record_hash(prev: &[u8], r: &ChainFields<'_>) -> Vec<u8> {
    let mut h = Sha256::new();
    h.update(DOMAIN);
    field(Some(prev), &mut |bytes| h.update(bytes));
    h.update(r.id.to_be_bytes());
    each_field_after_id(r, &mut |bytes| h.update(bytes));
    h.finalize().to_vec()
}

/// What the hash covers after the id, encoded: the part of a record's hashed bytes that
/// neither its predecessor nor its id changes. PostgreSQL's audit append (migration
/// 0006) takes it from the caller, so that it hashes only the prefix that depends on the
/// chain's tail (`DOMAIN`, `prev`, `id`) and this; `r.id` is not read.
pub fn encoded_after_id(r: &ChainFields<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    each_field_after_id(r, &mut |bytes| out.extend_from_slice(bytes));
    out
}

fn each_field_after_id(r: &ChainFields<'_>, out: &mut impl FnMut(&[u8])) {
    for value in [
        Some(r.at),
        r.request_id,
        Some(r.actor),
        Some(r.action),
        r.target,
        Some(r.outcome),
        r.detail,
    ] {
        field(value.map(str::as_bytes), out);
    }
}

/// One field, length-prefixed, or marked absent.
fn field(value: Option<&[u8]>, out: &mut impl FnMut(&[u8])) {
    match value {
        None => out(&[0u8]),
        Some(bytes) => {
            out(&[1u8]);
            out(&(bytes.len() as u64).to_be_bytes());
            out(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields<'a>() -> ChainFields<'a> {
        ChainFields {
            id: 7,
            at: "2026-12-05T10:00:00.000000Z",
            request_id: Some("r1"),
            actor: "helpdesk",
            action: "password.reset",
            target: Some("bob"),
            outcome: "success",
            detail: None,
        }
    }

    /// What migration 0006's SQL hashes: the prefix it builds from the tail, then the
    /// caller's encoded fields.
    #[test]
    fn the_encoded_fields_complete_the_prefix_to_the_record_hash() {
        for prev in [&GENESIS[..], &[7u8; 32][..], b"short"] {
            for r in [
                fields(),
                ChainFields {
                    request_id: None,
                    target: None,
                    detail: Some("{\"n\":1}"),
                    ..fields()
                },
            ] {
                let mut h = Sha256::new();
                h.update(DOMAIN);
                h.update([1u8]);
                h.update((prev.len() as u64).to_be_bytes());
                h.update(prev);
                h.update(r.id.to_be_bytes());
                h.update(encoded_after_id(&ChainFields { id: -1, ..r }));
                assert_eq!(h.finalize().to_vec(), record_hash(prev, &r));
            }
        }
    }

    #[test]
    fn every_field_and_the_predecessor_count() {
        let base = record_hash(&GENESIS, &fields());
        assert_eq!(base.len(), 32);
        assert_eq!(base, record_hash(&GENESIS, &fields()), "deterministic");
        assert_ne!(base, record_hash(&[1; 32], &fields()));
        let variants = [
            ChainFields { id: 8, ..fields() },
            ChainFields {
                at: "2026-12-05T10:00:00.000001Z",
                ..fields()
            },
            ChainFields {
                request_id: None,
                ..fields()
            },
            ChainFields {
                actor: "root",
                ..fields()
            },
            ChainFields {
                action: "token.created",
                ..fields()
            },
            ChainFields {
                target: Some("alice"),
                ..fields()
            },
            ChainFields {
                outcome: "refused",
                ..fields()
            },
            ChainFields {
                detail: Some("{}"),
                ..fields()
            },
            // Moving text between fields changes the hash (length prefixes).
            ChainFields {
                actor: "helpdeskpassword.reset",
                action: "",
                ..fields()
            },
            ChainFields {
                request_id: Some(""),
                ..fields()
            },
        ];
        for v in variants {
            assert_ne!(base, record_hash(&GENESIS, &v), "{v:?}");
        }
    }
}
