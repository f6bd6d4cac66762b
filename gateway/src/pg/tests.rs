//! The upstream side against a real PostgreSQL: SCRAM, md5 and cleartext logins with a
//! role's password, a refused password, cancel forwarding and backend termination.

use std::collections::BTreeMap;

use portcullis_config::{PgTlsMode, Role, Secret, Target, TargetKind};
use portcullis_protocol::pg::{BackendMessage, FrontendMessage};
use tokio::io::AsyncWriteExt as _;

use super::cancel::{CancelTarget, send_cancel};
use super::read_message;
use super::upstream::{UpstreamError, connect, terminate_backend};
use crate::testbed::Postgres;

fn target(pg: &Postgres, tls: PgTlsMode) -> Target {
    Target {
        name: "pg".into(),
        kind: TargetKind::Postgres,
        address: format!("127.0.0.1:{}", pg.port),
        database: Some("postgres".into()),
        tls,
        ca_file: None,
        host_key: None,
        max_grant: None,
        approvers: vec![],
        roles: BTreeMap::new(),
    }
}

fn role(user: &str, password: &str) -> Role {
    Role {
        user: user.into(),
        password: Some(Secret::new(password)),
        private_key_file: None,
        private_key: None,
        allow: vec![],
    }
}

/// Roles with md5 and cleartext authentication next to the scram default.
fn setup(pg: &Postgres) {
    pg.create_role("app_scram", "scram-pw").unwrap();
    pg.sql("SET password_encryption = 'md5'; CREATE ROLE app_md5 LOGIN PASSWORD 'md5-pw'")
        .unwrap();
    pg.create_role("app_clear", "clear-pw").unwrap();
    let hba = pg.dir().join("data").join("pg_hba.conf");
    std::fs::write(
        &hba,
        "host all app_md5 127.0.0.1/32 md5\nhost all app_clear 127.0.0.1/32 password\n\
         local all all scram-sha-256\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    pg.sql("select pg_reload_conf()").unwrap();
}

async fn query(io: &mut super::BoxIo, sql: &str) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    FrontendMessage::Query {
        sql: sql.as_bytes(),
    }
    .encode(&mut out);
    io.write_all(&out).await.unwrap();
    let mut got = Vec::new();
    loop {
        let (tag, body) = read_message(io, 1 << 20).await.unwrap();
        let done = tag == b'Z';
        got.push((tag, body));
        if done {
            return got;
        }
    }
}

