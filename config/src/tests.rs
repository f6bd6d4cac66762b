//! Tests of the whole loader: a table of broken snippets and the key path each must be
//! reported at, plus the full example and the defaults.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::validate::load_with_env;
use crate::{Allow, Config, ConfigErrors, Durability, PgTlsMode, TargetKind};

const SECRET_RO: &str = "s3cret-ro-value";

fn env(name: &str) -> Option<String> {
    let vars: HashMap<&str, &str> = [
        ("PG_RO", SECRET_RO),
        ("PG_PROD_RO", SECRET_RO),
        ("EMPTY", ""),
    ]
    .into();
    vars.get(name).map(|v| v.to_string())
}

/// A directory with the files snippets refer to: a good key, an encrypted key, a broken
/// key, a password file and an empty one.
fn files() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    write(
        "good.key",
        include_str!("../../examples/keys/deploy_ed25519"),
    );
    write(
        "encrypted.key",
        include_str!("../testdata/encrypted_ed25519"),
    );
    write(
        "broken.key",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nbm90IGEga2V5\n-----END OPENSSH PRIVATE KEY-----\n",
    );
    write("pw", "file-secret\n");
    write("empty.pw", "\n");
    write(
        "cert.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    );
    write("not-pem.txt", "hello\n");
    dir
}

fn load_in(dir: &Path, text: &str) -> Result<Config, ConfigErrors> {
    load_with_env(text, dir, &env)
}

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIKgix/iAMtvpoYRNlMt54OYDQVjTOshKxVyb9v8Bx6+r alice@laptop";
const KEY_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDntWmXx1FIXsGn1uYQZQWwjPg5ozw3IUKWhZfPVr5ET bob@laptop";
/// A key no user of [`prefix`] has.
const KEY_C: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOHogiYNGwcwuU+DY1x2f9We2WQ3GyO847g4TQdNDiei carol@desktop";
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIzlzCGNU1HumZRYjikDSs8St+lYm+DUYchKHyC1KhAG";

/// `key` without its comment: the algorithm and the base64 key.
fn key_only(key: &str) -> &str {
    key.rsplit_once(' ').map_or(key, |(k, _)| k)
}

/// Users every snippet can refer to.
fn prefix() -> String {
    format!(
        "[[users]]\nname = \"alice\"\nssh_keys = [\"{KEY_A}\"]\n\
         [[users]]\nname = \"bob\"\nssh_keys = [\"{KEY_B}\"]\n"
    )
}

fn pg(extra: &str, roles: &str) -> String {
    format!(
        "[[targets]]\nname = \"db\"\nkind = \"postgres\"\naddress = \"h:5432\"\n\
         database = \"app\"\n{extra}\n{roles}\n"
    )
}

fn ssh(extra: &str, roles: &str) -> String {
    format!(
        "[[targets]]\nname = \"web\"\nkind = \"ssh\"\naddress = \"h:22\"\n\
         host_key = \"{HOST_KEY}\"\n{extra}\n{roles}\n"
    )
}

const PG_ROLE: &str = "[targets.roles.read]\nuser = \"ro\"\npassword_env = \"PG_RO\"\n";
const SSH_ROLE: &str =
    "[targets.roles.deploy]\nuser = \"deploy\"\nprivate_key_file = \"good.key\"\n";

