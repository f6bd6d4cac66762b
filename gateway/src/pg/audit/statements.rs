//! The session's prepared statements as the server holds them, so an execution is logged
//! with the SQL that really ran.
//!
//! The client's Parse and Close are applied when they are sent (a Bind right behind them in
//! the same batch needs the new SQL), and kept as unconfirmed changes until the server
//! answers them with ParseComplete or CloseComplete. A change the server did not confirm by
//! the end of its batch failed or was skipped after an earlier error, and is undone: a Parse
//! that failed (say 42P05, the name is taken) must not rename what the old statement runs.
//! Statements changed in SQL (`PREPARE`, `DEALLOCATE`, `DISCARD ALL`) are applied when the
//! command completes.

use std::collections::HashMap;
use std::sync::Arc;

use super::sql::Sql;
use super::unconfirmed::{Sent, Unconfirmed};

/// Most named statements remembered; beyond that the SQL of new ones is not tracked (their
/// executions are still logged, with the statement name).
pub(super) const MAX_NAMES: usize = 10_000;

/// A prepared statement: its SQL, shared with its portals and executions, and its parameter
/// types as far as they are known (for rendering binary parameters).
#[derive(Debug, Clone)]
pub(super) struct Prepared {
    pub sql: Sql,
    pub types: Vec<u32>,
    /// Which definition this is (the session's count of definitions): a description sent
    /// for an earlier statement of the same name is not this one's, and an execution bound
    /// to a definition that is undone is logged with the one that stood before.
    pub parse: u64,
}

/// A Parse or Close sent and not yet confirmed.
#[derive(Debug)]
struct Change {
    /// The batch it was sent in (see `Tracker::batches_sent`).
    batch: u64,
    /// The statement it changed; `None` for one answered the same way that changed none
    /// (a portal's Close, a Parse past [`MAX_NAMES`]), kept so answers match in order.
    name: Option<Vec<u8>>,
    /// What the name meant before the change.
    before: Option<Prepared>,
    /// The definition the change put in place (`None`: a Close).
    installed: Option<u64>,
}

impl Sent for Change {
    fn batch(&self) -> u64 {
        self.batch
    }
}

impl Change {
    fn none(batch: u64) -> Change {
        Change {
            batch,
            name: None,
            before: None,
            installed: None,
        }
    }
}

/// A definition undone at the end of its batch, and what executions bound to it ran.
#[derive(Debug)]
pub(super) struct Undone {
    pub parse: u64,
    pub name: Vec<u8>,
    pub instead: Option<Prepared>,
}

#[derive(Debug, Default)]
pub(super) struct Statements {
    map: HashMap<Vec<u8>, Prepared>,
    unconfirmed: Unconfirmed<Change>,
    /// Definitions seen (numbers them).
    defined: u64,
}

impl Statements {
    pub(super) fn get(&self, name: &[u8]) -> Option<&Prepared> {
        self.map.get(name)
    }

    pub(super) fn get_mut(&mut self, name: &[u8]) -> Option<&mut Prepared> {
        self.map.get_mut(name)
    }

    /// The client's Parse, sent in `batch`.
    pub(super) fn parse(&mut self, batch: u64, name: &[u8], sql: Sql, types: Vec<u32>) {
        if !name.is_empty() && self.map.len() >= MAX_NAMES && !self.map.contains_key(name) {
            self.remember(Change::none(batch));
            return;
        }
        self.defined += 1;
        let parse = self.defined;
        let before = self
            .map
            .insert(name.to_vec(), Prepared { sql, types, parse });
        self.remember(Change {
            batch,
            name: Some(name.to_vec()),
            before,
            installed: Some(parse),
        });
    }

    /// The client's Close of a statement, sent in `batch`.
    pub(super) fn close(&mut self, batch: u64, name: &[u8]) {
        let before = self.map.remove(name);
        self.remember(Change {
            batch,
            name: Some(name.to_vec()),
            before,
            installed: None,
        });
    }

    /// The client's Close of a portal, sent in `batch`: answered by a CloseComplete too.
    pub(super) fn close_portal(&mut self, batch: u64) {
        self.remember(Change::none(batch));
    }

    fn remember(&mut self, change: Change) {
        if !self.unconfirmed.remember(change) {
            self.forget_named();
        }
    }

