//! Password expiry: when a password expires, which advance notice is due on
//! a given day, and the key that makes each notice happen once.
//!
//! Pure: the caller passes the clock (`now`), the organisation's time zone,
//! the [`ExpiryPolicy`] and the directory's [`PasswordFacts`] for one user;
//! [`evaluate`] answers with an [`Evaluation`]. The sweep (`crate::sweep`)
//! runs it for every user and records each [`Notice`] under its
//! [`ledger_key`], so that a notice is queued at most once.
//!
//! # When a password expires
//!
//! A password changed at `changed_at` expires at exactly
//! `changed_at + max_age_days × 86 400 s`: the instant at which an LDAP
//! password policy (`pwdMaxAge`, in seconds) expires it too. Across a
//! daylight-saving change the wall-clock time of expiry therefore differs by
//! the shift from the wall-clock time of the change; the instant is what the
//! directory enforces, so it is what [`Evaluation`] reports.
//!
//! # Days left are calendar days in the organisation's time zone
//!
//! `days_left` is the number of calendar days between today's date and the
//! expiry's date, both taken in the configured time zone: 0 when the
//! password expires later today, 1 when it expires tomorrow (at any hour).
//! A sweep that runs at 06:00 local time thus sends "expires in 3 days" on
//! the same calendar day whatever the hour of expiry and whether or not a
//! daylight-saving change lies in between. (Counting 24-hour periods instead
//! would send it a day early or late whenever expiry is near midnight.)
//!
//! # Which notice is due
//!
//! The policy's thresholds (default 14, 7, 3 and 1 days) are the days left
//! at which users are warned. On a given day the due notice is the one for
//! the **smallest threshold not below `days_left`**: the most urgent
//! threshold already crossed. From 30 days before expiry a daily sweep thus
//! sends 14, 7, 3, 1 and then [`Notice::Expired`], one each. A user first
//! seen with 2 days left (the feature was just enabled, or the password was
//! changed with a short per-user maximum age) gets the 3-day notice only,
//! not the 14- and 7-day ones too; a user first seen with 10 days left gets
//! the 14-day notice ("expires in 10 days"), then 7, 3 and 1. Turning the
//! feature on therefore sends each user at most one notice that day.
//! A sweep that misses days skips the thresholds crossed meanwhile and sends
//! only the most urgent one.
//!
//! Thresholds not below the user's maximum age are ignored: a notice that
//! early would be due the moment the password is changed.
//! [`ExpiryPolicy::validate`] refuses them for the organisation's policy; a
//! per-user policy with a shorter maximum age just uses the thresholds that
//! fit (with a 7-day maximum age: 3 and 1).
//!
//! # What the directory tells, and how each case is treated
//!
//! | [`PasswordFacts`]                                   | [`Evaluation`]    |
//! |-----------------------------------------------------|-------------------|
//! | `never_expires` (the account's "password never expires" flag) | [`NeverExpires`](Evaluation::NeverExpires) |
//! | the user's own policy has no maximum age ([`MaxAge::Never`], ppolicy `pwdMaxAge` 0) | [`NeverExpires`](Evaluation::NeverExpires) |
//! | [`MaxAge::OrgPolicy`] and the organisation's `max_age_days` is unset | [`NeverExpires`](Evaluation::NeverExpires) |
//! | no `changed_at` (no `pwdChangedTime`: the password was never set, or set before the policy was in place) | [`NoChangeTime`](Evaluation::NoChangeTime): counted and reported, never notified nor acted on |
//! | otherwise                                           | `NotDue`, `Due` or `Expired` |
//!
//! The checks are made in that order, so an account that never expires is
//! reported as such even when it has no change time. An account without a
//! change time is not notified: lockbridge cannot tell when its password
//! expires (ppolicy does not expire it either), and guessing would mail the
//! whole directory on the first sweep.
//!
//! # The ledger key
//!
//! [`ledger_key`] is `"{user_id}|{changed_at}|{notice}"`, for instance
//! `bob|2025-03-01T10:00:00Z|t14` or `bob|2025-03-01T10:00:00Z|expired`,
//! with `changed_at` in RFC 3339, UTC, `Z`, and fractional seconds only when
//! there are any. A new password has a new `changed_at`, so a user who
//! changes the password starts afresh; a re-run, a crash or a second
//! instance finds the key already taken.

use std::fmt;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeDelta, Utc};
use chrono_tz::Tz;

/// The notice thresholds of [`ExpiryPolicy::default`], in days before expiry.
pub const DEFAULT_THRESHOLDS_DAYS: [u32; 4] = [14, 7, 3, 1];

/// Largest notice threshold [`ExpiryPolicy::validate`] accepts, in days.
pub const MAX_THRESHOLD_DAYS: u32 = 365;

/// Largest `max_age_days` [`ExpiryPolicy::validate`] accepts (ten years).
/// Microsoft 365 allows up to 730 days.
pub const MAX_MAX_AGE_DAYS: u32 = 3650;

const SECONDS_PER_DAY: u64 = 86_400;

/// What lockbridge does once a password has expired (besides the
/// [`Notice::Expired`] notice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ExpiryAction {
    /// Nothing: the directory's own policy, if any, decides. The default.
    #[default]
    Nothing,
    /// Mark the password as one the user must change at next sign-in.
    RequireChange,
    /// Lock the account.
    Lock,
}

