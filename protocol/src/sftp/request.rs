//! Client-to-server SFTP packets as far as the audit cares: the requests that open, change
//! or stat files, and the OpenSSH extensions among them, each decoded from a packet's kept
//! prefix.

use super::{Attrs, Decode, Reader, ty};

/// Extended requests that only read (metadata, limits, paths) or change nothing on disk
/// (`fsync@openssh.com` flushes writes the handle's close already counts). Every other
/// extension is logged by name, so one the audit does not understand cannot change a file
/// unseen.
const QUIET_EXTENSIONS: &[&[u8]] = &[
    b"statvfs@openssh.com",
    b"fstatvfs@openssh.com",
    b"limits@openssh.com",
    b"expand-path@openssh.com",
    b"home-directory",
    b"users-groups-by-id@openssh.com",
    b"fsync@openssh.com",
];

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
        /// `None` when the attributes could not be read; the open is still tracked.
        attrs: Option<Attrs>,
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
        attrs: Option<Attrs>,
    },
    Rmdir {
        id: u32,
        path: String,
    },
    /// `SSH_FXP_SETSTAT`, and `lsetstat@openssh.com` (the same on the link itself).
    Setstat {
        id: u32,
        path: String,
        attrs: Option<Attrs>,
    },
    Fsetstat {
        id: u32,
        handle: Vec<u8>,
        attrs: Option<Attrs>,
    },
    /// `SSH_FXP_STAT` or `SSH_FXP_LSTAT`: watched only for the size it answers with.
    Stat {
        id: u32,
        path: String,
    },
    Fstat {
        id: u32,
        handle: Vec<u8>,
    },
    /// `SSH_FXP_SYMLINK`: `link` is created, pointing at `target`.
    Symlink {
        id: u32,
        link: String,
        target: String,
    },
    /// `hardlink@openssh.com`: `link` is created as another name of `target`.
    Hardlink {
        id: u32,
        link: String,
        target: String,
    },
    /// `copy-data` (draft-ietf-secsh-filexfer-extensions-00 §7): the server copies `length`
    /// bytes (0: up to the end of the file) from one open handle to another.
    CopyData {
        id: u32,
        from: Vec<u8>,
        offset: u64,
        length: u64,
        to: Vec<u8>,
        to_offset: u64,
    },
    /// An extended request the audit does not interpret beyond its name.
    Extension {
        id: u32,
        name: String,
    },
    /// Anything else (readdir, realpath, read-only extensions...), or a packet too short to
    /// read; its id when it has one, so that its reply is not taken for another request's.
    Other {
        kind: u8,
        id: Option<u32>,
    },
}

impl Decode for Request {
    fn decode(prefix: &[u8]) -> Self {
        let mut r = Reader(prefix);
        let Some(kind) = r.u8() else {
            return Request::Other { kind: 0, id: None };
        };
        // Every request but the init starts with the id its reply will carry.
        let id = (kind != ty::INIT)
            .then(|| Reader(prefix.get(1..).unwrap_or_default()).u32())
            .flatten();
        let parsed = (|| {
            Some(match kind {
                ty::INIT => Request::Init { version: r.u32()? },
                ty::OPEN => Request::Open {
                    id: r.u32()?,
                    path: r.string()?,
                    pflags: r.u32()?,
                    attrs: r.attrs(),
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
                    attrs: r.attrs(),
                },
                ty::RMDIR => Request::Rmdir {
                    id: r.u32()?,
                    path: r.string()?,
                },
                ty::SETSTAT => Request::Setstat {
                    id: r.u32()?,
                    path: r.string()?,
                    attrs: r.attrs(),
                },
                ty::FSETSTAT => Request::Fsetstat {
                    id: r.u32()?,
                    handle: r.bytes()?.to_vec(),
                    attrs: r.attrs(),
                },
                ty::STAT | ty::LSTAT => Request::Stat {
                    id: r.u32()?,
                    path: r.string()?,
                },
                ty::FSTAT => Request::Fstat {
                    id: r.u32()?,
                    handle: r.bytes()?.to_vec(),
                },
                // The draft orders the fields linkpath, targetpath; OpenSSH's client and
                // sftp-server both put the target first (sftp-server calls
                // symlink(first, second)), and every client that talks to OpenSSH follows
                // it. The target is an OpenSSH sshd, so its order is the one that says
                // which link was made.
                ty::SYMLINK => {
                    let id = r.u32()?;
                    let target = r.string()?;
                    Request::Symlink {
                        id,
                        link: r.string()?,
                        target,
                    }
                }
                ty::EXTENDED => decode_extended(&mut r)?,
                _ => return None,
            })
        })();
        parsed.unwrap_or(Request::Other { kind, id })
    }
}

