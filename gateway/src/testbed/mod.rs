//! Real upstreams for tests and the demo: a PostgreSQL server, an OpenSSH sshd and a
//! `portcullis serve` child, each in a temp dir on a free loopback port, each killed and
//! removed on drop (also when a test panics).
//!
//! As root, PostgreSQL runs as the `postgres` OS user (initdb refuses root) and sshd gets its
//! privilege-separation directory. A missing binary is an error naming the Debian package.

mod gateway;
mod in_process;
pub mod postgres;
mod process;
mod sshd;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

pub use gateway::GatewayProc;
pub use in_process::in_process_gateway;
pub use postgres::Postgres;
pub use process::Child;
pub use sshd::{Sshd, client_options};

/// What went wrong starting a test upstream.
#[derive(Debug, thiserror::Error)]
pub enum TestbedError {
    /// A program we need is not installed.
    #[error(
        "{program} not found: install the Debian package {package} (apt-get install -y {package})"
    )]
    Missing { program: String, package: String },
    /// A setup command failed.
    #[error("{what} failed: {detail}")]
    Setup { what: String, detail: String },
    /// The server did not become ready.
    #[error("{what} did not become ready: {detail}")]
    NotReady { what: String, detail: String },
    /// Filesystem or process error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T> = std::result::Result<T, TestbedError>;

/// A port that was free a moment ago on 127.0.0.1 (for servers that cannot bind port 0).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Is this process running as root?
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Finds `program` on PATH or in `extra` directories.
pub fn find_program(program: &str, package: &str, extra: &[PathBuf]) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::env::split_paths(&path).chain(extra.iter().cloned());
    for dir in dirs {
        let p = dir.join(program);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(TestbedError::Missing {
        program: program.into(),
        package: package.into(),
    })
}

/// Runs a setup command to completion; a non-zero exit is an error with its stderr.
pub fn run(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(TestbedError::Setup {
            what: what.into(),
            detail: format!(
                "{}: {}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                String::from_utf8_lossy(&out.stdout).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Generates an ed25519 key pair at `dir/name`; returns the private key path and the public
/// key line.
pub fn ssh_keygen(dir: &Path, name: &str) -> Result<(PathBuf, String)> {
    let keygen = find_program("ssh-keygen", "openssh-client", &[])?;
    let path = dir.join(name);
    run(
        "ssh-keygen",
        Command::new(keygen)
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(name)
            .arg("-f")
            .arg(&path),
    )?;
    let public = std::fs::read_to_string(path.with_extension("pub"))?;
    Ok((path, public.trim().to_string()))
}

/// Polls `ready` until it returns true or `what` times out (30 s). Used only while a server
/// starts, where there is no event to await.
pub fn wait_until(what: &str, child: &mut Child, mut ready: impl FnMut() -> bool) -> Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if ready() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            return Err(TestbedError::NotReady {
                what: what.into(),
                detail: format!("exited with {status}; log: {}", child.log_tail()),
            });
        }
        if std::time::Instant::now() > deadline {
            return Err(TestbedError::NotReady {
                what: what.into(),
                detail: format!("timed out; log: {}", child.log_tail()),
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
}
