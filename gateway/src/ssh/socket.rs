//! The client's socket as russh sees it, with the three limits the gateway sets under it.
//!
//! russh runs each session in a task of its own, with no limit before authentication and no
//! way to stop the task from outside. So the limits sit in the socket:
//!
//! - **Login grace.** A connection that has not logged in by its deadline (accept +
//!   [`LOGIN_GRACE`], sshd's `LoginGraceTime` default) reads as at EOF, and russh ends the
//!   session as if the client had hung up: a client that connects and never finishes, or
//!   never even sends its banner, gives its socket back. After the login the check is one
//!   atomic load per read.
//! - **A place among those not logged in yet** (sshd's `MaxStartups`), held from accept until
//!   the login or the end of the connection: a flood of connections that never log in is
//!   refused at the door instead of taking every file descriptor the gateway has (and with
//!   them its PostgreSQL and admin listeners).
//! - **The cut.** Once the connection task fires it, reads end as at EOF, writes and flushes
//!   fail, and a shutdown succeeds at once, so russh's task ends (and closes the socket)
//!   whatever it was waiting for. A client that is told to disconnect and never reads it (a
//!   full TCP window), or reads it and never hangs up, would otherwise keep the task and its
//!   socket for ever; the kill path must close the connection within a second (SPEC §6)
//!   whatever the client does. Every read and write of the session checks it, so the check is
//!   one atomic load, and a waker is registered only when the socket itself has to wait (a
//!   `CancellationToken` takes two locks per check: its own and its waiters').

use std::future::Future;
use std::io::{Error, ErrorKind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// How long a connection may take to log in, from accept.
pub(super) const LOGIN_GRACE: Duration = Duration::from_secs(120);

/// What a [`ClientSocket`] watches.
#[derive(Debug)]
pub(super) struct Limits {
    /// Fired once the client has logged in to a session.
    pub logged_in: CancellationToken,
    /// The login deadline.
    pub login_by: Instant,
    /// The connection's place among those not logged in yet.
    pub startup: OwnedSemaphorePermit,
    /// Fired by the connection task to cut the connection.
    pub cut: Cut,
}

/// The connection task's switch that cuts a connection under russh: once fired, the socket
/// reads as at EOF and fails writes (see the module's documentation).
#[derive(Debug, Clone, Default)]
pub(super) struct Cut(Arc<CutState>);

#[derive(Debug, Default)]
struct CutState {
    fired: AtomicBool,
    /// One waker for each direction: russh waits on a read and a write at the same time, and
    /// a waker slot holds only the last task that registered in it.
    read: AtomicWaker,
    write: AtomicWaker,
}

impl Cut {
    /// Cuts the connection: a read or write waiting on the socket wakes and ends.
    pub(super) fn fire(&self) {
        self.0.fired.store(true, Ordering::SeqCst);
        self.0.read.wake();
        self.0.write.wake();
    }

    fn is_fired(&self) -> bool {
        self.0.fired.load(Ordering::SeqCst)
    }

    /// For a read or write that is about to wait on the socket: registers its waker, then
    /// looks again, so a cut fired meanwhile is not missed. True when cut.
    fn wait(&self, slot: &AtomicWaker, cx: &Context<'_>) -> bool {
        slot.register(cx.waker());
        self.is_fired()
    }

    fn read_waits(&self, cx: &Context<'_>) -> bool {
        self.wait(&self.0.read, cx)
    }

    fn write_waits(&self, cx: &Context<'_>) -> bool {
        self.wait(&self.0.write, cx)
    }
}

/// A client socket under the login grace, holding its place until the login, and cut when
/// its token fires.
#[derive(Debug)]
pub(super) struct ClientSocket<S> {
    inner: S,
    logged_in: CancellationToken,
    /// The login deadline, until the login (then `None`: nothing more to watch).
    deadline: Option<Pin<Box<Sleep>>>,
    expired: bool,
    /// The connection's place among those not logged in yet, until the login.
    startup: Option<OwnedSemaphorePermit>,
    cut: Cut,
}

impl<S> ClientSocket<S> {
    pub(super) fn new(inner: S, limits: Limits) -> Self {
        ClientSocket {
            inner,
            logged_in: limits.logged_in,
            deadline: Some(Box::pin(tokio::time::sleep_until(limits.login_by))),
            expired: false,
            startup: Some(limits.startup),
            cut: limits.cut,
        }
    }

    /// True once the deadline passed without a login (and from then on).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        if self.expired {
            return true;
        }
        let Some(deadline) = &mut self.deadline else {
            return false;
        };
        if self.logged_in.is_cancelled() {
            self.deadline = None;
            self.startup = None;
            return false;
        }
        if deadline.as_mut().poll(cx).is_ready() {
            tracing::debug!("no login within the grace time; closing");
            self.expired = true;
        }
        self.expired
    }
}

