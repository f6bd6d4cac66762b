//! The sessions registry: every live session, with its close flag and byte counters.
//!
//! A session exists here from `authorize` until its [`Lease`](super::Lease) is dropped.
//! Closing is only ever done by [`Registry::close`], called from the one kill path.
//!
//! Registering must be cheap (it is on every connect, and on a machine where one atomic
//! read-modify-write costs ~14 ns each one counts): a connect picks a shard from a per-thread
//! round robin, so concurrent connects rarely meet on a lock, and is numbered by that shard's
//! counter under the lock it takes anyway (the number's low bits are the shard; its `s_<hex>`
//! id is formatted only when shown). Each shard is a slab whose slot the lease keeps (so
//! deregistering hashes nothing), the lease reaches the registry through its grant (no
//! reference count to bump per session), and the entry (one allocation, byte counters
//! included) shares its grant's names rather than copying them. Finding a session by id
//! scans its shard: that is an operator's `sessions kill`, not a connect. A kill sets the
//! session's flag and wakes its grant's `Notify`, which the lease already listens to, so a
//! session needs no channel of its own.

use std::cell::Cell;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use chrono::DateTime;

use super::model::SessionRecord;
use super::table::LiveGrant;
use super::{CloseReason, Counters, Proto};

/// How session numbers are shown: `s_` and 16 hex digits.
pub(crate) fn session_id(seq: u64) -> String {
    format!("s_{seq:016x}")
}

/// The number behind an `s_<hex>` id, if it is one.
fn parse_id(id: &str) -> Option<u64> {
    let hex = id.strip_prefix("s_")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// One registered session.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    pub seq: u64,
    pub grant: Arc<LiveGrant>,
    pub proto: Proto,
    pub client: SocketAddr,
    /// Nanoseconds since the epoch (a `DateTime` only when listed).
    pub started_at: i64,
    pub counters: Counters,
    /// Set once by the kill path (a `CloseReason` code; 0 while open).
    close: AtomicU8,
    /// Who asked for `sessions kill`, and why; set before the close flag, so the session
    /// finds it when it writes `session.ended`. Boxed: nearly every session has none.
    kill: OnceLock<Box<KillNote>>,
}

/// Who killed a session with `sessions kill`, and the reason they gave, for `session.ended`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KillNote {
    /// The actor's name: `admin` for the operator's token, else the user.
    pub by: String,
    /// The `--reason` text, when one was given.
    pub reason: Option<String>,
}

impl SessionEntry {
    pub(crate) fn new(
        seq: u64,
        grant: Arc<LiveGrant>,
        proto: Proto,
        client: SocketAddr,
        started_at: i64,
    ) -> SessionEntry {
        SessionEntry {
            seq,
            grant,
            proto,
            client,
            started_at,
            counters: Counters::default(),
            close: AtomicU8::new(0),
            kill: OnceLock::new(),
        }
    }

    /// Notes who is killing the session and why; false if a kill was already noted. Only
    /// the kill that notes itself goes on to close the session, so the note written to
    /// `session.ended` is always the one of the kill that closed it.
    pub(crate) fn note_kill(&self, note: KillNote) -> bool {
        self.kill.set(Box::new(note)).is_ok()
    }

    /// Who killed the session and why, if it was closed by `sessions kill`.
    pub(crate) fn kill_note(&self) -> Option<&KillNote> {
        match self.closed() {
            Some(CloseReason::Killed) => self.kill.get().map(|b| &**b),
            _ => None,
        }
    }

    /// Why the kill path closed this session, if it did.
    pub(crate) fn closed(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.close.load(Ordering::Acquire))
    }

    /// Marks the session closed for `reason` and wakes its lease; false if already closing.
    fn close(&self, reason: CloseReason) -> bool {
        let won = self
            .close
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if won {
            // Wakes every lease of the grant; each re-reads its own flag. Kills of single
            // sessions are rare, so the spurious wake-ups of siblings cost nothing that
            // matters, and no session needs a channel of its own.
            self.grant.changed.notify_waiters();
        }
        won
    }

    pub(crate) fn id(&self) -> String {
        session_id(self.seq)
    }

    pub(crate) fn record(&self) -> SessionRecord {
        use std::sync::atomic::Ordering::Relaxed;
        SessionRecord {
            id: self.id(),
            proto: match self.proto {
                Proto::Ssh => "ssh",
                Proto::Postgres => "postgres",
            }
            .into(),
            user: self.grant.user().to_owned(),
            target: self.grant.target.to_string(),
            role: self.grant.role.to_string(),
            grant_id: self.grant.id.to_string(),
            client: self.client.to_string(),
            started_at: DateTime::from_timestamp_nanos(self.started_at),
            bytes_in: self.counters.bytes_in.load(Relaxed),
            bytes_out: self.counters.bytes_out.load(Relaxed),
        }
    }
}

/// A session's byte counters, shared with the tasks relaying its bytes and with the
/// registry (for `sessions list`). A handle on the session's entry: no allocation of its own.
#[derive(Debug, Clone)]
pub struct SessionCounters(pub(crate) Arc<SessionEntry>);

impl Deref for SessionCounters {
    type Target = Counters;

    fn deref(&self) -> &Counters {
        &self.0.counters
    }
}

