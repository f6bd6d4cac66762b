//! Tests of just-in-time requests: who may approve, the grant clock, lapse and ceilings.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use tokio::time::Instant;

use super::model::REQUEST_TTL;
use super::tests::{info, start};
use super::*;

fn ask(target: &str, d: Duration) -> NewRequest {
    NewRequest {
        user: None,
        target: target.into(),
        role: Some(if target == "pg" { "read" } else { "deploy" }.into()),
        duration: d,
        reason: "incident 42".into(),
    }
}

fn user(u: &str) -> Actor {
    Actor::User(u.into())
}

#[tokio::test(start_paused = true)]
async fn bob_approves_alice_and_the_clock_starts_at_approval() {
    let f = start(Duration::from_secs(1));
    let r = f
        .grants
        .create_request(ask("pg", Duration::from_secs(600)), &user("alice"))
        .await
        .unwrap();
    assert_eq!(r.status, RequestStatus::Pending);
    assert!(f.grants.authorize("alice", "pg", None, info()).is_err());
    tokio::time::sleep(Duration::from_secs(100)).await;

    let e = f.grants.approve(&r.id, &user("alice")).await.unwrap_err();
    assert!(
        e.to_string().contains("cannot approve your own request"),
        "{e}"
    );
    let e = f.grants.approve(&r.id, &user("carol")).await.unwrap_err();
    assert!(
        e.to_string().contains("carol is not an approver for pg"),
        "{e}"
    );

    let t0 = Instant::now();
    let (r, g) = f.grants.approve(&r.id, &user("bob")).await.unwrap();
    assert_eq!(r.status, RequestStatus::Approved);
    assert_eq!(r.grant_id.as_deref(), Some(g.id.as_str()));
    assert_eq!(g.approved_by.as_deref(), Some("bob"));
    assert_eq!(g.created_by, "alice");
    assert_eq!(g.request_id.as_deref(), Some(r.id.as_str()));
    assert_eq!(g.expires_at - g.created_at, chrono::Duration::seconds(600));

    let mut lease = f.grants.authorize("alice", "pg", None, info()).unwrap();
    loop {
        if lease.next_event().await == LeaseEvent::Close(CloseReason::GrantExpired) {
            break;
        }
    }
    assert_eq!(t0.elapsed(), Duration::from_secs(600));
    let e = f.grants.approve(&r.id, &user("bob")).await.unwrap_err();
    assert!(e.to_string().contains("already approved"), "{e}");
    for kind in ["request.created", "request.approved", "grant.created"] {
        assert_eq!(f.audit.of_type(kind).len(), 1, "{kind}");
    }
}

#[tokio::test(start_paused = true)]
async fn deny_and_visibility() {
    let f = start(Duration::from_secs(1));
    let r = f
        .grants
        .create_request(ask("web", Duration::from_secs(60)), &user("alice"))
        .await
        .unwrap();
    // bob is the default approver, but web has its own: carol.
    assert!(f.grants.deny(&r.id, &user("bob"), None).await.is_err());
    assert!(
        f.grants
            .list_requests(false, &user("bob"))
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        f.grants.list_requests(true, &user("carol")).unwrap().len(),
        1
    );
    let d = f
        .grants
        .deny(&r.id, &user("carol"), Some("not now".into()))
        .await
        .unwrap();
    assert_eq!(d.status, RequestStatus::Denied);
    assert_eq!(d.decided_by.as_deref(), Some("carol"));
    assert!(
        f.grants
            .list_requests(true, &Actor::Admin)
            .unwrap()
            .is_empty()
    );
    assert!(f.grants.approve(&r.id, &user("carol")).await.is_err());
    assert_eq!(f.audit.of_type("request.denied")[0]["reason"], "not now");
}

#[tokio::test(start_paused = true)]
async fn requests_need_a_reason_respect_the_ceiling_and_lapse() {
    let f = start(Duration::from_secs(1));
    let mut no_reason = ask("pg", Duration::from_secs(60));
    no_reason.reason = "  ".into();
    assert!(matches!(
        f.grants.create_request(no_reason, &user("alice")).await,
        Err(GrantsError::Invalid(_))
    ));
    let e = f
        .grants
        .create_request(ask("web", Duration::from_secs(7200)), &user("alice"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("maximum grant of 1h on web"), "{e}");
    let mut other = ask("pg", Duration::from_secs(60));
    other.user = Some("bob".into());
    assert!(
        f.grants
            .create_request(other, &user("alice"))
            .await
            .is_err()
    );

    let r = f
        .grants
        .create_request(ask("pg", Duration::from_secs(60)), &user("alice"))
        .await
        .unwrap();
    tokio::time::sleep(REQUEST_TTL).await;
    // It lapses on its own, recorded once, before anyone looks at it.
    f.audit.wait_for("request.expired", 1).await;
    assert_eq!(
        f.audit.of_type("request.expired")[0]["request"],
        r.id.as_str()
    );
    let e = f.grants.approve(&r.id, &user("bob")).await.unwrap_err();
    assert!(e.to_string().contains("already expired"), "{e}");
    let all = f.grants.list_requests(false, &Actor::Admin).unwrap();
    assert_eq!(all[0].status, RequestStatus::Expired);
    assert_eq!(f.audit.of_type("request.expired").len(), 1);
}

/// A request keeps its duration in whole seconds (`duration_secs`): one with a fraction of a
/// second was once stored rounded down, so `--for 500ms` became a 0s request that every
/// approver was refused ("--for must be longer than 0s"), and `--for 1500ms` a 1s one.
#[tokio::test(start_paused = true)]
async fn a_request_for_part_of_a_second_is_refused_when_made() {
    let f = start(Duration::from_secs(1));
    for d in [Duration::from_millis(500), Duration::from_millis(1500)] {
        let e = f
            .grants
            .create_request(ask("pg", d), &user("alice"))
            .await
            .unwrap_err();
        assert!(matches!(e, GrantsError::Invalid(_)), "{d:?}: {e}");
        assert!(e.to_string().contains("whole number of seconds"), "{e}");
    }
    assert!(
        f.grants
            .list_requests(false, &Actor::Admin)
            .unwrap()
            .is_empty()
    );
    assert!(f.audit.of_type("request.created").is_empty());

    // A whole number of seconds, however short, is still approvable.
    let r = f
        .grants
        .create_request(ask("pg", Duration::from_secs(1)), &user("alice"))
        .await
        .unwrap();
    let (_, g) = f.grants.approve(&r.id, &user("bob")).await.unwrap();
    assert_eq!(g.expires_at - g.created_at, chrono::Duration::seconds(1));
}
