//! The audit log (hash chain, segments, seals, verify) and terminal recordings.
//!
//! CONTRACT (the gateway codes against exactly this): `AuditLog::open` starts the single
//! writer; `AuditLog::append` queues one event and returns its `seq` once it is durable per
//! the configured durability; `AuditLog::submit` queues one event in the same order without
//! waiting for it (hot paths in batched mode).
//!
//! Module map: [`record`] is the pure chain core (canonical bytes, hash, line checks);
//! [`seal`] signs and checks segment seals; [`head`] signs where the log ends, so removed
//! final records are caught; [`segment`] names and lists segment files;
//! [`verify`] checks a whole log read-only; [`recover`] repairs a torn tail at open, keeping
//! the cut bytes in a side file; `writer` is the single writer thread, `sync` its fsync
//! thread and `health` whether the log still takes events (and who waits to hear it failed);
//! [`read`] iterates and filters records; [`asciicast`] writes terminal recordings; [`key`]
//! keeps the seal key.
#![forbid(unsafe_code)]

pub mod asciicast;
pub mod head;
mod health;
pub mod key;
pub mod read;
pub mod record;
pub mod recover;
pub mod seal;
pub mod segment;
mod sync;
pub mod verify;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub use asciicast::Recording;
pub use ed25519_dalek::VerifyingKey;
pub use read::{Filter, Records, Tail, records};
pub use record::Record;
pub use verify::{Summary, VerifyError, verify};

use writer::{Cmd, Writer};

/// What a field cut short to its cap ends with.
pub const TRUNCATED: &str = "…[truncated]";

/// How an event keeps bytes it must keep exactly beside their lossy text (SQL or an exec
/// command that is not UTF-8: `sql_bytes`, `command_bytes`): standard base64.
pub fn bytes_field(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `s` cut to at most `max` bytes on a character boundary and marked [`TRUNCATED`], or `s`
/// itself when it fits: how a field of unbounded size (a parameter, an environment value)
/// enters an event.
pub fn capped(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(TRUNCATED);
    }
    s
}

/// One audit event: a JSON object whose `type` is a SPEC §7 event type.
#[derive(Debug, Clone)]
pub struct Event(pub serde_json::Map<String, serde_json::Value>);

impl Event {
    /// A new event of the given type, e.g. `"pg.query"`.
    pub fn new(kind: &str) -> Self {
        let mut m = serde_json::Map::new();
        m.insert("type".into(), serde_json::Value::String(kind.into()));
        Event(m)
    }

    /// Adds a field; `None` values are left out.
    pub fn with(mut self, key: &str, value: impl serde::Serialize) -> Self {
        if let Ok(v) = serde_json::to_value(value)
            && !v.is_null()
        {
            self.0.insert(key.into(), v);
        }
        self
    }
}

/// One audit event already serialised as a JSON object: the hot paths' form (`pg.query`).
///
/// A typed event (a struct deriving `Serialize`, borrowing its fields) is written straight
/// into one buffer, instead of building an [`Event`] map of owned keys and values first.
/// The writer copies the bytes into the record verbatim and the chain hashes exactly them,
/// so to keep the log's canonical form the type must declare its fields in sorted key order
/// and skip absent ones, as serde_json's map would write them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonEvent(Vec<u8>);

/// Why a value cannot be an audit event.
#[derive(Debug, thiserror::Error)]
pub enum JsonEventError {
    /// Serialising the value failed (a custom `Serialize` refused).
    #[error("event does not serialise: {0}")]
    Serialize(#[from] serde_json::Error),
    /// The value serialises to JSON that is not an object.
    #[error("event is not a json object")]
    NotAnObject,
}

impl JsonEvent {
    /// Serialises `event`, which must serialise to a JSON object.
    pub fn new(event: &impl serde::Serialize) -> Result<Self, JsonEventError> {
        Self::with_capacity(event, 256)
    }

