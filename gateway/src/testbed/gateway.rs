//! A `portcullis serve` child with its own config and data dir, listening on free ports.

use std::path::{Path, PathBuf};
use std::process::Command;

use nix::sys::signal::Signal;
use tempfile::TempDir;

use super::{Child, Result, TestbedError, wait_until};
use crate::serve::Bound;

/// A running gateway; stopped (SIGTERM) and its temp dir removed on drop.
#[derive(Debug)]
pub struct GatewayProc {
    pub bin: PathBuf,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    pub bound: Bound,
    pub admin_token: String,
    /// `RUST_LOG` of the gateway process.
    log_filter: String,
    child: Option<Child>,
    dir: TempDir,
}

impl GatewayProc {
    /// Writes a config — `[gateway] data_dir` and `[listen]` on port 0 in a temp dir, then
    /// `body` (users, targets, policy, ...) — and starts `bin serve` with it.
    pub fn start(bin: impl AsRef<Path>, body: &str) -> Result<GatewayProc> {
        GatewayProc::start_logging(bin, body, "info,portcullis=debug")
    }

    /// Like `start`, with `RUST_LOG` set to `filter`: benchmarks pass production's `info`, so
    /// the debug logging tests want costs the measured gateway nothing.
    pub fn start_logging(bin: impl AsRef<Path>, body: &str, filter: &str) -> Result<GatewayProc> {
        let dir = tempfile::Builder::new()
            .prefix("portcullis-gw-")
            .tempdir()?;
        let data_dir = dir.path().join("data");
        let config_path = dir.path().join("portcullis.toml");
        std::fs::write(&config_path, config_text(&data_dir, body))?;
        let mut gw = GatewayProc {
            bin: bin.as_ref().to_path_buf(),
            config_path,
            data_dir,
            bound: Bound {
                ssh: ([127, 0, 0, 1], 0).into(),
                postgres: ([127, 0, 0, 1], 0).into(),
                admin: ([127, 0, 0, 1], 0).into(),
            },
            admin_token: String::new(),
            log_filter: filter.to_owned(),
            child: None,
            dir,
        };
        gw.spawn()?;
        Ok(gw)
    }

    fn spawn(&mut self) -> Result<()> {
        let listen = self.data_dir.join("listen.json");
        let _ = std::fs::remove_file(&listen);
        let mut cmd = Command::new(&self.bin);
        cmd.arg("serve")
            .arg("-c")
            .arg(&self.config_path)
            .env("RUST_LOG", &self.log_filter);
        let log = self.dir.path().join("gateway.log");
        let mut child = Child::spawn(&mut cmd, &log, Signal::SIGTERM)?;
        wait_until("portcullis serve", &mut child, || listen.is_file())?;
        let text = std::fs::read_to_string(&listen)?;
        self.bound = serde_json::from_str(&text).map_err(|e| TestbedError::Setup {
            what: "reading listen.json".into(),
            detail: e.to_string(),
        })?;
        self.admin_token = std::fs::read_to_string(self.data_dir.join("admin.token"))?
            .trim()
            .to_string();
        self.child = Some(child);
        Ok(())
    }

    /// Stops the gateway (SIGTERM, clean shutdown) and starts it again with the same config
    /// and data dir.
    pub fn restart(&mut self) -> Result<()> {
        self.stop()?;
        self.spawn()
    }

    /// Kills the gateway with SIGKILL, as a crash would (nothing shut down, nothing
    /// flushed), and starts it again with the same config and data dir.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            c.kill_now()?;
        }
        self.spawn()
    }

    /// Stops the gateway; returns whether it exited successfully.
    pub fn stop(&mut self) -> Result<bool> {
        match self.child.take() {
            Some(mut c) => Ok(c.stop()?.map(|s| s.success()).unwrap_or(false)),
            None => Ok(true),
        }
    }

    /// Rewrites the config with a new `body` (same data dir and listeners) and sends SIGHUP,
    /// so the running gateway reloads it. The caller awaits the `config.reloaded` (or
    /// `config.reload_failed`) audit event to know it was applied.
    pub fn reconfigure(&self, body: &str) -> Result<()> {
        self.reconfigure_raw(&config_text(&self.data_dir, body))
    }

    /// Replaces the config file with `text` as it stands (even if invalid) and sends SIGHUP.
    pub fn reconfigure_raw(&self, text: &str) -> Result<()> {
        let tmp = self.config_path.with_extension("toml.tmp");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, &self.config_path)?;
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, Signal::SIGHUP).map_err(|e| TestbedError::Setup {
            what: "sending SIGHUP to the gateway".into(),
            detail: e.to_string(),
        })
    }

    /// The gateway's process id (for memory measurements).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The gateway's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default()
    }

    /// A `portcullis` CLI command pointed at this gateway's config, API and token.
    pub fn cli(&self) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("-c")
            .arg(&self.config_path)
            .arg("--api")
            .arg(format!("http://{}", self.bound.admin))
            .env("PORTCULLIS_TOKEN", &self.admin_token)
            .env_remove("PORTCULLIS_PASSWORD");
        cmd
    }

    /// The temp dir holding config, data dir and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// `[gateway] data_dir` and `[listen]` on port 0, then `body`.
fn config_text(data_dir: &Path, body: &str) -> String {
    format!(
        "[gateway]\ndata_dir = \"{}\"\n\n[listen]\nssh = \"127.0.0.1:0\"\n\
         postgres = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n\n{body}\n",
        data_dir.display()
    )
}
