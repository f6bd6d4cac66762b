//! The kill path over SSH: a grant expiring, revoked, or its session killed while the user
//! runs `sleep 600`: the client is told why on stderr and exits, and the remote process is
//! gone (the upstream connection was closed, so it got SIGHUP).

mod ssh_env;

use std::io::Read;
use std::process::{Child, Stdio};
use std::time::Duration;

use portcullis_gateway::testbed;
use ssh_env::{Env, event_str, running, text, wait_for};

/// A `sleep` argument unique to this run and step (a leftover of an earlier run must not
/// be mistaken for this one's process).
fn marker(step: &str) -> String {
    format!("600.{}{step}", std::process::id())
}

/// The no-terminal step's marker: as root its process outlives the test (see below), so it
/// sleeps only a minute.
fn short_marker(step: &str) -> String {
    format!("60.{}{step}", std::process::id())
}

/// Starts `sleep <marker>` through the gateway and waits until it runs upstream.
fn sleeper(env: &Env, login: &str, marker: &str, tty: bool) -> Child {
    let mut cmd = env.ssh(login);
    if tty {
        cmd.arg("-tt");
    }
    let child = cmd
        .arg(format!("sleep {marker}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh spawns");
    let up = wait_for(Duration::from_secs(20), || {
        running(&format!("sleep {marker}")).then_some(())
    });
    assert!(
        up.is_some(),
        "remote sleep {marker} never started: {}",
        env.gw.log()
    );
    child
}

/// Waits for the client to exit; returns its stderr, then checks the remote sleep is gone
/// when `check_gone`.
fn closed(env: &Env, mut child: Child, marker: &str, check_gone: bool) -> String {
    let exited = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
    assert!(exited.is_some(), "client still running: {}", env.gw.log());
    let mut stderr = String::new();
    let mut out = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("stderr");
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("stdout");
    if !check_gone {
        return stderr + &out;
    }
    let gone = wait_for(Duration::from_secs(20), || {
        (!running(&format!("sleep {marker}"))).then_some(())
    });
    assert!(
        gone.is_some(),
        "remote sleep {marker} survived the kill; sshd log: {}",
        env.sshd.log()
    );
    stderr + &out
}

#[test]
fn expiry_revoke_and_kill_close_the_session_and_the_remote_process() {
    let env = Env::start();

    // Expiry: a short grant, and the warning comes first on the terminal.
    let g = env.grant("web-1", "deploy", "4s");
    let child = sleeper(&env, "alice+web-1", &marker("101"), true);
    let said = closed(&env, child, &marker("101"), true);
    assert!(said.contains(&format!("grant {g} expired")), "{said}");
    assert!(said.contains("expires in"), "warning missing: {said}");
    env.wait_event("session.ended", |e| {
        event_str(e, "reason") == "grant_expired"
    });

    // Revoke.
    let g = env.grant("web-1", "deploy", "1h");
    let child = sleeper(&env, "alice+web-1", &marker("202"), true);
    let out = env.cli(&["grant", "revoke", &g, "--reason", "test"]);
    assert!(out.status.success(), "revoke: {}", text(&out.stderr));
    let said = closed(&env, child, &marker("202"), true);
    assert!(said.contains(&format!("grant {g} was revoked")), "{said}");
    env.wait_event("session.ended", |e| {
        event_str(e, "reason") == "grant_revoked"
    });

    // Kill one session by id, this time without a terminal. sshd hangs up a session's
    // processes only through its terminal; for the others the gateway sends a `signal`
    // request first, which sshd honours only for non-root logins (a root login has no
    // privilege-separated child to signal from), so the process check needs a non-root run.
    env.grant("web-1", "deploy", "1h");
    let child = sleeper(&env, "alice+web-1", &short_marker("303"), false);
    let list = env.cli(&["sessions", "list", "--json"]);
    assert!(
        list.status.success(),
        "sessions list: {}",
        text(&list.stderr)
    );
    let sessions: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    let id = sessions
        .as_array()
        .and_then(|a| a.iter().find(|s| s["proto"] == "ssh"))
        .and_then(|s| s["id"].as_str())
        .unwrap_or_else(|| panic!("no ssh session listed: {sessions}"))
        .to_string();
    let out = env.cli(&["sessions", "kill", &id]);
    assert!(out.status.success(), "kill: {}", text(&out.stderr));
    let said = closed(&env, child, &short_marker("303"), !testbed::is_root());
    assert!(said.contains("session killed"), "{said}");
    env.wait_event("session.ended", |e| {
        event_str(e, "reason") == "killed" && event_str(e, "session") == id
    });
}
