//! The markdown form of the access review: a table of grants, then one list per finding.
//!
//! The log holds strings that anyone can choose: an unauthenticated client picks the user
//! name of its `auth.failed`, a requester writes the reason, an operator the kill reason.
//! Every string the log supplies is therefore shown through [`logged`], so none can start a
//! line, a heading, a list item, a link or a table cell of its own; the exceptions are the
//! records' timestamps and the close reasons `Review::add` matched against its own list. The JSON
//! form needs none of this and carries every value whole.

use super::{Report, RequestRow};

/// The most characters of one logged value the markdown shows, counted after escaping.
const MAX_SHOWN: usize = 200;

fn dur(s: i64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(s.max(0) as u64)).to_string()
}

/// A string from the log as inert markdown: a code span, in which markdown means nothing,
/// with control and other unprintable characters written as Rust escapes (`\n`, `\u{1b}`)
/// and backslashes doubled so those escapes are unambiguous, cut after [`MAX_SHOWN`]
/// characters with the full length said after it. An empty value is `-`.
fn logged(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    let mut text = String::with_capacity(s.len().min(MAX_SHOWN));
    let mut shown = 0;
    let mut whole = true;
    for c in s.chars() {
        // Quotes are escaped by escape_debug, but mean nothing in a code span.
        let quote = matches!(c, '"' | '\'');
        let esc = c.escape_debug();
        let n = if quote { 1 } else { esc.len() };
        if shown + n > MAX_SHOWN {
            whole = false;
            break;
        }
        shown += n;
        if quote {
            text.push(c);
        } else {
            text.extend(esc);
        }
    }
    // A code span ends at the first run of exactly as many backticks as opened it, and
    // backslashes do not escape inside it: open with one more than the longest run inside.
    let run = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(run + 1);
    // CommonMark drops one space from each end of a span that has both; a space on each side
    // keeps a backtick at either end apart from the fence and leading spaces as they were.
    let pad = if (text.starts_with(['`', ' ']) || text.ends_with(['`', ' ']))
        && !text.chars().all(|c| c == ' ')
    {
        " "
    } else {
        ""
    };
    let mut out = format!("{fence}{pad}{text}{pad}{fence}");
    if !whole {
        out.push_str(&format!("… ({} characters in all)", s.chars().count()));
    }
    out
}

/// A logged value in a table cell, where GFM ends the cell at any `|` not escaped, even one
/// inside a code span.
fn cell(s: &str) -> String {
    logged(s).replace('|', "\\|")
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
    let ids = |ids: &[String]| -> Vec<String> { ids.iter().map(|i| logged(i)).collect() };
    o.push_str(&list("Grants never used", &ids(&r.unused_grants)));
    o.push_str(&list(
        "Grants at their maximum duration",
        &ids(&r.grants_at_max),
    ));
    let reqs = |qs: &[RequestRow]| -> Vec<String> {
        qs.iter()
            .map(|q| {
                let mut line = format!(
                    "{} {} on {} ({}) {} {}",
                    logged(&q.id),
                    logged(&q.user),
                    logged(&q.target),
                    logged(&q.role),
                    logged(&q.reason),
                    q.status,
                );
                if !q.decided_by.is_empty() {
                    line.push_str(&format!(" by {}", logged(&q.decided_by)));
                }
                if q.withdrawn {
                    line.push_str(" (withdrawn by the requester)");
                }
                // Why it was denied is the decision's half of the review.
                if q.status == "denied" && !q.decision_reason.is_empty() {
                    line.push_str(&format!(": {}", logged(&q.decision_reason)));
                }
                line
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
                c.at,
                logged(&c.session),
                logged(&c.user),
                logged(&c.target),
                logged(&c.grant),
                c.reason
            );
            if !c.killed_by.is_empty() {
                line.push_str(&format!(" by {}", logged(&c.killed_by)));
            }
            if !c.kill_reason.is_empty() {
                line.push_str(&format!(" ({})", logged(&c.kill_reason)));
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
                "(no user)".to_owned()
            } else {
                logged(&f.user)
            };
            let times = if f.count == 1 {
                format!("once, at {}", f.first)
            } else {
                format!("{} times, {} to {}", f.count, f.first, f.last)
            };
            let clients: Vec<String> = f.clients.iter().map(|c| logged(c)).collect();
            format!(
                "{user} over {}: {times}, from {}",
                logged(&f.proto),
                clients.join(", ")
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
                c.at,
                logged(&c.file),
                c.offset,
                c.bytes,
                logged(&c.reason)
            );
            if !c.kept_in.is_empty() {
                line.push_str(&format!(
                    "; kept in {} (sha256 {})",
                    logged(&format!("audit/{}", c.kept_in)),
                    logged(&c.sha256)
                ));
            }
            line
        })
        .collect();
    o.push_str(&list("Audit log repairs at restart", &repairs));
    o
}

