//! `portcullis demo`: a throwaway PostgreSQL (with a small sample database) and OpenSSH sshd,
//! a gateway in front of them, a demo user holding a 15-minute grant on both, and the exact
//! commands to paste. Ctrl-C stops and removes everything.
//!
//! The SSH role never logs in as root (`account.rs`): a revoke must be seen to hang up the
//! remote processes, and OpenSSH does that only for non-root logins.

mod account;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cli::{CmdResult, Failure};
use crate::serve::{Bound, OnHangup};
use crate::testbed::{self, Postgres, Sshd, TestbedError};

/// The demo user's gateway password (for psql).
pub const DEMO_PASSWORD: &str = "demo-password";
const UPSTREAM_PG_PASSWORD: &str = "demo-upstream-secret";

const SAMPLE_SQL: &str = "\
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, country text NOT NULL);\
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2), placed_at timestamptz DEFAULT now());\
INSERT INTO customers (name, country) VALUES ('Ada', 'UK'), ('Grace', 'US'), ('Linus', 'FI'), ('Margaret', 'US');\
INSERT INTO orders (customer_id, total) VALUES (1, 42.00), (2, 17.50), (2, 99.90), (3, 5.25), (4, 250.00);\
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app;\
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app;";

/// Starts an upstream; when its server package is missing and we are root, installs it once.
fn start_or_install<T>(
    package: &str,
    start: impl Fn() -> testbed::Result<T>,
) -> Result<T, Failure> {
    match start() {
        Ok(t) => Ok(t),
        Err(TestbedError::Missing { .. }) if testbed::is_root() => {
            eprintln!("portcullis demo: installing {package} (apt-get install -y {package})");
            let ok = Command::new("apt-get")
                .args(["install", "-y", "-q", package])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            if !ok {
                return Err(Failure::failed(format!(
                    "could not install {package}; run: apt-get update && apt-get install -y {package}"
                )));
            }
            start().map_err(|e| Failure::failed(e.to_string()))
        }
        Err(e) => Err(Failure::failed(e.to_string())),
    }
}

