//! Grants, JIT requests, sessions and webhooks through the real `portcullis` CLI against a
//! real `portcullis serve`.

mod cli_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::time::Duration;

use cli_support::{BIN, body, cli, cli_as, fails, json, ok};
use portcullis_gateway::testbed::GatewayProc;
use serde_json::Value;

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x["id"].as_str().expect("id").to_owned())
        .collect()
}

fn ts(v: &Value) -> chrono::DateTime<chrono::Utc> {
    v.as_str().expect("timestamp").parse().expect("rfc 3339")
}

#[test]
fn operator_adds_lists_extends_and_revokes() {
    let gw = GatewayProc::start(BIN, &body(None)).expect("gateway starts");
    let id = ok(cli(
        &gw,
        &[
            "grant",
            "add",
            "--user",
            "alice",
            "--target",
            "pg-prod",
            "--role",
            "read",
            "--for",
            "30m",
            "--reason",
            "fix the index",
        ],
    ));
    let id = id.trim().to_owned();
    assert!(id.starts_with("g_"), "{id}");

    let list = json(cli(&gw, &["grant", "list", "--json"]));
    assert_eq!(ids(&list), vec![id.clone()]);
    let g = &list[0];
    for key in [
        "id",
        "user",
        "target",
        "role",
        "status",
        "created_at",
        "expires_at",
        "reason",
        "created_by",
        "approved_by",
        "request_id",
        "revoked_at",
        "revoked_by",
    ] {
        assert!(g.get(key).is_some(), "grant JSON lacks {key}: {g}");
    }
    assert_eq!(g["status"], "live");
    assert_eq!(g["created_by"], "admin");
    assert_eq!(
        (ts(&g["expires_at"]) - ts(&g["created_at"])).num_seconds(),
        1800
    );
    let table = ok(cli(&gw, &["grant", "list", "--target", "pg-prod"]));
    assert!(table.starts_with("ID") && table.contains(&id), "{table}");
    assert!(
        json(cli(&gw, &["grant", "list", "--user", "bob", "--json"]))
            .as_array()
            .expect("array")
            .is_empty()
    );

    let ext = json(cli(&gw, &["grant", "extend", &id, "--by", "10m", "--json"]));
    assert_eq!(
        (ts(&ext["expires_at"]) - ts(&g["expires_at"])).num_seconds(),
        600
    );
    let err = fails(cli(&gw, &["grant", "extend", &id, "--by", "1h"]), 1);
    assert!(err.contains("maximum grant of 1h on pg-prod"), "{err}");
    let err = fails(
        cli(
            &gw,
            &[
                "grant", "add", "--user", "alice", "--target", "pg-prod", "--role", "read",
                "--for", "2h",
            ],
        ),
        1,
    );
    assert!(
        err.contains("exceeds the maximum grant of 1h on pg-prod"),
        "{err}"
    );
    let err = fails(
        cli(
            &gw,
            &[
                "grant", "add", "--user", "alice", "--target", "pg-prod", "--for", "10m",
            ],
        ),
        2,
    );
    assert!(err.contains("several roles"), "{err}");
    fails(
        cli(
            &gw,
            &[
                "grant", "add", "--user", "alice", "--target", "pg-prod", "--for", "soon",
            ],
        ),
        2,
    );
    let err = fails(cli(&gw, &["grant", "list", "--token", "wrong"]), 1);
    assert!(err.contains("authentication failed"), "{err}");

    ok(cli(&gw, &["grant", "revoke", &id, "--reason", "done"]));
    assert!(
        json(cli(&gw, &["grant", "list", "--json"]))
            .as_array()
            .expect("array")
            .is_empty()
    );
    let all = json(cli(&gw, &["grant", "list", "--all", "--json"]));
    assert_eq!(all[0]["status"], "revoked");
    assert_eq!(all[0]["revoked_by"], "admin");
    let err = fails(cli(&gw, &["grant", "revoke", &id]), 1);
    assert!(err.contains("already revoked"), "{err}");

    assert_eq!(
        json(cli(&gw, &["sessions", "list", "--json"])),
        serde_json::json!([])
    );
    let err = fails(cli(&gw, &["sessions", "kill", "s_nope"]), 1);
    assert!(err.contains("no session s_nope"), "{err}");
}

