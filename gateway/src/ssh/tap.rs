//! What the audit derives from a channel's bytes without changing them: for a terminal, the
//! asciicast recording and the command lines typed (read off a `vt100` screen when the
//! shell echoes the user's Enter); for sftp (the subsystem, or an exec of an sftp-server
//! binary), one `ssh.sftp` event per auditable request/reply pair.
//!
//! Which output newline is the echo of which Enter: the user may type ahead or paste several
//! lines, and output of an earlier command may still be arriving when Enter is pressed. So
//! each Enter is queued with the line as typed, and a newline in the output completes the
//! oldest queued line the screen's cursor line ends with. A line the shell never echoed (a
//! password) is dropped once a later one is matched. A line edited with control keys (tab
//! completion, history, cursor keys) cannot be matched by its text; it completes at the next
//! newline and the command is read off the screen, prompt removed.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};

use portcullis_protocol::sftp::{Decoder, Op, Request, Response, Tracker, Unanswered};
use portcullis_recorder::Event;

use super::audit::Ident;
use super::policy::Start;
use super::recording::Rec;

/// Scrollback is not needed: only the cursor's line is ever read.
const SCROLLBACK: usize = 0;
/// A typed line longer than this is cut (a paste of a file is not a command).
const MAX_COMMAND: usize = 4096;
/// Enters whose echo has not been seen yet beyond this many: the oldest is forgotten.
const MAX_PENDING: usize = 32;

