//! Terminal recordings in asciicast v2: a header line, then `[time, code, data]` lines with
//! code `o` (output), `i` (input) or `r` (resize, data `"COLSxROWS"`).
//!
//! The format functions are pure; [`Recording`] writes a file under `<data_dir>/recordings/`
//! and takes elapsed time from an `Instant` stored at creation.
//!
//! `replay` finds a session's recordings through its `session.ended` event: put the file
//! name (or path) in `recording` and the sha256 from [`Recording::finish`] in
//! `recording_sha256`; for several channels, `recording` may be a list of
//! `{"file": ..., "sha256": ...}` objects. Replay refuses a file whose sha256 differs.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The header line (without newline) of a recording.
///
/// `SHELL` is empty because the gateway does not know the upstream login shell.
pub fn header(width: u16, height: u16, timestamp: i64, term: &str, title: &str) -> String {
    serde_json::json!({
        "version": 2,
        "width": width,
        "height": height,
        "timestamp": timestamp,
        "env": {"SHELL": "", "TERM": term},
        "title": title,
    })
    .to_string()
}

/// One event line (without newline): `[elapsed seconds, code, data]`.
pub fn event(elapsed: Duration, code: &str, data: &str) -> String {
    let secs = (elapsed.as_micros() as f64) / 1e6;
    let mut s = String::with_capacity(data.len() + 24);
    s.push('[');
    s.push_str(&format!("{secs:.6}"));
    s.push_str(",\"");
    s.push_str(code);
    s.push_str("\",");
    s.push_str(&serde_json::Value::String(data.to_string()).to_string());
    s.push(']');
    s
}

/// Decodes a byte stream as UTF-8 across chunk boundaries: a multi-byte character split
/// between two reads is kept until its end arrives; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// The text of `bytes` that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        let mut rest: &[u8] = &self.pending;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    rest = &[];
                    break;
                }
                Err(e) => {
                    let (good, bad) = rest.split_at(e.valid_up_to());
                    out.push_str(std::str::from_utf8(good).unwrap_or_default());
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{fffd}');
                            rest = &bad[n..];
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            rest = bad;
                            break;
                        }
                    }
                }
            }
        }
        self.pending = rest.to_vec();
        out
    }
}

/// An asciicast v2 recording of one terminal channel, under `<data_dir>/recordings/`.
///
/// ```no_run
/// # fn main() -> std::io::Result<()> {
/// use portcullis_recorder::Recording;
/// let mut rec = Recording::create("data/recordings".as_ref(), "s_1", 0, 80, 24, "xterm", "alice@web-1")?;
/// rec.output(b"$ ")?;
/// rec.input(b"ls\r")?;
/// rec.resize(100, 30)?;
/// let (path, sha256) = rec.finish()?; // goes into session.ended
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Recording {
    pub path: PathBuf,
    out: BufWriter<File>,
    hasher: Sha256,
    started: Instant,
    output: Utf8Stream,
    input: Utf8Stream,
    /// Lines written to the buffer since the last flush.
    dirty: bool,
}

impl Recording {
    /// Creates `<dir>/<session_id>-<channel_no>.cast` (and `dir`) and writes the header.
    pub fn create(
        dir: &Path,
        session_id: &str,
        channel_no: u32,
        width: u16,
        height: u16,
        term: &str,
        title: &str,
    ) -> std::io::Result<Recording> {
        std::fs::create_dir_all(dir)?;
        // Session ids come from the gateway, but keep the name a plain file name regardless.
        let safe: String = session_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let path = dir.join(format!("{safe}-{channel_no}.cast"));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        let mut rec = Recording {
            path,
            out: BufWriter::with_capacity(1 << 16, file),
            hasher: Sha256::new(),
            started: Instant::now(),
            output: Utf8Stream::default(),
            input: Utf8Stream::default(),
            dirty: false,
        };
        let ts = chrono::Utc::now().timestamp();
        rec.line(&header(width, height, ts, term, title))?;
        Ok(rec)
    }

    fn line(&mut self, s: &str) -> std::io::Result<()> {
        self.hasher.update(s.as_bytes());
        self.hasher.update(b"\n");
        self.dirty = true;
        self.out.write_all(s.as_bytes())?;
        self.out.write_all(b"\n")
    }

