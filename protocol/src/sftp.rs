//! SFTP packets as OpenSSH speaks them (version 3, draft-ietf-secsh-filexfer-02), decoded
//! from the raw subsystem byte stream for the audit log, plus a tracker that pairs requests
//! with replies and yields one [`Op`] per auditable operation.
//!
//! Only what the audit needs is parsed: each packet's first [`MAX_PREFIX`] bytes are kept and
//! the rest (file data) is counted and skipped, so a 100 MiB upload costs no copies. The
//! gateway forwards the original bytes untouched; this code only watches them.

use std::collections::HashMap;
use std::marker::PhantomData;

/// The largest packet accepted; OpenSSH's own limit is 256 KiB.
pub const MAX_PACKET: u32 = 1024 * 1024;
/// Bytes of each packet kept for decoding (paths, handles, lengths); the rest is skipped.
pub const MAX_PREFIX: usize = 16 * 1024;
/// At most this many requests awaiting a reply and open handles are tracked.
pub const MAX_TRACKED: usize = 4096;

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
    pub const SETSTAT: u8 = 9;
    pub const FSETSTAT: u8 = 10;
    pub const OPENDIR: u8 = 11;
    pub const REMOVE: u8 = 13;
    pub const MKDIR: u8 = 14;
    pub const RMDIR: u8 = 15;
    pub const RENAME: u8 = 18;
    pub const EXTENDED: u8 = 200;
    pub const STATUS: u8 = 101;
    pub const HANDLE: u8 = 102;
    pub const DATA: u8 = 103;
}

/// A client-to-server packet, as far as the audit cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Init {
        version: u32,
    },
    Open {
        id: u32,
        path: String,
        pflags: u32,
    },
    Opendir {
        id: u32,
        path: String,
    },
    Close {
        id: u32,
        handle: Vec<u8>,
    },
    Read {
        id: u32,
        handle: Vec<u8>,
        len: u32,
    },
    Write {
        id: u32,
        handle: Vec<u8>,
        len: u32,
    },
    Remove {
        id: u32,
        path: String,
    },
    Rename {
        id: u32,
        from: String,
        to: String,
    },
    Mkdir {
        id: u32,
        path: String,
    },
    Rmdir {
        id: u32,
        path: String,
    },
    Setstat {
        id: u32,
        path: String,
    },
    Fsetstat {
        id: u32,
        handle: Vec<u8>,
    },
    /// Anything else (stat, readdir, realpath, extensions...), or a packet too short to read.
    Other {
        kind: u8,
    },
}

/// A server-to-client packet, as far as the audit cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    Version { version: u32 },
    Status { id: u32, code: u32, message: String },
    Handle { id: u32, handle: Vec<u8> },
    Data { id: u32, len: u32 },
    Other { kind: u8 },
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
}

impl Decode for Request {
    fn decode(prefix: &[u8]) -> Self {
        let mut r = Reader(prefix);
        let Some(kind) = r.u8() else {
            return Request::Other { kind: 0 };
        };
        let parsed = (|| {
            Some(match kind {
                ty::INIT => Request::Init { version: r.u32()? },
                ty::OPEN => Request::Open {
                    id: r.u32()?,
                    path: r.string()?,
                    pflags: r.u32()?,
                },
                ty::OPENDIR => Request::Opendir {
                    id: r.u32()?,
                    path: r.string()?,
                },
                ty::CLOSE => Request::Close {
                    id: r.u32()?,
                    handle: r.bytes()?.to_vec(),
                },
                ty::READ => {
                    let id = r.u32()?;
                    let handle = r.bytes()?.to_vec();
                    let _offset = r.u64()?;
                    Request::Read {
                        id,
                        handle,
                        len: r.u32()?,
                    }
                }
                ty::WRITE => {
                    let id = r.u32()?;
                    let handle = r.bytes()?.to_vec();
                    let _offset = r.u64()?;
                    // Only the data's length field; the data itself lies past the prefix.
                    Request::Write {
                        id,
                        handle,
                        len: r.u32()?,
                    }
                }
                ty::REMOVE => Request::Remove {
                    id: r.u32()?,
                    path: r.string()?,
                },
                ty::RENAME => Request::Rename {
                    id: r.u32()?,
                    from: r.string()?,
                    to: r.string()?,
                },
                ty::MKDIR => Request::Mkdir {
                    id: r.u32()?,
                    path: r.string()?,
                },
                ty::RMDIR => Request::Rmdir {
                    id: r.u32()?,
                    path: r.string()?,
                },
                ty::SETSTAT => Request::Setstat {
                    id: r.u32()?,
                    path: r.string()?,
                },
                ty::FSETSTAT => Request::Fsetstat {
                    id: r.u32()?,
                    handle: r.bytes()?.to_vec(),
                },
                // OpenSSH's sftp renames with its extension when the server offers it.
                ty::EXTENDED => {
                    let id = r.u32()?;
                    match r.bytes()? {
                        b"posix-rename@openssh.com" => Request::Rename {
                            id,
                            from: r.string()?,
                            to: r.string()?,
                        },
                        b"lsetstat@openssh.com" => Request::Setstat {
                            id,
                            path: r.string()?,
                        },
                        _ => return None,
                    }
                }
                _ => return None,
            })
        })();
        parsed.unwrap_or(Request::Other { kind })
    }
}

