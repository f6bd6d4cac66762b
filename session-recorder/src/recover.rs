//! Crash recovery at open: find where the writer left off, and cut a torn final record.
//!
//! Only the last segment may be unsealed; only its final record may be torn (a partial line,
//! or a complete last line failing its own check or its chain link), and only if the log's
//! signed head (`head.rs`) does not vouch for it: a record the head names was durable, so a
//! crash cannot have torn it. The log must also reach the head, with the head's hash at its
//! seq. Anything else is an inconsistency and the log refuses to open, naming the file and
//! offset, because repairing it would hide tampering.
//!
//! A cut destroys nothing. A last line that fails its check may have been altered rather
//! than torn by a crash, so the cut bytes are first written verbatim to a side file next to
//! the segment, `<segment>.cut-<offset>` (e.g. `seg-000003.jsonl.cut-81920`), and it and the
//! directory are fsynced before the segment is truncated. [`segment::list`] does not count the
//! side file as a segment, so the readers pass over it; the `audit.recovered` event names
//! it and carries the sha256 of the cut bytes, which ties the file's contents to the chain
//! (`verify` checks that the file still holds them). A side file of that name left by a
//! recovery that crashed before truncating is reused when it holds exactly the same bytes;
//! otherwise `.2`, `.3`, ... is appended to the name, so no earlier side file is ever
//! overwritten.

use std::io::Write;
use std::path::{Path, PathBuf};

use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::head::{self, Head};
use crate::record::{self, Chain, Hash};
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

/// A final record that was cut (torn, or failing its check), and where its bytes were kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    /// The segment's file name.
    pub file: String,
    /// Where the cut starts in the segment (its new length).
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
    /// Why the final record did not pass.
    pub reason: String,
    /// File name, in the audit directory, of the side file holding the cut bytes verbatim.
    pub kept_in: String,
    /// The sha256 (hex) of the cut bytes.
    pub sha256: String,
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

