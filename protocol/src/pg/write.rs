//! Encoders for the messages the gateway itself sends, to clients and to upstreams.
//!
//! Each appends one complete message to `out`, so a caller can batch several into one write.

use md5::{Digest as _, Md5};

use super::startup::{CANCEL_REQUEST_CODE, PROTOCOL_3_0};

/// Starts a tagged message: pushes the tag and a length placeholder, returns where the length
/// goes.
pub(crate) fn begin(out: &mut Vec<u8>, tag: u8) -> usize {
    out.push(tag);
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    at
}

/// Patches the length placeholder written by [`begin`] (or an untagged start).
pub(crate) fn finish(out: &mut [u8], at: usize) {
    let len = out.len().saturating_sub(at);
    // The gateway only encodes small messages of its own making; saturating keeps this total.
    let len = i32::try_from(len).unwrap_or(i32::MAX).to_be_bytes();
    if let Some(slot) = out.get_mut(at..at + 4) {
        slot.copy_from_slice(&len);
    }
}

pub(crate) fn cstr(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(s);
    out.push(0);
}

pub(crate) fn i16(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&v.to_be_bytes());
}

pub(crate) fn i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Severity, SQLSTATE and message fields shared by ErrorResponse and NoticeResponse.
fn fields(out: &mut Vec<u8>, tag: u8, severity: &str, code: &str, message: &str) {
    let at = begin(out, tag);
    out.push(b'S');
    cstr(out, severity.as_bytes());
    out.push(b'V');
    cstr(out, severity.as_bytes());
    out.push(b'C');
    cstr(out, code.as_bytes());
    out.push(b'M');
    // A NUL inside the text would end the field early and garble the rest.
    cstr(out, message.replace('\0', " ").as_bytes());
    out.push(0);
    finish(out, at);
}

/// ErrorResponse with severity (`ERROR`, `FATAL`), SQLSTATE and message.
pub fn encode_error_response(out: &mut Vec<u8>, severity: &str, code: &str, message: &str) {
    fields(out, b'E', severity, code, message);
}

/// NoticeResponse (`NOTICE`/`WARNING`), SQLSTATE and message.
pub fn encode_notice_response(out: &mut Vec<u8>, severity: &str, code: &str, message: &str) {
    fields(out, b'N', severity, code, message);
}

fn auth(out: &mut Vec<u8>, code: i32, data: &[u8]) {
    let at = begin(out, b'R');
    i32(out, code);
    out.extend_from_slice(data);
    finish(out, at);
}

/// AuthenticationOk.
pub fn encode_authentication_ok(out: &mut Vec<u8>) {
    auth(out, 0, &[]);
}

/// AuthenticationSASL advertising the given mechanisms.
pub fn encode_authentication_sasl(out: &mut Vec<u8>, mechanisms: &[&str]) {
    let at = begin(out, b'R');
    i32(out, 10);
    for m in mechanisms {
        cstr(out, m.as_bytes());
    }
    out.push(0);
    finish(out, at);
}

/// AuthenticationSASLContinue carrying the server-first-message.
pub fn encode_authentication_sasl_continue(out: &mut Vec<u8>, data: &[u8]) {
    auth(out, 11, data);
}

/// AuthenticationSASLFinal carrying the server-final-message.
pub fn encode_authentication_sasl_final(out: &mut Vec<u8>, data: &[u8]) {
    auth(out, 12, data);
}

/// BackendKeyData.
pub fn encode_backend_key_data(out: &mut Vec<u8>, pid: i32, secret: &[u8]) {
    let at = begin(out, b'K');
    i32(out, pid);
    out.extend_from_slice(secret);
    finish(out, at);
}

/// ReadyForQuery with transaction status `I`, `T` or `E`.
pub fn encode_ready_for_query(out: &mut Vec<u8>, status: u8) {
    let at = begin(out, b'Z');
    out.push(status);
    finish(out, at);
}

/// ParameterStatus.
pub fn encode_parameter_status(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    let at = begin(out, b'S');
    cstr(out, name);
    cstr(out, value);
    finish(out, at);
}

/// NegotiateProtocolVersion: the newest version we speak of the major version the client
/// asked for, and the options we ignored.
///
/// `newest` is a whole protocol number, major in the high 16 bits, as PostgreSQL sends it
/// ([`PROTOCOL_3_0`] for 3.0), not a bare minor number: libpq 18 reads 0 as a request to
/// go back to a protocol older than 3.0 and gives up on the connection.
pub fn encode_negotiate_protocol_version(out: &mut Vec<u8>, newest: i32, unknown: &[&[u8]]) {
    let at = begin(out, b'v');
    i32(out, newest);
    i32(out, i32::try_from(unknown.len()).unwrap_or(i32::MAX));
    for o in unknown {
        cstr(out, o);
    }
    finish(out, at);
}

/// CancelRequest (untagged) for a backend's pid and secret key.
pub fn encode_cancel_request(out: &mut Vec<u8>, pid: i32, secret: &[u8]) {
    let at = out.len();
    i32(out, 0);
    i32(out, CANCEL_REQUEST_CODE);
    i32(out, pid);
    out.extend_from_slice(secret);
    finish(out, at);
}

/// StartupMessage (untagged, protocol 3.0) with `name=value` parameters.
pub fn encode_startup<'p>(
    out: &mut Vec<u8>,
    params: impl IntoIterator<Item = (&'p [u8], &'p [u8])>,
) {
    let at = out.len();
    i32(out, 0);
    i32(out, PROTOCOL_3_0);
    for (k, v) in params {
        cstr(out, k);
        cstr(out, v);
    }
    out.push(0);
    finish(out, at);
}

/// SASLInitialResponse: the chosen mechanism and the client-first-message.
pub fn encode_sasl_initial_response(out: &mut Vec<u8>, mechanism: &str, data: &[u8]) {
    let at = begin(out, b'p');
    cstr(out, mechanism.as_bytes());
    i32(out, i32::try_from(data.len()).unwrap_or(i32::MAX));
    out.extend_from_slice(data);
    finish(out, at);
}

/// SASLResponse carrying the client-final-message.
pub fn encode_sasl_response(out: &mut Vec<u8>, data: &[u8]) {
    let at = begin(out, b'p');
    out.extend_from_slice(data);
    finish(out, at);
}

/// PasswordMessage (cleartext or an md5 hash from [`md5_password`]).
pub fn encode_password(out: &mut Vec<u8>, password: &[u8]) {
    let at = begin(out, b'p');
    cstr(out, password);
    finish(out, at);
}

/// Terminate.
pub fn encode_terminate(out: &mut Vec<u8>) {
    let at = begin(out, b'X');
    finish(out, at);
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// PostgreSQL's md5 password answer: `"md5" + hex(md5(hex(md5(password + user)) + salt))`.
pub fn md5_password(user: &[u8], password: &[u8], salt: [u8; 4]) -> String {
    let inner = hex(&Md5::new()
        .chain_update(password)
        .chain_update(user)
        .finalize());
    let outer = Md5::new()
        .chain_update(inner.as_bytes())
        .chain_update(salt)
        .finalize();
    format!("md5{}", hex(&outer))
}
