//! `interval` as PostgreSQL 15's `interval_out` prints it with `IntervalStyle` `postgres`:
//! `1 year 2 mons 3 days 04:05:06.789`, `-1 days +02:00:00`.

use std::fmt::Write as _;

const HOUR_US: i64 = 3_600_000_000;
const MINUTE_US: i64 = 60_000_000;
const SECOND_US: i64 = 1_000_000;

/// A binary interval: microseconds, days, months (each field signed and independent, as
/// PostgreSQL stores them; every bit pattern is a value PostgreSQL 15 accepts and prints).
pub(super) fn interval(v: &[u8]) -> Option<String> {
    let (time, rest) = v.split_first_chunk::<8>()?;
    let (days, months) = rest.split_first_chunk::<4>()?;
    let months: [u8; 4] = months.try_into().ok()?;
    Some(text(
        i64::from_be_bytes(*time),
        i32::from_be_bytes(*days),
        i32::from_be_bytes(months),
    ))
}

fn text(time: i64, days: i32, months: i32) -> String {
    let mut s = String::new();
    // PostgreSQL's rule for signs: a field gets a `+` only when the nonzero field printed
    // just before it was negative, so that `-1 days +02:00:00` does not read as all
    // negative. Rust's `/` and `%` truncate towards zero as C's do, so a negative month
    // count splits into a negative year and a negative month, as PostgreSQL splits it.
    let mut before_negative = false;
    let fields = [
        (i64::from(months / 12), "year"),
        (i64::from(months % 12), "mon"),
        (i64::from(days), "day"),
    ];
    for (value, unit) in fields {
        if value == 0 {
            continue;
        }
        let space = if s.is_empty() { "" } else { " " };
        let plus = if before_negative && value > 0 {
            "+"
        } else {
            ""
        };
        let plural = if value == 1 { "" } else { "s" };
        let _ = write!(s, "{space}{plus}{value} {unit}{plural}");
        before_negative = value < 0;
    }
    // The time of day is printed when nonzero, and also when it is all there is, so that a
    // zero interval reads `00:00:00`. Its parts share the sign of the microsecond count.
    if s.is_empty() || time != 0 {
        let space = if s.is_empty() { "" } else { " " };
        let sign = if time < 0 {
            "-"
        } else if before_negative {
            "+"
        } else {
            ""
        };
        let hours = (time / HOUR_US).unsigned_abs();
        let minutes = (time % HOUR_US / MINUTE_US).unsigned_abs();
        let seconds = (time % MINUTE_US / SECOND_US).unsigned_abs();
        let micros = (time % SECOND_US).unsigned_abs();
        let _ = write!(s, "{space}{sign}{hours:02}:{minutes:02}:{seconds:02}");
        if micros != 0 {
            let digits = format!("{micros:06}");
            s.push('.');
            s.push_str(digits.trim_end_matches('0'));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::tests::check;

    /// Each row's bytes are `interval_send` of the value in its comment, and its text what
    /// PostgreSQL 15.18 printed for it; rows marked binary COPY were fed to the server as
    /// those bytes and their text read back.
    #[test]
    fn renders_interval_as_postgres_15_prints_it() {
        check(&[
            // '0'::interval
            (1186, "00000000000000000000000000000000", Some("00:00:00")),
            // '1 year 2 mons 3 days 04:05:06.789'::interval
            (
                1186,
                "000000036c97ca88000000030000000e",
                Some("1 year 2 mons 3 days 04:05:06.789"),
            ),
            // '-1 days +02:00:00'::interval
            (
                1186,
                "00000001ad274800ffffffff00000000",
                Some("-1 days +02:00:00"),
            ),
            // '1 day 01:01:01.000005'::interval
            (
                1186,
                "00000000da366d450000000100000000",
                Some("1 day 01:01:01.000005"),
            ),
            // '-1 second'::interval
            (1186, "fffffffffff0bdc00000000000000000", Some("-00:00:01")),
            // '1 mon -1 days'::interval
            (
                1186,
                "0000000000000000ffffffff00000001",
                Some("1 mon -1 days"),
            ),
            // '-1 mon 1 day'::interval
            (
                1186,
                "000000000000000000000001ffffffff",
                Some("-1 mons +1 day"),
            ),
            // '-1 days -2 hours'::interval
            (
                1186,
                "fffffffe52d8b800ffffffff00000000",
                Some("-1 days -02:00:00"),
            ),
            // '-14 mons'::interval
            (
                1186,
                "000000000000000000000000fffffff2",
                Some("-1 years -2 mons"),
            ),
            // '1 year'::interval
            (1186, "0000000000000000000000000000000c", Some("1 year")),
            // '2 years'::interval
            (1186, "00000000000000000000000000000018", Some("2 years")),
            // '1 mon'::interval
            (1186, "00000000000000000000000000000001", Some("1 mon")),
            // '-1 days'::interval
            (1186, "0000000000000000ffffffff00000000", Some("-1 days")),
            // '100000 hours'::interval
            (
                1186,
                "0001476b081e80000000000000000000",
                Some("100000:00:00"),
            ),
            // '0.000001 sec'::interval
            (
                1186,
                "00000000000000010000000000000000",
                Some("00:00:00.000001"),
            ),
            // '-0.5 sec'::interval
            (
                1186,
                "fffffffffff85ee00000000000000000",
                Some("-00:00:00.5"),
            ),
            // '-1 year -2 days +3 hours'::interval
            (
                1186,
                "0000000283baec00fffffffefffffff4",
                Some("-1 years -2 days +03:00:00"),
            ),
            // '1 year -3 hours'::interval
            (
                1186,
                "fffffffd7c451400000000000000000c",
                Some("1 year -03:00:00"),
            ),
            // '-1 year 3 hours'::interval
            (
                1186,
                "0000000283baec0000000000fffffff4",
                Some("-1 years +03:00:00"),
            ),
            // '-1 year 2 days'::interval
            (
                1186,
                "000000000000000000000002fffffff4",
                Some("-1 years +2 days"),
            ),
            // '1 year 2 days -3 hours'::interval
            (
                1186,
                "fffffffd7c451400000000020000000c",
                Some("1 year 2 days -03:00:00"),
            ),
            // '3 days'::interval
            (1186, "00000000000000000000000300000000", Some("3 days")),
            // '178956970 years 7 mons'::interval
            (
                1186,
                "0000000000000000000000007fffffff",
                Some("178956970 years 7 mons"),
            ),
            // '-178956970 years -8 mons'::interval
            (
                1186,
                "00000000000000000000000080000000",
                Some("-178956970 years -8 mons"),
            ),
            // '2147483647 days'::interval
            (
                1186,
                "00000000000000007fffffff00000000",
                Some("2147483647 days"),
            ),
            // '-2147483648 days'::interval
            (
                1186,
                "00000000000000008000000000000000",
                Some("-2147483648 days"),
            ),
            // '2562047788:00:54.775807'::interval
            (
                1186,
                "7fffffffffffffff0000000000000000",
                Some("2562047788:00:54.775807"),
            ),
            // '-2562047788:00:54.775807'::interval - '0.000001 sec'::interval
            (
                1186,
                "80000000000000000000000000000000",
                Some("-2562047788:00:54.775808"),
            ),
            // '12:34:56.1'::interval
            (1186, "0000000a8bdba2a00000000000000000", Some("12:34:56.1")),
            // '1 day 0.1 sec'::interval
            (
                1186,
                "00000000000186a00000000100000000",
                Some("1 day 00:00:00.1"),
            ),
            // accepted (binary COPY)
            (
                1186,
                "80000000000000008000000080000000",
                Some("-178956970 years -8 mons -2147483648 days -2562047788:00:54.775808"),
            ),
            // accepted (binary COPY)
            (
                1186,
                "7fffffffffffffff7fffffff7fffffff",
                Some("178956970 years 7 mons 2147483647 days 2562047788:00:54.775807"),
            ),
            // accepted (binary COPY)
            (
                1186,
                "ffffffffffffffff0000000000000001",
                Some("1 mon -00:00:00.000001"),
            ),
            // accepted (binary COPY)
            (
                1186,
                "00000000004c4b4000000000ffffffff",
                Some("-1 mons +00:00:05"),
            ),
            // refused: incorrect binary data format
            (1186, "0000000000000000000000000000000000", None),
        ]);
    }
}
