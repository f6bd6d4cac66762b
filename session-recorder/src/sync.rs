//! The fsync thread of the writer: it makes written records durable while the writer goes on
//! writing the next batch, and acknowledges strict-mode appends once a sync covers them.
//!
//! Pipelining the fsync is what makes group commit pay: while one fsync runs, the queue
//! fills, so the next write carries a large batch instead of waiting behind the disk.
//!
//! With nobody waiting on a sync (batched mode: appends are done once written), syncs are
//! paced: at most one per [`SYNC_INTERVAL`]. Written records already survive a crash of the
//! gateway; the interval bounds what a crash of the machine itself could take, and it keeps
//! a busy gateway from paying an fsync (and a journal commit) per millisecond batch, CPU that
//! comes out of the cores the sessions and their targets share. A strict append is never
//! paced: the thread syncs for it at once.
//!
//! After each sync it moves the log's signed head (`head.rs`) to the last record synced,
//! before acknowledging strict appends: an append reported durable is vouched for.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::AuditError;
use crate::head::HeadFile;
use crate::health::Health;
use crate::record::Hash;
use crate::writer::Reply;

/// With no strict append waiting, the fsync thread starts at most one sync per interval.
pub(crate) const SYNC_INTERVAL: Duration = Duration::from_millis(10);

#[derive(Debug)]
struct State {
    /// The open segment; earlier segments were synced when they were sealed.
    file: Arc<File>,
    /// Last seq fully written to `file`, and its hash.
    written: u64,
    written_hash: Hash,
    /// Last seq known durable.
    synced: u64,
    /// Strict appends waiting for a sync, in seq order.
    waiters: VecDeque<(u64, Reply)>,
    failed: Option<String>,
    stop: bool,
    /// The fsync thread is waiting for work; when it is not, it looks at `written` again
    /// after its current sync, so a writer need not wake it (a futex syscall per batch).
    idle: bool,
    /// The fsync thread is waiting out the pacing interval with records to sync: only a
    /// strict waiter (or stop) needs to wake it early.
    pacing: bool,
    /// Syncs started so far (what the pacing tests count).
    #[cfg(test)]
    syncs: u64,
}

/// Shared between the writer and the fsync thread.
#[derive(Debug)]
pub(crate) struct Syncer {
    state: Mutex<State>,
    /// Written by the fsync thread after its syncs and by the writer after its own.
    head: Mutex<HeadFile>,
    cv: Condvar,
    healthy: Arc<Health>,
    /// [`SYNC_INTERVAL`], except in tests.
    interval: Duration,
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
    /// Starts the fsync thread for `file`, whose records up to `synced` (with hash
    /// `synced_hash`, which `head` already vouches for) are durable.
    pub(crate) fn start(
        file: Arc<File>,
        synced: u64,
        synced_hash: Hash,
        head: HeadFile,
        healthy: Arc<Health>,
    ) -> std::io::Result<Arc<Syncer>> {
        Syncer::start_paced(file, synced, synced_hash, head, healthy, SYNC_INTERVAL)
    }

