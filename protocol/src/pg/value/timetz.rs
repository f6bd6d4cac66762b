//! `time with time zone` as PostgreSQL 15's `timetz_out` prints it: the time of day, then
//! the zone's offset from UTC, `13:14:15+00`, `13:14:15.5-05:30`, `01:02:03+00:00:15`.

use super::{DAY_US, time_of_day};

/// The largest zone offset `timetz_recv` accepts, exclusive: 16 hours, in seconds.
const ZONE_LIMIT: i32 = 16 * 3600;

/// A binary timetz: microseconds since midnight, then the zone in seconds west of UTC
/// (the opposite sign to the one printed). Out-of-range values are ones the server refuses.
pub(super) fn timetz(v: &[u8]) -> Option<String> {
    let (time, zone) = v.split_first_chunk::<8>()?;
    let zone: [u8; 4] = zone.try_into().ok()?;
    let (us, zone) = (i64::from_be_bytes(*time), i32::from_be_bytes(zone));
    if !(0..=DAY_US).contains(&us) || zone <= -ZONE_LIMIT || zone >= ZONE_LIMIT {
        return None;
    }
    let mut s = time_of_day(us);
    // As `EncodeTimezone` does: hours always, minutes when they or seconds are nonzero,
    // seconds only when nonzero.
    s.push(if zone <= 0 { '+' } else { '-' });
    let abs = zone.unsigned_abs();
    let (hours, minutes, seconds) = (abs / 3600, abs / 60 % 60, abs % 60);
    s.push_str(&format!("{hours:02}"));
    if minutes != 0 || seconds != 0 {
        s.push_str(&format!(":{minutes:02}"));
    }
    if seconds != 0 {
        s.push_str(&format!(":{seconds:02}"));
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::super::tests::check;

    /// Each row's bytes are `timetz_send` of the value in its comment (with `TimeZone` UTC),
    /// and its text what PostgreSQL 15.18 printed for it; rows marked binary COPY were fed to
    /// the server as those bytes, and it printed the text or refused them as the comment says.
    #[test]
    fn renders_timetz_as_postgres_15_prints_it() {
        check(&[
            // '13:14:15+00'::timetz
            (1266, "0000000b187597c000000000", Some("13:14:15+00")),
            // '13:14:15.5-05:30'::timetz
            (1266, "0000000b187d38e000004d58", Some("13:14:15.5-05:30")),
            // '01:02:03+00:00:15'::timetz
            (1266, "00000000dde878c0fffffff1", Some("01:02:03+00:00:15")),
            // '00:00:00+15:59'::timetz
            (1266, "0000000000000000ffff1f3c", Some("00:00:00+15:59")),
            // '24:00:00-15:59:59'::timetz
            (1266, "000000141dd760000000e0ff", Some("24:00:00-15:59:59")),
            // '23:59:59.999999+14'::timetz
            (1266, "000000141dd75fffffff3b20", Some("23:59:59.999999+14")),
            // '12:00-08'::timetz
            (1266, "0000000a0eebb00000007080", Some("12:00:00-08")),
            // '12:00+05:45'::timetz
            (1266, "0000000a0eebb000ffffaf24", Some("12:00:00+05:45")),
            // '12:00-00:00:15'::timetz
            (1266, "0000000a0eebb0000000000f", Some("12:00:00-00:00:15")),
            // accepted (binary COPY)
            (1266, "00000000000000000000e0ff", Some("00:00:00-15:59:59")),
            // accepted (binary COPY)
            (1266, "0000000000000000ffff1f01", Some("00:00:00+15:59:59")),
            // refused: time zone displacement out of range
            (1266, "00000000000000000000e100", None),
            // refused: time zone displacement out of range
            (1266, "0000000000000000ffff1f00", None),
            // refused: time out of range
            (1266, "000000141dd7600100000000", None),
            // refused: time out of range
            (1266, "ffffffffffffffff00000000", None),
        ]);
    }
}