fn sync_dir(dir: &Path) -> Result<(), RecoverError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Writes `bytes` cut from `segment` at `offset` to a side file in `dir` and makes it durable
/// (file and directory entry); returns the side file's name.
///
/// A file already holding exactly `bytes` under a candidate name (a recovery that crashed
/// before it truncated) is reused; a file holding anything else is left alone and the next
/// name is tried.
fn keep_cut(dir: &Path, segment: &str, offset: u64, bytes: &[u8]) -> Result<String, RecoverError> {
    let base = format!("{segment}.cut-{offset}");
    let mut n = 1u64;
    loop {
        let name = match n {
            1 => base.clone(),
            n => format!("{base}.{n}"),
        };
        let path = dir.join(&name);
        let file = match std::fs::read(&path) {
            Ok(existing) if existing == bytes => std::fs::File::open(&path),
            Ok(_) => {
                n += 1;
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // create_new: whatever appeared under this name since the read is not ours
                // to overwrite.
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .and_then(|mut f| f.write_all(bytes).map(|()| f))
            }
            Err(e) => Err(e),
        };
        file.and_then(|f| f.sync_all()).map_err(io(&path))?;
        sync_dir(dir)?;
        return Ok(name);
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

/// What the operator is told when the log shows records removed or altered.
const EVIDENCE: &str = "keep the audit directory as evidence, and move it aside to start a new log";

/// A refusal about the head file itself.
fn head_problem(dir: &Path, problem: String) -> RecoverError {
    RecoverError::Inconsistent {
        file: dir.join(head::FILE),
        offset: 0,
        problem: format!("{problem}; {EVIDENCE}"),
    }
}

/// Does the log, ending at `chain`, reach the head? `at_head` is the hash of the record at the
/// head's seq when recovery saw it (records in earlier sealed segments are their seals' to
/// vouch for).
fn check_head(
    dir: &Path,
    head: &Head,
    chain: &Chain,
    at_head: Option<Hash>,
) -> Result<(), RecoverError> {
    if head.seq > chain.last_seq {
        return Err(head_problem(
            dir,
            format!(
                "the log ends at seq {} but its signed head vouches for records up to seq {}: records were removed",
                chain.last_seq, head.seq
            ),
        ));
    }
    if at_head.is_some_and(|h| Some(h) != head.hash()) {
        return Err(head_problem(
            dir,
            format!(
                "the record at seq {} is not the one the log's signed head vouches for",
                head.seq
            ),
        ));
    }
    Ok(())
}

/// Finds where to resume under `dir`, creating it and cutting a torn tail if needed. The
/// log's head must be signed by `key`.
pub fn recover(dir: &Path, key: &VerifyingKey) -> Result<Resume, RecoverError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let head = head::read(dir, Some(key)).map_err(|e| head_problem(dir, e.to_string()))?;
    let segs = segment::list(dir).map_err(io(dir))?;
    let Some(last) = segs.last() else {
        if let Some(h) = head.filter(|h| h.seq > 0) {
            return Err(head_problem(
                dir,
                format!(
                    "no segment is left but the log's signed head vouches for records up to seq {}",
                    h.seq
                ),
            ));
        }
        return Ok(Resume::New {
            index: 1,
            chain: Chain::default(),
        });
    };
    let Some(head) = head else {
        return Err(head_problem(
            dir,
            "the log has segments but no signed head (was it removed?)".into(),
        ));
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
    let at = |chain: &Chain| (chain.last_seq == head.seq).then_some(chain.last_hash);
    if last.seal_path.exists() {
        let chain = seal_chain(last)?;
        check_head(dir, &head, &chain, at(&chain))?;
        return Ok(Resume::New {
            index: last.index + 1,
            chain,
        });
    }
    let mut chain = match segs.len() {
        1 => Chain::default(),
        n => seal_chain(&segs[n - 2])?,
    };
    let mut at_head = at(&chain);
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
                        at_head = at_head.or(at(&chain));
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
        if chain.last_seq < head.seq {
            return Err(RecoverError::Inconsistent {
                file: last.path.clone(),
                offset: off as u64,
                problem: format!(
                    "{problem}; the log's signed head vouches for records up to seq {}, so this record was altered, not torn by a crash; {EVIDENCE}",
                    head.seq
                ),
            });
        }
        let tail = &data[off..];
        let file = last.name();
        // The side file must be durable before the segment loses the bytes.
        let kept_in = keep_cut(dir, &file, off as u64, tail)?;
        cut = Some(Cut {
            file,
            offset: off as u64,
            bytes: tail.len() as u64,
            reason: problem,
            kept_in,
            sha256: hex::encode(Sha256::digest(tail)),
        });
        break;
    }
    check_head(dir, &head, &chain, at_head)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;
    use crate::record::{GENESIS, Hash};

    const TS: &str = "2026-11-29T10:00:00.123456789Z";

    /// One record line (with its newline) of a `pg.query` event; returns it and its hash.
    fn line(seq: u64, prev: &Hash) -> (Vec<u8>, Hash) {
        let ev = Event::new("pg.query").with("sql", format!("select {seq}"));
        let mut out = Vec::new();
        let h = record::encode(seq, TS, prev, &ev.0, &mut out);
        (out, h)
    }

    /// Seqs 1 and 2 as the writer left them, and the hash of seq 2.
    fn two_records() -> (Vec<u8>, Hash) {
        let (mut data, h1) = line(1, &GENESIS);
        let (l2, h2) = line(2, &h1);
        data.extend_from_slice(&l2);
        (data, h2)
    }

    /// Signs a head for records up to `seq` (hash `hash`) under `dir`, as the writer does
    /// once they are synced; returns the key to recover with.
    fn vouch(dir: &Path, seq: u64, hash: &Hash) -> VerifyingKey {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        crate::head::HeadFile::open(dir, key.clone(), seq, hash).expect("head");
        key.verifying_key()
    }

    fn cut_of(resume: Resume) -> (u64, Option<Cut>) {
        match resume {
            Resume::Continue { len, cut, .. } => (len, cut),
            Resume::New { .. } => panic!("an unsealed segment is continued"),
        }
    }

    fn cut_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .expect("dir")
            .map(|e| e.expect("entry").file_name().into_string().expect("utf-8"))
            .filter(|n| n.contains(".cut-"))
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_torn_final_record_is_kept_in_a_side_file_before_it_is_cut() {
        let (good, h2) = two_records();
        let (third, _) = line(3, &h2);
        let tampered = String::from_utf8(third.clone())
            .expect("utf-8")
            .replace("select 3", "select 4")
            .into_bytes();
        let (off_chain, _) = line(3, &GENESIS);
        let cases: [(&str, Vec<u8>, &str); 3] = [
            ("complete final line altered", tampered, "hash mismatch"),
            (
                "partial final line",
                third[..third.len() / 2].to_vec(),
                "partial final record",
            ),
            (
                "complete final line off the chain",
                off_chain,
                "prev does not match the hash of seq 2",
            ),
        ];
        for (name, tail, reason) in cases {
            let d = tempfile::tempdir().expect("tempdir");
            let seg = d.path().join("seg-000001.jsonl");
            let mut data = good.clone();
            data.extend_from_slice(&tail);
            std::fs::write(&seg, &data).expect("write");
            // The head vouches for seq 2: seq 3 was never synced, so it may be torn.
            let key = vouch(d.path(), 2, &h2);

            let (len, cut) = cut_of(recover(d.path(), &key).expect(name));
            let cut = cut.expect(name);
            let off = good.len() as u64;
            let side = format!("seg-000001.jsonl.cut-{off}");
            assert_eq!(
                cut,
                Cut {
                    file: "seg-000001.jsonl".into(),
                    offset: off,
                    bytes: tail.len() as u64,
                    reason: cut.reason.clone(),
                    kept_in: side.clone(),
                    sha256: hex::encode(Sha256::digest(&tail)),
                },
                "{name}"
            );
            assert!(cut.reason.contains(reason), "{name}: {}", cut.reason);
            assert_eq!(len, off, "{name}");
            assert_eq!(std::fs::read(&seg).expect("segment"), good, "{name}");
            assert_eq!(
                std::fs::read(d.path().join(&side)).expect("side file"),
                tail,
                "{name}: the cut bytes, verbatim"
            );
            // The side file is not a segment: the log lists and verifies as before.
            let segs = segment::list(d.path()).expect("list");
            assert_eq!(segs.len(), 1, "{name}");
            let summary = crate::verify(d.path(), None).expect(name);
            assert_eq!(summary.records, 2, "{name}");
        }
    }

    #[test]
    fn an_intact_log_leaves_no_side_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let (good, h2) = two_records();
        std::fs::write(d.path().join("seg-000001.jsonl"), &good).expect("write");
        let key = vouch(d.path(), 2, &h2);
        let (len, cut) = cut_of(recover(d.path(), &key).expect("recover"));
        assert_eq!((len, cut), (good.len() as u64, None));
        assert!(cut_files(d.path()).is_empty());
    }

    #[test]
    fn a_side_file_left_by_a_crashed_recovery_is_reused_only_if_identical() {
        let (good, h2) = two_records();
        let tail = b"{\"seq\":3,\"ts\":\"2026-".to_vec();
        let side = format!("seg-000001.jsonl.cut-{}", good.len());
        // (what an earlier side file of that name holds, the name this cut is kept under)
        let cases = [
            (tail.clone(), side.clone()),
            (b"other bytes".to_vec(), format!("{side}.2")),
            (tail[..4].to_vec(), format!("{side}.2")),
        ];
        for (earlier, want) in cases {
            let d = tempfile::tempdir().expect("tempdir");
            let mut data = good.clone();
            data.extend_from_slice(&tail);
            std::fs::write(d.path().join("seg-000001.jsonl"), &data).expect("write");
            std::fs::write(d.path().join(&side), &earlier).expect("write");
            let key = vouch(d.path(), 2, &h2);

            let (_, cut) = cut_of(recover(d.path(), &key).expect("recover"));
            assert_eq!(cut.expect("cut").kept_in, want);
            assert_eq!(
                std::fs::read(d.path().join(&want)).expect("kept"),
                tail,
                "{want}"
            );
            assert_eq!(
                std::fs::read(d.path().join(&side)).expect("earlier"),
                earlier,
                "an earlier side file is never changed"
            );
            let mut names = vec![side.clone(), want.clone()];
            names.dedup();
            assert_eq!(cut_files(d.path()), names);
        }
    }

    /// What the head vouches for cannot be cut or lost: a vouched final record that fails
    /// its check, a log ending before the head, a different record at the head's seq, and
    /// segments without a head all refuse to open, and leave every byte where it was.
    #[test]
    fn the_head_refuses_removed_or_altered_records() {
        let (good, h2) = two_records();
        let (one, h1) = line(1, &GENESIS);
        let altered = String::from_utf8(good.clone())
            .expect("utf-8")
            .replace("select 2", "select 9")
            .into_bytes();
        /// (case, segment bytes, head seq and hash, what the refusal says)
        type Case<'a> = (&'a str, &'a [u8], Option<(u64, Hash)>, &'a str);
        let cases: [Case<'_>; 5] = [
            (
                "vouched record altered",
                &altered,
                Some((2, h2)),
                "altered, not torn",
            ),
            ("records removed", &one, Some((2, h2)), "ends at seq 1"),
            (
                "another record at the head's seq",
                &good,
                Some((1, h2)),
                "not the one",
            ),
            ("head removed", &good, None, "no signed head"),
            (
                "all removed but the head",
                b"",
                Some((2, h2)),
                "vouches for records up to seq 2",
            ),
        ];
        for (name, data, head, says) in cases {
            let d = tempfile::tempdir().expect("tempdir");
            let seg = d.path().join("seg-000001.jsonl");
            if !data.is_empty() {
                std::fs::write(&seg, data).expect("write");
            }
            let key = match head {
                Some((seq, hash)) => vouch(d.path(), seq, &hash),
                None => {
                    let k = vouch(d.path(), 1, &h1);
                    std::fs::remove_file(d.path().join(head::FILE)).expect("remove");
                    k
                }
            };
            let err = recover(d.path(), &key).expect_err(name).to_string();
            assert!(err.contains(says), "{name}: {err}");
            assert!(err.contains("evidence"), "{name}: {err}");
            if !data.is_empty() {
                assert_eq!(std::fs::read(&seg).expect("segment"), data, "{name}");
            }
            assert!(cut_files(d.path()).is_empty(), "{name}");
        }
        // A head signed with another key is refused too.
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(d.path().join("seg-000001.jsonl"), &good).expect("write");
        vouch(d.path(), 2, &h2);
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]).verifying_key();
        let err = recover(d.path(), &other)
            .expect_err("other key")
            .to_string();
        assert!(err.contains("not signed by the seal key"), "{err}");
    }
}
