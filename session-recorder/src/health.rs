//! Whether the log still takes events, and a way to be told the moment it stops taking them
//! because it failed (as opposed to being closed on purpose).

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

/// Shared by the handles, the writer thread and the fsync thread.
#[derive(Debug)]
pub(crate) struct Health {
    ok: AtomicBool,
    /// Set to true once, on the first failure.
    failed: watch::Sender<bool>,
}

impl Health {
    pub(crate) fn new() -> Health {
        Health {
            ok: AtomicBool::new(true),
            failed: watch::Sender::new(false),
        }
    }

    pub(crate) fn is_ok(&self) -> bool {
        self.ok.load(Ordering::SeqCst)
    }

    /// A write or sync failed: refuse events from now on, and wake whoever waits for a
    /// failure. Unhealthy first, so an appender that hears of the failure sees it reflected.
    pub(crate) fn fail(&self) {
        self.ok.store(false, Ordering::SeqCst);
        self.failed.send_replace(true);
    }

    /// Closed on purpose: refuse events from now on; nobody is told of a failure.
    pub(crate) fn close(&self) {
        self.ok.store(false, Ordering::SeqCst);
    }

    /// Resolves with true once the log has failed, or false once every holder of this
    /// health is gone first.
    pub(crate) fn failure(&self) -> impl Future<Output = bool> + Send + 'static {
        let mut rx = self.failed.subscribe();
        async move { rx.wait_for(|f| *f).await.is_ok() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_failure_is_told_and_a_close_is_not() {
        let h = Health::new();
        let told = h.failure();
        assert!(h.is_ok());
        h.fail();
        assert!(!h.is_ok());
        assert!(told.await, "a waiter from before the failure hears of it");
        assert!(h.failure().await, "so does one from after it");

        let h = Health::new();
        let told = h.failure();
        h.close();
        assert!(!h.is_ok());
        drop(h);
        assert!(!told.await, "a closed log that goes away did not fail");
    }
}
