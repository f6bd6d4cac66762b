//! Messages from client to server after the startup phase.

use super::PgError;
use super::reader::{Reader, oids};
use super::write::{begin, cstr, finish, i16, i32};

/// PostgreSQL's `PQ_SMALL_MESSAGE_LIMIT`: the largest length field (which counts itself) it
/// takes for a frontend message that has no reason to be long (Describe, Close, Sync, …).
pub const SMALL_MESSAGE_LIMIT: usize = 10_000;
/// PostgreSQL's `PQ_LARGE_MESSAGE_LIMIT` (`MaxAllocSize - 1`, 1 GiB less 2 bytes): the
/// largest length field it takes for a frontend message that may carry a statement or data
/// (Query, Parse, Bind, FunctionCall, CopyData).
pub const LARGE_MESSAGE_LIMIT: usize = 0x3fff_fffe;

/// Each message type a client may send after the startup phase, its name and the largest
/// length field PostgreSQL 15 takes for it (`SocketBackend` in postgres.c); any other type
/// is refused there as "invalid frontend message type". Password messages (`p`) belong to
/// authentication, where the reader sets its own limit; after it they are refused too.
const FRONTEND_TYPES: [(u8, &str, usize); 13] = [
    (b'Q', "Query", LARGE_MESSAGE_LIMIT),
    (b'P', "Parse", LARGE_MESSAGE_LIMIT),
    (b'B', "Bind", LARGE_MESSAGE_LIMIT),
    (b'F', "FunctionCall", LARGE_MESSAGE_LIMIT),
    (b'd', "CopyData", LARGE_MESSAGE_LIMIT),
    (b'E', "Execute", SMALL_MESSAGE_LIMIT),
    (b'D', "Describe", SMALL_MESSAGE_LIMIT),
    (b'C', "Close", SMALL_MESSAGE_LIMIT),
    (b'H', "Flush", SMALL_MESSAGE_LIMIT),
    (b'S', "Sync", SMALL_MESSAGE_LIMIT),
    (b'X', "Terminate", SMALL_MESSAGE_LIMIT),
    (b'c', "CopyDone", SMALL_MESSAGE_LIMIT),
    (b'f', "CopyFail", SMALL_MESSAGE_LIMIT),
];

/// The name of frontend message type `tag` and the largest length field (counting itself)
/// PostgreSQL takes for it; `None` for a type no client may send after startup.
pub(crate) fn limit(tag: u8) -> Option<(&'static str, usize)> {
    FRONTEND_TYPES
        .iter()
        .find(|&&(t, _, _)| t == tag)
        .map(|&(_, name, max)| (name, max))
}

/// A Parse message: a named (or unnamed) prepared statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parse<'a> {
    pub name: &'a [u8],
    pub sql: &'a [u8],
    /// The parameter type OIDs, 4 bytes each, as sent.
    pub param_types: &'a [u8],
}

impl Parse<'_> {
    /// The parameter type OIDs.
    pub fn param_types(&self) -> impl Iterator<Item = u32> + '_ {
        oids(self.param_types)
    }
}

/// A Bind message, validated; formats and values are read lazily without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Parameter format codes, 2 bytes each.
    pub param_formats: &'a [u8],
    /// Number of parameter values.
    pub param_count: usize,
    /// The parameter values section (each an Int32 length, -1 for NULL, then bytes).
    pub param_values: &'a [u8],
    /// Result format codes, 2 bytes each.
    pub result_formats: &'a [u8],
}

fn i16s(raw: &[u8]) -> impl Iterator<Item = i16> + '_ {
    raw.chunks_exact(2)
        .filter_map(|c| <[u8; 2]>::try_from(c).ok().map(i16::from_be_bytes))
}

impl<'a> Bind<'a> {
    /// The format of parameter `i`: 0 text, 1 binary (one code applies to all).
    pub fn param_format(&self, i: usize) -> i16 {
        match self.param_formats.len() / 2 {
            0 => 0,
            1 => i16s(self.param_formats).next().unwrap_or(0),
            _ => i16s(self.param_formats).nth(i).unwrap_or(0),
        }
    }

    /// The parameter values, `None` for NULL.
    pub fn params(&self) -> impl Iterator<Item = Option<&'a [u8]>> + 'a {
        let mut r = Reader::new(b'B', self.param_values);
        std::iter::from_fn(move || {
            if r.is_empty() {
                return None;
            }
            let len = r.i32("parameter length").ok()?;
            if len < 0 {
                return Some(None);
            }
            let n = usize::try_from(len).ok()?;
            r.bytes(n, "parameter value").ok().map(Some)
        })
    }

