//! The sessions registry: every live session, with its close handle and byte counters.
//!
//! A session exists here from `authorize` until its [`Lease`](super::Lease) is dropped.
//! Closing is only ever done by [`Registry::close`], called from the one kill path.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use tokio::sync::watch;

use super::model::SessionRecord;
use super::{CloseReason, Counters, Proto};

/// One registered session.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    pub id: String,
    pub proto: Proto,
    pub user: String,
    pub target: String,
    pub role: String,
    pub grant_id: String,
    pub client: String,
    pub started_at: DateTime<Utc>,
    pub counters: Arc<Counters>,
    /// Set once by the kill path; the lease watches it.
    pub close: watch::Sender<Option<CloseReason>>,
}

impl SessionEntry {
    pub(crate) fn record(&self) -> SessionRecord {
        use std::sync::atomic::Ordering::Relaxed;
        SessionRecord {
            id: self.id.clone(),
            proto: match self.proto {
                Proto::Ssh => "ssh",
                Proto::Postgres => "postgres",
            }
            .into(),
            user: self.user.clone(),
            target: self.target.clone(),
            role: self.role.clone(),
            grant_id: self.grant_id.clone(),
            client: self.client.clone(),
            started_at: self.started_at,
            bytes_in: self.counters.bytes_in.load(Relaxed),
            bytes_out: self.counters.bytes_out.load(Relaxed),
        }
    }
}

/// Which sessions the kill path closes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Victims<'a> {
    /// Every session under this grant.
    Grant(&'a str),
    /// One session.
    Session(&'a str),
    /// Everything (shutdown).
    All,
}

#[derive(Debug, Default)]
pub(crate) struct Registry {
    sessions: RwLock<HashMap<String, Arc<SessionEntry>>>,
}

impl Registry {
    pub(crate) fn insert(&self, e: Arc<SessionEntry>) {
        self.sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(e.id.clone(), e);
    }

    pub(crate) fn remove(&self, id: &str) {
        self.sessions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }

    pub(crate) fn list(&self) -> Vec<SessionRecord> {
        let mut v: Vec<SessionRecord> = self
            .sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .map(|e| e.record())
            .collect();
        v.sort_by(|a, b| a.started_at.cmp(&b.started_at).then(a.id.cmp(&b.id)));
        v
    }

    pub(crate) fn get(&self, id: &str) -> Option<Arc<SessionEntry>> {
        self.sessions
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
    }

    /// Signals `reason` to the matching sessions that are not already closing; returns them.
    /// Never blocks on the sessions themselves: each one acts on its signal in its own task.
    pub(crate) fn close(&self, victims: Victims<'_>, reason: CloseReason) -> Vec<SessionRecord> {
        let hit: Vec<Arc<SessionEntry>> = {
            let map = self.sessions.read().unwrap_or_else(|p| p.into_inner());
            match victims {
                Victims::Session(id) => map.get(id).cloned().into_iter().collect(),
                Victims::Grant(gid) => map
                    .values()
                    .filter(|e| e.grant_id == gid)
                    .cloned()
                    .collect(),
                Victims::All => map.values().cloned().collect(),
            }
        };
        hit.into_iter()
            .filter(|e| {
                e.close.send_if_modified(|c| {
                    if c.is_none() {
                        *c = Some(reason);
                        true
                    } else {
                        false
                    }
                })
            })
            .map(|e| e.record())
            .collect()
    }
}
