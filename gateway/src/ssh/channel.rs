//! Relaying one session channel between the user and the target, each in its own task,
//! each direction awaiting only its own peer: a stalled channel holds up nothing but itself.
//! When a direction waits, it stops reading its russh channel, and the patched russh
//! (`vendor/russh/PORTCULLIS.md`) then stops granting that channel window, so the peer stops
//! sending on it while the connection's other channels go on.
//!
//! Session channels are watched on the way through: the start request is checked against
//! the role and audited, pty channels feed a [`PtyTap`], sftp channels a [`SftpTap`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use portcullis_recorder::{Durability, capped};
use russh::client::Msg as UpMsg;
use russh::server::Msg as DownMsg;
use russh::{
    Channel, ChannelId, ChannelMsg, ChannelOpenFailure, ChannelReadHalf, ChannelWriteHalf,
};
use tracing::debug;

use super::audit;
use super::policy::{self, ExecCommand, Start};
use super::replies::{Asked, Replies, refuse, refuse_started};
use super::session::{Registered, SessionCtx};
use super::tap::{self, PtyTap, SftpTap, StdinLines};
use events::{finish, is_strict, record, stdin_commands, tap_output};
use portcullis_config::Allow;

mod events;

/// Most environment variables a channel's events list (the first ones set).
const MAX_ENV: usize = 64;
/// Longest environment variable name and value kept in an event, in bytes.
const MAX_ENV_TEXT: usize = 1024;

/// How often a terminal's recording hands what it buffered to its file: a live session's
/// recording is at most this far behind (for `replay`, and for what a crash of the
/// gateway would lose), without a write per keystroke echoed.
const RECORDING_FLUSH: Duration = Duration::from_secs(1);

/// Once one direction of a channel is done, how long the other may take to finish.
const OTHER_HALF_GRACE: Duration = Duration::from_secs(5);

/// What both directions of a session channel know about it.
#[derive(Debug, Default)]
struct State {
    start: Option<Start>,
    term: String,
    pty: Option<PtyTap>,
    sftp: Option<SftpTap>,
    exit_status: Option<u32>,
    exit_signal: Option<String>,
    bytes_in: u64,
    bytes_out: u64,
    /// The environment the client set (`env` requests), as its events list it.
    env: BTreeMap<String, String>,
    /// The target refused the start request: nothing ran, and the closing event says so.
    refused: bool,
    /// A shell without a terminal: its input lines are its commands.
    stdin: Option<StdinLines>,
}

impl State {
    /// Notes an `env` request, capped (see [`MAX_ENV`]); a name set again keeps its last value.
    fn set_env(&mut self, name: &str, value: &str) {
        let name = capped(name.to_owned(), MAX_ENV_TEXT);
        if self.env.len() < MAX_ENV || self.env.contains_key(&name) {
            self.env
                .insert(name, capped(value.to_owned(), MAX_ENV_TEXT));
        }
    }

    /// The `env` field of the channel's events; none when the client set nothing.
    fn env_field(&self) -> Option<&BTreeMap<String, String>> {
        (!self.env.is_empty()).then_some(&self.env)
    }
}

pub(super) fn refusal(reason: impl Into<String>) -> ChannelOpenFailure {
    ChannelOpenFailure::Other {
        code: 1, // SSH_OPEN_ADMINISTRATIVELY_PROHIBITED
        reason: reason.into(),
    }
}

