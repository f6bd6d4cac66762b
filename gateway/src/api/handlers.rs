//! The admin API's handlers: thin translations between JSON and the grant table.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::{ApiError, ApiState};
use crate::grants::{GrantFilter, NewGrant, NewRequest};

type Answer = Result<Json<Value>, ApiError>;

fn to_json(v: impl serde::Serialize) -> Answer {
    serde_json::to_value(v)
        .map(Json)
        .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// The longest duration a grant, extension or request may name: far beyond any policy, and
/// far inside what a timestamp holds, so `expires_at + by` cannot overflow (a `--by 300000y`
/// once panicked the extend handler and dropped the caller's connection without an answer).
const MAX_DURATION: Duration = Duration::from_secs(1000 * 31_557_600);

fn duration(what: &str, s: &str) -> Result<Duration, ApiError> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| ApiError::bad_request(format!("{what} {s:?} is not a duration: {e}")))?;
    if d > MAX_DURATION {
        return Err(ApiError::bad_request(format!(
            "{what} {s:?} is too long: at most {}",
            humantime::format_duration(MAX_DURATION)
        )));
    }
    Ok(d)
}

/// The longest reason (grant add and revoke, request create and deny, sessions kill) the API
/// accepts, in bytes of UTF-8. A reason is a sentence or a ticket reference; it is copied into
/// the grant store, the audit log, webhooks, `grant list` and `report`, so a megabyte of it
/// would bloat every one of them. 1 KiB holds a long paragraph.
pub(super) const MAX_REASON_BYTES: usize = 1024;

/// Refuses a reason longer than [`MAX_REASON_BYTES`]. Measured as sent, before any trimming,
/// since that is what a grant stores.
fn check_reason(reason: Option<&str>) -> Result<(), ApiError> {
    match reason {
        Some(r) if r.len() > MAX_REASON_BYTES => Err(ApiError::bad_request(format!(
            "reason is too long: {} bytes, at most {MAX_REASON_BYTES} bytes",
            r.len()
        ))),
        _ => Ok(()),
    }
}

/// Unauthenticated, so it says only whether the gateway can serve (audit log writable).
pub(super) async fn health(State(st): State<ApiState>) -> Json<Value> {
    let audit = st.gw.audit.healthy();
    Json(json!({
        "status": if audit { "ok" } else { "degraded" },
        "audit": audit,
    }))
}

#[derive(Debug, Deserialize)]
pub(super) struct GrantQuery {
    user: Option<String>,
    target: Option<String>,
    #[serde(default)]
    all: bool,
}

pub(super) async fn list_grants(
    State(st): State<ApiState>,
    Caller(actor): Caller,
    Query(q): Query<GrantQuery>,
) -> Answer {
    let filter = GrantFilter {
        user: q.user,
        target: q.target,
        all: q.all,
    };
    to_json(st.gw.grants.list_grants(&filter, &actor)?)
}

