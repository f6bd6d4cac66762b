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

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use portcullis_protocol::pg::{BackendMessage, FrontendMessage};
use portcullis_recorder::Payload;
use serde_json::Value;

use super::auth::sqlstate;
use super::event::{Common, PgEvent, SessionFields};
use super::params;
use portals::{Portal, Portals, UndoneBind};
use statements::{MAX_NAMES, Statements, Undone};

mod portals;
mod query;
mod sql;
mod statements;
mod unconfirmed;

pub(crate) use query::{Finished, Query};
use sql::Sql;

/// Longest SQL text kept in an event: every statement the relay forwards (up to its
/// statement limit; longer ones are refused) is logged whole. A smaller cap would let a
/// user hide a statement behind a comment or whitespace padding longer than the cap. The
/// recorder bounds in bytes how much of such large events may wait in its queue.
const MAX_SQL: usize = super::relay::STATEMENT_LIMIT;

/// What a refused statement's event keeps of its text.
const REFUSED_SQL: usize = 64 * 1024;

/// Lossy UTF-8, capped at `max` bytes on a char boundary.
pub(crate) fn capped_text(bytes: &[u8], max: usize) -> String {
    let cut = bytes.get(..max).unwrap_or(bytes);
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > max {
        s.push_str(portcullis_recorder::TRUNCATED);
    }
    s
}

/// Does a statement with this tag open an explicit transaction? Within a pipeline it takes
/// in the statements before it too, which then end with that transaction.
fn opens_transaction(tag: &str) -> bool {
    matches!(tag, "BEGIN" | "START TRANSACTION")
}

