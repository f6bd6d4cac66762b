//! The one clock grants are judged by: wall time anchored once, then advanced by tokio's
//! monotonic clock.
//!
//! Deadlines are wall times (they are stored and printed), but timers are tokio instants.
//! Deriving "now" from tokio's clock keeps the two consistent, keeps expiry immune to the
//! wall clock stepping backwards, and lets `start_paused` tests drive expiry deterministically.
//! In production the wall clock is also consulted so that time lost while the machine was
//! suspended (which the monotonic clock does not count) still expires grants.

use std::time::SystemTime;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_instant: Instant,
    base_wall: DateTime<Utc>,
    /// `base_wall` in nanoseconds since the epoch, for [`Clock::now_nanos`].
    base_nanos: i64,
    follow_wall: bool,
}

impl Clock {
    /// A clock anchored now; `follow_wall` is false only in tests with paused time.
    pub(crate) fn new(follow_wall: bool) -> Clock {
        let base_wall = Utc::now();
        Clock {
            base_instant: Instant::now(),
            base_wall,
            base_nanos: base_wall.timestamp_nanos_opt().unwrap_or(i64::MAX),
            follow_wall,
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.now_nanos())
    }

    /// [`Clock::now`] in nanoseconds since the epoch: the form deadlines are compared in,
    /// without the calendar arithmetic a `DateTime` costs (this is read on every connect
    /// and before every relayed write).
    pub(crate) fn now_nanos(&self) -> i64 {
        let since = Instant::now() - self.base_instant;
        let mono = self
            .base_nanos
            .saturating_add(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX));
        if !self.follow_wall {
            return mono;
        }
        let wall = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        mono.max(wall)
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
