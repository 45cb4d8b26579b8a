//! When the sweep runs: a standard five-field crontab line in an IANA time
//! zone, parsed once at start-up ([`SweepSchedule::parse`]) and asked for
//! the next run time ([`SweepSchedule::next_after`]).
//!
//! Pure: the caller passes the current time; nothing here sleeps or reads
//! the clock or the configuration.
//!
//! # Syntax
//!
//! Five fields, as in crontab(5): minute (0-59), hour (0-23), day of month
//! (1-31), month (1-12 or `JAN`-`DEC`) and day of week (0-7 or
//! `SUN`-`SAT`, where **0 and 7 are Sunday and 1 is Monday**), each with
//! `*`, lists (`1,15`), ranges (`1-5`) and steps (`*/10`, `8-18/2`). So
//! `0 6 * * 1-5` is 06:00 Monday to Friday. When both the day of month and
//! the day of week are restricted, either one matches, as in Vixie cron.
//! The nicknames `@hourly`, `@daily` (00:00), `@weekly` (Sunday 00:00),
//! `@monthly` and `@yearly` (or `@annually`) are accepted too.
//!
//! Not accepted: a seconds or a year field (six- or seven-field lines, as in
//! Quartz or the `cron` crate, where the first field is seconds and Sunday
//! is 1), `@reboot`, names in the wrong field (`MON` as a minute), and
//! expressions that never match a date (`0 0 30 2 *`). Parsing is done by
//! `croner`, whose extensions also work: `L` (last day of the month, or
//! `5L`, the last Friday), `15W` (the weekday nearest the 15th), `FRI#2`
//! (the second Friday) and a leading `+` on the day of week (`0 0 1 * +MON`:
//! the 1st of the month only if it is a Monday).
//!
//! Every error is one sentence naming the setting, the value and what is
//! wrong, with an example of a valid value (see [`ScheduleError`]).
//!
//! # Time zones and daylight saving
//!
//! Times are wall-clock times in the schedule's time zone, so `0 6 * * *`
//! runs at 06:00 local time every day, summer and winter (05:00 or 04:00
//! UTC in Berlin). Around a daylight-saving change, as `croner` does it
//! (checked by the tests below):
//!
//! - **Clocks go forward** (Berlin, last Sunday of March, 02:00 → 03:00): a
//!   fixed time in the skipped hour (`30 2 * * *`) runs once, at 03:00, the
//!   first minute after the gap, on the same day. A wildcard or step in the
//!   hour or minute (`*/30 2 * * *`) skips the times in the gap.
//! - **Clocks go back** (Berlin, last Sunday of October, 03:00 → 02:00): a
//!   fixed time in the repeated hour (`30 2 * * *`) runs once, at its first
//!   occurrence (summer time). A wildcard or step runs in both passes (the
//!   expiry sweep's ledger makes a second run harmless).
//!
//! Schedules outside the hours of 01:00-03:59 avoid both cases in every
//! European and American zone.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A valid value to show in every expression error.
const EXAMPLE: &str = r#"e.g. "0 6 * * *" for 06:00 every day"#;

/// The nicknames accepted in place of five fields.
const NICKNAMES: [&str; 6] = [
    "@yearly",
    "@annually",
    "@monthly",
    "@weekly",
    "@daily",
    "@hourly",
];

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT", "L"];

/// One of the five fields, for checking it alone and naming it in errors.
struct Field {
    name: &'static str,
    /// What the field takes, besides `*`, lists, ranges and steps.
    takes: &'static str,
    /// The words (runs of letters) the field may contain.
    words: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        takes: "0-59",
        words: &[],
    },
    Field {
        name: "hour",
        takes: "0-23",
        words: &[],
    },
    Field {
        name: "day-of-month",
        takes: "1-31 or L for the last day",
        words: &["L", "W", "LW"],
    },
    Field {
        name: "month",
        takes: "1-12 or JAN-DEC",
        words: MONTHS,
    },
    Field {
        name: "day-of-week",
        takes: "0-7 or SUN-SAT, where 0 and 7 are Sunday",
        words: WEEKDAYS,
    },
];

