//! A child process that is terminated (SIGTERM, then SIGKILL) and reaped on drop.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A spawned server whose stdout/stderr go to a log file.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    log: PathBuf,
    stop_signal: Signal,
}

impl Child {
    /// Spawns `cmd` with its output appended to `log`; `stop_signal` ends it gracefully.
    pub fn spawn(cmd: &mut Command, log: &Path, stop_signal: Signal) -> std::io::Result<Child> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let err = out.try_clone()?;
        let inner = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()?;
        Ok(Child {
            inner,
            log: log.to_path_buf(),
            stop_signal,
        })
    }

    pub fn id(&self) -> u32 {
        self.inner.id()
    }

    pub fn try_wait(&mut self) -> std::io::Result<Option<ExitStatus>> {
        self.inner.try_wait()
    }

    /// Kills at once (SIGKILL, no shutdown), as a crash would, and reaps.
    pub fn kill_now(&mut self) -> std::io::Result<ExitStatus> {
        let _ = self.inner.kill();
        self.inner.wait()
    }

    /// The last 2,000 characters of the log, for error messages.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        text[start..].to_string()
    }

    /// Sends the stop signal and waits up to 10 s, then kills. Returns the exit status.
    pub fn stop(&mut self) -> std::io::Result<Option<ExitStatus>> {
        if let Some(status) = self.inner.try_wait()? {
            return Ok(Some(status));
        }
        let pid = Pid::from_raw(self.inner.id() as i32);
        let _ = kill(pid, self.stop_signal);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Some(status) = self.inner.try_wait()? {
                return Ok(Some(status));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.inner.kill();
        self.inner.wait().map(Some)
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
