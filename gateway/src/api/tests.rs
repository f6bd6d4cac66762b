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
    let st = ApiState {
        gw,
        limiter: Arc::default(),
    };
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
