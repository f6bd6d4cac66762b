//! Hostile and broken inputs to the PostgreSQL proxy: each is answered with a clear error or
//! a clean close, while a healthy client on another connection keeps working.
#![allow(clippy::unwrap_used)]

mod pg_support;

use std::time::Duration;

use pg_support::raw::{
    exchange, raw, raw_login, raw_login_params, raw_login_with_pid, read_error, scram_started,
    startup, wait_no_backend,
};
use pg_support::{ALICE_PW, Harness, output};
use portcullis_protocol::pg::{
    BackendMessage, Bind, FrontendMessage, Parse, encode_password, next_frame,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_clear_errors_and_healthy_clients_keep_working() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    h.grant("alice", "pg-down", "rw", Duration::from_secs(3600))
        .await;
    h.grant("bob", "pg", "badpw", Duration::from_secs(3600))
        .await;
    h.grant("bob", "pg", "ro", Duration::from_secs(3600)).await;

    // The healthy client, connected first and used after every bad input.
    let (healthy, _conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    let mut round = 0i32;
    let mut check_healthy = async || {
        round += 1;
        let row = healthy
            .query_one("select $1::int + 1", &[&round])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), round + 1);
    };

    // Garbage: an HTTP request is read as a startup length far over the limit.
    let e = raw(&h, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    assert_eq!((e.0.as_str(), e.1.as_str()), ("FATAL", "08P01"), "{e:?}");
    assert!(e.2.contains("exceeds the maximum"), "{e:?}");
    check_healthy().await;

    // A startup length of 2^31-1.
    let e = raw(&h, &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0])
        .await
        .unwrap();
    assert!(e.2.contains("exceeds the maximum"), "{e:?}");
    // A length shorter than the length field itself.
    let e = raw(&h, &[0, 0, 0, 2]).await.unwrap();
    assert!(e.2.contains("invalid message length"), "{e:?}");
    check_healthy().await;

    // Unknown protocol version.
    let e = raw(&h, &[0, 0, 0, 8, 0x12, 0x34, 0x56, 0x78])
        .await
        .unwrap();
    assert_eq!(e.1, "0A000", "{e:?}");
    assert!(e.2.contains("unsupported frontend protocol"), "{e:?}");

    // Startup without a user.
    let e = raw(&h, &startup(&[("database", "pg")])).await.unwrap();
    assert_eq!(e.1, "28000");
    assert!(e.2.contains("no PostgreSQL user name"), "{e:?}");
    check_healthy().await;

    // A wrong SCRAM proof (psql with a wrong password), and an unknown user alike.
    for user in ["alice", "mallory"] {
        let mut cmd = h.psql(user, "wrong-password", "pg", "disable");
        cmd.args(["-c", "select 1"]);
        let (ok, _, err) = output(cmd).await;
        assert!(!ok);
        assert!(
            err.contains(&format!(
                "password authentication failed for user \"{user}\""
            )),
            "{err}"
        );
    }
    // A cleartext password where SCRAM was asked for is a protocol error, not a login.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&startup(&[("user", "alice"), ("database", "pg")]))
        .await
        .unwrap();
    let mut out = Vec::new();
    encode_password(&mut out, ALICE_PW.as_bytes());
    s.write_all(&out).await.unwrap();
    let e = read_error(&mut s).await.unwrap();
    assert_eq!(
        (e.0.as_str(), e.1.as_str()),
        ("FATAL", "08P01"),
        "no login without SCRAM: {e:?}"
    );
    check_healthy().await;

    // GSSAPI encryption is declined with 'N' and the client may go on in the clear.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])
        .await
        .unwrap();
    let mut answer = [0u8; 1];
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    s.write_all(&startup(&[("user", "alice"), ("database", "pg")]))
        .await
        .unwrap();
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(
        &answer, b"R",
        "authentication request after the declined GSSENCRequest"
    );
    drop(s);

    // A client vanishing mid-authentication.
    let mut s = TcpStream::connect(h.addr).await.unwrap();
    s.write_all(&startup(&[("user", "alice"), ("database", "pg")]))
        .await
        .unwrap();
    let mut first = [0u8; 16];
    let n = s.read(&mut first).await.unwrap();
    assert_eq!(first[0], b'R', "{:?}", &first[..n]);
    drop(s);
    check_healthy().await;

    // After login: a message length of 2^31-1 is refused without allocating it.
    let mut s = raw_login(&h, "pg+rw").await;
    s.write_all(&[b'Q', 0x7f, 0xff, 0xff, 0xff]).await.unwrap();
    let e = read_error(&mut s).await.unwrap();
    assert_eq!((e.0.as_str(), e.1.as_str()), ("FATAL", "08P01"), "{e:?}");
    check_healthy().await;

    // A role not held and several roles held with none named, each saying how to get in (in
    // PostgreSQL's terms: the role goes in the dbname), an unknown target and a malformed
    // dbname.
    for (user, pw, db, want) in [
        (
            "bob",
            pg_support::BOB_PW,
            "pg+rw",
            "no live grant for bob on pg with role rw; roles held: badpw, ro; \
             request access with: portcullis request create --target pg --role rw --for 1h \
             --reason \"...\" --as bob",
        ),
        // A role the target does not have is not a missing grant.
        (
            "bob",
            pg_support::BOB_PW,
            "pg+nope",
            "target pg has no role nope (its roles: ",
        ),
        // Not a grant on the target at all: the request names the role to choose.
        (
            "carol",
            pg_support::CAROL_PW,
            "pg",
            "no live grant for carol on pg; request access with: portcullis request create \
             --target pg --role ROLE --for 1h --reason \"...\" --as carol (ROLE: one of ",
        ),
        (
            "bob",
            pg_support::BOB_PW,
            "pg",
            "bob holds several roles on pg (badpw, ro); name one: dbname=pg+ROLE",
        ),
        ("alice", ALICE_PW, "nowhere", "unknown target nowhere"),
        ("alice", ALICE_PW, "pg+rw+x", "too many '+'"),
    ] {
        let mut cmd = h.psql(user, pw, db, "disable");
        cmd.args(["-c", "select 1"]);
        let (ok, _, err) = output(cmd).await;
        assert!(!ok);
        assert!(err.contains(want), "{db}: {err}");
    }
    check_healthy().await;

    // Upstream down, and upstream refusing the role's password.
    let mut cmd = h.psql("alice", ALICE_PW, "pg-down", "disable");
    cmd.args(["-c", "select 1"]);
    let (ok, _, err) = output(cmd).await;
    assert!(!ok);
    assert!(
        err.contains("cannot open a session on pg-down") && err.contains("cannot connect"),
        "{err}"
    );
    let mut cmd = h.psql("bob", pg_support::BOB_PW, "pg+badpw", "disable");
    cmd.args(["-c", "select 1"]);
    let (ok, _, err) = output(cmd).await;
    assert!(!ok);
    // The user is told the gateway's credential was refused, not the upstream's words
    // about it, which name the account the gateway logs in as.
    assert!(
        err.contains(
            "cannot open a session on pg as role badpw: the server refused the gateway's \
             credentials for the role (SQLSTATE 28P01); tell an operator"
        ),
        "{err}"
    );
    assert!(!err.contains("password authentication failed"), "{err}");
    // The upstream said 28P01 about the gateway's credential; the user's own password was
    // right, so a driver must not be told 28P01.
    let e = tokio_postgres::connect(
        &h.conn_str("bob", pg_support::BOB_PW, "pg+badpw"),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(e.code().map(|c| c.code()), Some("08004"), "{e}");
    check_healthy().await;
    drop(healthy);

    let events = h.audit_events().await;
    // The operator finds the upstream's own words about the refused credential in the
    // session's record.
    assert!(
        events.iter().any(|e| e["type"] == "session.ended"
            && e["role"] == "badpw"
            && e["error"]
                .as_str()
                .is_some_and(|m| m.contains("password authentication failed"))),
        "{events:#?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "auth.failed" && e["user"] == "mallory"),
        "failed logins are audited"
    );
}

