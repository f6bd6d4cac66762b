//! One audit record: its canonical bytes, its hash, and the strict parser that checks a line.
//!
//! This is the pure core of the chain: no I/O, no clock (the caller passes the timestamp).
//!
//! # Canonical form
//!
//! A record is one line of JSON with its members in this fixed order and no whitespace:
//!
//! ```text
//! {"seq":N,"ts":"<RFC 3339, nanoseconds, UTC, Z>","prev":"<64 hex>","hash":"<64 hex>","event":{...}}\n
//! ```
//!
//! `event` is serialised by serde_json from its map (keys sorted, the default map of
//! serde_json), or handed over already serialised by a typed event whose fields are declared
//! in that same sorted order (`JsonEvent`), so both give the same bytes for the same event.
//! Verification does not depend on the key order: it hashes the bytes as they are. The *canonical bytes* of a record are the line without its trailing newline
//! and without the `,"hash":"<64 hex>"` member, and
//! `hash = sha256(prev as 32 raw bytes ‖ canonical bytes)`. The genesis `prev` is 32 zero
//! bytes (64 `0`s). Because the parser checks the layout byte for byte and the hash covers
//! every byte of the line except the hash itself, any change to any byte of a line is caught.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// The `prev` of the first record.
pub const GENESIS: Hash = [0u8; 32];

/// Why a line is not a valid record on its own (before chain checks).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineError {
    /// The bytes do not follow the canonical layout; names what was expected.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// The `event` member is not a JSON object.
    #[error("malformed record: event is not a json object")]
    BadEvent,
    /// The stored hash is not the hash of the record's canonical bytes.
    #[error("hash mismatch: the record was altered")]
    HashMismatch,
}

/// A parsed record, as readers see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub ts: String,
    pub prev: String,
    pub hash: String,
    pub event: serde_json::Map<String, serde_json::Value>,
}

impl Record {
    /// The event type, e.g. `"pg.query"` (empty when missing).
    pub fn kind(&self) -> &str {
        self.str_field("type").unwrap_or("")
    }

    /// A string field of the event.
    pub fn str_field(&self, key: &str) -> Option<&str> {
        self.event.get(key).and_then(|v| v.as_str())
    }

    /// The record's timestamp.
    pub fn time(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::parse_from_rfc3339(&self.ts)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }
}

/// Formats `t` the way records store it: RFC 3339, nanoseconds, `Z`.
pub fn format_ts(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

const HASH_MEMBER: &[u8] = b",\"hash\":\"";

/// Appends the canonical line (with trailing newline) of a record to `out`; returns its hash.
///
/// `ts` must be an RFC 3339 timestamp as produced by [`format_ts`] (it is written verbatim).
pub fn encode(
    seq: u64,
    ts: &str,
    prev: &Hash,
    event: &serde_json::Map<String, serde_json::Value>,
    out: &mut Vec<u8>,
) -> Hash {
    encode_with(seq, ts, prev, out, |out| {
        // Writing a map of JSON values into a Vec cannot fail.
        let _ = serde_json::to_writer(out, event);
    })
}

/// [`encode`] for an event already serialised as one JSON object (`{...}`, no trailing
/// newline), written verbatim: the hash covers exactly these bytes, so the caller must hand
/// over what serde_json would have written for the same event (see `JsonEvent`).
pub fn encode_json(seq: u64, ts: &str, prev: &Hash, event: &[u8], out: &mut Vec<u8>) -> Hash {
    encode_with(seq, ts, prev, out, |out| out.extend_from_slice(event))
}

fn encode_with(
    seq: u64,
    ts: &str,
    prev: &Hash,
    out: &mut Vec<u8>,
    write_event: impl FnOnce(&mut Vec<u8>),
) -> Hash {
    use std::io::Write as _;
    let start = out.len();
    out.extend_from_slice(b"{\"seq\":");
    // Writing to a Vec cannot fail.
    let _ = write!(out, "{seq}");
    out.extend_from_slice(b",\"ts\":\"");
    out.extend_from_slice(ts.as_bytes());
    out.extend_from_slice(b"\",\"prev\":\"");
    push_hex(out, prev);
    out.push(b'"');
    let hash_at = out.len();
    let mut h = Sha256::new();
    h.update(prev);
    h.update(&out[start..hash_at]);
    // Placeholder for the hash member, filled once the rest is hashed.
    out.extend_from_slice(HASH_MEMBER);
    out.extend_from_slice(&[b'0'; 64]);
    out.push(b'"');
    let rest_at = out.len();
    out.extend_from_slice(b",\"event\":");
    write_event(out);
    out.push(b'}');
    h.update(&out[rest_at..]);
    let hash: Hash = h.finalize().into();
    let hex_at = hash_at + HASH_MEMBER.len();
    // Encoding 32 bytes into 64 hex digits cannot fail.
    let _ = hex::encode_to_slice(hash, &mut out[hex_at..hex_at + 64]);
    out.push(b'\n');
    hash
}

fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)]);
        out.push(DIGITS[usize::from(b & 0x0f)]);
    }
}