/// A duration too long for a timestamp (`--by 300000y`) is refused with a sentence; it used to
/// panic the API's handler, so the CLI saw only "connection closed before message completed".
#[test]
fn an_absurd_duration_is_refused_with_a_sentence() {
    let gw = GatewayProc::start(BIN, &body(None)).expect("gateway starts");
    let id = ok(cli(
        &gw,
        &[
            "grant", "add", "--user", "alice", "--target", "pg-prod", "--role", "read", "--for",
            "30m",
        ],
    ));
    let id = id.trim();
    for by in ["300000y", "18446744073709551615s"] {
        let err = fails(cli(&gw, &["grant", "extend", id, "--by", by]), 2);
        assert!(
            err.contains(&format!("by \"{by}\" is too long")),
            "--by {by}: {err}"
        );
        let err = fails(
            cli(
                &gw,
                &[
                    "grant", "add", "--user", "alice", "--target", "pg-prod", "--role", "read",
                    "--for", by,
                ],
            ),
            2,
        );
        assert!(
            err.contains(&format!("duration \"{by}\" is too long")),
            "--for {by}: {err}"
        );
    }
    let err = fails(
        cli(
            &gw,
            &[
                "request", "create", "--user", "alice", "--target", "pg-prod", "--role", "read",
                "--for", "300000y", "--reason", "r",
            ],
        ),
        2,
    );
    assert!(err.contains("duration \"300000y\" is too long"), "{err}");
    // The policy still speaks for what a timestamp can hold.
    let err = fails(cli(&gw, &["grant", "extend", id, "--by", "100y"]), 1);
    assert!(err.contains("maximum grant of 1h on pg-prod"), "{err}");
    let ext = json(cli(&gw, &["grant", "extend", id, "--by", "10m", "--json"]));
    assert_eq!(ext["id"], id);
}

/// `report` lists the grants made at their target's ceiling from what the gateway itself
/// logged: it read the ceiling from a `max_secs` that `grant.created` never carried, so the
/// section was always "None" (its test fed it hand-made events).
#[test]
fn report_names_the_grants_made_at_their_maximum() {
    let gw = GatewayProc::start(BIN, &body(None)).expect("gateway starts");
    let add = |dur: &str| {
        let out = ok(cli(
            &gw,
            &[
                "grant", "add", "--user", "alice", "--target", "pg-prod", "--role", "read",
                "--for", dur,
            ],
        ));
        out.trim().to_owned()
    };
    let at_max = add("1h");
    let short = add("30m");
    let r = json(cli(&gw, &["report", "--json"]));
    assert_eq!(r["grants_at_max"], serde_json::json!([at_max]), "{r:#}");
    assert_eq!(r["grants"].as_array().map(Vec::len), Some(2), "{r:#}");
    let review = ok(cli(&gw, &["report"]));
    let section = review
        .split("## Grants at their maximum duration")
        .nth(1)
        .and_then(|rest| rest.split("##").next())
        .unwrap_or_default();
    assert!(
        section.contains(&at_max) && !section.contains(&short),
        "{review}"
    );
}

/// One HTTP/1.1 exchange with the admin API as the operator: the status code and the body.
fn api_raw(
    gw: &GatewayProc,
    method: &str,
    path: &str,
    body: Option<(&str, &str)>,
) -> (u16, String) {
    let mut c = std::net::TcpStream::connect(gw.bound.admin).expect("connect");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\nConnection: close\r\n",
        gw.admin_token
    );
    let (kind, text) = body.unwrap_or_default();
    if !kind.is_empty() {
        req += &format!("Content-Type: {kind}\r\n");
    }
    req += &format!("Content-Length: {}\r\n\r\n{text}", text.len());
    c.write_all(req.as_bytes()).expect("send");
    let mut answer = String::new();
    c.read_to_string(&mut answer).expect("answer");
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    let body = answer
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (status, body)
}

