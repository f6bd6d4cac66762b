//! The portals as the server holds them, for the audit tap: what each name was bound to.
//!
//! A Bind is applied when sent, so an Execute behind it in the same batch sees it, and
//! undone if the server did not confirm it (BindComplete) by the end of its batch: a Bind
//! the server refused (`cursor "p" already exists`) or skipped after an earlier error
//! leaves the portal that runs as it was, and after a rollback to a savepoint that portal
//! can still be executed. The server answers Binds in order, so each BindComplete confirms
//! the oldest Bind waiting. A transaction's end (ReadyForQuery saying no transaction is
//! open) drops every portal bound in it, as the server does, so a name used again (a cursor
//! declared in SQL) is never logged with what it was bound to before.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::sql::Sql;
use super::statements::MAX_NAMES;
use super::unconfirmed::{Sent, Unconfirmed};

/// A bound portal: its statement's SQL and definition, and its parameters, shared with each
/// execution.
#[derive(Debug, Clone)]
pub(super) struct Portal {
    pub sql: Sql,
    pub parse: Option<u64>,
    pub params: Arc<[Value]>,
}

/// A portal as held: which Bind made it (numbers the Binds of the session), and in which
/// batch.
#[derive(Debug, Clone)]
struct Held {
    bind: u64,
    batch: u64,
    portal: Portal,
}

/// A Bind undone at the end of its batch, and what executions of its portal ran instead:
/// the portal as bound before (with the number of that Bind), if it still stood.
#[derive(Debug)]
pub(super) struct UndoneBind {
    pub bind: u64,
    pub name: Vec<u8>,
    pub instead: Option<(u64, Portal)>,
}

/// A Bind sent and not yet confirmed.
#[derive(Debug)]
struct Change {
    /// The batch it was sent in (see `Tracker::batches_sent`).
    batch: u64,
    /// The portal it bound; `None` for a Bind past [`MAX_NAMES`] that was not kept, kept
    /// so answers match in order.
    name: Option<Vec<u8>>,
    /// What the name was bound to before.
    before: Option<Held>,
    /// The Bind's number.
    bind: u64,
}

impl Sent for Change {
    fn batch(&self) -> u64 {
        self.batch
    }
}

#[derive(Debug, Default)]
pub(super) struct Portals {
    map: HashMap<Vec<u8>, Held>,
    unconfirmed: Unconfirmed<Change>,
    /// Binds seen (numbers them).
    bound: u64,
    /// Portals bound in batches before this one belong to transactions that have ended.
    ended_before: u64,
}

impl Portals {
    /// The portal bound to `name`, with the number of the Bind that bound it.
    pub(super) fn get(&self, name: &[u8]) -> Option<(u64, &Portal)> {
        self.map.get(name).map(|h| (h.bind, &h.portal))
    }

    pub(super) fn values_mut(&mut self) -> impl Iterator<Item = &mut Portal> {
        self.map.values_mut().map(|h| &mut h.portal)
    }

    /// The client's Bind, sent in `batch`. Past [`MAX_NAMES`] named portals a new name is
    /// not kept (its executions are logged by name), but a known one is always rebound: the
    /// server drops named portals at the end of their transaction unseen by the tap, so a
    /// client can reach the limit and then bind a known name again, and its executions must
    /// never be logged with what the name meant before.
    pub(super) fn bind(&mut self, batch: u64, name: &[u8], portal: Portal) {
        self.bound += 1;
        let bind = self.bound;
        let kept = name.is_empty() || self.map.len() < MAX_NAMES || self.map.contains_key(name);
        let (name, before) = if kept {
            let held = Held {
                bind,
                batch,
                portal,
            };
            let before = self.map.insert(name.to_vec(), held);
            (Some(name.to_vec()), before)
        } else {
            (None, None)
        };
        self.remember(Change {
            batch,
            name,
            before,
            bind,
        });
    }

    /// The client's Close of a portal. Not undone if the server skips it: the portal is
    /// then logged by name, never with stale SQL.
    pub(super) fn close(&mut self, name: &[u8]) {
        self.map.remove(name);
    }

    /// Forgets every portal but the unnamed one (DISCARD ALL closed them).
    pub(super) fn forget_named(&mut self) {
        self.map.retain(|name, _| name.is_empty());
    }

    /// The server said no transaction is open at the end of the batch before `answered`:
    /// the portals bound up to then are gone. Those bound in batches sent behind it stay.
    pub(super) fn transaction_ended(&mut self, answered: u64) {
        self.ended_before = answered;
        self.map.retain(|_, h| h.batch >= answered);
    }

    fn remember(&mut self, change: Change) {
        if !self.unconfirmed.remember(change) {
            self.forget_named();
        }
    }

    /// BindComplete, received while the server answers batch `answering`: the oldest Bind
    /// took effect.
    pub(super) fn confirmed(&mut self, answering: u64) {
        self.unconfirmed.confirmed(answering);
    }

    /// The batch before `answered` ended: its Binds not confirmed did not happen. Undoes
    /// them, newest first, and returns them.
    pub(super) fn batch_ended(&mut self, answered: u64) -> Vec<UndoneBind> {
        let mut undone = Vec::new();
        for c in self.unconfirmed.ended(answered) {
            let Some(name) = c.name else { continue };
            // What the name was bound to before, unless that ended with its transaction.
            let before = c.before.filter(|h| h.batch >= self.ended_before);
            if self.map.get(&name).map(|h| h.bind) == Some(c.bind) {
                // Nothing changed the name since: put back what it was bound to.
                match before.clone() {
                    Some(h) => self.map.insert(name.clone(), h),
                    None => self.map.remove(&name),
                };
            } else if let Some(later) = self.unconfirmed.iter_mut().find(|l| {
                l.name.as_ref() == Some(&name) && l.before.as_ref().map(|h| h.bind) == Some(c.bind)
            }) {
                // A later Bind (still unconfirmed) replaced this one: what it replaced is
                // what stood before this one.
                later.before = before.clone();
            }
            undone.push(UndoneBind {
                bind: c.bind,
                name,
                instead: before.map(|h| (h.bind, h.portal)),
            });
        }
        undone
    }
}
