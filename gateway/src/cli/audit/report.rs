//! `report`: an access review derived from the audit log alone: per grant who, what, why,
//! who approved, granted versus used time, sessions, queries and commands; then unused
//! grants, grants at their maximum, denied (withdrawals marked), lapsed and still pending requests,
//! forced session closes, failed logins, and repairs of the audit log itself.
//!
//! Event fields are read leniently (`grant` or `grant_id`, `by` or `created_by` ...) so the
//! report keeps working as producers add fields.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use portcullis_recorder::Record;
use serde::Serialize;

use super::{DataDirArg, each_record, parse_when};
use crate::cli::{CmdResult, Global};

mod markdown;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Md,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub dir: DataDirArg,
    /// Only grants created, requests made and sessions started since then (2h, 7d, or RFC 3339);
    /// a grant created before is listed when a session under it started since then
    #[arg(long)]
    pub since: Option<String>,
    /// md (default) or json (--json also selects json)
    #[arg(long, value_enum)]
    pub format: Option<ReportFormat>,
}

#[derive(Debug, Default, Serialize)]
struct GrantRow {
    id: String,
    user: String,
    target: String,
    role: String,
    reason: String,
    created_by: String,
    approved_by: String,
    request_id: String,
    created_at: String,
    expires_at: String,
    status: String,
    granted_secs: i64,
    max_secs: Option<i64>,
    used_secs: i64,
    sessions: u64,
    queries: u64,
    commands: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
struct RequestRow {
    id: String,
    user: String,
    target: String,
    role: String,
    reason: String,
    created_at: String,
    status: String,
    decided_by: String,
    decision_reason: String,
    /// Denied by the requester: withdrawn. The status stays `denied`, as the request API and
    /// SPEC §3 give it; this says which kind of denial it was.
    withdrawn: bool,
}

#[derive(Debug, Serialize)]
struct CloseRow {
    session: String,
    user: String,
    target: String,
    grant: String,
    reason: String,
    /// Who ran `sessions kill` (empty unless the reason is `killed`).
    killed_by: String,
    /// The reason they gave (empty when none was given).
    kill_reason: String,
    at: String,
}

/// The failed logins of one user over one protocol (`ssh`, `postgres`, `admin`).
#[derive(Debug, Default, Serialize)]
struct FailedLoginRow {
    user: String,
    proto: String,
    count: u64,
    /// Client hosts, distinct, in the order they first failed (at most [`MAX_CLIENTS`]).
    clients: Vec<String>,
    first: String,
    last: String,
}

/// Client hosts listed per failed-login row; the count covers them all.
const MAX_CLIENTS: usize = 10;

/// A torn or failing final record cut from the log at a restart (`audit.recovered`).
#[derive(Debug, Serialize)]
struct RepairRow {
    at: String,
    file: String,
    offset: u64,
    bytes: u64,
    reason: String,
    /// The side file in the audit directory holding the cut bytes, and their sha256.
    kept_in: String,
    sha256: String,
}

#[derive(Debug, Serialize)]
struct Report {
    generated_at: String,
    since: Option<String>,
    grants: Vec<GrantRow>,
    unused_grants: Vec<String>,
    grants_at_max: Vec<String>,
    denied_requests: Vec<RequestRow>,
    lapsed_requests: Vec<RequestRow>,
    /// Requests still waiting for a decision when the report was made (younger than the
    /// request lifetime); listed apart, since they have not lapsed.
    pending_requests: Vec<RequestRow>,
    forced_closes: Vec<CloseRow>,
    /// Most failures first.
    failed_logins: Vec<FailedLoginRow>,
    log_repairs: Vec<RepairRow>,
}

fn field(r: &Record, keys: &[&str]) -> String {
    keys.iter()
        .find_map(|k| r.event.get(*k))
        .map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default()
}

fn count(r: &Record, key: &str) -> u64 {
    r.event
        .get(key)
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0)
}

