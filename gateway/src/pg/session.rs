//! One client session from login to close: SCRAM, the grant check, the upstream login, the
//! relay `select!`-ed against the lease, and the kill path.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use portcullis_config::{PgTlsMode, TargetKind};
use portcullis_protocol::login::parse_pg_database;
use portcullis_protocol::pg::{
    encode_authentication_ok, encode_backend_key_data, encode_error_response,
    encode_notice_response, encode_ready_for_query, encode_terminate,
};
use portcullis_recorder::AuditLog;
use tokio::io::AsyncWriteExt as _;
use tokio::sync::mpsc;

use super::PgShared;
use super::audit::Tracker;
use super::auth::{audit_auth_failed, password_login, send_fatal, sqlstate};
use super::cancel::{CancelTarget, send_cancel};
use super::event::Common;
use super::gate::Gated;
use super::listener::{Started, negotiation, pg_false};
use super::relay::{
    Ask, Control, Ctx, RelayEnd, client_to_upstream, upstream_to_client, went_away,
};
use super::upstream::{self, UpstreamError};
use crate::grants::{CloseReason, Denied, LeaseEvent, Proto, SessionInfo};

/// How long the kill path waits for the FATAL to reach the client before dropping both
/// connections anyway (SPEC §6: closed within 1 s).
const KILL_GRACE: Duration = Duration::from_millis(500);
/// How long a killed session waits for the upstream backend to exit after Terminate and
/// CancelRequest before terminating it through a new connection (SPEC §6: gone within 1 s).
const BACKEND_EXIT_WAIT: Duration = Duration::from_millis(400);
/// How long after the client is closed the CancelRequest goes upstream (see `stop_backend`).
const CANCEL_DELAY: Duration = Duration::from_millis(50);
/// How long, once the relay has ended, a last write to a peer (the client's FATAL, the
/// upstream's Terminate) may wait for the peer to take it. A peer that is not reading must
/// not hold the session, and through it the backend and its locks, past its grant: nothing
/// watches the lease any more.
const LAST_WRITE_WAIT: Duration = Duration::from_millis(200);
/// How long the rest of a refused (too long) statement is read and dropped, so that the
/// client reads why it was refused.
const REFUSED_DRAIN: Duration = Duration::from_secs(5);

fn param(params: &[(Vec<u8>, Vec<u8>)], name: &str) -> Option<String> {
    params
        .iter()
        .find(|(k, _)| k == name.as_bytes())
        .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
}

/// The startup parameters the client set upstream, as `session.started` shows them; none
/// (no field) when the client set none. The startup packet's own size limit bounds them.
fn startup_params(params: &[(Vec<u8>, Vec<u8>)]) -> Option<BTreeMap<String, String>> {
    let m: BTreeMap<String, String> = upstream::forwarded(params)
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect();
    (!m.is_empty()).then_some(m)
}

/// Is this read or write error a peer closing its side without the protocol's goodbye
/// (TCP reset, broken pipe, or a TLS stream cut short of its close_notify)?
fn kill_message(reason: CloseReason, grant: &str, target: &str, killer: &str) -> String {
    match reason {
        CloseReason::GrantExpired => {
            format!("portcullis: grant {grant} on {target} expired; session closed")
        }
        CloseReason::GrantRevoked => {
            format!("portcullis: grant {grant} on {target} was revoked; session closed")
        }
        CloseReason::ConfigRevoked => format!(
            "portcullis: grant {grant} on {target} was revoked: the reloaded config no longer has its user, target or role; session closed"
        ),
        CloseReason::Killed => {
            format!("portcullis: session killed by {killer} (grant {grant} on {target})")
        }
        CloseReason::Shutdown => {
            format!("portcullis: the gateway is shutting down (grant {grant} on {target})")
        }
        CloseReason::AuditFailed => format!(
            "portcullis: the audit log is unavailable; session closed (grant {grant} on {target})"
        ),
        other => format!(
            "portcullis: session closed ({}) (grant {grant} on {target})",
            other.as_str()
        ),
    }
}

