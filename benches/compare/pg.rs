//! PostgreSQL figures: pgbench select-only TPS (simple and prepared, 8 clients), single-client
//! latency and new-connection rate; direct, through PgBouncer and through Portcullis.

use std::process::Command;

use anyhow::Context;

use crate::report::{Row, Table};
use crate::setup::{Env, PG_ROLE, PG_ROLE_PW, USER, USER_PW};

#[derive(Clone, Copy)]
enum Via {
    Direct,
    Bouncer,
    Gateway,
}

struct Run {
    tps: f64,
    latency_ms: f64,
}

fn pgbench(env: &Env, via: Via, args: &[&str]) -> anyhow::Result<Run> {
    let (port, user, pw, db) = match via {
        Via::Direct => (env.pg.port, PG_ROLE, PG_ROLE_PW, "bench"),
        Via::Bouncer => (env.bouncer_port, PG_ROLE, PG_ROLE_PW, "bench"),
        Via::Gateway => (env.gw.bound.postgres.port(), USER, USER_PW, "pg-bench"),
    };
    let out = Command::new(env.pg.bin_dir.join("pgbench"))
        .env("PGPASSWORD", pw)
        // Plain TCP on every path: the upstream and PgBouncer here have no TLS, so the
        // gateway must not be the only hop paying for it.
        .env("PGSSLMODE", "disable")
        .args(["-n", "-S", "-h", "127.0.0.1", "-U", user])
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .arg(db)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    anyhow::ensure!(
        out.status.success(),
        "pgbench {args:?}: {}{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    let field = |prefix: &str| -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split('=').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
    };
    let failed = text
        .lines()
        .find(|l| l.starts_with("number of failed transactions"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    anyhow::ensure!(
        failed == 0,
        "pgbench {args:?} had {failed} failed transactions"
    );
    Ok(Run {
        tps: field("tps").context("tps in pgbench output")?,
        latency_ms: field("latency average").unwrap_or(0.0),
    })
}

fn three(env: &Env, args: &[&str]) -> anyhow::Result<[Run; 3]> {
    Ok([
        pgbench(env, Via::Direct, args)?,
        pgbench(env, Via::Bouncer, args)?,
        pgbench(env, Via::Gateway, args)?,
    ])
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let secs = if env.quick { "3" } else { "15" };
    for mode in ["simple", "prepared"] {
        let [d, b, g] = three(env, &["-c", "8", "-j", "2", "-T", secs, "-M", mode])?;
        table.push(Row {
            figure: format!("pgbench -S -c 8 -M {mode}"),
            unit: "TPS".into(),
            direct: Some(d.tps),
            peer_name: "PgBouncer".into(),
            peer: Some(b.tps),
            ours: Some(g.tps),
            target: "≥ 0.80× direct and ≥ 1.3× PgBouncer".into(),
            holds: Some(g.tps >= 0.8 * d.tps && g.tps >= 1.3 * b.tps),
        });
    }
    let [d, b, g] = three(env, &["-c", "1", "-T", secs, "-M", "simple"])?;
    let added_us = (g.latency_ms - d.latency_ms) * 1000.0;
    table.push(Row {
        figure: "pgbench -S -c 1 average latency".into(),
        unit: "µs".into(),
        direct: Some(d.latency_ms * 1000.0),
        peer_name: "PgBouncer".into(),
        peer: Some(b.latency_ms * 1000.0),
        ours: Some(g.latency_ms * 1000.0),
        target: format!("≤ 25 µs added (measured {added_us:.1} µs)"),
        holds: Some(added_us <= 25.0),
    });
    let [d, b, g] = three(
        env,
        &["-C", "-c", "4", "-j", "2", "-T", secs, "-M", "simple"],
    )?;
    table.push(Row {
        figure: "pgbench -S -C -c 4 (new connection per transaction)".into(),
        unit: "conn/s".into(),
        direct: Some(d.tps),
        peer_name: "PgBouncer".into(),
        peer: Some(b.tps),
        ours: Some(g.tps),
        target: "—".into(),
        holds: None,
    });
    Ok(())
}
