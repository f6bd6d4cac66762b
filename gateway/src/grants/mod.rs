//! The live grant table, the one expiry scheduler, the sessions registry and the one kill path.
//!
//! CONTRACT (the proxies code against exactly this; the bodies are filled in by the grants
//! work): `Grants::authorize` is the only way a session comes to exist. It returns a
//! [`Lease`], which is registered in the sessions registry until dropped. The lease's
//! `next_event` resolves with a pre-expiry warning and then, exactly once, with the reason
//! the session must close. Expiry, revoke, `sessions kill`, config reload and shutdown all go
//! through one kill path that resolves leases.

mod audit;
mod clock;
mod denied;
mod engine;
mod expiry;
mod lease;
pub mod model;
mod operator;
mod requests;
mod sessions;
pub mod store;
mod table;
#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_expired;
#[cfg(test)]
mod tests_reload;
#[cfg(test)]
mod tests_requests;
mod user_index;
mod user_name;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use portcullis_config::Config;

pub use audit::AuditSink;
pub use denied::{Denied, RequestHint, RoleHint};
pub use engine::NewGrant;
pub use lease::{Lease, LiveProbe};
pub use model::{
    Actor, GrantFilter, GrantRecord, GrantStatus, REQUEST_TTL, RequestRecord, RequestStatus,
    SessionRecord,
};
pub use requests::NewRequest;
pub use sessions::SessionCounters;
pub use store::{SqliteStore, Store, StoreError};

/// Why a session was (or must be) closed; the strings are SPEC §7's `session.ended` reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    ClientClosed,
    UpstreamClosed,
    GrantExpired,
    GrantRevoked,
    /// Revoked because a config reload removed its user, target or role. Recorded as
    /// `grant_revoked` (the SPEC's reason); only the sentence the client sees differs.
    ConfigRevoked,
    Killed,
    Error,
    Shutdown,
    /// The audit log failed under the session (batched durability sees a failed write after
    /// the fact, as an unhealthy log): nothing more of the client's may reach the target
    /// unaudited, so the session ends. Recorded as `audit_failed`.
    AuditFailed,
}

impl CloseReason {
    const ALL: [CloseReason; 9] = [
        CloseReason::ClientClosed,
        CloseReason::UpstreamClosed,
        CloseReason::GrantExpired,
        CloseReason::GrantRevoked,
        CloseReason::ConfigRevoked,
        CloseReason::Killed,
        CloseReason::Error,
        CloseReason::Shutdown,
        CloseReason::AuditFailed,
    ];

    /// A one-byte code for atomics: the reason's index + 1, so 0 can mean "open".
    pub(crate) fn code(self) -> u8 {
        Self::ALL
            .iter()
            .position(|x| *x == self)
            .map_or(0, |i| i as u8 + 1)
    }

    /// The reason behind a non-zero [`CloseReason::code`].
    pub(crate) fn from_code(code: u8) -> Option<CloseReason> {
        Self::ALL.get(usize::from(code).checked_sub(1)?).copied()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::ClientClosed => "client_closed",
            CloseReason::UpstreamClosed => "upstream_closed",
            CloseReason::GrantExpired => "grant_expired",
            CloseReason::GrantRevoked | CloseReason::ConfigRevoked => "grant_revoked",
            CloseReason::Killed => "killed",
            CloseReason::Error => "error",
            CloseReason::Shutdown => "shutdown",
            CloseReason::AuditFailed => "audit_failed",
        }
    }
}

/// Which protocol a session speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Ssh,
    Postgres,
}

/// What the proxy tells the registry about the session it is starting.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub proto: Proto,
    /// The client's address (shown as `ip:port`; formatted only when listed).
    pub client: std::net::SocketAddr,
}

/// Something the session must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseEvent {
    /// `warn_before` ahead of expiry: tell the user how long is left.
    Warn { remaining: Duration },
    /// Close now, for this reason. Delivered once; further calls keep returning it.
    Close(CloseReason),
}

/// How long is left, as the `warn_before` warnings say it: whole seconds, rounded up. The
/// warning fires a moment inside its last second, so truncated, a `warn_before` of 1s said
/// "expires in 0s" and one of 1m said "59s".
pub fn time_left(remaining: Duration) -> String {
    let secs = remaining.as_secs() + u64::from(remaining.subsec_nanos() > 0);
    humantime::format_duration(Duration::from_secs(secs)).to_string()
}

