//! `replay SESSION`: plays an SSH session's terminal recording with its timing, exports it
//! (asciicast or the final screen as text), or prints a Postgres session's query timeline.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use portcullis_recorder::Record;

use super::{DataDirArg, each_record};
use crate::cli::inert;
use crate::cli::{CmdResult, Failure, Global};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Export {
    /// The asciicast v2 file as recorded
    Asciicast,
    /// The final screen (through a terminal emulator) and the commands typed
    Text,
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Session id
    #[arg(value_parser = session_id)]
    pub session: String,
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Playback speed factor (2 = twice as fast)
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Longest pause kept between two outputs, in seconds
    #[arg(long, value_name = "SECS")]
    pub idle_limit: Option<f64>,
    /// Write the recording out instead of playing it
    #[arg(long, value_enum)]
    pub export: Option<Export>,
    /// Output file for --export (default: stdout)
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only the terminal of this channel, when the session had several (one connection,
    /// several shells); an asciicast export of such a session needs it
    #[arg(long, value_name = "N")]
    pub channel: Option<u32>,
}

/// A session id to replay: an empty one is a usage error, as for the admin commands' ids.
fn session_id(s: &str) -> Result<String, String> {
    crate::cli::admin::id_of("session", "audit search --type session.started", s)
}

pub fn run_replay(a: ReplayArgs, g: &Global) -> CmdResult {
    if !(a.speed.is_finite() && a.speed > 0.0) {
        return Err(Failure::usage("--speed must be a positive number"));
    }
    let data_dir = a.dir.resolve(g)?;
    let mut recs: Vec<Record> = Vec::new();
    each_record(&data_dir, |r| {
        if r.str_field("session") == Some(a.session.as_str()) {
            recs.push(r);
        }
    })?;
    if recs.is_empty() {
        return Err(Failure::failed(format!(
            "no audit records for session {}",
            a.session
        )));
    }
    let postgres = recs
        .iter()
        .any(|r| r.kind().starts_with("pg.") || r.str_field("proto") == Some("postgres"));
    // `--export` promises a recording (a file for asciinema, a screen): where there is none,
    // say so rather than print something else where the caller expects one.
    let no_recording = |why: &str| {
        Failure::failed(format!(
            "session {} has no terminal recording to export ({why}); run replay without --export to see what it did",
            a.session
        ))
    };
    if postgres {
        if a.export.is_some() {
            return Err(no_recording("a Postgres session"));
        }
        return pg_timeline(&recs, g.json);
    }
    let mut casts = recordings(&recs, &data_dir, &a.session)?;
    // Several shells on one connection are several recordings; a reviewer sees them all, in
    // the order their channels were opened, unless one is picked.
    casts.sort_by_key(|(path, _)| channel_of(path));
    let channels = |casts: &[(PathBuf, String)]| {
        casts
            .iter()
            .filter_map(|(p, _)| channel_of(p).map(|c| c.to_string()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if let Some(want) = a.channel {
        if !casts.is_empty() && !casts.iter().any(|(p, _)| channel_of(p) == Some(want)) {
            return Err(Failure::failed(format!(
                "session {} has no terminal recording of channel {want} (channels: {})",
                a.session,
                channels(&casts)
            )));
        }
        casts.retain(|(p, _)| channel_of(p) == Some(want));
    }
    if casts.is_empty() {
        if a.export.is_some() {
            return Err(no_recording("it ran only exec, sftp or forwards"));
        }
        // An exec-only or sftp session has no terminal: show what it did instead.
        for r in &recs {
            outln!("{}", super::human(r));
        }
        return Ok(());
    }
    let several = casts.len() > 1;
    let title = |path: &Path| match channel_of(path) {
        Some(c) => format!("--- channel {c}: {} ---", path.display()),
        None => format!("--- {} ---", path.display()),
    };
    match a.export {
        Some(Export::Asciicast) => {
            if several {
                return Err(Failure::failed(format!(
                    "session {} has {} terminal recordings (channels {}); export one with --channel N",
                    a.session,
                    casts.len(),
                    channels(&casts)
                )));
            }
            let (cast, text) = &casts[0];
            // A live session's recording is still in the recorder's buffer: an empty or cut
            // file is no asciicast, so say so rather than export it with success.
            parse_cast(text).map_err(|e| Failure::failed(format!("{}: {e}", cast.display())))?;
            write_out(a.output.as_deref(), text.as_bytes())
        }
        Some(Export::Text) => {
            let mut out = String::new();
            for (cast, text) in &casts {
                if several {
                    out.push_str(&title(cast));
                    out.push('\n');
                }
                out.push_str(
                    &final_screen(text)
                        .map_err(|e| Failure::failed(format!("{}: {e}", cast.display())))?,
                );
            }
            out.push_str("\n--- commands ---\n");
            for r in &recs {
                if matches!(r.kind(), "ssh.command" | "ssh.exec")
                    && let Some(c) = r.str_field("command")
                {
                    out.push_str(&format!("{} {}\n", r.ts, inert::lines(c, "    ")));
                }
            }
            write_out(a.output.as_deref(), out.as_bytes())
        }
        None => {
            for (cast, text) in &casts {
                if several {
                    outln!("\r\n{}\r", title(cast));
                }
                play(text, a.speed, a.idle_limit)
                    .map_err(|e| Failure::failed(format!("{}: {e}", cast.display())))?;
            }
            Ok(())
        }
    }
}

/// The channel a recording was made on: its file is `<session>-<channel>.cast`.
fn channel_of(path: &Path) -> Option<u32> {
    let stem = path.file_stem()?.to_str()?;
    stem.rsplit_once('-')?.1.parse().ok()
}

fn write_out(path: Option<&Path>, bytes: &[u8]) -> CmdResult {
    match path {
        Some(p) => std::fs::write(p, bytes)
            .map_err(|e| Failure::failed(format!("cannot write {}: {e}", p.display()))),
        None => {
            let mut o = std::io::stdout().lock();
            if let Err(e) = o.write_all(bytes).and_then(|()| o.flush()) {
                crate::cli::stdout_failed(&e);
            }
            Ok(())
        }
    }
}

/// The session's recordings (checked against the sha256 the audit log holds), oldest first.
fn recordings(
    recs: &[Record],
    data_dir: &Path,
    session: &str,
) -> Result<Vec<(PathBuf, String)>, Failure> {
    let dir = data_dir.join("recordings");
    let mut named: Vec<(String, Option<String>)> = recs
        .iter()
        .filter(|r| r.kind() == "session.ended")
        .flat_map(super::recordings::named)
        .collect();
    if named.is_empty() {
        // A session still live (or cut by a crash) has no session.ended yet.
        let prefix = format!("{session}-");
        if let Ok(rd) = std::fs::read_dir(&dir) {
            let mut found: Vec<String> = rd
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix) && n.ends_with(".cast"))
                .collect();
            found.sort();
            named = found.into_iter().map(|n| (n, None)).collect();
        }
    }
    let mut out = Vec::new();
    for (file, sha) in named {
        let (path, bytes) = super::recordings::read_checked(data_dir, &file, sha.as_deref())
            .map_err(Failure::failed)?;
        let text = String::from_utf8(bytes)
            .map_err(|_| Failure::failed(format!("recording {} is not utf-8", path.display())))?;
        out.push((path, text));
    }
    Ok(out)
}

/// A parsed asciicast v2 event.
struct CastEvent {
    time: f64,
    code: String,
    data: String,
}

/// The header's (width, height) and the events of an asciicast v2 text.
fn parse_cast(text: &str) -> Result<((u16, u16), Vec<CastEvent>), String> {
    let mut lines = text.lines();
    let header: serde_json::Value = serde_json::from_str(lines.next().ok_or("empty recording")?)
        .map_err(|e| format!("bad header: {e}"))?;
    if header["version"] != 2 {
        return Err("not an asciicast v2 recording".into());
    }
    let dim = |k: &str| {
        header[k]
            .as_u64()
            .and_then(|v| u16::try_from(v).ok())
            .unwrap_or(0)
    };
    let size = (dim("width").max(1), dim("height").max(1));
    let mut events = Vec::new();
    for (i, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let (time, code, data): (f64, String, String) =
            serde_json::from_str(line).map_err(|e| format!("bad event on line {}: {e}", i + 2))?;
        events.push(CastEvent { time, code, data });
    }
    Ok((size, events))
}

/// The screen left after every output, through a vt100 emulator.
fn final_screen(text: &str) -> Result<String, String> {
    let ((w, h), events) = parse_cast(text)?;
    let mut vt = vt100::Parser::new(h, w, 0);
    for e in &events {
        match e.code.as_str() {
            "o" => vt.process(e.data.as_bytes()),
            "r" => {
                if let Some((c, r)) = e.data.split_once('x')
                    && let (Ok(c), Ok(r)) = (c.parse(), r.parse())
                {
                    vt.screen_mut().set_size(r, c);
                }
            }
            _ => {}
        }
    }
    let mut s = vt.screen().contents();
    s.push('\n');
    Ok(s)
}

/// Writes the outputs to the terminal with their original pauses (scaled, capped).
fn play(text: &str, speed: f64, idle_limit: Option<f64>) -> Result<(), String> {
    let (_, events) = parse_cast(text)?;
    let mut out = std::io::stdout().lock();
    let mut last = 0.0f64;
    for e in events.iter().filter(|e| e.code == "o") {
        let mut pause = (e.time - last).max(0.0);
        if let Some(cap) = idle_limit {
            pause = pause.min(cap.max(0.0));
        }
        last = e.time;
        // A recording whose times are out of range (one no session.ended vouches for, after
        // a crash) or a tiny --speed can ask for a pause no Duration holds.
        let pause = Duration::try_from_secs_f64(pause / speed).map_err(|_| {
            format!(
                "the pause before the output at {}s is too long to play at speed {speed}; cap it with --idle-limit",
                e.time
            )
        })?;
        std::thread::sleep(pause);
        if let Err(e) = out.write_all(e.data.as_bytes()).and_then(|()| out.flush()) {
            crate::cli::stdout_failed(&e);
        }
    }
    Ok(())
}

/// A Postgres session's queries: time, duration, tag or error, sql and params. One line per
/// statement in either durability: in strict mode a statement's outcome is a separate
/// `pg.result` record (same `stmt`), shown on its `pg.query` line.
fn pg_timeline(recs: &[Record], json: bool) -> CmdResult {
    let results: std::collections::HashMap<u64, &Record> = recs
        .iter()
        .filter(|r| r.kind() == "pg.result")
        .filter_map(|r| Some((r.event.get("stmt")?.as_u64()?, r)))
        .collect();
    for r in recs {
        if json {
            outln!("{}", serde_json::to_string(r).unwrap_or_default());
            continue;
        }
        if r.kind() == "pg.result" {
            continue;
        }
        if r.kind() != "pg.query" {
            // What the login set upstream, and why the session ended, belong on the
            // timeline; the rest of those records is in `audit search`.
            let detail = ["startup", "reason", "killed_by", "kill_reason", "error"]
                .iter()
                .filter_map(|k| {
                    let v = r.event.get(*k)?;
                    let text = match v.as_str() {
                        Some(text) => inert::lines(text, "    "),
                        None => inert::lines(&v.to_string(), "    "),
                    };
                    Some(format!("  {k}: {text}"))
                })
                .collect::<String>();
            outln!("{}  -- {}{detail}", r.ts, r.kind());
            continue;
        }
        let outcome_rec = r
            .event
            .get("stmt")
            .and_then(|v| v.as_u64())
            .and_then(|n| results.get(&n).copied())
            .unwrap_or(r);
        outln!("{}", pg_line(r, outcome_rec));
        outln!(
            "    {}",
            inert::lines(r.str_field("sql").unwrap_or(""), "    ")
        );
        if let Some(p) = r
            .event
            .get("params")
            .filter(|p| !p.is_null() && p.as_array().is_none_or(|a| !a.is_empty()))
        {
            outln!("    params: {}", inert::lines(&p.to_string(), "    "));
        }
    }
    Ok(())
}

/// The header line of one statement: its time, and duration and outcome from `outcome`
/// (the `pg.query` itself in batched mode, its `pg.result` in strict mode).
fn pg_line(query: &Record, outcome: &Record) -> String {
    let dur = outcome
        .event
        .get("duration_us")
        .and_then(|v| v.as_u64())
        .map_or("?".into(), |us| format!("{:.3} ms", us as f64 / 1000.0));
    let undid = match outcome.event.get("rolled_back").and_then(|v| v.as_u64()) {
        Some(n) => format!(" (and rolled back the {n} statement(s) before it in its transaction)"),
        None => String::new(),
    };
    let text = match (outcome.str_field("error"), outcome.str_field("tag")) {
        (Some(code), _) => match outcome.str_field("error_message") {
            Some(message) => format!("ERROR {code}: {message}{undid}"),
            None => format!("ERROR {code}{undid}"),
        },
        (None, Some(tag)) => tag.to_string(),
        (None, None) => "(no outcome recorded)".to_string(),
    };
    format!("{}  {dur:>12}  {}", query.ts, inert::lines(&text, "    "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_statement_lines_take_the_outcome_of_their_result() {
        let rec = |ev: serde_json::Value| Record {
            seq: 1,
            ts: "T".into(),
            prev: String::new(),
            hash: String::new(),
            event: ev.as_object().cloned().unwrap_or_default(),
        };
        let q = rec(serde_json::json!({"type":"pg.query","stmt":3,"sql":"select 1"}));
        let r = rec(
            serde_json::json!({"type":"pg.result","stmt":3,"duration_us":1500,"tag":"SELECT 1"}),
        );
        assert_eq!(pg_line(&q, &r), "T      1.500 ms  SELECT 1");
        assert_eq!(pg_line(&q, &q), "T             ?  (no outcome recorded)");
        let failed = rec(serde_json::json!({"type":"pg.query","duration_us":20,
            "error":"42703","error_message":"column \"nope\" does not exist"}));
        assert_eq!(
            pg_line(&failed, &failed),
            "T      0.020 ms  ERROR 42703: column \"nope\" does not exist"
        );
        let undid = rec(serde_json::json!({"type":"pg.query","duration_us":20,
            "error":"23505","rolled_back":2}));
        assert_eq!(
            pg_line(&undid, &undid),
            "T      0.020 ms  ERROR 23505 (and rolled back the 2 statement(s) before it in its transaction)"
        );
    }

    #[test]
    fn final_screen_applies_control_sequences() {
        let cast = "{\"version\":2,\"width\":20,\"height\":3}\n[0.1,\"o\",\"abc\\r\\n\"]\n[0.2,\"o\",\"x\\u001b[2K\\rdone\"]\n";
        let s = final_screen(cast).expect("screen");
        assert_eq!(s.trim_end(), "abc\ndone");
    }
}
