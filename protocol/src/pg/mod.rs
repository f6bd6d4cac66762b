//! PostgreSQL wire protocol v3, sans-IO: framing, typed decoding of what the proxy needs and
//! encoders for what the gateway itself sends.
//!
//! Message direction is a type: [`FrontendMessage`] (client to server) and [`BackendMessage`]
//! (server to client) are separate enums, and the untagged startup phase has its own
//! [`StartupPacket`]. Decoded messages borrow from the input buffer; anything the proxy does
//! not need is kept as `Other { tag, body }` so the original bytes can be forwarded. Every
//! length is checked against a maximum before anything is allocated or awaited: a frontend
//! message's against its type's, as PostgreSQL checks it ([`read_frontend_header`]).

mod backend;
mod frontend;
mod reader;
mod startup;
mod value;
mod write;

pub use backend::{Authentication, BackendMessage, Fields};
pub use frontend::{
    Bind, FrontendMessage, LARGE_MESSAGE_LIMIT, Parse, SMALL_MESSAGE_LIMIT, SaslInitialResponse,
};
pub use startup::{
    CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, PROTOCOL_3_0, SSL_REQUEST_CODE, StartupPacket,
    StartupParams, next_startup,
};
pub use value::{MAX_ARRAY_TEXT, binary_as_text, is_text_type, oid};
pub use write::{
    encode_authentication_ok, encode_authentication_sasl, encode_authentication_sasl_continue,
    encode_authentication_sasl_final, encode_backend_key_data, encode_cancel_request,
    encode_error_response, encode_negotiate_protocol_version, encode_notice_response,
    encode_parameter_status, encode_password, encode_ready_for_query, encode_sasl_initial_response,
    encode_sasl_response, encode_startup, encode_terminate, md5_password,
};

/// The largest backend message body accepted: PostgreSQL's own 1 GiB limit on a datum.
/// Frontend messages have a maximum per type ([`read_frontend_header`]).
pub const MAX_MESSAGE_LEN: usize = 1 << 30;
/// The largest startup packet accepted; PostgreSQL refuses longer ones too.
pub const MAX_STARTUP_LEN: usize = 10_000;

/// Why bytes could not be framed or decoded. Every variant is the peer's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// The length field is larger than the maximum for this phase.
    #[error("message length {len} exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
    /// The length field is smaller than the length field itself, or negative.
    #[error("invalid message length {0}")]
    BadLength(i64),
    /// A frontend message's length field is larger than its type allows
    /// ([`read_frontend_header`]); PostgreSQL refuses it too, before reading the body.
    #[error("invalid message length {len}: {name} messages may be at most {max} bytes long")]
    FrontendTooLong {
        /// The message type's name.
        name: &'static str,
        /// The length field as sent (it counts itself).
        len: usize,
        /// The largest length field the type allows.
        max: usize,
    },
    /// A type byte no frontend message after the startup phase has (PostgreSQL's words).
    #[error("invalid frontend message type {0}")]
    UnknownFrontendType(u8),
    /// The body ended before a field did.
    #[error("message {tag:?} ended early while reading {what}")]
    Truncated { tag: char, what: &'static str },
    /// The body has bytes after its last field.
    #[error("message {0:?} has trailing bytes")]
    TrailingBytes(char),
    /// A field holds a value the protocol does not allow.
    #[error("message {tag:?} is malformed: {what}")]
    Malformed { tag: char, what: &'static str },
    /// A startup packet asks for a protocol we do not speak.
    #[error("unsupported frontend protocol {major}.{minor}: server supports 3.0 to 3.0")]
    UnsupportedProtocol { major: u16, minor: u16 },
}

/// One complete tagged message inside a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// The type byte.
    pub tag: u8,
    /// The body, after the 4-byte length.
    pub body: &'a [u8],
    /// The whole message as it arrived (tag, length and body), to forward unchanged.
    pub raw: &'a [u8],
}

/// The 5-byte header of a tagged message: its tag and the body length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub tag: u8,
    /// Length of the body alone (the length field minus its own 4 bytes).
    pub body_len: usize,
}

impl Header {
    /// Header plus body.
    pub fn total_len(&self) -> usize {
        self.body_len + 5
    }
}

/// Reads a tagged message header, checking the length against `max` body bytes. `Ok(None)`
/// means fewer than 5 bytes are buffered.
pub fn read_header(buf: &[u8], max: usize) -> Result<Option<Header>, PgError> {
    let Some(&[tag, a, b, c, d]) = buf.get(..5) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    if len < 4 {
        return Err(PgError::BadLength(len.into()));
    }
    let body_len = usize::try_from(len - 4).map_err(|_| PgError::BadLength(len.into()))?;
    if body_len > max {
        return Err(PgError::TooLong { len: body_len, max });
    }
    Ok(Some(Header { tag, body_len }))
}

/// Reads the header of a message from the client after the startup phase. Like
/// PostgreSQL's backend, it judges the type byte first (an unknown type is refused at once),
/// then the length against that type's maximum ([`SMALL_MESSAGE_LIMIT`] or
/// [`LARGE_MESSAGE_LIMIT`]), so a client cannot make the reader wait for or allocate a body
/// its type never needs. `Ok(None)` means more bytes are needed.
pub fn read_frontend_header(buf: &[u8]) -> Result<Option<Header>, PgError> {
    let Some(&tag) = buf.first() else {
        return Ok(None);
    };
    let (name, max) = frontend::limit(tag).ok_or(PgError::UnknownFrontendType(tag))?;
    // PostgreSQL's limits count the length field itself; a header's length is the body's.
    match read_header(buf, max.saturating_sub(4)) {
        Err(PgError::TooLong { len, .. }) => Err(PgError::FrontendTooLong {
            name,
            len: len.saturating_add(4),
            max,
        }),
        read => read,
    }
}

/// Splits the next complete tagged message off the front of `buf`, without allocating.
/// Returns the frame and how many bytes it used, or `Ok(None)` if more bytes are needed.
/// Any type is taken, up to [`MAX_MESSAGE_LEN`]: for a client reading the backend's
/// messages. The other way, [`next_frontend_frame`].
pub fn next_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, PgError> {
    let Some(header) = read_header(buf, MAX_MESSAGE_LEN)? else {
        return Ok(None);
    };
    Ok(frame(buf, header))
}

/// [`next_frame`] for messages from the client after the startup phase, each type held to
/// its own maximum ([`read_frontend_header`]).
pub fn next_frontend_frame(buf: &[u8]) -> Result<Option<(Frame<'_>, usize)>, PgError> {
    let Some(header) = read_frontend_header(buf)? else {
        return Ok(None);
    };
    Ok(frame(buf, header))
}

/// The frame `header` starts at the front of `buf`, if all of it is there.
fn frame(buf: &[u8], header: Header) -> Option<(Frame<'_>, usize)> {
    let total = header.total_len();
    let raw = buf.get(..total)?;
    let body = raw.get(5..).unwrap_or_default();
    Some((
        Frame {
            tag: header.tag,
            body,
            raw,
        },
        total,
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
