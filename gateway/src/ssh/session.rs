//! One authorized SSH connection: its shared context, and the supervisor task that connects
//! upstream, `select!`s on the lease, the client and the upstream, and runs the kill path.
//!
//! The supervisor is the only owner of the [`Lease`]: channel tasks ask it whether the grant
//! is still live (defence in depth) over a small channel instead of sharing the lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_config::{Role, Target};
use russh::ChannelId;
use russh::client::Msg as UpMsg;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::audit::{self, Ident};
use super::upstream::{self, Upstream};
use crate::context::Shared;
use crate::grants::{CloseReason, Lease, LeaseEvent, SessionCounters};

/// Exit status reported to a channel the gateway closes (like `ssh`'s own 255 on errors).
pub const KILLED_EXIT_STATUS: u32 = 255;
/// How long `session.ended` waits for channel tasks to finish their recordings.
const FINISH_GRACE: Duration = Duration::from_secs(2);
/// How long after its client is disconnected a killed session hangs up the target (see
/// `kill`): a revoke closes every session of the grant at once, and the target's side of
/// each (an sshd process exiting, its children signalled) costs the same cores the clients'
/// closes need. Measured with 50 sessions killed together (benches/compare, kill rows):
/// with the hang-up right behind each disconnect, the clients saw their connections closed
/// at p99 35–40 ms; 30 ms later, at p99 5–6 ms. The target is still hung up well within
/// the second SPEC §6 allows.
const UPSTREAM_HANGUP_DELAY: Duration = Duration::from_millis(30);

/// Where the upstream connection stands, as the channel tasks see it.
#[derive(Clone)]
pub enum UpState {
    Connecting,
    Ready(Arc<Upstream>),
    /// The sentence to show on the user's stderr.
    Failed(String),
}

/// A session channel the kill path must close.
#[derive(Debug)]
pub struct Registered {
    /// Has a pty (interactive): gets the pre-expiry warning.
    pub interactive: bool,
    /// A session channel (has a stderr); forwards are only closed.
    pub session: bool,
    /// The upstream side, to send SIGHUP before the connection is cut.
    pub upstream: Option<Arc<russh::ChannelWriteHalf<UpMsg>>>,
}

/// What every channel task of one session shares.
pub struct SessionCtx {
    pub gw: Shared,
    pub ident: Ident,
    pub target: Target,
    pub role: Role,
    pub counters: SessionCounters,
    pub client: russh::server::Handle,
    pub upstream: watch::Receiver<UpState>,
    pub channels: Mutex<HashMap<ChannelId, Registered>>,
    pub recordings: Mutex<Vec<(String, String)>>,
    pub tasks: TaskTracker,
    /// Cancelled when the kill path starts: no new channel may start.
    pub closing: CancellationToken,
    /// The user's client, for agent channels the target opens (set once agent forwarding
    /// was allowed and requested).
    pub agent: Arc<Mutex<Option<russh::server::Handle>>>,
    live: mpsc::Sender<oneshot::Sender<bool>>,
}

impl std::fmt::Debug for SessionCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCtx")
            .field("session", &self.ident.session)
            .finish_non_exhaustive()
    }
}

