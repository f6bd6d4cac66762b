//! The admin API against a gateway in the test's own process (real grants engine and audit
//! log, no listener): requests are handed to the extractors and handlers directly.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::{Request, StatusCode, header};
use base64::Engine as _;
use portcullis_protocol::scram::generate_verifier;

use super::ApiState;
use super::auth::Caller;
use crate::grants::Actor;

/// A gateway whose alice has the password `alice-pw`, bob none, and one target `pg-prod`
/// with a role `read`. Keep the directory alive as long as the state.
pub(super) fn state() -> (ApiState, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[gateway]\ndata_dir = \"{data}\"\n\n\
         [policy]\napprovers = [\"bob\"]\n\n\
         [[users]]\nname = \"alice\"\npassword_scram = \"{pw}\"\n\n\
         [[users]]\nname = \"bob\"\n\n\
         [[targets]]\nname = \"pg-prod\"\nkind = \"postgres\"\naddress = \"127.0.0.1:1\"\n\
         database = \"app\"\ntls = \"disable\"\n\
         [targets.roles.read]\nuser = \"app_ro\"\npassword = \"x\"\n",
        data = dir.path().join("data").display(),
        pw = generate_verifier("alice-pw"),
    );
    let config = Arc::new(portcullis_config::load_str(&text, dir.path()).unwrap());
    let opts = portcullis_recorder::Options::new(portcullis_recorder::Durability::Batched);
    let gw = crate::testbed::in_process_gateway(config, opts).unwrap();
    let st = ApiState { gw };
    (st, dir)
}

/// Who the API takes a request with Basic `user:password` from `client` to be.
async fn basic_caller(
    st: &ApiState,
    client: &str,
    user: &str,
    password: &str,
) -> Result<Actor, super::ApiError> {
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let (mut parts, ()) = Request::builder()
        .uri("/v1/grants")
        .header(header::AUTHORIZATION, format!("Basic {b64}"))
        .extension(ConnectInfo(client.parse::<SocketAddr>().unwrap()))
        .body(())
        .unwrap()
        .into_parts();
    Caller::from_request_parts(&mut parts, st)
        .await
        .map(|Caller(actor)| actor)
}

/// An unknown user, a user without a password and a known user with a wrong password get
/// the same answer: nothing in it says which users exist. (That they cost the same work is
/// `password::tests`; how long it takes belongs in a benchmark.)
#[tokio::test]
async fn unknown_passwordless_and_wrong_password_are_refused_alike() {
    let (st, _dir) = state();
    let mut answers = vec![];
    for (user, password) in [("alice", "wrong"), ("nobody", "alice-pw"), ("bob", "")] {
        let e = basic_caller(&st, "127.0.0.2:1000", user, password)
            .await
            .unwrap_err();
        answers.push((e.status, e.message));
    }
    let refused = (StatusCode::UNAUTHORIZED, "authentication failed".to_owned());
    assert_eq!(answers, vec![refused.clone(), refused.clone(), refused]);
    let alice = basic_caller(&st, "127.0.0.2:1000", "alice", "alice-pw").await;
    assert!(
        matches!(&alice, Ok(Actor::User(u)) if u == "alice"),
        "{alice:?}"
    );
}

/// A reason over [`MAX_REASON_BYTES`] is refused with a 400 naming the limit wherever the
/// API takes one, before anything changes; one at the limit is taken. A 1.5 MB reason used
/// to be stored, logged and sent to webhooks whole.
#[tokio::test]
async fn reasons_over_the_limit_are_refused_wherever_they_are_taken() {
    use axum::Json;
    use axum::extract::{Path, State};
    use serde_json::json;

    use super::handlers::{self, MAX_REASON_BYTES};
    use crate::grants::{GrantFilter, GrantStatus, RequestStatus};

    let (st, _dir) = state();
    let admin = || Caller(Actor::Admin);
    let user = |name: &str| Caller(Actor::User(name.into()));
    fn body<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> Json<T> {
        Json(serde_json::from_value(v).unwrap())
    }
    let at_limit = "é".repeat(MAX_REASON_BYTES / 2);
    assert_eq!(at_limit.len(), MAX_REASON_BYTES);
    // One byte over, and over only when counted in bytes, not characters.
    let over = [
        "x".repeat(MAX_REASON_BYTES + 1),
        "é".repeat(MAX_REASON_BYTES / 2 + 1),
    ];
    let refused = |e: super::ApiError, len: usize| {
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{}", e.message);
        assert_eq!(
            e.message,
            format!("reason is too long: {len} bytes, at most {MAX_REASON_BYTES} bytes")
        );
    };
    let grant = |reason: &str| {
        json!({"user": "alice", "target": "pg-prod", "role": "read", "duration": "30m",
               "reason": reason})
    };
    let request = |reason: &str| json!({"target": "pg-prod", "role": "read", "duration": "30m", "reason": reason});

    for long in &over {
        let e = handlers::add_grant(State(st.clone()), admin(), body(grant(long)))
            .await
            .unwrap_err();
        refused(e, long.len());
        let e = handlers::create_request(State(st.clone()), user("alice"), body(request(long)))
            .await
            .unwrap_err();
        refused(e, long.len());
    }
    let all = GrantFilter {
        user: None,
        target: None,
        all: true,
    };
    assert!(
        st.gw
            .grants
            .list_grants(&all, &Actor::Admin)
            .unwrap()
            .is_empty()
    );
    assert!(
        st.gw
            .grants
            .list_requests(false, &Actor::Admin)
            .unwrap()
            .is_empty()
    );

    let g = handlers::add_grant(State(st.clone()), admin(), body(grant(&at_limit)))
        .await
        .unwrap();
    let g = g.0["id"].as_str().unwrap().to_owned();
    let r = handlers::create_request(State(st.clone()), user("alice"), body(request(&at_limit)))
        .await
        .unwrap();
    let r = r.0["id"].as_str().unwrap().to_owned();

    for long in &over {
        let with = || Some(body(json!({ "reason": long })));
        let e = handlers::revoke(State(st.clone()), admin(), Path(g.clone()), with())
            .await
            .unwrap_err();
        refused(e, long.len());
        let e = handlers::deny(State(st.clone()), user("bob"), Path(r.clone()), with())
            .await
            .unwrap_err();
        refused(e, long.len());
        // Refused for its reason before the session is even looked for.
        let e = handlers::kill(State(st.clone()), admin(), Path("s_nope".into()), with())
            .await
            .unwrap_err();
        refused(e, long.len());
    }
    let stored = st.gw.grants.get_grant(&g).unwrap().unwrap();
    assert!(matches!(stored.status, GrantStatus::Live));
    assert_eq!(stored.reason.as_deref(), Some(at_limit.as_str()));
    let pending = st.gw.grants.list_requests(true, &Actor::Admin).unwrap();
    assert_eq!(pending.len(), 1);
    assert!(matches!(pending[0].status, RequestStatus::Pending));

    // At the limit, revoke and deny go through.
    let with = || Some(body(json!({ "reason": at_limit })));
    let revoked = handlers::revoke(State(st.clone()), admin(), Path(g.clone()), with())
        .await
        .unwrap();
    assert_eq!(revoked.0["status"], "revoked", "{}", revoked.0);
    let denied = handlers::deny(State(st.clone()), user("bob"), Path(r.clone()), with())
        .await
        .unwrap();
    assert_eq!(denied.0["status"], "denied", "{}", denied.0);
}
