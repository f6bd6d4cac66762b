//! The russh server handler for one client connection: public-key authentication against
//! the user's configured keys, the grant decision, and dispatch of channel opens to
//! [`channel`](super::channel) tasks. Nothing here awaits another channel's I/O: each
//! callback decides, replies and spawns.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use portcullis_config::{Allow, TargetKind};
use portcullis_protocol::login::{SshLogin, parse_ssh_login};
use russh::keys::PublicKey;
use russh::server::{Auth, ChannelOpenHandle, Msg, Session};
use russh::{Channel, ChannelId, MethodKind, MethodSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use super::SshError;
use super::audit;
use super::channel;
use super::forward;
use super::replies;
use super::session::{self, Authorized, SessionCtx};
use crate::context::Shared;
use crate::grants::{Proto, SessionInfo};

/// How long a refused connection (a malformed login name, or a user without access) stays
/// open to be told why before the gateway disconnects it. A client that runs something
/// opens its session channel at once and reads the sentence well within this (the refusal
/// itself waits as long for the start request: `replies::refuse`); one that never opens a
/// channel (`ssh -N`) reads it in the disconnect message instead.
const EXPLAIN_WAIT: Duration = Duration::from_secs(10);

/// Session channels a refused connection may open to be told why (sshd's `MaxSessions`
/// default); any more are refused at once, the sentence as the reason. Such a connection
/// has not logged in (a malformed login name gets in with no key at all), and each channel
/// holds a task for up to [`EXPLAIN_WAIT`]: unbounded, one connection opened some 2,000 a
/// second, each holding memory until it was disconnected.
const MAX_REFUSED_CHANNELS: usize = 10;

/// Where the connection stands.
#[derive(Debug)]
enum State {
    /// Not authenticated yet.
    Unauthenticated,
    /// Authenticated as a real user but refused (or the login name was malformed): every
    /// session channel shows this sentence and exits 1. Such a connection has not logged
    /// in: the login grace time still runs, and it is disconnected after [`EXPLAIN_WAIT`].
    Refused(String),
    /// Authorized; the session starts once russh reports the authentication done.
    Authorized(Box<Authorized>),
    /// The session is running.
    Active(Arc<SessionCtx>),
}

/// One client connection's handler.
pub struct ClientHandler {
    gw: Shared,
    peer: SocketAddr,
    gone: CancellationToken,
    /// Fired once the client has logged in to a session (see `ssh::socket`); never
    /// for a refused connection.
    logged_in: CancellationToken,
    /// Fired when the session starts closing (`SessionCtx::closing`).
    closing: CancellationToken,
    state: State,
    /// The last login name tried, for the `auth.failed` record of a connection that never
    /// authenticated.
    tried: Option<String>,
    /// Session channels opened so far on a refused connection (see [`MAX_REFUSED_CHANNELS`]).
    refused_channels: usize,
}

impl std::fmt::Debug for ClientHandler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientHandler")
            .field("peer", &self.peer)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl ClientHandler {
    pub fn new(
        gw: Shared,
        peer: SocketAddr,
        gone: CancellationToken,
        logged_in: CancellationToken,
        closing: CancellationToken,
    ) -> Self {
        ClientHandler {
            gw,
            peer,
            gone,
            logged_in,
            closing,
            state: State::Unauthenticated,
            tried: None,
            refused_channels: 0,
        }
    }

    /// Does `key` belong to the user named in `login`?
    fn key_matches(&self, login: &SshLogin, key: &PublicKey) -> bool {
        let config = self.gw.config();
        let Some(user) = config.user(&login.user) else {
            return false;
        };
        user.ssh_keys.iter().any(|line| {
            PublicKey::from_openssh(line)
                .map(|k| k.key_data() == key.key_data())
                .unwrap_or(false)
        })
    }

    /// The grant decision, once the key is proven.
    fn decide(&mut self, login: SshLogin) -> State {
        let info = SessionInfo {
            proto: Proto::Ssh,
            client: self.peer,
        };
        let config = self.gw.config();
        let target = match config.target(&login.target) {
            Some(t) if t.kind == TargetKind::Ssh => t.clone(),
            Some(_) => {
                return State::Refused(format!(
                    "portcullis: {} is not an SSH target; connect with psql instead",
                    login.target
                ));
            }
            None => {
                return State::Refused(format!("portcullis: unknown target {}", login.target));
            }
        };
        if !self.gw.audit.healthy() {
            // Fail closed: nothing happens that the audit log cannot record.
            return State::Refused(
                "portcullis: the audit log is unavailable, so new sessions are refused".into(),
            );
        }
        let lease =
            match self
                .gw
                .grants
                .authorize(&login.user, &login.target, login.role.as_deref(), info)
            {
                Ok(lease) => lease,
                Err(denied) => return State::Refused(format!("portcullis: {denied}")),
            };
        let Some(role) = target.roles.get(lease.role()).cloned() else {
            return State::Refused(format!(
                "portcullis: role {} is not configured on {}",
                lease.role(),
                target.name
            ));
        };
        State::Authorized(Box::new(Authorized {
            lease,
            target,
            role,
            client_addr: self.peer.to_string(),
        }))
    }

    fn audit_refusal(&self, login: &SshLogin, reason: &str) {
        let gw = self.gw.clone();
        let (user, target, client, reason) = (
            login.user.clone(),
            login.target.clone(),
            self.peer.to_string(),
            reason.to_string(),
        );
        tokio::spawn(async move {
            audit::auth_failed(&gw, &user, Some(&target), &client, &reason).await
        });
    }
}

impl Drop for ClientHandler {
    fn drop(&mut self) {
        // A connection that tried and never got in leaves one `auth.failed`.
        if let (State::Unauthenticated, Some(tried)) = (&self.state, self.tried.take()) {
            let gw = self.gw.clone();
            let client = self.peer.to_string();
            // A name that parses names its target; one that does not was already refused
            // (`auth_none`), and its record has no target field rather than an empty one.
            let (user, target) = match parse_ssh_login(&tried) {
                Ok(l) => (l.user, Some(l.target)),
                Err(_) => (tried, None),
            };
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let target = target.as_deref();
                    audit::auth_failed(&gw, &user, target, &client, "authentication failed").await
                });
            }
        }
    }
}

