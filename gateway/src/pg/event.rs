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
//!
//! # Fixed fields escaped once
//!
//! The session's own fields (client, grant, proto, role, session, target, user) are the same
//! in every event of the session, so [`SessionFields`] escapes each of them into a JSON
//! string once, when the session starts, and every event splices those bytes in verbatim
//! (serde_json's `RawValue`) instead of escaping them again per statement.

use portcullis_recorder::{Event, JsonEvent, Payload, bytes_field};
use serde::Serialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// The fields every event of a session carries.
#[derive(Debug, Clone)]
pub(crate) struct Common {
    pub session: String,
    pub user: String,
    pub target: String,
    pub role: String,
    pub grant: String,
    pub client: String,
}

impl Common {
    pub(crate) fn event(&self, kind: &str) -> Event {
        Event::new(kind)
            .with("session", &self.session)
            .with("user", &self.user)
            .with("target", &self.target)
            .with("role", &self.role)
            .with("grant", &self.grant)
            .with("client", &self.client)
            .with("proto", "postgres")
    }

    /// The fields escaped once, for the session's statement events.
    pub(crate) fn escaped(&self) -> SessionFields {
        SessionFields::new(
            &self.session,
            &self.user,
            &self.target,
            &self.role,
            &self.grant,
            &self.client,
        )
    }
}

/// A session's fixed event fields, each held as its JSON string (quoted and escaped).
#[derive(Debug, Clone)]
pub(crate) struct SessionFields {
    client: Box<RawValue>,
    grant: Box<RawValue>,
    proto: Box<RawValue>,
    role: Box<RawValue>,
    session: Box<RawValue>,
    target: Box<RawValue>,
    user: Box<RawValue>,
}

/// `s` as a JSON string, escaped as serde_json escapes every other string of the event.
fn json_string(s: &str) -> Box<RawValue> {
    // Serialising a string cannot fail, so the fallback (JSON null) is never taken.
    serde_json::value::to_raw_value(s).unwrap_or_default()
}

/// [`portcullis_recorder::bytes_field`] for serde's `serialize_with`, which hands the field by reference.
#[allow(clippy::ref_option)]
fn base64_bytes<S: serde::Serializer>(bytes: &Option<&[u8]>, s: S) -> Result<S::Ok, S::Error> {
    match bytes {
        Some(b) => s.serialize_str(&bytes_field(b)),
        None => s.serialize_none(),
    }
}

impl SessionFields {
    /// Escapes the session's fields once.
    pub(crate) fn new(
        session: &str,
        user: &str,
        target: &str,
        role: &str,
        grant: &str,
        client: &str,
    ) -> Self {
        SessionFields {
            client: json_string(client),
            grant: json_string(grant),
            proto: json_string("postgres"),
            role: json_string(role),
            session: json_string(session),
            target: json_string(target),
            user: json_string(user),
        }
    }

    /// A `pg.query` or `pg.result` event of this session, statement fields unset.
    pub(crate) fn pg_event(&self, kind: &'static str) -> PgEvent<'_> {
        PgEvent {
            client: &self.client,
            copy_bytes: None,
            duration_us: None,
            error: None,
            error_message: None,
            grant: &self.grant,
            params: None,
            proto: &self.proto,
            role: &self.role,
            rolled_back: None,
            session: &self.session,
            sql: None,
            sql_bytes: None,
            stmt: None,
            tag: None,
            tags: None,
            target: &self.target,
            kind,
            user: &self.user,
        }
    }
}

/// One `pg.query` or `pg.result` event. Field order is the key order (see the module doc);
/// the session's fields are pre-escaped JSON strings ([`SessionFields`]).
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct PgEvent<'a> {
    pub client: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_message: Option<&'a str>,
    pub grant: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub params: Option<&'a [Value]>,
    pub proto: &'a RawValue,
    pub role: &'a RawValue,
    /// On the error that ended an implicit transaction (a pipeline up to its Sync): how
    /// many statements before it in that transaction it rolled back, although each was
    /// logged with its tag when it completed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<u64>,
    pub session: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sql: Option<&'a str>,
    /// The SQL's bytes, base64, when they were not UTF-8 (`sql` is then lossy).
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "base64_bytes"
    )]
    pub sql_bytes: Option<&'a [u8]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stmt: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tag: Option<&'a str>,
    /// Every statement's tag, when one simple Query ran several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<&'a [String]>,
    pub target: &'a RawValue,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub user: &'a RawValue,
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
            .with("sql_bytes", self.sql_bytes.map(bytes_field))
            .with("params", self.params)
            .with("duration_us", self.duration_us)
            .with("copy_bytes", self.copy_bytes)
            .with("error", self.error)
            .with("error_message", self.error_message)
            .with("tag", self.tag)
            .with("tags", self.tags)
            .with("rolled_back", self.rolled_back)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn fields() -> SessionFields {
        SessionFields::new("s_01", "alice", "pg-prod", "read", "g_01", "127.0.0.1:5555")
    }

    fn base<'a>(f: &'a SessionFields, kind: &'static str) -> PgEvent<'a> {
        f.pg_event(kind)
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
        let f = fields();
        let mut cases: Vec<PgEvent<'_>> = Vec::new();
        for sql in odd_sql {
            // batched: pg.query at completion, with a tag or an error.
            cases.push(PgEvent {
                sql: Some(sql),
                duration_us: Some(123),
                tag: Some("SELECT 1"),
                ..base(&f, "pg.query")
            });
            cases.push(PgEvent {
                sql: Some(sql),
                params: Some(&params),
                duration_us: Some(0),
                copy_bytes: Some(u64::MAX),
                error: Some("22012"),
                error_message: Some(sql),
                ..base(&f, "pg.query")
            });
            // strict: the statement first, then its outcome.
            cases.push(PgEvent {
                stmt: Some(42),
                sql: Some(sql),
                params: Some(&[]),
                ..base(&f, "pg.query")
            });
        }
        cases.push(PgEvent {
            stmt: Some(1),
            duration_us: Some(9),
            tag: Some(""),
            ..base(&f, "pg.result")
        });
        cases.push(PgEvent {
            stmt: Some(2),
            duration_us: Some(9),
            copy_bytes: Some(0),
            error: Some("interrupted"),
            error_message: Some("session closed: killed"),
            ..base(&f, "pg.result")
        });
        // Session fields that need escaping.
        let odd = SessionFields::new(
            "",
            "ü\u{0}",
            "pg \u{2028}\u{7f}",
            "r\"\\",
            "g\n\t",
            "\"odd\"\\client",
        );
        cases.push(PgEvent {
            sql: Some("select 1"),
            tag: Some("SELECT 1"),
            ..base(&odd, "pg.query")
        });
        // Each field lands under its own key, unescaped back to what the session holds.
        let m = base(&odd, "pg.query").to_event().0;
        for (key, want) in [
            ("session", ""),
            ("user", "ü\u{0}"),
            ("target", "pg \u{2028}\u{7f}"),
            ("role", "r\"\\"),
            ("grant", "g\n\t"),
            ("client", "\"odd\"\\client"),
            ("proto", "postgres"),
        ] {
            assert_eq!(m[key], want, "{key}");
        }
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
        let f = fields();
        let b = bytes(base(&f, "pg.query").payload());
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            "{\"client\":\"127.0.0.1:5555\",\"grant\":\"g_01\",\"proto\":\"postgres\",\
             \"role\":\"read\",\"session\":\"s_01\",\"target\":\"pg-prod\",\
             \"type\":\"pg.query\",\"user\":\"alice\"}"
        );
    }
}
