//! `portcullis demo` as a newcomer uses it: start it, paste each printed line into a shell,
//! and each works as printed; Ctrl-C, or closing its terminal, stops and removes everything.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

/// Runs one pasted line in a shell (stdin given), returns (success, stdout, stderr).
fn paste(line: &str, stdin: &str) -> (bool, String, String) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(line)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sh runs");
    {
        use std::io::Write;
        let mut input = child.stdin.take().expect("stdin");
        let _ = input.write_all(stdin.as_bytes());
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running demo: its process, the lines it printed up to "Ctrl-C here stops", and its
/// stderr, collected until it exits.
struct Demo {
    child: std::process::Child,
    pid: Pid,
    lines: Vec<String>,
    err_log: std::thread::JoinHandle<String>,
}

impl Demo {
    fn start() -> Demo {
        let mut child = Command::new(BIN)
            .arg("demo")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("demo starts");
        let pid = Pid::from_raw(child.id() as i32);
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err_log = std::thread::spawn(move || {
            let mut s = String::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                s.push_str(&line);
                s.push('\n');
            }
            s
        });
        let mut lines = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_secs(180)) {
                Ok(l) => {
                    let done = l.contains("Ctrl-C here stops");
                    lines.push(l);
                    if done {
                        break;
                    }
                }
                Err(e) => {
                    let _ = kill(pid, Signal::SIGINT);
                    panic!("demo printed no instructions ({e}); stdout so far: {lines:?}");
                }
            }
        }
        Demo {
            child,
            pid,
            lines,
            err_log,
        }
    }

    /// Sends `signal`; the demo must exit 0 and remove its directory. One that has not
    /// exited within a minute is stopped with Ctrl-C and the test fails.
    fn stop_with(mut self, signal: Signal) {
        kill(self.pid, signal).expect("signal");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("demo status") {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = kill(self.pid, Signal::SIGINT);
                let _ = self.child.wait();
                panic!("demo still running a minute after {signal}");
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.err_log.join().unwrap_or_default();
        assert!(status.success(), "demo exit {status}: {log}");
        let removed = log
            .lines()
            .find_map(|l| l.split("removed ").nth(1))
            .expect("demo says what it removed");
        assert!(
            !std::path::Path::new(removed.trim()).exists(),
            "{removed} still exists"
        );
    }
}

/// Is a process whose command line is exactly `cmdline` running?
fn running(cmdline: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", &format!("^{}$", cmdline.replace('.', "\\."))])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Polls `f` until it holds or `limit` passes (a remote process has no event to await).
fn within(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while !f() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn every_printed_line_works_as_printed() {
    let demo = Demo::start();
    let lines = &demo.lines;
    let commands: Vec<String> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| {
            l.starts_with("PGPASSWORD=")
                || l.starts_with("ssh ")
                || l.starts_with("sftp ")
                || l.starts_with('/')
        })
        .map(str::to_string)
        .collect();
    let find = |needle: &str| -> String {
        commands
            .iter()
            .find(|c| c.contains(needle))
            .unwrap_or_else(|| panic!("no printed line contains {needle:?}: {commands:#?}"))
            .clone()
    };

    let (ok, out, err) = paste(&find("psql"), "");
    assert!(ok, "psql line failed: {err}");
    assert!(out.contains("Ada"), "psql printed {out}");

    let ssh_cmd = commands
        .iter()
        .find(|c| c.starts_with("ssh ") && c.contains("hostname"))
        .expect("an ssh command line")
        .clone();
    let (ok, out, err) = paste(&ssh_cmd, "");
    assert!(ok, "ssh line failed: {err}");
    assert!(!out.trim().is_empty());
    // `id -un`: the role never logs in as root, whose remote processes a revoke cannot stop.
    assert_ne!(out.lines().last(), Some("root"), "ssh printed {out}");

    let (ok, out, err) = paste(&find("sftp "), "pwd\nls\nbye\n");
    assert!(ok, "sftp line failed: {err}");
    assert!(
        out.contains("Remote working directory"),
        "sftp printed {out}"
    );

    for needle in [
        " sessions list",
        " grant list",
        " audit verify",
        " report --since",
    ] {
        let (ok, out, err) = paste(&find(needle), "");
        assert!(ok, "{needle} failed: {err}\n{out}");
    }
    let (ok, out, err) = paste(&find(" audit search --type session.ended"), "");
    assert!(ok, "audit search failed: {err}");
    let session = out
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .find(|w| w.starts_with("s_"))
        .unwrap_or_else(|| panic!("no session id in {out}"))
        .to_string();
    let replay = find(" replay ").replace("<SESSION id from the search above>", &session);
    let (ok, _out, err) = paste(&replay, "");
    assert!(ok, "replay failed: {err}");
    let revokes: Vec<&String> = commands
        .iter()
        .filter(|c| c.contains(" grant revoke "))
        .collect();
    assert_eq!(revokes.len(), 2, "one revoke line per grant: {commands:#?}");
    let (ok, _out, err) = paste(revokes[0], "");
    assert!(ok, "revoke failed: {err}");

    // SPEC §6: revoking the SSH grant hangs up the remote processes, a command run without
    // a terminal included.
    let marker = format!("sleep 900.{}", std::process::id());
    let sleeper = Command::new("sh")
        .arg("-c")
        .arg(ssh_cmd.replace("'hostname; id -un'", &format!("'{marker}'")))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh spawns");
    assert!(
        within(Duration::from_secs(20), || running(&marker)),
        "remote {marker} never started"
    );
    let (ok, _out, err) = paste(revokes[1], "");
    assert!(ok, "revoke failed: {err}");
    let said = sleeper.wait_with_output().expect("ssh exits");
    let said = String::from_utf8_lossy(&said.stderr);
    assert!(said.contains("was revoked"), "ssh said {said}");
    assert!(
        within(Duration::from_secs(5), || !running(&marker)),
        "remote {marker} survived the revoke"
    );

    demo.stop_with(Signal::SIGINT);
}

/// Closing the terminal the demo runs in (SIGHUP) stops it as Ctrl-C does. `serve` reloads
/// its config on SIGHUP; the demo used to do the same, so a closed terminal left the
/// gateway, PostgreSQL and sshd running and the temp dir behind.
#[test]
fn closing_the_demo_terminal_stops_and_removes_everything() {
    Demo::start().stop_with(Signal::SIGHUP);
}
