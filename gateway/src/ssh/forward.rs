//! Plain channels, relayed byte for byte with no tap: `direct-tcpip` (`ssh -L`) when the
//! role allows port forwarding, and agent channels the target opens back to the user. As
//! for session channels, each direction awaits only its own peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use russh::client::Msg as UpMsg;
use russh::server::Msg as DownMsg;
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use super::audit;
use super::channel::{both_halves, refusal};
use super::session::{Registered, SessionCtx};

/// A `direct-tcpip` channel (`ssh -L`), when the role allows port forwarding. Logged when
/// asked for (`phase: "started"`, durable before the target is asked) and when it ends
/// (`phase: "ended"`, with the bytes each way and how long it lasted, or the target's
/// refusal as `error`).
#[allow(clippy::too_many_arguments)]
pub async fn forward(
    ctx: std::sync::Arc<SessionCtx>,
    chan: Channel<DownMsg>,
    reply: russh::server::ChannelOpenHandle,
    host: String,
    port: u32,
    origin: String,
    origin_port: u32,
) {
    if !ctx.is_live().await {
        reply.reject(refusal("the grant is no longer live")).await;
        return;
    }
    let originator = format!("{origin}:{origin_port}");
    let event = |phase: &'static str| {
        ctx.ident
            .event("ssh.forward")
            .with("phase", phase)
            .with("host", &host)
            .with("port", port)
            .with("originator", &originator)
    };
    if !audit::append(&ctx.gw, event("started")).await {
        reply.reject(refusal("the audit log is unavailable")).await;
        ctx.audit_failed().await;
        return;
    }
    let up = match ctx.upstream().await {
        Ok(up) => up,
        Err(message) => {
            reply.reject(refusal(message)).await;
            return;
        }
    };
    let up_chan = match up
        .channel_open_direct_tcpip(host.clone(), port, origin, origin_port)
        .await
    {
        Ok(c) => c,
        Err(e) => {
            let why = format!("{}: cannot connect to {host}:{port}: {e}", ctx.ident.target);
            audit::append(&ctx.gw, event("ended").with("error", &why)).await;
            // The target's own reason code (connect failed, say), as the client would hear
            // it direct; only a failure of the gateway's own is "prohibited".
            let refused = match e {
                russh::Error::ChannelOpenFailure(code) => russh::ChannelOpenFailure::Other {
                    code: code.code(),
                    reason: why,
                },
                _ => refusal(why),
            };
            reply.reject(refused).await;
            return;
        }
    };
    reply.accept().await;
    let id = chan.id();
    ctx.register(
        id,
        Registered {
            interactive: false,
            stderr: None,
            upstream: None,
            client_closed: false,
        },
    );
    let started = Instant::now();
    let (bytes_in, bytes_out) = pipe_plain(chan, up_chan, Some(&ctx)).await;
    ctx.unregister(id);
    let duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let ev = event("ended")
        .with("bytes_in", bytes_in)
        .with("bytes_out", bytes_out)
        .with("duration_ms", duration_ms);
    audit::append(&ctx.gw, ev).await;
}

/// Relays raw data both ways between a user channel and a target channel (forwards, agent).
/// With `ctx` (a forward the user opened), the user's side stops and the session closes
/// once the audit log has failed, as on session channels. Agent channels (no `ctx`) carry
/// only the user's agent's answers to requests the target makes; the session's kill path
/// ends them with the connection. Returns the bytes relayed each way (in: user to target).
pub async fn pipe_plain(
    down: Channel<DownMsg>,
    up: Channel<UpMsg>,
    ctx: Option<&SessionCtx>,
) -> (u64, u64) {
    let (d_rx, d_tx) = down.split();
    let (u_rx, u_tx) = up.split();
    // Atomics only so the relay's future stays Send; both halves run on this one task.
    let (bytes_in, bytes_out) = (AtomicU64::new(0), AtomicU64::new(0));
    let count_in = |n: usize| {
        bytes_in.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(c) = ctx {
            c.counters.add_in(n as u64);
        }
    };
    let count_out = |n: usize| {
        bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(c) = ctx {
            c.counters.add_out(n as u64);
        }
    };
    both_halves(
        pump(d_rx, u_tx, count_in, ctx),
        pump(u_rx, d_tx, count_out, None),
    )
    .await;
    (bytes_in.into_inner(), bytes_out.into_inner())
}

/// Relays one direction; `gate` is the session whose audit log must be healthy before each
/// message goes on (the user's direction only).
async fn pump<S>(
    mut rx: ChannelReadHalf,
    tx: ChannelWriteHalf<S>,
    count: impl Fn(usize),
    gate: Option<&SessionCtx>,
) where
    S: From<(ChannelId, ChannelMsg)> + Send + Sync + 'static,
{
    while let Some(msg) = rx.wait().await {
        // One atomic load per message (see `channel::client_to_upstream`).
        if let Some(ctx) = gate
            && !ctx.gw.audit.healthy()
        {
            ctx.audit_failed().await;
            return;
        }
        let ok = match msg {
            ChannelMsg::Data { data } => {
                count(data.len());
                tx.data_bytes(data).await.is_ok()
            }
            ChannelMsg::Eof => tx.eof().await.is_ok(),
            ChannelMsg::Close => break,
            _ => true,
        };
        if !ok {
            break;
        }
    }
    let _ = tx.close().await;
}
