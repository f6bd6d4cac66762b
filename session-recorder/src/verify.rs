//! `verify`: checks every record, chain link and seal of a log, read-only.
//!
//! [`Verifier`] is the pure core (segments are fed as bytes); [`verify`] reads the files.
//!
//! Bytes that recovery cut from the log at a restart are kept in a side file, named with
//! their sha256 by an `audit.recovered` record (see `recover.rs`). That record is in the
//! chain, so the side file is evidence the chain vouches for: [`verify`] checks that each
//! one is still there and holds exactly what was cut.
//!
//! The log's signed head (`head.rs`) says where the log ended when its records were last
//! synced: [`verify`] requires it, signed by the seals' key, and requires the log to reach
//! it with the head's hash at its seq, so final records removed leave a trace.

use std::path::Path;

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::head;
use crate::record::{self, Chain, Hash, LineError, LinkError};
use crate::seal::{Seal, SealError};
use crate::segment;

/// What a successful verification saw.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub segments: usize,
    pub sealed: usize,
    pub records: u64,
    pub bytes: u64,
    /// Seq and hash (hex) of the last record (0 and genesis for an empty log).
    pub last_seq: u64,
    pub last_hash: String,
    /// Hex public key the seals were checked against (`None` when nothing is sealed yet).
    pub pubkey: Option<String>,
    /// The unsealed segment the gateway is still writing, if any.
    pub open_segment: Option<String>,
    /// Side files holding bytes recovery cut at a restart, each checked against the sha256
    /// its `audit.recovered` record gives.
    pub kept: Vec<String>,
    /// The seq the log's signed head vouches for (the log reaches it, with its hash).
    pub head_seq: u64,
}

/// A side file an `audit.recovered` record names, with the sha256 (hex) of what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kept {
    /// The `audit.recovered` record's seq.
    pub seq: u64,
    pub file: String,
    pub sha256: String,
}

/// What is wrong at the place a [`VerifyError`] names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The line is not a valid record (altered or malformed).
    #[error(transparent)]
    Line(#[from] LineError),
    /// The record does not continue the chain (removed, reordered or inserted records).
    #[error(transparent)]
    Link(#[from] LinkError),
    /// The file ends inside a record: a torn write, or a truncation.
    #[error(
        "incomplete final record (torn write or truncation; a restart of the gateway repairs a torn write)"
    )]
    Torn,
    /// A seal does not vouch for its segment.
    #[error(transparent)]
    Seal(#[from] SealError),
    /// A segment other than the last one has no seal.
    #[error("segment is not sealed but is followed by {0}")]
    Unsealed(String),
    /// A segment number is missing from the sequence.
    #[error("segment {0} is missing")]
    MissingSegment(String),
    /// The directory holds no log.
    #[error("no audit segments found")]
    Empty,
    /// A file could not be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// A side file holding bytes cut at a restart is gone, or no longer holds them.
    #[error("the bytes cut at a restart (audit.recovered, seq {seq}) {what}")]
    Kept { seq: u64, what: String },
    /// The log's signed head is missing, invalid, or signed by another key.
    #[error("{0}")]
    Head(String),
    /// The log ends before the record its signed head vouches for.
    #[error(
        "the log ends at seq {last} but its signed head vouches for records up to seq {head}: records were removed"
    )]
    HeadAhead { last: u64, head: u64 },
    /// The record at the head's seq is not the one the head was signed for.
    #[error("this record is not the one the log's signed head vouches for")]
    HeadMismatch,
}

/// The first bad place in a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyError {
    /// File name (segment or seal) where the problem is.
    pub file: String,
    /// Byte offset in that file.
    pub offset: u64,
    /// The seq expected at that place: where the chain breaks.
    pub seq: u64,
    /// How much of `offset` and `seq` names the place, for the message.
    pub at: At,
    pub problem: Problem,
}

/// What a [`VerifyError`]'s place is, so that its message names it as it is: a head file or
/// a missing seal has no offset or seq of its own to give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// A place in a segment or seal: its byte offset and the seq expected there.
    Record,
    /// A whole segment, which holds seqs `first` to `last` (none when `last < first`).
    Segment { first: u64, last: u64 },
    /// A file as a whole (the head, a side file, the directory).
    File,
}

impl std::fmt::Display for VerifyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let file = &self.file;
        match self.at {
            At::Record => write!(f, "{file} at offset {} (seq {})", self.offset, self.seq)?,
            At::Segment { first, last } if last >= first => {
                write!(f, "{file} (seqs {first} to {last})")?
            }
            At::Segment { first, .. } => write!(f, "{file} (no records; seq {first} was next)")?,
            At::File => write!(f, "{file}")?,
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for VerifyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.problem)
    }
}

