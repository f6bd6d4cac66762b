//! The PostgreSQL proxy inside the real `portcullis serve`: config from TOML, grants through
//! the CLI and admin API, real psql through the gateway, and revocation from the CLI ending
//! a running query with a FATAL.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Stdio};

use portcullis_gateway::testbed::{GatewayProc, Postgres};

const ALICE_PW: &str = "alice-serve-pw";

fn psql(gw: &GatewayProc, sql: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.env("PGPASSWORD", ALICE_PW)
        .env("PGCONNECT_TIMEOUT", "20")
        .env("PGSSLMODE", "require")
        .args([
            "-X",
            "-q",
            "-At",
            "-h",
            "127.0.0.1",
            "-U",
            "alice",
            "-d",
            "pg+rw",
        ])
        .arg("-p")
        .arg(gw.bound.postgres.port().to_string())
        .args(["-c", sql]);
    cmd
}

#[test]
fn serve_proxies_psql_under_a_cli_grant_and_revoke_ends_it() {
    let pg = Postgres::start().unwrap();
    pg.create_role("app_rw", "serve-rw-pw").unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let pwfile = secrets.path().join("rw.pw");
    std::fs::write(&pwfile, "serve-rw-pw\n").unwrap();
    std::fs::set_permissions(&pwfile, std::fs::Permissions::from_mode(0o600)).unwrap();
    let verifier = portcullis_protocol::scram::generate_verifier(ALICE_PW);
    let body = format!(
        "[[users]]\nname = \"alice\"\npassword_scram = \"{verifier}\"\n\n\
         [[targets]]\nname = \"pg\"\nkind = \"postgres\"\naddress = \"127.0.0.1:{}\"\n\
         database = \"postgres\"\ntls = \"prefer\"\n\
         [targets.roles.rw]\nuser = \"app_rw\"\npassword_file = \"{}\"\n",
        pg.port,
        pwfile.display()
    );
    let gw = GatewayProc::start(env!("CARGO_BIN_EXE_portcullis"), &body).unwrap();

    // No grant yet: refused with a message that says how to ask.
    let out = psql(&gw, "select 1").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no live grant for alice on pg") && err.contains("request create"),
        "{err}"
    );

    let out = gw
        .cli()
        .args([
            "grant", "add", "--user", "alice", "--target", "pg", "--role", "rw",
        ])
        .args(["--for", "1h", "--reason", "test", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        gw.log()
    );
    let grant: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = grant["id"].as_str().unwrap().to_owned();

    let out = psql(&gw, "select current_user").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "app_rw");

    let sleeper = psql(&gw, "select pg_sleep(600)")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let probe = "select count(*) from pg_stat_activity where query = 'select pg_sleep(600)' and state = 'active'";
    while pg.sql(probe).unwrap().trim() != "1" {
        std::thread::yield_now();
    }
    let out = gw.cli().args(["grant", "revoke", &id]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sleeper.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("FATAL") && err.contains("revoked") && err.contains(&id),
        "{err}"
    );

    // The session finishes its audit records after the client has its FATAL; wait for it to
    // leave the sessions list (nothing outside the gateway signals this, so poll, bounded).
    for _ in 0..500 {
        let out = gw
            .cli()
            .args(["sessions", "list", "--json"])
            .output()
            .unwrap();
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if list.as_array().is_some_and(|a| a.is_empty()) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // The audit log holds the statements.
    let out = gw
        .cli()
        .args(["audit", "search", "--type", "pg.query", "--json"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("select current_user") && text.contains("select pg_sleep(600)"),
        "{text}"
    );
    drop(gw);
}