/// A session channel of an authorized session.
pub async fn session(
    ctx: Arc<SessionCtx>,
    chan: Channel<DownMsg>,
    reply: russh::server::ChannelOpenHandle,
) {
    let id = chan.id();
    if !ctx.is_live().await {
        reply.reject(refusal("the grant is no longer live")).await;
        return;
    }
    if !ctx.gw.audit.healthy() {
        reply.reject(refusal("the audit log is unavailable")).await;
        ctx.audit_failed().await;
        return;
    }
    let up = match ctx.upstream().await {
        Ok(up) => up,
        Err(message) => {
            reply.accept().await;
            refuse(&ctx.client, chan, message).await;
            return;
        }
    };
    let up_chan = match up.channel_open_session().await {
        Ok(c) => c,
        // The target itself said no (sshd's MaxSessions, say): so does the gateway, with
        // the target's reason code, as the client would hear direct. OpenSSH then prints
        // "open failed", and a ControlMaster client falls back to a connection of its own.
        Err(russh::Error::ChannelOpenFailure(why)) => {
            let reason = format!("{} refused a session channel", ctx.ident.target);
            let code = why.code();
            reply
                .reject(ChannelOpenFailure::Other { code, reason })
                .await;
            return;
        }
        Err(e) => {
            reply.accept().await;
            refuse(
                &ctx.client,
                chan,
                format!("portcullis: {} refused a session: {e}", ctx.ident.target),
            )
            .await;
            return;
        }
    };
    reply.accept().await;
    let (c_rx, c_tx) = chan.split();
    let c_tx = Arc::new(c_tx);
    let (u_rx, u_tx) = up_chan.split();
    let u_tx = Arc::new(u_tx);
    ctx.register(
        id,
        Registered {
            interactive: false,
            stderr: Some(c_tx.clone()),
            upstream: Some(u_tx.clone()),
            client_closed: false,
        },
    );
    let state = Arc::new(Mutex::new(State::default()));
    let replies = Replies::default();
    let started = Instant::now();
    both_halves(
        client_to_upstream(&ctx, id, c_rx, &u_tx, &state, &replies),
        upstream_to_client(&ctx, id, u_rx, &c_tx, &state, &replies),
    )
    .await;
    ctx.unregister(id);
    finish(&ctx, id, &state, started).await;
}

/// Flushes the channel's terminal recording every `period` until the channel or its
/// session ends (the channel's state gone, or the session closing).
fn flush_recording_every(period: Duration, ctx: &SessionCtx, state: &Arc<Mutex<State>>) {
    let state = Arc::downgrade(state);
    let closing = ctx.closing.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = closing.cancelled() => return,
            }
            let Some(state) = state.upgrade() else {
                return;
            };
            if let Ok(mut s) = state.lock()
                && let Some(p) = &mut s.pty
            {
                p.flush_recording();
            }
        }
    });
}

/// Runs both directions; when one ends the other gets a grace period.
pub(super) async fn both_halves(a: impl Future<Output = ()>, b: impl Future<Output = ()>) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    // Biased: polled on every message either way, and the order does not matter; an
    // unbiased `select!` draws a random number each time.
    tokio::select! {
        biased;
        () = &mut a => { let _ = tokio::time::timeout(OTHER_HALF_GRACE, b).await; }
        () = &mut b => { let _ = tokio::time::timeout(OTHER_HALF_GRACE, a).await; }
    }
}

