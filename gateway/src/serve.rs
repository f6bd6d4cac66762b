//! `portcullis serve`: prepares the data dir, opens the audit log and grant table, binds the
//! three listeners, reloads the config on SIGHUP (the demo stops instead), runs until SIGINT/SIGTERM, then shuts down
//! through the one kill path.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::Config;
use portcullis_recorder::{AuditLog, Durability, Event};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::Gateway;
use crate::grants::Grants;
use crate::keys;
use crate::reload::{self, ConfigSource};
use crate::unended;

/// File in the data dir naming the addresses actually bound (useful with port 0).
pub const LISTEN_FILE: &str = "listen.json";

/// The addresses `serve` actually bound, as written to `<data_dir>/listen.json`.
#[derive(Debug, Clone, Copy, serde::Deserialize, serde::Serialize)]
pub struct Bound {
    pub ssh: SocketAddr,
    pub postgres: SocketAddr,
    pub admin: SocketAddr,
}

impl Bound {
    /// Reads `<data_dir>/listen.json` of a running gateway.
    pub fn read(data_dir: &Path) -> Option<Bound> {
        let text = std::fs::read_to_string(data_dir.join(LISTEN_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }
}

/// Why the gateway could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A listener could not bind (in use, not permitted, bad address).
    #[error("listen.{name} {addr}: {source}")]
    Bind {
        name: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// A key, certificate or token in the data dir.
    #[error(transparent)]
    Keys(#[from] keys::KeyError),
    /// The audit log could not be opened.
    #[error(transparent)]
    Audit(#[from] portcullis_recorder::AuditError),
    /// The grant store could not be opened.
    #[error(transparent)]
    Grants(#[from] crate::grants::GrantsError),
    /// Anything else on the way up or down.
    #[error("{0}")]
    Other(String),
}

impl ServeError {
    /// Bind failures are configuration problems (exit 2); the rest are failures (exit 1).
    pub fn is_config(&self) -> bool {
        matches!(self, ServeError::Bind { .. })
    }
}

async fn bind(name: &'static str, addr: SocketAddr) -> Result<TcpListener, ServeError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { name, addr, source })
}

/// What SIGHUP means to a running gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnHangup {
    /// `serve`: re-read the config and apply it live (the daemon convention).
    Reload,
    /// `demo`: the terminal it runs in went away; stop and clean up, as on Ctrl-C.
    Stop,
}

/// Runs the gateway until SIGINT or SIGTERM; on SIGHUP, as `on_hangup` says, either
/// re-reads `source` (where `config` came from) and applies it live, or stops.
pub async fn run(
    config: Config,
    source: ConfigSource,
    on_hangup: OnHangup,
) -> Result<(), ServeError> {
    let config = Arc::new(config);
    let data_dir = config.gateway.data_dir.clone();
    keys::ensure_data_dir(&data_dir)?;
    let host_key = keys::host_key(&data_dir)?;
    let tls = keys::tls_server_config(&data_dir, config.tls.as_ref())?;
    let admin_token = keys::admin_token(&data_dir)?;

    // Bind before opening anything that writes, so a port in use changes nothing on disk.
    let ssh_l = bind("ssh", config.listen.ssh).await?;
    let pg_l = bind("postgres", config.listen.postgres).await?;
    let admin_l = bind("admin", config.listen.admin).await?;

    let durability = match config.audit.durability {
        portcullis_config::Durability::Batched => Durability::Batched,
        portcullis_config::Durability::Strict => Durability::Strict,
    };
    let audit = AuditLog::open(
        &data_dir.join("audit"),
        &data_dir.join(keys::AUDIT_KEY_FILE),
        durability,
    )?;
    let grants = Grants::start(config.clone(), &data_dir.join("grants.db"), audit.clone())?;
    let shutdown = CancellationToken::new();
    let gw = Arc::new(Gateway {
        data_dir: data_dir.clone(),
        grants,
        audit: audit.clone(),
        admin_token,
        logins: Default::default(),
        shutdown: shutdown.clone(),
    });

    let bound = Bound {
        ssh: local(&ssh_l)?,
        postgres: local(&pg_l)?,
        admin: local(&admin_l)?,
    };
    info!(addr = %bound.ssh, fingerprint = %keys::fingerprint(&host_key), "ssh listener ready");
    info!(addr = %bound.postgres, "postgres listener ready");
    info!(addr = %bound.admin, "admin api listener ready");
    let started = audit
        .append(
            Event::new("gateway.started")
                .with("version", env!("CARGO_PKG_VERSION"))
                .with("ssh", bound.ssh.to_string())
                .with("postgres", bound.postgres.to_string())
                .with("admin", bound.admin.to_string()),
        )
        .await?;
    // In the background: reading what the previous run wrote must not delay this one.
    tokio::spawn(record_unended(
        audit.clone(),
        data_dir.join("audit"),
        started,
    ));

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::ssh::listen(ssh_l, gw.clone(), host_key));
    tasks.spawn(crate::pg::listen(pg_l, gw.clone(), tls));
    let router = crate::api::router(gw.clone());
    let api_shutdown = shutdown.clone();
    tasks.spawn(async move {
        let app = router.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(e) = axum::serve(admin_l, app)
            .with_graceful_shutdown(api_shutdown.cancelled_owned())
            .await
        {
            warn!(error = %e, "admin api stopped");
        }
    });
    write_listen_file(&data_dir, &bound)?;

    wait_for_signal(&gw, &source, on_hangup).await;
    info!("shutting down");
    shutdown.cancel();
    gw.grants.shutdown_all();
    // Sessions close through the kill path; give them a moment to write their last events.
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("some listeners did not stop within 5 s");
        tasks.abort_all();
    }
    let _ = std::fs::remove_file(data_dir.join(LISTEN_FILE));
    audit.append(Event::new("gateway.stopped")).await?;
    audit.close().await?;
    info!("stopped");
    Ok(())
}

/// Records the end of every session the previous run left without one (see [`unended`]).
async fn record_unended(audit: AuditLog, dir: std::path::PathBuf, this_start: u64) {
    let owed = tokio::task::spawn_blocking(move || unended::owed(&dir, this_start)).await;
    let events = match owed {
        Ok(Ok(events)) => events,
        Ok(Err(e)) => {
            warn!(error = %e, "could not read the previous run's sessions from the audit log");
            return;
        }
        Err(e) => {
            warn!(error = %e, "reading the previous run's sessions failed");
            return;
        }
    };
    if !events.is_empty() {
        warn!(
            sessions = events.len(),
            "the previous run left sessions without session.ended; recording their ends"
        );
    }
    for ev in events {
        if let Err(e) = audit.append(ev).await {
            warn!(error = %e, "could not record the end of a previous run's session");
            return;
        }
    }
}

fn local(l: &TcpListener) -> Result<SocketAddr, ServeError> {
    l.local_addr().map_err(|e| ServeError::Other(e.to_string()))
}

fn write_listen_file(data_dir: &Path, bound: &Bound) -> Result<(), ServeError> {
    let path = data_dir.join(LISTEN_FILE);
    let tmp = data_dir.join(format!("{LISTEN_FILE}.tmp"));
    let text = serde_json::to_string(bound).map_err(|e| ServeError::Other(e.to_string()))?;
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| ServeError::Other(format!("{}: {e}", path.display())))
}

/// Waits for SIGINT or SIGTERM (or SIGHUP, with [`OnHangup::Stop`]), reloading the config on
/// every SIGHUP meanwhile otherwise.
async fn wait_for_signal(gw: &Gateway, source: &ConfigSource, on_hangup: OnHangup) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers; stopping on ctrl-c only, no reload on SIGHUP");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => return,
            _ = int.recv() => return,
            _ = hup.recv() => {
                if on_hangup == OnHangup::Stop {
                    info!("SIGHUP: the terminal went away; stopping");
                    return;
                }
                info!(source = %source.describe(), "SIGHUP: reloading the config");
                // Failures are logged and audited inside; the running config stays.
                let _ = reload::reload(gw, source).await;
            }
        }
    }
}
