//! A real OpenSSH sshd in a temp dir: temp host key, temp authorized_keys, key auth only, on
//! a free loopback port, logging in as the current OS user, or (`start_unprivileged`, when
//! the tests run as root) as the non-root `postgres` user, or as a user the caller names.

use std::io::Read;
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use super::{
    Child, Result, TestbedError, find_program, free_port, is_root, ssh_keygen, wait_until,
};

/// A running sshd; killed and removed on drop.
#[derive(Debug)]
pub struct Sshd {
    pub port: u16,
    /// The upstream login user (the OS user running the tests, `postgres`, or the one named).
    pub user: String,
    /// The server's host key as an OpenSSH public key line (what `host_key` pins).
    pub host_key_line: String,
    /// A private key authorized to log in as `user`.
    pub client_key_path: PathBuf,
    /// Its public key line.
    pub client_key_line: String,
    child: Child,
    dir: TempDir,
}

impl Sshd {
    /// Generates keys, writes a config and starts `sshd -D -e`; returns once it sends its
    /// banner. Logs in as the current OS user.
    pub fn start() -> Result<Sshd> {
        Sshd::start_as(None, true, 64)
    }

    /// Like `start`, but the server has no sftp subsystem, so it refuses every request to
    /// start one: a target that says no to a start request itself.
    pub fn start_without_sftp() -> Result<Sshd> {
        Sshd::start_as(None, false, 64)
    }

    /// Like `start`, but one connection may hold at most `n` session channels (sshd's
    /// `MaxSessions`): a target that refuses to open a channel.
    pub fn start_with_max_sessions(n: u32) -> Result<Sshd> {
        Sshd::start_as(None, true, n)
    }

    /// Like `start`, but when the tests run as root the login is the `postgres` OS user
    /// (present wherever PostgreSQL is installed): OpenSSH honours `signal` requests only
    /// for privilege-separated, non-root sessions, and the kill tests check exactly that.
    pub fn start_unprivileged() -> Result<Sshd> {
        Sshd::start_as(is_root().then_some("postgres"), true, 64)
    }

    /// Like `start`, but logging in as the OS user `login` (`None`: the current user).
    pub fn start_logging_in_as(login: Option<&str>) -> Result<Sshd> {
        Sshd::start_as(login, true, 64)
    }

    fn start_as(login: Option<&str>, sftp: bool, max_sessions: u32) -> Result<Sshd> {
        let sshd = find_program("sshd", "openssh-server", &[PathBuf::from("/usr/sbin")])?;
        let dir = tempfile::Builder::new()
            .prefix("portcullis-sshd-")
            .tempdir()?;
        // sshd reads authorized_keys as the login user: another user must reach the file.
        let (dir_mode, keys_mode) = if login.is_some() {
            (0o711, 0o644)
        } else {
            (0o700, 0o600)
        };
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(dir_mode))?;
        let (host_key, host_key_line) = ssh_keygen(dir.path(), "host_ed25519")?;
        let (client_key_path, client_key_line) = ssh_keygen(dir.path(), "client_ed25519")?;
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, format!("{client_key_line}\n"))?;
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(keys_mode))?;
        let found = match login {
            Some(name) => nix::unistd::User::from_name(name),
            None => nix::unistd::User::from_uid(nix::unistd::geteuid()),
        };
        let user = found
            .ok()
            .flatten()
            .map(|u| u.name)
            .ok_or_else(|| TestbedError::Setup {
                what: format!(
                    "finding the OS user {}",
                    login.unwrap_or("running the tests")
                ),
                detail: "no passwd entry (is PostgreSQL installed?)".into(),
            })?;
        if is_root() {
            // sshd's privilege separation directory; Debian creates it only at boot.
            std::fs::create_dir_all("/run/sshd")?;
            std::fs::set_permissions("/run/sshd", std::fs::Permissions::from_mode(0o755))?;
        }
        let port = free_port()?;
        let config = dir.path().join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                 PidFile none\nUsePAM {pam}\nStrictModes no\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\n\
                 PermitRootLogin prohibit-password\nAllowTcpForwarding yes\n\
                 AllowAgentForwarding yes\nX11Forwarding no\nPrintMotd no\n\
                 AcceptEnv LANG LC_* PORTCULLIS_*\n{subsystem}\
                 MaxSessions {max_sessions}\nMaxStartups 200\nLogLevel VERBOSE\n",
                host_key.display(),
                authorized.display(),
                // Without PAM, sshd refuses accounts whose password is locked, as the
                // `postgres` account is; PAM's account check does not.
                pam = if login.is_some() { "yes" } else { "no" },
                subsystem = if sftp {
                    "Subsystem sftp internal-sftp\n"
                } else {
                    ""
                },
            ),
        )?;
        let log = dir.path().join("sshd.log");
        let mut cmd = Command::new(&sshd);
        cmd.args(["-D", "-e", "-f"]).arg(&config);
        let mut child = Child::spawn(&mut cmd, &log, Signal::SIGTERM)?;
        wait_until("sshd", &mut child, || banner(port))?;
        Ok(Sshd {
            port,
            user,
            host_key_line,
            client_key_path,
            client_key_line,
            child,
            dir,
        })
    }

    /// The listening sshd's process id (its connections are its descendants).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The temp dir holding keys, config and log.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// The sshd log so far.
    pub fn log(&self) -> String {
        self.child.log_tail()
    }

    /// An `ssh` command to this server as `user` with the authorized client key, no host-key
    /// prompts, batch mode.
    pub fn ssh(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(client_options())
            .arg("-i")
            .arg(&self.client_key_path)
            .arg("-p")
            .arg(self.port.to_string())
            .arg(format!("{}@127.0.0.1", self.user));
        cmd
    }

    /// Stops sshd now.
    pub fn stop(&mut self) -> Result<()> {
        self.child.stop()?;
        Ok(())
    }
}

/// OpenSSH client options for throwaway servers: batch mode, no known_hosts.
pub fn client_options() -> [&'static str; 8] {
    [
        "-o",
        "BatchMode=yes",
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "LogLevel=ERROR",
    ]
}

/// Does something on `port` answer with an SSH banner?
fn banner(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut buf = [0u8; 8];
    s.read_exact(&mut buf).is_ok() && buf.starts_with(b"SSH-2.0")
}
