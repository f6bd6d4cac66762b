//! Binary-format parameter values rendered as text, for the audit log.
//!
//! Drivers such as pgjdbc, tokio-postgres and asyncpg send parameters in binary format. Shown
//! as hex, `where id = $1` with id 7 reads `\x00000007` and a text value `n2` reads
//! `\x6e32`: correct, but not what a reviewer can read. When the parameter's type is known
//! (from the Parse, or from the server's ParameterDescription), the common scalar types
//! are rendered as PostgreSQL would print them. Anything else, or any value whose length
//! does not fit its type (the server will refuse it), is left to the caller's hex.
//!
//! This file owns the dispatch on the type OID and the scalar types; `interval`, `timetz`,
//! `inet`/`cidr` and arrays have a module each below it.

mod array;
mod inet;
mod interval;
mod timetz;

use std::fmt::Write as _;

pub use array::MAX_ARRAY_TEXT;

/// Type OIDs (`pg_type.oid`, fixed since PostgreSQL 7) of the types rendered here.
pub mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    /// The one-byte `"char"`, not `char(n)` (that is [`BPCHAR`]).
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const CIDR: u32 = 650;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const UNKNOWN: u32 = 705;
    pub const INET: u32 = 869;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const TIME: u32 = 1083;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const INTERVAL: u32 = 1186;
    pub const TIMETZ: u32 = 1266;
    pub const NUMERIC: u32 = 1700;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;

    /// Array types, named for their element type (`pg_type.typarray` of each).
    pub const JSON_ARRAY: u32 = 199;
    pub const CIDR_ARRAY: u32 = 651;
    pub const BOOL_ARRAY: u32 = 1000;
    pub const BYTEA_ARRAY: u32 = 1001;
    pub const CHAR_ARRAY: u32 = 1002;
    pub const NAME_ARRAY: u32 = 1003;
    pub const INT2_ARRAY: u32 = 1005;
    pub const INT4_ARRAY: u32 = 1007;
    pub const TEXT_ARRAY: u32 = 1009;
    pub const BPCHAR_ARRAY: u32 = 1014;
    pub const VARCHAR_ARRAY: u32 = 1015;
    pub const INT8_ARRAY: u32 = 1016;
    pub const FLOAT4_ARRAY: u32 = 1021;
    pub const FLOAT8_ARRAY: u32 = 1022;
    pub const OID_ARRAY: u32 = 1028;
    pub const INET_ARRAY: u32 = 1041;
    pub const TIMESTAMP_ARRAY: u32 = 1115;
    pub const DATE_ARRAY: u32 = 1182;
    pub const TIME_ARRAY: u32 = 1183;
    pub const TIMESTAMPTZ_ARRAY: u32 = 1185;
    pub const INTERVAL_ARRAY: u32 = 1187;
    pub const NUMERIC_ARRAY: u32 = 1231;
    pub const TIMETZ_ARRAY: u32 = 1270;
    pub const UUID_ARRAY: u32 = 2951;
    pub const JSONB_ARRAY: u32 = 3807;
}

/// Types whose binary format is their text, in the client encoding (UTF-8 here).
pub fn is_text_type(oid: u32) -> bool {
    matches!(
        oid,
        oid::TEXT | oid::VARCHAR | oid::BPCHAR | oid::NAME | oid::JSON | oid::XML | oid::UNKNOWN
    )
}

