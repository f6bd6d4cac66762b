//! PostgreSQL figures: pgbench select-only TPS (simple and prepared, 8 clients), single-client
//! latency and new-connection rate; direct, through PgBouncer and through Portcullis; and,
//! as the floor any hop pays on this machine, through a do-nothing TCP forwarder, with the
//! CPU time and context switches each hop spends per transaction. The single-client latency,
//! a few µs judged against a budget, is measured in interleaved rounds and shown as medians
//! with each round's spread (`report::interleaved`).

use std::process::Command;

use anyhow::Context;

use crate::floor::Floor;
use crate::hop;
use crate::report::{Row, Table, interleaved, median, of_rounds, spread};
use crate::setup::{Env, PG_ROLE, PG_ROLE_PW, USER, USER_PW};

#[derive(Clone, Copy)]
enum Via {
    Direct,
    Bouncer,
    Gateway,
    Floor(u16),
}

struct Run {
    tps: f64,
    latency_ms: f64,
    transactions: f64,
    /// CPU time (user + system) the hop's process spent during the run, in µs.
    hop_cpu_us: Option<f64>,
    /// Context switches (voluntary + involuntary, all threads) of the hop during the run.
    hop_switches: Option<f64>,
}

impl Run {
    fn cpu_per_txn(&self) -> Option<f64> {
        self.hop_cpu_us.map(|c| c / self.transactions.max(1.0))
    }
    fn switches_per_txn(&self) -> Option<f64> {
        self.hop_switches.map(|c| c / self.transactions.max(1.0))
    }
}

fn pgbench(env: &Env, via: Via, args: &[&str]) -> anyhow::Result<Run> {
    let (port, user, pw, db) = match via {
        Via::Direct => (env.pg.port, PG_ROLE, PG_ROLE_PW, "bench"),
        Via::Bouncer => (env.bouncer_port, PG_ROLE, PG_ROLE_PW, "bench"),
        Via::Gateway => (env.gw.bound.postgres.port(), USER, USER_PW, "pg-bench"),
        Via::Floor(port) => (port, PG_ROLE, PG_ROLE_PW, "bench"),
    };
    let usage = || match via {
        Via::Direct => None,
        Via::Bouncer => hop::of_process(env.bouncer_pid()),
        Via::Gateway => hop::of_process(env.gw.pid()),
        Via::Floor(_) => Floor::usage(),
    };
    let before = usage();
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
    let delta = before.zip(usage()).map(|(b, a)| a - b);
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
    let transactions = text
        .lines()
        .find(|l| l.starts_with("number of transactions actually processed"))
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    Ok(Run {
        tps: field("tps").context("tps in pgbench output")?,
        latency_ms: field("latency average").unwrap_or(0.0),
        transactions,
        hop_cpu_us: delta.map(|d| d.cpu_us),
        hop_switches: delta.map(|d| d.switches),
    })
}

fn four(env: &Env, floor: &Floor, args: &[&str]) -> anyhow::Result<[Run; 4]> {
    Ok([
        pgbench(env, Via::Direct, args)?,
        pgbench(env, Via::Bouncer, args)?,
        pgbench(env, Via::Gateway, args)?,
        pgbench(env, Via::Floor(floor.port), args)?,
    ])
}

/// `pgbench -S -c 1` in interleaved rounds ([`interleaved`]): each path's runs, by round,
/// in the order of [`four`].
fn latency_rounds(env: &Env, floor: &Floor, secs: &str) -> anyhow::Result<[Vec<Run>; 4]> {
    let paths = [
        Via::Direct,
        Via::Bouncer,
        Via::Gateway,
        Via::Floor(floor.port),
    ];
    interleaved(env.quick, |i| {
        pgbench(env, paths[i], &["-c", "1", "-T", secs, "-M", "simple"])
    })
}

/// Several runs of one path as one: the median TPS and latency, and the hop's CPU time and
/// switches over all of them (so per-transaction costs weigh every transaction alike).
fn combined(runs: &[Run]) -> Run {
    let sum = |pick: fn(&Run) -> Option<f64>| runs.iter().map(pick).sum::<Option<f64>>();
    Run {
        tps: median(&runs.iter().map(|r| r.tps).collect::<Vec<_>>()),
        latency_ms: median(&runs.iter().map(|r| r.latency_ms).collect::<Vec<_>>()),
        transactions: runs.iter().map(|r| r.transactions).sum(),
        hop_cpu_us: sum(|r| r.hop_cpu_us),
        hop_switches: sum(|r| r.hop_switches),
    }
}

