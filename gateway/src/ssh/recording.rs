//! The asciicast recording of one terminal channel, over the recorder's
//! `portcullis_recorder::Recording`. A recording that cannot be written is logged and
//! dropped: the session goes on, and `session.ended` then names no recording.

use std::path::{Path, PathBuf};

use portcullis_recorder::Recording;
use tracing::warn;

/// One channel's recording; stops recording after the first write error.
#[derive(Debug)]
pub struct Rec {
    inner: Option<Recording>,
}

impl Rec {
    /// Starts `<dir>/<session>-<channel>.cast` with the terminal's size and type.
    pub fn create(
        dir: &Path,
        session: &str,
        channel: u32,
        cols: u16,
        rows: u16,
        term: &str,
        title: &str,
    ) -> Option<Rec> {
        match Recording::create(dir, session, channel, cols, rows, term, title) {
            Ok(r) => Some(Rec { inner: Some(r) }),
            Err(e) => {
                warn!(error = %e, "cannot start the terminal recording");
                None
            }
        }
    }

    fn write(&mut self, f: impl FnOnce(&mut Recording) -> std::io::Result<()>) {
        if let Some(r) = &mut self.inner
            && let Err(e) = f(r)
        {
            warn!(error = %e, "terminal recording stopped");
            self.inner = None;
        }
    }

    pub fn output(&mut self, bytes: &[u8]) {
        self.write(|r| r.output(bytes));
    }

    pub fn input(&mut self, bytes: &[u8]) {
        self.write(|r| r.input(bytes));
    }

    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.write(|r| r.resize(cols, rows));
    }

    /// Hands what is buffered to the file (see `Recording::flush`).
    pub fn flush(&mut self) {
        self.write(Recording::flush);
    }

    /// Flushes; returns the file and its sha256 for `session.ended`.
    pub fn finish(self) -> Option<(PathBuf, String)> {
        match self.inner?.finish() {
            Ok(done) => Some(done),
            Err(e) => {
                warn!(error = %e, "terminal recording not finished");
                None
            }
        }
    }
}
