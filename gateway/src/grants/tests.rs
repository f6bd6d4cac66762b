//! Timer-driven tests of the grant table, leases and the kill path, on paused tokio time.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_config as cfg;
use portcullis_recorder::{AuditError, Event};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::*;

/// Test double for the audit log: keeps events in memory, in append order.
#[derive(Debug, Default)]
pub(crate) struct MemAudit {
    events: Mutex<Vec<serde_json::Map<String, serde_json::Value>>>,
    added: Notify,
}

impl AuditSink for MemAudit {
    fn append(&self, event: Event) -> futures::future::BoxFuture<'_, Result<u64, AuditError>> {
        let mut v = self.events.lock().unwrap();
        v.push(event.0);
        let seq = v.len() as u64;
        self.added.notify_waiters();
        Box::pin(async move { Ok(seq) })
    }
}

impl MemAudit {
    pub(crate) fn of_type(&self, kind: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e["type"] == kind)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` events of `kind` were appended; panics after a minute (of
    /// paused time too: the clock only jumps once everything is idle, blocking work included),
    /// so a missing event fails the test rather than hanging it.
    pub(crate) async fn wait_for(&self, kind: &str, n: usize) {
        let arrived = async {
            loop {
                let added = self.added.notified();
                if self.of_type(kind).len() >= n {
                    return;
                }
                added.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(60), arrived)
            .await
            .is_err()
        {
            panic!(
                "{} of {n} `{kind}` events arrived within a minute",
                self.of_type(kind).len()
            );
        }
    }
}

fn role(user: &str) -> cfg::Role {
    cfg::Role {
        user: user.into(),
        password: None,
        private_key_file: None,
        private_key: None,
        allow: vec![],
    }
}

fn target(name: &str, kind: cfg::TargetKind, roles: &[&str]) -> cfg::Target {
    cfg::Target {
        name: name.into(),
        kind,
        address: "127.0.0.1:1".into(),
        database: None,
        tls: cfg::PgTlsMode::Disable,
        ca_file: None,
        host_key: None,
        max_grant: None,
        approvers: vec![],
        roles: roles
            .iter()
            .map(|r| (r.to_string(), role(r)))
            .collect::<BTreeMap<_, _>>(),
    }
}

/// Users alice, bob (default approver), carol (approver of `web`); targets `pg` (roles read
/// and write) and `web` (role deploy, max_grant 1h, approvers carol).
pub(crate) fn config(warn_before: Duration) -> Arc<cfg::Config> {
    let user = |n: &str| cfg::User {
        name: n.into(),
        ssh_keys: vec![],
        password_scram: None,
    };
    let mut web = target("web", cfg::TargetKind::Ssh, &["deploy"]);
    web.max_grant = Some(Duration::from_secs(3600));
    web.approvers = vec!["carol".into()];
    Arc::new(cfg::Config {
        gateway: cfg::GatewaySection {
            data_dir: "/nonexistent".into(),
        },
        listen: cfg::Listen {
            ssh: "127.0.0.1:0".parse().unwrap(),
            postgres: "127.0.0.1:0".parse().unwrap(),
            admin: "127.0.0.1:0".parse().unwrap(),
        },
        tls: None,
        policy: cfg::Policy {
            max_grant: Duration::from_secs(8 * 3600),
            warn_before,
            approvers: vec!["bob".into()],
        },
        audit: cfg::AuditSection {
            durability: cfg::Durability::Batched,
        },
        notify: cfg::Notify::default(),
        users: vec![user("alice"), user("bob"), user("carol")],
        targets: vec![
            target("pg", cfg::TargetKind::Postgres, &["read", "write"]),
            web,
        ],
        warnings: Vec::new(),
    })
}

pub(crate) struct Fixture {
    pub grants: Grants,
    pub audit: Arc<MemAudit>,
    pub _dir: tempfile::TempDir,
}

pub(crate) fn start(warn_before: Duration) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let audit = Arc::new(MemAudit::default());
    let store = SqliteStore::open(&dir.path().join("grants.db")).unwrap();
    let grants = Grants::start_with(config(warn_before), Box::new(store), audit.clone()).unwrap();
    Fixture {
        grants,
        audit,
        _dir: dir,
    }
}

pub(crate) fn info() -> SessionInfo {
    SessionInfo {
        proto: Proto::Postgres,
        client: ([127, 0, 0, 1], 5555).into(),
    }
}

pub(crate) async fn add(
    g: &Grants,
    user: &str,
    target: &str,
    role: &str,
    d: Duration,
) -> GrantRecord {
    g.add_grant(
        NewGrant {
            user: user.into(),
            target: target.into(),
            role: Some(role.into()),
            duration: d,
            reason: Some("test".into()),
        },
        &Actor::Admin,
    )
    .await
    .unwrap()
}

pub(crate) const S: fn(u64) -> Duration = Duration::from_secs;

#[tokio::test(start_paused = true)]
async fn a_lease_under_a_2s_grant_warns_then_closes_at_2s() {
    let f = start(S(1));
    let g = add(&f.grants, "alice", "pg", "read", S(2)).await;
    let t0 = Instant::now();
    let mut lease = f.grants.authorize("alice", "pg", None, info()).unwrap();
    assert_eq!(lease.grant_id(), g.id);
    assert!(lease.is_live());
    assert_eq!(
        lease.next_event().await,
        LeaseEvent::Warn { remaining: S(1) }
    );
    assert_eq!(t0.elapsed(), S(1));
    assert_eq!(
        lease.next_event().await,
        LeaseEvent::Close(CloseReason::GrantExpired)
    );
    assert_eq!(t0.elapsed(), S(2));
    assert!(!lease.is_live());
    // Delivered once; later calls keep returning it.
    assert_eq!(
        lease.next_event().await,
        LeaseEvent::Close(CloseReason::GrantExpired)
    );
    f.audit.wait_for("grant.expired", 1).await;
    let stored = f.grants.get_grant(&g.id).unwrap().unwrap();
    assert_eq!(stored.status, GrantStatus::Expired);
    let err = f.grants.authorize("alice", "pg", None, info()).unwrap_err();
    assert!(matches!(err, Denied::Expired { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn extend_moves_the_deadline_of_live_leases() {
    let f = start(S(1));
    let g = add(&f.grants, "alice", "pg", "read", S(2)).await;
    let t0 = Instant::now();
    let mut lease = f
        .grants
        .authorize("alice", "pg", Some("read"), info())
        .unwrap();
    assert!(matches!(lease.next_event().await, LeaseEvent::Warn { .. }));
    let ext = f.grants.extend(&g.id, S(3), &Actor::Admin).await.unwrap();
    assert_eq!(ext.expires_at, g.expires_at + chrono::Duration::seconds(3));
    assert_eq!(lease.expires_at(), ext.expires_at);
    // Re-armed: a fresh warning one second before the new deadline, then the close.
    assert_eq!(
        lease.next_event().await,
        LeaseEvent::Warn { remaining: S(1) }
    );
    assert_eq!(t0.elapsed(), S(4));
    assert_eq!(
        lease.next_event().await,
        LeaseEvent::Close(CloseReason::GrantExpired)
    );
    assert_eq!(t0.elapsed(), S(5));
    f.audit.wait_for("grant.expired", 1).await;
    assert_eq!(f.audit.of_type("grant.expired").len(), 1);
    assert_eq!(f.audit.of_type("grant.extended").len(), 1);
}

/// An extension past what a timestamp holds is refused with a sentence; it once panicked
/// the handler (`expires_at + by` overflowed) and left the grant as it was.
#[tokio::test(start_paused = true)]
async fn an_extension_past_any_timestamp_is_refused_not_a_panic() {
    let f = start(S(1));
    let g = add(&f.grants, "alice", "pg", "read", S(60)).await;
    let err = f
        .grants
        .extend(&g.id, Duration::from_secs(u64::MAX), &Actor::Admin)
        .await
        .unwrap_err();
    assert!(matches!(err, GrantsError::Invalid(_)), "{err}");
    assert!(err.to_string().contains("too long"), "{err}");
    let stored = f.grants.get_grant(&g.id).unwrap().unwrap();
    assert_eq!(stored.expires_at, g.expires_at);
}

#[tokio::test(start_paused = true)]
async fn revoke_resolves_leases_at_once() {
    let f = start(S(60));
    let g = add(&f.grants, "alice", "pg", "read", S(3600)).await;
    let mut lease = f.grants.authorize("alice", "pg", None, info()).unwrap();
    let waiter = tokio::spawn(async move {
        let t0 = Instant::now();
        let ev = lease.next_event().await;
        (ev, t0.elapsed(), lease)
    });
    tokio::task::yield_now().await;
    let t0 = Instant::now();
    let r = f
        .grants
        .revoke(&g.id, &Actor::Admin, Some("done".into()))
        .await
        .unwrap();
    assert_eq!(r.status, GrantStatus::Revoked);
    assert_eq!(r.revoked_by.as_deref(), Some("admin"));
    let (ev, _, lease) = waiter.await.unwrap();
    assert_eq!(ev, LeaseEvent::Close(CloseReason::GrantRevoked));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(!lease.is_live());
    assert!(f.grants.authorize("alice", "pg", None, info()).is_err());
    // Revoking twice is refused, and the scheduler no longer holds it.
    assert!(matches!(
        f.grants.revoke(&g.id, &Actor::Admin, None).await,
        Err(GrantsError::Refused(_))
    ));
    assert_eq!(f.grants.live_count(), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn kill_closes_one_session_and_not_its_neighbour() {
    let f = start(S(1));
    add(&f.grants, "alice", "pg", "read", S(10)).await;
    let mut a = f.grants.authorize("alice", "pg", None, info()).unwrap();
    let mut b = f.grants.authorize("alice", "pg", None, info()).unwrap();
    assert_ne!(a.session_id(), b.session_id());
    assert_eq!(f.grants.sessions(&Actor::Admin).len(), 2);
    b.counters().add_in(7);
    let t0 = Instant::now();
    let killed = f
        .grants
        .kill_session(&a.session_id(), &Actor::Admin, Some("bye"))
        .unwrap();
    assert_eq!(killed.id, a.session_id());
    assert_eq!(a.next_event().await, LeaseEvent::Close(CloseReason::Killed));
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(b.is_live());
    // The neighbour runs on to its grant's end.
    assert!(matches!(b.next_event().await, LeaseEvent::Warn { .. }));
    assert_eq!(
        b.next_event().await,
        LeaseEvent::Close(CloseReason::GrantExpired)
    );
    assert_eq!(t0.elapsed(), S(10));
    drop(a);
    let listed = f.grants.sessions(&Actor::Admin);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].bytes_in, 7);
    drop(b);
    assert!(f.grants.sessions(&Actor::Admin).is_empty());
}

/// `session.ended` names who killed a session and why: the note is the first kill's, a
/// second kill is refused without changing it, and a session closed otherwise has none.
#[tokio::test(start_paused = true)]
async fn a_kill_notes_who_killed_and_why() {
    let f = start(S(1));
    add(&f.grants, "alice", "pg", "read", S(10)).await;
    let a = f.grants.authorize("alice", "pg", None, info()).unwrap();
    let b = f.grants.authorize("alice", "pg", None, info()).unwrap();
    let c = f.grants.authorize("alice", "pg", None, info()).unwrap();
    assert_eq!(a.kill_note(), None);
    let alice = Actor::User("alice".into());
    f.grants
        .kill_session(&a.session_id(), &alice, Some("  mine  "))
        .unwrap();
    let noted = |by: &str, reason: Option<&str>| sessions::KillNote {
        by: by.into(),
        reason: reason.map(str::to_owned),
    };
    assert_eq!(a.kill_note(), Some(&noted("alice", Some("mine"))));
    assert!(matches!(
        f.grants
            .kill_session(&a.session_id(), &Actor::Admin, Some("again")),
        Err(GrantsError::Refused(_))
    ));
    assert_eq!(a.kill_note(), Some(&noted("alice", Some("mine"))));
    // A blank reason is no reason.
    f.grants
        .kill_session(&b.session_id(), &Actor::Admin, Some(" "))
        .unwrap();
    assert_eq!(b.kill_note(), Some(&noted("admin", None)));
    // Closed for another reason first: the kill is refused and nothing is noted.
    assert!(f.grants.close_audit_failed(&c.session_id()));
    assert!(matches!(
        f.grants.kill_session(&c.session_id(), &Actor::Admin, None),
        Err(GrantsError::Refused(_))
    ));
    assert_eq!(c.kill_note(), None);
}

#[tokio::test(start_paused = true)]
async fn a_failed_audit_log_closes_its_session_only() {
    let f = start(S(1));
    add(&f.grants, "alice", "pg", "read", S(10)).await;
    let mut a = f.grants.authorize("alice", "pg", None, info()).unwrap();
    let b = f.grants.authorize("alice", "pg", None, info()).unwrap();
    assert!(f.grants.close_audit_failed(&a.session_id()));
    // Once: a session already closing is not closed again.
    assert!(!f.grants.close_audit_failed(&a.session_id()));
    assert_eq!(
        a.next_event().await,
        LeaseEvent::Close(CloseReason::AuditFailed)
    );
    assert_eq!(CloseReason::AuditFailed.as_str(), "audit_failed");
    assert!(b.is_live());
}

#[tokio::test(start_paused = true)]
async fn shutdown_closes_every_session() {
    let f = start(S(1));
    add(&f.grants, "alice", "pg", "read", S(10)).await;
    add(&f.grants, "bob", "web", "deploy", S(10)).await;
    let mut a = f.grants.authorize("alice", "pg", None, info()).unwrap();
    let mut b = f.grants.authorize("bob", "web", None, info()).unwrap();
    f.grants.shutdown_all();
    assert_eq!(
        a.next_event().await,
        LeaseEvent::Close(CloseReason::Shutdown)
    );
    assert_eq!(
        b.next_event().await,
        LeaseEvent::Close(CloseReason::Shutdown)
    );
}

#[tokio::test(start_paused = true)]
async fn reload_removing_a_role_revokes_and_closes() {
    let f = start(S(1));
    add(&f.grants, "alice", "pg", "write", S(10)).await;
    let mut a = f.grants.authorize("alice", "pg", None, info()).unwrap();
    let mut c = (*config(S(1))).clone();
    c.targets[0].roles.remove("write");
    f.grants.reload(Arc::new(c)).await;
    assert_eq!(
        a.next_event().await,
        LeaseEvent::Close(CloseReason::ConfigRevoked)
    );
    // Recorded with the SPEC's reason; only the client's sentence says "config".
    assert_eq!(CloseReason::ConfigRevoked.as_str(), "grant_revoked");
    assert_eq!(f.audit.of_type("grant.revoked")[0]["revoked_by"], "config");
    // A reload that drops the target: connects learn it at once.
    let mut c = (*config(S(1))).clone();
    c.targets.retain(|t| t.name != "pg");
    f.grants.reload(Arc::new(c)).await;
    let e = f.grants.authorize("alice", "pg", None, info()).unwrap_err();
    assert!(matches!(e, Denied::UnknownTarget { .. }), "{e}");
}

#[tokio::test(start_paused = true)]
async fn authorize_explains_every_refusal() {
    let f = start(S(1));
    let err = |r: Result<Lease, Denied>| r.unwrap_err();
    let e = err(f.grants.authorize("alice", "nope", None, info()));
    assert!(matches!(e, Denied::UnknownTarget { .. }));
    let e = err(f.grants.authorize("alice", "pg", None, info()));
    assert!(matches!(e, Denied::NoGrant { .. }));
    assert!(
        e.to_string()
            .contains("portcullis request create --target pg"),
        "{e}"
    );
    add(&f.grants, "alice", "pg", "read", S(10)).await;
    let e = err(f.grants.authorize("alice", "pg", Some("write"), info()));
    assert!(
        matches!(&e, Denied::RoleNotHeld { held, .. } if held == "read"),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("portcullis request create --target pg --role write"),
        "{e}"
    );
    add(&f.grants, "alice", "pg", "write", S(10)).await;
    let e = err(f.grants.authorize("alice", "pg", None, info()));
    assert!(
        matches!(&e, Denied::AmbiguousRole { held, proto: Proto::Postgres, .. } if held == "read, write"),
        "{e}"
    );
    assert!(e.to_string().ends_with("name one: dbname=pg+ROLE"), "{e}");
    // Over SSH the role goes in the login name instead.
    let ssh = SessionInfo {
        proto: Proto::Ssh,
        ..info()
    };
    let e = err(f.grants.authorize("alice", "pg", None, ssh));
    assert!(e.to_string().ends_with("name one: alice+pg+ROLE"), "{e}");
    let l = f
        .grants
        .authorize("alice", "pg", Some("write"), info())
        .unwrap();
    assert_eq!(l.role(), "write");
    // Grants are per user.
    assert!(matches!(
        err(f.grants.authorize("bob", "pg", None, info())),
        Denied::NoGrant { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn max_grant_applies_to_grants_and_extensions() {
    let f = start(S(1));
    let new = |d| NewGrant {
        user: "alice".into(),
        target: "web".into(),
        role: None,
        duration: d,
        reason: None,
    };
    let e = f
        .grants
        .add_grant(new(S(7200)), &Actor::Admin)
        .await
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("exceeds the maximum grant of 1h on web"),
        "{e}"
    );
    let g = f
        .grants
        .add_grant(new(S(1800)), &Actor::Admin)
        .await
        .unwrap();
    assert_eq!(g.role, "deploy");
    let e = f
        .grants
        .extend(&g.id, S(3600), &Actor::Admin)
        .await
        .unwrap_err();
    assert!(matches!(e, GrantsError::Refused(_)), "{e}");
    f.grants
        .extend(&g.id, S(1800), &Actor::Admin)
        .await
        .unwrap();
    // Users cannot add grants directly.
    let e = f
        .grants
        .add_grant(new(S(60)), &Actor::User("alice".into()))
        .await
        .unwrap_err();
    assert!(matches!(e, GrantsError::Refused(_)));
}

#[tokio::test(start_paused = true)]
async fn ten_thousand_grants_expire_in_deadline_order_each_once() {
    let f = start(S(1));
    let mut deadlines = std::collections::HashMap::new();
    for _ in 0..10_000 {
        let d = Duration::from_millis(rand::random_range(1_000..3_600_000));
        let g = add(&f.grants, "alice", "pg", "read", d).await;
        deadlines.insert(g.id, g.expires_at);
    }
    assert_eq!(f.grants.live_count(), (10_000, 10_000));
    tokio::time::sleep(S(3601)).await;
    f.audit.wait_for("grant.expired", 10_000).await;
    let fired = f.audit.of_type("grant.expired");
    assert_eq!(fired.len(), 10_000);
    let mut seen = HashSet::new();
    let mut last = None;
    for e in &fired {
        let id = e["grant"].as_str().unwrap().to_owned();
        let at = deadlines[&id];
        assert!(last.is_none_or(|l| l <= at), "out of order");
        last = Some(at);
        assert!(seen.insert(id), "fired twice");
    }
    assert_eq!(f.grants.live_count(), (0, 0));
    let all = GrantFilter {
        all: true,
        ..Default::default()
    };
    let stored = f.grants.list_grants(&all, &Actor::Admin).unwrap();
    assert!(stored.iter().all(|g| g.status == GrantStatus::Expired));
}

/// Grants and pending requests survive a restart; a grant that lapsed while the gateway was
/// down is marked expired at start, with exactly one `grant.expired`.
#[test]
fn restart_keeps_grants_and_requests_and_expires_lapsed_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grants.db");
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    let open = |audit: Arc<MemAudit>| {
        let store = SqliteStore::open(&path).unwrap();
        Grants::start_with(config(S(1)), Box::new(store), audit).unwrap()
    };
    let (live, req) = rt().block_on(async {
        let g = open(Arc::new(MemAudit::default()));
        let live = add(&g, "alice", "pg", "read", S(3600)).await;
        let req = g
            .create_request(
                NewRequest {
                    user: None,
                    target: "web".into(),
                    role: None,
                    duration: S(600),
                    reason: "deploy fix".into(),
                },
                &Actor::User("bob".into()),
            )
            .await
            .unwrap();
        (live, req)
    });
    // A grant whose deadline passed while no gateway was running.
    let mut lapsed = live.clone();
    lapsed.id = "g_lapsed".into();
    lapsed.user = "bob".into();
    lapsed.expires_at = chrono::Utc::now() - chrono::Duration::seconds(5);
    SqliteStore::open(&path)
        .unwrap()
        .insert_grant(&lapsed)
        .unwrap();

    let audit = Arc::new(MemAudit::default());
    rt().block_on(async {
        let g = open(audit.clone());
        assert!(g.authorize("alice", "pg", None, info()).is_ok());
        let e = g.authorize("bob", "pg", None, info()).unwrap_err();
        assert!(matches!(e, Denied::Expired { .. }), "{e}");
        let pending = g.list_requests(true, &Actor::Admin).unwrap();
        assert_eq!(
            pending.iter().map(|r| &r.id).collect::<Vec<_>>(),
            vec![&req.id]
        );
        audit.wait_for("grant.expired", 1).await;
        assert_eq!(
            g.get_grant("g_lapsed").unwrap().unwrap().status,
            GrantStatus::Expired
        );
    });
    let again = Arc::new(MemAudit::default());
    rt().block_on(async {
        let g = open(again.clone());
        // Appends are ordered: once this one is in, any grant.expired would be too.
        add(&g, "bob", "web", "deploy", S(60)).await;
    });
    assert_eq!(audit.of_type("grant.expired").len(), 1);
    assert!(again.of_type("grant.expired").is_empty());
}

/// The real audit log: grant and request changes land in it, in order, with one
/// `grant.expired`, and the chain verifies.
#[tokio::test]
async fn grant_changes_land_in_the_real_audit_log() {
    use portcullis_recorder::{AuditLog, Durability};
    let dir = tempfile::tempdir().unwrap();
    let audit_dir = dir.path().join("audit");
    let log = AuditLog::open(
        &audit_dir,
        &dir.path().join("audit.key"),
        Durability::Strict,
    )
    .unwrap();
    let g = Grants::start(config(S(1)), &dir.path().join("grants.db"), log.clone()).unwrap();
    let short = add(&g, "alice", "pg", "read", Duration::from_millis(300)).await;
    let mut lease = g.authorize("alice", "pg", None, info()).unwrap();
    while lease.next_event().await != LeaseEvent::Close(CloseReason::GrantExpired) {}
    // The lease's own timer and the scheduler fire independently at the deadline; wait for
    // the scheduler's mark (which queues grant.expired in the same synchronous step).
    while g.get_grant(&short.id).unwrap().unwrap().status != GrantStatus::Expired {
        tokio::task::yield_now().await;
    }
    let r = g
        .create_request(
            NewRequest {
                user: None,
                target: "pg".into(),
                role: Some("write".into()),
                duration: S(60),
                reason: "deploy".into(),
            },
            &Actor::User("alice".into()),
        )
        .await
        .unwrap();
    let (_, granted) = g.approve(&r.id, &Actor::User("bob".into())).await.unwrap();
    g.revoke(&granted.id, &Actor::Admin, Some("done".into()))
        .await
        .unwrap();
    log.close().await.unwrap();

    let events: Vec<_> = portcullis_recorder::records(&audit_dir)
        .unwrap()
        .map(|r| r.unwrap().event)
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "grant.created",
            "grant.expired",
            "request.created",
            "request.approved",
            "grant.created",
            "grant.revoked"
        ]
    );
    assert_eq!(events[1]["grant"], short.id.as_str());
    // The grant's own times, so a report computes the granted span exactly.
    let at = |k: &str| {
        let t = events[0][k].as_str().unwrap();
        chrono::DateTime::parse_from_rfc3339(t).unwrap()
    };
    assert_eq!(
        (at("expires_at") - at("created_at")).num_milliseconds(),
        300
    );
    assert_eq!(events[3]["approved_by"], "bob");
    assert_eq!(events[5]["reason"], "done");
    portcullis_recorder::verify(&audit_dir, Some(log.public_key())).unwrap();
}
