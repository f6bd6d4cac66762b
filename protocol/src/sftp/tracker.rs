//! Pairing SFTP requests with their replies by id: which handles are open on which paths,
//! what went through them, and one [`Op`] per auditable operation once the server answered.
//!
//! The rule it keeps: every request that changes the filesystem, and every file handle
//! opened, yields an operation, whether or not a byte went through it (an empty file
//! uploaded is a file created or truncated). Reads of metadata and directory listings do not.

use std::collections::HashMap;

use super::{Attrs, MAX_TRACKED, Request, Response};

/// One auditable SFTP operation (`ssh.sftp`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Op {
    /// open, close, remove, rename, mkdir, rmdir, setstat, symlink, hardlink, copy, or
    /// extension (an extended request known only by its name).
    pub op: &'static str,
    /// The file operated on: for a link the link created, for a copy its source.
    pub path: String,
    /// Rename: the new name. Copy: the destination.
    pub to: Option<String>,
    /// Symlink and hardlink: what the new link points to (a symlink's as given, which may be
    /// relative to the link).
    pub link_target: Option<String>,
    /// Extension: the request's name.
    pub extension: Option<String>,
    /// Open: the flags (read 1, write 2, append 4, creat 8, trunc 16, excl 32).
    pub pflags: Option<u32>,
    /// Open, mkdir, setstat: the attributes the request sets.
    pub attrs: Option<Attrs>,
    /// Copy: where reading and writing start, and the length asked for (0: to the end).
    pub offset: Option<u64>,
    pub to_offset: Option<u64>,
    pub length: Option<u64>,
    /// Copy: the bytes copied, when known (see [`Tracker`]).
    pub bytes_copied: Option<u64>,
    /// Close: bytes read from and written to the file through this handle.
    pub bytes_read: Option<u64>,
    pub bytes_written: Option<u64>,
    /// The server's answer: None when it said OK, else its status message.
    pub error: Option<String>,
    /// Close: the client never closed the handle; the channel ended with it open (the
    /// client went away, or the session was closed mid-transfer). The counts are what went
    /// through it until then.
    pub interrupted: bool,
}

#[derive(Debug)]
enum Pending {
    /// An open (`pflags` set) or an opendir (`None`).
    Open {
        path: String,
        pflags: Option<u32>,
        attrs: Option<Attrs>,
    },
    Close {
        handle: Vec<u8>,
    },
    Read {
        handle: Vec<u8>,
    },
    Stat {
        path: String,
    },
    Fstat {
        handle: Vec<u8>,
    },
    /// A copy-data request; on success its bytes count on both handles.
    Copy {
        op: Op,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// An operation complete but for the server's verdict.
    Done(Op),
}

#[derive(Debug, Default)]
struct OpenFile {
    path: String,
    /// A directory handle: its listing is not file access worth a record.
    dir: bool,
    /// The file's size as the server last reported it, if it did.
    size: Option<u64>,
    read: u64,
    written: u64,
}

/// Pairs requests with replies by id; feed it both directions' messages in arrival order.
///
/// A copy-data request asking for "to the end of the file" (OpenSSH's `cp` always does)
/// does not say how much that is, and its reply is a bare status. The bytes copied are then
/// the source's size as the server last reported it (OpenSSH stats the source just before
/// it opens it) less the starting offset; unknown when no size was seen.
#[derive(Debug, Default)]
pub struct Tracker {
    pending: HashMap<u32, Pending>,
    handles: HashMap<Vec<u8>, OpenFile>,
    /// The last path a stat answered with a size for, and that size.
    last_stat: Option<(String, u64)>,
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

    fn done(&mut self, id: u32, op: Op) {
        self.expect(id, Pending::Done(op));
    }

    /// The path a handle was opened on; empty for a handle not seen opened.
    fn path_of(&self, handle: &[u8]) -> String {
        self.handles
            .get(handle)
            .map(|f| f.path.clone())
            .unwrap_or_default()
    }

