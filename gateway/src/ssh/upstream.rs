//! The russh client to the target: connects to `target.address`, checks the pinned host key,
//! logs in with the role's credentials, and relays agent channels the target opens back to
//! the user when agent forwarding was allowed and requested.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use portcullis_config::{Role, Target};
use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKey};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{CHANNEL_BUFFER, KEEPALIVE, KEEPALIVE_MAX, READ_BUFFER, SshError};

/// How long connecting plus logging in upstream may take before the user is told it failed.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// A logged-in upstream connection.
pub type Upstream = client::Handle<UpstreamHandler>;

/// The client side handler: host key pinning, end-of-connection signal, agent channels.
#[derive(Debug)]
pub struct UpstreamHandler {
    pinned: PublicKey,
    /// Set by `check_server_key` when the key did not match, so the caller can tell a
    /// mismatch apart from other handshake failures.
    mismatch: Arc<AtomicBool>,
    /// Cancelled when the upstream connection ends, for whatever reason.
    gone: CancellationToken,
    /// Where agent channels opened by the target go; `None` until the user's agent
    /// forwarding was allowed and requested.
    agent: AgentSlot,
}

impl client::Handler for UpstreamHandler {
    type Error = SshError;

    async fn check_server_key(
        &mut self,
        key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let ok = match key {
            russh::keys::PublicKeyOrCertificate::PublicKey { key, .. } => {
                key.key_data() == self.pinned.key_data()
            }
            russh::keys::PublicKeyOrCertificate::Certificate(_) => false,
        };
        if !ok {
            self.mismatch.store(true, Ordering::SeqCst);
        }
        Ok(ok)
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: russh::Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let client = self.agent.lock().ok().and_then(|g| g.clone());
        let Some(client) = client else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        // Opening the channel to the user waits for their client; never in this loop.
        tokio::spawn(async move {
            match client.channel_open_agent().await {
                Ok(to_user) => {
                    reply.accept().await;
                    super::forward::pipe_plain(to_user, channel, None).await;
                }
                Err(e) => {
                    debug!(error = %e, "user's agent channel refused");
                    reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
                }
            }
        });
        Ok(())
    }

    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        self.gone.cancel();
        match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => Ok(()),
            client::DisconnectReason::Error(e) => Err(e),
        }
    }
}

impl Drop for UpstreamHandler {
    fn drop(&mut self) {
        self.gone.cancel();
    }
}

/// What the session keeps of its upstream besides the handle.
#[derive(Debug, Clone)]
pub struct UpstreamSignals {
    /// Cancelled when the upstream connection ends.
    pub gone: CancellationToken,
}

/// The user's client handle, once agent forwarding was allowed and requested.
pub type AgentSlot = Arc<std::sync::Mutex<Option<russh::server::Handle>>>;

/// What the gateway offers a target, the client's side of the negotiation (the target picks
/// the first of these it supports). russh's defaults, with the cipher order changed where the
/// CPU has AES and carry-less multiply instructions: then AES-GCM comes first. An interactive
/// session's packets are small, and aws-lc computes ChaCha20 for a packet under 128 bytes in
/// portable code, three 64-byte blocks a packet (the length, the Poly1305 key, the data),
/// about a third of the gateway's instructions per keystroke echo; AES-GCM on those
/// instructions costs a fraction of that. The user's own connection keeps the order the user's
/// client asks for.
fn upstream_preferred() -> russh::Preferred {
    use russh::cipher;
    static AES_FIRST: &[cipher::Name] = &[
        cipher::AES_256_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_CTR,
        cipher::AES_192_CTR,
        cipher::AES_128_CTR,
    ];
    let mut preferred = russh::Preferred::default();
    if aes_in_hardware() {
        preferred.cipher = std::borrow::Cow::Borrowed(AES_FIRST);
    }
    preferred
}

#[cfg(target_arch = "x86_64")]
fn aes_in_hardware() -> bool {
    std::arch::is_x86_feature_detected!("aes") && std::arch::is_x86_feature_detected!("pclmulqdq")
}

