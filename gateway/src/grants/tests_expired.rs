//! Tests that a grant's `grant.expired` survives a crash between the store marking the grant
//! expired and the audit log having the event.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use portcullis_recorder::{AuditError, Event};

use super::tests::{MemAudit, S, add, config};
use super::*;

/// An audit sink whose appends of `grant.expired` fail while `refuse` is set, as when the
/// gateway dies before the write: refused events are kept apart, so a test can wait for them.
#[derive(Debug, Default)]
struct RefusingAudit {
    refuse: AtomicBool,
    logged: MemAudit,
    refused: MemAudit,
}

impl AuditSink for RefusingAudit {
    fn append(&self, event: Event) -> futures::future::BoxFuture<'_, Result<u64, AuditError>> {
        if self.refuse.load(Ordering::Acquire) && event.0["type"] == "grant.expired" {
            drop(self.refused.append(event));
            return Box::pin(async { Err(AuditError::Unavailable("crashed".into())) });
        }
        self.logged.append(event)
    }
}

fn paused_rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// The store marks a grant expired, then its `grant.expired` never reaches the log; the next
/// start emits it, and the one after does not again: exactly one in the log overall.
#[test]
fn an_expiry_event_lost_before_the_log_is_emitted_at_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.db");
    let open = |audit: Arc<dyn AuditSink>| {
        let store = SqliteStore::open(&path).unwrap();
        Grants::start_with(config(S(1)), Box::new(store), audit).unwrap()
    };

    let first = Arc::new(RefusingAudit::default());
    first.refuse.store(true, Ordering::Release);
    let id = paused_rt().block_on(async {
        let g = open(first.clone());
        let grant = add(&g, "alice", "pg", "read", S(2)).await;
        first.refused.wait_for("grant.expired", 1).await;
        assert_eq!(
            g.get_grant(&grant.id).unwrap().unwrap().status,
            GrantStatus::Expired
        );
        grant.id
        // The runtime is dropped here: the gateway is gone.
    });
    assert!(first.logged.of_type("grant.expired").is_empty());

    let second = Arc::new(MemAudit::default());
    paused_rt().block_on(async {
        let g = open(second.clone());
        second.wait_for("grant.expired", 1).await;
        // Appends are ordered: once this one is in, the expiry is recorded as logged.
        add(&g, "bob", "web", "deploy", S(60)).await;
    });
    let expired = second.of_type("grant.expired");
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0]["grant"], id.as_str());

    let third = Arc::new(MemAudit::default());
    paused_rt().block_on(async {
        let g = open(third.clone());
        add(&g, "carol", "pg", "write", S(60)).await;
    });
    assert!(third.of_type("grant.expired").is_empty());
}
