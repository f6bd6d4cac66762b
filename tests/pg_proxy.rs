//! The PostgreSQL proxy end to end: real psql, pgbench and tokio-postgres through the real
//! listener, grants engine and audit log, in front of a real PostgreSQL.
#![allow(clippy::unwrap_used)]

mod pg_support;

use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _, TryStreamExt as _};
use pg_support::{ALICE_PW, Harness, output};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const HOUR: Duration = Duration::from_secs(3600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_works_with_and_without_tls() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    for sslmode in ["disable", "require"] {
        let script = "create table if not exists t (id int primary key, v text);\n\
             truncate t;\n\
             insert into t values (1, 'one'), (2, 'two');\n\
             begin; insert into t values (3, 'three'); rollback;\n\
             begin; insert into t values (4, 'four'); commit;\n\
             select string_agg(v, ',' order by id) from t;\n\
             \\d t\n\
             select ssl from pg_stat_ssl where pid = pg_backend_pid();\n";
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("script.sql");
        std::fs::write(&file, script).unwrap();
        let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", sslmode);
        cmd.arg("-f").arg(&file);
        let (ok, out, err) = output(cmd).await;
        assert!(ok, "sslmode={sslmode}: {err}");
        assert!(out.contains("one,two,four"), "{out}");
        assert!(out.contains("id|integer"), "\\d output: {out}");

        // An error, then a query on the same connection that recovers.
        let mut cmd = h.psql("alice", ALICE_PW, "pg", sslmode);
        cmd.args([
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "select 1/0",
            "-c",
            "select 'recovered'",
        ]);
        let (_, out, err) = output(cmd).await;
        assert!(err.contains("division by zero"), "{err}");
        assert!(out.contains("recovered"), "{out}");

        // The client's TLS state, as psql itself reports it.
        let mut cmd = h.psql("alice", ALICE_PW, "pg", sslmode);
        cmd.args(["-c", "\\conninfo"]);
        let (ok, out, err) = output(cmd).await;
        assert!(ok, "{err}");
        assert_eq!(
            out.contains("SSL connection"),
            sslmode == "require",
            "{out}"
        );
    }

    // A login's own settings (libpq's PGOPTIONS, application_name) reach the upstream and
    // are in the session's audit record: a role or setting chosen at login is seen there.
    let mut cmd = h.psql("alice", ALICE_PW, "pg", "prefer");
    cmd.env("PGOPTIONS", "-c statement_timeout=12345")
        .env("PGAPPNAME", "startup-check")
        .args(["-c", "show statement_timeout"]);
    let (ok, out, err) = output(cmd).await;
    assert!(ok, "{err}");
    assert!(out.contains("12345ms"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.csv");
    let mut cmd = h.psql("alice", ALICE_PW, "pg", "prefer");
    cmd.arg("-c")
        .arg(format!("\\copy t to '{}' csv", file.display()));
    let (ok, _, err) = output(cmd).await;
    assert!(ok, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap().lines().count(), 3);
    let script = dir.path().join("in.sql");
    std::fs::write(
        &script,
        format!(
            "create table t2 (id int, v text);\n\\copy t2 from '{}' csv\nselect count(*) from t2;\n",
            file.display()
        ),
    )
    .unwrap();
    let mut cmd = h.psql("alice", ALICE_PW, "pg", "prefer");
    cmd.arg("-f").arg(&script);
    let (ok, out, err) = output(cmd).await;
    assert!(ok, "{err}");
    assert!(out.trim().ends_with('3'), "{out}");

    // \lo_import writes a large object through libpq's fast-path FunctionCalls, which run
    // server functions without any SQL text: each must still be audited.
    let mut cmd = h.psql("alice", ALICE_PW, "pg", "prefer");
    cmd.arg("-c")
        .arg(format!("\\lo_import '{}'", file.display()));
    let (ok, out, err) = output(cmd).await;
    assert!(ok, "{out}{err}");

    let events = h.audit_events().await;
    let calls: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "pg.query")
        .filter(|e| {
            e["sql"]
                .as_str()
                .unwrap_or("")
                .starts_with("<fastpath function call")
        })
        .collect();
    assert!(calls.len() >= 3, "open, write, close at least: {events:#?}");
    assert!(calls.iter().all(|e| e.get("error").is_none()), "{calls:#?}");
    assert!(
        calls
            .iter()
            .any(|e| e["params"].as_array().is_some_and(|p| !p.is_empty())),
        "{calls:#?}"
    );
    let queries: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "pg.query")
        .filter_map(|e| e["sql"].as_str())
        .collect();
    assert!(
        queries.iter().any(|q| q.contains("select 1/0")),
        "{queries:?}"
    );
    assert!(
        queries
            .iter()
            .any(|q| q.contains("COPY") || q.contains("copy")),
        "{queries:?}"
    );
    let err = events
        .iter()
        .find(|e| e["type"] == "pg.query" && e["sql"] == "select 1/0")
        .unwrap();
    assert_eq!(err["error"], "22012");
    assert_eq!(err["user"], "alice");
    assert_eq!(err["target"], "pg");
    assert!(events.iter().any(|e| e["type"] == "session.started"));
    let started = events
        .iter()
        .find(|e| {
            e["type"] == "session.started" && e["startup"]["application_name"] == "startup-check"
        })
        .unwrap_or_else(|| panic!("no session.started naming the login's settings: {events:#?}"));
    assert_eq!(started["startup"]["options"], "-c statement_timeout=12345");
    assert!(started["startup"].get("user").is_none(), "{started:?}");
    assert!(started["startup"].get("database").is_none(), "{started:?}");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "session.ended" && e["reason"] == "client_closed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_extended_protocol_copy_and_notify() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    let (client, mut conn) = tokio_postgres::connect(
        &h.conn_str("alice", ALICE_PW, "pg+rw"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    // Drive the connection ourselves to see its notifications.
    let (tx, mut notices) = futures::channel::mpsc::unbounded();
    let stream = futures::stream::poll_fn(move |cx| conn.poll_message(cx))
        .map_err(|e| -> futures::channel::mpsc::SendError { panic!("{e}") });
    tokio::spawn(stream.forward(tx));

    client
        .batch_execute("create table k (id int, name text, data bytea)")
        .await
        .unwrap();
    // Prepared statement, text and binary parameters (tokio-postgres sends binary).
    let insert = client
        .prepare("insert into k values ($1, $2, $3)")
        .await
        .unwrap();
    for i in 0..5i32 {
        client
            .execute(
                &insert,
                &[&i, &format!("n{i}"), &vec![0xde_u8, 0xad, i as u8]],
            )
            .await
            .unwrap();
    }
    let row = client
        .query_one(
            "select sum(id)::int, count(*)::int from k where name like $1",
            &[&"n%"],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i32>(0), row.get::<_, i32>(1)), (10, 5));

    // Pipelined: several queries in flight at once on one connection.
    let s = client.prepare("select $1::int * 2").await.unwrap();
    let args: Vec<i32> = (0..20).collect();
    let params: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> =
        args.iter().map(|i| [i as _]).collect();
    let futs: Vec<_> = params.iter().map(|p| client.query_one(&s, p)).collect();
    let rows = futures::future::try_join_all(futs).await.unwrap();
    let doubled: Vec<i32> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(doubled, (0..20).map(|i| i * 2).collect::<Vec<_>>());

    // COPY IN and OUT.
    let sink = client
        .copy_in("copy k (id, name) from stdin")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"100\tcopied\n101\tcopied\n"))
        .await
        .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    let out = client
        .copy_out("copy (select name from k where id >= 100 order by id) to stdout")
        .await
        .unwrap();
    let chunks: Vec<bytes::Bytes> = out.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), b"copied\ncopied\n");

    // LISTEN/NOTIFY through the proxy.
    client.batch_execute("listen chan").await.unwrap();
    client.batch_execute("notify chan, 'hello'").await.unwrap();
    let note = loop {
        match notices.next().await.unwrap() {
            tokio_postgres::AsyncMessage::Notification(n) => break n,
            _ => continue,
        }
    };
    assert_eq!((note.channel(), note.payload()), ("chan", "hello"));

    // A failing statement in the middle of a pipeline, then recovery.
    let bad = client.query("select 1/0", &[]).await.unwrap_err();
    assert_eq!(
        bad.code(),
        Some(&tokio_postgres::error::SqlState::DIVISION_BY_ZERO)
    );
    assert_eq!(
        client
            .query_one("select 7", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        7
    );
    drop(client);

    let events = h.audit_events().await;
    let inserts: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "pg.query" && e["sql"] == "insert into k values ($1, $2, $3)")
        .collect();
    let all: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "pg.query")
        .map(|e| (e["sql"].clone(), e.get("params").cloned()))
        .collect();
    assert_eq!(inserts.len(), 5, "one pg.query per Execute: {all:#?}");
    // tokio-postgres sends every parameter in binary format, typed by the server's
    // ParameterDescription: logged as PostgreSQL prints them (a bytea as hex).
    let p = inserts[2]["params"].as_array().unwrap();
    assert_eq!(p[0], "2");
    assert_eq!(p[1], "n2");
    assert_eq!(p[2], "\\xdead02");
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "pg.query" && e.get("copy_bytes") == Some(&22.into())),
        "COPY IN counted"
    );
    // tokio-postgres sends a Sync behind the COPY's Execute and another after CopyDone; the
    // server ignores the first. Every statement after it keeps its own outcome.
    let outcome = |sql: &str| {
        let e = events
            .iter()
            .find(|e| e["type"] == "pg.query" && e["sql"] == sql)
            .unwrap_or_else(|| panic!("no pg.query for {sql}: {all:#?}"));
        e.get("tag").or(e.get("error")).cloned().unwrap_or_default()
    };
    assert_eq!(outcome("copy k (id, name) from stdin"), "COPY 2");
    assert_eq!(
        outcome("copy (select name from k where id >= 100 order by id) to stdout"),
        "COPY 2"
    );
    assert_eq!(outcome("listen chan"), "LISTEN");
    assert_eq!(outcome("select 1/0"), "22012");
    assert_eq!(outcome("select 7"), "SELECT 1");
}

