//! The client side of login: the limit on failed logins, SCRAM-SHA-256 against the user's
//! `password_scram` (the verifier comes from [`crate::password::verifier_for`], a mock one
//! for unknown users) and the `auth.failed` record of a login that failed, then the error
//! messages a refused client is sent.

use std::net::SocketAddr;

use portcullis_protocol::pg::{
    SaslInitialResponse, encode_authentication_sasl, encode_authentication_sasl_continue,
    encode_authentication_sasl_final, encode_error_response,
};
use portcullis_protocol::scram::{MECHANISM, ScramError, ScramServer, Verifier};
use portcullis_recorder::Event;
use tokio::io::AsyncWriteExt as _;

use super::listener::STARTUP_TIMEOUT;
use super::logging_in::Slot;
use super::{BoxIo, ReadError, SessionError, read_message};
use crate::context::Gateway;
use crate::password::verifier_for;

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

/// Logs `user` in with their gateway password. `true`: the password is right (the
/// AuthenticationSASLFinal was sent; AuthenticationOk is the caller's to send). `false`: the
/// login failed, the client was told why if it still listens, and it is in the log if it
/// must be.
///
/// `logging_in` is the connection's place among its client's connections logging in,
/// given back once the password is judged.
///
/// # Cancellation safety
/// Not cancellation safe; only the session task runs it, to completion.
pub(crate) async fn password_login(
    gw: &Gateway,
    io: &mut BoxIo,
    user: &str,
    peer: SocketAddr,
    logging_in: Slot,
) -> bool {
    let client = peer.to_string();
    // Password guessing is limited per client, in the table the admin API (which checks the
    // same passwords) uses. A login counts only once its proof failed: a pool opens many
    // connections at once, and counting them first would refuse all but five. Guesses in
    // flight at once are bounded by the cap on connections logging in per client.
    // Refusals past the limit are not audited, so a flood of guesses cannot flood the log.
    // Every wrong password is audited below it; a login abandoned before its proof, never.
    if gw.logins.blocked(peer.ip()) {
        tracing::warn!("postgres login refused: too many failed logins from this client");
        send_fatal(
            io,
            sqlstate::INVALID_AUTHORIZATION,
            "portcullis: too many failed logins from this address; try again in a minute",
        )
        .await;
        return false;
    }
    let (verifier, known) = verifier_for(&gw.config(), gw.admin_token.as_bytes(), user);
    let exchange = tokio::time::timeout(STARTUP_TIMEOUT, scram_exchange(io, verifier)).await;
    drop(logging_in);
    let ok = match exchange {
        Ok(Ok(ok)) => ok && known,
        Ok(Err(SessionError::ClientIo(e))) => {
            // The client hung up (or its connection broke) before a proof was checked: no
            // password was tried, so this is no failed login. psql does it each time it
            // has to ask for a password; a client doing it in a loop must not be able to
            // write to the audit log without limit.
            tracing::info!(error = %e, "postgres client left before proving a password");
            return false;
        }
        Ok(Err(e)) => {
            // A malformed exchange (a mechanism not offered, a message SCRAM does not
            // allow) tried something: it is logged, and counts against the limit as a
            // wrong password does, so repeating it cannot flood the log either.
            gw.logins.failed(peer.ip());
            tracing::info!(error = %e, "postgres authentication aborted");
            audit_auth_failed(gw, user, None, &client, &e.to_string()).await;
            send_fatal(io, sqlstate::PROTOCOL_VIOLATION, &e.to_string()).await;
            return false;
        }
        Err(_) => {
            tracing::info!("postgres client did not finish authentication in time");
            return false;
        }
    };
    if !ok {
        // A proof checked against the verifier is a guess, and each one is logged.
        gw.logins.failed(peer.ip());
        tracing::info!("postgres password authentication failed");
        audit_auth_failed(gw, user, None, &client, "password authentication failed").await;
        send_fatal(
            io,
            sqlstate::INVALID_PASSWORD,
            &format!("password authentication failed for user \"{user}\""),
        )
        .await;
        return false;
    }
    true
}

/// Longest user name (and target) an `auth.failed` record keeps: the name comes from a
/// client that has not logged in, and a startup packet may carry kilobytes of it.
const FAILED_USER_MAX: usize = 256;

/// Writes the `auth.failed` of a login refused: a wrong password (no target yet), or, for a
/// user whose password was right, the connection refused (no such target, no grant), as
/// SSH records its refusals.
pub(super) async fn audit_auth_failed(
    gw: &Gateway,
    user: &str,
    target: Option<&str>,
    client: &str,
    why: &str,
) {
    let capped = |s: &str| portcullis_recorder::capped(s.to_owned(), FAILED_USER_MAX);
    let ev = Event::new("auth.failed")
        .with("user", capped(user))
        .with("target", target.map(capped))
        .with("client", client)
        .with("proto", "postgres")
        .with("reason", why);
    if let Err(e) = gw.audit.append(ev).await {
        tracing::error!(error = %e, "audit append failed");
    }
}

/// Runs the SCRAM exchange with the client. `Ok(true)`: the password is right (the
/// AuthenticationSASLFinal was sent; AuthenticationOk is the caller's to send).
/// `Ok(false)`: wrong password.
///
/// # Cancellation safety
/// Not cancellation safe; the caller drops the connection if cancelled (timeout).
async fn scram_exchange(io: &mut BoxIo, verifier: Verifier) -> Result<bool, SessionError> {
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
