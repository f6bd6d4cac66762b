//! The live grant table: in memory, indexed by grant id and by user.
//!
//! Only live grants are here; the store keeps the rest. `authorize` takes one read lock, over
//! the user index and the configured targets together ([`LiveTable::choose`]), and allocates
//! nothing on the lookup path, which is laid out to touch as few cache lines as a
//! 1,000,000-grant table allows (on a connect they are cold): the user index ([`UserIndex`])
//! keeps each grant beside its user name's seeded 64-bit hash, and the name's head, kept
//! inline in the grant next to its deadline and lapse (`user_name.rs`), is compared there:
//! one slot and one grant, no separate key allocation to chase. Target and role names are
//! shared `Arc<str>`s interned once for all their grants (a target is compared by pointer),
//! a grant id once for the table, the scheduler and every session under it. Each live grant holds its deadline and, once
//! lapsed, why, in atomics, and one `Notify` shared by all its leases: an extension re-arms
//! them, a revoke reaches them even if they registered mid-kill (they re-read the atomics
//! after registering for the wake-up), and a kill of one of its sessions wakes them too
//! (the session's own flag says which one must go).

use std::collections::HashSet;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use portcullis_config::Config;
use tokio::sync::Notify;

use super::CloseReason;
use super::sessions::Registry;
use super::user_index::{UserGrants, UserIndex};
use super::user_name;

/// One live grant. Its deadline and lapse are atomics read on every connect without a
/// lock; `changed` wakes its leases when either moves, or when one of its sessions is killed.
/// `repr(C)` keeps what a connect reads (deadline, target, lapse, the name's head) in the
/// 48 bytes after the reference counts it bumps: one cache line with them when the
/// allocation starts a line, two otherwise.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct LiveGrant {
    /// Nanoseconds since the epoch (good until 2262).
    expires_at: AtomicI64,
    pub target: Arc<str>,
    /// A `CloseReason` code once the grant expired or was revoked; 0 while live.
    closed: AtomicU8,
    user_head: user_name::Head,
    pub role: Arc<str>,
    user_tail: user_name::Tail,
    pub id: Arc<str>,
    pub changed: Notify,
    /// The registry its sessions are in: a lease deregisters through its grant, so a connect
    /// bumps no registry reference count.
    pub sessions: Arc<Registry>,
}

// What a connect reads ends within 48 bytes of the grant (64 with the reference counts).
const _: () = assert!(std::mem::offset_of!(LiveGrant, role) <= 48);

