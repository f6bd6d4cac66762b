//! The live grant table: in memory, indexed by grant id and by user.
//!
//! Only live grants are here; the store keeps the rest. `authorize` takes one read lock on
//! the user index, hashes the user name once (foldhash) and allocates nothing on the lookup
//! path. Names are shared `Arc<str>`s: a target or role name is interned once for all its
//! grants, a user name once for all of theirs, and a grant id once for the table, the
//! scheduler and every session under it. Each live grant holds its deadline and, once lapsed,
//! why, in atomics, and one `Notify` shared by all its leases: an extension re-arms them, a
//! revoke reaches them even if they registered mid-kill (they re-read the atomics after
//! registering for the wake-up), and a kill of one of its sessions wakes them too (the
//! session's own flag says which one must go).

use std::collections::HashSet;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::CloseReason;

/// One live grant. Its deadline and lapse are atomics read on every connect without a
/// lock; `changed` wakes its leases when either moves, or when one of its sessions is killed.
#[derive(Debug)]
pub(crate) struct LiveGrant {
    pub id: Arc<str>,
    pub user: Arc<str>,
    pub target: Arc<str>,
    pub role: Arc<str>,
    /// Nanoseconds since the epoch (good until 2262).
    expires_at: AtomicI64,
    /// A `CloseReason` code once the grant expired or was revoked; 0 while live.
    closed: AtomicU8,
    pub changed: Notify,
}

fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl LiveGrant {
    pub(crate) fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.expires_at.load(Ordering::Acquire))
    }

    /// Why the grant lapsed (expired or revoked), if it did.
    pub(crate) fn closed(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.closed.load(Ordering::Acquire))
    }

    /// Live at `now`: not closed and before its deadline.
    pub(crate) fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.closed.load(Ordering::Acquire) == 0
            && nanos(now) < self.expires_at.load(Ordering::Acquire)
    }

    /// Moves the deadline (extension) and wakes the leases so they re-arm their timers.
    pub(crate) fn set_expires_at(&self, t: DateTime<Utc>) {
        self.expires_at.store(nanos(t), Ordering::Release);
        self.changed.notify_waiters();
    }

    /// Marks the grant lapsed for `reason` (the first reason wins) and wakes its leases.
    pub(crate) fn close(&self, reason: CloseReason) {
        let _ = self
            .closed
            .compare_exchange(0, reason.code(), Ordering::AcqRel, Ordering::Acquire);
        self.changed.notify_waiters();
    }
}

/// A user's live grants, on every target (a handful at most; scanned, not indexed). Most
/// users hold one, kept inline in the map's slot: one memory access fewer on every connect
/// and no separate allocation.
#[derive(Debug)]
enum PerUser {
    One(Arc<LiveGrant>),
    Many(Vec<Arc<LiveGrant>>),
}

impl PerUser {
    fn as_slice(&self) -> &[Arc<LiveGrant>] {
        match self {
            PerUser::One(g) => std::slice::from_ref(g),
            PerUser::Many(v) => v,
        }
    }

    fn push(&mut self, g: Arc<LiveGrant>) {
        match self {
            PerUser::One(first) => *self = PerUser::Many(vec![first.clone(), g]),
            PerUser::Many(v) => v.push(g),
        }
    }

    /// Drops grant `id`; true when none is left.
    fn remove(&mut self, id: &str) -> bool {
        match self {
            PerUser::One(g) => &*g.id == id,
            PerUser::Many(v) => {
                v.retain(|x| &*x.id != id);
                v.is_empty()
            }
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct LiveTable {
    by_id: RwLock<foldhash::HashMap<Arc<str>, Arc<LiveGrant>>>,
    by_user: RwLock<foldhash::HashMap<Arc<str>, PerUser>>,
    /// Target and role names, shared by every grant that names them.
    names: Mutex<HashSet<Arc<str>>>,
    /// (user, target) pairs whose last grant lapsed: lets a refusal say "expired" rather
    /// than "no grant". Cleared when a new grant arrives.
    lapsed: RwLock<HashSet<(String, String)>>,
}

/// Locks poisoned by a panicking writer still hold a consistent map (every mutation below is
/// a single insert or remove), so they are recovered rather than propagated.
fn read<T>(l: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl LiveTable {
    fn intern(&self, name: &str) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = names.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        names.insert(n.clone());
        n
    }

    /// Puts a live grant in the table; returns it (the scheduler arms its id).
    pub(crate) fn insert(
        &self,
        id: &str,
        user: &str,
        target: &str,
        role: &str,
        expires_at: DateTime<Utc>,
    ) -> Arc<LiveGrant> {
        write(&self.lapsed).remove(&(user.to_owned(), target.to_owned()));
        let (target, role) = (self.intern(target), self.intern(role));
        let mut by_id = write(&self.by_id);
        let mut by_user = write(&self.by_user);
        let user = match by_user.get_key_value(user) {
            Some((k, _)) => k.clone(),
            None => Arc::from(user),
        };
        let g = Arc::new(LiveGrant {
            id: Arc::from(id),
            user: user.clone(),
            target,
            role,
            expires_at: AtomicI64::new(nanos(expires_at)),
            closed: AtomicU8::new(0),
            changed: Notify::new(),
        });
        match by_user.get_mut(&*user) {
            Some(list) => list.push(g.clone()),
            None => {
                by_user.insert(user, PerUser::One(g.clone()));
            }
        }
        by_id.insert(g.id.clone(), g.clone());
        g
    }

    /// Removes a grant; returns it if it was there (the caller then owns its lapse).
    pub(crate) fn remove(&self, id: &str, lapsed: bool) -> Option<Arc<LiveGrant>> {
        let mut by_id = write(&self.by_id);
        let mut by_user = write(&self.by_user);
        let g = by_id.remove(id)?;
        if let Some(list) = by_user.get_mut(&*g.user)
            && list.remove(&g.id)
        {
            by_user.remove(&*g.user);
        }
        drop(by_user);
        drop(by_id);
        if lapsed {
            self.mark_lapsed(&g.user, &g.target);
        }
        Some(g)
    }

    pub(crate) fn mark_lapsed(&self, user: &str, target: &str) {
        write(&self.lapsed).insert((user.to_owned(), target.to_owned()));
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<LiveGrant>> {
        read(&self.by_id).get(id).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<LiveGrant>> {
        read(&self.by_id).values().cloned().collect()
    }

    pub(crate) fn len(&self) -> usize {
        read(&self.by_id).len()
    }

    /// Runs `f` over every grant `user` holds (on any target), under the read lock.
    pub(crate) fn with_user<R>(&self, user: &str, f: impl FnOnce(&[Arc<LiveGrant>]) -> R) -> R {
        let by_user = read(&self.by_user);
        f(by_user.get(user).map(PerUser::as_slice).unwrap_or(&[]))
    }

    pub(crate) fn has_lapsed(&self, user: &str, target: &str) -> bool {
        // Cold path (refusals only), so the key allocation here does not matter.
        read(&self.lapsed).contains(&(user.to_owned(), target.to_owned()))
    }
}
