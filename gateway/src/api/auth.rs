//! Who is calling the admin API: `Authorization: Bearer <admin token>` (the operator, full
//! rights) or HTTP Basic `user:password` checked against the user's `password_scram`.
//! Failed attempts are rate-limited per client address (the operator's token is still
//! accepted from an address that is locked out) and audited as `auth.failed`. A password is
//! checked the same way whether or not the user exists ([`crate::password`]).

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use base64::Engine;

use super::{ApiError, ApiState};
use crate::grants::Actor;
use crate::password::{check_password, ct_eq};

/// Failed attempts allowed per client address within [`WINDOW`] before answering 429.
pub const MAX_FAILURES: usize = 5;
pub const WINDOW: Duration = Duration::from_secs(60);

/// Failed authentication attempts per client address, over a sliding window.
#[derive(Debug, Default)]
pub struct Limiter {
    failures: Mutex<HashMap<IpAddr, VecDeque<Instant>>>,
}

impl Limiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, VecDeque<Instant>>> {
        // Each update leaves the map consistent, so a poisoned lock is still usable.
        self.failures.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts an attempt by `ip` as failed before its credentials are checked, unless `ip`
    /// has used up its failures for now (`None`). Counting first means concurrent attempts
    /// cannot all pass the check before the first of them fails; a success is forgotten
    /// again with [`Limiter::succeeded`].
    pub fn attempt(&self, ip: IpAddr) -> Option<Instant> {
        let mut map = self.lock();
        let now = Instant::now();
        if let Some(q) = map.get_mut(&ip) {
            while q.front().is_some_and(|t| now.duration_since(*t) >= WINDOW) {
                q.pop_front();
            }
            if q.len() >= MAX_FAILURES {
                return None;
            }
        } else if map.len() > 10_000 {
            // Bound memory under a flood from many addresses: forget the oldest entries.
            map.clear();
        }
        map.entry(ip).or_default().push_back(now);
        Some(now)
    }

    /// The attempt `ip` made at `at` did not fail: it no longer counts.
    pub fn succeeded(&self, ip: IpAddr, at: Instant) {
        let mut map = self.lock();
        if let Some(q) = map.get_mut(&ip) {
            if let Some(i) = q.iter().rposition(|t| *t == at) {
                q.remove(i);
            }
            if q.is_empty() {
                map.remove(&ip);
            }
        }
    }
}

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
        let Some(attempt) = st.limiter.attempt(ip) else {
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
                st.limiter.succeeded(ip, attempt);
                return Err(unauthorized(
                    "authentication required: an admin token or --as USER with a password",
                ));
            }
        };
        if let Some(actor) = ok {
            st.limiter.succeeded(ip, attempt);
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
    let user = user.to_owned();
    // PBKDF2 takes milliseconds: keep it off the async workers.
    tokio::task::spawn_blocking(move || check_password(&config, &user, &password).then_some(user))
        .await
        .ok()
        .flatten()
        .map(Actor::User)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn five_failures_block_an_address_and_not_others() {
        let l = Limiter::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        for _ in 0..MAX_FAILURES {
            assert!(l.attempt(a).is_some());
        }
        assert!(l.attempt(a).is_none());
        assert!(l.attempt(b).is_some());
    }

    #[test]
    fn successes_do_not_count() {
        let l = Limiter::default();
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        for _ in 0..3 * MAX_FAILURES {
            let at = l.attempt(a).unwrap();
            l.succeeded(a, at);
        }
        assert!(l.attempt(a).is_some());
    }
}
