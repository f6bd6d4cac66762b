//! The byte relay between client and upstream, one future per direction.
//!
//! Messages flow unchanged: the relay splits the stream into frames only to find the few
//! the audit needs (and the queries that trigger a grant re-check), decodes those in place
//! from the read buffer and forwards their original bytes; everything else (rows, COPY
//! data) is streamed through in chunks as it arrives, however large the message. Each
//! direction holds at most one read buffer (64 KiB, or up to 1 MiB while a message the audit
//! needs is being assembled; up to 16 MiB for a statement, under a budget all sessions
//! share) and writes before it reads again, so a slow reader back-pressures the writer
//! across the proxy. What one read brings is forwarded with one
//! write (a query's RowDescription, rows, CommandComplete and ReadyForQuery together), not
//! one write per message: on a loaded machine each syscall and wakeup is what a hop costs.
//!
//! A client that is done (Terminate, or end of stream at a message boundary: a half-close,
//! or a psql that was killed) ends only the client-to-upstream direction, as it would
//! end a backend's input: the upstream is sent Terminate, finishes what it was sent, and
//! closes. Until then its answers still go to the client (a half-closed client reads them)
//! or, once the client cannot take them, are dropped, and either way they reach the audit:
//! a statement that ran to completion is logged with its real outcome, not as interrupted.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::{Buf as _, BytesMut};
use portcullis_protocol::pg::{
    BackendMessage, Fields, FrontendMessage, MAX_MESSAGE_LEN, PgError, encode_terminate,
    read_frontend_header, read_header,
};
use portcullis_recorder::AuditLog;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{Semaphore, SemaphorePermit, mpsc};

use super::audit::{Finished, Tracker};
use crate::grants::{CloseReason, Counters, LiveProbe};

/// The read buffer's usual size.
const BUF: usize = 64 * 1024;
/// Largest message assembled whole for the audit in the usual read buffer; longer ones are
/// streamed and audited from their first bytes (a Bind's parameters, an error from the
/// server), except statements (below).
pub(crate) const PARSE_LIMIT: usize = 1024 * 1024;
/// Largest statement (Query, Parse) held whole so that its text is logged whole: a longer
/// one could hide what it does behind padding the log would cut, so it is refused and the
/// session ends (54000 program_limit_exceeded) without any of it going upstream.
pub(crate) const STATEMENT_LIMIT: usize = 16 * 1024 * 1024;
/// Bytes all sessions together may hold of statements longer than [`PARSE_LIMIT`] while
/// they are assembled; a session waits for its share, so a crowd of them cannot take the
/// gateway's memory.
pub(crate) const LARGE_STATEMENT_BUDGET: usize = 128 * 1024 * 1024;

/// How a relay direction ended.
#[derive(Debug)]
pub(crate) enum RelayEnd {
    /// The client closed the connection or sent Terminate.
    ClientClosed,
    /// Client to upstream only: the client is done at a message boundary and the upstream
    /// was sent Terminate; the upstream's remaining answers are still to be relayed.
    ClientDone,
    /// The upstream closed the connection.
    UpstreamClosed,
    /// The kill path's FATAL was delivered to the client.
    Killed(CloseReason),
    /// The client sent a statement longer than [`STATEMENT_LIMIT`]; nothing of it went
    /// upstream and its refusal is in the log.
    StatementTooLarge {
        /// The message body's length.
        len: usize,
        /// Bytes of the message the client has still to send.
        unread: usize,
    },
    /// The client broke the protocol.
    ClientProtocol(PgError),
    /// The upstream broke the protocol.
    UpstreamProtocol(PgError),
    /// Reading from or writing to the client failed.
    ClientIo(std::io::Error),
    /// Reading from or writing to the upstream failed.
    UpstreamIo(std::io::Error),
}

/// Something the session asks the upstream-to-client direction to send at the next message
/// boundary.
#[derive(Debug)]
pub(crate) enum Control {
    /// A NoticeResponse (pre-expiry warning).
    Notice(Vec<u8>),
    /// The FATAL ErrorResponse of the kill path; the direction ends after sending it.
    Kill(Vec<u8>, CloseReason),
}

/// What a relay direction asks of the session task, which owns the lease.
#[derive(Debug)]
pub(crate) enum Ask {
    /// The relay found the grant no longer live (defence in depth before each new
    /// statement and each forward) and stopped forwarding: close now.
    GrantLapsed,
    /// The audit log refused a statement record in strict mode: nothing of the statement
    /// was forwarded, and the session must close with this error.
    AuditFailed(String),
}

