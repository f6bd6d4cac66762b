//! Pairing SFTP requests with their replies by id: which handles are open on which paths,
//! what went through them, and one [`Op`] per auditable operation once the server answered.
//!
//! The rule it keeps: every request that changes the filesystem, and every file handle
//! opened, yields an operation, whether or not a byte went through it (an empty file
//! uploaded is a file created or truncated). Reads of metadata and directory listings do not.
//!
//! The client chooses the ids, and OpenSSH's sftp-server carries out a request whatever its
//! id, so an id the client sends again before its reply, or more requests in flight than
//! are tracked, must not lose an operation. Such a request is logged at once with its
//! outcome unknown ([`Unanswered`]) rather than waiting for a reply that cannot be told
//! apart from another's; so are requests the channel ended before answering.

use std::collections::HashMap;

use super::{Attrs, MAX_PENDING_BYTES, MAX_TRACKED, Request, Response};

/// Why an operation's outcome is not known: it was logged without the server's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unanswered {
    /// Another request was sent under the same id before the reply, so which reply answers
    /// which cannot be told (the draft lets a server answer out of order).
    IdReused,
    /// More requests were awaiting replies than are tracked (by count or by bytes).
    Untracked,
    /// The channel ended before the reply came.
    NoReply,
    /// The reply under its id was not of a kind that answers the request.
    UnexpectedReply,
}

impl Unanswered {
    /// The value of the event's `outcome_unknown` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Unanswered::IdReused => "id_reused",
            Unanswered::Untracked => "untracked",
            Unanswered::NoReply => "no_reply",
            Unanswered::UnexpectedReply => "unexpected_reply",
        }
    }
}

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
    /// The server's answer: None when it said OK (or its answer is not known, see
    /// `unanswered`), else its status message.
    pub error: Option<String>,
    /// Close: the client never closed the handle; the channel ended with it open (the
    /// client went away, or the session was closed mid-transfer). The counts are what went
    /// through it until then.
    pub interrupted: bool,
    /// The request was sent but its outcome is not known, and why; `error` is then None.
    pub unanswered: Option<Unanswered>,
}

impl Op {
    /// Bytes of text it holds, for the memory budget.
    fn text_len(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        self.path.len() + opt(&self.to) + opt(&self.link_target) + opt(&self.extension)
    }
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
    /// A copy-data request; on success its bytes count on both handles. The operations are
    /// boxed so that every entry, a write's included, is not the size of an [`Op`].
    Copy {
        op: Box<Op>,
        from: Vec<u8>,
        to: Vec<u8>,
    },
    /// An operation complete but for the server's verdict.
    Done(Box<Op>),
    /// A request the audit keeps nothing of (a write, a readdir, a realpath...), held only
    /// so that its reply is not taken for the answer to another request under its id.
    Quiet,
}

impl Pending {
    /// What tracking it costs, in bytes: the entry and the text it holds.
    fn cost(&self) -> usize {
        let text = match self {
            Pending::Open { path, .. } | Pending::Stat { path } => path.len(),
            Pending::Close { handle } | Pending::Read { handle } | Pending::Fstat { handle } => {
                handle.len()
            }
            Pending::Copy { op, from, to } => {
                std::mem::size_of::<Op>() + op.text_len() + from.len() + to.len()
            }
            Pending::Done(op) => std::mem::size_of::<Op>() + op.text_len(),
            Pending::Quiet => 0,
        };
        text + std::mem::size_of::<(u32, Slot)>()
    }
}

/// What is known of the requests under one id that await their replies.
#[derive(Debug)]
enum Slot {
    /// One request, sent as the `seq`th tracked.
    One { seq: u64, pending: Pending },
    /// Several were sent before their replies, and were logged when sent. The replies still
    /// to come are only counted, so that none is taken for the answer to a later request
    /// under the id.
    Reused { replies_due: u32 },
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
///
/// Memory stays bounded however the client behaves: at most [`MAX_TRACKED`] ids awaiting
/// replies and [`MAX_PENDING_BYTES`] of them. Past either, requests are logged when sent
/// with their outcome unknown, and no new id is tracked for the rest of the channel: the
/// reply to a request not tracked could otherwise be taken for the answer to a later one
/// under the same id.
#[derive(Debug)]
pub struct Tracker {
    pending: HashMap<u32, Slot>,
    /// What the entries of `pending` cost, by [`Pending::cost`].
    pending_bytes: usize,
    /// The next request's place in sending order, so those left at the end go in order.
    next_seq: u64,
    /// A request went untracked; see [`Tracker`].
    overflowed: bool,
    max_pending: usize,
    max_pending_bytes: usize,
    handles: HashMap<Vec<u8>, OpenFile>,
    /// The last path a stat answered with a size for, and that size.
    last_stat: Option<(String, u64)>,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker::with_limits(MAX_TRACKED, MAX_PENDING_BYTES)
    }
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
    /// A tracker with other bounds than the defaults (the tests reach them cheaply).
    fn with_limits(max_pending: usize, max_pending_bytes: usize) -> Self {
        Tracker {
            pending: HashMap::new(),
            pending_bytes: 0,
            next_seq: 0,
            overflowed: false,
            max_pending,
            max_pending_bytes,
            handles: HashMap::new(),
            last_stat: None,
        }
    }