/// Why a schedule setting was refused. Each message is one sentence naming
/// the setting (`sweep.schedule` or `sweep.time_zone`), the value, and what
/// is wrong, with an example of a valid value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// Not five fields (nor a nickname).
    #[error(
        "sweep.schedule {expression:?}: expected five fields (minute hour day-of-month month day-of-week){}, {}",
        found_fields(*found),
        EXAMPLE
    )]
    FieldCount {
        /// The expression as written.
        expression: String,
        /// How many fields it has.
        found: usize,
    },
    /// Starts with `@` but is not a known nickname (such as `@reboot`).
    #[error(
        "sweep.schedule {expression:?}: unknown nickname; use @hourly, @daily, @weekly, @monthly or @yearly, or five fields, {}",
        EXAMPLE
    )]
    UnknownNickname {
        /// The expression as written.
        expression: String,
    },
    /// One field is not valid on its own.
    #[error(
        "sweep.schedule {expression:?}: the {field} field {value:?} is not valid (it takes {takes}, *, lists like 1,3, ranges like 1-5 and steps like */2), {}",
        EXAMPLE
    )]
    InvalidField {
        /// The expression as written.
        expression: String,
        /// The field's name: `minute`, `hour`, `day-of-month`, `month` or
        /// `day-of-week`.
        field: &'static str,
        /// The field as written.
        value: String,
        /// What the field takes.
        takes: &'static str,
    },
    /// Each field is valid, but not the whole (a fallback; `reason` is
    /// `croner`'s).
    #[error(
        "sweep.schedule {expression:?} is not a valid cron expression ({reason}), {}",
        EXAMPLE
    )]
    Invalid {
        /// The expression as written.
        expression: String,
        /// Why `croner` refused it.
        reason: String,
    },
    /// Valid, but no date ever matches (such as 30 February).
    #[error("sweep.schedule {expression:?} never matches a date, {}", EXAMPLE)]
    NeverMatches {
        /// The expression as written.
        expression: String,
    },
    /// The time zone is not in the IANA time zone database.
    #[error(
        r#"sweep.time_zone {time_zone:?} is not an IANA time zone, e.g. "Europe/Berlin" or "UTC""#
    )]
    UnknownTimeZone {
        /// The time zone as written.
        time_zone: String,
    },
}

fn found_fields(found: usize) -> String {
    match found {
        6 | 7 => format!(" but found {found} (a seconds or year field is not supported)"),
        found if found > 5 => format!(" but found {found}"),
        _ => String::new(),
    }
}

/// When the sweep runs: a cron expression in a time zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepSchedule {
    expression: String,
    time_zone: Tz,
    cron: Cron,
}

impl SweepSchedule {
    /// Parses a five-field crontab line (or a nickname such as `@daily`) and
    /// an IANA time zone name (`Europe/Berlin`, `UTC`); see the
    /// [module docs](self) for what is accepted.
    pub fn parse(expression: &str, time_zone: &str) -> Result<Self, ScheduleError> {
        let expression = expression.trim();
        let cron = parse_expression(expression)?;
        let tz: Tz = time_zone
            .parse()
            .map_err(|_| ScheduleError::UnknownTimeZone {
                time_zone: time_zone.to_string(),
            })?;
        // An expression such as `0 0 30 2 *` parses but never matches; the
        // search gives up after the year 5000 in well under a second.
        if cron
            .find_next_occurrence(&DateTime::UNIX_EPOCH.with_timezone(&tz), false)
            .is_err()
        {
            return Err(ScheduleError::NeverMatches {
                expression: expression.to_string(),
            });
        }
        Ok(Self {
            expression: expression.to_string(),
            time_zone: tz,
            cron,
        })
    }

    /// The first run time strictly after `after`, as wall-clock time in the
    /// schedule's time zone (see the [module docs](self) for daylight
    /// saving). `None` only past the year 5000.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.time_zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|next| next.with_timezone(&Utc))
    }

    /// The expression as written, without surrounding white space.
    pub fn expression(&self) -> &str {
        &self.expression
    }

    /// The time zone the expression is read in.
    pub fn time_zone(&self) -> Tz {
        self.time_zone
    }
}