/// What both directions share.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub tracker: &'a Mutex<Tracker>,
    pub audit: &'a AuditLog,
    pub counters: &'a Counters,
    pub ask: &'a mpsc::Sender<Ask>,
    pub live: &'a LiveProbe,
    /// The listener's [`LARGE_STATEMENT_BUDGET`], in permits of one byte.
    pub large_statements: &'a Semaphore,
    /// Set once the client is done ([`RelayEnd::ClientDone`]): a failed write to it then
    /// no longer ends the upstream-to-client direction, which drains the upstream instead.
    pub client_done: AtomicBool,
}

/// Did the peer go away (reset, broken pipe, unexpected end) rather than fail?
pub(crate) fn went_away(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        BrokenPipe | ConnectionAborted | ConnectionReset | UnexpectedEof
    )
}

impl<'a> Ctx<'a> {
    pub(crate) fn new(
        tracker: &'a Mutex<Tracker>,
        audit: &'a AuditLog,
        counters: &'a Counters,
        ask: &'a mpsc::Sender<Ask>,
        live: &'a LiveProbe,
        large_statements: &'a Semaphore,
    ) -> Self {
        Ctx {
            tracker,
            audit,
            counters,
            ask,
            live,
            large_statements,
            client_done: AtomicBool::new(false),
        }
    }

    fn with_tracker<T>(&self, f: impl FnOnce(&mut Tracker) -> T) -> Option<T> {
        self.tracker.lock().ok().map(|mut t| f(&mut t))
    }

    /// Defence in depth: is the grant still live? If not, tells the session task, which
    /// closes the session through the kill path; the caller must forward nothing more.
    async fn grant_is_live(&self) -> bool {
        if self.live.is_live() {
            return true;
        }
        let _ = self.ask.send(Ask::GrantLapsed).await;
        false
    }

    /// Builds finished statements' events and queues them; the log writes them in order
    /// without the relay waiting for the disk. Called once their answer went on.
    async fn emit(&self, finished: &mut Vec<Finished>) {
        for f in finished.drain(..) {
            let Some(ev) = self.with_tracker(|t| t.payload(&f)) else {
                continue;
            };
            if let Err(e) = self.audit.submit(ev).await {
                tracing::error!(error = %e, "audit submit failed");
            }
        }
    }
}

fn frontend_needs(tag: u8) -> bool {
    matches!(
        tag,
        b'Q' | b'P' | b'B' | b'E' | b'C' | b'S' | b'X' | b'F' | b'D' | b'c' | b'f'
    )
}

fn backend_needs(tag: u8) -> bool {
    matches!(
        tag,
        b'C' | b'E' | b'Z' | b'I' | b's' | b'G' | b'H' | b'W' | b't' | b'1' | b'2' | b'3'
    )
}

fn make_room(buf: &mut BytesMut, want: usize) {
    if buf.capacity() < want {
        buf.reserve(want - buf.len());
    } else if buf.capacity() - buf.len() < 4096 {
        buf.reserve(BUF);
    }
}

/// Writes the frames gathered at the front of `buf` in one write and drops them from it,
/// whether or not they reached the peer: a caller that goes on after a failure (dropping
/// the answers of a client that is done) must not see them again. The write can succeed
/// and its flush fail (TLS holds what the socket did not take yet).
async fn forward<W: AsyncWrite + Unpin + ?Sized>(
    wr: &mut W,
    buf: &mut BytesMut,
    n: usize,
) -> std::io::Result<()> {
    if n == 0 {
        return Ok(());
    }
    let written = wr.write_all(buf.get(..n).unwrap_or_default()).await;
    buf.advance(n);
    written?;
    wr.flush().await
}

