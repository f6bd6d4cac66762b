//! The login grace time: a connection that has not logged in by its deadline (accept +
//! [`LOGIN_GRACE`], sshd's `LoginGraceTime` default) is closed, so a client that connects
//! and never finishes, or never even sends its banner, gives its socket back.
//!
//! russh runs each session in a task of its own and has no limit of its own before
//! authentication, so the limit sits under it, in the socket: once the deadline passes
//! without a login, reads end as at EOF and russh ends the session as if the client had
//! hung up. After the login the check is one atomic load per read.
//!
//! The socket also holds the connection's place among those not yet logged in (sshd's
//! `MaxStartups`), given back at the login or when the connection ends: so a flood of
//! connections that never log in is refused at the door instead of taking every file
//! descriptor the gateway has (and with them its PostgreSQL and admin listeners).

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// How long a connection may take to log in, from accept.
pub(super) const LOGIN_GRACE: Duration = Duration::from_secs(120);

/// A socket that reads as closed once its login deadline passes before `logged_in` fires.
#[derive(Debug)]
pub(super) struct LoginGrace<S> {
    inner: S,
    logged_in: CancellationToken,
    /// The deadline, until the login (then `None`: nothing more to watch).
    deadline: Option<Pin<Box<Sleep>>>,
    expired: bool,
    /// The connection's place among those not logged in yet, until the login.
    startup: Option<OwnedSemaphorePermit>,
}

impl<S> LoginGrace<S> {
    pub(super) fn new(
        inner: S,
        logged_in: CancellationToken,
        deadline: Instant,
        startup: OwnedSemaphorePermit,
    ) -> Self {
        LoginGrace {
            inner,
            logged_in,
            deadline: Some(Box::pin(tokio::time::sleep_until(deadline))),
            expired: false,
            startup: Some(startup),
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

impl<S: AsyncRead + Unpin> AsyncRead for LoginGrace<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.expired(cx) {
            // Nothing filled: end of stream.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LoginGrace<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn place() -> OwnedSemaphorePermit {
        std::sync::Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .expect("a place")
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_logs_in_reads_as_closed_at_the_deadline() {
        let (client, server) = tokio::io::duplex(64);
        let start = Instant::now();
        let mut s = LoginGrace::new(
            server,
            CancellationToken::new(),
            start + LOGIN_GRACE,
            place(),
        );
        let mut buf = [0u8; 8];
        assert_eq!(s.read(&mut buf).await.expect("read"), 0);
        assert_eq!(start.elapsed(), LOGIN_GRACE);
        drop(client);
    }

    #[tokio::test(start_paused = true)]
    async fn a_logged_in_connection_reads_on_past_the_deadline() {
        let (mut client, server) = tokio::io::duplex(64);
        let logged_in = CancellationToken::new();
        let places = std::sync::Arc::new(tokio::sync::Semaphore::new(1));
        let place = places.clone().try_acquire_owned().expect("a place");
        let mut s = LoginGrace::new(
            server,
            logged_in.clone(),
            Instant::now() + LOGIN_GRACE,
            place,
        );
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
}
