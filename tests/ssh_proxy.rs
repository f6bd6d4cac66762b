//! The SSH proxy with real OpenSSH clients against a real sshd: exec, scp, sftp, rsync,
//! role policy, and the audit records they leave.

mod ssh_env;

use std::process::Command;
use std::time::Duration;

use ssh_env::{Env, event_str, running, sha256, text, wait_for};

#[test]
fn exec_relays_stdout_stderr_and_exit_status() {
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let out = env
        .ssh("alice+web-1")
        .arg("echo hi; echo err >&2; exit 3")
        .output()
        .expect("ssh runs");
    assert_eq!(text(&out.stdout), "hi\n", "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "err\n");
    assert_eq!(out.status.code(), Some(3));

    // The role may be named; stdin reaches the command and EOF ends it.
    let mut child = env
        .ssh("alice+web-1+deploy")
        .arg("wc -c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ssh spawns");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&[b'x'; 100_000]).expect("write");
    }
    let out = child.wait_with_output().expect("ssh ends");
    assert_eq!(text(&out.stdout).trim(), "100000");

    let ev = env.wait_event("ssh.exec", |e| {
        event_str(e, "command") == "echo hi; echo err >&2; exit 3"
    });
    assert_eq!(ev["exit_status"], 3);
    assert_eq!(event_str(&ev, "user"), "alice");
    assert_eq!(event_str(&ev, "target"), "web-1");
    assert_eq!(event_str(&ev, "role"), "deploy");
    assert!(event_str(&ev, "grant").starts_with('g'), "{ev:?}");
    env.wait_event("session.ended", |e| {
        event_str(e, "reason") == "client_closed"
    });
    env.wait_event("auth.succeeded", |e| event_str(e, "user") == "alice");

    // The environment the client sets reaches the target (its AcceptEnv allows
    // PORTCULLIS_*), and the exec's record lists it.
    let out = env
        .ssh("alice+web-1")
        .args([
            "-o",
            "SetEnv=PORTCULLIS_CHECK=42",
            "echo env=$PORTCULLIS_CHECK",
        ])
        .output()
        .expect("ssh runs");
    assert_eq!(text(&out.stdout), "env=42\n", "{}", text(&out.stderr));
    let ev = env.wait_event("ssh.exec", |e| {
        event_str(e, "command") == "echo env=$PORTCULLIS_CHECK"
    });
    assert_eq!(ev["env"]["PORTCULLIS_CHECK"], "42", "{ev:?}");
}

/// An exec's command reaches the target byte for byte, UTF-8 or not (`scp` or `rsync` of a
/// file named in Latin-1), as it does from sshd direct. The log keeps its text, with U+FFFD
/// for the byte that is not UTF-8, and the exact bytes beside it in `command_bytes`.
#[test]
fn an_exec_command_that_is_not_utf8_reaches_the_target_exactly() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;

    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let command: &[u8] = b"printf '%s' '\xff' | od -An -tx1";
    let out = env
        .ssh("alice+web-1")
        .arg(OsStr::from_bytes(command))
        .output()
        .expect("ssh runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ff", "{}", text(&out.stderr));
    let ev = env.wait_event("ssh.exec", |e| {
        event_str(e, "command").starts_with("printf '%s'")
    });
    assert_eq!(
        event_str(&ev, "command"),
        "printf '%s' '\u{fffd}' | od -An -tx1"
    );
    // base64 of the command's bytes.
    assert_eq!(
        event_str(&ev, "command_bytes"),
        "cHJpbnRmICclcycgJ/8nIHwgb2QgLUFuIC10eDE="
    );
    // A UTF-8 command has no `command_bytes`.
    let out = env
        .ssh("alice+web-1")
        .arg("printf '%s' 'é' | od -An -tx1")
        .output()
        .expect("ssh runs");
    assert_eq!(text(&out.stdout).trim(), "c3 a9", "{}", text(&out.stderr));
    let ev = env.wait_event("ssh.exec", |e| {
        event_str(e, "command") == "printf '%s' 'é' | od -An -tx1"
    });
    assert!(!ev.contains_key("command_bytes"), "{ev:?}");
}