/// The organisation's password expiry policy.
///
/// The default follows Microsoft 365, where passwords never expire by
/// default: `max_age_days` unset, thresholds 14, 7, 3 and 1 days (used when
/// a per-user policy sets a maximum age), and [`ExpiryAction::Nothing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiryPolicy {
    /// Days after a change at which a password expires, 1..=3650, or `None`
    /// for passwords that never expire. Default `None`.
    pub max_age_days: Option<u32>,
    /// Days before expiry at which users are warned, each 1..=365, each
    /// once, in any order, and all less than `max_age_days`. May be empty:
    /// then only [`Notice::Expired`] is sent. Default 14, 7, 3, 1.
    pub thresholds_days: Vec<u32>,
    /// What happens once a password has expired. Default
    /// [`ExpiryAction::Nothing`].
    pub on_expiry: ExpiryAction,
}

impl Default for ExpiryPolicy {
    fn default() -> Self {
        Self {
            max_age_days: None,
            thresholds_days: DEFAULT_THRESHOLDS_DAYS.to_vec(),
            on_expiry: ExpiryAction::Nothing,
        }
    }
}

impl ExpiryPolicy {
    /// Checks that the policy makes sense; the error is one sentence that
    /// names the field at fault, for configuration loading.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(days) = self.max_age_days
            && !(1..=MAX_MAX_AGE_DAYS).contains(&days)
        {
            return Err(format!(
                "max_age_days is {days}; it must be between 1 and {MAX_MAX_AGE_DAYS}, or unset for passwords that never expire"
            ));
        }
        let mut seen = Vec::with_capacity(self.thresholds_days.len());
        for &days in &self.thresholds_days {
            if !(1..=MAX_THRESHOLD_DAYS).contains(&days) {
                return Err(format!(
                    "thresholds_days contains {days}; each threshold must be between 1 and {MAX_THRESHOLD_DAYS} days"
                ));
            }
            if seen.contains(&days) {
                return Err(format!(
                    "thresholds_days contains {days} more than once; each threshold must appear once"
                ));
            }
            if let Some(max_age) = self.max_age_days
                && days >= max_age
            {
                return Err(format!(
                    "thresholds_days contains {days}, which is not less than max_age_days ({max_age}), so its notice would be due as soon as a password is changed"
                ));
            }
            seen.push(days);
        }
        Ok(())
    }
}

/// The maximum password age that applies to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MaxAge {
    /// No policy of the user's own: the organisation's
    /// [`ExpiryPolicy::max_age_days`] applies. The default.
    #[default]
    OrgPolicy,
    /// The user's own policy (for instance the ppolicy entry named by the
    /// user's `pwdPolicySubentry`): the password expires this many days
    /// after a change. `Days(0)` means no maximum, as `pwdMaxAge: 0` does.
    Days(u32),
    /// The user's own policy has no maximum age (ppolicy `pwdMaxAge: 0`).
    Never,
}

impl MaxAge {
    /// The user's own policy from a ppolicy `pwdMaxAge` (seconds): 0 is
    /// [`MaxAge::Never`]; otherwise whole days, a part day rounded up, so
    /// that lockbridge never acts on expiry before the directory does.
    pub fn from_pwd_max_age(seconds: u64) -> Self {
        if seconds == 0 {
            return Self::Never;
        }
        let days = seconds.div_ceil(SECONDS_PER_DAY);
        Self::Days(u32::try_from(days).unwrap_or(u32::MAX))
    }
}

/// What the directory tells about one user's password.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PasswordFacts {
    /// When the password was last set (ppolicy `pwdChangedTime`); `None`
    /// when the directory has no such time: the password was never set, or
    /// was set before the policy overlay recorded change times.
    pub changed_at: Option<DateTime<Utc>>,
    /// The account's "password never expires" flag.
    pub never_expires: bool,
    /// The maximum age that applies to this user.
    pub max_age: MaxAge,
}

/// One notice to send about a password, identified by [`Notice::key`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Notice {
    /// The password expires in this many days or fewer (a policy threshold).
    Threshold(u32),
    /// The password has expired.
    Expired,
}

impl Notice {
    /// A stable, short name for the notice, part of [`ledger_key`]: `t14`
    /// for `Threshold(14)`, `expired` for `Expired`.
    pub fn key(&self) -> String {
        match self {
            Self::Threshold(days) => format!("t{days}"),
            Self::Expired => "expired".to_string(),
        }
    }

    /// The notice named by [`key`](Self::key), or `None` for any other text.
    pub fn from_key(key: &str) -> Option<Self> {
        if key == "expired" {
            return Some(Self::Expired);
        }
        let digits = key.strip_prefix('t')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let days = digits.parse().ok()?;
        (Self::Threshold(days).key() == key).then_some(Self::Threshold(days))
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// Where one user's password stands on a given day, from [`evaluate`]. Days
/// are calendar days in the organisation's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Evaluation {
    /// The password does not expire: the account's flag, the user's own
    /// policy, or no maximum age in the organisation's policy.
    NeverExpires,
    /// The password expires, but the directory has no change time for it;
    /// to be reported, not notified.
    NoChangeTime,
    /// The password expires, and no notice is due yet.
    NotDue {
        /// When the password expires.
        expires_at: DateTime<Utc>,
        /// Calendar days from today to the day of expiry.
        days_left: u32,
    },
    /// A warning is due (it may already have been sent: see [`ledger_key`]).
    Due {
        /// When the password expires.
        expires_at: DateTime<Utc>,
        /// Calendar days from today to the day of expiry; 0 when it expires
        /// later today.
        days_left: u32,
        /// Always a [`Notice::Threshold`], at least `days_left`.
        notice: Notice,
    },
    /// The password has expired; [`Notice::Expired`] is due and the
    /// policy's [`ExpiryAction`] applies.
    Expired {
        /// When the password expired.
        expired_at: DateTime<Utc>,
        /// Calendar days from the day of expiry to today; 0 when it expired
        /// earlier today.
        days_ago: u32,
    },
}

impl Evaluation {
    /// The notice due, if any: the threshold notice of
    /// [`Due`](Self::Due), or [`Notice::Expired`] for
    /// [`Expired`](Self::Expired).
    pub fn notice(&self) -> Option<Notice> {
        match self {
            Self::Due { notice, .. } => Some(*notice),
            Self::Expired { .. } => Some(Notice::Expired),
            Self::NeverExpires | Self::NoChangeTime | Self::NotDue { .. } => None,
        }
    }