/// A parameter sent as the raw binary bytes given, whatever type the server asks for.
#[derive(Debug)]
struct RawBinary(Vec<u8>);

impl tokio_postgres::types::ToSql for RawBinary {
    fn to_sql(
        &self,
        _: &tokio_postgres::types::Type,
        out: &mut bytes::BytesMut,
    ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        out.extend_from_slice(&self.0);
        Ok(tokio_postgres::types::IsNull::No)
    }

    fn accepts(_: &tokio_postgres::types::Type) -> bool {
        true
    }

    tokio_postgres::types::to_sql_checked!();
}

/// Binary parameters are logged as the text PostgreSQL itself prints for them: the server
/// casts each to text and the test compares that with the logged parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_parameters_are_logged_as_postgres_prints_them() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    let (client, _conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    client.batch_execute("set timezone = 'UTC'").await.unwrap();
    let days = |d: i32| RawBinary(d.to_be_bytes().to_vec());
    let micros = |us: i64| RawBinary(us.to_be_bytes().to_vec());
    let numeric = |words: &[u16]| RawBinary(words.iter().flat_map(|w| w.to_be_bytes()).collect());
    let uuid = RawBinary((0u8..16).map(|b| b * 17).collect());
    let jsonb = RawBinary(b"\x01{\"a\": [1, 2]}".to_vec());
    // 1 year 2 mons 1 day 01:01:01.000005, and 13:14:15 at +05:30 (the wire counts the
    // offset in seconds west of UTC).
    let interval = RawBinary(
        [
            &3_661_000_005i64.to_be_bytes()[..],
            &1i32.to_be_bytes(),
            &14i32.to_be_bytes(),
        ]
        .concat(),
    );
    let timetz = RawBinary(
        [
            &47_655_000_000i64.to_be_bytes()[..],
            &(-19_800i32).to_be_bytes(),
        ]
        .concat(),
    );
    let cases: Vec<(&str, Box<dyn tokio_postgres::types::ToSql + Sync>)> = vec![
        ("int2", Box::new(-7i16)),
        ("int4", Box::new(i32::MIN)),
        ("int8", Box::new(9_007_199_254_740_993i64)),
        ("bool", Box::new(true)),
        ("float8", Box::new(0.1f64)),
        ("float4", Box::new(-2.5f32)),
        ("float4", Box::new(0.1f32)),
        ("float8", Box::new(1.0f64)),
        ("float8", Box::new(1e300f64)),
        ("float8", Box::new(-1.5e-7f64)),
        ("float4", Box::new(1e6f32)),
        ("text", Box::new("caf\u{e9} \"quoted\"")),
        ("varchar", Box::new("v")),
        ("bytea", Box::new(vec![0u8, 0xff])),
        ("oid", Box::new(4_000_000_000u32)),
        ("uuid", Box::new(uuid)),
        ("date", Box::new(days(9829))),
        ("date", Box::new(days(-730_120))),
        ("time", Box::new(micros(45_296_000_100))),
        (
            "timestamp",
            Box::new(micros(9829 * 86_400_000_000 + 36_000_123_450)),
        ),
        ("timestamptz", Box::new(micros(-1))),
        (
            "numeric",
            Box::new(numeric(&[3, 0, 0x4000, 5, 123, 4567, 8000])),
        ),
        ("numeric", Box::new(numeric(&[1, 2, 0, 0, 42]))),
        ("numeric", Box::new(numeric(&[1, 0xfffe, 0, 10, 12]))),
        ("jsonb", Box::new(jsonb)),
        ("int4[]", Box::new(vec![Some(1i32), None, Some(-3)])),
        (
            "text[]",
            Box::new(vec![
                "plain",
                "a b",
                "",
                "NULL",
                "q\"uote",
                "back\\slash",
                "{,}",
            ]),
        ),
        ("interval", Box::new(interval)),
        ("timetz", Box::new(timetz)),
        ("inet", Box::new(RawBinary(vec![2, 24, 0, 4, 10, 1, 2, 3]))),
        (
            "cidr",
            Box::new(RawBinary(vec![
                3, 64, 1, 16, 0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ])),
        ),
    ];
    let mut printed = Vec::new();
    for (i, (ty, value)) in cases.iter().enumerate() {
        let sql = format!("select $1::{ty}::text as case_{i}");
        let row = client
            .query_one(sql.as_str(), &[value.as_ref()])
            .await
            .unwrap();
        printed.push((sql, row.get::<_, String>(0)));
    }
    drop(client);

    let events = h.audit_events().await;
    for (sql, want) in printed {
        let ev = events
            .iter()
            .find(|e| e["type"] == "pg.query" && e["sql"] == sql.as_str())
            .unwrap_or_else(|| panic!("no pg.query for {sql}"));
        assert_eq!(ev["params"], serde_json::json!([want]), "{sql}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_a_running_query() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    let (client, _conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    let token = client.cancel_token();
    let sleeper = tokio::spawn(async move { client.simple_query("select pg_sleep(30)").await });
    // Wait until the query runs upstream, then cancel it as psql's Ctrl-C does.
    while h
        .pg
        .sql("select count(*) from pg_stat_activity where query = 'select pg_sleep(30)' and state = 'active'")
        .unwrap()
        .trim()
        != "1"
    {
        tokio::task::yield_now().await;
    }
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let err = sleeper.await.unwrap().unwrap_err();
    assert_eq!(
        err.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED)
    );

    // A cancel with a made-up key is ignored, and the raw socket is simply closed.
    let mut s = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut msg = Vec::new();
    portcullis_protocol::pg::encode_cancel_request(&mut msg, 1234, &[1, 2, 3, 4]);
    s.write_all(&msg).await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(s.read(&mut buf).await.unwrap(), 0);

    // Over TLS (libpq 17 sends its cancel so) the gateway ends the stream with close_notify,
    // whatever the key: a clean end, not an unexpected EOF.
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut tls = ssl_request(&h, tcp).await;
    tls.write_all(&msg).await.unwrap();
    let mut rest = Vec::new();
    tls.read_to_end(&mut rest)
        .await
        .unwrap_or_else(|e| panic!("a cancel over TLS did not end cleanly: {e}"));
}

