//! Answers to a session channel's requests (pty-req, env, x11-req, shell, exec, subsystem),
//! each given in the order the client asked: SSH matches an answer to its request by order
//! alone.
//!
//! A request the gateway forwards is forwarded wanting the same answer, and the target's
//! answer is relayed as the client's, so a pty or a command the target refuses is refused
//! to the client as sshd itself would refuse it. A request the gateway decides itself (a
//! policy refusal, X11, a second start request) is answered only once the target has
//! answered every request forwarded before it. The patched russh counts the answers owed
//! per channel (`vendor/russh/PORTCULLIS.md`). Also here: how a refused channel or start
//! request is told why, on stderr: as the kill path says its lines (`session::say`), only
//! if the client's window has room for the sentence, so a client that does not read its
//! stderr cannot hold up the refusal, nor anything else on its connection.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use russh::server::Msg as DownMsg;
use russh::{Channel, ChannelId, ChannelMsg};
use tokio::sync::Notify;
use tracing::debug;

use super::session::{self, NOTICE_WAIT, SessionCtx};

/// How long a refused channel waits for the client's start request before closing.
const START_WAIT: Duration = Duration::from_secs(10);

/// Once the target has not answered for this long, a request the gateway decides itself is
/// answered anyway (the client would otherwise wait on a target that stopped answering).
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// A forwarded request whose answer the client waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Asked {
    /// A pty or an environment variable: refused, the channel goes on.
    Setting,
    /// The channel's start request (its kind, for the refusal sentence).
    Start(&'static str),
}

/// One channel's forwarded requests still waiting for the target's answer, oldest first.
#[derive(Debug, Default)]
pub(super) struct Replies {
    asked: Mutex<VecDeque<Asked>>,
    /// Woken each time an answer from the target is relayed.
    answered: Notify,
}

/// Does the client wait for an answer to this request?
pub(super) fn wants_reply(msg: &ChannelMsg) -> bool {
    match msg {
        ChannelMsg::RequestPty { want_reply, .. }
        | ChannelMsg::RequestX11 { want_reply, .. }
        | ChannelMsg::SetEnv { want_reply, .. }
        | ChannelMsg::RequestShell { want_reply }
        | ChannelMsg::Exec { want_reply, .. }
        | ChannelMsg::RequestSubsystem { want_reply, .. } => *want_reply,
        _ => false,
    }
}

impl Replies {
    fn settled(&self) -> bool {
        self.asked.lock().map_or(true, |a| a.is_empty())
    }

    /// Notes a request about to be forwarded, if the client waits for its answer.
    pub(super) fn ask(&self, want_reply: bool, what: Asked) {
        if want_reply && let Ok(mut a) = self.asked.lock() {
            a.push_back(what);
        }
    }

    /// Answers a request the gateway decides itself, after every answer owed before it.
    /// A target that never answers holds this up for [`ANSWER_WAIT`] at most.
    pub(super) async fn answer_here(
        &self,
        ctx: &SessionCtx,
        id: ChannelId,
        want_reply: bool,
        ok: bool,
    ) {
        if !want_reply {
            return;
        }
        let deadline = tokio::time::Instant::now() + ANSWER_WAIT;
        while !self.settled() {
            // Registered before the re-check, so an answer relayed in between wakes us.
            let next = self.answered.notified();
            tokio::pin!(next);
            next.as_mut().enable();
            if self.settled() || tokio::time::timeout_at(deadline, next).await.is_err() {
                break;
            }
        }
        answer(ctx, id, ok).await;
    }

