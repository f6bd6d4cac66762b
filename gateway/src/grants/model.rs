//! The records the store keeps and the admin API prints: grants, requests, sessions, and who
//! acts on them. Their JSON shapes are SPEC §3's `--json` shapes.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// How long a pending request waits for an approver before it lapses.
pub const REQUEST_TTL: std::time::Duration = std::time::Duration::from_secs(3600);

/// Where a grant is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GrantStatus {
    Live,
    Expired,
    Revoked,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Live => "live",
            GrantStatus::Expired => "expired",
            GrantStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "live" => Some(GrantStatus::Live),
            "expired" => Some(GrantStatus::Expired),
            "revoked" => Some(GrantStatus::Revoked),
            _ => None,
        }
    }
}

/// One grant as stored and printed (SPEC §3 grant shape, plus `version`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub id: String,
    pub user: String,
    pub target: String,
    pub role: String,
    pub status: GrantStatus,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub reason: Option<String>,
    pub created_by: String,
    pub approved_by: Option<String>,
    pub request_id: Option<String>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    /// Bumped on every change; updates are conditional on it (optimistic concurrency).
    pub version: u64,
}

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestStatus {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl RequestStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestStatus::Pending => "pending",
            RequestStatus::Approved => "approved",
            RequestStatus::Denied => "denied",
            RequestStatus::Expired => "expired",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(RequestStatus::Pending),
            "approved" => Some(RequestStatus::Approved),
            "denied" => Some(RequestStatus::Denied),
            "expired" => Some(RequestStatus::Expired),
            _ => None,
        }
    }
}

/// One just-in-time access request (SPEC §3 request shape, plus decision details).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RequestRecord {
    pub id: String,
    pub user: String,
    pub target: String,
    pub role: String,
    pub duration_secs: u64,
    pub reason: String,
    pub status: RequestStatus,
    pub created_at: DateTime<Utc>,
    pub decided_by: Option<String>,
    pub grant_id: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
    pub decision_reason: Option<String>,
    pub version: u64,
}

/// One live session (SPEC §3 session shape).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub id: String,
    pub proto: String,
    pub user: String,
    pub target: String,
    pub role: String,
    pub grant_id: String,
    pub client: String,
    pub started_at: DateTime<Utc>,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

/// Who is asking for a change: the operator (admin token) or a named user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// Holder of the admin token: full rights.
    Admin,
    /// A configured user, authenticated by password.
    User(String),
}

impl Actor {
    /// The name written to `created_by`, `decided_by`, `revoked_by` and audit events.
    pub fn name(&self) -> &str {
        match self {
            Actor::Admin => "admin",
            Actor::User(u) => u,
        }
    }
}

/// Which grants a listing wants.
#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub user: Option<String>,
    pub target: Option<String>,
    /// Also expired and revoked grants.
    pub all: bool,
}

/// A fresh random id with a type prefix, e.g. `g_3f2a…`.
pub(crate) fn new_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}
