//! TOML text to raw structs, one element at a time, so that one bad user or target does not
//! hide the problems of the others.
//!
//! Steps: parse the text (a syntax error is the one problem we can report, located by line
//! and column); strip and report every unknown key at every level, using the raw structs'
//! own field lists; then let serde decode each section, user and target on its own and turn
//! a type error into a problem at the key it names.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use crate::fields::fields_of;
use crate::problems::Report;
use crate::raw::{
    RawAudit, RawFile, RawGateway, RawListen, RawNotify, RawPolicy, RawRole, RawTarget, RawTls,
    RawUser,
};

/// The sections and entries that decoded; users and targets keep their index for paths.
#[derive(Debug, Default)]
pub(crate) struct Decoded {
    pub gateway: RawGateway,
    pub listen: RawListen,
    pub tls: Option<RawTls>,
    pub policy: RawPolicy,
    pub audit: RawAudit,
    pub notify: RawNotify,
    pub users: Vec<(usize, RawUser)>,
    pub targets: Vec<(usize, RawTarget)>,
}

/// Decodes `text`, reporting syntax errors, unknown keys and type errors. `None` only when
/// the text is not TOML at all.
pub(crate) fn decode(text: &str, report: &mut Report) -> Option<Decoded> {
    let mut top: Table = match toml::from_str(text) {
        Ok(table) => table,
        Err(e) => {
            let at = e.span().map_or(0, |span| span.start);
            let (line, column) = line_column(text, at);
            // Only the message: toml's own Display quotes the source line, which may hold a
            // secret (an unterminated inline password, say).
            report.problem(
                format!("line {line}, column {column}"),
                e.message().trim().to_string(),
            );
            return None;
        }
    };
    strip_unknown::<RawFile>(&mut top, "", report);

    let mut out = Decoded::default();
    if let Some(v) = section(&mut top, "gateway", report) {
        out.gateway = v;
    }
    if let Some(v) = section(&mut top, "listen", report) {
        out.listen = v;
    }
    out.tls = section::<RawTls>(&mut top, "tls", report);
    if let Some(v) = section(&mut top, "policy", report) {
        out.policy = v;
    }
    if let Some(v) = section(&mut top, "audit", report) {
        out.audit = v;
    }
    if let Some(v) = section(&mut top, "notify", report) {
        out.notify = v;
    }
    for (i, mut entry) in array_of_tables(&mut top, "users", report) {
        let path = format!("users[{i}]");
        strip_unknown::<RawUser>(&mut entry, &path, report);
        if let Some(user) = decode_table(entry, &path, report) {
            out.users.push((i, user));
        }
    }
    for (i, mut entry) in array_of_tables(&mut top, "targets", report) {
        let path = format!("targets[{i}]");
        strip_unknown::<RawTarget>(&mut entry, &path, report);
        // Roles decode on their own, so a bad role does not hide its target's problems.
        let roles = take_roles(&mut entry, &path, report);
        if let Some(mut target) = decode_table::<RawTarget>(entry, &path, report) {
            target.roles = roles;
            out.targets.push((i, target));
        }
    }
    Some(out)
}

/// 1-based line and column (in characters) of byte offset `at`.
fn line_column(text: &str, at: usize) -> (usize, usize) {
    let before = text.get(..at).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before
        .rsplit('\n')
        .next()
        .map_or(0, |tail| tail.chars().count())
        + 1;
    (line, column)
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Removes the keys `T` does not accept from `table`, reporting each at its path.
fn strip_unknown<T: DeserializeOwned>(table: &mut Table, prefix: &str, report: &mut Report) {
    let known = fields_of::<T>();
    let unknown: Vec<String> = table
        .keys()
        .filter(|key| !known.contains(&key.as_str()))
        .cloned()
        .collect();
    for key in unknown {
        table.remove(&key);
        report.problem(
            join(prefix, &key),
            format!("unknown key (expected one of: {})", known.join(", ")),
        );
    }
}

/// Takes the `[name]` section out of `top` and decodes it.
fn section<T: DeserializeOwned>(top: &mut Table, name: &str, report: &mut Report) -> Option<T> {
    match top.remove(name)? {
        Value::Table(mut table) => {
            strip_unknown::<T>(&mut table, name, report);
            decode_table(table, name, report)
        }
        other => {
            report.problem(
                name,
                format!("expected a table ([{name}]), found {}", other.type_str()),
            );
            None
        }
    }
}

/// Takes `[[name]]` out of `top`: the entries that are tables, with their indexes.
fn array_of_tables(top: &mut Table, name: &str, report: &mut Report) -> Vec<(usize, Table)> {
    let Some(value) = top.remove(name) else {
        return Vec::new();
    };
    let Value::Array(items) = value else {
        report.problem(
            name,
            format!(
                "expected an array of tables ([[{name}]]), found {}",
                value.type_str()
            ),
        );
        return Vec::new();
    };
    let mut tables = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        match item {
            Value::Table(table) => tables.push((i, table)),
            other => report.problem(
                format!("{name}[{i}]"),
                format!("expected a table, found {}", other.type_str()),
            ),
        }
    }
    tables
}

