//! GeneralizedTime (RFC 4517 §3.3.13), the syntax of `pwdChangedTime`,
//! `pwdAccountLockedTime` and friends.

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};

/// Parse `YYYYMMDDHH[MM[SS]][(.|,)fraction](Z|(+|-)HH[MM])` into UTC.
///
/// The fraction applies to the last unit given, as the RFC says. `None` for anything
/// malformed; a directory value we cannot read is treated as absent by callers, and logged.
pub fn parse(s: &str) -> Option<DateTime<Utc>> {
    let b = s.as_bytes();
    let digits = |from: usize, n: usize| -> Option<u32> {
        let part = b.get(from..from + n)?;
        if !part.iter().all(u8::is_ascii_digit) {
            return None;
        }
        std::str::from_utf8(part).ok()?.parse().ok()
    };
    let year = digits(0, 4)? as i32;
    let month = digits(4, 2)?;
    let day = digits(6, 2)?;
    let hour = digits(8, 2)?;
    let mut pos = 10;
    // How many seconds one unit of the last given field is worth (for the fraction).
    let mut unit = 3600i64;
    let mut minute = 0;
    let mut second = 0;
    if let Some(m) = digits(pos, 2) {
        minute = m;
        pos += 2;
        unit = 60;
        if let Some(sec) = digits(pos, 2) {
            second = sec;
            pos += 2;
            unit = 1;
        }
    }
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut nanos: i64 = 0;
    if matches!(b.get(pos), Some(b'.') | Some(b',')) {
        pos += 1;
        let start = pos;
        while b.get(pos).is_some_and(u8::is_ascii_digit) {
            pos += 1;
        }
        if pos == start {
            return None;
        }
        // Fraction of one `unit`, in nanoseconds; keep at most 9 digits.
        let frac = &s[start..pos.min(start + 9)];
        let scaled: i64 = frac.parse::<i64>().ok()? * 10i64.pow(9 - frac.len() as u32);
        nanos = scaled * unit;
    }
    let offset_secs: i64 = match b.get(pos) {
        Some(b'Z') => {
            pos += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            let oh = digits(pos + 1, 2)? as i64;
            pos += 3;
            let om = match digits(pos, 2) {
                Some(m) => {
                    pos += 2;
                    m as i64
                }
                None => 0,
            };
            if oh > 23 || om > 59 {
                return None;
            }
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    if pos != b.len() {
        return None;
    }
    // A leap second (60) is folded into the next minute.
    let naive = NaiveDate::from_ymd_opt(year, month, day)?.and_hms_opt(hour, minute, 0)?;
    let t = Utc.from_utc_datetime(&naive)
        + Duration::seconds(second as i64 - offset_secs)
        + Duration::nanoseconds(nanos);
    Some(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn openldap_forms() {
        assert_eq!(parse("20240131235959Z"), Some(utc("2024-01-31T23:59:59Z")));
        assert_eq!(
            parse("20240131235959.123456Z"),
            Some(utc("2024-01-31T23:59:59.123456Z"))
        );
        // The "locked by an administrator forever" marker.
        assert_eq!(parse("000001010000Z"), Some(utc("0000-01-01T00:00:00Z")));
    }

    #[test]
    fn offsets_and_partial_forms() {
        assert_eq!(
            parse("20240615120000+0200"),
            Some(utc("2024-06-15T10:00:00Z"))
        );
        assert_eq!(
            parse("20240615120000-0130"),
            Some(utc("2024-06-15T13:30:00Z"))
        );
        assert_eq!(
            parse("20240615120000+02"),
            Some(utc("2024-06-15T10:00:00Z"))
        );
        assert_eq!(parse("2024061512Z"), Some(utc("2024-06-15T12:00:00Z")));
        assert_eq!(parse("202406151230Z"), Some(utc("2024-06-15T12:30:00Z")));
        // Fractions apply to the last unit given.
        assert_eq!(parse("2024061512.5Z"), Some(utc("2024-06-15T12:30:00Z")));
        assert_eq!(parse("202406151230,5Z"), Some(utc("2024-06-15T12:30:30Z")));
    }

    #[test]
    fn garbage_is_none() {
        for bad in [
            "",
            "2024",
            "20240615120000",  // no zone
            "20241315120000Z", // month 13
            "20240230120000Z", // Feb 30
            "20240615250000Z", // hour 25
            "20240615126000Z", // minute 60
            "20240615120000.Z",
            "20240615120000Zjunk",
            "20240615120000+2",
            "2024O615120000Z",
            "２0240615120000Z",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