/// The host of a `client` field (`ip:port`), or the field as it is.
fn host(client: &str) -> String {
    client
        .parse::<std::net::SocketAddr>()
        .map_or_else(|_| client.to_owned(), |a| a.ip().to_string())
}

fn secs(r: &Record, keys: &[&str]) -> Option<i64> {
    keys.iter().find_map(|k| match r.event.get(*k)? {
        serde_json::Value::Number(n) => n.as_i64(),
        serde_json::Value::String(s) => humantime::parse_duration(s)
            .ok()
            .map(|d| d.as_secs() as i64),
        _ => None,
    })
}

fn time(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The tallies a report is built from, fed one record at a time ([`Review::add`]), so that
/// a log larger than memory can be reviewed: only grants, requests, sessions and findings
/// are kept, never the records.
#[derive(Default)]
struct Review {
    since: Option<DateTime<Utc>>,
    grants: BTreeMap<String, GrantRow>,
    /// Grants created before the window: one joins `grants` when a session under it starts
    /// in the window, since who accessed what then is the review's point.
    earlier: HashMap<String, GrantRow>,
    requests: BTreeMap<String, RequestRow>,
    session_grant: HashMap<String, String>,
    session_start: HashMap<String, DateTime<Utc>>,
    forced: Vec<CloseRow>,
    failed: BTreeMap<(String, String), FailedLoginRow>,
    repairs: Vec<RepairRow>,
}

impl Review {
    fn new(since: Option<DateTime<Utc>>) -> Self {
        Review {
            since,
            ..Default::default()
        }
    }

    fn add(&mut self, r: &Record) {
        let since = self.since;
        let in_window = |r: &Record| since.is_none_or(|s| r.time().is_some_and(|t| t >= s));
        let Review {
            grants,
            earlier,
            requests,
            session_grant,
            session_start,
            forced,
            failed,
            repairs,
            ..
        } = self;
        let gid = |r: &Record| field(r, &["grant", "grant_id", "id"]);
        let rid = |r: &Record| field(r, &["request", "request_id", "id"]);
        let kind = r.kind();
        match kind {
            "grant.created" => {
                let created_at = field(r, &["created_at"]);
                let g = GrantRow {
                    id: gid(r),
                    user: field(r, &["user"]),
                    target: field(r, &["target"]),
                    role: field(r, &["role"]),
                    reason: field(r, &["reason"]),
                    created_by: field(r, &["created_by", "by", "actor"]),
                    approved_by: field(r, &["approved_by"]),
                    request_id: field(r, &["request_id", "request"]),
                    created_at: if created_at.is_empty() {
                        r.ts.clone()
                    } else {
                        created_at
                    },
                    expires_at: field(r, &["expires_at"]),
                    status: "live".into(),
                    max_secs: secs(r, &["max_secs", "max_grant_secs", "max"]),
                    ..Default::default()
                };
                if in_window(r) {
                    grants.insert(g.id.clone(), g);
                } else {
                    earlier.insert(g.id.clone(), g);
                }
            }
            "grant.extended" => {
                if let Some(g) = grant_mut(grants, earlier, &gid(r)) {
                    let e = field(r, &["expires_at", "new_expires_at"]);
                    if !e.is_empty() {
                        g.expires_at = e;
                    }
                    if let Some(m) = secs(r, &["max_secs", "max_grant_secs", "max"]) {
                        g.max_secs = Some(m);
                    }
                }
            }
            "grant.revoked" | "grant.expired" => {
                if let Some(g) = grant_mut(grants, earlier, &gid(r)) {
                    g.status = kind.trim_start_matches("grant.").into();
                }
            }
            "request.created" if in_window(r) => {
                let q = RequestRow {
                    id: rid(r),
                    user: field(r, &["user"]),
                    target: field(r, &["target"]),
                    role: field(r, &["role"]),
                    reason: field(r, &["reason"]),
                    created_at: r.ts.clone(),
                    status: "pending".into(),
                    ..Default::default()
                };
                requests.insert(q.id.clone(), q);
            }
            "request.approved" | "request.denied" | "request.expired" => {
                if let Some(q) = requests.get_mut(&rid(r)) {
                    q.status = kind.trim_start_matches("request.").into();
                    q.decided_by = field(r, &["by", "decided_by", "approved_by", "denied_by"]);
                    q.decision_reason = field(r, &["reason"]);
                    // A requester denying their own request withdrew it.
                    q.withdrawn = q.status == "denied" && q.decided_by == q.user;
                }
                let grant = field(r, &["grant", "grant_id"]);
                if kind == "request.approved"
                    && let Some(g) = grant_mut(grants, earlier, &grant)
                    && g.approved_by.is_empty()
                {
                    g.approved_by = field(r, &["by", "decided_by", "approved_by"]);
                }
            }
            "session.started" => {
                let s = field(r, &["session"]);
                session_grant.insert(s.clone(), gid(r));
                if let Some(t) = r.time() {
                    session_start.insert(s, t);
                }
                if in_window(r)
                    && let Some(g) = earlier.remove(&gid(r))
                {
                    grants.insert(g.id.clone(), g);
                }
                if let Some(g) = grants.get_mut(&gid(r)) {
                    g.sessions += 1;
                }
            }
            "session.ended" => {
                let s = field(r, &["session"]);
                let grant = session_grant.get(&s).cloned().unwrap_or_else(|| gid(r));
                if let (Some(g), Some(start), Some(end)) =
                    (grants.get_mut(&grant), session_start.get(&s), r.time())
                {
                    g.used_secs += (end - *start).num_seconds().max(0);
                }
                let reason = field(r, &["reason"]);
                if matches!(
                    reason.as_str(),
                    "grant_expired" | "grant_revoked" | "killed" | "audit_failed"
                ) && in_window(r)
                {
                    forced.push(CloseRow {
                        session: s,
                        user: field(r, &["user"]),
                        target: field(r, &["target"]),
                        grant,
                        reason,
                        killed_by: field(r, &["killed_by"]),
                        kill_reason: field(r, &["kill_reason"]),
                        at: r.ts.clone(),
                    });
                }
            }
            "pg.query" | "ssh.exec" | "ssh.command" => {
                let s = field(r, &["session"]);
                let grant = session_grant
                    .get(&s)
                    .cloned()
                    .unwrap_or_else(|| field(r, &["grant"]));
                if let Some(g) = grants.get_mut(&grant) {
                    if kind == "pg.query" {
                        g.queries += 1;
                    } else {
                        g.commands += 1;
                    }
                }
            }
            "auth.failed" if in_window(r) => {
                let (user, proto) = (field(r, &["user"]), field(r, &["proto"]));
                let row = failed
                    .entry((user.clone(), proto.clone()))
                    .or_insert_with(|| FailedLoginRow {
                        user,
                        proto,
                        first: r.ts.clone(),
                        ..Default::default()
                    });
                row.count += 1;
                row.last = r.ts.clone();
                let h = host(&field(r, &["client"]));
                if row.clients.len() < MAX_CLIENTS && !row.clients.contains(&h) {
                    row.clients.push(h);
                }
            }
            "audit.recovered" if in_window(r) => repairs.push(RepairRow {
                at: r.ts.clone(),
                file: field(r, &["file"]),
                offset: count(r, "offset"),
                bytes: count(r, "bytes"),
                reason: field(r, &["reason"]),
                kept_in: field(r, &["kept_in"]),
                sha256: field(r, &["sha256"]),
            }),
            _ => {}
        }
    }

    /// The report of every record added, as of `now`.
    fn finish(self, now: DateTime<Utc>) -> Report {
        let Review {
            since,
            mut grants,
            requests,
            forced,
            failed,
            repairs,
            ..
        } = self;
        let mut failed: Vec<FailedLoginRow> = failed.into_values().collect();
        failed.sort_by_key(|f| std::cmp::Reverse(f.count));
        for g in grants.values_mut() {
            if let (Some(c), Some(e)) = (time(&g.created_at), time(&g.expires_at)) {
                // To the nearest second: a log written before grant.created carried created_at
                // has the record's own stamp standing in, a few milliseconds after the grant.
                let ms = (e - c).num_milliseconds();
                g.granted_secs = (ms + 500).div_euclid(1000).max(0);
                if g.status == "live" && e <= now {
                    g.status = "expired".into();
                }
            }
            if g.approved_by.is_empty()
                && let Some(q) = requests.get(&g.request_id)
            {
                g.approved_by = q.decided_by.clone();
            }
        }
        let grants: Vec<GrantRow> = grants.into_values().collect();
        Report {
            generated_at: portcullis_recorder::record::format_ts(now),
            since: since.map(portcullis_recorder::record::format_ts),
            unused_grants: grants
                .iter()
                .filter(|g| g.sessions == 0)
                .map(|g| g.id.clone())
                .collect(),
            grants_at_max: grants
                .iter()
                .filter(|g| g.max_secs.is_some_and(|m| g.granted_secs >= m))
                .map(|g| g.id.clone())
                .collect(),
            denied_requests: requests
                .values()
                .filter(|q| q.status == "denied")
                .cloned()
                .collect(),
            lapsed_requests: requests
                .values()
                .filter(|q| {
                    q.status == "expired" || (q.status == "pending" && !still_pending(q, now))
                })
                .cloned()
                .collect(),
            pending_requests: requests
                .values()
                .filter(|q| q.status == "pending" && still_pending(q, now))
                .cloned()
                .collect(),
            forced_closes: forced,
            failed_logins: failed,
            log_repairs: repairs,
            grants,
        }
    }
}

/// The grant `id`, whether in the window or before it.
fn grant_mut<'a>(
    grants: &'a mut BTreeMap<String, GrantRow>,
    earlier: &'a mut HashMap<String, GrantRow>,
    id: &str,
) -> Option<&'a mut GrantRow> {
    if grants.contains_key(id) {
        grants.get_mut(id)
    } else {
        earlier.get_mut(id)
    }
}