/// A psql killed mid-query (its terminal closed, `kill -9`) has closed its side, over TLS
/// (no close_notify) as in the clear: the log says `client_closed`, not a gateway error.
/// PostgreSQL runs the statement to its end all the same (it would directly too), and the
/// log says how it ended, not that it was interrupted: QA found an UPDATE that committed
/// logged as interrupted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_killed_mid_query_closed_the_session_itself() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    for (i, sslmode) in ["require", "disable"].into_iter().enumerate() {
        let sql = format!("select pg_sleep(1), {i}");
        let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", sslmode);
        cmd.args(["-c", &sql]);
        let mut psql = cmd.spawn().unwrap();
        let running = format!(
            "select count(*) from pg_stat_activity where query = '{sql}' and state = 'active'"
        );
        while h.pg.sql(&running).unwrap().trim() != "1" {
            tokio::task::yield_now().await;
        }
        psql.start_kill().unwrap();
        psql.wait().await.unwrap();
        h.wait_sessions_closed().await;
    }
    let events = h.audit_events().await;
    let ended: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "session.ended")
        .filter_map(|e| e.get("reason").and_then(|r| r.as_str()))
        .collect();
    assert_eq!(ended, ["client_closed", "client_closed"], "{events:#?}");
    for i in 0..2 {
        let q = events
            .iter()
            .find(|e| e["type"] == "pg.query" && e["sql"] == format!("select pg_sleep(1), {i}"))
            .unwrap_or_else(|| panic!("query {i} not logged: {events:#?}"));
        assert_eq!(q["tag"], "SELECT 1", "{q:?}");
        assert!(q.get("error").is_none(), "{q:?}");
    }
}