impl SessionCtx {
    /// Is the grant live right now (and the session not closing)?
    pub async fn is_live(&self) -> bool {
        if self.closing.is_cancelled() {
            return false;
        }
        let (tx, rx) = oneshot::channel();
        if self.live.send(tx).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Fail closed on a failed audit log: closes the whole session through the kill path
    /// (reason `audit_failed`; every channel's stderr says why) and waits until it is
    /// closing. The caller forwards nothing more.
    ///
    /// # Cancellation safety
    /// Cancellation safe: the close is signalled before the first await.
    pub async fn audit_failed(&self) {
        if self.gw.grants.close_audit_failed(&self.ident.session) {
            tracing::error!("the audit log failed under the session; closing it");
        }
        self.closing.cancelled().await;
    }

    /// Waits until the upstream is ready or failed.
    ///
    /// # Cancellation safety
    /// Cancellation safe: it only reads a watch.
    pub async fn upstream(&self) -> Result<Arc<Upstream>, String> {
        let mut rx = self.upstream.clone();
        loop {
            match &*rx.borrow_and_update() {
                UpState::Ready(u) => return Ok(u.clone()),
                UpState::Failed(m) => return Err(m.clone()),
                UpState::Connecting => {}
            }
            if rx.changed().await.is_err() {
                return Err("portcullis: the session ended".into());
            }
        }
    }

    pub fn register(&self, id: ChannelId, entry: Registered) {
        if let Ok(mut m) = self.channels.lock() {
            m.insert(id, entry);
        }
    }

    pub fn update(&self, id: ChannelId, f: impl FnOnce(&mut Registered)) {
        if let Ok(mut m) = self.channels.lock()
            && let Some(e) = m.get_mut(&id)
        {
            f(e);
        }
    }

    pub fn unregister(&self, id: ChannelId) {
        if let Ok(mut m) = self.channels.lock() {
            m.remove(&id);
        }
    }
}

/// Everything `start` needs from the authentication step.
#[derive(Debug)]
pub struct Authorized {
    pub lease: Lease,
    pub target: Target,
    pub role: Role,
    pub client_addr: String,
}

/// Builds the session context and spawns its supervisor; returns the context for the
/// handler's channel callbacks.
pub fn start(
    gw: Shared,
    auth: Authorized,
    client: russh::server::Handle,
    client_gone: CancellationToken,
) -> Arc<SessionCtx> {
    let Authorized {
        lease,
        target,
        role,
        client_addr,
    } = auth;
    let ident = Ident {
        session: lease.session_id(),
        user: lease.user().to_owned(),
        target: lease.target().to_owned(),
        role: lease.role().to_owned(),
        grant: lease.grant_id().to_owned(),
        client: client_addr,
    };
    let (up_tx, up_rx) = watch::channel(UpState::Connecting);
    let (live_tx, live_rx) = mpsc::channel(16);
    let ctx = Arc::new(SessionCtx {
        gw,
        ident,
        target,
        role,
        counters: lease.counters(),
        client,
        upstream: up_rx,
        channels: Mutex::new(HashMap::new()),
        recordings: Mutex::new(Vec::new()),
        tasks: TaskTracker::new(),
        closing: CancellationToken::new(),
        agent: Arc::new(Mutex::new(None)),
        live: live_tx,
    });
    let span = tracing::info_span!(
        "ssh_session",
        session = %ctx.ident.session,
        user = %ctx.ident.user,
        target = %ctx.ident.target,
        proto = "ssh",
    );
    tokio::spawn(tracing::Instrument::instrument(
        supervise(ctx.clone(), lease, up_tx, live_rx, client_gone),
        span,
    ));
    ctx
}

/// The session's one task that owns the lease: connects upstream, answers liveness checks,
/// and on any reason to close runs the kill path, then writes `session.ended`.
async fn supervise(
    ctx: Arc<SessionCtx>,
    mut lease: Lease,
    up_tx: watch::Sender<UpState>,
    mut live_rx: mpsc::Receiver<oneshot::Sender<bool>>,
    client_gone: CancellationToken,
) {
    let started = Instant::now();
    let gw = ctx.gw.clone();
    let logged = audit::append(&gw, ctx.ident.event("auth.succeeded").with("proto", "ssh")).await
        && audit::append(&gw, ctx.ident.event("session.started").with("proto", "ssh")).await;
    if !logged {
        // A session the log cannot record does not run: the lease's first event closes it.
        gw.grants.close_audit_failed(&ctx.ident.session);
    }
    info!("ssh session started");

    let connect = upstream::connect(&ctx.target, &ctx.role, ctx.agent.clone());
    let mut connect = std::pin::pin!(connect);
    let mut upstream: Option<Arc<Upstream>> = None;
    let upstream_gone = CancellationToken::new();
    let mut error: Option<String> = None;

    let reason = loop {
        tokio::select! {
            result = &mut connect, if upstream.is_none() && error.is_none() => match result {
                Ok((handle, signals)) => {
                    let handle = Arc::new(handle);
                    let gone = signals.gone.clone();
                    let watcher = upstream_gone.clone();
                    tokio::spawn(async move {
                        gone.cancelled().await;
                        watcher.cancel();
                    });
                    upstream = Some(handle.clone());
                    let _ = up_tx.send(UpState::Ready(handle));
                }
                Err(e) => {
                    let text = e.to_string();
                    info!(error = %text, "upstream connection failed");
                    let _ = up_tx.send(UpState::Failed(format!("portcullis: {text}")));
                    error = Some(text);
                }
            },
            event = lease.next_event() => match event {
                LeaseEvent::Warn { remaining } => warn_interactive(&ctx, &lease, remaining).await,
                LeaseEvent::Close(reason) => break reason,
            },
            Some(reply) = live_rx.recv() => {
                let _ = reply.send(lease.is_live());
            }
            _ = client_gone.cancelled() => break CloseReason::ClientClosed,
            _ = upstream_gone.cancelled() => break CloseReason::UpstreamClosed,
            _ = gw.shutdown.cancelled() => break CloseReason::Shutdown,
        }
    };
    // Further liveness checks answer "no" without waiting on this task.
    drop(live_rx);
    ctx.closing.cancel();
    let reason = match (reason, &error) {
        (CloseReason::ClientClosed, Some(_)) => CloseReason::Error,
        (r, _) => r,
    };
    info!(reason = reason.as_str(), "ssh session closing");
    if !matches!(reason, CloseReason::ClientClosed) {
        kill(&ctx, &lease, reason, upstream.as_deref()).await;
    } else if let Some(up) = &upstream {
        let _ = up
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
    }
    ctx.tasks.close();
    let _ = tokio::time::timeout(FINISH_GRACE, ctx.tasks.wait()).await;

    let recordings: Vec<(String, String)> =
        ctx.recordings.lock().map(|r| r.clone()).unwrap_or_default();
    let mut ev = ctx
        .ident
        .event("session.ended")
        .with("proto", "ssh")
        .with("reason", reason.as_str())
        .with(
            "bytes_in",
            lease
                .counters()
                .bytes_in
                .load(std::sync::atomic::Ordering::Relaxed),
        )
        .with(
            "bytes_out",
            lease
                .counters()
                .bytes_out
                .load(std::sync::atomic::Ordering::Relaxed),
        )
        .with(
            "duration_ms",
            u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        )
        .with("error", error);
    if let Some(k) = lease.kill_note() {
        ev = ev.with("killed_by", &k.by).with("kill_reason", &k.reason);
    }
    if let Some((file, sha)) = recordings.first() {
        ev = ev.with("recording", file).with("recording_sha256", sha);
    }
    if recordings.len() > 1 {
        let all: Vec<_> = recordings
            .iter()
            .map(|(f, s)| serde_json::json!({"file": f, "sha256": s}))
            .collect();
        ev = ev.with("recordings", all);
    }
    audit::append(&gw, ev).await;
    debug!("ssh session ended");
    drop(lease);
}

/// The sentence a closing channel gets on stderr.
pub fn close_message(reason: CloseReason, grant: &str, killer: &str) -> String {
    let why = match reason {
        CloseReason::GrantExpired => format!("grant {grant} expired"),
        CloseReason::GrantRevoked => format!("grant {grant} was revoked"),
        CloseReason::ConfigRevoked => format!(
            "grant {grant} was revoked: the reloaded config no longer has its user, target or role"
        ),
        CloseReason::Killed => format!("session killed by {killer}"),
        CloseReason::Shutdown => "the gateway is shutting down".to_string(),
        CloseReason::UpstreamClosed => "the target closed the connection".to_string(),
        CloseReason::Error => "session error".to_string(),
        CloseReason::ClientClosed => "client closed".to_string(),
        CloseReason::AuditFailed => "the audit log is unavailable".to_string(),
    };
    format!("portcullis: {why}; session closed")
}

/// The `warn_before` line on an interactive channel's stderr. It names the target and says
/// what the user can do: `grant extend` is the operator's, so a user asks with a request.
fn warning_line(grant: &str, target: &str, remaining: Duration) -> String {
    let secs = Duration::from_secs(remaining.as_secs());
    format!(
        "\r\nportcullis: grant {grant} on {target} expires in {}; the session will be closed then; \
         for more time: portcullis request create --target {target} --for 1h --reason \"...\"\r\n",
        humantime::format_duration(secs)
    )
}

async fn warn_interactive(ctx: &SessionCtx, lease: &Lease, remaining: Duration) {
    let line = warning_line(lease.grant_id(), &ctx.target.name, remaining);
    let ids: Vec<ChannelId> = ctx
        .channels
        .lock()
        .map(|m| {
            m.iter()
                .filter(|(_, r)| r.interactive)
                .map(|(id, _)| *id)
                .collect()
        })
        .unwrap_or_default();
    for id in ids {
        let _ = ctx
            .client
            .extended_data(id, 1, line.clone().into_bytes())
            .await;
    }
}

/// The kill path for one SSH session: tell every channel why and close it, disconnect the
/// client at once (it must not wait on the target), then, [`UPSTREAM_HANGUP_DELAY`] later,
/// hang up the target's processes and cut the upstream connection behind it.
async fn kill(ctx: &SessionCtx, lease: &Lease, reason: CloseReason, up: Option<&Upstream>) {
    let message = close_message(reason, lease.grant_id(), lease.killer());
    type Up = Arc<russh::ChannelWriteHalf<UpMsg>>;
    let (ids, upstreams): (Vec<(ChannelId, bool)>, Vec<Up>) = ctx
        .channels
        .lock()
        .map(|m| {
            (
                m.iter().map(|(id, r)| (*id, r.session)).collect(),
                m.values().filter_map(|r| r.upstream.clone()).collect(),
            )
        })
        .unwrap_or_default();
    let line = format!("\r\n{message}\r\n").into_bytes();
    for (id, session) in ids {
        if session {
            let _ = ctx.client.extended_data(id, 1, line.clone()).await;
            let _ = ctx.client.exit_status_request(id, KILLED_EXIT_STATUS).await;
        }
        let _ = ctx.client.eof(id).await;
        let _ = ctx.client.close(id).await;
    }
    // One ordered queue to the client: the lines, statuses and closes above go out before
    // the disconnect, so nothing here waits for the client or the target to answer.
    let _ = ctx
        .client
        .disconnect(
            russh::Disconnect::ByApplication,
            message.clone(),
            String::new(),
        )
        .await;
    // Let every session killed with this one close its client first; with no upstream
    // there is nothing to hang up.
    if up.is_some() {
        tokio::time::sleep(UPSTREAM_HANGUP_DELAY).await;
    }
    // Processes without a terminal do not get SIGHUP from sshd when the connection drops;
    // ask sshd to signal them first (it refuses for root logins; see ARCHITECTURE.md).
    for u in &upstreams {
        let _ = u.signal(russh::Sig::HUP).await;
        let _ = u.signal(russh::Sig::TERM).await;
    }
    if let Some(up) = up {
        let _ = up
            .disconnect(russh::Disconnect::ByApplication, &message, "")
            .await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::warning_line;

    #[test]
    fn the_warning_names_the_target_and_what_a_user_can_do() {
        let line = warning_line("g_1", "web-1", Duration::from_millis(59_900));
        assert_eq!(
            line,
            "\r\nportcullis: grant g_1 on web-1 expires in 59s; the session will be closed then; \
             for more time: portcullis request create --target web-1 --for 1h --reason \"...\"\r\n"
        );
        assert!(
            warning_line("g_1", "web-1", Duration::from_secs(5400)).contains("expires in 1h 30m;")
        );
    }
}
