//! Scale: gateway memory per idle session — 1,000 PostgreSQL and 200 SSH sessions held open
//! at once, measured as the growth of the gateway's resident set.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::report::{Row, Table};
use crate::setup::{Env, USER, USER_PW};
use crate::ssh::{Via, ssh};

fn rss_kib(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    let kib: f64 = line.split_whitespace().nth(1).unwrap_or("0").parse()?;
    Ok(kib)
}

fn wait_live(env: &Env, proto: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while env.live_sessions(proto) < n {
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {} of {n} {proto} sessions",
            env.live_sessions(proto)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    Ok(())
}

pub fn run(env: &Env, table: &mut Table) -> anyhow::Result<()> {
    let pid = env.gw.pid();
    let pg_n = if env.quick { 100 } else { 1000 };
    let before = rss_kib(pid)?;
    let rt = tokio::runtime::Runtime::new()?;
    let clients = rt.block_on(async {
        let conn = format!(
            "host=127.0.0.1 port={} user={USER} password={USER_PW} dbname=pg-bench",
            env.gw.bound.postgres.port()
        );
        let mut clients = Vec::new();
        for _ in 0..pg_n {
            let (client, connection) =
                tokio_postgres::connect(&conn, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            clients.push(client);
        }
        anyhow::Ok(clients)
    })?;
    wait_live(env, "postgres", pg_n)?;
    let after = rss_kib(pid)?;
    let per = (after - before) / pg_n as f64;
    table.push(Row {
        figure: format!("gateway RSS per idle PostgreSQL session ({pg_n} held)"),
        unit: "KiB".into(),
        direct: None,
        peer_name: "—".into(),
        peer: None,
        ours: Some(per),
        target: "≤ 64 KiB".into(),
        holds: Some(per <= 64.0),
    });
    drop(clients);
    drop(rt);

    let ssh_n = if env.quick { 20 } else { 200 };
    let before = rss_kib(pid)?;
    let mut children: Vec<Child> = Vec::new();
    for _ in 0..ssh_n {
        children.push(
            ssh(env, Via::Gateway)
                .arg("sleep 600")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
    }
    wait_live(env, "ssh", ssh_n)?;
    let after = rss_kib(pid)?;
    let per = (after - before) / ssh_n as f64;
    table.push(Row {
        figure: format!("gateway RSS per idle SSH session ({ssh_n} held)"),
        unit: "KiB".into(),
        direct: None,
        peer_name: "—".into(),
        peer: None,
        ours: Some(per),
        target: "≤ 256 KiB".into(),
        holds: Some(per <= 256.0),
    });
    for mut c in children {
        let _ = c.kill();
        let _ = c.wait();
    }
    Ok(())
}
