//! Shared set-up for the SSH proxy tests: a real sshd, a real `portcullis serve` in front of
//! it with user alice, and helpers to run real OpenSSH clients through the gateway.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use portcullis_gateway::testbed::{self, GatewayProc, Sshd, client_options};
use serde_json::Value;
use tempfile::TempDir;

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

pub struct Env {
    pub sshd: Sshd,
    pub gw: GatewayProc,
    pub dir: TempDir,
    /// alice's key, configured in the gateway.
    pub key: PathBuf,
    /// A key nobody configured.
    pub stranger_key: PathBuf,
}

impl Env {
    /// sshd + gateway; targets: `web-1` (roles `deploy`: everything, `ro`: sftp only,
    /// `exec-only`, `scp-only`), `web-badkey` (wrong pinned host key), `web-down` (nothing listening).
    pub fn start() -> Env {
        Env::with(Sshd::start().expect("sshd starts"))
    }

    /// Like `start`, with a non-root upstream login even when the tests run as root.
    pub fn start_unprivileged() -> Env {
        Env::with(Sshd::start_unprivileged().expect("sshd starts"))
    }

    /// Like `start`, against an sshd that refuses to start the sftp subsystem.
    pub fn start_without_sftp() -> Env {
        Env::with(Sshd::start_without_sftp().expect("sshd starts"))
    }

    /// Like `start`, against an sshd that opens at most `n` session channels per connection.
    pub fn start_with_max_sessions(n: u32) -> Env {
        Env::with(Sshd::start_with_max_sessions(n).expect("sshd starts"))
    }

