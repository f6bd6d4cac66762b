//! Where grant changes are recorded: the [`AuditSink`] seam over the audit log, and the
//! ordered emitter that appends events without making the scheduler wait.

use std::sync::Arc;

use futures::future::BoxFuture;
use portcullis_recorder::{AuditError, AuditLog, Event};
use tokio::sync::{mpsc, oneshot};

use crate::notify::Notifier;

/// Something that durably records audit events; [`AuditLog`] in production.
pub trait AuditSink: Send + Sync + std::fmt::Debug {
    /// Appends one event; resolves with its seq once durable.
    fn append(&self, event: Event) -> BoxFuture<'_, Result<u64, AuditError>>;
}

impl AuditSink for AuditLog {
    fn append(&self, event: Event) -> BoxFuture<'_, Result<u64, AuditError>> {
        Box::pin(AuditLog::append(self, event))
    }
}

/// What the emitter does once an event's append has returned.
enum Then {
    Nothing,
    /// Wake a caller of [`Emitter::emit_wait`], whether or not the append succeeded.
    Wake(oneshot::Sender<()>),
    /// Run only when the append succeeded (say, record in the store that it is logged).
    OnLogged(Box<dyn FnOnce() + Send>),
}

type Queued = (Event, Then);

/// Appends events to the audit sink in the order they were emitted, from one task, and
/// forwards notable ones to the webhook.
#[derive(Debug, Clone)]
pub(crate) struct Emitter {
    tx: mpsc::UnboundedSender<Queued>,
    notifier: Notifier,
}

impl Emitter {
    pub(crate) fn start(sink: Arc<dyn AuditSink>, notifier: Notifier) -> Emitter {
        // Unbounded on purpose: grant changes are rare and human-paced, and the scheduler
        // must never wait on the audit log to close sessions.
        let (tx, mut rx) = mpsc::unbounded_channel::<Queued>();
        tokio::spawn(async move {
            while let Some((event, done)) = rx.recv().await {
                let kind = event.0.get("type").cloned();
                let appended = sink.append(event).await;
                if let Err(e) = &appended {
                    tracing::error!(error = %e, event = ?kind, "audit append failed");
                }
                match done {
                    Then::Nothing => {}
                    Then::Wake(done) => {
                        let _ = done.send(());
                    }
                    Then::OnLogged(f) if appended.is_ok() => f(),
                    Then::OnLogged(_) => {}
                }
            }
        });
        Emitter { tx, notifier }
    }

    /// Queues an event and returns at once.
    pub(crate) fn emit(&self, event: Event) {
        self.notifier.send(&event.0);
        let _ = self.tx.send((event, Then::Nothing));
    }

    /// Queues an event and returns at once; `logged` runs on the emitter's task once the
    /// audit log has the event, and never if the append fails.
    pub(crate) fn emit_then(&self, event: Event, logged: impl FnOnce() + Send + 'static) {
        self.notifier.send(&event.0);
        let _ = self.tx.send((event, Then::OnLogged(Box::new(logged))));
    }

    /// Queues an event and waits until the audit log has it.
    pub(crate) async fn emit_wait(&self, event: Event) {
        self.notifier.send(&event.0);
        let (done, wait) = oneshot::channel();
        if self.tx.send((event, Then::Wake(done))).is_ok() {
            let _ = wait.await;
        }
    }

    /// Sends a notification that has no audit record (grant.expiring, session.killed).
    pub(crate) fn notify_only(&self, event: &Event) {
        self.notifier.send(&event.0);
    }
}