    /// ParseComplete or CloseComplete, received while the server answers batch
    /// `answering`: the oldest change took effect.
    pub(super) fn confirmed(&mut self, answering: u64) {
        self.unconfirmed.confirmed(answering);
    }

    /// The SQL of the oldest unconfirmed Parse, if it was sent in `batch` and is the next
    /// change the server answers: an error now is that Parse's.
    pub(super) fn failing_parse(&self, batch: u64) -> Option<Sql> {
        let c = self.unconfirmed.front().filter(|c| c.batch == batch)?;
        let parse = c.installed?;
        self.map
            .get(c.name.as_deref()?)
            .filter(|p| p.parse == parse)
            .map(|p| p.sql.clone())
    }

    /// The batch before `answered` ended: its changes not confirmed did not happen. Undoes
    /// them, newest first, and returns the definitions undone.
    pub(super) fn batch_ended(&mut self, answered: u64) -> Vec<Undone> {
        let mut undone = Vec::new();
        for c in self.unconfirmed.ended(answered) {
            let Some(name) = c.name else { continue };
            let current = self.map.get(&name).map(|p| p.parse);
            if current == c.installed {
                // Nothing changed the name since: put back what it meant.
                match c.before.clone() {
                    Some(p) => self.map.insert(name.clone(), p),
                    None => self.map.remove(&name),
                };
            } else if let Some(later) = self.unconfirmed.iter_mut().find(|l| {
                l.name.as_ref() == Some(&name) && l.before.as_ref().map(|p| p.parse) == c.installed
            }) {
                // A later change (still unconfirmed) replaced this one: what it replaced
                // is what stood before this one.
                later.before = c.before.clone();
            }
            if let Some(parse) = c.installed {
                undone.push(Undone {
                    parse,
                    name,
                    instead: c.before,
                });
            }
        }
        undone
    }

    /// A command that completed with `tag` (its SQL `sql`) and changed statements in SQL.
    /// Returns true when it dropped every named statement (the portals go with DISCARD ALL;
    /// the caller drops those).
    pub(super) fn sql_command(&mut self, sql: &str, tag: &[u8]) -> bool {
        match tag {
            b"DEALLOCATE ALL" | b"DISCARD ALL" => self.forget_named(),
            b"DEALLOCATE" => match deallocated(sql) {
                Some(name) => {
                    self.map.remove(name.as_bytes());
                }
                None => self.forget_named(),
            },
            b"PREPARE" => match prepared(sql) {
                Some((name, body)) if self.map.len() < MAX_NAMES => {
                    self.defined += 1;
                    let p = Prepared {
                        sql: Sql::text(Arc::from(body)),
                        types: Vec::new(),
                        parse: self.defined,
                    };
                    self.map.insert(name.into_bytes(), p);
                }
                Some((name, _)) => {
                    self.map.remove(name.as_bytes());
                }
                None => self.forget_named(),
            },
            _ => return false,
        }
        tag == b"DISCARD ALL"
    }

    /// Every named statement is gone (or which one is not known): executions of any of them
    /// are logged by name from here on, not with SQL that may be stale.
    fn forget_named(&mut self) {
        self.map.retain(|name, _| name.is_empty());
    }
}

/// The name a single `DEALLOCATE [PREPARE] name` statement drops.
fn deallocated(sql: &str) -> Option<String> {
    let mut w = Words::single(sql)?;
    if !w.keyword("deallocate") {
        return None;
    }
    w.keyword("prepare");
    let name = w.identifier()?;
    w.end().then_some(name)
}

/// The name and statement of a single `PREPARE name [(types)] AS statement`.
fn prepared(sql: &str) -> Option<(String, &str)> {
    let mut w = Words::single(sql)?;
    if !w.keyword("prepare") {
        return None;
    }
    let name = w.identifier()?;
    w.skip_parenthesised();
    if !w.keyword("as") {
        return None;
    }
    Some((name, w.rest().trim_end().trim_end_matches(';').trim_end()))
}

/// A tiny reader of one SQL statement's leading words: enough for PREPARE and DEALLOCATE,
/// and nothing else. Anything it is unsure of (several statements, an odd identifier) is
/// `None`, and the caller then forgets rather than guesses.
struct Words<'a> {
    rest: &'a str,
}

