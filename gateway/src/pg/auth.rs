//! The client side of login: SCRAM-SHA-256 against the user's `password_scram` (the
//! verifier comes from [`crate::password::verifier_for`], a mock one for unknown users), then
//! the error messages a refused client is sent.

use portcullis_protocol::pg::{
    SaslInitialResponse, encode_authentication_sasl, encode_authentication_sasl_continue,
    encode_authentication_sasl_final, encode_error_response,
};
use portcullis_protocol::scram::{MECHANISM, ScramError, ScramServer, Verifier};
use tokio::io::AsyncWriteExt as _;

use super::{BoxIo, ReadError, SessionError, read_message};

/// Largest SASL message accepted from a client.
const MAX_SASL_MESSAGE: usize = 8 * 1024;

/// SQLSTATEs the gateway itself reports.
pub(crate) mod sqlstate {
    /// invalid_authorization_specification: no grant, bad user.
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// invalid_password.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// invalid_catalog_name: bad dbname / unknown target.
    pub const INVALID_CATALOG_NAME: &str = "3D000";
    /// protocol_violation.
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// sqlclient_unable_to_establish_sqlconnection: upstream unreachable.
    pub const UNABLE_TO_CONNECT: &str = "08001";
    /// sqlserver_rejected_establishment_of_sqlconnection: upstream refused the role.
    pub const REJECTED_CONNECTION: &str = "08004";
    /// admin_shutdown: the session was closed by the gateway.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// feature_not_supported.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    /// program_limit_exceeded: a statement longer than the gateway audits whole.
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    /// system_error: the audit log is unavailable.
    pub const SYSTEM_ERROR: &str = "58000";
}

/// Runs the SCRAM exchange with the client. `Ok(true)`: the password is right (the
/// AuthenticationSASLFinal was sent; AuthenticationOk is the caller's to send).
/// `Ok(false)`: wrong password.
///
/// # Cancellation safety
/// Not cancellation safe; the caller drops the connection if cancelled (timeout).
pub(crate) async fn scram_exchange(
    io: &mut BoxIo,
    verifier: Verifier,
) -> Result<bool, SessionError> {
    let mut out = Vec::with_capacity(128);
    encode_authentication_sasl(&mut out, &[MECHANISM]);
    io.write_all(&out).await.map_err(SessionError::ClientIo)?;

    let body = read_password_message(io).await?;
    let initial = SaslInitialResponse::decode(&body)?;
    if initial.mechanism != MECHANISM.as_bytes() {
        return Err(SessionError::Client(format!(
            "unsupported SASL mechanism {:?}; only SCRAM-SHA-256 is offered",
            String::from_utf8_lossy(initial.mechanism)
        )));
    }
    let mut server = ScramServer::new(verifier);
    let first = match server.client_first(initial.data.unwrap_or_default()) {
        Ok(f) => f,
        Err(e) => return Err(SessionError::Client(e.to_string())),
    };
    out.clear();
    encode_authentication_sasl_continue(&mut out, &first);
    io.write_all(&out).await.map_err(SessionError::ClientIo)?;

    let body = read_password_message(io).await?;
    match server.client_final(&body) {
        Ok(fin) => {
            out.clear();
            encode_authentication_sasl_final(&mut out, &fin);
            io.write_all(&out).await.map_err(SessionError::ClientIo)?;
            Ok(true)
        }
        Err(ScramError::InvalidProof) => Ok(false),
        Err(e) => Err(SessionError::Client(e.to_string())),
    }
}

async fn read_password_message(io: &mut BoxIo) -> Result<Vec<u8>, SessionError> {
    let (tag, body) = read_message(io, MAX_SASL_MESSAGE)
        .await
        .map_err(|e| match e {
            ReadError::Io(e) => SessionError::ClientIo(e),
            ReadError::Protocol(e) => SessionError::ClientProtocol(e),
        })?;
    if tag != b'p' {
        return Err(SessionError::Client(format!(
            "expected a password message, got message type {:?}",
            char::from(tag)
        )));
    }
    Ok(body)
}

/// Sends an ErrorResponse FATAL and flushes; errors are ignored since the connection is
/// being closed anyway.
pub(crate) async fn send_fatal(io: &mut BoxIo, code: &str, message: &str) {
    let mut out = Vec::with_capacity(64 + message.len());
    encode_error_response(&mut out, "FATAL", code, message);
    let _ = io.write_all(&out).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}
