//! Byte builders for the SFTP tests: packets as a client or OpenSSH's sftp-server frames them.
#![allow(clippy::unwrap_used)]

pub use super::ty::*;
use super::{Decode, Decoder};

pub fn put_string(b: &mut Vec<u8>, s: &[u8]) {
    b.extend_from_slice(&(s.len() as u32).to_be_bytes());
    b.extend_from_slice(s);
}

/// Frames a packet body (type byte first) with its length.
pub fn packet(body: &[u8]) -> Vec<u8> {
    let mut p = (body.len() as u32).to_be_bytes().to_vec();
    p.extend_from_slice(body);
    p
}

pub fn open(id: u32, path: &str, pflags: u32) -> Vec<u8> {
    let mut b = vec![OPEN];
    b.extend_from_slice(&id.to_be_bytes());
    put_string(&mut b, path.as_bytes());
    b.extend_from_slice(&pflags.to_be_bytes());
    b.extend_from_slice(&0u32.to_be_bytes()); // attrs flags
    packet(&b)
}

pub fn write(id: u32, handle: &[u8], data: &[u8]) -> Vec<u8> {
    let mut b = vec![WRITE];
    b.extend_from_slice(&id.to_be_bytes());
    put_string(&mut b, handle);
    b.extend_from_slice(&0u64.to_be_bytes());
    put_string(&mut b, data);
    packet(&b)
}

pub fn read(id: u32, handle: &[u8]) -> Vec<u8> {
    let mut b = vec![READ];
    b.extend_from_slice(&id.to_be_bytes());
    put_string(&mut b, handle);
    b.extend_from_slice(&0u64.to_be_bytes());
    b.extend_from_slice(&32768u32.to_be_bytes());
    packet(&b)
}

/// A packet of `kind` with an id and string fields.
pub fn with_id(kind: u8, id: u32, fields: &[&[u8]]) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend_from_slice(&id.to_be_bytes());
    for f in fields {
        put_string(&mut b, f);
    }
    packet(&b)
}

/// An `SSH_FXP_EXTENDED` request named `name` with string fields.
pub fn extended(id: u32, name: &[u8], fields: &[&[u8]]) -> Vec<u8> {
    let mut all = vec![name];
    all.extend_from_slice(fields);
    with_id(EXTENDED, id, &all)
}

/// A request of `kind` naming a path (or handle), then an ATTRS built from `(flag, words)`
/// pairs in flag order; a 64-bit size is two words, high first.
pub fn path_attrs(kind: u8, id: u32, path: &[u8], attrs: &[(u32, &[u32])]) -> Vec<u8> {
    let mut b = vec![kind];
    b.extend_from_slice(&id.to_be_bytes());
    put_string(&mut b, path);
    let flags = attrs.iter().fold(0, |f, (flag, _)| f | flag);
    b.extend_from_slice(&u32::to_be_bytes(flags));
    for w in attrs.iter().flat_map(|(_, words)| words.iter()) {
        b.extend_from_slice(&w.to_be_bytes());
    }
    packet(&b)
}

pub fn status(id: u32, code: u32, msg: &str) -> Vec<u8> {
    let mut b = vec![STATUS];
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&code.to_be_bytes());
    put_string(&mut b, msg.as_bytes());
    put_string(&mut b, b"");
    packet(&b)
}

pub fn handle(id: u32, h: &[u8]) -> Vec<u8> {
    with_id(HANDLE, id, &[h])
}

/// An ATTRS reply carrying only a size.
pub fn attrs_reply(id: u32, size: u64) -> Vec<u8> {
    let mut b = vec![ATTRS];
    b.extend_from_slice(&id.to_be_bytes());
    b.extend_from_slice(&1u32.to_be_bytes());
    b.extend_from_slice(&size.to_be_bytes());
    packet(&b)
}

pub fn decode_all<M: Decode>(bytes: &[u8]) -> Vec<M> {
    let mut d = Decoder::<M>::default();
    let mut out = Vec::new();
    d.push(bytes, &mut out).unwrap();
    out
}
