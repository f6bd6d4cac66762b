//! The one expiry scheduler: an ordered set of (deadline, kind, grant id) and a single task
//! woken by `Notify` when the earliest deadline may have moved.
//!
//! Each live grant has two entries: its warning (`warn_before` ahead) and its expiry; each
//! pending request has one, when it lapses. The task pops whatever is due, in deadline order,
//! and hands it to the grant table; nothing else ever expires a grant, so each grant is marked
//! expired exactly once.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::time::sleep_until;

use super::engine::Inner;

/// What is due at a deadline. `Warn` sorts first so a warning never follows its expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    Warn,
    Expire,
    /// A pending request reaches its time to live (the id is the request's).
    LapseRequest,
}

/// One due entry: what fired, for which grant or request.
type Fired = (Due, Arc<str>);

#[derive(Debug, Default)]
struct Entries {
    /// Ids are the live grant's own `Arc<str>`, shared rather than copied (memory per grant).
    set: BTreeSet<(DateTime<Utc>, Due, Arc<str>)>,
    /// Grant id to its (warn_at, expires_at), so disarming finds both entries.
    armed: foldhash::HashMap<Arc<str>, (DateTime<Utc>, DateTime<Utc>)>,
}

#[derive(Debug, Default)]
pub(crate) struct Scheduler {
    entries: Mutex<Entries>,
    wake: Notify,
}

impl Scheduler {
    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // Every mutation below keeps `set` and `armed` in step before it can panic, so a
        // poisoned lock still guards consistent data.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Schedules (or reschedules) a grant's warning and expiry.
    pub(crate) fn arm(&self, id: &Arc<str>, expires_at: DateTime<Utc>, warn_before: Duration) {
        let warn_at = expires_at - warn_before;
        {
            let mut e = self.lock();
            if let Some((w, x)) = e.armed.remove(id) {
                e.set.remove(&(w, Due::Warn, id.clone()));
                e.set.remove(&(x, Due::Expire, id.clone()));
            }
            e.set.insert((warn_at, Due::Warn, id.clone()));
            e.set.insert((expires_at, Due::Expire, id.clone()));
            e.armed.insert(id.clone(), (warn_at, expires_at));
        }
        // A stored permit makes the task re-check even if it is not waiting yet.
        self.wake.notify_one();
    }

    /// Schedules a pending request's lapse. Never disarmed: a request decided before then is
    /// simply no longer pending when its entry fires.
    pub(crate) fn arm_request(&self, id: Arc<str>, lapses_at: DateTime<Utc>) {
        self.lock().set.insert((lapses_at, Due::LapseRequest, id));
        self.wake.notify_one();
    }

    /// Forgets a grant (revoked); a no-op when it is not armed.
    pub(crate) fn disarm(&self, id: &str) {
        let mut e = self.lock();
        if let Some((key, (w, x))) = e.armed.remove_entry(id) {
            e.set.remove(&(w, Due::Warn, key.clone()));
            e.set.remove(&(x, Due::Expire, key));
        }
    }

    /// Removes and returns everything due at `now`, in order, or the next deadline.
    fn take_due(&self, now: DateTime<Utc>) -> (Vec<Fired>, Option<DateTime<Utc>>) {
        let mut e = self.lock();
        let mut due = Vec::new();
        while let Some(first) = e.set.first() {
            if first.0 > now {
                let next = first.0;
                return (due, Some(next));
            }
            let Some((_, kind, id)) = e.set.pop_first() else {
                break;
            };
            if kind == Due::Expire {
                e.armed.remove(&id);
            }
            due.push((kind, id));
        }
        (due, None)
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().armed.len()
    }
}

/// Runs the scheduler until the runtime stops.
pub(crate) async fn run(inner: Arc<Inner>) {
    loop {
        let (due, next) = inner.scheduler.take_due(inner.clock.now());
        if !due.is_empty() {
            for (kind, id) in due {
                match kind {
                    Due::Warn => inner.on_warn(&id),
                    Due::Expire => inner.on_expire(&id),
                    Due::LapseRequest => inner.on_request_lapse(&id),
                }
            }
            continue;
        }
        match next {
            Some(t) => {
                tokio::select! {
                    _ = sleep_until(inner.clock.instant_at(t)) => {}
                    _ = inner.scheduler.wake.notified() => {}
                }
            }
            None => inner.scheduler.wake.notified().await,
        }
    }
}
