//! What the CLI prints of text others chose, and the exit codes it gives, through the real
//! `portcullis` binary against a real `serve` (and, for the offline readers, a log written
//! by the real recorder): a reason a requester wrote reaches the approver's tables inert,
//! and what the command line got wrong is a usage error (exit 2), SPEC §3.

mod cli_support;

use cli_support::{BIN, body, cli, cli_as, fails, json, ok, portcullis, text, write_log};
use portcullis_gateway::testbed::GatewayProc;
use portcullis_recorder::Event;

/// Clears the screen, homes the cursor, retitles the window, forges table rows, and reverses
/// what follows: everything a requester could try with a reason.
const FORGED: &str = "\u{1b}[2J\u{1b}[H\u{1b}]0;owned\u{7} fake: APPROVED\n| fake | row |\r\t\u{7f}\u{9b}31m\u{202e}gnp";

/// Characters a terminal acts on, other than the newline ending each line.
fn acting(printed: &str) -> Vec<char> {
    printed
        .chars()
        .filter(|c| {
            (c.is_control() && *c != '\n')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .collect()
}

/// A reason alice wrote reaches bob's `request list` and, once approved, the operator's
/// `grant list` with no control character or override left in it, on the one line of its
/// row; `--json` still carries it exactly.
#[test]
fn a_requesters_reason_reaches_the_approvers_tables_inert() {
    let gw = GatewayProc::start(BIN, &body(None)).expect("gateway starts");
    let created = json(cli_as(
        &gw,
        "alice",
        &[
            "request", "create", "--target", "pg-prod", "--role", "read", "--for", "10m",
            "--reason", FORGED, "--json",
        ],
    ));
    let rid = created["id"].as_str().expect("id").to_owned();
    assert_eq!(created["reason"], FORGED);

    let check = |printed: String, what: &str| {
        assert!(acting(&printed).is_empty(), "{what}: {printed:?}");
        assert_eq!(
            printed.lines().count(),
            2,
            "{what}: one header, one row: {printed}"
        );
        assert!(
            printed.contains(r"\u{1b}[2J\u{1b}[H\u{1b}]0;owned\u{7} fake: APPROVED\u{a}| fake | row |\u{d}\u{9}\u{7f}\u{9b}31m\u{202e}gnp"),
            "{what}: {printed}"
        );
    };
    check(ok(cli_as(&gw, "bob", &["request", "list"])), "request list");
    let listed = json(cli_as(&gw, "bob", &["request", "list", "--json"]));
    assert_eq!(listed[0]["reason"], FORGED);

    ok(cli_as(&gw, "bob", &["request", "approve", &rid]));
    check(ok(cli(&gw, &["grant", "list"])), "grant list");
    check(
        ok(cli_as(&gw, "alice", &["grant", "list"])),
        "alice's grant list",
    );
    let grants = json(cli(&gw, &["grant", "list", "--json"]));
    assert_eq!(grants[0]["reason"], FORGED);
}

/// What the command line got wrong, and the API refused as invalid (400), exits 2; an
/// operation refused or failed (self-approval, no such grant) still exits 1. `replay ''`
/// is a usage error too.
#[test]
fn invalid_input_the_api_refuses_is_a_usage_error() {
    let gw = GatewayProc::start(BIN, &body(None)).expect("gateway starts");
    let add = |user: &str, target: &str, role: &str, dur: &str| {
        cli(
            &gw,
            &[
                "grant", "add", "--user", user, "--target", target, "--role", role, "--for", dur,
            ],
        )
    };
    let err = fails(add("alice", "pg-nope", "read", "10m"), 2);
    assert!(err.contains("unknown target pg-nope"), "{err}");
    let err = fails(add("mallory", "pg-prod", "read", "10m"), 2);
    assert!(err.contains("unknown user mallory"), "{err}");
    let err = fails(add("alice", "pg-prod", "admin", "10m"), 2);
    assert!(err.contains("has no role admin"), "{err}");
    let ask = |reason: &str, dur: &str| {
        cli_as(
            &gw,
            "alice",
            &[
                "request", "create", "--target", "pg-prod", "--role", "read", "--for", dur,
                "--reason", reason,
            ],
        )
    };
    let err = fails(ask("", "10m"), 2);
    assert!(err.contains("needs a --reason"), "{err}");
    let err = fails(ask("INC-1", "1ns"), 2);
    assert!(err.contains("whole number of seconds"), "{err}");
    // The operator's token acts for nobody: a request needs a user.
    let err = fails(
        cli(
            &gw,
            &[
                "request", "create", "--target", "pg-prod", "--role", "read", "--for", "10m",
                "--reason", "INC-1",
            ],
        ),
        2,
    );
    assert!(err.contains("--as USER"), "{err}");

    // Refusals and missing objects are failed operations, as before.
    let rid = json(cli_as(
        &gw,
        "alice",
        &[
            "request", "create", "--target", "pg-prod", "--role", "read", "--for", "10m",
            "--reason", "INC-2", "--json",
        ],
    ))["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let err = fails(cli_as(&gw, "alice", &["request", "approve", &rid]), 1);
    assert!(err.contains("your own request"), "{err}");
    let err = fails(cli(&gw, &["grant", "revoke", "g_nope"]), 1);
    assert!(err.contains("g_nope"), "{err}");
    fails(cli(&gw, &["grant", "list", "--token", "wrong"]), 1);

    // An empty session id is refused as the admin commands refuse an empty id.
    let out = portcullis(&["replay", "", "--data-dir", "/nonexistent"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("session id cannot be empty"), "{err}");
}

/// `audit search` refuses a `--type` no record could have (listing those it takes) and a
/// window that ends before it starts, instead of printing nothing with success.
#[test]
fn audit_search_refuses_what_could_match_nothing() {
    let d = tempfile::tempdir().expect("tempdir");
    write_log(
        d.path(),
        vec![
            Event::new("grant.created")
                .with("grant", "g_1")
                .with("user", "alice"),
            Event::new("pg.query")
                .with("session", "s_1")
                .with("sql", "select 1"),
        ],
    );
    let dd = d.path().to_str().expect("utf-8");

    for bad in ["pg.qurey", "ssh*", "GRANT.CREATED"] {
        let out = portcullis(&["audit", "search", "--data-dir", dd, "--type", bad]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--type {bad}: {err}");
        assert!(
            err.contains("unknown event type") && err.contains("pg.query") && err.contains("grant"),
            "--type {bad}: {err}"
        );
        assert!(out.stdout.is_empty());
    }
    let err = text(
        &portcullis(&[
            "audit",
            "search",
            "--data-dir",
            dd,
            "--type",
            "GRANT.CREATED",
        ])
        .stderr,
    );
    assert!(err.contains("lower-case: grant.created"), "{err}");
    for good in ["pg.query", "grant", "grant.*"] {
        let out = portcullis(&["audit", "search", "--data-dir", dd, "--type", good]);
        assert!(out.status.success(), "--type {good}: {}", text(&out.stderr));
        assert_eq!(text(&out.stdout).lines().count(), 1, "--type {good}");
    }

    let window = |since: &str, until: &str| {
        portcullis(&[
            "audit",
            "search",
            "--data-dir",
            dd,
            "--since",
            since,
            "--until",
            until,
        ])
    };
    let out = window("1m", "5m");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--since") && err.contains("after --until"),
        "{err}"
    );
    let out = window("5m", "0s");
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);
}
