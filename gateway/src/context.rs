//! What every listener and session shares: the live config (held by the grant table, swapped
//! on reload), grants, audit log, shutdown signal.

use std::path::PathBuf;
use std::sync::Arc;

use portcullis_config::Config;
use portcullis_recorder::AuditLog;
use tokio_util::sync::CancellationToken;

use crate::grants::Grants;

/// The running gateway's shared state, handed to each listener as `Arc<Gateway>`.
#[derive(Debug)]
pub struct Gateway {
    pub data_dir: PathBuf,
    pub grants: Grants,
    pub audit: AuditLog,
    /// Bearer token with full admin rights (`<data_dir>/admin.token`). Being a secret that
    /// survives restarts, it also keys the salts shown for users who do not exist
    /// (`password::verifier_for`).
    pub admin_token: String,
    /// Failed password logins per client, for every protocol that takes a user's password
    /// (the PostgreSQL listener and the admin API's Basic auth check the same
    /// `password_scram`), so guesses spread over both still count once.
    pub logins: crate::api::limiter::Limiter,
    /// Cancelled once on SIGINT/SIGTERM; listeners stop accepting and sessions close with
    /// reason `shutdown` through the kill path.
    pub shutdown: CancellationToken,
}

impl Gateway {
    /// The live config. A SIGHUP reload swaps it whole, so read it once per decision and
    /// keep what you read for the session's life (a running session keeps what it started
    /// with; the next connection sees the new config).
    pub fn config(&self) -> Arc<Config> {
        self.grants.config()
    }
}

pub type Shared = Arc<Gateway>;
