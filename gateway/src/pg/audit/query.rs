//! A statement the tap has seen end, and the event it becomes: what a `pg.query` (or, in
//! strict mode, a `pg.result`) holds, built only once the client's answer went on.

use std::sync::Arc;
use std::time::Instant;

use portcullis_recorder::Payload;
use serde_json::Value;

use super::sql::Sql;
use crate::pg::event::{PgEvent, SessionFields};

/// A statement the tap has seen end. Its event is built by [`super::Tracker::payload`] only after
/// the bytes that ended it went on to the client: building it (the JSON, the SQL escaped)
/// is most of the tap's work per statement, and the client's answer need not wait for it.
// A `Finished` lives briefly in a Vec the relay reuses; boxing the large variant would
// allocate once per statement on the hot path to save stack space nobody misses.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Finished {
    /// A statement that ran (or failed, or was skipped or interrupted).
    Statement(Query),
    /// An event built at once, on a rare path (a refused Parse with no Execute behind it).
    Ready(Payload),
}

#[derive(Debug)]
pub(crate) struct Query {
    /// The statement's number in the session (strict mode links `pg.result` to it).
    pub(super) stmt: u64,
    pub(super) sql: Sql,
    /// The prepared statement definition it runs, if it runs one the tap knows.
    pub(super) parse: Option<u64>,
    /// The Bind of the portal it executes, if the tap knows the portal.
    pub(super) bind: Option<u64>,
    /// The SQL was corrected after the statement was sent (its Parse did not hold), so
    /// strict mode's `pg.result` repeats it.
    pub(super) sql_corrected: bool,
    pub(super) params: Option<Arc<[Value]>>,
    pub(super) start: Instant,
    pub(super) end: Option<Instant>,
    pub(super) tag: Option<String>,
    /// Every tag of a simple Query that ran several statements, in order.
    pub(super) tags: Vec<String>,
    pub(super) error: Option<(String, String)>,
    /// Its error rolled back this many earlier statements of its implicit transaction.
    pub(super) rolled_back: Option<u64>,
    pub(super) copy_bytes: Option<u64>,
    /// CopyDone and CopyFail messages the client had sent before this statement: the next
    /// one ends its copy-in, if it starts one.
    pub(super) copy_ends_before: u64,
}

impl Query {
    pub(super) fn new(stmt: u64, sql: Sql, params: Option<Arc<[Value]>>) -> Self {
        Query {
            stmt,
            sql,
            parse: None,
            bind: None,
            sql_corrected: false,
            params,
            start: Instant::now(),
            end: None,
            tag: None,
            tags: Vec::new(),
            error: None,
            rolled_back: None,
            copy_bytes: None,
            copy_ends_before: 0,
        }
    }
}

impl Finished {
    /// The event of a finished statement, as the log will hold it: in strict mode its
    /// outcome (`pg.result`, the statement itself is already in the log), else the whole
    /// `pg.query`.
    pub(super) fn payload(&self, fields: &SessionFields, strict: bool) -> Payload {
        let q = match self {
            Finished::Statement(q) => q,
            Finished::Ready(p) => return p.clone(),
        };
        let end = q.end.unwrap_or(q.start);
        let ev = if strict {
            // The statement itself is already in the log; this is its outcome.
            PgEvent {
                stmt: Some(q.stmt),
                ..fields.pg_event("pg.result")
            }
        } else {
            PgEvent {
                sql: Some(&q.sql),
                sql_bytes: q.sql.raw(),
                params: q.params.as_deref(),
                ..fields.pg_event("pg.query")
            }
        };
        let (error, error_message, tag) = match &q.error {
            Some((code, message)) => (Some(code.as_str()), Some(message.as_str()), None),
            None => (None, None, Some(q.tag.as_deref().unwrap_or_default())),
        };
        // One tag says it all, unless the Query ran several statements or failed after
        // some ran.
        let several = q.tags.len() > 1 || (q.error.is_some() && !q.tags.is_empty());
        PgEvent {
            duration_us: Some(end.duration_since(q.start).as_micros() as u64),
            copy_bytes: q.copy_bytes,
            error,
            error_message,
            // Strict mode recorded the SQL as sent; it is repeated when it turned out
            // to run another statement's.
            sql: ev.sql.or(q.sql_corrected.then_some(&*q.sql)),
            sql_bytes: ev.sql_bytes.or(q.sql.raw().filter(|_| q.sql_corrected)),
            tag,
            tags: several.then_some(q.tags.as_slice()),
            rolled_back: q.rolled_back,
            ..ev
        }
        .payload()
    }
}
