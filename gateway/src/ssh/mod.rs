//! The SSH proxy.
//!
//! CONTRACT: `serve` calls `listen` with the bound listener; it runs until `gw.shutdown`.

use crate::context::Shared;

/// Accepts SSH clients until shutdown.
pub async fn listen(
    _listener: tokio::net::TcpListener,
    _gw: Shared,
    _host_key: russh::keys::PrivateKey,
) {
}