fn backends_of(pg: &Postgres, user: &str) -> String {
    pg.sql(&format!(
        "select count(*) from pg_stat_activity where usename = '{user}'"
    ))
    .unwrap()
    .trim()
    .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_in_upstream_with_every_password_method() {
    let pg = Postgres::start().unwrap();
    setup(&pg);
    for (tls, user, pw) in [
        (PgTlsMode::Disable, "app_scram", "scram-pw"),
        (PgTlsMode::Prefer, "app_md5", "md5-pw"),
        (PgTlsMode::Disable, "app_clear", "clear-pw"),
    ] {
        let params = vec![(b"application_name".to_vec(), b"portcullis-test".to_vec())];
        let mut up = connect(&target(&pg, tls), &role(user, pw), &params)
            .await
            .unwrap_or_else(|e| panic!("{user}: {e}"));
        assert!(up.pid > 0);
        assert_eq!(up.secret.len(), 4);
        let rows = query(
            &mut up.io,
            "select current_user, current_setting('application_name')",
        )
        .await;
        let row = rows.iter().find(|(t, _)| *t == b'D').expect("a row");
        let text = String::from_utf8_lossy(&row.1);
        assert!(
            text.contains(user) && text.contains("portcullis-test"),
            "{text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_role_password_is_a_clear_refusal() {
    let pg = Postgres::start().unwrap();
    setup(&pg);
    for user in ["app_scram", "app_md5", "app_clear"] {
        let err = connect(&target(&pg, PgTlsMode::Disable), &role(user, "wrong"), &[])
            .await
            .unwrap_err();
        match err {
            UpstreamError::Refused { code, message } => {
                assert_eq!(code, "28P01", "{user}: {message}");
                assert!(
                    message.contains("password authentication failed"),
                    "{message}"
                );
            }
            other => panic!("{user}: {other}"),
        }
    }
    // Nothing listens on a port we just freed.
    let port = crate::testbed::free_port().unwrap();
    let mut t = target(&pg, PgTlsMode::Disable);
    t.address = format!("127.0.0.1:{port}");
    let err = connect(&t, &role("app_scram", "scram-pw"), &[])
        .await
        .unwrap_err();
    assert!(matches!(err, UpstreamError::Connect { .. }), "{err}");
    // The test server has no TLS: `require` must refuse rather than fall back.
    let err = connect(
        &target(&pg, PgTlsMode::Require),
        &role("app_scram", "scram-pw"),
        &[],
    )
    .await
    .unwrap_err();
    assert!(matches!(err, UpstreamError::TlsRefused), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_terminate_reach_the_real_backend() {
    let pg = Postgres::start().unwrap();
    setup(&pg);
    let t = target(&pg, PgTlsMode::Disable);
    let r = role("app_scram", "scram-pw");
    let mut up = connect(&t, &r, &[]).await.unwrap();
    let mut out = Vec::new();
    FrontendMessage::Query {
        sql: b"select pg_sleep(60)",
    }
    .encode(&mut out);
    up.io.write_all(&out).await.unwrap();
    // The query is running once pg_stat_activity shows it; that is the event to wait for.
    while !pg
        .sql("select count(*) from pg_stat_activity where query = 'select pg_sleep(60)' and state = 'active'")
        .unwrap()
        .contains('1')
    {
        tokio::task::yield_now().await;
    }
    send_cancel(&CancelTarget {
        target: t.clone(),
        pid: up.pid,
        secret: up.secret.clone(),
    })
    .await
    .unwrap();
    // RowDescription comes first; the error follows.
    let (tag, body) = loop {
        let (tag, body) = read_message(&mut up.io, 1 << 20).await.unwrap();
        if tag != b'T' {
            break (tag, body);
        }
    };
    let BackendMessage::ErrorResponse(f) = BackendMessage::decode(tag, &body).unwrap() else {
        panic!("expected an error, got {:?}", char::from(tag));
    };
    assert_eq!(f.code(), Some(&b"57014"[..]), "query_canceled");

    assert_eq!(backends_of(&pg, "app_scram"), "1");
    terminate_backend(&t, &r, up.pid).await.unwrap();
    // pg_terminate_backend(pid, 2000) returned only once the backend was gone.
    assert_eq!(backends_of(&pg, "app_scram"), "0");
}

/// Turns TLS on in a running test server with a fresh self-signed certificate for
/// 127.0.0.1; returns the certificate's path (to use as `ca_file`).
fn enable_server_tls(pg: &Postgres) -> std::path::PathBuf {
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    let data = pg.dir().join("data");
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let cert_path = data.join("server.crt");
    let key_path = data.join("server.key");
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The server may run as another OS user (tests as root): hand it the files.
    let meta = std::fs::metadata(&data).unwrap();
    for p in [&cert_path, &key_path] {
        std::os::unix::fs::chown(p, Some(meta.uid()), Some(meta.gid())).unwrap();
    }
    pg.sql("ALTER SYSTEM SET ssl = on").unwrap();
    pg.sql("select pg_reload_conf()").unwrap();
    cert_path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_modes_encrypt_and_verify() {
    let pg = Postgres::start().unwrap();
    setup(&pg);
    let ca = enable_server_tls(&pg);
    let r = role("app_scram", "scram-pw");
    let ssl_in_use = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    // `require` first: it retries until the reload took effect; `prefer` would fall back.
    for mode in [PgTlsMode::Require, PgTlsMode::Prefer, PgTlsMode::VerifyFull] {
        let mut t = target(&pg, mode);
        t.ca_file = Some(ca.clone());
        // pg_reload_conf() is asynchronous: retry until the server offers TLS.
        let mut up = loop {
            match connect(&t, &r, &[]).await {
                Ok(up) => break up,
                Err(UpstreamError::TlsRefused) => tokio::task::yield_now().await,
                Err(e) => panic!("{mode:?}: {e}"),
            }
        };
        let rows = query(&mut up.io, ssl_in_use).await;
        let row = rows.iter().find(|(t, _)| *t == b'D').expect("a row");
        assert!(
            row.1.ends_with(b"t"),
            "{mode:?}: the upstream session is encrypted"
        );
    }
    // verify-full refuses a certificate that does not chain to the configured CA.
    let other = tempfile::NamedTempFile::new().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(other.path(), cert.pem()).unwrap();
    let mut t = target(&pg, PgTlsMode::VerifyFull);
    t.ca_file = Some(other.path().to_path_buf());
    let err = connect(&t, &r, &[]).await.unwrap_err();
    assert!(matches!(err, UpstreamError::TlsHandshake(_)), "{err}");
}
