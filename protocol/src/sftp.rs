//! SFTP packets as OpenSSH speaks them (version 3, draft-ietf-secsh-filexfer-02, plus the
//! OpenSSH extensions that change files), decoded from the raw subsystem byte stream for the
//! audit log; [`Tracker`] pairs requests with replies and yields one [`Op`] per auditable
//! operation.
//!
//! Only what the audit needs is parsed: each packet's first [`MAX_PREFIX`] bytes are kept and
//! the rest (file data) is counted and skipped, so a 100 MiB upload costs no copies. The
//! gateway forwards the original bytes untouched; this code only watches them.

use std::marker::PhantomData;

mod request;
mod tracker;

pub use request::Request;
pub use tracker::{Op, Tracker, Unanswered};

/// The largest packet accepted; OpenSSH's own limit is 256 KiB.
pub const MAX_PACKET: u32 = 1024 * 1024;
/// Bytes of each packet kept for decoding (paths, handles, lengths); the rest is skipped.
pub const MAX_PREFIX: usize = 16 * 1024;
/// At most this many requests awaiting a reply and open handles are tracked.
pub const MAX_TRACKED: usize = 4096;
/// At most this many bytes of requests awaiting a reply are tracked: a path may be as long
/// as [`MAX_PREFIX`], so the count alone would let one channel hold 64 MiB.
pub const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// Why the stream could not be decoded. After an error the decoder stops watching.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SftpError {
    /// A length field is zero or larger than [`MAX_PACKET`].
    #[error("sftp packet length {0} out of range")]
    BadLength(u32),
    /// An earlier error stopped decoding.
    #[error("sftp stream no longer decoded after an earlier error")]
    Stopped,
}

/// Message types (filexfer-02 §3).
mod ty {
    pub const INIT: u8 = 1;
    pub const VERSION: u8 = 2;
    pub const OPEN: u8 = 3;
    pub const CLOSE: u8 = 4;
    pub const READ: u8 = 5;
    pub const WRITE: u8 = 6;
    pub const LSTAT: u8 = 7;
    pub const FSTAT: u8 = 8;
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const STAT: u8 = 17;
    pub const RENAME: u8 = 18;
    pub const SYMLINK: u8 = 20;
    pub const EXTENDED: u8 = 200;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
    pub const ATTRS: u8 = 105;
}

/// Which fields an ATTRS structure carries (filexfer-02 §5).
mod attr {
    pub const SIZE: u32 = 0x1;
    pub const UIDGID: u32 = 0x2;
    pub const PERMISSIONS: u32 = 0x4;
    pub const ACMODTIME: u32 = 0x8;
}

/// File attributes as a request sets them; a field the request leaves alone is `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attrs {
    /// A new size: the file is truncated or extended to it.
    pub size: Option<u64>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// The `st_mode` bits sent; see [`Attrs::mode`].
    pub permissions: Option<u32>,
    /// Seconds since the epoch.
    pub atime: Option<u32>,
    pub mtime: Option<u32>,
}

impl Attrs {
    /// The permission bits in octal as `chmod` takes them ("0644"); file type bits dropped.
    pub fn mode(&self) -> Option<String> {
        self.permissions.map(|p| format!("{:04o}", p & 0o7777))
    }
}

/// A server-to-client packet, as far as the audit cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Version {
        version: u32,
    },
    Status {
        id: u32,
        code: u32,
        message: String,
    },
    Handle {
        id: u32,
        handle: Vec<u8>,
    },
    Data {
        id: u32,
        len: u32,
    },
    Attrs {
        id: u32,
        attrs: Attrs,
    },
    /// Any other reply (a name list, an extended reply), or one too short to read; its id
    /// when it has one, so that the request it answers is not left waiting.
    Other {
        kind: u8,
        id: Option<u32>,
    },
}

/// Decodes one direction's packets from a packet's kept prefix.
pub trait Decode: Sized {
    fn decode(prefix: &[u8]) -> Self;
}