/// What [`check_line`] learns from a valid line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineInfo {
    pub seq: u64,
    pub prev: Hash,
    pub hash: Hash,
}

/// Checks one line (without its newline) against the canonical layout and its own hash.
///
/// Chain checks (seq order, `prev` link) are the caller's: see [`Chain`].
pub fn check_line(line: &[u8]) -> Result<LineInfo, LineError> {
    let mut p = Cursor { b: line, i: 0 };
    p.tag(b"{\"seq\":", "expected {\"seq\": at the start")?;
    let seq = p.number()?;
    p.tag(b",\"ts\":\"", "expected \"ts\" after \"seq\"")?;
    let ts = p.until_quote()?;
    let ts = std::str::from_utf8(ts).map_err(|_| LineError::Malformed("ts is not utf-8"))?;
    if !ts.ends_with('Z') || chrono::DateTime::parse_from_rfc3339(ts).is_err() {
        return Err(LineError::Malformed("ts is not an rfc 3339 utc time"));
    }
    p.tag(b",\"prev\":\"", "expected \"prev\" after \"ts\"")?;
    let prev = p.hex32()?;
    p.tag(b"\"", "expected \" after prev")?;
    let hash_at = p.i;
    p.tag(HASH_MEMBER, "expected \"hash\" after \"prev\"")?;
    let hash = p.hex32()?;
    p.tag(b"\"", "expected \" after hash")?;
    let rest_at = p.i;
    p.tag(b",\"event\":", "expected \"event\" after \"hash\"")?;
    let body = &line[p.i..];
    let Some((b'}', event)) = body.split_last() else {
        return Err(LineError::Malformed("expected } at the end"));
    };
    if event.first() != Some(&b'{') {
        return Err(LineError::BadEvent);
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(event).is_err() {
        return Err(LineError::BadEvent);
    }
    let mut h = Sha256::new();
    h.update(prev);
    h.update(&line[..hash_at]);
    h.update(&line[rest_at..]);
    let want: Hash = h.finalize().into();
    if want != hash {
        return Err(LineError::HashMismatch);
    }
    Ok(LineInfo { seq, prev, hash })
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn tag(&mut self, t: &[u8], what: &'static str) -> Result<(), LineError> {
        if self.b.get(self.i..self.i + t.len()) == Some(t) {
            self.i += t.len();
            Ok(())
        } else {
            Err(LineError::Malformed(what))
        }
    }

    fn number(&mut self) -> Result<u64, LineError> {
        let start = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        let digits = &self.b[start..self.i];
        if digits.is_empty() || (digits.len() > 1 && digits[0] == b'0') {
            return Err(LineError::Malformed("seq is not a canonical number"));
        }
        std::str::from_utf8(digits)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or(LineError::Malformed("seq is out of range"))
    }

    fn until_quote(&mut self) -> Result<&'a [u8], LineError> {
        let start = self.i;
        while let Some(&c) = self.b.get(self.i) {
            match c {
                b'"' => {
                    let s = &self.b[start..self.i];
                    self.i += 1;
                    return Ok(s);
                }
                b'\\' => return Err(LineError::Malformed("escape in ts")),
                _ => self.i += 1,
            }
        }
        Err(LineError::Malformed("unterminated string"))
    }

    fn hex32(&mut self) -> Result<Hash, LineError> {
        let s = self
            .b
            .get(self.i..self.i + 64)
            .ok_or(LineError::Malformed("hash is too short"))?;
        // Only lowercase hex is canonical, so an uppercased digit is an alteration.
        if !s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(LineError::Malformed("hash is not 64 lowercase hex digits"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out)
            .map_err(|_| LineError::Malformed("hash is not 64 lowercase hex digits"))?;
        self.i += 64;
        Ok(out)
    }
}

/// Why a valid line does not continue the chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    /// The record's seq is not the next one (a record was removed, duplicated or moved).
    #[error("expected seq {expected}, found seq {found}")]
    Seq { expected: u64, found: u64 },
    /// The record's `prev` is not the previous record's hash.
    #[error("prev does not match the hash of seq {0}")]
    Prev(u64),
}

/// The state of the chain: the last seq and hash seen (seq 0 and [`GENESIS`] at the start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chain {
    pub last_seq: u64,
    pub last_hash: Hash,
}

impl Default for Chain {
    fn default() -> Self {
        Chain {
            last_seq: 0,
            last_hash: GENESIS,
        }
    }
}

