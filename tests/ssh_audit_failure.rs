//! A failed audit log under running SSH sessions, batched durability (the default): records
//! follow the bytes that caused them, so the typed command whose record could not be
//! written has run; from then on nothing more a client sends reaches the target. Each
//! session (a terminal shell, an exec reading stdin, an sftp session, a port forward, an
//! idle shell) closes through the kill path as soon as the log has failed (the gateway
//! watches it; a relay also checks it before forwarding each input), and the client reads
//! why on stderr.
//!
//! The gateway runs in-process (its real SSH listener, grants and audit log, in front of a
//! real sshd, driven by the real `ssh` and `sftp`), so the log can be opened with a 1-byte
//! segment limit: every append then creates a segment, and removing the audit directory
//! makes the next append fail for real.
#![allow(clippy::unwrap_used)]

mod ssh_env;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_gateway::context::Shared;
use portcullis_gateway::grants::{Actor, NewGrant};
use portcullis_gateway::keys;
use portcullis_gateway::testbed::{self, Sshd, client_options};
use portcullis_recorder::{Durability, Event, Options};
use ssh_env::wait_for;

/// The in-process gateway: its runtime, shared state and SSH port.
struct Gw {
    rt: tokio::runtime::Runtime,
    gw: Shared,
    port: u16,
    data_dir: PathBuf,
    key: PathBuf,
    _dir: tempfile::TempDir,
}

impl Gw {
    /// alice with a key, target `web-1` (the sshd) with role `deploy` (shell, exec, sftp,
    /// port-forward), the given durability, every append in a segment of its own.
    fn start(sshd: &Sshd, durability: Durability) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        let (key, alice_pub) = testbed::ssh_keygen(dir.path(), "alice").unwrap();
        let text = format!(
            "[gateway]\ndata_dir = \"{data}\"\n\n\
             [listen]\nssh = \"127.0.0.1:0\"\npostgres = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n\
             [policy]\nmax_grant = \"8h\"\n\n\
             [[users]]\nname = \"alice\"\nssh_keys = [\"{alice_pub}\"]\n\n\
             [[targets]]\nname = \"web-1\"\nkind = \"ssh\"\naddress = \"127.0.0.1:{port}\"\n\
             host_key = \"{host}\"\n\
             [targets.roles.deploy]\nuser = \"{user}\"\nprivate_key_file = \"{upkey}\"\n\
             allow = [\"shell\", \"exec\", \"sftp\", \"port-forward\"]\n",
            data = data_dir.display(),
            port = sshd.port,
            host = sshd.host_key_line,
            user = sshd.user,
            upkey = sshd.client_key_path.display(),
        );
        let config = Arc::new(portcullis_config::load_str(&text, dir.path()).unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (gw, port) = rt.block_on(async {
            let mut opts = Options::new(durability);
            opts.segment_max_bytes = 1;
            let gw = testbed::in_process_gateway(config, opts).unwrap();
            let host_key = keys::host_key(&data_dir).unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            tokio::spawn(portcullis_gateway::ssh::listen(
                listener,
                gw.clone(),
                host_key,
            ));
            gw.grants
                .add_grant(
                    NewGrant {
                        user: "alice".into(),
                        target: "web-1".into(),
                        role: Some("deploy".into()),
                        duration: Duration::from_secs(3600),
                        reason: Some("test".into()),
                    },
                    &Actor::Admin,
                )
                .await
                .unwrap();
            (gw, port)
        });
        Gw {
            rt,
            gw,
            port,
            data_dir,
            key,
            _dir: dir,
        }
    }

