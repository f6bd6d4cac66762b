//! Crash recovery at open: find where the writer left off, and cut a torn final record.
//!
//! Only the last segment may be unsealed; only its final record may be torn (a partial line,
//! or a last line failing its own check). Anything else is an inconsistency and the log
//! refuses to open, naming the file and offset, because repairing it would hide tampering.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::record::{self, Chain};
use crate::seal::Seal;
use crate::segment::{self, SegmentFile};

/// Why the log cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum RecoverError {
    /// A file could not be read or written.
    #[error("{file}: {source}")]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    /// The log is inconsistent beyond a torn final write.
    #[error("{file} at offset {offset}: {problem}")]
    Inconsistent {
        file: PathBuf,
        offset: u64,
        problem: String,
    },
}

/// A torn final record that was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub file: String,
    pub offset: u64,
    pub bytes: u64,
    pub reason: String,
}

/// Where the writer resumes.
// Built once per open, so the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Resume {
    /// Start a new, empty segment (no segments yet, or the last one is sealed).
    New { index: u64, chain: Chain },
    /// Keep appending to the unsealed last segment.
    Continue {
        segment: SegmentFile,
        chain: Chain,
        first_seq: u64,
        len: u64,
        hasher: Sha256,
        cut: Option<Cut>,
    },
}

fn io(file: &Path) -> impl FnOnce(std::io::Error) -> RecoverError + '_ {
    move |source| RecoverError::Io {
        file: file.to_path_buf(),
        source,
    }
}

fn seal_chain(seg: &SegmentFile) -> Result<Chain, RecoverError> {
    let bytes = std::fs::read(&seg.seal_path).map_err(io(&seg.seal_path))?;
    let bad = |problem: String| RecoverError::Inconsistent {
        file: seg.seal_path.clone(),
        offset: 0,
        problem,
    };
    let seal = Seal::parse(&bytes).map_err(|e| bad(e.to_string()))?;
    let last_hash = hex::decode(&seal.last_hash)
        .ok()
        .and_then(|v| <[u8; 32]>::try_from(v).ok())
        .ok_or_else(|| bad("last_hash is not 64 hex digits".into()))?;
    Ok(Chain {
        last_seq: seal.last_seq,
        last_hash,
    })
}

/// Finds where to resume under `dir`, creating it and cutting a torn tail if needed.
pub fn recover(dir: &Path) -> Result<Resume, RecoverError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let segs = segment::list(dir).map_err(io(dir))?;
    let Some(last) = segs.last() else {
        return Ok(Resume::New {
            index: 1,
            chain: Chain::default(),
        });
    };
    for (i, seg) in segs.iter().enumerate() {
        if seg.index != i as u64 + 1 {
            return Err(RecoverError::Inconsistent {
                file: seg.path.clone(),
                offset: 0,
                problem: format!("segment {} is missing", segment::segment_name(i as u64 + 1)),
            });
        }
        if seg.index != last.index && !seg.seal_path.exists() {
            return Err(RecoverError::Inconsistent {
                file: seg.path.clone(),
                offset: 0,
                problem: "segment is not sealed but is not the last one".into(),
            });
        }
    }
    // A seal is written to a temporary file and renamed; a leftover is an unfinished seal.
    let tmp = last.seal_path.with_extension("seal.tmp");
    if tmp.exists() {
        std::fs::remove_file(&tmp).map_err(io(&tmp))?;
    }
    if last.seal_path.exists() {
        return Ok(Resume::New {
            index: last.index + 1,
            chain: seal_chain(last)?,
        });
    }
    let mut chain = match segs.len() {
        1 => Chain::default(),
        n => seal_chain(&segs[n - 2])?,
    };
    let first_seq = chain.last_seq + 1;
    let data = std::fs::read(&last.path).map_err(io(&last.path))?;
    let mut off = 0usize;
    let mut cut = None;
    while off < data.len() {
        let newline = data[off..].iter().position(|&b| b == b'\n');
        let problem = match newline {
            None => "partial final record".to_string(),
            Some(len) => match record::check_line(&data[off..off + len]) {
                Ok(info) => match chain.link(&info) {
                    Ok(()) => {
                        off += len + 1;
                        continue;
                    }
                    Err(e) => e.to_string(),
                },
                Err(e) => e.to_string(),
            },
        };
        let is_final = newline.is_none_or(|len| off + len + 1 == data.len());
        if !is_final {
            return Err(RecoverError::Inconsistent {
                file: last.path.clone(),
                offset: off as u64,
                problem,
            });
        }
        cut = Some(Cut {
            file: last.name(),
            offset: off as u64,
            bytes: (data.len() - off) as u64,
            reason: problem,
        });
        break;
    }
    if cut.is_some() {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&last.path)
            .map_err(io(&last.path))?;
        f.set_len(off as u64)
            .and_then(|()| f.sync_all())
            .map_err(io(&last.path))?;
    }
    let mut hasher = Sha256::new();
    hasher.update(&data[..off]);
    Ok(Resume::Continue {
        segment: last.clone(),
        chain,
        first_seq,
        len: off as u64,
        hasher,
        cut,
    })
}