    /// A client request went by.
    pub fn request(&mut self, req: Request) {
        let op = |op, path| Op {
            op,
            path,
            ..Op::default()
        };
        match req {
            Request::Open {
                id,
                path,
                pflags,
                attrs,
            } => self.expect(
                id,
                Pending::Open {
                    path,
                    pflags: Some(pflags),
                    attrs,
                },
            ),
            Request::Opendir { id, path } => self.expect(
                id,
                Pending::Open {
                    path,
                    pflags: None,
                    attrs: None,
                },
            ),
            Request::Close { id, handle } => self.expect(id, Pending::Close { handle }),
            Request::Read { id, handle, .. } => self.expect(id, Pending::Read { handle }),
            Request::Write { handle, len, .. } => {
                if let Some(f) = self.handles.get_mut(&handle) {
                    f.written += u64::from(len);
                }
            }
            Request::Stat { id, path } => self.expect(id, Pending::Stat { path }),
            Request::Fstat { id, handle } => self.expect(id, Pending::Fstat { handle }),
            Request::Fsetstat { id, handle, attrs } => {
                let path = self.path_of(&handle);
                self.done(
                    id,
                    Op {
                        attrs,
                        ..op("setstat", path)
                    },
                );
            }
            Request::Setstat { id, path, attrs } => self.done(
                id,
                Op {
                    attrs,
                    ..op("setstat", path)
                },
            ),
            Request::Mkdir { id, path, attrs } => self.done(
                id,
                Op {
                    attrs,
                    ..op("mkdir", path)
                },
            ),
            Request::Remove { id, path } => self.done(id, op("remove", path)),
            Request::Rmdir { id, path } => self.done(id, op("rmdir", path)),
            Request::Rename { id, from, to } => self.done(
                id,
                Op {
                    to: Some(to),
                    ..op("rename", from)
                },
            ),
            Request::Symlink { id, link, target } => self.done(
                id,
                Op {
                    link_target: Some(target),
                    ..op("symlink", link)
                },
            ),
            Request::Hardlink { id, link, target } => self.done(
                id,
                Op {
                    link_target: Some(target),
                    ..op("hardlink", link)
                },
            ),
            Request::CopyData {
                id,
                from,
                offset,
                length,
                to,
                to_offset,
            } => {
                let left = self
                    .handles
                    .get(&from)
                    .and_then(|f| f.size)
                    .map(|s| s.saturating_sub(offset));
                let copied = match (length, left) {
                    (0, left) => left,
                    (n, Some(left)) => Some(n.min(left)),
                    (n, None) => Some(n),
                };
                let copy = Op {
                    to: Some(self.path_of(&to)),
                    offset: Some(offset),
                    to_offset: Some(to_offset),
                    length: Some(length),
                    bytes_copied: copied,
                    ..op("copy", self.path_of(&from))
                };
                self.expect(id, Pending::Copy { op: copy, from, to });
            }
            Request::Extension { id, name } => self.done(
                id,
                Op {
                    extension: Some(name),
                    ..op("extension", String::new())
                },
            ),
            Request::Init { .. } | Request::Other { .. } => {}
        }
    }