/// Per round, the µs path `hop` added to the direct run of the same round.
fn added_us(direct: &[Run], hop: &[Run]) -> Vec<f64> {
    direct
        .iter()
        .zip(hop)
        .map(|(d, h)| (h.latency_ms - d.latency_ms) * 1000.0)
        .collect()
}

fn floor_row(figure: &str, unit: &str, d: Option<f64>, f: Option<f64>, g: Option<f64>) -> Row {
    Row {
        figure: format!("{figure} — floor: plain TCP forwarder"),
        unit: unit.into(),
        direct: d,
        peer_name: "TCP forwarder".into(),
        peer: f,
        ours: g,
        target: "—".into(),
        holds: None,
    }
}

fn cost_rows(table: &mut Table, figure: &str, b: &Run, g: &Run, f: &Run) {
    for (what, unit, pick) in [
        (
            "hop CPU per transaction",
            "µs",
            Run::cpu_per_txn as fn(&Run) -> Option<f64>,
        ),
        (
            "hop context switches per transaction",
            "switches",
            Run::switches_per_txn,
        ),
    ] {
        table.push(Row {
            figure: format!(
                "{figure}: {what} (PgBouncer / Portcullis; TCP forwarder {})",
                f.pipe(pick)
            ),
            unit: unit.into(),
            direct: None,
            peer_name: "PgBouncer".into(),
            peer: pick(b),
            ours: pick(g),
            target: "—".into(),
            holds: None,
        });
    }
}

impl Run {
    fn pipe(&self, pick: fn(&Run) -> Option<f64>) -> String {
        pick(self).map_or("—".into(), |v| format!("{v:.2}"))
    }
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let secs = if env.quick { "3" } else { "15" };
    let floor = Floor::start(([127, 0, 0, 1], env.pg.port).into())?;
    for mode in ["simple", "prepared"] {
        let [d, b, g, f] = four(env, &floor, &["-c", "8", "-j", "2", "-T", secs, "-M", mode])?;
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
        let figure = format!("pgbench -S -c 8 -M {mode}");
        table.push(floor_row(
            &figure,
            "TPS",
            Some(d.tps),
            Some(f.tps),
            Some(g.tps),
        ));
        cost_rows(table, &figure, &b, &g, &f);
    }
    let c1_secs = if env.quick { "3" } else { "5" };
    let [d, b, g, f] = latency_rounds(env, &floor, c1_secs)?;
    let n = d.len();
    // Judged on the medians, as the table shows them; the per-round differences (each to
    // the direct run of its own round) show the spread.
    let (ours_added, floor_added) = (added_us(&d, &g), added_us(&d, &f));
    let us = |v: f64| format!("{v:.0}");
    let [d, b, g, f] = [&d, &b, &g, &f].map(|runs| combined(runs));
    let added = (g.latency_ms - d.latency_ms) * 1000.0;
    let floor_adds = (f.latency_ms - d.latency_ms) * 1000.0;
    let figure = format!("pgbench -S -c 1 average latency ({})", of_rounds(n));
    table.push(Row {
        figure: figure.clone(),
        unit: "µs".into(),
        direct: Some(d.latency_ms * 1000.0),
        peer_name: "PgBouncer".into(),
        peer: Some(b.latency_ms * 1000.0),
        ours: Some(g.latency_ms * 1000.0),
        target: format!(
            "≤ 25 µs added (added {added:.1} µs, rounds {} µs)",
            spread(&ours_added, us)
        ),
        holds: Some(added <= 25.0),
    });
    let mut row = floor_row(
        &figure,
        "µs",
        Some(d.latency_ms * 1000.0),
        Some(f.latency_ms * 1000.0),
        Some(g.latency_ms * 1000.0),
    );
    row.figure += &format!(
        ", adding {floor_adds:.1} µs (rounds {} µs)",
        spread(&floor_added, us)
    );
    table.push(row);
    cost_rows(table, "pgbench -S -c 1", &b, &g, &f);
    let [d, b, g, _] = four(
        env,
        &floor,
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