#[cfg(test)]
mod tests {
    use portcullis_recorder::Record;
    use serde_json::json;

    use super::super::{Review, time};
    use super::*;

    /// Each kind of hostile or awkward value, and exactly how it is shown.
    #[test]
    fn logged_values_are_inert_code_spans() {
        let cases = [
            ("alice", "`alice`"),
            ("", "-"),
            ("## Grants never used", "`## Grants never used`"),
            ("a\nb\r\tc", r"`a\nb\r\tc`"),
            ("\u{1b}[31mred", r"`\u{1b}[31mred`"),
            // A literal backslash-n stays apart from an escaped newline.
            (r"a\nb", r"`a\\nb`"),
            ("it's \"x\"", "`it's \"x\"`"),
            ("a`b", "``a`b``"),
            ("``x", "``` ``x ```"),
            ("x`", "`` x` ``"),
            (" x ", "`  x  `"),
            ("   ", "`   `"),
            (
                "[click](http://evil) <img src=x>",
                "`[click](http://evil) <img src=x>`",
            ),
        ];
        for (raw, want) in cases {
            assert_eq!(logged(raw), want, "{raw:?}");
        }
        assert_eq!(cell("a|b"), r"`a\|b`");
        // Cut after MAX_SHOWN characters, never inside an escape, with the length said.
        let long = "x".repeat(5000);
        assert_eq!(
            logged(&long),
            format!("`{}`… (5000 characters in all)", "x".repeat(MAX_SHOWN))
        );
        let newlines = "\n".repeat(150);
        assert_eq!(
            logged(&newlines),
            format!("`{}`… (150 characters in all)", r"\n".repeat(MAX_SHOWN / 2))
        );
    }

    fn rec(seq: u64, event: serde_json::Value) -> Record {
        let serde_json::Value::Object(event) = event else {
            panic!("an event is an object")
        };
        Record {
            seq,
            ts: format!("2026-11-29T10:00:{seq:02}Z"),
            prev: String::new(),
            hash: String::new(),
            event,
        }
    }

