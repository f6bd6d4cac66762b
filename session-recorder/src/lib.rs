//! The audit log (hash chain, segments, seals, verify) and terminal recordings.
//!
//! CONTRACT (the gateway codes against exactly this; the bodies are filled in by the audit
//! work): `AuditLog::open` starts the single writer task; `AuditLog::append` queues one
//! event and returns its `seq` once it is durable per the configured durability.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

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
        if let Ok(v) = serde_json::to_value(value) {
            if !v.is_null() {
                self.0.insert(key.into(), v);
            }
        }
        self
    }
}

/// When an append counts as done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Batched,
    Strict,
}

/// Why the log could not take an event.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The log cannot be written; the gateway must refuse new sessions.
    #[error("audit log unavailable: {0}")]
    Unavailable(String),
}

/// Handle to the writer task; cheap to clone.
#[derive(Debug, Clone)]
pub struct AuditLog {}

impl AuditLog {
    /// Opens (recovering a torn tail) or creates the log under `dir` (`<data_dir>/audit`),
    /// with the seal key at `key_path`, and starts the writer task on the current runtime.
    pub fn open(
        _dir: &Path,
        _key_path: &Path,
        _durability: Durability,
    ) -> Result<AuditLog, AuditError> {
        unimplemented!("audit work")
    }

    /// Appends one event; returns its seq once durable per the durability mode.
    ///
    /// # Cancellation safety
    /// If dropped after the event was queued, the event is still written.
    pub async fn append(&self, _event: Event) -> Result<u64, AuditError> {
        unimplemented!("audit work")
    }

    /// Is the log currently writable? False after an I/O error (fail closed).
    pub fn healthy(&self) -> bool {
        unimplemented!("audit work")
    }

    /// Flushes, seals the open segment and stops the writer.
    pub async fn close(&self) -> Result<(), AuditError> {
        unimplemented!("audit work")
    }
}

/// An asciicast v2 recording of one terminal channel, under `<data_dir>/recordings/`.
#[derive(Debug)]
pub struct Recording {
    pub path: PathBuf,
}
