//! Strict audit durability through the PostgreSQL proxy (SPEC §4, `durability = "strict"`):
//! every statement's record is fsynced before the statement reaches the upstream, its
//! outcome follows as `pg.result`; and when the log cannot take a statement's record, the
//! statement is not run upstream and the client gets an error. In batched mode a log that
//! fails is seen after the fact; from then on no statement runs and the session ends, and a
//! session that sends nothing is closed the moment the log fails.
#![allow(clippy::unwrap_used)]

mod pg_support;

use std::time::Duration;

use pg_support::{ALICE_PW, Harness, output};
use portcullis_config::Durability;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_logs_before_forwarding_and_refuses_when_the_log_fails() {
    // Every append rotates the segment, so removing the audit directory makes the next
    // append fail for real (creating the next segment's seal fails).
    let h = Harness::start_with(Duration::from_secs(60), Durability::Strict, Some(1)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;

    // psql, simple protocol.
    for sql in [
        "create table strict_t (x int)",
        "insert into strict_t values (1)",
        "select count(*) from strict_t",
    ] {
        let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", "disable");
        cmd.args(["-X", "-c", sql]);
        let (ok, out, err) = output(cmd).await;
        assert!(ok, "{sql}: {out}{err}");
    }
    // tokio-postgres, extended protocol with a parameter.
    let (client, conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    let row = client
        .query_one("select x + $1::int from strict_t", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    drop(client);
    conn.await.unwrap().unwrap();

    // Every statement is a pg.query with its sql (and params), then a pg.result with the
    // same stmt number and the outcome; a statement's record comes before its result.
    let events = h.audit_events().await;
    for sql in [
        "create table strict_t (x int)",
        "insert into strict_t values (1)",
        "select count(*) from strict_t",
    ] {
        let (i, q) = events
            .iter()
            .enumerate()
            .find(|(_, e)| e["type"] == "pg.query" && e["sql"] == sql)
            .unwrap_or_else(|| panic!("no pg.query for {sql}: {events:#?}"));
        assert!(!q.contains_key("tag"), "{q:?}");
        let (j, r) = events
            .iter()
            .enumerate()
            .find(|(_, e)| {
                e["type"] == "pg.result" && e["session"] == q["session"] && e["stmt"] == q["stmt"]
            })
            .unwrap_or_else(|| panic!("no pg.result for {sql}: {events:#?}"));
        assert!(i < j);
        assert!(
            r.contains_key("tag") && r.contains_key("duration_us"),
            "{r:?}"
        );
    }
    let q = events
        .iter()
        .find(|e| e["type"] == "pg.query" && e["sql"] == "select x + $1::int from strict_t")
        .unwrap();
    // tokio-postgres binds binary parameters, typed by the server's ParameterDescription:
    // the record, written before the statement runs, shows the value as PostgreSQL prints it.
    assert_eq!(q["params"], serde_json::json!(["41"]));
    assert!(events.iter().any(|e| e["type"] == "pg.result"
        && e["session"] == q["session"]
        && e["stmt"] == q["stmt"]
        && e["tag"] == "SELECT 1"));

    // The log becomes unwritable under a live session: the next statement is refused and
    // never reaches the upstream.
    let (client, conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    break_audit_log(&h).await;
    refused(client, conn, "insert into strict_t values (2)").await;
    assert_eq!(rows(&h, "strict_t"), "1");
    assert!(!h.gw.audit.healthy());

    // psql gets a clear refusal too, and nothing runs.
    let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", "disable");
    cmd.args(["-X", "-c", "insert into strict_t values (3)"]);
    let (ok, _, err) = output(cmd).await;
    assert!(!ok);
    assert!(err.contains("audit log is unavailable"), "{err}");
    assert_eq!(rows(&h, "strict_t"), "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_mode_ends_the_session_once_the_log_has_failed() {
    let h = Harness::start_with(Duration::from_secs(60), Durability::Batched, Some(1)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let (client, conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    client
        .batch_execute("create table batched_t (x int); insert into batched_t values (1)")
        .await
        .unwrap();
    // Batched: the client has its answer before the record is queued. The log must go
    // only after that record is written, or the record, not the next statement's, is the
    // write that fails and the session is closed before the next statement runs.
    wait_logged(&h, "insert into batched_t values (1)").await;
    break_audit_log(&h).await;
    // Batched: this statement runs before its record is written, and that write fails.
    // The simple protocol, so the client leaves no request of its own in flight once it
    // has the answer: tokio-postgres closes an extended-protocol statement afterwards
    // without reading the reply, and a FATAL that arrives as that reply is dropped.
    client
        .batch_execute("insert into batched_t values (2)")
        .await
        .unwrap();
    // The failure is the writer's, on its own thread; a poll bounded by a deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while h.gw.audit.healthy() {
        assert!(std::time::Instant::now() < deadline, "the log never failed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // From now on nothing runs unaudited: the statement is refused and the session ends.
    refused(client, conn, "insert into batched_t values (3)").await;
    assert_eq!(rows(&h, "batched_t"), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_mode_closes_an_idle_session_the_moment_the_log_fails() {
    let h = Harness::start_with(Duration::from_secs(60), Durability::Batched, Some(1)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let (client, conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    client.batch_execute("select 1").await.unwrap();
    // The session now sends nothing more. The log fails on an append of the test's own,
    // so nothing of the session's is what sees the failure.
    break_audit_log(&h).await;
    let err =
        h.gw.audit
            .append(portcullis_recorder::Event::new("test.after"))
            .await;
    assert!(
        err.is_err(),
        "the append after the directory went succeeded"
    );
    // The gateway closes the idle session by itself, with the audit-log FATAL: the client's
    // connection ends without the client sending anything. Bounded so that a gateway that
    // leaves it open fails here instead of hanging.
    let ended = tokio::time::timeout(Duration::from_secs(20), conn)
        .await
        .expect("the idle session was still open 20 s after the log failed");
    let text = format!("{ended:?}");
    assert!(text.contains("audit log is unavailable"), "{text}");
    assert!(client.is_closed());
}

/// Makes the gateway's audit log unwritable under its live sessions: once what they queued
/// is written, the directory goes, so the next append fails (the 1-byte segment limit
/// makes every append create a new segment).
async fn break_audit_log(h: &Harness) {
    h.gw.audit
        .append(portcullis_recorder::Event::new("test.marker"))
        .await
        .unwrap();
    // The writer may still be rotating a segment while the directory goes: retry until it
    // is gone.
    loop {
        match std::fs::remove_dir_all(h.data_dir.join("audit")) {
            Ok(()) => break,
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty => continue,
            Err(e) => panic!("removing the audit dir: {e}"),
        }
    }
}

/// Waits (bounded) until a `pg.query` record whose statement contains `sql` is in the log.
async fn wait_logged(h: &Harness, sql: &str) {
    let dir = h.data_dir.join("audit");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (d, want) = (dir.clone(), sql.to_owned());
        // The writer may be mid-record: an unreadable tail is "not yet".
        let logged = tokio::task::spawn_blocking(move || {
            portcullis_recorder::records(&d).map(|rs| {
                rs.map_while(Result::ok).map(|r| r.event).any(|e| {
                    e["type"] == "pg.query"
                        && e.get("sql")
                            .and_then(|v| v.as_str())
                            .is_some_and(|s| s.contains(&want))
                })
            })
        })
        .await
        .unwrap();
        if matches!(logged, Ok(true)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{sql:?} was never logged"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// `sql` is refused and the session ends with the audit-log error: on the statement itself,
/// or, when the gateway closed the session as soon as the log failed (before the statement
/// was sent), on the connection, whose FATAL arrived first.
async fn refused(
    client: tokio_postgres::Client,
    conn: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    sql: &str,
) {
    let err = client.execute(sql, &[]).await.unwrap_err();
    let ended = conn.await;
    let text = format!("{err:?} / {ended:?}");
    assert!(text.contains("audit log is unavailable"), "{text}");
}

/// The row count of `table`, read directly from PostgreSQL.
fn rows(h: &Harness, table: &str) -> String {
    h.pg.sql(&format!("select count(*) from {table}"))
        .unwrap()
        .trim()
        .to_owned()
}
