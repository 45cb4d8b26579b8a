//! Shared rate limits: the generic cell rate algorithm (GCRA) every backend runs in
//! one atomic statement, so that several lockbridge instances on one database draw
//! from one bucket per key.
//!
//! A bucket is one number, its *theoretical arrival time* (TAT): the instant at which
//! it would be full again. Taking `n` units moves the TAT `n` intervals later; the
//! bucket refuses what would put the TAT more than `burst` intervals ahead of now. A
//! bucket whose TAT has passed is full, so its row can be deleted at any time without
//! changing any decision (that is how backends prune).
//!
//! [`gcra`] is the rule written once in Rust: backends implement it in SQL, and the
//! conformance suite checks them against it.

use std::time::Duration;

/// Microseconds since the Unix epoch, the unit the buckets are kept in.
pub type Micros = i64;

/// A sustained rate (one unit per `interval`) and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateQuota {
    interval: Micros,
    burst: u32,
}

/// Longer than any limit lockbridge offers; keeps `burst × interval` far from overflow.
const MAX_WINDOW: Micros = 10 * 366 * 24 * 3600 * 1_000_000;

impl RateQuota {
    /// `None` when `interval` is under a microsecond, `burst` is 0, or the bucket
    /// would span more than ten years.
    pub fn new(interval: Duration, burst: u32) -> Option<RateQuota> {
        let interval = Micros::try_from(interval.as_micros()).ok()?;
        if interval < 1 || burst == 0 || interval.checked_mul(i64::from(burst))? > MAX_WINDOW {
            return None;
        }
        Some(RateQuota { interval, burst })
    }

    /// `count` units per `period` (spread evenly), with a burst of `burst` (0: `count`).
    pub fn per(period: Duration, count: u32, burst: u32) -> Option<RateQuota> {
        if count == 0 {
            return None;
        }
        RateQuota::new(period / count, if burst == 0 { count } else { burst })
    }

    /// The time one unit takes to come back, in microseconds.
    pub fn interval_micros(&self) -> Micros {
        self.interval
    }

    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// How far ahead of now a full-to-empty bucket's TAT may be.
    pub fn window_micros(&self) -> Micros {
        self.interval * i64::from(self.burst)
    }
}

/// What [`Store::take_rate`](super::Store::take_rate) gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    /// Units taken, from 0 to the number asked for.
    pub granted: u32,
    /// How long until the bucket holds one more unit (zero when it holds one now).
    pub retry_after: Duration,
}

impl RateDecision {
    /// At least one unit was taken.
    pub fn allowed(&self) -> bool {
        self.granted > 0
    }

    /// The decision for a bucket whose TAT is `tat` after the call at `now`, having
    /// granted `granted`: what a backend returns once its statement has run.
    pub fn after(quota: RateQuota, granted: u32, tat: Micros, now: Micros) -> RateDecision {
        let wait = tat - now - (quota.window_micros() - quota.interval);
        RateDecision {
            granted,
            retry_after: Duration::from_micros(u64::try_from(wait).unwrap_or(0)),
        }
    }
}