/// An SSLRequest on `tcp`, then the TLS handshake the gateway's 'S' invites.
async fn ssl_request(
    h: &Harness,
    mut tcp: tokio::net::TcpStream,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    tcp.write_all(&[0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])
        .await
        .unwrap();
    let mut s = [0u8; 1];
    tcp.read_exact(&mut s).await.unwrap();
    assert_eq!(s[0], b'S');
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    client_tls(h, false).connect(name, tcp).await.unwrap()
}

/// The gateway's self-signed certificate, trusted as its own root.
fn client_tls(h: &Harness, alpn: bool) -> tokio_rustls::TlsConnector {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let cert =
        CertificateDer::from_pem_file(h.data_dir.join(portcullis_gateway::keys::TLS_CERT_FILE))
            .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if alpn {
        config.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_the_postgresql_alpn_and_verify_full_works() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut startup = Vec::new();
    portcullis_protocol::pg::encode_startup(
        &mut startup,
        [
            (&b"user"[..], &b"alice"[..]),
            (&b"database"[..], &b"pg"[..]),
        ],
    );

    // PostgreSQL 17 `sslnegotiation=direct`: TLS from the first byte, ALPN postgresql.
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let mut tls = client_tls(&h, true)
        .connect(name.clone(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"postgresql"[..]));
    tls.write_all(&startup).await.unwrap();
    let mut first = [0u8; 1];
    tls.read_exact(&mut first).await.unwrap();
    assert_eq!(first[0], b'R', "authentication request over direct TLS");

    // Without the ALPN the gateway closes the connection before any login.
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    if let Ok(mut tls) = client_tls(&h, false).connect(name, tcp).await {
        let _ = tls.write_all(&startup).await;
        let mut buf = Vec::new();
        let _ = tls.read_to_end(&mut buf).await;
        assert!(!buf.starts_with(b"R"), "no login without ALPN");
    }

    // psql verifying the gateway's certificate and host name.
    let mut cmd = h.psql("alice", ALICE_PW, "pg", "verify-full");
    cmd.env(
        "PGSSLROOTCERT",
        h.data_dir.join(portcullis_gateway::keys::TLS_CERT_FILE),
    )
    .args(["-c", "select 'verified'"]);
    let (ok, out, err) = output(cmd).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "verified");
}