/// Taps one pty channel.
pub struct PtyTap {
    screen: vt100::Parser,
    rec: Option<Rec>,
    /// Lines completed with Enter whose echo has not been seen yet, oldest first: the text
    /// as typed, or `None` when it was edited with control keys.
    pending: VecDeque<Option<String>>,
    /// What was typed since the last Enter.
    line: Vec<u8>,
    /// The current line was edited with control keys, so its text is only on the screen.
    edited: bool,
    /// The last byte typed was `\r` (a `\n` right after it is the same Enter).
    after_cr: bool,
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
            pending: VecDeque::new(),
            line: Vec::new(),
            edited: false,
            after_cr: false,
        }
    }

    /// Bytes the upstream sent to the terminal (stdout); returns the command lines whose
    /// echo they completed, in order.
    pub fn output(&mut self, bytes: &[u8]) -> Vec<String> {
        if let Some(r) = &mut self.rec {
            r.output(bytes);
        }
        let mut commands = Vec::new();
        let mut rest = bytes;
        while !self.pending.is_empty()
            && let Some(nl) = rest.iter().position(|b| *b == b'\n')
            && let Some((line, after)) = rest.split_at_checked(nl)
        {
            // Everything up to the newline is on the screen; the cursor line is then the
            // line the newline ends (history recall and editing included).
            self.screen.process(line);
            commands.extend(self.echoed());
            self.screen.process(b"\n");
            rest = after.get(1..).unwrap_or_default();
        }
        self.screen.process(rest);
        commands
    }

    /// Bytes on the terminal that cannot be an echo (stderr): screen and recording only.
    pub fn output_stderr(&mut self, bytes: &[u8]) {
        if let Some(r) = &mut self.rec {
            r.output(bytes);
        }
        self.screen.process(bytes);
    }

    /// At an output newline: the command it completes, if it is the echo of a pending Enter.
    fn echoed(&mut self) -> Option<String> {
        // Full-screen programs (editors, pagers) do not take command lines.
        if self.screen.screen().alternate_screen() {
            self.pending.pop_front();
            return None;
        }
        let screen_line = self.cursor_line();
        let on_screen = screen_line.trim_end();
        let at = self.pending.iter().position(|typed| match typed {
            Some(t) => on_screen.ends_with(t.trim_end()),
            None => true,
        })?;
        // Lines before the matched one were never echoed (a password, say): forget them.
        let typed = self.pending.drain(..=at).next_back().flatten();
        let command = match typed {
            Some(t) => t.trim().to_string(),
            None => strip_prompt(on_screen).trim().to_string(),
        };
        (!command.is_empty()).then_some(command)
    }

    /// Notes the lines the user completed with Enter in `bytes`, without recording them.
    pub fn typed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            let after_cr = std::mem::replace(&mut self.after_cr, b == b'\r');
            // Keys a full-screen program takes (a pager's `q`, an editor's text) do not start
            // the shell's next command line: kept, they would prefix it, and its echo would
            // never match (`q` then `id` is no `qid`), so the command went unlogged.
            if self.screen.screen().alternate_screen() && !matches!(b, b'\r' | b'\n') {
                self.line.clear();
                self.edited = false;
                continue;
            }
            match b {
                b'\n' if after_cr => {}
                b'\r' | b'\n' => {
                    let text = String::from_utf8_lossy(&self.line).into_owned();
                    self.pending.push_back((!self.edited).then_some(text));
                    if self.pending.len() > MAX_PENDING {
                        self.pending.pop_front();
                    }
                    self.line.clear();
                    self.edited = false;
                }
                // Backspace: drop the last character typed.
                0x7f | 0x08 => {
                    while let Some(last) = self.line.pop() {
                        if last & 0xc0 != 0x80 {
                            break;
                        }
                    }
                }
                // Ctrl-C abandons the line.
                0x03 => {
                    self.line.clear();
                    self.edited = false;
                }
                // Tab, escape sequences, other control keys: the screen has the result.
                0x00..=0x1f => self.edited = true,
                _ if self.line.len() < MAX_COMMAND => self.line.push(b),
                _ => {}
            }
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

    /// Hands the recording's buffered lines to its file (paced by the channel: see
    /// `channel::flush_recording_every`).
    pub fn flush_recording(&mut self) {
        if let Some(r) = &mut self.rec {
            r.flush();
        }
    }

    /// Closes the recording; its file and sha256.
    pub fn finish(self) -> Option<(PathBuf, String)> {
        self.rec.and_then(Rec::finish)
    }

    /// The cursor's line, joined with the rows it wrapped from, cut at [`MAX_COMMAND`].
    fn cursor_line(&self) -> String {
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
        line
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

/// Does this start request run an SFTP server, so the channel's bytes are SFTP packets?
///
/// The sftp subsystem, and an exec of the server binary itself: `sftp -s
/// /usr/lib/openssh/sftp-server` runs it as a command, which a role allowing only `exec`
/// permits, and its file operations must be logged as the subsystem's are. `internal-sftp`
/// is matched too, for servers whose forced command maps it. A command that only looks like
/// one and does not speak SFTP stops the decoder at its first bad length, and nothing more
/// is derived from it; an sftp-server started some other way (`sh -c ...`) is an exec like
/// any other, logged by its command line.
pub fn speaks_sftp(start: &Start) -> bool {
    match start {
        Start::Subsystem(name) => name == "sftp",
        Start::Exec(command) => {
            let first = command.split_whitespace().next().unwrap_or("");
            ["sftp-server", "internal-sftp"]
                .iter()
                .any(|name| first == *name || first.ends_with(&format!("/{name}")))
        }
        Start::Shell => false,
    }
}

/// The `ssh.sftp` event for one operation on channel `channel`.
///
/// A link's target is `link_target`: `target` is every event's SSH target.
pub fn sftp_event(ident: &Ident, op: Op, channel: &str) -> Event {
    let attrs = op.attrs.unwrap_or_default();
    let bytes = op
        .bytes_copied
        .or_else(|| op.bytes_read.zip(op.bytes_written).map(|(r, w)| r + w));
    ident
        .event("ssh.sftp")
        .with("op", op.op)
        .with("path", op.path)
        .with("to", op.to)
        .with("link_target", op.link_target)
        .with("extension", op.extension)
        .with("pflags", op.pflags)
        .with("mode", attrs.mode())
        .with("uid", attrs.uid)
        .with("gid", attrs.gid)
        .with("size", attrs.size)
        .with("atime", attrs.atime)
        .with("mtime", attrs.mtime)
        .with("offset", op.offset)
        .with("to_offset", op.to_offset)
        .with("length", op.length)
        .with("bytes_read", op.bytes_read)
        .with("bytes_written", op.bytes_written)
        .with("bytes", bytes)
        .with("error", op.error)
        .with("interrupted", op.interrupted.then_some(true))
        .with("outcome_unknown", op.unanswered.map(Unanswered::as_str))
        .with("channel", channel)
}

/// Taps one sftp channel.
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
    /// Client bytes; the operations to log before they go on: requests whose reply could
    /// not be told apart from another's (see [`Tracker`]), logged with the outcome unknown.
    pub fn client(&mut self, bytes: &[u8]) -> Vec<Op> {
        let mut ops = Vec::new();
        if self.broken {
            return ops;
        }
        if self.requests.push(bytes, &mut self.scratch_req).is_err() {
            self.broken = true;
        }
        for r in self.scratch_req.drain(..) {
            self.tracker.request(r, &mut ops);
        }
        ops
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
            self.tracker.response(r, &mut ops);
        }
        ops
    }

    /// The channel ended: every request still awaiting its reply, outcome unknown, then a
    /// close, marked interrupted, for every file still open.
    pub fn finish(&mut self) -> Vec<Op> {
        self.tracker.finish()
    }
}