/// One take of up to `want` units at `now` from a bucket whose TAT is `tat` (`None`: no
/// row, a full bucket). Returns the new TAT and the units granted: as many as fit,
/// never more than `want`.
pub fn gcra(tat: Option<Micros>, now: Micros, quota: RateQuota, want: u32) -> (Micros, u32) {
    let base = tat.unwrap_or(now).max(now);
    let room = (quota.window_micros() - (base - now)).max(0) / quota.interval;
    let granted = room.min(i64::from(want));
    // `granted` ≤ `want`, a u32.
    let granted_u32 = u32::try_from(granted).unwrap_or(0);
    (base + granted * quota.interval, granted_u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SEC: Micros = 1_000_000;

    fn quota(interval_ms: u64, burst: u32) -> RateQuota {
        RateQuota::new(Duration::from_millis(interval_ms), burst).expect("quota")
    }

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_per_interval() {
        let q = quota(1000, 3);
        let mut tat = None;
        for _ in 0..3 {
            let (t, granted) = gcra(tat, 0, q, 1);
            assert_eq!(granted, 1);
            tat = Some(t);
        }
        let (t, granted) = gcra(tat, 0, q, 1);
        assert_eq!(granted, 0, "the fourth at once is refused");
        assert_eq!(t, 3 * SEC);
        assert_eq!(
            RateDecision::after(q, 0, t, 0).retry_after,
            Duration::from_secs(1)
        );
        // One interval later exactly one more unit.
        assert_eq!(gcra(Some(t), SEC, q, 5).1, 1);
        // Long after, the bucket is full again.
        assert_eq!(gcra(Some(t), 100 * SEC, q, 5).1, 3);
    }

    #[test]
    fn a_take_larger_than_what_is_left_gets_what_is_left() {
        let q = quota(100, 10);
        let (t, granted) = gcra(None, 0, q, 7);
        assert_eq!(granted, 7);
        let (t, granted) = gcra(Some(t), 0, q, 7);
        assert_eq!(granted, 3);
        assert_eq!(RateDecision::after(q, 3, t, 0).retry_after.as_millis(), 100);
        assert_eq!(gcra(Some(t), 0, q, 7).1, 0);
    }

    #[test]
    fn quotas_refuse_nonsense() {
        assert!(RateQuota::new(Duration::ZERO, 1).is_none());
        assert!(RateQuota::new(Duration::from_secs(1), 0).is_none());
        assert!(RateQuota::new(Duration::from_secs(3600 * 24 * 365), 100).is_none());
        assert!(RateQuota::per(Duration::from_secs(60), 0, 5).is_none());
        let q = RateQuota::per(Duration::from_secs(60), 30, 0).expect("quota");
        assert_eq!((q.interval_micros(), q.burst()), (2 * SEC, 30));
    }

    proptest! {
        /// Over any sequence of takes, a bucket never grants more than its burst plus
        /// what the elapsed time refilled, never more than asked, and never leaves the
        /// TAT more than the burst ahead of now. Counted from a full bucket at 0.
        #[test]
        fn grants_never_exceed_burst_plus_refill(
            interval in 1i64..5_000,
            burst in 1u32..50,
            steps in proptest::collection::vec((0i64..3_000, 0u32..20), 1..60),
        ) {
            let q = RateQuota::new(Duration::from_micros(interval as u64), burst).expect("quota");
            let mut tat = None;
            let mut now = 0;
            let mut total: i64 = 0;
            for (advance, want) in steps {
                now += advance;
                let before = tat;
                let (t, granted) = gcra(tat, now, q, want);
                prop_assert!(granted <= want);
                prop_assert!(t - now <= q.window_micros());
                prop_assert!(t >= before.unwrap_or(now).max(now));
                total += i64::from(granted);
                prop_assert!(total <= i64::from(burst) + now / interval);
                // Refused only when not even one unit fits.
                if granted < want {
                    let decision = RateDecision::after(q, granted, t, now);
                    prop_assert!(!decision.retry_after.is_zero());
                    prop_assert_eq!(gcra(Some(t), now, q, 1).1, 0);
                }
                tat = Some(t);
            }
        }

        /// Taking n at once grants exactly what n takes of one grant, so leasing a
        /// chunk is never more generous than asking one by one.
        #[test]
        fn one_take_of_n_is_n_takes_of_one(
            interval in 1i64..5_000,
            burst in 1u32..50,
            start in proptest::option::of(-10_000i64..200_000),
            want in 0u32..60,
        ) {
            let q = RateQuota::new(Duration::from_micros(interval as u64), burst).expect("quota");
            let now = 100_000;
            let (t_all, all) = gcra(start, now, q, want);
            let mut tat = start;
            let mut ones = 0;
            for _ in 0..want {
                let (t, g) = gcra(tat, now, q, 1);
                ones += g;
                tat = Some(t);
            }
            prop_assert_eq!(all, ones);
            prop_assert_eq!(t_all, tat.unwrap_or(now).max(now));
        }
    }
}