/// An ErrorResponse too long for the relay to assemble whole (a `raise` with a 2 MB message)
/// still fails its statement in the log, with its SQLSTATE and the start of its message,
/// over the simple and the extended protocol; it is not logged as a success, nor as skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_failing_with_a_huge_error_is_logged_as_failed() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    let (client, _conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    let sql = "do $$ begin raise exception 'huge %', repeat('x', 2000000); end $$";
    let simple = client.batch_execute(sql).await.unwrap_err();
    assert_eq!(
        simple.code(),
        Some(&tokio_postgres::error::SqlState::RAISE_EXCEPTION)
    );
    let extended = client.execute(sql, &[]).await.unwrap_err();
    assert_eq!(
        extended.code(),
        Some(&tokio_postgres::error::SqlState::RAISE_EXCEPTION)
    );
    // The session goes on as it would directly.
    let row = client.query_one("select 41 + 1", &[]).await.unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    drop(client);
    h.wait_sessions_closed().await;

    let events = h.audit_events().await;
    let logged: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "pg.query" && e["sql"] == sql)
        .collect();
    assert_eq!(logged.len(), 2, "{logged:#?}");
    for e in logged {
        assert_eq!(e.get("error"), Some(&serde_json::json!("P0001")), "{e:?}");
        assert!(!e.contains_key("tag"), "{e:?}");
        let message = e.get("error_message").and_then(|m| m.as_str());
        let message = message.unwrap_or_default();
        assert!(message.starts_with("huge xxx"), "{e:?}");
        assert!(
            message.len() < 2048,
            "the message is capped: {}",
            message.len()
        );
    }
}