/// A login the upstream refuses after the gateway accepted it (PostgreSQL rejects a setting
/// the client passed through `options`) is audited as a session that started and ended in
/// error, the upstream's own message in `error`, never as a `session.ended` alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_refusing_the_login_is_a_started_session_ended_in_error() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", "disable");
    cmd.env("PGOPTIONS", "-c nosuch_guc=1")
        .args(["-c", "select 1"]);
    let (ok, _, err) = output(cmd).await;
    assert!(!ok);
    assert!(
        err.contains("server refused the login") && err.contains("nosuch_guc"),
        "{err}"
    );

    // A driver sees the upstream's own SQLSTATE (42704 undefined_object), not a generic
    // one; a refused role password stays 08004 (the credential is the gateway's).
    let refused = |config: &str| {
        let config = config.to_owned();
        async move {
            match tokio_postgres::connect(&config, tokio_postgres::NoTls).await {
                Ok(_) => panic!("login accepted: {config}"),
                Err(e) => e.code().map(|c| c.code().to_owned()),
            }
        }
    };
    let options = format!(
        "{} options='-c nosuch_guc=1'",
        h.conn_str("alice", ALICE_PW, "pg+rw")
    );
    assert_eq!(refused(&options).await.as_deref(), Some("42704"));

    let events = h.audit_events().await;
    let ended = events
        .iter()
        .position(|e| e["type"] == "session.ended")
        .unwrap_or_else(|| panic!("no session.ended: {events:#?}"));
    let e = &events[ended];
    assert_eq!(e["reason"], "error", "{e:?}");
    let error = e["error"].as_str().unwrap_or("");
    assert!(
        error.contains("server refused the login") && error.contains("nosuch_guc"),
        "{e:?}"
    );
    let started = events[..ended]
        .iter()
        .find(|s| s["type"] == "session.started" && s["session"] == e["session"])
        .unwrap_or_else(|| panic!("session.ended without session.started: {events:#?}"));
    assert_eq!(
        started["startup"]["options"], "-c nosuch_guc=1",
        "{started:?}"
    );
}