/// Does a statement with this tag end a transaction (statements after it, up to the Sync,
/// are a new implicit one)?
fn ends_transaction(tag: &str) -> bool {
    matches!(
        tag,
        "COMMIT" | "ROLLBACK" | "PREPARE TRANSACTION" | "COMMIT PREPARED" | "ROLLBACK PREPARED"
    )
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

/// How an execution of a portal the tap does not know is logged.
fn unknown_portal(name: &[u8]) -> Portal {
    Portal {
        sql: Sql::text(Arc::from(format!(
            "<portal {:?}>",
            String::from_utf8_lossy(name)
        ))),
        parse: None,
        params: Arc::from([]),
    }
}

/// How an execution of a statement the tap does not know is logged.
fn unknown_statement(name: &[u8]) -> Sql {
    Sql::text(Arc::from(format!(
        "<prepared statement {:?}>",
        String::from_utf8_lossy(name)
    )))
}

#[derive(Debug)]
enum Pending {
    /// A simple Query: done at ReadyForQuery.
    Simple(Query),
    /// An extended Execute: done at CommandComplete, ErrorResponse, EmptyQueryResponse or
    /// PortalSuspended.
    Execute(Query),
    /// A Sync: the ReadyForQuery that answers it ends the batch. `copy_ends_before` as
    /// for [`Query`]: a Sync sent during a copy-in is ignored by the server.
    Sync { copy_ends_before: u64 },
}

/// Per-session query tracking between the two relay directions.
#[derive(Debug)]
pub(crate) struct Tracker {
    fields: SessionFields,
    /// Strict durability: statement records before forwarding, outcomes after.
    strict: bool,
    statements: Statements,
    /// Statements described (`Describe S`) whose ParameterDescription has not come yet, in
    /// order, each with the batch it was sent in (see `batches_sent`). The server answers in
    /// order within a batch; what an error made it skip is dropped once the batch has ended.
    described: VecDeque<Described>,
    /// Messages sent that the server answers with a ReadyForQuery (Sync, Query,
    /// FunctionCall): the batch a message belongs to is the count before it.
    batches_sent: u64,
    /// ReadyForQuery messages received: the batch being answered is this count.
    batches_answered: u64,
    /// A batch in which more statements were described than are kept: its descriptions
    /// cannot be matched to their statements, so they are ignored.
    described_lost: Option<u64>,
    portals: Portals,
    pending: VecDeque<Pending>,
    /// Statements started so far (numbers them).
    started: u64,
    /// Statements completed (for session.ended).
    pub queries: u64,
    /// CopyDone and CopyFail messages the client sent.
    copy_ends_sent: u64,
    /// The server is in copy-in mode and the client has not ended it: it ignores Syncs.
    copy_in: bool,
    /// Statements that completed in the implicit transaction open now: extended-protocol
    /// executions since the last ReadyForQuery said idle (or since a COMMIT), which the
    /// Sync commits, and an error before it rolls back. `None` while there is no such
    /// transaction (an explicit one is open: its ROLLBACK is in the log itself).
    implicit_done: Option<u64>,
}

impl Tracker {
    pub(crate) fn new(common: &Common, strict: bool) -> Self {
        Tracker {
            fields: common.escaped(),
            strict,
            statements: Statements::default(),
            described: VecDeque::new(),
            batches_sent: 0,
            batches_answered: 0,
            described_lost: None,
            portals: Portals::default(),
            pending: VecDeque::new(),
            started: 0,
            queries: 0,
            copy_ends_sent: 0,
            copy_in: false,
            implicit_done: Some(0),
        }
    }

    /// Registers a statement about to be forwarded; in strict mode, returns the `pg.query`
    /// record that must be durable before it is.
    fn start(
        &mut self,
        simple: bool,
        sql: Sql,
        params: Option<Arc<[Value]>>,
        parse: Option<u64>,
    ) -> Option<Payload> {
        self.started += 1;
        let record = self.strict.then(|| {
            PgEvent {
                stmt: Some(self.started),
                sql: Some(&sql),
                sql_bytes: sql.raw(),
                params: params.as_deref(),
                ..self.fields.pg_event("pg.query")
            }
            .payload()
        });
        let mut q = Query::new(self.started, sql, params);
        q.parse = parse;
        q.copy_ends_before = self.copy_ends_sent;
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
        if self.copy_in && matches!(msg, FrontendMessage::Sync) {
            // The server ignores a Sync during copy-in: it ends no batch and gets no answer.
            return None;
        }
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
                return self.start(true, Sql::from_wire(sql, MAX_SQL), None, None);
            }
            FrontendMessage::Parse(p) => {
                let sql = Sql::from_wire(p.sql, MAX_SQL);
                self.statements
                    .parse(batch, p.name, sql, p.param_types().collect());
            }
            FrontendMessage::Describe { kind: b'S', name }
                if self.described_lost != Some(batch) =>
            {
                if self.described.len() < MAX_NAMES {
                    self.described.push_back(Described {
                        batch,
                        name: name.to_vec(),
                        parse: self.statements.get(name).map(|p| p.parse),
                    });
                } else {
                    self.described.clear();
                    self.described_lost = Some(batch);
                }
            }
            FrontendMessage::Bind(b) => {
                let portal = match self.statements.get(b.statement) {
                    Some(p) => Portal {
                        sql: p.sql.clone(),
                        parse: Some(p.parse),
                        params: params::values(b, &p.types),
                    },
                    None => Portal {
                        sql: unknown_statement(b.statement),
                        parse: None,
                        params: params::values(b, &[]),
                    },
                };
                self.portals.bind(batch, b.portal, portal);
            }
            FrontendMessage::Execute { portal, .. } => {
                let (bind, p) = match self.portals.get(portal) {
                    Some((bind, p)) => (Some(bind), p.clone()),
                    None => (None, unknown_portal(portal)),
                };
                let record = self.start(false, p.sql, Some(p.params), p.parse);
                if let Some(Pending::Execute(q)) = self.pending.back_mut() {
                    q.bind = bind;
                }
                return record;
            }
            FrontendMessage::Close { kind, name } => {
                if *kind == b'S' {
                    self.statements.close(batch, name);
                } else {
                    self.statements.close_portal(batch);
                    self.portals.close(name);
                }
            }
            FrontendMessage::Sync => self.pending.push_back(Pending::Sync {
                copy_ends_before: self.copy_ends_sent,
            }),
            FrontendMessage::CopyDone | FrontendMessage::CopyFail { .. } => {
                self.copy_ends_sent += 1;
                self.copy_in = false;
            }
            FrontendMessage::FunctionCall { oid, args } => {
                // Answered like a simple Query: a result or an error, then ReadyForQuery.
                let params = params::values(args, &[]);
                return self.start(
                    true,
                    Sql::text(Arc::from(format!("<fastpath function call: oid {oid}>"))),
                    Some(params),
                    None,
                );
            }
            _ => {}
        }
        None
    }

    /// The `pg.query` event of a statement (Query or Parse) the relay refused because it is
    /// `len` bytes long, more than it holds whole: nothing of it ran. `prefix` is the start
    /// of the message's body; the event keeps the start of its SQL, marked as cut.
    pub(crate) fn refused(&self, tag: u8, prefix: &[u8], len: usize) -> Payload {
        let text = match tag {
            b'P' => prefix
                .iter()
                .position(|&b| b == 0)
                .and_then(|end| prefix.get(end + 1..))
                .unwrap_or_default(),
            _ => prefix,
        };
        // Capped below its own length, so the text is always marked as cut: `prefix` is
        // only the start of the statement.
        let sql = Sql::from_wire(text, REFUSED_SQL.min(text.len().saturating_sub(1)));
        let message = format!(
            "statement of {len} bytes refused: the gateway runs statements of at most {} MiB, \
             so that each is logged whole",
            super::relay::STATEMENT_LIMIT >> 20
        );
        PgEvent {
            sql: Some(&sql),
            sql_bytes: sql.raw(),
            error: Some(sqlstate::PROGRAM_LIMIT_EXCEEDED),
            error_message: Some(&message),
            ..self.fields.pg_event("pg.query")
        }
        .payload()
    }

    /// A message too large to buffer: tracked from its first bytes. Returns the strict
    /// record of a statement, as [`Tracker::frontend`] does.
    pub(crate) fn frontend_oversize(&mut self, tag: u8, prefix: &[u8]) -> Option<Payload> {
        if matches!(tag, b'Q' | b'F') {
            // Answered by a ReadyForQuery like any other Query or FunctionCall.
            self.batches_sent += 1;
        }
        match tag {
            b'Q' => return self.start(true, Sql::from_wire(prefix, MAX_SQL), None, None),
            b'F' => {
                let call = Sql::text(Arc::from("<fastpath function call: arguments too large>"));
                let params = Arc::from([Value::String("<too large>".into())]);
                return self.start(true, call, Some(params), None);
            }
            b'E' => {
                let portal = format!("<portal {:?}>", capped_text(prefix, 64));
                return self.start(
                    false,
                    Sql::text(Arc::from(portal)),
                    Some(Arc::from([])),
                    None,
                );
            }
            b'P' => {
                let name_end = prefix.iter().position(|&b| b == 0).unwrap_or(0);
                let name = prefix.get(..name_end).unwrap_or_default().to_vec();
                let sql = Sql::from_wire(prefix.get(name_end + 1..).unwrap_or_default(), MAX_SQL);
                let batch = self.batches_sent;
                self.statements.parse(batch, &name, sql, Vec::new());
            }
            b'B' => {
                // Huge parameters: keep the portal and statement names, drop the values.
                let mut parts = prefix.splitn(3, |&b| b == 0);
                let portal = parts.next().unwrap_or_default().to_vec();
                let stmt = parts.next().unwrap_or_default();
                let (sql, parse) = match self.statements.get(stmt) {
                    Some(p) => (p.sql.clone(), Some(p.parse)),
                    None => (unknown_statement(stmt), None),
                };
                let params = Arc::from([Value::String("<too large>".into())]);
                let batch = self.batches_sent;
                self.portals
                    .bind(batch, &portal, Portal { sql, parse, params });
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
    pub(crate) fn backend(&mut self, msg: &BackendMessage<'_>, out: &mut Vec<Finished>) {
        match msg {
            BackendMessage::CommandComplete { tag } => self.complete(Some(tag), None, out),
            BackendMessage::EmptyQueryResponse => self.complete(Some(b""), None, out),
            BackendMessage::PortalSuspended => self.complete(Some(b"suspended"), None, out),
            BackendMessage::ErrorResponse(f) => {
                // An error ends a copy-in; the server honours Syncs again.
                self.copy_in = false;
                let code = String::from_utf8_lossy(f.code().unwrap_or_default()).into_owned();
                let message = capped_text(f.message().unwrap_or_default(), 1024);
                self.complete(None, Some((code, message)), out);
            }
            BackendMessage::CopyResponse { tag, .. } => {
                if let Some(Pending::Simple(q) | Pending::Execute(q)) = self.pending.front_mut() {
                    q.copy_bytes.get_or_insert(0);
                    let copy_ends_before = q.copy_ends_before;
                    if *tag == b'G' {
                        self.copy_in_started(copy_ends_before);
                    }
                }
            }
            BackendMessage::ParseComplete | BackendMessage::CloseComplete => {
                self.statements.confirmed(self.batches_answered);
            }
            BackendMessage::BindComplete => self.portals.confirmed(self.batches_answered),
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
            BackendMessage::ReadyForQuery { status } => {
                self.copy_in = false;
                self.implicit_done = (*status == b'I').then_some(0);
                self.batches_answered += 1;
                self.drop_described_before(self.batches_answered);
                let undone = self.statements.batch_ended(self.batches_answered);
                let unbound = self.portals.batch_ended(self.batches_answered);
                if *status == b'I' {
                    self.portals.transaction_ended(self.batches_answered);
                }
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
                        Pending::Sync { .. } => break,
                    }
                }
                for u in undone {
                    self.bound_to_undone(&u);
                }
                for u in unbound {
                    self.executed_undone_bind(&u);
                }
            }
            _ => {}
        }
    }

    /// The server started a copy-in for the statement in front. It ignores the Syncs the
    /// client sent from that statement until its CopyDone or CopyFail (libpq sends one
    /// behind an extended COPY and another after CopyDone): those are no batch ends.
    fn copy_in_started(&mut self, copy_ends_before: u64) {
        // The statement itself is in front; every Sync queued is behind it.
        let before = self.pending.len();
        self.pending.retain(
            |p| !matches!(p, Pending::Sync { copy_ends_before: c } if *c == copy_ends_before),
        );
        // Messages sent after an ignored Sync were counted in the next batch; the server
        // answers them in this one.
        let ignored = (before - self.pending.len()) as u64;
        self.batches_answered += ignored;
        self.copy_in = self.copy_ends_sent == copy_ends_before;
    }

    /// A Parse the server did not take was undone: executions bound to it since, in later
    /// batches, run what the name meant before.
    fn bound_to_undone(&mut self, u: &Undone) {
        let (sql, parse) = match &u.instead {
            Some(p) => (p.sql.clone(), Some(p.parse)),
            None => (unknown_statement(&u.name), None),
        };
        for p in self.portals.values_mut() {
            if p.parse == Some(u.parse) {
                p.sql = sql.clone();
                p.parse = parse;
            }
        }
        for p in &mut self.pending {
            if let Pending::Simple(q) | Pending::Execute(q) = p
                && q.parse == Some(u.parse)
            {
                q.sql = sql.clone();
                q.parse = parse;
                q.sql_corrected = true;
            }
        }
    }

    /// A Bind the server did not take was undone: executions of its portal sent since, in
    /// later batches, run what the portal was bound to before.
    fn executed_undone_bind(&mut self, u: &UndoneBind) {
        let (bind, instead) = match &u.instead {
            Some((bind, p)) => (Some(*bind), p.clone()),
            None => (None, unknown_portal(&u.name)),
        };
        for p in &mut self.pending {
            if let Pending::Execute(q) = p
                && q.bind == Some(u.bind)
            {
                q.sql = instead.sql.clone();
                q.params = Some(instead.params.clone());
                q.parse = instead.parse;
                q.bind = bind;
                q.sql_corrected = true;
            }
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
        out: &mut Vec<Finished>,
    ) {
        let sql = match self.pending.front_mut() {
            Some(Pending::Simple(q)) => {
                // Several statements in one Query: the last tag stands as `tag`, every one
                // is in `tags`, and the first error stays.
                q.end = Some(Instant::now());
                if let Some(t) = tag {
                    let t = String::from_utf8_lossy(t).into_owned();
                    q.tags.push(t.clone());
                    q.tag = Some(t);
                }
                if q.error.is_none() {
                    q.error = error;
                }
                q.sql.clone()
            }
            Some(Pending::Execute(_)) => {
                let Some(Pending::Execute(mut q)) = self.pending.pop_front() else {
                    return;
                };
                q.end = Some(Instant::now());
                q.tag = tag.map(|t| String::from_utf8_lossy(t).into_owned());
                self.implicit_done = match (&q.tag, &error, self.implicit_done) {
                    (_, Some(_), done) => {
                        q.rolled_back = done.filter(|&n| n > 0);
                        None
                    }
                    (Some(t), None, _) if opens_transaction(t) => None,
                    (Some(t), None, _) if ends_transaction(t) => Some(0),
                    (_, None, done) => done.map(|n| n + 1),
                };
                q.error = error;
                let sql = q.sql.clone();
                self.emit(q, out);
                sql
            }
            // An error outside any statement: a Parse's (sent with no Execute behind it) is
            // logged with its SQL; another (a Describe's, say) has nothing to attach to.
            Some(Pending::Sync { .. }) | None => {
                if let Some((code, message)) = error
                    && let Some(sql) = self.statements.failing_parse(self.batches_answered)
                {
                    let ev = PgEvent {
                        sql: Some(&sql),
                        error: Some(&code),
                        error_message: Some(&message),
                        ..self.fields.pg_event("pg.query")
                    };
                    out.push(Finished::Ready(ev.payload()));
                }
                return;
            }
        };
        if let Some(tag) = tag
            && self.statements.sql_command(&sql, tag)
        {
            // DISCARD ALL closed the portals too.
            self.portals.forget_named();
        }
    }

    fn emit(&mut self, mut q: Query, out: &mut Vec<Finished>) {
        self.queries += 1;
        q.end.get_or_insert_with(Instant::now);
        out.push(Finished::Statement(q));
    }

    /// The event of a finished statement, as the log will hold it.
    pub(crate) fn payload(&self, f: &Finished) -> Payload {
        f.payload(&self.fields, self.strict)
    }

    /// Statements still running when the session ends are logged as interrupted.
    pub(crate) fn drain(&mut self, reason: &str, out: &mut Vec<Finished>) {
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