/// psql in a LATIN1 terminal (`PGCLIENTENCODING=LATIN1`) sends `é` as one byte that is not
/// UTF-8. PostgreSQL converts it and runs the statement; the log keeps the text (lossy) and,
/// in `sql_bytes`, exactly the bytes psql sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_in_a_non_utf8_client_encoding_is_logged_with_its_bytes() {
    use base64::Engine as _;
    use std::os::unix::ffi::OsStrExt as _;
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    let sql: &[u8] = b"select 'caf\xe9' = U&'caf\\00E9' as same";
    let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", "disable");
    cmd.env("PGCLIENTENCODING", "LATIN1")
        .args(["-X", "-A", "-t", "-c"])
        .arg(std::ffi::OsStr::from_bytes(sql));
    let (ok, out, err) = output(cmd).await;
    assert!(ok, "{out}{err}");
    assert_eq!(out.trim(), "t", "PostgreSQL read the LATIN1 é as é: {err}");
    h.wait_sessions_closed().await;

    let events = h.audit_events().await;
    let q = events
        .iter()
        .find(|e| e["type"] == "pg.query" && e.contains_key("sql_bytes"))
        .unwrap_or_else(|| panic!("no pg.query with sql_bytes: {events:#?}"));
    assert_eq!(q["sql"], "select 'caf\u{fffd}' = U&'caf\\00E9' as same");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(q["sql_bytes"].as_str().unwrap())
        .unwrap();
    assert_eq!(bytes, sql);
    assert_eq!(q["tag"], "SELECT 1");
}

