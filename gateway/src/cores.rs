//! Where proxied sessions run: one single-threaded tokio runtime per core, each PostgreSQL
//! session or SSH connection pinned to one of them for its whole life.
//!
//! Why: a session is one task that drives both relay directions, so it never needs a second
//! thread; on the gateway's shared multi-thread runtime, though, every wakeup may notify an
//! idle worker to steal, bouncing sessions between cores. Measured under `pgbench -S -c 8`
//! on 2 cores (see benches/compare), that costs about a quarter of the gateway's CPU per
//! query and one extra context switch per query. Pinned runtimes keep a session's wakeups on
//! its own thread. Sessions are spread round-robin; the listener, grants engine and admin
//! API stay on the main runtime (tokio's sync primitives work across runtimes).

use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::task::TaskTracker;

/// The session runtimes. Closing (or dropping) lets each thread end once the sessions it
/// runs have finished.
#[derive(Debug)]
pub(crate) struct Cores {
    handles: Vec<Handle>,
    next: AtomicUsize,
    tracker: TaskTracker,
}

impl Cores {
    /// One runtime thread per available core (at least one), named `<name>-core-<i>`.
    pub(crate) fn start(name: &str) -> std::io::Result<Cores> {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        let tracker = TaskTracker::new();
        let mut handles = Vec::with_capacity(n);
        for i in 0..n {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let done = tracker.clone();
            std::thread::Builder::new()
                .name(format!("{name}-core-{i}"))
                .spawn(move || rt.block_on(done.wait()))?;
        }
        Ok(Cores {
            handles,
            next: AtomicUsize::new(0),
            tracker,
        })
    }

    /// Runs a session on the next runtime. A socket accepted on another runtime must be
    /// moved in as a std socket (see [`Cores::spawn_with_socket`]).
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.handles.len().max(1);
        if let Some(h) = self.handles.get(i) {
            self.tracker.spawn_on(fut, h);
        }
    }

    /// Runs `session` with `socket` on the next runtime: the socket leaves the accepting
    /// runtime's reactor and registers with the session's. Fails (returning the error) only
    /// when the socket cannot be detached.
    pub(crate) fn spawn_with_socket<F, Fut>(
        &self,
        socket: tokio::net::TcpStream,
        session: F,
    ) -> std::io::Result<()>
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let std_socket = socket.into_std()?;
        self.spawn(async move {
            match tokio::net::TcpStream::from_std(std_socket) {
                Ok(socket) => session(socket).await,
                Err(e) => tracing::warn!(error = %e, "could not move an accepted socket"),
            }
        });
        Ok(())
    }

    /// No more sessions: each runtime thread ends once its sessions have.
    pub(crate) fn close(&self) {
        self.tracker.close();
    }
}

impl Drop for Cores {
    fn drop(&mut self) {
        self.close();
    }
}
