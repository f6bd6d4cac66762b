//! `portcullis check` run as the real binary against broken configs: each must exit 2 and
//! name the key path of its problem on stderr; the full example must pass; a file with many
//! problems must show them all; no secret may ever reach the output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An environment variable no fixture may find set.
const UNSET_VAR: &str = "PORTCULLIS_FIXTURE_UNSET";

/// Each broken fixture and the key path (with its colon) stderr must show.
const FIXTURES: &[(&str, &str)] = &[
    ("unknown_key", "gateway.data_dri: unknown key"),
    ("duplicate_user", "users[1].name: duplicate user \"bob\""),
    ("duplicate_target", "targets[1].name: duplicate target"),
    ("target_without_roles", "targets[0].roles: "),
    ("postgres_without_database", "targets[0].database: required"),
    ("ssh_without_host_key", "targets[0].host_key: required"),
    (
        "missing_password_env",
        "targets[0].roles.read.password_env: environment variable PORTCULLIS_FIXTURE_UNSET is not set",
    ),
    (
        "unreadable_password_file",
        "targets[0].roles.read.password_file: cannot read",
    ),
    ("ssh_role_without_credentials", "targets[0].roles.deploy: "),
    ("bad_user_ssh_key", "users[0].ssh_keys[0]: "),
    ("bad_host_key", "targets[0].host_key: "),
    (
        "malformed_private_key",
        "targets[0].roles.deploy.private_key_file: ",
    ),
    (
        "missing_private_key",
        "targets[0].roles.deploy.private_key_file: cannot read",
    ),
    (
        "encrypted_private_key",
        "targets[0].roles.deploy.private_key_file: ",
    ),
    ("bad_duration", "policy.max_grant: invalid duration"),
    (
        "bad_listen_address",
        "listen.postgres: invalid socket address",
    ),
    ("target_max_grant_above_policy", "targets[0].max_grant: "),
    ("policy_approver_not_user", "policy.approvers[0]: "),
    ("target_approver_not_user", "targets[0].approvers[1]: "),
    ("bad_allow", "targets[0].roles.deploy.allow[1]: "),
    ("bad_scram", "users[0].password_scram: "),
    ("bad_tls_mode", "targets[0].tls: "),
    ("verify_full_without_ca", "targets[0].ca_file: required"),
    ("bad_kind", "targets[0].kind: "),
    ("plus_in_user_name", "users[0].name: "),
    ("plus_in_role_name", "targets[0].roles.read+write: "),
    ("empty_target_name", "targets[0].name: must not be empty"),
    ("syntax_error", "line 11, column 16: "),
];

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn fixtures_dir() -> PathBuf {
    repo().join("tests/fixtures/config")
}