/// Runs a session to its end; every outcome is logged and audited here.
///
/// `logging_in` is the connection's place among its client's connections logging in,
/// given back once the password is judged.
pub(crate) async fn run(
    shared: Arc<PgShared>,
    started: Started,
    peer: SocketAddr,
    logging_in: super::logging_in::Slot,
) {
    let Started {
        mut io,
        params,
        minor,
        unknown_options,
        tls,
    } = started;
    let gw = shared.gw.clone();
    let client = peer.to_string();
    let span = tracing::Span::current();

    let Some(user) = param(&params, "user") else {
        send_fatal(
            &mut io,
            sqlstate::INVALID_AUTHORIZATION,
            "no PostgreSQL user name specified in startup packet",
        )
        .await;
        return;
    };
    span.record("user", user.as_str());
    if param(&params, "replication").is_some_and(|v| !pg_false(&v)) {
        send_fatal(
            &mut io,
            sqlstate::FEATURE_NOT_SUPPORTED,
            "replication connections are not supported through portcullis",
        )
        .await;
        return;
    }
    let dbname = param(&params, "database").unwrap_or_else(|| user.clone());
    if let Some(out) = negotiation(minor, &unknown_options)
        && io.write_all(&out).await.is_err()
    {
        return;
    }

    if !password_login(&gw, &mut io, &user, peer, logging_in).await {
        return;
    }

    // A user whose password was right and who is refused all the same is recorded, as SSH
    // records its refusals: a user probing targets they hold no grant on shows in the log.
    let refused = async |target: Option<&str>, why: &str| {
        audit_auth_failed(&gw, &user, target, &client, why).await;
    };
    let db = match parse_pg_database(&dbname) {
        Ok(db) => db,
        Err(e) => {
            let why = e.to_string();
            refused(Some(&dbname), &why).await;
            send_fatal(&mut io, sqlstate::INVALID_CATALOG_NAME, &why).await;
            return;
        }
    };
    span.record("target", db.target.as_str());
    let target = match gw.config().target(&db.target) {
        Some(t) if t.kind == TargetKind::Postgres => t.clone(),
        Some(t) => {
            let msg = format!(
                "target {} is an SSH target; connect to it with ssh -p <port> {user}+{}@<gateway>",
                t.name, t.name
            );
            refused(Some(&db.target), &msg).await;
            send_fatal(&mut io, sqlstate::INVALID_CATALOG_NAME, &msg).await;
            return;
        }
        None => {
            let msg = Denied::UnknownTarget {
                target: db.target.clone(),
            }
            .to_string();
            refused(Some(&db.target), &msg).await;
            send_fatal(&mut io, sqlstate::INVALID_CATALOG_NAME, &msg).await;
            return;
        }
    };
    if !gw.audit.healthy() {
        send_fatal(
            &mut io,
            sqlstate::SYSTEM_ERROR,
            "portcullis: the audit log is unavailable, so new sessions are refused",
        )
        .await;
        return;
    }
    let info = SessionInfo {
        proto: Proto::Postgres,
        client: peer,
    };
    let mut lease = match gw
        .grants
        .authorize(&user, &db.target, db.role.as_deref(), info)
    {
        Ok(l) => l,
        Err(denied) => {
            tracing::info!(reason = %denied, "postgres session refused");
            let code = match denied {
                Denied::UnknownTarget { .. } => sqlstate::INVALID_CATALOG_NAME,
                _ => sqlstate::INVALID_AUTHORIZATION,
            };
            let why = denied.to_string();
            refused(Some(&db.target), &why).await;
            send_fatal(&mut io, code, &why).await;
            return;
        }
    };
    span.record("session", lease.session_id().as_str());
    let common = Common {
        session: lease.session_id(),
        user: user.clone(),
        target: target.name.clone(),
        role: lease.role().to_owned(),
        grant: lease.grant_id().to_owned(),
        client: client.clone(),
    };
    let audit = &gw.audit;
    // The log's own mode, not the config's: a reloaded config does not reopen the log.
    let strict = audit.durability() == portcullis_recorder::Durability::Strict;
    let started_at = Instant::now();
    submit(
        audit,
        common
            .event("auth.succeeded")
            .with("method", "scram-sha-256"),
    )
    .await;
    // Before the upstream login, as SSH does: every `session.ended` has its
    // `session.started`, and a login the upstream refuses ends the session with reason
    // `error` and the upstream's own message as `error`.
    submit(
        audit,
        common
            .event("session.started")
            .with("tls", tls)
            .with("database", target.database.as_deref())
            .with("upstream_tls", target.tls != PgTlsMode::Disable)
            .with("startup", startup_params(&params)),
    )
    .await;

    let Some(role) = target.roles.get(lease.role()).cloned() else {
        send_fatal(
            &mut io,
            sqlstate::INVALID_AUTHORIZATION,
            &format!(
                "role {} is not configured on target {}",
                lease.role(),
                target.name
            ),
        )
        .await;
        end_session(
            audit,
            &common,
            "error",
            &lease,
            started_at,
            0,
            Some("role not configured"),
        )
        .await;
        return;
    };

    let up = match upstream::connect(&target, &role, &params).await {
        Ok(up) => up,
        Err(e) => {
            tracing::warn!(error = %e, "upstream login failed");
            let code = match &e {
                // The upstream's own SQLSTATE, so that drivers and pools can act on it
                // (53300 too many connections, 57P03 starting up, 3D000 no such database),
                // except class 28: a failed login there is about the gateway's credential
                // for the role, and 28P01 would tell the client its own password was wrong.
                UpstreamError::Refused { code, .. }
                    if !code.starts_with("28")
                        && code.len() == 5
                        && code.bytes().all(|b| b.is_ascii_alphanumeric()) =>
                {
                    code.as_str()
                }
                UpstreamError::Refused { .. }
                | UpstreamError::NoPassword
                | UpstreamError::Scram(_)
                | UpstreamError::UnsupportedAuth(_) => sqlstate::REJECTED_CONNECTION,
                _ => sqlstate::UNABLE_TO_CONNECT,
            };
            let msg = format!(
                "portcullis: cannot open a session on {} as role {}: upstream {e}",
                target.name,
                lease.role()
            );
            // A refused credential is the operator's to mend, and the upstream's words
            // about it name the account the gateway logs in as (`password authentication
            // failed for user "app"`): the user is told so without them; the log keeps them.
            let told = match &e {
                UpstreamError::Refused { code, .. } if code.starts_with("28") => format!(
                    "portcullis: cannot open a session on {} as role {}: the server refused \
                     the gateway's credentials for the role (SQLSTATE {code}); tell an operator",
                    target.name,
                    lease.role()
                ),
                _ => msg.clone(),
            };
            send_fatal(&mut io, code, &told).await;
            end_session(audit, &common, "error", &lease, started_at, 0, Some(&msg)).await;
            return;
        }
    };

    let cancel_target = CancelTarget {
        target: target.clone(),
        pid: up.pid,
        secret: up.secret.clone(),
    };
    let (gw_pid, gw_secret, _cancel_guard) = shared.cancels.register(cancel_target.clone());
    let mut out = Vec::with_capacity(512);
    encode_authentication_ok(&mut out);
    out.extend_from_slice(&up.parameter_status);
    encode_backend_key_data(&mut out, gw_pid, &gw_secret);
    encode_ready_for_query(&mut out, b'I');
    if io.write_all(&out).await.is_err() || io.flush().await.is_err() {
        end_session(audit, &common, "client_closed", &lease, started_at, 0, None).await;
        return;
    }
    tracing::info!(upstream_pid = up.pid, "postgres session started");

    // The relay, select!-ed against the lease: the deadline is watched while bytes flow.
    let tracker = Mutex::new(Tracker::new(&common, strict));
    let (control_tx, mut control_rx) = mpsc::channel::<Control>(4);
    let (ask_tx, mut ask_rx) = mpsc::channel(1);
    let (mut crd, mut cwr) = tokio::io::split(io);
    let (mut urd, mut uwr) = tokio::io::split(up.io);
    let counters = lease.counters();
    let live = lease.probe();
    let ctx = Ctx::new(
        &tracker,
        audit,
        &counters,
        &ask_tx,
        &live,
        &shared.large_statements,
    );
    let mut closing: Option<CloseReason> = None;
    // `killer` says who killed the session, for a kill (`Lease::killer`).
    let begin_kill = |reason: CloseReason,
                      closing: &mut Option<CloseReason>,
                      why: Option<&str>,
                      killer: &str| {
        if closing.is_some() {
            return;
        }
        *closing = Some(reason);
        tracing::info!(reason = reason.as_str(), "closing postgres session");
        let mut fatal = Vec::new();
        match why {
            Some(why) => encode_error_response(&mut fatal, "FATAL", sqlstate::SYSTEM_ERROR, why),
            None => {
                let msg = kill_message(reason, &common.grant, &common.target, killer);
                let code = match reason {
                    CloseReason::AuditFailed => sqlstate::SYSTEM_ERROR,
                    _ => sqlstate::ADMIN_SHUTDOWN,
                };
                encode_error_response(&mut fatal, "FATAL", code, &msg);
            }
        }
        // The upstream is stopped right after the client is closed (below), so the client's
        // close does not wait behind the cancel connection or compete with it for the CPU.
        let _ = control_tx.try_send(Control::Kill(fatal, reason));
    };
    let end = {
        // Each branch is gated (see `gate.rs`): a wakeup polls only the branch it was for,
        // not both directions, the ask channel and the lease's signal and timers every time.
        let c2u = client_to_upstream(&mut crd, &mut uwr, &ctx);
        let u2c = upstream_to_client(&mut urd, &mut cwr, &mut control_rx, &ctx);
        tokio::pin!(c2u, u2c);
        let mut c2u = Gated::new(c2u);
        let mut u2c = Gated::new(u2c);
        let grace = tokio::time::sleep(Duration::from_secs(3600));
        tokio::pin!(grace);
        // The client is done (see `relay.rs`): the session lasts until the upstream has
        // answered what it was sent and closed, as the backend itself does.
        let mut client_done = false;
        loop {
            // Biased: no random start per poll; a branch that is not woken costs nothing,
            // so the relay going first delays no other branch.
            tokio::select! {
                biased;
                end = &mut c2u, if !client_done => match end {
                    RelayEnd::ClientDone => client_done = true,
                    end => break end,
                },
                end = &mut u2c => break match end {
                    RelayEnd::UpstreamClosed if client_done => RelayEnd::ClientClosed,
                    end => end,
                },
                Some(ask) = Gated::new(Box::pin(ask_rx.recv())) => match ask {
                    Ask::GrantLapsed => {
                        if let Some(reason) = lease.lapsed() {
                            begin_kill(reason, &mut closing, None, lease.killer());
                            grace.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
                        }
                    }
                    Ask::AuditFailed(e) => {
                        tracing::error!(error = %e, "audit log refused a statement; closing the session");
                        let why = format!(
                            "portcullis: the audit log is unavailable ({e}), so the statement was not run; session closed"
                        );
                        begin_kill(CloseReason::AuditFailed, &mut closing, Some(&why), "");
                        grace.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
                    }
                },
                ev = Gated::new(Box::pin(lease.next_event())), if closing.is_none() => match ev {
                    LeaseEvent::Warn { remaining } => {
                        let mut notice = Vec::new();
                        let hint = crate::grants::RequestHint::new(
                            &gw.config(),
                            &common.user,
                            &common.target,
                            Some(&common.role),
                        );
                        let msg = crate::grants::warning(&common.grant, &hint, remaining);
                        encode_notice_response(&mut notice, "WARNING", "01000", &msg);
                        let _ = control_tx.try_send(Control::Notice(notice));
                    }
                    LeaseEvent::Close(reason) => {
                        begin_kill(reason, &mut closing, None, lease.killer());
                        grace.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
                    }
                },
                () = &mut grace, if closing.is_some() => {
                    // The client is not reading; close without the FATAL.
                    break RelayEnd::Killed(closing.unwrap_or(CloseReason::Error));
                }
            }
        }
    };

    let reason = match &end {
        RelayEnd::ClientClosed | RelayEnd::ClientDone => CloseReason::ClientClosed,
        RelayEnd::UpstreamClosed => CloseReason::UpstreamClosed,
        RelayEnd::Killed(r) => *r,
        RelayEnd::ClientProtocol(e) => {
            tracing::info!(error = %e, "client protocol error");
            CloseReason::Error
        }
        RelayEnd::StatementTooLarge { len, .. } => {
            tracing::warn!(len, "statement too large to audit whole; refused");
            CloseReason::Error
        }
        RelayEnd::UpstreamProtocol(e) => {
            tracing::warn!(error = %e, "upstream protocol error");
            CloseReason::Error
        }
        // A peer that went away without saying goodbye (a killed psql, a TLS client gone
        // without close_notify, a reset) closed its side; it is not a gateway error.
        RelayEnd::ClientIo(e) if went_away(e) => {
            tracing::info!(error = %e, "client went away");
            CloseReason::ClientClosed
        }
        RelayEnd::UpstreamIo(e) if went_away(e) => {
            tracing::info!(error = %e, "upstream went away");
            CloseReason::UpstreamClosed
        }
        RelayEnd::ClientIo(e) | RelayEnd::UpstreamIo(e) => {
            tracing::info!(error = %e, "connection error");
            CloseReason::Error
        }
    };
    // A protocol error from the client is reported to it, as PostgreSQL would, and so is a
    // statement refused as too long to log whole.
    let fatal = match &end {
        RelayEnd::ClientProtocol(e) => Some((sqlstate::PROTOCOL_VIOLATION, e.to_string())),
        RelayEnd::StatementTooLarge { len, .. } => Some((
            sqlstate::PROGRAM_LIMIT_EXCEEDED,
            format!(
                "portcullis: a statement of {len} bytes was refused and not run: statements \
                 of at most {} MiB are allowed, so that each is logged whole",
                super::relay::STATEMENT_LIMIT >> 20
            ),
        )),
        _ => None,
    };
    if let Some((code, message)) = fatal {
        let mut fatal = Vec::new();
        encode_error_response(&mut fatal, "FATAL", code, &message);
        let _ = tokio::time::timeout(LAST_WRITE_WAIT, cwr.write_all(&fatal)).await;
    }
    if let RelayEnd::StatementTooLarge { unread, .. } = end {
        // The client is still sending the refused statement and takes in the FATAL only
        // once it is done. Ending our side before that would make libpq report a lost
        // connection instead (an end of stream it reads while still sending wins over the
        // FATAL it holds unparsed), and closing with its bytes unread would reset the
        // connection: so the rest of the statement is read and dropped first.
        let _ = tokio::time::timeout(LAST_WRITE_WAIT, cwr.flush()).await;
        let _ = tokio::time::timeout(REFUSED_DRAIN, drain(&mut crd, unread)).await;
    }
    // The client's side closes first: FATAL (sent by the relay) and then FIN, at once.
    let _ = tokio::time::timeout(Duration::from_millis(200), cwr.shutdown()).await;
    if matches!(end, RelayEnd::StatementTooLarge { .. }) {
        // Whatever it sent behind the statement (a Sync), until it hangs up.
        let _ = tokio::time::timeout(Duration::from_millis(500), drain(&mut crd, usize::MAX)).await;
    }
    drop((crd, cwr));
    let stop_upstream = closing.is_some()
        || reason == CloseReason::ClientClosed
        || matches!(
            end,
            RelayEnd::ClientProtocol(_) | RelayEnd::StatementTooLarge { .. }
        );
    // A backend whose input is full takes nothing more: it is blocked writing answers the
    // relay no longer reads (a client pipelined more than it read, then went away, stopped
    // reading or was killed).
    let upstream_stuck = stop_upstream && {
        let mut t = Vec::new();
        encode_terminate(&mut t);
        tokio::time::timeout(LAST_WRITE_WAIT, uwr.write_all(&t))
            .await
            .is_err()
    };
    if upstream_stuck {
        // Neither the Terminate nor a cancel reaches it, and reading its answers would let
        // it go on running what it was sent: it is terminated from outside.
        terminate_backend(&target, &role, cancel_target.pid).await;
    } else if closing.is_some() {
        stop_backend(&target, &role, &cancel_target, &mut urd).await;
    }
    let _ = tokio::time::timeout(Duration::from_millis(200), uwr.shutdown()).await;
    drop((urd, uwr));

    let mut events = Vec::new();
    let queries = tracker.lock().map_or(0, |mut t| {
        let mut finished = Vec::new();
        t.drain(reason.as_str(), &mut finished);
        events.extend(finished.iter().map(|f| t.payload(f)));
        t.queries
    });
    for ev in events {
        submit(audit, ev).await;
    }
    tracing::info!(reason = reason.as_str(), queries, "postgres session ended");
    end_session(
        audit,
        &common,
        reason.as_str(),
        &lease,
        started_at,
        queries,
        None,
    )
    .await;
}

