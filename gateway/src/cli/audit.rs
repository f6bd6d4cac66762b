//! `audit verify|tail|search`, `replay` and `report`: offline readers of the audit log.
//!
//! They read `<data_dir>/audit` directly (no running gateway needed); `replay` lives in
//! `audit/replay.rs`, `report` in `audit/report.rs`, the shared helpers here.

mod recordings;
mod replay;
mod report;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use portcullis_recorder::{Filter, Record, VerifyingKey, seal, verify};

use super::{CmdResult, Failure, Global};

pub use replay::{Export, ReplayArgs, run_replay};
pub use report::{ReportArgs, ReportFormat, run_report};

#[derive(Debug, clap::Subcommand)]
pub enum AuditCmd {
    /// Offline: check every record, chain link, seal, the signed head and every terminal recording the log names; exit 1 with the first bad place
    Verify(VerifyArgs),
    /// Print the last records; -f keeps following new ones
    Tail(TailArgs),
    /// Print the records matching every given filter
    Search(SearchArgs),
}

/// Where the log is.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// Data directory holding audit/ and recordings/ (default: the config's gateway.data_dir)
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

impl DataDirArg {
    /// `--data-dir`, else the config's `gateway.data_dir` (`-c`, `./portcullis.toml`, or
    /// the embedded defaults).
    fn resolve(&self, g: &Global) -> Result<PathBuf, Failure> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        match portcullis_config::resolve(g.config.as_deref()) {
            Ok((config, _)) => Ok(config.gateway.data_dir),
            Err(e) => Err(Failure::usage(format!(
                "cannot find the data dir from the config ({e}); pass --data-dir"
            ))),
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Expected seal public key: 64 hex digits, or a file holding them
    /// (default: derived from <data_dir>/audit-seal.key, else taken from the seals)
    #[arg(long, value_name = "HEX|FILE")]
    pub pubkey: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Keep printing new records as they are written
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// How many of the last records to print first
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: usize,
}

#[derive(Debug, clap::Args)]
pub struct SearchArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    #[arg(long)]
    pub user: Option<String>,
    #[arg(long)]
    pub target: Option<String>,
    #[arg(long)]
    pub session: Option<String>,
    /// Event type, e.g. pg.query, or a family: grant or grant.*
    #[arg(long = "type", value_name = "TYPE", value_parser = event_type)]
    pub kind: Option<String>,
    /// RFC 3339 time, or a duration back from now (2h, 1d)
    #[arg(long)]
    pub since: Option<String>,
    /// RFC 3339 time, or a duration back from now
    #[arg(long)]
    pub until: Option<String>,
}

/// Every event type the gateway writes to the log: SPEC §7's and its additions
/// (`pg.result`, `request.expired`, `ssh.subsystem`, `ssh.denied`, `config.*`). A new event
/// type belongs here too, or `audit search --type` refuses it as a typo.
pub(crate) const EVENT_TYPES: &[&str] = &[
    "audit.recovered",
    "auth.failed",
    "auth.succeeded",
    "config.reload_failed",
    "config.reloaded",
    "gateway.started",
    "gateway.stopped",
    "grant.created",
    "grant.expired",
    "grant.extended",
    "grant.revoked",
    "pg.query",
    "pg.result",
    "request.approved",
    "request.created",
    "request.denied",
    "request.expired",
    "session.ended",
    "session.started",
    "ssh.command",
    "ssh.denied",
    "ssh.exec",
    "ssh.forward",
    "ssh.sftp",
    "ssh.shell",
    "ssh.subsystem",
];

/// The families of [`EVENT_TYPES`]: what comes before the dot.
fn event_families() -> Vec<&'static str> {
    let mut families: Vec<&str> = EVENT_TYPES
        .iter()
        .filter_map(|t| t.split_once('.').map(|(f, _)| f))
        .collect();
    families.dedup();
    families
}

