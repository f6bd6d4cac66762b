//! The audit tap: turns the relayed messages into `pg.query` events (one per simple Query
//! and per extended Execute, with the SQL from the Parse and the Bind parameters).
//!
//! The tap sees each interesting message once, already framed by the relay; it copies only
//! what the event needs (SQL and parameter text, capped), never the rows.
//!
//! Two shapes, by durability (see ARCHITECTURE.md, "Audit of PostgreSQL statements"):
//! - batched: one `pg.query` per statement, written when it completes, with `sql`,
//!   `params`, `duration_us` and `tag` or `error`;
//! - strict: the `pg.query` (`stmt`, `sql`, `params`) is returned by
//!   [`Tracker::frontend`] for the relay to append, fsynced, *before* it forwards the
//!   statement; its outcome follows as a `pg.result` (`stmt`, `duration_us`, `tag` or
//!   `error`) when the statement completes. `stmt` numbers the statements of a session.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use portcullis_protocol::pg::{BackendMessage, FrontendMessage};
use portcullis_recorder::{Event, Payload};
use serde_json::Value;

use super::event::{PgEvent, SessionFields};
use super::params;

/// Longest SQL text kept in an event.
const MAX_SQL: usize = 16 * 1024;
/// Most named statements and portals remembered; beyond that the SQL of new ones is not
/// tracked (their executions are still logged, with the statement name).
const MAX_NAMES: usize = 10_000;

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

/// Lossy UTF-8, capped at `max` bytes on a char boundary.
pub(crate) fn capped_text(bytes: &[u8], max: usize) -> String {
    let cut = bytes.get(..max).unwrap_or(bytes);
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > max {
        s.push_str(portcullis_recorder::TRUNCATED);
    }
    s
}

/// [`capped_text`] shared: a statement's SQL is copied out of the frame once, then shared by
/// its prepared statement, its portals and each execution without further copies.
fn capped_sql(bytes: &[u8], max: usize) -> Arc<str> {
    let cut = bytes.get(..max).unwrap_or(bytes);
    match String::from_utf8_lossy(cut) {
        Cow::Borrowed(s) if bytes.len() <= max => Arc::from(s),
        _ => Arc::from(capped_text(bytes, max)),
    }
}

#[derive(Debug)]
struct Query {
    /// The statement's number in the session (strict mode links `pg.result` to it).
    stmt: u64,
    sql: Arc<str>,
    params: Option<Arc<[Value]>>,
    start: Instant,
    end: Option<Instant>,
    tag: Option<String>,
    error: Option<(String, String)>,
    copy_bytes: Option<u64>,
}

impl Query {
    fn new(stmt: u64, sql: Arc<str>, params: Option<Arc<[Value]>>) -> Self {
        Query {
            stmt,
            sql,
            params,
            start: Instant::now(),
            end: None,
            tag: None,
            error: None,
            copy_bytes: None,
        }
    }
}

/// A prepared statement: its SQL, shared with its portals and executions, and its parameter
/// types as far as they are known (for rendering binary parameters).
#[derive(Debug)]
struct Prepared {
    sql: Arc<str>,
    types: Vec<u32>,
    /// Which Parse made it (the session's count of Parses): a description sent for an
    /// earlier statement of the same name is not this one's.
    parse: u64,
}

/// A `Describe S` waiting for its ParameterDescription.
#[derive(Debug)]
struct Described {
    /// The batch it was sent in (see `Tracker::batches_sent`).
    batch: u64,
    name: Vec<u8>,
    /// The Parse of the statement it describes, if the statement was known.
    parse: Option<u64>,
}

/// A bound portal: its statement's SQL and its parameters, shared with each execution.
type Portal = (Arc<str>, Arc<[Value]>);

#[derive(Debug)]
enum Pending {
    /// A simple Query: done at ReadyForQuery.
    Simple(Query),
    /// An extended Execute: done at CommandComplete, ErrorResponse, EmptyQueryResponse or
    /// PortalSuspended.
    Execute(Query),
    /// A Sync: the ReadyForQuery that answers it ends the batch.
    Sync,
}

