//! The audit readers through the real `portcullis` binary: `audit verify` (and tampering),
//! `audit search|tail`, `replay` (asciicast and text export, Postgres timeline) and `report`.
//! Logs are written with the real recorder; the recording holds a real shell's output.

mod cli_support;

use std::path::Path;
use std::process::Command;

use cli_support::{portcullis, text, write_log};
use portcullis_recorder::{AuditLog, Durability, Event, Recording};

/// A new recording of alice's SSH session `s_ssh` (80×24, xterm) under `dir`.
fn ssh_recording(dir: &Path) -> Recording {
    Recording::create(dir, "s_ssh", 0, 80, 24, "xterm", "alice@web-1").expect("rec")
}

/// The hex public key of the seal key at `path` (created when absent).
fn pubkey_hex(path: &Path) -> String {
    let key = portcullis_recorder::key::load_or_create(path).expect("key");
    key.verifying_key()
        .to_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `session` ended by its client, its terminal recorded in `file` (named as the gateway
/// names it: by path, or by file name in older logs) with that `sha256`.
fn ended_recorded(session: &str, file: &str, sha256: &str) -> Event {
    sess("session.ended", session)
        .with("reason", "client_closed")
        .with("recording", file)
        .with("recording_sha256", sha256)
}

fn sess(kind: &str, session: &str) -> Event {
    Event::new(kind)
        .with("session", session)
        .with("user", "alice")
}

/// What a client chose (SQL, parameters, startup parameters, user names) is printed with
/// every control character escaped, whatever its place in the event.
#[test]
fn search_prints_no_control_character_a_client_sent() {
    let d = tempfile::tempdir().expect("tempdir");
    let nasty = "a\u{1b}[2J\u{7f}\u{9b}31m\u{7}b";
    let startup: serde_json::Map<String, serde_json::Value> =
        [("application_name".to_string(), nasty.into())]
            .into_iter()
            .collect();
    write_log(
        d.path(),
        vec![
            sess("session.started", "s_a").with("startup", startup),
            sess("pg.query", "s_a")
                .with("sql", nasty)
                .with("params", vec![nasty, "plain"]),
            Event::new("auth.failed").with("user", nasty),
        ],
    );
    let dd = d.path().to_str().expect("utf-8");
    for args in [
        &["audit", "search", "--data-dir", dd][..],
        &["audit", "tail", "--data-dir", dd],
    ] {
        let out = portcullis(args);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let printed = text(&out.stdout);
        assert_eq!(printed.lines().count(), 3, "{printed}");
        let controls: Vec<char> = printed
            .chars()
            .filter(|c| c.is_control() && *c != '\n')
            .collect();
        assert!(
            controls.is_empty(),
            "{args:?} printed {controls:?}: {printed}"
        );
    }
}

#[test]
fn verify_passes_then_names_the_tampered_place() {
    let d = tempfile::tempdir().expect("tempdir");
    let data = d.path();
    let evs = (0..50)
        .map(|i| sess("pg.query", "s_1").with("sql", format!("select {i}")))
        .collect();
    write_log(data, evs);
    let dd = data.to_str().expect("utf-8");
    let ok = portcullis(&["audit", "verify", "--data-dir", dd]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let out = text(&ok.stdout);
    let pk_hex = pubkey_hex(&data.join("audit-seal.key"));
    assert!(out.contains(&pk_hex), "prints the public key: {out}");
    assert!(out.contains("50 records"), "{out}");

    // Without --data-dir the config's gateway.data_dir is used.
    let cfg = data.join("portcullis.toml");
    std::fs::write(&cfg, "[gateway]\ndata_dir = \".\"\n").expect("config");
    let ok = portcullis(&["-c", cfg.to_str().expect("utf-8"), "audit", "verify"]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(text(&ok.stdout).contains("50 records"));

    let ok = portcullis(&["audit", "verify", "--data-dir", dd, "--pubkey", &pk_hex]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let other = pubkey_hex(&elsewhere.path().join("other.key"));
    let bad = portcullis(&["audit", "verify", "--data-dir", dd, "--pubkey", &other]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        text(&bad.stderr).contains("another key"),
        "{}",
        text(&bad.stderr)
    );

    let seg = data.join("audit/seg-000001.jsonl");
    let mut bytes = std::fs::read(&seg).expect("read");
    let line10 = bytes
        .split(|&b| b == b'\n')
        .take(9)
        .map(|l| l.len() + 1)
        .sum::<usize>();
    let at = line10
        + bytes[line10..]
            .windows(8)
            .position(|w| w == b"select 9")
            .expect("record 10");
    bytes[at + 7] = b'8';
    std::fs::write(&seg, &bytes).expect("write");
    let bad = portcullis(&["audit", "verify", "--data-dir", dd]);
    assert_eq!(bad.status.code(), Some(1));
    let err = text(&bad.stderr);
    assert!(
        err.contains("seg-000001.jsonl")
            && err.contains("seq 10")
            && err.contains(&format!("offset {line10}")),
        "{err}"
    );
}

#[test]
fn verify_passes_on_a_log_recovered_from_a_torn_tail() {
    let d = tempfile::tempdir().expect("tempdir");
    let data = d.path();
    let evs = (0..5)
        .map(|i| sess("pg.query", "s_1").with("sql", format!("select {i}")))
        .collect();
    write_log(data, evs);
    // A crash tears a record in a new, unsealed segment; the next open cuts it.
    let torn = b"{\"seq\":6,\"ts\":\"2026-".as_slice();
    std::fs::write(data.join("audit/seg-000002.jsonl"), torn).expect("write");
    let dd = data.to_str().expect("utf-8");
    let bad = portcullis(&["audit", "verify", "--data-dir", dd]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stdout));
    write_log(data, vec![sess("pg.query", "s_2")]);

    let side = data.join("audit/seg-000002.jsonl.cut-0");
    assert_eq!(std::fs::read(&side).expect("side file"), torn);
    let ok = portcullis(&["audit", "verify", "--data-dir", dd]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).contains("7 records"),
        "{}",
        text(&ok.stdout)
    );
    let out = portcullis(&[
        "audit",
        "search",
        "--data-dir",
        dd,
        "--type",
        "audit.recovered",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rec: serde_json::Value =
        serde_json::from_str(text(&out.stdout).trim()).expect("one record");
    assert_eq!(rec["event"]["kept_in"], "seg-000002.jsonl.cut-0");
    assert_eq!(rec["event"]["file"], "seg-000002.jsonl");
    assert!(
        text(&ok.stdout).contains("cut at restarts: seg-000002.jsonl.cut-0 (kept"),
        "{}",
        text(&ok.stdout)
    );
    // The side file is held to the sha256 its record gives: removing it is caught.
    std::fs::remove_file(&side).expect("remove the side file");
    let gone = portcullis(&["audit", "verify", "--data-dir", dd]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone.stdout));
    let err = text(&gone.stderr);
    assert!(
        err.contains("seg-000002.jsonl.cut-0") && err.contains("which is gone"),
        "{err}"
    );
}

#[test]
fn search_and_tail_filter_records() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut evs = vec![Event::new("gateway.started")];
    for i in 0..5 {
        evs.push(
            sess("pg.query", "s_a")
                .with("target", "pg-prod")
                .with("sql", format!("select {i}")),
        );
        evs.push(
            Event::new("ssh.exec")
                .with("session", "s_b")
                .with("user", "bob")
                .with("command", "uptime"),
        );
    }
    write_log(d.path(), evs);
    let dd = d.path().to_str().expect("utf-8");
    let out = portcullis(&[
        "audit",
        "search",
        "--data-dir",
        dd,
        "--user",
        "alice",
        "--type",
        "pg",
        "--json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("one json object per line"))
        .collect();
    assert_eq!(lines.len(), 5);
    assert!(
        lines.iter().all(|r| r["event"]["type"] == "pg.query"
            && r["hash"].as_str().is_some_and(|h| h.len() == 64))
    );
    let out = portcullis(&[
        "audit",
        "search",
        "--data-dir",
        dd,
        "--session",
        "s_b",
        "--since",
        "1h",
    ]);
    assert_eq!(text(&out.stdout).lines().count(), 5);
    assert!(
        text(&out.stdout).contains("command=\"uptime\""),
        "{}",
        text(&out.stdout)
    );
    let out = portcullis(&["audit", "tail", "--data-dir", dd, "-n", "3", "--json"]);
    let seqs: Vec<u64> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, [9, 10, 11]);
}

#[test]
fn replay_exports_a_real_shell_recording() {
    let d = tempfile::tempdir().expect("tempdir");
    let data = d.path();
    // A real shell's output, as the SSH proxy would see it on the channel.
    let shell = Command::new("sh")
        .args(["-c", "printf '$ '; echo replay-marker-42; printf '$ '"])
        .output()
        .expect("sh");
    let mut rec = ssh_recording(&data.join("recordings"));
    rec.input(b"echo replay-marker-42\r").expect("input");
    rec.output(&shell.stdout).expect("output");
    rec.resize(100, 30).expect("resize");
    let (path, sha) = rec.finish().expect("finish");
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    write_log(
        data,
        vec![
            sess("session.started", "s_ssh")
                .with("proto", "ssh")
                .with("target", "web-1"),
            sess("ssh.shell", "s_ssh"),
            sess("ssh.command", "s_ssh").with("command", "echo replay-marker-42"),
            ended_recorded("s_ssh", &file, &sha),
        ],
    );
    let dd = data.to_str().expect("utf-8");
    let out = portcullis(&["replay", "s_ssh", "--data-dir", dd, "--export", "asciicast"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cast = text(&out.stdout);
    let mut lines = cast.lines();
    let header: serde_json::Value =
        serde_json::from_str(lines.next().expect("header")).expect("header json");
    assert_eq!(
        (
            header["version"].as_u64(),
            header["width"].as_u64(),
            header["height"].as_u64()
        ),
        (Some(2), Some(80), Some(24))
    );
    assert!(header["env"]["TERM"].is_string() && header["timestamp"].is_i64());
    let mut codes = Vec::new();
    for l in lines {
        let (t, code, data): (f64, String, String) = serde_json::from_str(l).expect("v2 event");
        assert!(t >= 0.0 && !data.is_empty());
        codes.push(code);
    }
    assert_eq!(codes, ["i", "o", "r"]);

    let out = portcullis(&["replay", "s_ssh", "--data-dir", dd, "--export", "text"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let screen = text(&out.stdout);
    assert!(screen.contains("$ replay-marker-42"), "{screen}");
    assert!(
        screen.contains("--- commands ---") && screen.contains("echo replay-marker-42"),
        "{screen}"
    );

    let out = portcullis(&["replay", "s_ssh", "--data-dir", dd, "--speed", "1000"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("replay-marker-42"));

    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .expect("read")
            .replace("42", "43"),
    )
    .expect("tamper");
    let out = portcullis(&["replay", "s_ssh", "--data-dir", dd, "--export", "text"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not match the sha256"),
        "{}",
        text(&out.stderr)
    );
}

/// A live session's recording is still in the recorder's buffer (an empty file on disk):
/// `--export asciicast` wrote those zero bytes and exited 0, an invalid asciicast file.
#[test]
fn replay_export_refuses_a_recording_that_is_not_asciicast() {
    let d = tempfile::tempdir().expect("tempdir");
    let data = d.path();
    std::fs::create_dir_all(data.join("recordings")).expect("mkdir");
    std::fs::write(data.join("recordings/s_live-2.cast"), "").expect("write");
    write_log(
        data,
        vec![
            sess("session.started", "s_live").with("proto", "ssh"),
            sess("ssh.shell", "s_live"),
        ],
    );
    let dd = data.to_str().expect("utf-8");
    for export in ["asciicast", "text"] {
        let out = portcullis(&["replay", "s_live", "--data-dir", dd, "--export", export]);
        assert_eq!(out.status.code(), Some(1), "--export {export}");
        assert!(out.stdout.is_empty(), "--export {export}");
        assert!(
            text(&out.stderr).contains("s_live-2.cast: empty recording"),
            "--export {export}: {}",
            text(&out.stderr)
        );
    }
}

/// Two shells on one connection (ControlMaster) are two recordings: replay showed only the
/// first one `session.ended` named (the one that closed first), so the other shell was never
/// seen by a reviewer.
#[test]
fn replay_shows_every_shell_of_a_session() {
    let d = tempfile::tempdir().expect("tempdir");
    let data = d.path();
    let dir = data.join("recordings");
    let record = |channel: u32, marker: &str| {
        let mut rec =
            Recording::create(&dir, "s_two", channel, 80, 24, "xterm", "alice@web-1").expect("rec");
        rec.input(format!("echo {marker}\r").as_bytes())
            .expect("input");
        rec.output(format!("$ echo {marker}\r\n{marker}\r\n$ ").as_bytes())
            .expect("output");
        let (path, sha) = rec.finish().expect("finish");
        serde_json::json!({ "file": path.to_str().expect("utf-8"), "sha256": sha })
    };
    let first = record(2, "first-shell-7");
    let second = record(3, "second-shell-8");
    write_log(
        data,
        vec![
            sess("session.started", "s_two").with("proto", "ssh"),
            // As the gateway writes it: the shell that closed first is named first.
            sess("session.ended", "s_two")
                .with("reason", "client_closed")
                .with("recording", &second["file"])
                .with("recording_sha256", &second["sha256"])
                .with("recordings", vec![second.clone(), first.clone()]),
        ],
    );
    let dd = data.to_str().expect("utf-8");
    let out = portcullis(&["replay", "s_two", "--data-dir", dd, "--export", "text"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let screens = text(&out.stdout);
    let (a, b) = (
        screens.find("first-shell-7"),
        screens.find("second-shell-8"),
    );
    assert!(a.is_some() && b.is_some() && a < b, "{screens}");
    let out = portcullis(&["replay", "s_two", "--data-dir", dd, "--speed", "1000"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let played = text(&out.stdout);
    assert!(
        played.contains("first-shell-7") && played.contains("second-shell-8"),
        "{played}"
    );
    // One asciicast file holds one terminal: the caller picks which.
    let out = portcullis(&["replay", "s_two", "--data-dir", dd, "--export", "asciicast"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    let err = text(&out.stderr);
    assert!(
        err.contains("2 terminal recordings") && err.contains("--channel"),
        "{err}"
    );
    let out = portcullis(&[
        "replay",
        "s_two",
        "--data-dir",
        dd,
        "--export",
        "asciicast",
        "--channel",
        "3",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let cast = text(&out.stdout);
    assert!(
        cast.contains("second-shell-8") && !cast.contains("first-shell-7"),
        "{cast}"
    );
}

#[test]
fn replay_prints_a_postgres_timeline() {
    let d = tempfile::tempdir().expect("tempdir");
    write_log(
        d.path(),
        vec![
            sess("session.started", "s_pg")
                .with("proto", "postgres")
                .with("startup", serde_json::json!({"options": "-c role=admin"})),
            sess("pg.query", "s_pg")
                .with("sql", "select $1::int")
                .with("params", ["7"])
                .with("duration_us", 1500)
                .with("tag", "SELECT 1"),
            sess("pg.query", "s_pg")
                .with("sql", "select nope")
                .with("duration_us", 90)
                .with("error", "column \"nope\" does not exist"),
            sess("session.ended", "s_pg")
                .with("reason", "killed")
                .with("killed_by", "carol")
                .with("kill_reason", "runaway"),
        ],
    );
    let out = portcullis(&[
        "replay",
        "s_pg",
        "--data-dir",
        d.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = text(&out.stdout);
    for want in [
        "select $1::int",
        "params: [\"7\"]",
        "1.500 ms",
        "SELECT 1",
        "ERROR column \"nope\" does not exist",
        "-- session.started  startup: {\"options\":\"-c role=admin\"}",
        "-- session.ended  reason: killed  killed_by: carol  kill_reason: runaway",
    ] {
        assert!(t.contains(want), "{want} in {t}");
    }
    let out = portcullis(&[
        "replay",
        "s_none",
        "--data-dir",
        d.path().to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(1));

    // A Postgres session has no terminal recording to export: asked for one, replay says so
    // instead of printing the timeline where a .cast file was expected.
    let file = d.path().join("s_pg.cast");
    for export in ["asciicast", "text"] {
        let out = portcullis(&[
            "replay",
            "s_pg",
            "--data-dir",
            d.path().to_str().expect("utf-8"),
            "--export",
            export,
            "-o",
            file.to_str().expect("utf-8"),
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "--export {export}: {err}");
        assert!(
            err.contains("s_pg has no terminal recording to export (a Postgres session)"),
            "--export {export}: {err}"
        );
        assert!(out.stdout.is_empty() && !file.exists(), "--export {export}");
    }
}

#[test]
fn report_reviews_grants_requests_and_sessions() {
    let d = tempfile::tempdir().expect("tempdir");
    let g = |kind: &str, id: &str| Event::new(kind).with("grant", id);
    write_log(
        d.path(),
        vec![
            Event::new("request.created")
                .with("request", "r_1")
                .with("user", "alice")
                .with("target", "pg-prod")
                .with("reason", "INC-1"),
            Event::new("request.approved")
                .with("request", "r_1")
                .with("by", "bob")
                .with("grant", "g_1"),
            g("grant.created", "g_1")
                .with("user", "alice")
                .with("target", "pg-prod")
                .with("role", "read")
                .with("reason", "INC-1")
                .with("created_by", "bob")
                .with("request_id", "r_1")
                .with("created_at", "2026-11-29T10:00:00Z")
                .with("expires_at", "2026-11-29T14:00:00Z")
                .with("max_secs", 14_400),
            g("grant.created", "g_2")
                .with("user", "carol")
                .with("target", "web-1")
                .with("role", "deploy")
                .with("reason", "deploy")
                .with("created_by", "admin")
                // A record stamped just after the grant was made (the event carries no
                // created_at of its own): the hour granted is still shown as 1h.
                .with("created_at", "2026-11-29T10:00:00.004Z")
                .with("expires_at", "2026-11-29T11:00:00Z"),
            Event::new("request.created")
                .with("request", "r_2")
                .with("user", "dave")
                .with("target", "pg-prod")
                .with("reason", "curious"),
            Event::new("request.denied")
                .with("request", "r_2")
                .with("by", "bob")
                .with("reason", "no"),
            Event::new("request.created")
                .with("request", "r_3")
                .with("user", "erin")
                .with("target", "pg-prod")
                .with("reason", "later"),
            Event::new("request.created")
                .with("request", "r_4")
                .with("user", "erin")
                .with("target", "web-1")
                .with("reason", "too late"),
            Event::new("request.expired").with("request", "r_4"),
            Event::new("request.created")
                .with("request", "r_5")
                .with("user", "frank")
                .with("target", "web-1")
                .with("reason", "never mind"),
            Event::new("request.denied")
                .with("request", "r_5")
                .with("by", "frank"),
            sess("session.started", "s_1")
                .with("grant", "g_1")
                .with("target", "pg-prod"),
            sess("pg.query", "s_1").with("sql", "select 1"),
            sess("pg.query", "s_1").with("sql", "select 2"),
            sess("session.ended", "s_1")
                .with("reason", "killed")
                .with("killed_by", "carol")
                .with("kill_reason", "INC-9 runaway query")
                .with("target", "pg-prod"),
            g("grant.revoked", "g_1").with("by", "bob"),
            // A session closed because the audit log failed under it: forced too, and
            // security must see it (its grant was made before the log's window).
            sess("session.started", "s_2")
                .with("grant", "g_0")
                .with("target", "pg-prod"),
            sess("session.ended", "s_2")
                .with("reason", "audit_failed")
                .with("target", "pg-prod"),
            // Failed logins: counted per user and protocol, most first, hosts listed once.
            Event::new("auth.failed")
                .with("proto", "admin")
                .with("user", "bob")
                .with("client", "127.0.0.1:40000")
                .with("reason", "wrong password or unknown user"),
            Event::new("auth.failed")
                .with("proto", "ssh")
                .with("user", "dave")
                .with("client", "10.0.0.7:51000")
                .with("reason", "authentication failed"),
            Event::new("auth.failed")
                .with("proto", "ssh")
                .with("user", "dave")
                .with("client", "[2001:db8::8]:51001")
                .with("reason", "authentication failed"),
            Event::new("auth.failed")
                .with("proto", "ssh")
                .with("user", "dave")
                .with("client", "10.0.0.7:51002")
                .with("reason", "authentication failed"),
            // A repair of the log at a restart.
            Event::new("audit.recovered")
                .with("file", "seg-000001.jsonl")
                .with("offset", 100)
                .with("bytes", 42)
                .with("reason", "the record was altered")
                .with("kept_in", "seg-000001.jsonl.cut-100")
                .with("sha256", "ab12"),
        ],
    );
    let dd = d.path().to_str().expect("utf-8");
    let out = portcullis(&["report", "--data-dir", dd, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let g1 = &r["grants"][0];
    assert_eq!(
        (
            g1["id"].as_str(),
            g1["approved_by"].as_str(),
            g1["status"].as_str()
        ),
        (Some("g_1"), Some("bob"), Some("revoked"))
    );
    assert_eq!(
        (
            g1["sessions"].as_u64(),
            g1["queries"].as_u64(),
            g1["granted_secs"].as_i64()
        ),
        (Some(1), Some(2), Some(14_400))
    );
    assert_eq!(r["grants"][1]["granted_secs"].as_i64(), Some(3_600));
    assert_eq!(r["unused_grants"], serde_json::json!(["g_2"]));
    assert_eq!(r["grants_at_max"], serde_json::json!(["g_1"]));
    assert_eq!(r["denied_requests"][0]["id"], "r_2");
    // The requester's own denial is a withdrawal: a denial, as the request API says,
    // marked as withdrawn.
    assert_eq!(r["denied_requests"][1]["id"], "r_5");
    assert_eq!(r["denied_requests"][1]["status"], "denied");
    assert_eq!(r["denied_requests"][1]["withdrawn"], true);
    assert_eq!(r["denied_requests"][0]["withdrawn"], false);
    // A request made moments ago is waiting, not lapsed; an expired one lapsed.
    assert_eq!(r["pending_requests"][0]["id"], "r_3");
    assert_eq!(r["pending_requests"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["lapsed_requests"][0]["id"], "r_4");
    assert_eq!(r["lapsed_requests"].as_array().map(Vec::len), Some(1));
    assert_eq!(r["forced_closes"][0]["reason"], "killed");
    assert_eq!(r["forced_closes"][0]["killed_by"], "carol");
    assert_eq!(r["forced_closes"][0]["kill_reason"], "INC-9 runaway query");
    assert_eq!(r["forced_closes"][1]["session"], "s_2");
    assert_eq!(r["forced_closes"][1]["reason"], "audit_failed");
    assert_eq!(r["forced_closes"].as_array().map(Vec::len), Some(2));
    let dave = &r["failed_logins"][0];
    assert_eq!(
        (&dave["user"], &dave["proto"], &dave["count"]),
        (
            &serde_json::json!("dave"),
            &serde_json::json!("ssh"),
            &serde_json::json!(3)
        ),
        "{r:#}"
    );
    assert_eq!(
        dave["clients"],
        serde_json::json!(["10.0.0.7", "2001:db8::8"])
    );
    assert_eq!(r["failed_logins"][1]["user"], "bob");
    assert_eq!(r["failed_logins"][1]["proto"], "admin");
    assert_eq!(r["failed_logins"].as_array().map(Vec::len), Some(2));
    assert_eq!(r["log_repairs"][0]["kept_in"], "seg-000001.jsonl.cut-100");
    assert_eq!(r["log_repairs"][0]["bytes"], 42);
    let md = portcullis(&["report", "--data-dir", dd]);
    let md = text(&md.stdout);
    assert!(
        md.contains(
            "(`alice` on `pg-prod`, grant `g_1`): killed by `carol` (`INC-9 runaway query`)"
        ),
        "{md}"
    );
    assert!(
        md.contains("| `g_1` | `alice` | `pg-prod` | `read` | `INC-1` | `bob` | `bob` | 4h |"),
        "{md}"
    );
    assert!(md.contains("## Grants never used\n\n- `g_2`"), "{md}");
    assert!(
        md.contains("session `s_2` (`alice` on `pg-prod`, grant `g_0`): audit_failed"),
        "{md}"
    );
    assert!(
        md.contains("- `dave` over `ssh`: 3 times, ")
            && md.contains(", from `10.0.0.7`, `2001:db8::8`\n- `bob` over `admin`: once, at "),
        "{md}"
    );
    assert!(
        md.contains(
            "`seg-000001.jsonl` cut at offset 100: 42 bytes (`the record was altered`); \
             kept in `audit/seg-000001.jsonl.cut-100` (sha256 `ab12`)"
        ),
        "{md}"
    );
}

/// `portcullis audit search | head` and the like: when the reader of stdout has gone, the
/// readers stop quietly, as `grep` or `cat` would (exit 141, a SIGPIPE death in the shell's
/// terms), instead of panicking with a backtrace on stderr.
#[test]
fn readers_stop_quietly_when_stdout_is_closed() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut evs = vec![sess("session.started", "s_pg").with("proto", "postgres")];
    evs.extend((0..50).map(|i| sess("pg.query", "s_pg").with("sql", format!("select {i}"))));
    write_log(d.path(), evs);
    let dd = d.path().to_str().expect("utf-8");
    for args in [
        &["audit", "search", "--data-dir", dd][..],
        &["audit", "search", "--data-dir", dd, "--json"],
        &["audit", "tail", "--data-dir", dd],
        &["replay", "s_pg", "--data-dir", dd],
        &["report", "--data-dir", dd],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
            .args(args)
            .stdout(writer)
            .output()
            .expect("run portcullis");
        let err = text(&out.stderr);
        assert!(
            !err.contains("panicked") && err.is_empty(),
            "{args:?}: {err}"
        );
        assert_eq!(out.status.code(), Some(141), "{args:?}: {err}");
    }
}

/// The log's signed head says where the log ended: removing the whole last segment with its
/// seal, which leaves a chain that links and seals that check, fails verify, and so does
/// removing the head itself.
#[test]
fn verify_fails_when_final_records_or_the_head_are_removed() {
    let d = tempfile::tempdir().expect("tempdir");
    let data = d.path();
    let dd = data.to_str().expect("utf-8");
    write_log(
        data,
        (0..5)
            .map(|i| sess("pg.query", "s_1").with("sql", format!("select {i}")))
            .collect(),
    );
    write_log(
        data,
        vec![sess("pg.query", "s_2").with("sql", "drop table evidence")],
    );
    let ok = portcullis(&["audit", "verify", "--data-dir", dd]);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    assert!(
        text(&ok.stdout).contains("head: the log reaches seq 6"),
        "{}",
        text(&ok.stdout)
    );

    let audit = data.join("audit");
    let head = std::fs::read(audit.join("head")).expect("head");
    std::fs::remove_file(audit.join("seg-000002.jsonl")).expect("remove segment");
    std::fs::remove_file(audit.join("seg-000002.seal")).expect("remove seal");
    let bad = portcullis(&["audit", "verify", "--data-dir", dd]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stdout));
    let err = text(&bad.stderr);
    assert!(
        err.contains("ends at seq 5") && err.contains("up to seq 6") && err.contains("removed"),
        "{err}"
    );

    std::fs::remove_file(audit.join("head")).expect("remove head");
    let bad = portcullis(&["audit", "verify", "--data-dir", dd]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stdout));
    assert!(
        text(&bad.stderr).contains("no signed head"),
        "{}",
        text(&bad.stderr)
    );
    // A head from another log (another key) does not vouch for this one either.
    let other = tempfile::tempdir().expect("tempdir");
    write_log(other.path(), vec![sess("pg.query", "s_3")]);
    std::fs::copy(other.path().join("audit/head"), audit.join("head")).expect("copy");
    let bad = portcullis(&["audit", "verify", "--data-dir", dd]);
    assert_eq!(bad.status.code(), Some(1), "{}", text(&bad.stdout));
    assert!(
        text(&bad.stderr).contains("not signed by the seal key"),
        "{}",
        text(&bad.stderr)
    );
    std::fs::write(audit.join("head"), &head).expect("put the head back");
    assert_eq!(
        portcullis(&["audit", "verify", "--data-dir", dd])
            .status
            .code(),
        Some(1)
    );
}

/// The SQL a user ran, the server's error about it and the commands typed in a shell are
/// the user's to choose: replay must not pass their control characters to the reviewer's
/// terminal, where ESC sequences could erase or forge earlier lines or retitle the window.
#[test]
fn replay_writes_logged_control_characters_inert() {
    let d = tempfile::tempdir().expect("tempdir");
    let data = d.path();
    let forged = "\u{1b}[1A\u{1b}[2K\u{1b}]0;owned\u{7}\rforged";
    let mut rec = ssh_recording(&data.join("recordings"));
    rec.output(b"$ ").expect("output");
    let (path, sha) = rec.finish().expect("finish");
    let file = path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("name")
        .to_string();
    write_log(
        data,
        vec![
            sess("session.started", "s_pg").with("proto", "postgres"),
            sess("pg.query", "s_pg")
                .with("sql", format!("select 1 /* {forged} */\nfrom t"))
                .with("duration_us", 90)
                .with("error", "42703")
                .with(
                    "error_message",
                    format!("column \"{forged}\" does not exist"),
                ),
            sess("session.ended", "s_pg")
                .with("reason", "killed")
                .with("kill_reason", forged),
            sess("session.started", "s_ssh").with("proto", "ssh"),
            sess("ssh.command", "s_ssh").with("command", format!("echo {forged}")),
            ended_recorded("s_ssh", &file, &sha),
        ],
    );
    let dd = data.to_str().expect("utf-8");
    let timeline = portcullis(&["replay", "s_pg", "--data-dir", dd]);
    assert!(timeline.status.success(), "{}", text(&timeline.stderr));
    let exported = portcullis(&["replay", "s_ssh", "--data-dir", dd, "--export", "text"]);
    assert!(exported.status.success(), "{}", text(&exported.stderr));
    for out in [&timeline.stdout, &exported.stdout] {
        let t = text(out);
        assert!(
            !t.chars().any(|c| c.is_control() && c != '\n'),
            "control characters reach the terminal: {t:?}"
        );
        assert!(
            t.contains("\\u{1b}[1A\\u{1b}[2K\\u{1b}]0;owned\\u{7}\\u{d}forged"),
            "{t}"
        );
    }
    let t = text(&timeline.stdout);
    // A multi-line statement stays readable, indented under its header line.
    assert!(t.contains("forged */\n    from t\n"), "{t}");
    assert!(t.contains("ERROR 42703: column \"\\u{1b}[1A"), "{t}");
    assert!(t.contains("kill_reason: \\u{1b}[1A"), "{t}");
}

/// The readers hold only what they need of the log, never all of it: a log several times
/// larger than their memory limit is still searched, tailed, replayed and reviewed.
#[test]
fn readers_do_not_hold_the_whole_log_in_memory() {
    let d = tempfile::tempdir().expect("tempdir");
    let data = d.path();
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let sql = format!("select '{}'", "x".repeat(900));
    rt.block_on(async {
        let log = AuditLog::open(
            &data.join("audit"),
            &data.join("audit-seal.key"),
            Durability::Batched,
        )
        .expect("open");
        log.append(
            Event::new("grant.created")
                .with("grant", "g_1")
                .with("user", "alice")
                .with("target", "pg-prod"),
        )
        .await
        .expect("append");
        for i in 0..60_000 {
            log.submit(
                sess("pg.query", &format!("s_{}", i / 1000))
                    .with("grant", "g_1")
                    .with("sql", sql.as_str()),
            )
            .await
            .expect("submit");
        }
        log.close().await.expect("close");
    });
    let size: u64 = std::fs::read_dir(data.join("audit"))
        .expect("dir")
        .map(|e| e.expect("entry").metadata().expect("meta").len())
        .sum();
    // Held whole, these ~60 MB of records took several times their size in memory.
    assert!(size > 60 << 20, "{size}");
    let dd = data.to_str().expect("utf-8");
    let bin = env!("CARGO_BIN_EXE_portcullis");
    for args in [
        "report --format json",
        "audit search --user nobody",
        "audit tail -n 2",
        "replay s_7",
    ] {
        // `ulimit -d` (RLIMIT_DATA) bounds the heap: 96 MiB.
        let out = Command::new("sh")
            .args([
                "-c",
                &format!("ulimit -d 98304 && exec \"$0\" {args} --data-dir \"$1\""),
                bin,
                dd,
            ])
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{args}: {:?} {}",
            out.status,
            text(&out.stderr)
        );
    }
}

/// The log names a recording by the absolute path the gateway wrote. A reviewer replaying
/// a copy of the data dir must get the copy's recording, checked against the log: not the
/// original's, which may be gone, or unaltered while the copy under review was altered.
#[test]
fn replay_reads_the_recording_of_the_data_dir_under_review() {
    let original = tempfile::tempdir().expect("tempdir");
    let mut rec = ssh_recording(&original.path().join("recordings"));
    rec.output(b"$ echo copied\r\ncopied\r\n$ ")
        .expect("output");
    let (path, sha) = rec.finish().expect("finish");
    assert!(path.is_absolute());
    write_log(
        original.path(),
        vec![
            sess("session.started", "s_ssh").with("proto", "ssh"),
            ended_recorded("s_ssh", path.to_str().expect("utf-8"), &sha),
        ],
    );
    let copy = tempfile::tempdir().expect("tempdir");
    for sub in ["audit", "recordings"] {
        std::fs::create_dir(copy.path().join(sub)).expect("mkdir");
        for e in std::fs::read_dir(original.path().join(sub)).expect("dir") {
            let e = e.expect("entry");
            std::fs::copy(e.path(), copy.path().join(sub).join(e.file_name())).expect("copy");
        }
    }
    let replay = |data: &Path| {
        portcullis(&[
            "replay",
            "s_ssh",
            "--data-dir",
            data.to_str().expect("utf-8"),
            "--export",
            "text",
        ])
    };
    let cast_in = |data: &Path| {
        data.join("recordings")
            .join(path.file_name().expect("name"))
    };
    let alter = |p: &Path| {
        let t = std::fs::read_to_string(p).expect("read");
        std::fs::write(p, t.replace("copied", "altered")).expect("write");
    };

    // The original altered (or gone) says nothing about the copy under review.
    alter(&cast_in(original.path()));
    let out = replay(copy.path());
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("copied"),
        "{}",
        text(&out.stdout)
    );

    // The copy altered is refused, though the original is intact again.
    alter(&cast_in(copy.path()));
    let intact = std::fs::read_to_string(cast_in(copy.path()))
        .expect("read")
        .replace("altered", "copied");
    std::fs::write(cast_in(original.path()), intact).expect("restore");
    let out = replay(copy.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("altered"),
        "{}",
        text(&out.stderr)
    );
}

/// A pause too long to wait for (a tiny --speed) is a sentence and exit 1, not a panic.
#[test]
fn replay_refuses_a_pause_too_long_to_play() {
    let d = tempfile::tempdir().expect("tempdir");
    let mut rec = ssh_recording(&d.path().join("recordings"));
    // The output must come a measurable time after the start: a pause of 0 is 0 at any speed.
    std::thread::sleep(std::time::Duration::from_millis(2));
    rec.output(b"$ ").expect("output");
    let (path, sha) = rec.finish().expect("finish");
    write_log(
        d.path(),
        vec![
            sess("session.started", "s_ssh").with("proto", "ssh"),
            ended_recorded("s_ssh", path.to_str().expect("utf-8"), &sha),
        ],
    );
    let dd = d.path().to_str().expect("utf-8");
    let out = portcullis(&["replay", "s_ssh", "--data-dir", dd, "--speed", "1e-300"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("too long to play") && err.contains("--idle-limit"),
        "{err}"
    );
}

/// `report --since` reviews who accessed what since then: a session started in the window
/// under a grant made before it is access in the window, and its grant is listed with it.
#[test]
fn report_since_lists_grants_made_before_the_window_that_were_used_in_it() {
    let d = tempfile::tempdir().expect("tempdir");
    let g = |kind: &str, id: &str| Event::new(kind).with("grant", id);
    write_log(
        d.path(),
        vec![
            g("grant.created", "g_old")
                .with("user", "alice")
                .with("target", "pg-prod")
                .with("role", "read")
                .with("reason", "INC-7")
                .with("expires_at", "2999-01-01T00:00:00Z"),
            g("grant.created", "g_idle")
                .with("user", "bob")
                .with("target", "pg-prod")
                .with("expires_at", "2999-01-01T00:00:00Z"),
            sess("session.started", "s_before").with("grant", "g_idle"),
            sess("session.ended", "s_before").with("grant", "g_idle"),
        ],
    );
    // Every record after this instant is in the window; every one before, out of it.
    let since = portcullis_recorder::record::format_ts(chrono::Utc::now());
    write_log(
        d.path(),
        vec![
            g("grant.extended", "g_old").with("expires_at", "2999-06-01T00:00:00Z"),
            sess("session.started", "s_in").with("grant", "g_old"),
            sess("pg.query", "s_in")
                .with("grant", "g_old")
                .with("sql", "select 1"),
            sess("session.ended", "s_in")
                .with("grant", "g_old")
                .with("reason", "client_closed"),
        ],
    );
    let out = portcullis(&[
        "report",
        "--since",
        &since,
        "--format",
        "json",
        "--data-dir",
        d.path().to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let grants = r["grants"].as_array().expect("grants");
    assert_eq!(grants.len(), 1, "{r:#}");
    let old = &grants[0];
    assert_eq!(
        (
            old["id"].as_str(),
            old["user"].as_str(),
            old["reason"].as_str(),
            old["expires_at"].as_str(),
            old["sessions"].as_u64(),
            old["queries"].as_u64()
        ),
        (
            Some("g_old"),
            Some("alice"),
            Some("INC-7"),
            Some("2999-06-01T00:00:00Z"),
            Some(1),
            Some(1)
        ),
        "{r:#}"
    );
    // g_idle was made and used before the window: nothing of it is in the review.
    assert!(!text(&out.stdout).contains("g_idle"), "{r:#}");
}

/// A terminal recording is evidence its `session.ended` record vouches for (by sha256):
/// `audit verify` checks each one, so altering or deleting one after the session ended
/// fails verification, naming the file and the record.
#[test]
fn verify_checks_every_recording_the_log_names() {
    let d = tempfile::tempdir().expect("tempdir");
    let data = d.path();
    let mut rec = ssh_recording(&data.join("recordings"));
    rec.output(b"$ echo evidence\r\nevidence\r\n")
        .expect("output");
    let (path, sha) = rec.finish().expect("finish");
    write_log(
        data,
        vec![
            sess("session.started", "s_ssh").with("proto", "ssh"),
            ended_recorded("s_ssh", path.to_str().expect("utf-8"), &sha),
        ],
    );
    let dd = data.to_str().expect("utf-8");
    let out = portcullis(&["audit", "verify", "--data-dir", dd]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("recordings: 1,"),
        "{}",
        text(&out.stdout)
    );
    let out = portcullis(&["audit", "verify", "--data-dir", dd, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["ok"].as_bool(), v["recordings"].as_u64()),
        (Some(true), Some(1))
    );

    let original = std::fs::read(&path).expect("read");
    let mut altered = original.clone();
    let at = altered
        .windows(8)
        .position(|w| w == b"evidence")
        .expect("output in recording");
    altered[at] = b'E';
    std::fs::write(&path, &altered).expect("tamper");
    let out = portcullis(&["audit", "verify", "--data-dir", dd]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("does not match the sha256") && err.contains("at seq 2"),
        "{err}"
    );
    let out = portcullis(&["audit", "verify", "--data-dir", dd, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        (v["ok"].as_bool(), v["seq"].as_u64()),
        (Some(false), Some(2))
    );

    std::fs::remove_file(&path).expect("delete");
    let out = portcullis(&["audit", "verify", "--data-dir", dd]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("cannot read recording"), "{err}");
}
