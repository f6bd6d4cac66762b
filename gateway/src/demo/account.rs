//! The OS account the demo's SSH role logs in as on its sshd.
//!
//! SPEC §6 says a revoke hangs up the target's processes. OpenSSH acts on the gateway's
//! `signal` requests only for non-root logins, and a root session's processes without a
//! terminal outlive the connection (ARCHITECTURE.md, "Known limits"), so a demo run as root
//! must not log in as root: it logs in as `portcullis-demo`, an unprivileged system account
//! it creates when missing and deletes when it stops, unless another demo still uses it. Run
//! as any other user, the demo logs in as that user and touches no account.
//!
//! Several demos may run at once (the tests start two): each holds a shared `flock` on
//! [`LOCK`] for as long as it uses the account, and deletes the account only if, as it
//! stops, it can take that lock exclusively: no other demo is using it.

use std::fs::{File, OpenOptions};
use std::process::Command;

use crate::testbed::{self, TestbedError};

/// The account a demo run as root logs in as.
pub const NAME: &str = "portcullis-demo";
const HOME: &str = "/var/lib/portcullis-demo";
/// Marks the account as the demo's own: one an administrator created under the same name is
/// used but never deleted.
const COMMENT: &str = "portcullis demo SSH login";
/// Held shared by every demo using the account (on tmpfs: no demo survives a reboot).
const LOCK: &str = "/run/portcullis-demo.lock";

/// The login the demo's SSH role uses; dropped once the demo's sshd has stopped.
#[derive(Debug)]
pub struct Account {
    /// As root: the shared lock that keeps other demos from deleting the account.
    lock: Option<File>,
}

impl Account {
    /// As root, creates [`NAME`] if it is missing; otherwise there is nothing to set up.
    pub fn acquire() -> Result<Account, TestbedError> {
        if !testbed::is_root() {
            return Ok(Account { lock: None });
        }
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)?;
        lock.lock_shared()?;
        if gecos(NAME).is_none() {
            let created = testbed::run(
                &format!("creating the system account {NAME}"),
                Command::new("useradd").args([
                    "--system",
                    "--user-group",
                    "--create-home",
                    "--home-dir",
                    HOME,
                    "--shell",
                    "/bin/sh",
                    "--comment",
                    COMMENT,
                    NAME,
                ]),
            );
            // Another demo starting at the same moment may have created it first.
            if let Err(e) = created
                && gecos(NAME).is_none()
            {
                return Err(e);
            }
        }
        Ok(Account { lock: Some(lock) })
    }

    /// The upstream login name, or `None` for the user running the demo.
    pub fn login(&self) -> Option<&'static str> {
        self.lock.as_ref().map(|_| NAME)
    }
}

impl Drop for Account {
    /// Deletes the account, with its home, if the demo created it and no other demo is
    /// using it. One of its processes still running (started with `nohup`, say) makes
    /// `userdel` refuse; the user is told how to finish.
    fn drop(&mut self) {
        let Some(lock) = self.lock.take() else {
            return;
        };
        // Let go of the shared lock, then ask for it exclusively: granted only while no
        // other demo holds it (one starting now then waits until the account is deleted,
        // and creates it again).
        let _ = lock.unlock();
        if lock.try_lock().is_err() || gecos(NAME).as_deref() != Some(COMMENT) {
            return;
        }
        let out = Command::new("userdel").args(["--remove", NAME]).output();
        match out {
            Ok(o) if o.status.success() => {
                eprintln!("portcullis demo: deleted the system account {NAME}");
            }
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_string(),
                    Err(e) => e.to_string(),
                };
                eprintln!(
                    "portcullis demo: could not delete the system account {NAME} ({why}); \
                     once its processes have ended: userdel --remove {NAME}"
                );
            }
        }
    }
}

/// The account's comment field, if the account exists.
fn gecos(name: &str) -> Option<String> {
    let user = nix::unistd::User::from_name(name).ok().flatten()?;
    Some(user.gecos.to_string_lossy().into_owned())
}
