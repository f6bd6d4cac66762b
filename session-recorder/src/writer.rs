//! The single writer: one thread owning the open segment, fed by a bounded queue, committing
//! in groups (one write per batch; the fsync thread in `sync.rs` syncs behind it), rotating
//! and sealing segments.
//!
//! It runs on its own OS thread rather than a tokio task because every step is blocking file
//! I/O; appenders talk to it through a bounded tokio channel, so a full queue back-pressures
//! them instead of growing memory.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::head::HeadFile;
use crate::health::Health;
use crate::record::{self, Chain};
use crate::recover::Resume;
use crate::seal::Seal;
use crate::segment::SegmentFile;
use crate::sync::Syncer;
use crate::{AuditError, Durability, Payload, budget_cost};

/// The most events committed in one write.
const MAX_BATCH: usize = 4096;
/// In batched mode, how long the writer lets fire-and-forget events gather before writing
/// them, once the first has arrived. Without it a busy gateway wakes the writer (and the
/// fsync thread) once per event; with it, about once per linger, whatever the event rate.
const LINGER: Duration = Duration::from_millis(1);

pub(crate) type Reply = oneshot::Sender<Result<u64, AuditError>>;

/// A request to the writer.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// An event, with the appender waiting for its seq, or `None` for a submit that does
    /// not wait (a failure then shows as the log turning unhealthy).
    Append(Payload, Option<Reply>),
    Close(oneshot::Sender<Result<(), AuditError>>),
}

pub(crate) struct Writer {
    dir: PathBuf,
    key: SigningKey,
    durability: Durability,
    max_bytes: u64,
    max_age: Duration,
    seg: SegmentFile,
    file: Arc<File>,
    len: u64,
    hasher: Sha256,
    first_seq: u64,
    opened: Instant,
    chain: Chain,
    buf: Vec<u8>,
    /// Shared with every handle; failed before any appender hears of a failure.
    healthy: Arc<Health>,
    syncer: Arc<Syncer>,
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn create_segment(dir: &Path, seg: &SegmentFile) -> std::io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .open(&seg.path)?;
    // The new file's directory entry must be durable before records in it are acknowledged.
    sync_dir(dir)?;
    Ok(f)
}

fn unavailable(e: &std::io::Error) -> AuditError {
    AuditError::Unavailable(format!("write failed: {e}"))
}

impl Writer {
    pub(crate) fn new(
        dir: &Path,
        key: SigningKey,
        opts: &crate::Options,
        resume: Resume,
        healthy: Arc<Health>,
    ) -> std::io::Result<Writer> {
        let (seg, file, len, hasher, chain, first_seq) = match resume {
            Resume::New { index, chain } => {
                let seg = SegmentFile::at(dir, index);
                let file = create_segment(dir, &seg)?;
                (seg, file, 0, Sha256::new(), chain, chain.last_seq + 1)
            }
            Resume::Continue {
                segment,
                chain,
                first_seq,
                len,
                hasher,
                ..
            } => {
                let file = std::fs::OpenOptions::new()
                    .append(true)
                    .open(&segment.path)?;
                // The head is about to vouch for these records: a gateway that crashed may
                // have left them unsynced.
                file.sync_data()?;
                (segment, file, len, hasher, chain, first_seq)
            }
        };
        let file = Arc::new(file);
        let head = HeadFile::open(dir, key.clone(), chain.last_seq, &chain.last_hash)?;
        let syncer = Syncer::start(
            file.clone(),
            chain.last_seq,
            chain.last_hash,
            head,
            healthy.clone(),
        )?;
        Ok(Writer {
            syncer,
            dir: dir.to_path_buf(),
            key,
            durability: opts.durability,
            max_bytes: opts.segment_max_bytes,
            max_age: opts.segment_max_age,
            seg,
            file,
            len,
            hasher,
            first_seq,
            opened: Instant::now(),
            chain,
            buf: Vec::with_capacity(1 << 16),
            healthy,
        })
    }

    fn has_records(&self) -> bool {
        self.chain.last_seq >= self.first_seq
    }

