//! The one clock grants are judged by: wall time anchored once, then advanced by tokio's
//! monotonic clock.
//!
//! Deadlines are wall times (they are stored and printed), but timers are tokio instants.
//! Deriving "now" from tokio's clock keeps the two consistent, keeps expiry immune to the
//! wall clock stepping backwards, and lets `start_paused` tests drive expiry deterministically.
//! In production the wall clock is also consulted so that time lost while the machine was
//! suspended (which the monotonic clock does not count) still expires grants.

use chrono::{DateTime, Utc};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_instant: Instant,
    base_wall: DateTime<Utc>,
    follow_wall: bool,
}

impl Clock {
    /// A clock anchored now; `follow_wall` is false only in tests with paused time.
    pub(crate) fn new(follow_wall: bool) -> Clock {
        Clock {
            base_instant: Instant::now(),
            base_wall: Utc::now(),
            follow_wall,
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        let mono = self.base_wall + (Instant::now() - self.base_instant);
        if self.follow_wall {
            mono.max(Utc::now())
        } else {
            mono
        }
    }

    /// The tokio instant at which the wall time `t` is reached.
    pub(crate) fn instant_at(&self, t: DateTime<Utc>) -> Instant {
        match (t - self.base_wall).to_std() {
            Ok(after) => self.base_instant + after,
            // Already in the past relative to the anchor: due immediately.
            Err(_) => self.base_instant,
        }
    }
}
