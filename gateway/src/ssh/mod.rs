//! The SSH proxy: accepts `ssh`/`scp`/`sftp` clients, authorizes them against live grants,
//! logs in upstream with the role's credentials and relays every channel.
//!
//! Layout: [`server`] is the russh server handler (auth, channel opens, request policy),
//! [`session`] owns one authorized connection (its lease, the kill path, `session.ended`),
//! [`upstream`] is the russh client to the target, [`channel`] relays one session channel
//! in its own task, [`forward`] relays plain channels (port forwards, agent), [`tap`]
//! derives audit facts (terminal commands, recordings, SFTP ops) from the bytes, [`audit`]
//! builds the events.
//!
//! CONTRACT: `serve` calls `listen` with the bound listener; it runs until `gw.shutdown`.

mod audit;
mod channel;
mod forward;
mod policy;
mod recording;
mod replies;
mod server;
mod session;
mod socket;
mod tap;
mod upstream;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info_span, warn};

use crate::context::Shared;
use socket::{ClientSocket, LOGIN_GRACE, Limits};

/// Why an SSH session could not be set up or went wrong; Display is shown to the user on
/// stderr, so it names the problem and never a secret.
#[derive(Debug, thiserror::Error)]
pub enum SshError {
    /// upstream: the target could not be reached.
    #[error("cannot reach {target} at {address}: {detail}")]
    UpstreamUnreachable {
        target: String,
        address: String,
        detail: String,
    },
    /// upstream: the target presented a host key other than the pinned one.
    #[error("the host key of {target} does not match the pinned host_key; refusing to connect")]
    HostKeyMismatch { target: String },
    /// upstream: the role's credentials were refused.
    #[error("{target} refused the login as {user}")]
    UpstreamAuth { target: String, user: String },
    /// internal: the target's configuration cannot be used for SSH.
    #[error("{target} is not usable as an SSH target: {detail}")]
    BadTarget { target: String, detail: String },
    /// upstream: the SSH protocol failed.
    #[error("upstream ssh error: {0}")]
    Protocol(#[from] russh::Error),
}

/// How often each side is pinged when it has been silent, and how many missed pings close it.
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_MAX: usize = 4;
/// Messages queued per channel direction inside russh. What bounds a channel is its window
/// (russh's 2 MiB default, withheld while the channel's reader is behind: `vendor/russh`),
/// so at most about 3 MiB is ever queued; the count only has to hold that many packets
/// (a few hundred of OpenSSH's 16-32 KiB ones) so the session loop never waits on it.
const CHANNEL_BUFFER: usize = 1024;

/// How long a closing session's client may keep its connection once the kill path has
/// started; then its socket is cut under russh. The kill path queues its lines (at most
/// `session::NOTICE_WAIT` spent on them), the closes and the disconnect at once, and a
/// client that reads them hangs up within milliseconds; SPEC §6 allows the whole close a
/// second, whatever the client does.
const CLOSE_WAIT: Duration = Duration::from_millis(500);
/// Connections not logged in yet that are kept at once; beyond it a new connection is closed
/// at once (see `socket.rs`). sshd's `MaxStartups` starts dropping at 10 and drops all from
/// 100, to spare CPU; this cap is there to keep file descriptors for everyone else, so it
/// leaves room for a burst of logins (a benchmark's 200, Ansible's forks) that sshd's would
/// not.
pub const MAX_STARTUPS: usize = 512;

/// Read buffer under each russh connection. russh reads a packet's first block and then its
/// rest with two exact reads straight from the socket; buffered, a keystroke's packet is one
/// `read` instead of two or three. Bulk packets larger than this bypass the buffer.
const READ_BUFFER: usize = 16 * 1024;

/// The version line the gateway sends its clients.
///
/// OpenSSH's client uses its own extensions only with servers whose software version starts
/// with `OpenSSH` (its compat table, `SSH_NEW_OPENSSH`). One of them, `eow@openssh.com`, is
/// how it says that its output was closed (`ssh gw 'yes' | head -1`); without it the remote
/// command is never told and runs, and the client waits, for ever. So the gateway says it is
/// OpenSSH-compatible, with no OpenSSH version number (nothing for a scanner to match to an
/// OpenSSH release), and names itself after that.
fn server_banner() -> String {
    format!(
        "SSH-2.0-OpenSSH_compatible Portcullis_{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The russh server configuration for client connections.
fn server_config(host_key: russh::keys::PrivateKey) -> russh::server::Config {
    let mut methods = russh::MethodSet::empty();
    methods.push(russh::MethodKind::PublicKey);
    russh::server::Config {
        server_id: russh::SshId::Standard(std::borrow::Cow::Owned(server_banner())),
        methods,
        keys: vec![host_key],
        auth_rejection_time: Duration::from_millis(300),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: None,
        keepalive_interval: Some(KEEPALIVE),
        keepalive_max: KEEPALIVE_MAX,
        channel_buffer_size: CHANNEL_BUFFER,
        nodelay: true,
        ..Default::default()
    }
}

/// Accepts SSH clients until shutdown.
pub async fn listen(
    listener: tokio::net::TcpListener,
    gw: Shared,
    host_key: russh::keys::PrivateKey,
) {
    let config = Arc::new(server_config(host_key));
    let connections = tokio_util::task::TaskTracker::new();
    // Each connection (its russh session, channels and upstream) runs pinned to one core's
    // runtime, as PostgreSQL sessions do: on the shared multi-thread runtime every keystroke's
    // wakeups bounced between the two workers (crate::cores).
    let cores = match crate::cores::Cores::start("ssh") {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "cannot start the ssh session threads");
            return;
        }
    };
    let startups = Arc::new(tokio::sync::Semaphore::new(MAX_STARTUPS));
    // Refusals at the door are counted and logged at most every ten seconds, so a flood
    // does not flood the log.
    let mut refused = 0u64;
    let mut told: Option<tokio::time::Instant> = None;
    loop {
        let (socket, peer) = tokio::select! {
            _ = gw.shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait a moment instead of spinning.
                    warn!(error = %e, "ssh accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(startup) = startups.clone().try_acquire_owned() else {
            drop(socket);
            refused += 1;
            if told.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                warn!(
                    refused,
                    max = MAX_STARTUPS,
                    "ssh: too many connections not logged in; refusing new ones"
                );
                refused = 0;
                told = Some(tokio::time::Instant::now());
            }
            continue;
        };
        let _ = socket.set_nodelay(true);
        let gw = gw.clone();
        let config = config.clone();
        let span = info_span!("ssh_conn", client = %peer);
        let tracked = connections.token();
        let moved = cores.spawn_with_socket(socket, move |socket| {
            async move {
                let _tracked = tracked;
                let gone = CancellationToken::new();
                let logged_in = CancellationToken::new();
                let closing = CancellationToken::new();
                let cut = socket::Cut::default();
                let socket = ClientSocket::new(
                    socket,
                    Limits {
                        logged_in: logged_in.clone(),
                        login_by: tokio::time::Instant::now() + LOGIN_GRACE,
                        startup,
                        cut: cut.clone(),
                    },
                );
                let handler = server::ClientHandler::new(
                    gw.clone(),
                    peer,
                    gone.clone(),
                    logged_in.clone(),
                    closing.clone(),
                );
                let socket = tokio::io::BufReader::with_capacity(READ_BUFFER, socket);
                let running = match russh::server::run_stream(config, socket, handler).await {
                    Ok(r) => r,
                    Err(e) => {
                        debug!(error = %e, "ssh handshake failed");
                        return;
                    }
                };
                let handle = running.handle();
                let mut running = std::pin::pin!(running);
                let ended = tokio::select! {
                    result = &mut running => Some(result),
                    // The kill path tells the client and disconnects it; a client that does
                    // not hang up in time (it reads nothing, or ignores the disconnect) is
                    // cut off below.
                    () = closing.cancelled() => {
                        tokio::time::timeout(CLOSE_WAIT, &mut running).await.ok()
                    }
                    _ = gw.shutdown.cancelled() => {
                        // Authorized sessions close themselves through the kill path (with
                        // the reason on stderr); give them that moment before cutting.
                        match tokio::time::timeout(Duration::from_secs(1), &mut running).await {
                            Ok(result) => Some(result),
                            Err(_) => {
                                let disconnect = handle.disconnect(
                                    russh::Disconnect::ByApplication,
                                    "portcullis is shutting down".into(),
                                    String::new(),
                                );
                                let _ = tokio::time::timeout(CLOSE_WAIT, disconnect).await;
                                tokio::time::timeout(CLOSE_WAIT, &mut running).await.ok()
                            }
                        }
                    }
                };
                match ended {
                    Some(Ok(())) => {}
                    Some(Err(e)) => debug!(error = %e, "ssh connection ended with an error"),
                    None => {
                        debug!("the client did not hang up in time; cutting its connection");
                        cut.fire();
                        // Cut, russh's session task ends at its next read or write.
                        let _ = tokio::time::timeout(CLOSE_WAIT, &mut running).await;
                    }
                }
                gone.cancel();
            }
            .instrument(span)
        });
        if let Err(e) = moved {
            warn!(error = %e, "ssh accept failed");
        }
    }
    cores.close();
    connections.close();
    // Sessions write their `session.ended` on the way out; give them a moment.
    let _ = tokio::time::timeout(Duration::from_secs(3), connections.wait()).await;
}
