//! The admin HTTP API (axum) on the admin listener.
//!
//! CONTRACT: `router(gw)` is served by `serve`; the grants work fills it in.

use crate::context::Shared;

/// The admin API's routes.
pub fn router(_gw: Shared) -> axum::Router {
    axum::Router::new()
}
