//! The tracker played through conversations as OpenSSH and misbehaving clients hold them.
#![allow(clippy::unwrap_used)]

use super::super::fixtures::*;
use super::super::{Decoder, MAX_PREFIX};
use super::*;

/// Plays a conversation of (client packet, server packet) pairs; the operations logged.
fn play(exchange: &[(Vec<u8>, Vec<u8>)]) -> Vec<Op> {
    let mut t = Tracker::default();
    let mut ops = Vec::new();
    for (c, s) in exchange {
        for r in decode_all::<Request>(c) {
            t.request(r, &mut ops);
        }
        for r in decode_all::<Response>(s) {
            t.response(r, &mut ops);
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
            t.request(r, &mut ops);
        }
        for r in decode_all::<Response>(&s) {
            t.response(r, &mut ops);
        }
    }
    assert!(ops.iter().all(|o| !o.interrupted));
    let left = t.finish();
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
    assert!(t.finish().is_empty());
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

/// Which side a packet in a [`run`] comes from.
#[derive(Clone, Copy)]
enum Side {
    C,
    S,
}
use Side::{C, S};

/// Feeds packets in the order given, each side's as one stream, then ends the channel;
/// every operation logged, in order.
fn run(t: &mut Tracker, steps: &[(Side, Vec<u8>)]) -> Vec<Op> {
    let (mut requests, mut responses) = (Decoder::default(), Decoder::default());
    let (mut reqs, mut resps) = (Vec::new(), Vec::new());
    let mut ops = Vec::new();
    for (side, bytes) in steps {
        match side {
            C => requests.push(bytes, &mut reqs).unwrap(),
            S => responses.push(bytes, &mut resps).unwrap(),
        }
        for r in reqs.drain(..) {
            t.request(r, &mut ops);
        }
        for r in resps.drain(..) {
            t.response(r, &mut ops);
        }
    }
    ops.extend(t.finish());
    ops
}

/// What a reviewer reads of an operation: op, path, how it went, whether it was cut
/// short.
type Seen = (
    &'static str,
    String,
    Option<String>,
    Option<Unanswered>,
    bool,
);

/// A conversation named for what it shows, and the operations it must leave in the log.
type Case = (&'static str, Vec<(Side, Vec<u8>)>, Vec<Seen>);

fn seen(ops: &[Op]) -> Vec<Seen> {
    ops.iter()
        .map(|o| {
            let (path, error) = (o.path.clone(), o.error.clone());
            (o.op, path, error, o.unanswered, o.interrupted)
        })
        .collect()
}

fn ok(op: &'static str, path: &str) -> Seen {
    (op, path.into(), None, None, false)
}

fn failed(op: &'static str, path: &str, error: &str) -> Seen {
    (op, path.into(), Some(error.into()), None, false)
}

fn unknown(op: &'static str, path: &str, why: Unanswered) -> Seen {
    (op, path.into(), None, Some(why), false)
}

fn interrupted(path: &str) -> Seen {
    ("close", path.into(), None, None, true)
}

fn remove(id: u32, path: &str) -> Vec<u8> {
    with_id(REMOVE, id, &[path.as_bytes()])
}

fn stat(id: u32, path: &str) -> Vec<u8> {
    with_id(STAT, id, &[path.as_bytes()])
}

/// Requests the client sent under an id still awaiting its reply, or that the channel
/// ended before answering, are each logged once, their outcome unknown: never dropped,
/// never given another request's answer.
#[test]
fn every_request_is_logged_once_whatever_the_ids_and_replies() {
    use Unanswered::*;
    let cases: Vec<Case> = vec![
        (
            "QA: a stat under the remove's id before its reply",
            vec![
                (C, remove(7, "/tmp/x")),
                (C, stat(7, "/")),
                (S, status(7, 0, "")),
                (S, attrs_reply(7, 4096)),
            ],
            vec![unknown("remove", "/tmp/x", IdReused)],
        ),
        (
            "two removes under one id, then the id is free again",
            vec![
                (C, remove(7, "/a")),
                (C, remove(7, "/b")),
                (S, status(7, 0, "")),
                (S, status(7, 2, "No such file")),
                (C, remove(7, "/c")),
                (S, status(7, 0, "")),
            ],
            vec![
                unknown("remove", "/a", IdReused),
                unknown("remove", "/b", IdReused),
                ok("remove", "/c"),
            ],
        ),
        (
            "a write's failure is not taken for the remove sent under its id",
            vec![
                (C, write(7, b"bogus", b"data")),
                (C, remove(7, "/a")),
                (S, status(7, 4, "Failure")),
                (S, status(7, 0, "")),
            ],
            vec![unknown("remove", "/a", IdReused)],
        ),
        (
            "nor a realpath's answer",
            vec![
                (C, with_id(16, 3, &[b"."])),
                (S, with_id(104, 3, &[])),
                (C, remove(3, "/a")),
                (S, status(3, 2, "No such file")),
            ],
            vec![failed("remove", "/a", "No such file")],
        ),
        (
            "a close superseded still closes with its counts",
            vec![
                (C, open(1, "/f", 0x1a)),
                (S, handle(1, b"H")),
                (C, write(2, b"H", &[0u8; 100])),
                (S, status(2, 0, "")),
                (C, with_id(CLOSE, 3, &[b"H"])),
                (C, stat(3, "/")),
                (S, status(3, 0, "")),
                (S, attrs_reply(3, 1)),
            ],
            vec![ok("open", "/f"), unknown("close", "/f", IdReused)],
        ),
        (
            "an open superseded is logged; its handle is not guessed",
            vec![
                (C, open(1, "/f", 0x1a)),
                (C, open(1, "/g", 0x1a)),
                (S, handle(1, b"H")),
                (S, handle(1, b"I")),
                (C, write(2, b"H", &[0u8; 10])),
                (C, with_id(CLOSE, 3, &[b"H"])),
                (S, status(2, 0, "")),
                (S, status(3, 0, "")),
            ],
            vec![
                unknown("open", "/f", IdReused),
                unknown("open", "/g", IdReused),
            ],
        ),
        (
            "the channel ends before the replies, in the order sent",
            vec![
                (C, remove(9, "/b")),
                (C, path_attrs(MKDIR, 2, b"/d", &[])),
                (C, stat(3, "/")),
                (C, open(4, "/o", 0x01)),
                (S, handle(4, b"O")),
                (C, with_id(CLOSE, 5, &[b"O"])),
                (C, open(6, "/w", 0x1a)),
            ],
            vec![
                ok("open", "/o"),
                unknown("remove", "/b", NoReply),
                unknown("mkdir", "/d", NoReply),
                unknown("close", "/o", NoReply),
                unknown("open", "/w", NoReply),
            ],
        ),
        (
            "a reply of the wrong kind, and one too short to read",
            vec![
                (C, remove(4, "/y")),
                (S, handle(4, b"H")),
                (C, remove(5, "/z")),
                (S, packet(&[STATUS, 0, 0, 0, 5, 0])),
                (S, status(6, 0, "")),
            ],
            vec![
                unknown("remove", "/y", UnexpectedReply),
                unknown("remove", "/z", UnexpectedReply),
            ],
        ),
        (
            "a handle given out again closes the one the tracker still held",
            vec![
                (C, open(1, "/f", 0x1a)),
                (S, handle(1, b"H")),
                (C, open(2, "/g", 0x01)),
                (S, handle(2, b"H")),
            ],
            vec![
                ok("open", "/f"),
                unknown("close", "/f", UnexpectedReply),
                ok("open", "/g"),
                interrupted("/g"),
            ],
        ),
    ];
    for (name, steps, want) in cases {
        let ops = run(&mut Tracker::default(), &steps);
        assert_eq!(seen(&ops), want, "{name}");
    }
}

/// The bytes that went through a handle whose close was superseded are still counted.
#[test]
fn a_superseded_close_keeps_its_counts() {
    let ops = run(
        &mut Tracker::default(),
        &[
            (C, open(1, "/f", 0x1a)),
            (S, handle(1, b"H")),
            (C, write(2, b"H", &[0u8; 100])),
            (C, with_id(CLOSE, 3, &[b"H"])),
            (C, stat(3, "/")),
        ],
    );
    let close = ops.iter().find(|o| o.op == "close").unwrap();
    assert_eq!(
        (close.bytes_read, close.bytes_written),
        (Some(0), Some(100))
    );
    assert!(!close.interrupted);
}

/// QA's flood: more requests in flight than are tracked, by count or by bytes, and a
/// remove after them. It is logged when sent, and stays logged once: its reply, and one
/// under the same id later, are never paired with a later request.
#[test]
fn requests_past_the_tracking_bounds_are_logged_when_sent() {
    use Unanswered::*;
    let long = format!("/{}", "p".repeat(MAX_PREFIX - 64));
    let stats = |ids: std::ops::Range<u32>, path: &str| -> Vec<(Side, Vec<u8>)> {
        ids.map(|id| (C, stat(id, path))).collect()
    };
    let answers = |ids: std::ops::Range<u32>| -> Vec<(Side, Vec<u8>)> {
        ids.map(|id| (S, attrs_reply(id, 1))).collect()
    };
    let by_bytes = MAX_PENDING_BYTES / MAX_PREFIX + 1;
    let cases: Vec<Case> = vec![
        (
            "5000 stats, then a remove under an id among them",
            [
                stats(0..5000, "/"),
                vec![(C, remove(99, "/tmp/x"))],
                answers(0..5000),
                vec![(S, status(99, 0, ""))],
            ]
            .concat(),
            vec![unknown("remove", "/tmp/x", IdReused)],
        ),
        (
            "5000 stats, then a remove under a fresh id",
            [
                stats(0..5000, "/"),
                vec![(C, remove(9999, "/tmp/x"))],
                answers(0..5000),
                vec![(S, status(9999, 0, ""))],
            ]
            .concat(),
            vec![unknown("remove", "/tmp/x", Untracked)],
        ),
        (
            "fewer stats, but long paths past the byte budget",
            [
                stats(0..by_bytes as u32, &long),
                vec![(C, remove(9999, "/tmp/x"))],
                answers(0..by_bytes as u32),
            ]
            .concat(),
            vec![unknown("remove", "/tmp/x", Untracked)],
        ),
        (
            "the untracked remove's reply is not taken for a later one's",
            [
                stats(0..MAX_TRACKED as u32, "/"),
                vec![(C, remove(9999, "/a"))],
                answers(0..MAX_TRACKED as u32),
                vec![
                    (C, remove(9999, "/b")),
                    (S, status(9999, 0, "")),
                    (S, status(9999, 2, "No such file")),
                ],
            ]
            .concat(),
            vec![
                unknown("remove", "/a", Untracked),
                unknown("remove", "/b", Untracked),
            ],
        ),
        (
            "at the bound exactly, everything is still paired",
            [
                stats(0..MAX_TRACKED as u32 - 1, "/"),
                vec![(C, remove(9999, "/a"))],
                answers(0..MAX_TRACKED as u32 - 1),
                vec![(S, status(9999, 0, ""))],
            ]
            .concat(),
            vec![ok("remove", "/a")],
        ),
    ];
    for (name, steps, want) in cases {
        let mut t = Tracker::default();
        let ops = run(&mut t, &steps);
        assert_eq!(seen(&ops), want, "{name}");
        assert!(t.pending.is_empty() && t.pending_bytes == 0, "{name}");
    }
}

/// One request of the property test below: its packet, and the operation it must yield
/// (op and path; a copy's path comes from its handle) unless it is a close.
fn request_of(kind: u8, id: u32, arg: u8) -> (Vec<u8>, Option<(&'static str, String)>) {
    let path = ["/a", "/b", "/c"][usize::from(arg % 3)];
    let h = [b"h0", b"h1", b"h2"][usize::from(arg % 3)];
    let some = |op| Some((op, path.to_string()));
    match kind % 13 {
        0 => (open(id, path, 0x1a), some("open")),
        1 => (with_id(OPENDIR, id, &[path.as_bytes()]), None),
        2 => (with_id(CLOSE, id, &[h]), None),
        3 => (read(id, h), None),
        4 => (write(id, h, &[1u8; 10]), None),
        5 => (stat(id, path), None),
        6 => (remove(id, path), some("remove")),
        7 => (
            with_id(RENAME, id, &[path.as_bytes(), b"/z"]),
            some("rename"),
        ),
        8 => (
            path_attrs(SETSTAT, id, path.as_bytes(), &[]),
            some("setstat"),
        ),
        9 => {
            let mut b = vec![EXTENDED];
            b.extend_from_slice(&id.to_be_bytes());
            put_string(&mut b, b"copy-data");
            put_string(&mut b, h);
            b.extend_from_slice(&[0u8; 16]);
            put_string(&mut b, b"h0");
            b.extend_from_slice(&[0u8; 8]);
            (packet(&b), Some(("copy", String::new())))
        }
        10 => (extended(id, b"statvfs@openssh.com", &[b"/"]), None),
        11 => (
            extended(id, b"evil@example.com", &[]),
            Some(("extension", String::new())),
        ),
        _ => (with_id(16, id, &[b"."]), None),
    }
}

fn reply_of(kind: u8, id: u32, arg: u8) -> Vec<u8> {
    let h = [b"h0", b"h1", b"h2"][usize::from(arg % 3)];
    match kind % 6 {
        0 => status(id, 0, ""),
        1 => status(id, u32::from(arg % 5), "err"),
        2 => handle(id, h),
        3 => with_id(DATA, id, &[&[0u8; 5]]),
        4 => attrs_reply(id, u64::from(arg)),
        _ => with_id(104, id, &[]),
    }
}

proptest::proptest! {
    /// Whatever the ids, the replies and the bounds: by the time the channel ends,
    /// every auditable request fed has yielded exactly one operation, and every file
    /// handle at most one close.
    #[test]
    fn every_request_yields_exactly_one_operation(
        steps in proptest::collection::vec(
            (proptest::bool::ANY, 0u8..13, 0u32..5, 0u8..15), 0..80),
        max_pending in 1usize..8,
        max_bytes in 0usize..3000,
    ) {
        let mut t = Tracker::with_limits(max_pending, max_bytes);
        let mut want = Vec::new();
        let packets: Vec<(Side, Vec<u8>)> = steps
            .into_iter()
            .map(|(client, kind, id, arg)| {
                if client {
                    let (bytes, op) = request_of(kind, id, arg);
                    want.extend(op);
                    (C, bytes)
                } else {
                    (S, reply_of(kind, id, arg))
                }
            })
            .collect();
        let ops = run(&mut t, &packets);
        let mut got: Vec<(&'static str, String)> = ops
            .iter()
            .filter(|o| o.op != "close")
            .map(|o| (o.op, if o.op == "copy" { String::new() } else { o.path.clone() }))
            .collect();
        got.sort();
        want.sort();
        proptest::prop_assert_eq!(got, want);
        let handles_opened = ops
            .iter()
            .filter(|o| o.op == "open" && o.error.is_none() && o.unanswered.is_none())
            .count();
        let closes = ops.iter().filter(|o| o.op == "close").count();
        proptest::prop_assert!(closes <= handles_opened, "{ops:#?}");
        proptest::prop_assert!(ops.iter().all(|o| o.error.is_none() || o.unanswered.is_none()));
        proptest::prop_assert!(t.pending.is_empty() && t.handles.is_empty());
    }
}
