//! [`Lease`]: one session's permit under one grant, and the events it must act on.
//!
//! The lease watches two signals: its grant (deadline moves on extension; closed on expiry or
//! revoke) and its own session handle (closed on `sessions kill` and shutdown). It also sleeps
//! until the deadline itself, so a session closes on time even if the scheduler were late.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio::time::sleep_until;

use super::clock::Clock;
use super::sessions::{Registry, SessionEntry};
use super::table::{GrantState, LiveGrant};
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
    grant: Arc<LiveGrant>,
    grant_rx: watch::Receiver<GrantState>,
    entry: Arc<SessionEntry>,
    close_rx: watch::Receiver<Option<CloseReason>>,
    registry: Arc<Registry>,
    clock: Clock,
    warn_before: Duration,
    /// The deadline we already warned about; an extension past the warning window re-arms.
    warned_for: Option<DateTime<Utc>>,
    closed: Option<CloseReason>,
}

impl Lease {
    pub(crate) fn new(
        grant: Arc<LiveGrant>,
        entry: Arc<SessionEntry>,
        registry: Arc<Registry>,
        clock: Clock,
        warn_before: Duration,
    ) -> Lease {
        Lease {
            session_id: entry.id.clone(),
            grant_id: grant.id.clone(),
            user: grant.user.clone(),
            target: grant.target.clone(),
            role: grant.role.clone(),
            counters: entry.counters.clone(),
            grant_rx: grant.state.subscribe(),
            close_rx: entry.close.subscribe(),
            grant,
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
        self.grant.expires_at()
    }

    /// Why this lease must close, if it must: kill signal, grant lapse, or deadline passed.
    fn close_reason(&self) -> Option<CloseReason> {
        if let Some(r) = self.closed {
            return Some(r);
        }
        if let Some(r) = *self.entry.close.borrow() {
            return Some(r);
        }
        let st = *self.grant.state.borrow();
        if let Some(r) = st.closed {
            return Some(r);
        }
        (self.clock.now() >= st.expires_at).then_some(CloseReason::GrantExpired)
    }

    /// Waits for the next thing the session must act on.
    ///
    /// # Cancellation safety
    /// Cancellation safe: no event is lost if the future is dropped before it resolves. State
    /// changes only on the path that returns, and `watch::Receiver::changed` is itself
    /// cancellation safe.
    pub async fn next_event(&mut self) -> LeaseEvent {
        loop {
            if let Some(r) = self.close_reason() {
                self.closed = Some(r);
                return LeaseEvent::Close(r);
            }
            // Mark both signals seen before reading them, so a change after this point wakes us.
            self.close_rx.borrow_and_update();
            let st = *self.grant_rx.borrow_and_update();
            let now = self.clock.now();
            let warn_at = st.expires_at - self.warn_before;
            let may_warn = self.warned_for != Some(st.expires_at);
            if may_warn && now >= warn_at {
                self.warned_for = Some(st.expires_at);
                let remaining = (st.expires_at - now).to_std().unwrap_or_default();
                return LeaseEvent::Warn { remaining };
            }
            tokio::select! {
                // Senders live as long as `self.entry`/`self.grant`, so these never error.
                _ = self.close_rx.changed() => {}
                _ = self.grant_rx.changed() => {}
                _ = sleep_until(self.clock.instant_at(warn_at)), if may_warn => {}
                _ = sleep_until(self.clock.instant_at(st.expires_at)) => {}
            }
        }
    }

    /// Defence in depth: is the grant still live right now? Called before each new query or
    /// channel.
    pub fn is_live(&self) -> bool {
        self.close_reason().is_none()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.registry.remove(&self.session_id);
    }
}