async fn client_to_upstream(
    ctx: &SessionCtx,
    id: ChannelId,
    mut rx: ChannelReadHalf,
    up: &ChannelWriteHalf<UpMsg>,
    state: &Arc<Mutex<State>>,
    replies: &Replies,
) {
    while let Some(msg) = rx.wait().await {
        // Nothing of the client's goes on once the log has failed. With batched durability
        // an event is written after the bytes that caused it went on (a typed command, an
        // sftp request: already relayed when their write fails), so a failed write is seen
        // here, afterwards, as an unhealthy log; from then on the session ends instead of
        // relaying unaudited. One atomic load per message, no allocation.
        if !ctx.gw.audit.healthy() {
            ctx.audit_failed().await;
            return;
        }
        let ok = match msg {
            ChannelMsg::Data { data } => {
                let len = data.len() as u64;
                ctx.counters.add_in(len);
                // What must be seen before the bytes go on: an sftp request (its reply must
                // never be tapped first) and whether Enter was pressed (likewise its echo).
                // The recording waits until the keystroke is on its way.
                let (pty, lines, sftp_ops) = match state.lock() {
                    Ok(mut s) => {
                        s.bytes_in += len;
                        let sftp_ops = s.sftp.as_mut().map(|t| t.client(&data));
                        let lines = s.stdin.as_mut().map(|t| t.push(&data));
                        let pty = s.pty.as_mut().map(|p| p.typed(&data)).is_some();
                        (pty, lines, sftp_ops)
                    }
                    Err(_) => (false, None, None),
                };
                // An sftp request logged without waiting for its reply (its id was reused,
                // or too many are in flight) goes to the log before it goes to the server,
                // as a command does.
                if let Some(ops) = sftp_ops.filter(|o| !o.is_empty())
                    && !record(ctx, id, (Vec::new(), ops), is_strict(ctx)).await
                {
                    ctx.audit_failed().await;
                    return;
                }
                // A command goes to the log before it goes to the shell.
                if let Some(lines) = lines.filter(|l| !l.is_empty())
                    && !stdin_commands(ctx, id, lines).await
                {
                    ctx.audit_failed().await;
                    return;
                }
                if pty {
                    let sent = up.data_bytes(data.clone()).await.is_ok();
                    if let Ok(mut s) = state.lock()
                        && let Some(p) = &mut s.pty
                    {
                        p.record_input(&data);
                    }
                    sent
                } else {
                    up.data_bytes(data).await.is_ok()
                }
            }
            ChannelMsg::ExtendedData { data, ext } => {
                ctx.counters.add_in(data.len() as u64);
                up.extended_data_bytes(ext, data).await.is_ok()
            }
            ChannelMsg::Eof => {
                let last = state
                    .lock()
                    .ok()
                    .and_then(|mut s| s.stdin.as_mut()?.finish());
                if let Some(line) = last
                    && !stdin_commands(ctx, id, vec![line]).await
                {
                    ctx.audit_failed().await;
                    return;
                }
                up.eof().await.is_ok()
            }
            ChannelMsg::Close => {
                ctx.client_closed(id);
                // Closing, the kill path hangs up the target's side itself, after signalling
                // its processes; closed first, the channel would take no signal.
                if !ctx.closing.is_cancelled() {
                    let _ = up.close().await;
                }
                break;
            }
            ChannelMsg::RequestPty {
                want_reply,
                term,
                col_width,
                row_height,
                pix_width,
                pix_height,
                terminal_modes,
            } => {
                let tap = PtyTap::new(
                    &ctx.gw.data_dir.join("recordings"),
                    &ctx.ident.session,
                    id.into(),
                    col_width,
                    row_height,
                    &term,
                    &format!("{}@{}", ctx.ident.user, ctx.ident.target),
                );
                if let Ok(mut s) = state.lock() {
                    s.term = term.clone();
                    if s.pty.replace(tap).is_none() {
                        flush_recording_every(RECORDING_FLUSH, ctx, state);
                    }
                }
                ctx.update(id, |r| r.interactive = true);
                replies.ask(want_reply, Asked::Setting);
                up.request_pty(
                    want_reply,
                    &term,
                    col_width,
                    row_height,
                    pix_width,
                    pix_height,
                    &terminal_modes,
                )
                .await
                .is_ok()
            }
            ChannelMsg::SetEnv {
                want_reply,
                variable_name,
                variable_value,
            } => {
                if let Ok(mut s) = state.lock() {
                    s.set_env(&variable_name, &variable_value);
                }
                replies.ask(want_reply, Asked::Setting);
                up.set_env(want_reply, variable_name, variable_value)
                    .await
                    .is_ok()
            }
            // X11 forwarding is not relayed.
            ChannelMsg::RequestX11 { want_reply, .. } => {
                replies.answer_here(ctx, id, want_reply, false).await;
                true
            }
            ChannelMsg::WindowChange {
                col_width,
                row_height,
                pix_width,
                pix_height,
            } => {
                if let Ok(mut s) = state.lock()
                    && let Some(p) = &mut s.pty
                {
                    p.resize(col_width, row_height);
                }
                up.window_change(col_width, row_height, pix_width, pix_height)
                    .await
                    .is_ok()
            }
            ChannelMsg::Signal { signal } => up.signal(signal).await.is_ok(),
            // The client will read no more of this channel (`ssh gw cmd | head -1`): the
            // target closes the command's output, so the command ends as it would direct.
            ChannelMsg::Eow => up.eow().await.is_ok(),
            ChannelMsg::AgentForward { .. } if ctx.allow().contains(&Allow::AgentForward) => {
                if let Ok(mut slot) = ctx.agent.lock() {
                    *slot = Some(ctx.client.clone());
                }
                up.agent_forward(false).await.is_ok()
            }
            ChannelMsg::RequestShell { want_reply } => {
                start(ctx, id, up, state, replies, Start::Shell, want_reply).await
            }
            ChannelMsg::Exec {
                want_reply,
                command,
            } => {
                start(
                    ctx,
                    id,
                    up,
                    state,
                    replies,
                    Start::Exec(ExecCommand::from_wire(&command)),
                    want_reply,
                )
                .await
            }
            ChannelMsg::RequestSubsystem { want_reply, name } => {
                start(
                    ctx,
                    id,
                    up,
                    state,
                    replies,
                    Start::Subsystem(name),
                    want_reply,
                )
                .await
            }
            _ => true,
        };
        if !ok {
            debug!(channel = %id, "upstream channel gone");
            break;
        }
    }
}