/// An environment variable or a TERM whose bytes are not UTF-8 (a Latin-1 locale, say) used
/// to end the whole connection; now the variable is refused, as an sshd that does not accept
/// it refuses it, the TERM is passed on lossily, and the command runs.
#[test]
fn an_env_value_that_is_not_utf8_is_refused_not_fatal() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;

    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let out = env
        .ssh("alice+web-1")
        .env("LC_PORTCULLIS", OsStr::from_bytes(b"a\xffb"))
        .args(["-o", "SendEnv=LC_PORTCULLIS", "echo still-here"])
        .output()
        .expect("ssh runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).trim(),
        "still-here",
        "{}",
        text(&out.stderr)
    );
    let out = env
        .ssh("alice+web-1")
        .env("TERM", OsStr::from_bytes(b"xt\xffrm"))
        .args(["-tt", "echo still-here"])
        .output()
        .expect("ssh runs");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("still-here"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn scp_sftp_and_rsync_move_files_intact() {
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let local = env.dir.path().join("big.bin");
    let status = Command::new("head")
        .args(["-c", "104857600", "/dev/urandom"])
        .stdout(std::fs::File::create(&local).expect("create"))
        .status()
        .expect("head");
    assert!(status.success());
    let remote_dir = tempfile::tempdir().expect("remote dir");
    let remote = remote_dir.path().join("up.bin");
    let want = sha256(&local);

    // scp up and down, over SFTP (OpenSSH 9 default) and over the legacy protocol (-O).
    for (flag, name) in [(None, "sftp-mode"), (Some("-O"), "legacy")] {
        let mut up = env.scp();
        up.args(flag)
            .arg(&local)
            .arg(format!("alice+web-1@127.0.0.1:{}", remote.display()));
        let out = up.output().expect("scp runs");
        assert!(out.status.success(), "{name} upload: {}", text(&out.stderr));
        assert_eq!(sha256(&remote), want, "{name} upload");
        let back = env.dir.path().join(format!("back-{name}.bin"));
        let mut down = env.scp();
        down.args(flag)
            .arg(format!("alice+web-1@127.0.0.1:{}", remote.display()))
            .arg(&back);
        let out = down.output().expect("scp runs");
        assert!(
            out.status.success(),
            "{name} download: {}",
            text(&out.stderr)
        );
        assert_eq!(sha256(&back), want, "{name} download");
        std::fs::remove_file(&remote).expect("rm");
    }
    env.wait_event("ssh.exec", |e| {
        event_str(e, "command").starts_with("scp -t")
    });

    // sftp: put, get, ls, mkdir, rename, rm, rmdir.
    let r = remote_dir.path().display();
    let got = env.dir.path().join("got.bin");
    let batch = env.dir.path().join("batch");
    std::fs::write(
        &batch,
        format!(
            "mkdir {r}/d\nput {} {r}/d/a.bin\nls {r}/d\nrename {r}/d/a.bin {r}/d/b.bin\n\
             get {r}/d/b.bin {}\nrm {r}/d/b.bin\nrmdir {r}/d\n",
            local.display(),
            got.display()
        ),
    )
    .expect("batch");
    let out = env.sftp(&batch, "alice+web-1").output().expect("sftp runs");
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("a.bin"), "{}", text(&out.stdout));
    assert_eq!(sha256(&got), want);
    assert!(!remote_dir.path().join("d").exists());
    for op in ["mkdir", "remove", "rmdir"] {
        env.wait_event("ssh.sftp", |e| event_str(e, "op") == op);
    }
    env.wait_event("ssh.sftp", |e| {
        event_str(e, "op") == "close"
            && event_str(e, "path").ends_with("/d/a.bin")
            && e["bytes_written"] == 104_857_600
    });
    env.wait_event("ssh.sftp", |e| {
        event_str(e, "op") == "close"
            && event_str(e, "path").ends_with("/d/b.bin")
            && e["bytes_read"] == 104_857_600
    });
    env.wait_event("ssh.sftp", |e| {
        event_str(e, "op") == "rename" && event_str(e, "to").ends_with("/d/b.bin")
    });

    // rsync over the gateway.
    let synced = remote_dir.path().join("synced.bin");
    let out = Command::new("rsync")
        .args(["-e", &env.ssh_line()])
        .arg(&local)
        .arg(format!("alice+web-1@127.0.0.1:{}", synced.display()))
        .output()
        .expect("rsync runs");
    assert!(out.status.success(), "rsync: {}", text(&out.stderr));
    assert_eq!(sha256(&synced), want);
    env.wait_event("ssh.exec", |e| {
        event_str(e, "command").starts_with("rsync --server")
    });
}

