//! The admin HTTP API (axum) on the admin listener: JSON for grants, requests and sessions.
//!
//! Every route but `/health` needs a caller ([`auth::Caller`]): the operator's bearer token
//! or a user's password. Errors are `{"error": "<one sentence>"}` with a fitting status:
//! 400 malformed (a reason over 1 KiB included), 401 unauthenticated, 403 refused by policy,
//! 404 unknown id, 413 a body over [`MAX_BODY_BYTES`], 429 too many failed logins, 500
//! internal.

pub mod auth;
mod handlers;
pub mod limiter;
#[cfg(test)]
mod tests;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::context::Shared;
use crate::grants::GrantsError;

/// The largest request body the API reads (axum's default is 2 MiB). The largest legitimate
/// one, a grant or request with a reason at its 1 KiB limit, is at most about 6 KiB even with
/// every byte of the reason escaped (`\u0001`); the rest is headroom.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler sees.
#[derive(Debug, Clone)]
pub struct ApiState {
    pub gw: Shared,
}

/// The admin API's routes.
pub fn router(gw: Shared) -> axum::Router {
    let state = ApiState { gw };
    axum::Router::new()
        .route("/health", get(handlers::health))
        .route(
            "/v1/grants",
            get(handlers::list_grants).post(handlers::add_grant),
        )
        .route("/v1/grants/{id}", get(handlers::get_grant))
        .route("/v1/grants/{id}/revoke", post(handlers::revoke))
        .route("/v1/grants/{id}/extend", post(handlers::extend))
        .route(
            "/v1/requests",
            get(handlers::list_requests).post(handlers::create_request),
        )
        .route("/v1/requests/{id}/approve", post(handlers::approve))
        .route("/v1/requests/{id}/deny", post(handlers::deny))
        .route("/v1/sessions", get(handlers::list_sessions))
        .route("/v1/sessions/{id}/kill", post(handlers::kill))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "no such API path") })
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(state)
}

/// Gives axum's own rejections (a body that is not JSON or lacks a field, a bad query
/// string, a wrong method) the API's `{"error": ...}` form: they answer in plain text, and a
/// script reading `error` would otherwise fail to parse the answer. A malformed request is a
/// 400, as documented above, where axum says 415 or 422.
async fn json_errors(r: Response) -> Response {
    let is_json = r
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json || !r.status().is_client_error() {
        return r;
    }
    let status = match r.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE | StatusCode::UNPROCESSABLE_ENTITY => {
            StatusCode::BAD_REQUEST
        }
        other => other,
    };
    let (parts, body) = r.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_owned())
        .unwrap_or_default();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        // axum says only "Failed to buffer the request body: length limit exceeded".
        format!(
            "request body is too large: at most {} KiB",
            MAX_BODY_BYTES / 1024
        )
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("bad request")
            .to_lowercase()
    } else {
        text
    };
    let mut answer = ApiError::new(status, message).into_response();
    if let Some(allow) = parts.headers.get(axum::http::header::ALLOW) {
        answer
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow.clone());
    }
    answer
}

/// An error answer: a status and one sentence.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<GrantsError> for ApiError {
    fn from(e: GrantsError) -> Self {
        let status = match &e {
            GrantsError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GrantsError::NotFound { .. } => StatusCode::NOT_FOUND,
            GrantsError::Invalid(_) => StatusCode::BAD_REQUEST,
            GrantsError::Refused(_) => StatusCode::FORBIDDEN,
        };
        ApiError::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"portcullis\""),
            );
        }
        r
    }
}
