//! Audited writes under way whose audit record is not queued yet, so that an audit
//! writer can tell whether a record is about to follow the ones it holds.
//!
//! Why: a password push appends its record after the directory answered its write, and
//! with several pushes in flight their records reach the writer half a millisecond apart.
//! Committed as they come, each one costs a synced commit of its own (one `fsync` per
//! push, measured in bench/README.md). When the writer knows more are coming, it waits
//! [`GATHER_WAIT`] so that they share one. A request's own announcement ends before its
//! record is queued, so a lone push never waits.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How long an audit writer waits for the records of writes announced as under way
/// before it commits what it holds.
pub const GATHER_WAIT: Duration = Duration::from_millis(1);

/// Counts the announced writes; clones share the count.
#[derive(Debug, Clone, Default)]
pub struct PendingAudit(Arc<AtomicUsize>);

impl PendingAudit {
    /// Announces a write whose record will follow; the count drops with the guard.
    pub fn announce(&self) -> AnnouncedRecord {
        self.0.fetch_add(1, Ordering::Relaxed);
        AnnouncedRecord(self.0.clone())
    }

    /// Whether a write has been announced and its record not queued yet.
    pub fn any(&self) -> bool {
        self.0.load(Ordering::Relaxed) > 0
    }
}

/// One announced write: drop it just before appending its record (or when the write is
/// abandoned), so that the writer never waits for a record it already holds.
#[derive(Debug)]
#[must_use = "the announcement ends when this is dropped"]
pub struct AnnouncedRecord(Arc<AtomicUsize>);

impl Drop for AnnouncedRecord {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_announcement_counts_until_it_is_dropped() {
        let pending = PendingAudit::default();
        assert!(!pending.any());
        let first = pending.announce();
        let second = pending.clone().announce();
        assert!(pending.any());
        drop(first);
        assert!(pending.any(), "one is still under way");
        drop(second);
        assert!(!pending.any());
    }
}