/// Client to upstream. Never returns [`RelayEnd::Killed`]; when the grant re-check fails
/// or (strict durability) the audit log refuses a statement, it stops forwarding and waits
/// for the session's kill path.
///
/// Whole frames read together are forwarded with one write; a statement (Query, Execute)
/// in strict mode is held, with everything after it, until its record is durable.
///
/// # Cancellation safety
/// Cancelling drops at most a partly forwarded message; only done when the session ends.
pub(crate) async fn client_to_upstream<R, W>(rd: &mut R, wr: &mut W, ctx: &Ctx<'_>) -> RelayEnd
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = BytesMut::with_capacity(BUF);
    // Bytes of a message being streamed through that have not been read yet.
    let mut streaming = 0usize;
    // The budget a statement longer than the usual buffer holds until it has gone on.
    let mut large: Option<SemaphorePermit<'_>> = None;
    loop {
        // `buf[..fwd]` holds frames ready to go upstream.
        let mut fwd = 0usize;
        // Room the incomplete message at `fwd` needs before it can be looked at.
        let mut want = 0usize;
        let mut terminated = false;
        // The budget of a large statement among the frames in `buf[..fwd]`.
        let mut sent_large: Option<SemaphorePermit<'_>> = None;
        loop {
            let rest = buf.get(fwd..).unwrap_or_default();
            if streaming > 0 {
                let n = streaming.min(rest.len());
                if n == 0 {
                    break;
                }
                fwd += n;
                streaming -= n;
                continue;
            }
            // Each type is held to PostgreSQL's own limit from its header, before anything
            // waits for the body: a Describe declaring a gigabyte is refused at once, as
            // the server would refuse it, rather than awaited.
            let h = match read_frontend_header(rest) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    let _ = forward(wr, &mut buf, fwd).await;
                    return RelayEnd::ClientProtocol(e);
                }
            };
            let total = h.total_len();
            if !frontend_needs(h.tag) {
                if h.tag == b'd' {
                    ctx.with_tracker(|t| t.copy_bytes(h.body_len));
                }
                streaming = total;
                continue;
            }
            let statement = matches!(h.tag, b'Q' | b'P');
            let limit = if statement {
                STATEMENT_LIMIT
            } else {
                PARSE_LIMIT
            };
            let whole = total <= limit + 5;
            if !whole && statement {
                // Refused from its first bytes, which the log keeps as evidence.
                if rest.len() < PARSE_LIMIT + 5 {
                    want = PARSE_LIMIT + 5;
                    break;
                }
                let unread = total.saturating_sub(rest.len());
                let prefix = rest.get(5..PARSE_LIMIT + 5).unwrap_or_default();
                let refusal = ctx.with_tracker(|t| t.refused(h.tag, prefix, h.body_len));
                if let Err(e) = forward(wr, &mut buf, fwd).await {
                    return RelayEnd::UpstreamIo(e);
                }
                if let Some(ev) = refusal
                    && let Err(e) = ctx.audit.submit(ev).await
                {
                    tracing::error!(error = %e, "audit submit failed");
                }
                return RelayEnd::StatementTooLarge {
                    len: h.body_len,
                    unread,
                };
            }
            let have = if whole { total } else { PARSE_LIMIT + 5 };
            if rest.len() < have {
                if have > PARSE_LIMIT + 5 && large.is_none() {
                    // At most STATEMENT_LIMIT + 5, so always within the budget.
                    let n = u32::try_from(have).unwrap_or(u32::MAX);
                    match ctx.large_statements.acquire_many(n).await {
                        Ok(permit) => large = Some(permit),
                        Err(_) => return std::future::pending().await,
                    }
                }
                want = have;
                break;
            }
            if matches!(h.tag, b'Q' | b'P' | b'F') && !ctx.grant_is_live().await {
                // The session's kill path takes over from here; nothing held goes upstream.
                return std::future::pending().await;
            }
            let body = buf.get(fwd + 5..fwd + have).unwrap_or_default();
            let record = if whole {
                let msg = match FrontendMessage::decode(h.tag, body) {
                    Ok(m) => m,
                    Err(e) => {
                        let _ = forward(wr, &mut buf, fwd).await;
                        return RelayEnd::ClientProtocol(e);
                    }
                };
                ctx.with_tracker(|t| t.frontend(&msg)).flatten()
            } else {
                ctx.with_tracker(|t| t.frontend_oversize(h.tag, body))
                    .flatten()
            };
            if let Some(record) = record {
                // Strict durability: the statement goes upstream only once its record is
                // fsynced; if the log cannot take it, it never goes.
                if let Err(e) = ctx.audit.append(record).await {
                    let _ = ctx.ask.send(Ask::AuditFailed(e.to_string())).await;
                    return std::future::pending().await;
                }
            } else if matches!(h.tag, b'Q' | b'E' | b'F') && !ctx.audit.healthy() {
                // Batched durability: records follow their statements, so a failed write is
                // seen afterwards, as an unhealthy log. From then on no statement runs
                // unaudited, however long (one over the parse limit included): the session
                // ends instead.
                let e = "audit log is not writable".to_owned();
                let _ = ctx.ask.send(Ask::AuditFailed(e)).await;
                return std::future::pending().await;
            }
            if whole {
                fwd += total;
                if total > PARSE_LIMIT + 5 {
                    sent_large = large.take();
                }
                if h.tag == b'X' {
                    terminated = true;
                    break;
                }
            } else {
                streaming = total;
            }
        }
        // Nothing read after the grant lapsed goes upstream (COPY data included): a revoke
        // that has returned stops the work even before the session task has acted on it.
        if fwd > 0 && !terminated && !ctx.grant_is_live().await {
            return std::future::pending().await;
        }
        if let Err(e) = forward(wr, &mut buf, fwd).await {
            return RelayEnd::UpstreamIo(e);
        }
        if sent_large.take().is_some() {
            // The large statement went on: give its budget back, and its memory with it.
            let mut small = BytesMut::with_capacity(BUF.max(buf.len()));
            small.extend_from_slice(&buf);
            buf = small;
        }
        if terminated {
            ctx.client_done.store(true, Ordering::Release);
            return RelayEnd::ClientDone;
        }
        make_room(&mut buf, want);
        let gone = match rd.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                ctx.counters.add_in(n as u64);
                continue;
            }
            Err(e) if went_away(&e) => Some(e),
            Err(e) => return RelayEnd::ClientIo(e),
        };
        // The client's input ended. At a message boundary that is a Terminate, as a backend
        // takes it; inside a message the upstream is cut off as before.
        if !buf.is_empty() || streaming > 0 {
            return gone.map_or(RelayEnd::ClientClosed, RelayEnd::ClientIo);
        }
        let mut t = Vec::with_capacity(5);
        encode_terminate(&mut t);
        if let Err(e) = write_flush(wr, &t).await {
            return RelayEnd::UpstreamIo(e);
        }
        ctx.client_done.store(true, Ordering::Release);
        return RelayEnd::ClientDone;
    }
}

