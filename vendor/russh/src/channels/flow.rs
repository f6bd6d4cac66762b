//! Portcullis patch: per-channel receive flow control.
//!
//! Upstream russh 0.65.1 replenishes a channel's receive window as soon as the session loop
//! reads the data, and then `send().await`s it into the channel's bounded queue: a consumer
//! that stops reading one channel parks the whole connection (every other channel,
//! keepalives, rekeying). Here the session loop counts the bytes it queued for the consumer
//! and withholds the channel's `WINDOW_ADJUST` while more than half a window is unread, so
//! the peer stops sending on that channel only; the consumer wakes the session loop once it
//! has caught up, and the loop then tops the window up again.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::sync::mpsc::Receiver;

use super::ChannelMsg;

/// What the session loop and one channel's consumer share.
#[derive(Debug, Default)]
pub(crate) struct Flow {
    /// Data bytes queued for the consumer and not taken yet.
    unread: AtomicUsize,
    /// Above this many unread bytes the window is not replenished.
    limit: AtomicUsize,
    /// The session loop has withheld a window adjustment for this channel.
    withheld: AtomicBool,
    /// Wakes the session loop; set when the channel is registered with a session.
    wake: OnceLock<Arc<Notify>>,
}

impl Flow {
    /// Registers the channel with its session loop.
    pub(crate) fn attach(&self, wake: &Arc<Notify>, limit: u32) {
        self.limit.store(limit as usize, Ordering::SeqCst);
        let _ = self.wake.set(wake.clone());
    }

    /// The session loop queued `len` data bytes for the consumer.
    pub(crate) fn queued(&self, len: usize) {
        self.unread.fetch_add(len, Ordering::SeqCst);
    }

    /// The session loop could not queue `len` bytes it counted (the consumer is gone).
    pub(crate) fn unqueued(&self, len: usize) {
        self.taken(len);
    }

    /// May the session loop replenish this channel's window now? When not, the channel is
    /// marked so that the consumer wakes the loop once it has caught up.
    pub(crate) fn may_grant(&self) -> bool {
        if self.wake.get().is_none() {
            return true;
        }
        let limit = self.limit.load(Ordering::SeqCst);
        if self.unread.load(Ordering::SeqCst) <= limit {
            return true;
        }
        self.withheld.store(true, Ordering::SeqCst);
        // The consumer may have caught up between the two loads; it then saw no mark.
        if self.unread.load(Ordering::SeqCst) <= limit {
            self.withheld.store(false, Ordering::SeqCst);
            return true;
        }
        false
    }

    /// For the session loop after a wake-up: was a grant withheld and may it be sent now?
    pub(crate) fn take_withheld(&self) -> bool {
        if !self.withheld.load(Ordering::SeqCst) {
            return false;
        }
        if self.unread.load(Ordering::SeqCst) > self.limit.load(Ordering::SeqCst) {
            return false;
        }
        self.withheld.swap(false, Ordering::SeqCst)
    }

    /// The consumer took `len` bytes.
    fn taken(&self, len: usize) {
        let before = self
            .unread
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(len))
            })
            .unwrap_or(0);
        let now = before.saturating_sub(len);
        if now <= self.limit.load(Ordering::SeqCst)
            && self.withheld.load(Ordering::SeqCst)
            && let Some(wake) = self.wake.get()
        {
            wake.notify_one();
        }
    }

    /// The consumer is gone: nothing it left unread may hold the window shut.
    fn abandoned(&self) {
        self.taken(usize::MAX);
    }
}

fn data_len(msg: &ChannelMsg) -> usize {
    match msg {
        ChannelMsg::Data { data } | ChannelMsg::ExtendedData { data, .. } => data.len(),
        _ => 0,
    }
}

/// A channel's queue of incoming messages, accounting for the data taken.
#[derive(Debug)]
pub(crate) struct FlowReceiver {
    rx: Receiver<ChannelMsg>,
    flow: Arc<Flow>,
}

impl FlowReceiver {
    pub(crate) fn new(rx: Receiver<ChannelMsg>, flow: Arc<Flow>) -> Self {
        FlowReceiver { rx, flow }
    }

    pub(crate) async fn recv(&mut self) -> Option<ChannelMsg> {
        let msg = self.rx.recv().await;
        if let Some(m) = &msg {
            self.flow.taken(data_len(m));
        }
        msg
    }

    pub(crate) fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<ChannelMsg>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(m)) = &polled {
            self.flow.taken(data_len(m));
        }
        polled
    }

    pub(crate) fn close(&mut self) {
        self.rx.close();
        self.flow.abandoned();
    }
}

impl Drop for FlowReceiver {
    fn drop(&mut self) {
        self.flow.abandoned();
    }
}