/// A statement behind comment padding (as QA hid a DELETE behind the old 16 KiB cap, and
/// could behind the 1 MiB the relay once parsed) is logged whole: the reviewer sees what
/// ran, not only the padding. psql reads the 2 MiB one from a file (an argument that long
/// is more than Linux passes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_padded_past_any_small_cap_is_logged_whole() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    let dir = tempfile::tempdir().unwrap();
    let mut sent = Vec::new();
    for (i, padding) in [100 << 10, 2 << 20].into_iter().enumerate() {
        let sql = format!(
            "/*{}*/ select 'hidden behind the padding {i}' as revealed",
            " ".repeat(padding)
        );
        let file = dir.path().join(format!("{i}.sql"));
        std::fs::write(&file, format!("{sql};\n")).unwrap();
        let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", "disable");
        cmd.args(["-X", "-A", "-t", "-f"]).arg(&file);
        let (ok, out, err) = output(cmd).await;
        assert!(ok, "{out}{err}");
        assert_eq!(out.trim(), format!("hidden behind the padding {i}"));
        sent.push(format!("{sql};"));
    }
    h.wait_sessions_closed().await;

    let events = h.audit_events().await;
    let logged: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "pg.query" && e.get("tag") == Some(&"SELECT 1".into()))
        .filter_map(|e| e.get("sql").and_then(|s| s.as_str()))
        .collect();
    assert_eq!(logged.len(), 2, "two statements: {}", logged.len());
    for (logged, sent) in logged.iter().zip(&sent) {
        assert_eq!(logged.len(), sent.len());
        assert!(logged == sent, "logged whole");
    }
}

/// A statement longer than the gateway logs whole (16 MiB) is refused before any of it goes
/// upstream: psql is told why (in the clear and over TLS), the statement did not run, the
/// log says what was refused, and the gateway goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_statement_too_long_to_log_whole_is_refused_and_not_run() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    let (client, _conn) = h.client("alice", ALICE_PW, "pg+rw").await;
    client
        .batch_execute("create table refused_t (i int)")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("big.sql");
    let sql = format!(
        "/*{}*/ insert into refused_t values (1);\n",
        " ".repeat(17 << 20)
    );
    std::fs::write(&file, &sql).unwrap();
    for sslmode in ["disable", "require"] {
        let mut cmd = h.psql("alice", ALICE_PW, "pg+rw", sslmode);
        cmd.args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-f"])
            .arg(&file);
        let (ok, out, err) = output(cmd).await;
        assert!(!ok, "psql must fail: {out}");
        assert!(
            err.contains("refused and not run") && err.contains("16 MiB"),
            "psql ({sslmode}) says why: {err}"
        );
    }

    // Nothing ran, and the gateway still serves this session and new ones.
    let n: i64 = client
        .query_one("select count(*) from refused_t", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the refused insert did not run");
    let (other, _conn2) = h.client("alice", ALICE_PW, "pg+rw").await;
    other.batch_execute("select 1").await.unwrap();
    drop((client, other));
    h.wait_sessions_closed().await;

    let events = h.audit_events().await;
    let refused = events
        .iter()
        .find(|e| e["type"] == "pg.query" && e.get("error") == Some(&"54000".into()))
        .unwrap_or_else(|| panic!("no refused pg.query"));
    let logged = refused["sql"].as_str().unwrap_or_default();
    assert!(logged.starts_with("/*  "), "the start of the statement");
    assert!(logged.ends_with("[truncated]"), "marked as cut");
    assert!(!refused.contains_key("tag"));
    let ended: Vec<_> = events
        .iter()
        .filter(|e| e["type"] == "session.ended")
        .filter_map(|e| e.get("reason").and_then(|r| r.as_str()))
        .collect();
    assert!(ended.contains(&"error"), "{ended:?}");
}