    /// `program` (ssh or sftp) with alice's key, reaching the gateway; stdio piped.
    fn client(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(client_options())
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(&self.key)
            .args([
                if program == "ssh" { "-p" } else { "-P" },
                &self.port.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    /// Waits (bounded) until the log holds an event of `kind` whose `field` contains `part`.
    fn logged(&self, kind: &str, field: &str, part: &str) {
        let found = wait_for(Duration::from_secs(20), || {
            portcullis_recorder::records(&self.data_dir.join("audit"))
                .ok()?
                .filter_map(Result::ok)
                .any(|r| {
                    r.event.get("type").and_then(|v| v.as_str()) == Some(kind)
                        && r.event
                            .get(field)
                            .and_then(|v| v.as_str())
                            .is_some_and(|v| v.contains(part))
                })
                .then_some(())
        });
        if found.is_none() {
            let all: Vec<_> = portcullis_recorder::records(&self.data_dir.join("audit"))
                .unwrap()
                .filter_map(Result::ok)
                .map(|r| r.event)
                .collect();
            panic!("no {kind} with {field} ~ {part} in the log: {all:#?}");
        }
    }

    /// Makes the log unwritable under the live sessions: once what they queued is written,
    /// the directory goes, so the next append fails (see the module doc).
    fn break_audit_log(&self) {
        self.rt
            .block_on(self.gw.audit.append(Event::new("test.marker")))
            .unwrap();
        // The writer may still be rotating a segment while the directory goes: retry until
        // it is gone.
        loop {
            match std::fs::remove_dir_all(self.data_dir.join("audit")) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => continue,
                Err(e) => panic!("removing the audit dir: {e}"),
            }
        }
    }
}

/// A running client and its stdin.
struct Client {
    child: Child,
    stdin: ChildStdin,
    /// Everything the client printed on stdout so far.
    out: Arc<Mutex<Vec<u8>>>,
    what: &'static str,
}

impl Client {
    fn spawn(mut cmd: Command, what: &'static str) -> Client {
        let mut child = cmd.spawn().unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let all = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stdout.read(&mut buf) {
                all.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Client {
            child,
            stdin,
            out,
            what,
        }
    }

    /// How much the client has printed so far.
    fn printed(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    /// Waits (bounded) until a shell prompt (`# ` or `$ `) ends what was printed after
    /// `from`: the shell waits for a line and everything before it has gone through the
    /// gateway, so the next Enter is the only one the terminal tap has to read.
    fn prompt(&self, from: usize) {
        let at_prompt = wait_for(Duration::from_secs(20), || {
            let out = self.out.lock().unwrap();
            let new = out.get(from..).unwrap_or_default();
            (new.ends_with(b"# ") || new.ends_with(b"$ ")).then_some(())
        });
        assert!(
            at_prompt.is_some(),
            "{}: no prompt: {}",
            self.what,
            String::from_utf8_lossy(&self.out.lock().unwrap())
        );
    }

    /// Sends one line to the remote side. A write to a client that is already gone is not
    /// an error here: what matters is what happened upstream.
    fn line(&mut self, line: &str) {
        let _ = self
            .stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| self.stdin.flush());
    }

    /// Waits (bounded) for the client to exit; returns its exit code and what it said.
    fn closed(mut self) -> (Option<i32>, String) {
        let status = wait_for(Duration::from_secs(20), || self.child.try_wait().unwrap());
        let Some(status) = status else {
            let _ = self.child.kill();
            panic!("{}: the client is still running", self.what);
        };
        let mut said = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut said)
            .unwrap();
        (status.code(), said)
    }
}

/// A TCP server keeping every byte it receives, on any connection: a port forward's far end.
fn sink() -> (u16, Arc<Mutex<Vec<u8>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let got = Arc::new(Mutex::new(Vec::new()));
    let all = got.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let all = all.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n @ 1..) = s.read(&mut buf) {
                    all.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            });
        }
    });
    (port, got)
}

fn received(got: &Mutex<Vec<u8>>, what: &str) -> bool {
    String::from_utf8_lossy(&got.lock().unwrap()).contains(what)
}

/// Waits (bounded) for `path` to appear, the side effect of a command run upstream.
fn appears(path: &Path, what: &str) {
    assert!(
        wait_for(Duration::from_secs(20), || path.exists().then_some(())).is_some(),
        "{what}: {} never appeared",
        path.display()
    );
}