    /// The result format codes.
    pub fn result_formats(&self) -> impl Iterator<Item = i16> + 'a {
        i16s(self.result_formats)
    }
}

/// A SASLInitialResponse (`p` sent in answer to AuthenticationSASL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SaslInitialResponse<'a> {
    pub mechanism: &'a [u8],
    /// The client-first-message; `None` if the client sent length -1.
    pub data: Option<&'a [u8]>,
}

impl<'a> SaslInitialResponse<'a> {
    /// Decodes the body of a `p` message as SASLInitialResponse.
    pub fn decode(body: &'a [u8]) -> Result<Self, PgError> {
        let mut r = Reader::new(b'p', body);
        let mechanism = r.cstr("sasl mechanism")?;
        let len = r.i32("sasl data length")?;
        let data = if len < 0 {
            None
        } else {
            let n = usize::try_from(len).map_err(|_| r.malformed("sasl data length"))?;
            Some(r.bytes(n, "sasl data")?)
        };
        r.finish()?;
        Ok(SaslInitialResponse { mechanism, data })
    }
}

/// A message from the client after startup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrontendMessage<'a> {
    /// Simple query.
    Query {
        sql: &'a [u8],
    },
    Parse(Parse<'a>),
    Bind(Bind<'a>),
    Execute {
        portal: &'a [u8],
        max_rows: i32,
    },
    /// Describe a statement (`S`) or portal (`P`).
    Describe {
        kind: u8,
        name: &'a [u8],
    },
    /// Close a statement (`S`) or portal (`P`).
    Close {
        kind: u8,
        name: &'a [u8],
    },
    Sync,
    Flush,
    Terminate,
    CopyData(&'a [u8]),
    CopyDone,
    CopyFail {
        message: &'a [u8],
    },
    /// PasswordMessage, SASLInitialResponse or SASLResponse: which one depends on what the
    /// server asked for, so the body is kept raw; see [`SaslInitialResponse::decode`].
    Password(&'a [u8]),
    /// A fast-path FunctionCall (`F`, used by libpq's large-object functions): it runs a
    /// server function directly, so the audit must see it. Its arguments are laid out as a
    /// Bind's parameters (`portal` and `statement` empty, one result format).
    FunctionCall {
        oid: u32,
        args: Bind<'a>,
    },
    /// Anything else, forwarded as is.
    Other {
        tag: u8,
        body: &'a [u8],
    },
}

fn kind(r: &mut Reader<'_>) -> Result<u8, PgError> {
    let k = r.u8("statement or portal")?;
    if k != b'S' && k != b'P' {
        return Err(r.malformed("kind is neither 'S' nor 'P'"));
    }
    Ok(k)
}

impl<'a> FrontendMessage<'a> {
    /// Decodes one message from its tag and body.
    pub fn decode(tag: u8, body: &'a [u8]) -> Result<Self, PgError> {
        let mut r = Reader::new(tag, body);
        let msg = match tag {
            b'Q' => FrontendMessage::Query {
                sql: r.cstr("query")?,
            },
            b'P' => {
                let name = r.cstr("statement name")?;
                let sql = r.cstr("query")?;
                let n = r.count("parameter type count")?;
                let param_types = r.bytes(n * 4, "parameter types")?;
                FrontendMessage::Parse(Parse {
                    name,
                    sql,
                    param_types,
                })
            }
            b'B' => {
                let portal = r.cstr("portal name")?;
                let statement = r.cstr("statement name")?;
                FrontendMessage::Bind(params_section(&mut r, portal, statement, false)?)
            }
            b'F' => {
                let oid = r.i32("function oid")?;
                FrontendMessage::FunctionCall {
                    oid: oid.cast_unsigned(),
                    args: params_section(&mut r, b"", b"", true)?,
                }
            }
            b'E' => FrontendMessage::Execute {
                portal: r.cstr("portal name")?,
                max_rows: r.i32("row limit")?,
            },
            b'D' => FrontendMessage::Describe {
                kind: kind(&mut r)?,
                name: r.cstr("name")?,
            },
            b'C' => FrontendMessage::Close {
                kind: kind(&mut r)?,
                name: r.cstr("name")?,
            },
            b'S' => FrontendMessage::Sync,
            b'H' => FrontendMessage::Flush,
            b'X' => FrontendMessage::Terminate,
            b'd' => FrontendMessage::CopyData(r.rest()),
            b'c' => FrontendMessage::CopyDone,
            b'f' => FrontendMessage::CopyFail {
                message: r.cstr("message")?,
            },
            b'p' => FrontendMessage::Password(r.rest()),
            _ => FrontendMessage::Other {
                tag,
                body: r.rest(),
            },
        };
        r.finish()?;
        Ok(msg)
    }

    /// Appends the encoded message to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            FrontendMessage::Query { sql } => {
                let at = begin(out, b'Q');
                cstr(out, sql);
                finish(out, at);
            }
            FrontendMessage::Parse(p) => {
                let at = begin(out, b'P');
                cstr(out, p.name);
                cstr(out, p.sql);
                i16(
                    out,
                    i16::try_from(p.param_types.len() / 4).unwrap_or(i16::MAX),
                );
                out.extend_from_slice(p.param_types);
                finish(out, at);
            }
            FrontendMessage::Bind(b) => {
                let at = begin(out, b'B');
                cstr(out, b.portal);
                cstr(out, b.statement);
                encode_params(out, &b);
                i16(
                    out,
                    i16::try_from(b.result_formats.len() / 2).unwrap_or(i16::MAX),
                );
                out.extend_from_slice(b.result_formats);
                finish(out, at);
            }
            FrontendMessage::FunctionCall { oid, args } => {
                let at = begin(out, b'F');
                i32(out, oid.cast_signed());
                encode_params(out, &args);
                out.extend_from_slice(args.result_formats);
                finish(out, at);
            }
            FrontendMessage::Execute { portal, max_rows } => {
                let at = begin(out, b'E');
                cstr(out, portal);
                i32(out, max_rows);
                finish(out, at);
            }
            FrontendMessage::Describe { kind, name } | FrontendMessage::Close { kind, name } => {
                let tag = if matches!(self, FrontendMessage::Describe { .. }) {
                    b'D'
                } else {
                    b'C'
                };
                let at = begin(out, tag);
                out.push(kind);
                cstr(out, name);
                finish(out, at);
            }
            FrontendMessage::Sync => finish_empty(out, b'S'),
            FrontendMessage::Flush => finish_empty(out, b'H'),
            FrontendMessage::Terminate => finish_empty(out, b'X'),
            FrontendMessage::CopyDone => finish_empty(out, b'c'),
            FrontendMessage::CopyData(data) => raw(out, b'd', data),
            FrontendMessage::Password(data) => raw(out, b'p', data),
            FrontendMessage::Other { tag, body } => raw(out, tag, body),
            FrontendMessage::CopyFail { message } => {
                let at = begin(out, b'f');
                cstr(out, message);
                finish(out, at);
            }
        }
    }
}