    fn rotate_due(&self) -> bool {
        self.has_records()
            && (self.len + self.buf.len() as u64 >= self.max_bytes
                || self.opened.elapsed() >= self.max_age)
    }

    fn flush_buf(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            (&*self.file).write_all(&self.buf)?;
            self.hasher.update(&self.buf);
            self.len += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    fn seal(&self) -> std::io::Result<()> {
        let digest: [u8; 32] = self.hasher.clone().finalize().into();
        let seal = Seal::sign(
            &self.key,
            &self.seg.name(),
            &digest,
            self.first_seq,
            self.chain.last_seq,
            &self.chain.last_hash,
        );
        let tmp = self.seg.seal_path.with_extension("seal.tmp");
        let mut f = File::create(&tmp)?;
        f.write_all(&seal.to_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.seg.seal_path)?;
        sync_dir(&self.dir)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        self.flush_buf()?;
        self.file.sync_data()?;
        self.seal()?;
        let next = SegmentFile::at(&self.dir, self.seg.index + 1);
        self.file = Arc::new(create_segment(&self.dir, &next)?);
        self.syncer.synced_by_writer(
            self.chain.last_seq,
            self.chain.last_hash,
            Some(self.file.clone()),
        )?;
        self.seg = next;
        self.len = 0;
        self.hasher = Sha256::new();
        self.first_seq = self.chain.last_seq + 1;
        self.opened = Instant::now();
        Ok(())
    }

    /// Writes a batch; replies to each appender per the durability mode. `appends` is left
    /// empty with its capacity kept, so the writer reuses one batch buffer.
    pub(crate) fn commit(
        &mut self,
        appends: &mut Vec<(Payload, Option<Reply>)>,
    ) -> std::io::Result<()> {
        let mut replies: Vec<(u64, Reply)> = Vec::with_capacity(appends.len());
        let mut rest = appends.drain(..);
        let mut result = Ok(());
        for (event, reply) in rest.by_ref() {
            if self.rotate_due()
                && let Err(e) = self.rotate()
            {
                replies.extend(reply.map(|r| (0, r)));
                result = Err(e);
                break;
            }
            let seq = self.chain.last_seq + 1;
            let prev = &self.chain.last_hash;
            // Each record is stamped as it is written, not once per batch: records of one
            // batch keep their order in time, and a reviewer sorting by `ts` sees no ties.
            let now = record::format_ts(chrono::Utc::now());
            let hash = match &event {
                Payload::Map(ev) => record::encode(seq, &now, prev, &ev.0, &mut self.buf),
                Payload::Json(ev) => {
                    record::encode_json(seq, &now, prev, ev.as_bytes(), &mut self.buf)
                }
            };
            self.chain = Chain {
                last_seq: seq,
                last_hash: hash,
            };
            replies.extend(reply.map(|r| (seq, r)));
        }
        if result.is_ok() {
            result = self.flush_buf();
        }
        if let Err(e) = result {
            // Unhealthy first, so an appender that hears of the failure sees it reflected.
            self.healthy.fail();
            for (_, r) in replies
                .into_iter()
                .chain(rest.filter_map(|(_, r)| r.map(|r| (0, r))))
            {
                let _ = r.send(Err(unavailable(&e)));
            }
            return Err(e);
        }
        if let Some(msg) = self.syncer.failed() {
            let e = std::io::Error::other(msg);
            for (_, r) in replies {
                let _ = r.send(Err(unavailable(&e)));
            }
            return Err(e);
        }
        // Batched appends are done once written; strict ones wait for the fsync thread.
        if self.durability == Durability::Batched {
            for (seq, r) in replies.drain(..) {
                let _ = r.send(Ok(seq));
            }
        }
        self.syncer
            .written(self.chain.last_seq, self.chain.last_hash, replies);
        Ok(())
    }

    /// Seals the open segment (or removes it when empty) at shutdown.
    fn finish(&mut self) -> std::io::Result<()> {
        self.flush_buf()?;
        self.file.sync_data()?;
        self.syncer
            .synced_by_writer(self.chain.last_seq, self.chain.last_hash, None)?;
        if self.has_records() {
            self.seal()
        } else {
            std::fs::remove_file(&self.seg.path)?;
            sync_dir(&self.dir)
        }
    }

    /// The writer loop; returns when closed or when every handle is gone. Each large event's
    /// share of `budget` (see `budget_cost`) is given back once it is written or refused.
    pub(crate) fn run(mut self, mut rx: mpsc::Receiver<Cmd>, budget: &Semaphore) {
        let healthy = self.healthy.clone();
        let mut failed: Option<String> = None;
        let mut batch = Vec::with_capacity(MAX_BATCH);
        // Under a steady load the writer does not park on the queue between batches. A
        // parked writer is woken by the next submit: a futex syscall in the session's own
        // thread (on a virtual machine also an interrupt to the core the writer sleeps on),
        // once per batch, on the path between one statement's answer and the next. So after
        // a batched-mode commit it sleeps one linger and looks again, and parks only when
        // that look finds nothing. No event waits longer than one linger, as before; the
        // cost is that an `append` that waits for its seq, arriving during that look, now
        // waits up to one linger too instead of being written at once.
        let mut polled: Option<Cmd> = None;
        loop {
            let (first, mut lingered) = match polled.take() {
                // It gathered for a whole linger already.
                Some(cmd) => (cmd, true),
                None => match rx.blocking_recv() {
                    Some(cmd) => (cmd, false),
                    None => break,
                },
            };
            let mut close = None;
            let mut next = Some(first);
            // Someone is waiting for an event of this batch: write it without lingering.
            let mut waited_for = false;
            loop {
                while let Some(cmd) = next.take() {
                    match cmd {
                        Cmd::Append(ev, reply) if close.is_none() => {
                            waited_for |= reply.is_some();
                            batch.push((ev, reply));
                        }
                        Cmd::Append(ev, reply) => {
                            budget.add_permits(budget_cost(&ev) as usize);
                            if let Some(r) = reply {
                                let _ =
                                    r.send(Err(AuditError::Unavailable("audit log closed".into())));
                            }
                        }
                        Cmd::Close(reply) => close = Some(reply),
                    }
                    if batch.len() < MAX_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                let linger = self.durability == Durability::Batched
                    && !lingered
                    && !waited_for
                    && close.is_none()
                    && failed.is_none()
                    && batch.len() < MAX_BATCH;
                if !linger {
                    break;
                }
                lingered = true;
                std::thread::sleep(LINGER);
                next = rx.try_recv().ok();
            }
            // A full batch means more are queued: the next one is taken at once.
            let full = batch.len() >= MAX_BATCH;
            let cost: usize = batch.iter().map(|(ev, _)| budget_cost(ev) as usize).sum();
            if let Some(msg) = &failed {
                for (_, reply) in batch.drain(..) {
                    if let Some(r) = reply {
                        let _ = r.send(Err(AuditError::Unavailable(msg.clone())));
                    }
                }
            } else if !batch.is_empty()
                && let Err(e) = self.commit(&mut batch)
            {
                tracing::error!(error = %e, segment = %self.seg.path.display(), "audit log write failed; refusing further events");
                healthy.fail();
                failed = Some(format!("write failed: {e}"));
            }
            budget.add_permits(cost);
            if let Some(reply) = close {
                healthy.close();
                let res = match &failed {
                    Some(msg) => Err(AuditError::Unavailable(msg.clone())),
                    None => self
                        .finish()
                        .map_err(|e| AuditError::Unavailable(format!("sealing failed: {e}"))),
                };
                self.syncer.stop();
                // Anyone still waiting for budget hears the log is closed.
                budget.close();
                let _ = reply.send(res);
                return;
            }
            if self.durability == Durability::Batched && failed.is_none() {
                if !full {
                    std::thread::sleep(LINGER);
                }
                polled = rx.try_recv().ok();
            }
        }
        budget.close();
        // Every handle dropped without close(): make what was written durable; the segment
        // stays open and is resumed at the next start.
        if self.file.sync_data().is_ok() {
            // Best effort: nobody is left to tell, and the next open checks the log anyway.
            let _ = self
                .syncer
                .synced_by_writer(self.chain.last_seq, self.chain.last_hash, None);
        }
        self.syncer.stop();
    }
}