    /// Awaits the reply to request `id`; when it cannot be paired with its reply, its
    /// operation (and that of an earlier request under the id) goes to `out` now.
    fn expect(&mut self, id: u32, p: Pending, out: &mut Vec<Op>) {
        match self.pending.remove(&id) {
            Some(Slot::One { pending: old, .. }) => {
                self.pending_bytes = self.pending_bytes.saturating_sub(old.cost());
                // Replacing the entry under the same key: the map does not grow.
                self.pending.insert(id, Slot::Reused { replies_due: 2 });
                out.extend(self.unanswered(old, Unanswered::IdReused));
                out.extend(self.unanswered(p, Unanswered::IdReused));
            }
            Some(Slot::Reused { replies_due }) => {
                self.pending.insert(
                    id,
                    Slot::Reused {
                        replies_due: replies_due.saturating_add(1),
                    },
                );
                out.extend(self.unanswered(p, Unanswered::IdReused));
            }
            None => {
                let cost = p.cost();
                if self.overflowed
                    || self.pending.len() >= self.max_pending
                    || self.pending_bytes.saturating_add(cost) > self.max_pending_bytes
                {
                    self.overflowed = true;
                    out.extend(self.unanswered(p, Unanswered::Untracked));
                } else {
                    self.pending_bytes += cost;
                    let seq = self.next_seq;
                    self.next_seq += 1;
                    self.pending.insert(id, Slot::One { seq, pending: p });
                }
            }
        }
    }

    fn done(&mut self, id: u32, op: Op, out: &mut Vec<Op>) {
        self.expect(id, Pending::Done(Box::new(op)), out);
    }

    /// The operation of a request logged without its answer, if it is auditable: a close
    /// then ends its handle's tracking, with what went through it.
    fn unanswered(&mut self, p: Pending, why: Unanswered) -> Option<Op> {
        let op = match p {
            Pending::Open {
                path,
                pflags: Some(f),
                attrs,
            } => Op {
                op: "open",
                path,
                pflags: Some(f),
                attrs,
                ..Op::default()
            },
            Pending::Close { handle } => {
                let f = self.handles.remove(&handle)?;
                if f.dir {
                    return None;
                }
                Op {
                    op: "close",
                    path: f.path,
                    bytes_read: Some(f.read),
                    bytes_written: Some(f.written),
                    ..Op::default()
                }
            }
            // Whether the copy happened, and so what it moved, is not known.
            Pending::Copy { op, .. } => Op {
                bytes_copied: None,
                ..*op
            },
            Pending::Done(op) => *op,
            Pending::Open { pflags: None, .. }
            | Pending::Read { .. }
            | Pending::Stat { .. }
            | Pending::Fstat { .. }
            | Pending::Quiet => return None,
        };
        Some(Op {
            unanswered: Some(why),
            ..op
        })
    }

    /// The path a handle was opened on; empty for a handle not seen opened.
    fn path_of(&self, handle: &[u8]) -> String {
        self.handles
            .get(handle)
            .map(|f| f.path.clone())
            .unwrap_or_default()
    }