    /// Records bytes the upstream sent to the terminal.
    pub fn output(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let text = self.output.push(bytes);
        if text.is_empty() {
            return Ok(());
        }
        self.line(&event(self.started.elapsed(), "o", &text))
    }

    /// Records bytes the user typed.
    pub fn input(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let text = self.input.push(bytes);
        if text.is_empty() {
            return Ok(());
        }
        self.line(&event(self.started.elapsed(), "i", &text))
    }

    /// Records a terminal resize.
    pub fn resize(&mut self, width: u16, height: u16) -> std::io::Result<()> {
        self.line(&event(
            self.started.elapsed(),
            "r",
            &format!("{width}x{height}"),
        ))
    }

    /// Hands what is buffered to the file (no fsync), if anything is: a recording being
    /// written is then readable (`replay` of a live session), and what a crash of the
    /// gateway would lose is only what came since. The caller paces it (the gateway: once a
    /// second); a write per event would cost a syscall per keystroke echoed.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if std::mem::take(&mut self.dirty) {
            self.out.flush()?;
        }
        Ok(())
    }

    /// Flushes and fsyncs the file; returns its path and sha256 (hex).
    pub fn finish(mut self) -> std::io::Result<(PathBuf, String)> {
        self.out.flush()?;
        self.out.get_ref().sync_all()?;
        Ok((self.path, hex::encode(self.hasher.finalize())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_makes_the_lines_so_far_readable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut rec =
            Recording::create(dir.path(), "s_1", 0, 80, 24, "xterm", "t").expect("create");
        rec.output(b"secret output\r\n").expect("output");
        let path = rec.path.clone();
        let read = || std::fs::read_to_string(&path).expect("read");
        assert_eq!(read(), "", "buffered");
        rec.flush().expect("flush");
        let text = read();
        assert!(
            text.lines().count() == 2 && text.contains("secret output"),
            "{text}"
        );
    }

    #[test]
    fn format_lines() {
        assert_eq!(
            header(80, 24, 1_700_000_000, "xterm", "t"),
            r#"{"env":{"SHELL":"","TERM":"xterm"},"height":24,"timestamp":1700000000,"title":"t","version":2,"width":80}"#
        );
        assert_eq!(
            event(Duration::from_millis(1500), "o", "a\"\n"),
            r#"[1.500000,"o","a\"\n"]"#
        );
    }

    #[test]
    fn utf8_split_across_chunks_is_kept_whole() {
        let mut s = Utf8Stream::default();
        let bytes = "é€".as_bytes();
        assert_eq!(s.push(&bytes[..1]), "");
        assert_eq!(s.push(&bytes[1..3]), "é");
        assert_eq!(s.push(&bytes[3..]), "€");
        assert_eq!(s.push(b"\xffok"), "\u{fffd}ok");
    }

    #[test]
    fn a_recording_is_valid_v2_and_its_hash_matches() {
        let d = tempfile::tempdir().expect("tempdir");
        let mut r = Recording::create(d.path(), "s/1", 3, 80, 24, "xterm-256color", "alice")
            .expect("create");
        r.output(b"hello \xe2\x82").expect("o");
        r.output(b"\xac\r\n").expect("o");
        r.input(b"ls\r").expect("i");
        r.resize(100, 40).expect("r");
        let (path, sha) = r.finish().expect("finish");
        assert_eq!(
            path.file_name().and_then(|n| n.to_str()),
            Some("s_1-3.cast")
        );
        let bytes = std::fs::read(&path).expect("read");
        assert_eq!(sha, hex::encode(Sha256::digest(&bytes)));
        let text = String::from_utf8(bytes).expect("utf-8");
        let mut lines = text.lines();
        let h: serde_json::Value =
            serde_json::from_str(lines.next().expect("header")).expect("json");
        assert_eq!(h["version"], 2);
        assert_eq!(h["width"], 80);
        let evs: Vec<serde_json::Value> = lines
            .map(|l| serde_json::from_str(l).expect("event"))
            .collect();
        let codes: Vec<&str> = evs.iter().map(|e| e[1].as_str().expect("code")).collect();
        assert_eq!(codes, ["o", "o", "i", "r"]);
        assert_eq!(evs[0][2], "hello ");
        assert_eq!(evs[1][2], "€\r\n");
        assert_eq!(evs[3][2], "100x40");
        assert!(evs.windows(2).all(|w| w[0][0].as_f64() <= w[1][0].as_f64()));
    }
}
