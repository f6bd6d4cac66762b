//! A future that is polled only when something it waits on has woken it.
//!
//! A session task `select!`s on the relay's two directions, the relay's asks and the
//! lease; tokio wakes the task as a whole, so every wakeup (two per statement at
//! `pgbench -c 1`) polled every branch again: the direction that was not woken, the ask
//! channel and the lease's grant-change signal and two deadline timers, each finding that
//! nothing had changed. [`Gated`] hands its future a waker of its own that sets a flag
//! before waking the task, and skips the poll while the flag is clear: a branch nobody woke
//! costs one atomic swap instead of its whole poll.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

/// The waker [`Gated`] polls its future with.
#[derive(Debug, Default)]
struct Flag {
    /// Set by a wake, cleared by the poll it causes.
    woken: AtomicBool,
    /// The task that polls the [`Gated`].
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // The flag is set before the task is woken, so the poll the wake causes sees it.
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

/// `fut`, polled only on its first poll and after it woke its waker since the last one.
///
/// # Cancellation safety
/// As cancellation safe as the wrapped future: dropping a `Gated` drops it.
#[derive(Debug)]
pub(crate) struct Gated<F> {
    fut: F,
    flag: Arc<Flag>,
    waker: Waker,
}

impl<F: Future> Gated<F> {
    pub(crate) fn new(fut: F) -> Self {
        let flag = Arc::new(Flag {
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        Gated { fut, flag, waker }
    }
}

impl<F: Future + Unpin> Future for Gated<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        // Registered before the flag is read: a wake between the two then still wakes the
        // task, which polls again and sees the flag.
        this.flag.task.register(cx.waker());
        if !this.flag.woken.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        Pin::new(&mut this.fut).poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls; ready once `ready` is set, waking through the waker it last saw.
    struct Probe {
        polls: Arc<AtomicUsize>,
        ready: Arc<AtomicBool>,
        waker: Arc<std::sync::Mutex<Option<Waker>>>,
    }

    impl Future for Probe {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            if self.ready.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn polls_only_after_its_own_wake() {
        let polls = Arc::new(AtomicUsize::new(0));
        let ready = Arc::new(AtomicBool::new(false));
        let inner_waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let mut gated = Gated::new(Probe {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: inner_waker.clone(),
        });
        let task = Arc::new(Flag::default());
        let task_waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&task_waker);
        // The first poll reaches the future.
        assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        // The task woken by something else: the future is not polled.
        for _ in 0..3 {
            assert!(Pin::new(&mut gated).poll(&mut cx).is_pending());
        }
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        assert!(!task.woken.load(Ordering::SeqCst));
        // The future's own wake reaches the task and lets the next poll through.
        ready.store(true, Ordering::SeqCst);
        inner_waker.lock().unwrap().take().unwrap().wake();
        assert!(task.woken.load(Ordering::SeqCst));
        assert!(Pin::new(&mut gated).poll(&mut cx).is_ready());
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }
}