pub(crate) fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl LiveGrant {
    pub(crate) fn new(
        id: &str,
        user: &str,
        target: Arc<str>,
        role: Arc<str>,
        expires_at: DateTime<Utc>,
        sessions: Arc<Registry>,
    ) -> LiveGrant {
        let (user_head, user_tail) = user_name::split(user);
        LiveGrant {
            expires_at: AtomicI64::new(nanos(expires_at)),
            target,
            closed: AtomicU8::new(0),
            user_head,
            role,
            user_tail,
            id: Arc::from(id),
            changed: Notify::new(),
            sessions,
        }
    }

    pub(crate) fn user(&self) -> &str {
        user_name::text(&self.user_head, &self.user_tail)
    }

    /// Is this the grant of the user `key` names?
    pub(crate) fn is_for(&self, key: &user_name::Key<'_>) -> bool {
        user_name::matches(&self.user_head, &self.user_tail, key)
    }

    pub(crate) fn expires_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.expires_at.load(Ordering::Acquire))
    }

    /// Why the grant lapsed (expired or revoked), if it did.
    pub(crate) fn closed(&self) -> Option<CloseReason> {
        CloseReason::from_code(self.closed.load(Ordering::Acquire))
    }

    /// Live at `now` (nanoseconds since the epoch): not closed and before its deadline.
    pub(crate) fn is_live_at(&self, now: i64) -> bool {
        self.closed.load(Ordering::Acquire) == 0 && now < self.expires_at.load(Ordering::Acquire)
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

/// Everything `authorize` reads, under one lock: the grants by user, and the configured
/// targets (set from the config at start and on each reload).
#[derive(Debug, Default)]
struct ByUser {
    /// Keyed by [`LiveTable::user_hash`]; the slot's grants say whose they are.
    index: UserIndex,
    /// Each configured target's name, and that name interned: a grant is on the target
    /// exactly when its interned name is this one (a pointer compare, not a string compare).
    targets: foldhash::HashMap<String, Arc<str>>,
    warn_before: Duration,
}

/// What [`LiveTable::choose`] found for a connect.
#[derive(Debug)]
pub(crate) enum Choice {
    /// The grant to run the session under, and the policy's `warn_before`.
    Grant(Arc<LiveGrant>, Duration),
    /// No live grant fits (or, with no role named, grants for several roles do).
    NoGrant,
    /// The target is not in the config.
    UnknownTarget,
}

#[derive(Debug, Default)]
pub(crate) struct LiveTable {
    by_id: RwLock<foldhash::HashMap<Arc<str>, Arc<LiveGrant>>>,
    by_user: RwLock<ByUser>,
    /// The seeded hasher behind `by_user`'s keys.
    hasher: foldhash::fast::RandomState,
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
    /// The one shared copy of a target or role name. Names are never dropped from here, so
    /// two interned names are the same string exactly when they are the same pointer.
    pub(crate) fn intern(&self, name: &str) -> Arc<str> {
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = names.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        names.insert(n.clone());
        n
    }

    /// Puts a live grant in the table; returns it (the scheduler arms its id).
    /// The key of `user`'s slot in `by_user`.
    fn user_hash(&self, user: &str) -> u64 {
        self.hasher.hash_one(user)
    }

    pub(crate) fn insert(
        &self,
        id: &str,
        user: &str,
        target: &str,
        role: &str,
        expires_at: DateTime<Utc>,
        sessions: &Arc<Registry>,
    ) -> Arc<LiveGrant> {
        write(&self.lapsed).remove(&(user.to_owned(), target.to_owned()));
        let (target, role) = (self.intern(target), self.intern(role));
        let mut by_id = write(&self.by_id);
        let mut by_user = write(&self.by_user);
        let g = Arc::new(LiveGrant::new(
            id,
            user,
            target,
            role,
            expires_at,
            sessions.clone(),
        ));
        by_user.index.insert(self.user_hash(user), g.clone());
        by_id.insert(g.id.clone(), g.clone());
        g
    }

    /// Removes a grant; returns it if it was there (the caller then owns its lapse).
    pub(crate) fn remove(&self, id: &str, lapsed: bool) -> Option<Arc<LiveGrant>> {
        let mut by_id = write(&self.by_id);
        let mut by_user = write(&self.by_user);
        let g = by_id.remove(id)?;
        by_user.index.remove(self.user_hash(g.user()), &g.id);
        drop(by_user);
        drop(by_id);
        if lapsed {
            self.mark_lapsed(g.user(), &g.target);
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
    pub(crate) fn with_user<R>(&self, user: &str, f: impl FnOnce(UserGrants<'_>) -> R) -> R {
        let hash = self.user_hash(user);
        let name = user_name::Key::new(user);
        f(read(&self.by_user).index.get(hash, &name))
    }

    /// Takes the configured targets and `warn_before` from a (re)loaded config.
    pub(crate) fn set_policy(&self, config: &Config) {
        let targets = config
            .targets
            .iter()
            .map(|t| (t.name.clone(), self.intern(&t.name)))
            .collect();
        let mut by_user = write(&self.by_user);
        by_user.targets = targets;
        by_user.warn_before = config.policy.warn_before;
    }

    /// The grant a connect of `user` to `target` (as `role`, if named) runs under at `now`
    /// (nanoseconds since the epoch). The hot path of every connect: one read lock, one
    /// pass over the user's grants, no allocation. Of several grants for the same role, the
    /// one that lasts longest wins; with no role named, grants for two different roles make
    /// the choice ambiguous (the caller's refusal lists them).
    pub(crate) fn choose(&self, user: &str, target: &str, role: Option<&str>, now: i64) -> Choice {
        let hash = self.user_hash(user);
        let name = user_name::Key::new(user);
        let by_user = read(&self.by_user);
        let Some(target) = by_user.targets.get(target) else {
            return Choice::UnknownTarget;
        };
        let target = target.as_ptr();
        let mut best: Option<&Arc<LiveGrant>> = None;
        for g in by_user.index.get(hash, &name) {
            if g.target.as_ptr() != target
                || role.is_some_and(|r| &*g.role != r)
                || !g.is_live_at(now)
            {
                continue;
            }
            match best {
                Some(b) if b.role != g.role => return Choice::NoGrant,
                Some(b)
                    if b.expires_at.load(Ordering::Acquire)
                        >= g.expires_at.load(Ordering::Acquire) => {}
                _ => best = Some(g),
            }
        }
        match best {
            Some(g) => Choice::Grant(g.clone(), by_user.warn_before),
            None => Choice::NoGrant,
        }
    }

    pub(crate) fn has_lapsed(&self, user: &str, target: &str) -> bool {
        // Cold path (refusals only), so the key allocation here does not matter.
        read(&self.lapsed).contains(&(user.to_owned(), target.to_owned()))
    }
}
