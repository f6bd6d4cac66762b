//! A bounds-checked cursor over a message body: every read returns an error instead of
//! panicking when the body is too short.

use super::PgError;

/// Reads fields off the front of a message body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    tag: char,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(tag: u8, buf: &'a [u8]) -> Self {
        Reader {
            buf,
            tag: char::from(tag),
        }
    }

    fn truncated(&self, what: &'static str) -> PgError {
        PgError::Truncated {
            tag: self.tag,
            what,
        }
    }

    pub(crate) fn malformed(&self, what: &'static str) -> PgError {
        PgError::Malformed {
            tag: self.tag,
            what,
        }
    }

    pub(crate) fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], PgError> {
        let (head, tail) = self
            .buf
            .split_at_checked(n)
            .ok_or_else(|| self.truncated(what))?;
        self.buf = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, PgError> {
        let (&b, tail) = self.buf.split_first().ok_or_else(|| self.truncated(what))?;
        self.buf = tail;
        Ok(b)
    }

    pub(crate) fn i16(&mut self, what: &'static str) -> Result<i16, PgError> {
        let b = self.bytes(2, what)?;
        let a: [u8; 2] = b.try_into().map_err(|_| self.truncated(what))?;
        Ok(i16::from_be_bytes(a))
    }

    pub(crate) fn i32(&mut self, what: &'static str) -> Result<i32, PgError> {
        let b = self.bytes(4, what)?;
        let a: [u8; 4] = b.try_into().map_err(|_| self.truncated(what))?;
        Ok(i32::from_be_bytes(a))
    }

    /// A count field (Int16) that must not be negative.
    pub(crate) fn count(&mut self, what: &'static str) -> Result<usize, PgError> {
        let n = self.i16(what)?;
        usize::try_from(n).map_err(|_| self.malformed("negative count"))
    }

    /// A NUL-terminated string, returned without its NUL.
    pub(crate) fn cstr(&mut self, what: &'static str) -> Result<&'a [u8], PgError> {
        let end = self
            .buf
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| self.truncated(what))?;
        let s = self.bytes(end, what)?;
        self.bytes(1, what)?;
        Ok(s)
    }

    /// Everything left.
    pub(crate) fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.buf)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Fails if anything is left.
    pub(crate) fn finish(&self) -> Result<(), PgError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(PgError::TrailingBytes(self.tag))
        }
    }
}

impl<'a> Reader<'a> {
    /// How many bytes are left.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }

    /// The first `n` bytes left (all of them if fewer), without consuming.
    pub(crate) fn clone_prefix(&self, n: usize) -> &'a [u8] {
        self.buf.get(..n).unwrap_or(self.buf)
    }
}

/// Type OIDs laid out as 4-byte big-endian integers (Parse, ParameterDescription).
pub(crate) fn oids(raw: &[u8]) -> impl Iterator<Item = u32> + '_ {
    raw.chunks_exact(4)
        .filter_map(|c| <[u8; 4]>::try_from(c).ok().map(u32::from_be_bytes))
}