    /// Strings an unauthenticated client or a requester chose cannot add headings, list
    /// items or table cells to the review, and a huge one is cut.
    #[test]
    fn hostile_strings_do_not_shape_the_report() {
        let forged = "\n\n## Grants never used\n- fake |x|";
        let huge = "A".repeat(5000);
        let recs = [
            rec(
                1,
                json!({"type": "grant.created", "grant": "g_1", "user": "alice",
                       "target": "pg", "role": "read", "reason": forged,
                       "created_by": "bob"}),
            ),
            rec(
                2,
                json!({"type": "request.created", "request": "r_1", "user": "dave",
                       "target": "pg", "reason": forged}),
            ),
            rec(
                3,
                json!({"type": "request.denied", "request": "r_1", "by": "bob",
                       "reason": "no"}),
            ),
            rec(
                4,
                json!({"type": "session.started", "session": "s_1", "grant": "g_1"}),
            ),
            rec(
                5,
                json!({"type": "session.ended", "session": "s_1", "user": "alice",
                       "target": "pg", "reason": "killed", "killed_by": "carol",
                       "kill_reason": forged}),
            ),
            rec(
                6,
                json!({"type": "auth.failed", "proto": "postgres", "user": forged,
                       "client": "10.0.0.7:5000"}),
            ),
            rec(
                7,
                json!({"type": "auth.failed", "proto": "ssh", "user": huge,
                       "client": "10.0.0.8:5000"}),
            ),
        ];
        let now = time("2026-11-29T12:00:00Z").expect("time");
        let mut review = Review::new(None);
        for r in &recs {
            review.add(r);
        }
        let md = markdown(&review.finish(now));

        let headings: Vec<&str> = md.lines().filter(|l| l.starts_with('#')).collect();
        assert_eq!(
            headings,
            [
                "# Portcullis access review",
                "## Grants",
                "## Grants never used",
                "## Grants at their maximum duration",
                "## Denied requests",
                "## Lapsed requests",
                "## Pending requests",
                "## Sessions closed by expiry, revocation, kill or audit-log failure",
                "## Failed logins",
                "## Audit log repairs at restart",
            ],
            "{md}"
        );
        assert!(!md.lines().any(|l| l.starts_with("- fake")), "{md}");
        // The one grant row keeps its 14 cell borders: no `|` of the reason splits a cell.
        let row = md
            .lines()
            .find(|l| l.starts_with("| `g_1`"))
            .expect("the grant's row");
        let borders = row
            .match_indices('|')
            .filter(|(i, _)| !row[..*i].ends_with('\\'))
            .count();
        assert_eq!(borders, 14, "{row}");
        assert!(
            row.contains(r"`\n\n## Grants never used\n- fake \|x\|`"),
            "{row}"
        );
        let forged_login = format!(
            "- `{}` over `postgres`: once, at ",
            r"\n\n## Grants never used\n- fake |x|"
        );
        assert!(md.contains(&forged_login), "{md}");
        // The huge name is cut, and says so.
        let line = md
            .lines()
            .find(|l| l.contains("AAAA"))
            .expect("the huge name's line");
        assert!(line.len() < MAX_SHOWN + 200, "{}", line.len());
        assert!(
            line.contains("… (5000 characters in all) over `ssh`"),
            "{line}"
        );
        assert!(md.len() < 5000, "{}", md.len());
    }

    /// A denied request's line says why it was denied (escaped like every logged value), and
    /// a requester's own denial is a denial, as the request API says, marked withdrawn.
    #[test]
    fn denied_requests_carry_the_decision_and_its_reason() {
        let recs = [
            rec(
                1,
                json!({"type": "request.created", "request": "r_1", "user": "dave",
                       "target": "pg", "role": "read", "reason": "INC-7"}),
            ),
            rec(
                2,
                json!({"type": "request.denied", "request": "r_1", "user": "dave",
                       "denied_by": "bob", "reason": "not on call\n- fake"}),
            ),
            rec(
                3,
                json!({"type": "request.created", "request": "r_2", "user": "dave",
                       "target": "pg", "role": "read", "reason": "INC-8"}),
            ),
            rec(
                4,
                json!({"type": "request.denied", "request": "r_2", "user": "dave",
                       "denied_by": "dave"}),
            ),
        ];
        let now = time("2026-11-29T12:00:00Z").expect("time");
        let mut review = Review::new(None);
        for r in &recs {
            review.add(r);
        }
        let report = review.finish(now);
        let json = serde_json::to_value(&report).expect("json");
        assert_eq!(json["denied_requests"][0]["status"], "denied");
        assert_eq!(json["denied_requests"][0]["withdrawn"], false);
        assert_eq!(
            json["denied_requests"][0]["decision_reason"],
            "not on call\n- fake"
        );
        assert_eq!(json["denied_requests"][1]["status"], "denied");
        assert_eq!(json["denied_requests"][1]["withdrawn"], true);
        let md = markdown(&report);
        assert!(
            md.contains(
                "- `r_1` `dave` on `pg` (`read`) `INC-7` denied by `bob`: `not on call\\n- fake`\n"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "- `r_2` `dave` on `pg` (`read`) `INC-8` denied by `dave` (withdrawn by the requester)\n"
            ),
            "{md}"
        );
    }
}