/// The parameter section shared by Bind and FunctionCall: formats, values, then result
/// formats (a counted list for Bind, one code for FunctionCall).
fn params_section<'a>(
    r: &mut Reader<'a>,
    portal: &'a [u8],
    statement: &'a [u8],
    single_result_format: bool,
) -> Result<Bind<'a>, PgError> {
    let nf = r.count("format count")?;
    let param_formats = r.bytes(nf * 2, "parameter formats")?;
    let param_count = r.count("parameter count")?;
    let start = *r;
    for _ in 0..param_count {
        let len = r.i32("parameter length")?;
        if len >= 0 {
            let n = usize::try_from(len).map_err(|_| r.malformed("length"))?;
            r.bytes(n, "parameter value")?;
        } else if len != -1 {
            return Err(r.malformed("negative parameter length"));
        }
    }
    let used = start.remaining() - r.remaining();
    let param_values = start.clone_prefix(used);
    let result_formats = if single_result_format {
        r.bytes(2, "result format")?
    } else {
        let nr = r.count("result format count")?;
        r.bytes(nr * 2, "result formats")?
    };
    Ok(Bind {
        portal,
        statement,
        param_formats,
        param_count,
        param_values,
        result_formats,
    })
}

fn encode_params(out: &mut Vec<u8>, b: &Bind<'_>) {
    i16(
        out,
        i16::try_from(b.param_formats.len() / 2).unwrap_or(i16::MAX),
    );
    out.extend_from_slice(b.param_formats);
    i16(out, i16::try_from(b.param_count).unwrap_or(i16::MAX));
    out.extend_from_slice(b.param_values);
}

fn finish_empty(out: &mut Vec<u8>, tag: u8) {
    let at = begin(out, tag);
    finish(out, at);
}

pub(crate) fn raw(out: &mut Vec<u8>, tag: u8, body: &[u8]) {
    let at = begin(out, tag);
    out.extend_from_slice(body);
    finish(out, at);
}
