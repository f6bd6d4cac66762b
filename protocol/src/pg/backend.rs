//! Messages from server to client.

use super::PgError;
use super::frontend::raw;
use super::reader::{Reader, oids};
use super::write::{begin, cstr, finish, i16, i32};

/// The fields of an ErrorResponse or NoticeResponse, validated, read lazily.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fields<'a> {
    raw: &'a [u8],
}

impl<'a> Fields<'a> {
    fn decode(r: &mut Reader<'a>) -> Result<Self, PgError> {
        let raw = r.rest();
        let mut v = Reader::new(b'E', raw);
        loop {
            if v.u8("field type")? == 0 {
                break;
            }
            v.cstr("field value")?;
        }
        v.finish()?;
        Ok(Fields { raw })
    }

    /// The fields in the first bytes of a message too long to read whole (a server error
    /// quoting megabytes of a value): every complete field, then the one cut short, as far
    /// as it goes. The code (`C`) comes before the message (`M`), so it is there.
    pub fn prefix(raw: &'a [u8]) -> Self {
        Fields { raw }
    }

    /// `(code, value)` pairs, e.g. `(b'C', b"42P01")`; for [`Fields::prefix`], the last
    /// value may be cut short.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &'a [u8])> + 'a {
        let mut r = Reader::new(b'E', self.raw);
        std::iter::from_fn(move || {
            let code = r.u8("field type").ok()?;
            if code == 0 {
                return None;
            }
            Some((code, r.cstr("field value").unwrap_or_else(|_| r.rest())))
        })
    }

    /// One field's value.
    pub fn get(&self, code: u8) -> Option<&'a [u8]> {
        self.iter().find(|(c, _)| *c == code).map(|(_, v)| v)
    }

    /// The SQLSTATE (`C`).
    pub fn code(&self) -> Option<&'a [u8]> {
        self.get(b'C')
    }

    /// The primary message (`M`).
    pub fn message(&self) -> Option<&'a [u8]> {
        self.get(b'M')
    }

    /// The severity, non-localized (`V`) when present.
    pub fn severity(&self) -> Option<&'a [u8]> {
        self.get(b'V').or_else(|| self.get(b'S'))
    }
}