/// Per-session query tracking between the two relay directions.
#[derive(Debug)]
pub(crate) struct Tracker {
    fields: SessionFields,
    /// Strict durability: statement records before forwarding, outcomes after.
    strict: bool,
    statements: HashMap<Vec<u8>, Prepared>,
    /// Statements described (`Describe S`) whose ParameterDescription has not come yet, in
    /// order, each with the batch it was sent in (see `batches_sent`). The server answers in
    /// order within a batch; what an error made it skip is dropped once the batch has ended.
    described: VecDeque<Described>,
    /// Parses seen (numbers the prepared statements).
    parses: u64,
    /// Messages sent that the server answers with a ReadyForQuery (Sync, Query,
    /// FunctionCall): the batch a message belongs to is the count before it.
    batches_sent: u64,
    /// ReadyForQuery messages received: the batch being answered is this count.
    batches_answered: u64,
    /// A batch in which more statements were described than are kept: its descriptions
    /// cannot be matched to their statements, so they are ignored.
    described_lost: Option<u64>,
    portals: HashMap<Vec<u8>, Portal>,
    pending: VecDeque<Pending>,
    /// Statements started so far (numbers them).
    started: u64,
    /// Statements completed (for session.ended).
    pub queries: u64,
}

impl Tracker {
    pub(crate) fn new(common: &Common, strict: bool) -> Self {
        Tracker {
            fields: common.escaped(),
            strict,
            statements: HashMap::new(),
            described: VecDeque::new(),
            parses: 0,
            batches_sent: 0,
            batches_answered: 0,
            described_lost: None,
            portals: HashMap::new(),
            pending: VecDeque::new(),
            started: 0,
            queries: 0,
        }
    }

    /// Registers a statement about to be forwarded; in strict mode, returns the `pg.query`
    /// record that must be durable before it is.
    fn start(
        &mut self,
        simple: bool,
        sql: Arc<str>,
        params: Option<Arc<[Value]>>,
    ) -> Option<Payload> {
        self.started += 1;
        let record = self.strict.then(|| {
            PgEvent {
                stmt: Some(self.started),
                sql: Some(&sql),
                params: params.as_deref(),
                ..self.fields.pg_event("pg.query")
            }
            .payload()
        });
        let q = Query::new(self.started, sql, params);
        self.pending.push_back(if simple {
            Pending::Simple(q)
        } else {
            Pending::Execute(q)
        });
        record
    }

    /// A message the client sent. For a statement (Query, Execute) in strict mode, returns
    /// the record to append durably before forwarding it.
    pub(crate) fn frontend(&mut self, msg: &FrontendMessage<'_>) -> Option<Payload> {
        let batch = self.batches_sent;
        if matches!(
            msg,
            FrontendMessage::Sync
                | FrontendMessage::Query { .. }
                | FrontendMessage::FunctionCall { .. }
        ) {
            self.batches_sent += 1;
        }
        match msg {
            FrontendMessage::Query { sql } => {
                return self.start(true, capped_sql(sql, MAX_SQL), None);
            }
            FrontendMessage::Parse(p) if p.name.is_empty() || self.statements.len() < MAX_NAMES => {
                self.parses += 1;
                let prepared = Prepared {
                    sql: capped_sql(p.sql, MAX_SQL),
                    types: p.param_types().collect(),
                    parse: self.parses,
                };
                self.statements.insert(p.name.to_vec(), prepared);
            }
            FrontendMessage::Describe { kind: b'S', name }
                if self.described_lost != Some(batch) =>
            {
                if self.described.len() < MAX_NAMES {
                    self.described.push_back(Described {
                        batch,
                        name: name.to_vec(),
                        parse: self.statements.get(*name).map(|p| p.parse),
                    });
                } else {
                    self.described.clear();
                    self.described_lost = Some(batch);
                }
            }
            FrontendMessage::Bind(b) => {
                let (sql, params) = match self.statements.get(b.statement) {
                    Some(p) => (p.sql.clone(), params::values(b, &p.types)),
                    None => (
                        Arc::from(format!(
                            "<prepared statement {:?}>",
                            String::from_utf8_lossy(b.statement)
                        )),
                        params::values(b, &[]),
                    ),
                };
                if b.portal.is_empty() || self.portals.len() < MAX_NAMES {
                    self.portals.insert(b.portal.to_vec(), (sql, params));
                }
            }
            FrontendMessage::Execute { portal, .. } => {
                let (sql, params) = self.portals.get(*portal).cloned().unwrap_or_else(|| {
                    (
                        Arc::from(format!("<portal {:?}>", String::from_utf8_lossy(portal))),
                        Arc::from([]),
                    )
                });
                return self.start(false, sql, Some(params));
            }
            FrontendMessage::Close { kind, name } => {
                if *kind == b'S' {
                    self.statements.remove(*name);
                } else {
                    self.portals.remove(*name);
                }
            }
            FrontendMessage::Sync => self.pending.push_back(Pending::Sync),
            FrontendMessage::FunctionCall { oid, args } => {
                // Answered like a simple Query: a result or an error, then ReadyForQuery.
                let params = params::values(args, &[]);
                return self.start(
                    true,
                    Arc::from(format!("<fastpath function call: oid {oid}>")),
                    Some(params),
                );
            }
            _ => {}
        }
        None
    }