/// A malformed request gets the API's documented answer, a 400 with `{"error": ...}`, like
/// every other refusal; axum's own plain-text rejections (and their 415/422) leaked through.
#[test]
fn malformed_api_requests_get_a_json_error() {
    let gw = GatewayProc::start(BIN, &body(None)).expect("gateway starts");
    let json_type = "application/json";
    // Method, path, body (content type and text), the status wanted and what it says.
    type Case<'a> = (&'a str, &'a str, Option<(&'a str, &'a str)>, u16, &'a str);
    let cases: [Case; 7] = [
        ("POST", "/v1/grants", Some((json_type, "{")), 400, "JSON"),
        (
            "POST",
            "/v1/grants",
            Some(("text/plain", "{}")),
            400,
            "Content-Type",
        ),
        (
            "POST",
            "/v1/grants",
            Some((json_type, r#"{"user":"alice"}"#)),
            400,
            "missing field",
        ),
        (
            "POST",
            "/v1/grants/g_x/extend",
            Some((json_type, r#"{"by":5}"#)),
            400,
            "by",
        ),
        ("GET", "/v1/grants?all=maybe", None, 400, "all"),
        ("DELETE", "/v1/grants", None, 405, "method not allowed"),
        ("GET", "/v1/nothing", None, 404, "no such API path"),
    ];
    for (method, path, body, want, says) in cases {
        let (status, text) = api_raw(&gw, method, path, body);
        let v: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {status} {text:?}"));
        assert_eq!(status, want, "{method} {path}: {text}");
        let error = v["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{method} {path}: {text}");
    }
    // A well-formed request still works.
    let (status, text) = api_raw(&gw, "GET", "/v1/grants", None);
    assert_eq!(status, 200, "{text}");
}

/// A reason is refused over 1024 bytes wherever one is taken, with a sentence naming the
/// limit, and nothing changes; a request body is read up to 64 KiB and no further. A 1.5 MB
/// reason used to be stored, logged and sent to webhooks whole.
#[test]
fn long_reasons_and_large_bodies_are_refused_with_a_sentence() {
    let gw = GatewayProc::start(BIN, &body(None)).expect("gateway starts");
    let long = "x".repeat(1025);
    let says = "reason is too long: 1025 bytes, at most 1024 bytes";
    let add = |reason: &str| {
        cli(
            &gw,
            &[
                "grant", "add", "--user", "alice", "--target", "pg-prod", "--role", "read",
                "--for", "30m", "--reason", reason,
            ],
        )
    };
    let ask = |reason: &str| {
        cli_as(
            &gw,
            "alice",
            &[
                "request", "create", "--target", "pg-prod", "--role", "read", "--for", "30m",
                "--reason", reason, "--json",
            ],
        )
    };
    let err = fails(add(&long), 2);
    assert!(err.contains(says), "grant add: {err}");
    let err = fails(ask(&long), 2);
    assert!(err.contains(says), "request create: {err}");
    let gid = ok(add(&"x".repeat(1024))).trim().to_owned();
    let rid = json(ask("incident 7"))["id"]
        .as_str()
        .expect("id")
        .to_owned();
    for (who, args) in [
        (None, ["grant", "revoke", gid.as_str(), "--reason", &long]),
        (
            Some("bob"),
            ["request", "deny", rid.as_str(), "--reason", &long],
        ),
        (None, ["sessions", "kill", "s_nope", "--reason", &long]),
    ] {
        let o = match who {
            Some(user) => cli_as(&gw, user, &args),
            None => cli(&gw, &args),
        };
        let err = fails(o, 2);
        assert!(err.contains(says), "{args:?}: {err}");
    }
    let grants = json(cli(&gw, &["grant", "list", "--all", "--json"]));
    assert_eq!(ids(&grants), vec![gid.clone()]);
    assert_eq!(grants[0]["status"], "live");
    let pending = json(cli(&gw, &["request", "list", "--pending", "--json"]));
    assert_eq!(ids(&pending), vec![rid]);

    // A 1.5 MB body is answered once 64 KiB of it have been read: the client sends only a
    // little more than that, and a gateway still waiting for the rest fails the read timeout.
    let mut c = std::net::TcpStream::connect(gw.bound.admin).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let declared = 1_500_000;
    let head = format!(
        "POST /v1/grants HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {declared}\r\n\
         Connection: close\r\n\r\n\
         {{\"user\":\"alice\",\"target\":\"pg-prod\",\"role\":\"read\",\"duration\":\"30m\",\
         \"reason\":\"",
        gw.admin_token
    );
    let mut sent = head.into_bytes();
    sent.resize(sent.len() + 80 * 1024, b'x');
    // The gateway may answer and close before it has read all of this; that is fine.
    let _ = c.write_all(&sent);
    let mut answer = vec![];
    let mut buf = [0u8; 4096];
    // Read up to EOF, or up to a reset once the answer is in (the gateway closed with some
    // of the body unread); a timeout leaves `answer` empty and fails below.
    while let Ok(n) = c.read(&mut buf)
        && n > 0
    {
        answer.extend_from_slice(&buf[..n]);
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413 "), "{answer:?}");
    let text = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    assert_eq!(
        v["error"], "request body is too large: at most 64 KiB",
        "{v}"
    );
    let grants = json(cli(&gw, &["grant", "list", "--all", "--json"]));
    assert_eq!(ids(&grants), vec![gid]);
}

/// Failed admin API logins are limited to five a minute per address even when they arrive
/// at once: the limiter used to be consulted before any of them had failed, so a burst of
/// concurrent guesses all got their password checked (47 of 60 in one try).
#[test]
fn a_burst_of_concurrent_bad_logins_is_limited_like_a_sequence() {
    let gw = GatewayProc::start(BIN, &body(None)).expect("gateway starts");
    let admin = gw.bound.admin;
    // Every request is written before any answer is read, so they are all in flight.
    let mut conns: Vec<std::net::TcpStream> = (0..40)
        .map(|_| std::net::TcpStream::connect(admin).expect("connect"))
        .collect();
    for c in &mut conns {
        // `bob:wrong`, base64.
        c.write_all(
            b"GET /v1/grants HTTP/1.1\r\nHost: gw\r\nAuthorization: Basic Ym9iOndyb25n\r\n\
              Connection: close\r\n\r\n",
        )
        .expect("send");
    }
    let statuses: Vec<String> = conns
        .into_iter()
        .map(|mut c| {
            let mut answer = String::new();
            c.read_to_string(&mut answer).expect("answer");
            answer.lines().next().unwrap_or_default().to_owned()
        })
        .collect();
    let checked = statuses.iter().filter(|s| s.contains(" 401 ")).count();
    let limited = statuses.iter().filter(|s| s.contains(" 429 ")).count();
    assert_eq!((checked, limited), (5, 35), "{statuses:?}");
    // The address stays blocked, even for the right password.
    let err = fails(cli_as(&gw, "bob", &["grant", "list"]), 1);
    assert!(
        err.contains("too many failed authentication attempts"),
        "{err}"
    );
    // But not for the operator's token: guessing users' passwords from a shared address
    // must not lock the operator out of the CLI. A wrong token is still turned away.
    ok(cli(&gw, &["grant", "list"]));
    let err = fails(
        gw.cli()
            .env("PORTCULLIS_TOKEN", "0".repeat(64))
            .args(["grant", "list"])
            .output()
            .expect("runs"),
        1,
    );
    assert!(
        err.contains("too many failed authentication attempts"),
        "{err}"
    );
    // The five guesses that were checked are in the audit log; the refused ones are not.
    let found = ok(cli(
        &gw,
        &["audit", "search", "--type", "auth.failed", "--json"],
    ));
    let failed: Vec<Value> = found
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON record a line"))
        .collect();
    assert_eq!(failed.len(), 5, "{found}");
    for f in &failed {
        assert_eq!(f["event"]["proto"], "admin", "{f}");
        assert_eq!(f["event"]["user"], "bob", "{f}");
        assert_eq!(
            f["event"]["reason"], "wrong password or unknown user",
            "{f}"
        );
        assert!(
            f["event"]["client"]
                .as_str()
                .is_some_and(|c| c.starts_with("127.0.0.1:")),
            "{f}"
        );
    }
}

/// An empty id (`grant revoke ""`) is a usage error that says so, before any API call; it
/// used to reach the API and print "no grant " with nothing after it.
#[test]
fn an_empty_id_is_a_usage_error_naming_what_is_missing() {
    for (args, kind, list) in [
        (&["grant", "revoke", ""][..], "grant", "grant list"),
        (
            &["grant", "revoke", "  ", "--reason", "r"],
            "grant",
            "grant list",
        ),
        (
            &["grant", "extend", "", "--by", "1m"],
            "grant",
            "grant list",
        ),
        (&["request", "approve", ""], "request", "request list"),
        (&["request", "deny", ""], "request", "request list"),
        (&["sessions", "kill", ""], "session", "sessions list"),
    ] {
        let o = std::process::Command::new(BIN)
            .args(args)
            .env("PORTCULLIS_TOKEN", "unused")
            .output()
            .expect("portcullis runs");
        let err = fails(o, 2);
        assert!(
            err.contains(&format!(
                "a {kind} id cannot be empty; `portcullis {list}` shows the ids"
            )),
            "{args:?}: {err}"
        );
    }
}

/// A webhook receiver on 127.0.0.1:0: every POSTed JSON body goes to the channel.
fn webhook() -> (String, mpsc::Receiver<Value>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", l.local_addr().expect("addr"));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(conn) = conn else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().expect("clone");
                let mut r = BufReader::new(conn);
                loop {
                    let mut len = 0usize;
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let line = line.trim_end();
                        if line.is_empty() {
                            break;
                        }
                        if let Some((k, v)) = line.split_once(':')
                            && k.eq_ignore_ascii_case("content-length")
                        {
                            len = v.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut buf = vec![0; len];
                    if r.read_exact(&mut buf).is_err() {
                        return;
                    }
                    let _ = w.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                    if let Ok(v) = serde_json::from_slice(&buf) {
                        let _ = tx.send(v);
                    }
                }
            });
        }
    });
    (url, rx)
}