/// An Authentication* message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authentication<'a> {
    Ok,
    CleartextPassword,
    Md5Password {
        salt: [u8; 4],
    },
    /// AuthenticationSASL with its NUL-terminated mechanism list (ending in an empty one).
    Sasl {
        mechanisms: &'a [u8],
    },
    SaslContinue(&'a [u8]),
    SaslFinal(&'a [u8]),
    /// Kerberos, GSS, SSPI and anything newer.
    Other {
        code: i32,
        data: &'a [u8],
    },
}

impl<'a> Authentication<'a> {
    /// The mechanisms offered by AuthenticationSASL.
    pub fn mechanisms(&self) -> impl Iterator<Item = &'a [u8]> + 'a {
        let raw = match self {
            Authentication::Sasl { mechanisms } => *mechanisms,
            _ => &[],
        };
        let mut r = Reader::new(b'R', raw);
        std::iter::from_fn(move || r.cstr("mechanism").ok().filter(|m| !m.is_empty()))
    }
}

/// A message from the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendMessage<'a> {
    Authentication(Authentication<'a>),
    /// The backend's pid and cancel key (4 bytes in protocol 3.0, up to 256 in 3.2).
    BackendKeyData {
        pid: i32,
        secret: &'a [u8],
    },
    ParameterStatus {
        name: &'a [u8],
        value: &'a [u8],
    },
    /// Transaction status `I`, `T` or `E`.
    ReadyForQuery {
        status: u8,
    },
    CommandComplete {
        tag: &'a [u8],
    },
    ErrorResponse(Fields<'a>),
    NoticeResponse(Fields<'a>),
    /// The column count and the raw column descriptions.
    RowDescription {
        columns: usize,
        raw: &'a [u8],
    },
    NotificationResponse {
        pid: i32,
        channel: &'a [u8],
        payload: &'a [u8],
    },
    /// CopyInResponse (`G`), CopyOutResponse (`H`) or CopyBothResponse (`W`).
    CopyResponse {
        tag: u8,
        format: u8,
        columns: &'a [u8],
    },
    CopyData(&'a [u8]),
    CopyDone,
    ParseComplete,
    BindComplete,
    CloseComplete,
    NoData,
    EmptyQueryResponse,
    PortalSuspended,
    /// The newest protocol version the server speaks of the major version asked for, as a
    /// whole protocol number (3.0 is `3 << 16`), and the options it ignored.
    NegotiateProtocolVersion {
        newest: i32,
        options: &'a [u8],
    },
    /// The parameter types the server resolved for a described statement (`t`), as type
    /// OIDs of 4 bytes each; read them with [`BackendMessage::param_types`].
    ParameterDescription {
        types: &'a [u8],
    },
    /// DataRow, FunctionCallResponse...: forwarded as is.
    Other {
        tag: u8,
        body: &'a [u8],
    },
}

impl<'a> BackendMessage<'a> {
    /// Decodes one message from its tag and body.
    pub fn decode(tag: u8, body: &'a [u8]) -> Result<Self, PgError> {
        let mut r = Reader::new(tag, body);
        let msg = match tag {
            b'R' => BackendMessage::Authentication(match r.i32("authentication code")? {
                0 => Authentication::Ok,
                3 => Authentication::CleartextPassword,
                5 => {
                    let s = r.bytes(4, "md5 salt")?;
                    let salt = <[u8; 4]>::try_from(s).map_err(|_| r.malformed("md5 salt"))?;
                    Authentication::Md5Password { salt }
                }
                10 => {
                    let mechanisms = r.rest();
                    let mut v = Reader::new(tag, mechanisms);
                    while !v.cstr("mechanism")?.is_empty() {}
                    v.finish()?;
                    Authentication::Sasl { mechanisms }
                }
                11 => Authentication::SaslContinue(r.rest()),
                12 => Authentication::SaslFinal(r.rest()),
                code => Authentication::Other {
                    code,
                    data: r.rest(),
                },
            }),
            b'K' => {
                let pid = r.i32("process id")?;
                let secret = r.rest();
                if secret.len() < 4 || secret.len() > 256 {
                    return Err(r.malformed("cancel key length"));
                }
                BackendMessage::BackendKeyData { pid, secret }
            }
            b'S' => BackendMessage::ParameterStatus {
                name: r.cstr("parameter name")?,
                value: r.cstr("parameter value")?,
            },
            b'Z' => {
                let status = r.u8("transaction status")?;
                if !matches!(status, b'I' | b'T' | b'E') {
                    return Err(r.malformed("unknown transaction status"));
                }
                BackendMessage::ReadyForQuery { status }
            }
            b'C' => BackendMessage::CommandComplete {
                tag: r.cstr("command tag")?,
            },
            b'E' => BackendMessage::ErrorResponse(Fields::decode(&mut r)?),
            b'N' => BackendMessage::NoticeResponse(Fields::decode(&mut r)?),
            b'T' => BackendMessage::RowDescription {
                columns: r.count("column count")?,
                raw: r.rest(),
            },
            b'A' => BackendMessage::NotificationResponse {
                pid: r.i32("process id")?,
                channel: r.cstr("channel")?,
                payload: r.cstr("payload")?,
            },
            b'G' | b'H' | b'W' => BackendMessage::CopyResponse {
                tag,
                format: r.u8("copy format")?,
                columns: r.rest(),
            },
            b'd' => BackendMessage::CopyData(r.rest()),
            b'c' => BackendMessage::CopyDone,
            b'1' => BackendMessage::ParseComplete,
            b'2' => BackendMessage::BindComplete,
            b'3' => BackendMessage::CloseComplete,
            b'n' => BackendMessage::NoData,
            b'I' => BackendMessage::EmptyQueryResponse,
            b's' => BackendMessage::PortalSuspended,
            b't' => {
                let n = r.count("parameter count")?;
                BackendMessage::ParameterDescription {
                    types: r.bytes(n * 4, "parameter types")?,
                }
            }
            b'v' => BackendMessage::NegotiateProtocolVersion {
                newest: r.i32("newest protocol version")?,
                options: r.rest(),
            },
            _ => BackendMessage::Other {
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
            BackendMessage::Authentication(a) => {
                let at = begin(out, b'R');
                match a {
                    Authentication::Ok => i32(out, 0),
                    Authentication::CleartextPassword => i32(out, 3),
                    Authentication::Md5Password { salt } => {
                        i32(out, 5);
                        out.extend_from_slice(&salt);
                    }
                    Authentication::Sasl { mechanisms } => {
                        i32(out, 10);
                        out.extend_from_slice(mechanisms);
                    }
                    Authentication::SaslContinue(d) => {
                        i32(out, 11);
                        out.extend_from_slice(d);
                    }
                    Authentication::SaslFinal(d) => {
                        i32(out, 12);
                        out.extend_from_slice(d);
                    }
                    Authentication::Other { code, data } => {
                        i32(out, code);
                        out.extend_from_slice(data);
                    }
                }
                finish(out, at);
            }
            BackendMessage::BackendKeyData { pid, secret } => {
                let at = begin(out, b'K');
                i32(out, pid);
                out.extend_from_slice(secret);
                finish(out, at);
            }
            BackendMessage::ParameterStatus { name, value } => {
                let at = begin(out, b'S');
                cstr(out, name);
                cstr(out, value);
                finish(out, at);
            }
            BackendMessage::ReadyForQuery { status } => raw(out, b'Z', &[status]),
            BackendMessage::CommandComplete { tag } => {
                let at = begin(out, b'C');
                cstr(out, tag);
                finish(out, at);
            }
            BackendMessage::ErrorResponse(f) => raw(out, b'E', f.raw),
            BackendMessage::NoticeResponse(f) => raw(out, b'N', f.raw),
            BackendMessage::RowDescription { columns, raw: body } => {
                let at = begin(out, b'T');
                i16(out, i16::try_from(columns).unwrap_or(i16::MAX));
                out.extend_from_slice(body);
                finish(out, at);
            }
            BackendMessage::NotificationResponse {
                pid,
                channel,
                payload,
            } => {
                let at = begin(out, b'A');
                i32(out, pid);
                cstr(out, channel);
                cstr(out, payload);
                finish(out, at);
            }
            BackendMessage::CopyResponse {
                tag,
                format,
                columns,
            } => {
                let at = begin(out, tag);
                out.push(format);
                out.extend_from_slice(columns);
                finish(out, at);
            }
            BackendMessage::CopyData(d) => raw(out, b'd', d),
            BackendMessage::CopyDone => raw(out, b'c', &[]),
            BackendMessage::ParseComplete => raw(out, b'1', &[]),
            BackendMessage::BindComplete => raw(out, b'2', &[]),
            BackendMessage::CloseComplete => raw(out, b'3', &[]),
            BackendMessage::NoData => raw(out, b'n', &[]),
            BackendMessage::EmptyQueryResponse => raw(out, b'I', &[]),
            BackendMessage::PortalSuspended => raw(out, b's', &[]),
            BackendMessage::NegotiateProtocolVersion { newest, options } => {
                let at = begin(out, b'v');
                i32(out, newest);
                out.extend_from_slice(options);
                finish(out, at);
            }
            BackendMessage::ParameterDescription { types } => {
                let at = begin(out, b't');
                i16(out, i16::try_from(types.len() / 4).unwrap_or(i16::MAX));
                out.extend_from_slice(types);
                finish(out, at);
            }
            BackendMessage::Other { tag, body } => raw(out, tag, body),
        }
    }

    /// The type OIDs of a ParameterDescription (none for any other message).
    pub fn param_types(&self) -> impl Iterator<Item = u32> + '_ {
        let raw = match self {
            BackendMessage::ParameterDescription { types } => types,
            _ => &[][..],
        };
        oids(raw)
    }
}