    /// A message too large to buffer: tracked from its first bytes. Returns the strict
    /// record of a statement, as [`Tracker::frontend`] does.
    pub(crate) fn frontend_oversize(&mut self, tag: u8, prefix: &[u8]) -> Option<Payload> {
        if matches!(tag, b'Q' | b'F') {
            // Answered by a ReadyForQuery like any other Query or FunctionCall.
            self.batches_sent += 1;
        }
        match tag {
            b'Q' => return self.start(true, capped_sql(prefix, MAX_SQL), None),
            b'F' => {
                let call = Arc::from("<fastpath function call: arguments too large>");
                let params = Arc::from([Value::String("<too large>".into())]);
                return self.start(true, call, Some(params));
            }
            b'E' => {
                let portal = format!("<portal {:?}>", capped_text(prefix, 64));
                return self.start(false, Arc::from(portal), Some(Arc::from([])));
            }
            b'P' => {
                let name_end = prefix.iter().position(|&b| b == 0).unwrap_or(0);
                let name = prefix.get(..name_end).unwrap_or_default().to_vec();
                let sql = capped_sql(prefix.get(name_end + 1..).unwrap_or_default(), MAX_SQL);
                self.parses += 1;
                let (types, parse) = (Vec::new(), self.parses);
                self.statements.insert(name, Prepared { sql, types, parse });
            }
            b'B' => {
                // Huge parameters: keep the portal and statement names, drop the values.
                let mut parts = prefix.splitn(3, |&b| b == 0);
                let portal = parts.next().unwrap_or_default().to_vec();
                let stmt = parts.next().unwrap_or_default();
                let sql = self
                    .statements
                    .get(stmt)
                    .map(|p| p.sql.clone())
                    .unwrap_or_default();
                let params = Arc::from([Value::String("<too large>".into())]);
                self.portals.insert(portal, (sql, params));
            }
            _ => {}
        }
        None
    }

    /// COPY bytes, either direction, counted against the statement running.
    pub(crate) fn copy_bytes(&mut self, n: usize) {
        if let Some(Pending::Simple(q) | Pending::Execute(q)) = self.pending.front_mut() {
            *q.copy_bytes.get_or_insert(0) += n as u64;
        }
    }

