//! The side-by-side comparison runner: real PostgreSQL, PgBouncer, OpenSSH sshd and
//! Portcullis on this machine, each figure measured direct / through a peer / through
//! Portcullis in one run, printed as a markdown table.
//!
//! `cargo bench --bench compare` (add `-- --quick` for a short smoke run, `-- --write` to
//! replace `benches/RESULTS.md`, `-- --hold SECS` to start everything, print its addresses
//! and wait SECS or until Ctrl-C, for profiling by hand; either way everything it started is
//! stopped). `PORTCULLIS_BENCH_BIN=/path/to/portcullis` measures that gateway binary instead
//! of this build's (another commit's, say, or one run under `valgrind --tool=callgrind` by a
//! wrapper script with `--hold`).

mod clients;
mod floor;
mod hop;
mod kill;
mod pg;
mod report;
mod scale;
mod setup;
mod ssh;

use report::Table;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let write = args.iter().any(|a| a == "--write");
    let only: Option<String> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let want = |s: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == s));
    let hold = args
        .iter()
        .position(|a| a == "--hold")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<u64>().ok());
    let env = setup::Env::start(quick)?;
    if let Some(secs) = hold {
        // For profiling by hand: everything up, its addresses printed, nothing measured.
        eprintln!(
            "holding for {secs} s: postgres 127.0.0.1:{} (role {} / {}), pgbouncer port {} (pid {}), \
             gateway postgres {} (pid {}, user {} / {}, database pg-bench)",
            env.pg.port,
            setup::PG_ROLE,
            setup::PG_ROLE_PW,
            env.bouncer_port,
            env.bouncer_pid(),
            env.gw.bound.postgres,
            env.gw.pid(),
            setup::USER,
            setup::USER_PW,
        );
        eprintln!(
            "ssh: sshd 127.0.0.1:{} (user {}, key {}), gateway ssh {} (login {}+web, key {})",
            env.sshd.port,
            env.sshd.user,
            env.sshd.client_key_path.display(),
            env.gw.bound.ssh,
            setup::USER,
            env.user_key.display(),
        );
        // Ends on Ctrl-C or SIGTERM as well as after SECS, and in every case returns
        // normally, so the services' Drop stops them. Handlers rather than a blocked mask:
        // the services are children, and they inherit a mask but not a handler.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let why = rt.block_on(async {
            use tokio::signal::unix::{SignalKind, signal};
            let mut int = signal(SignalKind::interrupt())?;
            let mut term = signal(SignalKind::terminate())?;
            anyhow::Ok(tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(secs)) => format!("held {secs} s"),
                _ = int.recv() => "SIGINT".to_string(),
                _ = term.recv() => "SIGTERM".to_string(),
            })
        })?;
        eprintln!("{why}: stopping everything");
        return Ok(());
    }
    let mut table = Table::default();
    if want("pg") {
        pg::run(&env, &mut table)?;
    }
    if want("ssh") {
        ssh::run(&env, &mut table)?;
    }
    if want("kill") {
        kill::run(&env, &mut table)?;
    }
    if want("scale") {
        scale::run(&env, &mut table)?;
    }
    let md = table.markdown(&env.describe());
    println!("{md}");
    if write {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/RESULTS.md");
        std::fs::write(&path, &md)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
