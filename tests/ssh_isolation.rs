//! Per-channel flow control on ONE connection: a real OpenSSH client multiplexes (with
//! ControlMaster) a stalled `-L` forward and exec sessions over a single connection to the
//! gateway. The stalled channel must stop only itself: the execs finish, and the gateway
//! holds a bounded amount of the stalled data (each channel's window, not the 64 MiB pushed).

mod ssh_env;

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use portcullis_gateway::testbed;
use ssh_env::{Env, text, wait_for};

/// What the test pushes into the stalled forward.
const PUSH: usize = 64 << 20;
/// How much more resident memory the gateway may hold with the forward stalled: the stalled
/// channel's windows on both legs are 2 MiB each, the rest is slack for the allocator and the
/// exec channels.
const RSS_SLACK_KIB: u64 = 24 << 10;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn a_stalled_forward_does_not_slow_an_exec_on_the_same_connection() {
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");

    // The far end of the forward: accepts and never reads.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let stall_port = listener.local_addr().expect("addr").port();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            let _ = held_tx.send(s);
        }
    });

    // One connection: the master carries the forward; later commands multiplex onto it.
    let control = env.dir.path().join("ctl");
    let local = testbed::free_port().expect("port");
    let mut master = env
        .ssh("alice+web-1")
        .args(["-o", "ControlMaster=yes", "-o"])
        .arg(format!("ControlPath={}", control.display()))
        .args(["-N", "-L"])
        .arg(format!("127.0.0.1:{local}:127.0.0.1:{stall_port}"))
        .stderr(Stdio::piped())
        .spawn()
        .expect("ssh master");
    wait_for(Duration::from_secs(20), || {
        (control.exists() && TcpStream::connect(("127.0.0.1", local)).is_ok()).then_some(())
    })
    .expect("master up with its forward");

    let rss_before = rss_kib(env.gw.pid());
    let mut writer = TcpStream::connect(("127.0.0.1", local)).expect("connect forward");
    // The probe's connection and the writer's: both held open, neither read.
    let _held: Vec<TcpStream> = (0..2)
        .map(|_| {
            held_rx
                .recv_timeout(Duration::from_secs(20))
                .expect("far end accepted")
        })
        .collect();
    let sent = Arc::new(AtomicUsize::new(0));
    let progress = sent.clone();
    let pusher = std::thread::spawn(move || {
        let chunk = vec![7u8; 1 << 20];
        while progress.load(Ordering::SeqCst) < PUSH {
            match writer.write(&chunk) {
                Ok(n) => progress.fetch_add(n, Ordering::SeqCst),
                Err(_) => break,
            };
        }
    });
    // Wait until the push has stalled: every buffer on the way is full.
    let mut last = 0;
    let stalled = wait_for(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = sent.load(Ordering::SeqCst);
        let still = now == last && now > 0;
        last = now;
        still.then_some(now)
    })
    .expect("the push never stalled");
    assert!(
        stalled < PUSH,
        "all {PUSH} bytes went through a far end that never reads"
    );

    // On the same connection, execs complete (a connection-wide stall would hang them).
    for i in 0..3 {
        let mut child = env
            .mux(&control)
            .arg(format!(
                "echo parallel-{i}; head -c 100000 /dev/zero | wc -c"
            ))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mux ssh");
        let done = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
        if done.is_none() {
            let _ = child.kill();
            panic!(
                "exec {i} on the stalled connection did not finish; gateway log: {}",
                env.gw.log()
            );
        }
        let out = child.wait_with_output().expect("output");
        assert_eq!(
            text(&out.stdout),
            format!("parallel-{i}\n100000\n"),
            "stderr: {}",
            text(&out.stderr)
        );
    }
    let check = env.mux(&control).args(["-O", "check"]).output();
    assert!(
        check.map(|o| o.status.success()).unwrap_or(false),
        "the execs did not ride the master's connection"
    );

    let grown = rss_kib(env.gw.pid()).saturating_sub(rss_before);
    eprintln!("push stalled after {stalled} bytes; gateway RSS grew by {grown} KiB");
    assert!(
        grown < RSS_SLACK_KIB,
        "gateway grew by {grown} KiB holding a stalled forward ({stalled} bytes pushed)"
    );

    // The other direction: a far end that sends without end to a local reader that never
    // reads. The client stops granting window; the gateway's upstream leg must then withhold
    // the window of that channel only.
    let firehose = TcpListener::bind("127.0.0.1:0").expect("bind");
    let hose_port = firehose.local_addr().expect("addr").port();
    let poured = Arc::new(AtomicUsize::new(0));
    let pouring = poured.clone();
    std::thread::spawn(move || {
        for mut s in firehose.incoming().flatten() {
            let pouring = pouring.clone();
            std::thread::spawn(move || {
                let chunk = vec![9u8; 1 << 20];
                while pouring.load(Ordering::SeqCst) < PUSH {
                    match s.write(&chunk) {
                        Ok(n) => pouring.fetch_add(n, Ordering::SeqCst),
                        Err(_) => break,
                    };
                }
            });
        }
    });
    let local2 = testbed::free_port().expect("port");
    let fwd = env
        .mux(&control)
        .args(["-O", "forward", "-L"])
        .arg(format!("127.0.0.1:{local2}:127.0.0.1:{hose_port}"))
        .output()
        .expect("mux forward");
    assert!(fwd.status.success(), "-O forward: {}", text(&fwd.stderr));
    let _sink = TcpStream::connect(("127.0.0.1", local2)).expect("connect firehose");
    let mut last = 0;
    let flooded = wait_for(Duration::from_secs(30), || {
        std::thread::sleep(Duration::from_millis(500));
        let now = poured.load(Ordering::SeqCst);
        let still = now == last && now > 0;
        last = now;
        still.then_some(now)
    })
    .expect("the firehose never stalled");
    assert!(
        flooded < PUSH,
        "all {PUSH} bytes went to a reader that never reads"
    );
    for i in 3..6 {
        let mut child = env
            .mux(&control)
            .arg(format!("echo parallel-{i}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mux ssh");
        let done = wait_for(Duration::from_secs(20), || child.try_wait().ok().flatten());
        if done.is_none() {
            let _ = child.kill();
            panic!(
                "exec {i} beside an unread forward did not finish; gateway log: {}",
                env.gw.log()
            );
        }
        let out = child.wait_with_output().expect("output");
        assert_eq!(text(&out.stdout), format!("parallel-{i}\n"));
    }
    let grown = rss_kib(env.gw.pid()).saturating_sub(rss_before);
    eprintln!("firehose stalled after {flooded} bytes; gateway RSS grew by {grown} KiB");
    assert!(
        grown < RSS_SLACK_KIB,
        "gateway grew by {grown} KiB holding two stalled forwards"
    );

    let _ = master.kill();
    let _ = master.wait();
    drop(_held);
    let _ = pusher.join();
}