/// Bounds-checked big-endian reads over a packet prefix; every read can fail, none panics.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let head = self.0.get(..n)?;
        self.0 = self.0.get(n..)?;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1)?.first().copied()
    }
    fn u32(&mut self) -> Option<u32> {
        let b: [u8; 4] = self.take(4)?.try_into().ok()?;
        Some(u32::from_be_bytes(b))
    }
    fn u64(&mut self) -> Option<u64> {
        let b: [u8; 8] = self.take(8)?.try_into().ok()?;
        Some(u64::from_be_bytes(b))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.u32()?).ok()?;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        Some(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
    /// An ATTRS structure; its extended pairs, which come last, are not read.
    fn attrs(&mut self) -> Option<Attrs> {
        let flags = self.u32()?;
        let mut a = Attrs::default();
        if flags & attr::SIZE != 0 {
            a.size = Some(self.u64()?);
        }
        if flags & attr::UIDGID != 0 {
            a.uid = Some(self.u32()?);
            a.gid = Some(self.u32()?);
        }
        if flags & attr::PERMISSIONS != 0 {
            a.permissions = Some(self.u32()?);
        }
        if flags & attr::ACMODTIME != 0 {
            a.atime = Some(self.u32()?);
            a.mtime = Some(self.u32()?);
        }
        Some(a)
    }
}

impl Decode for Response {
    fn decode(prefix: &[u8]) -> Self {
        let mut r = Reader(prefix);
        let Some(kind) = r.u8() else {
            return Response::Other { kind: 0, id: None };
        };
        // Every reply but the version starts with the id of the request it answers.
        let id = (kind != ty::VERSION)
            .then(|| Reader(prefix.get(1..).unwrap_or_default()).u32())
            .flatten();
        let parsed = (|| {
            Some(match kind {
                ty::VERSION => Response::Version { version: r.u32()? },
                ty::STATUS => {
                    let id = r.u32()?;
                    let code = r.u32()?;
                    // Version 3 servers send a message; tolerate ones that do not.
                    let message = r.string().unwrap_or_default();
                    Response::Status { id, code, message }
                }
                ty::HANDLE => Response::Handle {
                    id: r.u32()?,
                    handle: r.bytes()?.to_vec(),
                },
                ty::DATA => Response::Data {
                    id: r.u32()?,
                    len: r.u32()?,
                },
                ty::ATTRS => Response::Attrs {
                    id: r.u32()?,
                    attrs: r.attrs()?,
                },
                _ => return None,
            })
        })();
        parsed.unwrap_or(Response::Other { kind, id })
    }
}

/// A streaming decoder for one direction: push bytes as they arrive in any chunking, get
/// whole messages out.
#[derive(Debug)]
pub struct Decoder<M> {
    header: [u8; 4],
    header_len: usize,
    /// Bytes of the current packet still to come; zero while reading a length header.
    remaining: u32,
    prefix: Vec<u8>,
    stopped: bool,
    _m: PhantomData<M>,
}

impl<M> Default for Decoder<M> {
    fn default() -> Self {
        Decoder {
            header: [0; 4],
            header_len: 0,
            remaining: 0,
            prefix: Vec::new(),
            stopped: false,
            _m: PhantomData,
        }
    }
}