/// A client cannot make the log name other SQL than the statement that ran: not with a
/// Parse the server refused, not with a Close and Parse it skipped, not by redefining a
/// statement in SQL. A query of several statements lists every tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_names_the_sql_that_ran_whatever_the_client_redefines() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let mut s = raw_login(&h, "pg+rw").await;
    let q = |sql: &'static str| FrontendMessage::Query {
        sql: sql.as_bytes(),
    };
    let parse = |name: &'static str, sql: &'static str| {
        FrontendMessage::Parse(Parse {
            name: name.as_bytes(),
            sql: sql.as_bytes(),
            param_types: &[],
        })
    };
    let bind = |name: &'static str| {
        FrontendMessage::Bind(Bind {
            portal: b"",
            statement: name.as_bytes(),
            param_formats: &[],
            param_count: 0,
            param_values: &[],
            result_formats: &[],
        })
    };
    let exec = FrontendMessage::Execute {
        portal: b"",
        max_rows: 0,
    };
    let sync = FrontendMessage::Sync;
    let run = |name| [bind(name), exec, FrontendMessage::Sync];

    let several = "create table victim (i int); insert into victim select generate_series(1, 9); \
                   delete from victim where i > 7; select * from victim";
    assert_eq!(
        exchange(&mut s, &[q(several)], 1).await,
        ["CREATE TABLE", "INSERT 0 9", "DELETE 2", "SELECT 7"]
    );
    // A refused re-Parse (42P05: the name is taken) leaves s1 running the DELETE.
    let del = "delete from victim where i <= 1";
    assert_eq!(
        exchange(&mut s, &[parse("s1", del), sync], 1).await,
        Vec::<String>::new()
    );
    assert_eq!(
        exchange(&mut s, &[parse("s1", "select 1"), sync], 1).await,
        ["42P05"]
    );
    assert_eq!(exchange(&mut s, &run("s1"), 1).await, ["DELETE 1"]);
    // A Close and a Parse the server skips after an earlier error change nothing.
    assert_eq!(exchange(&mut s, &[q("select 1/0")], 1).await, ["22012"]);
    let batch = [
        FrontendMessage::Execute {
            portal: b"nope",
            max_rows: 0,
        },
        FrontendMessage::Close {
            kind: b'S',
            name: b"s1",
        },
        parse("s1", "select 'harmless'"),
        sync,
    ];
    assert_eq!(exchange(&mut s, &batch, 1).await, ["34000"]);
    assert_eq!(exchange(&mut s, &run("s1"), 1).await, ["DELETE 0"]);
    // Redefined in SQL: the execution runs, and is logged as, the new body.
    let redefine = q("deallocate s1");
    assert_eq!(exchange(&mut s, &[redefine], 1).await, ["DEALLOCATE"]);
    let prepare = q("prepare s1 as delete from victim where i <= 3");
    assert_eq!(exchange(&mut s, &[prepare], 1).await, ["PREPARE"]);
    assert_eq!(exchange(&mut s, &run("s1"), 1).await, ["DELETE 2"]);
    assert_eq!(
        exchange(&mut s, &[q("discard all")], 1).await,
        ["DISCARD ALL"]
    );
    assert_eq!(
        exchange(
            &mut s,
            &[q("prepare s9 as delete from victim; select 1")],
            1
        )
        .await,
        ["PREPARE", "SELECT 1"]
    );
    assert_eq!(exchange(&mut s, &run("s9"), 1).await, ["DELETE 4"]);
    drop(s);

    let events = h.audit_events().await;
    let queries: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "pg.query")
        .map(|e| {
            let outcome = e.get("tag").or(e.get("error")).cloned().unwrap_or_default();
            (e["sql"].as_str().unwrap_or("").to_owned(), outcome)
        })
        .collect();
    let want: Vec<(String, serde_json::Value)> = [
        (several, "SELECT 7"),
        ("select 1", "42P05"),
        (del, "DELETE 1"),
        ("select 1/0", "22012"),
        ("<portal \"nope\">", "34000"),
        (del, "DELETE 0"),
        ("deallocate s1", "DEALLOCATE"),
        ("prepare s1 as delete from victim where i <= 3", "PREPARE"),
        ("delete from victim where i <= 3", "DELETE 2"),
        ("discard all", "DISCARD ALL"),
        ("prepare s9 as delete from victim; select 1", "SELECT 1"),
        // Which statement a query of several defined is not known: logged by name.
        ("<prepared statement \"s9\">", "DELETE 4"),
    ]
    .into_iter()
    .map(|(s, o)| (s.to_owned(), o.into()))
    .collect();
    assert_eq!(queries, want);
    let first = events
        .iter()
        .find(|e| e["type"] == "pg.query" && e["sql"] == several)
        .unwrap();
    assert_eq!(
        first["tags"],
        serde_json::json!(["CREATE TABLE", "INSERT 0 9", "DELETE 2", "SELECT 7"])
    );
}