/// (snippet after the users, the exact key path expected, a piece of the message).
#[rustfmt::skip]
fn cases() -> Vec<(String, &'static str, &'static str)> {
    vec![
        ("[gateway]\ndatadir = \"x\"".into(), "gateway.datadir", "unknown key"),
        ("[gateway]\ndata_dir = \"\"".into(), "gateway.data_dir", "empty"),
        ("[listen]\nssh = \"localhost:22\"".into(), "listen.ssh", "invalid socket address"),
        ("[listen]\nssh = \"127.0.0.1:1\"\nadmin = \"127.0.0.1:1\"".into(), "listen.admin", "already used"),
        ("[tls]\ncert_file = \"cert.pem\"".into(), "tls.key_file", "required"),
        ("[tls]\ncert_file = \"not-pem.txt\"\nkey_file = \"cert.pem\"".into(), "tls.cert_file", "not a PEM"),
        ("[tls]\ncert_file = \"missing.pem\"\nkey_file = \"cert.pem\"".into(), "tls.cert_file", "cannot read"),
        ("[policy]\nmax_grant = \"eight hours\"".into(), "policy.max_grant", "invalid duration"),
        ("[policy]\nwarn_before = \"0s\"".into(), "policy.warn_before", "more than zero"),
        ("[policy]\nwarn_before = \"300000y\"".into(), "policy.warn_before", "too long"),
        ("[policy]\nmax_grant = \"300000y\"".into(), "policy.max_grant", "too long"),
        ("[policy]\napprovers = [\"bob\", \"carol\"]".into(), "policy.approvers[1]", "not a configured user"),
        ("[audit]\ndurability = \"fsync\"".into(), "audit.durability", "batched"),
        ("[notify]\nwebhook_url = \"https://x/\"".into(), "notify.webhook_url", "http://"),
        ("[notify]\nwebhook = \"http://x/\"".into(), "notify.webhook", "unknown key"),
        ("[[users]]\nname = \"alice\"".into(), "users[2].name", "duplicate user"),
        ("[[users]]\nname = \"a+b\"".into(), "users[2].name", "'+'"),
        ("[[users]]\nname = \"\"".into(), "users[2].name", "empty"),
        ("[[users]]\nname = \"admin\"".into(), "users[2].name", "\"admin\" is reserved"),
        ("[[users]]\nname = \"config\"".into(), "users[2].name", "\"config\" is reserved"),
        ("[[users]]\nname = \"Admin\"".into(), "users[2].name", "\"Admin\" is reserved"),
        ("[[users]]\nssh_keys = []".into(), "users[2].name", "required"),
        ("[[users]]\nname = \"c\"\nssh_keys = [\"ssh-ed25519 AAAA-broken\"]".into(), "users[2].ssh_keys[0]", "public key"),
        ("[[users]]\nname = \"c\"\npassword_scram = \"md5abcdef\"".into(), "users[2].password_scram", "SCRAM-SHA-256$"),
        ("[[users]]\nname = \"c\"\nssh_keys = \"one\"".into(), "users[2].ssh_keys", "expected a sequence"),
        (format!("[[users]]\nname = \"c\"\nssh_keys = [\"{KEY_C}\", \"{KEY_A}\"]"), "users[2].ssh_keys[1]", "already listed for user \"alice\" (users[0].ssh_keys[0]); a key must belong to one user"),
        (format!("[[users]]\nname = \"c\"\nssh_keys = [\" {} carol@desktop \"]", key_only(KEY_B)), "users[2].ssh_keys[0]", "already listed for user \"bob\""),
        (format!("[[users]]\nname = \"c\"\nssh_keys = [\"{KEY_C}\", \"{} \"]", key_only(KEY_C)), "users[2].ssh_keys[1]", "listed twice for user \"c\" (also ssh_keys[0])"),
        (format!("[[users]]\nname = \"c\"\nssh_keys = [\"{KEY_C}\"]\n[[users]]\nname = \"d\"\nssh_keys = [\"{KEY_C}\"]"), "users[3].ssh_keys[0]", "already listed for user \"c\""),
        (pg("", PG_ROLE) + &pg("", PG_ROLE), "targets[1].name", "duplicate target"),
        (pg("", ""), "targets[0].roles", "at least one role"),
        (pg("", "[targets.roles]"), "targets[0].roles", "at least one role"),
        (pg("", PG_ROLE).replace("database = \"app\"\n", ""), "targets[0].database", "required"),
        (pg("", PG_ROLE).replace("name = \"db\"", "name = \"db+x\""), "targets[0].name", "'+'"),
        (pg("", PG_ROLE).replace("postgres", "mysql"), "targets[0].kind", "\"postgres\" or \"ssh\""),
        (pg("", PG_ROLE).replace("h:5432", "h"), "targets[0].address", "HOST:PORT"),
        (pg("tls = \"strict\"", PG_ROLE), "targets[0].tls", "verify-full"),
        (pg("tls = \"verify-full\"", PG_ROLE), "targets[0].ca_file", "verify-full"),
        (pg("tls = \"verify-full\"\nca_file = \"nope.pem\"", PG_ROLE), "targets[0].ca_file", "cannot read"),
        (pg(&format!("host_key = \"{HOST_KEY}\""), PG_ROLE), "targets[0].host_key", "only to ssh"),
        (pg("max_grant = \"9h\"", PG_ROLE), "targets[0].max_grant", "above policy.max_grant"),
        (pg("max_grant = \"soon\"", PG_ROLE), "targets[0].max_grant", "invalid duration"),
        (pg("approvers = [\"mallory\"]", PG_ROLE), "targets[0].approvers[0]", "not a configured user"),
        (pg("", &PG_ROLE.replace("PG_RO", "PG_NOPE")), "targets[0].roles.read.password_env", "environment variable PG_NOPE is not set"),
        (pg("", &PG_ROLE.replace("PG_RO", "EMPTY")), "targets[0].roles.read.password_env", "is empty"),
        (pg( "", "[targets.roles.read]\nuser = \"ro\"\npassword_file = \"nope\"", ), "targets[0].roles.read.password_file", "cannot read"),
        (pg( "", "[targets.roles.read]\nuser = \"ro\"\npassword_file = \"empty.pw\"", ), "targets[0].roles.read.password_file", "empty"),
        (pg( "", "[targets.roles.read]\nuser = \"ro\"\npassword_file = \"pw\"\npassword_env = \"PG_RO\"", ), "targets[0].roles.read", "only one"),
        (pg("", "[targets.roles.read]\npassword_env = \"PG_RO\""), "targets[0].roles.read.user", "required"),
        (pg("", "[targets.roles.\"r+w\"]\nuser = \"ro\""), "targets[0].roles.r+w", "'+'"),
        (pg( "", "[targets.roles.read]\nuser = \"ro\"\nallow = [\"shell\"]", ), "targets[0].roles.read.allow", "only to roles of ssh"),
        (pg( "", "[targets.roles.read]\nuser = \"ro\"\nprivate_key_file = \"good.key\"", ), "targets[0].roles.read.private_key_file", "only to roles of ssh"),
        (pg("", "[targets.roles.read]\nuser = \"ro\"\npasswd = \"x\""), "targets[0].roles.read.passwd", "unknown key"),
        (pg("", "[targets.roles.read]\nuser = \"ro\"\nallow = \"shell\""), "targets[0].roles.read.allow", "expected a sequence"),
        (pg("", "[targets.roles]\nread = 3"), "targets[0].roles.read", "expected a table"),
        (ssh("", SSH_ROLE).replace(&format!("host_key = \"{HOST_KEY}\"\n"), ""), "targets[0].host_key", "required for ssh"),
        (ssh("", SSH_ROLE).replace("AAAAC3Nza", "AAAAB3Nza"), "targets[0].host_key", "public key"),
        (ssh("database = \"x\"", SSH_ROLE), "targets[0].database", "only to postgres"),
        (ssh("", "[targets.roles.deploy]\nuser = \"deploy\""), "targets[0].roles.deploy", "private_key_file or a password"),
        (ssh("", &SSH_ROLE.replace("good.key", "missing.key")), "targets[0].roles.deploy.private_key_file", "cannot read"),
        (ssh("", &SSH_ROLE.replace("good.key", "broken.key")), "targets[0].roles.deploy.private_key_file", "not a valid OpenSSH private key"),
        (ssh("", &SSH_ROLE.replace("good.key", "pw")), "targets[0].roles.deploy.private_key_file", "not a valid OpenSSH private key"),
        (ssh("", &SSH_ROLE.replace("good.key", "encrypted.key")), "targets[0].roles.deploy.private_key_file", "passphrase"),
        (ssh("", &format!("{SSH_ROLE}allow = [\"shell\", \"x11\"]")), "targets[0].roles.deploy.allow[1]", "port-forward"),
        ("[[targets]]\nname = \"t\"\nkind = \"ssh\"".into(), "targets[0].address", "required"),
        ("[[targets]]\nkind = \"ssh\"".into(), "targets[0].name", "required"),
        ("[[targets]]\nname = \"t\"\naddress = \"h:1\"".into(), "targets[0].kind", "required"),
        ("[colour]\nred = 1".into(), "colour", "unknown key"),
        ("[gateway\n".into(), "line 7, column 9", ""),
    ]
}

