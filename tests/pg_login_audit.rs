//! What a PostgreSQL login that fails leaves in the audit log: every wrong password, and a
//! malformed exchange, each one `auth.failed` (within the per-client limit on failures); a
//! login the client abandons before any proof, nothing, however often it is done; and a
//! user whose password was right but who is refused all the same (no grant, no such
//! target), one `auth.failed` naming the target and why, as SSH records its refusals.
#![allow(clippy::unwrap_used)]

mod pg_support;

use std::time::Duration;

use pg_support::raw::{first_error, read_error, scram_started, startup};
use pg_support::{ALICE_PW, BOB_PW, Harness};
use portcullis_protocol::pg::encode_sasl_initial_response;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Hangs up the client's side and waits until the gateway has closed its own, which it does
/// only once it is done with the login (its `auth.failed`, if any, appended).
async fn hang_up(mut s: TcpStream) {
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest).await;
}

/// The `auth.failed` records so far, as (user, reason).
async fn failed_logins(h: &Harness) -> Vec<(String, String)> {
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    h.audit_events()
        .await
        .into_iter()
        .filter(|e| e["type"] == "auth.failed")
        .map(|e| (s(&e["user"]), s(&e["reason"])))
        .collect()
}

/// A client that starts SCRAM and hangs up before its proof tried no password: 50 of them
/// write no `auth.failed` and do not count against the limit, while each wrong password
/// among them is still logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logins_abandoned_before_a_proof_write_nothing_and_wrong_passwords_all_do() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let wrong = h.conn_str("alice", "wrong-password", "pg+rw");
    for i in 0..50 {
        // After the SASLInitialResponse, answered with the challenge.
        let (s, _) = scram_started(&h, "alice").await;
        hang_up(s).await;
        // Before it, as psql does to ask for a password it was not given.
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(&startup(&[("user", "mallory"), ("database", "pg")]))
            .await
            .unwrap();
        let mut r = [0u8; 1];
        s.read_exact(&mut r).await.unwrap();
        assert_eq!(&r, b"R", "asked for a password");
        hang_up(s).await;
        if i % 20 == 0 {
            let e = tokio_postgres::connect(&wrong, tokio_postgres::NoTls)
                .await
                .err()
                .expect("wrong password refused");
            assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{e}");
        }
    }
    // psql itself, without a password: it hangs up when asked for one.
    let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", "disable");
    cmd.env_remove("PGPASSWORD").args(["-w", "-c", "select 1"]);
    let (ok, _, err) = pg_support::output(cmd).await;
    assert!(!ok, "{err}");

    // Nothing was guessed: the right password still gets in.
    let (client, _conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    client.simple_query("select 1").await.unwrap();
    drop(client);

    let wrong_pw = (
        "alice".to_owned(),
        "password authentication failed".to_owned(),
    );
    assert_eq!(failed_logins(&h).await, vec![wrong_pw; 3]);
}

/// A malformed exchange tried something, so it is logged; but it counts against the limit
/// as a wrong password does, so a client repeating it cannot flood the log either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_exchanges_are_logged_within_the_limit_on_failures() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let mut codes = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(h.addr).await.unwrap();
        s.write_all(&startup(&[("user", "alice"), ("database", "pg+rw")]))
            .await
            .unwrap();
        // Answered only when asked: a client blocked is refused before that, and bytes it
        // sent that the gateway never read could reset the connection under its error.
        let mut first = vec![0u8; 5];
        s.read_exact(&mut first).await.unwrap();
        let len = u32::from_be_bytes(first[1..].try_into().unwrap());
        first.resize(len as usize + 1, 0);
        s.read_exact(&mut first[5..]).await.unwrap();
        let e = if first[0] == b'R' {
            let mut out = Vec::new();
            encode_sasl_initial_response(&mut out, "SCRAM-SHA-1", b"n,,n=alice,r=abc");
            s.write_all(&out).await.unwrap();
            read_error(&mut s).await
        } else {
            first_error(&first)
        };
        let e = e.expect("an error before the close");
        codes.push(e.1);
    }
    let limit = portcullis_gateway::api::limiter::MAX_FAILURES;
    let mut want = vec!["08P01".to_owned(); limit];
    want.resize(20, "28000".to_owned());
    assert_eq!(
        codes, want,
        "refused for the mechanism, then for the failures"
    );
    let failed = failed_logins(&h).await;
    assert_eq!(failed.len(), limit, "{failed:?}");
    assert!(
        failed
            .iter()
            .all(|(_, why)| why.contains("unsupported SASL mechanism")),
        "{failed:?}"
    );
}

/// A user with the right password who is refused anyway shows in the log: probing targets
/// one holds no grant on used to leave no record at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_the_right_password_is_logged_with_its_target() {
    let h = Harness::start(Duration::from_secs(60)).await;
    for (user, pw, db, code) in [
        ("bob", BOB_PW, "pg+rw", "28000"),
        ("bob", BOB_PW, "pg-nosuch", "3D000"),
        ("bob", BOB_PW, "a+b+c+d", "3D000"),
    ] {
        let e = tokio_postgres::connect(&h.conn_str(user, pw, db), tokio_postgres::NoTls)
            .await
            .err()
            .expect("refused");
        assert_eq!(e.code().map(|c| c.code()), Some(code), "{db}: {e}");
    }
    let s = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    let failed: Vec<_> = h
        .audit_events()
        .await
        .into_iter()
        .filter(|e| e["type"] == "auth.failed")
        .map(|e| (s(&e["user"]), s(&e["target"]), s(&e["reason"])))
        .collect();
    assert_eq!(failed.len(), 3, "{failed:#?}");
    assert_eq!((&*failed[0].0, &*failed[0].1), ("bob", "pg"), "{failed:#?}");
    assert!(failed[0].2.contains("no live grant"), "{failed:#?}");
    assert_eq!(
        (&*failed[1].0, &*failed[1].1),
        ("bob", "pg-nosuch"),
        "{failed:#?}"
    );
    assert!(failed[1].2.contains("unknown target"), "{failed:#?}");
    assert_eq!(
        (&*failed[2].0, &*failed[2].1),
        ("bob", "a+b+c+d"),
        "{failed:#?}"
    );
}