/// Upstream to client, sending the session's notices and the kill path's FATAL at message
/// boundaries so the client never sees a torn message. Whole frames read together go to
/// the client in one write.
///
/// # Cancellation safety
/// Cancelling drops at most a partly forwarded message; only done when the session ends.
pub(crate) async fn upstream_to_client<R, W>(
    rd: &mut R,
    wr: &mut W,
    control: &mut mpsc::Receiver<Control>,
    ctx: &Ctx<'_>,
) -> RelayEnd
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = BytesMut::with_capacity(BUF);
    let mut streaming = 0usize;
    let mut events = Vec::new();
    let mut control_open = true;
    // The client is done and no longer takes what we write: the upstream's answers are
    // read, audited and dropped until it closes.
    let mut dropping = false;
    loop {
        let mut fwd = 0usize;
        let mut want = 0usize;
        loop {
            let rest = buf.get(fwd..).unwrap_or_default();
            if streaming > 0 {
                let n = streaming.min(rest.len());
                if n == 0 {
                    break;
                }
                fwd += n;
                streaming -= n;
                continue;
            }
            let h = match read_header(rest, MAX_MESSAGE_LEN) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => {
                    let _ = forward(wr, &mut buf, fwd).await;
                    return RelayEnd::UpstreamProtocol(e);
                }
            };
            let total = h.total_len();
            let whole = total <= PARSE_LIMIT + 5;
            // Of the messages the audit needs, only an error can outgrow the limit (one
            // quoting megabytes of a value): its statement failed all the same, and the
            // code and the start of the message are in its first bytes.
            if !backend_needs(h.tag) || (!whole && h.tag != b'E') {
                if h.tag == b'd' {
                    ctx.with_tracker(|t| t.copy_bytes(h.body_len));
                }
                streaming = total;
                continue;
            }
            let have = if whole { total } else { PARSE_LIMIT + 5 };
            if rest.len() < have {
                want = have;
                break;
            }
            let body = buf.get(fwd + 5..fwd + have).unwrap_or_default();
            if !whole {
                let msg = BackendMessage::ErrorResponse(Fields::prefix(body));
                ctx.with_tracker(|t| t.backend(&msg, &mut events));
                streaming = total;
                continue;
            }
            let msg = match BackendMessage::decode(h.tag, body) {
                Ok(m) => m,
                Err(e) => {
                    let _ = forward(wr, &mut buf, fwd).await;
                    return RelayEnd::UpstreamProtocol(e);
                }
            };
            ctx.with_tracker(|t| t.backend(&msg, &mut events));
            fwd += total;
        }
        if dropping {
            buf.advance(fwd);
        } else if let Err(e) = forward(wr, &mut buf, fwd).await {
            if !ctx.client_done.load(Ordering::Acquire) {
                return RelayEnd::ClientIo(e);
            }
            dropping = true;
        }
        ctx.emit(&mut events).await;
        make_room(&mut buf, want);
        tokio::select! {
            biased;
            c = control.recv(), if streaming == 0 && control_open => match c {
                Some(Control::Notice(bytes)) => {
                    if let Err(e) = write_flush(wr, &bytes).await
                        && !ctx.client_done.load(Ordering::Acquire)
                    {
                        return RelayEnd::ClientIo(e);
                    }
                }
                Some(Control::Kill(bytes, reason)) => {
                    let _ = write_flush(wr, &bytes).await;
                    return RelayEnd::Killed(reason);
                }
                None => control_open = false,
            },
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => return RelayEnd::UpstreamClosed,
                Ok(n) => ctx.counters.add_out(n as u64),
                Err(e) => return RelayEnd::UpstreamIo(e),
            },
        }
    }
}

async fn write_flush<W: AsyncWrite + Unpin + ?Sized>(
    wr: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    wr.write_all(bytes).await?;
    wr.flush().await
}

#[cfg(test)]
mod tests;