#[test]
fn each_broken_snippet_is_reported_at_its_key_path() {
    let dir = files();
    let mut failures = Vec::new();
    for (snippet, path, message) in cases() {
        let text = format!("{}{snippet}\n", prefix());
        match load_in(dir.path(), &text) {
            Ok(_) => failures.push(format!("accepted:\n{snippet}")),
            Err(e) => {
                let hit = e
                    .problems
                    .iter()
                    .any(|p| p.path == path && p.message.contains(message));
                if !hit {
                    failures.push(format!(
                        "want {path}: ...{message}...\ngot {e}\nfor:\n{snippet}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn the_snippets_are_otherwise_valid() {
    // The table is only meaningful if the base pieces load cleanly.
    let dir = files();
    let text = format!("{}{}{}", prefix(), pg("", PG_ROLE), ssh("", SSH_ROLE));
    let config = load_in(dir.path(), &text).expect("base config is valid");
    assert_eq!(config.targets.len(), 2);
}

#[test]
fn every_problem_is_reported_at_once() {
    let dir = files();
    let text = format!(
        "{}[policy]\nmax_grant = \"x\"\n[audit]\ndurability = \"y\"\n{}{}",
        prefix(),
        pg("oops = 1", &PG_ROLE.replace("PG_RO", "PG_NOPE")),
        ssh(
            "",
            "[targets.roles.deploy]\nuser = \"d\"\nallow = [\"fly\"]"
        )
    );
    let e = load_in(dir.path(), &text).expect_err("broken");
    let paths: Vec<&str> = e.problems.iter().map(|p| p.path.as_str()).collect();
    for want in [
        "targets[0].oops",
        "policy.max_grant",
        "audit.durability",
        "targets[0].roles.read.password_env",
        "targets[1].roles.deploy",
        "targets[1].roles.deploy.allow[0]",
    ] {
        assert!(paths.contains(&want), "{want} missing from {e}");
    }
    assert_eq!(e.to_string().lines().count(), e.problems.len());
}

#[test]
fn a_dropped_bad_value_is_reported_once() {
    let dir = files();
    let text = format!(
        "{}{}",
        prefix(),
        pg(
            "",
            "[targets.roles.read]\nuser = 7\npassword_env = \"PG_RO\""
        )
    );
    let e = load_in(dir.path(), &text).expect_err("bad user type");
    assert_eq!(
        e.to_string(),
        "targets[0].roles.read.user: expected a string, found integer"
    );
}

#[test]
fn a_key_listed_again_is_reported_only_where_it_repeats() {
    let dir = files();
    let text = format!(
        "{}[[users]]\nname = \"carol\"\nssh_keys = [\"{KEY_C}\", \"{KEY_A}\"]\n",
        prefix()
    );
    let e = load_in(dir.path(), &text).expect_err("alice's key listed for carol");
    assert_eq!(
        e.to_string(),
        "users[2].ssh_keys[1]: this key is already listed for user \"alice\" \
         (users[0].ssh_keys[0]); a key must belong to one user"
    );
    // Several keys per user, each listed once, load.
    let text = prefix().replace(
        &format!("[\"{KEY_A}\"]"),
        &format!("[\"{KEY_A}\", \"{KEY_C}\"]"),
    );
    let c = load_in(dir.path(), &text).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.user("alice").map(|u| u.ssh_keys.len()), Some(2));
}

#[test]
fn no_secret_appears_in_problems_or_debug_output() {
    let dir = files();
    let text = format!(
        "{}{}",
        prefix(),
        pg(
            "",
            "[targets.roles.read]\nuser = \"ro\"\npassword_env = \"PG_RO\"\npassword_file = \"pw\"\n\
             [targets.roles.inline]\nuser = \"ro\"\npassword = 424242\n"
        )
    );
    let e = load_in(dir.path(), &text).expect_err("two sources, numeric password");
    let shown = format!("{e}\n{e:?}");
    for secret in [SECRET_RO, "file-secret", "424242"] {
        assert!(!shown.contains(secret), "{secret} shown in {shown}");
    }

    let ok = format!("{}{}{}", prefix(), pg("", PG_ROLE), ssh("", SSH_ROLE));
    let config = load_in(dir.path(), &ok).expect("valid");
    let debug = format!("{config:?}");
    assert!(!debug.contains(SECRET_RO), "{debug}");
    assert!(!debug.contains("OPENSSH PRIVATE KEY"), "{debug}");
}

#[test]
fn inline_passwords_load_with_a_warning() {
    let dir = files();
    let text = format!(
        "{}{}",
        prefix(),
        pg(
            "",
            "[targets.roles.read]\nuser = \"ro\"\npassword = \"inline-pw\""
        )
    );
    let config = load_in(dir.path(), &text).expect("inline password is accepted");
    let role = &config.targets[0].roles["read"];
    assert_eq!(
        role.password.as_ref().map(|s| s.expose()),
        Some("inline-pw")
    );
    assert!(
        config
            .warnings
            .iter()
            .any(|w| w.starts_with("targets[0].roles.read.password: inline password")),
        "{:?}",
        config.warnings
    );
    assert!(!config.warnings.join("\n").contains("inline-pw"));
}

/// `scp` cannot be had without the sftp subsystem (OpenSSH 9's scp uses it), so a role that
/// lists it without `sftp` is told what it really allows; with both, or neither, nothing.
#[test]
fn scp_without_sftp_loads_with_a_warning_that_sftp_is_admitted() {
    let dir = files();
    let warnings = |allow: &str| {
        let text = format!(
            "{}{}",
            prefix(),
            ssh("", &format!("{SSH_ROLE}allow = [{allow}]"))
        );
        load_in(dir.path(), &text)
            .unwrap_or_else(|e| panic!("{allow}: {e}"))
            .warnings
    };
    let w = warnings(r#""exec", "scp""#);
    assert!(
        w.iter().any(|w| w.starts_with(
            "targets[0].roles.deploy.allow: \"scp\" without \"sftp\" still admits sftp sessions"
        )),
        "{w:?}"
    );
    for quiet in [r#""scp", "sftp""#, r#""sftp""#, r#""shell""#] {
        assert!(
            !warnings(quiet).iter().any(|w| w.contains("scp")),
            "{quiet}"
        );
    }
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

#[test]
fn the_full_example_loads_with_every_value() {
    let dir = examples_dir();
    let text = std::fs::read_to_string(dir.join("portcullis.toml")).expect("example");
    let c = load_in(&dir, &text).unwrap_or_else(|e| panic!("example invalid:\n{e}"));
    assert_eq!(c.gateway.data_dir, dir.join("portcullis-data"));
    assert_eq!(c.listen.ssh.to_string(), "127.0.0.1:2222");
    assert_eq!(c.listen.postgres.to_string(), "127.0.0.1:6432");
    assert_eq!(c.listen.admin.to_string(), "127.0.0.1:7070");
    let tls = c.tls.as_ref().expect("tls");
    assert_eq!(tls.cert_file, dir.join("tls/gateway.crt"));
    assert_eq!(tls.key_file, dir.join("tls/gateway.key"));
    assert_eq!(c.policy.max_grant, Duration::from_secs(8 * 3600));
    assert_eq!(c.policy.warn_before, Duration::from_secs(300));
    assert_eq!(c.policy.approvers, ["bob"]);
    assert_eq!(c.audit.durability, Durability::Batched);
    assert_eq!(
        c.notify.webhook_url.as_deref(),
        Some("http://127.0.0.1:9000/portcullis")
    );
    assert_eq!(c.users.len(), 2);
    assert!(c.user("alice").is_some_and(|u| u.password_scram.is_some()));

    let pg = c.target("pg-prod").expect("pg-prod");
    assert_eq!(pg.kind, TargetKind::Postgres);
    assert_eq!(pg.database.as_deref(), Some("app"));
    assert_eq!(pg.tls, PgTlsMode::Prefer);
    assert_eq!(pg.max_grant(&c.policy), Duration::from_secs(4 * 3600));
    let read = pg.role("read").expect("read");
    assert_eq!(read.password.as_ref().map(|s| s.expose()), Some(SECRET_RO));
    let admin = pg.role("admin").expect("admin");
    assert_eq!(
        admin.password.as_ref().map(|s| s.expose()),
        Some("example-only-admin-password")
    );
    let reports = c.target("pg-reports").expect("pg-reports");
    assert_eq!(reports.tls, PgTlsMode::VerifyFull);
    assert_eq!(reports.ca_file, Some(dir.join("tls/upstream-ca.crt")));
    assert_eq!(reports.approvers(&c.policy), ["bob"]);

    let web = c.target("web-1").expect("web-1");
    assert_eq!(web.kind, TargetKind::Ssh);
    assert!(
        web.host_key
            .as_deref()
            .is_some_and(|k| k.starts_with("ssh-ed25519 "))
    );
    let deploy = web.role("deploy").expect("deploy");
    assert_eq!(
        deploy.private_key_file,
        Some(dir.join("keys/deploy_ed25519"))
    );
    assert!(
        deploy
            .private_key
            .as_ref()
            .is_some_and(|k| k.expose().contains("BEGIN OPENSSH PRIVATE KEY"))
    );
    assert_eq!(deploy.allow, Allow::DEFAULT);
    let tunnel = web.role("tunnel").expect("tunnel");
    assert!(tunnel.allows(Allow::PortForward) && !tunnel.allows(Allow::Shell));
}

#[test]
fn a_file_with_no_keys_gets_the_defaults_relative_to_its_directory() {
    let dir = files();
    let c = load_in(dir.path(), "").expect("empty file is valid");
    let d = Config::embedded_defaults();
    assert_eq!(c.gateway.data_dir, dir.path().join("portcullis-data"));
    assert_eq!(d.gateway.data_dir, PathBuf::from("./portcullis-data"));
    assert_eq!(c.listen.ssh, d.listen.ssh);
    assert_eq!(c.listen.postgres, d.listen.postgres);
    assert_eq!(c.listen.admin, d.listen.admin);
    assert_eq!(c.policy.max_grant, Duration::from_secs(8 * 3600));
    assert_eq!(c.policy.warn_before, Duration::from_secs(300));
    assert_eq!(c.audit.durability, Durability::Batched);
    assert!(c.users.is_empty() && c.targets.is_empty() && c.tls.is_none());
}

#[test]
fn load_resolves_paths_against_the_file_not_the_working_directory() {
    let dir = files();
    let sub = dir.path().join("etc");
    std::fs::create_dir(&sub).expect("mkdir");
    let file = sub.join("portcullis.toml");
    let text = format!(
        "[gateway]\ndata_dir = \"data\"\n{}{}",
        prefix(),
        pg(
            "",
            "[targets.roles.read]\nuser = \"ro\"\npassword_file = \"../pw\""
        )
    );
    std::fs::write(&file, text).expect("write");
    let c = crate::load(&file).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.gateway.data_dir, sub.join("data"));
    let pw = c.targets[0].roles["read"]
        .password
        .as_ref()
        .map(|s| s.expose());
    assert_eq!(pw, Some("file-secret"));

    let missing = crate::load(&sub.join("nope.toml")).expect_err("missing file");
    assert!(
        missing.to_string().contains("cannot read config file"),
        "{missing}"
    );
}