    /// [`JsonEvent::new`] into a buffer of `capacity` bytes to start with.
    pub fn with_capacity(
        event: &impl serde::Serialize,
        capacity: usize,
    ) -> Result<Self, JsonEventError> {
        let mut buf = Vec::with_capacity(capacity);
        serde_json::to_writer(&mut buf, event)?;
        if buf.first() != Some(&b'{') {
            return Err(JsonEventError::NotAnObject);
        }
        Ok(JsonEvent(buf))
    }

    /// The serialised object.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The event as a map (tests, notifications): parses the bytes back.
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_slice(&self.0).unwrap_or_default()
    }
}

/// What [`AuditLog::append`] and [`AuditLog::submit`] take: an [`Event`] map or a
/// pre-serialised [`JsonEvent`].
#[derive(Debug, Clone)]
pub enum Payload {
    Map(Event),
    Json(JsonEvent),
}

impl From<Event> for Payload {
    fn from(e: Event) -> Self {
        Payload::Map(e)
    }
}

impl From<JsonEvent> for Payload {
    fn from(e: JsonEvent) -> Self {
        Payload::Json(e)
    }
}

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Group commit: `append` returns once its batch is written to the file (it survives a
    /// crash of the gateway); an fsync thread syncs behind the writer, at most once per
    /// 10 ms, which bounds what a crash of the machine could take.
    Batched,
    /// `append` returns only after an fsync that started after its batch was written.
    Strict,
}

/// Why the log could not take an event.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log cannot be written; the gateway must refuse new sessions.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
}

/// Tuning of [`AuditLog::open_with`]; [`Options::new`] gives the defaults.
#[derive(Debug, Clone)]
pub struct Options {
    pub durability: Durability,
    /// A segment is sealed and a new one started once it reaches this size (64 MiB).
    pub segment_max_bytes: u64,
    /// ... or once it is this old, counted from when this process opened it (1 h). The
    /// check runs when events arrive: an idle log is not rotated until its next event.
    pub segment_max_age: Duration,
    /// Events queued for the writer before `append` waits (back-pressure).
    pub queue: usize,
}

impl Options {
    /// The defaults with the given durability.
    pub fn new(durability: Durability) -> Self {
        Options {
            durability,
            segment_max_bytes: 64 << 20,
            segment_max_age: Duration::from_secs(3600),
            queue: 16_384,
        }
    }
}

/// Events up to this size count only against the queue's length.
const SMALL_EVENT: usize = 16 << 10;

/// Bytes of larger events that may wait in the queue at once. The queue is bounded in events
/// (16,384 by default); with events of up to a mebibyte (a `pg.query` keeps whole statements
/// up to the proxy's parse limit), that alone would let it hold gigabytes.
const LARGE_EVENT_BUDGET: usize = 64 << 20;

/// What an event takes from the budget of large events while it waits to be written.
pub(crate) fn budget_cost(p: &Payload) -> u32 {
    match p {
        Payload::Json(j) if j.0.len() > SMALL_EVENT => {
            u32::try_from(j.0.len().min(LARGE_EVENT_BUDGET)).unwrap_or(u32::MAX)
        }
        _ => 0,
    }
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Cmd>,
    /// [`LARGE_EVENT_BUDGET`] in permits, one per byte: taken before a large event is
    /// queued, given back by the writer once it has written (or refused) the event.
    budget: Arc<tokio::sync::Semaphore>,
    healthy: Arc<health::Health>,
    pubkey: VerifyingKey,
    durability: Durability,
}

/// Handle to the writer; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {
    inner: Arc<Inner>,
}

impl AuditLog {
    /// Opens (recovering a torn tail) or creates the log under `dir` (`<data_dir>/audit`),
    /// with the seal key at `key_path` (created 0600 when absent), and starts the writer.
    ///
    /// A torn final record (a partial last line, or a complete last line failing its own
    /// check or chain link) is cut: its bytes are first kept verbatim in a side file in `dir`,
    /// `<segment>.cut-<offset>`, made durable before the segment is truncated, and an
    /// `audit.recovered` event (`file`, `offset`, `bytes`, `reason`, the side file's name as
    /// `kept_in` and the cut bytes' `sha256`) is appended. Any other inconsistency refuses
    /// to open, naming file and offset.
    pub fn open(
        dir: &Path,
        key_path: &Path,
        durability: Durability,
    ) -> Result<AuditLog, AuditError> {
        Self::open_with(dir, key_path, Options::new(durability))
    }

