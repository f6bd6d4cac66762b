//! The live grant table: in memory, indexed by grant id and by user.
//!
//! Only live grants are here; the store keeps the rest. `authorize` takes one read lock on
//! the user index and allocates nothing on the lookup path, which is laid out to touch as
//! few cache lines as a 1,000,000-grant table allows (on a connect they are cold): the user
//! index is keyed by the user name's 64-bit hash (foldhash, seeded per process), so a slot
//! is 32 bytes and holds the user's one grant inline, and the name itself, kept inline in
//! the grant next to its deadline and lapse, is compared there: one probe of the index and
//! one grant, no separate key allocation to chase. Two names with the same hash simply
//! share a slot; every grant found is checked against the name. Target and role names are
//! shared `Arc<str>`s interned once for all their grants, a grant id once for the table, the
//! scheduler and every session under it. Each live grant holds its deadline and, once
//! lapsed, why, in atomics, and one `Notify` shared by all its leases: an extension re-arms
//! them, a revoke reaches them even if they registered mid-kill (they re-read the atomics
//! after registering for the wake-up), and a kill of one of its sessions wakes them too
//! (the session's own flag says which one must go).

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::atomic::{AtomicI64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use super::CloseReason;

/// The longest user name kept inline in its grant; longer ones live on the heap.
const INLINE: usize = 30;

/// A user name stored inline when short (almost always), so comparing it costs no extra
/// memory access beyond the grant itself.
#[derive(Debug)]
enum Name {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

impl Name {
    fn new(s: &str) -> Name {
        match u8::try_from(s.len()) {
            Ok(len) if s.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Name::Inline { len, bytes }
            }
            _ => Name::Heap(s.into()),
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Name::Heap(s) => s.as_bytes(),
        }
    }

    fn as_str(&self) -> &str {
        // Built from a `&str` and cut at its own length, so this never fails.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// One live grant. Its deadline and lapse are atomics read on every connect without a
/// lock; `changed` wakes its leases when either moves, or when one of its sessions is killed.
/// `repr(C)` keeps what `authorize` reads (name, target, role, deadline, lapse) together at
/// the front, next to the reference counts it bumps.
#[derive(Debug)]
#[repr(C)]
pub(crate) struct LiveGrant {
    user: Name,
    pub target: Arc<str>,
    pub role: Arc<str>,
    /// Nanoseconds since the epoch (good until 2262).
    expires_at: AtomicI64,
    /// A `CloseReason` code once the grant expired or was revoked; 0 while live.
    closed: AtomicU8,
    pub id: Arc<str>,
    pub changed: Notify,
}

pub(crate) fn nanos(t: DateTime<Utc>) -> i64 {
    t.timestamp_nanos_opt().unwrap_or(i64::MAX)
}

impl LiveGrant {
    pub(crate) fn user(&self) -> &str {
        self.user.as_str()
    }

    /// Is this `user`'s grant? (Bytes, not `str`: no UTF-8 check on the hot path.)
    fn is_for(&self, user: &str) -> bool {
        self.user.as_bytes() == user.as_bytes()
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

/// The live grants of the users whose names hash to one slot (a handful at most, almost
/// always of one user; scanned, not indexed). Most slots hold one grant, kept inline: one
/// memory access fewer on every connect and no separate allocation.
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
    /// Keyed by [`LiveTable::user_hash`]; the slot's grants say whose they are.
    by_user: RwLock<std::collections::HashMap<u64, PerUser, BuildHasherDefault<Prehashed>>>,
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
    ) -> Arc<LiveGrant> {
        write(&self.lapsed).remove(&(user.to_owned(), target.to_owned()));
        let (target, role) = (self.intern(target), self.intern(role));
        let mut by_id = write(&self.by_id);
        let mut by_user = write(&self.by_user);
        let g = Arc::new(LiveGrant {
            user: Name::new(user),
            target,
            role,
            expires_at: AtomicI64::new(nanos(expires_at)),
            closed: AtomicU8::new(0),
            id: Arc::from(id),
            changed: Notify::new(),
        });
        match by_user.entry(self.user_hash(user)) {
            std::collections::hash_map::Entry::Occupied(mut o) => o.get_mut().push(g.clone()),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(PerUser::One(g.clone()));
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
        let key = self.user_hash(g.user());
        if let Some(list) = by_user.get_mut(&key)
            && list.remove(&g.id)
        {
            by_user.remove(&key);
        }
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
        let key = self.user_hash(user);
        let by_user = read(&self.by_user);
        let slot = by_user.get(&key).map(PerUser::as_slice).unwrap_or(&[]);
        f(UserGrants {
            user,
            slot: slot.iter(),
        })
    }

    pub(crate) fn has_lapsed(&self, user: &str, target: &str) -> bool {
        // Cold path (refusals only), so the key allocation here does not matter.
        read(&self.lapsed).contains(&(user.to_owned(), target.to_owned()))
    }
}

/// The grants of one user, out of the slot their name hashes to.
pub(crate) struct UserGrants<'a> {
    user: &'a str,
    slot: std::slice::Iter<'a, Arc<LiveGrant>>,
}

impl<'a> Iterator for UserGrants<'a> {
    type Item = &'a Arc<LiveGrant>;

    fn next(&mut self) -> Option<&'a Arc<LiveGrant>> {
        let user = self.user;
        self.slot.by_ref().find(|g| g.is_for(user))
    }
}

/// The hasher of `by_user`, whose keys are already hashes (`LiveTable::user_hash`): it
/// passes a `u64` through rather than hashing it again.
#[derive(Debug, Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed here; this keeps any other use correct, if slow.
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}
