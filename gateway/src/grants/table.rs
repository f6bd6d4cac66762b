//! The live grant table: in memory, indexed by grant id and by (user, target, role).
//!
//! Only live grants are here; the store keeps the rest. `authorize` takes one read lock on
//! the user index and touches no allocation on the lookup path. Each live grant carries a
//! `watch` channel holding its deadline and, once lapsed, why: leases subscribe to it, so an
//! extension re-arms them and a revoke reaches them even if they registered mid-kill.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::CloseReason;

/// What leases watch on their grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrantState {
    pub expires_at: DateTime<Utc>,
    /// Set once, when the grant expires or is revoked.
    pub closed: Option<CloseReason>,
}

/// One live grant.
#[derive(Debug)]
pub(crate) struct LiveGrant {
    pub id: String,
    pub user: String,
    pub target: String,
    pub role: String,
    pub state: watch::Sender<GrantState>,
}

impl LiveGrant {
    pub(crate) fn new(
        id: String,
        user: String,
        target: String,
        role: String,
        expires_at: DateTime<Utc>,
    ) -> LiveGrant {
        let (state, _) = watch::channel(GrantState {
            expires_at,
            closed: None,
        });
        LiveGrant {
            id,
            user,
            target,
            role,
            state,
        }
    }

    pub(crate) fn expires_at(&self) -> DateTime<Utc> {
        self.state.borrow().expires_at
    }

    /// Live at `now`: not closed and before its deadline.
    pub(crate) fn is_live(&self, now: DateTime<Utc>) -> bool {
        let s = self.state.borrow();
        s.closed.is_none() && now < s.expires_at
    }
}

/// Grants of one user on one target (usually one or two, one per role).
type PerTarget = Vec<Arc<LiveGrant>>;

#[derive(Debug, Default)]
pub(crate) struct LiveTable {
    by_id: RwLock<HashMap<String, Arc<LiveGrant>>>,
    by_user: RwLock<HashMap<String, HashMap<String, PerTarget>>>,
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
    pub(crate) fn insert(&self, g: Arc<LiveGrant>) {
        write(&self.lapsed).remove(&(g.user.clone(), g.target.clone()));
        let mut by_id = write(&self.by_id);
        let mut by_user = write(&self.by_user);
        by_user
            .entry(g.user.clone())
            .or_default()
            .entry(g.target.clone())
            .or_default()
            .push(g.clone());
        by_id.insert(g.id.clone(), g);
    }

    /// Removes a grant; returns it if it was there (the caller then owns its lapse).
    pub(crate) fn remove(&self, id: &str, lapsed: bool) -> Option<Arc<LiveGrant>> {
        let mut by_id = write(&self.by_id);
        let mut by_user = write(&self.by_user);
        let g = by_id.remove(id)?;
        if let Some(targets) = by_user.get_mut(&g.user) {
            if let Some(list) = targets.get_mut(&g.target) {
                list.retain(|x| x.id != id);
                if list.is_empty() {
                    targets.remove(&g.target);
                }
            }
            if targets.is_empty() {
                by_user.remove(&g.user);
            }
        }
        drop(by_user);
        drop(by_id);
        if lapsed {
            write(&self.lapsed).insert((g.user.clone(), g.target.clone()));
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

    /// Runs `f` over the grants `user` holds on `target`, under the read lock.
    pub(crate) fn with_grants<R>(
        &self,
        user: &str,
        target: &str,
        f: impl FnOnce(&[Arc<LiveGrant>]) -> R,
    ) -> R {
        let by_user = read(&self.by_user);
        let list = by_user
            .get(user)
            .and_then(|t| t.get(target))
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        f(list)
    }

    pub(crate) fn has_lapsed(&self, user: &str, target: &str) -> bool {
        // Cold path (refusals only), so the key allocation here does not matter.
        read(&self.lapsed).contains(&(user.to_owned(), target.to_owned()))
    }
}