    /// A server reply went by; returns the operation it completes, if auditable.
    pub fn response(&mut self, resp: Response) -> Option<Op> {
        match resp {
            Response::Handle { id, handle } => match self.pending.remove(&id)? {
                Pending::Open {
                    path,
                    pflags,
                    attrs,
                } => {
                    let size = match &self.last_stat {
                        Some((p, size)) if *p == path => Some(*size),
                        _ => None,
                    };
                    if self.handles.len() < MAX_TRACKED {
                        self.handles.insert(
                            handle,
                            OpenFile {
                                path: path.clone(),
                                dir: pflags.is_none(),
                                size,
                                ..OpenFile::default()
                            },
                        );
                    }
                    // Directory listings are not file access worth a record each.
                    pflags.map(|f| Op {
                        op: "open",
                        path,
                        pflags: Some(f),
                        attrs,
                        ..Op::default()
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
            Response::Attrs { id, attrs } => {
                match self.pending.remove(&id)? {
                    Pending::Stat { path } => self.last_stat = attrs.size.map(|s| (path, s)),
                    Pending::Fstat { handle } => {
                        if let Some(f) = self.handles.get_mut(&handle) {
                            f.size = attrs.size;
                        }
                    }
                    _ => {}
                }
                None
            }
            Response::Status { id, code, message } => {
                let error = status_error(code, &message);
                match self.pending.remove(&id)? {
                    Pending::Open {
                        path,
                        pflags,
                        attrs,
                    } => pflags.map(|f| Op {
                        op: "open",
                        path,
                        pflags: Some(f),
                        attrs,
                        error,
                        ..Op::default()
                    }),
                    Pending::Close { handle } => {
                        let f = self.handles.remove(&handle)?;
                        // Every file handle closes with its counts, zero included: an open
                        // for writing closed with nothing written is a file created or
                        // emptied.
                        (!f.dir).then(|| Op {
                            op: "close",
                            path: f.path,
                            bytes_read: Some(f.read),
                            bytes_written: Some(f.written),
                            error,
                            ..Op::default()
                        })
                    }
                    Pending::Read { .. } | Pending::Stat { .. } | Pending::Fstat { .. } => None,
                    Pending::Copy { mut op, from, to } => {
                        if error.is_some() {
                            // How much a failed copy wrote before failing is not known.
                            op.bytes_copied = None;
                        } else if let Some(n) = op.bytes_copied {
                            if let Some(f) = self.handles.get_mut(&from) {
                                f.read += n;
                            }
                            if let Some(f) = self.handles.get_mut(&to) {
                                f.written += n;
                            }
                        }
                        Some(Op { error, ..op })
                    }
                    Pending::Done(op) => Some(Op { error, ..op }),
                }
            }
            Response::Version { .. } | Response::Other { .. } => None,
        }
    }

    /// The channel ended: a close for every file handle still open (`interrupted`), so a
    /// transfer cut short still says what it moved. In path order; directories are left out,
    /// as their closes are.
    pub fn unclosed(&mut self) -> Vec<Op> {
        let mut ops: Vec<Op> = self
            .handles
            .drain()
            .filter(|(_, f)| !f.dir)
            .map(|(_, f)| Op {
                op: "close",
                path: f.path,
                bytes_read: Some(f.read),
                bytes_written: Some(f.written),
                interrupted: true,
                ..Op::default()
            })
            .collect();
        ops.sort_by(|a, b| a.path.cmp(&b.path));
        ops
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::fixtures::*;
    use super::*;

    /// Plays a conversation of (client packet, server packet) pairs; the operations logged.
    fn play(exchange: &[(Vec<u8>, Vec<u8>)]) -> Vec<Op> {
        let mut t = Tracker::default();
        let mut ops = Vec::new();
        for (c, s) in exchange {
            for r in decode_all::<Request>(c) {
                t.request(r);
            }
            for r in decode_all::<Response>(s) {
                ops.extend(t.response(r));
            }
        }
        ops
    }

    fn names(ops: &[Op]) -> Vec<(&'static str, &str)> {
        ops.iter().map(|o| (o.op, o.path.as_str())).collect()
    }

    #[test]
    fn upload_session() {
        let ops = play(&[
            (open(1, "/tmp/up", 0x1a), handle(1, b"H")),
            (write(2, b"H", &[0u8; 1000]), status(2, 0, "")),
            (write(3, b"H", &[0u8; 24]), status(3, 0, "")),
            (with_id(CLOSE, 4, &[b"H"]), status(4, 0, "")),
            (
                with_id(RENAME, 5, &[b"/tmp/up", b"/tmp/up2"]),
                status(5, 0, ""),
            ),
            (with_id(RMDIR, 6, &[b"/nope"]), status(6, 2, "No such file")),
        ]);
        assert_eq!(
            names(&ops),
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

    /// A channel that ends mid-transfer still closes, as interrupted, each file left open
    /// with what went through it; a closed file and a directory are not repeated.
    #[test]
    fn files_left_open_close_as_interrupted_when_the_channel_ends() {
        let mut t = Tracker::default();
        let mut ops = Vec::new();
        for (c, s) in [
            (open(1, "/tmp/b", 0x1a), handle(1, b"B")),
            (open(2, "/tmp/a", 1), handle(2, b"A")),
            (with_id(OPENDIR, 3, &[b"/"]), handle(3, b"D")),
            (open(4, "/tmp/done", 0x1a), handle(4, b"C")),
            (with_id(CLOSE, 5, &[b"C"]), status(5, 0, "")),
            (write(6, b"B", &[0u8; 700]), Vec::new()),
            (read(7, b"A"), with_id(DATA, 7, &[&[0u8; 300]])),
        ] {
            for r in decode_all::<Request>(&c) {
                t.request(r);
            }
            for r in decode_all::<Response>(&s) {
                ops.extend(t.response(r));
            }
        }
        assert!(ops.iter().all(|o| !o.interrupted));
        let left = t.unclosed();
        assert_eq!(names(&left), vec![("close", "/tmp/a"), ("close", "/tmp/b")]);
        assert!(left.iter().all(|o| o.interrupted && o.error.is_none()));
        assert_eq!(
            (left[0].bytes_read, left[0].bytes_written),
            (Some(300), Some(0))
        );
        assert_eq!(
            (left[1].bytes_read, left[1].bytes_written),
            (Some(0), Some(700))
        );
        assert!(t.unclosed().is_empty());
    }

    /// An empty file put or got still closes with its counts; a directory listing does not.
    #[test]
    fn empty_files_close_with_zero_bytes_and_directories_stay_quiet() {
        let ops = play(&[
            (open(1, "/e", 0x1a), handle(1, b"W")),
            (with_id(CLOSE, 2, &[b"W"]), status(2, 0, "")),
            (open(3, "/e", 0x01), handle(3, b"R")),
            (read(4, b"R"), status(4, 1, "EOF")),
            (with_id(CLOSE, 5, &[b"R"]), status(5, 0, "")),
            (with_id(OPENDIR, 6, &[b"/"]), handle(6, b"D")),
            (with_id(CLOSE, 7, &[b"D"]), status(7, 0, "")),
        ]);
        assert_eq!(
            names(&ops),
            vec![
                ("open", "/e"),
                ("close", "/e"),
                ("open", "/e"),
                ("close", "/e")
            ]
        );
        for close in [&ops[1], &ops[3]] {
            assert_eq!((close.bytes_read, close.bytes_written), (Some(0), Some(0)));
        }
    }

    #[test]
    fn links_name_the_link_made_and_what_it_points_to() {
        let ops = play(&[
            // OpenSSH order: target first, then the link.
            (with_id(SYMLINK, 1, &[b"a", b"/d/b"]), status(1, 0, "")),
            (
                extended(2, b"hardlink@openssh.com", &[b"/d/a", b"/d/c"]),
                status(2, 0, ""),
            ),
            (
                with_id(SYMLINK, 3, &[b"x", b"/d/b"]),
                status(3, 4, "Failure"),
            ),
        ]);
        assert_eq!(
            names(&ops),
            vec![
                ("symlink", "/d/b"),
                ("hardlink", "/d/c"),
                ("symlink", "/d/b")
            ]
        );
        assert_eq!(ops[0].link_target.as_deref(), Some("a"));
        assert_eq!(ops[1].link_target.as_deref(), Some("/d/a"));
        assert_eq!(ops[2].error.as_deref(), Some("Failure"));
    }

    /// OpenSSH's `cp`: stat the source, open both, copy-data to the end, close both.
    #[test]
    fn copy_resolves_handles_and_counts_the_source_size() {
        let copy = |id, len| {
            let mut b = vec![EXTENDED];
            b.extend_from_slice(&u32::to_be_bytes(id));
            put_string(&mut b, b"copy-data");
            put_string(&mut b, b"S");
            b.extend_from_slice(&0u64.to_be_bytes());
            b.extend_from_slice(&u64::to_be_bytes(len));
            put_string(&mut b, b"D");
            b.extend_from_slice(&0u64.to_be_bytes());
            packet(&b)
        };
        let ops = play(&[
            (with_id(STAT, 1, &[b"/src"]), attrs_reply(1, 5000)),
            (open(2, "/src", 0x01), handle(2, b"S")),
            (open(3, "/dst", 0x1a), handle(3, b"D")),
            (copy(4, 0), status(4, 0, "")),
            (copy(5, 100), status(5, 0, "")),
            (with_id(CLOSE, 6, &[b"S"]), status(6, 0, "")),
            (with_id(CLOSE, 7, &[b"D"]), status(7, 0, "")),
            (copy(8, 0), status(8, 9, "Bad handle")),
        ]);
        assert_eq!(
            names(&ops),
            vec![
                ("open", "/src"),
                ("open", "/dst"),
                ("copy", "/src"),
                ("copy", "/src"),
                ("close", "/src"),
                ("close", "/dst"),
                ("copy", ""),
            ]
        );
        assert_eq!(ops[2].to.as_deref(), Some("/dst"));
        assert_eq!((ops[2].length, ops[2].bytes_copied), (Some(0), Some(5000)));
        assert_eq!(ops[3].bytes_copied, Some(100));
        assert_eq!(ops[4].bytes_read, Some(5100));
        assert_eq!(ops[5].bytes_written, Some(5100));
        assert_eq!(ops[6].bytes_copied, None);
        assert_eq!(ops[6].error.as_deref(), Some("Bad handle"));
    }

    #[test]
    fn setstat_says_what_it_sets() {
        let ops = play(&[
            (open(1, "/f", 0x02), handle(1, b"H")),
            (
                path_attrs(SETSTAT, 2, b"/f", &[(0x4, &[0o100644])]),
                status(2, 0, ""),
            ),
            (
                path_attrs(FSETSTAT, 3, b"H", &[(0x1, &[0, 7]), (0x2, &[1000, 100])]),
                status(3, 0, ""),
            ),
            (
                path_attrs(SETSTAT, 4, b"/f", &[(0x8, &[1, 2])]),
                status(4, 3, "Permission denied"),
            ),
        ]);
        assert_eq!(
            names(&ops),
            vec![
                ("open", "/f"),
                ("setstat", "/f"),
                ("setstat", "/f"),
                ("setstat", "/f")
            ]
        );
        let a = |i: usize| ops[i].attrs.clone().unwrap();
        assert_eq!(a(1).mode().as_deref(), Some("0644"));
        assert_eq!(
            (a(2).size, a(2).uid, a(2).gid),
            (Some(7), Some(1000), Some(100))
        );
        assert_eq!((a(3).atime, a(3).mtime), (Some(1), Some(2)));
        assert_eq!(ops[3].error.as_deref(), Some("Permission denied"));
    }

    #[test]
    fn unknown_extensions_are_logged_by_name_read_only_ones_are_not() {
        let ops = play(&[
            (
                extended(1, b"statvfs@openssh.com", &[b"/"]),
                status(1, 0, ""),
            ),
            (extended(2, b"fsync@openssh.com", &[b"H"]), status(2, 0, "")),
            (
                extended(3, b"evil@example.com", &[b"/"]),
                status(3, 8, "Unsupported"),
            ),
        ]);
        assert_eq!(names(&ops), vec![("extension", "")]);
        assert_eq!(ops[0].extension.as_deref(), Some("evil@example.com"));
        assert_eq!(ops[0].error.as_deref(), Some("Unsupported"));
    }
}