/// Stops the upstream backend after a kill: the Terminate is already sent; a CancelRequest
/// interrupts a running query so the backend reads it and exits, which shows as the end of
/// its connection. Only if that does not come soon is the backend terminated through a
/// fresh login (`pg_terminate_backend`), which costs the upstream a full authentication.
async fn stop_backend(
    target: &portcullis_config::Target,
    role: &portcullis_config::Role,
    cancel: &CancelTarget,
    urd: &mut (impl tokio::io::AsyncRead + Unpin),
) {
    let pid = cancel.pid;
    let cancel = cancel.clone();
    tokio::spawn(async move {
        // A revoke closes every session of the grant at once; letting the clients' own
        // teardown run first keeps the burst of cancel connections (each one a process the
        // upstream forks) from delaying the closes the users see. The backend is still
        // stopped well within the second SPEC §6 allows.
        tokio::time::sleep(CANCEL_DELAY).await;
        if let Err(e) = send_cancel(&cancel).await {
            tracing::warn!(error = %e, "cancel request to upstream failed");
        }
    });
    // Discard whatever the backend still sends (rows, COPY data) until it closes.
    let closed = tokio::time::timeout(BACKEND_EXIT_WAIT, drain(urd, usize::MAX))
        .await
        .is_ok();
    if closed {
        return;
    }
    terminate_backend(target, role, pid).await;
}