/// `--type`: an event type or a family (`grant`, `grant.*`), as [`Filter::matches`] reads it.
/// Anything else would match no record, and an empty search would read as "no such events"
/// when the type was only misspelt, so it is a usage error listing what is accepted.
fn event_type(s: &str) -> Result<String, String> {
    let family = s.strip_suffix(".*").unwrap_or(s);
    if EVENT_TYPES.contains(&s) || event_families().contains(&family) {
        return Ok(s.to_owned());
    }
    let lower = s.to_lowercase();
    let hint = if lower != s && event_type(&lower).is_ok() {
        format!(" (types are lower-case: {lower})")
    } else {
        String::new()
    };
    Err(format!(
        "unknown event type{hint}; use one of {}, or a family: {} (also written as grant.*)",
        EVENT_TYPES.join(", "),
        event_families().join(", ")
    ))
}

pub fn run_audit(cmd: AuditCmd, g: &Global) -> CmdResult {
    match cmd {
        AuditCmd::Verify(a) => run_verify(a, g),
        AuditCmd::Tail(a) => run_tail(a, g),
        AuditCmd::Search(a) => run_search(a, g),
    }
}

/// A point in time from `2h` (that long ago) or an RFC 3339 timestamp.
pub(crate) fn parse_when(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, Failure> {
    if let Ok(d) = humantime::parse_duration(s) {
        let d = chrono::Duration::from_std(d)
            .map_err(|_| Failure::usage(format!("duration {s} is too long")))?;
        return Ok(now - d);
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            Failure::usage(format!(
                "{s} is neither a duration (2h) nor an RFC 3339 time"
            ))
        })
}

/// Hands every record of the log under `data_dir` to `each`, oldest first.
///
/// Records are read one at a time and not kept: the log may be far larger than memory, so
/// a reader keeps only what it needs of them.
pub(crate) fn each_record(data_dir: &Path, mut each: impl FnMut(Record)) -> Result<(), Failure> {
    let audit = data_dir.join("audit");
    if !audit.is_dir() {
        return Err(Failure::failed(format!(
            "no audit log at {}",
            audit.display()
        )));
    }
    let recs = portcullis_recorder::records(&audit).map_err(|e| Failure::failed(e.to_string()))?;
    for r in recs {
        each(r.map_err(|e| Failure::failed(e.to_string()))?);
    }
    Ok(())
}

/// A recording the log names that is gone or no longer what was recorded.
#[derive(Debug)]
struct BadRecording {
    /// The recording's file name, as the log gives it.
    file: String,
    /// The `session.ended` record that names it.
    seq: u64,
    problem: String,
}

/// Checks every recording a `session.ended` record names against the sha256 it gives:
/// the number checked, or the first one missing or altered. A recording is evidence the
/// chain vouches for, like a recovery's side file, so its loss fails `audit verify`.
fn check_recordings(data_dir: &Path) -> Result<Result<usize, BadRecording>, Failure> {
    let mut checked = 0;
    let mut bad = None;
    each_record(data_dir, |r| {
        if bad.is_some() || r.kind() != "session.ended" {
            return;
        }
        for (file, sha) in recordings::named(&r) {
            if let Err(problem) = recordings::check(data_dir, &file, sha.as_deref()) {
                bad = Some(BadRecording {
                    file,
                    seq: r.seq,
                    problem,
                });
                return;
            }
            checked += 1;
        }
    })?;
    Ok(bad.map_or(Ok(checked), Err))
}

/// One record for humans: time, seq, type, then the event's other fields as key=value.
pub(crate) fn human(r: &Record) -> String {
    let mut s = format!("{} #{} {}", r.ts, r.seq, r.kind());
    for (k, v) in &r.event {
        if k == "type" {
            continue;
        }
        match v {
            serde_json::Value::String(t) => s.push_str(&format!(" {k}={t:?}")),
            other => {
                // JSON escapes the C0 controls but leaves DEL, the C1 controls (CSI is one)
                // and bidi overrides as they are, and a query's parameters or a startup
                // parameter are the client's to choose: none may reach the reader's terminal
                // as a control. (A string's Debug form above escapes all of them.)
                s.push_str(&format!(" {k}={}", super::inert::line(&other.to_string())));
            }
        }
    }
    s
}