/// Checks, audits and forwards the channel's one start request. False ends the channel.
/// A refusal is answered yes, so that the client shows the sentence on stderr that says
/// why, and then the channel ends.
async fn start(
    ctx: &SessionCtx,
    id: ChannelId,
    up: &ChannelWriteHalf<UpMsg>,
    state: &Mutex<State>,
    replies: &Replies,
    what: Start,
    want_reply: bool,
) -> bool {
    let already = state.lock().map(|s| s.start.is_some()).unwrap_or(true);
    if already {
        // A channel runs one thing; sshd refuses a second start request too.
        replies.answer_here(ctx, id, want_reply, false).await;
        return true;
    }
    if !ctx.is_live().await {
        replies.answer_here(ctx, id, want_reply, true).await;
        refuse_started(ctx, id, "portcullis: the grant is no longer live").await;
        return false;
    }
    // A subsystem nothing can allow is named in the sentence (and the event below).
    let label = match &what {
        Start::Subsystem(name) if what.needs().is_empty() => format!("subsystem {name}"),
        _ => what.kind().to_owned(),
    };
    let allow = ctx.allow();
    let allowed = policy::check(
        &allow,
        what.needs(),
        &label,
        &ctx.ident.role,
        &ctx.ident.target,
    );
    if let Err(sentence) = allowed {
        let sentence = policy::scp_refusal(&what, &allow, sentence);
        let ev = ctx
            .ident
            .event("ssh.denied")
            .with("request", what.kind())
            .with(
                "command",
                match &what {
                    Start::Exec(c) => Some(c.to_string()),
                    _ => None,
                },
            )
            .with(
                "command_bytes",
                match &what {
                    Start::Exec(c) => c.raw().map(portcullis_recorder::bytes_field),
                    _ => None,
                },
            )
            .with(
                "subsystem",
                match &what {
                    Start::Subsystem(name) => Some(name.clone()),
                    _ => None,
                },
            )
            .with("reason", &sentence)
            .with("channel", id.to_string());
        audit::append(&ctx.gw, ev).await;
        replies.answer_here(ctx, id, want_reply, true).await;
        refuse_started(ctx, id, &format!("portcullis: {sentence}")).await;
        return false;
    }
    if matches!(what, Start::Shell) {
        let (term, env) = state
            .lock()
            .map(|s| (s.term.clone(), s.env_field().cloned()))
            .unwrap_or_default();
        let ev = ctx
            .ident
            .event("ssh.shell")
            .with("phase", "started")
            .with("term", term)
            .with("env", env)
            .with("channel", id.to_string());
        if !audit::append(&ctx.gw, ev).await {
            ctx.audit_failed().await;
            return false;
        }
    }
    replies.ask(want_reply, Asked::Start(what.kind()));
    let sent = match &what {
        Start::Shell => up.request_shell(want_reply).await,
        Start::Exec(command) => up.exec(want_reply, command.bytes()).await,
        Start::Subsystem(name) => up.request_subsystem(want_reply, name.as_str()).await,
    };
    if let Ok(mut s) = state.lock() {
        if tap::speaks_sftp(&what) {
            s.sftp = Some(SftpTap::default());
        }
        if matches!(what, Start::Shell) && s.pty.is_none() {
            s.stdin = Some(StdinLines::default());
        }
        s.start = Some(what);
    }
    // A terminal that starts after the session's terminals were warned of the grant's end
    // (a session begun inside `warn_before` was warned before it had any) is told too.
    let terminal = state.lock().map(|s| s.pty.is_some()).unwrap_or(false);
    if terminal && sent.is_ok() {
        ctx.warn_late_terminal(id).await;
    }
    sent.is_ok()
}