    /// When the password expires or expired, if that is known.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::NotDue { expires_at, .. } | Self::Due { expires_at, .. } => Some(*expires_at),
            Self::Expired { expired_at, .. } => Some(*expired_at),
            Self::NeverExpires | Self::NoChangeTime => None,
        }
    }
}

/// Where `facts`' password stands at `now` under `policy`, counting days in
/// the time zone `tz`.
///
/// In order: the account's never-expires flag, a maximum age of "never"
/// (the user's own policy, or the organisation's when the user has none)
/// and an expiry beyond the range of [`DateTime`] give
/// [`NeverExpires`](Evaluation::NeverExpires); a missing change time gives
/// [`NoChangeTime`](Evaluation::NoChangeTime). Otherwise the password
/// expires `max_age × 86 400 s` after its change, `days_left` counts
/// calendar days in `tz` from `now`'s date to the expiry's date, and the
/// notice due is the smallest threshold (among those below the maximum age)
/// that is not below `days_left`; from the expiry instant on,
/// [`Notice::Expired`].
///
/// `policy` is expected to have passed [`ExpiryPolicy::validate`]; if not,
/// out-of-range thresholds are still handled as described (a maximum age of
/// 0 days means "never", thresholds not below the maximum age are ignored).
pub fn evaluate(
    now: DateTime<Utc>,
    tz: Tz,
    policy: &ExpiryPolicy,
    facts: &PasswordFacts,
) -> Evaluation {
    if facts.never_expires {
        return Evaluation::NeverExpires;
    }
    let max_age_days = match facts.max_age {
        MaxAge::OrgPolicy => policy.max_age_days,
        MaxAge::Days(days) => Some(days),
        MaxAge::Never => None,
    };
    let Some(max_age_days) = max_age_days.filter(|&days| days > 0) else {
        return Evaluation::NeverExpires;
    };
    let Some(changed_at) = facts.changed_at else {
        return Evaluation::NoChangeTime;
    };
    let Some(expires_at) = TimeDelta::try_days(i64::from(max_age_days))
        .and_then(|age| changed_at.checked_add_signed(age))
    else {
        return Evaluation::NeverExpires;
    };
    let today = local_date(now, tz);
    let expiry_day = local_date(expires_at, tz);
    if now >= expires_at {
        return Evaluation::Expired {
            expired_at: expires_at,
            days_ago: days_between(expiry_day, today),
        };
    }
    let days_left = days_between(today, expiry_day);
    let due = policy
        .thresholds_days
        .iter()
        .copied()
        .filter(|&threshold| threshold < max_age_days && days_left <= threshold)
        .min();
    match due {
        Some(threshold) => Evaluation::Due {
            expires_at,
            days_left,
            notice: Notice::Threshold(threshold),
        },
        None => Evaluation::NotDue {
            expires_at,
            days_left,
        },
    }
}

/// The key under which the sweep records that `notice` was queued for the
/// password `user_id` set at `changed_at`: `"{user_id}|{changed_at}|{key}"`,
/// e.g. `bob|2025-03-01T10:00:00Z|t14`, with `changed_at` in RFC 3339, UTC,
/// `Z`, fractional seconds only when there are any.
///
/// `user_id` should be stable across renames (an `entryUUID` rather than a
/// DN). It may contain `|`: the last two parts never do, so splitting from
/// the right is unambiguous.
pub fn ledger_key(user_id: &str, changed_at: DateTime<Utc>, notice: &Notice) -> String {
    format!(
        "{user_id}|{}|{}",
        changed_at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        notice.key()
    )
}

fn local_date(at: DateTime<Utc>, tz: Tz) -> NaiveDate {
    at.with_timezone(&tz).date_naive()
}

