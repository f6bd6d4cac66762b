//! What the audit derives from a channel's bytes without changing them: for a terminal, the
//! asciicast recording and the command lines typed (read off a `vt100` screen when the user
//! presses Enter); for the sftp subsystem, one operation per request/reply pair.

use std::path::{Path, PathBuf};

use portcullis_protocol::sftp::{Decoder, Op, Request, Response, Tracker};

use super::recording::Rec;

/// Scrollback is not needed: only the cursor's line is ever read.
const SCROLLBACK: usize = 0;
/// A typed line longer than this is cut (a paste of a file is not a command).
const MAX_COMMAND: usize = 4096;

/// Taps one pty channel.
pub struct PtyTap {
    screen: vt100::Parser,
    rec: Option<Rec>,
    /// The user pressed Enter; the line is read off the screen when the shell echoes the
    /// newline (what was typed just before Enter may not have been echoed yet).
    enter_pending: bool,
}

impl std::fmt::Debug for PtyTap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PtyTap")
            .field("rec", &self.rec)
            .finish_non_exhaustive()
    }
}

impl PtyTap {
    pub fn new(
        dir: &Path,
        session: &str,
        channel: u32,
        cols: u32,
        rows: u32,
        term: &str,
        title: &str,
    ) -> PtyTap {
        let (cols, rows) = (clamp(cols, 80), clamp(rows, 24));
        PtyTap {
            screen: vt100::Parser::new(rows, cols, SCROLLBACK),
            rec: Rec::create(dir, session, channel, cols, rows, term, title),
            enter_pending: false,
        }
    }

    /// Bytes the upstream sent to the terminal; returns the command line the user completed
    /// with Enter, once the shell has echoed it.
    pub fn output(&mut self, bytes: &[u8]) -> Option<String> {
        if let Some(r) = &mut self.rec {
            r.output(bytes);
        }
        let mut command = None;
        let mut rest = bytes;
        if self.enter_pending
            && let Some(nl) = bytes.iter().position(|b| *b == b'\n')
            && let Some((line, after)) = bytes.split_at_checked(nl)
        {
            // Everything up to the newline is the echo of the line; the cursor line is then
            // the command as the user sees it (history recall and editing included).
            self.screen.process(line);
            self.enter_pending = false;
            // Full-screen programs (editors, pagers) do not take command lines.
            if !self.screen.screen().alternate_screen() {
                command = self.cursor_command();
            }
            rest = after;
        }
        self.screen.process(rest);
        command
    }

    /// Notes whether the user pressed Enter in `bytes`, without recording them.
    pub fn typed(&mut self, bytes: &[u8]) {
        if bytes.contains(&b'\r') || bytes.contains(&b'\n') {
            self.enter_pending = true;
        }
    }

    /// Records bytes the user typed (after they were forwarded: off the keystroke's path).
    pub fn record_input(&mut self, bytes: &[u8]) {
        if let Some(r) = &mut self.rec {
            r.input(bytes);
        }
    }

    pub fn resize(&mut self, cols: u32, rows: u32) {
        let (cols, rows) = (clamp(cols, 80), clamp(rows, 24));
        self.screen.screen_mut().set_size(rows, cols);
        if let Some(r) = &mut self.rec {
            r.resize(cols, rows);
        }
    }

    /// Closes the recording; its file and sha256.
    pub fn finish(self) -> Option<(PathBuf, String)> {
        self.rec.and_then(Rec::finish)
    }

    fn cursor_command(&self) -> Option<String> {
        let screen = self.screen.screen();
        let (row, _) = screen.cursor_position();
        let (_, cols) = screen.size();
        // A long command wraps; walk back to the row it started on.
        let mut first = row;
        while first > 0 && screen.row_wrapped(first - 1) {
            first -= 1;
        }
        let mut line: String = screen
            .rows(0, cols)
            .skip(usize::from(first))
            .take(usize::from(row - first) + 1)
            .collect();
        line.truncate(floor_char_boundary(&line, MAX_COMMAND));
        let command = strip_prompt(&line).trim();
        (!command.is_empty()).then(|| command.to_string())
    }
}

fn clamp(v: u32, default: u16) -> u16 {
    match u16::try_from(v) {
        Ok(0) => default,
        Ok(v) => v.min(1000),
        Err(_) => 1000,
    }
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    let mut i = max.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Drops a shell prompt ending in `$ `, `# ` or `% ` from the start of a screen line.
fn strip_prompt(line: &str) -> &str {
    let cut = ["$ ", "# ", "% "]
        .iter()
        .filter_map(|p| line.find(p).map(|i| i + p.len()))
        .min();
    match cut {
        Some(i) => line.get(i..).unwrap_or(line),
        None => line,
    }
}

/// Taps one sftp subsystem channel.
#[derive(Debug, Default)]
pub struct SftpTap {
    requests: Decoder<Request>,
    responses: Decoder<Response>,
    tracker: Tracker,
    scratch_req: Vec<Request>,
    scratch_resp: Vec<Response>,
    /// Set when the stream stopped decoding; the bytes still flow, the audit says so once.
    pub broken: bool,
}

impl SftpTap {
    /// Client bytes.
    pub fn client(&mut self, bytes: &[u8]) {
        if self.broken {
            return;
        }
        if self.requests.push(bytes, &mut self.scratch_req).is_err() {
            self.broken = true;
        }
        for r in self.scratch_req.drain(..) {
            self.tracker.request(r);
        }
    }

    /// Server bytes; the operations they complete.
    pub fn server(&mut self, bytes: &[u8]) -> Vec<Op> {
        if self.broken {
            return Vec::new();
        }
        if self.responses.push(bytes, &mut self.scratch_resp).is_err() {
            self.broken = true;
        }
        let mut ops = Vec::new();
        for r in self.scratch_resp.drain(..) {
            ops.extend(self.tracker.response(r));
        }
        ops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tap() -> PtyTap {
        // The recording is not under test here; a dir that cannot be created disables it.
        PtyTap::new(Path::new("/dev/null/none"), "s", 0, 40, 5, "xterm", "t")
    }

    #[test]
    fn typed_line_after_prompt_is_the_command() {
        let mut t = tap();
        assert_eq!(t.output(b"alice@web-1:~$ "), None);
        t.typed(b"l");
        assert_eq!(t.output(b"l"), None);
        t.typed(b"s -la\r");
        // The echo and the newline arrive after Enter, in one chunk with the output.
        assert_eq!(
            t.output(b"s -la\r\ntotal 0\r\nalice@web-1:~$ "),
            Some("ls -la".to_string())
        );
        assert_eq!(t.output(b"more"), None);
    }

    #[test]
    fn wrapped_command_is_joined() {
        let mut t = tap();
        t.output(b"$ ");
        let long = "echo ".to_string() + &"x".repeat(60);
        t.typed(format!("{long}\r").as_bytes());
        t.output(long.as_bytes());
        assert_eq!(t.output(b"\r\n"), Some(long));
    }

    #[test]
    fn empty_line_and_alternate_screen_yield_nothing() {
        let mut t = tap();
        t.output(b"# ");
        t.typed(b"\r");
        assert_eq!(t.output(b"\r\n# "), None);
        t.output(b"\x1b[?1049h:wq");
        t.typed(b"\r");
        assert_eq!(t.output(b"\r\n"), None);
    }

    #[test]
    fn prompts() {
        assert_eq!(strip_prompt("u@h:/tmp$ echo a$ b"), "echo a$ b");
        assert_eq!(strip_prompt("root@h:~# id"), "id");
        assert_eq!(strip_prompt("no prompt"), "no prompt");
    }
}
