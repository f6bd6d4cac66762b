//! Cutting a client's connection under russh: once `cut` fires, the socket reads as at EOF,
//! writes and flushes fail, and its shutdown succeeds at once, so russh's session task ends
//! (and closes the socket) whatever it was waiting for.
//!
//! russh runs each session in a task of its own and offers no way to stop it: a client that
//! is told to disconnect and never reads it (a full TCP window), or reads it and never hangs
//! up, would otherwise keep the task and its socket for ever, since the gateway sets no
//! inactivity timeout. The kill path must close the connection within a second (SPEC §6)
//! whatever the client does; this is how the connection task makes sure it does.

use std::future::Future;
use std::io::{Error, ErrorKind};
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

/// A socket that stops working once its `cut` token fires.
#[derive(Debug)]
pub(super) struct Cut<S> {
    inner: S,
    /// One waiter for each direction: russh waits on a read and a write at the same time,
    /// and a waiter wakes only the last task that polled it.
    read_cut: Pin<Box<WaitForCancellationFutureOwned>>,
    write_cut: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> Cut<S> {
    pub(super) fn new(inner: S, cut: &CancellationToken) -> Self {
        Cut {
            inner,
            read_cut: Box::pin(cut.clone().cancelled_owned()),
            write_cut: Box::pin(cut.clone().cancelled_owned()),
        }
    }
}

fn cut_error() -> Error {
    Error::new(ErrorKind::BrokenPipe, "connection cut by the gateway")
}

impl<S: AsyncRead + Unpin> AsyncRead for Cut<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.read_cut.as_mut().poll(cx).is_ready() {
            // Nothing filled: end of stream.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Cut<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.write_cut.as_mut().poll(cx).is_ready() {
            // Dropping the socket closes it; nothing to wait for.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        if self.write_cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Err(cut_error()));
        }
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

    /// A write stuck on a peer that reads nothing, and a read waiting on a peer that sends
    /// nothing, both end once the socket is cut.
    #[tokio::test]
    async fn a_cut_ends_a_stuck_write_and_a_waiting_read() {
        let (_client, server) = tokio::io::duplex(16);
        let cut = CancellationToken::new();
        let (mut r, mut w) = tokio::io::split(Cut::new(server, &cut));
        let writer = tokio::spawn(async move { w.write_all(&[0u8; 1024]).await });
        let reader = tokio::spawn(async move { r.read(&mut [0u8; 8]).await });
        tokio::task::yield_now().await;
        assert!(!writer.is_finished() && !reader.is_finished());
        cut.cancel();
        let written = writer.await.expect("writer");
        assert_eq!(
            written.expect_err("a cut write fails").kind(),
            ErrorKind::BrokenPipe
        );
        assert_eq!(reader.await.expect("reader").expect("read"), 0);
    }
}