impl Chain {
    /// Checks that `info` is the next link, and advances.
    pub fn link(&mut self, info: &LineInfo) -> Result<(), LinkError> {
        let expected = self.last_seq + 1;
        if info.seq != expected {
            return Err(LinkError::Seq {
                expected,
                found: info.seq,
            });
        }
        if info.prev != self.last_hash {
            return Err(LinkError::Prev(self.last_seq));
        }
        self.last_seq = info.seq;
        self.last_hash = info.hash;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn line(seq: u64, prev: &Hash, ev: &Event) -> (Vec<u8>, Hash) {
        let mut out = Vec::new();
        let h = encode(seq, "2026-11-29T10:00:00.123456789Z", prev, &ev.0, &mut out);
        (out, h)
    }

    #[test]
    fn encode_then_check_round_trips() {
        let ev = Event::new("pg.query")
            .with("sql", "select 1")
            .with("user", "alice");
        let (l, h) = line(1, &GENESIS, &ev);
        let text = std::str::from_utf8(&l).expect("utf-8");
        assert!(
            text.starts_with(
                "{\"seq\":1,\"ts\":\"2026-11-29T10:00:00.123456789Z\",\"prev\":\"0000"
            )
        );
        assert!(text.ends_with(
            "\"event\":{\"sql\":\"select 1\",\"type\":\"pg.query\",\"user\":\"alice\"}}\n"
        ));
        let info = check_line(&l[..l.len() - 1]).expect("valid");
        assert_eq!(
            info,
            LineInfo {
                seq: 1,
                prev: GENESIS,
                hash: h
            }
        );
        let rec: Record = serde_json::from_slice(&l).expect("json");
        assert_eq!(rec.hash, hex::encode(h));
        assert_eq!(rec.kind(), "pg.query");
    }

    #[test]
    fn a_pre_serialised_event_gives_the_same_line() {
        let ev = Event::new("pg.query")
            .with("sql", "select 'a\"b'\n\u{1}")
            .with("params", ["x", "é"])
            .with("duration_us", 12);
        let (want, want_h) = line(3, &[5u8; 32], &ev);
        let json = serde_json::to_vec(&ev.0).expect("json");
        let mut got = Vec::new();
        let h = encode_json(
            3,
            "2026-11-29T10:00:00.123456789Z",
            &[5u8; 32],
            &json,
            &mut got,
        );
        assert_eq!(got, want);
        assert_eq!(h, want_h);
        assert!(check_line(&got[..got.len() - 1]).is_ok());
    }

    #[test]
    fn hash_is_sha256_of_prev_and_canonical_bytes() {
        let ev = Event::new("x");
        let (l, h) = line(7, &[9u8; 32], &ev);
        let text = std::str::from_utf8(&l).expect("utf-8").trim_end();
        let hex_h = hex::encode(h);
        let canonical = text.replace(&format!(",\"hash\":\"{hex_h}\""), "");
        let mut d = Sha256::new();
        d.update([9u8; 32]);
        d.update(canonical.as_bytes());
        assert_eq!(<[u8; 32]>::from(d.finalize()), h);
    }

    #[test]
    fn malformed_lines_are_named() {
        let ev = Event::new("x");
        let (l, _) = line(1, &GENESIS, &ev);
        let good = &l[..l.len() - 1];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"".to_vec(), "expected {\"seq\""),
            (
                good.replacen(b"\"seq\":1", b"\"seq\":01"),
                "canonical number",
            ),
            (
                good[..good.len() - 1].to_vec(),
                "event is not a json object",
            ),
            ([good, b"x"].concat(), "expected }"),
            (good.replacen(b"\"type\"", b"\"typf\""), "hash mismatch"),
        ];
        for (bytes, want) in cases {
            let err = check_line(&bytes).expect_err("must fail").to_string();
            assert!(err.contains(want), "{err} should contain {want}");
        }
    }

    trait Replace {
        fn replacen(&self, from: &[u8], to: &[u8]) -> Vec<u8>;
    }
    impl Replace for [u8] {
        fn replacen(&self, from: &[u8], to: &[u8]) -> Vec<u8> {
            let s = String::from_utf8_lossy(self).replacen(
                std::str::from_utf8(from).expect("utf-8"),
                std::str::from_utf8(to).expect("utf-8"),
                1,
            );
            s.into_bytes()
        }
    }

    #[test]
    fn chain_links_and_refuses_gaps() {
        let ev = Event::new("x");
        let (l1, h1) = line(1, &GENESIS, &ev);
        let (l2, _) = line(2, &h1, &ev);
        let (l3, _) = line(3, &GENESIS, &ev);
        let mut c = Chain::default();
        c.link(&check_line(&l1[..l1.len() - 1]).expect("ok"))
            .expect("link 1");
        let i3 = check_line(&l3[..l3.len() - 1]).expect("ok");
        assert_eq!(
            c.link(&i3),
            Err(LinkError::Seq {
                expected: 2,
                found: 3
            })
        );
        c.link(&check_line(&l2[..l2.len() - 1]).expect("ok"))
            .expect("link 2");
    }
}
