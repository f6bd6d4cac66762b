//! Segment seals: an ed25519 signature over (segment name, segment sha256, first seq, last
//! seq, last hash), stored as one JSON object in `seg-NNNNNN.seal` beside the segment.
//!
//! Pure: building, signing, parsing and checking a seal take bytes, never files.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::record::Hash;

/// The contents of a `.seal` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    /// File name of the sealed segment, e.g. `seg-000001.jsonl`.
    pub segment: String,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Hash of the record `last_seq` (hex).
    pub last_hash: String,
    /// SHA-256 of the whole segment file (hex).
    pub sha256: String,
    /// The signer's ed25519 public key (hex); verify checks it against the expected key.
    pub pubkey: String,
    /// ed25519 signature over [`Seal::message`] (hex).
    pub signature: String,
}

/// Why a seal does not vouch for its segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The seal file is not a valid seal object.
    #[error("seal is malformed: {0}")]
    Malformed(String),
    /// The seal names another segment file.
    #[error("seal names segment {0}")]
    WrongSegment(String),
    /// The segment's bytes are not those that were sealed.
    #[error("segment sha256 does not match its seal (the segment was changed after sealing)")]
    Digest,
    /// The segment's records do not end where the seal says.
    #[error(
        "seal covers seq {sealed_first}..={sealed_last} but the segment holds {first}..={last}"
    )]
    Range {
        sealed_first: u64,
        sealed_last: u64,
        first: u64,
        last: u64,
    },
    /// The last record's hash is not the sealed one.
    #[error("last hash does not match the seal")]
    LastHash,
    /// The seal was made with a key other than the expected one.
    #[error("sealed with another key ({0})")]
    OtherKey(String),
    /// The signature does not verify.
    #[error("seal signature is invalid")]
    BadSignature,
}

impl Seal {
    /// The bytes that are signed.
    pub fn message(
        segment: &str,
        sha256: &str,
        first_seq: u64,
        last_seq: u64,
        last_hash: &str,
    ) -> Vec<u8> {
        format!(
            "portcullis-audit-seal-v1\n{segment}\n{sha256}\n{first_seq}\n{last_seq}\n{last_hash}\n"
        )
        .into_bytes()
    }

    /// Seals a segment.
    pub fn sign(
        key: &SigningKey,
        segment: &str,
        digest: &Hash,
        first_seq: u64,
        last_seq: u64,
        last_hash: &Hash,
    ) -> Seal {
        let sha256 = hex::encode(digest);
        let last_hash = hex::encode(last_hash);
        let sig = key.sign(&Self::message(
            segment, &sha256, first_seq, last_seq, &last_hash,
        ));
        Seal {
            segment: segment.to_string(),
            first_seq,
            last_seq,
            last_hash,
            sha256,
            pubkey: hex::encode(key.verifying_key().to_bytes()),
            signature: hex::encode(sig.to_bytes()),
        }
    }

    /// Parses a seal file.
    pub fn parse(bytes: &[u8]) -> Result<Seal, SealError> {
        serde_json::from_slice(bytes).map_err(|e| SealError::Malformed(e.to_string()))
    }

    /// The seal file's bytes (one JSON object and a newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// The public key the seal claims.
    pub fn signer(&self) -> Result<VerifyingKey, SealError> {
        parse_pubkey(&self.pubkey).map_err(|e| SealError::Malformed(e.to_string()))
    }

    /// Checks the seal against the segment it covers: name, digest, seq range, last hash,
    /// and the signature under `key`.
    pub fn check(
        &self,
        segment: &str,
        digest: &Hash,
        first_seq: u64,
        last_seq: u64,
        last_hash: &Hash,
        key: &VerifyingKey,
    ) -> Result<(), SealError> {
        if self.segment != segment {
            return Err(SealError::WrongSegment(self.segment.clone()));
        }
        if self.pubkey != hex::encode(key.to_bytes()) {
            return Err(SealError::OtherKey(self.pubkey.clone()));
        }
        let sig_bytes: [u8; 64] = hex::decode(&self.signature)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| SealError::Malformed("signature is not 64 bytes of hex".into()))?;
        let msg = Self::message(
            &self.segment,
            &self.sha256,
            self.first_seq,
            self.last_seq,
            &self.last_hash,
        );
        key.verify(&msg, &Signature::from_bytes(&sig_bytes))
            .map_err(|_| SealError::BadSignature)?;
        if self.first_seq != first_seq || self.last_seq != last_seq {
            return Err(SealError::Range {
                sealed_first: self.first_seq,
                sealed_last: self.last_seq,
                first: first_seq,
                last: last_seq,
            });
        }
        if self.last_hash != hex::encode(last_hash) {
            return Err(SealError::LastHash);
        }
        if self.sha256 != hex::encode(digest) {
            return Err(SealError::Digest);
        }
        Ok(())
    }
}

/// Why a public key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 64 hex digits.
    #[error("public key is not 64 hex digits")]
    NotHex,
    /// 32 bytes that are not an ed25519 point.
    #[error("public key is not a valid ed25519 key")]
    Invalid,
}

/// Parses a hex ed25519 public key (surrounding whitespace ignored).
pub fn parse_pubkey(s: &str) -> Result<VerifyingKey, KeyError> {
    let bytes: [u8; 32] = hex::decode(s.trim())
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or(KeyError::NotHex)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn a_seal_checks_and_detects_each_change() {
        let k = key(1);
        let s = Seal::sign(&k, "seg-000001.jsonl", &[2; 32], 1, 5, &[3; 32]);
        let parsed = Seal::parse(&s.to_bytes()).expect("parse");
        assert_eq!(parsed, s);
        let vk = k.verifying_key();
        s.check("seg-000001.jsonl", &[2; 32], 1, 5, &[3; 32], &vk)
            .expect("valid");
        assert_eq!(
            s.check("seg-000002.jsonl", &[2; 32], 1, 5, &[3; 32], &vk),
            Err(SealError::WrongSegment("seg-000001.jsonl".into()))
        );
        assert_eq!(
            s.check("seg-000001.jsonl", &[9; 32], 1, 5, &[3; 32], &vk),
            Err(SealError::Digest)
        );
        assert!(matches!(
            s.check("seg-000001.jsonl", &[2; 32], 1, 4, &[3; 32], &vk),
            Err(SealError::Range { .. })
        ));
        assert_eq!(
            s.check("seg-000001.jsonl", &[2; 32], 1, 5, &[4; 32], &vk),
            Err(SealError::LastHash)
        );
        let other = key(7).verifying_key();
        assert!(matches!(
            s.check("seg-000001.jsonl", &[2; 32], 1, 5, &[3; 32], &other),
            Err(SealError::OtherKey(_))
        ));
        let mut forged = s.clone();
        forged.last_seq = 6;
        assert_eq!(
            forged.check("seg-000001.jsonl", &[2; 32], 1, 6, &[3; 32], &vk),
            Err(SealError::BadSignature)
        );
    }

    #[test]
    fn pubkeys_parse_from_hex() {
        let vk = key(1).verifying_key();
        assert_eq!(
            parse_pubkey(&format!(" {}\n", hex::encode(vk.to_bytes()))),
            Ok(vk)
        );
        assert_eq!(parse_pubkey("abc"), Err(KeyError::NotHex));
    }
}