/// The text of binary value `v` of type `oid`, if the type is one rendered here and `v` is
/// well formed for it. Types whose binary format is their text ([`is_text_type`]) are not
/// rendered here: the caller reads them as text, and can cap them before copying.
///
/// An array's text is cut after about [`MAX_ARRAY_TEXT`] bytes (ending mid-array, without
/// its closing braces), so a caller that caps what it logs at less than that still sees
/// the text as longer than its cap. Elements after the cut have their framing checked, but
/// are not parsed.
pub fn binary_as_text(oid: u32, v: &[u8]) -> Option<String> {
    if let Some(element) = array::element_type(oid) {
        return array::array(element, v);
    }
    match oid {
        // `boolrecv` reads any byte other than zero as true.
        oid::BOOL => match v {
            [0] => Some("false".into()),
            [_] => Some("true".into()),
            _ => None,
        },
        oid::INT2 => Some(i16::from_be_bytes(v.try_into().ok()?).to_string()),
        oid::INT4 => Some(i32::from_be_bytes(v.try_into().ok()?).to_string()),
        oid::INT8 => Some(i64::from_be_bytes(v.try_into().ok()?).to_string()),
        oid::OID => Some(u32::from_be_bytes(v.try_into().ok()?).to_string()),
        // Finite values in the shortest form that reads back to the same value at the
        // value's own precision (a float4 0.1 is `0.1`, not the `0.10000000149011612` of the
        // same value widened), laid out as PostgreSQL lays it out.
        oid::FLOAT4 => {
            let f = f32::from_be_bytes(v.try_into().ok()?);
            non_finite(f64::from(f)).or_else(|| pg_float(&format!("{f:e}"), 6))
        }
        oid::FLOAT8 => {
            let f = f64::from_be_bytes(v.try_into().ok()?);
            non_finite(f).or_else(|| pg_float(&format!("{f:e}"), 15))
        }
        oid::JSONB => match v.split_first() {
            Some((1, json)) => std::str::from_utf8(json).ok().map(str::to_owned),
            _ => None,
        },
        oid::UUID => {
            let b: [u8; 16] = v.try_into().ok()?;
            let mut s = String::with_capacity(36);
            for (i, byte) in b.iter().enumerate() {
                if matches!(i, 4 | 6 | 8 | 10) {
                    s.push('-');
                }
                let _ = write!(s, "{byte:02x}");
            }
            Some(s)
        }
        oid::DATE => {
            let days = i32::from_be_bytes(v.try_into().ok()?);
            Some(match days {
                i32::MAX => "infinity".into(),
                i32::MIN => "-infinity".into(),
                d => date(i64::from(d)),
            })
        }
        oid::TIME => {
            let us = i64::from_be_bytes(v.try_into().ok()?);
            (0..=DAY_US).contains(&us).then(|| time_of_day(us))
        }
        oid::TIMESTAMP | oid::TIMESTAMPTZ => {
            let us = i64::from_be_bytes(v.try_into().ok()?);
            let zone = if oid == oid::TIMESTAMPTZ { "+00" } else { "" };
            Some(match us {
                i64::MAX => "infinity".into(),
                i64::MIN => "-infinity".into(),
                us => timestamp(us, zone),
            })
        }
        oid::NUMERIC => numeric(v),
        oid::CHAR => match v {
            [c] => Some(char_text(*c)),
            _ => None,
        },
        oid::INTERVAL => interval::interval(v),
        oid::TIMETZ => timetz::timetz(v),
        oid::INET => inet::inet(v, false),
        oid::CIDR => inet::inet(v, true),
        _ => None,
    }
}

const DAY_US: i64 = 86_400_000_000;

/// A `"char"` as `charout` prints it: ASCII as itself (NUL as nothing), any other byte as
/// a backslash and three octal digits, since on its own it is not a character.
fn char_text(c: u8) -> String {
    if c.is_ascii() {
        if c == 0 {
            String::new()
        } else {
            char::from(c).to_string()
        }
    } else {
        format!("\\{c:03o}")
    }
}

/// A finite float as PostgreSQL prints it (`float8out`/`float4out` with the default
/// `extra_float_digits`): the shortest digits that read back to the value, in fixed
/// notation when the decimal exponent is from -4 up to below `max_exp` (15 for float8, 6
/// for float4, as printf's `%g` would), otherwise as `1.5e-07` / `1e+300`. `sci` is Rust's
/// shortest scientific form of the value (`-1.5e-7`, `1e300`).
fn pg_float(sci: &str, max_exp: i32) -> Option<String> {
    let (mantissa, exp) = sci.split_once('e')?;
    let exp: i32 = exp.parse().ok()?;
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => ("-", m),
        None => ("", mantissa),
    };
    if !(-4..max_exp).contains(&exp) {
        let (esign, e) = if exp < 0 { ('-', -exp) } else { ('+', exp) };
        return Some(format!("{sign}{mantissa}e{esign}{e:02}"));
    }
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    Some(match usize::try_from(exp) {
        // 0.000ddd
        Err(_) => {
            let zeros = "0".repeat(usize::try_from(-exp - 1).ok()?);
            format!("{sign}0.{zeros}{digits}")
        }
        Ok(e) => {
            let (int, frac) = (digits.get(..=e), digits.get(e + 1..));
            match (int, frac) {
                (Some(int), Some(frac)) if !frac.is_empty() => format!("{sign}{int}.{frac}"),
                (Some(int), _) => format!("{sign}{int}"),
                // Fewer digits than the integer part: pad with zeros.
                (None, _) => format!("{sign}{digits}{}", "0".repeat(e + 1 - digits.len())),
            }
        }
    })
}

/// PostgreSQL's spelling of a non-finite float.
fn non_finite(f: f64) -> Option<String> {
    let s = if f.is_nan() {
        "NaN"
    } else if f == f64::INFINITY {
        "Infinity"
    } else if f == f64::NEG_INFINITY {
        "-Infinity"
    } else {
        return None;
    };
    Some(s.into())
}

