//! The log's signed head: the seq and hash of the last record known durable, signed with the
//! seal key, in `<audit dir>/head`.
//!
//! Why: a seal vouches for a sealed segment, and the chain for every record before the last
//! one, but nothing in the records themselves can show that records once followed the last
//! one. Whole final records of the open segment, or whole final segments with their seals,
//! removed while the gateway is down would leave a log that verifies. The head says where the
//! log ended: `verify` and the next open both refuse a log that ends before it, or whose
//! record at the head's seq is not the one signed. And a final record the head vouches for
//! was durable, so if it fails its check at the next open it was altered, not torn by a
//! crash: recovery refuses it instead of cutting it.
//!
//! The head is written only after the records it names are synced, so whatever a crash keeps
//! of it never vouches for more than the disk holds; it is never fsynced itself (an older
//! head surviving a crash only vouches for less). It is rewritten in place in one of two
//! fixed slots, alternately: a write torn by a crash leaves the other slot's older head, and
//! the reader takes the valid slot with the highest seq.
//!
//! Not covered: someone holding the seal key can sign any head (as they can any seal), and a
//! copy of an older head put back in place vouches for less than the log held.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::record::Hash;
use crate::seal::parse_pubkey;

/// The head file's name in the audit directory.
pub const FILE: &str = "head";

/// Bytes per slot: a head is about 320 bytes of JSON, padded with spaces and a newline.
const SLOT: usize = 512;

/// One slot's contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Head {
    /// The last record known durable (0 for an empty log).
    pub seq: u64,
    /// That record's hash (hex; the genesis hash for an empty log).
    pub hash: String,
    /// The signer's ed25519 public key (hex).
    pub pubkey: String,
    /// ed25519 signature over [`Head::message`] (hex).
    pub signature: String,
}

/// Why the head file does not vouch for anything.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// The file could not be read.
    #[error("cannot read the log's head: {0}")]
    Io(String),
    /// Neither slot holds a head signed by the expected key.
    #[error("the log's head is not signed by the seal key (altered, or written with another key)")]
    Invalid,
}

impl Head {
    fn message(seq: u64, hash: &str) -> Vec<u8> {
        format!("portcullis-audit-head-v1\n{seq}\n{hash}\n").into_bytes()
    }

    /// The head for record `seq` with hash `hash`.
    pub fn sign(key: &SigningKey, seq: u64, hash: &Hash) -> Head {
        let hash = hex::encode(hash);
        let sig = key.sign(&Self::message(seq, &hash));
        Head {
            seq,
            hash,
            pubkey: hex::encode(key.verifying_key().to_bytes()),
            signature: hex::encode(sig.to_bytes()),
        }
    }

    /// The record hash it names.
    pub fn hash(&self) -> Option<Hash> {
        hex::decode(&self.hash).ok()?.try_into().ok()
    }

    /// Is it signed by `key` (or, with `None`, by the key it names)?
    fn signed_by(&self, key: Option<&VerifyingKey>) -> bool {
        let own = match key {
            Some(k) => *k,
            None => match parse_pubkey(&self.pubkey) {
                Ok(k) => k,
                Err(_) => return false,
            },
        };
        let sig: Option<[u8; 64]> = hex::decode(&self.signature)
            .ok()
            .and_then(|v| v.try_into().ok());
        self.pubkey == hex::encode(own.to_bytes())
            && self.hash().is_some()
            && sig.is_some_and(|s| {
                own.verify(
                    &Self::message(self.seq, &self.hash),
                    &Signature::from_bytes(&s),
                )
                .is_ok()
            })
    }

    /// The slot bytes: the JSON object, padded with spaces to [`SLOT`] less one, and a newline.
    fn to_slot(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.resize(SLOT - 1, b' ');
        v.push(b'\n');
        v
    }
}

/// The valid head with the highest seq in a head file's bytes, with its slot.
fn best(bytes: &[u8], key: Option<&VerifyingKey>) -> Option<(usize, Head)> {
    bytes
        .chunks(SLOT)
        .take(2)
        .enumerate()
        .filter_map(|(slot, b)| {
            let h: Head = serde_json::from_slice(b.trim_ascii_end()).ok()?;
            h.signed_by(key).then_some((slot, h))
        })
        .max_by_key(|(_, h)| h.seq)
}

/// Reads the head under `dir`: `None` when there is no head file. With `key`, the head must
/// be signed by it; without, by the key it names (the caller compares that with the seals').
pub fn read(dir: &Path, key: Option<&VerifyingKey>) -> Result<Option<Head>, HeadError> {
    match std::fs::read(dir.join(FILE)) {
        Ok(bytes) => best(&bytes, key)
            .map(|(_, h)| Some(h))
            .ok_or(HeadError::Invalid),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(HeadError::Io(e.to_string())),
    }
}

