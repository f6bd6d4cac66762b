//! `grant`, `request` and `sessions`: clients of the admin API.
//!
//! Each command resolves the API's address (`--api`, else the configured admin listener, else
//! the bound address in `<data_dir>/listen.json` when configured with port 0) and credentials
//! (`--as USER` with a password, else `--token`/`PORTCULLIS_TOKEN`, else
//! `<data_dir>/admin.token`), makes one HTTP call and prints a table or, with `--json`, the
//! object or array the API returned (SPEC §3 shapes).

use std::io::{BufRead, Write};

use base64::Engine;
use serde_json::{Value, json};

use super::{CmdResult, Failure, Global, inert};

/// Accepts humantime durations (`90s`, `15m`, `2h`, `1d`); a bad one is a usage error.
fn duration(s: &str) -> Result<String, String> {
    match humantime::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(s.to_owned()),
        Ok(_) => Err("a duration must be longer than 0s".into()),
        Err(e) => Err(format!("{e} (use e.g. 90s, 15m, 2h, 1d)")),
    }
}

/// An id argument: an empty or blank one is a usage error naming the kind and where ids
/// are listed, rather than an API call that answers "no grant " with nothing after it.
pub(crate) fn id_of(kind: &str, list: &str, s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err(format!(
            "a {kind} id cannot be empty; `portcullis {list}` shows the ids"
        ))
    } else {
        Ok(s.to_owned())
    }
}

fn grant_id(s: &str) -> Result<String, String> {
    id_of("grant", "grant list", s)
}

fn request_id(s: &str) -> Result<String, String> {
    id_of("request", "request list", s)
}

fn session_id(s: &str) -> Result<String, String> {
    id_of("session", "sessions list", s)
}

