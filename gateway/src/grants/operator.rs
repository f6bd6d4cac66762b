//! What the operator and users read and do besides grant changes: listings, `sessions
//! kill`, and config reload (which revokes grants the new config no longer allows).

use std::sync::Arc;

use portcullis_config::Config;
use portcullis_recorder::Event;

use super::engine::{Inner, Kill, effective, grant_event};
use super::model::{Actor, GrantFilter, GrantRecord, GrantStatus, SessionRecord};
use super::sessions::KillNote;
use super::{CloseReason, GrantsError};

impl Inner {
    pub(crate) fn list_grants(
        &self,
        filter: &GrantFilter,
        viewer: &Actor,
    ) -> Result<Vec<GrantRecord>, GrantsError> {
        let now = self.clock.now();
        let status = (!filter.all).then_some(GrantStatus::Live);
        Ok(self
            .store
            .list_grants(status)?
            .into_iter()
            .map(|g| effective(g, now))
            .filter(|g| filter.all || g.status == GrantStatus::Live)
            .filter(|g| filter.user.as_ref().is_none_or(|u| *u == g.user))
            .filter(|g| filter.target.as_ref().is_none_or(|t| *t == g.target))
            .filter(|g| match viewer {
                Actor::Admin => true,
                Actor::User(u) => *u == g.user,
            })
            .collect())
    }

    pub(crate) fn list_sessions(&self, viewer: &Actor) -> Vec<SessionRecord> {
        let mut all = self.sessions.list();
        if let Actor::User(u) = viewer {
            all.retain(|s| s.user == *u);
        }
        all
    }

    pub(crate) fn kill_session(
        &self,
        id: &str,
        actor: &Actor,
        reason: Option<&str>,
    ) -> Result<SessionRecord, GrantsError> {
        let not_found = || GrantsError::NotFound {
            kind: "session",
            id: id.to_owned(),
        };
        let entry = self.sessions.get(id).ok_or_else(not_found)?;
        if let Actor::User(u) = actor
            && **u != *entry.grant.user()
        {
            return Err(GrantsError::Refused(format!(
                "{u} may not kill another user's session"
            )));
        }
        tracing::info!(
            session = id,
            by = actor.name(),
            reason,
            "session kill requested"
        );
        let closing = || GrantsError::Refused(format!("session {id} is already closing"));
        // Noted before the close flag is set, so the session's `session.ended` names who
        // killed it and why (SPEC §7 addition: `killed_by`, `kill_reason`).
        let note = KillNote {
            by: actor.name().to_owned(),
            reason: reason
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(str::to_owned),
        };
        if !entry.note_kill(note.clone()) {
            return Err(closing());
        }
        let killed = self
            .kill(Kill::Session(id), CloseReason::Killed)
            .pop()
            .ok_or_else(closing)?;
        self.emitter.notify_only(
            &Event::new("session.killed")
                .with("session", &killed.id)
                .with("user", &killed.user)
                .with("target", &killed.target)
                .with("role", &killed.role)
                .with("grant", &killed.grant_id)
                .with("client", &killed.client)
                .with("killed_by", &note.by)
                .with("kill_reason", &note.reason),
        );
        Ok(killed)
    }

    /// Takes a new config; grants whose user, target or role it no longer has are revoked
    /// (closing their sessions through the kill path, reason `grant_revoked`, each with a
    /// `grant.revoked` event saying the config removed it). Returns the grants revoked.
    pub(crate) async fn reload(&self, config: Arc<Config>) -> Vec<GrantRecord> {
        // Swapped and scanned under the ops lock, as every grant change checks the config
        // and stores its grant under it: a change in flight finishes first and its grant is
        // in the scan, or runs after and is judged against the new config. Without the lock,
        // a grant checked against the old config could be stored live after the scan.
        let stale: Vec<_> = {
            let _ops = self.lock_ops();
            self.set_config(config.clone());
            self.table
                .all()
                .into_iter()
                .filter(|live| {
                    config.user(live.user()).is_none()
                        || !config
                            .target(&live.target)
                            .is_some_and(|t| t.roles.contains_key(&*live.role))
                })
                .collect()
        };
        let mut revoked = Vec::new();
        for live in stale {
            match self.revoke_now(&live.id, "config", CloseReason::ConfigRevoked) {
                Ok(g) => {
                    self.emitter
                        .emit_wait(
                            grant_event("grant.revoked", &g)
                                .with("revoked_by", "config")
                                .with("reason", "user, target or role removed from the config"),
                        )
                        .await;
                    revoked.push(g);
                }
                Err(e) => tracing::warn!(grant = %live.id, error = %e, "reload could not revoke"),
            }
        }
        revoked
    }
}