/// The writer's side: the open head file, which slot to write next and what it last said.
#[derive(Debug)]
pub(crate) struct HeadFile {
    file: File,
    key: SigningKey,
    next_slot: u64,
    seq: u64,
}

impl HeadFile {
    /// Opens the head file under `dir` (creating it, durably, when absent) and writes `seq`
    /// and `hash` to it: the log's end as recovery found it, which the caller has synced.
    pub(crate) fn open(
        dir: &Path,
        key: SigningKey,
        seq: u64,
        hash: &Hash,
    ) -> std::io::Result<Self> {
        let path = dir.join(FILE);
        let created = !path.exists();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut &file, &mut bytes)?;
        let vk = key.verifying_key();
        let next_slot = match best(&bytes, Some(&vk)) {
            Some((slot, _)) => 1 - slot as u64,
            None => 0,
        };
        let mut head = HeadFile {
            file,
            key,
            next_slot,
            seq: 0,
        };
        head.write(seq, hash)?;
        if created {
            // The head must not vanish with a crash once records depend on it.
            head.file.sync_all()?;
            File::open(dir)?.sync_all()?;
        }
        Ok(head)
    }

    /// Vouches for records up to `seq` (whose hash is `hash`), which must be durable; a head
    /// no later than the last one written is skipped.
    pub(crate) fn advance(&mut self, seq: u64, hash: &Hash) -> std::io::Result<()> {
        if seq <= self.seq {
            return Ok(());
        }
        self.write(seq, hash)
    }

    fn write(&mut self, seq: u64, hash: &Hash) -> std::io::Result<()> {
        let slot = Head::sign(&self.key, seq, hash).to_slot();
        self.file
            .write_all_at(&slot, self.next_slot * SLOT as u64)?;
        self.next_slot = 1 - self.next_slot;
        self.seq = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> SigningKey {
        SigningKey::from_bytes(&[n; 32])
    }

    /// Alternating slots: the highest valid seq wins, a torn or altered slot leaves the other,
    /// and a head signed with another key is refused.
    #[test]
    fn slots_alternate_and_the_best_valid_one_is_read() {
        let d = tempfile::tempdir().expect("tempdir");
        let k = key(1);
        let vk = k.verifying_key();
        let mut h = HeadFile::open(d.path(), k.clone(), 0, &[0; 32]).expect("open");
        assert_eq!(
            read(d.path(), Some(&vk)).expect("read").map(|h| h.seq),
            Some(0)
        );
        h.advance(5, &[5; 32]).expect("advance");
        h.advance(3, &[3; 32]).expect("an older head is skipped");
        h.advance(7, &[7; 32]).expect("advance");
        let got = read(d.path(), Some(&vk)).expect("read").expect("head");
        assert_eq!((got.seq, got.hash()), (7, Some([7; 32])));
        assert_eq!(
            std::fs::metadata(d.path().join(FILE)).expect("meta").len(),
            1024
        );

        // Seq 7 went to slot 0 (0, 5, 7 alternate 0, 1, 0): tearing it leaves seq 5.
        let path = d.path().join(FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        bytes[100] ^= 1;
        std::fs::write(&path, &bytes).expect("write");
        assert_eq!(
            read(d.path(), Some(&vk)).expect("read").map(|h| h.seq),
            Some(5)
        );
        // Reopening writes to the slot that did not hold the best head.
        drop(h);
        let mut h = HeadFile::open(d.path(), k, 6, &[6; 32]).expect("reopen");
        assert_eq!(
            read(d.path(), Some(&vk)).expect("read").map(|h| h.seq),
            Some(6)
        );
        h.advance(8, &[8; 32]).expect("advance");
        assert_eq!(
            read(d.path(), Some(&vk)).expect("read").map(|h| h.seq),
            Some(8)
        );

        assert_eq!(
            read(d.path(), Some(&key(2).verifying_key())),
            Err(HeadError::Invalid)
        );
        assert_eq!(
            read(d.path(), None).expect("own key").map(|h| h.seq),
            Some(8)
        );
        std::fs::write(&path, b"").expect("empty");
        assert_eq!(read(d.path(), Some(&vk)), Err(HeadError::Invalid));
        std::fs::remove_file(&path).expect("remove");
        assert_eq!(read(d.path(), Some(&vk)), Ok(None));
    }

    /// A head's seq or hash changed after signing no longer verifies.
    #[test]
    fn altered_heads_do_not_verify() {
        let k = key(1);
        let h = Head::sign(&k, 9, &[9; 32]);
        assert!(h.signed_by(Some(&k.verifying_key())));
        let mut seq = h.clone();
        seq.seq = 10;
        assert!(!seq.signed_by(Some(&k.verifying_key())));
        let mut hash = h.clone();
        hash.hash = hex::encode([8u8; 32]);
        assert!(!hash.signed_by(None));
    }
}