/// The `warn_before` warning a session gets, both protocols: it names the grant and target
/// and says what the user can do (`grant extend` is the operator's, so a user asks with a
/// request, the one `request` prints).
pub fn warning(grant: &str, request: &RequestHint, remaining: Duration) -> String {
    format!(
        "portcullis: grant {grant} on {} expires in {}; the session will be closed then; \
         for more time: {request}",
        request.target,
        time_left(remaining)
    )
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

/// The grant table handle, cheap to clone.
#[derive(Debug, Clone)]
pub struct Grants {
    inner: Arc<engine::Inner>,
}

/// Why a grant or request change was not made. Display is the sentence shown to the caller.
#[derive(Debug, thiserror::Error)]
pub enum GrantsError {
    /// The store (SQLite) failed (internal).
    #[error("grant store: {0}")]
    Store(String),
    /// No grant, request or session with that id (client).
    #[error("no {kind} {id}")]
    NotFound { kind: &'static str, id: String },
    /// The request is malformed: unknown user, target or role, zero duration (client).
    #[error("{0}")]
    Invalid(String),
    /// Policy says no: over the ceiling, self-approval, not an approver, already decided.
    #[error("{0}")]
    Refused(String),
}

impl From<StoreError> for GrantsError {
    fn from(e: StoreError) -> Self {
        GrantsError::Store(e.to_string())
    }
}

impl Grants {
    /// Opens the store at `store_path` (`<data_dir>/grants.db`), rebuilds the live table,
    /// marks grants that lapsed while the gateway was down as expired (one `grant.expired`
    /// each), and spawns the one expiry scheduler on the current runtime.
    pub fn start(
        config: Arc<Config>,
        store_path: &Path,
        audit: portcullis_recorder::AuditLog,
    ) -> Result<Grants, GrantsError> {
        let store = SqliteStore::open(store_path)?;
        let failure = audit.failure();
        let grants = Grants::start_with(config, Box::new(store), Arc::new(audit))?;
        // The moment the log fails, every session closes (reason `audit_failed`), idle ones
        // included: a session that sends nothing would otherwise stay open, its target's
        // output still reaching the user, with nothing of it recorded.
        let inner = Arc::downgrade(&grants.inner);
        tokio::spawn(async move {
            if failure.await
                && let Some(inner) = inner.upgrade()
            {
                let closed = inner.kill(engine::Kill::All, CloseReason::AuditFailed);
                tracing::error!(
                    sessions = closed.len(),
                    "the audit log failed; closing every session"
                );
            }
        });
        Ok(grants)
    }

    /// Like [`Grants::start`] with any store and audit sink (tests, benches, other stores).
    pub fn start_with(
        config: Arc<Config>,
        store: Box<dyn Store>,
        audit: Arc<dyn AuditSink>,
    ) -> Result<Grants, GrantsError> {
        Ok(Grants {
            inner: engine::Inner::open(config, store, audit)?,
        })
    }

    /// Closes every live session with reason `shutdown`, through the one kill path.
    pub fn shutdown_all(&self) {
        self.inner.kill(engine::Kill::All, CloseReason::Shutdown);
    }

    /// May `user` open a session on `target` (as `role`, or the one role they hold) now?
    /// On success the session is registered and closed through the kill path when its grant
    /// lapses.
    pub fn authorize(
        &self,
        user: &str,
        target: &str,
        role: Option<&str>,
        info: SessionInfo,
    ) -> Result<Lease, Denied> {
        self.inner.authorize(user, target, role, info)
    }

    /// The config grants are currently judged against.
    pub fn config(&self) -> Arc<Config> {
        self.inner.config()
    }

    /// Creates a grant now (`grant add`); operator only.
    pub async fn add_grant(
        &self,
        new: NewGrant,
        actor: &Actor,
    ) -> Result<GrantRecord, GrantsError> {
        self.inner.add_grant(new, actor).await
    }

    /// Revokes a live grant; its sessions close at once.
    pub async fn revoke(
        &self,
        id: &str,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<GrantRecord, GrantsError> {
        self.inner.revoke(id, actor, reason).await
    }

    /// Moves a live grant's deadline later; its sessions are re-armed.
    pub async fn extend(
        &self,
        id: &str,
        by: Duration,
        actor: &Actor,
    ) -> Result<GrantRecord, GrantsError> {
        self.inner.extend(id, by, actor).await
    }

    /// Grants the viewer may see, newest first.
    pub fn list_grants(
        &self,
        filter: &GrantFilter,
        viewer: &Actor,
    ) -> Result<Vec<GrantRecord>, GrantsError> {
        self.inner.list_grants(filter, viewer)
    }

    /// One grant as stored.
    pub fn get_grant(&self, id: &str) -> Result<Option<GrantRecord>, GrantsError> {
        Ok(self.inner.store.get_grant(id)?)
    }

    /// A user asks for access.
    pub async fn create_request(
        &self,
        new: NewRequest,
        actor: &Actor,
    ) -> Result<RequestRecord, GrantsError> {
        self.inner.create_request(new, actor).await
    }

    /// An approver (or the operator) approves; the grant's clock starts now.
    pub async fn approve(
        &self,
        id: &str,
        actor: &Actor,
    ) -> Result<(RequestRecord, GrantRecord), GrantsError> {
        self.inner.approve(id, actor).await
    }

    /// An approver (or the operator, or the requester withdrawing it) denies a request.
    pub async fn deny(
        &self,
        id: &str,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<RequestRecord, GrantsError> {
        self.inner.deny(id, actor, reason).await
    }

    /// Requests the viewer may see, newest first.
    pub fn list_requests(
        &self,
        pending_only: bool,
        viewer: &Actor,
    ) -> Result<Vec<RequestRecord>, GrantsError> {
        self.inner.list_requests(pending_only, viewer)
    }

    /// Live sessions the viewer may see.
    pub fn sessions(&self, viewer: &Actor) -> Vec<SessionRecord> {
        self.inner.list_sessions(viewer)
    }

    /// Closes one session now, reason `killed`, through the kill path.
    pub fn kill_session(
        &self,
        id: &str,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<SessionRecord, GrantsError> {
        self.inner.kill_session(id, actor, reason)
    }

    /// Closes one session through the kill path because the audit log can no longer record
    /// it (reason `audit_failed`). False if it is already closing (or gone). Called by the
    /// session's own relay tasks when they find the log unhealthy.
    pub fn close_audit_failed(&self, id: &str) -> bool {
        !self
            .inner
            .kill(engine::Kill::Session(id), CloseReason::AuditFailed)
            .is_empty()
    }

    /// Takes a reloaded config: new connections are judged against it from now on, and
    /// grants for removed users, targets or roles are revoked (their sessions close through
    /// the kill path). Returns the grants revoked.
    pub async fn reload(&self, config: Arc<Config>) -> Vec<GrantRecord> {
        self.inner.reload(config).await
    }

    /// Live grants in the table and armed in the scheduler (for health and benches).
    pub fn live_count(&self) -> (usize, usize) {
        (self.inner.table.len(), self.inner.scheduler.len())
    }
}