/// Most lines a shell without a terminal logs from its input; past that one event says the
/// rest was not logged (a script of this many lines is an upload, not commands).
const MAX_STDIN_LINES: usize = 10_000;

/// Taps the input of a shell that has no terminal (`ssh -T host`, `ssh host < script`):
/// there is no echo to read commands off, and none is needed, since the shell reads its
/// commands from exactly these bytes. Each line is one command, cut at [`MAX_COMMAND`].
#[derive(Debug, Default)]
pub struct StdinLines {
    partial: Vec<u8>,
    /// The partial line was cut: the rest up to its newline is dropped.
    cut: bool,
    logged: usize,
}

impl StdinLines {
    /// The lines `data` completes.
    pub fn push(&mut self, data: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for part in data.split_inclusive(|&b| b == b'\n') {
            let (body, ends) = match part.strip_suffix(b"\n") {
                Some(b) => (b, true),
                None => (part, false),
            };
            let room = MAX_COMMAND.saturating_sub(self.partial.len());
            if body.len() > room {
                self.cut = true;
            }
            self.partial
                .extend_from_slice(body.get(..room.min(body.len())).unwrap_or_default());
            if ends {
                lines.extend(self.take());
            }
        }
        lines
    }

    /// The last line, when the input ended without a newline.
    pub fn finish(&mut self) -> Option<String> {
        self.take()
    }

    fn take(&mut self) -> Option<String> {
        let bytes = std::mem::take(&mut self.partial);
        let cut = std::mem::take(&mut self.cut);
        let mut line = String::from_utf8_lossy(&bytes)
            .trim_end_matches('\r')
            .to_owned();
        if line.trim().is_empty() || self.logged > MAX_STDIN_LINES {
            return None;
        }
        self.logged += 1;
        if self.logged > MAX_STDIN_LINES {
            return Some(format!(
                "<more input lines not logged after {MAX_STDIN_LINES}>"
            ));
        }
        if cut {
            line.push_str(portcullis_recorder::TRUNCATED);
        }
        Some(line)
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
        assert!(t.output(b"alice@web-1:~$ ").is_empty());
        t.typed(b"l");
        assert!(t.output(b"l").is_empty());
        t.typed(b"s -la\r");
        // The echo and the newline arrive after Enter, in one chunk with the output.
        assert_eq!(t.output(b"s -la\r\ntotal 0\r\nalice@web-1:~$ "), ["ls -la"]);
        assert!(t.output(b"more").is_empty());
    }

    #[test]
    fn typed_ahead_and_pasted_lines_are_each_recorded() {
        let mut t = tap();
        t.output(b"$ ");
        t.typed(b"ls\rpwd\r\n");
        assert_eq!(
            t.output(b"ls\r\nfile\r\n$ pwd\r\n/home\r\n$ "),
            ["ls", "pwd"]
        );
    }

