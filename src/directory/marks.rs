//! Entries lockbridge is writing, or wrote and has not heard of from the directory yet,
//! for a followed copy that serves reads: until the directory's report of a write (its
//! echo) has arrived, the copy must not answer for the entry as it was.
//!
//! A report that arrives while a write is still under way proves nothing: it may be the
//! echo of this write (the directory may tell its followers before it answers the
//! writer) or of an earlier change. So such a report does not lift the mark; a report
//! after the answer does. When none comes within [`HOLD`] of the answer, the echo must
//! have been the report that came while the write was under way (or the write changed
//! nothing): the mark is dropped then, and the caller told whether any report came at
//! all, since none at all may mean the stream has stopped delivering.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How long after the directory's answer a write's echo is waited for.
pub const HOLD: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Mark {
    /// Writes begun and not answered yet.
    under_way: u32,
    /// A report of the entry arrived while a write was under way.
    reported_while_under_way: bool,
    /// When the last write was answered.
    answered: Option<Instant>,
}

impl Mark {
    /// Answered [`HOLD`] before `now`, no write under way.
    fn settled_at(&self, now: Instant) -> bool {
        self.under_way == 0
            && self
                .answered
                .is_some_and(|at| now.saturating_duration_since(at) >= HOLD)
    }
}

/// What [`Marks::expire`] found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Marks dropped [`HOLD`] after their answer, a report having come while under way.
    pub settled: usize,
    /// The keys of marks dropped [`HOLD`] after their answer without any report of the
    /// entry (the write changed nothing, the entry is not one the stream follows, or the
    /// stream stopped delivering).
    pub unreported: Vec<String>,
}

/// Marks by [`super::dn_key`] of the entry written.
#[derive(Debug, Default)]
pub struct Marks {
    marks: HashMap<String, Mark>,
    /// Answers in the order they came, for [`Self::expire`] to find the settled marks
    /// without looking at every mark (an entry may be listed again after a newer answer).
    answered: VecDeque<(String, Instant)>,
}

impl Marks {
    /// A write of `key` begins.
    pub fn begin(&mut self, key: &str) {
        match self.marks.get_mut(key) {
            Some(mark) => mark.under_way += 1,
            None => {
                self.marks.insert(
                    key.to_owned(),
                    Mark {
                        under_way: 1,
                        ..Mark::default()
                    },
                );
            }
        }
    }

    /// The directory answered a write of `key` (successfully or not).
    pub fn end(&mut self, key: &str, now: Instant) {
        if let Some(mark) = self.marks.get_mut(key) {
            mark.under_way = mark.under_way.saturating_sub(1);
            mark.answered = Some(now);
            self.answered.push_back((key.to_owned(), now));
        }
    }

    /// The directory reported a change of `key`.
    pub fn reported(&mut self, key: &str) {
        let Some(mark) = self.marks.get_mut(key) else {
            return;
        };
        if mark.under_way == 0 {
            self.marks.remove(key);
        } else {
            mark.reported_while_under_way = true;
        }
    }

    /// Drops the marks answered more than [`HOLD`] before `now`. Costs the answers it
    /// passes, not the marks held.
    pub fn expire(&mut self, now: Instant) -> Expired {
        let mut expired = Expired::default();
        while let Some((key, at)) = self.answered.front() {
            if now.saturating_duration_since(*at) < HOLD {
                break;
            }
            if let Some(mark) = self.marks.get(key)
                && mark.answered == Some(*at)
                && mark.settled_at(now)
            {
                if mark.reported_while_under_way {
                    expired.settled += 1;
                } else {
                    expired.unreported.push(key.clone());
                }
                self.marks.remove(key);
            }
            self.answered.pop_front();
        }
        expired
    }

    /// Whether `key` is marked at `now` (a mark answered [`HOLD`] ago no longer holds,
    /// whether or not [`Self::expire`] has dropped it yet).
    pub fn holds(&self, key: &str, now: Instant) -> bool {
        self.marks
            .get(key)
            .is_some_and(|mark| !mark.settled_at(now))
    }

    /// Whether any mark holds at `now`.
    pub fn any_holds(&self, now: Instant) -> bool {
        self.marks.values().any(|mark| !mark.settled_at(now))
    }

    pub fn is_empty(&self) -> bool {
        self.marks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_lifts_a_mark_only_after_the_answer() {
        let now = Instant::now();
        let mut marks = Marks::default();
        marks.begin("a");
        assert!(marks.holds("a", now));
        // An earlier change's echo, or this one's before the answer: not enough.
        marks.reported("a");
        assert!(marks.holds("a", now));
        marks.end("a", now);
        assert!(marks.holds("a", now));
        marks.reported("a");
        assert!(!marks.holds("a", now), "a report after the answer");
        assert!(marks.is_empty());
    }

    #[test]
    fn two_writes_of_one_entry_wait_for_the_second_answer() {
        let now = Instant::now();
        let mut marks = Marks::default();
        marks.begin("a");
        marks.begin("a");
        marks.end("a", now);
        // The first write's echo while the second is under way.
        marks.reported("a");
        assert!(marks.holds("a", now));
        marks.end("a", now);
        marks.reported("a");
        assert!(!marks.holds("a", now));
    }

    #[test]
    fn an_echo_that_came_first_settles_after_the_hold() {
        let now = Instant::now();
        let mut marks = Marks::default();
        marks.begin("echoed");
        marks.reported("echoed");
        marks.end("echoed", now);
        marks.begin("silent");
        marks.end("silent", now);
        marks.begin("under way");
        assert_eq!(marks.expire(now + HOLD / 2), Expired::default());
        assert!(marks.holds("echoed", now) && marks.holds("silent", now));
        assert_eq!(
            marks.expire(now + HOLD),
            Expired {
                settled: 1,
                unreported: vec!["silent".to_owned()]
            }
        );
        assert!(!marks.holds("echoed", now) && !marks.holds("silent", now));
        assert!(
            marks.holds("under way", now),
            "never dropped while under way"
        );
    }
}
