//! Cancel forwarding: the registry of live gateway-issued cancel keys and the CancelRequest
//! sent upstream with the real key.
//!
//! Clients only ever see a gateway-issued (pid, secret); a CancelRequest carrying one is
//! looked up here and re-sent to the upstream with the backend's real key, so upstream keys
//! never leave the gateway and a client cannot cancel another user's backend.

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

/// Live gateway cancel keys, keyed by the gateway-issued pid.
#[derive(Debug, Default)]
pub(crate) struct CancelRegistry {
    live: Mutex<HashMap<i32, Entry>>,
}

/// Removes its key from the registry when the session ends.
#[derive(Debug)]
pub(crate) struct CancelGuard {
    registry: Arc<CancelRegistry>,
    pid: i32,
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if let Ok(mut live) = self.registry.live.lock() {
            live.remove(&self.pid);
        }
    }
}

impl CancelRegistry {
    /// Issues a fresh gateway key for an upstream backend.
    pub(crate) fn register(self: &Arc<Self>, target: CancelTarget) -> (i32, [u8; 4], CancelGuard) {
        let mut secret = [0u8; 4];
        rand::fill(&mut secret[..]);
        let Ok(mut live) = self.live.lock() else {
            // A poisoned lock means a panic elsewhere; hand out a key that matches nothing.
            return (
                0,
                secret,
                CancelGuard {
                    registry: self.clone(),
                    pid: 0,
                },
            );
        };
        let pid = loop {
            // Positive, like real pids, and unique among live sessions.
            let candidate = (rand::random::<u32>() >> 1) as i32;
            if candidate != 0 && !live.contains_key(&candidate) {
                break candidate;
            }
        };
        live.insert(pid, Entry { secret, target });
        (
            pid,
            secret,
            CancelGuard {
                registry: self.clone(),
                pid,
            },
        )
    }

    /// The upstream behind a gateway key, if the key is live and the secret matches.
    pub(crate) fn lookup(&self, pid: i32, secret: &[u8]) -> Option<CancelTarget> {
        let live = self.live.lock().ok()?;
        let entry = live.get(&pid)?;
        let matches = secret.len() == entry.secret.len()
            && secret
                .iter()
                .zip(entry.secret)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        matches.then(|| entry.target.clone())
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
