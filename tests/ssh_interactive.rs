//! An interactive shell through the gateway, driven in a real terminal (tmux): commands run,
//! the window size follows a resize, Ctrl-C interrupts, and the typed commands (typed-ahead
//! ones included) and the recording land in the audit log; the recording is on disk while
//! the session still runs.

mod ssh_env;
mod tmux;

use std::time::Duration;

use ssh_env::{Env, event_str, wait_for};
use tmux::Tmux;

#[test]
fn shell_in_a_real_terminal() {
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let t = Tmux {
        socket: env.dir.path().join("tmux.sock"),
    };
    // The login shell, as a user gets it. Type one command first and wait for its answer,
    // so the shell is surely at its prompt before the checked commands.
    let script = env.dir.path().join("shell.sh");
    std::fs::write(
        &script,
        format!("exec {} -tt alice+web-1@127.0.0.1\n", env.ssh_line()),
    )
    .expect("script");
    t.start(80, 24, &["sh", &script.display().to_string()]);
    t.keys(&["echo ready-$((0+1))", "Enter"]);
    t.wait_screen("ready-1");
    t.keys(&["echo marker-$((40+2))", "Enter"]);
    t.wait_screen("marker-42");
    // The live session's recording already holds it (flushed within a second), so a
    // `replay` now, or a crash of the gateway, finds it: it used to wait in a 64 KiB
    // buffer until the session ended.
    let recordings = env.gw.data_dir.join("recordings");
    let on_disk = wait_for(Duration::from_secs(10), || {
        std::fs::read_dir(&recordings)
            .ok()?
            .flatten()
            .filter_map(|f| std::fs::read_to_string(f.path()).ok())
            .any(|cast| cast.contains("marker-42"))
            .then_some(())
    });
    assert!(on_disk.is_some(), "the live recording lacks the output");

    t.cmd()
        .args(["resize-window", "-t", "t", "-x", "100", "-y", "30"])
        .status()
        .expect("resize");
    t.keys(&["stty size", "Enter"]);
    t.wait_screen("30 100");

    let sleep = format!("sleep 600.{}404", std::process::id());
    t.keys(&[&sleep, "Enter"]);
    // Ctrl-C only once sleep is the terminal's foreground process, not while bash forks.
    let started = wait_for(Duration::from_secs(20), || {
        ssh_env::running(&sleep).then_some(())
    });
    assert!(started.is_some(), "sleep never started:\n{}", t.screen());
    t.keys(&["C-c"]);
    t.keys(&["echo after-$((1+1))", "Enter"]);
    t.wait_screen("after-2");
    let gone = wait_for(Duration::from_secs(20), || {
        (!ssh_env::running(&sleep)).then_some(())
    });
    assert!(gone.is_some(), "Ctrl-C did not interrupt sleep");
    // Typed ahead while a command still runs: each line is its own ssh.command.
    t.keys(&[
        "sleep 0.3; echo slow-done",
        "Enter",
        "echo ahead-$((2+1))",
        "Enter",
        "echo ahead-$((3+1))",
        "Enter",
    ]);
    t.wait_screen("ahead-4");
    t.keys(&["exit", "Enter"]);

    let cmd = env.wait_event("ssh.command", |e| {
        event_str(e, "command") == "echo marker-$((40+2))"
    });
    assert_eq!(cmd["derived"], true);
    env.wait_event("ssh.command", |e| event_str(e, "command") == "stty size");
    for ahead in ["echo ahead-$((2+1))", "echo ahead-$((3+1))"] {
        env.wait_event("ssh.command", |e| event_str(e, "command") == ahead);
    }
    env.wait_event("ssh.shell", |e| event_str(e, "phase") == "started");
    let ended = env.wait_event("session.ended", |e| !event_str(e, "recording").is_empty());
    let file = event_str(&ended, "recording");
    let cast = std::fs::read_to_string(file).expect("recording readable");
    assert!(cast.contains("marker-42"), "recording lacks the output");
    assert!(cast.contains("\"r\""), "recording lacks the resize");
    assert!(cast.contains("\"i\""), "recording lacks the input");
    assert_eq!(
        ssh_env::sha256(std::path::Path::new(file)),
        event_str(&ended, "recording_sha256")
    );
}