#[derive(Debug, clap::Subcommand)]
pub enum GrantCmd {
    /// Create a grant, print its id
    Add {
        #[arg(long)]
        user: String,
        #[arg(long)]
        target: String,
        /// Role on the target (optional when the target has one role)
        #[arg(long)]
        role: Option<String>,
        /// How long, e.g. 15m, 2h
        #[arg(long = "for", value_name = "DUR", value_parser = duration)]
        duration: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Live grants (--all: also expired and revoked)
    List {
        #[arg(long)]
        user: Option<String>,
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Revoke now; live sessions close
    Revoke {
        #[arg(value_parser = grant_id)]
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Move expiry later (policy max applies); live sessions are re-armed
    Extend {
        #[arg(value_parser = grant_id)]
        id: String,
        #[arg(long, value_name = "DUR", value_parser = duration)]
        by: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum RequestCmd {
    /// A user asks for access
    Create {
        #[arg(long)]
        target: String,
        #[arg(long)]
        role: Option<String>,
        #[arg(long = "for", value_name = "DUR", value_parser = duration)]
        duration: String,
        /// Why you need access (required)
        #[arg(long)]
        reason: String,
        /// Ask on behalf of this user (operator only)
        #[arg(long)]
        user: Option<String>,
    },
    /// Requests you may see (--pending: only those awaiting a decision)
    List {
        #[arg(long)]
        pending: bool,
    },
    /// Approve a request; its grant starts now
    Approve {
        #[arg(value_parser = request_id)]
        id: String,
    },
    /// Deny a request (or withdraw your own)
    Deny {
        #[arg(value_parser = request_id)]
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum SessionsCmd {
    /// Live sessions
    List,
    /// Close one session now
    Kill {
        #[arg(value_parser = session_id)]
        id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

pub fn run_grant(cmd: GrantCmd, g: &Global) -> CmdResult {
    let api = Api::resolve(g)?;
    match cmd {
        GrantCmd::Add {
            user,
            target,
            role,
            duration,
            reason,
        } => {
            let body = json!({"user": user, "target": target, "role": role,
                "duration": duration, "reason": reason});
            let v = api.call("POST", "/v1/grants", Some(body))?;
            print_or(g, &v, || outln!("{}", s(&v, "id")))
        }
        GrantCmd::List { user, target, all } => {
            let mut q = vec![];
            if let Some(u) = user {
                q.push(format!("user={}", urlenc(&u)));
            }
            if let Some(t) = target {
                q.push(format!("target={}", urlenc(&t)));
            }
            if all {
                q.push("all=true".into());
            }
            let v = api.call("GET", &format!("/v1/grants?{}", q.join("&")), None)?;
            print_or(g, &v, || out!("{}", grant_table(&v)))
        }
        GrantCmd::Revoke { id, reason } => {
            let v = api.call(
                "POST",
                &format!("/v1/grants/{}/revoke", urlenc(&id)),
                Some(json!({ "reason": reason })),
            )?;
            print_or(g, &v, || outln!("revoked {}", s(&v, "id")))
        }
        GrantCmd::Extend { id, by } => {
            let v = api.call(
                "POST",
                &format!("/v1/grants/{}/extend", urlenc(&id)),
                Some(json!({ "by": by })),
            )?;
            print_or(g, &v, || {
                outln!("extended {} until {}", s(&v, "id"), s(&v, "expires_at"))
            })
        }
    }
}

pub fn run_request(cmd: RequestCmd, g: &Global) -> CmdResult {
    let api = Api::resolve(g)?;
    match cmd {
        RequestCmd::Create {
            target,
            role,
            duration,
            reason,
            user,
        } => {
            let body = json!({"user": user, "target": target, "role": role,
                "duration": duration, "reason": reason});
            let v = api.call("POST", "/v1/requests", Some(body))?;
            print_or(g, &v, || outln!("{}", s(&v, "id")))
        }
        RequestCmd::List { pending } => {
            let path = if pending {
                "/v1/requests?pending=true"
            } else {
                "/v1/requests"
            };
            let v = api.call("GET", path, None)?;
            print_or(g, &v, || out!("{}", request_table(&v)))
        }
        RequestCmd::Approve { id } => {
            let v = api.call(
                "POST",
                &format!("/v1/requests/{}/approve", urlenc(&id)),
                None,
            )?;
            // SPEC §3: `--json` prints the created object, the grant; the request it
            // decided rides along under `request` (fields may be added, none removed).
            let created = match v.clone() {
                Value::Object(mut request) => match request.remove("grant") {
                    Some(Value::Object(mut grant)) => {
                        grant.insert("request".into(), Value::Object(request));
                        Value::Object(grant)
                    }
                    _ => Value::Object(request),
                },
                other => other,
            };
            print_or(g, &created, || {
                let gr = &v["grant"];
                outln!(
                    "approved {}: grant {} for {} on {} ({}) until {}",
                    s(&v, "id"),
                    s(gr, "id"),
                    s(gr, "user"),
                    s(gr, "target"),
                    s(gr, "role"),
                    s(gr, "expires_at")
                )
            })
        }
        RequestCmd::Deny { id, reason } => {
            let v = api.call(
                "POST",
                &format!("/v1/requests/{}/deny", urlenc(&id)),
                Some(json!({ "reason": reason })),
            )?;
            print_or(g, &v, || outln!("denied {}", s(&v, "id")))
        }
    }
}

pub fn run_sessions(cmd: SessionsCmd, g: &Global) -> CmdResult {
    let api = Api::resolve(g)?;
    match cmd {
        SessionsCmd::List => {
            let v = api.call("GET", "/v1/sessions", None)?;
            print_or(g, &v, || out!("{}", session_table(&v)))
        }
        SessionsCmd::Kill { id, reason } => {
            let v = api.call(
                "POST",
                &format!("/v1/sessions/{}/kill", urlenc(&id)),
                Some(json!({ "reason": reason })),
            )?;
            print_or(g, &v, || outln!("killed {}", s(&v, "id")))
        }
    }
}

/// Prints `v` as JSON with `--json`, else runs `human`.
fn print_or(g: &Global, v: &Value, human: impl FnOnce()) -> CmdResult {
    if g.json {
        outln!("{}", serde_json::to_string_pretty(v)?);
    } else {
        human();
    }
    Ok(())
}

/// A string field for a terminal, or `-` when absent or null. Reasons are the requester's
/// (or an operator's) to write and become the grant's reason, so every field is made inert
/// (`inert::line`): no control character or bidi override in it reaches the terminal.
fn s(v: &Value, key: &str) -> String {
    match &v[key] {
        Value::Null => "-".into(),
        Value::String(x) => inert::line(x),
        other => inert::line(&other.to_string()),
    }
}

/// RFC 3339 shortened to seconds for tables.
fn when(v: &Value, key: &str) -> String {
    match v[key].as_str() {
        Some(t) => chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| {
                t.with_timezone(&chrono::Utc)
                    .format("%Y-%m-%dT%H:%M:%SZ")
                    .to_string()
            })
            .unwrap_or_else(|_| inert::line(t)),
        None => "-".into(),
    }
}

/// A table, one row a line. Every cell is made inert whatever built it, so none can break
/// its row, add rows of its own or drive the terminal.
fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let rows: Vec<Vec<String>> = rows
        .into_iter()
        .map(|r| r.iter().map(|c| inert::line(c)).collect())
        .collect();
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &[String]| {
        let start = out.len();
        for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        let end = out[start..].trim_end().len();
        out.truncate(start + end);
        out.push('\n');
    };
    line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for r in &rows {
        line(r);
    }
    out
}

fn items(v: &Value) -> &[Value] {
    v.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn grant_table(v: &Value) -> String {
    let rows = items(v)
        .iter()
        .map(|g| {
            vec![
                s(g, "id"),
                s(g, "user"),
                s(g, "target"),
                s(g, "role"),
                s(g, "status"),
                when(g, "expires_at"),
                s(g, "reason"),
            ]
        })
        .collect();
    table(
        &[
            "ID", "USER", "TARGET", "ROLE", "STATUS", "EXPIRES", "REASON",
        ],
        rows,
    )
}

fn request_table(v: &Value) -> String {
    let rows = items(v)
        .iter()
        .map(|r| {
            let secs = r["duration_secs"].as_u64().unwrap_or(0);
            vec![
                s(r, "id"),
                s(r, "user"),
                s(r, "target"),
                s(r, "role"),
                humantime::format_duration(std::time::Duration::from_secs(secs)).to_string(),
                s(r, "status"),
                when(r, "created_at"),
                s(r, "decided_by"),
                s(r, "reason"),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "USER",
            "TARGET",
            "ROLE",
            "FOR",
            "STATUS",
            "CREATED",
            "DECIDED_BY",
            "REASON",
        ],
        rows,
    )
}

fn session_table(v: &Value) -> String {
    let rows = items(v)
        .iter()
        .map(|x| {
            vec![
                s(x, "id"),
                s(x, "proto"),
                s(x, "user"),
                s(x, "target"),
                s(x, "role"),
                s(x, "grant_id"),
                s(x, "client"),
                when(x, "started_at"),
                s(x, "bytes_in"),
                s(x, "bytes_out"),
            ]
        })
        .collect();
    table(
        &[
            "ID", "PROTO", "USER", "TARGET", "ROLE", "GRANT", "CLIENT", "STARTED", "IN", "OUT",
        ],
        rows,
    )
}

/// Percent-encodes a query or path value (ids and names are plain, but be safe).
fn urlenc(x: &str) -> String {
    let mut out = String::new();
    for b in x.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~+".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Where and as whom to call the admin API.
#[derive(Debug)]
struct Api {
    base: String,
    authorization: String,
}

impl Api {
    fn resolve(g: &Global) -> Result<Api, Failure> {
        // The config is only needed for what the flags and environment do not give.
        let mut config = None;
        let mut load = || -> Result<portcullis_config::Config, Failure> {
            if let Some(c) = &config {
                return Ok(Clone::clone(c));
            }
            let c = super::load_config(g)?;
            config = Some(c.clone());
            Ok(c)
        };
        let base = match &g.api {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None => {
                let c = load()?;
                let mut addr = c.listen.admin;
                if addr.port() == 0 {
                    addr = crate::serve::Bound::read(&c.gateway.data_dir)
                        .map(|b| b.admin)
                        .ok_or_else(|| {
                            Failure::failed(format!(
                                "the admin listener is on port 0 and {} names no running gateway; pass --api URL",
                                c.gateway.data_dir.join(crate::serve::LISTEN_FILE).display()
                            ))
                        })?;
                }
                format!("http://{addr}")
            }
        };
        let authorization = if let Some(user) = &g.as_user {
            let password = match std::env::var("PORTCULLIS_PASSWORD") {
                Ok(p) => p,
                Err(_) => prompt(&format!("password for {user}: "))?,
            };
            let pair =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            format!("Basic {pair}")
        } else if let Some(t) = &g.token {
            format!("Bearer {}", t.trim())
        } else {
            let c = load()?;
            let path = c.gateway.data_dir.join("admin.token");
            let t = std::fs::read_to_string(&path).map_err(|e| {
                Failure::usage(format!(
                    "no admin token: pass --token, set PORTCULLIS_TOKEN, or act as a user with --as ({}: {e})",
                    path.display()
                ))
            })?;
            format!("Bearer {}", t.trim())
        };
        Ok(Api {
            base,
            authorization,
        })
    }

    /// One call; a non-2xx answer becomes a failure carrying the API's sentence.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, Failure> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let client = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?;
            let url = format!("{}{path}", self.base);
            let mut req = match method {
                "POST" => client.post(&url),
                _ => client.get(&url),
            }
            .header("authorization", &self.authorization);
            if let Some(b) = body {
                req = req.json(&b);
            } else if method == "POST" {
                req = req.json(&json!({}));
            }
            let resp = req.send().await.map_err(|e| {
                Failure::failed(format!(
                    "cannot reach the admin API at {}: {}",
                    self.base,
                    root_cause(&e)
                ))
            })?;
            let status = resp.status();
            let text = resp.text().await?;
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
            if status.is_success() {
                return Ok(v);
            }
            // The API's sentence may quote what a requester wrote: one inert line.
            let msg = inert::line(
                &v["error"]
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("admin API answered {status}: {}", text.trim())),
            );
            Err(api_failure(status, msg))
        })
    }
}

/// The exit code of an API refusal (SPEC §3). The API answers 400 for what the command
/// line said wrong (an unknown target, user or role, an empty reason, a duration it cannot
/// keep, a reason over its limit) and 413 for a body too large to read, which a reason of
/// megabytes makes: usage errors, exit 2. Every other refusal (401 authentication, 403 a
/// refused operation such as self-approval, 404 no such grant or request, 429, 5xx) is an
/// operation that failed or was refused: exit 1.
fn api_failure(status: reqwest::StatusCode, message: String) -> Failure {
    match status {
        reqwest::StatusCode::BAD_REQUEST | reqwest::StatusCode::PAYLOAD_TOO_LARGE => {
            Failure::usage(message)
        }
        _ => Failure::failed(message),
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Reads a password: from a terminal without echo, else (a pipe) one line as it comes.
fn prompt(text: &str) -> Result<String, Failure> {
    use std::io::IsTerminal as _;
    eprint!("{text}");
    std::io::stderr().flush()?;
    let stdin = std::io::stdin();
    let restore = if stdin.is_terminal() {
        echo_off(&stdin)
    } else {
        None
    };
    if let Some(saved) = &restore {
        restore_on_interrupt(saved.clone());
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(saved) = restore {
        let _ = nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &saved);
        // The Enter the user typed was not echoed either.
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// From now on, Ctrl-C gives the terminal back its settings and exits 130, instead of the
/// default death that would leave the user typing blind. The handler is registered before
/// this returns, so no interrupt slips in between.
fn restore_on_interrupt(saved: nix::sys::termios::Termios) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
    else {
        return;
    };
    let interrupts = {
        let _in_rt = rt.enter();
        signal(SignalKind::interrupt())
    };
    let Ok(mut interrupts) = interrupts else {
        return;
    };
    std::thread::spawn(move || {
        if rt.block_on(interrupts.recv()).is_some() {
            let stdin = std::io::stdin();
            let _ =
                nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &saved);
            eprintln!();
            std::process::exit(130);
        }
    });
}

/// Turns the terminal's echo off; returns the settings to restore, or None if it cannot
/// (then the password is read as before, echoed, rather than not at all).
fn echo_off(stdin: &std::io::Stdin) -> Option<nix::sys::termios::Termios> {
    use nix::sys::termios::{LocalFlags, SetArg, tcgetattr, tcsetattr};
    let saved = tcgetattr(stdin).ok()?;
    let mut quiet = saved.clone();
    quiet.local_flags.remove(LocalFlags::ECHO);
    tcsetattr(stdin, SetArg::TCSAFLUSH, &quiet).ok()?;
    Some(saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a requester may put in a reason, and a client string no gateway gives but a
    /// table must still survive.
    const FORGED: &str = "\u{1b}[2J\u{1b}[H\u{1b}]0;owned\u{7} fake: APPROVED\n| fake | row |\r\t\u{7f}\u{9b}31m\u{202e}";

    /// Every table shows one line per row, and no cell reaches the terminal with a control
    /// character or bidi override in it, whichever field carries it.
    #[test]
    fn tables_show_each_row_on_one_inert_line() {
        let grant = json!([{"id": "g_1", "user": "dave", "target": "pg-prod", "role": "read",
            "status": "live", "expires_at": "2026-11-29T10:00:00Z", "reason": FORGED}]);
        let request = json!([{"id": "r_1", "user": "dave", "target": "pg-prod", "role": "read",
            "duration_secs": 600, "status": "pending", "created_at": FORGED,
            "decided_by": null, "reason": FORGED}]);
        let session = json!([{"id": "s_1", "proto": "ssh", "user": "dave", "target": FORGED,
            "role": "read", "grant_id": "g_1", "client": FORGED,
            "started_at": "2026-11-29T10:00:00Z", "bytes_in": 1, "bytes_out": 2}]);
        for printed in [
            grant_table(&grant),
            request_table(&request),
            session_table(&session),
        ] {
            assert_eq!(printed.lines().count(), 2, "{printed}");
            assert!(
                !printed.chars().any(
                    |c| (c.is_control() && c != '\n') || ('\u{202a}'..='\u{202e}').contains(&c)
                ),
                "{printed:?}"
            );
            assert!(
                printed.contains(
                    r"\u{1b}[2J\u{1b}[H\u{1b}]0;owned\u{7} fake: APPROVED\u{a}| fake | row |"
                ),
                "{printed}"
            );
        }
        // The one-line answers (`approved ...`, a grant's id) read fields the same way.
        assert_eq!(
            s(&json!({"reason": "a\nb\u{1b}"}), "reason"),
            r"a\u{a}b\u{1b}"
        );
        assert_eq!(s(&json!({}), "reason"), "-");
    }

    /// What the command line said wrong is a usage error; a refusal, a missing object or a
    /// gateway failure is not.
    #[test]
    fn api_answers_map_to_spec_exit_codes() {
        use reqwest::StatusCode as S;
        for (status, code) in [
            (S::BAD_REQUEST, 2),
            (S::PAYLOAD_TOO_LARGE, 2),
            (S::UNAUTHORIZED, 1),
            (S::FORBIDDEN, 1),
            (S::NOT_FOUND, 1),
            (S::CONFLICT, 1),
            (S::TOO_MANY_REQUESTS, 1),
            (S::INTERNAL_SERVER_ERROR, 1),
            (S::SERVICE_UNAVAILABLE, 1),
        ] {
            assert_eq!(api_failure(status, "x".into()).code, code, "{status}");
        }
    }
}
