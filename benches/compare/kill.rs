//! Kill latency: from the grant's `revoked_at` (or `expires_at`) to each client seeing its
//! connection closed (in-process clients, `clients.rs`) and, separately, to each client
//! process's exit, over 50 sessions per protocol; p50 and p99.
//!
//! The direct column is the same measurement without the gateway: 50 clients connected
//! straight to the server, whose 50 connections the server side drops at once (PostgreSQL's
//! backends get SIGTERM, what `pg_terminate_backend` sends; sshd's connection processes get
//! SIGKILL). It is what 50 client processes take to notice and exit on this machine, the
//! floor under any gateway's figure.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::clients::{self, Clients};
use crate::report::{Row, Table};
use crate::setup::{Env, PG_ROLE, PG_ROLE_PW, USER, USER_PW};
use crate::ssh::{Via, ssh};

const SESSIONS: usize = 50;

fn psql_sleep(env: &Env) -> anyhow::Result<Child> {
    Ok(Command::new("psql")
        .env("PGPASSWORD", USER_PW)
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", USER, "-d", "pg-bench"])
        .arg("-p")
        .arg(env.gw.bound.postgres.port().to_string())
        .args(["-c", "select pg_sleep(600)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// The same `psql`, straight to PostgreSQL.
fn psql_sleep_direct(env: &Env) -> anyhow::Result<Child> {
    Ok(Command::new("psql")
        .env("PGPASSWORD", PG_ROLE_PW)
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", PG_ROLE, "-d", "bench"])
        .arg("-p")
        .arg(env.pg.port.to_string())
        .args(["-c", "select pg_sleep(600)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

/// Process ids of the backends running the direct sessions' `pg_sleep`.
fn sleeping_backends(env: &Env) -> Vec<i32> {
    env.pg
        .sql(
            "select pid from pg_stat_activity \
             where query = 'select pg_sleep(600)' and state = 'active'",
        )
        .map(|out| out.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The remote command of the SSH sessions, unique to this run so that it can be counted.
fn ssh_sleep_command() -> String {
    format!("sleep 600.{}", std::process::id())
}

/// An `ssh` running the sleep, by the given path.
fn ssh_sleep_via(env: &Env, via: Via) -> anyhow::Result<Child> {
    Ok(ssh(env, via)
        .arg(ssh_sleep_command())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn ssh_sleep_direct(env: &Env) -> anyhow::Result<Child> {
    ssh_sleep_via(env, Via::Direct)
}

/// Every process below `root` (sshd's per-connection processes and their children).
fn descendants(root: u32) -> Vec<i32> {
    let mut parent = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The fields after the parenthesised command name: state, then ppid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(
            parent
                .iter()
                .filter(|(_, pp)| *pp == p)
                .map(|(c, _)| *c as u32),
        );
        i += 1;
    }
    found.into_iter().skip(1).map(|p| p as i32).collect()
}

fn signal_all(pids: &[i32], sig: nix::sys::signal::Signal) -> SystemTime {
    let at = SystemTime::now();
    for pid in pids {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(*pid), sig);
    }
    at
}

/// Are all SSH sessions' remote commands running? A session counts as live once it is
/// authorized, but its upstream login and exec may still be under way; a trigger then would
/// measure the set-up backlog of 50 connections, not the kill path.
fn ssh_started(n: usize) -> bool {
    ssh_sleeps() >= n
}

/// How many of the SSH sessions' remote commands are running.
fn ssh_sleeps() -> usize {
    ssh_sleep_pids().len()
}

/// The process ids of the SSH sessions' remote commands (this run's, by their unique
/// argument).
fn ssh_sleep_pids() -> Vec<i32> {
    Command::new("pgrep")
        .arg("-f")
        .arg(format!("^{}$", ssh_sleep_command().replace('.', "\\.")))
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Waits until nothing of the previous measurement is left: no session in the gateway, no
/// sleeping backend, no remote sleep. Otherwise the next measurement's readiness check
/// would count the last one's leftovers, and its trigger would land while its own sessions
/// are still being set up, next to the last ones being torn down.
///
/// The remote sleeps of killed sessions outlive them here: the upstream login is root,
/// for which sshd refuses the `signal` requests the kill path sends, and a command without
/// a terminal gets no SIGHUP when the connection drops (ARCHITECTURE.md, "Known limits").
/// So once the gateway has let go of every session, this ends the leftovers itself.
fn settle(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while env.live_sessions("postgres") + env.live_sessions("ssh") > 0 && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    signal_all(&ssh_sleep_pids(), nix::sys::signal::Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.live_sessions("postgres") + env.live_sessions("ssh") > 0
        || !sleeping_backends(env).is_empty()
        || ssh_sleeps() > 0
    {
        if Instant::now() > deadline {
            eprintln!(
                "warning: the last kill measurement's sessions are not all gone after 60 s \
                 (gateway sessions: {} postgres, {} ssh; sleeping backends {}; remote sleeps {})",
                env.live_sessions("postgres"),
                env.live_sessions("ssh"),
                sleeping_backends(env).len(),
                ssh_sleeps()
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ssh_sleep(env: &Env) -> anyhow::Result<Child> {
    ssh_sleep_via(env, Via::Gateway)
}

/// One POST to the gateway's admin API with the admin token; the JSON it answers.
fn admin_post(env: &Env, path: &str, body: &str) -> anyhow::Result<serde_json::Value> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(env.gw.bound.admin)?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        env.gw.admin_token.trim(),
        body.len()
    )?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, json) = answer.split_once("\r\n\r\n").context("http answer")?;
    anyhow::ensure!(head.starts_with("HTTP/1.1 200"), "{path}: {answer}");
    Ok(serde_json::from_str(json)?)
}

fn when(v: &serde_json::Value, key: &str) -> anyhow::Result<SystemTime> {
    let s = v
        .get(key)
        .and_then(|x| x.as_str())
        .context(key.to_string())?;
    let t = chrono::DateTime::parse_from_rfc3339(s)?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(t.timestamp_nanos_opt().unwrap_or(0) as u64))
}

/// Starts the sessions, waits until `ready`, triggers, and returns each exit's delay
/// after the reference time the trigger returns.
fn measure(
    env: &Env,
    spawn: fn(&Env) -> anyhow::Result<Child>,
    ready: &dyn Fn() -> bool,
    trigger: &dyn Fn() -> anyhow::Result<SystemTime>,
) -> anyhow::Result<Vec<f64>> {
    settle(env);
    let mut children = Vec::new();
    for _ in 0..SESSIONS {
        children.push(spawn(env)?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        anyhow::ensure!(Instant::now() < deadline, "sessions did not all start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let waiters: Vec<_> = children
        .into_iter()
        .map(|mut c| {
            std::thread::spawn(move || {
                let _ = c.wait();
                SystemTime::now()
            })
        })
        .collect();
    let reference = trigger()?;
    let mut delays = Vec::new();
    for w in waiters {
        let exited = w.join().map_err(|_| anyhow::anyhow!("waiter panicked"))?;
        let d = exited.duration_since(reference).unwrap_or_default();
        delays.push(d.as_secs_f64() * 1000.0);
    }
    delays.sort_by(|a, b| a.total_cmp(b));
    Ok(delays)
}

/// [`measure`] with in-process clients ([`Clients`]): each delay is from the trigger's
/// reference time to the moment that client's connection ended.
fn measure_clients(
    env: &Env,
    path: clients::Path,
    ready: &dyn Fn() -> bool,
    trigger: &dyn Fn() -> anyhow::Result<SystemTime>,
) -> anyhow::Result<Vec<f64>> {
    settle(env);
    let running = Clients::start(
        env,
        path,
        SESSIONS,
        "select pg_sleep(600)",
        &ssh_sleep_command(),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        anyhow::ensure!(Instant::now() < deadline, "sessions did not all start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let reference = trigger()?;
    let mut delays: Vec<f64> = running
        .ended(Duration::from_secs(60))?
        .into_iter()
        .map(|at| {
            at.duration_since(reference)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    delays.sort_by(|a, b| a.total_cmp(b));
    Ok(delays)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

/// How the 50 clients of one measurement run: as client processes, or in this process.
#[derive(Clone, Copy)]
enum Seen {
    ProcessExit,
    SocketClosed,
}

impl Seen {
    fn how(self, proto: &str) -> &'static str {
        match (self, proto) {
            (Seen::ProcessExit, "ssh") => "50 `ssh` processes exited",
            (Seen::ProcessExit, _) => "50 `psql` processes exited",
            (Seen::SocketClosed, "ssh") => "50 russh clients' connections closed",
            (Seen::SocketClosed, _) => "50 tokio-postgres clients' connections closed",
        }
    }
}

/// The direct floor: `proto`'s server drops 50 direct connections at once.
fn direct(env: &Env, proto: &str, seen: Seen) -> anyhow::Result<Vec<f64>> {
    use nix::sys::signal::Signal;
    if proto == "ssh" {
        let sshd = env.sshd.pid();
        let ready = || ssh_started(SESSIONS);
        let trigger = || Ok(signal_all(&descendants(sshd), Signal::SIGKILL));
        match seen {
            Seen::ProcessExit => measure(env, ssh_sleep_direct, &ready, &trigger),
            Seen::SocketClosed => measure_clients(env, clients::Path::DirectSsh, &ready, &trigger),
        }
    } else {
        let ready = || sleeping_backends(env).len() >= SESSIONS;
        let trigger = || Ok(signal_all(&sleeping_backends(env), Signal::SIGTERM));
        match seen {
            Seen::ProcessExit => measure(env, psql_sleep_direct, &ready, &trigger),
            Seen::SocketClosed => measure_clients(env, clients::Path::DirectPg, &ready, &trigger),
        }
    }
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let protos = [
        (
            "postgres",
            "pg-bench",
            psql_sleep as fn(&Env) -> anyhow::Result<Child>,
            clients::Path::GatewayPg,
        ),
        ("ssh", "web", ssh_sleep, clients::Path::GatewaySsh),
    ];
    let each = protos
        .into_iter()
        .flat_map(|p| [Seen::SocketClosed, Seen::ProcessExit].map(move |seen| (p, seen)));
    for ((proto, target, spawn, path), seen) in each {
        let floor = direct(env, proto, seen)?;
        // Live in the gateway, and the upstream command running: a trigger during the
        // upstream logins would measure that backlog, not the kill path.
        let ready = || {
            env.live_sessions(proto) >= SESSIONS
                && if proto == "ssh" {
                    ssh_started(SESSIONS)
                } else {
                    sleeping_backends(env).len() >= SESSIONS
                }
        };
        env.revoke_all()?;
        let grant = env.grant(target, "1h")?;
        let id = grant["id"].as_str().context("grant id")?.to_string();
        // Straight to the admin API rather than through a CLI process, whose start and exit
        // would compete for the CPU with the 50 clients being measured.
        let revoke = || -> anyhow::Result<SystemTime> {
            let g = admin_post(env, &format!("/v1/grants/{id}/revoke"), "{}")?;
            when(&g, "revoked_at")
        };
        let run = |trigger: &dyn Fn() -> anyhow::Result<SystemTime>| match seen {
            Seen::ProcessExit => measure(env, spawn, &ready, trigger),
            Seen::SocketClosed => measure_clients(env, path, &ready, trigger),
        };
        let revoked = run(&revoke)?;
        env.revoke_all()?;
        let grant = env.grant(target, "25s")?;
        let expires = when(&grant, "expires_at")?;
        let expired = run(&|| Ok(expires))?;
        for (what, d) in [("revoke", &revoked), ("expiry", &expired)] {
            let p99 = pct(d, 0.99);
            table.push(Row {
                figure: format!(
                    "{proto} kill on {what}, {}: p50 {:.1} ms, p99 {p99:.1} ms (direct: server drops 50 connections, p50 {:.1} ms)",
                    seen.how(proto),
                    pct(d, 0.5),
                    pct(&floor, 0.5)
                ),
                unit: "ms (p99)".into(),
                direct: Some(pct(&floor, 0.99)),
                peer_name: "—".into(),
                peer: None,
                ours: Some(p99),
                target: "p99 ≤ 50 ms".into(),
                holds: Some(p99 <= 50.0),
            });
        }
    }
    settle(env);
    env.grant("pg-bench", "8h")?;
    env.grant("web", "8h")?;
    Ok(())
}
