//! Connections still logging in, per client: a cap on how many one client (an IPv4 address
//! or an IPv6 /64) may hold at once.
//!
//! Every connection holds one of the listener's `MAX_CONNECTIONS` permits from accept, and
//! a client that never finishes its startup keeps it for `STARTUP_TIMEOUT`. Without a
//! per-client cap one address opening a few thousand idle connections held every permit,
//! and everyone else's psql waited in the accept backlog. Past the cap a connection is
//! closed at once, before it is read; logged-in sessions do not count.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use crate::api::limiter::client_key;

/// Connections one client may have logging in at once. A pool opening its connections all
/// together stays under it; idle connections from one address cannot crowd out others.
pub(crate) const PER_CLIENT: usize = 64;

/// How many connections each client has logging in now.
#[derive(Debug, Default)]
pub(crate) struct LoggingIn {
    counts: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection's place among its client's connections logging in; dropping it (the
/// login succeeded, failed, or the connection ended) gives the place back.
#[derive(Debug)]
pub(crate) struct Slot {
    table: Arc<LoggingIn>,
    key: IpAddr,
}

impl LoggingIn {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        // Every update leaves the map consistent, so a poisoned lock is still usable.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `ip`, unless its client already has
    /// [`PER_CLIENT`] logging in.
    pub(crate) fn enter(table: &Arc<LoggingIn>, ip: IpAddr) -> Option<Slot> {
        let key = client_key(ip);
        let mut counts = table.lock();
        let n = counts.entry(key).or_default();
        if *n >= PER_CLIENT {
            return None;
        }
        *n += 1;
        Some(Slot {
            table: table.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.table.lock();
        if let Some(n) = counts.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_client_is_capped_and_others_are_not() {
        let table = Arc::new(LoggingIn::default());
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let mut held: Vec<Slot> = (0..PER_CLIENT)
            .map(|i| {
                // Addresses within one /64 are one client.
                LoggingIn::enter(&table, ip(&format!("2001:db8::{i:x}"))).expect("room")
            })
            .collect();
        assert!(LoggingIn::enter(&table, ip("2001:db8::ffff")).is_none());
        assert!(LoggingIn::enter(&table, ip("2001:db8:0:1::1")).is_some());
        assert!(LoggingIn::enter(&table, ip("192.0.2.1")).is_some());
        // A login that ends gives its place back; when all have, the client is forgotten.
        held.pop();
        let again = LoggingIn::enter(&table, ip("2001:db8::ffff")).expect("room again");
        drop(again);
        held.clear();
        assert!(table.lock().is_empty());
    }
}