/// Commands multiplexed over one ControlMaster connection get their own exit status, and
/// each one's `ssh.exec` (with that status) is logged when it ends, not when the connection
/// does. The master closes a channel as soon as it has the target's EOF: the gateway used
/// to pass that EOF on ahead of the exit status, which russh then dropped (the client
/// exited 255), and its end of the channel then waited out a grace period.
#[test]
fn multiplexed_commands_keep_their_exit_status_and_are_logged_as_they_end() {
    let env = Env::start();
    env.grant("web-1", "deploy", "1h");
    let control = env.dir.path().join("ctl");
    let mut master = env.control_master(&control);

    let mut wrong = Vec::new();
    for code in 1..=40 {
        let out = env
            .mux(&control)
            .arg(format!("exit {code}"))
            .stdin(Stdio::null())
            .output()
            .expect("ssh runs");
        if out.status.code() != Some(code) {
            wrong.push((code, out.status.code(), text(&out.stderr)));
        }
    }
    assert!(wrong.is_empty(), "exit statuses lost: {wrong:?}");
    // Still on the open connection: every command is in the log with its status.
    for code in 1..=40u64 {
        let cmd = format!("exit {code}");
        let ev = env.wait_event("ssh.exec", |e| ssh_env::event_str(e, "command") == cmd);
        assert_eq!(ev.get("exit_status"), Some(&code.into()), "{ev:?}");
    }
    let _ = master.kill();
    let _ = master.wait();
}

/// A session channel the target refuses to open (sshd's `MaxSessions`, here 1) is refused to
/// the client too, as direct: OpenSSH's multiplexing client then runs its command over a
/// connection of its own. The gateway used to accept the channel and then fail it with an
/// internal error name, and the command never ran.
#[test]
fn a_session_the_target_will_not_open_is_refused_as_direct() {
    let env = Env::start_with_max_sessions(1);
    env.grant("web-1", "deploy", "1h");
    let control = env.dir.path().join("ctl");
    let direct_control = env.dir.path().join("direct-ctl");
    let start = |mut cmd: Command, control: &std::path::Path| {
        cmd.args(["-o", "ControlMaster=yes", "-o"])
            .arg(format!("ControlPath={}", control.display()))
            .arg("sleep 60")
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ssh master")
    };
    // Each master holds the one session its connection may have.
    let mut masters = [
        start(env.ssh("alice+web-1"), &control),
        start(env.sshd.ssh(), &direct_control),
    ];
    wait_for(Duration::from_secs(20), || {
        (control.exists() && direct_control.exists()).then_some(())
    })
    .expect("masters up");
    let second = |mut cmd: Command, control: &std::path::Path| {
        cmd.args(["-o", "ControlMaster=no", "-o"])
            .arg(format!("ControlPath={}", control.display()))
            .arg("echo ran")
            .stdin(Stdio::null())
            .output()
            .expect("ssh runs")
    };
    let direct = second(env.sshd.ssh(), &direct_control);
    let through = second(env.ssh("alice+web-1"), &control);
    // The master's open is refused, and the client runs the command over a connection
    // of its own instead.
    for (path, out) in [("direct", &direct), ("through the gateway", &through)] {
        assert!(
            text(&out.stderr).contains("Session open refused by peer")
                && text(&out.stdout) == "ran\n",
            "{path}: stdout {:?}, stderr {:?}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    assert_eq!(through.status.code(), direct.status.code());
    for m in &mut masters {
        let _ = m.kill();
        let _ = m.wait();
    }
}
