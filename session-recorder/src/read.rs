//! Reading the log: iterate records across segments, filter them, follow the tail.
//!
//! Readers parse records but do not check the chain (that is [`crate::verify`]); a partial
//! final line (a write in progress or a torn tail) is skipped, not reported.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::record::Record;
use crate::segment::{self, SegmentFile};

/// Why records could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A file could not be read.
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    /// A line is not a record.
    #[error("{file} at offset {offset}: not a record: {message}")]
    Parse {
        file: PathBuf,
        offset: u64,
        message: String,
    },
}

/// Iterator over every record of the log, in order.
#[derive(Debug)]
pub struct Records {
    segs: std::vec::IntoIter<SegmentFile>,
    current: Option<(PathBuf, BufReader<File>, u64)>,
    line: Vec<u8>,
}

/// Every record under `dir` (`<data_dir>/audit`), oldest first.
pub fn records(dir: &Path) -> Result<Records, ReadError> {
    let segs = segment::list(dir).map_err(|source| ReadError::Io {
        file: dir.to_path_buf(),
        source,
    })?;
    Ok(Records {
        segs: segs.into_iter(),
        current: None,
        line: Vec::with_capacity(4096),
    })
}

/// Records from the segment holding the `nth_last`-th last record of type `event_type`
/// (1: the last one), or from the first segment if the log holds fewer; oldest first.
///
/// Segments are searched from the newest back for the record's raw `"type":"…"` bytes, so
/// only the segments from there on are read twice and only they are parsed. A string
/// value cannot match: its quotes are escaped. Finding what happened since a gateway
/// started costs what the log grew by since, not the whole log.
pub fn records_from_nth_last(
    dir: &Path,
    event_type: &str,
    nth_last: usize,
) -> Result<Records, ReadError> {
    let mut segs = segment::list(dir).map_err(|source| ReadError::Io {
        file: dir.to_path_buf(),
        source,
    })?;
    let needle = format!("\"type\":\"{event_type}\"");
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let mut seen = 0;
    let mut start = 0;
    for (i, seg) in segs.iter().enumerate().rev() {
        let bytes = std::fs::read(&seg.path).map_err(|source| ReadError::Io {
            file: seg.path.clone(),
            source,
        })?;
        seen += finder.find_iter(&bytes).count();
        if seen >= nth_last {
            start = i;
            break;
        }
    }
    segs.drain(..start);
    Ok(Records {
        segs: segs.into_iter(),
        current: None,
        line: Vec::with_capacity(4096),
    })
}

impl Iterator for Records {
    type Item = Result<Record, ReadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.current.is_none() {
                let seg = self.segs.next()?;
                match File::open(&seg.path) {
                    Ok(f) => {
                        self.current = Some((seg.path, BufReader::with_capacity(1 << 16, f), 0))
                    }
                    Err(source) => {
                        return Some(Err(ReadError::Io {
                            file: seg.path,
                            source,
                        }));
                    }
                }
            }
            let (path, reader, offset) = self.current.as_mut()?;
            self.line.clear();
            match reader.read_until(b'\n', &mut self.line) {
                Err(source) => {
                    let file = path.clone();
                    self.current = None;
                    return Some(Err(ReadError::Io { file, source }));
                }
                Ok(n) if n == 0 || self.line.last() != Some(&b'\n') => {
                    self.current = None;
                    continue;
                }
                Ok(n) => {
                    let at = *offset;
                    *offset += n as u64;
                    return Some(serde_json::from_slice(&self.line).map_err(|e| {
                        ReadError::Parse {
                            file: path.clone(),
                            offset: at,
                            message: e.to_string(),
                        }
                    }));
                }
            }
        }
    }
}

/// Which records a search wants; `None` fields match everything.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub user: Option<String>,
    pub target: Option<String>,
    pub session: Option<String>,
    /// Event type: exact (`pg.query`), a family (`grant` or `grant.*`).
    pub kind: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    /// Does `r` match every set criterion?
    pub fn matches(&self, r: &Record) -> bool {
        let field = |want: &Option<String>, key: &str| {
            want.as_deref().is_none_or(|w| r.str_field(key) == Some(w))
        };
        if !(field(&self.user, "user")
            && field(&self.target, "target")
            && field(&self.session, "session"))
        {
            return false;
        }
        if let Some(k) = &self.kind {
            let kind = r.kind();
            let family = k.strip_suffix(".*").unwrap_or(k);
            let ok = kind == k
                || (kind.len() > family.len()
                    && kind.starts_with(family)
                    && kind.as_bytes()[family.len()] == b'.');
            if !ok {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(t) = r.time() else { return false };
            if self.since.is_some_and(|s| t < s) || self.until.is_some_and(|u| t > u) {
                return false;
            }
        }
        true
    }
}

/// Follows the end of the log: each [`Tail::poll`] returns the records appended since.
#[derive(Debug)]
pub struct Tail {
    dir: PathBuf,
    index: u64,
    offset: u64,
}

impl Tail {
    /// A tail positioned after the last complete record now in the log.
    pub fn at_end(dir: &Path) -> Result<Tail, ReadError> {
        let mut t = Tail {
            dir: dir.to_path_buf(),
            index: 1,
            offset: 0,
        };
        let segs = segment::list(dir).map_err(|source| ReadError::Io {
            file: dir.to_path_buf(),
            source,
        })?;
        if let Some(last) = segs.last() {
            t.index = last.index;
            t.poll()?;
        }
        Ok(t)
    }

    /// Records appended since the last poll (crossing into new segments).
    pub fn poll(&mut self) -> Result<Vec<Record>, ReadError> {
        let mut out = Vec::new();
        loop {
            let seg = SegmentFile::at(&self.dir, self.index);
            let io = |source| ReadError::Io {
                file: seg.path.clone(),
                source,
            };
            let mut data = Vec::new();
            match File::open(&seg.path) {
                Ok(mut f) => {
                    f.seek(SeekFrom::Start(self.offset)).map_err(io)?;
                    f.read_to_end(&mut data).map_err(io)?;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io(e)),
            }
            let complete = data.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            for line in data[..complete]
                .split(|&b| b == b'\n')
                .filter(|l| !l.is_empty())
            {
                let rec = serde_json::from_slice(line).map_err(|e| ReadError::Parse {
                    file: seg.path.clone(),
                    offset: self.offset,
                    message: e.to_string(),
                })?;
                out.push(rec);
            }
            self.offset += complete as u64;
            // Move on only once the writer has started the next segment.
            if SegmentFile::at(&self.dir, self.index + 1).path.exists() {
                self.index += 1;
                self.offset = 0;
                continue;
            }
            return Ok(out);
        }
    }
}
