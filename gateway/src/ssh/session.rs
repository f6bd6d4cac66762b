//! One authorized SSH connection: its shared context, and the supervisor task that connects
//! upstream, `select!`s on the lease, the client and the upstream, and runs the kill path.
//!
//! The supervisor is the only owner of the [`Lease`]: channel tasks ask it whether the grant
//! is still live (defence in depth) over a small channel instead of sharing the lease.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_config::{Role, Target};
use russh::ChannelId;
use russh::client::Msg as UpMsg;
use russh::server::Msg as DownMsg;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info};

use super::audit::{self, Ident};
use super::upstream::{self, Upstream};
use crate::context::Shared;
use crate::grants::{CloseReason, Lease, LeaseEvent, RequestHint, SessionCounters};

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
/// How long the kill path may spend on the lines it says on the channels' stderr, all of
/// them together (and a refusal on its one line, `replies.rs`). A line goes out only if the
/// client's window has room for it right away (see [`say`]), so this bounds only a race
/// with the channel's own output.
pub(super) const NOTICE_WAIT: Duration = Duration::from_millis(100);
/// How long the kill path waits for the client to answer the closes of the channels it
/// said its line on, before it disconnects. OpenSSH reads the line, the exit status, the
/// close and a disconnect in one burst, and exits on the disconnect before it has written
/// the line to the user's terminal; once it has closed the channel, it has written it. A
/// client that does not answer is disconnected at this bound.
const CLIENT_CLOSE_WAIT: Duration = Duration::from_millis(100);

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
    /// A session channel's writer to the client, for the warning and the kill path's lines
    /// on its stderr; forwards have no stderr and are only closed.
    pub stderr: Option<Arc<russh::ChannelWriteHalf<DownMsg>>>,
    /// The upstream side, to send SIGHUP before the connection is cut.
    pub upstream: Option<Arc<russh::ChannelWriteHalf<UpMsg>>>,
    /// The client has closed the channel (or answered the kill path's close).
    pub client_closed: bool,
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
    /// Cancelled when the session starts closing (the kill path, or the client gone): no
    /// new channel may start, and the connection task bounds how long the client's
    /// connection may stay open from here (`ssh::listen`).
    pub closing: CancellationToken,
    /// The user's client, for agent channels the target opens (set once agent forwarding
    /// was allowed and requested).
    pub agent: Arc<Mutex<Option<russh::server::Handle>>>,
    asks: mpsc::Sender<Ask>,
    /// Bumped each time a client closes a channel, for the kill path waiting on the
    /// closes it asked for (see [`CLIENT_CLOSE_WAIT`]).
    client_closes: watch::Sender<u64>,
}

/// What a channel task asks the supervisor, the lease's only owner.
enum Ask {
    /// Is the grant live right now?
    Live(oneshot::Sender<bool>),
    /// The `warn_before` line, if it was already said to the session's terminals.
    Warning(oneshot::Sender<Option<Bytes>>),
}

impl std::fmt::Debug for SessionCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionCtx")
            .field("session", &self.ident.session)
            .finish_non_exhaustive()
    }
}

impl SessionCtx {
    /// What the role allows now, from the live config: a reload that narrows a role's
    /// `allow` reaches the next channel and forward a connection opens (a ControlMaster
    /// connection can last as long as its grant), not only the next connection. A role the
    /// live config no longer has allows nothing (its grant is being revoked).
    pub fn allow(&self) -> Vec<portcullis_config::Allow> {
        self.gw
            .config()
            .target(&self.target.name)
            .and_then(|t| t.roles.get(&self.ident.role))
            .map(|r| r.allow.clone())
            .unwrap_or_default()
    }