/// Logs in as alice on `io` (a stream past its SSLRequest) with the real SCRAM client.
async fn login_on<S>(io: &mut S, dbname: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use portcullis_protocol::pg::{
        Authentication, BackendMessage, encode_sasl_initial_response, encode_sasl_response,
        next_frame,
    };
    let mut startup = Vec::new();
    portcullis_protocol::pg::encode_startup(
        &mut startup,
        [
            (&b"user"[..], &b"alice"[..]),
            (&b"database"[..], dbname.as_bytes()),
        ],
    );
    io.write_all(&startup).await.unwrap();
    let mut scram = portcullis_protocol::scram::ScramClient::new(ALICE_PW);
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 4096];
        let n = io.read(&mut chunk).await.unwrap();
        assert!(n > 0, "gateway closed during login");
        buf.extend_from_slice(&chunk[..n]);
        while let Ok(Some((f, used))) = next_frame(&buf) {
            let mut out = Vec::new();
            match BackendMessage::decode(f.tag, f.body).unwrap() {
                BackendMessage::Authentication(Authentication::Sasl { .. }) => {
                    encode_sasl_initial_response(&mut out, "SCRAM-SHA-256", &scram.client_first())
                }
                BackendMessage::Authentication(Authentication::SaslContinue(d)) => {
                    encode_sasl_response(&mut out, &scram.server_first(d).unwrap())
                }
                BackendMessage::Authentication(Authentication::SaslFinal(d)) => {
                    scram.server_final(d).unwrap()
                }
                BackendMessage::ReadyForQuery { .. } => return,
                BackendMessage::ErrorResponse(e) => panic!("{:?}", e.message()),
                _ => {}
            }
            buf.drain(..used);
            io.write_all(&out).await.unwrap();
        }
    }
}

/// A TLS client that says goodbye (Terminate) in the middle of a large COPY TO STDOUT and
/// closes: the rest of the COPY still comes from the upstream and is dropped, and the
/// session ends in the log like any other; QA saw the relay panic when the write of those
/// answers went through and only its flush failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_client_leaving_mid_copy_out_ends_its_session_in_the_log() {
    let h = Harness::start(Duration::from_secs(60)).await;
    h.grant("alice", "pg", "rw", HOUR).await;
    let rounds = 5;
    for _ in 0..rounds {
        let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
        let mut tls = ssl_request(&h, tcp).await;
        login_on(&mut tls, "pg+rw").await;
        let mut q = Vec::new();
        portcullis_protocol::pg::FrontendMessage::Query {
            sql: b"copy (select repeat('x', 1000) from generate_series(1, 200000)) to stdout",
        }
        .encode(&mut q);
        tls.write_all(&q).await.unwrap();
        let mut some = vec![0u8; 256 * 1024];
        tls.read_exact(&mut some).await.unwrap();
        // Every buffer on the way is full: the gateway waits to write to the client.
        let blocked = "select count(*) from pg_stat_activity \
                       where usename = 'app_rw' and wait_event = 'ClientWrite'";
        while h.pg.sql(blocked).unwrap().trim() != "1" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut bye = Vec::new();
        portcullis_protocol::pg::encode_terminate(&mut bye);
        tls.write_all(&bye).await.unwrap();
        tls.flush().await.unwrap();
        // Closed with the COPY still arriving: the gateway's next writes fail.
        drop(tls);
        h.wait_sessions_closed().await;
    }
    let events = h.audit_events().await;
    let ended = events
        .iter()
        .filter(|e| e["type"] == "session.ended")
        .count();
    assert_eq!(ended, rounds, "{events:#?}");
}