pub(super) async fn get_grant(
    State(st): State<ApiState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
) -> Answer {
    let not_found = || {
        ApiError::from(crate::grants::GrantsError::NotFound {
            kind: "grant",
            id: id.clone(),
        })
    };
    let g = st.gw.grants.get_grant(&id)?.ok_or_else(not_found)?;
    match &actor {
        crate::grants::Actor::User(u) if *u != g.user => Err(not_found()),
        _ => to_json(g),
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct AddGrant {
    user: String,
    target: String,
    role: Option<String>,
    /// Humantime, e.g. `15m`.
    duration: String,
    reason: Option<String>,
}

pub(super) async fn add_grant(
    State(st): State<ApiState>,
    Caller(actor): Caller,
    Json(b): Json<AddGrant>,
) -> Answer {
    check_reason(b.reason.as_deref())?;
    let new = NewGrant {
        user: b.user,
        target: b.target,
        role: b.role,
        duration: duration("duration", &b.duration)?,
        reason: b.reason,
    };
    to_json(st.gw.grants.add_grant(new, &actor).await?)
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct WithReason {
    reason: Option<String>,
}

pub(super) async fn revoke(
    State(st): State<ApiState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
    body: Option<Json<WithReason>>,
) -> Answer {
    let reason = body.and_then(|b| b.0.reason);
    check_reason(reason.as_deref())?;
    to_json(st.gw.grants.revoke(&id, &actor, reason).await?)
}

#[derive(Debug, Deserialize)]
pub(super) struct Extend {
    by: String,
}

pub(super) async fn extend(
    State(st): State<ApiState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
    Json(b): Json<Extend>,
) -> Answer {
    let by = duration("by", &b.by)?;
    to_json(st.gw.grants.extend(&id, by, &actor).await?)
}

#[derive(Debug, Deserialize)]
pub(super) struct RequestQuery {
    #[serde(default)]
    pending: bool,
}

pub(super) async fn list_requests(
    State(st): State<ApiState>,
    Caller(actor): Caller,
    Query(q): Query<RequestQuery>,
) -> Answer {
    to_json(st.gw.grants.list_requests(q.pending, &actor)?)
}

#[derive(Debug, Deserialize)]
pub(super) struct CreateRequest {
    user: Option<String>,
    target: String,
    role: Option<String>,
    duration: String,
    #[serde(default)]
    reason: String,
}

pub(super) async fn create_request(
    State(st): State<ApiState>,
    Caller(actor): Caller,
    Json(b): Json<CreateRequest>,
) -> Answer {
    check_reason(Some(&b.reason))?;
    let new = NewRequest {
        user: b.user,
        target: b.target,
        role: b.role,
        duration: duration("duration", &b.duration)?,
        reason: b.reason,
    };
    to_json(st.gw.grants.create_request(new, &actor).await?)
}

/// The approved request, with the grant it created under `grant`.
pub(super) async fn approve(
    State(st): State<ApiState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
) -> Answer {
    let (r, g) = st.gw.grants.approve(&id, &actor).await?;
    let mut v = to_json(r)?.0;
    if let Value::Object(m) = &mut v {
        m.insert("grant".into(), to_json(g)?.0);
    }
    Ok(Json(v))
}

pub(super) async fn deny(
    State(st): State<ApiState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
    body: Option<Json<WithReason>>,
) -> Answer {
    let reason = body.and_then(|b| b.0.reason);
    check_reason(reason.as_deref())?;
    to_json(st.gw.grants.deny(&id, &actor, reason).await?)
}

pub(super) async fn list_sessions(State(st): State<ApiState>, Caller(actor): Caller) -> Answer {
    to_json(st.gw.grants.sessions(&actor))
}

pub(super) async fn kill(
    State(st): State<ApiState>,
    Caller(actor): Caller,
    Path(id): Path<String>,
    body: Option<Json<WithReason>>,
) -> Answer {
    let reason = body.and_then(|b| b.0.reason);
    check_reason(reason.as_deref())?;
    to_json(st.gw.grants.kill_session(&id, &actor, reason.as_deref())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_capped_in_bytes() {
        // (reason, accepted)
        let cases = [
            (None, true),
            (Some(String::new()), true),
            (Some("x".repeat(MAX_REASON_BYTES)), true),
            (Some("x".repeat(MAX_REASON_BYTES + 1)), false),
            // Two bytes a character: 512 fit, 513 do not.
            (Some("é".repeat(MAX_REASON_BYTES / 2)), true),
            (Some("é".repeat(MAX_REASON_BYTES / 2 + 1)), false),
            // Whitespace counts: it is stored as sent.
            (
                Some(format!(
                    "{}{}",
                    "x".repeat(10),
                    " ".repeat(MAX_REASON_BYTES)
                )),
                false,
            ),
        ];
        for (reason, accepted) in cases {
            let got = check_reason(reason.as_deref());
            assert_eq!(got.is_ok(), accepted, "{:?}", reason.map(|r| r.len()));
            if let Err(e) = got {
                assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
                assert!(e.message.contains("at most 1024 bytes"), "{}", e.message);
            }
        }
    }
}
