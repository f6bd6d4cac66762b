//! The PostgreSQL proxy.
//!
//! CONTRACT: `serve` calls `listen` with the bound listener; it runs until `gw.shutdown`.

use std::sync::Arc;

use crate::context::Shared;

/// Accepts PostgreSQL clients until shutdown.
pub async fn listen(
    _listener: tokio::net::TcpListener,
    _gw: Shared,
    _tls: Arc<rustls::ServerConfig>,
) {
}
