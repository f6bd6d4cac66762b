//! A real PostgreSQL server in a temp dir: scram-sha-256 auth, superuser `postgres`, TCP on a
//! free loopback port, settings tuned for throwaway speed (no fsync).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use super::{Child, Result, TestbedError, find_program, free_port, is_root, run, wait_until};

/// The superuser's password in every test cluster.
pub const SUPERUSER_PASSWORD: &str = "portcullis-test-superuser";

/// A running PostgreSQL; stopped and removed on drop.
#[derive(Debug)]
pub struct Postgres {
    pub port: u16,
    pub bin_dir: PathBuf,
    // Field order matters: the server stops before its directory is removed.
    child: Child,
    dir: TempDir,
}

/// The newest `/usr/lib/postgresql/*/bin` that has `initdb`.
fn bin_dir() -> Result<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    let initdb = find_program("initdb", "postgresql", &[])?;
    Ok(initdb.parent().map(Path::to_path_buf).unwrap_or_default())
}

/// The uid/gid of the `postgres` OS user when we are root (initdb refuses root).
fn postgres_owner() -> Result<Option<(u32, u32)>> {
    if !is_root() {
        return Ok(None);
    }
    let user = nix::unistd::User::from_name("postgres")
        .ok()
        .flatten()
        .ok_or_else(|| TestbedError::Setup {
            what: "finding the postgres OS user".into(),
            detail: "no such user; install the Debian package postgresql".into(),
        })?;
    Ok(Some((user.uid.as_raw(), user.gid.as_raw())))
}

impl Postgres {
    /// initdb + start; returns once the server accepts connections.
    pub fn start() -> Result<Postgres> {
        Self::start_with(&[])
    }

    /// Like `start`, with extra `postgresql.conf` lines (e.g. `max_connections = 300`).
    pub fn start_with(extra_conf: &[&str]) -> Result<Postgres> {
        let bin_dir = bin_dir()?;
        let owner = postgres_owner()?;
        let dir = tempfile::Builder::new()
            .prefix("portcullis-pg-")
            .tempdir()?;
        let as_owner = |cmd: &mut Command| {
            if let Some((uid, gid)) = owner {
                cmd.uid(uid).gid(gid);
            }
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))?;
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD)?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin_dir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
            ])
            .arg("--locale=C")
            .arg(format!("--pwfile={}", pwfile.display()))
            .current_dir(dir.path());
        as_owner(&mut initdb);
        run("initdb", &mut initdb)?;

        let port = free_port()?;
        let mut conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\n\
             max_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n",
            dir.path().display()
        );
        for line in extra_conf {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&data.join("postgresql.conf"), &conf)?;
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n",
        )?;

        let log = dir.path().join("postgres.log");
        std::fs::write(&log, "")?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid))?;
        }
        let mut cmd = Command::new(bin_dir.join("postgres"));
        cmd.arg("-D").arg(&data).current_dir(dir.path());
        as_owner(&mut cmd);
        // SIGINT is PostgreSQL's "fast shutdown": abort sessions, stop cleanly.
        let mut child = Child::spawn(&mut cmd, &log, Signal::SIGINT)?;
        let isready = bin_dir.join("pg_isready");
        wait_until("postgres", &mut child, || {
            Command::new(&isready)
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    "postgres",
                ])
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })?;
        Ok(Postgres {
            port,
            bin_dir,
            child,
            dir,
        })
    }

    /// The temp dir holding the cluster and its log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A `psql` command to this server (see [`psql`]).
    pub fn psql(&self, user: &str, password: &str, db: &str) -> Command {
        psql(self.port, user, password, db)
    }

    /// Runs SQL as the superuser on database `postgres`; returns psql's output.
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.sql_in("postgres", sql)
    }

    /// Runs SQL as the superuser on `db`.
    pub fn sql_in(&self, db: &str, sql: &str) -> Result<String> {
        run(
            "psql",
            self.psql("postgres", SUPERUSER_PASSWORD, db)
                .arg("-c")
                .arg(sql),
        )
    }

    /// Creates a login role with a password (and a database of the same name when `db`).
    pub fn create_role(&self, name: &str, password: &str) -> Result<()> {
        self.sql(&format!(
            "CREATE ROLE \"{name}\" LOGIN PASSWORD '{}'",
            password.replace('\'', "''")
        ))?;
        Ok(())
    }

    /// Stops the server now (fast shutdown).
    pub fn stop(&mut self) -> Result<()> {
        self.child.stop()?;
        Ok(())
    }
}

/// A `psql` command to 127.0.0.1:`port` as `user`/`password` on `db`: quiet, unaligned,
/// tuples only, no psqlrc, stopping at the first error. Works for the upstream and for the
/// gateway's PostgreSQL listener alike.
pub fn psql(port: u16, user: &str, password: &str, db: &str) -> Command {
    let mut cmd = Command::new("psql");
    cmd.env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .args([
            "-X",
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
        ])
        .arg("-p")
        .arg(port.to_string())
        .arg("-U")
        .arg(user)
        .arg("-d")
        .arg(db);
    cmd
}

fn append(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    f.write_all(text.as_bytes())
}
