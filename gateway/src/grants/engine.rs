//! The grant table's engine: authorize, the one kill path, and every grant change (add,
//! revoke, extend, expire, reload), each written to the store, the live table, the scheduler
//! and the audit log in that order.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use portcullis_config::{Config, Target};
use portcullis_recorder::Event;

use super::audit::{AuditSink, Emitter};
use super::clock::Clock;
use super::expiry::Scheduler;
use super::lease::Lease;
use super::model::{Actor, GrantRecord, GrantStatus, SessionRecord, new_id};
use super::sessions::{Registry, SessionEntry, Victims};
use super::store::Store;
use super::table::{Choice, LiveGrant, LiveTable};
use super::{CloseReason, Denied, GrantsError, Proto, RequestHint, SessionInfo};
use crate::notify::Notifier;

/// Which sessions the kill path closes: a grant's (whose watch is closed too), one, or all.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kill<'a> {
    Grant(&'a LiveGrant),
    Session(&'a str),
    All,
}

/// What a new grant needs from its creator.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub user: String,
    pub target: String,
    pub role: Option<String>,
    pub duration: Duration,
    pub reason: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    /// The current config; the live table keeps what `authorize` needs of it.
    config: RwLock<Arc<Config>>,
    pub store: Arc<dyn Store>,
    pub table: LiveTable,
    pub sessions: Arc<Registry>,
    pub scheduler: Scheduler,
    pub clock: Clock,
    pub emitter: Emitter,
    /// Serialises grant and request changes so store, table and scheduler agree. Held only
    /// across synchronous work, never across an await.
    ops: Mutex<()>,
}

