//! Who is calling the admin API: `Authorization: Bearer <admin token>` (the operator, full
//! rights) or HTTP Basic `user:password` checked against the user's `password_scram`.
//! Failed attempts are rate-limited per client, an IPv4 address or an IPv6 /64
//! ([`super::limiter`]; the operator's token is still accepted from a client that is locked
//! out), and audited as `auth.failed`. A password is checked the same way whether or not the
//! user exists ([`crate::password`]).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;

use super::{ApiError, ApiState};
use crate::grants::Actor;
use crate::password::{check_password, ct_eq};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller(pub Actor);

fn client_addr(parts: &Parts) -> SocketAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0)
}

fn unauthorized(msg: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, msg)
}

/// The credentials a request presents.
enum Presented<'a> {
    Token(&'a str),
    Basic(&'a str),
    None,
}

fn presented(parts: &Parts) -> Presented<'_> {
    let header = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if let Some(token) = header.strip_prefix("Bearer ") {
        Presented::Token(token.trim())
    } else if let Some(b64) = header.strip_prefix("Basic ") {
        Presented::Basic(b64.trim())
    } else {
        Presented::None
    }
}

fn is_admin_token(st: &ApiState, token: &str) -> bool {
    !st.gw.admin_token.is_empty() && ct_eq(token.as_bytes(), st.gw.admin_token.as_bytes())
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, st: &ApiState) -> Result<Self, ApiError> {
        let client = client_addr(parts);
        let ip = client.ip();
        let creds = presented(parts);
        let Some(attempt) = st.gw.logins.attempt(ip) else {
            // The operator's token (32 random bytes, not guessable) still works from an
            // address others have locked out by guessing passwords, or any local user
            // could lock the operator out of the CLI.
            if let Presented::Token(t) = creds
                && is_admin_token(st, t)
            {
                return Ok(Caller(Actor::Admin));
            }
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too many failed authentication attempts; try again in a minute",
            ));
        };
        let (ok, user) = match creds {
            Presented::Token(t) => (is_admin_token(st, t).then_some(Actor::Admin), None),
            Presented::Basic(b64) => match credentials(b64) {
                Some((user, password)) => (basic(st, &user, password).await, Some(user)),
                None => (None, None),
            },
            Presented::None => {
                st.gw.logins.succeeded(ip, attempt);
                return Err(unauthorized(
                    "authentication required: an admin token or --as USER with a password",
                ));
            }
        };
        if let Some(actor) = ok {
            st.gw.logins.succeeded(ip, attempt);
            return Ok(Caller(actor));
        }
        tracing::warn!(client = %ip, "admin api authentication failed");
        // Audited like a failed SSH or PostgreSQL login. Only attempts the limiter let
        // through get here, so a flood of guesses cannot flood the log.
        let reason = match (&creds, &user) {
            (Presented::Token(_), _) => "wrong admin token",
            (_, Some(_)) => "wrong password or unknown user",
            _ => "malformed basic credentials",
        };
        let ev = portcullis_recorder::Event::new("auth.failed")
            .with("proto", "admin")
            .with("user", user.as_deref().unwrap_or(""))
            .with("client", client.to_string())
            .with("reason", reason);
        if let Err(e) = st.gw.audit.append(ev).await {
            tracing::error!(error = %e, "audit append failed");
        }
        Err(unauthorized("authentication failed"))
    }
}

/// `user:password` from a Basic credential, if it decodes.
fn credentials(b64: &str) -> Option<(String, String)> {
    let raw = base64::engine::general_purpose::STANDARD.decode(b64).ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// The user, if `password` is theirs. Unknown users and users without a password go through
/// the same check against a mock verifier ([`crate::password`]), so they cost the same PBKDF2
/// and get the same refusal as a wrong password: the timing does not tell which users exist.
async fn basic(st: &ApiState, user: &str, password: String) -> Option<Actor> {
    let config = st.gw.config();
    let secret = st.gw.admin_token.clone();
    let user = user.to_owned();
    // PBKDF2 takes milliseconds: keep it off the async workers.
    tokio::task::spawn_blocking(move || {
        check_password(&config, secret.as_bytes(), &user, &password).then_some(user)
    })
    .await
    .ok()
    .flatten()
    .map(Actor::User)
}