/// An `SSH_FXP_EXTENDED` request after its type byte.
fn decode_extended(r: &mut Reader<'_>) -> Option<Request> {
    let id = r.u32()?;
    let name = r.bytes()?;
    Some(match name {
        // OpenSSH's sftp renames with its extension when the server offers it.
        b"posix-rename@openssh.com" => Request::Rename {
            id,
            from: r.string()?,
            to: r.string()?,
        },
        b"lsetstat@openssh.com" => Request::Setstat {
            id,
            path: r.string()?,
            attrs: r.attrs(),
        },
        // sftp-server calls link(first, second).
        b"hardlink@openssh.com" => {
            let target = r.string()?;
            Request::Hardlink {
                id,
                link: r.string()?,
                target,
            }
        }
        b"copy-data" => Request::CopyData {
            id,
            from: r.bytes()?.to_vec(),
            offset: r.u64()?,
            length: r.u64()?,
            to: r.bytes()?.to_vec(),
            to_offset: r.u64()?,
        },
        _ if QUIET_EXTENSIONS.contains(&name) => Request::Other {
            kind: ty::EXTENDED,
            id: Some(id),
        },
        _ => Request::Extension {
            id,
            name: String::from_utf8_lossy(name).into_owned(),
        },
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::super::fixtures::*;
    use super::super::{Response, Tracker};
    use super::*;
    use proptest::prelude::*;

    fn attrs(f: impl FnOnce(&mut Attrs)) -> Option<Attrs> {
        let mut a = Attrs::default();
        f(&mut a);
        Some(a)
    }

    #[test]
    fn request_fixtures() {
        let big = vec![7u8; 100_000];
        let copy = {
            let mut b = vec![EXTENDED, 0, 0, 0, 12];
            put_string(&mut b, b"copy-data");
            put_string(&mut b, b"S");
            b.extend_from_slice(&5u64.to_be_bytes());
            b.extend_from_slice(&0u64.to_be_bytes());
            put_string(&mut b, b"D");
            b.extend_from_slice(&9u64.to_be_bytes());
            packet(&b)
        };
        let cases: Vec<(Vec<u8>, Request)> = vec![
            (packet(&[INIT, 0, 0, 0, 3]), Request::Init { version: 3 }),
            (
                open(1, "/tmp/a", 0x1a),
                Request::Open {
                    id: 1,
                    path: "/tmp/a".into(),
                    pflags: 0x1a,
                    attrs: Some(Attrs::default()),
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
                with_id(RENAME, 3, &[b"/a", b"/b"]),
                Request::Rename {
                    id: 3,
                    from: "/a".into(),
                    to: "/b".into(),
                },
            ),
            (
                path_attrs(MKDIR, 4, b"/d", &[(0x4, &[0o40755])]),
                Request::Mkdir {
                    id: 4,
                    path: "/d".into(),
                    attrs: attrs(|a| a.permissions = Some(0o40755)),
                },
            ),
            (
                with_id(REMOVE, 5, &[b"/f"]),
                Request::Remove {
                    id: 5,
                    path: "/f".into(),
                },
            ),
            // Truncated: the path's length runs past the packet.
            (
                packet(&[REMOVE, 0, 0, 0, 1, 0, 0, 0, 9, b'/']),
                Request::Other {
                    kind: REMOVE,
                    id: Some(1),
                },
            ),
            // realpath is not decoded.
            (
                packet(&[16, 0, 0, 0, 1]),
                Request::Other {
                    kind: 16,
                    id: Some(1),
                },
            ),
            // Too short to carry an id.
            (packet(&[16, 0, 0]), Request::Other { kind: 16, id: None }),
            (
                extended(6, b"posix-rename@openssh.com", &[b"/x", b"/y"]),
                Request::Rename {
                    id: 6,
                    from: "/x".into(),
                    to: "/y".into(),
                },
            ),
            (
                extended(7, b"statvfs@openssh.com", &[b"/"]),
                Request::Other {
                    kind: EXTENDED,
                    id: Some(7),
                },
            ),
            (
                extended(7, b"fsync@openssh.com", &[b"h"]),
                Request::Other {
                    kind: EXTENDED,
                    id: Some(7),
                },
            ),
            // OpenSSH puts the target first: `ln -s a /d/b` makes /d/b.
            (
                with_id(SYMLINK, 8, &[b"a", b"/d/b"]),
                Request::Symlink {
                    id: 8,
                    link: "/d/b".into(),
                    target: "a".into(),
                },
            ),
            (
                extended(9, b"hardlink@openssh.com", &[b"/d/a", b"/d/c"]),
                Request::Hardlink {
                    id: 9,
                    link: "/d/c".into(),
                    target: "/d/a".into(),
                },
            ),
            (
                path_attrs(SETSTAT, 10, b"/f", &[(0x4, &[0o755]), (0x8, &[1, 2])]),
                Request::Setstat {
                    id: 10,
                    path: "/f".into(),
                    attrs: attrs(|a| {
                        a.permissions = Some(0o755);
                        a.atime = Some(1);
                        a.mtime = Some(2);
                    }),
                },
            ),
            (
                path_attrs(FSETSTAT, 11, b"h", &[(0x1, &[1, 0]), (0x2, &[0, 0])]),
                Request::Fsetstat {
                    id: 11,
                    handle: b"h".to_vec(),
                    attrs: attrs(|a| {
                        a.size = Some(1 << 32);
                        a.uid = Some(0);
                        a.gid = Some(0);
                    }),
                },
            ),
            // Attributes cut short: the setstat is still seen, without them.
            (
                with_id(SETSTAT, 12, &[b"/f"]),
                Request::Setstat {
                    id: 12,
                    path: "/f".into(),
                    attrs: None,
                },
            ),
            (
                copy,
                Request::CopyData {
                    id: 12,
                    from: b"S".to_vec(),
                    offset: 5,
                    length: 0,
                    to: b"D".to_vec(),
                    to_offset: 9,
                },
            ),
            (
                extended(13, b"lsetstat@openssh.com", &[b"/l"]),
                Request::Setstat {
                    id: 13,
                    path: "/l".into(),
                    attrs: None,
                },
            ),
            (
                extended(14, b"made-up@example.com", &[]),
                Request::Extension {
                    id: 14,
                    name: "made-up@example.com".into(),
                },
            ),
            (
                with_id(LSTAT, 15, &[b"/s"]),
                Request::Stat {
                    id: 15,
                    path: "/s".into(),
                },
            ),
        ];
        for (bytes, want) in cases {
            assert_eq!(decode_all::<Request>(&bytes), vec![want]);
        }
    }

    /// The extended requests the decoder knows by name, for the property tests to aim at.
    const EXTENSIONS: &[&[u8]] = &[
        b"posix-rename@openssh.com",
        b"lsetstat@openssh.com",
        b"hardlink@openssh.com",
        b"copy-data",
        b"statvfs@openssh.com",
        b"fsync@openssh.com",
        b"other@example.com",
    ];

    proptest! {
        /// Every request type, extensions included, with an arbitrary (often cut short)
        /// body, through the tracker with arbitrary replies under the same ids.
        #[test]
        fn every_request_type_with_arbitrary_fields_never_panics(
            reqs in proptest::collection::vec(
                (0u8..=21, 0usize..EXTENSIONS.len(), 0u32..4,
                 proptest::collection::vec(any::<u8>(), 0..64)),
                1..16,
            ),
            replies in proptest::collection::vec(
                (prop_oneof![Just(STATUS), Just(HANDLE), Just(DATA), Just(ATTRS)], 0u32..4,
                 proptest::collection::vec(any::<u8>(), 0..32)),
                0..16,
            ),
        ) {
            let mut t = Tracker::default();
            let mut ops = Vec::new();
            for (kind, ext, id, tail) in reqs {
                let kind = if kind == 21 { EXTENDED } else { kind };
                let mut b = vec![kind];
                b.extend_from_slice(&id.to_be_bytes());
                if kind == EXTENDED {
                    put_string(&mut b, EXTENSIONS.get(ext).copied().unwrap_or_default());
                }
                b.extend_from_slice(&tail);
                for r in decode_all::<Request>(&packet(&b)) {
                    t.request(r, &mut ops);
                }
            }
            for (kind, id, tail) in replies {
                let mut b = vec![kind];
                b.extend_from_slice(&id.to_be_bytes());
                b.extend_from_slice(&tail);
                for r in decode_all::<Response>(&packet(&b)) {
                    t.response(r, &mut ops);
                }
            }
            ops.extend(t.finish());
        }

    }
}
