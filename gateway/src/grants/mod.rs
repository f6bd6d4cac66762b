//! The live grant table, the one expiry scheduler, the sessions registry and the one kill path.
//!
//! CONTRACT (the proxies code against exactly this; the bodies are filled in by the grants
//! work): `Grants::authorize` is the only way a session comes to exist. It returns a
//! [`Lease`], which is registered in the sessions registry until dropped. The lease's
//! `next_event` resolves with a pre-expiry warning and then, exactly once, with the reason
//! the session must close. Expiry, revoke, `sessions kill`, config reload and shutdown all go
//! through one kill path that resolves leases.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Why a session was (or must be) closed; the strings are SPEC §7's `session.ended` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ClientClosed,
    UpstreamClosed,
    GrantExpired,
    GrantRevoked,
    Killed,
    Error,
    Shutdown,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::UpstreamClosed => "upstream_closed",
            CloseReason::GrantExpired => "grant_expired",
            CloseReason::GrantRevoked => "grant_revoked",
            CloseReason::Killed => "killed",
            CloseReason::Error => "error",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// Which protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Ssh,
    Postgres,
}

/// Why `authorize` said no. Display is the sentence shown to the user.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Denied {
    /// No such target in the config.
    #[error("unknown target {target}")]
    UnknownTarget { target: String },
    /// The user holds no live grant on the target.
    #[error(
        "no live grant for {user} on {target}; request access with: portcullis request create --target {target} --for 1h --reason \"...\""
    )]
    NoGrant { user: String, target: String },
    /// The user's grant on the target has expired.
    #[error(
        "your grant on {target} has expired; request access again with: portcullis request create --target {target} --for 1h --reason \"...\""
    )]
    Expired { user: String, target: String },
    /// The user holds grants on the target, but not for this role.
    #[error("no live grant for {user} on {target} with role {role}; roles held: {held}")]
    RoleNotHeld {
        user: String,
        target: String,
        role: String,
        held: String,
    },
    /// More than one role is held and none was named.
    #[error("{user} holds several roles on {target} ({held}); name one: {user}+{target}+ROLE")]
    AmbiguousRole {
        user: String,
        target: String,
        held: String,
    },
}

/// What the proxy tells the registry about the session it is starting.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub proto: Proto,
    /// The client's address, as `ip:port`.
    pub client: String,
}

/// Something the session must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// `warn_before` ahead of expiry: tell the user how long is left.
    Warn { remaining: Duration },
    /// Close now, for this reason. Delivered once; further calls keep returning it.
    Close(CloseReason),
}

/// Byte counters shared between a session and the registry (for `sessions list`).
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Counters {
    pub fn add_in(&self, n: u64) {
        self.bytes_in.fetch_add(n, Ordering::Relaxed);
    }
    pub fn add_out(&self, n: u64) {
        self.bytes_out.fetch_add(n, Ordering::Relaxed);
    }
}

/// A permit to run one session under one grant. Dropping it deregisters the session.
#[derive(Debug)]
pub struct Lease {
    pub session_id: String,
    pub grant_id: String,
    pub user: String,
    pub target: String,
    pub role: String,
    pub counters: Arc<Counters>,
}

impl Lease {
    /// The grant's current deadline (moves when the grant is extended).
    pub fn expires_at(&self) -> chrono::DateTime<chrono::Utc> {
        unimplemented!("grants work")
    }

    /// Waits for the next thing the session must act on.
    ///
    /// # Cancellation safety
    /// Cancellation safe: no event is lost if the future is dropped before it resolves.
    pub async fn next_event(&mut self) -> LeaseEvent {
        unimplemented!("grants work")
    }

    /// Defence in depth: is the grant still live right now? Called before each new query or
    /// channel.
    pub fn is_live(&self) -> bool {
        unimplemented!("grants work")
    }
}

/// The grant table handle, cheap to clone.
#[derive(Debug, Clone)]
pub struct Grants {}

/// Why the grant table could not start or change.
#[derive(Debug, thiserror::Error)]
pub enum GrantsError {
    /// The store (SQLite) failed.
    #[error("grant store: {0}")]
    Store(String),
}

impl Grants {
    /// Opens the store at `store_path` (`<data_dir>/grants.db`), rebuilds the live table,
    /// marks grants that lapsed while the gateway was down as expired (one `grant.expired`
    /// each), and spawns the one expiry scheduler on the current runtime.
    pub fn start(
        _config: std::sync::Arc<portcullis_config::Config>,
        _store_path: &std::path::Path,
        _audit: portcullis_recorder::AuditLog,
    ) -> Result<Grants, GrantsError> {
        unimplemented!("grants work")
    }

    /// Closes every live session with reason `shutdown`, through the one kill path.
    pub fn shutdown_all(&self) {
        unimplemented!("grants work")
    }

    /// May `user` open a session on `target` (as `role`, or the one role they hold) now?
    /// On success the session is registered and closed through the kill path when its grant
    /// lapses.
    pub fn authorize(
        &self,
        _user: &str,
        _target: &str,
        _role: Option<&str>,
        _info: SessionInfo,
    ) -> Result<Lease, Denied> {
        unimplemented!("grants work")
    }
}