impl<'a> Words<'a> {
    /// `sql` if it is one statement: no `;` but trailing ones. A `;` inside a string makes
    /// this refuse too, which only costs the fallback.
    fn single(sql: &'a str) -> Option<Words<'a>> {
        let body = sql.trim_end().trim_end_matches(';');
        (!body.contains(';')).then_some(Words { rest: body })
    }

    /// Skips whitespace and comments (`--` to the end of the line, `/* */`, nested).
    fn skip_blank(&mut self) {
        loop {
            let s = self.rest.trim_start();
            if let Some(after) = s.strip_prefix("--") {
                self.rest = after.split_once('\n').map_or("", |(_, r)| r);
            } else if s.starts_with("/*") {
                let mut depth = 0usize;
                let mut i = 0;
                let b = s.as_bytes();
                while i + 1 < b.len() {
                    match (b.get(i), b.get(i + 1)) {
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            i += 2;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => i += 1,
                    }
                }
                self.rest = if depth == 0 {
                    s.get(i..).unwrap_or("")
                } else {
                    ""
                };
            } else {
                self.rest = s;
                return;
            }
        }
    }

    /// Consumes `word` (case-insensitive, followed by a non-identifier character).
    fn keyword(&mut self, word: &str) -> bool {
        self.skip_blank();
        let Some(head) = self.rest.get(..word.len()) else {
            return false;
        };
        let next = self.rest[word.len()..].chars().next();
        if head.eq_ignore_ascii_case(word) && !next.is_some_and(is_ident_char) {
            self.rest = &self.rest[word.len()..];
            true
        } else {
            false
        }
    }

    /// An identifier as PostgreSQL resolves it: unquoted ones folded to lower case (ASCII
    /// only, as PostgreSQL does), quoted ones verbatim with `""` as `"`.
    fn identifier(&mut self) -> Option<String> {
        self.skip_blank();
        if let Some(q) = self.rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = q.char_indices();
            while let Some((i, c)) = chars.next() {
                if c != '"' {
                    name.push(c);
                } else if q.get(i + 1..).is_some_and(|r| r.starts_with('"')) {
                    name.push('"');
                    chars.next();
                } else {
                    self.rest = q.get(i + 1..)?;
                    return (!name.is_empty()).then_some(name);
                }
            }
            return None;
        }
        let end = self
            .rest
            .find(|c: char| !is_ident_char(c))
            .unwrap_or(self.rest.len());
        let word = self.rest.get(..end)?;
        if word.is_empty() || word.starts_with(|c: char| c.is_ascii_digit() || c == '$') {
            return None;
        }
        self.rest = &self.rest[end..];
        Some(word.to_ascii_lowercase())
    }

    /// Skips a `( ... )` list (PREPARE's parameter types), if there is one.
    fn skip_parenthesised(&mut self) {
        self.skip_blank();
        if self.rest.starts_with('(')
            && let Some(end) = self.rest.find(')')
        {
            self.rest = &self.rest[end + 1..];
        }
    }

    fn end(&mut self) -> bool {
        self.skip_blank();
        self.rest.is_empty()
    }

    fn rest(&mut self) -> &'a str {
        self.skip_blank();
        self.rest
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_names_prepare_and_deallocate_act_on() {
        let dealloc = [
            ("deallocate s1", Some("s1")),
            ("DEALLOCATE PREPARE S1;", Some("s1")),
            (
                "  -- evict\n deallocate /* a /* nested */ one */ \"Mixed\"\"Q\"",
                Some("Mixed\"Q"),
            ),
            ("deallocate _pg3_0", Some("_pg3_0")),
            ("deallocate all", Some("all")),
            ("deallocate s1; select 1", None),
            ("deallocate", None),
            ("deallocate 1x", None),
            ("deallocate s1 s2", None),
            ("deallocates1", None),
        ];
        for (sql, want) in dealloc {
            assert_eq!(deallocated(sql).as_deref(), want, "{sql}");
        }
        let prep = [
            (
                "prepare s2 as delete from victim",
                Some(("s2", "delete from victim")),
            ),
            (
                "PREPARE \"P\" (int, text) AS select $1, $2 ;",
                Some(("P", "select $1, $2")),
            ),
            ("prepare q as\n  select 1", Some(("q", "select 1"))),
            ("prepare s2 as select ';'", None),
            ("prepare s2 select 1", None),
            ("prepared s2 as select 1", None),
        ];
        for (sql, want) in prep {
            assert_eq!(
                prepared(sql),
                want.map(|(n, b)| (n.to_string(), b)),
                "{sql}"
            );
        }
    }

