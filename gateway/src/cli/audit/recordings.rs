//! The terminal recordings the audit log names: which files a `session.ended` record
//! vouches for, and whether a file still holds exactly what it recorded.
//!
//! `replay` reads a session's recordings through here, and `audit verify` checks every one,
//! so a recording altered or deleted after its session ended is caught by both.

use std::path::{Path, PathBuf};

use portcullis_recorder::Record;
use sha2::{Digest, Sha256};

/// `(file, sha256)` pairs named by `session.ended`'s `recording` field, which may be a file
/// name, a list of names, or objects with `file`/`path` and `sha256`.
pub(super) fn named(r: &Record) -> Vec<(String, Option<String>)> {
    let top_sha = r
        .str_field("recording_sha256")
        .or(r.str_field("sha256"))
        .map(str::to_string);
    let one = |v: &serde_json::Value, sha: Option<String>| -> Option<(String, Option<String>)> {
        match v {
            serde_json::Value::String(s) => Some((s.clone(), sha)),
            serde_json::Value::Object(o) => {
                let file = o.get("file").or(o.get("path"))?.as_str()?.to_string();
                let sha = o
                    .get("sha256")
                    .and_then(|s| s.as_str())
                    .map(str::to_string)
                    .or(sha);
                Some((file, sha))
            }
            _ => None,
        }
    };
    // The full list (several channels) wins over `recording`, which names the first.
    match r.event.get("recordings").or(r.event.get("recording")) {
        Some(serde_json::Value::Array(a)) => a.iter().filter_map(|v| one(v, None)).collect(),
        Some(v) => one(v, top_sha).into_iter().collect(),
        None => Vec::new(),
    }
}

/// Checks the recording the log names `file`, in `<data_dir>/recordings`, against
/// `sha256` (when the log gives one), reading it in pieces: a recording may be large. Its
/// path, or a sentence naming the file and what is wrong.
///
/// The gateway names a recording by the path it wrote, under its data dir at the time; the
/// reviewer's `--data-dir` may be a copy or a move of it. The recording to check is the one
/// in the data dir under review, so only the file name counts.
pub(super) fn check(data_dir: &Path, file: &str, sha256: Option<&str>) -> Result<PathBuf, String> {
    use std::io::Read;
    let path = locate(data_dir, file)?;
    let cannot = |e: std::io::Error| format!("cannot read recording {}: {e}", path.display());
    let mut f = std::fs::File::open(&path).map_err(cannot)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(cannot(e)),
        }
    }
    compare(&path, &hasher.finalize(), sha256)?;
    Ok(path)
}

/// [`check`], on the bytes read once: the recording's path and the bytes that matched.
pub(super) fn read_checked(
    data_dir: &Path,
    file: &str,
    sha256: Option<&str>,
) -> Result<(PathBuf, Vec<u8>), String> {
    let path = locate(data_dir, file)?;
    let bytes = std::fs::read(&path)
        .map_err(|e| format!("cannot read recording {}: {e}", path.display()))?;
    compare(&path, &Sha256::digest(&bytes), sha256)?;
    Ok((path, bytes))
}

/// Where the recording the log names `file` is in the data dir under review.
fn locate(data_dir: &Path, file: &str) -> Result<PathBuf, String> {
    match Path::new(file).file_name() {
        Some(name) => Ok(data_dir.join("recordings").join(name)),
        None => Err(format!(
            "the audit log names recording {file:?}, which is not a file"
        )),
    }
}

/// Does `digest` match the sha256 the log gives (if it gives one)?
fn compare(path: &Path, digest: &[u8], sha256: Option<&str>) -> Result<(), String> {
    match sha256 {
        Some(want) if hex::encode(digest) != want.to_ascii_lowercase() => Err(format!(
            "recording {} does not match the sha256 in the audit log (altered)",
            path.display()
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(event: serde_json::Value) -> Record {
        Record {
            seq: 1,
            ts: String::new(),
            prev: String::new(),
            hash: String::new(),
            event: event.as_object().cloned().unwrap_or_default(),
        }
    }

    #[test]
    fn names_one_or_several_recordings() {
        let one = record(
            serde_json::json!({"type":"session.ended","recording":"a.cast","recording_sha256":"ff"}),
        );
        assert_eq!(named(&one), vec![("a.cast".into(), Some("ff".into()))]);
        let many = record(
            serde_json::json!({"recording":"a.cast","recording_sha256":"01",
            "recordings":[{"file":"a.cast","sha256":"01"},"b.cast"]}),
        );
        assert_eq!(
            named(&many),
            vec![
                ("a.cast".into(), Some("01".into())),
                ("b.cast".into(), None)
            ]
        );
    }

    #[test]
    fn a_recording_is_read_only_if_it_matches() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(d.path().join("recordings")).expect("mkdir");
        std::fs::write(d.path().join("recordings/a.cast"), "abc").expect("write");
        let sha = hex::encode(Sha256::digest(b"abc"));
        // Found by its name under the data dir under review, wherever it was written.
        let (path, bytes) =
            read_checked(d.path(), "/elsewhere/recordings/a.cast", Some(&sha)).expect("ok");
        assert_eq!(
            (path, bytes),
            (d.path().join("recordings/a.cast"), b"abc".to_vec())
        );
        assert_eq!(
            check(d.path(), "a.cast", Some(&sha.to_uppercase())),
            Ok(d.path().join("recordings/a.cast"))
        );
        let err = read_checked(d.path(), "a.cast", Some(&"0".repeat(64))).expect_err("refused");
        assert!(err.contains("does not match the sha256"), "{err}");
        let err = check(d.path(), "a.cast", Some(&"0".repeat(64))).expect_err("refused");
        assert!(err.contains("does not match the sha256"), "{err}");
        let err = check(d.path(), "gone.cast", None).expect_err("refused");
        assert!(err.contains("cannot read recording"), "{err}");
        let err = read_checked(d.path(), "gone.cast", None).expect_err("refused");
        assert!(err.contains("cannot read recording"), "{err}");
        let err = read_checked(d.path(), "..", None).expect_err("refused");
        assert!(err.contains("which is not a file"), "{err}");
    }
}
