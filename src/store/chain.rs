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
    field(&mut h, Some(prev));
    h.update(r.id.to_be_bytes());
    for value in [
        Some(r.at),
        r.request_id,
        Some(r.actor),
        Some(r.action),
        r.target,
        Some(r.outcome),
        r.detail,
    ] {
        field(&mut h, value.map(str::as_bytes));
    }
    h.finalize().to_vec()
}

fn field(h: &mut Sha256, value: Option<&[u8]>) {
    match value {
        None => h.update([0u8]),
        Some(bytes) => {
            h.update([1u8]);
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
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
