//! SEAM: the asciicast recording of one terminal channel, over the recorder's
//! `portcullis_recorder::Recording`. Until that API is on main this records nothing and
//! `session.ended` carries no recording; the calls below are exactly the ones to forward.

use std::path::{Path, PathBuf};

/// One channel's recording (or nothing, see the module note).
#[derive(Debug)]
pub struct Rec {
    _private: (),
}

impl Rec {
    /// Starts `<dir>/<session>-<channel>.cast` with the terminal's size and type.
    pub fn create(
        _dir: &Path,
        _session: &str,
        _channel: u32,
        _cols: u16,
        _rows: u16,
        _term: &str,
        _title: &str,
    ) -> Option<Rec> {
        None
    }

    pub fn output(&mut self, _bytes: &[u8]) {}

    pub fn input(&mut self, _bytes: &[u8]) {}

    pub fn resize(&mut self, _cols: u16, _rows: u16) {}

    /// Flushes; returns the file and its sha256 for `session.ended`.
    pub fn finish(self) -> Option<(PathBuf, String)> {
        None
    }
}