fn cut_error() -> Error {
    Error::new(ErrorKind::BrokenPipe, "connection cut by the gateway")
}

impl<S: AsyncRead + Unpin> AsyncRead for ClientSocket<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.cut.is_fired() || self.expired(cx) {
            // Nothing filled: end of stream.
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Pending if self.cut.read_waits(cx) => Poll::Ready(Ok(())),
            polled => polled,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ClientSocket<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.cut.is_fired() {
            return Poll::Ready(Err(cut_error()));
        }
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending if self.cut.write_waits(cx) => Poll::Ready(Err(cut_error())),
            polled => polled,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.cut.is_fired() {
            return Poll::Ready(Err(cut_error()));
        }
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending if self.cut.write_waits(cx) => Poll::Ready(Err(cut_error())),
            polled => polled,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.cut.is_fired() {
            // Dropping the socket closes it; nothing to wait for.
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending if self.cut.write_waits(cx) => Poll::Ready(Ok(())),
            polled => polled,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.cut.is_fired() {
            return Poll::Ready(Err(cut_error()));
        }
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending if self.cut.write_waits(cx) => Poll::Ready(Err(cut_error())),
            polled => polled,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::sync::Semaphore;

    use super::*;

    /// A socket with its own place, login token and cut, and the semaphore of places.
    fn socket<S>(inner: S) -> (ClientSocket<S>, CancellationToken, Cut, Arc<Semaphore>) {
        let places = Arc::new(Semaphore::new(1));
        let (logged_in, cut) = (CancellationToken::new(), Cut::default());
        let limits = Limits {
            logged_in: logged_in.clone(),
            login_by: Instant::now() + LOGIN_GRACE,
            startup: places.clone().try_acquire_owned().expect("a place"),
            cut: cut.clone(),
        };
        (ClientSocket::new(inner, limits), logged_in, cut, places)
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_logs_in_reads_as_closed_at_the_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let start = Instant::now();
        let (mut s, _, _, _) = socket(server);
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await.expect("read"), 0);
        assert_eq!(start.elapsed(), LOGIN_GRACE);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_logged_in_connection_reads_on_past_the_deadline_and_gives_its_place_back() {
        let (mut client, server) = tokio::io::duplex(64);
        let (mut s, logged_in, _, places) = socket(server);
        client.write_all(b"hi").await.expect("write");
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await.expect("read"), 2);
        assert_eq!(places.available_permits(), 0, "held until the login");
        logged_in.cancel();
        tokio::time::sleep(LOGIN_GRACE * 2).await;
        client.write_all(b"later").await.expect("write");
        assert_eq!(s.read(&mut buf).await.expect("read"), 5);
        assert_eq!(&buf[..5], b"later");
        assert_eq!(places.available_permits(), 1, "given back at the login");
    }

    /// A write stuck on a peer that reads nothing, and a read waiting on a peer that sends
    /// nothing, both end once the socket is cut.
    #[tokio::test]
    async fn a_cut_ends_a_stuck_write_and_a_waiting_read() {
        let (_client, server) = tokio::io::duplex(16);
        let (s, _, cut, _) = socket(server);
        let (mut r, mut w) = tokio::io::split(s);
        let writer = tokio::spawn(async move { w.write_all(&[0u8; 1024]).await });
        let reader = tokio::spawn(async move { r.read(&mut [0u8; 8]).await });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished() && !reader.is_finished());
        cut.fire();
        let written = writer.await.expect("writer");
        assert_eq!(
            written.expect_err("a cut write fails").kind(),
            ErrorKind::BrokenPipe
        );
        assert_eq!(reader.await.expect("reader").expect("read"), 0);
    }
}
