//! Kill latency: from the grant's `revoked_at` (or `expires_at`) to each client's exit, over
//! 50 sessions per protocol; p50 and p99.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;

use crate::report::{Row, Table};
use crate::setup::{Env, USER, USER_PW};
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

/// The remote command of the SSH sessions, unique to this run so that it can be counted.
fn ssh_sleep_command() -> String {
    format!("sleep 600.{}", std::process::id())
}

/// Are all SSH sessions' remote commands running? A session counts as live once it is
/// authorized, but its upstream login and exec may still be under way; a trigger then would
/// measure the set-up backlog of 50 connections, not the kill path.
fn ssh_started(n: usize) -> bool {
    Command::new("pgrep")
        .args(["-c", "-f"])
        .arg(format!("^{}$", ssh_sleep_command().replace('.', "\\.")))
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<usize>()
                .ok()
        })
        .is_some_and(|c| c >= n)
}

fn ssh_sleep(env: &Env) -> anyhow::Result<Child> {
    Ok(ssh(env, Via::Gateway)
        .arg(ssh_sleep_command())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn when(v: &serde_json::Value, key: &str) -> anyhow::Result<SystemTime> {
    let s = v
        .get(key)
        .and_then(|x| x.as_str())
        .context(key.to_string())?;
    let t = chrono::DateTime::parse_from_rfc3339(s)?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_nanos(t.timestamp_nanos_opt().unwrap_or(0) as u64))
}

/// Starts the sessions, waits until all are live, triggers, and returns each exit's delay
/// after the reference time the trigger returns.
fn measure(
    env: &Env,
    proto: &str,
    spawn: fn(&Env) -> anyhow::Result<Child>,
    trigger: &dyn Fn() -> anyhow::Result<SystemTime>,
) -> anyhow::Result<Vec<f64>> {
    let mut children = Vec::new();
    for _ in 0..SESSIONS {
        children.push(spawn(env)?);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while env.live_sessions(proto) < SESSIONS || (proto == "ssh" && !ssh_started(SESSIONS)) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "{proto} sessions did not all start"
        );
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

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    for (proto, target, spawn) in [
        (
            "postgres",
            "pg-bench",
            psql_sleep as fn(&Env) -> anyhow::Result<Child>,
        ),
        ("ssh", "web", ssh_sleep),
    ] {
        env.revoke_all()?;
        let grant = env.grant(target, "1h")?;
        let id = grant["id"].as_str().context("grant id")?.to_string();
        let revoke = || -> anyhow::Result<SystemTime> {
            let out = env
                .gw
                .cli()
                .args(["grant", "revoke", &id, "--json"])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "revoke: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let list = env
                .gw
                .cli()
                .args(["grant", "list", "--all", "--json"])
                .output()?;
            let all: Vec<serde_json::Value> = serde_json::from_slice(&list.stdout)?;
            let g = all
                .iter()
                .find(|g| g["id"] == id.as_str())
                .context("revoked grant")?;
            when(g, "revoked_at")
        };
        let revoked = measure(env, proto, spawn, &revoke)?;
        env.revoke_all()?;
        let grant = env.grant(target, "25s")?;
        let expires = when(&grant, "expires_at")?;
        let expired = measure(env, proto, spawn, &|| Ok(expires))?;
        for (what, d) in [("revoke", &revoked), ("expiry", &expired)] {
            let p99 = pct(d, 0.99);
            table.push(Row {
                figure: format!(
                    "{proto} kill on {what}: p50 {:.1} ms, p99 {p99:.1} ms",
                    pct(d, 0.5)
                ),
                unit: "ms (p99)".into(),
                direct: None,
                peer_name: "—".into(),
                peer: None,
                ours: Some(p99),
                target: "p99 ≤ 50 ms".into(),
                holds: Some(p99 <= 50.0),
            });
        }
    }
    env.grant("pg-bench", "8h")?;
    env.grant("web", "8h")?;
    Ok(())
}