/// Waits for a webhook event of `kind`; the deadline only bounds a hung test.
fn expect_event(rx: &mpsc::Receiver<Value>, seen: &mut Vec<Value>, kind: &str) -> Value {
    if let Some(v) = seen.iter().find(|v| v["type"] == kind) {
        return v.clone();
    }
    loop {
        let v = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no {kind} webhook; got {seen:?}"));
        seen.push(v.clone());
        if v["type"] == kind {
            return v;
        }
    }
}

/// Waits for a webhook event matching `want`, keeping everything received in `seen`.
fn wait_event(rx: &mpsc::Receiver<Value>, seen: &mut Vec<Value>, want: impl Fn(&Value) -> bool) {
    while !seen.iter().any(&want) {
        let v = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no matching webhook; got {seen:?}"));
        seen.push(v);
    }
}

#[test]
fn alice_requests_bob_approves_and_it_all_survives_a_restart() {
    let (url, hooks) = webhook();
    let mut seen = vec![];
    let mut gw = GatewayProc::start(BIN, &body(Some(&url))).expect("gateway starts");

    let req = json(cli_as(
        &gw,
        "alice",
        &[
            "request",
            "create",
            "--target",
            "pg-prod",
            "--role",
            "read",
            "--for",
            "20m",
            "--reason",
            "incident 7",
            "--json",
        ],
    ));
    for key in [
        "id",
        "user",
        "target",
        "role",
        "duration_secs",
        "reason",
        "status",
        "created_at",
        "decided_by",
        "grant_id",
    ] {
        assert!(req.get(key).is_some(), "request JSON lacks {key}: {req}");
    }
    assert_eq!(req["user"], "alice");
    assert_eq!(req["status"], "pending");
    assert_eq!(req["duration_secs"], 1200);
    let rid = req["id"].as_str().expect("id").to_owned();
    assert_eq!(
        expect_event(&hooks, &mut seen, "request.created")["request"],
        rid.as_str()
    );

    let err = fails(cli_as(&gw, "alice", &["request", "approve", &rid]), 1);
    assert!(err.contains("cannot approve your own request"), "{err}");
    let err = fails(cli_as(&gw, "carol", &["request", "approve", &rid]), 1);
    assert!(
        err.contains("carol is not an approver for pg-prod"),
        "{err}"
    );
    assert_eq!(
        ids(&json(cli_as(
            &gw,
            "bob",
            &["request", "list", "--pending", "--json"]
        ))),
        vec![rid.clone()]
    );

    // SPEC §3: approve prints the created object, the grant, with its request inside.
    let grant = json(cli_as(&gw, "bob", &["request", "approve", &rid, "--json"]));
    let approved = &grant["request"];
    assert_eq!(approved["status"], "approved");
    assert_eq!(approved["decided_by"], "bob");
    assert_eq!(grant["status"], "live");
    assert_eq!(grant["user"], "alice");
    assert_eq!(grant["approved_by"], "bob");
    assert_eq!(grant["request_id"], rid.as_str());
    assert!(grant["id"].as_str().is_some_and(|id| id.starts_with("g_")));
    assert_eq!(approved["grant_id"], grant["id"]);
    let gid = grant["id"].as_str().expect("id").to_owned();
    expect_event(&hooks, &mut seen, "request.approved");
    assert_eq!(
        expect_event(&hooks, &mut seen, "grant.created")["grant"],
        gid.as_str()
    );

    // Alice sees her live grant; she cannot add one herself.
    assert_eq!(
        ids(&json(cli_as(&gw, "alice", &["grant", "list", "--json"]))),
        vec![gid.clone()]
    );
    fails(
        cli_as(
            &gw,
            "alice",
            &[
                "grant", "add", "--user", "alice", "--target", "pg-prod", "--role", "write",
                "--for", "5m",
            ],
        ),
        1,
    );

    // Deny, and a request over the target's ceiling.
    let second = json(cli_as(
        &gw,
        "alice",
        &[
            "request",
            "create",
            "--target",
            "pg-prod",
            "--role",
            "write",
            "--for",
            "10m",
            "--reason",
            "migration",
            "--json",
        ],
    ));
    let sid = second["id"].as_str().expect("id").to_owned();
    let denied = json(cli_as(
        &gw,
        "bob",
        &["request", "deny", &sid, "--reason", "not today", "--json"],
    ));
    assert_eq!(denied["status"], "denied");
    expect_event(&hooks, &mut seen, "request.denied");
    let err = fails(
        cli_as(
            &gw,
            "alice",
            &[
                "request", "create", "--target", "pg-prod", "--role", "write", "--for", "2h",
                "--reason", "long one",
            ],
        ),
        1,
    );
    assert!(err.contains("maximum grant of 1h"), "{err}");
    fails(
        cli_as(
            &gw,
            "alice",
            &["request", "create", "--target", "pg-prod", "--for", "10m"],
        ),
        2,
    );

    // A pending one to carry over the restart, and a revoke for the webhook.
    let third = json(cli_as(
        &gw,
        "alice",
        &[
            "request",
            "create",
            "--target",
            "pg-prod",
            "--role",
            "write",
            "--for",
            "10m",
            "--reason",
            "after restart",
            "--json",
        ],
    ));
    let tid = third["id"].as_str().expect("id").to_owned();
    let extra = ok(cli(
        &gw,
        &[
            "grant", "add", "--user", "carol", "--target", "pg-prod", "--role", "read", "--for",
            "5m",
        ],
    ));
    // Longer access to production is news for whoever watches the hook.
    ok(cli(&gw, &["grant", "extend", extra.trim(), "--by", "1m"]));
    assert_eq!(
        expect_event(&hooks, &mut seen, "grant.extended")["grant"],
        extra.trim()
    );
    ok(cli(&gw, &["grant", "revoke", extra.trim()]));
    assert_eq!(
        expect_event(&hooks, &mut seen, "grant.revoked")["grant"],
        extra.trim()
    );

    // A grant shorter than warn_before warns at once, then expires.
    let brief = ok(cli(
        &gw,
        &[
            "grant", "add", "--user", "carol", "--target", "pg-prod", "--role", "read", "--for",
            "2s",
        ],
    ));
    assert_eq!(
        expect_event(&hooks, &mut seen, "grant.expiring")["grant"],
        brief.trim()
    );
    assert_eq!(
        expect_event(&hooks, &mut seen, "grant.expired")["grant"],
        brief.trim()
    );

    // Inside its warning window at the restart: warned once, before it, and not again.
    let warned = ok(cli(
        &gw,
        &[
            "grant", "add", "--user", "carol", "--target", "pg-prod", "--role", "read", "--for",
            "50s",
        ],
    ));
    let warned = warned.trim();
    let is_warning = |v: &Value| v["type"] == "grant.expiring" && v["grant"] == warned;
    wait_event(&hooks, &mut seen, is_warning);

    gw.restart().expect("gateway restarts");
    let live = json(cli(&gw, &["grant", "list", "--json"]));
    let mut want = vec![gid.clone(), warned.to_owned()];
    want.sort();
    let mut got = ids(&live);
    got.sort();
    assert_eq!(got, want);
    assert!(
        live.as_array()
            .expect("array")
            .iter()
            .all(|g| g["status"] == "live")
    );
    assert_eq!(
        ids(&json(cli(&gw, &["request", "list", "--pending", "--json"]))),
        vec![tid.clone()]
    );
    let all = json(cli(&gw, &["request", "list", "--json"]));
    assert_eq!(all.as_array().expect("array").len(), 3);
    let approved_again = json(cli_as(&gw, "bob", &["request", "approve", &tid, "--json"]));
    assert_eq!(approved_again["role"], "write");
    // Webhooks are delivered in order, and the restarted scheduler fired the due warning
    // before this approval: a re-sent grant.expiring would be in `seen` by now.
    wait_event(&hooks, &mut seen, |v| {
        v["type"] == "request.approved" && v["request"] == tid.as_str()
    });
    assert_eq!(seen.iter().filter(|v| is_warning(v)).count(), 1, "{seen:?}");

    // Five wrong passwords from this address, then even the right one is turned away.
    for _ in 0..5 {
        let o = gw
            .cli()
            .args(["--as", "bob", "request", "list"])
            .env("PORTCULLIS_PASSWORD", "wrong")
            .output()
            .expect("runs");
        let err = fails(o, 1);
        assert!(err.contains("authentication failed"), "{err}");
    }
    let err = fails(cli_as(&gw, "bob", &["request", "list"]), 1);
    assert!(
        err.contains("too many failed authentication attempts"),
        "{err}"
    );
}