/// Verifies segments fed in order, without I/O.
#[derive(Debug, Default)]
pub struct Verifier {
    chain: Chain,
    key: Option<VerifyingKey>,
    segments: usize,
    sealed: usize,
    records: u64,
    bytes: u64,
    open_segment: Option<String>,
    /// The first seq of the open segment (its last is the chain's).
    open_first: u64,
    /// The last segment fed and its length: where the log ends.
    end: Option<(String, u64)>,
    kept: Vec<Kept>,
    /// The seq and hash the log's head vouches for, when known.
    head: Option<(u64, Hash)>,
}

/// Marks a line that may be an `audit.recovered` record, so that other lines need not be
/// parsed: inside a JSON string value these quotes would be escaped.
const RECOVERED: &[u8] = b"\"type\":\"audit.recovered\"";

/// The side file an `audit.recovered` event names, if it names one (older logs did not).
fn kept_in(seq: u64, line: &[u8]) -> Option<Kept> {
    let rec: serde_json::Value = serde_json::from_slice(line).ok()?;
    let ev = rec.get("event")?;
    if ev.get("type")?.as_str()? != "audit.recovered" {
        return None;
    }
    Some(Kept {
        seq,
        file: ev.get("kept_in")?.as_str()?.to_owned(),
        sha256: ev.get("sha256")?.as_str()?.to_owned(),
    })
}

impl Verifier {
    /// Seals are checked against `key`; `None` takes the first seal's key and requires the
    /// same key for every other seal.
    pub fn new(key: Option<VerifyingKey>) -> Self {
        Verifier {
            key,
            ..Default::default()
        }
    }

    /// Requires the record at `seq` to have hash `hash` (the log's signed head).
    pub fn expect_head(&mut self, seq: u64, hash: Hash) {
        self.head = Some((seq, hash));
    }

    /// Checks one segment's bytes and its seal (`None`: unsealed, only allowed last).
    pub fn segment(
        &mut self,
        name: &str,
        data: &[u8],
        seal: Option<&[u8]>,
    ) -> Result<(), VerifyError> {
        if let Some(open) = &self.open_segment {
            // The place is the unsealed segment as a whole, named with the seqs it holds;
            // the chain's trust breaks at its first record.
            return Err(VerifyError {
                file: open.clone(),
                offset: 0,
                seq: self.open_first,
                at: At::Segment {
                    first: self.open_first,
                    last: self.chain.last_seq,
                },
                problem: Problem::Unsealed(name.to_string()),
            });
        }
        self.segments += 1;
        let first_seq = self.chain.last_seq + 1;
        let mut off = 0usize;
        while off < data.len() {
            let err = |problem: Problem, chain: &Chain| VerifyError {
                file: name.to_string(),
                offset: off as u64,
                seq: chain.last_seq + 1,
                at: At::Record,
                problem,
            };
            let Some(len) = data[off..].iter().position(|&b| b == b'\n') else {
                return Err(err(Problem::Torn, &self.chain));
            };
            let info = record::check_line(&data[off..off + len])
                .map_err(|e| err(e.into(), &self.chain))?;
            self.chain
                .link(&info)
                .map_err(|e| err(e.into(), &self.chain))?;
            if self
                .head
                .is_some_and(|(seq, hash)| seq == info.seq && hash != self.chain.last_hash)
            {
                return Err(VerifyError {
                    seq: info.seq,
                    ..err(Problem::HeadMismatch, &self.chain)
                });
            }
            let line = &data[off..off + len];
            if memchr::memmem::find(line, RECOVERED).is_some() {
                self.kept.extend(kept_in(info.seq, line));
            }
            self.records += 1;
            off += len + 1;
        }
        self.bytes += data.len() as u64;
        self.end = Some((name.to_string(), data.len() as u64));
        let Some(seal_bytes) = seal else {
            self.open_segment = Some(name.to_string());
            self.open_first = first_seq;
            return Ok(());
        };
        let seal_name = name.replace(".jsonl", ".seal");
        let seal_err = |problem: SealError, seq: u64| VerifyError {
            file: seal_name.clone(),
            offset: 0,
            seq,
            at: At::Record,
            problem: Problem::Seal(problem),
        };
        let seal = Seal::parse(seal_bytes).map_err(|e| seal_err(e, first_seq))?;
        let key = match self.key {
            Some(k) => k,
            None => seal.signer().map_err(|e| seal_err(e, first_seq))?,
        };
        let digest: [u8; 32] = Sha256::digest(data).into();
        seal.check(
            name,
            &digest,
            first_seq,
            self.chain.last_seq,
            &self.chain.last_hash,
            &key,
        )
        .map_err(|e| {
            // A short segment breaks the chain at the first sealed record it lacks.
            let seq = match &e {
                SealError::Range {
                    sealed_last, last, ..
                } => (*sealed_last).min(*last) + 1,
                _ => first_seq,
            };
            seal_err(e, seq)
        })?;
        self.key = Some(key);
        self.sealed += 1;
        Ok(())
    }