fn print_record(r: &Record, json: bool) {
    if json {
        outln!("{}", serde_json::to_string(r).unwrap_or_default());
    } else {
        outln!("{}", human(r));
    }
}

fn read_pubkey(arg: &str) -> Result<VerifyingKey, Failure> {
    let text = if Path::new(arg).is_file() {
        std::fs::read_to_string(arg)
            .map_err(|e| Failure::usage(format!("cannot read {arg}: {e}")))?
    } else {
        arg.to_string()
    };
    seal::parse_pubkey(&text).map_err(|e| Failure::usage(format!("--pubkey: {e}")))
}

fn run_verify(a: VerifyArgs, g: &Global) -> CmdResult {
    let data_dir = a.dir.resolve(g)?;
    let key_file = data_dir.join(crate::keys::AUDIT_KEY_FILE);
    let (key, source) = match &a.pubkey {
        Some(p) => (Some(read_pubkey(p)?), "--pubkey".to_string()),
        None if key_file.is_file() => {
            let k = portcullis_recorder::key::load(&key_file)
                .map_err(|e| Failure::failed(e.to_string()))?;
            (Some(k.verifying_key()), key_file.display().to_string())
        }
        None => (
            None,
            "the seals (compare it with the key you trust)".to_string(),
        ),
    };
    let audit = data_dir.join("audit");
    let result = verify(&audit, key);
    let shown = key.map(|k| hex::encode(k.to_bytes()));
    // The log vouches for the recordings its records name: once it holds, check them too.
    let checked = match &result {
        Ok(_) => Some(check_recordings(&data_dir)?),
        Err(_) => None,
    };
    if let Some(Err(bad)) = &checked {
        if g.json {
            outln!(
                "{}",
                serde_json::json!({"ok": false, "file": bad.file, "offset": 0, "seq": bad.seq, "problem": bad.problem})
            );
        }
        return Err(Failure::failed(format!(
            "audit log verification failed: {} (named by the session.ended record at seq {})",
            bad.problem, bad.seq
        )));
    }
    let recordings = checked.and_then(Result::ok).unwrap_or(0);
    match result {
        Ok(s) => {
            if g.json {
                outln!(
                    "{}",
                    serde_json::to_string(
                        &serde_json::json!({"ok": true, "summary": s, "recordings": recordings})
                    )
                    .unwrap_or_default()
                );
                return Ok(());
            }
            let pk = shown
                .or(s.pubkey.clone())
                .unwrap_or_else(|| "(no sealed segment yet)".into());
            outln!("audit log:  {}", audit.display());
            outln!("public key: {pk} (from {source})");
            outln!(
                "ok: {} records in {} segments ({} sealed), {} bytes; last seq {}, last hash {}",
                s.records,
                s.segments,
                s.sealed,
                s.bytes,
                s.last_seq,
                s.last_hash
            );
            outln!(
                "head: the log reaches seq {}, the last record its signed head vouches for",
                s.head_seq
            );
            if !s.kept.is_empty() {
                outln!(
                    "cut at restarts: {} (kept, and each still holds what its audit.recovered record says)",
                    s.kept.join(", ")
                );
            }
            if recordings > 0 {
                outln!(
                    "recordings: {recordings}, each still holding what its session.ended record says"
                );
            }
            if let Some(open) = &s.open_segment {
                outln!(
                    "open segment: {open} (unsealed: the gateway is writing it, or did not shut down cleanly)"
                );
            }
            Ok(())
        }
        Err(e) => {
            if g.json {
                outln!(
                    "{}",
                    serde_json::json!({"ok": false, "file": e.file, "offset": e.offset, "seq": e.seq, "problem": e.problem.to_string()})
                );
            } else if let Some(pk) = &shown {
                outln!("public key: {pk} (from {source})");
            }
            Err(Failure::failed(format!(
                "audit log verification failed: {e}"
            )))
        }
    }
}

