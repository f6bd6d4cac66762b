//! A user name as a grant keeps it for the connect path: its length and first bytes inline,
//! beside the grant's deadline, and the whole name on the heap only when it is longer.
//!
//! Why: on a connect the grant is cold, and the name is compared there to rule out another
//! user whose name shares its hash. Kept inline, the name arrives on the same cache line as
//! the deadline, the lapse and the target; and a fixed-size compare is a few instructions
//! the compiler inlines, not a call to `memcmp`.

/// How many bytes of a name are kept inline: what fits the grant's first cache line.
const HEAD: usize = 22;

/// The `len` of a name longer than [`HEAD`] (its full text is then kept on the heap).
const LONG: u8 = u8::MAX;

/// A name's inline part: its length (or [`LONG`]) and its first [`HEAD`] bytes, zero-padded.
/// Equal heads mean equal names unless both are `LONG`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Head {
    len: u8,
    bytes: [u8; HEAD],
}

impl Head {
    fn new(s: &str) -> Head {
        let take = s.len().min(HEAD);
        let mut bytes = [0; HEAD];
        bytes[..take].copy_from_slice(&s.as_bytes()[..take]);
        let len = if s.len() > HEAD {
            LONG
        } else {
            // At most HEAD (22), so this always fits.
            u8::try_from(s.len()).unwrap_or(LONG)
        };
        Head { len, bytes }
    }

    fn is_long(&self) -> bool {
        self.len == LONG
    }
}

/// A name being looked up: its head, computed once per connect, and the text itself for
/// the rare long name.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'a> {
    head: Head,
    name: &'a str,
}

impl<'a> Key<'a> {
    pub(crate) fn new(name: &'a str) -> Key<'a> {
        Key {
            head: Head::new(name),
            name,
        }
    }
}

/// The tail of a stored name: the whole text when it is longer than [`HEAD`], else nothing.
#[derive(Debug)]
pub(crate) struct Tail(Option<Box<str>>);

/// Splits a name for storage in a grant.
pub(crate) fn split(name: &str) -> (Head, Tail) {
    let head = Head::new(name);
    let tail = Tail(head.is_long().then(|| name.into()));
    (head, tail)
}

/// The stored name `(head, tail)` as text.
pub(crate) fn text<'a>(head: &'a Head, tail: &'a Tail) -> &'a str {
    match &tail.0 {
        Some(long) => long,
        // Built from a `&str` and cut at its own length (at most HEAD), so this never fails.
        None => std::str::from_utf8(&head.bytes[..usize::from(head.len)]).unwrap_or_default(),
    }
}

/// Is the stored name `(head, tail)` the one `key` looks for?
pub(crate) fn matches(head: &Head, tail: &Tail, key: &Key<'_>) -> bool {
    *head == key.head && (!head.is_long() || tail.0.as_deref() == Some(key.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_exactly_their_own_text() {
        let names = [
            "",
            "a",
            "alice",
            "exactly-twenty-two-ch",
            "exactly-twenty-two-chr",
            "twenty-three-characters",
            "a-user-name-longer-than-thirty-bytes@example.com",
            "a-user-name-longer-than-thirty-bytes@example.org",
            "ünïcödé-nåmes-are-bytes",
        ];
        for a in names {
            let (head, tail) = split(a);
            assert_eq!(text(&head, &tail), a);
            for b in names {
                assert_eq!(
                    matches(&head, &tail, &Key::new(b)),
                    a == b,
                    "{a:?} vs {b:?}"
                );
            }
        }
    }
}
