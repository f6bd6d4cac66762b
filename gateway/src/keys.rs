//! The gateway's own secrets in its data dir: the SSH host key, the TLS certificate for the
//! PostgreSQL listener and the admin token. Each is generated on first start (file mode
//! 0600, data dir 0700) and reused on every later start.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use portcullis_config::TlsFiles;
use russh::keys::{Algorithm, PrivateKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// File names inside the data dir.
pub const HOST_KEY_FILE: &str = "ssh_host_ed25519_key";
pub const TLS_CERT_FILE: &str = "tls/cert.pem";
pub const TLS_KEY_FILE: &str = "tls/key.pem";
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const AUDIT_KEY_FILE: &str = "audit-seal.key";

/// Why a key or certificate could not be loaded or made.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file exists but does not hold what it should.
    #[error("{path}: {message}")]
    Malformed { path: PathBuf, message: String },
    /// Generating a key or certificate failed.
    #[error("generating {what}: {message}")]
    Generate { what: &'static str, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the data dir (and its parents) with mode 0700.
pub fn ensure_data_dir(dir: &Path) -> Result<(), KeyError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))
}

/// Writes `bytes` to a new file with mode 0600 (never wider, not even for a moment).
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700))
            .map_err(io(parent))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))?;
    f.write_all(bytes).map_err(io(path))?;
    f.sync_all().map_err(io(path))
}

/// The gateway's SSH host key, generated (ed25519) on first start.
pub fn host_key(data_dir: &Path) -> Result<PrivateKey, KeyError> {
    let path = data_dir.join(HOST_KEY_FILE);
    if path.exists() {
        let text = std::fs::read_to_string(&path).map_err(io(&path))?;
        return PrivateKey::from_openssh(&text).map_err(|e| KeyError::Malformed {
            path,
            message: e.to_string(),
        });
    }
    let key = PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(|e| {
        KeyError::Generate {
            what: "ssh host key",
            message: e.to_string(),
        }
    })?;
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| KeyError::Generate {
            what: "ssh host key",
            message: e.to_string(),
        })?;
    write_private(&path, text.as_bytes())?;
    Ok(key)
}

/// The admin API's bearer token, generated (32 random bytes, hex) on first start.
pub fn admin_token(data_dir: &Path) -> Result<String, KeyError> {
    let path = data_dir.join(ADMIN_TOKEN_FILE);
    if path.exists() {
        let token = std::fs::read_to_string(&path).map_err(io(&path))?;
        let token = token.trim().to_string();
        if token.len() < 32 {
            return Err(KeyError::Malformed {
                path,
                message: "token shorter than 32 characters".into(),
            });
        }
        return Ok(token);
    }
    let bytes: [u8; 32] = rand::random();
    let token = hex::encode(bytes);
    write_private(&path, format!("{token}\n").as_bytes())?;
    Ok(token)
}

/// The PostgreSQL listener's TLS config: the configured certificate, else a self-signed one
/// (for `localhost` and `127.0.0.1`) generated once into the data dir.
pub fn tls_server_config(
    data_dir: &Path,
    files: Option<&TlsFiles>,
) -> Result<Arc<rustls::ServerConfig>, KeyError> {
    let (cert_path, key_path) = match files {
        Some(f) => (f.cert_file.clone(), f.key_file.clone()),
        None => {
            let cert_path = data_dir.join(TLS_CERT_FILE);
            let key_path = data_dir.join(TLS_KEY_FILE);
            if !cert_path.exists() {
                generate_self_signed(&cert_path, &key_path)?;
            }
            (cert_path, key_path)
        }
    };
    let certs = CertificateDer::pem_file_iter(&cert_path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| KeyError::Malformed {
            path: cert_path.clone(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(KeyError::Malformed {
            path: cert_path,
            message: "no certificate in file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| KeyError::Malformed {
        path: key_path.clone(),
        message: e.to_string(),
    })?;
    let config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| KeyError::Malformed {
            path: key_path,
            message: e.to_string(),
        })?;
    Ok(Arc::new(config))
}

fn generate_self_signed(cert_path: &Path, key_path: &Path) -> Result<(), KeyError> {
    let gen_err = |e: rcgen::Error| KeyError::Generate {
        what: "tls certificate",
        message: e.to_string(),
    };
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    let mut params = rcgen::CertificateParams::new(names).map_err(gen_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "portcullis gateway");
    let key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    write_private(key_path, key.serialize_pem().as_bytes())?;
    write_private(cert_path, cert.pem().as_bytes())
}

/// `SHA256:…` fingerprint of the host key, as `ssh-keygen -l` prints it.
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key()
        .fingerprint(russh::keys::HashAlg::Sha256)
        .to_string()
}