/// `YYYY-MM-DD` (with ` BC` before year 1) of a day counted from 2000-01-01.
fn date(days: i64) -> String {
    // Days since 1970-01-01, then the civil calendar (H. Hinnant's days_from_civil inverse).
    let z = days + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    if year >= 1 {
        format!("{year:04}-{month:02}-{day:02}")
    } else {
        format!("{:04}-{month:02}-{day:02} BC", 1 - year)
    }
}

/// `HH:MM:SS` and, when not whole, the fraction without trailing zeros.
fn time_of_day(us: i64) -> String {
    let secs = us / 1_000_000;
    let mut s = format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60);
    let frac = us % 1_000_000;
    if frac != 0 {
        let digits = format!("{frac:06}");
        s.push('.');
        s.push_str(digits.trim_end_matches('0'));
    }
    s
}

fn timestamp(us: i64, zone: &str) -> String {
    let days = us.div_euclid(DAY_US);
    let d = date(days);
    let t = time_of_day(us.rem_euclid(DAY_US));
    match d.strip_suffix(" BC") {
        Some(d) => format!("{d} {t}{zone} BC"),
        None => format!("{d} {t}{zone}"),
    }
}

/// Largest numeric rendered, in base-10,000 digits either side of the point (and decimal
/// digits of display scale): past that (PostgreSQL allows 131,072 digits) the caller's
/// capped hex is cheaper to produce than text it would cut.
const NUMERIC_MAX_WEIGHT: i64 = 256;
const NUMERIC_MAX_SCALE: usize = 1024;