/// Terminates the upstream backend `pid` through a fresh login (`pg_terminate_backend`).
async fn terminate_backend(
    target: &portcullis_config::Target,
    role: &portcullis_config::Role,
    pid: i32,
) {
    match tokio::time::timeout(
        Duration::from_secs(10),
        upstream::terminate_backend(target, role, pid),
    )
    .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "terminating the upstream backend failed"),
        Err(_) => tracing::warn!("terminating the upstream backend timed out"),
    }
}

/// Reads and drops up to `n` bytes from a peer, or until it closes.
///
/// # Cancellation safety
/// Cancellation safe: nothing but dropped bytes is lost.
async fn drain(rd: &mut (impl tokio::io::AsyncRead + Unpin), mut n: usize) {
    use tokio::io::AsyncReadExt as _;
    let mut sink = vec![0u8; 64 * 1024];
    while n > 0 {
        let want = n.min(sink.len());
        match rd.read(sink.get_mut(..want).unwrap_or_default()).await {
            Ok(0) | Err(_) => return,
            Ok(got) => n -= got,
        }
    }
}

/// Queues a session event; the log writes a session's events in the order queued.
async fn submit(audit: &AuditLog, ev: impl Into<portcullis_recorder::Payload>) {
    if let Err(e) = audit.submit(ev).await {
        tracing::error!(error = %e, "audit submit failed");
    }
}

/// Appends `session.ended` and waits for it, and so for every event queued before it.
#[allow(clippy::too_many_arguments)]
async fn end_session(
    audit: &AuditLog,
    common: &Common,
    reason: &str,
    lease: &crate::grants::Lease,
    started_at: Instant,
    queries: u64,
    error: Option<&str>,
) {
    let c = lease.counters();
    let ev = common
        .event("session.ended")
        .with("reason", reason)
        .with(
            "bytes_in",
            c.bytes_in.load(std::sync::atomic::Ordering::Relaxed),
        )
        .with(
            "bytes_out",
            c.bytes_out.load(std::sync::atomic::Ordering::Relaxed),
        )
        .with("duration_ms", started_at.elapsed().as_millis() as u64)
        .with("queries", queries)
        .with("error", error);
    let ev = match lease.kill_note() {
        Some(k) => ev.with("killed_by", &k.by).with("kill_reason", &k.reason),
        None => ev,
    };
    if let Err(e) = audit.append(ev).await {
        tracing::error!(error = %e, "audit append failed");
    }
}
