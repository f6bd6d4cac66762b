//! Changes the client sent (a Parse, a Close, a Bind) that the server has not confirmed
//! yet, in the order sent. The server answers them in that order, so a confirmation is the
//! oldest one's, and a change still waiting when its batch ends did not happen.

use std::collections::VecDeque;

use super::statements::MAX_NAMES;

/// A change, known by the batch it was sent in (see `Tracker::batches_sent`).
pub(super) trait Sent {
    fn batch(&self) -> u64;
}

#[derive(Debug)]
pub(super) struct Unconfirmed<C> {
    queue: VecDeque<C>,
    /// More changes went unanswered than are kept: the answers of batches up to this one
    /// are not matched to changes.
    lost_through: Option<u64>,
}

impl<C> Default for Unconfirmed<C> {
    fn default() -> Self {
        Unconfirmed {
            queue: VecDeque::new(),
            lost_through: None,
        }
    }
}

impl<C: Sent> Unconfirmed<C> {
    /// Queues `change`. Returns false when the queue overflowed instead (a client that
    /// sends without reading the answers): rather than let it grow, or match answers to the
    /// wrong changes, everything queued is dropped, and the caller forgets what can no
    /// longer be checked (its named entries, then logged by name).
    pub(super) fn remember(&mut self, change: C) -> bool {
        if self.lost_through.is_some_and(|b| change.batch() <= b) {
            return true;
        }
        if self.queue.len() >= MAX_NAMES {
            self.queue.clear();
            self.lost_through = Some(change.batch());
            return false;
        }
        self.queue.push_back(change);
        true
    }

    /// A confirmation, received while the server answers batch `answering`: the oldest
    /// change took effect.
    pub(super) fn confirmed(&mut self, answering: u64) {
        if self.lost_through.is_some_and(|b| answering <= b) {
            return;
        }
        if self.queue.front().is_some_and(|c| c.batch() == answering) {
            self.queue.pop_front();
        }
    }

    /// The oldest change waiting.
    pub(super) fn front(&self) -> Option<&C> {
        self.queue.front()
    }

    /// The changes still waiting, oldest first.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut C> {
        self.queue.iter_mut()
    }

    /// The batch before `answered` ended: removes its changes, which the server did not
    /// confirm, and returns them newest first (the order to undo them in).
    pub(super) fn ended(&mut self, answered: u64) -> Vec<C> {
        if self.lost_through.is_some_and(|b| b < answered) {
            self.lost_through = None;
        }
        let n = self
            .queue
            .iter()
            .take_while(|c| c.batch() < answered)
            .count();
        self.queue.drain(..n).rev().collect()
    }
}
