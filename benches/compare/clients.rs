//! In-process clients for the kill figures: 50 tokio-postgres or russh sessions in this
//! process, each running the same sleep as the `psql`/`ssh` processes, each noting the
//! moment its connection ended.
//!
//! Why both: the issue measures "revoke → client socket closed". A client process's exit
//! comes later, by however long 50 processes take to be scheduled, print and exit on the
//! same 2 cores (the direct column shows that teardown alone). These clients see the close
//! itself, so their figure is the gateway's part; the process figure stays beside it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::task::JoinHandle;

use crate::setup::{Env, PG_ROLE, PG_ROLE_PW, USER, USER_PW};

/// Which server the clients connect to, and how.
#[derive(Clone, Copy)]
pub enum Path {
    GatewayPg,
    DirectPg,
    /// Runs this remote command (unique to the run, so it can be counted upstream).
    GatewaySsh,
    DirectSsh,
}

/// Running clients; dropping them stops their runtime (and closes what is still open).
pub struct Clients {
    rt: tokio::runtime::Runtime,
    tasks: Vec<JoinHandle<anyhow::Result<SystemTime>>>,
}

impl Clients {
    /// Starts `n` clients by `path`; each runs `pg_sql` (PostgreSQL) or `ssh_command` (SSH).
    pub fn start(
        env: &Env,
        path: Path,
        n: usize,
        pg_sql: &str,
        ssh_command: &str,
    ) -> anyhow::Result<Clients> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("kill-clients")
            .build()?;
        let mut tasks = Vec::with_capacity(n);
        for _ in 0..n {
            let task = match path {
                Path::GatewayPg | Path::DirectPg => {
                    let mut config = tokio_postgres::Config::new();
                    config.host("127.0.0.1");
                    match path {
                        Path::GatewayPg => config
                            .port(env.gw.bound.postgres.port())
                            .user(USER)
                            .password(USER_PW)
                            .dbname("pg-bench"),
                        _ => config
                            .port(env.pg.port)
                            .user(PG_ROLE)
                            .password(PG_ROLE_PW)
                            .dbname("bench"),
                    };
                    rt.spawn(pg_client(config, pg_sql.to_owned()))
                }
                Path::GatewaySsh | Path::DirectSsh => {
                    let (addr, key, login) = match path {
                        Path::GatewaySsh => (
                            env.gw.bound.ssh,
                            env.user_key.clone(),
                            format!("{USER}+web"),
                        ),
                        _ => (
                            ([127, 0, 0, 1], env.sshd.port).into(),
                            env.sshd.client_key_path.clone(),
                            env.sshd.user.clone(),
                        ),
                    };
                    let key = russh::keys::load_secret_key(&key, None)
                        .with_context(|| format!("loading {}", key.display()))?;
                    rt.spawn(ssh_client(
                        addr,
                        Arc::new(key),
                        login,
                        ssh_command.to_owned(),
                    ))
                }
            };
            tasks.push(task);
        }
        Ok(Clients { rt, tasks })
    }

    /// When each client's connection ended, waiting at most `limit` for all of them.
    pub fn ended(self, limit: Duration) -> anyhow::Result<Vec<SystemTime>> {
        let Clients { rt, tasks } = self;
        rt.block_on(async {
            let all = futures::future::join_all(tasks);
            let done = tokio::time::timeout(limit, all)
                .await
                .context("not every client's connection ended")?;
            done.into_iter()
                .map(|r| r.context("client task panicked")?)
                .collect()
        })
    }
}

/// Runs `sql` until the server ends the session; the moment it did.
async fn pg_client(config: tokio_postgres::Config, sql: String) -> anyhow::Result<SystemTime> {
    let (client, conn) = config
        .connect(tokio_postgres::NoTls)
        .await
        .context("postgres client connects")?;
    let conn = tokio::spawn(conn);
    // Resolves (with the FATAL, or the closed connection) when the session is ended.
    let ran = client.simple_query(&sql).await;
    let at = SystemTime::now();
    anyhow::ensure!(
        ran.is_err(),
        "the sleep finished: the session was not ended"
    );
    let _ = conn.await;
    Ok(at)
}

struct AcceptAny;

impl russh::client::Handler for AcceptAny {
    type Error = russh::Error;
    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Runs `command` until the server ends the connection; the moment the channel ended.
async fn ssh_client(
    addr: std::net::SocketAddr,
    key: Arc<russh::keys::PrivateKey>,
    login: String,
    command: String,
) -> anyhow::Result<SystemTime> {
    let config = Arc::new(russh::client::Config::default());
    let mut h = russh::client::connect(config, addr, AcceptAny)
        .await
        .context("ssh client connects")?;
    let auth = h
        .authenticate_publickey(login, russh::keys::PrivateKeyWithHashAlg::new(key, None))
        .await?;
    anyhow::ensure!(auth.success(), "ssh client authentication refused");
    let mut ch = h.channel_open_session().await?;
    ch.exec(true, command).await?;
    loop {
        match ch.wait().await {
            None | Some(russh::ChannelMsg::Close) => return Ok(SystemTime::now()),
            Some(_) => {}
        }
    }
}