    fn sql_of(s: &Statements, name: &[u8]) -> Option<String> {
        s.get(name).map(|p| p.sql.to_string())
    }

    #[test]
    fn a_parse_the_server_refused_is_undone_and_the_old_statement_stands() {
        let mut s = Statements::default();
        s.parse(0, b"s1", Sql::text(Arc::from("delete from victim")), vec![]);
        s.confirmed(0);
        assert!(s.batch_ended(1).is_empty());
        // Refused (42P05): no ParseComplete before its batch ends.
        s.parse(1, b"s1", Sql::text(Arc::from("select 1")), vec![]);
        assert_eq!(s.failing_parse(1).as_deref(), Some("select 1"));
        let undone = s.batch_ended(2);
        assert_eq!(undone.len(), 1);
        assert_eq!(
            undone[0].instead.as_ref().map(|p| &*p.sql),
            Some("delete from victim")
        );
        assert_eq!(sql_of(&s, b"s1").as_deref(), Some("delete from victim"));
    }

    #[test]
    fn a_skipped_close_and_parse_leave_the_statement_as_it_was() {
        let mut s = Statements::default();
        s.parse(0, b"s3", Sql::text(Arc::from("delete from victim")), vec![]);
        s.confirmed(0);
        s.batch_ended(1);
        // An earlier statement of batch 1 failed: the Close and the Parse are skipped.
        s.close(1, b"s3");
        s.parse(1, b"s3", Sql::text(Arc::from("select 'harmless'")), vec![]);
        s.batch_ended(2);
        assert_eq!(sql_of(&s, b"s3").as_deref(), Some("delete from victim"));
    }

    #[test]
    fn an_undone_parse_does_not_undo_a_later_one_that_held() {
        let mut s = Statements::default();
        // Batch 0's Parse fails; batch 1's, pipelined behind it, succeeds.
        s.parse(0, b"s", Sql::text(Arc::from("bad")), vec![]);
        s.parse(1, b"s", Sql::text(Arc::from("good")), vec![]);
        s.batch_ended(1);
        s.confirmed(1);
        s.batch_ended(2);
        assert_eq!(sql_of(&s, b"s").as_deref(), Some("good"));
        // And had batch 1's failed too, nothing would stand.
        let mut s = Statements::default();
        s.parse(0, b"s", Sql::text(Arc::from("bad")), vec![]);
        s.parse(1, b"s", Sql::text(Arc::from("worse")), vec![]);
        s.batch_ended(1);
        s.batch_ended(2);
        assert_eq!(sql_of(&s, b"s"), None);
    }

    #[test]
    fn sql_commands_change_the_statements() {
        let mut s = Statements::default();
        for (b, name) in [(0, &b"a"[..]), (0, b"b"), (0, b"")] {
            s.parse(b, name, Sql::text(Arc::from("select 1")), vec![]);
            s.confirmed(b);
        }
        assert!(!s.sql_command("deallocate a", b"DEALLOCATE"));
        assert_eq!(sql_of(&s, b"a"), None);
        assert!(sql_of(&s, b"b").is_some());
        s.sql_command("prepare b as delete from victim", b"PREPARE");
        assert_eq!(sql_of(&s, b"b").as_deref(), Some("delete from victim"));
        // Two statements in one query: which name is not known, so none is trusted.
        s.sql_command("deallocate b; prepare b as select 2", b"PREPARE");
        assert_eq!(sql_of(&s, b"b"), None);
        s.parse(1, b"c", Sql::text(Arc::from("select 3")), vec![]);
        assert!(s.sql_command("discard all", b"DISCARD ALL"));
        assert_eq!(sql_of(&s, b"c"), None);
        assert!(
            sql_of(&s, b"").is_some(),
            "the unnamed statement is not a prepared one"
        );
        assert!(!s.sql_command("select 1", b"SELECT 1"));
    }
}