/// Nor with a Bind the server refused: inside a transaction, portal `p` is bound to a
/// DELETE; binding `p` again to a harmless SELECT is refused (42P03, the portal exists);
/// after a rollback to the savepoint, executing `p` runs the DELETE, and the log says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_bind_does_not_rename_the_portal_that_runs() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let mut s = raw_login(&h, "pg+rw").await;
    let q = |sql: &'static str| FrontendMessage::Query {
        sql: sql.as_bytes(),
    };
    let parse = |name: &'static str, sql: &'static str| {
        FrontendMessage::Parse(Parse {
            name: name.as_bytes(),
            sql: sql.as_bytes(),
            param_types: &[],
        })
    };
    let bind = |statement: &'static str| {
        FrontendMessage::Bind(Bind {
            portal: b"p",
            statement: statement.as_bytes(),
            param_formats: &[],
            param_count: 0,
            param_values: &[],
            result_formats: &[],
        })
    };
    let sync = FrontendMessage::Sync;
    let setup = "create temp table victim (i int); insert into victim values (1), (2), (3); \
                 begin";
    assert_eq!(
        exchange(&mut s, &[q(setup)], 1).await,
        ["CREATE TABLE", "INSERT 0 3", "BEGIN"]
    );
    let batch = [parse("del", "delete from victim"), bind("del"), sync];
    assert_eq!(exchange(&mut s, &batch, 1).await, Vec::<String>::new());
    assert_eq!(
        exchange(&mut s, &[q("savepoint s")], 1).await,
        ["SAVEPOINT"]
    );
    let batch = [
        parse("harmless", "select 'harmless'"),
        bind("harmless"),
        sync,
    ];
    assert_eq!(exchange(&mut s, &batch, 1).await, ["42P03"]);
    assert_eq!(
        exchange(&mut s, &[q("rollback to s")], 1).await,
        ["ROLLBACK"]
    );
    let exec = FrontendMessage::Execute {
        portal: b"p",
        max_rows: 0,
    };
    assert_eq!(exchange(&mut s, &[exec, sync], 1).await, ["DELETE 3"]);
    assert_eq!(exchange(&mut s, &[q("commit")], 1).await, ["COMMIT"]);

    // The same sent in one write, the Execute before the refusal is seen.
    let setup = "insert into victim values (4), (5); begin";
    assert_eq!(
        exchange(&mut s, &[q(setup)], 1).await,
        ["INSERT 0 2", "BEGIN"]
    );
    assert_eq!(
        exchange(&mut s, &[bind("del"), sync], 1).await,
        Vec::<String>::new()
    );
    assert_eq!(
        exchange(&mut s, &[q("savepoint s")], 1).await,
        ["SAVEPOINT"]
    );
    let pipelined = [bind("harmless"), sync, q("rollback to s"), exec, sync];
    assert_eq!(
        exchange(&mut s, &pipelined, 3).await,
        ["42P03", "ROLLBACK", "DELETE 2"]
    );
    assert_eq!(exchange(&mut s, &[q("commit")], 1).await, ["COMMIT"]);
    drop(s);
    h.wait_sessions_closed().await;

    let events = h.audit_events().await;
    for tag in ["DELETE 3", "DELETE 2"] {
        let ran = events
            .iter()
            .find(|e| e["type"] == "pg.query" && e.get("tag") == Some(&tag.into()))
            .unwrap_or_else(|| panic!("the {tag} is not logged: {events:#?}"));
        assert_eq!(ran["sql"], "delete from victim", "{ran:?}");
    }
}

