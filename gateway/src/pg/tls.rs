//! TLS for both sides: the listener's server config with the `postgresql` ALPN, and the
//! client configs for upstreams (`prefer`/`require` encrypt without verifying, as libpq
//! does; `verify-full` checks the chain against `ca_file` and the host name).

use std::sync::Arc;

use portcullis_config::{PgTlsMode, Target};
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

/// The ALPN protocol PostgreSQL 17 clients send (and require for direct TLS).
pub(crate) const ALPN_POSTGRESQL: &[u8] = b"postgresql";

/// Why an upstream TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The CA file could not be read or holds no certificate.
    #[error("cannot load ca_file {path}: {message}")]
    CaFile { path: String, message: String },
    /// rustls refused the configuration.
    #[error("tls configuration: {0}")]
    Config(#[from] rustls::Error),
    /// The target's host is not a valid TLS server name.
    #[error("{0:?} is not a valid tls server name")]
    ServerName(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The listener's config with the `postgresql` ALPN added, so PostgreSQL 17 direct-TLS
/// clients are accepted; clients that offer no ALPN still are.
pub(crate) fn with_alpn(base: &Arc<rustls::ServerConfig>) -> Arc<rustls::ServerConfig> {
    let mut cfg = (**base).clone();
    cfg.alpn_protocols = vec![ALPN_POSTGRESQL.to_vec()];
    Arc::new(cfg)
}

/// Accepts any certificate but still checks handshake signatures: encryption without
/// authentication, which is what `sslmode=prefer/require` means to libpq.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The host part of `host:port` (brackets of an IPv6 literal removed).
pub(crate) fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The client config and server name for a target's TLS mode (`None` for `disable`).
pub(crate) fn upstream_config(
    target: &Target,
) -> Result<Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>, TlsError> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let config = match target.tls {
        PgTlsMode::Disable => return Ok(None),
        PgTlsMode::Prefer | PgTlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider())))
            .with_no_client_auth(),
        PgTlsMode::VerifyFull => {
            let mut roots = rustls::RootCertStore::empty();
            let path = target.ca_file.clone().unwrap_or_default();
            let certs = CertificateDer::pem_file_iter(&path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| TlsError::CaFile {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsError::CaFile {
                    path: path.display().to_string(),
                    message: "no usable certificate".into(),
                });
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    let host = host_of(&target.address).to_owned();
    let name = ServerName::try_from(host.clone()).map_err(|_| TlsError::ServerName(host))?;
    Ok(Some((Arc::new(config), name)))
}

#[cfg(test)]
mod tests {
    use super::host_of;

    #[test]
    fn host_of_addresses() {
        assert_eq!(host_of("127.0.0.1:5432"), "127.0.0.1");
        assert_eq!(host_of("db.example:5432"), "db.example");
        assert_eq!(host_of("[::1]:5432"), "::1");
    }
}
