//! The fsync thread of the writer: it makes written records durable while the writer goes on
//! writing the next batch, and acknowledges strict-mode appends once a sync covers them.
//!
//! Pipelining the fsync is what makes group commit pay: while one fsync runs, the queue
//! fills, so the next write carries a large batch instead of waiting behind the disk.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::AuditError;
use crate::writer::Reply;

#[derive(Debug)]
struct State {
    /// The open segment; earlier segments were synced when they were sealed.
    file: Arc<File>,
    /// Last seq fully written to `file`.
    written: u64,
    /// Last seq known durable.
    synced: u64,
    /// Strict appends waiting for a sync, in seq order.
    waiters: VecDeque<(u64, Reply)>,
    failed: Option<String>,
    stop: bool,
    /// The fsync thread is waiting for work; when it is not, it looks at `written` again
    /// after its current sync, so a writer need not wake it (a futex syscall per batch).
    idle: bool,
}

/// Shared between the writer and the fsync thread.
#[derive(Debug)]
pub(crate) struct Syncer {
    state: Mutex<State>,
    cv: Condvar,
    healthy: Arc<AtomicBool>,
}

impl State {
    fn ack_synced(&mut self) {
        while self
            .waiters
            .front()
            .is_some_and(|(seq, _)| *seq <= self.synced)
        {
            if let Some((seq, r)) = self.waiters.pop_front() {
                let _ = r.send(Ok(seq));
            }
        }
    }
}

impl Syncer {
    /// Starts the fsync thread for `file`, whose records up to `synced` are durable.
    pub(crate) fn start(
        file: Arc<File>,
        synced: u64,
        healthy: Arc<AtomicBool>,
    ) -> std::io::Result<Arc<Syncer>> {
        let s = Arc::new(Syncer {
            state: Mutex::new(State {
                file,
                written: synced,
                synced,
                waiters: VecDeque::new(),
                failed: None,
                stop: false,
                idle: false,
            }),
            cv: Condvar::new(),
            healthy,
        });
        let t = s.clone();
        std::thread::Builder::new()
            .name("audit-fsync".into())
            .spawn(move || t.run())?;
        Ok(s)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the counters half-updated in a way
        // that matters more than stopping, so a poisoned lock is simply taken over.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The failure that stopped syncing, if any.
    pub(crate) fn failed(&self) -> Option<String> {
        self.lock().failed.clone()
    }

    /// Records up to `seq` are written; strict `waiters` are acknowledged once synced.
    pub(crate) fn written(&self, seq: u64, waiters: Vec<(u64, Reply)>) {
        let idle = {
            let mut st = self.lock();
            st.written = st.written.max(seq);
            st.waiters.extend(waiters);
            st.ack_synced();
            st.idle
        };
        // Notified after the lock is released, so the woken thread does not block on it
        // straight away (and this one need not wake it a second time to hand it over).
        if idle {
            self.cv.notify_one();
        }
    }

    /// Everything up to `seq` was synced by the writer itself (rotation, close); new records
    /// now go to `file`.
    pub(crate) fn synced_by_writer(&self, seq: u64, file: Option<Arc<File>>) {
        let mut st = self.lock();
        st.synced = st.synced.max(seq);
        st.written = st.written.max(seq);
        if let Some(f) = file {
            st.file = f;
        }
        st.ack_synced();
    }

    /// Stops the thread; waiters still pending are told the log stopped.
    pub(crate) fn stop(&self) {
        let mut st = self.lock();
        st.stop = true;
        for (_, r) in st.waiters.drain(..) {
            let _ = r.send(Err(AuditError::Unavailable(
                "audit log stopped before the event was synced".into(),
            )));
        }
        self.cv.notify_one();
    }

    fn run(&self) {
        let mut st = self.lock();
        loop {
            while !st.stop && st.written <= st.synced {
                st.idle = true;
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                st.idle = false;
            }
            if st.stop {
                return;
            }
            let (target, file) = (st.written, st.file.clone());
            drop(st);
            let res = file.sync_data();
            st = self.lock();
            if let Err(e) = res {
                let msg = format!("fsync failed: {e}");
                tracing::error!(error = %e, "audit log fsync failed; refusing further events");
                self.healthy.store(false, Ordering::SeqCst);
                for (_, r) in st.waiters.drain(..) {
                    let _ = r.send(Err(AuditError::Unavailable(msg.clone())));
                }
                st.failed = Some(msg);
                return;
            }
            st.synced = st.synced.max(target);
            st.ack_synced();
        }
    }
}