/// Nor with a portal of a transaction that has ended: `c` is bound and run, the implicit
/// transaction ends and takes it; then `c` is a cursor declared in SQL, executed through
/// the protocol. Its execution is logged by name, not as what `c` was bound to before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_portal_of_an_ended_transaction_is_not_logged_for_a_cursor_of_its_name() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let mut s = raw_login(&h, "pg+rw").await;
    let exec = FrontendMessage::Execute {
        portal: b"c",
        max_rows: 0,
    };
    let sync = FrontendMessage::Sync;
    let batch = [
        FrontendMessage::Parse(Parse {
            name: b"",
            sql: b"select 'bound'",
            param_types: &[],
        }),
        FrontendMessage::Bind(Bind {
            portal: b"c",
            statement: b"",
            param_formats: &[],
            param_count: 0,
            param_values: &[],
            result_formats: &[],
        }),
        exec,
        sync,
    ];
    assert_eq!(exchange(&mut s, &batch, 1).await, ["SELECT 1"]);
    let declare = FrontendMessage::Query {
        sql: b"begin; declare c cursor for select 'declared' from generate_series(1, 2)",
    };
    assert_eq!(
        exchange(&mut s, &[declare], 1).await,
        ["BEGIN", "DECLARE CURSOR"]
    );
    assert_eq!(exchange(&mut s, &[exec, sync], 1).await, ["SELECT 2"]);
    drop(s);
    h.wait_sessions_closed().await;

    let events = h.audit_events().await;
    let fetched = events
        .iter()
        .find(|e| e["type"] == "pg.query" && e.get("tag") == Some(&"SELECT 2".into()))
        .unwrap_or_else(|| panic!("the cursor's execution is not logged: {events:#?}"));
    assert_eq!(fetched["sql"], "<portal \"c\">", "{fetched:?}");
}

/// The process id a client is given is its backend's, as directly: `pg_backend_pid()` and
/// the process id of a notification the session sent itself match it (clients use that
/// to ignore their own notifications). The cancel key's secret stays the gateway's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_process_id_a_client_sees_is_its_backends() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let (mut s, pid) = raw_login_with_pid(&h, "pg+rw").await;
    let mut out = Vec::new();
    FrontendMessage::Query {
        sql: b"listen ch; notify ch; select pg_backend_pid()::text",
    }
    .encode(&mut out);
    s.write_all(&out).await.unwrap();
    let (mut buf, mut notified, mut backend) = (Vec::new(), None, None);
    loop {
        let mut chunk = [0u8; 4096];
        let n = s.read(&mut chunk).await.unwrap();
        assert!(n > 0, "gateway closed");
        buf.extend_from_slice(&chunk[..n]);
        let mut ready = false;
        while let Ok(Some((f, used))) = next_frame(&buf) {
            match BackendMessage::decode(f.tag, f.body).unwrap() {
                BackendMessage::NotificationResponse { pid, .. } => notified = Some(pid),
                // One column: count, length, then the text.
                BackendMessage::Other { tag: b'D', body } => {
                    backend = std::str::from_utf8(&body[6..]).unwrap().parse::<i32>().ok();
                }
                BackendMessage::ReadyForQuery { .. } => ready = true,
                _ => {}
            }
            buf.drain(..used);
        }
        if ready && notified.is_some() {
            break;
        }
    }
    assert_eq!(
        backend,
        Some(pid),
        "pg_backend_pid() against BackendKeyData"
    );
    assert_eq!(
        notified,
        Some(pid),
        "a notification's sender against BackendKeyData"
    );
}