#[test]
fn a_failed_log_closes_running_ssh_sessions_before_their_next_input_runs() {
    let sshd = Sshd::start().unwrap();
    let gw = Gw::start(&sshd, Durability::Batched);
    // Where the commands leave their marks; the upstream login runs on this machine.
    let side = tempfile::tempdir().unwrap();
    let mark = |name: &str| side.path().join(name);
    let touch = |name: &str| format!("touch {}", mark(name).display());

    // A shell in a terminal, an exec reading commands on stdin, an sftp session.
    let mut shell = gw.client("ssh");
    shell.args(["-tt", "alice+web-1@127.0.0.1"]);
    let mut shell = Client::spawn(shell, "shell");
    let mut exec = gw.client("ssh");
    exec.args(["alice+web-1@127.0.0.1", "sh"]);
    let mut exec = Client::spawn(exec, "exec");
    let mut sftp = gw.client("sftp");
    sftp.args(["-b", "-", "alice+web-1@127.0.0.1"]);
    let mut sftp = Client::spawn(sftp, "sftp");
    let (far, got) = sink();
    let local = testbed::free_port().unwrap();
    let mut fwd = gw.client("ssh");
    fwd.args(["-N", "-L"])
        .arg(format!("127.0.0.1:{local}:127.0.0.1:{far}"))
        .arg("alice+web-1@127.0.0.1");
    let fwd = Client::spawn(fwd, "forward");
    let mut tunnel = wait_for(Duration::from_secs(20), || {
        TcpStream::connect(("127.0.0.1", local)).ok()
    })
    .expect("the forward listens");
    shell.prompt(0);
    let printed = shell.printed();
    shell.line(&touch("shell-1"));
    exec.line(&touch("exec-1"));
    sftp.line(&format!("mkdir {}", mark("sftp-1").display()));
    appears(&mark("shell-1"), "shell");
    shell.prompt(printed);
    appears(&mark("exec-1"), "exec");
    appears(&mark("sftp-1"), "sftp");
    tunnel.write_all(b"fwd-1\n").unwrap();
    let through = wait_for(Duration::from_secs(20), || {
        received(&got, "fwd-1").then_some(())
    });
    assert!(through.is_some(), "nothing came through the forward");
    // What the sessions derived so far is written: the next record to fail is the one below.
    gw.logged("ssh.command", "command", "shell-1");
    gw.logged("ssh.sftp", "path", "sftp-1");
    assert!(gw.gw.audit.healthy());

    gw.break_audit_log();
    // Batched: the typed command goes upstream first, and its record (an ssh.command
    // derived from the echo) is written after it, which fails. Every session closes from
    // then on, so the prompt after it may or may not reach the client.
    shell.line(&touch("shell-2"));
    appears(&mark("shell-2"), "shell, relayed before its record failed");
    // The failure is the writer's, on its own thread: a poll bounded by a deadline.
    let failed = wait_for(Duration::from_secs(20), || {
        (!gw.gw.audit.healthy()).then_some(())
    });
    assert!(failed.is_some(), "the log never failed");

    // From now on nothing a client sends runs, whether its session has closed yet or not.
    shell.line(&touch("shell-3"));
    exec.line(&touch("exec-2"));
    sftp.line(&format!("mkdir {}", mark("sftp-2").display()));
    let _ = tunnel.write_all(b"fwd-2\n");
    for client in [shell, exec, sftp, fwd] {
        let what = client.what;
        let (code, said) = client.closed();
        assert!(
            said.contains("portcullis: the audit log is unavailable; session closed"),
            "{what}: {said}"
        );
        assert_ne!(code, Some(0), "{what}: {said}");
    }
    for name in ["shell-3", "exec-2", "sftp-2"] {
        assert!(
            !mark(name).exists(),
            "{name} ran upstream after the log failed"
        );
    }
    assert!(
        !received(&got, "fwd-2"),
        "the forward relayed after the log failed"
    );
    // The gateway has no session left.
    let left = wait_for(Duration::from_secs(20), || {
        gw.gw
            .grants
            .sessions(&Actor::Admin)
            .is_empty()
            .then_some(())
    });
    assert!(left.is_some(), "sessions left open");
}

/// Strict durability: a command derived from a terminal's echo is durable before the echo
/// goes on; when the log refuses it, the session closes instead.
#[test]
fn strict_mode_closes_the_session_when_a_derived_event_is_refused() {
    let sshd = Sshd::start().unwrap();
    let gw = Gw::start(&sshd, Durability::Strict);
    let side = tempfile::tempdir().unwrap();
    let mark = |name: &str| side.path().join(name);
    let mut shell = gw.client("ssh");
    shell.args(["-tt", "alice+web-1@127.0.0.1"]);
    let mut shell = Client::spawn(shell, "shell");
    shell.prompt(0);
    let printed = shell.printed();
    shell.line(&format!("touch {}", mark("strict-1").display()));
    appears(&mark("strict-1"), "shell");
    shell.prompt(printed);
    gw.logged("ssh.command", "command", "strict-1");

    gw.break_audit_log();
    // The keystrokes go on (nothing is recorded for them before the echo), the command's
    // record is refused when its echo comes back, and the session ends there.
    shell.line(&format!("touch {}", mark("strict-2").display()));
    let (code, said) = shell.closed();
    assert!(
        said.contains("portcullis: the audit log is unavailable; session closed"),
        "{said}"
    );
    assert_ne!(code, Some(0), "{said}");
    assert!(!gw.gw.audit.healthy());
}

/// A session that sends nothing does not wait for its next input: the moment the log fails
/// (here on an append of the test's own), every session closes with the reason on stderr.
#[test]
fn a_failed_log_closes_an_idle_session_at_once() {
    let sshd = Sshd::start().unwrap();
    let gw = Gw::start(&sshd, Durability::Batched);
    let mut shell = gw.client("ssh");
    shell.args(["-tt", "alice+web-1@127.0.0.1"]);
    let shell = Client::spawn(shell, "idle shell");
    shell.prompt(0);

    gw.break_audit_log();
    let refused = gw
        .rt
        .block_on(gw.gw.audit.append(Event::new("test.trigger")));
    assert!(refused.is_err(), "the append after the break was taken");
    // The shell sends nothing from here on; only the gateway can end it.
    let (code, said) = shell.closed();
    assert!(
        said.contains("portcullis: the audit log is unavailable; session closed"),
        "{said}"
    );
    assert_ne!(code, Some(0), "{said}");
}
