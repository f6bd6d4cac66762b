//! The byte relay between client and upstream, one future per direction.
//!
//! Messages flow unchanged: the relay splits the stream into frames only to find the few
//! the audit needs (and the queries that trigger a grant re-check), decodes those in place
//! from the read buffer and forwards their original bytes; everything else (rows, COPY
//! data) is streamed through in chunks as it arrives, however large the message. Each
//! direction holds at most one read buffer (64 KiB, or up to 1 MiB while a message the audit
//! needs is being assembled) and writes before it reads again, so a slow reader
//! back-pressures the writer across the proxy.

use std::sync::Mutex;

use bytes::{Buf as _, BytesMut};
use portcullis_protocol::pg::{
    BackendMessage, FrontendMessage, MAX_MESSAGE_LEN, PgError, read_header,
};
use portcullis_recorder::Event;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::{mpsc, oneshot};

use super::audit::Tracker;
use crate::grants::{CloseReason, Counters};

/// The read buffer's usual size.
const BUF: usize = 64 * 1024;
/// Largest message assembled whole for the audit; longer ones are streamed and audited
/// from their first bytes.
const PARSE_LIMIT: usize = 1024 * 1024;

/// How a relay direction ended.
#[derive(Debug)]
pub(crate) enum RelayEnd {
    /// The client closed the connection or sent Terminate.
    ClientClosed,
    /// The upstream closed the connection.
    UpstreamClosed,
    /// The kill path's FATAL was delivered to the client.
    Killed(CloseReason),
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

/// What both directions share.
#[derive(Debug)]
pub(crate) struct Ctx<'a> {
    pub tracker: &'a Mutex<Tracker>,
    pub audit: &'a mpsc::Sender<Event>,
    pub counters: &'a Counters,
    /// Asks the session whether the grant is still live (it owns the lease).
    pub check: &'a mpsc::Sender<oneshot::Sender<bool>>,
}

impl Ctx<'_> {
    fn with_tracker<T>(&self, f: impl FnOnce(&mut Tracker) -> T) -> Option<T> {
        self.tracker.lock().ok().map(|mut t| f(&mut t))
    }

    /// Defence in depth before each new statement.
    async fn grant_is_live(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.check.send(tx).await.is_err() {
            return false;
        }
        rx.await.unwrap_or(false)
    }

    async fn emit(&self, events: &mut Vec<Event>) {
        for ev in events.drain(..) {
            // The writer only stops when the session ends; nothing to do if it did.
            let _ = self.audit.send(ev).await;
        }
    }
}

fn frontend_needs(tag: u8) -> bool {
    matches!(tag, b'Q' | b'P' | b'B' | b'E' | b'C' | b'S' | b'X')
}

fn backend_needs(tag: u8) -> bool {
    matches!(tag, b'C' | b'E' | b'Z' | b'I' | b's' | b'G' | b'H' | b'W')
}

fn make_room(buf: &mut BytesMut, want: usize) {
    if buf.capacity() < want {
        buf.reserve(want - buf.len());
    } else if buf.capacity() - buf.len() < 4096 {
        buf.reserve(BUF);
    }
}

