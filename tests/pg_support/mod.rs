//! An in-process gateway in front of a real PostgreSQL for the pg proxy tests: the real
//! listener, grants engine and audit log, driven by real clients (psql, pgbench,
//! tokio-postgres). Grants are created through the grants engine directly, as the admin API
//! would.
#![allow(dead_code, clippy::unwrap_used)]

pub mod raw;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::{
    AuditSection, Config, Durability, GatewaySection, Listen, Notify, PgTlsMode, Policy, Role,
    Secret, Target, TargetKind, User,
};
use portcullis_gateway::context::Shared;
use portcullis_gateway::grants::{Actor, NewGrant};
use portcullis_gateway::keys;
use portcullis_gateway::testbed::Postgres;

pub const ALICE_PW: &str = "alice-gateway-pw";
pub const BOB_PW: &str = "bob-gateway-pw";
/// A non-ASCII password whose SASLprep differs from its bytes (ROMAN NUMERAL NINE, a
/// no-break space, a decomposed umlaut).
pub const CAROL_PW: &str = "\u{2168}-pa\u{0308}ss\u{00A0}word";
pub const RW_PW: &str = "app-rw-upstream-pw";

pub struct Harness {
    pub pg: Postgres,
    pub gw: Shared,
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    _dir: tempfile::TempDir,
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

impl Harness {
    /// PostgreSQL with roles `app_rw` (owner of the public schema's test objects) and
    /// `app_ro`, a gateway with users alice and bob, target `pg` (roles rw, ro) and target
    /// `pg-down` pointing at a closed port.
    pub async fn start(warn_before: Duration) -> Harness {
        Self::start_with(warn_before, Durability::Batched, None).await
    }

