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
use super::sessions::{KillNote, SessionCounters, SessionEntry, session_id};
use super::table::nanos;
use super::{CloseReason, LeaseEvent};

/// A permit to run one session under one grant. Dropping it deregisters the session.
///
/// Its names are read from the grant it shares rather than copied at connect, and its
/// session id is formatted only when asked for.
#[derive(Debug)]
pub struct Lease {
    entry: Arc<SessionEntry>,
    /// The entry's slot in its registry shard (the registry is the grant's).
    slot: usize,
    clock: Clock,
    warn_before: Duration,
    /// The deadline we already warned about; an extension past the warning window re-arms.
    warned_for: Option<DateTime<Utc>>,
    closed: Option<CloseReason>,
}

impl Lease {
    pub(crate) fn new(
        entry: Arc<SessionEntry>,
        slot: usize,
        clock: Clock,
        warn_before: Duration,
    ) -> Lease {
        Lease {
            entry,
            slot,
            clock,
            warn_before,
            warned_for: None,
            closed: None,
        }
    }

    /// The session's id, `s_` and 16 hex digits (SPEC §3), as `sessions list` shows it.
    pub fn session_id(&self) -> String {
        session_id(self.entry.seq)
    }

    /// The id of the grant the session runs under.
    pub fn grant_id(&self) -> &str {
        &self.entry.grant.id
    }

    pub fn user(&self) -> &str {
        self.entry.grant.user()
    }

    pub fn target(&self) -> &str {
        &self.entry.grant.target
    }

    pub fn role(&self) -> &str {
        &self.entry.grant.role
    }

    /// The session's byte counters, for the tasks relaying its bytes.
    pub fn counters(&self) -> SessionCounters {
        SessionCounters(self.entry.clone())
    }

    /// Who killed the session with `sessions kill`, and why; none unless it was killed.
    pub(crate) fn kill_note(&self) -> Option<&KillNote> {
        self.entry.kill_note()
    }

    /// Who killed the session, as its user is told: "an operator" (the operator's token, or
    /// no note), "its own user" (`sessions kill --as` by the session's user), or the name
    /// of whoever else did. The reason text is for the log only.
    pub(crate) fn killer(&self) -> &str {
        match self.kill_note() {
            Some(k) if k.by == self.entry.grant.user() => "its own user",
            Some(k) if k.by != "admin" => &k.by,
            _ => "an operator",
        }
    }

    /// The grant's current deadline (moves when the grant is extended).
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.entry.grant.expires_at()
    }

    /// Why this lease must close, if it must: kill signal, grant lapse, or deadline passed.
    /// `now` in nanoseconds since the epoch.
    fn close_reason(&self, now: i64) -> Option<CloseReason> {
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
            if let Some(r) = self.close_reason(nanos(now)) {
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

    /// The time left, if the `warn_before` warning for the grant's current deadline has
    /// already been given ([`LeaseEvent::Warn`]) and the session is still live: what a part
    /// of the session that starts only now (an SSH terminal channel) is owed, having missed
    /// the warning.
    pub fn warned_remaining(&self) -> Option<Duration> {
        let now = self.clock.now();
        let expires_at = self.entry.grant.expires_at();
        if self.warned_for != Some(expires_at) || !self.is_live() {
            return None;
        }
        Some((expires_at - now).to_std().unwrap_or_default())
    }

    /// Defence in depth: is the grant still live right now? Called before each new query or
    /// channel.
    pub fn is_live(&self) -> bool {
        self.lapsed().is_none()
    }

    /// Why the session must close right now, if it must (killed, revoked, expired).
    pub fn lapsed(&self) -> Option<CloseReason> {
        self.close_reason(self.clock.now_nanos())
    }

    /// [`Lease::is_live`] at a `now` the caller already read (saves a clock read), in
    /// nanoseconds since the epoch.
    pub(crate) fn is_live_at(&self, now: i64) -> bool {
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
        lapse(&self.entry, self.clock.now_nanos()).is_none()
    }
}

/// Why a session must close at `now` (nanoseconds since the epoch), if it must: killed,
/// grant closed, or deadline passed.
fn lapse(entry: &SessionEntry, now: i64) -> Option<CloseReason> {
    let g = &entry.grant;
    entry
        .closed()
        .or_else(|| g.closed())
        .or_else(|| (!g.is_live_at(now)).then_some(CloseReason::GrantExpired))
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.entry.grant.sessions.remove(self.entry.seq, self.slot);
    }
}
