//! Segment files: their names (`seg-000001.jsonl` and its seal `seg-000001.seal`) and listing
//! them in order under the audit directory.

use std::path::{Path, PathBuf};

/// One segment file of the log, and where its seal lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentFile {
    /// 1-based position of the segment in the log.
    pub index: u64,
    /// `<dir>/seg-NNNNNN.jsonl`.
    pub path: PathBuf,
    /// `<dir>/seg-NNNNNN.seal` (it may not exist: the open segment is unsealed).
    pub seal_path: PathBuf,
}

impl SegmentFile {
    /// The segment at `index` under `dir`.
    pub fn at(dir: &Path, index: u64) -> Self {
        SegmentFile {
            index,
            path: dir.join(segment_name(index)),
            seal_path: dir.join(seal_name(index)),
        }
    }

    /// The segment's file name, e.g. `seg-000001.jsonl`.
    pub fn name(&self) -> String {
        segment_name(self.index)
    }
}

/// `seg-000001.jsonl` for index 1.
pub fn segment_name(index: u64) -> String {
    format!("seg-{index:06}.jsonl")
}

/// `seg-000001.seal` for index 1.
pub fn seal_name(index: u64) -> String {
    format!("seg-{index:06}.seal")
}

/// The index of a segment file name, if it is one.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("seg-")?.strip_suffix(".jsonl")?;
    if digits.len() < 6 || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Every segment under `dir`, ordered by index (an absent directory has none).
pub fn list(dir: &Path) -> std::io::Result<Vec<SegmentFile>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        if let Some(index) = entry.file_name().to_str().and_then(parse_segment_name) {
            out.push(SegmentFile::at(dir, index));
        }
    }
    out.sort_by_key(|s| s.index);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(segment_name(1), "seg-000001.jsonl");
        assert_eq!(seal_name(12), "seg-000012.seal");
        assert_eq!(parse_segment_name("seg-000001.jsonl"), Some(1));
        assert_eq!(parse_segment_name("seg-1234567.jsonl"), Some(1_234_567));
        for bad in [
            "seg-1.jsonl",
            "seg-000001.seal",
            "x-000001.jsonl",
            "seg-00000a.jsonl",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn list_orders_by_index_and_skips_others() {
        let d = tempfile::tempdir().expect("tempdir");
        for n in [
            "seg-000010.jsonl",
            "seg-000002.jsonl",
            "seg-000002.seal",
            "notes.txt",
        ] {
            std::fs::write(d.path().join(n), b"").expect("write");
        }
        let l = list(d.path()).expect("list");
        assert_eq!(l.iter().map(|s| s.index).collect::<Vec<_>>(), vec![2, 10]);
        assert!(list(&d.path().join("absent")).expect("absent").is_empty());
    }
}
