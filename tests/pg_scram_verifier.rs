//! `portcullis user scram` prints a verifier PostgreSQL itself accepts: stored as a role's
//! password, real psql logs in with the password and is refused with a wrong one.
#![allow(clippy::unwrap_used)]

use std::io::Write as _;
use std::process::{Command, Stdio};

use portcullis_gateway::testbed::Postgres;

fn user_scram(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["user", "scram"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn postgres_accepts_the_verifier_from_user_scram() {
    let pg = Postgres::start().unwrap();
    let password = "correct horse battery staple";
    let verifier = user_scram(password);
    assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
    portcullis_protocol::scram::parse_verifier(&verifier).unwrap();

    pg.sql(&format!(
        "CREATE ROLE verifier_test LOGIN PASSWORD '{verifier}'"
    ))
    .unwrap();
    // PostgreSQL stored the verifier as given (it would hash anything it did not recognise).
    let stored = pg
        .sql("select rolpassword from pg_authid where rolname = 'verifier_test'")
        .unwrap();
    assert_eq!(stored.trim(), verifier);

    let ok = pg
        .psql("verifier_test", password, "postgres")
        .args(["-c", "select current_user"])
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "verifier_test");

    let wrong = pg
        .psql("verifier_test", "wrong horse", "postgres")
        .args(["-c", "select 1"])
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("password authentication failed"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}