/// A request with no decision that is younger than the request lifetime at `now` is still
/// waiting; an older one lapsed (its `request.expired` may be missing when the gateway was
/// down at the time).
fn still_pending(q: &RequestRow, now: DateTime<Utc>) -> bool {
    time(&q.created_at).is_some_and(|t| {
        chrono::TimeDelta::from_std(crate::grants::REQUEST_TTL).is_ok_and(|ttl| now < t + ttl)
    })
}

pub fn run_report(a: ReportArgs, g: &Global) -> CmdResult {
    let now = Utc::now();
    let since = a.since.as_deref().map(|s| parse_when(s, now)).transpose()?;
    let mut review = Review::new(since);
    each_record(&a.dir.resolve(g)?, |r| review.add(&r))?;
    let report = review.finish(now);
    let json = a.format == Some(ReportFormat::Json) || (a.format.is_none() && g.json);
    if json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        out!("{}", markdown::markdown(&report));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request without a decision is pending for the request lifetime (1 h) after it was
    /// made, and lapsed from then on, even with no `request.expired` in the log.
    #[test]
    fn a_request_without_a_decision_lapses_after_the_request_lifetime() {
        let now = time("2026-11-29T12:00:00Z").expect("time");
        let made = |at: &str| RequestRow {
            created_at: at.into(),
            status: "pending".into(),
            ..Default::default()
        };
        assert!(still_pending(&made("2026-11-29T11:30:00Z"), now));
        assert!(!still_pending(&made("2026-11-29T11:00:00Z"), now));
        assert!(!still_pending(&made("2026-11-29T09:00:00Z"), now));
        // An unreadable stamp is not counted as waiting.
        assert!(!still_pending(&made("yesterday"), now));
    }
}
