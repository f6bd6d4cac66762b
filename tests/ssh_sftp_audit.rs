//! Every change an OpenSSH `sftp` client makes through the gateway is in the audit log:
//! links, renames, server-side copies, attribute changes, files created empty, and the
//! operations of an sftp-server the client starts by exec rather than as the subsystem.

mod ssh_env;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use portcullis_gateway::testbed::client_options;
use serde_json::{Map, Value};
use ssh_env::{Env, event_str, text};

type Ev = Map<String, Value>;

/// `sftp -b batch` as `login`, with `extra` options before the destination.
fn sftp_command(env: &Env, batch: &str, login: &str, extra: &[&str]) -> Command {
    let file = env.dir.path().join("batch");
    std::fs::write(&file, batch).expect("batch");
    let mut cmd = Command::new("sftp");
    cmd.args(client_options())
        .args(["-o", "IdentitiesOnly=yes", "-i"])
        .arg(&env.key)
        .args(["-P", &env.port()])
        .args(extra)
        .arg("-b")
        .arg(&file)
        .arg(format!("{login}@127.0.0.1"));
    cmd
}

/// Runs `batch` with `sftp -b` as `login`; `-s` starts `server` instead of the subsystem.
fn sftp(env: &Env, batch: &str, login: &str, server: Option<&str>) -> std::process::Output {
    let extra: &[&str] = match &server {
        None => &[],
        Some(server) => &["-s", server],
    };
    let out = sftp_command(env, batch, login, extra)
        .output()
        .expect("sftp runs");
    assert!(
        out.status.success(),
        "sftp: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// The `ssh.sftp` event of `op` on `path`; waits for it (the log is written after the reply).
fn op(env: &Env, op: &str, path: &Path) -> Ev {
    let path = path.display().to_string();
    env.wait_event("ssh.sftp", |e| {
        event_str(e, "op") == op && event_str(e, "path") == path
    })
}

/// The `ssh.sftp` events of `op` on `path`, in log order, once `n` of them are there.
fn ops(env: &Env, op: &str, path: &Path, n: usize) -> Vec<Ev> {
    let path = path.display().to_string();
    let found = ssh_env::wait_for(std::time::Duration::from_secs(20), || {
        let all: Vec<Ev> = env
            .events()
            .into_iter()
            .filter(|e| {
                event_str(e, "type") == "ssh.sftp"
                    && event_str(e, "op") == op
                    && event_str(e, "path") == path
            })
            .collect();
        (all.len() >= n).then_some(all)
    });
    found.unwrap_or_else(|| panic!("fewer than {n} {op} of {path}: {:#?}", env.events()))
}

#[test]
fn links_renames_copies_and_chmod_are_logged() {
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let remote = tempfile::tempdir().expect("remote dir");
    let r = remote.path();
    let local = env.dir.path().join("hello.txt");
    std::fs::write(&local, "hello\n").expect("local file");
    let batch = format!(
        "put {local} {r}/a\n\
         symlink {r}/a {r}/sym\n\
         ln -s a {r}/rel\n\
         ln {r}/a {r}/hard\n\
         rename {r}/hard {r}/hard2\n\
         cp {r}/a {r}/copy\n\
         chmod 640 {r}/a\n",
        local = local.display(),
        r = r.display(),
    );
    sftp(&env, &batch, "alice+web-1", None);

    // The links exist as the events say: `path` the link made, `link_target` what it
    // points to (OpenSSH sends the target first, the reverse of the draft).
    assert_eq!(std::fs::read_link(r.join("sym")).expect("sym"), r.join("a"));
    let ev = op(&env, "symlink", &r.join("sym"));
    assert_eq!(
        event_str(&ev, "link_target"),
        r.join("a").display().to_string()
    );
    assert_eq!(event_str(&ev, "target"), "web-1", "the SSH target is kept");
    assert_eq!(
        std::fs::read_link(r.join("rel")).expect("rel"),
        Path::new("a")
    );
    let ev = op(&env, "symlink", &r.join("rel"));
    assert_eq!(event_str(&ev, "link_target"), "a");
    let ev = op(&env, "hardlink", &r.join("hard"));
    assert_eq!(
        event_str(&ev, "link_target"),
        r.join("a").display().to_string()
    );

    // `rename` goes as posix-rename@openssh.com.
    let ev = op(&env, "rename", &r.join("hard"));
    assert_eq!(event_str(&ev, "to"), r.join("hard2").display().to_string());

    // `cp` is a server-side copy (copy-data): the copy names both files and its length,
    // and both handles close with the bytes that went through them.
    assert_eq!(std::fs::read(r.join("copy")).expect("copy"), b"hello\n");
    let ev = op(&env, "copy", &r.join("a"));
    assert_eq!(event_str(&ev, "to"), r.join("copy").display().to_string());
    assert_eq!(ev["bytes"], 6, "{ev:?}");
    assert_eq!(ev["length"], 0, "OpenSSH asks for everything: {ev:?}");
    let closes = ops(&env, "close", &r.join("a"), 2);
    assert!(
        closes.iter().any(|e| e["bytes_read"] == 6),
        "the copy's source closes having read 6 bytes: {closes:#?}"
    );
    let ev = op(&env, "close", &r.join("copy"));
    assert_eq!((&ev["bytes_written"], &ev["bytes"]), (&6.into(), &6.into()));

    // chmod says what it set.
    let ev = op(&env, "setstat", &r.join("a"));
    assert_eq!(event_str(&ev, "mode"), "0640", "{ev:?}");
}

/// An empty file put or got leaves an open and a close with zero bytes: the reviewer sees a
/// file created (or emptied) and one read, not an open that never ended.
#[test]
fn empty_files_put_and_got_close_with_zero_bytes() {
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let remote = tempfile::tempdir().expect("remote dir");
    let r = remote.path();
    let empty = env.dir.path().join("empty");
    std::fs::write(&empty, "").expect("empty");
    let got = env.dir.path().join("got");
    let batch = format!(
        "put {} {r}/e\nget {r}/e {}\n",
        empty.display(),
        got.display(),
        r = r.display()
    );
    sftp(&env, &batch, "alice+web-1", None);
    assert_eq!(std::fs::read(&got).expect("got").len(), 0);

    let opens = ops(&env, "open", &r.join("e"), 2);
    let closes = ops(&env, "close", &r.join("e"), 2);
    // The put's open creates and truncates (write 2 | creat 8 | trunc 16).
    assert_eq!(opens[0]["pflags"].as_u64().map(|f| f & 0x1a), Some(0x1a));
    assert_eq!(opens[1]["pflags"], 1, "the get reads");
    for close in &closes {
        assert_eq!(close["bytes"], 0, "{close:?}");
        assert_eq!(
            (&close["bytes_read"], &close["bytes_written"]),
            (&0.into(), &0.into())
        );
    }
}

/// `sftp -s /usr/lib/openssh/sftp-server` runs the server as an exec, which a role allowing
/// only `exec` permits; its operations are logged as the subsystem's are.
#[test]
fn sftp_server_run_by_exec_is_audited_as_sftp() {
    const SERVER: &str = "/usr/lib/openssh/sftp-server";
    assert!(Path::new(SERVER).exists(), "Debian's openssh-sftp-server");
    let env = Env::start();
    env.grant("web-1", "exec-only", "1h");
    let remote = tempfile::tempdir().expect("remote dir");
    let r = remote.path();
    let local = env.dir.path().join("x.txt");
    std::fs::write(&local, "abc").expect("local");
    let batch = format!(
        "mkdir {r}/d\nput {} {r}/d/x\nrm {r}/d/x\nrmdir {r}/d\n",
        local.display(),
        r = r.display()
    );
    sftp(&env, &batch, "alice+web-1+exec-only", Some(SERVER));
    assert!(!r.join("d").exists());

    let ev = op(&env, "mkdir", &r.join("d"));
    assert_eq!(event_str(&ev, "role"), "exec-only");
    let ev = op(&env, "close", &r.join("d/x"));
    assert_eq!(ev["bytes_written"], 3);
    op(&env, "remove", &r.join("d/x"));
    op(&env, "rmdir", &r.join("d"));
    env.wait_event("ssh.exec", |e| event_str(e, "command") == SERVER);
}

/// A put cut short by a revoke still says what it moved: the file the client never got to
/// close is closed in the log as interrupted, with the bytes written until then.
#[test]
fn a_transfer_cut_short_closes_its_file_as_interrupted() {
    let env = Env::start();
    let g = env.grant("web-1", "deploy", "1h");
    let remote = tempfile::tempdir().expect("remote dir");
    let r = remote.path();
    let local = env.dir.path().join("big");
    std::fs::write(&local, vec![7u8; 32 << 20]).expect("local");
    let batch = format!("put {} {}/big\n", local.display(), r.display());
    // At 8 Mbit/s the 32 MiB take half a minute: the revoke lands mid-transfer.
    let mut put = sftp_command(&env, &batch, "alice+web-1", &["-l", "8000"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("sftp runs");
    let target = r.join("big");
    let started = ssh_env::wait_for(std::time::Duration::from_secs(20), || {
        let len = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
        (len > 0).then_some(())
    });
    assert!(
        started.is_some(),
        "the put never started: {:#?}",
        env.events()
    );
    let out = env.cli(&["grant", "revoke", &g, "--reason", "test"]);
    assert!(out.status.success(), "revoke: {}", text(&out.stderr));
    let status = put.wait().expect("sftp ends");
    assert!(!status.success(), "the put was cut short");

    let ev = op(&env, "close", &target);
    assert_eq!(ev["interrupted"], true, "{ev:?}");
    let written = ev["bytes_written"].as_u64().expect("bytes_written");
    assert!(written > 0 && written < 32 << 20, "{ev:?}");
    // Every byte the target holds went through the gateway and was counted.
    let held = std::fs::metadata(&target).expect("the partial file").len();
    assert!(held <= written, "{held} held: {ev:?}");
    let sub = env.wait_event("ssh.subsystem", |e| event_str(e, "name") == "sftp");
    assert_eq!(sub["decoded"], true, "{sub:?}");
}

/// QA's finding, end to end: a client that sends a request under an id still awaiting its
/// reply cannot hide the first from the log. OpenSSH's sftp-server carries out both, so the
/// remove below deletes the file although a stat follows under its id before the reply;
/// the remove is logged, its outcome unknown. Raw packets on the subsystem, as a client that
/// is not OpenSSH's `sftp` would send them.
#[test]
fn a_request_id_sent_again_before_its_reply_hides_nothing() {
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let remote = tempfile::tempdir().expect("remote dir");
    let victim = remote.path().join("x");
    std::fs::write(&victim, "x").expect("victim");
    let packet = |kind: u8, id: Option<u32>, text: &[u8]| {
        let mut body = vec![kind];
        match id {
            Some(id) => body.extend_from_slice(&id.to_be_bytes()),
            // SSH_FXP_INIT carries the version where others carry an id.
            None => body.extend_from_slice(&3u32.to_be_bytes()),
        }
        if !text.is_empty() {
            body.extend_from_slice(&u32::try_from(text.len()).expect("short").to_be_bytes());
            body.extend_from_slice(text);
        }
        let mut p = u32::try_from(body.len())
            .expect("short")
            .to_be_bytes()
            .to_vec();
        p.extend(body);
        p
    };
    let path = victim.display().to_string();
    let stream = [
        packet(1, None, b""),
        packet(13, Some(7), path.as_bytes()), // SSH_FXP_REMOVE
        packet(17, Some(7), b"/"),            // SSH_FXP_STAT, same id
    ]
    .concat();
    // sftp-server stops at end of input even with requests unread, so the input stays open
    // until the three replies (version, the remove's status, the stat's attributes) are in.
    let mut ssh = env
        .ssh("alice+web-1")
        .args(["-s", "sftp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh runs");
    let mut input = ssh.stdin.take().expect("stdin");
    input.write_all(&stream).expect("requests sent");
    let mut output = ssh.stdout.take().expect("stdout");
    for _ in 0..3 {
        let mut len = [0u8; 4];
        output.read_exact(&mut len).expect("a reply");
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        output.read_exact(&mut body).expect("a reply");
    }
    drop(input);
    let out = ssh.wait_with_output().expect("ssh ends");
    assert!(out.status.success(), "ssh: {}", text(&out.stderr));
    assert!(!victim.exists(), "sftp-server carried out the remove");

    let ev = op(&env, "remove", &victim);
    assert_eq!(event_str(&ev, "outcome_unknown"), "id_reused", "{ev:?}");
    assert!(!ev.contains_key("error"), "{ev:?}");
    let sub = env.wait_event("ssh.subsystem", |e| event_str(e, "name") == "sftp");
    assert_eq!(sub["decoded"], true, "{sub:?}");
}
