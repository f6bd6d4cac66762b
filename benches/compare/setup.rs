//! Everything the runner measures against: PostgreSQL with a pgbench database, PgBouncer in
//! session mode, sshd, and a Portcullis gateway in front of both with a user holding grants.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;

use anyhow::Context;
use portcullis_gateway::testbed::{self, Child, GatewayProc, Postgres, Sshd};

/// The gateway measured: this build's, or the binary `PORTCULLIS_BENCH_BIN` names (to
/// measure another build, say the commit before a change, with the same runner).
pub fn bin() -> String {
    std::env::var("PORTCULLIS_BENCH_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_portcullis").to_string())
}
pub const PG_ROLE: &str = "bench";
pub const PG_ROLE_PW: &str = "bench-upstream-pw";
pub const USER: &str = "alice";
pub const USER_PW: &str = "alice-gateway-pw";

pub struct Env {
    pub quick: bool,
    pub pg: Postgres,
    pub bouncer_port: u16,
    pub sshd: Sshd,
    pub gw: GatewayProc,
    pub user_key: PathBuf,
    pub dir: tempfile::TempDir,
    bouncer: Child,
}

impl Env {
    pub fn start(quick: bool) -> anyhow::Result<Env> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-bench-")
            .tempdir()?;
        let pg = Postgres::start_with(&["max_connections = 1300"])?;
        pg.create_role(PG_ROLE, PG_ROLE_PW)?;
        pg.sql(&format!("CREATE DATABASE bench OWNER {PG_ROLE}"))?;
        let scale = if quick { "1" } else { "10" };
        testbed::run(
            "pgbench -i",
            Command::new(pg.bin_dir.join("pgbench"))
                .env("PGPASSWORD", PG_ROLE_PW)
                .args(["-i", "-q", "-s", scale, "-h", "127.0.0.1", "-U", PG_ROLE])
                .arg("-p")
                .arg(pg.port.to_string())
                .arg("bench"),
        )?;
        let (bouncer, bouncer_port) = start_pgbouncer(&pg, dir.path())?;
        let sshd = Sshd::start()?;
        let (user_key, user_pub) = testbed::ssh_keygen(dir.path(), "alice_ed25519")?;
        let verifier = portcullis_protocol::scram::generate_verifier(USER_PW);
        let body = format!(
            r#"[policy]
max_grant = "8h"
warn_before = "1m"

[[users]]
name = "{USER}"
ssh_keys = ["{user_pub}"]
password_scram = "{verifier}"

[[targets]]
name = "pg-bench"
kind = "postgres"
address = "127.0.0.1:{pg_port}"
database = "bench"
tls = "disable"
  [targets.roles.rw]
  user = "{PG_ROLE}"
  password = "{PG_ROLE_PW}"

[[targets]]
name = "web"
kind = "ssh"
address = "127.0.0.1:{ssh_port}"
host_key = "{host_key}"
  [targets.roles.ops]
  user = "{ssh_user}"
  private_key_file = "{ssh_key}"
  allow = ["shell", "exec", "sftp", "scp", "port-forward"]
"#,
            pg_port = pg.port,
            ssh_port = sshd.port,
            host_key = sshd.host_key_line,
            ssh_user = sshd.user,
            ssh_key = sshd.client_key_path.display(),
        );
        // Production's log level: the tests' debug logging is not part of what we measure.
        let gw = GatewayProc::start_logging(bin(), &body, "info")?;
        let env = Env {
            quick,
            pg,
            bouncer_port,
            sshd,
            gw,
            user_key,
            dir,
            bouncer,
        };
        env.grant("pg-bench", "8h")?;
        env.grant("web", "8h")?;
        Ok(env)
    }

    /// `grant add` through the real CLI; returns the grant's JSON.
    pub fn grant(&self, target: &str, dur: &str) -> anyhow::Result<serde_json::Value> {
        let out = self
            .gw
            .cli()
            .args([
                "grant", "add", "--json", "--user", USER, "--target", target, "--for", dur,
            ])
            .args(["--reason", "benchmark"])
            .output()?;
        anyhow::ensure!(
            out.status.success(),
            "grant add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    /// Revokes every live grant of the benchmark user.
    pub fn revoke_all(&self) -> anyhow::Result<()> {
        let out = self.gw.cli().args(["grant", "list", "--json"]).output()?;
        let list: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).context("grant list")?;
        for g in list {
            if let Some(id) = g.get("id").and_then(|v| v.as_str()) {
                self.gw.cli().args(["grant", "revoke", id]).output()?;
            }
        }
        Ok(())
    }

    /// The PgBouncer process id (for its CPU time).
    pub fn bouncer_pid(&self) -> u32 {
        self.bouncer.id()
    }

    /// How many sessions of `proto` (`postgres` or `ssh`) the gateway lists as live.
    pub fn live_sessions(&self, proto: &str) -> usize {
        let Ok(out) = self.gw.cli().args(["sessions", "list", "--json"]).output() else {
            return 0;
        };
        let list: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap_or_default();
        list.iter().filter(|s| s["proto"] == proto).count()
    }

    pub fn describe(&self) -> String {
        let version = |cmd: &str, arg: &str| {
            Command::new(cmd)
                .arg(arg)
                .output()
                .map(|o| {
                    let s = String::from_utf8_lossy(&o.stdout).to_string()
                        + &String::from_utf8_lossy(&o.stderr);
                    s.lines().next().unwrap_or("").trim().to_string()
                })
                .unwrap_or_default()
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
            })
            .unwrap_or_default();
        format!(
            "- date: {}\n- machine: {} cores ({cpu}), {}\n- versions: portcullis {}, {}, {}, {}\n- mode: {}",
            chrono_now(),
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            version("uname", "-sr"),
            env!("CARGO_PKG_VERSION"),
            version("postgres", "--version").replace("postgres ", ""),
            version("pgbouncer", "--version"),
            version("ssh", "-V"),
            if self.quick {
                "quick (short runs, smoke only)"
            } else {
                "full"
            },
        )
    }
}