impl Decode for Response {
    fn decode(prefix: &[u8]) -> Self {
        let mut r = Reader(prefix);
        let Some(kind) = r.u8() else {
            return Response::Other { kind: 0 };
        };
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
                _ => return None,
            })
        })();
        parsed.unwrap_or(Response::Other { kind })
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

/// One auditable SFTP operation (`ssh.sftp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// open, close, remove, rename, mkdir, rmdir, setstat.
    pub op: &'static str,
    pub path: String,
    /// The new name, for rename.
    pub to: Option<String>,
    /// Open: the flags (read 1, write 2, append 4, creat 8, trunc 16, excl 32).
    pub pflags: Option<u32>,
    /// Close: bytes read from and written to the file through this handle.
    pub bytes_read: Option<u64>,
    pub bytes_written: Option<u64>,
    /// The server's answer: None when it said OK, else its status message.
    pub error: Option<String>,
}

#[derive(Debug)]
enum Pending {
    Open {
        path: String,
        pflags: Option<u32>,
    },
    Close {
        handle: Vec<u8>,
    },
    Read {
        handle: Vec<u8>,
    },
    Simple {
        op: &'static str,
        path: String,
        to: Option<String>,
    },
}

#[derive(Debug, Default)]
struct OpenFile {
    path: String,
    read: u64,
    written: u64,
}

/// Pairs requests with replies by id; feed it both directions' messages in arrival order.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: HashMap<u32, Pending>,
    handles: HashMap<Vec<u8>, OpenFile>,
}

fn status_error(code: u32, message: &str) -> Option<String> {
    (code != 0).then(|| {
        if message.is_empty() {
            format!("status {code}")
        } else {
            message.to_owned()
        }
    })
}

impl Tracker {
    fn expect(&mut self, id: u32, p: Pending) {
        if self.pending.len() < MAX_TRACKED {
            self.pending.insert(id, p);
        }
    }

    /// A client request went by.
    pub fn request(&mut self, req: Request) {
        match req {
            Request::Open { id, path, pflags } => self.expect(
                id,
                Pending::Open {
                    path,
                    pflags: Some(pflags),
                },
            ),
            Request::Opendir { id, path } => self.expect(id, Pending::Open { path, pflags: None }),
            Request::Close { id, handle } => self.expect(id, Pending::Close { handle }),
            Request::Read { id, handle, .. } => self.expect(id, Pending::Read { handle }),
            Request::Write { handle, len, .. } => {
                if let Some(f) = self.handles.get_mut(&handle) {
                    f.written += u64::from(len);
                }
            }
            Request::Fsetstat { id, handle } => {
                let path = self
                    .handles
                    .get(&handle)
                    .map(|f| f.path.clone())
                    .unwrap_or_default();
                self.expect(
                    id,
                    Pending::Simple {
                        op: "setstat",
                        path,
                        to: None,
                    },
                );
            }
            Request::Remove { id, path } => self.expect(
                id,
                Pending::Simple {
                    op: "remove",
                    path,
                    to: None,
                },
            ),
            Request::Mkdir { id, path } => self.expect(
                id,
                Pending::Simple {
                    op: "mkdir",
                    path,
                    to: None,
                },
            ),
            Request::Rmdir { id, path } => self.expect(
                id,
                Pending::Simple {
                    op: "rmdir",
                    path,
                    to: None,
                },
            ),
            Request::Setstat { id, path } => self.expect(
                id,
                Pending::Simple {
                    op: "setstat",
                    path,
                    to: None,
                },
            ),
            Request::Rename { id, from, to } => self.expect(
                id,
                Pending::Simple {
                    op: "rename",
                    path: from,
                    to: Some(to),
                },
            ),
            Request::Init { .. } | Request::Other { .. } => {}
        }
    }

