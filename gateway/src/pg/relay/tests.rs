//! The client-to-upstream relay against a real (file-backed) audit log that has failed.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;
use std::time::Duration;

use portcullis_recorder::{AuditLog, Durability, Event, Options};
use tokio::sync::mpsc;

use super::{Ask, Ctx, client_to_upstream};
use crate::grants::tests::{Fixture, add, info, start};
use crate::pg::audit::Tracker;
use crate::pg::event::Common;

/// A Query message carrying `sql`.
fn query(sql: &str) -> Vec<u8> {
    let mut m = vec![b'Q'];
    m.extend_from_slice(&(u32::try_from(sql.len() + 5).unwrap()).to_be_bytes());
    m.extend_from_slice(sql.as_bytes());
    m.push(0);
    m
}

/// Alice's lease on `pg`, with the engine that holds it.
async fn alice() -> (Fixture, crate::grants::Lease) {
    let f = start(Duration::from_secs(60));
    add(&f.grants, "alice", "pg", "read", Duration::from_secs(3600)).await;
    let lease = f.grants.authorize("alice", "pg", None, info()).unwrap();
    (f, lease)
}

/// The session fields of alice's session under `lease`.
fn common(lease: &crate::grants::Lease) -> Common {
    Common {
        session: "s_test".into(),
        user: "alice".into(),
        target: "pg".into(),
        role: "read".into(),
        grant: lease.grant_id().to_owned(),
        client: "127.0.0.1:5555".into(),
    }
}

/// A batched log that has failed: every append rotates the segment (1-byte limit), and the
/// directory is gone, so the append after the first fails and the log turns unhealthy.
async fn failed_log(dir: &std::path::Path) -> AuditLog {
    let mut opts = Options::new(Durability::Batched);
    opts.segment_max_bytes = 1;
    let log = AuditLog::open_with(&dir.join("audit"), &dir.join("audit.key"), opts).unwrap();
    log.append(Event::new("test.first")).await.unwrap();
    std::fs::remove_dir_all(dir.join("audit")).unwrap();
    assert!(log.append(Event::new("test.second")).await.is_err());
    assert!(!log.healthy());
    log
}

/// In batched mode a statement runs before its record is written; once the log has failed,
/// none runs, short or longer than the relay parses (over 1 MiB): nothing of it goes
/// upstream and the session is told to close.
#[tokio::test]
async fn no_statement_goes_upstream_once_the_batched_log_has_failed() {
    let (_f, lease) = alice().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = failed_log(dir.path()).await;
    let common = common(&lease);
    let budget = tokio::sync::Semaphore::new(super::LARGE_STATEMENT_BUDGET);
    for sql in [
        "select 1".to_owned(),
        format!("select '{}'", "x".repeat(2 << 20)),
    ] {
        let tracker = Mutex::new(Tracker::new(&common, false));
        let counters = lease.counters();
        let live = lease.probe();
        let (ask_tx, mut ask_rx) = mpsc::channel(1);
        let ctx = Ctx::new(&tracker, &audit, &counters, &ask_tx, &live, &budget);
        let bytes = query(&sql);
        let mut from_client = &bytes[..];
        let mut upstream = Vec::new();
        let asked = tokio::select! {
            end = client_to_upstream(&mut from_client, &mut upstream, &ctx) => {
                panic!("the relay ended ({end:?}) instead of waiting for the kill path")
            }
            ask = ask_rx.recv() => ask,
        };
        assert!(
            matches!(asked, Some(Ask::AuditFailed(_))),
            "{} bytes: {asked:?}",
            sql.len()
        );
        assert!(
            upstream.is_empty(),
            "{} bytes of a {}-byte statement went upstream",
            upstream.len(),
            sql.len()
        );
    }
}

/// A statement longer than the usual read buffer goes upstream unchanged, held under the
/// shared budget, which has every byte back once it went; one longer than the statement
/// limit ends the relay before any of it goes upstream (earlier messages still do).
#[tokio::test]
async fn large_statements_use_the_shared_budget_and_too_large_ones_are_refused() {
    let (_f, lease) = alice().await;
    let dir = tempfile::tempdir().unwrap();
    let audit = AuditLog::open_with(
        &dir.path().join("audit"),
        &dir.path().join("audit.key"),
        Options::new(Durability::Batched),
    )
    .unwrap();
    let common = common(&lease);
    let budget = tokio::sync::Semaphore::new(super::LARGE_STATEMENT_BUDGET);
    let large = query(&format!("select '{}'", "x".repeat(3 << 20)));
    let too_large = query(&format!("select '{}'", "x".repeat(super::STATEMENT_LIMIT)));
    for (bytes, refused) in [
        ([query("select 1"), large.clone()].concat(), false),
        ([query("select 1"), too_large].concat(), true),
    ] {
        let tracker = Mutex::new(Tracker::new(&common, false));
        let counters = lease.counters();
        let live = lease.probe();
        let (ask_tx, _ask_rx) = mpsc::channel(1);
        let ctx = Ctx::new(&tracker, &audit, &counters, &ask_tx, &live, &budget);
        let mut from_client = &bytes[..];
        let mut upstream = Vec::new();
        let end = client_to_upstream(&mut from_client, &mut upstream, &ctx).await;
        if refused {
            assert!(
                matches!(end, super::RelayEnd::StatementTooLarge { len, unread }
                    if len == bytes.len() - 14 - 5 && unread == from_client.len()),
                "{end:?}"
            );
            assert_eq!(upstream, query("select 1"), "only the first statement went");
        } else {
            assert!(matches!(end, super::RelayEnd::ClientDone), "{end:?}");
            // What went upstream: both statements unchanged, then the relay's Terminate.
            assert_eq!(upstream.get(..bytes.len()), Some(&bytes[..]));
        }
        assert_eq!(
            budget.available_permits(),
            super::LARGE_STATEMENT_BUDGET,
            "the budget is back"
        );
    }
}
