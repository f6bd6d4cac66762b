//! Webhook notifications: `[notify] webhook_url` gets one JSON POST per notable event
//! (request.created/approved/denied/expired, grant.created/extended/expiring/expired/revoked,
//! session.killed).
//!
//! Events go through a bounded queue to one delivery task that retries with backoff. Queuing
//! never waits: when the queue is full the event is dropped and logged, so a slow or dead
//! webhook can never delay a grant decision or a kill.

use std::time::Duration;

use tokio::sync::mpsc;

/// Events waiting for delivery; beyond this, new ones are dropped.
const QUEUE: usize = 1024;
/// Attempts per event, with delays of 250 ms, 500 ms, 1 s, 2 s between them.
const ATTEMPTS: u32 = 5;
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const TIMEOUT: Duration = Duration::from_secs(5);

/// The event types that are sent to the webhook.
pub const NOTIFIED: &[&str] = &[
    "request.created",
    "request.approved",
    "request.denied",
    "request.expired",
    "grant.created",
    "grant.extended",
    "grant.expiring",
    "grant.expired",
    "grant.revoked",
    "session.killed",
];

/// Handle to the delivery task; does nothing when no webhook is configured.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: Option<mpsc::Sender<serde_json::Value>>,
}

impl Notifier {
    /// A notifier that sends nothing.
    pub fn disabled() -> Notifier {
        Notifier { tx: None }
    }

    /// Starts the delivery task on the current runtime when `webhook_url` is set.
    pub fn start(webhook_url: Option<String>) -> Notifier {
        let Some(url) = webhook_url else {
            return Notifier::disabled();
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(deliver(url, rx));
        Notifier { tx: Some(tx) }
    }

    /// Queues `event` (a JSON object with a `type`) if its type is notified. Never waits.
    pub fn send(&self, event: &serde_json::Map<String, serde_json::Value>) {
        let Some(tx) = &self.tx else { return };
        let kind = event.get("type").and_then(|t| t.as_str()).unwrap_or("");
        if !NOTIFIED.contains(&kind) {
            return;
        }
        let mut body = event.clone();
        body.insert(
            "ts".into(),
            serde_json::Value::String(chrono::Utc::now().to_rfc3339()),
        );
        if tx.try_send(serde_json::Value::Object(body)).is_err() {
            tracing::warn!(
                event = kind,
                "webhook queue full or closed; notification dropped"
            );
        }
    }
}

async fn deliver(url: String, mut rx: mpsc::Receiver<serde_json::Value>) {
    let client = match reqwest::Client::builder().timeout(TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built; notifications off");
            return;
        }
    };
    while let Some(body) = rx.recv().await {
        let mut backoff = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            match client.post(&url).json(&body).send().await {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => tracing::warn!(status = %r.status(), attempt, "webhook refused event"),
                Err(e) => tracing::warn!(error = %e, attempt, "webhook unreachable"),
            }
            if attempt == ATTEMPTS {
                tracing::error!(event = ?body.get("type"), "webhook gave up on event");
                break;
            }
            tokio::time::sleep(backoff).await;
            backoff *= 2;
        }
    }
}