fn check(config: &Path, cwd: &Path, env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    cmd.arg("check")
        .arg("-c")
        .arg(config)
        .current_dir(cwd)
        .env_remove(UNSET_VAR)
        .env_remove("PG_PROD_RO")
        .env_remove("PORTCULLIS_TOKEN");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run portcullis check")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn every_broken_fixture_exits_2_naming_its_key_path() {
    let dir = fixtures_dir();
    let mut failures = Vec::new();
    for (name, want) in FIXTURES {
        let out = check(&dir.join(format!("{name}.toml")), &dir, &[]);
        let err = stderr(&out);
        if out.status.code() != Some(2) || !err.lines().any(|l| l.contains(want)) {
            failures.push(format!(
                "{name}: want exit 2 and a line with {want:?}; got {:?}, stderr:\n{err}",
                out.status.code()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_fixture_file_is_in_the_table() {
    let mut names: Vec<String> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures dir")
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            Some(name.strip_suffix(".toml")?.to_string())
        })
        .filter(|n| n != "many_problems")
        .collect();
    names.sort();
    let mut table: Vec<String> = FIXTURES.iter().map(|(n, _)| n.to_string()).collect();
    table.sort();
    assert_eq!(names, table);
    assert!(table.len() >= 14);
}

#[test]
fn a_file_with_many_problems_shows_all_of_them_and_no_secret() {
    let dir = fixtures_dir();
    let out = check(&dir.join("many_problems.toml"), &dir, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    for want in [
        "gateway.data_directory: unknown key",
        "listen.ssh: invalid socket address",
        "policy.warn_before: invalid duration",
        "audit.durability: must be",
        "users[1].name: duplicate user \"bob\"",
        "targets[0].database: required",
        "targets[0].roles.inline.password: expected a string, found integer",
        "targets[1].host_key: required",
        "targets[1].roles.deploy: an ssh role needs",
        "targets[1].roles.deploy.allow[1]: ",
    ] {
        assert!(
            err.lines().any(|l| l.contains(want)),
            "missing {want:?} in:\n{err}"
        );
    }
    // The inline password (a number, hence a type error) must not be echoed.
    assert!(!err.contains("73915046"), "secret printed:\n{err}");
}

#[test]
fn the_full_example_passes() {
    let examples = repo().join("examples");
    let out = check(
        &examples.join("portcullis.toml"),
        &examples,
        &[("PG_PROD_RO", "example-ro-secret")],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("config OK") && stdout.contains("2 users, 3 targets"),
        "{stdout}"
    );
    for secret in [
        "example-ro-secret",
        "example-only-admin-password",
        "OPENSSH",
    ] {
        assert!(
            !stdout.contains(secret) && !err.contains(secret),
            "{secret} printed"
        );
    }
}

#[test]
fn the_full_example_without_its_env_var_names_both_roles() {
    // From another working directory: relative paths still resolve against the file.
    let examples = repo().join("examples");
    let out = check(
        &examples.join("portcullis.toml"),
        &repo().join("tests"),
        &[],
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "targets[0].roles.read.password_env: environment variable PG_PROD_RO is not set",
        "targets[1].roles.read.password_env: environment variable PG_PROD_RO is not set",
    ] {
        assert!(
            err.lines().any(|l| l.contains(want)),
            "missing {want:?}:\n{err}"
        );
    }
    assert_eq!(
        err.lines()
            .filter(|l| l.contains(": environment variable"))
            .count(),
        2,
        "only the env vars are missing:\n{err}"
    );
}

#[test]
fn without_c_the_working_directory_file_or_the_defaults_are_used() {
    let empty = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .current_dir(empty.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 users, 0 targets"));

    std::fs::write(
        empty.path().join("portcullis.toml"),
        "[audit]\ndurability = \"never\"\n",
    )
    .expect("write");
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check")
        .current_dir(empty.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("audit.durability: "),
        "{}",
        stderr(&out)
    );
}

/// Warnings are about how the gateway runs: `check` shows them, while the admin CLI, which
/// reads the same file only to find the gateway, does not repeat them on every call.
#[test]
fn warnings_are_shown_by_check_and_not_by_every_cli_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("portcullis.toml");
    std::fs::write(
        &config,
        "[listen]\nadmin = \"127.0.0.1:1\"\n\n\
         [[targets]]\nname = \"db\"\nkind = \"postgres\"\naddress = \"127.0.0.1:5432\"\n\
         database = \"app\"\n[targets.roles.read]\nuser = \"ro\"\npassword = \"inline-pw\"\n",
    )
    .expect("write");
    let warning = "targets[0].roles.read.password: inline password";

    let out = check(&config, dir.path(), &[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(err.matches(warning).count(), 1, "{err}");
    assert!(!err.contains("inline-pw"), "secret printed:\n{err}");

    // Nothing listens on the admin address, so the call fails; it must say only that.
    let out = Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["grant", "list", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .env("PORTCULLIS_TOKEN", "t")
        .output()
        .expect("run portcullis grant list");
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("warning"), "{err}");
}
