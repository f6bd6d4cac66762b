//! Cancel forwarding: the registry of live gateway-issued cancel keys and the CancelRequest
//! sent upstream with the real key.
//!
//! Clients only ever see a gateway-issued secret; a CancelRequest carrying one is looked up
//! here and re-sent to the upstream with the backend's real key, so upstream keys never
//! leave the gateway and a client cannot cancel another user's backend. The process id
//! they see is their backend's own, as directly: `pg_backend_pid()` and the sender of a
//! notification the session sent itself match it (clients compare them to skip their own
//! notifications). Backends of different targets may share a pid, so a pid can hold
//! several keys.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_config::Target;
use portcullis_protocol::pg::encode_cancel_request;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use super::upstream::{UpstreamError, open_stream};

/// Where a gateway key's cancel goes.
#[derive(Debug, Clone)]
pub(crate) struct CancelTarget {
    pub target: Target,
    pub pid: i32,
    pub secret: Vec<u8>,
}

#[derive(Debug)]
struct Entry {
    secret: [u8; 4],
    target: CancelTarget,
}

/// Live gateway cancel keys, by the backend's pid.
#[derive(Debug, Default)]
pub(crate) struct CancelRegistry {
    live: Mutex<HashMap<i32, Vec<Entry>>>,
}

/// Removes its key from the registry when the session ends.
#[derive(Debug)]
pub(crate) struct CancelGuard {
    registry: Arc<CancelRegistry>,
    pid: i32,
    secret: [u8; 4],
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Ok(mut live) = self.registry.live.lock()
            && let Some(entries) = live.get_mut(&self.pid)
        {
            entries.retain(|e| e.secret != self.secret);
            if entries.is_empty() {
                live.remove(&self.pid);
            }
        }
    }
}

/// Compares secrets in constant time.
fn same_secret(a: &[u8], b: &[u8; 4]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl CancelRegistry {
    /// Issues a fresh gateway key for an upstream backend: its pid, and a secret of the
    /// gateway's.
    pub(crate) fn register(self: &Arc<Self>, target: CancelTarget) -> (i32, [u8; 4], CancelGuard) {
        let pid = target.pid;
        let mut secret = [0u8; 4];
        rand::fill(&mut secret[..]);
        let guard = |secret| CancelGuard {
            registry: self.clone(),
            pid,
            secret,
        };
        let Ok(mut live) = self.live.lock() else {
            // A poisoned lock means a panic elsewhere; the key is live nowhere.
            return (pid, secret, guard(secret));
        };
        let entries = live.entry(pid).or_default();
        // Unique among the keys of this pid (backends of other targets).
        while entries.iter().any(|e| e.secret == secret) {
            rand::fill(&mut secret[..]);
        }
        entries.push(Entry { secret, target });
        (pid, secret, guard(secret))
    }

    /// The upstream behind a gateway key, if the key is live and the secret matches.
    pub(crate) fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let live = self.live.lock().ok()?;
        live.get(&pid)?
            .iter()
            .find(|e| same_secret(secret, &e.secret))
            .map(|e| e.target.clone())
    }
}

/// Sends a CancelRequest for the real backend and waits (briefly) for the server to close
/// the connection, which it does once the cancel signal is delivered.
pub(crate) async fn send_cancel(target: &CancelTarget) -> Result<(), UpstreamError> {
    let mut io = open_stream(&target.target).await?;
    let mut msg = Vec::with_capacity(16);
    encode_cancel_request(&mut msg, target.pid, &target.secret);
    io.write_all(&msg).await.map_err(UpstreamError::Io)?;
    io.flush().await.map_err(UpstreamError::Io)?;
    let mut sink = [0u8; 64];
    let _ = tokio::time::timeout(Duration::from_secs(2), io.read(&mut sink)).await;
    Ok(())
}