    /// A client request went by; operations that cannot wait for their reply (see
    /// [`Tracker`]) are appended to `out`.
    pub fn request(&mut self, req: Request, out: &mut Vec<Op>) {
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
                out,
            ),
            Request::Opendir { id, path } => self.expect(
                id,
                Pending::Open {
                    path,
                    pflags: None,
                    attrs: None,
                },
                out,
            ),
            Request::Close { id, handle } => self.expect(id, Pending::Close { handle }, out),
            Request::Read { id, handle, .. } => self.expect(id, Pending::Read { handle }, out),
            Request::Write { id, handle, len } => {
                if let Some(f) = self.handles.get_mut(&handle) {
                    f.written += u64::from(len);
                }
                self.expect(id, Pending::Quiet, out);
            }
            Request::Stat { id, path } => self.expect(id, Pending::Stat { path }, out),
            Request::Fstat { id, handle } => self.expect(id, Pending::Fstat { handle }, out),
            Request::Fsetstat { id, handle, attrs } => {
                let path = self.path_of(&handle);
                self.done(
                    id,
                    Op {
                        attrs,
                        ..op("setstat", path)
                    },
                    out,
                );
            }
            Request::Setstat { id, path, attrs } => self.done(
                id,
                Op {
                    attrs,
                    ..op("setstat", path)
                },
                out,
            ),
            Request::Mkdir { id, path, attrs } => self.done(
                id,
                Op {
                    attrs,
                    ..op("mkdir", path)
                },
                out,
            ),
            Request::Remove { id, path } => self.done(id, op("remove", path), out),
            Request::Rmdir { id, path } => self.done(id, op("rmdir", path), out),
            Request::Rename { id, from, to } => self.done(
                id,
                Op {
                    to: Some(to),
                    ..op("rename", from)
                },
                out,
            ),
            Request::Symlink { id, link, target } => self.done(
                id,
                Op {
                    link_target: Some(target),
                    ..op("symlink", link)
                },
                out,
            ),
            Request::Hardlink { id, link, target } => self.done(
                id,
                Op {
                    link_target: Some(target),
                    ..op("hardlink", link)
                },
                out,
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
                let op = Box::new(copy);
                self.expect(id, Pending::Copy { op, from, to }, out);
            }
            Request::Extension { id, name } => self.done(
                id,
                Op {
                    extension: Some(name),
                    ..op("extension", String::new())
                },
                out,
            ),
            Request::Other { id: Some(id), .. } => self.expect(id, Pending::Quiet, out),
            Request::Init { .. } | Request::Other { id: None, .. } => {}
        }
    }

    /// A server reply went by; the operations it completes are appended to `out`.
    pub fn response(&mut self, resp: Response, out: &mut Vec<Op>) {
        let id = match &resp {
            Response::Status { id, .. }
            | Response::Handle { id, .. }
            | Response::Data { id, .. }
            | Response::Attrs { id, .. }
            | Response::Other { id: Some(id), .. } => *id,
            Response::Version { .. } | Response::Other { id: None, .. } => return,
        };
        match self.pending.remove(&id) {
            Some(Slot::One { pending, .. }) => {
                self.pending_bytes = self.pending_bytes.saturating_sub(pending.cost());
                let op = self.answer(pending, resp, out);
                out.extend(op);
            }
            Some(Slot::Reused { replies_due }) if replies_due > 1 => {
                self.pending.insert(
                    id,
                    Slot::Reused {
                        replies_due: replies_due - 1,
                    },
                );
            }
            // The last reply due under a reused id: the id is free again.
            Some(Slot::Reused { .. }) | None => {}
        }
    }

    /// The operation request `p` completes with reply `resp`; a handle the server gives out
    /// again while the tracker still holds it closes the old one into `out`.
    fn answer(&mut self, p: Pending, resp: Response, out: &mut Vec<Op>) -> Option<Op> {
        match (p, resp) {
            (
                Pending::Open {
                    path,
                    pflags,
                    attrs,
                },
                Response::Handle { handle, .. },
            ) => {
                let size = match &self.last_stat {
                    Some((p, size)) if *p == path => Some(*size),
                    _ => None,
                };
                // A server gives a handle out again only once it is closed, so an old entry
                // under it lost its close (to a reply not seen); it is closed here rather
                // than overwritten unlogged.
                if self.handles.contains_key(&handle) {
                    out.extend(self.unanswered(
                        Pending::Close {
                            handle: handle.clone(),
                        },
                        Unanswered::UnexpectedReply,
                    ));
                }
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
            (Pending::Read { handle }, Response::Data { len, .. }) => {
                if let Some(f) = self.handles.get_mut(&handle) {
                    f.read += u64::from(len);
                }
                None
            }
            (Pending::Stat { path }, Response::Attrs { attrs, .. }) => {
                self.last_stat = attrs.size.map(|s| (path, s));
                None
            }
            (Pending::Fstat { handle }, Response::Attrs { attrs, .. }) => {
                if let Some(f) = self.handles.get_mut(&handle) {
                    f.size = attrs.size;
                }
                None
            }
            (p, Response::Status { code, message, .. }) => {
                let error = status_error(code, &message);
                match p {
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
                    Pending::Read { .. }
                    | Pending::Stat { .. }
                    | Pending::Fstat { .. }
                    | Pending::Quiet => None,
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
                        Some(Op { error, ..*op })
                    }
                    Pending::Done(op) => Some(Op { error, ..*op }),
                }
            }
            // A reply of another kind does not say how the request went; an auditable one
            // is still logged, its outcome unknown.
            (p, _) => self.unanswered(p, Unanswered::UnexpectedReply),
        }
    }

    /// The channel ended: every auditable request still awaiting its reply, in the order
    /// sent, outcome unknown; then a close for every file handle still open
    /// (`interrupted`), so a transfer cut short still says what it moved, in path order.
    /// Directories are left out, as their closes are.
    pub fn finish(&mut self) -> Vec<Op> {
        let mut waiting: Vec<(u64, Pending)> = self
            .pending
            .drain()
            .filter_map(|(_, slot)| match slot {
                Slot::One { seq, pending } => Some((seq, pending)),
                // Logged when the id was sent again.
                Slot::Reused { .. } => None,
            })
            .collect();
        self.pending_bytes = 0;
        waiting.sort_by_key(|(seq, _)| *seq);
        let mut ops: Vec<Op> = waiting
            .into_iter()
            .filter_map(|(_, p)| self.unanswered(p, Unanswered::NoReply))
            .collect();
        let mut open: Vec<Op> = self
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
        open.sort_by(|a, b| a.path.cmp(&b.path));
        ops.append(&mut open);
        ops
    }
}

#[cfg(test)]
mod tests;
