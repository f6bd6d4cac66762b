//! [`Lease`]: one session's permit under one grant, and the events it must act on.
//!
//! The lease waits on one signal, its grant's `Notify` (deadline moves on extension; closed on
//! expiry or revoke; woken when one of its sessions is killed or at shutdown, the session's
//! own flag saying which). It also sleeps until the deadline itself, so a session closes on time even
//! if the scheduler were late.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::sleep_until;

use super::clock::Clock;
use super::sessions::{Registry, SessionEntry, session_id};
use super::{CloseReason, Counters, LeaseEvent};

/// A permit to run one session under one grant. Dropping it deregisters the session.
#[derive(Debug)]
pub struct Lease {
    pub session_id: String,
    pub grant_id: String,
    pub user: String,
    pub target: String,
    pub role: String,
    pub counters: Arc<Counters>,
    entry: Arc<SessionEntry>,
    registry: Arc<Registry>,
    clock: Clock,
    warn_before: Duration,
    /// The deadline we already warned about; an extension past the warning window re-arms.
    warned_for: Option<DateTime<Utc>>,
    closed: Option<CloseReason>,
}

impl Lease {
    pub(crate) fn new(
        entry: Arc<SessionEntry>,
        registry: Arc<Registry>,
        clock: Clock,
        warn_before: Duration,
    ) -> Lease {
        let g = &entry.grant;
        Lease {
            session_id: session_id(entry.seq),
            grant_id: g.id.to_string(),
            user: g.user.to_string(),
            target: g.target.to_string(),
            role: g.role.to_string(),
            counters: entry.counters.clone(),
            entry,
            registry,
            clock,
            warn_before,
            warned_for: None,
            closed: None,
        }
    }

    /// The grant's current deadline (moves when the grant is extended).
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.entry.grant.expires_at()
    }

    /// Why this lease must close, if it must: kill signal, grant lapse, or deadline passed.
    fn close_reason(&self, now: DateTime<Utc>) -> Option<CloseReason> {
        self.closed.or_else(|| lapse(&self.entry, now))
    }

    /// Waits for the next thing the session must act on.
    ///
    /// # Cancellation safety
    /// Cancellation safe: no event is lost if the future is dropped before it resolves. State
    /// changes only on the path that returns, and every wait re-reads the grant after
    /// registering for its wake-up.
    pub async fn next_event(&mut self) -> LeaseEvent {
        let entry = self.entry.clone();
        loop {
            // Register for the wake-up before reading anything, so a change (an extension, a
            // lapse, or a kill, which sets the session's flag and then notifies) after this
            // point wakes the select below.
            let changed = entry.grant.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = self.clock.now();
            if let Some(r) = self.close_reason(now) {
                self.closed = Some(r);
                return LeaseEvent::Close(r);
            }
            let expires_at = entry.grant.expires_at();
            let warn_at = expires_at - self.warn_before;
            let may_warn = self.warned_for != Some(expires_at);
            if may_warn && now >= warn_at {
                self.warned_for = Some(expires_at);
                let remaining = (expires_at - now).to_std().unwrap_or_default();
                return LeaseEvent::Warn { remaining };
            }
            tokio::select! {
                _ = &mut changed => {}
                _ = sleep_until(self.clock.instant_at(warn_at)), if may_warn => {}
                _ = sleep_until(self.clock.instant_at(expires_at)) => {}
            }
        }
    }

    /// Defence in depth: is the grant still live right now? Called before each new query or
    /// channel.
    pub fn is_live(&self) -> bool {
        self.lapsed().is_none()
    }

    /// Why the session must close right now, if it must (killed, revoked, expired).
    pub fn lapsed(&self) -> Option<CloseReason> {
        self.close_reason(self.clock.now())
    }

    /// [`Lease::is_live`] at a `now` the caller already read (saves a clock read).
    pub(crate) fn is_live_at(&self, now: DateTime<Utc>) -> bool {
        self.close_reason(now).is_none()
    }
}

impl Lease {
    /// A cheap, shareable liveness check for code running beside the session task (a relay
    /// direction), answering without a round trip to the task that owns the lease.
    pub fn probe(&self) -> LiveProbe {
        LiveProbe {
            entry: self.entry.clone(),
            clock: self.clock,
        }
    }
}

/// See [`Lease::probe`]: live while the session is not killed, its grant neither revoked
/// nor lapsed, and its deadline not reached. A few atomic loads and a clock read.
#[derive(Debug, Clone)]
pub struct LiveProbe {
    entry: Arc<SessionEntry>,
    clock: Clock,
}

impl LiveProbe {
    pub fn is_live(&self) -> bool {
        lapse(&self.entry, self.clock.now()).is_none()
    }
}

/// Why a session must close at `now`, if it must: killed, grant closed, or deadline passed.
fn lapse(entry: &SessionEntry, now: DateTime<Utc>) -> Option<CloseReason> {
    let g = &entry.grant;
    entry
        .closed()
        .or_else(|| g.closed())
        .or_else(|| (!g.is_live(now)).then_some(CloseReason::GrantExpired))
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.registry.remove(self.entry.seq);
    }
}