fn chrono_now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// PgBouncer in session mode in front of the bench database (as the postgres OS user when we
/// are root: PgBouncer refuses to run as root).
fn start_pgbouncer(pg: &Postgres, dir: &std::path::Path) -> anyhow::Result<(Child, u16)> {
    let bin = testbed::find_program("pgbouncer", "pgbouncer", &[PathBuf::from("/usr/sbin")])?;
    let bdir = dir.join("pgbouncer");
    std::fs::create_dir_all(&bdir)?;
    let port = testbed::free_port()?;
    std::fs::write(
        bdir.join("userlist.txt"),
        format!("\"{PG_ROLE}\" \"{PG_ROLE_PW}\"\n"),
    )?;
    let ini = bdir.join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\nbench = host=127.0.0.1 port={} dbname=bench\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = scram-sha-256\nauth_file = {}\npool_mode = session\n\
             max_client_conn = 2000\ndefault_pool_size = 1200\nmax_db_connections = 1200\n",
            pg.port,
            bdir.join("userlist.txt").display()
        ),
    )?;
    let mut cmd = Command::new(bin);
    cmd.arg(&ini);
    if testbed::is_root() {
        let user = nix::unistd::User::from_name("postgres")?.context("postgres OS user")?;
        for p in [&bdir, &dir.to_path_buf()] {
            std::os::unix::fs::chown(p, Some(user.uid.as_raw()), Some(user.gid.as_raw()))?;
        }
        for f in ["userlist.txt", "pgbouncer.ini"] {
            std::os::unix::fs::chown(
                bdir.join(f),
                Some(user.uid.as_raw()),
                Some(user.gid.as_raw()),
            )?;
        }
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
    }
    let log = bdir.join("pgbouncer.log");
    std::fs::write(&log, "")?;
    let mut child = Child::spawn(&mut cmd, &log, nix::sys::signal::Signal::SIGINT)?;
    testbed::wait_until("pgbouncer", &mut child, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    Ok((child, port))
}