#[test]
fn role_allow_list_is_enforced_with_a_clear_sentence() {
    let env = Env::start();
    env.grant("web-1", "ro", "1h");
    let out = env
        .ssh("alice+web-1+ro")
        .arg("echo should-not-run")
        .output()
        .expect("ssh runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(!text(&out.stdout).contains("should-not-run"));
    assert!(
        text(&out.stderr).contains("role ro on web-1 does not allow exec"),
        "{}",
        text(&out.stderr)
    );
    env.wait_event("ssh.denied", |e| event_str(e, "request") == "exec");

    // A subsystem no role can allow is named, and not blamed on the role's allow list.
    let out = env
        .ssh("alice+web-1+ro")
        .args(["-s", "netconf"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("ssh runs");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("portcullis: subsystem netconf is not served through portcullis"),
        "{}",
        text(&out.stderr)
    );
    let denied = env.wait_event("ssh.denied", |e| event_str(e, "request") == "subsystem");
    assert_eq!(event_str(&denied, "subsystem"), "netconf", "{denied:?}");

    // sftp is allowed for ro.
    let batch = env.dir.path().join("batch");
    std::fs::write(&batch, "ls /\n").expect("batch");
    let out = env
        .sftp(&batch, "alice+web-1+ro")
        .output()
        .expect("sftp runs");
    assert!(out.status.success(), "sftp: {}", text(&out.stderr));
}

/// A shell without a terminal (`ssh -T`, a script on stdin) reads its commands from its
/// input: each line is logged as an `ssh.command`, before the shell gets it.
#[test]
fn a_shell_without_a_terminal_logs_its_input_lines() {
    use std::io::Write as _;
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let mut child = env
        .ssh("alice+web-1")
        .arg("-T")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("ssh runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"echo no-pty-$((6*7))\n\nexit 5")
        .expect("write");
    let out = child.wait_with_output().expect("ssh ends");
    assert_eq!(text(&out.stdout), "no-pty-42\n", "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(5));
    env.wait_event("ssh.shell", |e| event_str(e, "phase") == "ended");
    let commands: Vec<String> = env
        .events()
        .iter()
        .filter(|e| event_str(e, "type") == "ssh.command")
        .map(|e| {
            assert_eq!(event_str(e, "from"), "stdin", "{e:?}");
            event_str(e, "command").to_owned()
        })
        .collect();
    assert_eq!(commands, ["echo no-pty-$((6*7))", "exit 5"]);
}

/// A role that allows scp runs scp and nothing else: the target's shell runs the whole
/// exec line, so a command that merely starts like scp is an exec, refused.
#[test]
fn an_scp_role_runs_nothing_but_scp() {
    let env = Env::start();
    env.grant("web-1", "scp-only", "1h");
    let marker = env.dir.path().join("injected");
    for cmd in [
        format!("scp -t /tmp && touch {}", marker.display()),
        format!("scp -t /tmp; touch {}", marker.display()),
        format!("scp -f $(touch {})", marker.display()),
    ] {
        let out = env
            .ssh("alice+web-1+scp-only")
            .arg(&cmd)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ssh runs");
        assert_eq!(out.status.code(), Some(1), "{cmd}: {}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("role scp-only on web-1 does not allow exec"),
            "{cmd}: {}",
            text(&out.stderr)
        );
    }
    assert!(!marker.exists(), "an injected command ran");
    // Real legacy scp still works both ways under the role.
    let src = env.dir.path().join("src.txt");
    std::fs::write(&src, "scp payload\n").expect("write");
    let dst = env.dir.path().join("dst.txt");
    let back = env.dir.path().join("back.txt");
    let remote = |p: &std::path::Path| format!("alice+web-1+scp-only@127.0.0.1:{}", p.display());
    let up = env
        .scp()
        .arg("-O")
        .arg(&src)
        .arg(remote(&dst))
        .output()
        .expect("scp runs");
    assert!(up.status.success(), "scp -O up: {}", text(&up.stderr));
    let down = env
        .scp()
        .arg("-O")
        .arg(remote(&dst))
        .arg(&back)
        .output()
        .expect("scp runs");
    assert!(down.status.success(), "scp -O down: {}", text(&down.stderr));
    assert_eq!(
        std::fs::read_to_string(&back).expect("read"),
        "scp payload\n"
    );
    // A file name with a shell character cannot go through legacy scp's shell as scp; the
    // user is told why, and what works instead (it used to say only "does not allow exec").
    let odd = env.dir.path().join("odd$(x).txt");
    let refused = env
        .scp()
        .arg("-O")
        .arg(&src)
        .arg(remote(&odd))
        .output()
        .expect("scp runs");
    assert!(!refused.status.success(), "scp -O of {}", odd.display());
    assert!(
        text(&refused.stderr).contains("holds a shell character")
            && text(&refused.stderr).contains("copy without -O"),
        "{}",
        text(&refused.stderr)
    );
    assert!(!odd.exists(), "scp -O wrote {}", odd.display());
    // OpenSSH 9's scp runs over the sftp subsystem, which the role must admit for it; an
    // interactive sftp asks for the same subsystem and is admitted with it (`check` warns
    // about such a role).
    let modern = env.dir.path().join("modern.txt");
    let up = env
        .scp()
        .arg(&src)
        .arg(remote(&modern))
        .output()
        .expect("scp runs");
    assert!(up.status.success(), "scp up: {}", text(&up.stderr));
    assert_eq!(
        std::fs::read_to_string(&modern).expect("read"),
        "scp payload\n"
    );
    let up = env
        .scp()
        .arg(&src)
        .arg(remote(&odd))
        .output()
        .expect("scp runs");
    assert!(up.status.success(), "scp up: {}", text(&up.stderr));
    assert!(
        odd.exists(),
        "scp without -O did not write {}",
        odd.display()
    );
    let batch = env.dir.path().join("rm.batch");
    std::fs::write(&batch, format!("rm {}\n", modern.display())).expect("batch");
    let rm = env
        .sftp(&batch, "alice+web-1+scp-only")
        .output()
        .expect("sftp runs");
    assert!(rm.status.success(), "sftp rm: {}", text(&rm.stderr));
    assert!(!modern.exists(), "sftp rm under an scp-only role");
}

/// Runs `ssh ARGS` direct to the target and through the gateway (as alice+web-1): both
/// print OpenSSH's `says` on stderr and exit with the same code.
fn fails_alike(env: &Env, args: &[&str], says: &str) {
    let run = |mut cmd: Command| {
        cmd.args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("ssh runs")
    };
    let direct = run(env.sshd.ssh());
    let through = run(env.ssh("alice+web-1"));
    for (path, out) in [("direct", &direct), ("through the gateway", &through)] {
        assert!(
            text(&out.stderr).contains(says),
            "{path}: stdout {:?}, stderr {:?}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    assert_eq!(through.status.code(), direct.status.code());
}

/// Requests are answered by the target, in order: a pty the target refuses is refused to
/// the client as sshd itself refuses it (with `-tt` OpenSSH then says so and gives up).
/// The gateway used to answer yes before it asked, so the command ran without a terminal
/// and the client never knew.
#[test]
fn a_pty_the_target_refuses_is_refused_to_the_client() {
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let keys = env.sshd.dir().join("authorized_keys");
    let line = std::fs::read_to_string(&keys).expect("authorized_keys");
    std::fs::write(&keys, format!("no-pty {line}")).expect("authorized_keys");
    fails_alike(
        &env,
        &["-tt", "tty; echo ran"],
        "PTY allocation request failed",
    );

    // Without a pty the same login runs commands as before.
    let out = env
        .ssh("alice+web-1")
        .arg("echo still-fine")
        .output()
        .expect("ssh runs");
    assert_eq!(text(&out.stdout), "still-fine\n", "{}", text(&out.stderr));
}

/// A start request the target itself refuses (here: sftp, on a server without that
/// subsystem) fails for the client as it does direct, with a line naming the target, and
/// the log says the target refused it.
#[test]
fn a_start_the_target_refuses_is_refused_to_the_client() {
    let env = Env::start_without_sftp();
    env.grant("web-1", "deploy", "1h");
    fails_alike(&env, &["-s", "sftp"], "subsystem request failed");

    let ev = env.wait_event("ssh.subsystem", |_| true);
    assert_eq!(
        event_str(&ev, "error"),
        "web-1 refused the sftp request",
        "{ev:?}"
    );
    assert_eq!(ev.get("decoded"), None, "nothing was decoded: {ev:?}");
}

/// An `ssh-agent` holding alice's key; killed (by its own pid) on drop.
struct Agent {
    child: std::process::Child,
    sock: std::path::PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn agent(env: &Env) -> Agent {
    let sock = env.dir.path().join("agent.sock");
    let child = Command::new("ssh-agent")
        .args(["-D", "-a"])
        .arg(&sock)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("ssh-agent runs");
    let ready = ssh_env::wait_for(std::time::Duration::from_secs(10), || {
        sock.exists().then_some(())
    });
    assert!(ready.is_some(), "ssh-agent socket never appeared");
    let out = Command::new("ssh-add")
        .arg(&env.key)
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .expect("ssh-add runs");
    assert!(out.status.success(), "ssh-add: {}", text(&out.stderr));
    Agent { child, sock }
}

#[test]
fn agent_forwarding_follows_the_role() {
    let env = Env::start();
    let agent = agent(&env);
    env.grant("web-1", "deploy", "1h");
    let out = env
        .ssh("alice+web-1+deploy")
        .arg("-A")
        .arg("ssh-add -l")
        .env("SSH_AUTH_SOCK", &agent.sock)
        .output()
        .expect("ssh runs");
    assert!(
        out.status.success(),
        "ssh-add -l upstream: {}",
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("alice (ED25519)"),
        "{}",
        text(&out.stdout)
    );

    env.grant("web-1", "exec-only", "1h");
    let out = env
        .ssh("alice+web-1+exec-only")
        .arg("-A")
        .arg("ssh-add -l")
        .env("SSH_AUTH_SOCK", &agent.sock)
        .output()
        .expect("ssh runs");
    assert!(
        !out.status.success(),
        "agent must not be reachable: {}",
        text(&out.stdout)
    );
    assert!(!text(&out.stdout).contains("alice (ED25519)"));
    // OpenSSH never hears of the refusal (it asks without wanting an answer); the log does.
    let denied = env.wait_event("ssh.denied", |e| event_str(e, "request") == "agent-forward");
    assert_eq!(event_str(&denied, "role"), "exec-only");
    assert!(
        event_str(&denied, "reason").contains("does not allow agent-forward"),
        "{denied:?}"
    );

    // Remote forwarding is not offered: refused as an sshd without it refuses, and logged.
    let out = env
        .ssh("alice+web-1+deploy")
        .args([
            "-o",
            "ExitOnForwardFailure=yes",
            "-R",
            "0:127.0.0.1:9",
            "-N",
        ])
        .output()
        .expect("ssh runs");
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("remote port forwarding failed"),
        "{}",
        text(&out.stderr)
    );
    let denied = env.wait_event("ssh.denied", |e| {
        event_str(e, "request") == "remote-forward"
    });
    assert_eq!(denied.get("port"), Some(&0.into()), "{denied:?}");

    // Forwarding to or from a unix socket on the target is not offered either; the attempt
    // was refused without a word in the log.
    let sock = "/tmp/portcullis-no-such.sock";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut fwd = env
        .ssh("alice+web-1+deploy")
        .arg("-L")
        .arg(format!("{port}:{sock}"))
        .arg("-N")
        .spawn()
        .expect("ssh runs");
    let conn = (0..100).find_map(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    let mut conn = conn.expect("ssh -L listens");
    // The refused channel closes the forwarded connection.
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut conn, &mut rest);
    let denied = env.wait_event("ssh.denied", |e| {
        event_str(e, "request") == "socket-forward"
    });
    assert_eq!(event_str(&denied, "path"), sock, "{denied:?}");
    let _ = fwd.kill();
    let _ = fwd.wait();
    let out = env
        .ssh("alice+web-1+deploy")
        .args(["-o", "ExitOnForwardFailure=yes", "-R"])
        .arg(format!("{sock}:127.0.0.1:9"))
        .arg("-N")
        .output()
        .expect("ssh runs");
    assert!(!out.status.success(), "{}", text(&out.stderr));
    let denied = env.wait_event("ssh.denied", |e| {
        event_str(e, "request") == "remote-forward" && event_str(e, "path") == sock
    });
    assert!(
        event_str(&denied, "reason").contains("not offered"),
        "{denied:?}"
    );
}

/// Key exchanges in the middle of a stream leave its bytes intact and the session up. The
/// client re-keys every 64 KiB (about 130 times for these 8 MiB): each exchange stops and
/// restarts the gateway's session loop traffic and re-aims its rekey timer.
#[test]
fn a_client_that_rekeys_mid_transfer_moves_its_bytes_intact() {
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let local = env.dir.path().join("rekey.bin");
    let status = Command::new("head")
        .args(["-c", "8388608", "/dev/urandom"])
        .stdout(std::fs::File::create(&local).expect("create"))
        .status()
        .expect("head");
    assert!(status.success());
    let out = env
        .ssh("alice+web-1")
        .args(["-v", "-o", "RekeyLimit=64K", "sha256sum"])
        .stdin(std::fs::File::open(&local).expect("open"))
        .output()
        .expect("ssh runs");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let sum = text(&out.stdout);
    assert_eq!(sum.split_whitespace().next(), Some(sha256(&local).as_str()));
    // Each exchange after the first is one more NEWKEYS the client sent.
    let exchanges = stderr.matches("SSH2_MSG_NEWKEYS sent").count();
    assert!(exchanges > 50, "only {exchanges} key exchanges:\n{stderr}");
}

/// `ssh gw 'yes' | head -1`: when the client's output closes, OpenSSH's client says so
/// (`eow@openssh.com`), the target closes the command's output, the command dies of SIGPIPE
/// and the client ends, as it does direct. Before, the command ran and the client waited
/// for ever.
#[test]
fn a_command_whose_output_is_no_longer_read_ends() {
    use std::io::BufRead;
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let command = "exec yes portcullis-eow-check";
    let mut child = env
        .ssh("alice+web-1")
        .arg(command)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ssh spawns");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("a line");
    assert_eq!(line, "portcullis-eow-check\n");
    drop(out);

    let ended = wait_for(Duration::from_secs(30), || child.try_wait().ok().flatten());
    if ended.is_none() {
        let _ = child.kill();
    }
    assert!(ended.is_some(), "ssh still runs after its output closed");
    let gone = wait_for(Duration::from_secs(10), || {
        (!running("yes portcullis-eow-check")).then_some(())
    });
    assert!(gone.is_some(), "the remote command still runs");
    env.wait_event("ssh.exec", |e| event_str(e, "command") == command);
}

/// A session open when the gateway is killed (`kill -9`, a crash) gets its `session.ended`
/// when the gateway starts again, naming the session's user, target and grant, with reason
/// `error`. Before, its `session.started` stayed without an end for ever.
#[test]
fn a_session_open_when_the_gateway_crashed_is_ended_in_the_log_at_the_next_start() {
    let mut env = Env::start();
    let grant = env.grant("web-1", "deploy", "1h");
    let mut ssh = env
        .ssh("alice+web-1")
        .arg("exec sleep 600")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ssh spawns");
    let started = env.wait_event("session.started", |e| event_str(e, "grant") == grant);
    let session = event_str(&started, "session").to_string();

    env.gw.crash_and_restart().expect("gateway restarts");
    let ended = env.wait_event("session.ended", |e| event_str(e, "session") == session);
    let _ = ssh.kill();
    let _ = ssh.wait();
    assert_eq!(event_str(&ended, "reason"), "error", "{ended:?}");
    assert!(
        event_str(&ended, "error").contains("gateway stopped"),
        "{ended:?}"
    );
    for k in ["user", "target", "role", "grant", "client", "proto"] {
        assert_eq!(ended.get(k), started.get(k), "{k}: {ended:?}");
    }
    let ends = env
        .events()
        .into_iter()
        .filter(|e| event_str(e, "type") == "session.ended" && event_str(e, "session") == session)
        .count();
    assert_eq!(ends, 1);
}