/// Runs the demo until Ctrl-C, SIGTERM or its terminal closing (SIGHUP).
pub fn run() -> CmdResult {
    let dir = tempfile::Builder::new()
        .prefix("portcullis-demo-")
        .tempdir()?;
    eprintln!(
        "portcullis demo: starting PostgreSQL and sshd in {}",
        dir.path().display()
    );
    let pg = start_or_install("postgresql", Postgres::start)?;
    pg.create_role("app", UPSTREAM_PG_PASSWORD)?;
    pg.sql("CREATE DATABASE shop OWNER postgres")?;
    pg.sql_in("shop", SAMPLE_SQL)?;
    // Declared before sshd, so that it is dropped after sshd has stopped.
    let account = account::Account::acquire()?;
    let sshd = start_or_install("openssh-server", || {
        Sshd::start_logging_in_as(account.login())
    })?;
    let (demo_key, demo_pub) = testbed::ssh_keygen(dir.path(), "demo_ed25519")?;

    let data_dir = dir.path().join("data");
    let config_path = dir.path().join("portcullis.toml");
    let verifier = portcullis_protocol::scram::generate_verifier(DEMO_PASSWORD);
    let pg_pw_file = dir.path().join("pg-app.password");
    std::fs::write(&pg_pw_file, UPSTREAM_PG_PASSWORD)?;
    std::fs::set_permissions(
        &pg_pw_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    std::fs::write(
        &config_path,
        demo_config(&data_dir, &verifier, &demo_pub, &pg_pw_file, &pg, &sshd),
    )?;
    let g = crate::cli::Global {
        config: Some(config_path.clone()),
        json: false,
        api: None,
        token: None,
        as_user: None,
    };
    let config = crate::cli::load_config(&g)?;
    let exe = std::env::current_exe()?;

    // Grant and print once the gateway has bound its listeners.
    let printer = {
        let (exe, config_path, data_dir, demo_key) = (
            exe.clone(),
            config_path.clone(),
            data_dir.clone(),
            demo_key.clone(),
        );
        std::thread::spawn(move || announce(&exe, &config_path, &data_dir, &demo_key))
    };
    crate::cli::init_tracing_quiet();
    let rt = tokio::runtime::Runtime::new()?;
    let source = crate::reload::ConfigSource::File(config_path.clone());
    // A closed terminal stops the demo as Ctrl-C does; nothing would be left to stop it.
    let served = rt.block_on(crate::serve::run(config, source, OnHangup::Stop));
    if let Ok(Err(f)) = printer.join() {
        eprintln!("portcullis demo: {}", f.message);
    }
    drop(sshd);
    drop(pg);
    drop(account);
    eprintln!("portcullis demo: stopped; removed {}", dir.path().display());
    served.map_err(|e| Failure::failed(e.to_string()))
}

fn demo_config(
    data_dir: &Path,
    verifier: &str,
    demo_pub: &str,
    pg_pw_file: &Path,
    pg: &Postgres,
    sshd: &Sshd,
) -> String {
    format!(
        r#"# Written by `portcullis demo`; removed when the demo stops.
[gateway]
data_dir = "{data}"

[listen]
ssh = "127.0.0.1:0"
postgres = "127.0.0.1:0"
admin = "127.0.0.1:0"

[policy]
max_grant = "8h"
warn_before = "1m"

[[users]]
name = "demo"
ssh_keys = ["{demo_pub}"]
password_scram = "{verifier}"

[[targets]]
name = "pg-demo"
kind = "postgres"
address = "127.0.0.1:{pg_port}"
database = "shop"
tls = "disable"
  [targets.roles.app]
  user = "app"
  password_file = "{pg_pw_file}"

[[targets]]
name = "ssh-demo"
kind = "ssh"
address = "127.0.0.1:{ssh_port}"
host_key = "{host_key}"
  [targets.roles.shell]
  user = "{ssh_user}"
  private_key_file = "{ssh_key}"
  allow = ["shell", "exec", "sftp", "scp", "port-forward"]
"#,
        data = data_dir.display(),
        pg_port = pg.port,
        pg_pw_file = pg_pw_file.display(),
        ssh_port = sshd.port,
        host_key = sshd.host_key_line,
        ssh_user = sshd.user,
        ssh_key = sshd.client_key_path.display(),
    )
}

/// Waits for the gateway, gives the demo user 15-minute grants and prints what to paste.
fn announce(exe: &Path, config: &Path, data_dir: &Path, key: &Path) -> Result<(), Failure> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let bound = loop {
        if let Some(b) = Bound::read(data_dir) {
            break b;
        }
        if std::time::Instant::now() > deadline {
            return Err(Failure::failed("the gateway did not start within 60 s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let cli = |args: &[&str]| -> Result<String, Failure> {
        let out = Command::new(exe)
            .arg("-c")
            .arg(config)
            .args(args)
            .output()?;
        if !out.status.success() {
            return Err(Failure::failed(format!(
                "{}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let grant_id = |out: String| -> String {
        serde_json::from_str::<serde_json::Value>(&out)
            .ok()
            .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
            .unwrap_or(out)
    };
    let reason = "portcullis demo";
    let pg_grant = grant_id(cli(&[
        "grant", "add", "--json", "--user", "demo", "--target", "pg-demo", "--for", "15m",
        "--reason", reason,
    ])?);
    let ssh_grant = grant_id(cli(&[
        "grant", "add", "--json", "--user", "demo", "--target", "ssh-demo", "--for", "15m",
        "--reason", reason,
    ])?);
    println!(
        "{}",
        instructions(exe, config, key, &bound, &pg_grant, &ssh_grant)
    );
    Ok(())
}

fn instructions(
    exe: &Path,
    config: &Path,
    key: &Path,
    b: &Bound,
    pg_grant: &str,
    ssh_grant: &str,
) -> String {
    let pc = format!("{} -c {}", exe.display(), config.display());
    let ssh_opts = format!(
        "-i {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
        key.display()
    );
    let (sp, pp) = (b.ssh.port(), b.postgres.port());
    format!(
        "\n\
Portcullis demo is running. User `demo` holds 15-minute grants {pg_grant} (pg-demo) and {ssh_grant} (ssh-demo).\n\
Paste these in another terminal:\n\n\
  # PostgreSQL through the gateway (TLS, SCRAM; the upstream password is never shown)\n\
  PGPASSWORD={DEMO_PASSWORD} psql \"host=127.0.0.1 port={pp} user=demo dbname=pg-demo sslmode=require\" -c 'select * from customers'\n\n\
  # SSH, a command, and SFTP through the gateway\n\
  ssh {ssh_opts} -p {sp} demo+ssh-demo@127.0.0.1 'hostname; id -un'\n\
  ssh {ssh_opts} -p {sp} demo+ssh-demo@127.0.0.1\n\
  sftp {ssh_opts} -P {sp} demo+ssh-demo@127.0.0.1\n\n\
  # Operate\n\
  {pc} sessions list\n\
  {pc} grant list\n\
  {pc} grant revoke {pg_grant} --reason 'demo over'\n\
  # Revoke the SSH grant: its sessions close and their remote processes are hung up\n\
  {pc} grant revoke {ssh_grant} --reason 'demo over'\n\
  {pc} audit verify\n\
  {pc} audit search --type session.ended\n\
  {pc} replay <SESSION id from the search above>\n\
  {pc} report --since 1h\n\n\
Ctrl-C here stops the gateway, PostgreSQL and sshd and removes everything.\n"
    )
}