fn run_tail(a: TailArgs, g: &Global) -> CmdResult {
    let data_dir = a.dir.resolve(g)?;
    let audit = data_dir.join("audit");
    // Position the follower first, so nothing written while the backlog prints is lost.
    let mut tail =
        portcullis_recorder::Tail::at_end(&audit).map_err(|e| Failure::failed(e.to_string()))?;
    let mut last = std::collections::VecDeque::with_capacity(a.lines.min(1 << 16));
    each_record(&data_dir, |r| {
        if last.len() == a.lines {
            last.pop_front();
        }
        if a.lines > 0 {
            last.push_back(r);
        }
    })?;
    for r in &last {
        print_record(r, g.json);
    }
    let mut last_seq = last.back().map_or(0, |r| r.seq);
    if !a.follow {
        return Ok(());
    }
    loop {
        std::thread::sleep(std::time::Duration::from_millis(250));
        for r in tail.poll().map_err(|e| Failure::failed(e.to_string()))? {
            if r.seq > last_seq {
                last_seq = r.seq;
                print_record(&r, g.json);
            }
        }
    }
}

fn run_search(a: SearchArgs, g: &Global) -> CmdResult {
    let data_dir = a.dir.resolve(g)?;
    let now = Utc::now();
    let filter = Filter {
        user: a.user,
        target: a.target,
        session: a.session,
        kind: a.kind,
        since: a.since.as_deref().map(|s| parse_when(s, now)).transpose()?,
        until: a.until.as_deref().map(|s| parse_when(s, now)).transpose()?,
    };
    if let (Some(since), Some(until)) = (filter.since, filter.until)
        && since > until
    {
        // `--since 1m --until 5m` reads as a window, but is one that ends before it starts.
        return Err(Failure::usage(format!(
            "--since ({}) is after --until ({}), so no record could match; durations count back from now, so the longer one goes with --since",
            portcullis_recorder::record::format_ts(since),
            portcullis_recorder::record::format_ts(until)
        )));
    }
    each_record(&data_dir, |r| {
        if filter.matches(&r) {
            print_record(&r, g.json);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record_of(kind: &str) -> Record {
        Record {
            seq: 1,
            ts: "2026-11-29T10:00:00Z".into(),
            prev: String::new(),
            hash: String::new(),
            event: serde_json::json!({ "type": kind })
                .as_object()
                .cloned()
                .unwrap_or_default(),
        }
    }

    /// Every `--type` accepted matches some event type the gateway writes, as the search's
    /// filter reads it; every one refused would match none.
    #[test]
    fn search_types_are_the_ones_the_filter_can_match() {
        for ok in [
            "pg.query",
            "grant",
            "grant.*",
            "ssh",
            "ssh.*",
            "request.expired",
        ] {
            assert_eq!(event_type(ok).as_deref(), Ok(ok));
        }
        for t in EVENT_TYPES {
            assert!(event_type(t).is_ok(), "{t}");
        }
        for bad in [
            "pg.qurey",
            "ssh*",
            "GRANT.CREATED",
            "",
            "grant.",
            "pg.query.*",
            "*",
            "gateway.log",
        ] {
            assert!(event_type(bad).is_err(), "{bad:?} accepted");
        }
        assert!(
            event_type("GRANT.CREATED")
                .is_err_and(|e| e.contains("lower-case: grant.created") && e.contains("pg.query")),
        );
        for pattern in [
            "pg.query", "pg", "pg.*", "grant", "grant.*", "ssh", "pg.qurey", "ssh*", "grant.",
        ] {
            let filter = Filter {
                kind: Some(pattern.into()),
                ..Default::default()
            };
            let matches_some = EVENT_TYPES.iter().any(|t| filter.matches(&record_of(t)));
            assert_eq!(event_type(pattern).is_ok(), matches_some, "{pattern}");
        }
    }
}