/// Relays the target's side of a session channel to the client.
///
/// The target's EOF is held back until its exit status (or signal, or close) has gone on.
/// sshd sends EOF when the command's output ends and the exit status when it is reaped,
/// usually in that order; a client that has sent its own EOF may close the channel as soon
/// as it sees ours (OpenSSH's ControlMaster does), and russh answers that close at once,
/// after which an exit status is dropped and the client reports 255. Direct, sshd still
/// sends the status before its own CLOSE; holding the EOF keeps that order through the hop.
async fn upstream_to_client(
    ctx: &SessionCtx,
    id: ChannelId,
    mut rx: ChannelReadHalf,
    down: &ChannelWriteHalf<DownMsg>,
    state: &Mutex<State>,
    replies: &Replies,
) {
    let (mut eof_held, mut exited) = (false, false);
    while let Some(msg) = rx.wait().await {
        let ok = match msg {
            ChannelMsg::Data { data } => output(ctx, id, down, state, data, None).await,
            ChannelMsg::ExtendedData { data, ext } => {
                output(ctx, id, down, state, data, Some(ext)).await
            }
            ChannelMsg::Eof if !exited => {
                eof_held = true;
                true
            }
            ChannelMsg::Eof => down.eof().await.is_ok(),
            ChannelMsg::ExitStatus { exit_status } => {
                if let Ok(mut s) = state.lock() {
                    s.exit_status = Some(exit_status);
                }
                exited = true;
                down.exit_status(exit_status).await.is_ok()
                    && (!std::mem::take(&mut eof_held) || down.eof().await.is_ok())
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                if let Ok(mut s) = state.lock() {
                    s.exit_signal = Some(format!("{signal_name:?}"));
                }
                exited = true;
                ctx.client
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await
                    .is_ok()
                    && (!std::mem::take(&mut eof_held) || down.eof().await.is_ok())
            }
            ChannelMsg::Success => replies.relay(ctx, id, true).await,
            ChannelMsg::Failure => {
                let go_on = replies.relay(ctx, id, false).await;
                if !go_on && let Ok(mut s) = state.lock() {
                    s.refused = true;
                    s.sftp = None;
                }
                go_on
            }
            ChannelMsg::Close => break,
            _ => true,
        };
        if !ok {
            break;
        }
    }
    if eof_held {
        let _ = down.eof().await;
    }
    let _ = down.close().await;
}

/// Upstream data (or stderr, `ext`) for the user, through the channel's taps.
///
/// With batched durability the bytes go out first and the taps (terminal screen and
/// recording, sftp replies) and the events they derive follow, queued without waiting for
/// the disk: none of it is on the echo's path. Strict durability ("fsync before
/// forwarding") keeps the derived events durable before the bytes that completed them go on.
async fn output(
    ctx: &SessionCtx,
    id: ChannelId,
    down: &ChannelWriteHalf<DownMsg>,
    state: &Mutex<State>,
    data: Bytes,
    ext: Option<u32>,
) -> bool {
    let len = data.len() as u64;
    ctx.counters.add_out(len);
    let tapped = match state.lock() {
        Ok(mut s) => {
            s.bytes_out += len;
            s.pty.is_some() || (ext.is_none() && s.sftp.is_some())
        }
        Err(_) => false,
    };
    let send = |data: Bytes| async move {
        match ext {
            None => down.data_bytes(data).await.is_ok(),
            Some(ext) => down.extended_data_bytes(ext, data).await.is_ok(),
        }
    };
    if !tapped {
        return send(data).await;
    }
    if ctx.gw.audit.durability() == Durability::Strict {
        let facts = tap_output(state, &data, ext.is_some());
        if !record(ctx, id, facts, true).await {
            // The bytes that completed an event the log refused do not go on; the kill path
            // ends the channel.
            ctx.audit_failed().await;
            return true;
        }
        send(data).await
    } else {
        let sent = send(data.clone()).await;
        let facts = tap_output(state, &data, ext.is_some());
        if !record(ctx, id, facts, false).await {
            // Only signalled: this direction does not wait on its own session's kill path.
            ctx.gw.grants.close_audit_failed(&ctx.ident.session);
        }
        sent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The environment a channel lists is bounded however much the client sends: the first
    /// 64 names, each name and value cut at 1 KiB, a name set again keeping its last value.
    #[test]
    fn the_listed_environment_is_bounded() {
        let mut s = State::default();
        assert!(s.env_field().is_none());
        for i in 0..100 {
            s.set_env(&format!("V{i}"), "x");
        }
        s.set_env("V0", "again");
        s.set_env("LONG", &"é".repeat(MAX_ENV_TEXT));
        let env = s.env_field().expect("env");
        assert_eq!(env.len(), MAX_ENV);
        assert_eq!(env["V0"], "again");
        assert!(env.contains_key("V63") && !env.contains_key("V64"));
        assert!(!env.contains_key("LONG"));

        let mut s = State::default();
        s.set_env(&"N".repeat(5000), &"é".repeat(MAX_ENV_TEXT));
        let (name, value) = s.env.iter().next().expect("one");
        assert_eq!(
            name.len(),
            MAX_ENV_TEXT + portcullis_recorder::TRUNCATED.len()
        );
        // 512 two-byte characters fit in the cap exactly.
        assert_eq!(
            value,
            &format!(
                "{}{}",
                "é".repeat(MAX_ENV_TEXT / 2),
                portcullis_recorder::TRUNCATED
            )
        );
    }
}
