//! The markdown form of the access review: a table of grants, then one list per finding.

use super::{Report, RequestRow};

fn dur(s: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64)).to_string()
}

fn cell(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.replace('|', "\\|").replace('\n', " ")
    }
}

pub(super) fn markdown(r: &Report) -> String {
    let mut o = String::from("# Portcullis access review\n\n");
    o.push_str(&format!("Generated {}", r.generated_at));
    if let Some(s) = &r.since {
        o.push_str(&format!(", covering activity since {s}"));
    }
    o.push_str(".\n\n## Grants\n\n");
    o.push_str("| grant | user | target | role | reason | created by | approved by | granted | used | sessions | queries | commands | status |\n");
    o.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    for g in &r.grants {
        o.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            cell(&g.id),
            cell(&g.user),
            cell(&g.target),
            cell(&g.role),
            cell(&g.reason),
            cell(&g.created_by),
            cell(&g.approved_by),
            dur(g.granted_secs),
            dur(g.used_secs),
            g.sessions,
            g.queries,
            g.commands,
            g.status
        ));
    }
    let list = |title: &str, items: &[String]| {
        let mut s = format!("\n## {title}\n\n");
        if items.is_empty() {
            s.push_str("None.\n");
        }
        for i in items {
            s.push_str(&format!("- {i}\n"));
        }
        s
    };
    o.push_str(&list("Grants never used", &r.unused_grants));
    o.push_str(&list("Grants at their maximum duration", &r.grants_at_max));
    let reqs = |qs: &[RequestRow]| -> Vec<String> {
        qs.iter()
            .map(|q| {
                format!(
                    "{} {} on {} ({}) \"{}\" {}{}",
                    q.id,
                    q.user,
                    q.target,
                    cell(&q.role),
                    q.reason,
                    q.status,
                    if q.decided_by.is_empty() {
                        String::new()
                    } else {
                        format!(" by {}", q.decided_by)
                    }
                )
            })
            .collect()
    };
    o.push_str(&list("Denied requests", &reqs(&r.denied_requests)));
    o.push_str(&list("Lapsed requests", &reqs(&r.lapsed_requests)));
    o.push_str(&list("Pending requests", &reqs(&r.pending_requests)));
    let closes: Vec<String> = r
        .forced_closes
        .iter()
        .map(|c| {
            let mut line = format!(
                "{} session {} ({} on {}, grant {}): {}",
                c.at, c.session, c.user, c.target, c.grant, c.reason
            );
            if !c.killed_by.is_empty() {
                line.push_str(&format!(" by {}", c.killed_by));
            }
            if !c.kill_reason.is_empty() {
                line.push_str(&format!(" ({})", c.kill_reason));
            }
            line
        })
        .collect();
    o.push_str(&list(
        "Sessions closed by expiry, revocation, kill or audit-log failure",
        &closes,
    ));
    let failed: Vec<String> = r
        .failed_logins
        .iter()
        .map(|f| {
            let user = if f.user.is_empty() {
                "(no user)"
            } else {
                &f.user
            };
            let times = if f.count == 1 {
                format!("once, at {}", f.first)
            } else {
                format!("{} times, {} to {}", f.count, f.first, f.last)
            };
            format!(
                "{user} over {}: {times}, from {}",
                f.proto,
                f.clients.join(", ")
            )
        })
        .collect();
    o.push_str(&list("Failed logins", &failed));
    let repairs: Vec<String> = r
        .log_repairs
        .iter()
        .map(|c| {
            let mut line = format!(
                "{} {} cut at offset {}: {} bytes ({})",
                c.at, c.file, c.offset, c.bytes, c.reason
            );
            if !c.kept_in.is_empty() {
                line.push_str(&format!(
                    "; kept in audit/{} (sha256 {})",
                    c.kept_in, c.sha256
                ));
            }
            line
        })
        .collect();
    o.push_str(&list("Audit log repairs at restart", &repairs));
    o
}