    /// The side files named by the `audit.recovered` records fed so far, oldest first.
    pub fn kept(&self) -> &[Kept] {
        &self.kept
    }

    /// The summary of everything fed so far.
    pub fn finish(self) -> Summary {
        Summary {
            segments: self.segments,
            sealed: self.sealed,
            records: self.records,
            bytes: self.bytes,
            last_seq: self.chain.last_seq,
            last_hash: hex::encode(self.chain.last_hash),
            pubkey: self.key.map(|k| hex::encode(k.to_bytes())),
            open_segment: self.open_segment,
            kept: self.kept.into_iter().map(|k| k.file).collect(),
            head_seq: self.head.map_or(0, |(seq, _)| seq),
        }
    }
}

/// Verifies the log under `dir` (`<data_dir>/audit`): every record, chain link and seal.
///
/// Read-only. Seals are checked against `pubkey`, or when `None` against the key of the first
/// seal (the caller should print it so it can be compared with the known key).
pub fn verify(dir: &Path, pubkey: Option<VerifyingKey>) -> Result<Summary, VerifyError> {
    let io_err = |file: &str, e: std::io::Error| VerifyError {
        file: file.to_string(),
        offset: 0,
        seq: 0,
        at: At::File,
        problem: Problem::Io(e.to_string()),
    };
    let dir_name = dir.display().to_string();
    let segs = segment::list(dir).map_err(|e| io_err(&dir_name, e))?;
    if segs.is_empty() {
        return Err(VerifyError {
            file: dir_name,
            offset: 0,
            seq: 1,
            at: At::File,
            problem: Problem::Empty,
        });
    }
    let head_err = |problem: Problem| VerifyError {
        file: head::FILE.to_string(),
        offset: 0,
        seq: 0,
        at: At::File,
        problem,
    };
    // Checked against `pubkey`, or the key it names, which the seals must then share.
    let head = match head::read(dir, pubkey.as_ref()) {
        Ok(Some(h)) => h,
        Ok(None) => {
            return Err(head_err(Problem::Head(
                "the log has no signed head (the file is missing), so nothing shows where it ended"
                    .into(),
            )));
        }
        Err(e) => return Err(head_err(Problem::Head(e.to_string()))),
    };
    let head_hash = head.hash().unwrap_or_default();
    let mut v = Verifier::new(pubkey);
    v.expect_head(head.seq, head_hash);
    for (i, seg) in segs.iter().enumerate() {
        let want = i as u64 + 1;
        if seg.index != want {
            return Err(VerifyError {
                file: seg.name(),
                offset: 0,
                seq: v.chain.last_seq + 1,
                at: At::File,
                problem: Problem::MissingSegment(segment::segment_name(want)),
            });
        }
        let name = seg.name();
        let data = std::fs::read(&seg.path).map_err(|e| io_err(&name, e))?;
        let seal = match std::fs::read(&seg.seal_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err(&segment::seal_name(seg.index), e)),
        };
        v.segment(&name, &data, seal.as_deref())?;
    }
    if let Some(k) = v.key
        && head.pubkey != hex::encode(k.to_bytes())
    {
        return Err(head_err(Problem::Head(format!(
            "the log's head is signed with another key ({}) than its seals",
            head.pubkey
        ))));
    }
    if head.seq > v.chain.last_seq {
        // The place is where the log ends: the end of its last segment, where the next
        // record the head vouches for is missing.
        let (file, offset) = v.end.clone().unwrap_or_default();
        return Err(VerifyError {
            file,
            offset,
            seq: v.chain.last_seq + 1,
            at: At::Record,
            problem: Problem::HeadAhead {
                last: v.chain.last_seq,
                head: head.seq,
            },
        });
    }
    for k in v.kept() {
        check_kept(dir, k)?;
    }
    Ok(v.finish())
}

/// Is the side file `k` names still there, holding exactly the bytes that were cut?
fn check_kept(dir: &Path, k: &Kept) -> Result<(), VerifyError> {
    let bad = |what: String| VerifyError {
        file: k.file.clone(),
        offset: 0,
        seq: k.seq,
        at: At::File,
        problem: Problem::Kept { seq: k.seq, what },
    };
    // A name, not a path: the record must not send the check elsewhere.
    if k.file.is_empty() || k.file.contains(['/', '\\']) || k.file.starts_with('.') {
        return Err(bad(format!(
            "are said to be kept in {:?}, which is not a file name",
            k.file
        )));
    }
    let bytes = std::fs::read(dir.join(&k.file)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("were kept in this file, which is gone".into()),
        _ => bad(format!("cannot be read: {e}")),
    })?;
    let digest = hex::encode(Sha256::digest(&bytes));
    if !digest.eq_ignore_ascii_case(&k.sha256) {
        return Err(bad(format!(
            "are not what this file holds now (sha256 {digest}, recorded {})",
            k.sha256
        )));
    }
    Ok(())
}