fn publickey_only() -> Auth {
    let mut methods = MethodSet::empty();
    methods.push(MethodKind::PublicKey);
    Auth::Reject {
        proceed_with_methods: Some(methods),
        partial_success: false,
    }
}

impl russh::server::Handler for ClientHandler {
    type Error = SshError;

    /// A malformed login name is let in with no access at all, so that the user reads why on
    /// stderr instead of a bare "Permission denied".
    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        self.tried = Some(user.to_string());
        match parse_ssh_login(user) {
            Ok(_) => Ok(publickey_only()),
            Err(e) => {
                let sentence = format!("portcullis: {e}");
                let gw = self.gw.clone();
                let client = self.peer.to_string();
                let (name, reason) = (user.to_string(), sentence.clone());
                tokio::spawn(async move {
                    audit::auth_failed(&gw, &name, None, &client, &reason).await
                });
                self.state = State::Refused(sentence);
                Ok(Auth::Accept)
            }
        }
    }

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: russh::server::PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        self.tried = Some(user.to_string());
        let ok = parse_ssh_login(user)
            .map(|login| self.key_matches(&login, offer.public_key))
            .unwrap_or(false);
        Ok(if ok { Auth::Accept } else { publickey_only() })
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        self.tried = Some(user.to_string());
        let Ok(login) = parse_ssh_login(user) else {
            return Ok(publickey_only());
        };
        if !self.key_matches(&login, key.public_key) {
            return Ok(publickey_only());
        }
        let state = self.decide(login.clone());
        if let State::Refused(sentence) = &state {
            info!(user = %login.user, target = %login.target, reason = %sentence, "ssh access refused");
            self.audit_refusal(&login, sentence);
        }
        self.state = state;
        Ok(Auth::Accept)
    }

    /// Only an authorized connection counts as logged in. A refused one was let in only to
    /// be told why (a malformed login name is let in with no key at all): were it logged
    /// in, nothing would ever close it, and anyone could hold a connection open for ever.
    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let state = std::mem::replace(&mut self.state, State::Unauthenticated);
        self.state = match state {
            State::Authorized(auth) => {
                self.logged_in.cancel();
                State::Active(session::start(
                    self.gw.clone(),
                    *auth,
                    session.handle(),
                    self.gone.clone(),
                    self.closing.clone(),
                ))
            }
            State::Refused(sentence) => {
                let client = session.handle();
                let gone = self.gone.clone();
                let said = sentence.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        () = gone.cancelled() => {}
                        () = tokio::time::sleep(EXPLAIN_WAIT) => {
                            debug!("refused connection still open; disconnecting");
                            let _ = client
                                .disconnect(russh::Disconnect::ByApplication, said, String::new())
                                .await;
                        }
                    }
                });
                State::Refused(sentence)
            }
            other => other,
        };
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        match &self.state {
            State::Active(ctx) => {
                let ctx2 = ctx.clone();
                ctx.tasks.spawn(channel::session(ctx2, channel, reply));
            }
            State::Refused(sentence) if self.refused_channels >= MAX_REFUSED_CHANNELS => {
                tokio::spawn(reply.reject(channel::refusal(sentence.clone())));
            }
            State::Refused(sentence) => {
                let sentence = sentence.clone();
                self.refused_channels += 1;
                let client = session.handle();
                tokio::spawn(async move {
                    reply.accept().await;
                    replies::refuse(&client, channel, sentence).await;
                });
            }
            _ => drop(reply),
        }
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host: &str,
        port: u32,
        origin: &str,
        origin_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let State::Active(ctx) = &self.state else {
            drop(reply);
            return Ok(());
        };
        if let Err(sentence) = super::policy::check(
            &ctx.allow(),
            &[Allow::PortForward],
            "port-forward",
            &ctx.ident.role,
            &ctx.ident.target,
        ) {
            debug!(%host, port, "port forward refused by role");
            let ev = ctx
                .ident
                .event("ssh.denied")
                .with("request", "port-forward")
                .with("host", host)
                .with("port", port)
                .with("reason", &sentence);
            let gw = ctx.gw.clone();
            tokio::spawn(async move { audit::append(&gw, ev).await });
            tokio::spawn(reply.reject(russh::ChannelOpenFailure::Other {
                code: 1,
                reason: sentence,
            }));
            return Ok(());
        }
        let ctx2 = ctx.clone();
        ctx.tasks.spawn(forward::forward(
            ctx2,
            channel,
            reply,
            host.to_string(),
            port,
            origin.to_string(),
            origin_port,
        ));
        Ok(())
    }

    /// Forwarding to a unix socket on the target (`ssh -L port:/path`) is not offered. russh's
    /// default refused it without a word to the log; it is refused, as sshd refuses it with
    /// streamlocal forwarding off, and logged like the other refusals.
    async fn channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<Msg>,
        socket_path: &str,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let reason = "forwarding to a unix socket is not offered by the gateway";
        if let State::Active(ctx) = &self.state {
            let ev = ctx
                .ident
                .event("ssh.denied")
                .with("request", "socket-forward")
                .with("path", socket_path)
                .with("reason", reason);
            let gw = ctx.gw.clone();
            tokio::spawn(async move { audit::append(&gw, ev).await });
        }
        tokio::spawn(reply.reject(russh::ChannelOpenFailure::Other {
            code: 1,
            reason: reason.to_owned(),
        }));
        Ok(())
    }

    /// A remote forward of a unix socket (`ssh -R /path:host:port`) is refused and logged
    /// like a remote port forward.
    async fn streamlocal_forward(
        &mut self,
        socket_path: &str,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if let State::Active(ctx) = &self.state {
            let ev = ctx
                .ident
                .event("ssh.denied")
                .with("request", "remote-forward")
                .with("path", socket_path)
                .with(
                    "reason",
                    "remote socket forwarding (ssh -R) is not offered by the gateway",
                );
            let gw = ctx.gw.clone();
            tokio::spawn(async move { audit::append(&gw, ev).await });
        }
        Ok(false)
    }

    // Session channel requests (pty-req, env, x11-req, shell, exec, subsystem) are not
    // answered here: the channel task answers each in order, with the target's own answer
    // where it forwarded the request (`ssh/channel.rs`). russh's defaults do not reply.

    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let State::Active(ctx) = &self.state else {
            return Ok(false);
        };
        let checked = super::policy::check(
            &ctx.allow(),
            &[Allow::AgentForward],
            "agent-forward",
            &ctx.ident.role,
            &ctx.ident.target,
        );
        // OpenSSH asks without wanting an answer, so the client never hears of a refusal;
        // the log does.
        if let Err(sentence) = &checked {
            let ev = ctx
                .ident
                .event("ssh.denied")
                .with("request", "agent-forward")
                .with("reason", sentence)
                .with("channel", channel.to_string());
            let gw = ctx.gw.clone();
            tokio::spawn(async move { audit::append(&gw, ev).await });
        }
        Ok(checked.is_ok())
    }

    /// Remote forwarding (`ssh -R`) is not offered: the target would have to listen on the
    /// gateway's behalf, and nothing in a role grants that. The client hears "remote port
    /// forwarding failed", as from an sshd with `AllowTcpForwarding local`; the log records
    /// the attempt.
    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if let State::Active(ctx) = &self.state {
            let ev = ctx
                .ident
                .event("ssh.denied")
                .with("request", "remote-forward")
                .with("host", address)
                .with("port", *port)
                .with(
                    "reason",
                    "remote port forwarding (ssh -R) is not offered by the gateway",
                );
            let gw = ctx.gw.clone();
            tokio::spawn(async move { audit::append(&gw, ev).await });
        }
        Ok(false)
    }
}