/// The salt the gateway's SCRAM challenge shows `user`, read before any password is sent.
async fn challenge_salt(h: &Harness, user: &str) -> String {
    let (_, server_first) = scram_started(h, user).await;
    server_first
        .split(',')
        .find_map(|a| a.strip_prefix("s="))
        .unwrap_or_else(|| panic!("no salt in {server_first:?}"))
        .to_owned()
}

/// The challenge shows a user's salt before any password is checked. A real user's salt
/// never changes, so neither may the salt shown for a name that does not exist (or has no
/// password), or two connections would tell which users exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_salt_shown_does_not_tell_which_users_exist() {
    let h = Harness::start(Duration::from_secs(60)).await;
    for user in ["alice", "mallory"] {
        let first = challenge_salt(&h, user).await;
        let again = challenge_salt(&h, user).await;
        assert_eq!(first, again, "{user}");
    }
    assert_ne!(
        challenge_salt(&h, "mallory").await,
        challenge_salt(&h, "mallory2").await
    );
}

/// No walsender gets through, however the client asks for one: a `replication` parameter
/// sent twice is judged by the value the upstream acts on (the last), and every spelling of
/// true is refused, while the spellings PostgreSQL reads as false log in as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replication_connection_is_refused_however_it_is_asked_for() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    // The upstream would serve a walsender to this role: only the gateway stands in the way.
    h.pg.sql("ALTER ROLE app_rw REPLICATION").unwrap();
    let login = [("user", "alice"), ("database", "pg+rw")];
    let asks: [&[(&str, &str)]; 5] = [
        &[("replication", "database")],
        &[("replication", "false"), ("replication", "database")],
        &[("replication", "0"), ("replication", "true")],
        &[("replication", "TRUE")],
        &[("replication", "yes")],
    ];
    for ask in asks {
        let params: Vec<(&str, &str)> = login.iter().chain(ask).copied().collect();
        let refused = tokio::time::timeout(Duration::from_secs(10), raw(&h, &startup(&params)))
            .await
            .unwrap_or_else(|_| panic!("{ask:?}: not refused at once"));
        let (severity, code, message) = refused.unwrap_or_else(|| panic!("{ask:?}: no error"));
        assert_eq!(
            (severity.as_str(), code.as_str()),
            ("FATAL", "0A000"),
            "{ask:?}: {message}"
        );
        assert!(
            message.contains("replication connections are not supported"),
            "{ask:?}: {message}"
        );
    }
    for no in ["false", "FALSE", "off", "no", "0"] {
        let params: Vec<(&str, &str)> = login
            .iter()
            .copied()
            .chain([("replication", "true"), ("replication", no)])
            .collect();
        let (mut s, _) = raw_login_params(&h, &params).await;
        let q = FrontendMessage::Query { sql: b"select 1" };
        assert_eq!(exchange(&mut s, &[q], 1).await, ["SELECT 1"], "{no}");
    }
}

/// A client that pipelines more than it reads and then stops reading leaves the backend
/// blocked writing answers nobody takes, its input full: it takes no Terminate. A revoke
/// still ends the session, and the backend goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoke_closes_a_session_whose_client_stopped_reading() {
    let h = Harness::start(Duration::from_secs(60)).await;
    let grant = h
        .grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let (mut s, _) = raw_login_params(&h, &[("user", "alice"), ("database", "pg+rw")]).await;
    let mut batch = Vec::new();
    for _ in 0..1000 {
        FrontendMessage::Query {
            sql: b"select repeat('x', 1000)",
        }
        .encode(&mut batch);
    }
    // Until the gateway takes no more: every buffer on the way back is full.
    while tokio::time::timeout(Duration::from_secs(1), s.write_all(&batch))
        .await
        .is_ok()
    {}
    h.gw.grants
        .revoke(&grant, &portcullis_gateway::grants::Actor::Admin, None)
        .await
        .unwrap();
    h.wait_sessions_closed().await;
    wait_no_backend(&h, "app_rw").await;
    assert_eq!(h.ended_reasons().await, ["grant_revoked"]);
    drop(s);
}

