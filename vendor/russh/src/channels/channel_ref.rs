use std::sync::Arc;

use tokio::sync::mpsc::Sender;

use super::{Flow, WindowSizeRef};
use crate::ChannelMsg;

/// A handle to the [`super::Channel`]'s to be able to transmit messages
/// to it and update it's `window_size`.
#[derive(Debug)]
pub struct ChannelRef {
    pub(super) sender: Sender<ChannelMsg>,
    pub(super) window_size: WindowSizeRef,
    pub(super) flow: Arc<Flow>,
}

impl ChannelRef {
    pub fn new(sender: Sender<ChannelMsg>) -> Self {
        Self {
            sender,
            window_size: WindowSizeRef::new(0),
            flow: Arc::new(Flow::default()),
        }
    }

    pub(crate) fn window_size(&self) -> &WindowSizeRef {
        &self.window_size
    }

    /// Portcullis patch: the flow state the channel's reader shares with the session loop.
    pub(crate) fn flow(&self) -> &Arc<Flow> {
        &self.flow
    }

    /// Portcullis patch: hands incoming data already counted with `Flow::queued` to the
    /// reader; a reader that is gone does not count.
    pub(crate) async fn send_data(&self, msg: ChannelMsg, len: usize) {
        if self.sender.send(msg).await.is_err() {
            self.flow.unqueued(len);
        }
    }
}

impl std::ops::Deref for ChannelRef {
    type Target = Sender<ChannelMsg>;

    fn deref(&self) -> &Self::Target {
        &self.sender
    }
}