    /// [`Harness::start`] with the given audit durability and, when set, a segment size
    /// limit (a limit of 1 byte makes every append rotate, so an audit directory removed
    /// under the gateway fails the very next append).
    pub async fn start_with(
        warn_before: Duration,
        durability: Durability,
        segment_max_bytes: Option<u64>,
    ) -> Harness {
        let pg = tokio::task::spawn_blocking(|| {
            let pg = Postgres::start().unwrap();
            pg.create_role("app_rw", RW_PW).unwrap();
            pg.create_role("app_ro", "app-ro-pw").unwrap();
            pg.sql("GRANT ALL ON SCHEMA public TO app_rw").unwrap();
            pg
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let data_dir = dir.path().join("data");
        keys::ensure_data_dir(&data_dir).unwrap();
        let mut roles = BTreeMap::new();
        roles.insert("rw".to_string(), role("app_rw", RW_PW));
        roles.insert("ro".to_string(), role("app_ro", "app-ro-pw"));
        roles.insert("badpw".to_string(), role("app_ro", "not-the-password"));
        let target = |name: &str, address: String| Target {
            name: name.into(),
            kind: TargetKind::Postgres,
            address,
            database: Some("postgres".into()),
            tls: PgTlsMode::Prefer,
            ca_file: None,
            host_key: None,
            max_grant: None,
            approvers: vec![],
            roles: roles.clone(),
        };
        let down_port = portcullis_gateway::testbed::free_port().unwrap();
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let config = Arc::new(Config {
            gateway: GatewaySection {
                data_dir: data_dir.clone(),
            },
            listen: Listen {
                ssh: any,
                postgres: any,
                admin: any,
            },
            tls: None,
            policy: Policy {
                max_grant: Duration::from_secs(8 * 3600),
                warn_before,
                approvers: vec![],
            },
            audit: AuditSection { durability },
            notify: Notify::default(),
            users: vec![
                User {
                    name: "alice".into(),
                    ssh_keys: vec![],
                    password_scram: Some(portcullis_protocol::scram::generate_verifier(ALICE_PW)),
                },
                User {
                    name: "bob".into(),
                    ssh_keys: vec![],
                    password_scram: Some(portcullis_protocol::scram::generate_verifier(BOB_PW)),
                },
                User {
                    name: "carol".into(),
                    ssh_keys: vec![],
                    password_scram: Some(portcullis_protocol::scram::generate_verifier(CAROL_PW)),
                },
            ],
            targets: vec![
                target("pg", format!("127.0.0.1:{}", pg.port)),
                target("pg-down", format!("127.0.0.1:{down_port}")),
            ],
            warnings: vec![],
        });
        let tls = keys::tls_server_config(&data_dir, None).unwrap();
        let mut opts = portcullis_recorder::Options::new(match durability {
            Durability::Batched => portcullis_recorder::Durability::Batched,
            Durability::Strict => portcullis_recorder::Durability::Strict,
        });
        if let Some(max) = segment_max_bytes {
            opts.segment_max_bytes = max;
        }
        let gw = portcullis_gateway::testbed::in_process_gateway(config, opts).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(portcullis_gateway::pg::listen(listener, gw.clone(), tls));
        Harness {
            pg,
            gw,
            addr,
            data_dir,
            _dir: dir,
        }
    }

    /// Grants `user` access to `target` as `role` for `secs` seconds; returns the grant id.
    pub async fn grant(&self, user: &str, target: &str, role: &str, duration: Duration) -> String {
        self.gw
            .grants
            .add_grant(
                NewGrant {
                    user: user.into(),
                    target: target.into(),
                    role: Some(role.into()),
                    duration,
                    reason: Some("test".into()),
                },
                &Actor::Admin,
            )
            .await
            .unwrap()
            .id
    }

    /// A psql command through the gateway.
    pub fn psql(
        &self,
        user: &str,
        password: &str,
        dbname: &str,
        sslmode: &str,
    ) -> tokio::process::Command {
        let mut std_cmd =
            portcullis_gateway::testbed::postgres::psql(self.addr.port(), user, password, dbname);
        std_cmd
            .env("PGCONNECT_TIMEOUT", "20")
            .env("PGSSLMODE", sslmode);
        let mut cmd = tokio::process::Command::from(std_cmd);
        cmd.kill_on_drop(true);
        cmd
    }

    /// A tokio-postgres client through the gateway, its connection driven by a spawned task
    /// (awaiting the handle tells when the connection has ended).
    pub async fn client(
        &self,
        user: &str,
        password: &str,
        dbname: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        let (client, conn) = tokio_postgres::connect(
            &self.conn_str(user, password, dbname),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        (client, tokio::spawn(conn))
    }

    /// A tokio-postgres connection string through the gateway.
    pub fn conn_str(&self, user: &str, password: &str, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={dbname} sslmode=disable",
            self.addr.port()
        )
    }

    /// Waits until no session is registered: a session deregisters only after its last
    /// audit event is appended. Nothing signals this from outside, so it polls (bounded).
    pub async fn wait_sessions_closed(&self) {
        for _ in 0..1000 {
            if self.gw.grants.sessions(&Actor::Admin).is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "sessions still open: {:?}",
            self.gw.grants.sessions(&Actor::Admin)
        );
    }

    /// Every audit event written so far, oldest first, once all sessions have closed.
    pub async fn audit_events(&self) -> Vec<serde_json::Map<String, serde_json::Value>> {
        self.wait_sessions_closed().await;
        let seq = self
            .gw
            .audit
            .append(portcullis_recorder::Event::new("test.marker"))
            .await
            .unwrap();
        let dir = self.data_dir.join("audit");
        tokio::task::spawn_blocking(move || {
            portcullis_recorder::records(&dir)
                .unwrap()
                .map(|r| r.unwrap())
                .take_while(|r| r.seq < seq)
                .map(|r| r.event)
                .collect()
        })
        .await
        .unwrap()
    }

    /// The `reason` of every `session.ended` so far, oldest first, once all sessions have
    /// closed.
    pub async fn ended_reasons(&self) -> Vec<String> {
        self.audit_events()
            .await
            .into_iter()
            .filter(|e| e["type"] == "session.ended")
            .map(|e| e["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    /// Backends of an upstream role, per pg_stat_activity.
    pub async fn backends_of(&self, role: &str) -> u32 {
        let sql = format!("select count(*) from pg_stat_activity where usename = '{role}'");
        let out = self.pg.sql(&sql).unwrap();
        out.trim().parse().unwrap()
    }
}

/// Runs a command to completion and returns (success, stdout, stderr).
pub async fn output(mut cmd: tokio::process::Command) -> (bool, String, String) {
    let out = cmd.output().await.unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