impl<M: Decode> Decoder<M> {
    /// Feeds `input`; decoded messages are appended to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<M>) -> Result<(), SftpError> {
        if self.stopped {
            return Err(SftpError::Stopped);
        }
        while !input.is_empty() {
            if self.remaining == 0 {
                let want = 4 - self.header_len;
                let n = want.min(input.len());
                let Some((head, rest)) = input.split_at_checked(n) else {
                    break;
                };
                if let Some(dst) = self.header.get_mut(self.header_len..self.header_len + n) {
                    dst.copy_from_slice(head);
                }
                self.header_len += n;
                input = rest;
                if self.header_len < 4 {
                    break;
                }
                self.header_len = 0;
                let len = u32::from_be_bytes(self.header);
                if len == 0 || len > MAX_PACKET {
                    self.stopped = true;
                    return Err(SftpError::BadLength(len));
                }
                self.remaining = len;
                self.prefix.clear();
                continue;
            }
            let n = usize::try_from(self.remaining)
                .unwrap_or(usize::MAX)
                .min(input.len());
            let Some((body, rest)) = input.split_at_checked(n) else {
                break;
            };
            let keep = (MAX_PREFIX - self.prefix.len()).min(body.len());
            if let Some(kept) = body.get(..keep) {
                self.prefix.extend_from_slice(kept);
            }
            // n <= remaining, which is a u32.
            self.remaining -= u32::try_from(n).unwrap_or(self.remaining);
            input = rest;
            if self.remaining == 0 {
                out.push(M::decode(&self.prefix));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod fixtures;

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn response_fixtures() {
        let mut data = vec![DATA, 0, 0, 0, 9];
        put_string(&mut data, &[1u8; 5000]);
        let cases: Vec<(Vec<u8>, Response)> = vec![
            (
                status(1, 2, "No such file"),
                Response::Status {
                    id: 1,
                    code: 2,
                    message: "No such file".into(),
                },
            ),
            (
                handle(2, b"h"),
                Response::Handle {
                    id: 2,
                    handle: b"h".to_vec(),
                },
            ),
            (packet(&data), Response::Data { id: 9, len: 5000 }),
            (
                attrs_reply(3, 77),
                Response::Attrs {
                    id: 3,
                    attrs: Attrs {
                        size: Some(77),
                        ..Attrs::default()
                    },
                },
            ),
            // Attributes cut short.
            (
                packet(&[ATTRS, 0, 0, 0, 3, 0, 0, 0, 1, 0]),
                Response::Other {
                    kind: ATTRS,
                    id: Some(3),
                },
            ),
            // A name list (readdir, realpath) is not read beyond its id.
            (
                with_id(104, 4, &[]),
                Response::Other {
                    kind: 104,
                    id: Some(4),
                },
            ),
            (
                packet(&[104, 0, 0]),
                Response::Other {
                    kind: 104,
                    id: None,
                },
            ),
            (
                packet(&[VERSION, 0, 0, 0, 3]),
                Response::Version { version: 3 },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_all::<Response>(&bytes), vec![want]);
        }
    }

    #[test]
    fn modes_print_as_chmod_takes_them() {
        for (bits, want) in [(0o100644, "0644"), (0o4755, "4755"), (0o7, "0007")] {
            let a = Attrs {
                permissions: Some(bits),
                ..Attrs::default()
            };
            assert_eq!(a.mode().as_deref(), Some(want));
        }
    }

    #[test]
    fn bad_length_stops() {
        let mut d = Decoder::<Request>::default();
        let mut out = Vec::new();
        assert_eq!(
            d.push(&[0, 0, 0, 0], &mut out),
            Err(SftpError::BadLength(0))
        );
        assert_eq!(d.push(&[1], &mut out), Err(SftpError::Stopped));
        let mut d = Decoder::<Request>::default();
        assert_eq!(
            d.push(&[0xff, 0xff, 0xff, 0xff], &mut out),
            Err(SftpError::BadLength(u32::MAX))
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut t = Tracker::default();
            let mut reqs = Vec::new();
            let _ = Decoder::<Request>::default().push(&bytes, &mut reqs);
            let mut ops = Vec::new();
            for r in reqs {
                t.request(r, &mut ops);
            }
            let mut out = Vec::new();
            let _ = Decoder::<Response>::default().push(&bytes, &mut out);
            for r in out {
                t.response(r, &mut ops);
            }
            ops.extend(t.finish());
        }

        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 1..512)) {
            let _ = decode_all::<Request>(&packet(&body));
            let _ = decode_all::<Response>(&packet(&body));
        }

        #[test]
        fn chunking_does_not_matter(
            paths in proptest::collection::vec("[a-z/]{1,40}", 1..8),
            data_len in 0usize..70_000,
            cuts in proptest::collection::vec(1usize..5000, 0..40),
        ) {
            let mut stream = Vec::new();
            for (i, p) in paths.iter().enumerate() {
                stream.extend(open(i as u32, p, 1));
                stream.extend(write(i as u32, b"h", &vec![1u8; data_len]));
            }
            let whole = decode_all::<Request>(&stream);
            prop_assert_eq!(whole.len(), paths.len() * 2);
            let mut d = Decoder::<Request>::default();
            let mut pieces = Vec::new();
            let mut rest: &[u8] = &stream;
            for c in cuts {
                let n = c.min(rest.len());
                let (a, b) = rest.split_at(n);
                d.push(a, &mut pieces).unwrap();
                rest = b;
            }
            d.push(rest, &mut pieces).unwrap();
            prop_assert_eq!(pieces, whole);
        }
    }
}