#[cfg(target_arch = "aarch64")]
fn aes_in_hardware() -> bool {
    std::arch::is_aarch64_feature_detected!("aes")
        && std::arch::is_aarch64_feature_detected!("pmull")
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn aes_in_hardware() -> bool {
    false
}

/// Connects and logs in as `role.user`; on failure the error is the sentence for the user.
pub async fn connect(
    target: &Target,
    role: &Role,
    agent: AgentSlot,
) -> Result<(Upstream, UpstreamSignals), SshError> {
    match tokio::time::timeout(CONNECT_TIMEOUT, connect_inner(target, role, agent)).await {
        Ok(r) => r,
        Err(_) => Err(SshError::UpstreamUnreachable {
            target: target.name.clone(),
            address: target.address.clone(),
            detail: "timed out".into(),
        }),
    }
}

async fn connect_inner(
    target: &Target,
    role: &Role,
    agent: AgentSlot,
) -> Result<(Upstream, UpstreamSignals), SshError> {
    let bad = |detail: &str| SshError::BadTarget {
        target: target.name.clone(),
        detail: detail.into(),
    };
    let pinned = target
        .host_key
        .as_deref()
        .ok_or_else(|| bad("no host_key pinned"))
        .and_then(|line| PublicKey::from_openssh(line).map_err(|_| bad("malformed host_key")))?;
    let config = Arc::new(client::Config {
        keepalive_interval: Some(KEEPALIVE),
        keepalive_max: KEEPALIVE_MAX,
        channel_buffer_size: CHANNEL_BUFFER,
        inactivity_timeout: None,
        nodelay: true,
        preferred: upstream_preferred(),
        ..Default::default()
    });
    let signals = UpstreamSignals {
        gone: CancellationToken::new(),
    };
    let mismatch = Arc::new(AtomicBool::new(false));
    let handler = UpstreamHandler {
        pinned,
        mismatch: mismatch.clone(),
        gone: signals.gone.clone(),
        agent,
    };
    let unreachable = |detail: String| SshError::UpstreamUnreachable {
        target: target.name.clone(),
        address: target.address.clone(),
        detail,
    };
    let socket = tokio::net::TcpStream::connect(target.address.as_str())
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let _ = socket.set_nodelay(true);
    let socket = tokio::io::BufReader::with_capacity(READ_BUFFER, socket);
    let mut handle = match client::connect_stream(config, socket, handler).await {
        Ok(h) => h,
        Err(_) if mismatch.load(Ordering::SeqCst) => {
            return Err(SshError::HostKeyMismatch {
                target: target.name.clone(),
            });
        }
        Err(e) => return Err(unreachable(e.to_string())),
    };
    let refused = || SshError::UpstreamAuth {
        target: target.name.clone(),
        user: role.user.clone(),
    };
    let mut ok = false;
    if let Some(key) = &role.private_key {
        let key = russh::keys::decode_secret_key(key.expose(), None)
            .map_err(|_| bad("the role's private key cannot be decoded"))?;
        let hash = if key.algorithm().is_rsa() {
            handle.best_supported_rsa_hash().await?.flatten()
        } else {
            None
        };
        let auth = handle
            .authenticate_publickey(
                role.user.clone(),
                PrivateKeyWithHashAlg::new(Arc::new(key), hash),
            )
            .await?;
        ok = auth.success();
    }
    if !ok && let Some(password) = &role.password {
        let auth = handle
            .authenticate_password(role.user.clone(), password.expose())
            .await?;
        ok = auth.success();
    }
    if !ok {
        warn!(target = %target.name, user = %role.user, "upstream refused the role's credentials");
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "")
            .await;
        return Err(refused());
    }
    Ok((handle, signals))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway offers a target the same ciphers russh offers by default, only in another
    /// order where AES runs in hardware: nothing a target allows is dropped, nothing added.
    #[test]
    fn upstream_ciphers_are_russhs_with_aes_gcm_first_where_aes_is_in_hardware() {
        let ours = upstream_preferred().cipher;
        let default = russh::Preferred::default().cipher;
        let names = |l: &[russh::cipher::Name]| {
            let mut v: Vec<String> = l.iter().map(|n| n.as_ref().to_owned()).collect();
            v.sort();
            v
        };
        assert_eq!(names(&ours), names(&default));
        let first = ours.first().map(|n| n.as_ref().to_owned());
        if aes_in_hardware() {
            assert_eq!(first.as_deref(), Some("aes256-gcm@openssh.com"));
        } else {
            assert_eq!(first, default.first().map(|n| n.as_ref().to_owned()));
        }
    }
}
