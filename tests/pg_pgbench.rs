//! pgbench through the PostgreSQL proxy: initialisation (COPY of 100k rows) and read-only
//! runs in every query mode complete with zero failed transactions, each statement audited.
#![allow(clippy::unwrap_used)]

mod pg_support;

use std::time::Duration;

use pg_support::{ALICE_PW, Harness, output};

fn pgbench(h: &Harness, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("pgbench");
    cmd.env("PGPASSWORD", ALICE_PW)
        .env("PGSSLMODE", "disable")
        .args(["-h", "127.0.0.1", "-U", "alice"])
        .arg("-p")
        .arg(h.addr.port().to_string())
        .args(args)
        .arg("pg+rw")
        .kill_on_drop(true);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_runs_clean_in_every_query_mode() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let (ok, out, err) = output(pgbench(&h, &["-i", "-s", "1", "-q"])).await;
    assert!(ok, "pgbench -i: {out}{err}");
    for mode in ["simple", "extended", "prepared"] {
        let (ok, out, err) = output(pgbench(&h, &["-S", "-t", "200", "-c", "2", "-M", mode])).await;
        assert!(ok, "pgbench -M {mode}: {out}{err}");
        assert!(
            out.contains("number of transactions actually processed: 400/400"),
            "{out}"
        );
        assert!(out.contains("number of failed transactions: 0"), "{out}");
    }
    let events = h.audit_events().await;
    let selects = events
        .iter()
        .filter(|e| {
            e["type"] == "pg.query"
                && e["sql"]
                    .as_str()
                    .is_some_and(|s| s.contains("SELECT abalance FROM pgbench_accounts"))
        })
        .count();
    assert_eq!(selects, 1200, "every statement of every mode is audited");
    // pgbench's extended modes send text parameters: logged as text.
    let with_params = events
        .iter()
        .find(|e| e["type"] == "pg.query" && e.get("params").is_some_and(|p| p[0].is_string()))
        .unwrap();
    let aid = with_params["params"][0].as_str().unwrap();
    assert!(aid.parse::<u32>().is_ok(), "{with_params:?}");
    let copy = events
        .iter()
        .find(|e| {
            e["type"] == "pg.query"
                && e["sql"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("copy pgbench_accounts"))
        })
        .unwrap();
    assert!(copy["copy_bytes"].as_u64().unwrap() > 1_000_000, "{copy:?}");
}