    #[test]
    fn output_before_the_echo_is_not_taken_for_the_command() {
        let mut t = tap();
        t.output(b"$ sleep 1; echo done\r\n");
        t.typed(b"touch b\r");
        // The earlier command's output arrives after Enter, then the echo.
        assert!(t.output(b"done\r\n$ ").is_empty());
        assert_eq!(t.output(b"touch b\r\n$ "), ["touch b"]);
    }

    #[test]
    fn an_unechoed_password_is_never_recorded() {
        let mut t = tap();
        t.output(b"[sudo] password for alice: ");
        t.typed(b"hunter2\r");
        assert!(t.output(b"\r\n").is_empty());
        t.typed(b"id\r");
        assert_eq!(t.output(b"# id\r\nuid=0(root)\r\n# "), ["id"]);
        assert!(t.pending.is_empty());
    }

    #[test]
    fn edited_lines_are_read_off_the_screen() {
        let mut t = tap();
        t.output(b"$ ");
        // Tab completion: the shell completes "ec" to "echo ".
        t.typed(b"ec\t");
        t.output(b"ec");
        t.output(b"ho ");
        t.typed(b"hi\r");
        assert_eq!(t.output(b"hi\r\nhi\r\n$ "), ["echo hi"]);
        // Backspace is applied to the typed text; a prompt marker inside it is kept.
        t.typed(b"echo $ xy\x7f\r");
        assert_eq!(t.output(b"echo $ xy\x08 \x08\r\n$ x\r\n$ "), ["echo $ x"]);
        // Ctrl-C abandons the line; nothing is pending.
        t.typed(b"rm -rf /\x03");
        assert!(t.output(b"^C\r\n$ ").is_empty());
        assert!(t.pending.is_empty());
    }

    #[test]
    fn wrapped_command_is_joined() {
        let mut t = tap();
        t.output(b"$ ");
        let long = "echo ".to_string() + &"x".repeat(60);
        t.typed(format!("{long}\r").as_bytes());
        t.output(long.as_bytes());
        assert_eq!(t.output(b"\r\n"), [long]);
    }

    #[test]
    fn empty_line_and_alternate_screen_yield_nothing() {
        let mut t = tap();
        t.output(b"# ");
        t.typed(b"\r");
        assert!(t.output(b"\r\n# ").is_empty());
        t.output(b"\x1b[?1049h:wq");
        t.typed(b"\r");
        assert!(t.output(b"\r\n").is_empty());
        assert!(t.pending.is_empty());
    }

    #[test]
    fn keys_a_full_screen_program_took_do_not_prefix_the_next_command() {
        let mut t = tap();
        t.output(b"$ ");
        t.typed(b"less f\r");
        assert_eq!(t.output(b"less f\r\n\x1b[?1049hcontents"), ["less f"]);
        // `q` quits the pager; no Enter follows it.
        t.typed(b"q");
        t.output(b"\x1b[?1049l$ ");
        t.typed(b"id\r");
        assert_eq!(t.output(b"id\r\nuid=0(root)\r\n$ "), ["id"]);
        assert!(t.pending.is_empty());
    }

    #[test]
    fn sftp_servers_started_by_exec_are_tapped_as_sftp() {
        let exec = |c: &str| speaks_sftp(&Start::Exec(c.into()));
        assert!(speaks_sftp(&Start::Subsystem("sftp".into())));
        assert!(exec("/usr/lib/openssh/sftp-server"));
        assert!(exec("/usr/libexec/sftp-server -l INFO"));
        assert!(exec("sftp-server"));
        assert!(exec("internal-sftp"));
        assert!(!exec("ls /usr/lib/openssh/sftp-server"));
        assert!(!exec("/tmp/sftp-server.sh"));
        assert!(!exec("scp -t /tmp"));
        assert!(!speaks_sftp(&Start::Subsystem("netconf".into())));
        assert!(!speaks_sftp(&Start::Shell));
    }

