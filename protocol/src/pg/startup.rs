//! The untagged startup phase: StartupMessage, SSLRequest, GSSENCRequest and CancelRequest.

use super::reader::Reader;
use super::{MAX_STARTUP_LEN, PgError};

/// Protocol 3.0 as sent in a StartupMessage.
pub const PROTOCOL_3_0: i32 = 3 << 16;
/// The "version" of an SSLRequest.
pub const SSL_REQUEST_CODE: i32 = 80_877_103;
/// The "version" of a GSSENCRequest.
pub const GSSENC_REQUEST_CODE: i32 = 80_877_104;
/// The "version" of a CancelRequest.
pub const CANCEL_REQUEST_CODE: i32 = 80_877_102;

/// The longest cancel key accepted (protocol 3.2 allows up to 256 bytes).
const MAX_CANCEL_KEY: usize = 256;

/// The parameters of a StartupMessage, validated, iterated without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartupParams<'a> {
    raw: &'a [u8],
}

impl<'a> StartupParams<'a> {
    /// `(name, value)` pairs in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = (&'a [u8], &'a [u8])> + 'a {
        let mut r = Reader::new(0, self.raw);
        std::iter::from_fn(move || {
            let k = r.cstr("name").ok()?;
            if k.is_empty() {
                return None;
            }
            let v = r.cstr("value").ok()?;
            Some((k, v))
        })
    }

    /// The value of one parameter.
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(k, _)| *k == name.as_bytes())
            .map(|(_, v)| v)
    }
}

/// A packet of the startup phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupPacket<'a> {
    /// StartupMessage with protocol 3.`minor` and its parameters.
    Startup {
        minor: u16,
        params: StartupParams<'a>,
    },
    /// SSLRequest: the client wants TLS.
    SslRequest,
    /// GSSENCRequest: the client wants GSSAPI encryption.
    GssEncRequest,
    /// CancelRequest for a backend.
    Cancel { pid: i32, secret: &'a [u8] },
}

impl<'a> StartupPacket<'a> {
    /// Decodes a startup packet body (after its 4-byte length).
    pub fn decode(body: &'a [u8]) -> Result<Self, PgError> {
        let mut r = Reader::new(0, body);
        let code = r.i32("protocol version")?;
        match code {
            SSL_REQUEST_CODE => {
                r.finish()?;
                Ok(StartupPacket::SslRequest)
            }
            GSSENC_REQUEST_CODE => {
                r.finish()?;
                Ok(StartupPacket::GssEncRequest)
            }
            CANCEL_REQUEST_CODE => {
                let pid = r.i32("process id")?;
                let secret = r.rest();
                if secret.len() < 4 || secret.len() > MAX_CANCEL_KEY {
                    return Err(r.malformed("cancel key length"));
                }
                Ok(StartupPacket::Cancel { pid, secret })
            }
            _ => {
                let major = u16::try_from(code >> 16).unwrap_or(u16::MAX);
                let minor = u16::try_from(code & 0xffff).unwrap_or(u16::MAX);
                if major != 3 {
                    return Err(PgError::UnsupportedProtocol { major, minor });
                }
                let raw = r.rest();
                // Validate once so the iterator can never stop early on bad input.
                let mut v = Reader::new(0, raw);
                loop {
                    let k = v.cstr("parameter name")?;
                    if k.is_empty() {
                        break;
                    }
                    v.cstr("parameter value")?;
                }
                v.finish()?;
                Ok(StartupPacket::Startup {
                    minor,
                    params: StartupParams { raw },
                })
            }
        }
    }
}

/// Splits the next startup packet off `buf`; `Ok(None)` means more bytes are needed.
pub fn next_startup(buf: &[u8]) -> Result<Option<(StartupPacket<'_>, usize)>, PgError> {
    let Some(&[a, b, c, d]) = buf.get(..4) else {
        return Ok(None);
    };
    let len = i32::from_be_bytes([a, b, c, d]);
    if len < 8 {
        return Err(PgError::BadLength(len.into()));
    }
    let len = usize::try_from(len).map_err(|_| PgError::BadLength(len.into()))?;
    if len > MAX_STARTUP_LEN {
        return Err(PgError::TooLong {
            len,
            max: MAX_STARTUP_LEN,
        });
    }
    let Some(body) = buf.get(4..len) else {
        return Ok(None);
    };
    Ok(Some((StartupPacket::decode(body)?, len)))
}