    fn start_paced(
        file: Arc<File>,
        synced: u64,
        synced_hash: Hash,
        head: HeadFile,
        healthy: Arc<Health>,
        interval: Duration,
    ) -> std::io::Result<Arc<Syncer>> {
        let s = Arc::new(Syncer {
            head: Mutex::new(head),
            state: Mutex::new(State {
                file,
                written: synced,
                written_hash: synced_hash,
                synced,
                waiters: VecDeque::new(),
                failed: None,
                stop: false,
                idle: false,
                pacing: false,
                #[cfg(test)]
                syncs: 0,
            }),
            cv: Condvar::new(),
            healthy,
            interval,
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

    /// Records up to `seq` (the last with hash `hash`) are written; strict `waiters` are
    /// acknowledged once synced.
    pub(crate) fn written(&self, seq: u64, hash: Hash, waiters: Vec<(u64, Reply)>) {
        let wake = {
            let mut st = self.lock();
            if seq > st.written {
                st.written = seq;
                st.written_hash = hash;
            }
            st.waiters.extend(waiters);
            st.ack_synced();
            st.idle || (st.pacing && !st.waiters.is_empty())
        };
        // Notified after the lock is released, so the woken thread does not block on it
        // straight away (and this one need not wake it a second time to hand it over).
        if wake {
            self.cv.notify_one();
        }
    }

    /// Moves the head to `seq`, durable, whose hash is `hash`.
    fn vouch(&self, seq: u64, hash: &Hash) -> std::io::Result<()> {
        self.head
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .advance(seq, hash)
    }

    /// Everything up to `seq` (the last with hash `hash`) was synced by the writer itself
    /// (rotation, close); new records now go to `file`.
    pub(crate) fn synced_by_writer(
        &self,
        seq: u64,
        hash: Hash,
        file: Option<Arc<File>>,
    ) -> std::io::Result<()> {
        let vouched = self.vouch(seq, &hash);
        let mut st = self.lock();
        if seq > st.written {
            st.written = seq;
            st.written_hash = hash;
        }
        if let Some(f) = file {
            st.file = f;
        }
        if vouched.is_ok() {
            st.synced = st.synced.max(seq);
            st.ack_synced();
        }
        vouched
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
        // When the last sync started: the next paced one is due an interval later.
        let mut last: Option<Instant> = None;
        loop {
            if st.stop {
                return;
            }
            if st.written <= st.synced {
                st.idle = true;
                st = self.cv.wait(st).unwrap_or_else(|p| p.into_inner());
                st.idle = false;
                continue;
            }
            // Nobody waits for these records: let more of them gather, up to the interval.
            let left =
                last.and_then(|t| (t + self.interval).checked_duration_since(Instant::now()));
            if let Some(left) = left.filter(|_| st.waiters.is_empty()) {
                st.pacing = true;
                st = self
                    .cv
                    .wait_timeout(st, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
                st.pacing = false;
                continue;
            }
            last = Some(Instant::now());
            #[cfg(test)]
            {
                st.syncs += 1;
            }
            let (target, hash, file) = (st.written, st.written_hash, st.file.clone());
            drop(st);
            let res = file
                .sync_data()
                .map_err(|e| format!("fsync failed: {e}"))
                .and_then(|()| {
                    self.vouch(target, &hash)
                        .map_err(|e| format!("writing the log's head failed: {e}"))
                });
            st = self.lock();
            if let Err(msg) = res {
                tracing::error!(error = %msg, "audit log sync failed; refusing further events");
                self.healthy.fail();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn syncer(interval: Duration) -> (tempfile::TempDir, Arc<Syncer>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = File::create(dir.path().join("seg")).expect("file");
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let head = HeadFile::open(dir.path(), key, 0, &[0; 32]).expect("head");
        let s = Syncer::start_paced(
            Arc::new(file),
            0,
            [0; 32],
            head,
            Arc::new(Health::new()),
            interval,
        )
        .expect("start");
        (dir, s)
    }

    /// Waits (up to a minute) until `f` holds of the state.
    fn until(s: &Syncer, f: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if f(&s.lock()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    /// With nobody waiting, writes arriving inside the interval share one later sync; a
    /// strict waiter is synced at once, interval or not.
    #[test]
    fn paces_unwaited_syncs_but_not_strict_ones() {
        let (_dir, s) = syncer(Duration::from_secs(3600));
        s.written(1, [1; 32], Vec::new());
        assert!(until(&s, |st| st.synced == 1), "first write is synced");
        for seq in 2..50 {
            s.written(seq, [0; 32], Vec::new());
        }
        assert!(
            until(&s, |st| st.pacing),
            "the thread waits out the interval"
        );
        assert_eq!(s.lock().syncs, 1, "no sync inside the interval");
        assert_eq!(s.lock().synced, 1);

        let (tx, mut rx) = tokio::sync::oneshot::channel();
        s.written(50, [50; 32], vec![(50, tx)]);
        assert!(until(&s, |st| st.synced == 50), "a waiter ends the pacing");
        assert_eq!(rx.try_recv().ok().and_then(|r| r.ok()), Some(50));
        assert_eq!(s.lock().syncs, 2);
        s.stop();
    }

    /// Past the interval, unwaited records are synced without anyone asking again.
    #[test]
    fn syncs_unwaited_records_after_the_interval() {
        let (_dir, s) = syncer(Duration::from_millis(20));
        s.written(1, [1; 32], Vec::new());
        assert!(until(&s, |st| st.synced == 1));
        s.written(2, [2; 32], Vec::new());
        assert!(
            until(&s, |st| st.synced == 2),
            "synced once the interval passed"
        );
        assert_eq!(s.lock().syncs, 2);
        s.stop();
    }
}