/// Polls the CLI's `sessions list` until `done` holds; the deadline only bounds a hung test.
fn sessions_until(gw: &GatewayProc, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = json(cli(gw, &["sessions", "list", "--json"]));
        let list = v.as_array().expect("array").clone();
        if done(&list) {
            return list;
        }
        assert!(std::time::Instant::now() < deadline, "sessions: {list:?}");
    }
}

#[test]
fn sessions_kill_from_the_cli_closes_a_real_psql_session() {
    let pg = portcullis_gateway::testbed::Postgres::start().expect("postgres starts");
    pg.create_role("app_ro", "ro-pw").expect("role");
    let (url, hooks) = webhook();
    let mut seen = vec![];
    let config = body(Some(&url))
        .replace("127.0.0.1:1", &format!("127.0.0.1:{}", pg.port))
        .replace("database = \"app\"", "database = \"postgres\"")
        .replace("password = \"x\"", "password = \"ro-pw\"")
        .replace("user = \"app_rw\"", "user = \"app_ro\"");
    let gw = GatewayProc::start(BIN, &config).expect("gateway starts");
    let gid = ok(cli(
        &gw,
        &[
            "grant", "add", "--user", "alice", "--target", "pg-prod", "--role", "read", "--for",
            "30m",
        ],
    ));
    let psql = portcullis_gateway::testbed::postgres::psql(
        gw.bound.postgres.port(),
        "alice",
        "alice-pw",
        "pg-prod+read",
    )
    .args(["-c", "select pg_sleep(600)"])
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped())
    .spawn()
    .expect("psql runs");

    let list = sessions_until(&gw, |l| l.len() == 1);
    let s = &list[0];
    for key in [
        "id",
        "proto",
        "user",
        "target",
        "role",
        "grant_id",
        "client",
        "started_at",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(s.get(key).is_some(), "session JSON lacks {key}: {s}");
    }
    assert_eq!(s["proto"], "postgres");
    assert_eq!(s["user"], "alice");
    assert_eq!(s["role"], "read");
    assert_eq!(s["grant_id"], gid.trim());
    let sid = s["id"].as_str().expect("id").to_owned();
    let table = ok(cli(&gw, &["sessions", "list"]));
    assert!(table.contains(&sid), "{table}");

    let out = ok(cli(&gw, &["sessions", "kill", &sid, "--reason", "test"]));
    assert_eq!(out.trim(), format!("killed {sid}"));
    let done = psql.wait_with_output().expect("psql ends");
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(!done.status.success(), "psql must fail: {err}");
    assert!(err.contains("killed"), "{err}");
    sessions_until(&gw, |l| l.is_empty());
    let killed = expect_event(&hooks, &mut seen, "session.killed");
    assert_eq!(killed["session"], sid.as_str());
    assert_eq!(killed["user"], "alice");
    assert_eq!(killed["killed_by"], "admin");
    assert_eq!(killed["kill_reason"], "test");
    // Who killed the session, and why, is in the audit log, not only in the gateway's log.
    let found = ok(cli(
        &gw,
        &[
            "audit",
            "search",
            "--session",
            &sid,
            "--type",
            "session.ended",
            "--json",
        ],
    ));
    let ended: Value = serde_json::from_str(found.trim()).expect("one JSON record");
    assert_eq!(ended["event"]["reason"], "killed", "{ended}");
    assert_eq!(ended["event"]["killed_by"], "admin", "{ended}");
    assert_eq!(ended["event"]["kill_reason"], "test", "{ended}");
    let human = ok(cli(&gw, &["audit", "search", "--session", &sid]));
    assert!(
        human.contains("killed_by=\"admin\"") && human.contains("kill_reason=\"test\""),
        "{human}"
    );
    // The grant itself is untouched by a session kill.
    assert_eq!(
        ids(&json(cli(&gw, &["grant", "list", "--json"]))),
        vec![gid.trim().to_owned()]
    );
}
