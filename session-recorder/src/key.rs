//! The seal key: an ed25519 signing key kept as 64 hex digits in a 0600 file in the data dir,
//! created on first start.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use ed25519_dalek::SigningKey;

/// Why the seal key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file could not be read or written.
    #[error("seal key {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The file does not hold 64 hex digits.
    #[error("seal key {0} is not 64 hex digits")]
    Malformed(String),
}

/// Loads the key at `path`, or creates it (mode 0600) when absent.
pub fn load_or_create(path: &Path) -> Result<SigningKey, KeyFileError> {
    let io = |source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    };
    match load(path) {
        Err(KeyFileError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {}
        other => return other,
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(io)?;
    }
    let secret: [u8; 32] = rand::random();
    let key = SigningKey::from_bytes(&secret);
    // create_new: two processes racing to create the key must not overwrite each other.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(format!("{}\n", hex::encode(secret)).as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(io)?;
    Ok(key)
}

/// Loads the key at `path`.
pub fn load(path: &Path) -> Result<SigningKey, KeyFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyFileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    let secret: [u8; 32] = hex::decode(text.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| KeyFileError::Malformed(path.display().to_string()))?;
    Ok(SigningKey::from_bytes(&secret))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_with_mode_0600_then_reloaded() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("sub/audit.key");
        let k1 = load_or_create(&p).expect("create");
        let mode = std::fs::metadata(&p).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let k2 = load_or_create(&p).expect("load");
        assert_eq!(k1.to_bytes(), k2.to_bytes());
        std::fs::write(&p, "nope").expect("write");
        assert!(matches!(load(&p), Err(KeyFileError::Malformed(_))));
    }
}
