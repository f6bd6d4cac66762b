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

/// As root (CI), run the test above again as an ordinary OS user, so the harness is known to
/// work for developers who are not root. Run as an ordinary user, the test above already is
/// that run.
#[test]
fn the_harness_also_works_for_an_ordinary_user() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;

    if !portcullis_gateway::testbed::is_root() {
        eprintln!(
            "not root: psql_and_ssh_reach_the_real_upstreams_directly is the ordinary-user run"
        );
        return;
    }
    let user = nix::unistd::User::from_name("postgres")
        .expect("passwd lookup")
        .expect("an ordinary user (postgres) exists where PostgreSQL is installed");
    // The checkout may sit under a folder that user cannot enter: run a copy of this binary.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let copy = dir.path().join("harness-test");
    std::fs::copy(std::env::current_exe().expect("current exe"), &copy).expect("copy");
    let out = std::process::Command::new(&copy)
        .args([
            "--exact",
            "psql_and_ssh_reach_the_real_upstreams_directly",
            "--nocapture",
        ])
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .env("HOME", &user.dir)
        .env("USER", &user.name)
        .current_dir(dir.path())
        .output()
        .expect("run as postgres");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("1 passed"),
        "as {}: {}\n{}",
        user.name,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
}
