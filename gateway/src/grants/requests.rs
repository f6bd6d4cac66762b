//! Just-in-time access requests: a user asks (target, role, duration, reason), an approver
//! of the target approves or denies, and approval creates a grant whose clock starts then.
//! Nobody approves their own request; pending requests lapse after [`REQUEST_TTL`].

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use portcullis_recorder::Event;

use super::GrantsError;
use super::engine::{Inner, NewGrant, check_duration, created_event, resolve_role};
use super::model::{Actor, GrantRecord, REQUEST_TTL, RequestRecord, RequestStatus, new_id};

/// What a user asks for.
#[derive(Debug, Clone)]
pub struct NewRequest {
    /// Whose access; a user may only ask for themself, the operator for anyone.
    pub user: Option<String>,
    pub target: String,
    pub role: Option<String>,
    pub duration: Duration,
    pub reason: String,
}

fn request_event(kind: &str, r: &RequestRecord) -> Event {
    Event::new(kind)
        .with("request", &r.id)
        .with("user", &r.user)
        .with("target", &r.target)
        .with("role", &r.role)
        .with("duration_secs", r.duration_secs)
}

impl Inner {
    /// Marks pending requests older than the TTL as expired, and schedules the others' lapse
    /// (at start, when nothing is scheduled yet; arming again is harmless).
    pub(crate) fn sweep_requests(&self, now: DateTime<Utc>) -> Result<(), GrantsError> {
        for r in self.store.list_requests(Some(RequestStatus::Pending))? {
            if lapsed(&r, now) {
                self.lapse(r)?;
            } else {
                self.scheduler
                    .arm_request(Arc::from(r.id.as_str()), r.created_at + REQUEST_TTL);
            }
        }
        Ok(())
    }

    /// Marks a pending request expired and records `request.expired`, once: the versioned
    /// update lets only one caller win.
    fn lapse(&self, mut r: RequestRecord) -> Result<RequestRecord, GrantsError> {
        r.status = RequestStatus::Expired;
        r.version += 1;
        self.store.update_request(&r)?;
        self.emitter.emit(request_event("request.expired", &r));
        Ok(r)
    }