pub(crate) fn fmt_dur(d: Duration) -> String {
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

/// The status a listing shows: a grant past its deadline is expired even if the scheduler has
/// not marked it yet.
pub(crate) fn effective(mut g: GrantRecord, now: DateTime<Utc>) -> GrantRecord {
    if g.status == GrantStatus::Live && g.expires_at <= now {
        g.status = GrantStatus::Expired;
    }
    g
}

pub(crate) fn grant_event(kind: &str, g: &GrantRecord) -> Event {
    Event::new(kind)
        .with("grant", &g.id)
        .with("user", &g.user)
        .with("target", &g.target)
        .with("role", &g.role)
        .with("expires_at", g.expires_at)
}

/// The role a grant or request is for: the named one, or the target's only role.
pub(crate) fn resolve_role(t: &Target, role: Option<&str>) -> Result<String, GrantsError> {
    let roles = || t.roles.keys().cloned().collect::<Vec<_>>().join(", ");
    match role {
        Some(r) if t.roles.contains_key(r) => Ok(r.to_owned()),
        Some(r) => Err(GrantsError::Invalid(format!(
            "target {} has no role {r} (roles: {})",
            t.name,
            roles()
        ))),
        None if t.roles.len() == 1 => Ok(t.roles.keys().next().cloned().unwrap_or_default()),
        None => Err(GrantsError::Invalid(format!(
            "target {} has several roles ({}); name one with --role",
            t.name,
            roles()
        ))),
    }
}

impl Inner {
    pub(crate) fn open(
        config: Arc<Config>,
        store: Box<dyn Store>,
        sink: Arc<dyn AuditSink>,
    ) -> Result<Arc<Inner>, GrantsError> {
        let notifier = Notifier::start(config.notify.webhook_url.clone());
        let table = LiveTable::default();
        table.set_policy(&config);
        let inner = Arc::new(Inner {
            config: RwLock::new(config),
            store: Arc::from(store),
            table,
            sessions: Arc::default(),
            scheduler: Scheduler::default(),
            // Unit tests run on paused time, where the wall clock must not leak in.
            clock: Clock::new(!cfg!(test)),
            emitter: Emitter::start(sink, notifier),
            ops: Mutex::new(()),
        });
        inner.restore()?;
        tokio::spawn(super::expiry::run(inner.clone()));
        Ok(inner)
    }

    /// Rebuilds the live table from the store; grants that lapsed while the gateway was down
    /// are marked expired now, each with its one `grant.expired`. Grants marked expired
    /// whose event never reached the audit log (a crash or a failed append in between) get
    /// it now.
    fn restore(&self) -> Result<(), GrantsError> {
        let now = self.clock.now();
        let warn_before = self.config().policy.warn_before;
        let _ops = self.lock_ops();
        for g in self.store.expiry_unlogged()? {
            self.emit_expired(&g);
        }
        for g in self.store.list_grants(Some(GrantStatus::Live))? {
            if g.expires_at <= now {
                let mut done = g.clone();
                done.status = GrantStatus::Expired;
                done.version += 1;
                self.store.update_grant(&done)?;
                self.table.mark_lapsed(&g.user, &g.target);
                self.emit_expired(&done);
            } else {
                self.insert_live(&g, warn_before);
            }
        }
        self.sweep_requests(now)?;
        Ok(())
    }

    pub(crate) fn lock_ops(&self) -> MutexGuard<'_, ()> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Swaps in a reloaded config; `authorize` sees it from its next call. Caller holds `ops`.
    pub(crate) fn set_config(&self, config: Arc<Config>) {
        self.table.set_policy(&config);
        *self.config.write().unwrap_or_else(|p| p.into_inner()) = config;
    }

    pub(crate) fn authorize(
        &self,
        user: &str,
        target: &str,
        role: Option<&str>,
        info: SessionInfo,
    ) -> Result<Lease, Denied> {
        let now = self.clock.now_nanos();
        let (grant, warn_before) = match self.table.choose(user, target, role, now) {
            Choice::Grant(g, warn_before) => (g, warn_before),
            Choice::NoGrant => return Err(self.refusal(user, target, role, info.proto, now)),
            Choice::UnknownTarget => {
                return Err(Denied::UnknownTarget {
                    target: target.to_owned(),
                });
            }
        };
        // The grant's registry is this one; the grant moves into its session's entry.
        let (entry, slot) = self
            .sessions
            .insert(move |seq| SessionEntry::new(seq, grant, info.proto, info.client, now));
        // The grant may have lapsed while we registered; the kill path has then already
        // passed over us, so refuse here (dropping the lease deregisters it).
        let lease = Lease::new(entry, slot, self.clock, warn_before);
        if !lease.is_live_at(now) {
            return Err(Denied::Expired {
                user: user.to_owned(),
                target: target.to_owned(),
                request: Box::new(self.request_hint(user, target, role)),
            });
        }
        Ok(lease)
    }

    /// Why `authorize` found no grant to use (the cold path; it may allocate).
    fn refusal(
        &self,
        user: &str,
        target: &str,
        role: Option<&str>,
        proto: Proto,
        now: i64,
    ) -> Denied {
        if let Some(r) = role
            && let Some(t) = self.config().target(target)
            && !t.roles.contains_key(r)
        {
            return Denied::UnknownRole {
                target: target.to_owned(),
                role: r.to_owned(),
                roles: super::denied::role_names(t).join(", "),
            };
        }
        let request = Box::new(self.request_hint(user, target, role));
        let mut held: Vec<String> = self.table.with_user(user, |gs| {
            gs.filter(|g| &*g.target == target && g.is_live_at(now))
                .map(|g| g.role.to_string())
                .collect()
        });
        held.sort_unstable();
        held.dedup();
        let held = held.join(", ");
        match role {
            _ if held.is_empty() => {
                if self.table.has_lapsed(user, target) {
                    Denied::Expired {
                        user: user.to_owned(),
                        target: target.to_owned(),
                        request,
                    }
                } else {
                    Denied::NoGrant {
                        user: user.to_owned(),
                        target: target.to_owned(),
                        request,
                    }
                }
            }
            Some(r) => Denied::RoleNotHeld {
                user: user.to_owned(),
                target: target.to_owned(),
                role: r.to_owned(),
                held,
                request,
            },
            None => Denied::AmbiguousRole {
                user: user.to_owned(),
                target: target.to_owned(),
                held,
                proto,
            },
        }
    }

    /// The request a refusal suggests (see [`RequestHint::new`]).
    fn request_hint(&self, user: &str, target: &str, role: Option<&str>) -> RequestHint {
        RequestHint::new(&self.config(), user, target, role)
    }

    /// THE kill path. Expiry, revoke, `sessions kill`, config reload and shutdown all close
    /// sessions here and nowhere else. It only signals: each session closes itself in its
    /// own task, so this never waits on a client, an upstream, the audit log or a webhook.
    pub(crate) fn kill(&self, which: Kill<'_>, reason: CloseReason) -> Vec<SessionRecord> {
        let victims = match which {
            Kill::Grant(g) => {
                g.close(reason);
                Victims::Grant(&g.id)
            }
            Kill::Session(id) => Victims::Session(id),
            Kill::All => Victims::All,
        };
        let closed = self.sessions.close(victims, reason);
        for s in &closed {
            tracing::info!(session = %s.id, user = %s.user, target = %s.target,
                reason = reason.as_str(), "closing session");
        }
        closed
    }

    /// Puts a stored live grant into the table and the scheduler. Caller holds `ops`.
    fn insert_live(&self, g: &GrantRecord, warn_before: Duration) {
        let live = self.table.insert(
            &g.id,
            &g.user,
            &g.target,
            &g.role,
            g.expires_at,
            &self.sessions,
        );
        self.scheduler.arm(&live.id, g.expires_at, warn_before);
    }

    /// Checks a prospective grant against the config; returns the record to store. Caller
    /// holds `ops` until the grant is committed, so a reload cannot come between.
    pub(crate) fn build_grant(
        &self,
        new: &NewGrant,
        created_by: &str,
        approved_by: Option<&str>,
        request_id: Option<&str>,
    ) -> Result<GrantRecord, GrantsError> {
        let cfg = self.config();
        if cfg.user(&new.user).is_none() {
            return Err(GrantsError::Invalid(format!("unknown user {}", new.user)));
        }
        let t = cfg
            .target(&new.target)
            .ok_or_else(|| GrantsError::Invalid(format!("unknown target {}", new.target)))?;
        let role = resolve_role(t, new.role.as_deref())?;
        check_duration(t, &cfg, new.duration)?;
        let now = self.clock.now();
        Ok(GrantRecord {
            id: new_id("g_"),
            user: new.user.clone(),
            target: t.name.clone(),
            role,
            status: GrantStatus::Live,
            created_at: now,
            expires_at: now + new.duration,
            reason: new.reason.clone().filter(|r| !r.trim().is_empty()),
            created_by: created_by.to_owned(),
            approved_by: approved_by.map(str::to_owned),
            request_id: request_id.map(str::to_owned),
            revoked_at: None,
            revoked_by: None,
            version: 1,
        })
    }

    /// Stores and arms a built grant. Caller holds `ops`.
    pub(crate) fn commit_grant(&self, g: &GrantRecord) -> Result<(), GrantsError> {
        self.store.insert_grant(g)?;
        self.insert_live(g, self.config().policy.warn_before);
        Ok(())
    }

    pub(crate) async fn add_grant(
        &self,
        new: NewGrant,
        actor: &Actor,
    ) -> Result<GrantRecord, GrantsError> {
        if *actor != Actor::Admin {
            return Err(GrantsError::Refused(
                "only an operator can add grants; ask for access with request create".into(),
            ));
        }
        let g = {
            // Checked and stored under one lock, so a reload cannot swap the config between.
            let _ops = self.lock_ops();
            let g = self.build_grant(&new, actor.name(), None, None)?;
            self.commit_grant(&g)?;
            g
        };
        self.emitter
            .emit_wait(created_event(&g, self.max_grant_of(&g.target)))
            .await;
        Ok(g)
    }

    /// The ceiling a grant on `target` is judged against now; `grant.created` and
    /// `grant.extended` carry it as `max_secs`, for the review's "grants at their maximum".
    pub(crate) fn max_grant_of(&self, target: &str) -> Option<Duration> {
        let cfg = self.config();
        cfg.target(target).map(|t| t.max_grant(&cfg.policy))
    }

    /// The stored grant `id`, which must still be live.
    fn live_record(&self, id: &str, now: DateTime<Utc>) -> Result<GrantRecord, GrantsError> {
        let g = self
            .store
            .get_grant(id)?
            .ok_or_else(|| GrantsError::NotFound {
                kind: "grant",
                id: id.to_owned(),
            })?;
        let g = effective(g, now);
        if g.status != GrantStatus::Live {
            return Err(GrantsError::Refused(format!(
                "grant {id} is already {}",
                g.status.as_str()
            )));
        }
        Ok(g)
    }

    pub(crate) async fn revoke(
        &self,
        id: &str,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<GrantRecord, GrantsError> {
        if *actor != Actor::Admin {
            return Err(GrantsError::Refused(
                "only an operator can revoke grants".into(),
            ));
        }
        let g = self.revoke_now(id, actor.name(), CloseReason::GrantRevoked)?;
        self.emitter
            .emit_wait(
                grant_event("grant.revoked", &g)
                    .with("revoked_by", &g.revoked_by)
                    .with("reason", reason),
            )
            .await;
        Ok(g)
    }

    /// Marks a grant revoked everywhere and closes its sessions with `why` (a revoke reason);
    /// no audit (callers emit).
    pub(crate) fn revoke_now(
        &self,
        id: &str,
        by: &str,
        why: CloseReason,
    ) -> Result<GrantRecord, GrantsError> {
        let _ops = self.lock_ops();
        let now = self.clock.now();
        let mut g = self.live_record(id, now)?;
        g.status = GrantStatus::Revoked;
        g.revoked_at = Some(now);
        g.revoked_by = Some(by.to_owned());
        g.version += 1;
        // Sessions close first: the store write (a SQLite commit) would otherwise sit inside
        // every revoke's kill latency. Closing early is the safe side of a failed write, which
        // the operator is told about (the stored grant would be live again after a restart).
        self.scheduler.disarm(id);
        if let Some(live) = self.table.remove(id, false) {
            self.kill(Kill::Grant(&live), why);
        }
        self.store.update_grant(&g)?;
        Ok(g)
    }

    pub(crate) async fn extend(
        &self,
        id: &str,
        by: Duration,
        actor: &Actor,
    ) -> Result<GrantRecord, GrantsError> {
        if *actor != Actor::Admin {
            return Err(GrantsError::Refused(
                "only an operator can extend grants".into(),
            ));
        }
        if by.is_zero() {
            return Err(GrantsError::Invalid("--by must be longer than 0s".into()));
        }
        let (g, previous) = {
            let _ops = self.lock_ops();
            let now = self.clock.now();
            let mut g = self.live_record(id, now)?;
            let cfg = self.config();
            let previous = g.expires_at;
            // Checked: the API bounds durations, but an engine caller must not be able to
            // panic the handler with one past what a timestamp holds.
            g.expires_at = chrono::TimeDelta::from_std(by)
                .ok()
                .and_then(|d| previous.checked_add_signed(d))
                .ok_or_else(|| GrantsError::Invalid(format!("--by {} is too long", fmt_dur(by))))?;
            // The ceiling bounds how far ahead of now a grant may reach.
            if let Some(t) = cfg.target(&g.target) {
                let ahead = (g.expires_at - now).to_std().unwrap_or_default();
                let max = t.max_grant(&cfg.policy);
                if ahead > max {
                    return Err(GrantsError::Refused(format!(
                        "extending grant {id} by {} would reach {} ahead, beyond the maximum grant of {} on {}",
                        fmt_dur(by),
                        fmt_dur(ahead),
                        fmt_dur(max),
                        g.target
                    )));
                }
            }
            g.version += 1;
            self.store.update_grant(&g)?;
            match self.table.get(id) {
                Some(live) => {
                    self.scheduler
                        .arm(&live.id, g.expires_at, cfg.policy.warn_before);
                    // Leases watch this: they re-arm their timers on the new deadline.
                    live.set_expires_at(g.expires_at);
                }
                None => self
                    .scheduler
                    .arm(&Arc::from(id), g.expires_at, cfg.policy.warn_before),
            }
            (g, previous)
        };
        self.emitter
            .emit_wait(
                grant_event("grant.extended", &g)
                    .with(
                        "max_secs",
                        self.max_grant_of(&g.target).map(|d| d.as_secs()),
                    )
                    .with("previous_expires_at", previous)
                    .with("by", actor.name()),
            )
            .await;
        Ok(g)
    }

    /// The scheduler says `id` is due: mark it expired once and close its sessions.
    pub(crate) fn on_expire(&self, id: &str) {
        let _ops = self.lock_ops();
        let now = self.clock.now();
        let Some(live) = self.table.get(id) else {
            return;
        };
        if live.expires_at() > now {
            // Extended after this entry was popped; the scheduler holds the new deadline.
            return;
        }
        self.table.remove(id, true);
        self.kill(Kill::Grant(&live), CloseReason::GrantExpired);
        match self.store.get_grant(id) {
            Ok(Some(mut g)) if g.status == GrantStatus::Live => {
                g.status = GrantStatus::Expired;
                g.version += 1;
                match self.store.update_grant(&g) {
                    Ok(()) => self.emit_expired(&g),
                    Err(e) => {
                        tracing::error!(grant = id, error = %e, "could not mark grant expired");
                        // Still live in the store: the next start marks it and emits then.
                        self.emitter.emit(grant_event("grant.expired", &g));
                    }
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(grant = id, error = %e, "could not read expiring grant"),
        }
    }

    /// Emits `grant.expired` for a grant the store has marked expired, and records in the
    /// store that it is logged only once the audit append has returned. Until then the store
    /// holds it as pending, so a crash or failed append costs at worst a repeat at the next
    /// start, never the event.
    fn emit_expired(&self, g: &GrantRecord) {
        let store = self.store.clone();
        let id = g.id.clone();
        self.emitter
            .emit_then(grant_event("grant.expired", g), move || {
                if let Err(e) = store.set_expiry_logged(&id) {
                    tracing::warn!(grant = %id, error = %e, "could not record grant.expired as logged");
                }
            });
    }

    /// The scheduler says `id` is `warn_before` from expiry: tell the webhook.
    /// Sent once per deadline: the store remembers it across restarts.
    pub(crate) fn on_warn(&self, id: &str) {
        if let Some(g) = self.table.get(id) {
            match self.store.claim_warning(id, &g.expires_at()) {
                Ok(true) => {}
                Ok(false) => return,
                // Better a repeated notice than none.
                Err(e) => tracing::warn!(grant = id, error = %e, "could not record expiry warning"),
            }
            self.emitter.notify_only(
                &Event::new("grant.expiring")
                    .with("grant", &*g.id)
                    .with("user", g.user())
                    .with("target", &*g.target)
                    .with("role", &*g.role)
                    .with("expires_at", g.expires_at()),
            );
        }
    }
}

pub(crate) fn created_event(g: &GrantRecord, max_grant: Option<Duration>) -> Event {
    grant_event("grant.created", g)
        .with("max_secs", max_grant.map(|d| d.as_secs()))
        .with("created_at", g.created_at)
        .with("reason", &g.reason)
        .with("created_by", &g.created_by)
        .with("approved_by", &g.approved_by)
        .with("request", &g.request_id)
}

/// A grant or request must be positive and within the target's (else the policy's) ceiling.
pub(crate) fn check_duration(t: &Target, cfg: &Config, d: Duration) -> Result<(), GrantsError> {
    if d.is_zero() {
        return Err(GrantsError::Invalid("--for must be longer than 0s".into()));
    }
    let max = t.max_grant(&cfg.policy);
    if d > max {
        return Err(GrantsError::Refused(format!(
            "{} exceeds the maximum grant of {} on {}",
            fmt_dur(d),
            fmt_dur(max),
            t.name
        )));
    }
    Ok(())
}
