//! A statement's SQL as the audit keeps it: its text, and, when the client's bytes were not
//! UTF-8 (a client_encoding such as LATIN1, WIN1252 or SJIS), those bytes as well, so the
//! log loses nothing the client sent within the cap.

use std::ops::Deref;
use std::sync::Arc;

use super::capped_text;

/// Copied out of the frame once, then shared by its prepared statement, its portals and each
/// execution without further copies.
#[derive(Debug, Clone)]
pub(crate) struct Sql {
    /// The text, lossy (U+FFFD for bytes that are not UTF-8) when `raw` is set.
    text: Arc<str>,
    /// The client's bytes, capped like the text, when they were not UTF-8.
    raw: Option<Arc<[u8]>>,
}

impl Sql {
    /// The SQL of a message, capped at `max` bytes.
    pub(crate) fn from_wire(bytes: &[u8], max: usize) -> Sql {
        let capped = bytes.len() > max;
        let cut = bytes.get(..max).unwrap_or(bytes);
        let valid = match std::str::from_utf8(cut) {
            Ok(s) => Some(s),
            // A capped text may end inside a character: that is the cap's doing, not the
            // client's bytes.
            Err(e) if capped && e.error_len().is_none() => cut
                .get(..e.valid_up_to())
                .and_then(|b| std::str::from_utf8(b).ok()),
            Err(_) => None,
        };
        match valid {
            Some(s) if !capped => Sql::text(Arc::from(s)),
            Some(s) => Sql::text(Arc::from(format!("{s}{}", portcullis_recorder::TRUNCATED))),
            None => Sql {
                text: Arc::from(capped_text(bytes, max)),
                raw: Some(Arc::from(cut)),
            },
        }
    }

    /// Text the tap made up (a placeholder for a statement it does not know).
    pub(crate) fn text(text: Arc<str>) -> Sql {
        Sql { text, raw: None }
    }

    /// Is this the same copy of the text as `other` (not merely equal)?
    #[cfg(test)]
    pub(crate) fn shares_text(&self, other: &Sql) -> bool {
        Arc::ptr_eq(&self.text, &other.text)
    }

    /// The client's bytes, when they were not UTF-8.
    pub(crate) fn raw(&self) -> Option<&[u8]> {
        self.raw.as_deref()
    }
}

impl Deref for Sql {
    type Target = str;

    fn deref(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::type_complexity)]
    fn bytes_that_are_not_utf8_are_kept_beside_the_text() {
        let t = portcullis_recorder::TRUNCATED;
        let cases: &[(&[u8], usize, &str, Option<&[u8]>)] = &[
            (b"select 1", 100, "select 1", None),
            ("select 'café'".as_bytes(), 100, "select 'café'", None),
            // LATIN1 é.
            (
                b"select 'caf\xe9'",
                100,
                "select 'caf\u{fffd}'",
                Some(b"select 'caf\xe9'"),
            ),
            // The cap cuts inside a UTF-8 é: the text ends before it, nothing is kept raw.
            ("select 'é'".as_bytes(), 9, &format!("select '{t}"), None),
            // Not UTF-8 and capped: the raw bytes are capped too.
            (
                b"\xe9\xe9\xe9\xe9",
                2,
                &format!("\u{fffd}\u{fffd}{t}"),
                Some(b"\xe9\xe9"),
            ),
        ];
        for (bytes, max, text, raw) in cases {
            let s = Sql::from_wire(bytes, *max);
            assert_eq!(&*s, *text, "{bytes:?}");
            assert_eq!(s.raw(), *raw, "{bytes:?}");
        }
    }
}
