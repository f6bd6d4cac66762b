//! A real terminal for tests: a tmux server on its own socket, one session named `t`,
//! killed on drop. Shared by the tests that drive programs through a terminal.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub struct Tmux {
    pub socket: PathBuf,
}

impl Tmux {
    /// A `tmux` command on this server's socket.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-S").arg(&self.socket);
        c
    }

    /// Starts session `t`, `width`×`height`, running `argv`.
    pub fn start(&self, width: u16, height: u16, argv: &[&str]) {
        let ok = self
            .cmd()
            .args(["new-session", "-d", "-s", "t", "-x"])
            .arg(width.to_string())
            .arg("-y")
            .arg(height.to_string())
            .args(argv)
            .status()
            .expect("tmux");
        assert!(ok.success(), "tmux new-session");
    }

    /// Types `keys` (tmux key names, or literal text after `-l`) into the terminal.
    pub fn keys(&self, keys: &[&str]) {
        let ok = self
            .cmd()
            .args(["send-keys", "-t", "t"])
            .args(keys)
            .status()
            .expect("tmux");
        assert!(ok.success(), "tmux send-keys");
    }

    /// What the terminal shows now.
    pub fn screen(&self) -> String {
        let out = self.cmd().args(["capture-pane", "-p", "-t", "t"]).output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    /// Polls the screen (a terminal has no event to await) until `want` shows; returns it.
    pub fn wait_screen(&self, want: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if s.contains(want) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "never saw {want:?} on screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd().arg("kill-server").status();
    }
}