/// A binary numeric: digit count, weight (of the first digit, in powers of 10,000), sign,
/// display scale, then base-10,000 digits.
fn numeric(v: &[u8]) -> Option<String> {
    let word = |i: usize| -> Option<u16> {
        let b: [u8; 2] = v.get(i * 2..i * 2 + 2)?.try_into().ok()?;
        Some(u16::from_be_bytes(b))
    };
    let ndigits = usize::from(word(0)?);
    let weight = i64::from(word(1)?.cast_signed());
    let sign = word(2)?;
    let dscale = usize::from(word(3)?);
    if v.len() != 8 + ndigits * 2 || weight.abs() > NUMERIC_MAX_WEIGHT || dscale > NUMERIC_MAX_SCALE
    {
        return None;
    }
    let digits: Vec<u16> = (0..ndigits).map(|i| word(4 + i)).collect::<Option<_>>()?;
    if digits.iter().any(|&d| d >= 10_000) {
        return None;
    }
    let mut s = match sign {
        0x0000 => String::new(),
        0x4000 => "-".into(),
        0xC000 => return Some("NaN".into()),
        0xD000 => return Some("Infinity".into()),
        0xF000 => return Some("-Infinity".into()),
        _ => return None,
    };
    // The digit at power `w` of 10,000 (zero outside the stored ones).
    let at = |w: i64| -> u16 {
        usize::try_from(weight - w)
            .ok()
            .and_then(|i| digits.get(i).copied())
            .unwrap_or(0)
    };
    if weight < 0 {
        s.push('0');
    } else {
        let _ = write!(s, "{}", at(weight));
        for w in (0..weight).rev() {
            let _ = write!(s, "{:04}", at(w));
        }
    }
    if dscale > 0 {
        let mut frac = String::with_capacity(dscale + 4);
        let mut w = -1;
        while frac.len() < dscale {
            let _ = write!(frac, "{:04}", at(w));
            w -= 1;
        }
        frac.truncate(dscale);
        s.push('.');
        s.push_str(&frac);
    }
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Checks [`binary_as_text`] against rows of type OID, value as hex (as PostgreSQL's
    /// `encode(…_send(v), 'hex')` prints it) and the text expected.
    pub(super) fn check(rows: &[(u32, &str, Option<&str>)]) {
        for &(oid, hex, want) in rows {
            let v: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(hex.get(i..i + 2).expect("whole bytes"), 16))
                .collect::<Result<_, _>>()
                .expect("hex");
            assert_eq!(binary_as_text(oid, &v).as_deref(), want, "oid {oid}, {hex}");
        }
    }

    #[test]
    fn renders_the_common_types_as_postgres_prints_them() {
        let cases: &[(u32, &[u8], Option<&str>)] = &[
            (oid::BOOL, &[1], Some("true")),
            (oid::BOOL, &[0], Some("false")),
            // PostgreSQL 15 reads any nonzero byte as true (checked by binary COPY).
            (oid::BOOL, &[2], Some("true")),
            (oid::BOOL, &[], None),
            (oid::INT2, &[0xff, 0xfe], Some("-2")),
            (oid::INT4, &[0, 0, 0, 7], Some("7")),
            (oid::INT4, &[0, 0, 7], None),
            (
                oid::INT8,
                &[0x80, 0, 0, 0, 0, 0, 0, 0],
                Some("-9223372036854775808"),
            ),
            (oid::OID, &[0xff, 0xff, 0xff, 0xff], Some("4294967295")),
            (oid::FLOAT8, &1.5f64.to_be_bytes(), Some("1.5")),
            (oid::FLOAT8, &1e300f64.to_be_bytes(), Some("1e+300")),
            // Each as PostgreSQL 15 prints the same value (`'…'::float8::text`).
            (oid::FLOAT8, &1.0f64.to_be_bytes(), Some("1")),
            (oid::FLOAT8, &(-0.0f64).to_be_bytes(), Some("-0")),
            (oid::FLOAT8, &100.0f64.to_be_bytes(), Some("100")),
            (oid::FLOAT8, &1e14f64.to_be_bytes(), Some("100000000000000")),
            (oid::FLOAT8, &1e15f64.to_be_bytes(), Some("1e+15")),
            (oid::FLOAT8, &1.5e-7f64.to_be_bytes(), Some("1.5e-07")),
            (oid::FLOAT8, &1e-5f64.to_be_bytes(), Some("1e-05")),
            (
                oid::FLOAT8,
                &0.00012345f64.to_be_bytes(),
                Some("0.00012345"),
            ),
            (oid::FLOAT8, &123.456f64.to_be_bytes(), Some("123.456")),
            (
                oid::FLOAT8,
                &12345678901234.5f64.to_be_bytes(),
                Some("12345678901234.5"),
            ),
            (
                oid::FLOAT8,
                &123456789012345678.0f64.to_be_bytes(),
                Some("1.2345678901234568e+17"),
            ),
            (oid::FLOAT8, &5e-324f64.to_be_bytes(), Some("5e-324")),
            (
                oid::FLOAT8,
                &(0.1f64 + 0.2).to_be_bytes(),
                Some("0.30000000000000004"),
            ),
            (oid::FLOAT4, &1.0f32.to_be_bytes(), Some("1")),
            (oid::FLOAT4, &1e5f32.to_be_bytes(), Some("100000")),
            (oid::FLOAT4, &1e6f32.to_be_bytes(), Some("1e+06")),
            (
                oid::FLOAT4,
                &1234567.0f32.to_be_bytes(),
                Some("1.234567e+06"),
            ),
            (
                oid::FLOAT4,
                &3.4028235e38f32.to_be_bytes(),
                Some("3.4028235e+38"),
            ),
            (
                oid::FLOAT8,
                &f64::NEG_INFINITY.to_be_bytes(),
                Some("-Infinity"),
            ),
            (oid::FLOAT4, &f32::NAN.to_be_bytes(), Some("NaN")),
            (oid::FLOAT4, &0.25f32.to_be_bytes(), Some("0.25")),
            (oid::FLOAT4, &0.1f32.to_be_bytes(), Some("0.1")),
            (oid::FLOAT4, &f32::INFINITY.to_be_bytes(), Some("Infinity")),
            // Text types are the caller's (it caps them before copying).
            (oid::TEXT, b"n2", None),
            (oid::JSONB, b"\x01{\"a\":1}", Some("{\"a\":1}")),
            (oid::JSONB, b"\x02{}", None),
            (
                oid::UUID,
                &[
                    0x55, 0x0e, 0x84, 0x00, 0xe2, 0x9b, 0x41, 0xd4, 0xa7, 0x16, 0x44, 0x66, 0x55,
                    0x44, 0, 0,
                ],
                Some("550e8400-e29b-41d4-a716-446655440000"),
            ),
            (oid::DATE, &0i32.to_be_bytes(), Some("2000-01-01")),
            (oid::DATE, &9829i32.to_be_bytes(), Some("2026-11-29")),
            (oid::DATE, &(-730_119i32).to_be_bytes(), Some("0001-01-01")),
            (
                oid::DATE,
                &(-730_120i32).to_be_bytes(),
                Some("0001-12-31 BC"),
            ),
            (oid::DATE, &i32::MAX.to_be_bytes(), Some("infinity")),
            (
                oid::TIME,
                &45_296_000_001i64.to_be_bytes(),
                Some("12:34:56.000001"),
            ),
            (oid::TIME, &(-1i64).to_be_bytes(), None),
            (
                oid::TIMESTAMP,
                &(9829 * DAY_US + 36_000_123_456).to_be_bytes(),
                Some("2026-11-29 10:00:00.123456"),
            ),
            (
                oid::TIMESTAMPTZ,
                &(-1i64).to_be_bytes(),
                Some("1999-12-31 23:59:59.999999+00"),
            ),
            (oid::TIMESTAMP, &i64::MIN.to_be_bytes(), Some("-infinity")),
            (oid::BYTEA, b"\xde\xad", None),
            (1007, b"\0\0\0\x01", None),
        ];
        for &(oid, v, want) in cases {
            assert_eq!(
                binary_as_text(oid, v).as_deref(),
                want,
                "oid {oid}, {v:02x?}"
            );
        }
    }

    fn num(ndigits: u16, weight: i16, sign: u16, dscale: u16, digits: &[u16]) -> Vec<u8> {
        let mut v = Vec::new();
        for w in [ndigits, weight.cast_unsigned(), sign, dscale] {
            v.extend_from_slice(&w.to_be_bytes());
        }
        for d in digits {
            v.extend_from_slice(&d.to_be_bytes());
        }
        v
    }

    #[test]
    fn renders_numeric() {
        let cases: &[(Vec<u8>, Option<&str>)] = &[
            (num(0, 0, 0, 0, &[]), Some("0")),
            (num(2, 0, 0x4000, 2, &[12, 3400]), Some("-12.34")),
            (num(1, 1, 0, 0, &[1]), Some("10000")),
            (num(2, 1, 0, 0, &[1, 5]), Some("10005")),
            (num(1, -1, 0, 4, &[5]), Some("0.0005")),
            (num(1, -2, 0, 6, &[12]), Some("0.000000")),
            (num(1, -2, 0, 8, &[12]), Some("0.00000012")),
            (num(3, 0, 0, 5, &[123, 4567, 8000]), Some("123.45678")),
            (num(0, 0, 0xC000, 0, &[]), Some("NaN")),
            (num(0, 0, 0xD000, 0, &[]), Some("Infinity")),
            (num(1, 0, 0, 0, &[10_000]), None),
            (num(2, 0, 0, 0, &[1]), None),
            (num(0, 0, 0x1234, 0, &[]), None),
            (num(1, 257, 0, 0, &[1]), None),
            (num(1, -257, 0, 0, &[1]), None),
            (num(0, 0, 0, 1025, &[]), None),
            (vec![0, 1], None),
        ];
        for (v, want) in cases {
            assert_eq!(numeric(v).as_deref(), *want, "{v:02x?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_values_never_panic(oid in proptest::sample::select(vec![
            oid::BOOL, oid::INT2, oid::INT4, oid::INT8, oid::FLOAT8, oid::TEXT, oid::JSONB,
            oid::UUID, oid::DATE, oid::TIME, oid::TIMESTAMP, oid::TIMESTAMPTZ, oid::NUMERIC,
            oid::CHAR, oid::INTERVAL, oid::TIMETZ, oid::INET, oid::CIDR, oid::INT4_ARRAY,
            oid::TEXT_ARRAY, oid::NUMERIC_ARRAY,
        ]), v in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let _ = binary_as_text(oid, &v);
        }

        #[test]
        fn arbitrary_fixed_width_values_never_panic(
            time in proptest::prelude::any::<i64>(),
            days in proptest::prelude::any::<i32>(),
            months in proptest::prelude::any::<i32>(),
        ) {
            let interval = [&time.to_be_bytes()[..], &days.to_be_bytes(), &months.to_be_bytes()];
            let _ = binary_as_text(oid::INTERVAL, &interval.concat());
            let timetz = [&time.to_be_bytes()[..], &days.to_be_bytes()];
            let _ = binary_as_text(oid::TIMETZ, &timetz.concat());
        }

        #[test]
        fn arbitrary_addresses_never_panic(
            family in 0u8..5,
            bits in proptest::prelude::any::<u8>(),
            is_cidr in proptest::prelude::any::<u8>(),
            len in proptest::sample::select(vec![0u8, 4, 16, 255]),
            addr in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20),
        ) {
            let v = [&[family, bits, is_cidr, len][..], &addr].concat();
            let _ = binary_as_text(oid::INET, &v);
            let _ = binary_as_text(oid::CIDR, &v);
        }

        #[test]
        fn extreme_dates_and_timestamps_never_panic(d in proptest::prelude::any::<i32>(), t in proptest::prelude::any::<i64>()) {
            let _ = binary_as_text(oid::DATE, &d.to_be_bytes());
            let _ = binary_as_text(oid::TIMESTAMP, &t.to_be_bytes());
        }
    }
}