/// Takes `roles` out of a target table and decodes each role on its own. Unknown keys and
/// type errors are reported; a role that does not decode is left out (`Some` of an empty
/// map is still "roles present", so no second "needs a role" problem is reported for it).
fn take_roles(
    target: &mut Table,
    prefix: &str,
    report: &mut Report,
) -> Option<BTreeMap<String, RawRole>> {
    let path = join(prefix, "roles");
    let roles = match target.remove("roles")? {
        Value::Table(roles) => roles,
        other => {
            report.problem(
                path,
                format!(
                    "expected a table of roles ([targets.roles.NAME]), found {}",
                    other.type_str()
                ),
            );
            return Some(BTreeMap::new());
        }
    };
    let mut out = BTreeMap::new();
    let empty = roles.is_empty();
    for (name, value) in roles {
        let role_path = format!("{path}.{name}");
        match value {
            Value::Table(mut role) => {
                strip_unknown::<RawRole>(&mut role, &role_path, report);
                if let Some(raw) = decode_table::<RawRole>(role, &role_path, report) {
                    out.insert(name, raw);
                }
            }
            other => report.problem(
                role_path,
                format!(
                    "expected a table ([targets.roles.{name}]), found {}",
                    other.type_str()
                ),
            ),
        }
    }
    // An empty `[targets.roles]` is reported by the target check as "needs a role".
    if empty { None } else { Some(out) }
}

/// Decodes one table. A type error becomes a problem at the key serde names; that key is
/// then dropped and decoding retried, so every bad value in the table is reported and the
/// good ones still count. Each retry removes a key, so the loop ends.
fn decode_table<T: DeserializeOwned>(
    mut table: Table,
    path: &str,
    report: &mut Report,
) -> Option<T> {
    loop {
        let e = match Value::Table(table.clone()).try_into::<T>() {
            Ok(value) => return Some(value),
            Err(e) => e,
        };
        let text = e.to_string();
        let (message, key) = match text.split_once("\nin `") {
            Some((message, rest)) => (message, rest.trim_end().trim_end_matches('`')),
            None => (text.trim_end(), ""),
        };
        report.problem(join(path, key), redact_type_error(message));
        // Only a top-level key can be dropped; anything else ends the attempt.
        if key.is_empty() || key.contains('.') || table.remove(key).is_none() {
            return None;
        }
    }
}

/// serde's "invalid type: integer `123`, expected a string" quotes the value, which may be a
/// password; keep only the kinds.
fn redact_type_error(message: &str) -> String {
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_string();
    };
    let found = rest.split_whitespace().next().unwrap_or("value");
    let found = found.trim_end_matches(',');
    match rest.split_once(", expected ") {
        Some((_, expected)) => format!("expected {expected}, found {found}"),
        None => format!("invalid type: {found}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        let mut report = Report::default();
        decode(text, &mut report);
        report.problems.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn reports_every_unknown_key_with_its_path() {
        let got = problems(
            "colour = 1\n[gateway]\ndata = \"x\"\n[[users]]\nname = \"a\"\nkey = \"k\"\n\
             [[targets]]\nname = \"t\"\nhost = \"h\"\n[targets.roles.r]\nuser = \"u\"\npass = \"p\"\n",
        );
        let paths: Vec<&str> = got
            .iter()
            .map(|l| l.split(':').next().unwrap_or(""))
            .collect();
        assert_eq!(
            paths,
            [
                "colour",
                "gateway.data",
                "users[0].key",
                "targets[0].host",
                "targets[0].roles.r.pass"
            ],
            "{got:#?}"
        );
    }

    #[test]
    fn type_errors_name_the_key_and_hide_the_value() {
        let got = problems(
            "[[targets]]\nname = \"t\"\n[targets.roles.r]\nuser = \"u\"\npassword = 123456\n",
        );
        assert_eq!(
            got,
            ["targets[0].roles.r.password: expected a string, found integer"]
        );
    }

    #[test]
    fn every_type_error_in_a_table_is_reported_and_good_values_kept() {
        let mut report = Report::default();
        let decoded = decode(
            "[[users]]\nname = \"a\"\nssh_keys = \"k\"\npassword_scram = 5\n\
             [[targets]]\nname = \"t\"\n[targets.roles.r]\nuser = 1\n[targets.roles.ok]\nuser = \"u\"\n",
            &mut report,
        )
        .expect("valid toml");
        let got: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(
            got,
            [
                "users[0].password_scram: expected a string, found integer",
                "users[0].ssh_keys: expected a sequence, found string",
                "targets[0].roles.r.user: expected a string, found integer",
            ]
        );
        assert_eq!(decoded.users[0].1.name.as_deref(), Some("a"));
        let roles = decoded.targets[0].1.roles.as_ref().expect("roles");
        assert_eq!(roles.keys().collect::<Vec<_>>(), ["ok", "r"]);
        assert!(roles["r"].user.is_none());
    }

    #[test]
    fn syntax_errors_give_line_and_column_without_the_source_line() {
        let got = problems("[gateway]\ndata_dir = \"x\"\n[[targets]]\npassword = \"s3cret\n");
        assert_eq!(got.len(), 1);
        assert!(got[0].starts_with("line 4, column "), "{got:?}");
        assert!(!got[0].contains("s3cret"), "{got:?}");
    }

    #[test]
    fn wrong_shapes_are_reported_and_the_rest_still_decodes() {
        let mut report = Report::default();
        let decoded = decode(
            "gateway = 3\ntargets = 4\n[[users]]\nname = \"a\"\n",
            &mut report,
        )
        .expect("valid toml");
        let paths: Vec<&str> = report.problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["gateway", "targets"]);
        assert_eq!(decoded.users.len(), 1);
    }

    #[test]
    fn line_column_counts_characters() {
        assert_eq!(line_column("ab\ncdé\nx", 8), (3, 1));
        assert_eq!(line_column("ab\ncdé", 7), (2, 4));
    }
}
