//! Plain channels, relayed byte for byte with no tap: `direct-tcpip` (`ssh -L`) when the
//! role allows port forwarding, and agent channels the target opens back to the user. As
//! for session channels, each direction awaits only its own peer.

use russh::client::Msg as UpMsg;
use russh::server::Msg as DownMsg;
use russh::{Channel, ChannelId, ChannelMsg, ChannelReadHalf, ChannelWriteHalf};

use super::audit;
use super::channel::{both_halves, refusal};
use super::session::{Registered, SessionCtx};

/// A `direct-tcpip` channel (`ssh -L`), when the role allows port forwarding.
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
    let ev = ctx
        .ident
        .event("ssh.forward")
        .with("host", &host)
        .with("port", port)
        .with("originator", format!("{origin}:{origin_port}"));
    if !audit::append(&ctx.gw, ev).await {
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
            reply
                .reject(refusal(format!(
                    "{}: cannot connect to {host}:{port}: {e}",
                    ctx.ident.target
                )))
                .await;
            return;
        }
    };
    reply.accept().await;
    let id = chan.id();
    ctx.register(
        id,
        Registered {
            interactive: false,
            session: false,
            upstream: None,
        },
    );
    pipe_plain(chan, up_chan, Some(&ctx)).await;
    ctx.unregister(id);
}

/// Relays raw data both ways between a user channel and a target channel (forwards, agent).
/// With `ctx` (a forward the user opened), the user's side stops and the session closes
/// once the audit log has failed, as on session channels. Agent channels (no `ctx`) carry
/// only the user's agent's answers to requests the target makes; the session's kill path
/// ends them with the connection.
pub async fn pipe_plain(down: Channel<DownMsg>, up: Channel<UpMsg>, ctx: Option<&SessionCtx>) {
    let (d_rx, d_tx) = down.split();
    let (u_rx, u_tx) = up.split();
    let count_in = |n: usize| {
        if let Some(c) = ctx {
            c.counters.add_in(n as u64);
        }
    };
    let count_out = |n: usize| {
        if let Some(c) = ctx {
            c.counters.add_out(n as u64);
        }
    };
    both_halves(
        pump(d_rx, u_tx, count_in, ctx),
        pump(u_rx, d_tx, count_out, None),
    )
    .await;
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
