//! The one clock grants are judged by: wall time anchored once, then advanced by a clock
//! that never steps.
//!
//! Deadlines are wall times (they are stored and printed), but timers are tokio instants.
//! Advancing "now" from an anchor keeps expiry immune to the wall clock being stepped either
//! way. In production the clock advanced by is `CLOCK_BOOTTIME`: monotonic like tokio's
//! clock, but it also counts time the machine spent suspended, so a grant whose deadline
//! passed during a suspend has expired on resume. One read of it is all a connect or a
//! relayed query pays. Tests with paused time advance by tokio's clock instead, so that
//! `start_paused` drives expiry deterministically.

use chrono::{DateTime, Utc};
use nix::time::{ClockId, clock_gettime};
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    base_instant: Instant,
    base_wall: DateTime<Utc>,
    /// `base_wall` in nanoseconds since the epoch, for [`Clock::now_nanos`].
    base_nanos: i64,
    /// `CLOCK_BOOTTIME` at the anchor, in nanoseconds; `None` when following tokio's clock.
    base_boot: Option<i64>,
}

/// `CLOCK_BOOTTIME` in nanoseconds, or `None` if the kernel will not say.
fn boottime() -> Option<i64> {
    let t = clock_gettime(ClockId::CLOCK_BOOTTIME).ok()?;
    t.tv_sec()
        .checked_mul(1_000_000_000)?
        .checked_add(t.tv_nsec())
}

impl Clock {
    /// A clock anchored now; `boot` is false only in tests with paused time, and also falls
    /// back to tokio's clock where `CLOCK_BOOTTIME` cannot be read.
    pub(crate) fn new(boot: bool) -> Clock {
        let base_wall = Utc::now();
        Clock {
            base_instant: Instant::now(),
            base_wall,
            base_nanos: base_wall.timestamp_nanos_opt().unwrap_or(i64::MAX),
            base_boot: boot.then(boottime).flatten(),
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_nanos(self.now_nanos())
    }

    /// [`Clock::now`] in nanoseconds since the epoch: the form deadlines are compared in,
    /// without the calendar arithmetic a `DateTime` costs (this is read on every connect
    /// and before every relayed write).
    pub(crate) fn now_nanos(&self) -> i64 {
        let since = match self.base_boot.zip(boottime()) {
            Some((base, now)) => now.saturating_sub(base),
            None => {
                i64::try_from((Instant::now() - self.base_instant).as_nanos()).unwrap_or(i64::MAX)
            }
        };
        self.base_nanos.saturating_add(since)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Off paused time, the clock reads `CLOCK_BOOTTIME`: it starts at the wall time and
    /// never goes back.
    #[test]
    fn boot_clock_tracks_the_wall_and_never_goes_back() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let _enter = rt.enter();
        let clock = Clock::new(true);
        assert!(
            clock.base_boot.is_some(),
            "CLOCK_BOOTTIME is readable on Linux"
        );
        let mut last = clock.now_nanos();
        for _ in 0..1000 {
            let now = clock.now_nanos();
            assert!(now >= last);
            last = now;
        }
        let wall = Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
        assert!((wall - last).abs() < 1_000_000_000, "{wall} vs {last}");
    }
}