    /// Relays the target's answer to the oldest forwarded request as the client's answer.
    /// A refused start request is also said on stderr, naming the target, and ends the
    /// channel; other refusals (a pty, an environment variable) leave it running, as they
    /// do in sshd. An answer to nothing asked is dropped. False ends the channel.
    ///
    /// OpenSSH's client exits on the failure before it prints stderr data still buffered,
    /// so its user sees only its own "subsystem request failed", exactly as direct; the
    /// line is for clients that go on reading.
    pub(super) async fn relay(&self, ctx: &SessionCtx, id: ChannelId, ok: bool) -> bool {
        let asked = self.asked.lock().ok().and_then(|mut a| a.pop_front());
        let go_on = match asked {
            None => true,
            Some(Asked::Start(what)) if !ok => {
                let line = format!("portcullis: {}", refused(&ctx.ident.target, what));
                say(ctx, id, &line).await;
                let _ = ctx.client.channel_failure(id).await;
                let _ = ctx.client.exit_status_request(id, 1).await;
                let _ = ctx.client.eof(id).await;
                false
            }
            Some(_) => {
                answer(ctx, id, ok).await;
                true
            }
        };
        self.answered.notify_waiters();
        go_on
    }
}

/// Says `message` on the channel's stderr once the client asks to start something (if its
/// window has room for it: see [`say`]), then exits 1 and closes: how a user without
/// access, or whose target is down, is told why.
/// The requests before it are answered yes but X11 (nothing is set up, and a "PTY
/// allocation failed" would only hide the sentence), as is the start itself, so the client
/// shows the sentence.
pub(super) async fn refuse(
    client: &russh::server::Handle,
    chan: Channel<DownMsg>,
    message: String,
) {
    let id = chan.id();
    let (mut rx, tx) = chan.split();
    let waited = tokio::time::timeout(START_WAIT, async {
        while let Some(msg) = rx.wait().await {
            if wants_reply(&msg) {
                let _ = if matches!(msg, ChannelMsg::RequestX11 { .. }) {
                    client.channel_failure(id).await
                } else {
                    client.channel_success(id).await
                };
            }
            if matches!(
                msg,
                ChannelMsg::RequestShell { .. }
                    | ChannelMsg::Exec { .. }
                    | ChannelMsg::RequestSubsystem { .. }
            ) {
                return true;
            }
        }
        false
    })
    .await;
    if waited == Ok(false) {
        return;
    }
    let line = Bytes::from(format!("{message}\r\n"));
    if !session::say(&tx, line, tokio::time::Instant::now() + NOTICE_WAIT).await {
        debug!(channel = %id, "no window for the refusal; refusing without it");
    }
    let _ = tx.exit_status(1).await;
    let _ = tx.eof().await;
    let _ = tx.close().await;
}

/// Refuses a started request on an accepted, registered channel: the sentence (see
/// [`say`]), exit status 1, EOF and close.
pub(super) async fn refuse_started(ctx: &SessionCtx, id: ChannelId, message: &str) {
    say(ctx, id, message).await;
    let _ = ctx.client.exit_status_request(id, 1).await;
    let _ = ctx.client.eof(id).await;
    let _ = ctx.client.close(id).await;
}

/// The sentence for a start request the target refused, for the client and the log.
pub(super) fn refused(target: &str, what: &str) -> String {
    format!("{target} refused the {what} request")
}

/// Answers the client's oldest request still owed an answer.
async fn answer(ctx: &SessionCtx, id: ChannelId, ok: bool) {
    let _ = if ok {
        ctx.client.channel_success(id).await
    } else {
        ctx.client.channel_failure(id).await
    };
}

/// Writes one line on the channel's stderr, through the channel's registered writer and
/// only if the client's window has room for it (`session::say`). Through the session
/// handle, russh would hold a line that does not fit until the client read, and with it
/// everything queued behind it for every channel of the connection: this channel's exit
/// status and close, other channels' output. The line is left out instead.
async fn say(ctx: &SessionCtx, id: ChannelId, line: &str) {
    let writer = ctx
        .channels
        .lock()
        .ok()
        .and_then(|m| m.get(&id).and_then(|r| r.stderr.clone()));
    let line = Bytes::from(format!("{line}\r\n"));
    let said = match writer {
        Some(w) => session::say(&w, line, tokio::time::Instant::now() + NOTICE_WAIT).await,
        None => false,
    };
    if !said {
        debug!(channel = %id, "no window for the refusal; refusing without it");
    }
}