impl fmt::Display for SweepSchedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} in {}", self.expression, self.time_zone.name())
    }
}

fn parser() -> CronParser {
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
}

fn parse_expression(expression: &str) -> Result<Cron, ScheduleError> {
    let parser = parser();
    let invalid = |error: croner::errors::CronError| ScheduleError::Invalid {
        expression: expression.to_string(),
        reason: error.to_string().trim_end_matches('.').to_string(),
    };
    if expression.starts_with('@') {
        if !NICKNAMES
            .iter()
            .any(|nickname| nickname.eq_ignore_ascii_case(expression))
        {
            return Err(ScheduleError::UnknownNickname {
                expression: expression.to_string(),
            });
        }
        return parser.parse(expression).map_err(invalid);
    }
    let fields: Vec<&str> = expression.split_whitespace().collect();
    if fields.len() != FIELDS.len() {
        return Err(ScheduleError::FieldCount {
            expression: expression.to_string(),
            found: fields.len(),
        });
    }
    // Check each field alone, so that the error can name it.
    for (i, (value, field)) in fields.iter().zip(&FIELDS).enumerate() {
        let mut probe = ["*"; 5];
        probe[i] = value;
        if !words_allowed(value, field.words) || parser.parse(&probe.join(" ")).is_err() {
            return Err(ScheduleError::InvalidField {
                expression: expression.to_string(),
                field: field.name,
                value: (*value).to_string(),
                takes: field.takes,
            });
        }
    }
    parser.parse(&fields.join(" ")).map_err(invalid)
}

/// Whether every run of letters in `value` is one of `words` (any case).
/// `croner` replaces month and day names anywhere in the line, so without
/// this `MON` would be taken as minute 1.
fn words_allowed(value: &str, words: &[&str]) -> bool {
    value
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|word| !word.is_empty())
        .all(|word| {
            words
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(word))
        })
}

#[cfg(test)]
mod tests {
    use chrono::{Datelike, NaiveDateTime, TimeDelta, TimeZone, Timelike, Weekday};
    use proptest::prelude::*;
    use rstest::rstest;