    /// [`AuditLog::open`] with explicit [`Options`].
    pub fn open_with(dir: &Path, key_path: &Path, opts: Options) -> Result<AuditLog, AuditError> {
        let fail = |e: &dyn std::fmt::Display| AuditError::Unavailable(e.to_string());
        let key = key::load_or_create(key_path).map_err(|e| fail(&e))?;
        let pubkey = key.verifying_key();
        let resume = recover::recover(dir, &pubkey).map_err(|e| fail(&e))?;
        let cut = match &resume {
            recover::Resume::Continue { cut, .. } => cut.clone(),
            recover::Resume::New { .. } => None,
        };
        let healthy = Arc::new(health::Health::new());
        let mut w = Writer::new(dir, key, &opts, resume, healthy.clone()).map_err(|e| fail(&e))?;
        if let Some(cut) = cut {
            tracing::warn!(file = %cut.file, offset = cut.offset, bytes = cut.bytes, reason = %cut.reason, kept_in = %cut.kept_in, "audit log: cut a torn final record");
            let ev = Event::new("audit.recovered")
                .with("file", &cut.file)
                .with("offset", cut.offset)
                .with("bytes", cut.bytes)
                .with("reason", &cut.reason)
                .with("kept_in", &cut.kept_in)
                .with("sha256", &cut.sha256);
            let (tx, _rx) = oneshot::channel();
            w.commit(&mut vec![(ev.into(), Some(tx))])
                .map_err(|e| fail(&e))?;
        }
        let (tx, rx) = mpsc::channel(opts.queue.max(1));
        let budget = Arc::new(tokio::sync::Semaphore::new(LARGE_EVENT_BUDGET));
        let returned = budget.clone();
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || w.run(rx, &returned))
            .map_err(|e| fail(&e))?;
        Ok(AuditLog {
            inner: Arc::new(Inner {
                budget,
                tx,
                healthy,
                pubkey,
                durability: opts.durability,
            }),
        })
    }

    /// Appends one event; returns its seq once durable per the durability mode.
    ///
    /// Waits while the writer's queue is full (back-pressure).
    ///
    /// # Cancellation safety
    /// If dropped after the event was queued, the event is still written; if dropped while
    /// waiting for queue space, it was not queued.
    pub async fn append(&self, event: impl Into<Payload>) -> Result<u64, AuditError> {
        if !self.healthy() {
            return Err(AuditError::Unavailable("audit log is not writable".into()));
        }
        let (tx, rx) = oneshot::channel();
        self.queue(event.into(), Some(tx)).await?;
        rx.await.map_err(|_| {
            AuditError::Unavailable("audit writer stopped before writing the event".into())
        })?
    }

    /// Queues one event without waiting for it to be written: events queued by one task
    /// (with `submit` or [`AuditLog::append`]) are written in the order they were queued,
    /// so a later `append` returning means every earlier `submit` of that task is durable
    /// too. Waits only while the writer's queue is full (back-pressure).
    ///
    /// For batched durability on hot paths: no reply channel, and the writer may gather
    /// submitted events for up to a millisecond before writing them. A write failure after
    /// queuing is not reported here; it turns the log unhealthy ([`AuditLog::healthy`]) and
    /// is logged, and every later `submit` or `append` fails.
    ///
    /// # Cancellation safety
    /// If dropped while waiting for queue space, the event was not queued.
    pub async fn submit(&self, event: impl Into<Payload>) -> Result<(), AuditError> {
        if !self.healthy() {
            return Err(AuditError::Unavailable("audit log is not writable".into()));
        }
        self.queue(event.into(), None).await
    }

    /// Queues an event, first taking its share of the budget of large events (the writer
    /// gives it back).
    ///
    /// # Cancellation safety
    /// If dropped while waiting for budget or queue space, the event was not queued and no
    /// budget is held.
    async fn queue(&self, event: Payload, reply: Option<writer::Reply>) -> Result<(), AuditError> {
        let closed = || AuditError::Unavailable("audit log closed".into());
        let cost = budget_cost(&event);
        let permits = match cost {
            0 => None,
            n => Some(
                self.inner
                    .budget
                    .acquire_many(n)
                    .await
                    .map_err(|_| closed())?,
            ),
        };
        self.inner
            .tx
            .send(Cmd::Append(event, reply))
            .await
            .map_err(|_| closed())?;
        // Queued: from here on the writer owns the cost and returns it.
        if let Some(p) = permits {
            p.forget();
        }
        Ok(())
    }

    /// Is the log currently writable? False after an I/O error (fail closed) or `close`.
    pub fn healthy(&self) -> bool {
        self.inner.healthy.is_ok()
    }

    /// The durability the log was opened with (what `append` waits for).
    pub fn durability(&self) -> Durability {
        self.inner.durability
    }

    /// Resolves with `true` once the log has failed (a write or fsync error; it refuses
    /// events from then on), or with `false` if every handle is gone first. A clean
    /// [`AuditLog::close`] is not a failure. It owns what it waits on, so it can be spawned
    /// on its own: the gateway closes every session the moment this resolves with `true`.
    pub fn failure(&self) -> impl Future<Output = bool> + Send + 'static {
        self.inner.healthy.failure()
    }

    /// The public key that verifies this log's seals.
    pub fn public_key(&self) -> VerifyingKey {
        self.inner.pubkey
    }

    /// Flushes, seals the open segment and stops the writer. Later appends fail.
    pub async fn close(&self) -> Result<(), AuditError> {
        let (tx, rx) = oneshot::channel();
        if self.inner.tx.send(Cmd::Close(tx)).await.is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Large events wait for budget, not for memory: many more than the budget holds are all
    /// written, in order, and every byte of budget is back once they are.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn large_events_share_a_bounded_budget_and_give_it_back() {
        let d = tempfile::tempdir().expect("tempdir");
        let log = AuditLog::open(
            &d.path().join("audit"),
            &d.path().join("key"),
            Durability::Batched,
        )
        .expect("open");
        let sql = "x".repeat(3 << 20);
        let n = 3 * LARGE_EVENT_BUDGET / sql.len();
        for i in 0..n {
            let ev = JsonEvent::new(&serde_json::json!({"type": "pg.query", "n": i, "sql": sql}))
                .expect("event");
            assert!(budget_cost(&Payload::Json(ev.clone())) > 0);
            log.submit(ev).await.expect("submit");
            assert!(log.inner.budget.available_permits() <= LARGE_EVENT_BUDGET);
        }
        let seq = log.append(Event::new("small")).await.expect("append");
        assert_eq!(seq, n as u64 + 1);
        log.close().await.expect("close");
        assert_eq!(log.inner.budget.available_permits(), LARGE_EVENT_BUDGET);
        let all: Vec<Record> = records(&d.path().join("audit"))
            .expect("records")
            .collect::<Result<_, _>>()
            .expect("read");
        assert_eq!(all.len(), n + 1);
        assert!(all.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
    }

    #[test]
    fn capped_cuts_on_a_character_boundary_and_marks_the_cut() {
        let cases = [
            ("", 4, ""),
            ("abcd", 4, "abcd"),
            ("abcde", 4, "abcd…[truncated]"),
            // "é" is two bytes: a cap inside it keeps the whole characters before it.
            ("aéé", 4, "aé…[truncated]"),
            ("ééé", 1, "…[truncated]"),
        ];
        for (s, max, want) in cases {
            assert_eq!(capped(s.to_owned(), max), want, "{s:?} at {max}");
        }
    }
}