/// Whole calendar days from `from` to `to`, 0 if `to` is earlier.
fn days_between(from: NaiveDate, to: NaiveDate) -> u32 {
    let days = to.signed_duration_since(from).num_days().max(0);
    u32::try_from(days).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::{NaiveDateTime, TimeZone};
    use chrono_tz::Tz;
    use proptest::prelude::*;
    use rstest::rstest;

    use super::*;

    const BERLIN: Tz = chrono_tz::Europe::Berlin;
    const NEW_YORK: Tz = chrono_tz::America::New_York;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a test instant")
            .with_timezone(&Utc)
    }

    /// `text` ("2025-03-29 06:00") as wall-clock time in `tz` (must exist
    /// and be unambiguous).
    fn local(tz: Tz, text: &str) -> DateTime<Utc> {
        let naive =
            NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M").expect("a test local time");
        tz.from_local_datetime(&naive)
            .single()
            .expect("an existing local time")
            .with_timezone(&Utc)
    }

    fn policy(max_age_days: u32) -> ExpiryPolicy {
        ExpiryPolicy {
            max_age_days: Some(max_age_days),
            ..ExpiryPolicy::default()
        }
    }

    fn changed(at: DateTime<Utc>) -> PasswordFacts {
        PasswordFacts {
            changed_at: Some(at),
            ..PasswordFacts::default()
        }
    }

    /// A shorthand of an evaluation for tables: "never", "no-change-time",
    /// "not-due 30", "t14 10" (notice, days left), "expired 2" (days ago).
    fn short(evaluation: Evaluation) -> String {
        match evaluation {
            Evaluation::NeverExpires => "never".to_string(),
            Evaluation::NoChangeTime => "no-change-time".to_string(),
            Evaluation::NotDue { days_left, .. } => format!("not-due {days_left}"),
            Evaluation::Due {
                notice, days_left, ..
            } => format!("{notice} {days_left}"),
            Evaluation::Expired { days_ago, .. } => format!("expired {days_ago}"),
        }
    }

    #[test]
    fn default_policy_never_expires_and_warns_14_7_3_1_days_ahead() {
        let policy = ExpiryPolicy::default();
        assert_eq!(policy.max_age_days, None);
        assert_eq!(policy.thresholds_days, vec![14, 7, 3, 1]);
        assert_eq!(policy.on_expiry, ExpiryAction::Nothing);
        assert_eq!(policy.validate(), Ok(()));
        let facts = changed(utc("2020-01-01T00:00:00Z"));
        assert_eq!(
            evaluate(utc("2030-01-01T00:00:00Z"), BERLIN, &policy, &facts),
            Evaluation::NeverExpires
        );
    }

    #[rstest]
    #[case::max_age_0(|p: &mut ExpiryPolicy| p.max_age_days = Some(0), "max_age_days is 0;")]
    #[case::max_age_too_long(|p: &mut ExpiryPolicy| p.max_age_days = Some(3651), "max_age_days is 3651;")]
    #[case::threshold_0(|p: &mut ExpiryPolicy| p.thresholds_days = vec![14, 0], "thresholds_days contains 0;")]
    #[case::threshold_too_far(|p: &mut ExpiryPolicy| p.thresholds_days = vec![366], "thresholds_days contains 366;")]
    #[case::duplicate(|p: &mut ExpiryPolicy| p.thresholds_days = vec![7, 3, 7], "thresholds_days contains 7 more than once;")]
    #[case::threshold_at_max_age(|p: &mut ExpiryPolicy| { p.max_age_days = Some(14); }, "thresholds_days contains 14, which is not less than max_age_days (14)")]
    #[case::threshold_over_max_age(|p: &mut ExpiryPolicy| { p.max_age_days = Some(10); p.thresholds_days = vec![3, 30]; }, "thresholds_days contains 30, which is not less than max_age_days (10)")]
    fn validate_names_the_field_at_fault(
        #[case] change: fn(&mut ExpiryPolicy),
        #[case] expected: &str,
    ) {
        let mut policy = ExpiryPolicy::default();
        change(&mut policy);
        let error = policy.validate().expect_err("this policy is not sane");
        assert!(
            error.starts_with(expected),
            "{error:?} should start with {expected:?}"
        );
        assert!(!error.contains('\n'), "{error:?} is not one sentence");
    }

    #[rstest]
    #[case::default(|_: &mut ExpiryPolicy| {})]
    #[case::ninety_days(|p: &mut ExpiryPolicy| p.max_age_days = Some(90))]
    #[case::no_thresholds(|p: &mut ExpiryPolicy| { p.max_age_days = Some(1); p.thresholds_days.clear(); })]
    #[case::any_order(|p: &mut ExpiryPolicy| { p.max_age_days = Some(365); p.thresholds_days = vec![1, 30, 7, 364]; })]
    #[case::longest(|p: &mut ExpiryPolicy| { p.max_age_days = Some(3650); p.thresholds_days = vec![365]; p.on_expiry = ExpiryAction::Lock; })]
    fn validate_accepts_sane_policies(#[case] change: fn(&mut ExpiryPolicy)) {
        let mut policy = ExpiryPolicy::default();
        change(&mut policy);
        assert_eq!(policy.validate(), Ok(()));
    }

    /// Changed 2025-01-01 12:00 UTC, 90 days: expires 2025-04-01 12:00 UTC.
    #[rstest]
    #[case("2025-01-02T00:00:00Z", "not-due 89")]
    #[case("2025-03-17T11:00:00Z", "not-due 15")]
    #[case("2025-03-18T00:00:00Z", "t14 14")]
    #[case("2025-03-22T23:59:59Z", "t14 10")]
    #[case("2025-03-25T00:00:00Z", "t7 7")]
    #[case("2025-03-28T00:00:00Z", "t7 4")]
    #[case("2025-03-29T00:00:00Z", "t3 3")]
    #[case("2025-03-30T00:00:00Z", "t3 2")]
    #[case("2025-03-31T23:59:59Z", "t1 1")]
    #[case::later_today("2025-04-01T11:59:59Z", "t1 0")]
    #[case::at_expiry("2025-04-01T12:00:00Z", "expired 0")]
    #[case("2025-04-03T06:00:00Z", "expired 2")]
    fn the_most_urgent_crossed_threshold_is_due(#[case] now: &str, #[case] expected: &str) {
        let facts = changed(utc("2025-01-01T12:00:00Z"));
        let evaluation = evaluate(utc(now), Tz::UTC, &policy(90), &facts);
        assert_eq!(short(evaluation), expected);
        if let Some(expires_at) = evaluation.expires_at() {
            assert_eq!(expires_at, utc("2025-04-01T12:00:00Z"));
        }
    }

    #[rstest]
    #[case::flag(PasswordFacts { never_expires: true, ..changed(utc("2020-01-01T00:00:00Z")) }, Some(30), "never")]
    #[case::flag_beats_user_policy(PasswordFacts { never_expires: true, max_age: MaxAge::Days(1), ..changed(utc("2020-01-01T00:00:00Z")) }, Some(30), "never")]
    #[case::flag_without_change_time(PasswordFacts { never_expires: true, ..PasswordFacts::default() }, Some(30), "never")]
    #[case::user_policy_never(PasswordFacts { max_age: MaxAge::Never, ..changed(utc("2020-01-01T00:00:00Z")) }, Some(30), "never")]
    #[case::user_policy_0_days(PasswordFacts { max_age: MaxAge::Days(0), ..changed(utc("2020-01-01T00:00:00Z")) }, Some(30), "never")]
    #[case::org_never(changed(utc("2020-01-01T00:00:00Z")), None, "never")]
    #[case::org_never_no_change_time(PasswordFacts::default(), None, "never")]
    #[case::no_change_time(PasswordFacts::default(), Some(30), "no-change-time")]
    #[case::no_change_time_user_policy(PasswordFacts { max_age: MaxAge::Days(30), ..PasswordFacts::default() }, None, "no-change-time")]
    #[case::user_policy_beats_org_never(PasswordFacts { max_age: MaxAge::Days(40), ..changed(utc("2025-01-01T00:00:00Z")) }, None, "not-due 30")]
    #[case::user_policy_longer(PasswordFacts { max_age: MaxAge::Days(180), ..changed(utc("2025-01-01T00:00:00Z")) }, Some(30), "not-due 170")]
    #[case::user_policy_shorter(PasswordFacts { max_age: MaxAge::Days(12), ..changed(utc("2025-01-01T00:00:00Z")) }, Some(90), "t3 2")]
    #[case::org_policy(changed(utc("2025-01-01T00:00:00Z")), Some(20), "t14 10")]
    #[case::beyond_time(PasswordFacts { max_age: MaxAge::Days(u32::MAX), ..changed(utc("2025-01-01T00:00:00Z")) }, None, "never")]
    fn facts_and_policies(
        #[case] facts: PasswordFacts,
        #[case] org_max_age_days: Option<u32>,
        #[case] expected: &str,
    ) {
        let policy = ExpiryPolicy {
            max_age_days: org_max_age_days,
            ..ExpiryPolicy::default()
        };
        let now = utc("2025-01-11T00:00:00Z");
        assert_eq!(short(evaluate(now, Tz::UTC, &policy, &facts)), expected);
    }

    #[test]
    fn thresholds_not_below_a_short_user_max_age_are_ignored() {
        let facts = PasswordFacts {
            max_age: MaxAge::Days(7),
            ..changed(utc("2025-01-01T09:00:00Z"))
        };
        let policy = ExpiryPolicy::default();
        let on = |day: u32| {
            let now = Utc
                .with_ymd_and_hms(2025, 1, day, 10, 0, 0)
                .single()
                .expect("a date");
            short(evaluate(now, Tz::UTC, &policy, &facts))
        };
        assert_eq!(on(1), "not-due 7", "not t7 right after the change");
        assert_eq!(on(4), "not-due 4");
        assert_eq!(on(5), "t3 3");
        assert_eq!(on(7), "t1 1");
        assert_eq!(on(8), "expired 0");
    }

    #[test]
    fn no_thresholds_means_only_the_expired_notice() {
        let policy = ExpiryPolicy {
            max_age_days: Some(30),
            thresholds_days: Vec::new(),
            on_expiry: ExpiryAction::RequireChange,
        };
        let facts = changed(utc("2025-01-01T00:00:00Z"));
        let before = evaluate(utc("2025-01-30T23:00:00Z"), Tz::UTC, &policy, &facts);
        assert_eq!(short(before), "not-due 1");
        let after = evaluate(utc("2025-01-31T00:00:00Z"), Tz::UTC, &policy, &facts);
        assert_eq!(after.notice(), Some(Notice::Expired));
    }

    #[test]
    fn expiry_is_exactly_max_age_times_86400_seconds_after_the_change() {
        // Changed 2025-03-01 10:00 CET (09:00 UTC); 90 days later Berlin is
        // on summer time, so the password expires at 11:00 local time.
        let facts = changed(local(BERLIN, "2025-03-01 10:00"));
        let evaluation = evaluate(
            local(BERLIN, "2025-05-20 06:00"),
            BERLIN,
            &policy(90),
            &facts,
        );
        let expires_at = evaluation.expires_at().expect("it expires");
        assert_eq!(expires_at, utc("2025-05-30T09:00:00Z"));
        assert_eq!(expires_at, local(BERLIN, "2025-05-30 11:00"));
    }

    #[rstest]
    // Berlin springs forward on 2025-03-30 at 02:00 CET -> 03:00 CEST.
    // Changed 2024-12-30 02:30 CET: expires 2025-03-30 01:30 UTC = 03:30 CEST,
    // right after the change.
    #[case::berlin_spring(BERLIN, "2024-12-30 02:30", "2025-03-23 06:00", "t7 7")]
    #[case::berlin_spring(BERLIN, "2024-12-30 02:30", "2025-03-26 06:00", "t7 4")]
    #[case::berlin_spring(BERLIN, "2024-12-30 02:30", "2025-03-27 06:00", "t3 3")]
    #[case::berlin_spring(BERLIN, "2024-12-30 02:30", "2025-03-29 06:00", "t1 1")]
    #[case::berlin_spring(BERLIN, "2024-12-30 02:30", "2025-03-30 01:59", "t1 0")]
    #[case::berlin_spring(BERLIN, "2024-12-30 02:30", "2025-03-30 03:29", "t1 0")]
    #[case::berlin_spring(BERLIN, "2024-12-30 02:30", "2025-03-30 06:00", "expired 0")]
    #[case::berlin_spring(BERLIN, "2024-12-30 02:30", "2025-03-31 06:00", "expired 1")]
    // Changed 2025-01-10 23:30 CET (22:30 UTC): 90 × 24 h later is 00:30 CEST
    // on 2025-04-11, a day later by the calendar than the change's date + 90.
    #[case::berlin_midnight(BERLIN, "2025-01-10 23:30", "2025-04-10 06:00", "t1 1")]
    #[case::berlin_midnight(BERLIN, "2025-01-10 23:30", "2025-04-10 23:59", "t1 1")]
    #[case::berlin_midnight(BERLIN, "2025-01-10 23:30", "2025-04-11 00:10", "t1 0")]
    #[case::berlin_midnight(BERLIN, "2025-01-10 23:30", "2025-04-11 06:00", "expired 0")]
    // Berlin falls back on 2025-10-26 at 03:00 CEST -> 02:00 CET. Changed
    // 2025-07-28 03:30 CEST (01:30 UTC): expires 2025-10-26 01:30 UTC, which
    // is 02:30 CET, the second 02:30 of that night.
    #[case::berlin_fall(BERLIN, "2025-07-28 03:30", "2025-10-23 06:00", "t3 3")]
    #[case::berlin_fall(BERLIN, "2025-07-28 03:30", "2025-10-25 06:00", "t1 1")]
    #[case::berlin_fall(BERLIN, "2025-07-28 03:30", "2025-10-25 23:59", "t1 1")]
    #[case::berlin_fall(BERLIN, "2025-07-28 03:30", "2025-10-26 06:00", "expired 0")]
    #[case::berlin_fall(BERLIN, "2025-07-28 03:30", "2025-10-27 06:00", "expired 1")]
    // New York springs forward on 2025-03-09 at 02:00 EST -> 03:00 EDT.
    // Changed 2024-12-09 02:30 EST (07:30 UTC): expires 2025-03-09 07:30 UTC
    // = 03:30 EDT.
    #[case::new_york_spring(NEW_YORK, "2024-12-09 02:30", "2025-03-02 06:00", "t7 7")]
    #[case::new_york_spring(NEW_YORK, "2024-12-09 02:30", "2025-03-06 06:00", "t3 3")]
    #[case::new_york_spring(NEW_YORK, "2024-12-09 02:30", "2025-03-08 06:00", "t1 1")]
    #[case::new_york_spring(NEW_YORK, "2024-12-09 02:30", "2025-03-09 01:59", "t1 0")]
    #[case::new_york_spring(NEW_YORK, "2024-12-09 02:30", "2025-03-09 06:00", "expired 0")]
    // New York falls back on 2025-11-02 at 02:00 EDT -> 01:00 EST. Changed
    // 2025-08-04 02:30 EDT (06:30 UTC): expires 2025-11-02 06:30 UTC = 01:30
    // EST, the second 01:30 of that night.
    #[case::new_york_fall(NEW_YORK, "2025-08-04 02:30", "2025-10-19 06:00", "t14 14")]
    #[case::new_york_fall(NEW_YORK, "2025-08-04 02:30", "2025-10-26 06:00", "t7 7")]
    #[case::new_york_fall(NEW_YORK, "2025-08-04 02:30", "2025-11-01 06:00", "t1 1")]
    #[case::new_york_fall(NEW_YORK, "2025-08-04 02:30", "2025-11-02 00:59", "t1 0")]
    #[case::new_york_fall(NEW_YORK, "2025-08-04 02:30", "2025-11-02 06:00", "expired 0")]
    // Expires 2025-03-10 02:00 UTC, which is still 2025-03-09 in New York.
    #[case::new_york_evening(NEW_YORK, "2024-12-09 21:00", "2025-03-09 06:00", "t1 0")]
    #[case::new_york_evening(NEW_YORK, "2024-12-09 21:00", "2025-03-08 06:00", "t1 1")]
    fn days_left_are_local_calendar_days_across_dst(
        #[case] tz: Tz,
        #[case] changed_local: &str,
        #[case] now_local: &str,
        #[case] expected: &str,
    ) {
        let facts = changed(local(tz, changed_local));
        let evaluation = evaluate(local(tz, now_local), tz, &policy(90), &facts);
        assert_eq!(short(evaluation), expected);
    }

    #[test]
    fn dst_expiry_instants_are_right_after_the_transitions() {
        let expiry = |tz: Tz, changed_local: &str| {
            evaluate(
                local(tz, changed_local),
                tz,
                &policy(90),
                &changed(local(tz, changed_local)),
            )
            .expires_at()
            .expect("it expires")
        };
        assert_eq!(
            expiry(BERLIN, "2024-12-30 02:30"),
            local(BERLIN, "2025-03-30 03:30")
        );
        assert_eq!(
            expiry(BERLIN, "2025-07-28 03:30"),
            utc("2025-10-26T01:30:00Z")
        );
        assert_eq!(
            expiry(NEW_YORK, "2024-12-09 02:30"),
            local(NEW_YORK, "2025-03-09 03:30")
        );
        assert_eq!(
            expiry(NEW_YORK, "2025-08-04 02:30"),
            utc("2025-11-02T06:30:00Z")
        );
    }

    #[rstest]
    #[case(Notice::Threshold(14), "t14")]
    #[case(Notice::Threshold(1), "t1")]
    #[case(Notice::Threshold(365), "t365")]
    #[case(Notice::Expired, "expired")]
    fn notice_keys_are_stable(#[case] notice: Notice, #[case] key: &str) {
        assert_eq!(notice.key(), key);
        assert_eq!(notice.to_string(), key);
        assert_eq!(Notice::from_key(key), Some(notice));
    }

    #[rstest]
    #[case("")]
    #[case("t")]
    #[case("t07")]
    #[case("t+7")]
    #[case("T7")]
    #[case("t99999999999")]
    #[case("Expired")]
    fn other_texts_are_no_notice_key(#[case] key: &str) {
        assert_eq!(Notice::from_key(key), None);
    }

    #[rstest]
    #[case(
        "bob",
        "2025-03-01T10:00:00Z",
        Notice::Threshold(14),
        "bob|2025-03-01T10:00:00Z|t14"
    )]
    #[case(
        "bob",
        "2025-03-01T11:00:00+01:00",
        Notice::Expired,
        "bob|2025-03-01T10:00:00Z|expired"
    )]
    #[case(
        "a|b",
        "2025-03-01T10:00:00.250Z",
        Notice::Threshold(1),
        "a|b|2025-03-01T10:00:00.250Z|t1"
    )]
    fn ledger_keys_are_stable(
        #[case] user: &str,
        #[case] changed_at: &str,
        #[case] notice: Notice,
        #[case] expected: &str,
    ) {
        assert_eq!(ledger_key(user, utc(changed_at), &notice), expected);
    }

    #[test]
    fn a_new_password_starts_afresh() {
        let policy = policy(90);
        let first = changed(utc("2025-01-01T12:00:00Z"));
        let now = utc("2025-03-29T06:00:00Z");
        let notice = evaluate(now, Tz::UTC, &policy, &first)
            .notice()
            .expect("a notice is due");
        // The user changes the password the next day and, 87 days later,
        // reaches the same threshold again under a new key.
        let second = changed(utc("2025-03-30T12:00:00Z"));
        let later = utc("2025-06-25T06:00:00Z");
        let again = evaluate(later, Tz::UTC, &policy, &second)
            .notice()
            .expect("a notice is due");
        assert_eq!(notice, again);
        assert_ne!(
            ledger_key("bob", utc("2025-01-01T12:00:00Z"), &notice),
            ledger_key("bob", utc("2025-03-30T12:00:00Z"), &again)
        );
    }

    #[rstest]
    #[case(0, MaxAge::Never)]
    #[case(1, MaxAge::Days(1))]
    #[case(86_400, MaxAge::Days(1))]
    #[case(86_401, MaxAge::Days(2))]
    #[case(7_776_000, MaxAge::Days(90))]
    #[case(u64::MAX, MaxAge::Days(u32::MAX))]
    fn max_age_from_ppolicy_seconds(#[case] seconds: u64, #[case] expected: MaxAge) {
        assert_eq!(MaxAge::from_pwd_max_age(seconds), expected);
    }

    // --- properties ---

    /// Zones whose clocks never go back across midnight, so that the local
    /// date never decreases as time passes.
    const ZONES: [Tz; 7] = [
        Tz::UTC,
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::Australia::Lord_Howe,
        chrono_tz::Pacific::Chatham,
        chrono_tz::Asia::Kolkata,
        chrono_tz::America::St_Johns,
    ];

    /// 2015-01-01 .. 2035-01-01 in seconds since the epoch.
    const SPAN: std::ops::Range<i64> = 1_420_070_400..2_051_222_400;

    fn instant(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(seconds, 0).expect("in range")
    }

    /// Higher is more urgent: nothing due, then thresholds from the largest
    /// down, then expired.
    fn urgency(evaluation: &Evaluation) -> i64 {
        evaluation
            .notice()
            .map_or(0, |notice| notice_urgency(&notice))
    }

    fn notice_urgency(notice: &Notice) -> i64 {
        match notice {
            Notice::Threshold(days) => 1_000 - i64::from(*days),
            Notice::Expired => 10_000,
        }
    }

    fn arb_policy() -> impl Strategy<Value = ExpiryPolicy> {
        (2u32..=400, prop::collection::btree_set(1u32..=60, 0..6)).prop_map(
            |(max_age, thresholds)| ExpiryPolicy {
                max_age_days: Some(max_age),
                thresholds_days: thresholds.into_iter().filter(|&t| t < max_age).collect(),
                on_expiry: ExpiryAction::Nothing,
            },
        )
    }

    /// Runs a sweep at `hour:minute` local time on each local day from 30
    /// days before expiry (or the day after the change) to 2 days after
    /// expiry, skipping the days in `skip`; returns the due notice of each
    /// sweep and the notices a ledger let through, in order.
    fn simulate(
        tz: Tz,
        policy: &ExpiryPolicy,
        changed_at: DateTime<Utc>,
        (hour, minute): (u32, u32),
        skip: &[bool],
    ) -> (Vec<Option<Notice>>, Vec<Notice>) {
        let facts = changed(changed_at);
        let max_age = policy.max_age_days.expect("the test policy expires");
        let expires_at = changed_at + TimeDelta::days(i64::from(max_age));
        let first = local_date(expires_at - TimeDelta::days(30), tz)
            .max(local_date(changed_at, tz) + TimeDelta::days(1));
        let last = local_date(expires_at, tz) + TimeDelta::days(2);
        let mut ledger = BTreeSet::new();
        let (mut due, mut sent) = (Vec::new(), Vec::new());
        for (i, day) in first.iter_days().take_while(|d| *d <= last).enumerate() {
            // The last day is never skipped.
            if day != last && skip.get(i).copied().unwrap_or(false) {
                continue;
            }
            let naive = day.and_hms_opt(hour, minute, 0).expect("a time of day");
            let now = tz
                .from_local_datetime(&naive)
                .earliest()
                .expect("the sweep hour exists")
                .with_timezone(&Utc);
            let notice = evaluate(now, tz, policy, &facts).notice();
            due.push(notice);
            if let Some(notice) = notice
                && ledger.insert(ledger_key("u", changed_at, &notice))
            {
                sent.push(notice);
            }
        }
        (due, sent)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn the_due_notice_never_becomes_less_urgent(
            zone in 0..ZONES.len(),
            policy in arb_policy(),
            changed_at in SPAN,
            now in SPAN,
            later in 0i64..40 * 86_400,
        ) {
            let tz = ZONES[zone];
            let facts = changed(instant(changed_at));
            let before = evaluate(instant(now), tz, &policy, &facts);
            let after = evaluate(instant(now + later), tz, &policy, &facts);
            prop_assert!(urgency(&before) <= urgency(&after), "{before:?} then {after:?}");
        }

        #[test]
        fn a_daily_sweep_sends_each_crossed_threshold_once_then_expired(
            zone in 0..ZONES.len(),
            policy in arb_policy(),
            changed_at in SPAN,
            hour in 4u32..24,
            minute in 0u32..60,
        ) {
            let tz = ZONES[zone];
            let changed_at = instant(changed_at);
            let (due, sent) = simulate(tz, &policy, changed_at, (hour, minute), &[]);
            // Without a ledger: once a more urgent notice is due, a less
            // urgent one never comes back.
            let mut runs: Vec<Notice> = due.iter().flatten().copied().collect();
            runs.dedup();
            let distinct: BTreeSet<String> = runs.iter().map(Notice::key).collect();
            prop_assert_eq!(distinct.len(), runs.len(), "a notice came back: {:?}", due);
            prop_assert_eq!(&runs, &sent);
            // With one: the thresholds at or below the days left at the
            // first sweep, led by the smallest threshold above them if the
            // days left fell between two, from the largest down, then expired.
            let facts = changed(changed_at);
            let first_sweep = due.first().copied().flatten();
            let mut expected = Vec::new();
            if first_sweep != Some(Notice::Expired) {
                let max_age = policy.max_age_days.unwrap_or(0);
                let expires_at = changed_at + TimeDelta::days(i64::from(max_age));
                let first_day = local_date(expires_at - TimeDelta::days(30), tz)
                    .max(local_date(changed_at, tz) + TimeDelta::days(1));
                let first_seen = days_between(first_day, local_date(expires_at, tz));
                let mut thresholds = policy.thresholds_days.clone();
                thresholds.sort_unstable_by(|a, b| b.cmp(a));
                if let Some(lead) = thresholds.iter().copied().filter(|&t| t >= first_seen).min() {
                    expected.push(Notice::Threshold(lead));
                }
                expected.extend(thresholds.iter().copied().filter(|&t| t < first_seen).map(Notice::Threshold));
            }
            expected.push(Notice::Expired);
            prop_assert_eq!(&sent, &expected, "first sweep {:?}, facts {:?}", first_sweep, facts);
        }

        #[test]
        fn missed_sweeps_skip_notices_but_never_repeat_or_reorder_them(
            zone in 0..ZONES.len(),
            policy in arb_policy(),
            changed_at in SPAN,
            skip in prop::collection::vec(any::<bool>(), 0..40),
        ) {
            let tz = ZONES[zone];
            let (due, sent) = simulate(tz, &policy, instant(changed_at), (6, 0), &skip);
            let mut runs: Vec<Notice> = due.iter().flatten().copied().collect();
            runs.dedup();
            prop_assert_eq!(&runs, &sent);
            let levels: Vec<i64> = sent.iter().map(notice_urgency).collect();
            prop_assert!(levels.windows(2).all(|w| w[0] < w[1]), "{:?}", sent);
            prop_assert_eq!(sent.last(), Some(&Notice::Expired));
        }

        #[test]
        fn ledger_keys_tell_notices_and_passwords_apart(
            a in SPAN, b in SPAN, ta in 1u32..400, tb in 1u32..400,
        ) {
            let key_a = ledger_key("u", instant(a), &Notice::Threshold(ta));
            let key_b = ledger_key("u", instant(b), &Notice::Threshold(tb));
            prop_assert_eq!(key_a == key_b, a == b && ta == tb);
        }
    }
}