/// Client to upstream. Never returns [`RelayEnd::Killed`]; when the grant re-check fails it
/// stops forwarding and waits for the session's kill path.
///
/// # Cancellation safety
/// Cancelling drops at most a partly forwarded message; only done when the session ends.
pub(crate) async fn client_to_upstream<R, W>(rd: &mut R, wr: &mut W, ctx: &Ctx<'_>) -> RelayEnd
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut buf = BytesMut::with_capacity(BUF);
    let mut streaming = 0usize;
    loop {
        loop {
            if streaming > 0 {
                if buf.is_empty() {
                    break;
                }
                let n = streaming.min(buf.len());
                if let Err(e) = wr.write_all(buf.get(..n).unwrap_or_default()).await {
                    return RelayEnd::UpstreamIo(e);
                }
                buf.advance(n);
                streaming -= n;
                continue;
            }
            let h = match read_header(&buf, MAX_MESSAGE_LEN) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return RelayEnd::ClientProtocol(e),
            };
            let total = h.total_len();
            if !frontend_needs(h.tag) {
                if h.tag == b'd' {
                    ctx.with_tracker(|t| t.copy_bytes(h.body_len));
                }
                streaming = total;
                continue;
            }
            let whole = total <= PARSE_LIMIT + 5;
            let have = if whole { total } else { PARSE_LIMIT + 5 };
            if buf.len() < have {
                make_room(&mut buf, have);
                break;
            }
            if matches!(h.tag, b'Q' | b'P') && !ctx.grant_is_live().await {
                // The session's kill path takes over from here.
                return std::future::pending().await;
            }
            let body = buf.get(5..have).unwrap_or_default();
            if whole {
                let msg = match FrontendMessage::decode(h.tag, body) {
                    Ok(m) => m,
                    Err(e) => return RelayEnd::ClientProtocol(e),
                };
                ctx.with_tracker(|t| t.frontend(&msg));
                if let Err(e) = wr.write_all(buf.get(..total).unwrap_or_default()).await {
                    return RelayEnd::UpstreamIo(e);
                }
                buf.advance(total);
                if h.tag == b'X' {
                    let _ = wr.flush().await;
                    return RelayEnd::ClientClosed;
                }
            } else {
                ctx.with_tracker(|t| t.frontend_oversize(h.tag, body));
                streaming = total;
            }
        }
        if let Err(e) = wr.flush().await {
            return RelayEnd::UpstreamIo(e);
        }
        make_room(&mut buf, 0);
        match rd.read_buf(&mut buf).await {
            Ok(0) => return RelayEnd::ClientClosed,
            Ok(n) => ctx.counters.add_in(n as u64),
            Err(e) => return RelayEnd::ClientIo(e),
        }
    }
}

/// Upstream to client, sending the session's notices and the kill path's FATAL at message
/// boundaries so the client never sees a torn message.
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
    loop {
        loop {
            if streaming > 0 {
                if buf.is_empty() {
                    break;
                }
                let n = streaming.min(buf.len());
                if let Err(e) = wr.write_all(buf.get(..n).unwrap_or_default()).await {
                    return RelayEnd::ClientIo(e);
                }
                buf.advance(n);
                streaming -= n;
                continue;
            }
            let h = match read_header(&buf, MAX_MESSAGE_LEN) {
                Ok(Some(h)) => h,
                Ok(None) => break,
                Err(e) => return RelayEnd::UpstreamProtocol(e),
            };
            let total = h.total_len();
            if !backend_needs(h.tag) || total > PARSE_LIMIT + 5 {
                if h.tag == b'd' {
                    ctx.with_tracker(|t| t.copy_bytes(h.body_len));
                }
                streaming = total;
                continue;
            }
            if buf.len() < total {
                make_room(&mut buf, total);
                break;
            }
            let msg = match BackendMessage::decode(h.tag, buf.get(5..total).unwrap_or_default()) {
                Ok(m) => m,
                Err(e) => return RelayEnd::UpstreamProtocol(e),
            };
            ctx.with_tracker(|t| t.backend(&msg, &mut events));
            if let Err(e) = wr.write_all(buf.get(..total).unwrap_or_default()).await {
                return RelayEnd::ClientIo(e);
            }
            buf.advance(total);
            ctx.emit(&mut events).await;
        }
        if let Err(e) = wr.flush().await {
            return RelayEnd::ClientIo(e);
        }
        make_room(&mut buf, 0);
        tokio::select! {
            biased;
            c = control.recv(), if streaming == 0 && control_open => match c {
                Some(Control::Notice(bytes)) => {
                    if let Err(e) = write_flush(wr, &bytes).await {
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
