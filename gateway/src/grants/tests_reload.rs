//! Tests of a config reload racing grant changes: no grant for a removed user, target or role
//! may survive the reload that removed it.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::tests::{MemAudit, config};
use super::*;

/// A store that, once armed, stops in its next `insert_grant` until released: a grant is then
/// built and about to be stored, the moment a reload must not slip past.
#[derive(Debug)]
struct GateStore {
    inner: SqliteStore,
    armed: AtomicBool,
    entered: Mutex<mpsc::Sender<()>>,
    release: Mutex<mpsc::Receiver<()>>,
}

impl Store for GateStore {
    fn insert_grant(&self, g: &GrantRecord) -> Result<(), StoreError> {
        if self.armed.swap(false, Ordering::AcqRel) {
            self.entered.lock().unwrap().send(()).unwrap();
            self.release.lock().unwrap().recv().unwrap();
        }
        self.inner.insert_grant(g)
    }
    fn update_grant(&self, g: &GrantRecord) -> Result<(), StoreError> {
        self.inner.update_grant(g)
    }
    fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, StoreError> {
        self.inner.get_grant(id)
    }
    fn list_grants(&self, status: Option<GrantStatus>) -> Result<Vec<GrantRecord>, StoreError> {
        self.inner.list_grants(status)
    }
    fn insert_request(&self, r: &RequestRecord) -> Result<(), StoreError> {
        self.inner.insert_request(r)
    }
    fn update_request(&self, r: &RequestRecord) -> Result<(), StoreError> {
        self.inner.update_request(r)
    }
    fn get_request(&self, id: &str) -> Result<Option<RequestRecord>, StoreError> {
        self.inner.get_request(id)
    }
    fn list_requests(
        &self,
        status: Option<RequestStatus>,
    ) -> Result<Vec<RequestRecord>, StoreError> {
        self.inner.list_requests(status)
    }
    fn claim_warning(&self, id: &str, expires_at: &DateTime<Utc>) -> Result<bool, StoreError> {
        self.inner.claim_warning(id, expires_at)
    }
    fn expiry_unlogged(&self) -> Result<Vec<GrantRecord>, StoreError> {
        self.inner.expiry_unlogged()
    }
    fn set_expiry_logged(&self, id: &str) -> Result<(), StoreError> {
        self.inner.set_expiry_logged(id)
    }
}

/// Runs `f` on a thread of its own with its own runtime; the grant table's tasks stay on the
/// test's runtime.
fn on_thread<T: Send + 'static>(
    f: impl FnOnce() -> futures::future::BoxFuture<'static, T> + Send + 'static,
) -> std::thread::JoinHandle<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(f())
    })
}

/// A grant being added while a reload removes its user must end up revoked, not live: the
/// reload once swapped the config and scanned the live table without waiting for a grant
/// change in flight, which had checked the old config and was then stored live after the
/// scan, for a user the config no longer has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_added_during_a_reload_that_removes_its_user_is_revoked() {
    let dir = tempfile::tempdir().unwrap();
    let (entered_tx, entered) = mpsc::channel();
    let (release, release_rx) = mpsc::channel();
    let store = GateStore {
        inner: SqliteStore::open(&dir.path().join("grants.db")).unwrap(),
        armed: AtomicBool::new(true),
        entered: Mutex::new(entered_tx),
        release: Mutex::new(release_rx),
    };
    let audit = Arc::new(MemAudit::default());
    let grants = Grants::start_with(
        config(Duration::from_secs(1)),
        Box::new(store),
        audit.clone(),
    )
    .unwrap();

    let g = grants.clone();
    let adding = on_thread(move || {
        Box::pin(async move {
            let new = NewGrant {
                user: "alice".into(),
                target: "pg".into(),
                role: Some("read".into()),
                duration: Duration::from_secs(600),
                reason: None,
            };
            g.add_grant(new, &Actor::Admin).await.unwrap()
        })
    });
    // The grant is built against the config that still has alice, and is being stored.
    entered.recv().unwrap();

    let mut without_alice = (*config(Duration::from_secs(1))).clone();
    without_alice.users.retain(|u| u.name != "alice");
    let g = grants.clone();
    let (reloaded_tx, reloaded) = mpsc::channel();
    let reloading = on_thread(move || {
        Box::pin(async move {
            g.reload(Arc::new(without_alice)).await;
            reloaded_tx.send(()).unwrap();
        })
    });
    // The old code finished the reload here, before the grant was stored; the fixed one
    // waits for the grant change in flight. Either way, let the store go on now.
    let _ = reloaded.recv_timeout(Duration::from_millis(300));
    release.send(()).unwrap();

    let added = adding.join().unwrap();
    reloading.join().unwrap();
    let stored = grants.get_grant(&added.id).unwrap().unwrap();
    assert_eq!(stored.status, GrantStatus::Revoked, "{stored:?}");
    assert_eq!(stored.revoked_by.as_deref(), Some("config"));
    assert_eq!(grants.live_count(), (0, 0));
    assert!(
        grants
            .authorize("alice", "pg", None, tests::info())
            .is_err()
    );
    audit.wait_for("grant.revoked", 1).await;
}