/// A client that breaks the protocol while not reading its answers cannot keep the session
/// (and the backend, and its locks) by never taking the FATAL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_ends_the_session_of_a_client_that_does_not_read() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let (mut s, _) = raw_login_params(&h, &[("user", "alice"), ("database", "pg+rw")]).await;
    let mut q = Vec::new();
    FrontendMessage::Query {
        sql: b"select repeat('x', 1000) from generate_series(1, 1000000)",
    }
    .encode(&mut q);
    s.write_all(&q).await.unwrap();
    // The backend is blocked writing rows nobody reads.
    let probe = "select count(*) from pg_stat_activity \
                 where usename = 'app_rw' and wait_event = 'ClientWrite'";
    while h.pg.sql(probe).unwrap().trim() != "1" {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A Query whose length cannot be.
    s.write_all(b"Q\0\0\0\x03").await.unwrap();
    h.wait_sessions_closed().await;
    wait_no_backend(&h, "app_rw").await;
    drop(s);
}

/// Password guessing is limited per client: after five wrong passwords from one address
/// even the right one is refused for a while, with a sentence saying why. A client that
/// hangs up before proving anything (psql without a password, before it prompts) guessed
/// nothing and does not count. A name over a kilobyte long is logged cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_guessing_is_limited_per_client() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    for _ in 0..6 {
        let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", "disable");
        cmd.env_remove("PGPASSWORD").args(["-w", "-c", "select 1"]);
        let (ok, _, err) = output(cmd).await;
        assert!(!ok, "{err}");
    }
    let right = h.conn_str("alice", ALICE_PW, "pg+rw");
    let (client, conn) = tokio_postgres::connect(&right, tokio_postgres::NoTls)
        .await
        .expect("hanging up before a proof is not a guess");
    drop(client);
    let _ = conn.await;
    // A pool opening 20 connections at once from one address is not guessing.
    let pool = (0..20).map(|_| tokio_postgres::connect(&right, tokio_postgres::NoTls));
    for r in futures::future::join_all(pool).await {
        let (client, conn) = r.expect("a pool's logins at once are all let in");
        drop(client);
        let _ = conn.await;
    }

    let long = "m".repeat(1_500);
    for user in ["alice", "alice", "alice", "alice", long.as_str()] {
        let e = tokio_postgres::connect(
            &h.conn_str(user, "wrong-password", "pg+rw"),
            tokio_postgres::NoTls,
        )
        .await
        .err()
        .expect("wrong password refused");
        assert_eq!(e.code().map(|c| c.code()), Some("28P01"), "{e}");
    }
    let e = tokio_postgres::connect(&right, tokio_postgres::NoTls)
        .await
        .err()
        .expect("locked out");
    assert_eq!(e.code().map(|c| c.code()), Some("28000"), "{e}");
    let said = e.as_db_error().map(|d| d.message()).unwrap_or_default();
    assert!(said.contains("too many failed logins"), "{said}");

    let events = h.audit_events().await;
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "auth.failed" && e["reason"] == "password authentication failed")
        .collect();
    assert_eq!(
        failed.len(),
        5,
        "the refusals past the limit are not logged"
    );
    let logged = failed[4]["user"].as_str().unwrap_or("");
    assert!(
        logged.starts_with("mmm") && logged.len() < 300,
        "{}",
        logged.len()
    );
}

/// One client cannot hold the listener with connections that never log in: past its cap
/// (64 logging in at once) its next connection is closed at once, while a client at
/// another address logs in as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_fill_the_listener_with_idle_logins() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", Duration::from_secs(3600))
        .await;
    let from_other = || async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        s.connect(h.addr).await.unwrap()
    };
    let mut idle = Vec::new();
    for _ in 0..64 {
        idle.push(from_other().await);
    }
    let mut over = from_other().await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), over.read_to_end(&mut buf)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "the 65th idle connection was not closed: {read:?}"
    );
    // Everyone else is served (psql connects from 127.0.0.1).
    let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", "disable");
    cmd.args(["-c", "select 1"]);
    let (ok, _, err) = output(cmd).await;
    assert!(ok, "{err}");
    drop(idle);
}
