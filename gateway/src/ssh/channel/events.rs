//! The audit events of a session channel: the closing one (`ssh.exec`, `ssh.shell`,
//! `ssh.subsystem`, with the channel's totals) and those its taps derive from the target's
//! output (typed commands, sftp operations).

use std::sync::Mutex;
use std::time::Instant;

use portcullis_protocol::sftp::Op;
use portcullis_recorder::{Durability, Event};
use russh::ChannelId;

use super::super::audit;
use super::super::policy::Start;
use super::super::replies;
use super::super::session::SessionCtx;
use super::super::tap::{self, PtyTap};
use super::State;

/// Writes the channel's closing audit event and keeps its recording.
pub(super) async fn finish(
    ctx: &SessionCtx,
    id: ChannelId,
    state: &Mutex<State>,
    started: Instant,
) {
    let (start, exit_status, exit_signal, bytes_in, bytes_out, pty, sftp, env, refused) = {
        let Ok(mut s) = state.lock() else { return };
        (
            s.start.take(),
            s.exit_status,
            s.exit_signal.take(),
            s.bytes_in,
            s.bytes_out,
            s.pty.take(),
            s.sftp.take(),
            s.env_field().cloned(),
            s.refused,
        )
    };
    if let Some((file, sha)) = pty.and_then(PtyTap::finish)
        && let Ok(mut r) = ctx.recordings.lock()
    {
        r.push((file.display().to_string(), sha));
    }
    // Requests the server never answered, and files the client never closed (it went away,
    // or the session was closed mid-transfer), are logged here, before the channel's own
    // event: the requests with their outcome unknown, the files with what went through them.
    let mut sftp_broken = None;
    if let Some(mut t) = sftp {
        record(ctx, id, (Vec::new(), t.finish()), is_strict(ctx)).await;
        sftp_broken = Some(t.broken);
    }
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let error = match &start {
        Some(what) if refused => Some(replies::refused(&ctx.ident.target, what.kind())),
        _ => None,
    };
    let ev = match start {
        Some(Start::Exec(command)) => ctx
            .ident
            .event("ssh.exec")
            .with("command", &*command)
            .with(
                "command_bytes",
                command.raw().map(portcullis_recorder::bytes_field),
            )
            .with("exit_status", exit_status)
            .with("exit_signal", exit_signal),
        Some(Start::Shell) => ctx
            .ident
            .event("ssh.shell")
            .with("phase", "ended")
            .with("exit_status", exit_status),
        Some(Start::Subsystem(name)) => ctx
            .ident
            .event("ssh.subsystem")
            .with("name", name)
            .with("decoded", sftp_broken.map(|b| !b)),
        None => return,
    };
    let ev = ev
        .with("channel", id.to_string())
        .with("env", env)
        .with("error", error)
        .with("bytes_in", bytes_in)
        .with("bytes_out", bytes_out)
        .with("duration_ms", duration_ms);
    audit::append(&ctx.gw, ev).await;
}

/// What one chunk of upstream output completed: typed command lines, sftp operations.
type Facts = (Vec<String>, Vec<Op>);

pub(super) fn tap_output(state: &Mutex<State>, data: &[u8], stderr: bool) -> Facts {
    let Ok(mut s) = state.lock() else {
        return (Vec::new(), Vec::new());
    };
    // A terminal shows stderr too, so the screen and the recording take it; commands are
    // read off stdout's echo only.
    let command = match &mut s.pty {
        Some(p) if stderr => {
            p.output_stderr(data);
            Vec::new()
        }
        Some(p) => p.output(data),
        None => Vec::new(),
    };
    let ops = match &mut s.sftp {
        Some(t) if !stderr => t.server(data),
        _ => Vec::new(),
    };
    (command, ops)
}

/// Audits what [`tap_output`] derived: appended (durable) when `strict`, else queued. False
/// when the log refused an event (the caller closes the session).
pub(super) async fn record(
    ctx: &SessionCtx,
    id: ChannelId,
    (command, ops): Facts,
    strict: bool,
) -> bool {
    let events = command
        .into_iter()
        .map(|command| {
            ctx.ident
                .event("ssh.command")
                .with("command", command)
                .with("derived", true)
                .with("channel", id.to_string())
        })
        .chain(
            ops.into_iter()
                .map(|op| tap::sftp_event(&ctx.ident, op, &id.to_string())),
        );
    log_all(ctx, events, strict).await
}

/// Appends each event (durable before returning) when `strict`, else queues it. False
/// when the log refused one.
async fn log_all(ctx: &SessionCtx, events: impl IntoIterator<Item = Event>, strict: bool) -> bool {
    for ev in events {
        let taken = if strict {
            audit::append(&ctx.gw, ev).await
        } else {
            audit::submit(&ctx.gw, ev).await
        };
        if !taken {
            return false;
        }
    }
    true
}

/// Logs the input lines of a shell without a terminal as its commands (`ssh.command` with
/// `from: "stdin"`), durably first in strict mode. False when the log refused one.
pub(super) async fn stdin_commands(ctx: &SessionCtx, id: ChannelId, lines: Vec<String>) -> bool {
    let events = lines.into_iter().map(|command| {
        ctx.ident
            .event("ssh.command")
            .with("command", command)
            .with("from", "stdin")
            .with("channel", id.to_string())
    });
    log_all(ctx, events, is_strict(ctx)).await
}

/// Whether events are appended durably (strict) rather than queued.
pub(super) fn is_strict(ctx: &SessionCtx) -> bool {
    ctx.gw.audit.durability() == Durability::Strict
}