    /// Is the grant live right now (and the session not closing)?
    pub async fn is_live(&self) -> bool {
        if self.closing.is_cancelled() {
            return false;
        }
        let (tx, rx) = oneshot::channel();
        if self.asks.send(Ask::Live(tx)).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    /// Says the `warn_before` line on a terminal channel that starts after the session's
    /// terminals were warned (a session that began inside the warning window was warned
    /// before it had any), as the warning says it: only if the client's window has room.
    pub async fn warn_late_terminal(&self, id: ChannelId) {
        let (tx, rx) = oneshot::channel();
        if self.asks.send(Ask::Warning(tx)).await.is_err() {
            return;
        }
        let Ok(Some(line)) = rx.await else {
            return;
        };
        let writer = self
            .channels
            .lock()
            .ok()
            .and_then(|m| m.get(&id).and_then(|r| r.stderr.clone()));
        if let Some(w) = writer {
            say(&w, line, tokio::time::Instant::now() + NOTICE_WAIT).await;
        }
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

    /// Notes that the client closed channel `id` (it read everything before its CLOSE).
    pub fn client_closed(&self, id: ChannelId) {
        self.update(id, |r| r.client_closed = true);
        self.client_closes.send_modify(|n| *n = n.wrapping_add(1));
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
/// handler's channel callbacks. `closing` becomes [`SessionCtx::closing`].
pub fn start(
    gw: Shared,
    auth: Authorized,
    client: russh::server::Handle,
    client_gone: CancellationToken,
    closing: CancellationToken,
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
    let (asks_tx, asks_rx) = mpsc::channel(16);
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
        closing,
        agent: Arc::new(Mutex::new(None)),
        asks: asks_tx,
        client_closes: watch::Sender::new(0),
    });
    let span = tracing::info_span!(
        "ssh_session",
        session = %ctx.ident.session,
        user = %ctx.ident.user,
        target = %ctx.ident.target,
        proto = "ssh",
    );
    tokio::spawn(tracing::Instrument::instrument(
        supervise(ctx.clone(), lease, up_tx, asks_rx, client_gone),
        span,
    ));
    ctx
}

/// The session's one task that owns the lease: connects upstream, answers the channel tasks'
/// questions (is the grant live, what warning did a late terminal miss), and on any reason
/// to close runs the kill path, then writes `session.ended`.
async fn supervise(
    ctx: Arc<SessionCtx>,
    mut lease: Lease,
    up_tx: watch::Sender<UpState>,
    mut asks: mpsc::Receiver<Ask>,
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
            Some(ask) = asks.recv() => match ask {
                Ask::Live(reply) => {
                    let _ = reply.send(lease.is_live());
                }
                Ask::Warning(reply) => {
                    let line = lease.warned_remaining().map(|left| {
                        Bytes::from(warning_line(lease.grant_id(), &ctx.request_hint(), left))
                    });
                    let _ = reply.send(line);
                }
            },
            _ = client_gone.cancelled() => break CloseReason::ClientClosed,
            _ = upstream_gone.cancelled() => break CloseReason::UpstreamClosed,
            _ = gw.shutdown.cancelled() => break CloseReason::Shutdown,
        }
    };
    // Further liveness checks answer "no" without waiting on this task.
    drop(asks);
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

/// The `warn_before` line on an interactive channel's stderr ([`crate::grants::warning`]).
fn warning_line(grant: &str, request: &RequestHint, remaining: Duration) -> String {
    format!(
        "\r\n{}\r\n",
        crate::grants::warning(grant, request, remaining)
    )
}

impl SessionCtx {
    /// What the session's warning suggests asking for: this user, target and role.
    fn request_hint(&self) -> RequestHint {
        RequestHint::new(
            &self.gw.config(),
            &self.ident.user,
            &self.target.name,
            Some(&self.ident.role),
        )
    }
}

/// Says the `warn_before` line on each interactive channel whose client has window for it;
/// a terminal that is not being read misses it rather than holding up the session.
async fn warn_interactive(ctx: &SessionCtx, lease: &Lease, remaining: Duration) {
    let line = Bytes::from(warning_line(
        lease.grant_id(),
        &ctx.request_hint(),
        remaining,
    ));
    let writers: Vec<Arc<russh::ChannelWriteHalf<DownMsg>>> = ctx
        .channels
        .lock()
        .map(|m| {
            m.values()
                .filter(|r| r.interactive)
                .filter_map(|r| r.stderr.clone())
                .collect()
        })
        .unwrap_or_default();
    let by = tokio::time::Instant::now() + NOTICE_WAIT;
    for w in writers {
        say(&w, line.clone(), by).await;
    }
}

/// Says `line` on a channel's stderr if the client's window has room for all of it now,
/// giving up at `by`; true if it went out.
///
/// It never waits for the client to open its window: a client that has stopped reading the
/// channel (`ssh gw 'cat big' | sleep 600`) may never open it. Through the session handle
/// instead, russh would hold the line until the window opened, and every message queued
/// after it, for any channel, with it (the connection's EXIT_STATUS, CLOSE and DISCONNECT
/// included). The channel's own writer keeps its window count, so the line is checked
/// against the same window as the channel's output and never overdraws it.
///
/// # Cancellation safety
/// Not cancellation safe: cancelled while sending, part of the line may have gone out.
pub(super) async fn say(
    w: &russh::ChannelWriteHalf<DownMsg>,
    line: Bytes,
    by: tokio::time::Instant,
) -> bool {
    let len = line.len();
    tokio::time::timeout_at(by, async {
        w.writable_packet_size().await >= len && w.extended_data_bytes(1, line).await.is_ok()
    })
    .await
    .unwrap_or(false)
}

/// The kill path for one SSH session: tell every channel why (where its client has window
/// for the line: see [`say`]) and close it, disconnect the client at once (it must not
/// wait on the target), then, [`UPSTREAM_HANGUP_DELAY`] later, hang up the target's
/// processes and cut the upstream connection behind it. Should the client not hang up
/// when told, the connection task cuts its socket (`ssh::listen`, on `closing`).
async fn kill(ctx: &SessionCtx, lease: &Lease, reason: CloseReason, up: Option<&Upstream>) {
    let message = close_message(reason, lease.grant_id(), lease.killer());
    type Up = Arc<russh::ChannelWriteHalf<UpMsg>>;
    type Down = Option<Arc<russh::ChannelWriteHalf<DownMsg>>>;
    let (channels, upstreams): (Vec<(ChannelId, Down)>, Vec<Up>) = ctx
        .channels
        .lock()
        .map(|m| {
            (
                m.iter().map(|(id, r)| (*id, r.stderr.clone())).collect(),
                m.values().filter_map(|r| r.upstream.clone()).collect(),
            )
        })
        .unwrap_or_default();
    let line = Bytes::from(format!("\r\n{message}\r\n"));
    let by = tokio::time::Instant::now() + NOTICE_WAIT;
    let mut told = Vec::new();
    for (id, stderr) in channels {
        if let Some(w) = stderr {
            if say(&w, line.clone(), by).await {
                told.push(id);
            } else {
                debug!(channel = %id, "no window for the closing line; closing without it");
            }
            let _ = ctx.client.exit_status_request(id, KILLED_EXIT_STATUS).await;
        }
        let _ = ctx.client.eof(id).await;
        let _ = ctx.client.close(id).await;
    }
    // One ordered queue to the client: the lines, statuses and closes above go out before
    // the disconnect. None of them waits for window (russh holds back everything queued
    // behind data that does not fit), so nothing here waits for the target, and on the
    // client only as long as it takes to answer the closes of the channels told why.
    let mut closes = ctx.client_closes.subscribe();
    let answered = |_: &u64| {
        ctx.channels
            .lock()
            .map(|m| {
                told.iter()
                    .all(|id| m.get(id).is_none_or(|r| r.client_closed))
            })
            .unwrap_or(true)
    };
    if tokio::time::timeout(CLIENT_CLOSE_WAIT, closes.wait_for(answered))
        .await
        .is_err()
    {
        debug!("the client did not answer the closes in time; disconnecting it");
    }
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
    use crate::grants::{RequestHint, RoleHint};

    #[test]
    fn the_warning_names_the_target_and_what_a_user_can_do() {
        let hint = RequestHint {
            user: "alice".into(),
            target: "web-1".into(),
            role: RoleHint::Named("deploy".into()),
            duration: Duration::from_secs(3600),
        };
        let line = warning_line("g_1", &hint, Duration::from_millis(59_900));
        assert_eq!(
            line,
            "\r\nportcullis: grant g_1 on web-1 expires in 1m; the session will be closed then; \
             for more time: portcullis request create --target web-1 --role deploy --for 1h \
             --reason \"...\" --as alice\r\n"
        );
        assert!(
            warning_line("g_1", &hint, Duration::from_secs(5400)).contains("expires in 1h 30m;")
        );
        // A warning due 1 s ahead fires inside that second: it says 1s, not 0s.
        assert!(warning_line("g_1", &hint, Duration::from_millis(999)).contains("expires in 1s;"));
    }
}
