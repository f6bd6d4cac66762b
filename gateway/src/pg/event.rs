//! The typed `pg.query` / `pg.result` event: what the audit tap writes once per statement.
//!
//! It is serialised straight into one buffer ([`JsonEvent`]) from fields borrowed from the
//! session and the statement, instead of building a map of owned keys and values per
//! statement: on a busy session that map was most of what the audit cost the relay.
//!
//! # Same bytes as the map
//!
//! The chain hashes the event's bytes as written, and SPEC §7 logs write events as
//! serde_json's map does: keys in sorted order, absent (`None`) fields left out. The struct
//! therefore declares its fields in sorted key order and skips every `None`; the tests
//! check the bytes against the map built the old way ([`PgEvent::to_event`]) for a table of
//! statements, odd SQL included. A field added here must be added in sorted order.

use portcullis_recorder::{Event, JsonEvent, Payload};
use serde::Serialize;
use serde_json::Value;

/// One `pg.query` or `pg.result` event. Field order is the key order (see the module doc).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct PgEvent<'a> {
    pub client: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<&'a str>,
    pub grant: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<&'a [Value]>,
    pub proto: &'static str,
    pub role: &'a str,
    pub session: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stmt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<&'a str>,
    pub target: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub user: &'a str,
}

impl PgEvent<'_> {
    /// The event ready for the log. Serialising borrowed strings, numbers and JSON values
    /// into a Vec cannot fail; should it ever, the event still goes to the log, as a map.
    pub(crate) fn payload(&self) -> Payload {
        let hint = 320
            + self.sql.map_or(0, str::len)
            + self.error_message.map_or(0, str::len)
            + self.params.map_or(0, |p| p.len() * 16);
        match JsonEvent::with_capacity(self, hint) {
            Ok(json) => Payload::Json(json),
            Err(e) => {
                tracing::error!(error = %e, "pg event did not serialise; writing it as a map");
                Payload::Map(self.to_event())
            }
        }
    }

    /// The same event built as a map, field by field, the way every other event is.
    pub(crate) fn to_event(self) -> Event {
        Event::new(self.kind)
            .with("session", self.session)
            .with("user", self.user)
            .with("target", self.target)
            .with("role", self.role)
            .with("grant", self.grant)
            .with("client", self.client)
            .with("proto", self.proto)
            .with("stmt", self.stmt)
            .with("sql", self.sql)
            .with("params", self.params)
            .with("duration_us", self.duration_us)
            .with("copy_bytes", self.copy_bytes)
            .with("error", self.error)
            .with("error_message", self.error_message)
            .with("tag", self.tag)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn base(kind: &'static str) -> PgEvent<'static> {
        PgEvent {
            client: "127.0.0.1:5555",
            copy_bytes: None,
            duration_us: None,
            error: None,
            error_message: None,
            grant: "g_01",
            params: None,
            proto: "postgres",
            role: "read",
            session: "s_01",
            sql: None,
            stmt: None,
            tag: None,
            target: "pg-prod",
            kind,
            user: "alice",
        }
    }

    fn bytes(p: Payload) -> Vec<u8> {
        match p {
            Payload::Json(j) => j.as_bytes().to_vec(),
            Payload::Map(_) => panic!("expected the typed path"),
        }
    }

    /// The typed bytes are exactly what serde_json writes for the map built the old way.
    #[test]
    fn typed_event_writes_the_maps_bytes() {
        let params = [
            Value::String("7".into()),
            Value::Null,
            Value::String("\\xdead".into()),
            Value::String("quote \" back \\ nl \n tab \t nul \u{0} bell \u{7} é €".into()),
        ];
        // SQL as the tap keeps it: lossy UTF-8 (U+FFFD for invalid bytes), capped.
        let lossy = String::from_utf8_lossy(b"select '\xff\xfe' -- \xc3(").into_owned();
        let odd_sql = [
            "select 1",
            "",
            "select 'it''s', \"Quoted\", E'\\\\x00'",
            "select\n\t1\r\n;\u{1}\u{1f}\u{7f}",
            "select '日本語', '😀', '\u{2028}\u{2029}'",
            "</script><!-- & -->",
            lossy.as_str(),
            "select 1…[truncated]",
        ];
        let mut cases: Vec<PgEvent<'_>> = Vec::new();
        for sql in odd_sql {
            // batched: pg.query at completion, with a tag or an error.
            cases.push(PgEvent {
                sql: Some(sql),
                duration_us: Some(123),
                tag: Some("SELECT 1"),
                ..base("pg.query")
            });
            cases.push(PgEvent {
                sql: Some(sql),
                params: Some(&params),
                duration_us: Some(0),
                copy_bytes: Some(u64::MAX),
                error: Some("22012"),
                error_message: Some(sql),
                ..base("pg.query")
            });
            // strict: the statement first, then its outcome.
            cases.push(PgEvent {
                stmt: Some(42),
                sql: Some(sql),
                params: Some(&[]),
                ..base("pg.query")
            });
        }
        cases.push(PgEvent {
            stmt: Some(1),
            duration_us: Some(9),
            tag: Some(""),
            ..base("pg.result")
        });
        cases.push(PgEvent {
            stmt: Some(2),
            duration_us: Some(9),
            copy_bytes: Some(0),
            error: Some("interrupted"),
            error_message: Some("session closed: killed"),
            ..base("pg.result")
        });
        cases.push(PgEvent {
            client: "\"odd\"\\client",
            user: "ü\u{0}",
            session: "",
            ..base("pg.query")
        });
        for ev in cases {
            let typed = bytes(ev.payload());
            let map = serde_json::to_vec(&ev.to_event().0).unwrap();
            assert_eq!(
                String::from_utf8_lossy(&typed),
                String::from_utf8_lossy(&map),
                "{ev:?}"
            );
        }
    }

    /// Absent fields are left out, not written as null.
    #[test]
    fn absent_fields_are_left_out() {
        let b = bytes(base("pg.query").payload());
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            "{\"client\":\"127.0.0.1:5555\",\"grant\":\"g_01\",\"proto\":\"postgres\",\
             \"role\":\"read\",\"session\":\"s_01\",\"target\":\"pg-prod\",\
             \"type\":\"pg.query\",\"user\":\"alice\"}"
        );
    }
}
