//! Audit events of the SSH proxy: the common fields every session event carries, and the
//! one place that appends (so a failing log is handled the same way everywhere).

use portcullis_recorder::Event;
use tracing::warn;

use crate::context::Shared;

/// Who and where, attached to every event of one session.
#[derive(Debug, Clone)]
pub struct Ident {
    pub session: String,
    pub user: String,
    pub target: String,
    pub role: String,
    pub grant: String,
    pub client: String,
}

impl Ident {
    /// A new event of `kind` carrying the common fields.
    pub fn event(&self, kind: &str) -> Event {
        Event::new(kind)
            .with("session", &self.session)
            .with("user", &self.user)
            .with("target", &self.target)
            .with("role", &self.role)
            .with("grant", &self.grant)
            .with("client", &self.client)
    }
}

/// Appends `event`; false when the log refused it, in which case the caller fails closed.
///
/// # Cancellation safety
/// Once queued the event is written even if this future is dropped.
pub async fn append(gw: &Shared, event: Event) -> bool {
    match gw.audit.append(event).await {
        Ok(_) => true,
        Err(e) => {
            warn!(error = %e, "audit append failed");
            false
        }
    }
}

/// Queues `event` without waiting for it to be durable (batched durability, on the data
/// path). Events one task queues keep their order, and the channel's closing `append`
/// returns only once they are durable too. False when the log refused it (it has already
/// failed); a write that fails after queuing turns the log unhealthy, which the relay
/// checks before forwarding the client's next message (fail closed there).
///
/// # Cancellation safety
/// If dropped while waiting for queue space, the event was not queued.
pub async fn submit(gw: &Shared, event: Event) -> bool {
    match gw.audit.submit(event).await {
        Ok(()) => true,
        Err(e) => {
            warn!(error = %e, "audit submit failed");
            false
        }
    }
}

/// Records an authentication outcome for a connection that never became a session.
pub async fn auth_failed(
    gw: &Shared,
    user: &str,
    target: Option<&str>,
    client: &str,
    reason: &str,
) {
    let ev = Event::new("auth.failed")
        .with("proto", "ssh")
        .with("user", user)
        .with("target", target)
        .with("client", client)
        .with("reason", reason);
    append(gw, ev).await;
}