    fn with(sshd: Sshd) -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let (key, alice_pub) = testbed::ssh_keygen(dir.path(), "alice").expect("keygen");
        let (stranger_key, _) = testbed::ssh_keygen(dir.path(), "stranger").expect("keygen");
        let (_, wrong_host) = testbed::ssh_keygen(dir.path(), "wrong_host").expect("keygen");
        let dead_port = testbed::free_port().expect("free port");
        let role = |name: &str, allow: &str| {
            format!(
                "  [targets.roles.{name}]\n  user = \"{}\"\n  private_key_file = \"{}\"\n  allow = [{allow}]\n",
                sshd.user,
                sshd.client_key_path.display()
            )
        };
        let all = r#""shell", "exec", "sftp", "scp", "port-forward", "agent-forward""#;
        let body = format!(
            "[policy]\nmax_grant = \"8h\"\nwarn_before = \"1s\"\napprovers = [\"bob\"]\n\n\
             [[users]]\nname = \"alice\"\nssh_keys = [\"{alice_pub}\"]\n\n\
             [[users]]\nname = \"bob\"\nssh_keys = []\n\n\
             [[targets]]\nname = \"web-1\"\nkind = \"ssh\"\naddress = \"127.0.0.1:{port}\"\n\
             host_key = \"{host}\"\n{deploy}{ro}{exec_only}{scp_only}\n\
             [[targets]]\nname = \"web-badkey\"\nkind = \"ssh\"\naddress = \"127.0.0.1:{port}\"\n\
             host_key = \"{wrong_host}\"\n{deploy}\n\
             [[targets]]\nname = \"web-down\"\nkind = \"ssh\"\naddress = \"127.0.0.1:{dead_port}\"\n\
             host_key = \"{host}\"\n{deploy}\n",
            port = sshd.port,
            host = sshd.host_key_line,
            deploy = role("deploy", all),
            ro = role("ro", r#""sftp""#),
            exec_only = role("exec-only", r#""exec""#),
            scp_only = role("scp-only", r#""scp""#),
        );
        let gw = GatewayProc::start(BIN, &body).expect("gateway starts");
        Env {
            sshd,
            gw,
            dir,
            key,
            stranger_key,
        }
    }

    /// `grant add` through the real CLI; returns the grant id.
    pub fn grant(&self, target: &str, role: &str, dur: &str) -> String {
        let out = self
            .gw
            .cli()
            .args([
                "grant", "add", "--json", "--user", "alice", "--target", target,
            ])
            .args(["--role", role, "--for", dur, "--reason", "ssh test"])
            .output()
            .expect("cli runs");
        assert!(out.status.success(), "grant add: {}", text(&out.stderr));
        let v: Value = serde_json::from_slice(&out.stdout).expect("grant json");
        v["id"].as_str().expect("grant id").to_string()
    }

    pub fn cli(&self, args: &[&str]) -> Output {
        self.gw.cli().args(args).output().expect("cli runs")
    }

    pub fn port(&self) -> String {
        self.gw.bound.ssh.port().to_string()
    }

    /// `ssh` to the gateway as `login` with alice's key.
    pub fn ssh(&self, login: &str) -> Command {
        self.ssh_with(login, &self.key)
    }

    /// Starts a ControlMaster connection as alice+web-1 (`ssh -N`) at `control`, and waits
    /// until it takes clients.
    pub fn control_master(&self, control: &Path) -> std::process::Child {
        let master = self
            .ssh("alice+web-1")
            .args(["-o", "ControlMaster=yes", "-o"])
            .arg(format!("ControlPath={}", control.display()))
            .arg("-N")
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("ssh master");
        wait_for(Duration::from_secs(20), || control.exists().then_some(())).expect("master up");
        master
    }

    /// `ssh` as alice+web-1 over the ControlMaster connection at `control` (it rides the
    /// master's connection; it never opens one of its own).
    pub fn mux(&self, control: &Path) -> Command {
        let mut cmd = self.ssh("alice+web-1");
        cmd.args(["-o", "ControlMaster=no", "-o"])
            .arg(format!("ControlPath={}", control.display()));
        cmd
    }

    pub fn ssh_with(&self, login: &str, key: &Path) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(client_options())
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(key)
            .args(["-p", &self.port()])
            .arg(format!("{login}@127.0.0.1"));
        cmd
    }

    pub fn scp(&self) -> Command {
        let mut cmd = Command::new("scp");
        cmd.args(client_options())
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(&self.key)
            .args(["-P", &self.port()]);
        cmd
    }

    pub fn sftp(&self, batch: &Path, login: &str) -> Command {
        let mut cmd = Command::new("sftp");
        cmd.args(client_options())
            .args(["-o", "IdentitiesOnly=yes", "-i"])
            .arg(&self.key)
            .args(["-P", &self.port(), "-b"])
            .arg(batch)
            .arg(format!("{login}@127.0.0.1"));
        cmd
    }

    /// The `ssh -i KEY -p PORT ...` string for tools that take an ssh command (rsync, tmux).
    pub fn ssh_line(&self) -> String {
        format!(
            "ssh {} -o IdentitiesOnly=yes -i {} -p {}",
            client_options().join(" "),
            self.key.display(),
            self.port()
        )
    }

    /// Every audit event so far.
    pub fn events(&self) -> Vec<serde_json::Map<String, Value>> {
        portcullis_recorder::records(&self.gw.data_dir.join("audit"))
            .map(|it| it.filter_map(|r| r.ok()).map(|r| r.event).collect())
            .unwrap_or_default()
    }

    /// Waits (up to 20 s) for an audit event of `kind` matching `pred`; panics with the log.
    pub fn wait_event(
        &self,
        kind: &str,
        pred: impl Fn(&serde_json::Map<String, Value>) -> bool,
    ) -> serde_json::Map<String, Value> {
        let found = wait_for(Duration::from_secs(20), || {
            self.events()
                .into_iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some(kind) && pred(e))
        });
        found.unwrap_or_else(|| {
            panic!(
                "no {kind} event matched; events: {:#?}\ngateway log: {}",
                self.events(),
                self.gw.log()
            )
        })
    }
}

/// Polls `f` until it yields something or `limit` passes. For conditions that have no event
/// to await (a file appearing, a remote process going away).
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Is a process whose command line starts with `prefix` running?
pub fn running(prefix: &str) -> bool {
    Command::new("pgrep")
        .args(["-f", &format!("^{}", prefix.replace('.', "\\."))])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

pub fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

pub fn event_str<'a>(e: &'a serde_json::Map<String, Value>, k: &str) -> &'a str {
    e.get(k).and_then(Value::as_str).unwrap_or("")
}