    /// The scheduler says request `id` has waited its time to live.
    pub(crate) fn on_request_lapse(&self, id: &str) {
        let _ops = self.lock_ops();
        let now = self.clock.now();
        match self.store.get_request(id) {
            Ok(Some(r)) if r.status == RequestStatus::Pending && lapsed(&r, now) => {
                if let Err(e) = self.lapse(r) {
                    tracing::error!(request = id, error = %e, "could not mark request expired");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::error!(request = id, error = %e, "could not read lapsing request"),
        }
    }

    pub(crate) async fn create_request(
        &self,
        new: NewRequest,
        actor: &Actor,
    ) -> Result<RequestRecord, GrantsError> {
        let user = match (actor, new.user) {
            (Actor::User(u), None) => u.clone(),
            (Actor::User(u), Some(x)) if *u == x => x,
            (Actor::User(u), Some(x)) => {
                return Err(GrantsError::Refused(format!(
                    "{u} may not request access for {x}"
                )));
            }
            (Actor::Admin, Some(x)) => x,
            (Actor::Admin, None) => {
                return Err(GrantsError::Invalid(
                    "a request needs a user: run it with --as USER".into(),
                ));
            }
        };
        if new.reason.trim().is_empty() {
            return Err(GrantsError::Invalid("a request needs a --reason".into()));
        }
        let cfg = self.config();
        if cfg.user(&user).is_none() {
            return Err(GrantsError::Invalid(format!("unknown user {user}")));
        }
        let t = cfg
            .target(&new.target)
            .ok_or_else(|| GrantsError::Invalid(format!("unknown target {}", new.target)))?;
        let role = resolve_role(t, new.role.as_deref())?;
        check_duration(t, &cfg, new.duration)?;
        // A request keeps whole seconds (`duration_secs`): a fraction would be dropped, and
        // a request under a second stored as 0s, which no approver could ever approve.
        if new.duration.subsec_nanos() != 0 {
            return Err(GrantsError::Invalid(format!(
                "--for {} is not a whole number of seconds; a request is kept in seconds",
                humantime::format_duration(new.duration)
            )));
        }
        let r = RequestRecord {
            id: new_id("r_"),
            user,
            target: t.name.clone(),
            role,
            duration_secs: new.duration.as_secs(),
            reason: new.reason.trim().to_owned(),
            status: RequestStatus::Pending,
            created_at: self.clock.now(),
            decided_by: None,
            grant_id: None,
            decided_at: None,
            decision_reason: None,
            version: 1,
        };
        self.store.insert_request(&r)?;
        self.scheduler
            .arm_request(Arc::from(r.id.as_str()), r.created_at + REQUEST_TTL);
        self.emitter
            .emit_wait(request_event("request.created", &r).with("reason", &r.reason))
            .await;
        Ok(r)
    }

    /// The pending request `id`, checked for who may decide it.
    fn decidable(
        &self,
        id: &str,
        actor: &Actor,
        approving: bool,
        now: DateTime<Utc>,
    ) -> Result<RequestRecord, GrantsError> {
        let r = self
            .store
            .get_request(id)?
            .ok_or_else(|| GrantsError::NotFound {
                kind: "request",
                id: id.to_owned(),
            })?;
        let r = if r.status == RequestStatus::Pending && lapsed(&r, now) {
            self.lapse(r)?
        } else {
            r
        };
        if r.status != RequestStatus::Pending {
            return Err(GrantsError::Refused(format!(
                "request {id} is already {}",
                r.status.as_str()
            )));
        }
        if let Actor::User(u) = actor {
            if *u == r.user {
                if approving {
                    return Err(GrantsError::Refused(format!(
                        "you cannot approve your own request {id}; another approver of {} must",
                        r.target
                    )));
                }
                // Denying your own request withdraws it.
                return Ok(r);
            }
            let cfg = self.config();
            let is_approver = cfg
                .target(&r.target)
                .is_some_and(|t| t.approvers(&cfg.policy).iter().any(|a| a == u));
            if !is_approver {
                return Err(GrantsError::Refused(format!(
                    "{u} is not an approver for {}",
                    r.target
                )));
            }
        }
        Ok(r)
    }

    pub(crate) async fn approve(
        &self,
        id: &str,
        actor: &Actor,
    ) -> Result<(RequestRecord, GrantRecord), GrantsError> {
        let (r, g) = {
            let _ops = self.lock_ops();
            let now = self.clock.now();
            let mut r = self.decidable(id, actor, true, now)?;
            let g = self.build_grant(
                &NewGrant {
                    user: r.user.clone(),
                    target: r.target.clone(),
                    role: Some(r.role.clone()),
                    duration: Duration::from_secs(r.duration_secs),
                    reason: Some(r.reason.clone()),
                },
                &r.user,
                Some(actor.name()),
                Some(&r.id),
            )?;
            r.status = RequestStatus::Approved;
            r.decided_by = Some(actor.name().to_owned());
            r.decided_at = Some(now);
            r.grant_id = Some(g.id.clone());
            r.version += 1;
            self.store.update_request(&r)?;
            self.commit_grant(&g)?;
            (r, g)
        };
        self.emitter
            .emit_wait(
                request_event("request.approved", &r)
                    .with("approved_by", &r.decided_by)
                    .with("grant", &g.id),
            )
            .await;
        self.emitter
            .emit_wait(created_event(&g, self.max_grant_of(&g.target)))
            .await;
        Ok((r, g))
    }

    pub(crate) async fn deny(
        &self,
        id: &str,
        actor: &Actor,
        reason: Option<String>,
    ) -> Result<RequestRecord, GrantsError> {
        let r = {
            let _ops = self.lock_ops();
            let now = self.clock.now();
            let mut r = self.decidable(id, actor, false, now)?;
            r.status = RequestStatus::Denied;
            r.decided_by = Some(actor.name().to_owned());
            r.decided_at = Some(now);
            r.decision_reason = reason.filter(|s| !s.trim().is_empty());
            r.version += 1;
            self.store.update_request(&r)?;
            r
        };
        self.emitter
            .emit_wait(
                request_event("request.denied", &r)
                    .with("denied_by", &r.decided_by)
                    .with("reason", &r.decision_reason),
            )
            .await;
        Ok(r)
    }

    /// Requests the viewer may see: the operator all; a user their own and those they approve.
    pub(crate) fn list_requests(
        &self,
        pending_only: bool,
        viewer: &Actor,
    ) -> Result<Vec<RequestRecord>, GrantsError> {
        let now = self.clock.now();
        {
            let _ops = self.lock_ops();
            self.sweep_requests(now)?;
        }
        let cfg = self.config();
        let status = pending_only.then_some(RequestStatus::Pending);
        Ok(self
            .store
            .list_requests(status)?
            .into_iter()
            .filter(|r| match viewer {
                Actor::Admin => true,
                Actor::User(u) => {
                    *u == r.user
                        || cfg
                            .target(&r.target)
                            .is_some_and(|t| t.approvers(&cfg.policy).iter().any(|a| a == u))
                }
            })
            .collect())
    }
}

fn lapsed(r: &RequestRecord, now: DateTime<Utc>) -> bool {
    r.created_at + REQUEST_TTL <= now
}