    /// A server reply went by; returns the operation it completes, if auditable.
    pub fn response(&mut self, resp: Response) -> Option<Op> {
        let op = |op, path, error| Op {
            op,
            path,
            to: None,
            pflags: None,
            bytes_read: None,
            bytes_written: None,
            error,
        };
        match resp {
            Response::Handle { id, handle } => match self.pending.remove(&id)? {
                Pending::Open { path, pflags } => {
                    if self.handles.len() < MAX_TRACKED {
                        self.handles.insert(
                            handle,
                            OpenFile {
                                path: path.clone(),
                                ..OpenFile::default()
                            },
                        );
                    }
                    // Directory listings are not file access worth a record each.
                    pflags.map(|f| Op {
                        pflags: Some(f),
                        ..op("open", path, None)
                    })
                }
                _ => None,
            },
            Response::Data { id, len } => {
                if let Some(Pending::Read { handle }) = self.pending.remove(&id)
                    && let Some(f) = self.handles.get_mut(&handle)
                {
                    f.read += u64::from(len);
                }
                None
            }
            Response::Status { id, code, message } => match self.pending.remove(&id)? {
                Pending::Open { path, pflags } => pflags.map(|f| Op {
                    pflags: Some(f),
                    ..op("open", path, status_error(code, &message))
                }),
                Pending::Close { handle } => {
                    let f = self.handles.remove(&handle)?;
                    if f.read == 0 && f.written == 0 && code == 0 {
                        // A directory handle or an untouched file: its open said enough.
                        return None;
                    }
                    Some(Op {
                        bytes_read: Some(f.read),
                        bytes_written: Some(f.written),
                        ..op("close", f.path, status_error(code, &message))
                    })
                }
                Pending::Read { .. } => None,
                Pending::Simple { op: name, path, to } => Some(Op {
                    to,
                    ..op(name, path, status_error(code, &message))
                }),
            },
            Response::Version { .. } | Response::Other { .. } => None,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn string(b: &mut Vec<u8>, s: &[u8]) {
        b.extend_from_slice(&(s.len() as u32).to_be_bytes());
        b.extend_from_slice(s);
    }

    /// Frames a packet body (type byte first) with its length.
    fn packet(body: &[u8]) -> Vec<u8> {
        let mut p = (body.len() as u32).to_be_bytes().to_vec();
        p.extend_from_slice(body);
        p
    }

    fn open(id: u32, path: &str, pflags: u32) -> Vec<u8> {
        let mut b = vec![ty::OPEN];
        b.extend_from_slice(&id.to_be_bytes());
        string(&mut b, path.as_bytes());
        b.extend_from_slice(&pflags.to_be_bytes());
        b.extend_from_slice(&0u32.to_be_bytes()); // attrs flags
        packet(&b)
    }

    fn write(id: u32, handle: &[u8], data: &[u8]) -> Vec<u8> {
        let mut b = vec![ty::WRITE];
        b.extend_from_slice(&id.to_be_bytes());
        string(&mut b, handle);
        b.extend_from_slice(&0u64.to_be_bytes());
        string(&mut b, data);
        packet(&b)
    }

    fn with_id(kind: u8, id: u32, fields: &[&[u8]]) -> Vec<u8> {
        let mut b = vec![kind];
        b.extend_from_slice(&id.to_be_bytes());
        for f in fields {
            string(&mut b, f);
        }
        packet(&b)
    }

    fn status(id: u32, code: u32, msg: &str) -> Vec<u8> {
        let mut b = vec![ty::STATUS];
        b.extend_from_slice(&id.to_be_bytes());
        b.extend_from_slice(&code.to_be_bytes());
        string(&mut b, msg.as_bytes());
        string(&mut b, b"");
        packet(&b)
    }

    fn decode_all<M: Decode>(bytes: &[u8]) -> Vec<M> {
        let mut d = Decoder::<M>::default();
        let mut out = Vec::new();
        d.push(bytes, &mut out).unwrap();
        out
    }

    #[test]
    fn request_fixtures() {
        let big = vec![7u8; 100_000];
        let cases: Vec<(Vec<u8>, Request)> = vec![
            (
                packet(&[ty::INIT, 0, 0, 0, 3]),
                Request::Init { version: 3 },
            ),
            (
                open(1, "/tmp/a", 0x1a),
                Request::Open {
                    id: 1,
                    path: "/tmp/a".into(),
                    pflags: 0x1a,
                },
            ),
            (
                write(2, b"h1", &big),
                Request::Write {
                    id: 2,
                    handle: b"h1".to_vec(),
                    len: 100_000,
                },
            ),
            (
                with_id(ty::RENAME, 3, &[b"/a", b"/b"]),
                Request::Rename {
                    id: 3,
                    from: "/a".into(),
                    to: "/b".into(),
                },
            ),
            (
                with_id(ty::MKDIR, 4, &[b"/d"]),
                Request::Mkdir {
                    id: 4,
                    path: "/d".into(),
                },
            ),
            (
                with_id(ty::REMOVE, 5, &[b"/f"]),
                Request::Remove {
                    id: 5,
                    path: "/f".into(),
                },
            ),
            // Truncated: the path's length runs past the packet.
            (
                packet(&[ty::REMOVE, 0, 0, 0, 1, 0, 0, 0, 9, b'/']),
                Request::Other { kind: ty::REMOVE },
            ),
            (packet(&[17, 0, 0, 0, 1]), Request::Other { kind: 17 }),
            (
                with_id(
                    ty::EXTENDED,
                    6,
                    &[b"posix-rename@openssh.com", b"/x", b"/y"],
                ),
                Request::Rename {
                    id: 6,
                    from: "/x".into(),
                    to: "/y".into(),
                },
            ),
            (
                with_id(ty::EXTENDED, 7, &[b"statvfs@openssh.com", b"/"]),
                Request::Other { kind: ty::EXTENDED },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_all::<Request>(&bytes), vec![want]);
        }
    }

    #[test]
    fn response_fixtures() {
        let mut data = vec![ty::DATA, 0, 0, 0, 9];
        string(&mut data, &[1u8; 5000]);
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
                with_id(ty::HANDLE, 2, &[b"h"]),
                Response::Handle {
                    id: 2,
                    handle: b"h".to_vec(),
                },
            ),
            (packet(&data), Response::Data { id: 9, len: 5000 }),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_all::<Response>(&bytes), vec![want]);
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

    #[test]
    fn tracker_upload_session() {
        let mut t = Tracker::default();
        let mut ops = Vec::new();
        let client = [
            open(1, "/tmp/up", 0x1a),
            write(2, b"H", &[0u8; 1000]),
            write(3, b"H", &[0u8; 24]),
            with_id(ty::CLOSE, 4, &[b"H"]),
            with_id(ty::RENAME, 5, &[b"/tmp/up", b"/tmp/up2"]),
            with_id(ty::RMDIR, 6, &[b"/nope"]),
        ];
        let server = [
            with_id(ty::HANDLE, 1, &[b"H"]),
            status(2, 0, ""),
            status(3, 0, ""),
            status(4, 0, ""),
            status(5, 0, ""),
            status(6, 2, "No such file"),
        ];
        for (c, s) in client.iter().zip(server.iter()) {
            for r in decode_all::<Request>(c) {
                t.request(r);
            }
            for r in decode_all::<Response>(s) {
                ops.extend(t.response(r));
            }
        }
        let names: Vec<_> = ops.iter().map(|o| (o.op, o.path.as_str())).collect();
        assert_eq!(
            names,
            vec![
                ("open", "/tmp/up"),
                ("close", "/tmp/up"),
                ("rename", "/tmp/up"),
                ("rmdir", "/nope")
            ]
        );
        assert_eq!(ops[1].bytes_written, Some(1024));
        assert_eq!(ops[1].bytes_read, Some(0));
        assert_eq!(ops[2].to.as_deref(), Some("/tmp/up2"));
        assert_eq!(ops[3].error.as_deref(), Some("No such file"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let mut out = Vec::new();
            let _ = Decoder::<Request>::default().push(&bytes, &mut out);
            let mut out = Vec::new();
            let _ = Decoder::<Response>::default().push(&bytes, &mut out);
            let mut t = Tracker::default();
            for r in out {
                let _ = t.response(r);
            }
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