    /// A message the server sent; completed statements are pushed to `out`.
    pub(crate) fn backend(&mut self, msg: &BackendMessage<'_>, out: &mut Vec<Payload>) {
        match msg {
            BackendMessage::CommandComplete { tag } => self.complete(Some(tag), None, out),
            BackendMessage::EmptyQueryResponse => self.complete(Some(b""), None, out),
            BackendMessage::PortalSuspended => self.complete(Some(b"suspended"), None, out),
            BackendMessage::ErrorResponse(f) => {
                let code = String::from_utf8_lossy(f.code().unwrap_or_default()).into_owned();
                let message = capped_text(f.message().unwrap_or_default(), 1024);
                self.complete(None, Some((code, message)), out);
            }
            BackendMessage::CopyResponse { .. } => {
                if let Some(Pending::Simple(q) | Pending::Execute(q)) = self.pending.front_mut() {
                    q.copy_bytes.get_or_insert(0);
                }
            }
            BackendMessage::ParameterDescription { .. } => {
                let batch = self.batches_answered;
                self.drop_described_before(batch);
                if self.described_lost.is_some_and(|b| b >= batch) {
                    return;
                }
                if self.described.front().is_some_and(|d| d.batch == batch)
                    && let Some(d) = self.described.pop_front()
                    && let Some(p) = self.statements.get_mut(&d.name)
                    && Some(p.parse) == d.parse
                {
                    p.types = msg.param_types().collect();
                }
            }
            BackendMessage::ReadyForQuery { .. } => {
                self.batches_answered += 1;
                self.drop_described_before(self.batches_answered);
                // Ends one simple Query, or a batch up to its Sync; executions the server
                // skipped after an error in the batch are logged as not executed.
                while let Some(p) = self.pending.pop_front() {
                    match p {
                        Pending::Simple(q) => {
                            self.emit(q, out);
                            break;
                        }
                        Pending::Execute(mut q) => {
                            q.error = Some((
                                "skipped".into(),
                                "not executed: an earlier statement in the batch failed".into(),
                            ));
                            self.emit(q, out);
                        }
                        Pending::Sync => break,
                    }
                }
            }
            _ => {}
        }
    }

    /// Forgets the Describes of batches that have ended (the server skipped them).
    fn drop_described_before(&mut self, batch: u64) {
        while self.described.front().is_some_and(|d| d.batch < batch) {
            self.described.pop_front();
        }
    }

    fn complete(
        &mut self,
        tag: Option<&[u8]>,
        error: Option<(String, String)>,
        out: &mut Vec<Payload>,
    ) {
        match self.pending.front_mut() {
            Some(Pending::Simple(q)) => {
                // Several statements in one Query: the last tag wins, the first error stays.
                q.end = Some(Instant::now());
                if let Some(t) = tag {
                    q.tag = Some(String::from_utf8_lossy(t).into_owned());
                }
                if q.error.is_none() {
                    q.error = error;
                }
            }
            Some(Pending::Execute(_)) => {
                if let Some(Pending::Execute(mut q)) = self.pending.pop_front() {
                    q.end = Some(Instant::now());
                    q.tag = tag.map(|t| String::from_utf8_lossy(t).into_owned());
                    q.error = error;
                    self.emit(q, out);
                }
            }
            // An error outside any statement (e.g. in a Parse before an Execute, answered
            // at the Sync): nothing to attach it to.
            Some(Pending::Sync) | None => {}
        }
    }

    fn emit(&mut self, q: Query, out: &mut Vec<Payload>) {
        self.queries += 1;
        let end = q.end.unwrap_or_else(Instant::now);
        let ev = if self.strict {
            // The statement itself is already in the log; this is its outcome.
            PgEvent {
                stmt: Some(q.stmt),
                ..self.fields.pg_event("pg.result")
            }
        } else {
            PgEvent {
                sql: Some(&q.sql),
                params: q.params.as_deref(),
                ..self.fields.pg_event("pg.query")
            }
        };
        let (error, error_message, tag) = match &q.error {
            Some((code, message)) => (Some(code.as_str()), Some(message.as_str()), None),
            None => (None, None, Some(q.tag.as_deref().unwrap_or_default())),
        };
        out.push(
            PgEvent {
                duration_us: Some(end.duration_since(q.start).as_micros() as u64),
                copy_bytes: q.copy_bytes,
                error,
                error_message,
                tag,
                ..ev
            }
            .payload(),
        );
    }

    /// Statements still running when the session ends are logged as interrupted.
    pub(crate) fn drain(&mut self, reason: &str, out: &mut Vec<Payload>) {
        while let Some(p) = self.pending.pop_front() {
            if let Pending::Simple(mut q) | Pending::Execute(mut q) = p {
                if q.error.is_none() {
                    q.error = Some(("interrupted".into(), format!("session closed: {reason}")));
                }
                self.emit(q, out);
            }
        }
    }
}

#[cfg(test)]
mod tests;