    /// The fields a reviewer reads, and the common `target` (the SSH target) left alone
    /// by a link's own target.
    #[test]
    fn sftp_events_name_links_attributes_and_copies() {
        let ident = Ident {
            session: "s1".into(),
            user: "alice".into(),
            target: "web-1".into(),
            role: "deploy".into(),
            grant: "g1".into(),
            client: "127.0.0.1".into(),
        };
        let link = Op {
            op: "symlink",
            path: "/d/b".into(),
            link_target: Some("a".into()),
            ..Op::default()
        };
        let ev = sftp_event(&ident, link, "0").0;
        assert_eq!(ev["target"], "web-1");
        assert_eq!(ev["link_target"], "a");
        assert_eq!(ev["path"], "/d/b");
        assert!(!ev.contains_key("bytes"));

        let chmod = Op {
            op: "setstat",
            path: "/f".into(),
            attrs: Some(portcullis_protocol::sftp::Attrs {
                permissions: Some(0o100640),
                size: Some(0),
                ..Default::default()
            }),
            ..Op::default()
        };
        let ev = sftp_event(&ident, chmod, "0").0;
        assert_eq!((&ev["mode"], &ev["size"]), (&"0640".into(), &0.into()));
        assert!(!ev.contains_key("uid") && !ev.contains_key("mtime"));

        let copy = Op {
            op: "copy",
            path: "/a".into(),
            to: Some("/b".into()),
            length: Some(0),
            bytes_copied: Some(10),
            ..Op::default()
        };
        let ev = sftp_event(&ident, copy, "0").0;
        assert_eq!((&ev["to"], &ev["bytes"]), (&"/b".into(), &10.into()));

        let close = Op {
            op: "close",
            path: "/e".into(),
            bytes_read: Some(0),
            bytes_written: Some(0),
            ..Op::default()
        };
        assert_eq!(sftp_event(&ident, close, "0").0["bytes"], 0);

        // A remove sent again under its id before the reply: logged, its outcome unknown,
        // and not mistaken for one that succeeded (no `error` either way).
        let remove = Op {
            op: "remove",
            path: "/tmp/x".into(),
            unanswered: Some(Unanswered::IdReused),
            ..Op::default()
        };
        let ev = sftp_event(&ident, remove, "0").0;
        assert_eq!(ev["outcome_unknown"], "id_reused");
        assert!(!ev.contains_key("error"));
        let done = Op {
            op: "remove",
            path: "/tmp/x".into(),
            ..Op::default()
        };
        assert!(
            !sftp_event(&ident, done, "0")
                .0
                .contains_key("outcome_unknown")
        );
    }

    #[test]
    fn prompts() {
        assert_eq!(strip_prompt("u@h:/tmp$ echo a$ b"), "echo a$ b");
        assert_eq!(strip_prompt("root@h:~# id"), "id");
        assert_eq!(strip_prompt("no prompt"), "no prompt");
    }

    #[test]
    fn stdin_lines_are_the_commands_of_a_shell_without_a_terminal() {
        let mut t = StdinLines::default();
        assert_eq!(t.push(b"echo one\nech"), ["echo one"]);
        assert_eq!(t.push(b"o two\r\n\n  \nexit 5"), ["echo two"]);
        assert_eq!(t.finish().as_deref(), Some("exit 5"));
        assert_eq!(t.finish(), None);
        let long = vec![b'x'; MAX_COMMAND + 10];
        let lines = t.push(&[&long[..], b"\nnext\n"].concat());
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(portcullis_recorder::TRUNCATED));
        assert_eq!(
            lines[0].len(),
            MAX_COMMAND + portcullis_recorder::TRUNCATED.len()
        );
        assert_eq!(lines[1], "next");
        let mut t = StdinLines::default();
        let many = "true\n".repeat(MAX_STDIN_LINES + 5);
        let lines = t.push(many.as_bytes());
        assert_eq!(lines.len(), MAX_STDIN_LINES + 1);
        assert!(lines[MAX_STDIN_LINES].starts_with("<more input lines"));
    }
}
