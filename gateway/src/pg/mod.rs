//! The PostgreSQL proxy: TLS and startup negotiation, SCRAM login of the user, the grant
//! check, the upstream login with the role's credentials, the byte relay with its audit
//! tap, cancel forwarding and the kill path.
//!
//! CONTRACT: `serve` calls `listen` with the bound listener; it runs until `gw.shutdown`.
//!
//! One task per client connection runs [`session::run`], on one of the per-core session
//! runtimes (`crate::cores`); inside it, the two relay directions are futures in one `select!`
//! together with the lease, so the grant deadline is always being watched while bytes flow.

mod audit;
mod auth;
mod cancel;
mod event;
mod gate;
mod listener;
mod logging_in;
mod params;
mod relay;
mod session;
mod tls;
mod upstream;

use std::sync::Arc;

pub use listener::listen;

use crate::context::Shared;

/// Why a PostgreSQL session failed, labelled with the side it came from.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The client broke the protocol.
    #[error("client protocol error: {0}")]
    ClientProtocol(#[from] portcullis_protocol::pg::PgError),
    /// The client socket failed.
    #[error("client i/o: {0}")]
    ClientIo(std::io::Error),
    /// The client sent something valid but unexpected at this point.
    #[error("client: {0}")]
    Client(String),
    /// The client took too long to start up and authenticate.
    #[error("client did not finish authentication in time")]
    ClientTimeout,
    /// The upstream server could not be reached or logged in to.
    #[error("upstream: {0}")]
    Upstream(#[from] upstream::UpstreamError),
    /// The upstream socket failed while relaying.
    #[error("upstream i/o: {0}")]
    UpstreamIo(std::io::Error),
    /// The TLS handshake with the client failed.
    #[error("client tls: {0}")]
    ClientTls(std::io::Error),
}

/// Anything a session reads and writes: a TCP stream, or TLS over one.
pub(crate) trait Io:
    tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static
{
    /// For taking the TCP stream back out to start TLS on it.
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send>;
}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any + Send> {
        self
    }
}
pub(crate) type BoxIo = Box<dyn Io>;

/// What every session of the listener shares.
#[derive(Debug)]
pub(crate) struct PgShared {
    pub gw: Shared,
    pub tls: Arc<rustls::ServerConfig>,
    pub cancels: Arc<cancel::CancelRegistry>,
    /// [`relay::LARGE_STATEMENT_BUDGET`], shared by every session's relay.
    pub large_statements: tokio::sync::Semaphore,
    /// Each client's connections still logging in (capped per client).
    pub logging_in: Arc<logging_in::LoggingIn>,
}

/// Reads one tagged message during startup or authentication (not the relay's hot path),
/// refusing bodies over `max` before allocating.
///
/// # Cancellation safety
/// Not cancellation safe: a partly read message is lost. Only used where the caller gives
/// up on the connection when cancelled.
pub(crate) async fn read_message<R: tokio::io::AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    max: usize,
) -> Result<(u8, Vec<u8>), ReadError> {
    use tokio::io::AsyncReadExt as _;
    let mut header = [0u8; 5];
    io.read_exact(&mut header).await.map_err(ReadError::Io)?;
    let h = portcullis_protocol::pg::read_header(&header, max)?.ok_or(ReadError::Io(
        std::io::Error::from(std::io::ErrorKind::UnexpectedEof),
    ))?;
    let mut body = vec![0u8; h.body_len];
    io.read_exact(&mut body).await.map_err(ReadError::Io)?;
    Ok((h.tag, body))
}

/// Why [`read_message`] failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The socket failed or closed.
    #[error("{0}")]
    Io(std::io::Error),
    /// The header was invalid or too long.
    #[error("{0}")]
    Protocol(#[from] portcullis_protocol::pg::PgError),
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