    use super::*;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .expect("a test instant")
            .with_timezone(&Utc)
    }

    fn schedule(expression: &str, tz: &str) -> SweepSchedule {
        SweepSchedule::parse(expression, tz).expect("a valid schedule")
    }

    /// The next `n` run times after `after`, as RFC 3339 in the schedule's
    /// zone.
    fn runs(schedule: &SweepSchedule, after: &str, n: usize) -> Vec<String> {
        let mut at = utc(after);
        let mut out = Vec::new();
        for _ in 0..n {
            at = schedule.next_after(at).expect("a next run");
            out.push(at.with_timezone(&schedule.time_zone()).to_rfc3339());
        }
        out
    }

    #[test]
    fn one_to_five_is_monday_to_friday() {
        // 2025-01-03 is a Friday.
        let schedule = schedule("0 6 * * 1-5", "Europe/Berlin");
        let mut at = utc("2025-01-03T12:00:00Z");
        let mut days = Vec::new();
        for _ in 0..6 {
            at = schedule.next_after(at).expect("a next run");
            days.push(at.with_timezone(&schedule.time_zone()).weekday());
        }
        use Weekday::{Fri, Mon, Thu, Tue, Wed};
        assert_eq!(days, [Mon, Tue, Wed, Thu, Fri, Mon]);
        assert_eq!(
            runs(&schedule, "2025-01-03T12:00:00Z", 1),
            ["2025-01-06T06:00:00+01:00"]
        );
    }

    #[rstest]
    #[case("0 6 * * 0")]
    #[case("0 6 * * 7")]
    #[case("0 6 * * SUN")]
    #[case("0 6 * * sun")]
    fn zero_and_seven_are_sunday(#[case] expression: &str) {
        // 2025-01-05 is a Sunday.
        assert_eq!(
            runs(&schedule(expression, "UTC"), "2025-01-01T00:00:00Z", 2),
            ["2025-01-05T06:00:00+00:00", "2025-01-12T06:00:00+00:00"]
        );
    }

    #[rstest]
    #[case::names("0 6 * * mon-fri", "0 6 * * 1-5")]
    #[case::months("0 6 1 jan,JUL *", "0 6 1 1,7 *")]
    #[case::white_space("  0\t6 * *   1-5 ", "0 6 * * 1-5")]
    #[case::question_mark("0 6 ? * 1-5", "0 6 * * 1-5")]
    #[case::daily("@daily", "0 0 * * *")]
    #[case::daily_upper("@DAILY", "0 0 * * *")]
    #[case::hourly("@hourly", "0 * * * *")]
    #[case::weekly("@weekly", "0 0 * * 0")]
    #[case::monthly("@monthly", "0 0 1 * *")]
    #[case::yearly("@yearly", "0 0 1 1 *")]
    #[case::annually("@annually", "0 0 1 1 *")]
    fn spellings_of_the_same_schedule(#[case] expression: &str, #[case] same_as: &str) {
        let after = "2025-01-01T00:30:00Z";
        assert_eq!(
            runs(&schedule(expression, "UTC"), after, 5),
            runs(&schedule(same_as, "UTC"), after, 5)
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_as_in_vixie_cron() {
        // The 1st, or any Monday; 2025-09-01 is a Monday, 2025-10-01 a Wednesday.
        assert_eq!(
            runs(&schedule("0 6 1 * MON", "UTC"), "2025-09-25T00:00:00Z", 4),
            [
                "2025-09-29T06:00:00+00:00",
                "2025-10-01T06:00:00+00:00",
                "2025-10-06T06:00:00+00:00",
                "2025-10-13T06:00:00+00:00",
            ]
        );
    }

    #[rstest]
    #[case::three_fields(
        "0 6 *",
        "UTC",
        r#"sweep.schedule "0 6 *": expected five fields (minute hour day-of-month month day-of-week), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::four_fields(
        "0 6 * *",
        "UTC",
        r#"sweep.schedule "0 6 * *": expected five fields (minute hour day-of-month month day-of-week), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::empty(
        "",
        "UTC",
        r#"sweep.schedule "": expected five fields (minute hour day-of-month month day-of-week), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::seconds(
        "0 0 6 * * *",
        "UTC",
        r#"sweep.schedule "0 0 6 * * *": expected five fields (minute hour day-of-month month day-of-week) but found 6 (a seconds or year field is not supported), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::eight_fields(
        "0 0 6 * * * * *",
        "UTC",
        r#"sweep.schedule "0 0 6 * * * * *": expected five fields (minute hour day-of-month month day-of-week) but found 8, e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::reboot(
        "@reboot",
        "UTC",
        r#"sweep.schedule "@reboot": unknown nickname; use @hourly, @daily, @weekly, @monthly or @yearly, or five fields, e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::hour(
        "0 25 * * *",
        "UTC",
        r#"sweep.schedule "0 25 * * *": the hour field "25" is not valid (it takes 0-23, *, lists like 1,3, ranges like 1-5 and steps like */2), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::minute(
        "60 6 * * *",
        "UTC",
        r#"sweep.schedule "60 6 * * *": the minute field "60" is not valid (it takes 0-59, *, lists like 1,3, ranges like 1-5 and steps like */2), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::sloppy_step(
        "0/5 6 * * *",
        "UTC",
        r#"sweep.schedule "0/5 6 * * *": the minute field "0/5" is not valid (it takes 0-59, *, lists like 1,3, ranges like 1-5 and steps like */2), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::name_as_minute(
        "MON 6 * * *",
        "UTC",
        r#"sweep.schedule "MON 6 * * *": the minute field "MON" is not valid (it takes 0-59, *, lists like 1,3, ranges like 1-5 and steps like */2), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::day_of_month(
        "0 6 32 * *",
        "UTC",
        r#"sweep.schedule "0 6 32 * *": the day-of-month field "32" is not valid (it takes 1-31 or L for the last day, *, lists like 1,3, ranges like 1-5 and steps like */2), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::month(
        "0 6 * 13 *",
        "UTC",
        r#"sweep.schedule "0 6 * 13 *": the month field "13" is not valid (it takes 1-12 or JAN-DEC, *, lists like 1,3, ranges like 1-5 and steps like */2), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::day_of_week(
        "0 6 * * 8",
        "UTC",
        r#"sweep.schedule "0 6 * * 8": the day-of-week field "8" is not valid (it takes 0-7 or SUN-SAT, where 0 and 7 are Sunday, *, lists like 1,3, ranges like 1-5 and steps like */2), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::month_as_weekday(
        "0 6 * * JAN",
        "UTC",
        r#"sweep.schedule "0 6 * * JAN": the day-of-week field "JAN" is not valid (it takes 0-7 or SUN-SAT, where 0 and 7 are Sunday, *, lists like 1,3, ranges like 1-5 and steps like */2), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::backwards_range(
        "5-1 6 * * *",
        "UTC",
        r#"sweep.schedule "5-1 6 * * *": the minute field "5-1" is not valid (it takes 0-59, *, lists like 1,3, ranges like 1-5 and steps like */2), e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::never(
        "0 6 30 2 *",
        "UTC",
        r#"sweep.schedule "0 6 30 2 *" never matches a date, e.g. "0 6 * * *" for 06:00 every day"#
    )]
    #[case::zone_typo(
        "0 6 * * *",
        "Europe/Berln",
        r#"sweep.time_zone "Europe/Berln" is not an IANA time zone, e.g. "Europe/Berlin" or "UTC""#
    )]
    #[case::zone_empty(
        "0 6 * * *",
        "",
        r#"sweep.time_zone "" is not an IANA time zone, e.g. "Europe/Berlin" or "UTC""#
    )]
    #[case::zone_offset(
        "0 6 * * *",
        "+01:00",
        r#"sweep.time_zone "+01:00" is not an IANA time zone, e.g. "Europe/Berlin" or "UTC""#
    )]
    fn errors_name_the_setting_the_fault_and_a_valid_example(
        #[case] expression: &str,
        #[case] tz: &str,
        #[case] expected: &str,
    ) {
        let error = SweepSchedule::parse(expression, tz).expect_err("refused");
        assert_eq!(error.to_string(), expected);
    }

    #[rstest]
    #[case::berlin_spring(
        "Europe/Berlin",
        "2025-03-28T12:00:00Z",
        [
            "2025-03-29T06:00:00+01:00",
            "2025-03-30T06:00:00+02:00",
            "2025-03-31T06:00:00+02:00",
        ]
    )]
    #[case::berlin_fall(
        "Europe/Berlin",
        "2025-10-25T00:00:00Z",
        [
            "2025-10-25T06:00:00+02:00",
            "2025-10-26T06:00:00+01:00",
            "2025-10-27T06:00:00+01:00",
        ]
    )]
    #[case::new_york_spring(
        "America/New_York",
        "2025-03-08T00:00:00Z",
        [
            "2025-03-08T06:00:00-05:00",
            "2025-03-09T06:00:00-04:00",
            "2025-03-10T06:00:00-04:00",
        ]
    )]
    #[case::new_york_fall(
        "America/New_York",
        "2025-11-01T00:00:00Z",
        [
            "2025-11-01T06:00:00-04:00",
            "2025-11-02T06:00:00-05:00",
            "2025-11-03T06:00:00-05:00",
        ]
    )]
    fn six_o_clock_local_across_dst(
        #[case] tz: &str,
        #[case] after: &str,
        #[case] expected: [&str; 3],
    ) {
        assert_eq!(runs(&schedule("0 6 * * *", tz), after, 3), expected);
    }

    #[rstest]
    // 02:30 does not exist on 2025-03-30 in Berlin: croner runs at 03:00.
    #[case::fixed_time_in_the_gap(
        "30 2 * * *",
        "2025-03-29T00:00:00Z",
        [
            "2025-03-29T02:30:00+01:00",
            "2025-03-30T03:00:00+02:00",
            "2025-03-31T02:30:00+02:00",
        ]
    )]
    // 02:30 happens twice on 2025-10-26 in Berlin: croner runs at the first.
    #[case::fixed_time_in_the_overlap(
        "30 2 * * *",
        "2025-10-25T00:00:00Z",
        [
            "2025-10-25T02:30:00+02:00",
            "2025-10-26T02:30:00+02:00",
            "2025-10-27T02:30:00+01:00",
        ]
    )]
    // A step skips the gap...
    #[case::step_in_the_gap(
        "*/30 2 * * *",
        "2025-03-29T00:00:00Z",
        [
            "2025-03-29T02:00:00+01:00",
            "2025-03-29T02:30:00+01:00",
            "2025-03-31T02:00:00+02:00",
        ]
    )]
    // ...and runs in both passes of the overlap.
    #[case::step_in_the_overlap(
        "*/30 2 * * *",
        "2025-10-25T12:00:00Z",
        [
            "2025-10-26T02:00:00+02:00",
            "2025-10-26T02:30:00+02:00",
            "2025-10-26T02:00:00+01:00",
        ]
    )]
    fn croner_dst_rules_in_berlin(
        #[case] expression: &str,
        #[case] after: &str,
        #[case] expected: [&str; 3],
    ) {
        assert_eq!(
            runs(&schedule(expression, "Europe/Berlin"), after, 3),
            expected
        );
    }

    #[test]
    fn next_is_strictly_after_even_within_a_second() {
        let schedule = schedule("0 6 * * *", "UTC");
        let at_six = utc("2025-01-01T06:00:00Z");
        assert_eq!(
            schedule.next_after(at_six),
            Some(utc("2025-01-02T06:00:00Z"))
        );
        let just_after = at_six + TimeDelta::milliseconds(300);
        assert_eq!(
            schedule.next_after(just_after),
            Some(utc("2025-01-02T06:00:00Z"))
        );
        let just_before = at_six - TimeDelta::milliseconds(300);
        assert_eq!(schedule.next_after(just_before), Some(at_six));
    }

    #[test]
    fn rare_but_real_dates_are_accepted() {
        assert_eq!(
            runs(&schedule("0 6 29 2 *", "UTC"), "2025-01-01T00:00:00Z", 1),
            ["2028-02-29T06:00:00+00:00"]
        );
    }

    #[test]
    fn display_and_accessors() {
        let schedule = schedule(" 0 6 * * 1-5 ", "Europe/Berlin");
        assert_eq!(schedule.expression(), "0 6 * * 1-5");
        assert_eq!(schedule.time_zone(), chrono_tz::Europe::Berlin);
        assert_eq!(schedule.to_string(), r#""0 6 * * 1-5" in Europe/Berlin"#);
    }

    const ZONES: [&str; 5] = [
        "UTC",
        "Europe/Berlin",
        "America/New_York",
        "Australia/Lord_Howe",
        "Pacific/Chatham",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn a_daily_time_is_that_wall_clock_time_on_the_next_day_it_can_be(
            zone in 0..ZONES.len(),
            hour in 4u32..24,
            minute in 0u32..60,
            after in 1_420_070_400i64..2_051_222_400,
        ) {
            let schedule = schedule(&format!("{minute} {hour} * * *"), ZONES[zone]);
            let after = DateTime::from_timestamp(after, 0).expect("in range");
            let next = schedule.next_after(after).expect("a next run");
            prop_assert!(next > after);
            prop_assert!(next - after <= TimeDelta::hours(25));
            let local = next.with_timezone(&schedule.time_zone());
            prop_assert_eq!((local.hour(), local.minute(), local.second()), (hour, minute, 0));
            // Nothing in between matches.
            let naive: NaiveDateTime = local.naive_local() - TimeDelta::days(1);
            let day_before = schedule.time_zone().from_local_datetime(&naive).earliest();
            prop_assert!(day_before.is_none_or(|earlier| earlier.with_timezone(&Utc) <= after));
        }
    }
}
