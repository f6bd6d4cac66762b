//! How a statement's parameters appear in its `pg.query` event: as the text PostgreSQL
//! would print, whatever format the driver sent them in.
//!
//! Text-format parameters are their own text. Binary-format ones (pgjdbc, tokio-postgres,
//! asyncpg) are rendered from their type when it is known, from the Parse or from the
//! server's ParameterDescription (see [`portcullis_protocol::pg::binary_as_text`]); a value
//! of any other type, or one that is not well formed, is logged as `\x` and hex, the way
//! PostgreSQL prints a bytea. Every value is capped.

use std::fmt::Write as _;
use std::sync::Arc;

use portcullis_protocol::pg::{Bind, binary_as_text, is_text_type};
use portcullis_recorder::{TRUNCATED, capped};
use serde_json::Value;

/// Longest parameter kept (bytes of text, or bytes before hex encoding).
const MAX_PARAM: usize = 1024;
/// Most parameters kept per statement.
const MAX_PARAMS: usize = 100;

/// The parameters of `bind` (at most [`MAX_PARAMS`]), `types` being the statement's
/// parameter type OIDs as far as they are known (0 or missing: unknown).
pub(crate) fn values(bind: &Bind<'_>, types: &[u32]) -> Arc<[Value]> {
    bind.params()
        .take(MAX_PARAMS)
        .enumerate()
        .map(|(i, v)| value(bind, i, v, types.get(i).copied().unwrap_or(0)))
        .collect()
}

fn value(bind: &Bind<'_>, i: usize, value: Option<&[u8]>, oid: u32) -> Value {
    let Some(v) = value else {
        return Value::Null;
    };
    let binary = bind.param_format(i) != 0;
    // Text types are capped here, before anything is copied.
    let text = if !binary || is_text_type(oid) {
        capped_utf8(v)
    } else {
        binary_as_text(oid, v).map(|s| capped(s, MAX_PARAM))
    };
    Value::String(text.unwrap_or_else(|| hex(v)))
}

/// `v` as text if it is UTF-8, capped at [`MAX_PARAM`] bytes on a char boundary.
fn capped_utf8(v: &[u8]) -> Option<String> {
    if v.len() <= MAX_PARAM {
        return std::str::from_utf8(v).ok().map(str::to_owned);
    }
    let cut = v.get(..MAX_PARAM)?;
    let text = match std::str::from_utf8(cut) {
        Ok(s) => s,
        // The cap fell inside a character: keep the whole ones before it.
        Err(e) if e.error_len().is_none() => {
            std::str::from_utf8(cut.get(..e.valid_up_to())?).ok()?
        }
        Err(_) => return None,
    };
    Some(format!("{text}{TRUNCATED}"))
}

/// `\x` and the hex of the first half of [`MAX_PARAM`] bytes.
fn hex(v: &[u8]) -> String {
    let cut = v.get(..MAX_PARAM / 2).unwrap_or(v);
    let mut s = String::with_capacity(2 + cut.len() * 2 + TRUNCATED.len());
    s.push_str("\\x");
    for b in cut {
        let _ = write!(s, "{b:02x}");
    }
    if v.len() > cut.len() {
        s.push_str(TRUNCATED);
    }
    s
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use portcullis_protocol::pg::oid;

    use super::*;

    /// A Bind of `params`, each (binary?, value or NULL).
    fn bind_values(params: &[(bool, Option<&[u8]>)]) -> (Vec<u8>, Vec<u8>) {
        let mut formats = Vec::new();
        let mut values = Vec::new();
        for (binary, v) in params {
            formats.extend_from_slice(&i16::from(*binary).to_be_bytes());
            match v {
                Some(v) => {
                    values.extend_from_slice(&i32::try_from(v.len()).unwrap().to_be_bytes());
                    values.extend_from_slice(v);
                }
                None => values.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        (formats, values)
    }

    #[test]
    fn parameters_read_as_postgres_prints_them() {
        let long_text = "é".repeat(MAX_PARAM);
        let just_fits = "x".repeat(MAX_PARAM);
        let cases: &[(bool, Option<&[u8]>, u32, Value)] = &[
            (false, Some(b"7"), 0, "7".into()),
            (false, Some(b"7"), oid::INT4, "7".into()),
            (true, Some(&[0, 0, 0, 7]), oid::INT4, "7".into()),
            (true, Some(&[0, 0, 0, 7]), 0, "\\x00000007".into()),
            (true, Some(b"n2"), oid::TEXT, "n2".into()),
            (true, Some(b"n2"), 0, "\\x6e32".into()),
            (true, Some(&[0xde, 0xad]), oid::BYTEA, "\\xdead".into()),
            // Not an int4 (the server will refuse it): shown as sent.
            (true, Some(&[0, 7]), oid::INT4, "\\x0007".into()),
            (true, Some(&[1]), oid::BOOL, "true".into()),
            (false, Some(b"\xff"), 0, "\\xff".into()),
            (true, None, oid::INT4, Value::Null),
            (
                false,
                Some(just_fits.as_bytes()),
                0,
                just_fits.clone().into(),
            ),
            (
                false,
                Some(long_text.as_bytes()),
                0,
                format!("{}{TRUNCATED}", "é".repeat(MAX_PARAM / 2)).into(),
            ),
            (
                true,
                Some(&long_text.as_bytes()[1..]),
                oid::VARCHAR,
                format!("\\x{}{TRUNCATED}", "a9c3".repeat(MAX_PARAM / 4)).into(),
            ),
        ];
        for (binary, v, oid, want) in cases {
            let (formats, raw) = bind_values(&[(*binary, *v)]);
            let b = Bind {
                portal: b"",
                statement: b"",
                param_formats: &formats,
                param_count: 1,
                param_values: &raw,
                result_formats: &[],
            };
            assert_eq!(
                *values(&b, &[*oid]),
                *std::slice::from_ref(want),
                "{binary} {v:?} {oid}"
            );
        }
    }

    #[test]
    fn types_apply_by_position_and_missing_ones_are_unknown() {
        let (formats, raw) = bind_values(&[
            (true, Some(&[0, 0, 0, 2])),
            (true, Some(b"n2")),
            (true, Some(&[0, 1])),
        ]);
        let b = Bind {
            portal: b"",
            statement: b"",
            param_formats: &formats,
            param_count: 3,
            param_values: &raw,
            result_formats: &[],
        };
        assert_eq!(
            *values(&b, &[oid::INT4, oid::TEXT]),
            [Value::from("2"), Value::from("n2"), Value::from("\\x0001")]
        );
    }
}
