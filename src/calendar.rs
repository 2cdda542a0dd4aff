//! UTC calendar arithmetic on Unix seconds, without a time-zone database.
//!
//! Enough for the protocol: RFC 3339 timestamps and full dates (§5.6) to Unix seconds and back,
//! and adding calendar days, months and years for `payment.agent_recurrence` spacing. Only UTC
//! (`Z`) and numeric offsets are read; leap seconds are not represented (as in Unix time).

/// Why a date or time text was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("malformed RFC 3339 date or time")]
pub struct DateError;

/// Days since 1970-01-01 for a proleptic Gregorian date.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month, day) of a day count since 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_utc(unix: i64) -> String {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Adds `months` calendar months, keeping the time of day and clamping the day to the month's
/// length (January 31 plus one month is February 28 or 29).
pub fn add_months(unix: i64, months: i64) -> i64 {
    let (days, secs) = (unix.div_euclid(86_400), unix.rem_euclid(86_400));
    let (y, m, d) = civil_from_days(days);
    let index = y * 12 + i64::from(m) - 1 + months;
    let (ny, nm) = (index.div_euclid(12), (index.rem_euclid(12) + 1) as u32);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * 86_400 + secs
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

/// Which end of a day a bare date stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DayEdge {
    /// 00:00:00 of that day (for lower bounds).
    Start,
    /// 23:59:59 of that day (for upper bounds, inclusive).
    End,
}

/// Parses an RFC 3339 `date-time` or `full-date` into Unix seconds (fractions are dropped).
pub fn parse_rfc3339(text: &str, edge: DayEdge) -> Result<i64, DateError> {
    let b = text.as_bytes();
    if b.len() < 10 || b.len() > 40 || b[4] != b'-' || b[7] != b'-' {
        return Err(DateError);
    }
    let year = digits(&b[0..4])?;
    let month = digits(&b[5..7])? as u32;
    let day = digits(&b[8..10])? as u32;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(DateError);
    }
    let midnight = days_from_civil(year, month, day) * 86_400;
    if b.len() == 10 {
        return Ok(if edge == DayEdge::End {
            midnight + 86_399
        } else {
            midnight
        });
    }
    Ok(midnight + time_of_day(&b[10..])?)
}

/// `THH:MM:SS[.frac](Z|±HH:MM)` into seconds from midnight UTC (may be negative or past a day).
fn time_of_day(b: &[u8]) -> Result<i64, DateError> {
    if b.len() < 10 || !matches!(b[0], b'T' | b't') || b[3] != b':' || b[6] != b':' {
        return Err(DateError);
    }
    let (h, m, s) = (digits(&b[1..3])?, digits(&b[4..6])?, digits(&b[7..9])?);
    if h > 23 || m > 59 || s > 59 {
        return Err(DateError);
    }
    let mut rest = &b[9..];
    if rest.first() == Some(&b'.') {
        let frac = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if frac == 0 {
            return Err(DateError);
        }
        rest = &rest[1 + frac..];
    }
    let offset = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), oh1, oh2, b':', om1, om2] => {
            let (oh, om) = (digits(&[*oh1, *oh2])?, digits(&[*om1, *om2])?);
            if oh > 23 || om > 59 {
                return Err(DateError);
            }
            let total = oh * 3600 + om * 60;
            if *sign == b'+' {
                total
            } else {
                -total
            }
        }
        _ => return Err(DateError),
    };
    Ok(h * 3600 + m * 60 + s - offset)
}

fn digits(b: &[u8]) -> Result<i64, DateError> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return Err(DateError);
    }
    Ok(b.iter().fold(0, |acc, c| acc * 10 + i64::from(c - b'0')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_round_trips_across_eras() {
        for days in [-800_000, -1, 0, 1, 10_957, 19_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn formats_utc() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(1_780_000_120), "2026-05-28T20:28:40Z");
    }

    #[test]
    fn month_addition_clamps_the_day() {
        let jan31 = parse_rfc3339("2026-01-31T10:00:00Z", DayEdge::Start).unwrap();
        assert_eq!(format_utc(add_months(jan31, 1)), "2026-02-28T10:00:00Z");
        let leap = parse_rfc3339("2028-01-31T00:00:00Z", DayEdge::Start).unwrap();
        assert_eq!(format_utc(add_months(leap, 1)), "2028-02-29T00:00:00Z");
        assert_eq!(format_utc(add_months(jan31, 12)), "2027-01-31T10:00:00Z");
    }

    #[test]
    fn parses_dates_and_offsets() {
        let z = parse_rfc3339("2026-03-31T00:00:00Z", DayEdge::Start).unwrap();
        assert_eq!(parse_rfc3339("2026-03-31", DayEdge::Start).unwrap(), z);
        assert_eq!(
            parse_rfc3339("2026-03-31", DayEdge::End).unwrap(),
            z + 86_399
        );
        assert_eq!(
            parse_rfc3339("2026-03-31T02:00:00.123+02:00", DayEdge::Start).unwrap(),
            z
        );
    }

    #[test]
    fn refuses_malformed_dates() {
        for bad in [
            "2026-02-30",
            "2026-13-01",
            "26-01-01",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00",
            "2026-01-01 00:00:00Z",
            "2026-01-01T00:00:00.Z",
            "２０２６-01-01",
            "2026-01-01T00:00:00+2:00",
        ] {
            assert_eq!(parse_rfc3339(bad, DayEdge::Start), Err(DateError), "{bad}");
        }
    }
}
