//! The test harness itself: a real PostgreSQL and a real sshd start, and real clients reach
//! them directly.

use portcullis_gateway::testbed::{Postgres, Sshd, postgres::SUPERUSER_PASSWORD};

#[test]
fn psql_and_ssh_reach_the_real_upstreams_directly() {
    let pg = Postgres::start().expect("postgres starts");
    let out = pg
        .psql("postgres", SUPERUSER_PASSWORD, "postgres")
        .args(["-c", "select 1"])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");

    let wrong = pg
        .psql("postgres", "not-the-password", "postgres")
        .args(["-c", "select 1"])
        .output()
        .expect("psql runs");
    assert!(!wrong.status.success(), "a wrong password must be refused");

    let sshd = Sshd::start().expect("sshd starts");
    let out = sshd.ssh().arg("true").output().expect("ssh runs");
    assert!(
        out.status.success(),
        "ssh: {}\nsshd log: {}",
        String::from_utf8_lossy(&out.stderr),
        sshd.log()
    );
    let out = sshd
        .ssh()
        .arg("echo hi; exit 3")
        .output()
        .expect("ssh runs");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "hi");
}