/// Which sessions the kill path closes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Victims<'a> {
    /// Every session under this grant.
    Grant(&'a str),
    /// One session.
    Session(&'a str),
    /// Everything (shutdown).
    All,
}

const SHARDS: usize = 16;

/// One shard's sessions, and the count its next session is numbered from.
#[derive(Debug, Default)]
struct Shard {
    next: u64,
    slab: slab::Slab<Arc<SessionEntry>>,
}

#[derive(Debug)]
pub(crate) struct Registry {
    shards: [Mutex<Shard>; SHARDS],
}

impl Default for Registry {
    fn default() -> Registry {
        // A random start, so ids of one run are not mistaken for another's in the log; shifted
        // so that a shard's number (its count times the shard count) does not overflow.
        let base = rand::random::<u64>() >> 8;
        Registry {
            shards: std::array::from_fn(|_| {
                Mutex::new(Shard {
                    next: base,
                    slab: slab::Slab::new(),
                })
            }),
        }
    }
}

thread_local! {
    /// The shard this thread registers its next session in (a round robin).
    static NEXT_SHARD: Cell<usize> = const { Cell::new(0) };
}

impl Registry {
    fn lock(&self, shard: usize) -> MutexGuard<'_, Shard> {
        // Every mutation is a single insert or remove, so a poisoned shard is consistent.
        self.shards[shard % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    fn shard(&self, seq: u64) -> MutexGuard<'_, Shard> {
        self.lock((seq % SHARDS as u64) as usize)
    }

    /// Numbers and registers a session made by `make` from its number; returns it and its
    /// slot in its shard, for [`Registry::remove`].
    pub(crate) fn insert(
        &self,
        make: impl FnOnce(u64) -> SessionEntry,
    ) -> (Arc<SessionEntry>, usize) {
        let i = NEXT_SHARD.with(|n| {
            let i = n.get();
            n.set(i.wrapping_add(1));
            i % SHARDS
        });
        let mut shard = self.lock(i);
        let seq = shard.next.wrapping_mul(SHARDS as u64) + i as u64;
        shard.next += 1;
        let e = Arc::new(make(seq));
        let slot = shard.slab.insert(e.clone());
        (e, slot)
    }

    /// Deregisters session `seq`, registered at `slot`.
    pub(crate) fn remove(&self, seq: u64, slot: usize) {
        let mut shard = self.shard(seq);
        if shard.slab.get(slot).is_some_and(|e| e.seq == seq) {
            shard.slab.remove(slot);
        }
    }

    fn all(&self) -> Vec<Arc<SessionEntry>> {
        (0..SHARDS as u64)
            .flat_map(|i| {
                self.shard(i)
                    .slab
                    .iter()
                    .map(|(_, e)| e.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    pub(crate) fn list(&self) -> Vec<SessionRecord> {
        let mut v: Vec<SessionRecord> = self.all().iter().map(|e| e.record()).collect();
        v.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        v
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<SessionEntry>> {
        let seq = parse_id(id)?;
        self.shard(seq)
            .slab
            .iter()
            .find(|(_, e)| e.seq == seq)
            .map(|(_, e)| e.clone())
    }

    /// Signals `reason` to the matching sessions that are not already closing; returns them.
    /// Never blocks on the sessions themselves: each one acts on its signal in its own task.
    pub(crate) fn close(&self, victims: Victims<'_>, reason: CloseReason) -> Vec<SessionRecord> {
        let hit: Vec<Arc<SessionEntry>> = match victims {
            Victims::Session(id) => self.get(id).into_iter().collect(),
            Victims::Grant(gid) => self
                .all()
                .into_iter()
                .filter(|e| &*e.grant.id == gid)
                .collect(),
            Victims::All => self.all(),
        };
        hit.into_iter()
            .filter(|e| e.close(reason))
            .map(|e| e.record())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reasons_encode() {
        for seq in [0, 1, 0xdead_beef, u64::MAX >> 1] {
            assert_eq!(parse_id(&session_id(seq)), Some(seq));
        }
        assert_eq!(parse_id("s_xyz"), None);
        assert_eq!(parse_id("g_0000000000000001"), None);
        for r in CloseReason::ALL {
            assert_eq!(CloseReason::from_code(r.code()), Some(r));
        }
        assert_eq!(CloseReason::from_code(0), None);
    }

    /// Sessions numbered in every shard get distinct ids, each found by its id and gone once
    /// removed from the slot it was given.
    #[test]
    fn numbers_are_unique_and_find_their_shard() {
        let registry = Arc::new(Registry::default());
        let grant = Arc::new(LiveGrant::new(
            "g_1",
            "alice",
            Arc::from("t"),
            Arc::from("r"),
            chrono::Utc::now(),
            registry.clone(),
        ));
        let client: SocketAddr = ([127, 0, 0, 1], 1).into();
        let made: Vec<(Arc<SessionEntry>, usize)> = (0..100)
            .map(|_| {
                registry.insert(|seq| SessionEntry::new(seq, grant.clone(), Proto::Ssh, client, 0))
            })
            .collect();
        let ids: std::collections::HashSet<String> = made.iter().map(|(e, _)| e.id()).collect();
        assert_eq!(ids.len(), 100);
        assert_eq!(registry.list().len(), 100);
        for (e, slot) in &made {
            assert_eq!(registry.get(&e.id()).map(|f| f.seq), Some(e.seq));
            registry.remove(e.seq, *slot);
            assert!(registry.get(&e.id()).is_none());
        }
        assert!(registry.list().is_empty());
    }
}
